//! The state every [`Bulkhead`](super::Bulkhead) from one layer shares, the
//! permit a call holds, the wait for a slot, and the [`Handle`] that reads
//! the state.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::slots::{Slots, Waiter};
use crate::error::BulkheadFull;
use crate::metrics::{Count, Durations, Level};
use crate::name::Name;
use crate::sync::{AtomicU64, Ordering};

/// The slots and the counters, behind one `Arc` per layer value.
pub(crate) struct Shared {
    slots: Slots,
    name: Name,
    max_concurrent: usize,
    max_wait: Duration,
    rejected: AtomicU64,
    /// `palisade_bulkhead_in_use{name}`: slots held.
    in_use: Level,
    /// `palisade_bulkhead_rejected_total{name}`.
    rejected_count: Count,
    /// `palisade_bulkhead_waiting{name}`: callers queued for a slot.
    waiting: Level,
    /// `palisade_bulkhead_wait_duration_seconds{name}`: waits that ended
    /// with a slot or with `max_wait` run out.
    waited: Durations,
}

/// One slot, held by a call; gives the slot back when dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    shared: Arc<Shared>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shared.slots.release();
        self.shared.in_use.down();
    }
}

/// What to do when no slot was free at the first look.
pub(crate) enum WhenFull {
    /// One freed up after all.
    Admit(Permit),
    /// Wait for one, up to `max_wait`.
    Wait(Pin<Box<WaitForSlot>>),
    Refuse,
}

impl Shared {
    pub(crate) fn new(name: Name, max_concurrent: usize, max_wait: Duration) -> Self {
        Shared {
            slots: Slots::new(max_concurrent),
            in_use: Level::new("palisade_bulkhead_in_use", name.as_str()),
            rejected_count: Count::new("palisade_bulkhead_rejected_total", name.as_str()),
            waiting: Level::new("palisade_bulkhead_waiting", name.as_str()),
            waited: Durations::new("palisade_bulkhead_wait_duration_seconds", name.as_str()),
            name,
            max_concurrent,
            max_wait,
            rejected: AtomicU64::new(0),
        }
    }

    /// Takes a free slot if there is one: the fast path, kept small so it
    /// inlines into `poll_ready`.
    #[inline]
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        self.slots.try_acquire().then(|| self.permit())
    }

    /// A slot just taken, as a permit that gives it back.
    #[inline]
    fn permit(self: &Arc<Self>) -> Permit {
        self.in_use.up();
        Permit {
            shared: self.clone(),
        }
    }

    /// No free slot at the first look: refuse at once, or queue for one.
    #[cold]
    pub(crate) fn when_full(self: &Arc<Self>) -> WhenFull {
        if self.max_wait.is_zero() {
            return WhenFull::Refuse;
        }
        match self.slots.acquire_or_enqueue() {
            Ok(()) => WhenFull::Admit(self.permit()),
            // One allocation per wait (two with the waiter), never on the
            // fast path.
            Err(waiter) => WhenFull::Wait(Box::pin(WaitForSlot {
                since: {
                    self.waiting.up();
                    Instant::now()
                },
                queued: Queued {
                    shared: self.clone(),
                    waiter: Some(waiter),
                },
                deadline: tokio::time::sleep(self.max_wait),
            })),
        }
    }

    #[cold]
    pub(crate) fn count_rejection(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.rejected_count.add();
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

pin_project! {
    /// A place in the queue for a slot, given up after `max_wait`.
    pub(crate) struct WaitForSlot {
        // When the wait began.
        since: Instant,
        queued: Queued,
        #[pin]
        deadline: Sleep,
    }
}

/// Leaves the queue when dropped, handing on a slot it was given but never
/// collected, so a cancelled waiter consumes nothing.
struct Queued {
    shared: Arc<Shared>,
    waiter: Option<crate::sync::Arc<Waiter>>,
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.shared.waiting.down();
        if let Some(waiter) = self.waiter.take()
            && self.shared.slots.cancel(&waiter)
        {
            self.shared.slots.release();
        }
    }
}

impl Future for WaitForSlot {
    /// The slot, or `None` when `max_wait` ran out first.
    type Output = Option<Permit>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(waiter) = &this.queued.waiter else {
            return Poll::Ready(None);
        };
        let shared = this.queued.shared.clone();
        if Slots::poll_granted(waiter, cx).is_ready() {
            this.queued.waiter = None;
            shared.waited.since(*this.since);
            return Poll::Ready(Some(shared.permit()));
        }
        std::task::ready!(this.deadline.poll(cx));
        shared.waited.since(*this.since);
        let granted = this
            .queued
            .waiter
            .take()
            .is_some_and(|waiter| shared.slots.cancel(&waiter));
        // A slot handed over at the deadline is used, not thrown back. (Lazy
        // `then`: a `Permit` built and dropped would release a slot.)
        Poll::Ready(granted.then(|| shared.permit()))
    }
}

impl fmt::Debug for WaitForSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitForSlot").finish_non_exhaustive()
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
    /// are ready but have not been called yet (their inner service may still
    /// be pending), plus slots handed to waiters that have not collected
    /// them yet.
    pub fn in_flight(&self) -> usize {
        self.shared.max_concurrent.saturating_sub(self.available())
    }

    /// Free slots.
    pub fn available(&self) -> usize {
        self.shared.slots.available()
    }

    /// Callers queued for a slot right now.
    pub fn waiting(&self) -> usize {
        self.shared.slots.queued()
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
