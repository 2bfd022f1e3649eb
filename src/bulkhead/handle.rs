//! The state every [`Bulkhead`](super::Bulkhead) from one layer shares, and
//! the [`Handle`] that reads it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::BulkheadFull;
use crate::name::Name;

/// The slots and the counters, behind one `Arc` per layer value.
pub(crate) struct Shared {
    // Its own `Arc` so that a permit keeps only the semaphore alive.
    semaphore: Arc<Semaphore>,
    name: Name,
    max_concurrent: usize,
    max_wait: Duration,
    waiting: AtomicUsize,
    rejected: AtomicU64,
}

/// A wait for a slot, bounded by `max_wait`; `None` when it ran out.
pub(crate) type WaitForSlot =
    Pin<Box<dyn Future<Output = Option<OwnedSemaphorePermit>> + Send + Sync>>;

/// What to do when every slot is taken.
pub(crate) enum WhenFull {
    Wait(WaitForSlot, WaitingGuard),
    Refuse,
}

impl Shared {
    pub(crate) fn new(name: Name, max_concurrent: usize, max_wait: Duration) -> Self {
        Shared {
            semaphore: Arc::new(Semaphore::new(max_concurrent)),
            name,
            max_concurrent,
            max_wait,
            waiting: AtomicUsize::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// Takes a free slot if there is one: the fast path, kept small so it
    /// inlines into `poll_ready`.
    ///
    /// tokio's semaphore hands released permits to queued waiters first, so a
    /// newcomer cannot take a slot ahead of the queue: waiters are served in
    /// FIFO order.
    #[inline]
    pub(crate) fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.semaphore.clone().try_acquire_owned().ok()
    }

    /// No free slot: refuse at once, or start a wait bounded by `max_wait`.
    #[cold]
    pub(crate) fn when_full(self: &Arc<Self>) -> WhenFull {
        if self.max_wait.is_zero() {
            return WhenFull::Refuse;
        }
        let semaphore = self.semaphore.clone();
        let max_wait = self.max_wait;
        // One allocation per wait, never on the fast path.
        let wait = Box::pin(async move {
            match tokio::time::timeout(max_wait, semaphore.acquire_owned()).await {
                Ok(Ok(permit)) => Some(permit),
                // Timed out; the semaphore is never closed.
                _ => None,
            }
        });
        WhenFull::Wait(wait, WaitingGuard::new(self.clone()))
    }

    #[cold]
    pub(crate) fn count_rejection(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            target: "palisade::bulkhead",
            name = %self.name,
            max_concurrent = self.max_concurrent,
            waited = ?self.max_wait,
            "bulkhead full; call rejected"
        );
    }

    /// The error a refused call resolves to.
    pub(crate) fn rejection(&self) -> BulkheadFull {
        BulkheadFull::new(self.name.clone(), self.max_concurrent, self.max_wait)
    }

    pub(crate) fn name(&self) -> &Name {
        &self.name
    }
}

/// Counts a service as waiting for as long as it is alive.
pub(crate) struct WaitingGuard(Arc<Shared>);

impl WaitingGuard {
    fn new(shared: Arc<Shared>) -> Self {
        shared.waiting.fetch_add(1, Ordering::Relaxed);
        WaitingGuard(shared)
    }
}

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads a bulkhead's state: the slots in use, the callers waiting, and how
/// many calls it refused.
///
/// Get one from [`BulkheadLayer::handle`](super::BulkheadLayer::handle). It is
/// a cheap clone of the shared state, so it sees every service the layer
/// built.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Handle { shared }
    }

    /// The bulkhead's name.
    pub fn name(&self) -> &str {
        self.shared.name.as_str()
    }

    /// The configured limit on calls in flight.
    pub fn max_concurrent(&self) -> usize {
        self.shared.max_concurrent
    }

    /// The configured longest wait for a slot (zero: fail fast).
    pub fn max_wait(&self) -> Duration {
        self.shared.max_wait
    }

    /// Slots in use: calls in flight, plus slots reserved by services that
    /// are ready but have not been called yet.
    pub fn in_flight(&self) -> usize {
        self.shared.max_concurrent - self.available()
    }

    /// Free slots.
    pub fn available(&self) -> usize {
        self.shared.semaphore.available_permits()
    }

    /// Callers waiting for a slot right now.
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::Relaxed)
    }

    /// Calls refused since the layer was built.
    pub fn rejected(&self) -> u64 {
        self.shared.rejected.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("name", &self.name())
            .field("max_concurrent", &self.max_concurrent())
            .field("in_flight", &self.in_flight())
            .field("waiting", &self.waiting())
            .field("rejected", &self.rejected())
            .finish()
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("max_concurrent", &self.max_concurrent)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}
