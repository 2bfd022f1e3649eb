//! The breaker's [`Handle`], its states, snapshots and events.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::breaker::{Breaker, Settings, Target};
use super::period::{Period, Start};
use super::window::Totals;
use crate::name::Name;

/// A breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Calls go through; their outcomes are recorded, and reaching a
    /// threshold opens the breaker.
    Closed,
    /// Calls are refused with [`CircuitOpen`](crate::error::CircuitOpen)
    /// until the open duration has passed.
    Open,
    /// A few probe calls go through to test the service; the rest are refused.
    HalfOpen,
    /// Opened by hand: every call is refused until told otherwise.
    ForcedOpen,
    /// Switched off by hand: every call goes through, nothing is recorded.
    Disabled,
    /// Calls go through and are recorded, but the breaker never opens;
    /// reaching a threshold is reported instead. For trying out thresholds.
    MetricsOnly,
}

/// The state in lower case, words joined by `_` (`closed`, `half_open`,
/// `forced_open`, ...): a stable word for logs, metrics labels and JSON.
impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
            State::MetricsOnly => "metrics_only",
        })
    }
}

/// Why a breaker changed state, or reported a threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The failure rate reached its threshold.
    FailureRate,
    /// The slow-call rate reached its threshold.
    SlowCallRate,
    /// The configured number of failures came in a row.
    ConsecutiveFailures,
    /// The open duration passed and a call arrived (Open to HalfOpen).
    OpenDurationPassed,
    /// Every probe reported, below both thresholds (HalfOpen to Closed).
    ProbesSucceeded,
    /// The probes did not settle within the half-open wait bound.
    HalfOpenTimedOut,
    /// A failed call carried a retry-after, and the breaker opens on those
    /// (`open_on_retry_after`); it stays open for that long.
    RetryAfter,
    /// A manual transition through the [`Handle`].
    Manual,
    /// [`Handle::reset`], or the breaker's first period.
    Reset,
}

/// Something a breaker reports to its listener (and as a `tracing` event).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// The breaker changed state.
    Transition(Transition),
    /// In [`State::MetricsOnly`], a threshold was reached; reported once per
    /// threshold until the state changes.
    ThresholdExceeded(ThresholdExceeded),
}

/// A change of state.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Transition {
    name: Name,
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
    /// Why.
    pub reason: Reason,
    /// The new state period's number; it grows by one with each transition,
    /// so listeners on several threads can put events in order.
    pub generation: u64,
    /// The failure rate of the period left, where it held any calls.
    pub failure_rate: Option<f64>,
    /// The slow-call rate of the period left, where it held any calls.
    pub slow_call_rate: Option<f64>,
    /// Entering Open: how long until a probe may go.
    pub open_for: Option<Duration>,
}

impl Transition {
    pub(crate) fn new(name: Name, from: &Period, to: Start, totals: Totals) -> Self {
        Transition {
            name,
            from: from.state(),
            to: to.state,
            reason: to.reason,
            generation: to.generation,
            failure_rate: rate(totals.failures, totals.calls),
            slow_call_rate: rate(totals.slow, totals.calls),
            open_for: to
                .open_until
                .map(|until| until.saturating_duration_since(to.since)),
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }
}

/// A threshold reached while in [`State::MetricsOnly`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ThresholdExceeded {
    name: Name,
    /// Which threshold.
    pub reason: Reason,
    /// The failure rate when it was reached.
    pub failure_rate: Option<f64>,
    /// The slow-call rate when it was reached.
    pub slow_call_rate: Option<f64>,
}

impl ThresholdExceeded {
    pub(crate) fn new(name: Name, reason: Reason, totals: Totals) -> Self {
        ThresholdExceeded {
            name,
            reason,
            failure_rate: rate(totals.failures, totals.calls),
            slow_call_rate: rate(totals.slow, totals.calls),
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }
}

impl Event {
    /// Emits the event through `tracing`: opening at WARN, the rest at INFO.
    pub(crate) fn trace(&self) {
        match self {
            Event::Transition(t) if matches!(t.to, State::Open | State::ForcedOpen) => {
                tracing::warn!(
                    target: "palisade::circuit_breaker",
                    breaker = t.name(),
                    from = ?t.from,
                    to = ?t.to,
                    reason = ?t.reason,
                    failure_rate = ?t.failure_rate,
                    slow_call_rate = ?t.slow_call_rate,
                    open_for = ?t.open_for,
                    "circuit breaker opened"
                );
            }
            Event::Transition(t) => {
                tracing::info!(
                    target: "palisade::circuit_breaker",
                    breaker = t.name(),
                    from = ?t.from,
                    to = ?t.to,
                    reason = ?t.reason,
                    failure_rate = ?t.failure_rate,
                    slow_call_rate = ?t.slow_call_rate,
                    "circuit breaker changed state"
                );
            }
            Event::ThresholdExceeded(e) => {
                tracing::warn!(
                    target: "palisade::circuit_breaker",
                    breaker = e.name(),
                    reason = ?e.reason,
                    failure_rate = ?e.failure_rate,
                    slow_call_rate = ?e.slow_call_rate,
                    "circuit breaker threshold exceeded (metrics only, not opening)"
                );
            }
        }
    }
}

fn rate(count: u64, calls: u64) -> Option<f64> {
    (calls > 0).then(|| count as f64 / calls as f64)
}

/// What a breaker has counted in its current state period.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The state.
    pub state: State,
    /// Why the breaker entered it.
    pub reason: Reason,
    /// The state period's number (see [`Transition::generation`]).
    pub generation: u64,
    /// When the breaker entered it.
    pub since: Instant,
    /// Outcomes counted (successes and failures; ignored calls are not). In
    /// Closed and MetricsOnly, those in the window; in HalfOpen, the probes
    /// that reported; in Open, those that opened it.
    pub calls: u64,
    /// Failures among `calls`.
    pub failures: u64,
    /// Slow calls among `calls` (a slow call may also be a failure).
    pub slow_calls: u64,
    /// `failures / calls`, once there are enough calls for a rate to count:
    /// in Closed and MetricsOnly, the minimum number of calls.
    pub failure_rate: Option<f64>,
    /// `slow_calls / calls`, under the same condition.
    pub slow_call_rate: Option<f64>,
    /// The failures in a row at the end of the window.
    pub consecutive_failures: u64,
    /// Calls refused in this state period.
    pub not_permitted: u64,
    /// Half-open probes admitted that have not reported yet.
    pub probes_in_flight: u32,
    /// In Open, how long until a probe may go (zero once it may).
    pub retry_after: Option<Duration>,
}

impl Snapshot {
    pub(crate) fn new(
        period: &Period,
        totals: Totals,
        settings: &Settings,
        now: Instant,
        refusals: u64,
    ) -> Self {
        let start = &period.start;
        let gated = matches!(start.state, State::Closed | State::MetricsOnly)
            && totals.calls < settings.thresholds.minimum_calls;
        let rate = |count| {
            if gated {
                None
            } else {
                rate(count, totals.calls)
            }
        };
        Snapshot {
            state: start.state,
            reason: start.reason,
            generation: start.generation,
            since: start.since,
            calls: totals.calls,
            failures: totals.failures,
            slow_calls: totals.slow,
            failure_rate: rate(totals.failures),
            slow_call_rate: rate(totals.slow),
            consecutive_failures: period.consecutive_failures(),
            not_permitted: refusals.saturating_sub(start.refusals_before),
            probes_in_flight: period.probes().map_or(0, |p| p.in_flight()),
            retry_after: start
                .open_until
                .map(|until| until.saturating_duration_since(now)),
        }
    }
}

/// A handle on a circuit breaker: its state, counts and manual control.
///
/// Cheap to clone; every clone, like every service the layer built, shares
/// one breaker. Reading never blocks calls; a manual transition takes the
/// same short lock an automatic one does.
///
/// Open to HalfOpen happens when the first call arrives after the open
/// duration (no background task), so [`state`](Self::state) reads `Open`
/// until then, and `snapshot().retry_after` reads zero. With the `metrics`
/// feature, inside a tokio runtime, a timer makes the move when the open
/// duration passes, so that the state gauge shows what the next call
/// would meet.
#[derive(Clone)]
pub struct Handle {
    breaker: Arc<Breaker>,
}

impl Handle {
    pub(crate) fn new(breaker: Arc<Breaker>) -> Self {
        Handle { breaker }
    }

    /// See `Breaker::refusing`.
    #[cfg(feature = "redis")]
    pub(crate) fn refusing(&self) -> Option<Option<Duration>> {
        self.breaker.refusing()
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        self.breaker.name().as_str()
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.breaker.current().state()
    }

    /// The counts of the current state period.
    pub fn snapshot(&self) -> Snapshot {
        self.breaker.snapshot()
    }

    /// Opens the breaker until told otherwise ([`State::ForcedOpen`]): every
    /// call is refused, with no `retry_after`. Returns whether the state
    /// changed.
    pub fn force_open(&self) -> bool {
        self.breaker
            .transition_to(Target::ForcedOpen, super::Reason::Manual)
    }

    /// Opens the breaker as a tripped breaker opens, for the schedule's next
    /// duration; after it, probes go as usual. Returns whether the state
    /// changed (it does not when the breaker is already Open).
    pub fn open(&self) -> bool {
        self.breaker
            .transition_to(Target::Open(None), Reason::Manual)
    }

    /// Opens the breaker for `duration`; after it, probes go
    /// as usual. This always starts a fresh open period, even from Open.
    pub fn open_for(&self, duration: Duration) -> bool {
        self.breaker
            .transition_to(Target::Open(Some(duration)), Reason::Manual)
    }

    /// Closes the breaker: a fresh Closed period with an empty window.
    /// Returns whether the state changed (it does not when already Closed:
    /// use [`reset`](Self::reset) to empty the window).
    pub fn force_closed(&self) -> bool {
        self.breaker.transition_to(Target::Closed, Reason::Manual)
    }

    /// Switches the breaker off ([`State::Disabled`]): every call goes
    /// through and nothing is recorded.
    pub fn disable(&self) -> bool {
        self.breaker.transition_to(Target::Disabled, Reason::Manual)
    }

    /// Records without ever opening ([`State::MetricsOnly`]).
    pub fn metrics_only(&self) -> bool {
        self.breaker
            .transition_to(Target::MetricsOnly, Reason::Manual)
    }

    /// Starts afresh: Closed, an empty window, and the open-duration schedule
    /// back at its first step. Always emits a transition event, with
    /// [`Reason::Reset`].
    pub fn reset(&self) {
        self.breaker.transition_to(Target::Closed, Reason::Reset);
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Handle").field(&self.breaker).finish()
    }
}
