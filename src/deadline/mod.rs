//! Deadlines that travel with a request, across layers and across hops.
//!
//! A caller that will wait 800 ms for an answer gains nothing from an
//! upstream that works on for 2 s, nor from a retry that starts at 790 ms.
//! A [`Deadline`] is the moment after which nobody is waiting. It rides in
//! the request itself, so every layer below the one that set it, and every
//! service the request reaches over HTTP, works to the same moment:
//!
//! - a [`timeout`](crate::timeout) fires at its own limit or at the
//!   request's deadline, whichever comes first, hands the earlier of the two
//!   on, and does not send a request whose deadline has passed;
//! - [`retry`](crate::retry) starts no attempt, and sleeps no backoff, past
//!   the request's deadline, and hands its own deadline (when it has one and
//!   it is the earlier) to every attempt;
//! - a call cut short by its caller's deadline says nothing certain about
//!   the upstream's health, so the
//!   [`DefaultClassifier`](crate::classify::DefaultClassifier) (and with it
//!   a circuit breaker and retry) ignores it: a breaker does not open
//!   because its callers were in a hurry;
//! - over HTTP, the `http` module's `WriteDeadlineLayer` sends the time left
//!   in a header (in gRPC's `grpc-timeout` form) and its `ReadDeadlineLayer`
//!   turns it back into a deadline on the server, refusing a request that
//!   arrives with no time left without doing any work.
//!
//! The earliest deadline always wins: combining two deadlines gives the
//! earlier one, in either order, and no layer ever moves a request's
//! deadline later. Across a network hop the time left is sent and counted
//! again from the request's arrival, so the next service's deadline falls
//! later than its caller's by the time the request spent on the wire (and
//! the header's rounding up, at most a microsecond below 100 s): a caller
//! may give up a moment before the service it called does.
//!
//! # Attempt timeouts and the deadlines callers bring
//!
//! A call cut short by its request's deadline before the timeout's own limit
//! is ignored by a breaker (it was not given its time). So give each attempt
//! a timeout shorter than the deadlines its callers usually bring: a hung
//! dependency then fails against the attempt timeout, and the breaker sees
//! it. A service whose own calls have the same timeout as its callers'
//! deadlines would see only deadline-cut calls, and its breakers would never
//! learn that a dependency hangs.
//!
//! # Where a request keeps its deadline
//!
//! A layer reads and writes deadlines through a [`DeadlineSlot`]: where a
//! request of its type keeps one. The default, [`NoDeadline`], says requests
//! carry none; with it a layer behaves exactly as it did before deadlines
//! existed and pays nothing for them (the benchmarks show the same cost).
//! For `http::Request`s the `http` module's `InExtensions` keeps the
//! deadline in the request's extensions. Any other request type can keep
//! one by implementing the trait:
//!
//! ```
//! use palisade::deadline::{Deadline, DeadlineSlot};
//!
//! struct Query { sql: String, deadline: Option<Deadline> }
//!
//! #[derive(Clone, Copy)]
//! struct QueryDeadline;
//!
//! impl DeadlineSlot<Query> for QueryDeadline {
//!     fn deadline(&self, query: &Query) -> Option<Deadline> {
//!         query.deadline
//!     }
//!     fn set_deadline(&self, query: &mut Query, deadline: Deadline) {
//!         query.deadline = Some(deadline);
//!     }
//! }
//! ```
//!
//! A layer takes a slot through its `deadline_slot` method, for example
//! `TimeoutLayer::new(d)?.deadline_slot(InExtensions)`.
//!
//! All time is `tokio::time`, so deadlines follow tokio's paused clock in
//! tests.

use std::time::Duration;

use tokio::time::Instant;

/// The moment after which nobody waits for a request's answer.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// use std::time::Duration;
/// use palisade::deadline::Deadline;
///
/// let soon = Deadline::after(Duration::from_millis(100));
/// let later = Deadline::after(Duration::from_secs(1));
/// assert_eq!(soon.earliest(later), soon);
/// assert_eq!(later.earliest(soon), soon);
/// assert_eq!(soon.remaining(), Duration::from_millis(100));
/// tokio::time::advance(Duration::from_millis(150)).await;
/// assert!(soon.is_expired());
/// assert_eq!(soon.remaining(), Duration::ZERO);
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

impl Deadline {
    /// The deadline at `instant`.
    pub fn at(instant: Instant) -> Self {
        Deadline(instant)
    }

    /// The deadline `time` from now. A `time` the clock cannot add to now
    /// gives a deadline about thirty years away rather than a panic.
    pub fn after(time: Duration) -> Self {
        Deadline::after_from(Instant::now(), time)
    }

    /// The deadline `time` after `now`, saturating as [`Deadline::after`].
    pub(crate) fn after_from(now: Instant, time: Duration) -> Self {
        const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
        Deadline(now.checked_add(time).unwrap_or_else(|| now + FAR.min(time)))
    }

    /// When it passes.
    pub fn instant(self) -> Instant {
        self.0
    }

    /// The time left now; zero once it has passed.
    pub fn remaining(self) -> Duration {
        self.remaining_at(Instant::now())
    }

    /// The time left at `now`; zero once it has passed.
    pub(crate) fn remaining_at(self, now: Instant) -> Duration {
        self.0.saturating_duration_since(now)
    }

    /// Whether it has passed (a deadline is over at its own instant: no
    /// time is left then).
    pub fn is_expired(self) -> bool {
        Instant::now() >= self.0
    }

    /// The earlier of the two.
    #[must_use]
    pub fn earliest(self, other: Deadline) -> Deadline {
        self.min(other)
    }
}

/// Where a request of type `Req` keeps its [`Deadline`].
///
/// Layers that honour deadlines take one through their `deadline_slot`
/// method; see the [module docs](self). Implementations must be cheap:
/// layers call them on every request.
pub trait DeadlineSlot<Req> {
    /// The deadline `request` carries, if any.
    fn deadline(&self, request: &Req) -> Option<Deadline>;

    /// Makes `request` carry `deadline`, replacing any it had.
    fn set_deadline(&self, request: &mut Req, deadline: Deadline);

    /// Whether requests can carry a deadline at all. `false` only for
    /// [`NoDeadline`], which lets a layer keep its deadline-free fast path
    /// (a timeout then reads no clock when the call answers at once).
    fn carries_deadlines(&self) -> bool {
        true
    }
}

/// Requests carry no deadline: the default [`DeadlineSlot`] of every layer.
///
/// A layer with it neither reads nor writes a deadline, and costs what it
/// did without deadline support.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDeadline;

impl<Req> DeadlineSlot<Req> for NoDeadline {
    #[inline]
    fn deadline(&self, _: &Req) -> Option<Deadline> {
        None
    }

    #[inline]
    fn set_deadline(&self, _: &mut Req, _: Deadline) {}

    #[inline]
    fn carries_deadlines(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scenario DL-1: combining two deadlines gives the earlier, in either
    /// order.
    #[tokio::test(start_paused = true)]
    async fn the_earliest_deadline_wins_in_either_order() {
        let a = Deadline::after(Duration::from_secs(1));
        let b = Deadline::after(Duration::from_secs(2));
        assert_eq!(a.earliest(b), a);
        assert_eq!(b.earliest(a), a);
        assert_eq!(a.earliest(a), a);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_beyond_the_clock_saturates_instead_of_panicking() {
        let far = Deadline::after(Duration::MAX);
        assert!(far.remaining() > Duration::from_secs(365 * 24 * 3600));
        assert!(!far.is_expired());
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_is_over_at_its_own_instant() {
        let d = Deadline::after(Duration::from_millis(10));
        tokio::time::advance(Duration::from_millis(9)).await;
        assert!(!d.is_expired());
        assert_eq!(d.remaining(), Duration::from_millis(1));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(d.is_expired());
        assert_eq!(d.remaining(), Duration::ZERO);
    }
}
