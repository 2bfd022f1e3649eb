//! One state period of a breaker: from one transition to the next.
//!
//! Every transition makes a fresh [`Period`] with its own window (Closed,
//! MetricsOnly) or probe slots (HalfOpen), and every admitted call holds a
//! [`Ticket`] on the period it was admitted under. An outcome is recorded
//! into that period, whatever the breaker's state by the time it arrives: a
//! late result lands in a period that is no longer current, where it can
//! change nothing (an outcome counts against the state it was admitted under). And a window is never
//! reset while other threads write to it; it is simply left behind.

// std's Arc and Weak, not the loom shim's: periods are swapped with
// arc-swap and point back to their breaker with a `Weak`, neither of which
// loom's Arc offers (see breaker.rs).
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::breaker::{Breaker, Clock, Settings};
use super::handle::{Reason, State};
use super::metrics::BreakerMetrics;
use super::probes::{Probes, Tally};
use super::window::{Record, Totals, Window, WindowKind};
use crate::classify::Outcome;
use crate::sync::{AtomicBool, AtomicU8, AtomicU64, Ordering};

const PPM: u64 = 1_000_000;

/// A rate in (0, 1] as parts per million, so that thresholds are compared in
/// exact integer arithmetic (in floating point, 0.3 × 10 is not 3).
pub(crate) fn to_ppm(rate: f64) -> u32 {
    (rate * PPM as f64).round() as u32
}

/// Whether `count` of `calls` is at least the rate `ppm`.
fn reached(count: u64, calls: u64, ppm: u32) -> bool {
    calls > 0 && u128::from(count) * u128::from(PPM) >= u128::from(ppm) * u128::from(calls)
}

/// A breaker's thresholds, copied into each period so that recording an
/// outcome never has to reach the breaker itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Thresholds {
    pub(crate) failure_ppm: u32,
    pub(crate) slow: Option<SlowCalls>,
    pub(crate) minimum_calls: u64,
    pub(crate) consecutive_failures: Option<u64>,
}

/// Slow-call detection: a call longer than `longer_than` is slow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlowCalls {
    pub(crate) longer_than: Duration,
    pub(crate) ppm: u32,
}

/// The thresholds an outcome found reached, as bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Crossed(u8);

impl Crossed {
    const FAILURE_RATE: u8 = 1;
    const SLOW_CALL_RATE: u8 = 2;
    const CONSECUTIVE: u8 = 4;

    fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Each threshold reached, as the reason it gives for opening; the most
    /// specific first.
    pub(crate) fn reasons(self) -> impl Iterator<Item = Reason> {
        [
            (Self::CONSECUTIVE, Reason::ConsecutiveFailures),
            (Self::FAILURE_RATE, Reason::FailureRate),
            (Self::SLOW_CALL_RATE, Reason::SlowCallRate),
        ]
        .into_iter()
        .filter(move |(bit, _)| self.0 & bit != 0)
        .map(|(_, reason)| reason)
    }
}

/// What the probes of a half-open period have decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pending,
    Reopen(Reason),
    Close,
}

impl Thresholds {
    /// The rate thresholds a window's totals reach, once it holds the
    /// minimum number of calls.
    #[inline]
    fn over_window(&self, totals: Totals) -> Crossed {
        if totals.calls == 0 || totals.calls < self.minimum_calls {
            return Crossed::default();
        }
        let mut bits = 0;
        if reached(totals.failures, totals.calls, self.failure_ppm) {
            bits |= Crossed::FAILURE_RATE;
        }
        if let Some(slow) = self.slow
            && reached(totals.slow, totals.calls, slow.ppm)
        {
            bits |= Crossed::SLOW_CALL_RATE;
        }
        Crossed(bits)
    }

    /// Judges the probes over all `limit` of them. It reopens as soon as the
    /// outcomes so far reach a threshold over all `limit` (the outcomes still
    /// to come cannot bring the rate back below it), and closes once all
    /// `limit` have reported below both thresholds.
    pub(crate) fn over_probes(&self, tally: Tally, limit: u32) -> Verdict {
        let all = u64::from(limit);
        if reached(tally.failures.into(), all, self.failure_ppm) {
            return Verdict::Reopen(Reason::FailureRate);
        }
        if let Some(slow) = self.slow
            && reached(tally.slow.into(), all, slow.ppm)
        {
            return Verdict::Reopen(Reason::SlowCallRate);
        }
        if tally.reported >= limit {
            Verdict::Close
        } else {
            Verdict::Pending
        }
    }
}

/// How a period begins: decided by the breaker under its transition lock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Start {
    pub(crate) state: State,
    pub(crate) generation: u64,
    pub(crate) since: Instant,
    pub(crate) reason: Reason,
    /// Open: when the first probe may go. `None` when forced open, or when
    /// the duration does not fit the clock.
    pub(crate) open_until: Option<Instant>,
    /// Openings since the breaker last closed, this one included.
    pub(crate) openings: u32,
    /// Open: the totals of the period that opened it, kept for the handle.
    pub(crate) carried: Totals,
    /// The breaker's refusals before this period began.
    pub(crate) refusals_before: u64,
}

// Aligned to cache lines, so that its fields do not share one with the
// reference count every admitted call moves up and down.
#[repr(align(128))]
pub(crate) struct Period {
    pub(crate) start: Start,
    window: Option<Window>,
    probes: Option<Probes>,
    thresholds: Thresholds,
    time_window: bool,
    clock: Clock,
    consecutive: AtomicU64,
    // MetricsOnly: the thresholds already reported as exceeded.
    exceeded: AtomicU8,
    // Set once a later period has replaced this one.
    left: AtomicBool,
    // Closed and HalfOpen, when the breaker opens on a failure's
    // retry-after: the longest it opens for.
    open_on_retry_after: Option<Duration>,
    // HalfOpen in waiting mode: a slot given back wakes the waiters.
    wakes_waiters: bool,
    breaker: Weak<Breaker>,
    metrics: BreakerMetrics,
}

impl Period {
    pub(crate) fn new(
        breaker: Weak<Breaker>,
        settings: &Settings,
        clock: Clock,
        start: Start,
        metrics: BreakerMetrics,
    ) -> Self {
        let window = matches!(start.state, State::Closed | State::MetricsOnly)
            .then(|| Window::new(settings.window, clock.nanos(start.since)));
        let probes =
            (start.state == State::HalfOpen).then(|| Probes::new(settings.half_open_probes));
        Period {
            start,
            window,
            probes,
            thresholds: settings.thresholds,
            time_window: matches!(settings.window, WindowKind::Time { .. }),
            clock,
            consecutive: AtomicU64::new(0),
            exceeded: AtomicU8::new(0),
            left: AtomicBool::new(false),
            open_on_retry_after: settings
                .open_on_retry_after
                .filter(|_| matches!(start.state, State::Closed | State::HalfOpen)),
            wakes_waiters: settings.wait_when_open.is_some(),
            breaker,
            metrics,
        }
    }

    pub(crate) fn state(&self) -> State {
        self.start.state
    }

    /// Closed, MetricsOnly and Disabled let every call through.
    #[inline]
    pub(crate) fn admits_every_call(&self) -> bool {
        matches!(
            self.start.state,
            State::Closed | State::MetricsOnly | State::Disabled
        )
    }

    pub(crate) fn probes(&self) -> Option<&Probes> {
        self.probes.as_ref()
    }

    /// Whether a later period has replaced this one.
    #[inline]
    pub(crate) fn has_left(&self) -> bool {
        self.left.load(Ordering::Acquire)
    }

    pub(crate) fn mark_left(&self) {
        self.left.store(true, Ordering::Release);
    }

    /// The longest a failure's retry-after may open the breaker for, if
    /// this period opens on one.
    #[inline]
    pub(crate) fn open_on_retry_after(&self) -> Option<Duration> {
        self.open_on_retry_after
    }

    pub(crate) fn consecutive_failures(&self) -> u64 {
        self.consecutive.load(Ordering::Relaxed)
    }

    /// The breaker's clock.
    #[inline]
    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Whether calls admitted under this period need their start time read.
    #[inline]
    pub(crate) fn times_calls(&self) -> bool {
        self.thresholds.slow.is_some() && (self.window.is_some() || self.probes.is_some())
    }

    /// What this period has counted, as of `now`: the window's totals, the
    /// probes' tally, or (Open) the totals that opened it.
    pub(crate) fn totals(&self, now: Instant) -> Totals {
        if let Some(window) = &self.window {
            return window.totals(self.clock.nanos(now));
        }
        if let Some(probes) = &self.probes {
            let tally = probes.tally();
            return Totals {
                calls: tally.reported.into(),
                failures: tally.failures.into(),
                slow: tally.slow.into(),
            };
        }
        self.start.carried
    }

    /// Whether a call that began at `started` and ended at `now` was slow
    /// (strictly longer than the threshold).
    #[inline]
    fn is_slow(&self, started: Option<Instant>, now: Option<Instant>) -> bool {
        match (started, now, self.thresholds.slow) {
            (Some(started), Some(now), Some(slow)) => {
                now.saturating_duration_since(started) > slow.longer_than
            }
            _ => false,
        }
    }

    /// Records a finished call admitted under this (Closed, MetricsOnly or
    /// Disabled) period, and acts on any threshold it reaches.
    #[inline]
    fn record(self: &Arc<Self>, outcome: Outcome, started: Option<Instant>) {
        let failure = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::Ignored => return,
        };
        if self.window.is_none() {
            return; // Disabled records nothing
        }
        let judged = self.record_in_window(failure, started);
        let mut crossed = judged.map_or(Crossed::default(), |totals| {
            self.thresholds.over_window(totals)
        });
        crossed.0 |= self.count_consecutive(failure).0;
        if !crossed.is_empty() {
            self.on_crossed(crossed);
        }
    }

    /// Puts an outcome into the window; the totals, if they need judging.
    #[inline]
    fn record_in_window(&self, failure: bool, started: Option<Instant>) -> Option<Totals> {
        let window = self.window.as_ref()?;
        // The clock is read only when something needs it: a count window
        // without slow-call detection records without it.
        let now = (started.is_some() || self.time_window).then(|| self.clock.now());
        let slow = self.is_slow(started, now);
        let at = now.map_or(0, |now| self.clock.nanos(now));
        window.record_and_judge(Record { failure, slow }, at, self.thresholds.minimum_calls)
    }

    /// Counts a failure that is about to open the breaker by itself (a
    /// retry-after), without judging it, so the opening's totals include it.
    fn count_opening_failure(&self, started: Option<Instant>) {
        if let Some(probes) = &self.probes {
            let slow = self.is_slow(started, started.map(|_| self.clock.now()));
            probes.report(true, slow);
        } else {
            self.record_in_window(true, started);
        }
    }

    #[inline]
    fn count_consecutive(&self, failure: bool) -> Crossed {
        let Some(limit) = self.thresholds.consecutive_failures else {
            return Crossed::default();
        };
        if failure {
            let run = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
            if run >= limit {
                return Crossed(Crossed::CONSECUTIVE);
            }
        } else if self.consecutive.load(Ordering::Relaxed) != 0 {
            // Loaded first, so a run of successes does not write the shared
            // line on every call.
            self.consecutive.store(0, Ordering::Relaxed);
        }
        Crossed::default()
    }

    fn on_crossed(self: &Arc<Self>, crossed: Crossed) {
        if self.has_left() {
            return; // a late outcome: its period is over
        }
        match self.start.state {
            State::Closed => {
                let Some(reason) = crossed.reasons().next() else {
                    return;
                };
                if let Some(breaker) = self.breaker.upgrade() {
                    breaker.trip(self, reason);
                }
            }
            State::MetricsOnly => {
                // Each threshold is reported once per period.
                if crossed.0 & !self.exceeded.load(Ordering::Relaxed) == 0 {
                    return;
                }
                let new = crossed.0 & !self.exceeded.fetch_or(crossed.0, Ordering::AcqRel);
                if new != 0
                    && let Some(breaker) = self.breaker.upgrade()
                {
                    breaker.report_exceeded(self, Crossed(new));
                }
            }
            _ => {}
        }
    }

    /// Records a half-open probe's outcome (not ignored), and closes or
    /// reopens the breaker when it settles the period.
    fn record_probe(self: &Arc<Self>, failure: bool, started: Option<Instant>) {
        let Some(probes) = &self.probes else {
            return;
        };
        let now = started.map(|_| self.clock.now());
        let slow = self.is_slow(started, now);
        let (before, after) = probes.report(failure, slow);
        let limit = probes.limit();
        if self.thresholds.over_probes(before, limit) != Verdict::Pending {
            return; // an earlier probe settled it
        }
        let verdict = self.thresholds.over_probes(after, limit);
        if verdict == Verdict::Pending || self.has_left() {
            return;
        }
        if let Some(breaker) = self.breaker.upgrade() {
            match verdict {
                Verdict::Reopen(reason) => breaker.reopen(self, reason),
                Verdict::Close => breaker.close(self),
                Verdict::Pending => {}
            }
        }
    }
}

impl std::fmt::Debug for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Period")
            .field("state", &self.start.state)
            .field("generation", &self.start.generation)
            .field("left", &self.has_left())
            .finish_non_exhaustive()
    }
}

/// An admitted call's claim on the period it was admitted under.
pub(crate) enum Ticket {
    /// Closed, MetricsOnly or Disabled: the outcome goes into the window.
    Window(Arc<Period>),
    /// HalfOpen: a probe slot.
    Probe(ProbeSlot),
}

/// A half-open probe slot, given back when dropped without a report.
pub(crate) struct ProbeSlot {
    period: Option<Arc<Period>>,
}

impl ProbeSlot {
    pub(crate) fn new(period: Arc<Period>) -> Self {
        ProbeSlot {
            period: Some(period),
        }
    }
}

impl Drop for ProbeSlot {
    fn drop(&mut self) {
        let Some(period) = &self.period else { return };
        if let Some(probes) = period.probes() {
            probes.give_back();
            if period.wakes_waiters
                && let Some(breaker) = period.breaker.upgrade()
            {
                breaker.notify_waiters();
            }
        }
    }
}

impl Ticket {
    #[inline]
    fn period(&self) -> Option<&Period> {
        match self {
            Ticket::Window(period) => Some(period),
            Ticket::Probe(slot) => slot.period.as_deref(),
        }
    }

    /// Whether the breaker has moved on since this ticket was issued.
    #[inline]
    pub(crate) fn is_stale(&self) -> bool {
        self.period().is_none_or(Period::has_left)
    }

    /// The longest a failure's retry-after may open the breaker for, if the
    /// ticket's period opens on one.
    #[inline]
    pub(crate) fn open_on_retry_after(&self) -> Option<Duration> {
        self.period().and_then(Period::open_on_retry_after)
    }

    /// Counts the failure and opens the ticket's period at once for
    /// `lasting`. A period that has already left changes
    /// nothing.
    pub(crate) fn finish_opening(self, lasting: Duration, started: Option<Instant>) {
        let period = match self {
            Ticket::Window(period) => period,
            // Taken: a reported probe's slot is not given back.
            Ticket::Probe(mut slot) => match slot.period.take() {
                Some(period) => period,
                None => return,
            },
        };
        period.metrics.outcome(Outcome::Failure, started);
        if period.has_left() {
            return; // a late result: its period is over
        }
        let Some(breaker) = period.breaker.upgrade() else {
            return;
        };
        // Counted first, unjudged: the opening's totals include it, and no
        // ordinary trip (with the scheduled duration) can come of it.
        period.count_opening_failure(started);
        breaker.open_carried(&period, lasting);
    }

    /// The call's start time, where it is needed (slow-call detection).
    #[inline]
    pub(crate) fn start_time(&self) -> Option<Instant> {
        let period = self.period().filter(|period| period.times_calls())?;
        Some(period.clock.now())
    }

    /// Records the call's outcome against the period that admitted it.
    #[inline]
    pub(crate) fn finish(self, outcome: Outcome, started: Option<Instant>) {
        if let Some(period) = self.period() {
            period.metrics.outcome(outcome, started);
        }
        match self {
            Ticket::Window(period) => period.record(outcome, started),
            Ticket::Probe(mut slot) => {
                if outcome == Outcome::Ignored {
                    return; // dropping the slot gives it back
                }
                if let Some(period) = slot.period.take() {
                    period.record_probe(outcome == Outcome::Failure, started);
                }
            }
        }
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, period) = match self {
            Ticket::Window(period) => ("window", Some(&**period)),
            Ticket::Probe(slot) => ("probe", slot.period.as_deref()),
        };
        f.debug_struct("Ticket")
            .field("kind", &kind)
            .field("generation", &period.map(|p| p.start.generation))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds(failure_rate: f64) -> Thresholds {
        Thresholds {
            failure_ppm: to_ppm(failure_rate),
            slow: Some(SlowCalls {
                longer_than: Duration::from_secs(1),
                ppm: to_ppm(0.5),
            }),
            minimum_calls: 5,
            consecutive_failures: None,
        }
    }

    fn totals(calls: u64, failures: u64, slow: u64) -> Totals {
        Totals {
            calls,
            failures,
            slow,
        }
    }

    #[test]
    fn rates_compare_exactly() {
        // 3 of 10 at 30 %: floating point would say 0.3 * 10 > 3.
        let t = thresholds(0.3);
        assert_eq!(
            t.over_window(totals(10, 3, 0)),
            Crossed(Crossed::FAILURE_RATE)
        );
        assert_eq!(t.over_window(totals(10, 2, 0)), Crossed::default());
        let third = thresholds(1.0 / 3.0);
        assert_eq!(
            third.over_window(totals(6, 2, 0)),
            Crossed(Crossed::FAILURE_RATE)
        );
    }

    #[test]
    fn no_rate_below_the_minimum_calls() {
        let t = thresholds(0.5);
        assert_eq!(t.over_window(totals(4, 4, 4)), Crossed::default());
        assert_eq!(
            t.over_window(totals(5, 3, 3)),
            Crossed(Crossed::FAILURE_RATE | Crossed::SLOW_CALL_RATE)
        );
    }

    #[test]
    fn probes_reopen_once_the_rate_is_certain_and_close_when_all_report() {
        // Scenario CB-H2 (variant): 4 probes at 50 %.
        let t = thresholds(0.5);
        let tally = |reported, failures, slow| Tally {
            reported,
            failures,
            slow,
        };
        assert_eq!(t.over_probes(tally(1, 1, 0), 4), Verdict::Pending);
        assert_eq!(
            t.over_probes(tally(2, 2, 0), 4),
            Verdict::Reopen(Reason::FailureRate),
            "2 failures of 4 reach 50 % whatever the last two say"
        );
        assert_eq!(
            t.over_probes(tally(3, 0, 2), 4),
            Verdict::Reopen(Reason::SlowCallRate)
        );
        assert_eq!(t.over_probes(tally(3, 1, 1), 4), Verdict::Pending);
        assert_eq!(t.over_probes(tally(4, 1, 1), 4), Verdict::Close);
    }

    #[test]
    fn reasons_list_the_most_specific_first() {
        let all = Crossed(Crossed::FAILURE_RATE | Crossed::SLOW_CALL_RATE | Crossed::CONSECUTIVE);
        let reasons: Vec<_> = all.reasons().collect();
        assert_eq!(
            reasons,
            [
                Reason::ConsecutiveFailures,
                Reason::FailureRate,
                Reason::SlowCallRate
            ]
        );
    }
}
