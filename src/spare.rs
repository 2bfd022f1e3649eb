//! A layer's shared state, with a spare of the service the layer wrapped.
//!
//! Retry and hedging send some requests more than once, to a service of
//! their own: the one that took the first attempt is the caller's. tower's
//! layers clone the wrapped service for every request and keep the clone
//! in the response future, but cloning a stack moves the reference count
//! of every `Arc` in it up and down, on cache lines every thread shares,
//! and most requests are never sent twice. Here the layer keeps one clone
//! aside when it is applied, never called itself, and a request that needs
//! a second service clones that one.

use std::sync::Arc;

use crate::sync::{Mutex, lock};

/// A layer's state `T`, shared by its services and their response futures,
/// and a spare of the service `S` it wrapped.
pub(crate) struct WithSpare<T, S> {
    pub(crate) shared: Arc<T>,
    // Behind a lock so that a service that is `Send` but not `Sync` (a
    // boxed one) still makes a `Send` layer; taken only to clone.
    spare: Mutex<S>,
}

impl<T, S: Clone> WithSpare<T, S> {
    pub(crate) fn new(shared: Arc<T>, service: &S) -> Self {
        WithSpare {
            shared,
            spare: Mutex::new(service.clone()),
        }
    }

    /// A fresh clone of the wrapped service, for one request's further
    /// attempts.
    pub(crate) fn service(&self) -> S {
        lock(&self.spare).clone()
    }
}
