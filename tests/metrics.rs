//! The `metrics` feature, read through a recorder after each step of a
//! scripted sequence.

#[path = "support/recorder.rs"]
mod recorder;
#[path = "support/traced.rs"]
mod traced;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use palisade::BoxError;
use palisade::circuit_breaker::{CircuitBreakerLayer, Handle, State};
use recorder::Recorded;
use tower::{Layer, Service, ServiceExt, service_fn};

const STATES: [&str; 6] = [
    "closed",
    "open",
    "half_open",
    "forced_open",
    "disabled",
    "metrics_only",
];

/// Exactly one state series is 1, the handle's, and every other is 0.
fn one_state(recorded: &Recorded, handle: &Handle) {
    let values: Vec<(&str, f64)> = STATES
        .iter()
        .map(|state| {
            let series =
                format!("palisade_circuit_breaker_state{{name=\"products\",state=\"{state}\"}}");
            (*state, recorded.gauge(&series))
        })
        .collect();
    let current = handle.state().to_string();
    for (state, value) in values.iter().copied() {
        let expected = if state == current { 1.0 } else { 0.0 };
        assert_eq!(value, expected, "{state} in {values:?}, current {current}");
    }
}

fn transitions(recorded: &Recorded, from: &str, to: &str) -> u64 {
    recorded.counter(&format!(
        "palisade_circuit_breaker_transitions_total{{from=\"{from}\",name=\"products\",to=\"{to}\"}}"
    ))
}

fn calls(recorded: &Recorded, outcome: &str) -> u64 {
    recorded.counter(&format!(
        "palisade_circuit_breaker_calls_total{{name=\"products\",outcome=\"{outcome}\"}}"
    ))
}

/// One call through `svc`.
async fn call<S>(svc: &mut S) -> Result<u32, BoxError>
where
    S: Service<u32, Response = u32, Error = BoxError>,
{
    svc.ready().await?.call(1).await
}

/// Scenario MT-1: a breaker named "products" shows exactly one state at 1
/// at every step (built, opened, half-open, reopened, half-open, closed,
/// forced open, disabled, reset), counts each transition once with its
/// from and to, and counts calls by outcome as they were made.
#[tokio::test(start_paused = true)]
async fn the_state_gauge_shows_exactly_one_state_at_every_step() {
    let recorded = Recorded::default();
    let layer = metrics::with_local_recorder(&recorded, || {
        CircuitBreakerLayer::builder()
            .name("products")
            .consecutive_failures(2)
            .open_for(Duration::from_secs(1))
            .half_open_probes(1)
            .build()
            .unwrap()
    });
    let handle = layer.handle();
    let failing = Arc::new(AtomicBool::new(true));
    let fails = failing.clone();
    let mut svc = layer.layer(service_fn(move |n: u32| {
        let fail = fails.load(Ordering::SeqCst);
        async move {
            if fail {
                Err::<u32, BoxError>("down".into())
            } else {
                Ok(n)
            }
        }
    }));
    one_state(&recorded, &handle);

    // Two failures in a row open it; the next call is refused.
    for _ in 0..2 {
        call(&mut svc).await.unwrap_err();
    }
    assert_eq!(handle.state(), State::Open);
    one_state(&recorded, &handle);
    call(&mut svc).await.unwrap_err();

    // Its probe fails: open again.
    tokio::time::advance(Duration::from_secs(1)).await;
    call(&mut svc).await.unwrap_err();
    assert_eq!(handle.state(), State::Open);
    one_state(&recorded, &handle);

    // Its probe succeeds: closed.
    tokio::time::advance(Duration::from_secs(1)).await;
    failing.store(false, Ordering::SeqCst);
    call(&mut svc).await.unwrap();
    assert_eq!(handle.state(), State::Closed);
    one_state(&recorded, &handle);

    for step in [Handle::force_open, Handle::disable] {
        assert!(step(&handle));
        one_state(&recorded, &handle);
    }
    handle.reset();
    assert_eq!(handle.state(), State::Closed);
    one_state(&recorded, &handle);

    for (from, to, times) in [
        ("closed", "open", 1),
        ("open", "half_open", 2),
        ("half_open", "open", 1),
        ("half_open", "closed", 1),
        ("closed", "forced_open", 1),
        ("forced_open", "disabled", 1),
        ("disabled", "closed", 1),
        ("open", "closed", 0),
    ] {
        assert_eq!(transitions(&recorded, from, to), times, "{from} -> {to}");
    }
    assert_eq!(calls(&recorded, "failure"), 3, "two, then a failed probe");
    assert_eq!(calls(&recorded, "success"), 1);
    assert_eq!(calls(&recorded, "not_permitted"), 1);
    assert_eq!(calls(&recorded, "ignored"), 0);
    // No series carries anything but the layer's name and the documented
    // labels.
    for (series, _) in recorded.named("palisade_circuit_breaker_calls_total") {
        assert!(series.contains("name=\"products\""), "{series}");
    }
}

/// The bulkhead's slots in use go up while a call holds one and back down
/// when it ends (or is dropped), and each refusal is counted.
#[tokio::test(start_paused = true)]
async fn the_bulkhead_shows_its_slots_in_use_and_counts_refusals() {
    let recorded = Recorded::default();
    let layer = metrics::with_local_recorder(&recorded, || {
        palisade::bulkhead::BulkheadLayer::builder()
            .name("db")
            .max_concurrent(1)
            .build()
            .unwrap()
    });
    let in_use = || recorded.gauge("palisade_bulkhead_in_use{name=\"db\"}");
    let rejected = || recorded.counter("palisade_bulkhead_rejected_total{name=\"db\"}");
    let svc = layer.layer(service_fn(|n: u32| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, BoxError>(n)
    }));
    assert_eq!(in_use(), 0.0);
    let held = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    assert_eq!(in_use(), 1.0);
    svc.clone().oneshot(2).await.unwrap_err();
    assert_eq!(rejected(), 1);
    held.await.unwrap().unwrap();
    assert_eq!(in_use(), 0.0);
    // A call dropped mid-way gives its slot back, and the gauge follows.
    let dropped = tokio::spawn(svc.clone().oneshot(3));
    tokio::task::yield_now().await;
    assert_eq!(in_use(), 1.0);
    dropped.abort();
    let _ = dropped.await;
    assert_eq!(in_use(), 0.0);
}

/// The adaptive limit shows the limit in force (from the moment it is
/// built), the calls in flight, and its refusals, each also a DEBUG event
/// with the layer's name.
#[cfg(feature = "adaptive")]
#[tokio::test(start_paused = true)]
async fn the_adaptive_limit_shows_its_limit_calls_in_flight_and_refusals() {
    let tracer = traced::Tracer::default();
    let _subscriber = tracer.install();
    let recorded = Recorded::default();
    let layer = metrics::with_local_recorder(&recorded, || {
        palisade::adaptive::AdaptiveLayer::aimd()
            .name("db")
            .limits(1, 1, 10)
            .build()
            .unwrap()
    });
    let limit = || recorded.gauge("palisade_adaptive_limit{name=\"db\"}");
    let in_flight = || recorded.gauge("palisade_adaptive_in_flight{name=\"db\"}");
    let rejected = || recorded.counter("palisade_adaptive_rejected_total{name=\"db\"}");
    let svc = layer.layer(service_fn(|n: u32| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, BoxError>(n)
    }));
    assert_eq!((limit(), in_flight()), (1.0, 0.0));
    let held = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    assert_eq!(in_flight(), 1.0);
    svc.clone().oneshot(2).await.unwrap_err();
    assert_eq!(rejected(), 1);
    let events = tracer.events("palisade::adaptive");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].level, tracing::Level::DEBUG);
    assert_eq!(events[0].field("name"), Some("db"));
    held.await.unwrap().unwrap();
    // A healthy call with every slot busy: one more slot.
    assert_eq!((limit(), in_flight()), (2.0, 0.0));
    // A call dropped mid-way gives its slot back, and the gauge follows.
    let dropped = tokio::spawn(svc.clone().oneshot(3));
    tokio::task::yield_now().await;
    assert_eq!(in_flight(), 1.0);
    dropped.abort();
    let _ = dropped.await;
    assert_eq!((limit(), in_flight()), (2.0, 0.0));
}

/// Refusals are counted under the limiter's name, a keyed limiter's for
/// every key together (no series per key); an unkeyed limiter shows the
/// permits left after each decision.
#[tokio::test(start_paused = true)]
async fn rate_limit_refusals_are_counted_under_the_name_only() {
    let recorded = Recorded::default();
    let (one, keyed) = metrics::with_local_recorder(&recorded, || {
        let window = Duration::from_secs(60);
        let one = palisade::rate_limit::RateLimitLayer::sliding_window(2, window)
            .name("api")
            .build()
            .unwrap();
        let keyed = palisade::rate_limit::RateLimitLayer::sliding_window(1, window)
            .name("per-client")
            .keyed(|n: &u32| *n)
            .build()
            .unwrap();
        (one, keyed)
    });
    let echo = || service_fn(|n: u32| async move { Ok::<_, BoxError>(n) });
    let one = one.layer(echo());
    let keyed = keyed.layer(echo());
    let remaining = || recorded.gauge("palisade_rate_limit_remaining{name=\"api\"}");
    let mut left = Vec::new();
    for n in 0..4 {
        let _ = one.clone().oneshot(n).await;
        left.push(remaining());
        let _ = keyed.clone().oneshot(n % 2).await;
    }
    // The remaining permits after each decision, refusals included.
    assert_eq!(left, [1.0, 0.0, 0.0, 0.0]);
    assert_eq!(recorded.named("palisade_rate_limit_remaining").len(), 1);
    assert_eq!(
        recorded.counter("palisade_rate_limit_refused_total{name=\"api\"}"),
        2
    );
    assert_eq!(
        recorded.counter("palisade_rate_limit_refused_total{name=\"per-client\"}"),
        2
    );
    assert_eq!(recorded.named("palisade_rate_limit_refused_total").len(), 2);
}

/// Retry counts each request's end by outcome, each retry, and each retry
/// its budget refused.
#[tokio::test(start_paused = true)]
async fn retry_counts_requests_retries_and_budget_refusals() {
    use palisade::retry::{Backoff, RetryBudget, RetryLayer};
    let recorded = Recorded::default();
    let layer = metrics::with_local_recorder(&recorded, || {
        RetryLayer::builder()
            .name("orders")
            .max_attempts(2)
            .backoff(Backoff::constant(Duration::from_millis(10)))
            // Room for one retry, then none.
            .budget(RetryBudget::tokens(3, 0.001))
            .build()
            .unwrap()
    });
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = calls.clone();
    // Odd calls fail, even ones succeed.
    let svc = layer.layer(service_fn(move |n: u32| {
        let call = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            if call.is_multiple_of(2) {
                Err::<u32, BoxError>("flaky".into())
            } else {
                Ok(n)
            }
        }
    }));
    svc.clone().oneshot(1).await.unwrap(); // fails, retried, succeeds
    svc.clone().oneshot(2).await.unwrap_err(); // fails; the budget is spent
    let requests = |outcome: &str| {
        recorded.counter(&format!(
            "palisade_retry_requests_total{{name=\"orders\",outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!(requests("succeeded_after_retry"), 1);
    assert_eq!(requests("failed_without_retry"), 1);
    assert_eq!(requests("succeeded_without_retry"), 0);
    assert_eq!(
        recorded.counter("palisade_retry_retries_total{name=\"orders\"}"),
        1
    );
    assert_eq!(
        recorded.counter("palisade_retry_budget_refusals_total{name=\"orders\"}"),
        1
    );
}

/// Scenario MT-3: each attempt is reported once, as an event and in the
/// attempt-duration histogram, with its number (from 0), whether the layer
/// handled its outcome, and a level that says what it means: (a) a first
/// attempt that succeeds is not handled, at DEBUG; (b) a handled failure
/// that is retried is a WARN, the retry that succeeds a DEBUG, and one retry
/// event comes between; (c) a handled failure with no attempt left is an
/// ERROR. Each attempt takes 1 s, recorded in seconds; the `error` label is
/// there only for errors.
#[tokio::test(start_paused = true)]
async fn every_attempt_is_reported_once_with_number_handled_and_level() {
    use palisade::retry::{Backoff, RetryBudget, RetryLayer};
    use tracing::Level;

    let recorded = Recorded::default();
    let _recorder = metrics::set_default_local_recorder(&recorded);
    let tracer = traced::Tracer::default();
    let _subscriber = tracer.install();
    let layer = RetryLayer::builder()
        .name("orders")
        .max_attempts(2)
        .backoff(Backoff::constant(Duration::ZERO))
        .budget(RetryBudget::unlimited())
        .build()
        .unwrap();
    // Each attempt takes 1 s; the request says which attempts fail.
    let attempt = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = attempt.clone();
    let svc = layer.layer(service_fn(move |fails: u32| {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if n < fails {
                Err::<u32, BoxError>("down".into())
            } else {
                Ok(n)
            }
        }
    }));
    let attempts = || -> Vec<(Level, String, String, Option<String>)> {
        tracer
            .events("palisade::retry")
            .into_iter()
            .filter(|e| e.field("attempt").is_some())
            .map(|e| {
                let field = |name| e.field(name).unwrap().to_owned();
                (
                    e.level,
                    field("attempt"),
                    field("handled"),
                    e.field("error").map(str::to_owned),
                )
            })
            .collect()
    };
    let retries = || {
        tracer
            .events("palisade::retry")
            .iter()
            .filter(|e| e.field("message") == Some("retrying"))
            .count()
    };
    let expect = |level, attempt: &str, handled: &str, error: Option<&str>| {
        (
            level,
            attempt.to_owned(),
            handled.to_owned(),
            error.map(str::to_owned),
        )
    };

    // (a) The first attempt succeeds.
    attempt.store(0, Ordering::SeqCst);
    svc.clone().oneshot(0).await.unwrap();
    assert_eq!(attempts(), [expect(Level::DEBUG, "0", "false", None)]);
    assert_eq!(retries(), 0);

    // (b) The first fails, the retry succeeds.
    attempt.store(0, Ordering::SeqCst);
    svc.clone().oneshot(1).await.unwrap();
    assert_eq!(
        attempts()[1..],
        [
            expect(Level::WARN, "0", "true", Some("other")),
            expect(Level::DEBUG, "1", "false", None),
        ]
    );
    assert_eq!(retries(), 1);

    // (c) Both fail: the last is an error.
    attempt.store(0, Ordering::SeqCst);
    svc.clone().oneshot(2).await.unwrap_err();
    assert_eq!(
        attempts()[3..],
        [
            expect(Level::WARN, "0", "true", Some("other")),
            expect(Level::ERROR, "1", "true", Some("other")),
        ]
    );
    assert_eq!(retries(), 2);

    let histogram = |labels: &str| {
        recorded.histogram(&format!(
            "palisade_retry_attempt_duration_seconds{{{labels},name=\"orders\"}}"
        ))
    };
    assert_eq!(histogram("attempt=\"0\",handled=\"false\""), [1.0]);
    assert_eq!(histogram("attempt=\"1\",handled=\"false\""), [1.0]);
    assert_eq!(
        histogram("attempt=\"0\",error=\"other\",handled=\"true\""),
        [1.0, 1.0]
    );
    assert_eq!(
        histogram("attempt=\"1\",error=\"other\",handled=\"true\""),
        [1.0]
    );
    let series = recorded.histograms_named("palisade_retry_attempt_duration_seconds");
    assert_eq!(series.len(), 4, "{series:?}");
}

/// Scenario MT-2: a breaker open for 5 s, scraped every 15 s with no call
/// for a minute, shows half-open from the first scrape on (what the next
/// call would meet), the handle agrees, and the move to half-open is
/// counted once, before and after a call arrives.
#[tokio::test(start_paused = true)]
async fn a_scrape_shows_what_the_next_call_would_meet() {
    let recorded = Recorded::default();
    let layer = metrics::with_local_recorder(&recorded, || {
        CircuitBreakerLayer::builder()
            .name("products")
            .consecutive_failures(1)
            .open_for(Duration::from_secs(5))
            .half_open_probes(1)
            .build()
            .unwrap()
    });
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|_: u32| async {
        Err::<u32, BoxError>("down".into())
    }));
    call(&mut svc).await.unwrap_err();
    assert_eq!(handle.state(), State::Open);
    one_state(&recorded, &handle);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(15)).await;
        assert_eq!(handle.state(), State::HalfOpen);
        one_state(&recorded, &handle);
        assert_eq!(transitions(&recorded, "open", "half_open"), 1);
    }
    call(&mut svc).await.unwrap_err(); // the probe fails
    assert_eq!(transitions(&recorded, "open", "half_open"), 1);
    assert_eq!(transitions(&recorded, "half_open", "open"), 1);
}

/// The throttle counts its refusals, as its handle does.
#[tokio::test(start_paused = true)]
async fn the_throttle_counts_its_refusals() {
    let recorded = Recorded::default();
    let layer = metrics::with_local_recorder(&recorded, || {
        palisade::throttle::ThrottleLayer::builder()
            .name("search")
            .min_requests(0)
            .seed(7)
            .build()
            .unwrap()
    });
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|_: u32| async {
        Err::<u32, BoxError>("overloaded".into())
    }));
    for n in 0..100 {
        let _ = svc.clone().oneshot(n).await;
    }
    let refused = recorded.counter("palisade_throttle_refused_total{name=\"search\"}");
    assert!(refused > 0);
    assert_eq!(refused, handle.rejected());
}

/// Callers queued for a bulkhead slot show in `waiting` until they leave
/// the queue (served, timed out or dropped), and each wait that ends with
/// a slot or with `max_wait` run out goes into the wait histogram, in
/// seconds.
#[tokio::test(start_paused = true)]
async fn the_bulkhead_shows_its_waiters_and_their_waits() {
    let recorded = Recorded::default();
    let layer = metrics::with_local_recorder(&recorded, || {
        palisade::bulkhead::BulkheadLayer::builder()
            .name("db")
            .max_concurrent(1)
            .max_wait(Duration::from_secs(3))
            .build()
            .unwrap()
    });
    let waiting = || recorded.gauge("palisade_bulkhead_waiting{name=\"db\"}");
    let waits = || recorded.histogram("palisade_bulkhead_wait_duration_seconds{name=\"db\"}");
    // Each call holds its slot for as many seconds as it asks.
    let svc = layer.layer(service_fn(|secs: u64| async move {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        Ok::<_, BoxError>(secs)
    }));
    let held = tokio::spawn(svc.clone().oneshot(2));
    tokio::task::yield_now().await;
    let served = tokio::spawn(svc.clone().oneshot(10));
    tokio::task::yield_now().await;
    assert_eq!(waiting(), 1.0);
    held.await.unwrap().unwrap();
    tokio::task::yield_now().await;
    assert_eq!(waiting(), 0.0);
    assert_eq!(waits(), [2.0]); // served when the first call ended
    // One waits its 3 s out behind the second; another is dropped while
    // queued: it leaves the gauge, not the histogram.
    let timed_out = tokio::spawn(svc.clone().oneshot(0));
    let dropped = tokio::spawn(svc.clone().oneshot(0));
    tokio::task::yield_now().await;
    assert_eq!(waiting(), 2.0);
    dropped.abort();
    let _ = dropped.await;
    assert_eq!(waiting(), 1.0);
    timed_out.await.unwrap().unwrap_err();
    assert_eq!(waiting(), 0.0);
    served.await.unwrap().unwrap();
    assert_eq!(waits(), [2.0, 3.0]);
}

/// Every call a timeout layer fails because time ran out is counted: the
/// timer firing, and a request whose deadline had passed before it was
/// sent; a call that answers in time is not.
#[tokio::test(start_paused = true)]
async fn the_timeout_counts_the_calls_it_failed() {
    use palisade::deadline::{Deadline, DeadlineSlot};
    use palisade::timeout::TimeoutLayer;

    /// Requests of (seconds to answer in, deadline carried).
    #[derive(Clone)]
    struct Carried;
    impl DeadlineSlot<(u64, Option<Deadline>)> for Carried {
        fn deadline(&self, request: &(u64, Option<Deadline>)) -> Option<Deadline> {
            request.1
        }
        fn set_deadline(&self, request: &mut (u64, Option<Deadline>), deadline: Deadline) {
            request.1 = Some(deadline);
        }
    }

    let recorded = Recorded::default();
    let layer = metrics::with_local_recorder(&recorded, || {
        TimeoutLayer::builder()
            .name("db")
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap()
            .deadline_slot(Carried)
    });
    let elapsed = || recorded.counter("palisade_timeout_elapsed_total{name=\"db\"}");
    let svc = layer.layer(service_fn(
        |(secs, _): (u64, Option<Deadline>)| async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            Ok::<_, BoxError>(secs)
        },
    ));
    svc.clone().oneshot((0, None)).await.unwrap();
    assert_eq!(elapsed(), 0);
    svc.clone().oneshot((5, None)).await.unwrap_err();
    assert_eq!(elapsed(), 1);
    let passed = Deadline::after(Duration::ZERO);
    svc.clone().oneshot((0, Some(passed))).await.unwrap_err();
    assert_eq!(elapsed(), 2);
}

/// A breaker that times its calls (it detects slow ones) puts each call's
/// duration into `palisade_circuit_breaker_call_duration_seconds` by
/// outcome; one that does not time them reads no clock for it and records
/// nothing.
#[tokio::test(start_paused = true)]
async fn a_breaker_that_times_calls_records_their_durations() {
    let recorded = Recorded::default();
    let (timed, untimed) = metrics::with_local_recorder(&recorded, || {
        let timed = CircuitBreakerLayer::builder()
            .name("timed")
            .slow_calls(Duration::from_secs(10), 0.5)
            .build()
            .unwrap();
        let untimed = CircuitBreakerLayer::builder()
            .name("untimed")
            .build()
            .unwrap();
        (timed, untimed)
    });
    // Sleeps n seconds; fails when n is odd.
    let sleepy = || {
        service_fn(|n: u64| async move {
            tokio::time::sleep(Duration::from_secs(n)).await;
            if n % 2 == 1 {
                Err::<u64, BoxError>("odd".into())
            } else {
                Ok(n)
            }
        })
    };
    let timed = timed.layer(sleepy());
    let untimed = untimed.layer(sleepy());
    for n in [2, 3, 4] {
        let _ = timed.clone().oneshot(n).await;
        let _ = untimed.clone().oneshot(n).await;
    }
    let durations = |name: &str, outcome: &str| {
        recorded.histogram(&format!(
            "palisade_circuit_breaker_call_duration_seconds{{name=\"{name}\",outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!(durations("timed", "success"), [2.0, 4.0]);
    assert_eq!(durations("timed", "failure"), [3.0]);
    assert!(durations("untimed", "success").is_empty());
    assert!(durations("untimed", "failure").is_empty());
}

/// Every refusal is a DEBUG event naming the layer that refused (and never
/// a key): an open breaker's, a rate limiter's, a throttle's.
#[tokio::test(start_paused = true)]
async fn every_refusal_is_a_debug_event_with_the_layer_name() {
    use palisade::rate_limit::RateLimitLayer;
    use palisade::throttle::ThrottleLayer;
    use tracing::Level;

    let tracer = traced::Tracer::default();
    let _subscriber = tracer.install();
    let failing = || service_fn(|_: u32| async { Err::<u32, BoxError>("down".into()) });
    let breaker = CircuitBreakerLayer::builder()
        .name("products")
        .count_window(2)
        .minimum_calls(2)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let breaker = breaker.layer(failing());
    while handle.state() != State::Open {
        let _ = breaker.clone().oneshot(1).await;
    }
    breaker.clone().oneshot(1).await.unwrap_err();
    let limiter = RateLimitLayer::gcra(1, Duration::from_secs(60))
        .name("api")
        .keyed(|_: &u32| "secret-key")
        .build()
        .unwrap()
        .layer(failing());
    let _ = limiter.clone().oneshot(1).await;
    limiter.clone().oneshot(1).await.unwrap_err();
    let throttle = ThrottleLayer::builder()
        .name("search")
        .min_requests(0)
        .seed(7)
        .build()
        .unwrap()
        .layer(failing());
    for n in 0..100 {
        let _ = throttle.clone().oneshot(n).await;
    }

    let refusals = |target: &str, message: &str| -> Vec<(Level, String)> {
        tracer
            .events(target)
            .into_iter()
            .filter(|e| e.field("message") == Some(message))
            .map(|e| (e.level, format!("{:?}", e.fields)))
            .collect()
    };
    let breaker = refusals("palisade::circuit_breaker", "call not permitted");
    assert_eq!(breaker.len(), 1, "{breaker:?}");
    assert_eq!(breaker[0].0, Level::DEBUG);
    assert!(breaker[0].1.contains("products"));
    let limited = refusals("palisade::rate_limit", "call rate limited");
    assert_eq!(limited.len(), 1, "{limited:?}");
    assert_eq!(limited[0].0, Level::DEBUG);
    assert!(limited[0].1.contains("api") && !limited[0].1.contains("secret"));
    let throttled = refusals("palisade::throttle", "call throttled");
    assert!(!throttled.is_empty());
    assert!(
        throttled
            .iter()
            .all(|(level, fields)| *level == Level::DEBUG && fields.contains("search"))
    );
}

/// The fallback counts the answers it served by reason, the answers that
/// failed, and its cache's hits, misses and expired entries, as its
/// handle does.
#[cfg(feature = "fallback")]
#[tokio::test(start_paused = true)]
async fn the_fallback_counts_answers_by_reason_and_cache_results() {
    use palisade::fallback::{FallbackLayer, Reason, Unmarked};

    let recorded = Recorded::default();
    let layer = metrics::with_local_recorder(&recorded, || {
        FallbackLayer::builder()
            .name("users")
            .on(Reason::Failure)
            .last_good(|id: &u32| *id)
            .max_age(Duration::from_secs(10))
            .mark(Unmarked)
            .build()
            .unwrap()
    });
    let handle = layer.handle();
    let failing = Arc::new(AtomicBool::new(false));
    let fails = failing.clone();
    let mut svc = layer.layer(service_fn(move |id: u32| {
        let failing = fails.load(Ordering::SeqCst);
        async move {
            if failing {
                Err::<u32, BoxError>("down".into())
            } else {
                Ok(id)
            }
        }
    }));
    let mut call_id = async |id: u32| svc.ready().await?.call(id).await;
    call_id(1).await.unwrap();
    failing.store(true, Ordering::SeqCst);
    call_id(1).await.unwrap(); // hit
    call_id(2).await.unwrap_err(); // miss
    tokio::time::advance(Duration::from_secs(10)).await;
    call_id(1).await.unwrap_err(); // expired

    let cache = |result: &str| {
        recorded.counter(&format!(
            "palisade_fallback_cache_total{{name=\"users\",result=\"{result}\"}}"
        ))
    };
    assert_eq!((cache("hit"), cache("miss"), cache("expired")), (1, 1, 1));
    let served = |reason: &str| {
        recorded.counter(&format!(
            "palisade_fallback_served_total{{name=\"users\",reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(served("failure"), 1);
    assert_eq!(served("circuit_open"), 0);
    assert_eq!(served("failure"), handle.served(Reason::Failure));
    assert_eq!(
        recorded.counter("palisade_fallback_answer_failures_total{name=\"users\"}"),
        0
    );
}

/// The chaos layer counts the faults it injects by kind, as its handle
/// does.
#[cfg(feature = "chaos")]
#[tokio::test(start_paused = true)]
async fn the_chaos_layer_counts_the_faults_it_injects() {
    use palisade::chaos::ChaosLayer;
    let recorded = Recorded::default();
    let layer = metrics::with_local_recorder(&recorded, || {
        ChaosLayer::builder().name("payments").seed(7).build()
    });
    let faults = layer.handle();
    faults.set_error_rate(0.3).unwrap();
    faults.set_latency(0.3, Duration::from_millis(5)).unwrap();
    let svc = layer.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
    for n in 0..200 {
        let _ = svc.clone().oneshot(n).await;
    }
    faults.set_outage(true);
    let _ = svc.clone().oneshot(0).await;
    let injected = |fault: &str| {
        recorded.counter(&format!(
            "palisade_chaos_injected_total{{fault=\"{fault}\",name=\"payments\"}}"
        ))
    };
    assert!(injected("error") > 0 && injected("latency") > 0);
    assert_eq!(injected("error"), faults.failed());
    assert_eq!(injected("latency"), faults.delayed());
}

/// The hedge counts the hedges it sent, those that won, and those its
/// budget refused, as its handle does.
#[cfg(feature = "hedge")]
#[tokio::test(start_paused = true)]
async fn the_hedge_counts_hedges_sent_won_and_refused() {
    use palisade::hedge::HedgeLayer;
    use palisade::retry::RetryBudget;
    let recorded = Recorded::default();
    let (paid, broke) = metrics::with_local_recorder(&recorded, || {
        let layer = |name: &'static str, budget| {
            HedgeLayer::after(Duration::from_millis(10))
                .name(name)
                .budget(budget)
                .build()
                .unwrap()
        };
        (
            layer("paid", RetryBudget::unlimited()),
            layer(
                "broke",
                RetryBudget::windowed(Duration::from_secs(10), 0, 0.0),
            ),
        )
    });
    // With hedges, every first attempt takes 50 ms and every hedge answers
    // at once.
    let slow_then_fast = || {
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        service_fn(move |n: u32| {
            let first = calls.fetch_add(1, Ordering::SeqCst).is_multiple_of(2);
            async move {
                if first {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok::<_, BoxError>(n)
            }
        })
    };
    let (paid_handle, broke_handle) = (paid.handle(), broke.handle());
    let paid = paid.layer(slow_then_fast());
    // Without hedges, every call is a first attempt: all slow.
    let broke = broke.layer(service_fn(|n: u32| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok::<_, BoxError>(n)
    }));
    for n in 0..3 {
        paid.clone().oneshot(n).await.unwrap();
        broke.clone().oneshot(n).await.unwrap();
    }
    let count =
        |series: &str, name: &str| recorded.counter(&format!("{series}{{name=\"{name}\"}}"));
    assert_eq!(count("palisade_hedge_sent_total", "paid"), 3);
    assert_eq!(count("palisade_hedge_won_total", "paid"), 3);
    assert_eq!(count("palisade_hedge_budget_refusals_total", "paid"), 0);
    assert_eq!(count("palisade_hedge_sent_total", "broke"), 0);
    assert_eq!(count("palisade_hedge_budget_refusals_total", "broke"), 3);
    let paid_counts = paid_handle.counts();
    assert_eq!((paid_counts.hedges, paid_counts.won_by_hedge), (3, 3));
    assert_eq!(broke_handle.counts().budget_refusals, 3);
}
