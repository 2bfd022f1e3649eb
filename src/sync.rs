//! The synchronisation primitives palisade's own concurrent state uses,
//! swapped for loom's model-checked versions under `--cfg loom`.
//!
//! Every atomic, mutex and lock in the library comes from here, so that the
//! loom models see every race. `Arc` is here for the models' own use and for
//! state they share; the layers' `Arc`s that only share immutable
//! configuration or a handle stay `std`'s: a reference count hides no race of
//! ours, and loom's `Arc` has no `Weak`, no `new_cyclic` and no unsized
//! coercion (`Arc<dyn Fn>`), which the breaker and the classifiers need.

// Each layer uses a part of this; with one layer's feature alone, the rest
// goes unused.
#![allow(unused_imports, dead_code)]

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks a mutex, carrying on if a thread panicked while holding it: the
/// data it guards is kept consistent at every step, so a poisoned lock
/// holds nothing half-done.
#[cfg_attr(
    not(any(feature = "adaptive", feature = "bulkhead", feature = "rate-limit")),
    allow(dead_code)
)]
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    #[cfg(loom)]
    return mutex.lock().unwrap();
    #[cfg(not(loom))]
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Takes a read lock, carrying on past a panic as [`lock`] does.
pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    #[cfg(loom)]
    return lock.read().unwrap();
    #[cfg(not(loom))]
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Takes a write lock, carrying on past a panic as [`lock`] does.
pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    #[cfg(loom)]
    return lock.write().unwrap();
    #[cfg(not(loom))]
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A value on cache lines of its own: 128 bytes, since some CPUs fetch
/// lines in adjacent pairs. For a counter every call writes, so that the
/// values read beside it are not pulled away from other cores each time.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Lets another thread run while this one waits for it (under loom, a
/// point where the model switches threads).
pub(crate) fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}

/// Runs a loom model, exploring interleavings with at most three preemptions
/// as tokio's own loom tests do: enough for the two- and three-thread races
/// palisade models, small enough to finish in seconds.
#[cfg(all(test, loom))]
pub(crate) fn loom_model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}
