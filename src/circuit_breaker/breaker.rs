//! The breaker's shared state: the current period, admission, and the
//! transitions between periods.

// std's Arc, not the loom shim's: the period is swapped with arc-swap, and
// the breaker is built with `Arc::new_cyclic` (its periods hold a `Weak` to
// it), neither of which loom's Arc offers. The reference counts hide no race
// of ours; the state they share uses the shim's atomics.
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::handle::{Event, Reason, Snapshot, State, ThresholdExceeded, Transition};
pub(crate) use super::metrics::BreakerMetrics;
use super::period::{Crossed, Period, ProbeSlot, Start, Thresholds, Ticket};
use super::probes::Probes;
use super::window::{Totals, WindowKind};
use crate::clock::Instants;
use crate::name::Name;
use crate::rng::Rng;
use crate::sync::{AtomicU64, Mutex, Ordering, lock};

/// A user's callback for the breaker's events.
pub(crate) type Listener = Arc<dyn Fn(&Event) + Send + Sync>;

/// The breaker's clock: `Instant`s on tokio's clock, read from the CPU's
/// counter with `fast-clock` while tokio's clock runs as the system's, and
/// from tokio's own where a test has paused it (see `clock::Instants`), so
/// that paused-clock tests drive the breaker; turned into nanoseconds since
/// the breaker was built for the time windows.
#[derive(Clone, Debug)]
pub(crate) struct Clock {
    origin: Instant,
    instants: Arc<Instants>,
}

impl Clock {
    /// A clock reading `instants`, starting now.
    pub(crate) fn new(instants: Arc<Instants>) -> Self {
        Clock {
            origin: instants.now(),
            instants,
        }
    }

    /// Now.
    #[inline]
    pub(crate) fn now(&self) -> Instant {
        self.instants.now()
    }

    #[inline]
    pub(crate) fn nanos(&self, now: Instant) -> u64 {
        // In u64 arithmetic: `Duration::as_nanos` goes through u128.
        let since = now.saturating_duration_since(self.origin);
        since
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(since.subsec_nanos()))
    }
}

/// How long each opening lasts: `base`, times `multiplier` for each opening
/// since the breaker last closed, at most `max`, then spread by ±`jitter`
/// (and still at most `max`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct OpenSchedule {
    pub(crate) base: Duration,
    pub(crate) multiplier: f64,
    pub(crate) max: Duration,
    pub(crate) jitter: f64,
}

impl OpenSchedule {
    /// The length of the `opening`-th opening since the breaker last closed
    /// (1 for the first); `draw` is uniform in [0, 1).
    pub(crate) fn duration(&self, opening: u32, draw: f64) -> Duration {
        let exponent = opening.saturating_sub(1);
        // Integer arithmetic where it is exact, so a fixed 100 ms stays 100 ms.
        let grown = if exponent == 0 || self.multiplier == 1.0 {
            self.base.min(self.max)
        } else {
            let secs = self.base.as_secs_f64() * self.multiplier.powi(exponent.min(4096) as i32);
            Duration::try_from_secs_f64(secs)
                .unwrap_or(self.max)
                .min(self.max)
        };
        if self.jitter == 0.0 {
            return grown;
        }
        let factor = 1.0 + self.jitter * (2.0 * draw - 1.0);
        Duration::try_from_secs_f64(grown.as_secs_f64() * factor)
            .unwrap_or(grown)
            .min(self.max)
    }
}

/// A breaker's configuration, checked by the builder.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Settings {
    pub(crate) window: WindowKind,
    pub(crate) thresholds: Thresholds,
    pub(crate) open: OpenSchedule,
    pub(crate) half_open_probes: u32,
    pub(crate) half_open_max_wait: Duration,
    /// A failure whose result carries a retry-after opens the breaker for
    /// that long, at most this.
    pub(crate) open_on_retry_after: Option<Duration>,
    /// `poll_ready` waits up to this long for the breaker to admit a call.
    pub(crate) wait_when_open: Option<Duration>,
}

/// Where a transition may start from.
#[derive(Clone, Copy)]
enum From<'a> {
    /// Only from this period: an automatic transition, which a racing one
    /// may have made already.
    Period(&'a Period),
    /// From whatever is current: a manual transition.
    Current,
}

/// Where a transition goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Closed,
    /// Open for the given time, or for the schedule's next duration.
    Open(Option<Duration>),
    HalfOpen,
    ForcedOpen,
    Disabled,
    MetricsOnly,
}

impl Target {
    fn state(self) -> State {
        match self {
            Target::Closed => State::Closed,
            Target::Open(_) => State::Open,
            Target::HalfOpen => State::HalfOpen,
            Target::ForcedOpen => State::ForcedOpen,
            Target::Disabled => State::Disabled,
            Target::MetricsOnly => State::MetricsOnly,
        }
    }
}

/// Whether a call may go ahead, decided in `poll_ready`.
#[derive(Debug)]
pub(crate) enum Admission {
    Admitted(Ticket),
    /// Admitted by the period the service holds in its cache, which `call`
    /// turns into a ticket: nothing to clone or move until then.
    Cached,
    /// HalfOpen with a probe slot free: `call` takes it, if it still can.
    /// Taking it only then means a service that polls ready and never calls
    /// holds no slot.
    MayProbe(Arc<Period>),
    /// Refused; how long until a probe may go, where known.
    Refused(Option<Duration>),
}

impl Admission {
    /// Whether the breaker has moved on since this was decided; `cached` is
    /// the deciding service's cache.
    #[inline]
    pub(crate) fn is_stale(&self, cached: &Option<Arc<Period>>) -> bool {
        match self {
            Admission::Admitted(ticket) => ticket.is_stale(),
            Admission::Cached => cached.as_ref().is_none_or(|p| p.has_left()),
            Admission::MayProbe(period) => period.has_left(),
            Admission::Refused(_) => false,
        }
    }

    /// Whether the call may go on to poll the inner service.
    #[inline]
    pub(crate) fn may_call(&self) -> bool {
        !matches!(self, Admission::Refused(_))
    }
}

/// Guarded by the transition lock.
struct Control {
    generation: u64,
    // For the open duration's jitter.
    rng: Rng,
}

impl Control {
    /// Uniform in [0, 1).
    fn draw(&mut self) -> f64 {
        self.rng.unit()
    }
}

pub(crate) struct Breaker {
    name: Name,
    settings: Settings,
    clock: Clock,
    current: ArcSwap<Period>,
    // Every refusal delivered, ever: a period's count is this less its
    // `refusals_before`, so a refusal costs no load of the current period.
    refusals: AtomicU64,
    control: Mutex<Control>,
    listener: Option<Listener>,
    // Waiting mode: told of every transition and every probe slot given back.
    changed: Option<Arc<Notify>>,
    metrics: BreakerMetrics,
}

/// Admission re-reads the current period after making a lazy transition;
/// racing transitions cannot outrun it for long, but the loop is bounded all
/// the same.
const MAX_ADMISSION_ROUNDS: usize = 4;

impl Breaker {
    pub(crate) fn new(
        name: Name,
        settings: Settings,
        listener: Option<Listener>,
        seed: Option<u64>,
        metrics: BreakerMetrics,
        instants: Arc<Instants>,
    ) -> Arc<Self> {
        let clock = Clock::new(instants);
        let now = clock.origin;
        // A seed per breaker from std's per-process random keys, so that two
        // breakers that open together do not reopen in lockstep.
        let seed = seed.unwrap_or_else(|| Rng::random_seed(0));
        Arc::new_cyclic(|weak| {
            let first = Start {
                state: State::Closed,
                generation: 0,
                since: now,
                reason: Reason::Reset,
                open_until: None,
                openings: 0,
                carried: Totals::default(),
                refusals_before: 0,
            };
            Breaker {
                current: ArcSwap::from_pointee(Period::new(
                    weak.clone(),
                    &settings,
                    clock.clone(),
                    first,
                    metrics.clone(),
                )),
                name,
                settings,
                clock,
                refusals: AtomicU64::new(0),
                control: Mutex::new(Control {
                    generation: 0,
                    rng: Rng::new(seed),
                }),
                listener,
                changed: settings.wait_when_open.map(|_| Arc::new(Notify::new())),
                metrics,
            }
        })
    }

    pub(crate) fn name(&self) -> &Name {
        &self.name
    }

    pub(crate) fn current(&self) -> Guard<Arc<Period>> {
        self.current.load()
    }

    /// Waiting mode: how long `poll_ready` may wait, and what tells a waiter
    /// that the breaker may admit a call now.
    pub(crate) fn waiting(&self) -> Option<(Duration, &Arc<Notify>)> {
        Some((self.settings.wait_when_open?, self.changed.as_ref()?))
    }

    /// Waiting mode: takes the probe slot a `MayProbe` admission saw, in
    /// `poll_ready`, so that of the waiters a freed slot wakes, one gets it
    /// and the rest wait on (instead of all racing for it in `call`).
    pub(crate) fn take_probe_slot(admission: Admission) -> Admission {
        match admission {
            Admission::MayProbe(period) => {
                if period.probes().is_some_and(Probes::try_take) {
                    Admission::Admitted(Ticket::Probe(ProbeSlot::new(period)))
                } else {
                    Admission::Refused(None)
                }
            }
            other => other,
        }
    }

    /// When a refusal with no known end should be decided again: in
    /// HalfOpen, when the wait for probes runs out and the next decision
    /// reopens the breaker.
    pub(crate) fn recheck_at(&self) -> Option<Instant> {
        let period = self.current.load();
        (period.state() == State::HalfOpen)
            .then(|| {
                period
                    .start
                    .since
                    .checked_add(self.settings.half_open_max_wait)
            })
            .flatten()
    }

    /// Wakes every waiter to decide again: a probe slot came free.
    pub(crate) fn notify_waiters(&self) {
        if let Some(changed) = &self.changed {
            changed.notify_waiters();
        }
    }

    /// Decides whether a call may go ahead, making the lazy transitions
    /// (Open to HalfOpen once the open duration has passed, HalfOpen back to
    /// Open once its wait bound has) on the way. A refusal is not counted
    /// here: `call` counts it, so polling readiness twice counts once.
    pub(crate) fn admit(self: &Arc<Self>) -> Admission {
        for _ in 0..MAX_ADMISSION_ROUNDS {
            let period = self.current.load();
            match period.state() {
                State::Closed | State::MetricsOnly | State::Disabled => {
                    return Admission::Admitted(Ticket::Window(Guard::into_inner(period)));
                }
                State::ForcedOpen => return Admission::Refused(None),
                State::Open => {
                    let Some(until) = period.start.open_until else {
                        return Admission::Refused(None);
                    };
                    let now = self.clock.now();
                    if now < until {
                        return Admission::Refused(Some(until - now));
                    }
                    self.transition(
                        From::Period(&period),
                        Target::HalfOpen,
                        Reason::OpenDurationPassed,
                    );
                }
                State::HalfOpen => {
                    if period.probes().is_some_and(Probes::has_free_slot) {
                        return Admission::MayProbe(Guard::into_inner(period));
                    }
                    let waited = self
                        .clock
                        .now()
                        .saturating_duration_since(period.start.since);
                    if waited < self.settings.half_open_max_wait {
                        return Admission::Refused(None);
                    }
                    // The probes have not settled in time: back to Open.
                    self.transition(
                        From::Period(&period),
                        Target::Open(None),
                        Reason::HalfOpenTimedOut,
                    );
                }
            }
        }
        Admission::Refused(None)
    }

    /// As [`admit`](Self::admit), trying `cached` first: while the period
    /// it holds is still current and decides alone (it admits every call,
    /// or refuses every call until a known time), admission reads no shared
    /// pointer at all. Refreshes `cached`.
    #[inline]
    pub(crate) fn admit_cached(self: &Arc<Self>, cached: &mut Option<Arc<Period>>) -> Admission {
        if let Some(period) = cached
            && period.admits_every_call()
            && !period.has_left()
        {
            return Admission::Cached;
        }
        self.refuse_cached_or_admit(cached)
    }

    /// Whether the breaker refuses every call now, with no transition due
    /// (forced open, or open with time left), and for how long where known:
    /// a caller that would only be refused can skip the call.
    #[cfg(feature = "redis")]
    pub(crate) fn refusing(&self) -> Option<Option<Duration>> {
        match Self::refusal(&self.current.load()) {
            Some(Admission::Refused(retry_after)) => Some(retry_after),
            _ => None,
        }
    }

    /// A refusal that `period` makes with no transition: forced open, or
    /// open with time left.
    #[inline]
    fn refusal(period: &Period) -> Option<Admission> {
        match period.state() {
            State::ForcedOpen => Some(Admission::Refused(None)),
            State::Open => {
                let Some(until) = period.start.open_until else {
                    return Some(Admission::Refused(None));
                };
                let now = period.clock().now();
                (now < until).then(|| Admission::Refused(Some(until - now)))
            }
            _ => None,
        }
    }

    /// The rest of [`admit_cached`](Self::admit_cached), kept out of line so
    /// that the Closed path stays small where it is inlined.
    #[cold]
    #[inline(never)]
    fn refuse_cached_or_admit(self: &Arc<Self>, cached: &mut Option<Arc<Period>>) -> Admission {
        if let Some(period) = cached.as_ref().filter(|p| !p.has_left())
            && let Some(refusal) = Self::refusal(period)
        {
            return refusal;
        }
        let admission = self.admit();
        *cached = match &admission {
            Admission::Admitted(Ticket::Window(period)) => Some(period.clone()),
            // Keep an open period too, so that refusals while it lasts skip
            // the shared pointer as well.
            Admission::Refused(_) => {
                let period = self.current.load();
                matches!(period.state(), State::Open | State::ForcedOpen)
                    .then(|| Guard::into_inner(period))
            }
            _ => None,
        };
        admission
    }

    /// [`admit_cached`](Self::admit_cached), out of line: `call` decides
    /// again only when the breaker moved on since `poll_ready`, which is
    /// rare, and inlining it there costs the common path a few ns.
    #[cold]
    #[inline(never)]
    fn admit_again(self: &Arc<Self>, cached: &mut Option<Arc<Period>>) -> Admission {
        self.admit_cached(cached)
    }

    /// Turns what `poll_ready` decided into the call's ticket, when the call
    /// is made: decides again if the breaker has moved on since (so no call
    /// goes out on an admission its period no longer stands behind), and
    /// takes the probe slot. `Err` is a refusal with its `retry_after`.
    #[inline]
    pub(crate) fn confirm(
        self: &Arc<Self>,
        admission: Admission,
        cached: &mut Option<Arc<Period>>,
    ) -> Result<Ticket, Option<Duration>> {
        let admission = if admission.is_stale(cached) {
            self.admit_again(cached)
        } else {
            admission
        };
        match admission {
            Admission::Admitted(ticket) => Ok(ticket),
            Admission::Cached => match cached {
                Some(period) => Ok(Ticket::Window(period.clone())),
                None => Err(None), // not reached: a cached admission keeps its period
            },
            Admission::MayProbe(period) => {
                if period.probes().is_some_and(Probes::try_take) {
                    Ok(Ticket::Probe(ProbeSlot::new(period)))
                } else {
                    Err(None) // another caller took the last slot
                }
            }
            Admission::Refused(retry_after) => Err(retry_after),
        }
    }

    /// Counts a refusal delivered to a caller, and traces it at DEBUG (a
    /// refusal comes at the rate of the calls: a service logging at INFO
    /// counts them instead of writing a line each).
    #[inline]
    pub(crate) fn count_not_permitted(&self) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
        self.metrics.not_permitted();
        tracing::debug!(
            target: "palisade::circuit_breaker",
            breaker = self.name.as_str(),
            "call not permitted"
        );
    }

    /// Opens a Closed period whose window reached a threshold.
    pub(crate) fn trip(self: &Arc<Self>, period: &Period, reason: Reason) {
        self.transition(From::Period(period), Target::Open(None), reason);
    }

    /// Reopens a HalfOpen period whose probes reached a threshold.
    pub(crate) fn reopen(self: &Arc<Self>, period: &Period, reason: Reason) {
        self.transition(From::Period(period), Target::Open(None), reason);
    }

    /// Opens a Closed or HalfOpen period at once, for `lasting`: a failure
    /// carried a retry-after. False if the period has
    /// already left.
    pub(crate) fn open_carried(self: &Arc<Self>, period: &Period, lasting: Duration) -> bool {
        self.transition(
            From::Period(period),
            Target::Open(Some(lasting)),
            Reason::RetryAfter,
        )
    }

    /// Closes a HalfOpen period whose probes all reported below the thresholds.
    pub(crate) fn close(self: &Arc<Self>, period: &Period) {
        self.transition(
            From::Period(period),
            Target::Closed,
            Reason::ProbesSucceeded,
        );
    }

    /// A manual transition. A move to the current state is silent and keeps
    /// the period, except a reset, and an open with an
    /// explicit duration, which always start afresh.
    pub(crate) fn transition_to(self: &Arc<Self>, target: Target, reason: Reason) -> bool {
        self.transition(From::Current, target, reason)
    }

    fn transition(self: &Arc<Self>, from: From<'_>, target: Target, reason: Reason) -> bool {
        let now = self.clock.now();
        let transition = {
            // A listener never runs under this lock, and nothing here can
            // panic half-way, so a poisoned lock holds nothing half-done.
            let mut control = lock(&self.control);
            let current = self.current.load_full();
            let silent = match from {
                From::Period(expected) => !std::ptr::eq(Arc::as_ptr(&current), expected),
                From::Current => {
                    reason != Reason::Reset
                        && current.state() == target.state()
                        && !matches!(target, Target::Open(Some(_)))
                }
            };
            if silent {
                return false;
            }
            control.generation += 1;
            let start = self.next_start(&current, target, reason, now, &mut control);
            self.metrics.transition(current.state(), start.state);
            let next = Period::new(
                Arc::downgrade(self),
                &self.settings,
                self.clock.clone(),
                start,
                self.metrics.clone(),
            );
            current.mark_left();
            let next = Arc::new(next);
            self.current.store(next.clone());
            self.move_on_when_open_passes(&next);
            Transition::new(self.name.clone(), &current, start, current.totals(now))
        };
        self.notify_waiters();
        self.emit(Event::Transition(transition));
        true
    }

    /// With the `metrics` feature, an Open period moves to HalfOpen when
    /// its open duration passes, on a timer, rather than at the next call:
    /// the state gauge then shows what the next call would meet however
    /// long no call comes. The transition is the lazy one, made at most
    /// once whoever comes first (a call, or the timer). Without a tokio
    /// runtime (or the feature) it stays lazy.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn move_on_when_open_passes(self: &Arc<Self>, period: &Arc<Period>) {
        #[cfg(feature = "metrics")]
        if let (State::Open, Some(until)) = (period.state(), period.start.open_until)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (breaker, period) = (Arc::downgrade(self), Arc::downgrade(period));
            runtime.spawn(async move {
                tokio::time::sleep_until(until).await;
                if let (Some(breaker), Some(period)) = (breaker.upgrade(), period.upgrade()) {
                    breaker.transition(
                        From::Period(&period),
                        Target::HalfOpen,
                        Reason::OpenDurationPassed,
                    );
                }
            });
        }
    }

    fn next_start(
        &self,
        current: &Period,
        target: Target,
        reason: Reason,
        now: Instant,
        control: &mut Control,
    ) -> Start {
        let mut start = Start {
            state: target.state(),
            generation: control.generation,
            since: now,
            reason,
            open_until: None,
            openings: 0,
            carried: Totals::default(),
            refusals_before: self.refusals.load(Ordering::Relaxed),
        };
        match target {
            Target::Open(lasting) => {
                start.openings = match current.state() {
                    State::Open | State::HalfOpen => current.start.openings.saturating_add(1),
                    _ => 1,
                };
                let lasting = lasting
                    .unwrap_or_else(|| self.settings.open.duration(start.openings, control.draw()));
                start.open_until = now.checked_add(lasting);
                start.carried = current.totals(now);
            }
            Target::HalfOpen => start.openings = current.start.openings,
            _ => {}
        }
        start
    }

    /// MetricsOnly: reports thresholds its window reached, once each.
    pub(crate) fn report_exceeded(&self, period: &Period, crossed: Crossed) {
        let totals = period.totals(self.clock.now());
        for reason in crossed.reasons() {
            self.emit(Event::ThresholdExceeded(ThresholdExceeded::new(
                self.name.clone(),
                reason,
                totals,
            )));
        }
    }

    fn emit(&self, event: Event) {
        event.trace();
        if let Some(listener) = &self.listener {
            listener(&event);
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let period = self.current.load();
        let now = self.clock.now();
        let refusals = self.refusals.load(Ordering::Relaxed);
        Snapshot::new(&period, period.totals(now), &self.settings, now, refusals)
    }
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let period = self.current.load();
        f.debug_struct("Breaker")
            .field("name", &self.name)
            .field("state", &period.state())
            .field("generation", &period.start.generation)
            .field("settings", &self.settings)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(base_ms: u64, multiplier: f64, max_ms: u64, jitter: f64) -> OpenSchedule {
        OpenSchedule {
            base: Duration::from_millis(base_ms),
            multiplier,
            max: Duration::from_millis(max_ms),
            jitter,
        }
    }

    #[test]
    fn open_durations_grow_by_the_multiplier_up_to_the_cap() {
        // Scenario CB-O3 (a): 5 s, then 7.5 s, ...
        let s = schedule(5_000, 1.5, 20_000, 0.0);
        let ms = |n| s.duration(n, 0.5).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(4), ms(5)],
            [5_000, 7_500, 11_250, 16_875, 20_000]
        );
        assert_eq!(ms(u32::MAX), 20_000, "no overflow however many openings");
    }

    #[test]
    fn a_fixed_duration_is_exact() {
        let s = schedule(100, 1.0, 100, 0.0);
        assert_eq!(s.duration(7, 0.9), Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_within_its_band_and_under_the_cap() {
        let s = schedule(1_000, 2.0, 3_000, 0.25);
        assert_eq!(s.duration(1, 0.0), Duration::from_millis(750));
        assert_eq!(s.duration(1, 0.5), Duration::from_millis(1_000));
        assert!(s.duration(1, 0.999_999) <= Duration::from_millis(1_250));
        // 2 s grown, +25 % would be 2.5 s; 4 s grown is capped at 3 s first,
        // and the upper half of its band is capped again.
        assert_eq!(s.duration(3, 0.999), Duration::from_millis(3_000));
        assert_eq!(s.duration(3, 0.0), Duration::from_millis(2_250));
    }

    /// An opening's end is set on tokio's clock, whichever clock the
    /// breaker reads: the CPU's counter while tokio's clock runs as the
    /// system's, tokio's own once a test has paused it and moved it on by
    /// an hour (timers and the refusals' `retry_after` meet there).
    #[test]
    fn an_opening_ends_on_tokios_clock() {
        const OPEN_FOR: Duration = Duration::from_secs(5);
        crate::clock::on_running_and_moved_on_clocks(async |moved_on| {
            let settings = super::super::CircuitBreakerConfig::default()
                .settings()
                .expect("valid");
            let breaker = Breaker::new(
                Name::Static("clock"),
                settings,
                None,
                Some(1),
                BreakerMetrics::new("clock"),
                Arc::new(Instants::new()),
            );
            let before = Instant::now();
            assert!(breaker.transition_to(Target::Open(Some(OPEN_FOR)), Reason::Manual));
            let after = Instant::now();
            let until = breaker.current().start.open_until.expect("open");
            let slack = Duration::from_millis(1);
            assert!(
                until + slack >= before + OPEN_FOR && until <= after + OPEN_FOR + slack,
                "moved on: {moved_on}; {until:?} outside {before:?} ..= {after:?} + {OPEN_FOR:?}"
            );
        });
    }
}
