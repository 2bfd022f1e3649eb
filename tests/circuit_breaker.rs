//! The circuit breaker layer, under tokio's paused clock. Scenario ids refer
//! to `SCENARIOS.md`.

mod support;
#[path = "support/traced.rs"]
mod traced;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::circuit_breaker::{
    CircuitBreakerBuilder, CircuitBreakerLayer, Event, Handle, Reason, State,
};
use palisade::classify::Outcome;
use palisade::{BoxError, ErrorKind};
use support::{Answer, Probe, ProbeError, Readiness};
use tokio::time::{Instant, advance};
use tokio_test::task;
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceExt, service_fn};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// What the backend does with one call: how long it takes and how it ends.
#[derive(Clone, Copy, Debug)]
struct Call {
    fail: bool,
    ignored: bool,
    takes: Duration,
}

const S: Call = Call {
    fail: false,
    ignored: false,
    takes: Duration::ZERO,
};
const F: Call = Call { fail: true, ..S };
/// Fails with an error the classifier ignores (an "I/O" error, CB-T6).
const I: Call = Call { ignored: true, ..S };

impl Call {
    fn taking(self, takes: Duration) -> Call {
        Call { takes, ..self }
    }
}

#[derive(Debug)]
struct IoError;

impl std::fmt::Display for IoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("socket timeout")
    }
}

impl std::error::Error for IoError {}

/// Errors are failures, except `IoError`, which is ignored (CB-T6), and the
/// response "failure", which is a failure though it is `Ok` (CB-T6 b).
fn classify(result: &Result<&'static str, BoxError>) -> Outcome {
    match result {
        Ok("failure") => Outcome::Failure,
        Ok(_) => Outcome::Success,
        Err(err) if err.is::<IoError>() => Outcome::Ignored,
        Err(_) => Outcome::Failure,
    }
}

type Svc = BoxCloneService<Call, &'static str, BoxError>;

/// Every event the breaker reported, in order.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Event>>>);

impl Events {
    fn transitions(&self) -> Vec<(State, State, Reason)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Transition(t) => Some((t.from, t.to, t.reason)),
                _ => None,
            })
            .collect()
    }

    fn open_durations(&self) -> Vec<Duration> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Transition(t) => t.open_for,
                _ => None,
            })
            .collect()
    }

    fn exceeded(&self) -> Vec<Reason> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::ThresholdExceeded(e) => Some(e.reason),
                _ => None,
            })
            .collect()
    }
}

/// A breaker around a backend that does what each `Call` says.
struct Rig {
    svc: Svc,
    handle: Handle,
    events: Events,
    backend_calls: Arc<AtomicUsize>,
}

fn rig(builder: CircuitBreakerBuilder) -> Rig {
    let events = Events::default();
    let sink = events.0.clone();
    let layer = builder
        .classifier(classify)
        .on_event(move |e| sink.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    let backend_calls = Arc::new(AtomicUsize::new(0));
    let counter = backend_calls.clone();
    let backend = service_fn(move |call: Call| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if !call.takes.is_zero() {
                tokio::time::sleep(call.takes).await;
            }
            if call.ignored {
                Err::<&'static str, BoxError>(Box::new(IoError))
            } else if call.fail {
                Err("failed".into())
            } else {
                Ok("ok")
            }
        }
    });
    Rig {
        handle: layer.handle(),
        svc: BoxCloneService::new(layer.layer(backend)),
        events,
        backend_calls,
    }
}

/// The base configuration of resilience4j's state machine tests ("CFG-R").
fn cfg_r() -> CircuitBreakerBuilder {
    CircuitBreakerLayer::builder()
        .name("cfg-r")
        .time_window(secs(20))
        .minimum_calls(5)
        .failure_rate(0.5)
        .slow_calls(secs(4), 0.5)
        .half_open_probes(4)
        .half_open_max_wait(secs(1))
        .open_for(secs(5))
}

impl Rig {
    async fn call(&mut self, call: Call) -> Result<&'static str, BoxError> {
        self.svc.ready().await?.call(call).await
    }

    /// Runs each call to completion, one after another.
    async fn run(&mut self, calls: &[Call]) {
        for call in calls {
            let _ = self.call(*call).await;
        }
    }

    /// Starts a call and leaves it in flight (its backend sleeping).
    fn start(
        &self,
        call: Call,
    ) -> task::Spawn<impl Future<Output = Result<&'static str, BoxError>> + use<>> {
        let mut svc = self.svc.clone();
        let mut spawned = task::spawn(async move { svc.ready().await?.call(call).await });
        assert!(spawned.poll().is_pending(), "{call:?} should be in flight");
        spawned
    }

    fn counts(&self) -> (u64, u64, u64) {
        let s = self.handle.snapshot();
        (s.calls, s.failures, s.slow_calls)
    }
}

fn open_error(result: Result<&'static str, BoxError>) -> palisade::error::CircuitOpen {
    let err = result.expect_err("the call should be refused");
    match ErrorKind::of(&err) {
        ErrorKind::CircuitOpen(open) => open.clone(),
        _ => panic!("expected CircuitOpen, got {err:?}"),
    }
}

/// Trips `rig` (window of CFG-R: five failures).
async fn trip(rig: &mut Rig) {
    rig.run(&[F, F, F, F, F]).await;
    assert_eq!(rig.handle.state(), State::Open);
}

// ---------------------------------------------------------------- tripping

#[tokio::test(start_paused = true)]
async fn trips_on_failure_rate_once_the_minimum_calls_are_in() {
    // scenario CB-T1
    let mut rig = rig(cfg_r());
    let expected = [(1, 1), (2, 2), (3, 3), (4, 3)];
    for (call, (calls, failures)) in [F, F, F, S].into_iter().zip(expected) {
        rig.run(&[call]).await;
        let s = rig.handle.snapshot();
        assert_eq!(
            (s.state, s.calls, s.failures),
            (State::Closed, calls, failures)
        );
        assert_eq!(s.failure_rate, None, "no rate below the minimum calls");
    }
    rig.run(&[S]).await;
    let s = rig.handle.snapshot();
    assert_eq!(s.state, State::Open);
    assert_eq!((s.calls, s.failures, s.failure_rate), (5, 3, Some(0.6)));
    assert_eq!(
        rig.events.transitions(),
        [(State::Closed, State::Open, Reason::FailureRate)]
    );

    let refused = open_error(rig.call(S).await);
    assert_eq!(refused.name(), "cfg-r");
    let s = rig.handle.snapshot();
    assert_eq!(s.not_permitted, 1);
    assert_eq!((s.calls, s.failures), (5, 3), "Open shows what tripped it");
    assert_eq!(rig.backend_calls.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn trips_on_slow_calls_alone_measured_by_the_layer() {
    // scenario CB-T4 (a'): the calls themselves take 5, 5, 1, 1, 5 s.
    let mut rig = rig(cfg_r());
    let expected = [(1, 1), (2, 2), (3, 2), (4, 2)];
    for (takes, (calls, slow)) in [5, 5, 1, 1].into_iter().zip(expected) {
        rig.run(&[S.taking(secs(takes))]).await;
        let (c, _, s) = rig.counts();
        assert_eq!((c, s), (calls, slow));
        assert_eq!(rig.handle.state(), State::Closed);
    }
    rig.run(&[S.taking(secs(5))]).await;
    let s = rig.handle.snapshot();
    assert_eq!(s.state, State::Open);
    assert_eq!((s.calls, s.failures, s.slow_calls), (5, 0, 3));
    assert_eq!(s.slow_call_rate, Some(0.6));
    assert_eq!(
        rig.events.transitions(),
        [(State::Closed, State::Open, Reason::SlowCallRate)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_failure_counts_both_ways() {
    // scenario CB-T4 (a): F(5s), S(5s), F(100ms), S(100ms), S(5s).
    let mut rig = rig(cfg_r());
    rig.run(&[
        F.taking(secs(5)),
        S.taking(secs(5)),
        F.taking(ms(100)),
        S.taking(ms(100)),
        S.taking(secs(5)),
    ])
    .await;
    let s = rig.handle.snapshot();
    assert_eq!(s.state, State::Open);
    assert_eq!((s.calls, s.failures, s.slow_calls), (5, 2, 3));
    assert_eq!(rig.events.transitions()[0].2, Reason::SlowCallRate);
}

#[tokio::test(start_paused = true)]
async fn a_call_of_exactly_the_slow_threshold_is_not_slow() {
    // scenario CB-T4 (b), and its edge.
    let builder = || {
        CircuitBreakerLayer::builder()
            .count_window(2)
            .minimum_calls(2)
            .slow_calls(ms(20), 0.5)
    };
    let mut edge = rig(builder());
    edge.run(&[S, S.taking(ms(20))]).await;
    assert_eq!(edge.counts(), (2, 0, 0));
    assert_eq!(edge.handle.state(), State::Closed);

    let mut slow = rig(builder());
    slow.run(&[S, S.taking(ms(40))]).await;
    let s = slow.handle.snapshot();
    assert_eq!(s.state, State::Open);
    assert_eq!((s.failure_rate, s.slow_call_rate), (Some(0.0), Some(0.5)));
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_before_the_window_has_its_minimum() {
    // scenario CB-T5: k = 3, minimum calls 100.
    let builder = || {
        CircuitBreakerLayer::builder()
            .count_window(100)
            .minimum_calls(100)
            .consecutive_failures(3)
    };
    let mut rig1 = rig(builder());
    rig1.run(&[S, F, F]).await;
    assert_eq!(rig1.handle.state(), State::Closed);
    assert_eq!(rig1.handle.snapshot().consecutive_failures, 2);
    rig1.run(&[F]).await;
    assert_eq!(
        rig1.events.transitions(),
        [(State::Closed, State::Open, Reason::ConsecutiveFailures)]
    );

    let mut rig2 = rig(builder());
    rig2.run(&[F, F, S, F, F]).await;
    assert_eq!(rig2.handle.state(), State::Closed, "a success ends the run");
}

#[tokio::test(start_paused = true)]
async fn ignored_outcomes_count_neither_way_and_reach_the_caller_unchanged() {
    // scenario CB-T6 (a) and (b).
    let mut rig = rig(CircuitBreakerLayer::builder()
        .count_window(2)
        .minimum_calls(2)
        .half_open_probes(2));
    rig.run(&[F]).await;
    let err = rig.call(I).await.unwrap_err();
    assert!(
        err.is::<IoError>(),
        "the caller gets the ignored error itself"
    );
    assert_eq!(rig.counts(), (1, 1, 0));
    assert_eq!(rig.handle.state(), State::Closed);

    // (b) A response classified as a failure still reaches the caller.
    let mut rig = rig_with_failure_responses();
    assert_eq!(rig.call(S).await.unwrap(), "ok");
    assert_eq!(rig.call(S).await.unwrap(), "failure");
    assert_eq!(rig.counts(), (2, 1, 0));
}

fn rig_with_failure_responses() -> Rig {
    // The backend answers "ok" then "failure".
    let layer = CircuitBreakerLayer::builder()
        .count_window(10)
        .classifier(classify)
        .build()
        .unwrap();
    let answers = Arc::new(AtomicUsize::new(0));
    let backend = service_fn(move |_: Call| {
        let n = answers.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, BoxError>(if n == 0 { "ok" } else { "failure" }) }
    });
    Rig {
        handle: layer.handle(),
        svc: BoxCloneService::new(layer.layer(backend)),
        events: Events::default(),
        backend_calls: Arc::new(AtomicUsize::new(0)),
    }
}

#[tokio::test(start_paused = true)]
async fn a_time_window_forgets_old_failures() {
    let mut rig = rig(CircuitBreakerLayer::builder()
        .time_window(secs(10))
        .minimum_calls(2)
        .failure_rate(0.5));
    rig.run(&[F]).await;
    advance(secs(10)).await;
    rig.run(&[F]).await;
    assert_eq!(rig.counts(), (1, 1, 0), "the first failure left the window");
    assert_eq!(rig.handle.state(), State::Closed);
    rig.run(&[S, F]).await;
    assert_eq!(rig.handle.state(), State::Open);
}

// ---------------------------------------------------------------- open

#[tokio::test(start_paused = true)]
async fn open_refuses_without_touching_the_inner_service() {
    // Principle 4: not even its readiness.
    let probe = Probe::new(Answer::Now);
    let layer = CircuitBreakerLayer::builder().build().unwrap();
    layer.handle().open_for(secs(5));
    let mut svc = layer.layer(probe.clone());
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    let ErrorKind::CircuitOpen(open) = ErrorKind::of(&err) else {
        panic!("{err:?}")
    };
    assert_eq!(open.retry_after(), Some(secs(5)));
    assert_eq!(probe.ready_polls(), 0);
    assert_eq!(probe.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn open_moves_to_half_open_lazily_when_the_duration_has_passed() {
    // scenario CB-O1
    let mut rig = rig(cfg_r());
    assert!(rig.handle.open());
    open_error(rig.call(S).await);
    advance(secs(3)).await;
    let refused = open_error(rig.call(S).await);
    assert_eq!(refused.retry_after(), Some(secs(2)));
    let s = rig.handle.snapshot();
    assert_eq!(
        (s.state, s.not_permitted, s.retry_after),
        (State::Open, 2, Some(secs(2)))
    );

    advance(secs(3)).await;
    assert_eq!(rig.handle.state(), State::Open, "no background task");
    assert_eq!(rig.handle.snapshot().retry_after, Some(Duration::ZERO));
    let probe = rig.start(S.taking(secs(1)));
    let s = rig.handle.snapshot();
    assert_eq!(s.state, State::HalfOpen);
    assert_eq!((s.calls, s.not_permitted, s.probes_in_flight), (0, 0, 1));
    drop(probe);
    assert_eq!(rig.handle.snapshot().probes_in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_manual_open_lasts_the_given_duration() {
    // scenario CB-O2 (a)
    let mut rig = rig(cfg_r());
    assert!(rig.handle.open_for(secs(7_200)));
    assert_eq!(
        open_error(rig.call(S).await).retry_after(),
        Some(secs(7_200))
    );
    advance(secs(3_600)).await;
    assert_eq!(
        open_error(rig.call(S).await).retry_after(),
        Some(secs(3_600))
    );
    assert_eq!(rig.handle.snapshot().not_permitted, 2);
    advance(secs(3_601)).await;
    let _probe = rig.start(S.taking(secs(1)));
    assert_eq!(rig.handle.state(), State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn open_durations_grow_with_each_reopening_and_start_over_on_closing() {
    // scenario CB-O3 (a): 5 s, then 7.5 s, ...
    let mut rig = rig(cfg_r().half_open_probes(1).open_backoff(1.5, secs(60)));
    assert!(rig.handle.open());
    advance(secs(3)).await;
    open_error(rig.call(S).await);
    advance(secs(3)).await;
    let _probe = rig.start(S.taking(secs(1)));
    assert_eq!(rig.handle.state(), State::HalfOpen);
    assert!(rig.handle.open(), "re-open at 6 s: the second opening");
    advance(secs(6)).await; // t = 12 s
    let refused = open_error(rig.call(S).await);
    assert_eq!(refused.retry_after(), Some(ms(1_500)));
    advance(secs(5)).await; // t = 17 s
    let _probe = rig.start(S.taking(secs(1)));
    assert_eq!(rig.handle.state(), State::HalfOpen);

    // Failed probes reopen for longer each time; a success closes, and the
    // next trip starts the schedule over.
    drop(_probe);
    rig.run(&[F]).await; // third opening: 11.25 s
    advance(ms(11_250)).await;
    rig.run(&[F]).await; // fourth: 16.875 s
    advance(ms(16_875)).await;
    rig.run(&[S]).await;
    assert_eq!(rig.handle.state(), State::Closed);
    trip(&mut rig).await;
    let opened: Vec<_> = rig.events.open_durations();
    assert_eq!(
        opened,
        [secs(5), ms(7_500), ms(11_250), ms(16_875), secs(5)]
    );
}

#[tokio::test(start_paused = true)]
async fn jittered_open_durations_stay_in_their_band() {
    let rig = rig(cfg_r().half_open_probes(1).open_jitter(0.2).jitter_seed(7));
    for _ in 0..20 {
        assert!(rig.handle.open());
        advance(secs(10)).await;
        let _probe = rig.start(S.taking(secs(1)));
        assert_eq!(rig.handle.state(), State::HalfOpen);
        rig.handle.force_closed();
    }
    let opened = rig.events.open_durations();
    assert_eq!(opened.len(), 20);
    assert!(
        opened.iter().all(|d| (secs(4)..=secs(6)).contains(d)),
        "{opened:?}"
    );
    assert!(opened.iter().any(|d| *d > secs(5)), "{opened:?}");
    assert!(opened.iter().any(|d| *d < secs(5)), "{opened:?}");
    let distinct: std::collections::HashSet<_> = opened.iter().collect();
    assert!(distinct.len() > 10, "jitter should vary: {opened:?}");
}

// ---------------------------------------------------------------- half-open

/// Trips CFG-R and lets the open duration pass.
async fn to_half_open(rig: &mut Rig) {
    trip(rig).await;
    advance(secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn half_open_reopens_as_soon_as_the_probes_reach_the_failure_rate() {
    // scenario CB-H2 (a), palisade's variant: with 4 probes at 50 %, two
    // failures settle it; resilience4j would wait for all four.
    let mut rig = rig(cfg_r());
    to_half_open(&mut rig).await;
    rig.run(&[F]).await;
    assert_eq!(rig.handle.state(), State::HalfOpen);
    rig.run(&[S]).await;
    assert_eq!(rig.handle.state(), State::HalfOpen);
    assert_eq!(rig.counts(), (2, 1, 0));
    rig.run(&[F]).await;
    let s = rig.handle.snapshot();
    assert_eq!(s.state, State::Open);
    assert_eq!(
        (s.calls, s.failures),
        (3, 2),
        "Open shows the probes' tally"
    );
    assert_eq!(
        rig.events.transitions()[1..],
        [
            (State::Open, State::HalfOpen, Reason::OpenDurationPassed),
            (State::HalfOpen, State::Open, Reason::FailureRate)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_reopens_on_slow_probes() {
    // scenario CB-H2 (b): S(5 s), S(5 s) of 4 probes reach the 50 % slow rate.
    let mut rig = rig(cfg_r());
    to_half_open(&mut rig).await;
    rig.run(&[S.taking(secs(5))]).await;
    assert_eq!(rig.handle.state(), State::HalfOpen);
    rig.run(&[S.taking(secs(5))]).await;
    let s = rig.handle.snapshot();
    assert_eq!(s.state, State::Open);
    assert_eq!((s.calls, s.failures, s.slow_calls), (2, 0, 2));
    assert_eq!(rig.events.transitions()[2].2, Reason::SlowCallRate);
}

#[tokio::test(start_paused = true)]
async fn half_open_closes_below_the_thresholds_with_a_fresh_window() {
    // scenario CB-H3: probes F, S, S, S (25 %), then one more call.
    let mut rig = rig(cfg_r());
    to_half_open(&mut rig).await;
    rig.run(&[F, S, S]).await;
    assert_eq!(rig.handle.state(), State::HalfOpen);
    rig.run(&[S]).await;
    let s = rig.handle.snapshot();
    assert_eq!(
        (s.state, s.reason),
        (State::Closed, Reason::ProbesSucceeded)
    );
    assert_eq!((s.calls, s.failure_rate), (0, None));
    rig.run(&[S]).await;
    assert_eq!(rig.counts(), (1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn ignored_probes_give_their_slots_back() {
    // scenario CB-H4 (a): S, S, S, ignored, then F: 1 of 4 failed, Closed.
    let mut rig1 = rig(cfg_r());
    to_half_open(&mut rig1).await;
    rig1.run(&[S, S, S, I]).await;
    assert_eq!(rig1.handle.state(), State::HalfOpen);
    assert_eq!(rig1.counts(), (3, 0, 0));
    rig1.run(&[F]).await;
    assert_eq!(rig1.handle.state(), State::Closed);

    // (b) Four ignored probes, then four successes: all admitted.
    let mut rig2 = rig(cfg_r());
    to_half_open(&mut rig2).await;
    let before = rig2.backend_calls.load(Ordering::SeqCst);
    rig2.run(&[I, I, I, I]).await;
    assert_eq!(rig2.counts(), (0, 0, 0));
    rig2.run(&[S, S, S]).await;
    assert_eq!(rig2.handle.state(), State::HalfOpen);
    rig2.run(&[S]).await;
    assert_eq!(rig2.handle.state(), State::Closed);
    assert_eq!(rig2.backend_calls.load(Ordering::SeqCst) - before, 8);
}

#[tokio::test(start_paused = true)]
async fn only_the_allowed_probes_go_while_they_are_in_flight() {
    // scenario CB-H6: one probe; a second caller is refused meanwhile.
    let mut rig = rig(cfg_r().half_open_probes(1));
    to_half_open(&mut rig).await;
    let mut probe = rig.start(S.taking(secs(1)));
    let refused = open_error(rig.call(S).await);
    assert_eq!(refused.retry_after(), None, "unknown while probes are out");
    assert_eq!(rig.handle.state(), State::HalfOpen);
    let half_opens = rig
        .events
        .transitions()
        .iter()
        .filter(|t| t.1 == State::HalfOpen)
        .count();
    assert_eq!(half_opens, 1);

    advance(secs(1)).await;
    assert!(matches!(probe.poll(), std::task::Poll::Ready(Ok("ok"))));
    assert_eq!(rig.handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_gives_its_slot_back() {
    let mut rig = rig(cfg_r().half_open_probes(1));
    to_half_open(&mut rig).await;
    let probe = rig.start(S.taking(secs(1)));
    open_error(rig.call(S).await);
    drop(probe);
    assert_eq!(rig.call(S).await.unwrap(), "ok", "the slot came back");
    assert_eq!(rig.handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn half_open_gives_up_on_probes_that_never_report() {
    let mut rig = rig(cfg_r().half_open_probes(1));
    to_half_open(&mut rig).await;
    let mut hung = rig.start(S.taking(secs(3_600)));
    advance(ms(999)).await;
    assert_eq!(open_error(rig.call(S).await).retry_after(), None);
    assert_eq!(rig.handle.state(), State::HalfOpen);
    advance(ms(1)).await;
    // The bound has passed: the next call reopens the breaker.
    let refused = open_error(rig.call(S).await);
    assert_eq!(refused.retry_after(), Some(secs(5)));
    assert_eq!(
        rig.events.transitions().last(),
        Some(&(State::HalfOpen, State::Open, Reason::HalfOpenTimedOut))
    );
    // The hung probe's success, when it comes, belongs to the old period.
    advance(secs(3_600)).await;
    assert!(hung.poll().is_ready());
    assert_eq!(rig.handle.state(), State::Open);
}

// ---------------------------------------------------------------- generations

#[tokio::test(start_paused = true)]
async fn a_late_result_counts_against_the_period_it_was_admitted_in() {
    // Principle 5: a call admitted while Closed that ends during HalfOpen
    // must not act as a probe.
    let mut rig = rig(cfg_r().half_open_probes(1));
    let mut slow_success = rig.start(S.taking(secs(8)));
    let mut slow_failure = rig.start(F.taking(secs(8)));
    trip(&mut rig).await;
    advance(secs(5)).await;
    let mut probe = rig.start(S.taking(secs(3)));
    assert_eq!(rig.handle.state(), State::HalfOpen);

    advance(secs(3)).await; // all three are done; the old ones report first
    assert!(slow_success.poll().is_ready());
    assert!(slow_failure.poll().is_ready());
    let s = rig.handle.snapshot();
    assert_eq!(s.state, State::HalfOpen, "old results changed nothing");
    assert_eq!((s.calls, s.probes_in_flight), (0, 1));

    assert!(probe.poll().is_ready());
    assert_eq!(rig.handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_late_probe_result_does_not_touch_the_next_closed_window() {
    let mut rig = rig(cfg_r().half_open_probes(2));
    to_half_open(&mut rig).await;
    let mut late = rig.start(F.taking(secs(10)));
    rig.run(&[S]).await;
    assert_eq!(rig.handle.state(), State::HalfOpen);
    rig.handle.force_closed();
    advance(secs(10)).await;
    assert!(late.poll().is_ready());
    assert_eq!(rig.counts(), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn an_admission_made_before_a_transition_is_asked_again() {
    // The inner service is slow to become ready; meanwhile the breaker
    // opens. The call must not go out on its stale admission.
    let probe = Probe::new(Answer::Now);
    probe.set_readiness(Readiness::Pending);
    let layer = CircuitBreakerLayer::builder().build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(probe.clone());
    let mut ready = task::spawn(async move {
        svc.ready().await.unwrap();
        svc.call(1).await
    });
    assert!(ready.poll().is_pending());
    assert!(handle.force_open());
    probe.set_readiness(Readiness::Ready);
    let err = match ready.poll() {
        std::task::Poll::Ready(result) => result.unwrap_err(),
        std::task::Poll::Pending => panic!("should be refused"),
    };
    assert!(matches!(ErrorKind::of(&err), ErrorKind::CircuitOpen(_)));
    assert_eq!(probe.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_gets_a_fresh_look_when_readiness_is_polled_again() {
    let probe = Probe::new(Answer::Now);
    let layer = CircuitBreakerLayer::builder().build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(probe.clone());
    handle.open_for(secs(1));
    svc.ready().await.unwrap(); // refused, not yet reported
    advance(secs(1)).await;
    svc.ready().await.unwrap(); // now a probe
    assert_eq!(svc.call(4).await.unwrap(), 4);
    assert_eq!(
        handle.snapshot().not_permitted,
        0,
        "no refusal was delivered"
    );
}

// ---------------------------------------------------------------- manual states

#[tokio::test(start_paused = true)]
async fn forced_open_ignores_the_open_duration() {
    // scenario CB-M1
    let mut rig = rig(cfg_r());
    assert!(rig.handle.force_open());
    assert_eq!(open_error(rig.call(S).await).retry_after(), None);
    advance(secs(6)).await;
    open_error(rig.call(S).await);
    let s = rig.handle.snapshot();
    assert_eq!(
        (s.state, s.not_permitted, s.calls),
        (State::ForcedOpen, 2, 0)
    );
    assert_eq!(rig.backend_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn isolation_holds_against_late_outcomes_until_closed_by_hand() {
    // scenario CB-M5: isolate; outcomes of earlier calls arrive; close.
    let mut rig = rig(cfg_r());
    let mut early_success = rig.start(S.taking(secs(1)));
    let mut early_failure = rig.start(F.taking(secs(1)));
    assert!(rig.handle.force_open());
    advance(secs(1)).await;
    assert!(early_success.poll().is_ready());
    assert!(early_failure.poll().is_ready());
    assert_eq!(rig.handle.state(), State::ForcedOpen);
    assert_eq!(open_error(rig.call(S).await).retry_after(), None);
    assert!(rig.handle.force_closed());
    assert_eq!(
        rig.events.transitions(),
        [
            (State::Closed, State::ForcedOpen, Reason::Manual),
            (State::ForcedOpen, State::Closed, Reason::Manual)
        ]
    );
    rig.run(&[S]).await;
    assert_eq!(rig.counts(), (1, 0, 0), "counted as a success in Closed");
}

#[tokio::test(start_paused = true)]
async fn disabled_admits_everything_and_records_nothing() {
    // scenario CB-M2
    let mut rig = rig(cfg_r());
    assert!(rig.handle.disable());
    rig.run(&[S, F, F, F, F, F, F]).await;
    assert_eq!(rig.backend_calls.load(Ordering::SeqCst), 7);
    let s = rig.handle.snapshot();
    assert_eq!((s.state, s.calls, s.failures), (State::Disabled, 0, 0));
    assert_eq!(rig.events.0.lock().unwrap().len(), 1, "only the transition");
}

#[tokio::test(start_paused = true)]
async fn metrics_only_records_and_reports_each_threshold_once() {
    // scenario CB-M3 (a) and (b)
    let mut rig1 = rig(cfg_r());
    rig1.run(&[S, S]).await;
    assert!(rig1.handle.metrics_only());
    assert_eq!(rig1.counts(), (0, 0, 0), "a fresh window");
    rig1.run(&[F, F, F, S, S]).await;
    let s = rig1.handle.snapshot();
    assert_eq!(s.state, State::MetricsOnly);
    assert_eq!((s.calls, s.failures, s.failure_rate), (5, 3, Some(0.6)));
    rig1.run(&[F]).await;
    assert_eq!(rig1.events.exceeded(), [Reason::FailureRate]);
    assert_eq!(rig1.events.transitions().len(), 1);
    assert_eq!(rig1.backend_calls.load(Ordering::SeqCst), 8);

    // (c) five slow failures (25 s of them: a window long enough to hold
    // them all): each threshold reported once.
    let mut rig2 = rig(cfg_r().time_window(secs(60)));
    rig2.handle.metrics_only();
    for _ in 0..5 {
        rig2.run(&[F.taking(secs(5))]).await;
    }
    assert_eq!(
        rig2.events.exceeded(),
        [Reason::FailureRate, Reason::SlowCallRate]
    );
}

#[tokio::test(start_paused = true)]
async fn manual_transitions_to_the_current_state_are_silent() {
    // scenario CB-M4
    let mut rig = rig(cfg_r());
    let changed = [
        rig.handle.open(),
        rig.handle.open(),
        rig.handle.disable(),
        rig.handle.disable(),
        rig.handle.metrics_only(),
        rig.handle.metrics_only(),
        rig.handle.force_closed(),
        rig.handle.force_closed(),
        rig.handle.force_open(),
        rig.handle.force_open(),
    ];
    assert_eq!(
        changed,
        [
            true, false, true, false, true, false, true, false, true, false
        ]
    );
    assert_eq!(rig.events.transitions().len(), 5);

    // A reset always starts afresh, and says so.
    rig.handle.reset();
    rig.run(&[S, F]).await;
    rig.handle.reset();
    let s = rig.handle.snapshot();
    assert_eq!(
        (s.state, s.reason, s.calls),
        (State::Closed, Reason::Reset, 0)
    );
    assert_eq!(rig.events.transitions().len(), 7);
}

#[tokio::test(start_paused = true)]
async fn racing_failures_open_the_breaker_once() {
    // scenario CB-M4: window 1; two calls admitted while Closed both fail.
    let mut rig = rig(CircuitBreakerLayer::builder()
        .count_window(1)
        .minimum_calls(1));
    let mut a = rig.start(F.taking(secs(1)));
    let mut b = rig.start(F.taking(secs(1)));
    advance(secs(1)).await;
    assert!(a.poll().is_ready());
    assert!(b.poll().is_ready());
    assert_eq!(rig.events.transitions().len(), 1);
    open_error(rig.call(S).await);
    assert_eq!(rig.handle.snapshot().not_permitted, 1);
}

#[test]
fn states_display_as_lower_case_words() {
    let shown = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::Disabled,
        State::MetricsOnly,
    ]
    .map(|state| state.to_string());
    assert_eq!(
        shown,
        [
            "closed",
            "open",
            "half_open",
            "forced_open",
            "disabled",
            "metrics_only"
        ]
    );
    // Padding and alignment work as for a string.
    assert_eq!(format!("[{:>8}]", State::Open), "[    open]");
}

// ---------------------------------------------------------------- validation

#[test]
fn bad_configuration_is_an_error_naming_the_field() {
    // scenario CB-M6
    let b = CircuitBreakerLayer::builder;
    let cases: Vec<(CircuitBreakerBuilder, &str)> = vec![
        (b().failure_rate(0.0), "failure_rate"),
        (b().failure_rate(1.01), "failure_rate"),
        (b().failure_rate(f64::NAN), "failure_rate"),
        (b().slow_calls(secs(1), 0.0), "slow_call_rate"),
        (b().slow_calls(secs(1), 1.5), "slow_call_rate"),
        (b().slow_calls(Duration::ZERO, 0.5), "slow_call_duration"),
        (b().open_for(Duration::ZERO), "open_for"),
        (b().half_open_probes(0), "half_open_probes"),
        (b().half_open_max_wait(Duration::ZERO), "half_open_max_wait"),
        (b().count_window(0), "count_window"),
        (b().minimum_calls(0), "minimum_calls"),
        (b().count_window(10).minimum_calls(11), "minimum_calls"),
        (b().consecutive_failures(0), "consecutive_failures"),
        (b().time_window(Duration::ZERO), "time_window"),
        (b().time_window_buckets(secs(1), 0), "time_window_buckets"),
        (b().time_window_buckets(secs(10), 3), "time_window_buckets"),
        (b().time_window_buckets(ms(10), 20), "time_window_buckets"),
        (b().open_backoff(0.5, secs(60)), "open_multiplier"),
        (
            b().open_for(secs(30)).open_backoff(2.0, secs(1)),
            "open_max",
        ),
        (b().open_jitter(1.0), "open_jitter"),
        (b().open_jitter(-0.1), "open_jitter"),
    ];
    for (builder, field) in cases {
        let debug = format!("{builder:?}");
        let err = builder.build().expect_err(&debug);
        assert_eq!(err.field(), field, "{err}");
        assert_eq!(err.layer(), "circuit_breaker");
    }
    // Sensible edges are fine.
    b().count_window(1)
        .minimum_calls(1)
        .failure_rate(1.0)
        .build()
        .unwrap();
    b().time_window(ms(500)).build().unwrap();
    b().time_window_buckets(secs(10), 10_000).build().unwrap();
}

#[tokio::test(start_paused = true)]
async fn minimum_calls_default_to_the_count_window_when_it_is_smaller() {
    // The default minimum is 20; a window of 2 could never hold 20 calls.
    let mut rig = rig(CircuitBreakerLayer::builder().count_window(2));
    rig.run(&[F, F]).await;
    assert_eq!(rig.handle.state(), State::Open);
}

#[test]
fn a_time_window_gets_about_one_bucket_per_second_that_divides_it() {
    // 3.5 s does not split into 3 whole-nanosecond buckets, so it gets 2;
    // 3 h would be 10 800 buckets, past the cap of 10 000.
    for length in [ms(3_500), secs(3 * 3_600), ms(1), secs(1)] {
        let built = CircuitBreakerLayer::builder().time_window(length).build();
        assert!(built.is_ok(), "{length:?}: {:?}", built.err());
    }
}

#[tokio::test(start_paused = true)]
async fn a_success_that_slides_the_time_window_is_checked_too() {
    // Old successes leave the window with the bucket a new success opens:
    // the failure rate jumps, and that success must see it.
    let mut rig = rig(CircuitBreakerLayer::builder()
        .time_window(secs(10))
        .minimum_calls(5)
        .failure_rate(0.5));
    rig.run(&[S; 10]).await;
    advance(secs(5)).await;
    rig.run(&[F; 6]).await; // 6 of 16
    assert_eq!(rig.handle.state(), State::Closed);
    advance(ms(5_500)).await;
    rig.run(&[S]).await; // the ten successes have left: 6 of 7
    assert_eq!(rig.handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_call_made_after_the_breaker_opened_is_refused_though_readiness_was_polled_before() {
    let probe = Probe::new(Answer::Now);
    let layer = CircuitBreakerLayer::builder().build().unwrap();
    let mut svc = layer.layer(probe.clone());
    svc.ready().await.unwrap(); // admitted while Closed
    layer.handle().force_open();
    let err = svc.call(1).await.unwrap_err();
    assert!(matches!(ErrorKind::of(&err), ErrorKind::CircuitOpen(_)));
    assert_eq!(probe.calls(), 0);
    assert_eq!(layer.handle().snapshot().not_permitted, 1);
}

#[tokio::test(start_paused = true)]
async fn a_service_that_polls_ready_and_never_calls_holds_no_probe_slot() {
    let probe = Probe::new(Answer::Now);
    let layer = CircuitBreakerLayer::builder()
        .half_open_probes(1)
        .build()
        .unwrap();
    let handle = layer.handle();
    handle.open_for(secs(1));
    advance(secs(1)).await;
    let mut idle = layer.layer(probe.clone());
    idle.ready().await.unwrap(); // may probe, but never calls
    assert_eq!(handle.state(), State::HalfOpen);
    assert_eq!(layer.layer(probe.clone()).oneshot(5).await.unwrap(), 5);
    assert_eq!(handle.state(), State::Closed);
    // The idle service's own call, when it finally comes, decides again.
    assert_eq!(idle.call(6).await.unwrap(), 6);
}

#[tokio::test(start_paused = true)]
async fn of_two_callers_that_saw_the_last_free_probe_slot_one_is_refused_in_call() {
    let probe = Probe::new(Answer::Gated);
    let layer = CircuitBreakerLayer::builder()
        .half_open_probes(1)
        .build()
        .unwrap();
    layer.handle().open_for(secs(1));
    advance(secs(1)).await;
    let mut a = layer.layer(probe.clone());
    let mut b = layer.layer(probe.clone());
    a.ready().await.unwrap();
    b.ready().await.unwrap();
    let first = a.call(1);
    let err = b.call(2).await.unwrap_err();
    let ErrorKind::CircuitOpen(open) = ErrorKind::of(&err) else {
        panic!("{err:?}")
    };
    assert_eq!(open.retry_after(), None);
    assert_eq!(probe.calls(), 1);
    probe.release(1);
    assert_eq!(first.await.unwrap(), 1);
    assert_eq!(layer.handle().state(), State::Closed);
}

#[cfg(feature = "serde")]
#[test]
fn configuration_loads_from_json() {
    use palisade::circuit_breaker::CircuitBreakerConfig;
    let config: CircuitBreakerConfig = serde_json::from_str(
        r#"{"name": "payments", "time_window": "30s", "minimum_calls": 10,
            "failure_rate": 0.25, "slow_call_duration": "500ms", "slow_call_rate": 0.8,
            "open_for": "5s", "open_multiplier": 2.0, "open_max": "2m", "half_open_probes": 2,
            "open_on_retry_after": "10m", "wait_when_open": "2s"}"#,
    )
    .unwrap();
    assert_eq!(config.open_max, Some(secs(120)));
    assert_eq!(config.open_on_retry_after, Some(secs(600)));
    assert_eq!(config.wait_when_open, Some(secs(2)));
    let layer = CircuitBreakerLayer::from_config(config).unwrap();
    assert_eq!(layer.handle().name(), "payments");

    let both: CircuitBreakerConfig =
        serde_json::from_str(r#"{"count_window": 10, "time_window": "10s"}"#).unwrap();
    assert_eq!(
        CircuitBreakerLayer::from_config(both).unwrap_err().field(),
        "time_window"
    );
    // Buckets without a time window would be ignored: refused instead.
    for alone in [
        r#"{"time_window_buckets": 10}"#,
        r#"{"count_window": 10, "time_window_buckets": 10}"#,
    ] {
        let config: CircuitBreakerConfig = serde_json::from_str(alone).unwrap();
        assert_eq!(
            CircuitBreakerLayer::from_config(config)
                .unwrap_err()
                .field(),
            "time_window_buckets",
            "{alone}"
        );
    }
    // A multiplier alone grows the open period with no cap, as documented;
    // a cap alone has nothing to cap.
    let uncapped: CircuitBreakerConfig =
        serde_json::from_str(r#"{"open_multiplier": 2.0}"#).unwrap();
    CircuitBreakerLayer::from_config(uncapped).unwrap();
    let cap_alone: CircuitBreakerConfig = serde_json::from_str(r#"{"open_max": "1m"}"#).unwrap();
    assert_eq!(
        CircuitBreakerLayer::from_config(cap_alone)
            .unwrap_err()
            .field(),
        "open_max"
    );
    assert!(serde_json::from_str::<CircuitBreakerConfig>(r#"{"window": 3}"#).is_err());
}

// ---------------------------------------------------------------- tower contract

#[tokio::test(start_paused = true)]
async fn closed_breaker_keeps_the_tower_contract() {
    // scenario CB-A3, and TC-2..4
    support::check_tower_contract(|probe| {
        CircuitBreakerLayer::builder().build().unwrap().layer(probe)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_breaker_and_layers_do_not() {
    // Principle 2
    let probe = Probe::new(Answer::Fail);
    let layer = CircuitBreakerLayer::builder()
        .count_window(2)
        .minimum_calls(2)
        .build()
        .unwrap();
    let other = CircuitBreakerLayer::builder().build().unwrap();
    let a = layer.layer(probe.clone());
    let _ = a.clone().oneshot(1).await;
    let _ = a.clone().oneshot(2).await;
    assert_eq!(layer.handle().state(), State::Open);
    assert_eq!(a.handle().state(), State::Open);
    assert_eq!(other.handle().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_call_counts_as_a_failure() {
    let probe = Probe::new(Answer::PanicInFuture);
    let layer = CircuitBreakerLayer::builder()
        .count_window(1)
        .minimum_calls(1)
        .build()
        .unwrap();
    let svc = layer.layer(probe);
    let joined = tokio::spawn(svc.oneshot(1)).await;
    assert!(joined.unwrap_err().is_panic());
    assert_eq!(layer.handle().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_is_ignored() {
    let probe = Probe::new(Answer::Gated);
    let layer = CircuitBreakerLayer::builder()
        .count_window(1)
        .minimum_calls(1)
        .build()
        .unwrap();
    let mut svc = layer.layer(probe.clone());
    let fut = svc.ready().await.unwrap().call(1);
    drop(fut);
    let s = layer.handle().snapshot();
    assert_eq!((s.state, s.calls), (State::Closed, 0));
    assert_eq!(probe.dropped_unfinished(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_inner_readiness_error_gives_a_probe_slot_back() {
    let probe = Probe::new(Answer::Now);
    let layer = CircuitBreakerLayer::builder()
        .half_open_probes(1)
        .build()
        .unwrap();
    let handle = layer.handle();
    handle.open_for(secs(1));
    advance(secs(1)).await;
    probe.set_readiness(Readiness::Fail);
    let mut broken = layer.layer(probe.clone());
    let err = broken.ready().await.err().unwrap();
    assert!(err.is::<ProbeError>());
    assert_eq!(handle.state(), State::HalfOpen);
    assert_eq!(handle.snapshot().probes_in_flight, 0);
    probe.set_readiness(Readiness::Ready);
    assert_eq!(layer.layer(probe).oneshot(9).await.unwrap(), 9);
    assert_eq!(handle.state(), State::Closed);
}

/// `call` without `poll_ready` is the caller's bug: a typed error naming
/// the breaker, nothing sent, nothing counted.
#[tokio::test(start_paused = true)]
async fn a_call_without_readiness_is_not_ready_and_not_sent() {
    let probe = Probe::new(Answer::Now);
    let layer = CircuitBreakerLayer::builder()
        .name("payments")
        .build()
        .unwrap();
    let mut svc = layer.layer(probe.clone());
    let err = svc.call(1).await.unwrap_err();
    let ErrorKind::NotReady(e) = ErrorKind::of(&err) else {
        panic!("expected NotReady, got {err}");
    };
    assert_eq!((e.layer(), e.name()), ("circuit_breaker", "payments"));
    assert!(err.to_string().contains("bug in the caller"), "{err}");
    assert_eq!(probe.calls(), 0);
    assert_eq!(layer.handle().snapshot().calls, 0);
    // The service is still usable the right way.
    assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap(), 2);
}

/// A breaker above a service that calls a palisade layer without
/// readiness (here another breaker) sees only `NotReady`: a bug there,
/// not a failing upstream, so the breaker counts none of it and stays
/// closed, even on a window that one failure would open.
#[tokio::test(start_paused = true)]
async fn a_breaker_fed_only_not_ready_errors_stays_closed() {
    let below = CircuitBreakerLayer::builder()
        .name("below")
        .build()
        .unwrap()
        .layer(service_fn(|n: u64| async move { Ok::<_, BoxError>(n) }));
    let misuses_below = service_fn(move |n: u64| {
        // A clone holds no admission: this `call` skips `poll_ready`.
        let mut below = below.clone();
        async move { below.call(n).await }
    });
    let layer = CircuitBreakerLayer::builder()
        .count_window(2)
        .minimum_calls(1)
        .consecutive_failures(1)
        .build()
        .unwrap();
    let mut svc = layer.layer(misuses_below);
    for n in 0..10 {
        let err = svc.ready().await.unwrap().call(n).await.unwrap_err();
        assert!(
            matches!(ErrorKind::of(&err), ErrorKind::NotReady(_)),
            "{err}"
        );
    }
    let s = layer.handle().snapshot();
    assert_eq!((s.state, s.calls, s.failures), (State::Closed, 0, 0));
    assert_eq!(s.consecutive_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn events_carry_the_name_the_rates_and_the_generation() {
    let mut rig = rig(cfg_r());
    trip(&mut rig).await;
    let events = rig.events.0.lock().unwrap().clone();
    let Event::Transition(t) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(t.name(), "cfg-r");
    assert_eq!((t.failure_rate, t.slow_call_rate), (Some(1.0), Some(0.0)));
    assert_eq!((t.generation, t.open_for), (1, Some(secs(5))));
    let s = rig.handle.snapshot();
    assert_eq!(s.generation, 1);
    assert!(s.since <= Instant::now());
}

// ---------------------------------------------------------------- keyed

fn keyed_layer(
    max_keys: usize,
) -> palisade::circuit_breaker::KeyedCircuitBreakerLayer<u64, fn(&u64) -> u64> {
    CircuitBreakerLayer::builder()
        .name("hosts")
        .count_window(2)
        .minimum_calls(2)
        .keyed((|request: &u64| request / 100) as fn(&u64) -> u64)
        .max_keys(max_keys)
        .idle_after(secs(600))
        .build()
        .unwrap()
}

/// Calls `svc` once for each of `n` keys from `first`, all new (a request
/// is its key times 100), and ignores the outcomes.
async fn call_new_keys<S>(svc: &mut S, first: u64, n: u64)
where
    S: Service<u64, Error = BoxError>,
{
    for key in first..first + n {
        let _ = svc.ready().await.unwrap().call(key * 100).await;
    }
}

/// Calls new keys from 1 on until every part of the store is full: 16
/// keys for a `max_keys` of 16 (one a part); returns the keys that got a
/// breaker of their own.
async fn fill<S>(svc: &mut S, hosts: &palisade::circuit_breaker::KeyedHandle<u64>) -> Vec<u64>
where
    S: Service<u64, Error = BoxError>,
{
    let mut key = 1;
    while hosts.len() < 16 {
        assert!(key < 10_000, "16 parts, 10 000 keys: one part never filled");
        svc.ready().await.unwrap().call(key * 100).await.unwrap();
        key += 1;
    }
    let mut keys = hosts.keys();
    keys.sort_unstable();
    keys
}

#[tokio::test(start_paused = true)]
async fn each_key_has_its_own_breaker() {
    // Requests 100..199 are key 1, 200..299 key 2.
    let probe = Probe::new(Answer::Fail);
    let layer = keyed_layer(100);
    let hosts = layer.handle();
    let svc = layer.layer(probe.clone());
    let _ = svc.clone().oneshot(101).await;
    let _ = svc.clone().oneshot(102).await;
    let err = svc.clone().oneshot(103).await.unwrap_err();
    let ErrorKind::CircuitOpen(open) = ErrorKind::of(&err) else {
        panic!("{err:?}")
    };
    assert_eq!(open.name(), "hosts", "the layer's name, never the key");
    assert_eq!(hosts.get(&1).unwrap().state(), State::Open);
    assert_eq!(hosts.get(&1).unwrap().name(), "hosts");

    probe.set_answer(Answer::Now);
    assert_eq!(svc.clone().oneshot(201).await.unwrap(), 201);
    assert_eq!(hosts.get(&2).unwrap().state(), State::Closed);
    assert_eq!(probe.calls(), 3, "the open key's call never reached it");
    let mut keys = hosts.keys();
    keys.sort_unstable();
    assert_eq!(keys, [1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_distinct_keys_stays_within_the_bound() {
    let probe = Probe::new(Answer::Now);
    let layer = keyed_layer(100);
    let hosts = layer.handle();
    // Key 7 is opened by hand before the flood: only idle Closed breakers
    // ever make room.
    hosts.breaker(7).force_open();
    let mut svc = layer.layer(probe);
    for request in (1_000..).step_by(100).take(100_000) {
        svc.ready().await.unwrap().call(request).await.unwrap();
        // 100 rounded up to 16 parts of 7 keys.
        assert!(hosts.len() <= 112, "{} keys", hosts.len());
    }
    assert_eq!(hosts.len(), 112, "every part filled");
    assert_eq!(
        hosts.overflow_calls(),
        100_000 - 111,
        "every key that found no room went to the overflow breaker"
    );
    assert_eq!(hosts.get(&7).map(|h| h.state()), Some(State::ForcedOpen));
}

// Idle keys are swept per part of the store (one of 16, by the key's
// hash), when a new key arrives there: the tests below call a thousand new
// keys to reach every part.

#[tokio::test(start_paused = true)]
async fn idle_keys_are_dropped_when_new_ones_arrive() {
    let layer = keyed_layer(100_000); // room for every key
    let hosts = layer.handle();
    let mut svc = layer.layer(Probe::new(Answer::Now));
    svc.ready().await.unwrap().call(100).await.unwrap(); // key 1
    svc.ready().await.unwrap().call(200).await.unwrap(); // key 2
    advance(secs(600)).await;
    call_new_keys(&mut svc, 10_000, 1_000).await; // the sweeps mark 1 and 2
    svc.ready().await.unwrap().call(200).await.unwrap(); // key 2 again
    assert!(hosts.get(&1).is_some(), "idle for one period only");
    advance(secs(600)).await;
    call_new_keys(&mut svc, 20_000, 1_000).await;
    assert!(hosts.get(&1).is_none(), "key 1 had no call for two periods");
    assert!(
        hosts.get(&2).is_some(),
        "key 2 had one since the last sweep"
    );
    assert!(hosts.get(&10_000).is_some(), "made after the last sweep");
    assert_eq!(hosts.len(), 2_001);
    assert!(hosts.remove(&2));
    assert!(!hosts.remove(&2));
    assert_eq!(hosts.len(), 2_000);
}

#[tokio::test(start_paused = true)]
async fn a_key_isolated_by_hand_outlasts_idle_sweeps() {
    let layer = keyed_layer(100_000);
    let hosts = layer.handle();
    let mut svc = layer.layer(Probe::new(Answer::Now));
    hosts.breaker(7).force_open();
    for round in 1..=3 {
        call_new_keys(&mut svc, round * 10_000, 1_000).await;
        advance(secs(600)).await;
    }
    call_new_keys(&mut svc, 40_000, 1_000).await;
    assert_eq!(hosts.get(&7).map(|h| h.state()), Some(State::ForcedOpen));
    let mut keys = hosts.keys();
    keys.sort_unstable();
    let expected: Vec<u64> = std::iter::once(7)
        .chain(30_000..31_000)
        .chain(40_000..41_000)
        .collect();
    assert_eq!(
        keys, expected,
        "idle Closed keys went, the isolated one stayed"
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_closed_key_makes_room_and_a_key_in_use_does_not() {
    let layer = keyed_layer(16); // one key in each of the 16 parts
    let hosts = layer.handle();
    let mut svc = layer.layer(Probe::new(Answer::Now));
    let keys = fill(&mut svc, &hosts).await;
    let (busy, idle) = keys.split_at(8);
    advance(secs(600)).await;
    // The sweeps mark every key; the new keys find no room.
    call_new_keys(&mut svc, 1_000_000, 1_000).await;
    assert_eq!(hosts.keys().len(), 16);
    for key in busy {
        svc.ready().await.unwrap().call(key * 100).await.unwrap();
    }
    advance(secs(600)).await;
    call_new_keys(&mut svc, 2_000_000, 1_000).await;
    for key in busy {
        assert!(hosts.get(key).is_some(), "key {key} was in use");
    }
    for key in idle {
        assert!(hosts.get(key).is_none(), "key {key} was idle and Closed");
    }
    assert_eq!(hosts.len(), 16, "new keys took the idle keys' places");
}

#[tokio::test(start_paused = true)]
async fn an_open_key_stays_open_through_a_flood_of_keys() {
    let probe = Probe::new(Answer::Fail);
    let layer = keyed_layer(16);
    let hosts = layer.handle();
    let mut svc = layer.layer(probe.clone());
    let _ = svc.ready().await.unwrap().call(101).await;
    let _ = svc.ready().await.unwrap().call(102).await;
    assert_eq!(hosts.get(&1).map(|h| h.state()), Some(State::Open));
    // Each new key fails twice: a key with a breaker of its own opens it,
    // so the store fills with Open breakers, none of which may go.
    for key in 1_000..11_000 {
        let _ = svc.ready().await.unwrap().call(key * 100).await;
        let _ = svc.ready().await.unwrap().call(key * 100 + 1).await;
        assert!(hosts.len() <= 16, "{} keys", hosts.len());
    }
    assert_eq!(
        hosts.get(&1).map(|h| h.state()),
        Some(State::Open),
        "the flood neither dropped key 1's breaker nor reset it"
    );
    let calls = probe.calls();
    let err = svc.ready().await.unwrap().call(103).await.unwrap_err();
    assert!(
        matches!(ErrorKind::of(&err), ErrorKind::CircuitOpen(_)),
        "{err:?}"
    );
    assert_eq!(
        probe.calls(),
        calls,
        "key 1's call never reached the service"
    );
}

#[tokio::test(start_paused = true)]
async fn keys_without_room_share_the_overflow_breaker() {
    let probe = Probe::new(Answer::Now);
    let layer = keyed_layer(16);
    let hosts = layer.handle();
    let mut svc = layer.layer(probe.clone());
    let busy = fill(&mut svc, &hosts).await;
    let before = hosts.overflow_calls();
    // Two new keys fail once each: together they open the breaker they
    // share (a count window of 2, at least 2 calls).
    probe.set_answer(Answer::Fail);
    for request in [1_000_000 * 100, 1_000_001 * 100] {
        let err = svc.ready().await.unwrap().call(request).await.unwrap_err();
        assert!(
            matches!(ErrorKind::of(&err), ErrorKind::Inner(_)),
            "{err:?}"
        );
    }
    let calls = probe.calls();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(1_000_002 * 100)
        .await
        .unwrap_err();
    let ErrorKind::CircuitOpen(open) = ErrorKind::of(&err) else {
        panic!("a third new key finds the shared breaker open: {err:?}")
    };
    assert_eq!(open.name(), "hosts");
    assert_eq!(probe.calls(), calls);
    assert_eq!(hosts.overflow_calls() - before, 3);
    assert!(hosts.get(&1_000_000).is_none(), "no breaker of its own");
    // The keys with a breaker of their own are judged by it alone.
    probe.set_answer(Answer::Now);
    for key in &busy {
        svc.ready().await.unwrap().call(key * 100).await.unwrap();
        assert_eq!(hosts.get(key).map(|h| h.state()), Some(State::Closed));
    }
    assert_eq!(hosts.overflow_calls() - before, 3);
}

#[tokio::test(start_paused = true)]
async fn a_key_never_appears_in_names_events_or_errors() {
    const SECRET: &str = "sk_live_51HqTenantApiKey";
    let tracer = traced::Tracer::default();
    let _subscriber = tracer.install();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let layer = CircuitBreakerLayer::builder()
        .name("tenants")
        .count_window(2)
        .minimum_calls(2)
        .on_event(move |e| sink.lock().unwrap().push(format!("{e:?}")))
        .keyed(|request: &(String, bool)| request.0.clone())
        .build()
        .unwrap();
    let tenants = layer.handle();
    let svc = layer.layer(service_fn(|(_, fail): (String, bool)| async move {
        if fail { Err::<(), _>("failed") } else { Ok(()) }
    }));
    let secret = || SECRET.to_string();
    let _ = svc.clone().oneshot((secret(), true)).await;
    let _ = svc.clone().oneshot((secret(), true)).await;
    let err = svc.clone().oneshot((secret(), false)).await.unwrap_err();
    let ErrorKind::CircuitOpen(open) = ErrorKind::of(&err) else {
        panic!("{err:?}")
    };
    assert_eq!(open.name(), "tenants");
    let handle = tenants.get(&secret()).unwrap();
    assert_eq!(handle.name(), "tenants");
    assert!(handle.force_open());
    assert!(tenants.breaker("sk_live_another".to_string()).disable());

    let events = events.lock().unwrap().clone();
    let traced: Vec<String> = tracer
        .events("")
        .iter()
        .map(|event| format!("{:?}", event.fields))
        .collect();
    assert!(events.len() >= 3, "{events:?}");
    assert!(
        traced.len() >= 3,
        "the recorder saw the breaker's events: {traced:?}"
    );
    let texts = [format!("{err}"), format!("{err:?}"), format!("{open:?}")];
    for text in events.iter().chain(&traced).chain(&texts) {
        assert!(!text.contains("sk_live"), "a key in {text}");
    }
}

#[test]
fn a_keyed_breaker_checks_its_settings() {
    let keyed = || CircuitBreakerLayer::builder().keyed(|r: &u64| *r);
    assert_eq!(
        keyed().max_keys(0).build::<u64>().unwrap_err().field(),
        "max_keys"
    );
    assert_eq!(
        keyed()
            .idle_after(Duration::ZERO)
            .build::<u64>()
            .unwrap_err()
            .field(),
        "idle_after"
    );
    let bad_rate = CircuitBreakerLayer::builder()
        .failure_rate(2.0)
        .keyed(|r: &u64| *r)
        .build::<u64>();
    assert_eq!(bad_rate.unwrap_err().field(), "failure_rate");
}

#[tokio::test(start_paused = true)]
async fn a_keyed_breaker_keeps_the_tower_contract() {
    support::check_tower_contract(|probe| keyed_layer(10).layer(probe)).await;
}

#[tokio::test(start_paused = true)]
async fn a_service_that_admitted_before_does_not_admit_once_the_breaker_opens() {
    // The service remembers the Closed period it admitted under; opening
    // the breaker must end that at once, for it and for its clones.
    let probe = Probe::new(Answer::Now);
    let layer = CircuitBreakerLayer::builder().build().unwrap();
    let mut svc = layer.layer(probe.clone());
    svc.ready().await.unwrap().call(1).await.unwrap();
    let mut clone = svc.clone();
    layer.handle().force_open();
    for s in [&mut svc, &mut clone] {
        let err = s.ready().await.unwrap().call(2).await.unwrap_err();
        assert!(matches!(ErrorKind::of(&err), ErrorKind::CircuitOpen(_)));
    }
    assert_eq!(probe.calls(), 1);
}

// ---------------------------------------------------------------- an outcome that opens the breaker

/// An upstream's ban, with how long it lasts.
#[derive(Debug)]
struct Banned(Duration);

impl std::fmt::Display for Banned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "access banned for {:?}", self.0)
    }
}

impl std::error::Error for Banned {}

/// What the banning backend does with one call.
#[derive(Clone, Copy, Debug)]
enum Upstream {
    Ok,
    Fails,
    /// Fails with a ban, after this long.
    Bans(Duration, Duration),
}

type BanSvc = BoxCloneService<Upstream, &'static str, BoxError>;

/// A breaker whose classifier reads a ban's length as the retry-after.
fn banning(builder: CircuitBreakerBuilder) -> (BanSvc, Handle, Events) {
    let events = Events::default();
    let sink = events.0.clone();
    let classifier = palisade::classify::with_retry_after(
        palisade::classify::DefaultClassifier,
        |result: &Result<&'static str, BoxError>| {
            result.as_ref().err()?.downcast_ref::<Banned>().map(|b| b.0)
        },
    );
    let layer = builder
        .classifier(classifier)
        .on_event(move |e| sink.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    let backend = service_fn(|call: Upstream| async move {
        match call {
            Upstream::Ok => Ok("ok"),
            Upstream::Fails => Err::<_, BoxError>("generic failure".into()),
            Upstream::Bans(after, ban) => {
                tokio::time::sleep(after).await;
                Err(Box::new(Banned(ban)) as BoxError)
            }
        }
    });
    (
        BoxCloneService::new(layer.layer(backend)),
        layer.handle(),
        events,
    )
}

/// One call that fails at once with a ban of `ban`.
async fn ban_at_once(svc: &mut BanSvc, ban: Duration) {
    let _ = svc
        .ready()
        .await
        .unwrap()
        .call(Upstream::Bans(Duration::ZERO, ban))
        .await;
}

fn hours(h: u64) -> Duration {
    secs(h * 3600)
}

#[tokio::test(start_paused = true)]
async fn a_failure_carrying_a_ban_opens_the_breaker_for_its_length() {
    // scenario CB-T7
    let (mut svc, handle, events) =
        banning(CircuitBreakerLayer::builder().open_on_retry_after(hours(24)));
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Upstream::Bans(Duration::ZERO, hours(2)))
        .await
        .unwrap_err();
    assert!(
        err.is::<Banned>(),
        "the caller gets the ban itself: {err:?}"
    );
    assert_eq!(handle.state(), State::Open, "after a single call");
    assert_eq!(
        events.transitions(),
        [(State::Closed, State::Open, Reason::RetryAfter)]
    );
    assert_eq!(events.open_durations(), [hours(2)]);
    let refused = open_error(svc.ready().await.unwrap().call(Upstream::Ok).await);
    assert_eq!(refused.retry_after(), Some(hours(2)));

    // A fresh breaker and a generic failure: still Closed.
    let (mut svc, handle, _) =
        banning(CircuitBreakerLayer::builder().open_on_retry_after(hours(24)));
    let _ = svc.ready().await.unwrap().call(Upstream::Fails).await;
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.snapshot().failures, 1);
}

/// `Duration::MAX` as a retry-after is "do not retry this call" (gRPC's
/// negative pushback reads so), not a ban: it opens nothing by itself.
#[tokio::test(start_paused = true)]
async fn a_do_not_retry_hint_is_no_ban() {
    let (mut svc, handle, _) =
        banning(CircuitBreakerLayer::builder().open_on_retry_after(hours(1)));
    ban_at_once(&mut svc, Duration::MAX).await;
    let s = handle.snapshot();
    assert_eq!((s.state, s.calls, s.failures), (State::Closed, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_carried_open_is_capped_and_a_zero_ban_is_no_ban() {
    let (mut svc, handle, _) =
        banning(CircuitBreakerLayer::builder().open_on_retry_after(hours(1)));
    ban_at_once(&mut svc, Duration::ZERO).await;
    let s = handle.snapshot();
    assert_eq!((s.state, s.calls, s.failures), (State::Closed, 1, 1));
    ban_at_once(&mut svc, hours(2)).await;
    let refused = open_error(svc.ready().await.unwrap().call(Upstream::Ok).await);
    assert_eq!(refused.retry_after(), Some(hours(1)), "capped");
}

#[tokio::test(start_paused = true)]
async fn without_open_on_retry_after_a_ban_is_an_ordinary_failure() {
    let (mut svc, handle, _) = banning(CircuitBreakerLayer::builder());
    ban_at_once(&mut svc, hours(2)).await;
    let s = handle.snapshot();
    assert_eq!((s.state, s.calls, s.failures), (State::Closed, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_probe_carrying_a_ban_reopens_for_the_ban_not_the_schedule() {
    let (mut svc, handle, events) = banning(
        CircuitBreakerLayer::builder()
            .open_for(secs(5))
            .open_on_retry_after(hours(24)),
    );
    handle.open();
    advance(secs(5)).await;
    ban_at_once(&mut svc, hours(3)).await;
    assert_eq!(
        events.transitions().last(),
        Some(&(State::HalfOpen, State::Open, Reason::RetryAfter))
    );
    let refused = open_error(svc.ready().await.unwrap().call(Upstream::Ok).await);
    assert_eq!(refused.retry_after(), Some(hours(3)));
}

#[tokio::test(start_paused = true)]
async fn a_ban_does_not_override_a_state_set_by_hand_nor_open_metrics_only() {
    let (svc, handle, _) = banning(CircuitBreakerLayer::builder().open_on_retry_after(hours(24)));
    // Admitted while Closed, its ban arrives after the breaker was isolated
    // by hand: the late result changes nothing.
    let mut late = task::spawn(svc.clone().oneshot(Upstream::Bans(secs(1), hours(2))));
    assert!(late.poll().is_pending());
    assert!(handle.force_open());
    advance(secs(1)).await;
    assert!(matches!(late.poll(), std::task::Poll::Ready(Err(_))));
    assert_eq!(handle.state(), State::ForcedOpen);

    handle.metrics_only();
    let err = svc
        .clone()
        .oneshot(Upstream::Bans(Duration::ZERO, hours(2)))
        .await
        .unwrap_err();
    assert!(err.is::<Banned>());
    let s = handle.snapshot();
    assert_eq!((s.state, s.calls, s.failures), (State::MetricsOnly, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn only_a_failure_opens_on_its_retry_after() {
    // A hint on a success (or an ignored result) opens nothing.
    let classifier = palisade::classify::with_retry_after(
        palisade::classify::DefaultClassifier,
        |_: &Result<u64, BoxError>| Some(hours(1)),
    );
    let layer = CircuitBreakerLayer::builder()
        .open_on_retry_after(hours(24))
        .classifier(classifier)
        .build()
        .unwrap();
    let probe = Probe::new(Answer::Now);
    assert_eq!(layer.layer(probe.clone()).oneshot(1).await.unwrap(), 1);
    assert_eq!(layer.handle().state(), State::Closed);
    probe.set_answer(Answer::Fail);
    let _ = layer.layer(probe).oneshot(2).await;
    assert_eq!(layer.handle().state(), State::Open);
}

// ---------------------------------------------------------------- waiting mode

/// Polls `svc` to readiness in a task of its own; resolves to the service.
fn wait_ready<S>(mut svc: S) -> task::Spawn<impl Future<Output = S>>
where
    S: Service<u64, Error = BoxError>,
{
    task::spawn(async move {
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
        svc
    })
}

#[tokio::test(start_paused = true)]
async fn waiting_mode_waits_on_its_own_timer_then_polls_the_inner_service() {
    // scenario CB-A2
    let probe = Probe::new(Answer::Now);
    probe.set_readiness(Readiness::Pending);
    let layer = CircuitBreakerLayer::builder()
        .open_for(ms(20))
        .half_open_probes(1)
        .wait_when_open(secs(1))
        .build()
        .unwrap();
    layer.handle().open();
    let mut waiter = wait_ready(layer.layer(probe.clone()));
    assert!(waiter.poll().is_pending());
    assert_eq!(probe.ready_polls(), 0, "decided before the inner service");
    advance(ms(19)).await;
    assert!(!waiter.is_woken());
    advance(ms(1)).await;
    assert!(
        waiter.is_woken(),
        "the breaker's own timer wakes the waiter"
    );
    assert!(waiter.poll().is_pending());
    assert_eq!(probe.ready_polls(), 1, "then the inner service, once");
    assert_eq!(layer.handle().state(), State::HalfOpen);
    probe.set_readiness(Readiness::Ready);
    assert!(waiter.is_woken());
    let std::task::Poll::Ready(mut svc) = waiter.poll() else {
        panic!("ready once the inner service is")
    };
    assert_eq!(svc.call(7).await.unwrap(), 7);
    assert_eq!(layer.handle().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn waiting_mode_refuses_at_once_when_the_open_duration_outlasts_the_wait() {
    let probe = Probe::new(Answer::Now);
    let layer = CircuitBreakerLayer::builder()
        .wait_when_open(secs(1))
        .build()
        .unwrap();
    layer.handle().open_for(secs(5));
    let mut waiter = wait_ready(layer.layer(probe.clone()));
    let std::task::Poll::Ready(mut svc) = waiter.poll() else {
        panic!("no point waiting 1 s for a breaker open 5 s")
    };
    let err = svc.call(1).await.unwrap_err();
    let ErrorKind::CircuitOpen(open) = ErrorKind::of(&err) else {
        panic!("{err:?}")
    };
    assert_eq!(open.retry_after(), Some(secs(5)));
    assert_eq!((probe.ready_polls(), probe.calls()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn waiting_mode_gives_up_at_its_bound_and_refuses_in_call() {
    let probe = Probe::new(Answer::Now);
    let layer = CircuitBreakerLayer::builder()
        .wait_when_open(secs(1))
        .build()
        .unwrap();
    layer.handle().force_open();
    let mut waiter = wait_ready(layer.layer(probe.clone()));
    assert!(
        waiter.poll().is_pending(),
        "forced open: no known end, so wait"
    );
    advance(ms(999)).await;
    assert!(!waiter.is_woken());
    advance(ms(1)).await;
    assert!(waiter.is_woken());
    let std::task::Poll::Ready(mut svc) = waiter.poll() else {
        panic!("the wait is over")
    };
    let err = svc.call(1).await.unwrap_err();
    assert!(matches!(ErrorKind::of(&err), ErrorKind::CircuitOpen(_)));
    assert_eq!((probe.ready_polls(), probe.calls()), (0, 0));
    assert_eq!(layer.handle().snapshot().not_permitted, 1);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_is_woken_when_the_breaker_is_closed_by_hand() {
    let probe = Probe::new(Answer::Now);
    let layer = CircuitBreakerLayer::builder()
        .wait_when_open(secs(60))
        .build()
        .unwrap();
    layer.handle().force_open();
    let mut waiter = wait_ready(layer.layer(probe.clone()));
    assert!(waiter.poll().is_pending());
    layer.handle().force_closed();
    assert!(waiter.is_woken());
    let std::task::Poll::Ready(mut svc) = waiter.poll() else {
        panic!("closed: admitted")
    };
    assert_eq!(svc.call(3).await.unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_gets_the_probe_slot_a_finished_or_cancelled_probe_leaves() {
    let probe = Probe::new(Answer::Gated);
    let layer = CircuitBreakerLayer::builder()
        .half_open_probes(1)
        .wait_when_open(secs(60))
        .build()
        .unwrap();
    let handle = layer.handle();
    handle.open_for(secs(1));
    advance(secs(1)).await;

    // A probe goes; a second caller waits for its slot.
    let mut first = task::spawn(layer.layer(probe.clone()).oneshot(1));
    assert!(first.poll().is_pending());
    let mut waiter = wait_ready(layer.layer(probe.clone()));
    assert!(waiter.poll().is_pending(), "every probe slot is taken");
    // The probe is cancelled: its slot comes back, and the waiter takes it.
    drop(first);
    assert!(waiter.is_woken());
    let std::task::Poll::Ready(mut svc) = waiter.poll() else {
        panic!("a slot came free")
    };
    let mut second = task::spawn(svc.call(2));
    assert!(second.poll().is_pending());

    // A third waits behind that probe, which succeeds and closes the breaker.
    let mut third = wait_ready(layer.layer(probe.clone()));
    assert!(third.poll().is_pending());
    probe.release(1);
    assert!(matches!(second.poll(), std::task::Poll::Ready(Ok(2))));
    assert_eq!(handle.state(), State::Closed);
    assert!(third.is_woken());
    assert!(third.poll().is_ready());
}

#[tokio::test(start_paused = true)]
async fn waiting_mode_keeps_the_tower_contract() {
    support::check_tower_contract(|probe| {
        CircuitBreakerLayer::builder()
            .wait_when_open(secs(1))
            .build()
            .unwrap()
            .layer(probe)
    })
    .await;
}

#[test]
fn waiting_and_carried_opens_check_their_settings() {
    let b = CircuitBreakerLayer::builder;
    assert_eq!(
        b().wait_when_open(Duration::ZERO)
            .build()
            .unwrap_err()
            .field(),
        "wait_when_open"
    );
    assert_eq!(
        b().open_on_retry_after(Duration::ZERO)
            .build()
            .unwrap_err()
            .field(),
        "open_on_retry_after"
    );
    let keyed = b()
        .wait_when_open(secs(1))
        .keyed(|r: &u64| *r)
        .build::<u64>();
    assert_eq!(keyed.unwrap_err().field(), "wait_when_open");
}

#[tokio::test(start_paused = true)]
async fn a_waiter_decides_again_when_a_hung_probe_runs_out_its_wait_bound() {
    // The probe hangs: at the half-open wait bound the waiter reopens the
    // breaker, waits out the open duration, and becomes the next probe.
    let probe = Probe::new(Answer::Gated);
    let layer = CircuitBreakerLayer::builder()
        .open_for(secs(1))
        .half_open_probes(1)
        .half_open_max_wait(secs(1))
        .wait_when_open(secs(10))
        .build()
        .unwrap();
    layer.handle().open_for(secs(1));
    advance(secs(1)).await;
    let mut hung = task::spawn(layer.layer(probe.clone()).oneshot(1));
    assert!(hung.poll().is_pending());
    let mut waiter = wait_ready(layer.layer(probe.clone()));
    assert!(waiter.poll().is_pending());
    advance(secs(1)).await;
    assert!(
        waiter.is_woken(),
        "woken at the wait bound, not at its own 10 s"
    );
    assert!(
        waiter.poll().is_pending(),
        "reopened: waits out the open duration"
    );
    assert_eq!(layer.handle().state(), State::Open);
    advance(secs(1)).await;
    assert!(waiter.is_woken());
    assert!(waiter.poll().is_ready(), "the next probe");
    assert_eq!(layer.handle().state(), State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn a_freed_probe_slot_goes_to_one_waiter_and_the_others_wait_on() {
    let probe = Probe::new(Answer::Gated);
    let layer = CircuitBreakerLayer::builder()
        .half_open_probes(1)
        .wait_when_open(secs(60))
        .build()
        .unwrap();
    layer.handle().open_for(secs(1));
    advance(secs(1)).await;
    let mut first = task::spawn(layer.layer(probe.clone()).oneshot(1));
    assert!(first.poll().is_pending());
    let mut a = wait_ready(layer.layer(probe.clone()));
    let mut b = wait_ready(layer.layer(probe.clone()));
    assert!(a.poll().is_pending() && b.poll().is_pending());
    drop(first); // its slot comes back
    assert!(a.is_woken() && b.is_woken());
    let std::task::Poll::Ready(mut svc) = a.poll() else {
        panic!("a takes the slot")
    };
    assert!(b.poll().is_pending(), "b finds it taken and waits on");
    let mut second = task::spawn(svc.call(2));
    assert!(second.poll().is_pending());
    probe.release(1);
    assert!(matches!(second.poll(), std::task::Poll::Ready(Ok(2))));
    assert_eq!(layer.handle().state(), State::Closed);
    assert!(b.is_woken());
    let std::task::Poll::Ready(mut svc) = b.poll() else {
        panic!("closed: b goes")
    };
    let mut third = task::spawn(svc.call(3));
    assert!(third.poll().is_pending());
    probe.release(1);
    assert!(matches!(third.poll(), std::task::Poll::Ready(Ok(3))));
    assert_eq!(
        layer.handle().snapshot().not_permitted,
        0,
        "nobody was refused"
    );
}

#[tokio::test(start_paused = true)]
async fn the_failure_that_opens_on_its_retry_after_is_counted() {
    let (mut svc, handle, events) =
        banning(CircuitBreakerLayer::builder().open_on_retry_after(hours(24)));
    ban_at_once(&mut svc, hours(2)).await;
    let s = handle.snapshot();
    assert_eq!((s.state, s.calls, s.failures), (State::Open, 1, 1));
    let rate = events.0.lock().unwrap().iter().find_map(|e| match e {
        Event::Transition(t) => t.failure_rate,
        _ => None,
    });
    assert_eq!(rate, Some(1.0), "the opening's rate includes it");
}
