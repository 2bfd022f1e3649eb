//! A service wrapper that counts how often it is cloned: retry and hedging
//! must clone the service below only for a request that needs a second
//! attempt.

#![allow(dead_code, unreachable_pub)] // each test binary uses a part of this

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tower::Service;

/// `inner`, counting its clones in a counter every clone shares.
pub struct CountsClones<S> {
    inner: S,
    clones: Arc<AtomicUsize>,
}

impl<S> CountsClones<S> {
    pub fn new(inner: S) -> Self {
        CountsClones {
            inner,
            clones: Arc::default(),
        }
    }

    /// A reading of the clone count, shared by every clone.
    pub fn counter(&self) -> impl Fn() -> usize + use<S> {
        let clones = self.clones.clone();
        move || clones.load(Ordering::SeqCst)
    }
}

impl<S: Clone> Clone for CountsClones<S> {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        CountsClones {
            inner: self.inner.clone(),
            clones: self.clones.clone(),
        }
    }
}

impl<S: Service<Req>, Req> Service<Req> for CountsClones<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> S::Future {
        self.inner.call(request)
    }
}
