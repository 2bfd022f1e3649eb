//! The adaptive concurrency limit as a layer, under tokio's paused clock:
//! the tower contract as the bulkhead keeps it, what makes a sample, and
//! the limit following a dependency that slows down or drops calls and
//! recovers (AC-1, AC-2, AC-3).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use palisade::adaptive::{Adaptive, AdaptiveLayer, Handle, ResponseFuture};
use palisade::classify::{DefaultClassifier, Outcome};
use palisade::timeout::TimeoutLayer;
use palisade::{BoxError, ErrorKind};
use support::{Answer, Probe, ProbeError, Readiness, answered, bulkhead_full};
use tokio::time::{Instant, sleep};
use tokio_test::task;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

type ProbeFuture = <Probe as Service<u64>>::Future;

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// An AIMD limit named "db" with the given bounds.
fn aimd(initial: usize, min: usize, max: usize, probe: &Probe) -> (Adaptive<Probe>, Handle) {
    let layer = AdaptiveLayer::aimd()
        .name("db")
        .limits(initial, min, max)
        .build()
        .unwrap();
    (layer.layer(probe.clone()), layer.handle())
}

/// Readies `svc` and calls it; the test decides when the response future
/// is polled.
async fn start(
    svc: &mut Adaptive<Probe>,
    request: u64,
) -> task::Spawn<ResponseFuture<ProbeFuture, DefaultClassifier>> {
    let mut call = task::spawn(svc.ready().await.unwrap().call(request));
    assert!(call.poll().is_pending() || call.is_woken());
    call
}

#[tokio::test(start_paused = true)]
async fn honours_the_tower_contract() {
    support::check_tower_contract(|probe| aimd(20, 20, 200, &probe).0).await;
    support::check_tower_contract(|probe| {
        AdaptiveLayer::gradient()
            .build()
            .unwrap()
            .layer(probe.clone())
    })
    .await;
}

/// AC-3: the limit is a ceiling; a refusal is immediate, never reaches the
/// inner service, and is a `BulkheadFull` carrying the limit in force.
#[tokio::test(start_paused = true)]
async fn admits_up_to_the_limit_and_refuses_the_rest_at_once() {
    let probe = Probe::new(Answer::Gated);
    let (mut svc, handle) = aimd(2, 1, 10, &probe);
    let mut first = start(&mut svc, 1).await;
    let mut second = start(&mut svc, 2).await;
    assert_eq!((handle.in_flight(), handle.limit()), (2, 2));

    let polls = probe.ready_polls();
    let err = svc.ready().await.unwrap().call(3).await.unwrap_err();
    let rejection = bulkhead_full(&err);
    assert_eq!(
        (rejection.name(), rejection.max_concurrent()),
        ("db", 2),
        "{err}"
    );
    assert_eq!(rejection.waited(), Duration::ZERO);
    assert!(ErrorKind::of(&err).is_rejected_before_call());
    assert_eq!(
        probe.ready_polls(),
        polls,
        "a refusal does not poll the inner"
    );
    assert_eq!((probe.calls(), handle.rejected()), (2, 1));

    probe.release(2);
    assert_eq!(answered(first.poll()), 1);
    assert_eq!(answered(second.poll()), 2);
    assert_eq!(handle.in_flight(), 0);
    assert_eq!(probe.max_in_flight(), 2);
}

#[tokio::test(start_paused = true)]
async fn polling_again_after_a_refusal_takes_a_slot_that_freed_up() {
    let probe = Probe::new(Answer::Gated);
    let (mut svc, handle) = aimd(1, 1, 1, &probe);
    let mut held = start(&mut svc, 1).await;
    let mut other = svc.clone();
    other.ready().await.unwrap(); // refused: the slot is taken
    probe.release(1);
    assert_eq!(answered(held.poll()), 1);
    other.ready().await.unwrap(); // a fresh look finds the free slot
    probe.set_answer(Answer::Now);
    assert_eq!(other.call(2).await.unwrap(), 2);
    assert_eq!(handle.rejected(), 0);
}

/// The slot comes back on every path; a cancelled or panicked call is no
/// sample (with limit 1 and one call in flight, any healthy sample would
/// raise it to 2), a failure is a drop.
#[tokio::test(start_paused = true)]
async fn the_slot_comes_back_on_every_path_and_only_answers_are_samples() {
    let probe = Probe::new(Answer::Gated);
    let (mut svc, handle) = aimd(1, 1, 10, &probe);

    // A response future dropped before it completes.
    let call = start(&mut svc, 1).await;
    assert_eq!(handle.in_flight(), 1);
    drop(call);
    assert_eq!(probe.dropped_unfinished(), 1);
    assert_eq!((handle.in_flight(), handle.limit()), (0, 1));

    // A service dropped while holding a reserved slot it never used.
    let mut reserved = svc.clone();
    reserved.ready().await.unwrap();
    assert_eq!(handle.in_flight(), 1);
    drop(reserved);
    assert_eq!(handle.in_flight(), 0);

    // A panic inside `call`, and inside the response future.
    for answer in [Answer::PanicInCall, Answer::PanicInFuture] {
        probe.set_answer(answer);
        let outcome = tokio::spawn(svc.clone().oneshot(2)).await;
        assert!(outcome.unwrap_err().is_panic());
        assert_eq!((handle.in_flight(), handle.limit()), (0, 1), "{answer:?}");
    }

    // An answer is a sample: healthy and busy, one more slot.
    probe.set_answer(Answer::Now);
    svc.ready().await.unwrap().call(3).await.unwrap();
    assert_eq!((handle.in_flight(), handle.limit()), (0, 2));

    // A failure is a drop: 2 × 0.9 is 1.8, one whole slot.
    probe.set_answer(Answer::Fail);
    let err = svc.ready().await.unwrap().call(4).await.unwrap_err();
    assert!(err.downcast_ref::<ProbeError>().is_some(), "passed through");
    assert_eq!((handle.in_flight(), handle.limit()), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_readiness_error_gives_the_reserved_slot_back() {
    let probe = Probe::new(Answer::Now);
    probe.set_readiness(Readiness::Fail);
    let (mut svc, handle) = aimd(1, 1, 1, &probe);
    let err = svc.ready().await.err().unwrap();
    assert!(err.downcast_ref::<ProbeError>().is_some());
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_idle_clone_holds_no_slot() {
    let probe = Probe::new(Answer::Now);
    let (mut svc, handle) = aimd(1, 1, 1, &probe);
    svc.ready().await.unwrap();
    let clone = svc.clone();
    assert_eq!(handle.in_flight(), 1, "only the readied service holds one");
    drop(svc);
    assert_eq!(handle.in_flight(), 0);
    drop(clone);
}

#[tokio::test(start_paused = true)]
async fn every_service_one_layer_builds_shares_the_limit() {
    let probe = Probe::new(Answer::Gated);
    let layer = AdaptiveLayer::aimd().limits(2, 1, 2).build().unwrap();
    let mut a = layer.layer(probe.clone());
    let mut b = layer.layer(probe.clone()).clone();
    let _one = a.ready().await.unwrap().call(1);
    let _two = b.ready().await.unwrap().call(2);
    let err = a.clone().oneshot(3).await.unwrap_err();
    bulkhead_full(&err);
    assert_eq!(layer.handle().in_flight(), 2);
    assert_eq!(b.handle().rejected(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_full_limiter_stays_ready_and_fails_in_the_call() {
    let probe = Probe::new(Answer::Gated);
    let (mut svc, _) = aimd(1, 1, 1, &probe);
    let _held = start(&mut svc, 1).await;
    probe.set_readiness(Readiness::Pending);
    let polls = probe.ready_polls();
    let mut other = svc.clone();
    let mut ready = task::spawn(other.ready());
    assert!(ready.poll().is_ready(), "readiness reports Ready when full");
    drop(ready);
    let mut call = task::spawn(other.call(2));
    match call.poll() {
        Poll::Ready(Err(err)) => {
            bulkhead_full(&err);
        }
        other => panic!("expected an immediate BulkheadFull, got {other:?}"),
    }
    assert_eq!(
        probe.ready_polls(),
        polls,
        "the pending inner was not polled"
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_without_readiness_is_an_error_not_a_panic() {
    let probe = Probe::new(Answer::Now);
    let (mut svc, handle) = aimd(1, 1, 1, &probe);
    let err = svc.call(1).await.unwrap_err();
    let ErrorKind::NotReady(e) = ErrorKind::of(&err) else {
        panic!("expected NotReady, got {err}");
    };
    assert_eq!((e.layer(), e.name()), ("adaptive", "db"));
    assert_eq!(
        (probe.calls(), handle.in_flight(), handle.rejected()),
        (0, 0, 0)
    );
    assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap(), 2);
}

/// An ignored outcome frees its slot and is no sample; by default a
/// palisade refusal from below is ignored.
#[tokio::test(start_paused = true)]
async fn ignored_outcomes_are_not_samples() {
    let probe = Probe::new(Answer::Fail);
    // At 2, a drop would make 1 and a healthy sample 3.
    let layer = AdaptiveLayer::aimd()
        .limits(2, 1, 20)
        .classifier(|_: &Result<u64, BoxError>| Outcome::Ignored)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(probe.clone());
    svc.clone().oneshot(1).await.unwrap_err();
    probe.set_answer(Answer::Now);
    svc.oneshot(2).await.unwrap();
    assert_eq!((handle.in_flight(), handle.limit()), (0, 2));

    // A full bulkhead below: the call never reached the dependency.
    let outer = AdaptiveLayer::aimd().limits(10, 1, 20).build().unwrap();
    let below = palisade::adaptive::AdaptiveLayer::aimd()
        .limits(1, 1, 1)
        .build()
        .unwrap();
    let gated = Probe::new(Answer::Gated);
    let svc = ServiceBuilder::new()
        .layer(outer.clone())
        .layer(below)
        .service(gated.clone());
    let held = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    bulkhead_full(&svc.clone().oneshot(2).await.unwrap_err());
    assert_eq!(outer.handle().limit(), 10, "a refusal below is no sample");
    gated.release(1);
    held.await.unwrap().unwrap();
}

/// A palisade timeout below the limiter answers `Elapsed`: a drop. Latency
/// is read on tokio's clock, from `call` to the answer.
#[tokio::test(start_paused = true)]
async fn a_timeout_below_is_a_drop_and_slow_calls_count_as_drops() {
    let probe = Probe::new(Answer::After(Duration::from_secs(1)));
    let layer = AdaptiveLayer::aimd()
        .limits(10, 1, 20)
        .slow_after(ms(100))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .layer(TimeoutLayer::new(ms(50)).unwrap())
        .service(probe.clone());
    let err = svc.clone().oneshot(1).await.unwrap_err();
    assert!(matches!(ErrorKind::of(&err), ErrorKind::Elapsed(_)));
    assert_eq!(handle.limit(), 9, "10 × 0.9");

    // Without the timeout: 100 ms is not slow, 101 ms is.
    let layer = AdaptiveLayer::aimd()
        .limits(1, 1, 20)
        .slow_after(ms(100))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(probe.clone());
    probe.set_answer(Answer::After(ms(100)));
    svc.clone().oneshot(1).await.unwrap();
    assert_eq!(handle.limit(), 2, "a healthy sample from a busy limiter");
    probe.set_answer(Answer::After(ms(101)));
    let start = Instant::now();
    svc.oneshot(2).await.unwrap();
    assert_eq!(start.elapsed(), ms(101));
    assert_eq!(handle.limit(), 1, "a slow one: 2 × 0.9 = 1.8");
}

/// AC-3: a limit that falls below the calls in flight cuts none of them
/// short; new calls are refused until fewer than the new limit remain.
#[tokio::test(start_paused = true)]
async fn a_falling_limit_lets_running_calls_finish_and_admits_none_meanwhile() {
    let probe = Probe::new(Answer::Gated);
    let layer = AdaptiveLayer::aimd()
        .limits(10, 1, 10)
        .backoff_factor(0.5)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(probe.clone());
    let mut running = Vec::new();
    for i in 0..9 {
        running.push(start(&mut svc, i).await);
    }
    // The tenth fails at once: a drop, 10 × 0.5 = 5, with 9 still running.
    probe.set_answer(Answer::Fail);
    svc.ready().await.unwrap().call(9).await.unwrap_err();
    assert_eq!((handle.limit(), handle.in_flight()), (5, 9));
    probe.set_answer(Answer::Now);
    bulkhead_full(&svc.ready().await.unwrap().call(10).await.unwrap_err());

    // Two finish; they were admitted with 1 and 2 in flight, not busy
    // enough to grow the limit: 7 in flight, still over it.
    probe.release(2);
    for (i, call) in running.iter_mut().take(2).enumerate() {
        assert_eq!(answered(call.poll()), i as u64);
    }
    assert_eq!((handle.limit(), handle.in_flight()), (5, 7));
    bulkhead_full(&svc.ready().await.unwrap().call(11).await.unwrap_err());

    // Two more, admitted with 3 and 4 in flight (busy): the limit grows to
    // 7 with 5 in flight, and calls are admitted again.
    probe.release(2);
    for (i, call) in running.iter_mut().enumerate().skip(2).take(2) {
        assert_eq!(answered(call.poll()), i as u64);
    }
    assert_eq!((handle.limit(), handle.in_flight()), (7, 5));
    assert_eq!(svc.ready().await.unwrap().call(12).await.unwrap(), 12);
    probe.release(5);
    for call in running.iter_mut().skip(4) {
        answered(call.poll());
    }
    assert_eq!(handle.in_flight(), 0);
    assert_eq!(
        probe.max_in_flight(),
        10,
        "never above the limit at admission"
    );
    assert_eq!(handle.rejected(), 2);
}

/// AC-2 (d): a minute without calls leaves the limit where it was.
#[tokio::test(start_paused = true)]
async fn no_calls_for_a_minute_leave_the_limit_alone() {
    let layer = AdaptiveLayer::gradient()
        .limits(100, 20, 200)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|n: u64| async move {
        sleep(ms(10)).await;
        Ok::<_, BoxError>(n)
    }));
    let before = handle.limit();
    sleep(Duration::from_secs(60)).await;
    assert_eq!(handle.limit(), before);
    // The first call after the pause is one sample like any other (one
    // call in flight out of 100: too idle to move the limit).
    svc.oneshot(1).await.unwrap();
    assert_eq!(handle.limit(), before);
}

/// The observed limit over a scripted run, read every 10 ms.
#[derive(Debug, Default)]
struct Trace {
    /// At the end of the first normal phase.
    before: usize,
    /// Lowest during the bad phase.
    lowest_in_bad_phase: usize,
    /// At the end of the recovery.
    after: usize,
    /// Highest and lowest over the whole run.
    range: (usize, usize),
}

/// `callers` tasks call `svc` in a loop (backing off 1 ms after a refusal
/// or an error) through three phases: normal, bad (`bad` set), normal
/// again. Afterwards every task is cancelled and no slot may be left.
async fn scripted_run<S>(
    svc: S,
    handle: &Handle,
    callers: usize,
    bad: &AtomicBool,
    phases: [Duration; 3],
) -> Trace
where
    S: Service<u64, Response = u64, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let tasks: Vec<_> = (0..callers as u64)
        .map(|n| {
            let mut svc = svc.clone();
            tokio::spawn(async move {
                loop {
                    let answer = async { svc.ready().await?.call(n).await }.await;
                    if answer.is_err() {
                        sleep(ms(1)).await;
                    }
                }
            })
        })
        .collect();
    let mut trace = Trace {
        range: (usize::MAX, 0),
        lowest_in_bad_phase: usize::MAX,
        ..Trace::default()
    };
    for (phase, length) in phases.into_iter().enumerate() {
        bad.store(phase == 1, Ordering::SeqCst);
        let end = Instant::now() + length;
        while Instant::now() < end {
            sleep(ms(10)).await;
            let limit = handle.limit();
            trace.range = (trace.range.0.min(limit), trace.range.1.max(limit));
            if phase == 1 {
                trace.lowest_in_bad_phase = trace.lowest_in_bad_phase.min(limit);
            }
        }
        match phase {
            0 => trace.before = handle.limit(),
            2 => trace.after = handle.limit(),
            _ => {}
        }
    }
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    assert_eq!(
        handle.in_flight(),
        0,
        "cancelled calls gave their slots back"
    );
    trace
}

/// AC-2, the scripted run: latency triples (10 ms to 30 ms) for 30 s with
/// more callers (80) than the limit allows (at most 50), then returns to
/// normal. The limit falls during the slow phase and is back at its
/// maximum after it, never outside its bounds.
#[tokio::test(start_paused = true)]
async fn gradient_falls_when_latency_rises_and_rises_when_it_recovers() {
    let slow = Arc::new(AtomicBool::new(false));
    let layer = AdaptiveLayer::gradient()
        .limits(20, 10, 50)
        .build()
        .unwrap();
    let handle = layer.handle();
    let latency = slow.clone();
    let svc = layer.layer(service_fn(move |n: u64| {
        let took = if latency.load(Ordering::SeqCst) {
            30
        } else {
            10
        };
        async move {
            sleep(ms(took)).await;
            Ok::<_, BoxError>(n)
        }
    }));
    let phases = [2, 30, 5].map(Duration::from_secs);
    let trace = scripted_run(svc, &handle, 80, &slow, phases).await;
    assert_eq!(trace.before, 50, "{trace:?}");
    assert!(trace.lowest_in_bad_phase <= 25, "{trace:?}");
    assert_eq!(trace.after, 50, "{trace:?}");
    assert!(trace.range.0 >= 10 && trace.range.1 <= 50, "{trace:?}");
}

/// AC-1's shape on the layer: a dependency that fails the calls beyond 15
/// at once (fast, as an overloaded server answers 503) makes AIMD cut the
/// limit toward its capacity; when it recovers the limit climbs back.
#[tokio::test(start_paused = true)]
async fn aimd_falls_on_drops_and_rises_when_they_stop() {
    let overloaded = Arc::new(AtomicBool::new(false));
    let layer = AdaptiveLayer::aimd().limits(20, 5, 50).build().unwrap();
    let handle = layer.handle();
    let busy = Arc::new(AtomicUsize::new(0));
    let (bad, in_service) = (overloaded.clone(), busy.clone());
    let svc = layer.layer(service_fn(move |n: u64| {
        let (bad, in_service) = (bad.clone(), in_service.clone());
        async move {
            let now = in_service.fetch_add(1, Ordering::SeqCst) + 1;
            let refuse = bad.load(Ordering::SeqCst) && now > 15;
            if !refuse {
                sleep(ms(10)).await;
            }
            in_service.fetch_sub(1, Ordering::SeqCst);
            if refuse {
                Err::<u64, BoxError>("overloaded".into())
            } else {
                Ok(n)
            }
        }
    }));
    let phases = [2, 10, 5].map(Duration::from_secs);
    let trace = scripted_run(svc, &handle, 80, &overloaded, phases).await;
    assert_eq!(trace.before, 50, "{trace:?}");
    assert!(trace.lowest_in_bad_phase <= 20, "{trace:?}");
    assert_eq!(trace.after, 50, "{trace:?}");
    assert!(trace.range.0 >= 5 && trace.range.1 <= 50, "{trace:?}");
}

#[test]
fn nonsense_configuration_is_a_config_error() {
    let field = |builder: Result<AdaptiveLayer, palisade::ConfigError>| {
        let err = builder.unwrap_err();
        assert_eq!(err.layer(), "adaptive");
        err.field()
    };
    assert_eq!(
        field(AdaptiveLayer::aimd().limits(1, 0, 10).build()),
        "min_limit"
    );
    assert_eq!(
        field(AdaptiveLayer::aimd().limits(5, 5, 4).build()),
        "max_limit"
    );
    assert_eq!(
        field(AdaptiveLayer::gradient().max_limit(usize::MAX).build()),
        "max_limit"
    );
    assert_eq!(
        field(AdaptiveLayer::gradient().limits(300, 20, 200).build()),
        "initial_limit"
    );
    // The defaults start at 20: an initial limit below needs a lower minimum.
    let err = AdaptiveLayer::aimd().initial_limit(10).build().unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid adaptive configuration: `initial_limit` must be within min_limit ..= \
         max_limit (20 ..= 200), got 10"
    );
    assert_eq!(
        field(AdaptiveLayer::aimd().backoff_factor(1.0).build()),
        "backoff_factor"
    );
    assert_eq!(
        field(AdaptiveLayer::aimd().slow_after(Duration::ZERO).build()),
        "slow_after"
    );
    assert_eq!(
        field(AdaptiveLayer::gradient().tolerance(0.5).build()),
        "tolerance"
    );
    assert_eq!(
        field(AdaptiveLayer::gradient().long_window(0).build()),
        "long_window"
    );
    assert_eq!(
        field(AdaptiveLayer::gradient().queue_allowance(-1.0).build()),
        "queue_allowance"
    );
    assert_eq!(
        field(AdaptiveLayer::gradient().smoothing(0.0).build()),
        "smoothing"
    );
}

#[test]
fn the_handle_reports_the_configuration() {
    let layer = AdaptiveLayer::gradient()
        .name(String::from("reports"))
        .limits(30, 10, 50)
        .build()
        .unwrap();
    let handle = layer.handle();
    assert_eq!(handle.name(), "reports");
    assert_eq!(
        (handle.limit(), handle.min_limit(), handle.max_limit()),
        (30, 10, 50)
    );
    assert_eq!((handle.in_flight(), handle.rejected()), (0, 0));
    let debug = format!("{handle:?}");
    assert!(
        debug.contains("reports") && debug.contains("limit: 30"),
        "{debug}"
    );
}

#[cfg(feature = "serde")]
#[test]
fn configuration_loads_from_json_and_matches_the_builder() {
    use palisade::adaptive::{AdaptiveBuilder, AdaptiveConfig, Algorithm, GradientConfig};

    let config: AdaptiveConfig = serde_json::from_str(
        r#"{ "name": "db", "max_limit": 100,
             "algorithm": { "gradient": { "smoothing": 0.1 } } }"#,
    )
    .unwrap();
    let built = AdaptiveLayer::gradient()
        .name("db")
        .max_limit(100)
        .smoothing(0.1)
        .config();
    assert_eq!(config, built);
    let layer = AdaptiveBuilder::from_config(config).build().unwrap();
    assert_eq!((layer.handle().name(), layer.handle().limit()), ("db", 20));

    // The form the docs show, in TOML.
    let config: AdaptiveConfig =
        toml::from_str("name = \"db\"\nmax_limit = 100\n\n[algorithm.gradient]\nsmoothing = 0.1\n")
            .unwrap();
    assert_eq!(config, built);

    let config: AdaptiveConfig = serde_json::from_str(
        r#"{ "algorithm": { "aimd": { "backoff_factor": 0.5, "slow_after": "250ms" } } }"#,
    )
    .unwrap();
    assert_eq!(
        config,
        AdaptiveLayer::aimd()
            .backoff_factor(0.5)
            .slow_after(ms(250))
            .config()
    );
    assert_eq!(
        AdaptiveConfig::new(GradientConfig::default()).algorithm,
        Algorithm::Gradient(GradientConfig::default())
    );

    // The algorithm is required; unknown fields and bad values are refused.
    assert!(serde_json::from_str::<AdaptiveConfig>(r#"{ "max_limit": 100 }"#).is_err());
    assert!(serde_json::from_str::<AdaptiveConfig>(r#"{ "algorithm": { "vegas": {} } }"#).is_err());
    assert!(
        serde_json::from_str::<AdaptiveConfig>(
            r#"{ "algorithm": { "aimd": { "backoff": 0.5 } } }"#
        )
        .is_err()
    );
    let config: AdaptiveConfig =
        serde_json::from_str(r#"{ "algorithm": { "aimd": { "backoff_factor": 2.0 } } }"#).unwrap();
    assert_eq!(
        AdaptiveLayer::from_config(config).unwrap_err().field(),
        "backoff_factor"
    );
}
