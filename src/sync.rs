//! The synchronisation primitives palisade's own concurrent state uses,
//! swapped for loom's model-checked versions under `--cfg loom`.

// Each layer uses a part of this; with one layer's feature alone, the rest
// goes unused.
#![allow(unused_imports)]

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};

/// Locks a mutex, carrying on if a thread panicked while holding it: the
/// data it guards is kept consistent at every step, so a poisoned lock
/// holds nothing half-done.
#[cfg_attr(
    not(any(feature = "bulkhead", feature = "rate-limit")),
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

/// Runs a loom model, exploring interleavings with at most three preemptions
/// as tokio's own loom tests do: enough for the two- and three-thread races
/// palisade models, small enough to finish in seconds.
#[cfg(all(test, loom))]
pub(crate) fn loom_model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}
