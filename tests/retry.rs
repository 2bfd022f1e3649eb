//! The retry layer, under tokio's paused clock. Scenario ids refer to
//! `SCENARIOS.md`.

#[path = "support/cloned.rs"]
mod cloned;
mod support;
#[path = "support/traced.rs"]
mod traced;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloned::CountsClones;
use palisade::classify::{DefaultClassifier, Outcome, with_retry_after};
use palisade::retry::{Backoff, Jitter, RetryBudget, RetryBuilder, RetryLayer};
use palisade::{BoxError, ErrorKind};
use support::{Answer, Probe, Readiness};
use tokio::time::{Instant, advance};
use tokio_test::task;
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceExt, service_fn};

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// What the scripted backend answers, call after call.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Reply {
    Ok(&'static str),
    Fail(&'static str),
    /// A palisade `RateLimited` refusal with this `retry_after`.
    Limited(Duration),
    /// A palisade `CircuitOpen` refusal.
    Open,
    /// A palisade `NotReady`: a layer below was called without readiness.
    NotReady,
}

/// A backend that answers from a script (the last reply repeats) and
/// records when each call came.
#[derive(Clone)]
struct Script {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    calls: Arc<Mutex<Vec<Instant>>>,
}

impl Script {
    fn new(replies: &[Reply]) -> Self {
        Script {
            replies: Arc::new(Mutex::new(replies.iter().copied().collect())),
            calls: Arc::default(),
        }
    }

    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// The waits between consecutive calls.
    fn waits(&self) -> Vec<Duration> {
        let calls = self.calls.lock().unwrap();
        calls.windows(2).map(|w| w[1] - w[0]).collect()
    }

    fn service(&self) -> BoxCloneService<u32, &'static str, BoxError> {
        let script = self.clone();
        BoxCloneService::new(service_fn(move |_: u32| {
            script.calls.lock().unwrap().push(Instant::now());
            let reply = {
                let mut replies = script.replies.lock().unwrap();
                if replies.len() > 1 {
                    replies.pop_front().unwrap()
                } else {
                    *replies.front().expect("a script")
                }
            };
            async move {
                match reply {
                    Reply::Ok(s) => Ok(s),
                    Reply::Fail(s) => Err(s.into()),
                    Reply::Limited(after) => Err(palisade_refusal(Some(after))),
                    Reply::Open => Err(open_refusal()),
                    Reply::NotReady => Err(not_ready()),
                }
            }
        }))
    }
}

fn palisade_refusal(after: Option<Duration>) -> BoxError {
    Box::new(palisade::error::RateLimited::new("limiter", after))
}

/// A real `CircuitOpen`, from a breaker opened by hand.
fn open_refusal() -> BoxError {
    use palisade::circuit_breaker::CircuitBreakerLayer;
    let layer = CircuitBreakerLayer::builder().build().unwrap();
    layer.handle().force_open();
    let mut svc = layer.layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    assert!(svc.poll_ready(&mut cx).is_ready());
    let mut refused = std::pin::pin!(svc.call(()));
    match refused.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Err(err)) => err,
        _ => panic!("a forced-open breaker refuses"),
    }
}

/// A real `NotReady`, from a breaker called without `poll_ready`.
fn not_ready() -> BoxError {
    use palisade::circuit_breaker::CircuitBreakerLayer;
    let layer = CircuitBreakerLayer::builder()
        .name("below")
        .build()
        .unwrap();
    let mut svc = layer.layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut unready = std::pin::pin!(svc.call(()));
    match unready.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Err(err)) => err,
        _ => panic!("a breaker called without readiness fails"),
    }
}

/// Constant backoff, no jitter, no budget: the delays are exact.
fn plain(attempts: u32, delay: Duration) -> RetryBuilder {
    RetryLayer::builder()
        .max_attempts(attempts)
        .backoff(Backoff::constant(delay))
        .budget(RetryBudget::unlimited())
}

async fn send(
    layer: &RetryLayer<
        impl Clone + palisade::classify::Classify<&'static str, BoxError>,
        impl Clone + palisade::retry::Replay<u32>,
    >,
    script: &Script,
    request: u32,
) -> Result<&'static str, BoxError> {
    layer.layer(script.service()).oneshot(request).await
}

// ---------------------------------------------------------------- attempts

#[tokio::test(start_paused = true)]
async fn attempts_waits_and_counters() {
    // scenario RT-1: 3 attempts, a fixed 500 ms.
    let layer = plain(3, ms(500)).build().unwrap();
    let ok = Script::new(&[Reply::Ok("ok")]);
    assert_eq!(send(&layer, &ok, 1).await.unwrap(), "ok");
    assert_eq!(ok.calls(), 1);

    let once = Script::new(&[Reply::Fail("busy"), Reply::Ok("ok")]);
    let started = Instant::now();
    assert_eq!(send(&layer, &once, 1).await.unwrap(), "ok");
    assert_eq!((once.calls(), once.waits()), (2, vec![ms(500)]));
    assert_eq!(Instant::now() - started, ms(500));

    let never = Script::new(&[Reply::Fail("one"), Reply::Fail("two"), Reply::Fail("three")]);
    let err = send(&layer, &never, 1).await.unwrap_err();
    assert_eq!(err.to_string(), "three", "the last attempt's error");
    assert_eq!(never.waits(), [ms(500), ms(500)]);

    let c = layer.handle().counts();
    assert_eq!(
        (
            c.succeeded_without_retry,
            c.succeeded_after_retry,
            c.failed_after_retry,
            c.retries
        ),
        (1, 1, 1, 3)
    );
}

#[tokio::test(start_paused = true)]
async fn one_attempt_or_a_result_not_retried_goes_back_at_once() {
    // scenario RT-2
    let single = plain(1, ms(500)).build().unwrap();
    let fails = Script::new(&[Reply::Fail("no")]);
    assert!(send(&single, &fails, 1).await.is_err());
    assert_eq!(fails.calls(), 1);

    // Only "retry me" is retried.
    let picky = plain(5, ms(10))
        .classifier(|r: &Result<&'static str, BoxError>| match r {
            Err(e) if e.to_string().starts_with("retry") => Outcome::Failure,
            Err(_) => Outcome::Ignored,
            Ok(_) => Outcome::Success,
        })
        .build()
        .unwrap();
    let script = Script::new(&[
        Reply::Fail("retry 1"),
        Reply::Fail("reject"),
        Reply::Ok("x"),
    ]);
    let err = send(&picky, &script, 1).await.unwrap_err();
    assert_eq!((err.to_string(), script.calls()), ("reject".into(), 2));
    assert_eq!(picky.handle().counts().failed_after_retry, 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_may_not_be_replayed_is_sent_once() {
    // scenario RT-2: ineligible (an odd request stands for a non-idempotent
    // one), and a replay that cannot copy.
    let even_only = plain(3, ms(10))
        .retry_if(|r: &u32| r.is_multiple_of(2))
        .build()
        .unwrap();
    let script = Script::new(&[Reply::Fail("retry 1"), Reply::Ok("ok")]);
    assert_eq!(
        send(&even_only, &script, 1).await.unwrap_err().to_string(),
        "retry 1"
    );
    assert_eq!(script.calls(), 1);
    assert_eq!(send(&even_only, &script, 2).await.unwrap(), "ok");

    let never_copies = plain(3, ms(10)).replay(|_: &u32| None).build().unwrap();
    let first_ok = Script::new(&[Reply::Ok("fine")]);
    assert_eq!(send(&never_copies, &first_ok, 1).await.unwrap(), "fine");
}

#[tokio::test(start_paused = true)]
async fn a_retried_response_comes_back_as_a_response() {
    // scenario RT-4: the classifier marks a response as a failure; when
    // attempts run out, the last response is returned as it is.
    let layer = plain(2, ms(10))
        .classifier(|r: &Result<&'static str, BoxError>| match r {
            Ok("busy") | Err(_) => Outcome::Failure,
            Ok(_) => Outcome::Success,
        })
        .build()
        .unwrap();
    let busy = Script::new(&[Reply::Ok("busy")]);
    assert_eq!(send(&layer, &busy, 1).await.unwrap(), "busy");
    assert_eq!(busy.calls(), 2);
    let mixed = Script::new(&[Reply::Fail("e"), Reply::Ok("busy"), Reply::Fail("last")]);
    let layer3 = plain(3, ms(500))
        .classifier(|r: &Result<&'static str, BoxError>| match r {
            Ok("busy") | Err(_) => Outcome::Failure,
            Ok(_) => Outcome::Success,
        })
        .build()
        .unwrap();
    assert_eq!(
        send(&layer3, &mixed, 1).await.unwrap_err().to_string(),
        "last"
    );
    assert_eq!(mixed.waits(), [ms(500), ms(500)]);
}

// ---------------------------------------------------------------- delays

#[tokio::test(start_paused = true)]
async fn exponential_delays_between_attempts() {
    // scenario BO-1: from 500 ms, ×2, three attempts: 500 then 1 000 ms.
    let layer = RetryLayer::builder()
        .max_attempts(3)
        .backoff(Backoff::exponential(ms(500)))
        .budget(RetryBudget::unlimited())
        .build()
        .unwrap();
    let script = Script::new(&[Reply::Fail("x")]);
    let _ = send(&layer, &script, 1).await;
    assert_eq!(script.waits(), [ms(500), ms(1_000)]);
}

#[tokio::test(start_paused = true)]
async fn two_requests_draw_different_jitter_and_a_seed_repeats_them() {
    let layer = |seed| {
        RetryLayer::builder()
            .max_attempts(6)
            .backoff(Backoff::exponential(ms(100)).jitter(Jitter::Full))
            .budget(RetryBudget::unlimited())
            .jitter_seed(seed)
            .build()
            .unwrap()
    };
    let run = |layer: RetryLayer| async move {
        let (a, b) = (
            Script::new(&[Reply::Fail("x")]),
            Script::new(&[Reply::Fail("x")]),
        );
        let _ = send(&layer, &a, 1).await;
        let _ = send(&layer, &b, 1).await;
        (a.waits(), b.waits())
    };
    let (a, b) = run(layer(7)).await;
    assert_ne!(a, b, "each request has its own sequence");
    for (retry, wait) in a.iter().enumerate() {
        assert!(
            *wait <= ms(100) * 2u32.pow(retry as u32),
            "full jitter stays under the schedule"
        );
    }
    assert_eq!(run(layer(7)).await, (a, b), "a seed repeats them");
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_sets_the_least_wait() {
    // scenario RT-5: the delay comes from the result (an HTTP Retry-After
    // would come through the same hint).
    let layer = plain(3, ms(10))
        .backoff(Backoff::constant(ms(10)).max(Duration::from_secs(1)))
        .classifier(with_retry_after(
            DefaultClassifier,
            |r: &Result<&'static str, BoxError>| {
                let e = r.as_ref().err()?.to_string();
                e.strip_prefix("wait ").and_then(|n| n.parse().ok()).map(ms)
            },
        ))
        .build()
        .unwrap();
    let script = Script::new(&[
        Reply::Fail("wait 100"),
        Reply::Fail("wait 200"),
        Reply::Ok("done"),
    ]);
    assert_eq!(send(&layer, &script, 1).await.unwrap(), "done");
    assert_eq!(script.waits(), [ms(100), ms(200)]);

    // A hint beyond the backoff's maximum: give up rather than retry early.
    let far = Script::new(&[Reply::Fail("wait 5000"), Reply::Ok("done")]);
    assert_eq!(
        send(&layer, &far, 1).await.unwrap_err().to_string(),
        "wait 5000"
    );
    assert_eq!(far.calls(), 1);
}

/// A result that says "do not retry" (`Duration::MAX`, as a negative gRPC
/// pushback reads) is not retried even by a backoff with no maximum, where
/// it used to sleep for good.
#[tokio::test(start_paused = true)]
async fn do_not_retry_holds_without_a_maximum_backoff() {
    let layer = plain(3, ms(10))
        .classifier(with_retry_after(
            DefaultClassifier,
            |r: &Result<&'static str, BoxError>| r.is_err().then_some(Duration::MAX),
        ))
        .build()
        .unwrap();
    let script = Script::new(&[Reply::Fail("stop"), Reply::Ok("done")]);
    let mut call = task::spawn(send(&layer, &script, 1));
    match call.poll() {
        std::task::Poll::Ready(Err(err)) => assert_eq!(err.to_string(), "stop"),
        other => panic!("the failure comes back at once, got {other:?}"),
    }
    assert_eq!(script.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_zero_delay_retries_without_a_timer() {
    let layer = plain(4, Duration::ZERO).build().unwrap();
    let script = Script::new(&[Reply::Fail("x"), Reply::Fail("x"), Reply::Ok("ok")]);
    let mut call = task::spawn(send(&layer, &script, 1));
    // Three attempts in a single poll: nothing waited on a timer.
    assert!(matches!(call.poll(), std::task::Poll::Ready(Ok("ok"))));
    assert_eq!(script.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_refusal_waits_its_retry_after_and_an_open_circuit_is_not_retried() {
    let layer = plain(3, ms(10))
        .backoff(Backoff::constant(ms(10)).max(Duration::from_secs(1)))
        .build()
        .unwrap();
    let limited = Script::new(&[Reply::Limited(ms(300)), Reply::Ok("ok")]);
    assert_eq!(send(&layer, &limited, 1).await.unwrap(), "ok");
    assert_eq!(limited.waits(), [ms(300)]);

    let open = Script::new(&[Reply::Open, Reply::Ok("ok")]);
    let err = send(&layer, &open, 1).await.unwrap_err();
    assert!(matches!(ErrorKind::of(&err), ErrorKind::CircuitOpen(_)));
    assert_eq!(open.calls(), 1);

    let off = plain(3, ms(10)).retry_rate_limited(false).build().unwrap();
    let limited = Script::new(&[Reply::Limited(ms(300)), Reply::Ok("ok")]);
    assert!(send(&off, &limited, 1).await.is_err());
    assert_eq!(limited.calls(), 1);
}

/// A client-side throttle's refusal is not retried, like an open circuit:
/// the throttle refuses to spare an overloaded upstream, and a retry would
/// only ask it again.
#[cfg(feature = "throttle")]
#[tokio::test(start_paused = true)]
async fn a_throttled_refusal_is_not_retried() {
    use palisade::throttle::ThrottleLayer;
    let throttle = ThrottleLayer::builder().seed(3).build().unwrap();
    let handle = throttle.handle();
    let probe = Probe::new(Answer::Fail);
    // Fill the throttle's window with failures, straight past retry.
    let mut direct = throttle.layer(probe.clone());
    for i in 0..100 {
        assert!(direct.ready().await.unwrap().call(i).await.is_err());
    }
    let layer = plain(5, ms(10)).build().unwrap();
    let mut svc = layer.layer(throttle.layer(probe.clone()));
    let mut throttled = 0;
    for i in 0..20 {
        let (attempts, refused, calls) = (handle.requests(), handle.rejected(), probe.calls());
        let err = svc.ready().await.unwrap().call(i).await.unwrap_err();
        let ended_throttled = matches!(ErrorKind::of(&err), ErrorKind::Throttled(_));
        // Each attempt is a request to the throttle; the only one it
        // refused was the last: no attempt followed a refusal.
        let attempts = handle.requests() - attempts;
        let sent = (probe.calls() - calls) as u64;
        assert_eq!(attempts, sent + u64::from(ended_throttled), "request {i}");
        assert_eq!(handle.rejected() - refused, u64::from(ended_throttled));
        throttled += u64::from(ended_throttled);
    }
    assert!(throttled > 10, "{throttled} of 20 refused");
}

/// A layer below called without readiness is a bug that a retry would
/// only repeat: never retried, even by a classifier that calls every
/// error a failure, and ignored by the default one.
#[tokio::test(start_paused = true)]
async fn a_call_without_readiness_below_is_not_retried() {
    let every_error_fails = plain(3, ms(10))
        .classifier(|r: &Result<&'static str, BoxError>| match r {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        })
        .build()
        .unwrap();
    sent_once_and_not_ready(&every_error_fails).await;
    sent_once_and_not_ready(&plain(3, ms(10)).build().unwrap()).await;
}

async fn sent_once_and_not_ready(
    layer: &RetryLayer<
        impl Clone + palisade::classify::Classify<&'static str, BoxError>,
        impl Clone + palisade::retry::Replay<u32>,
    >,
) {
    let script = Script::new(&[Reply::NotReady, Reply::Ok("ok")]);
    let err = send(layer, &script, 1).await.unwrap_err();
    let ErrorKind::NotReady(e) = ErrorKind::of(&err) else {
        panic!("expected NotReady, got {err}");
    };
    assert_eq!((e.layer(), e.name()), ("circuit_breaker", "below"));
    assert_eq!(script.calls(), 1);
    assert_eq!(layer.handle().counts().retries, 0);
}

// ---------------------------------------------------------------- deadline

#[tokio::test(start_paused = true)]
async fn no_backoff_sleeps_past_the_deadline() {
    let layer = plain(10, ms(400)).deadline(ms(1_000)).build().unwrap();
    let script = Script::new(&[Reply::Fail("x")]);
    let started = Instant::now();
    let err = send(&layer, &script, 1).await.unwrap_err();
    assert_eq!(err.to_string(), "x");
    // Attempts at 0, 400 and 800 ms; a wait to 1 200 ms would pass it.
    assert_eq!(script.calls(), 3);
    assert_eq!(Instant::now() - started, ms(800));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_past_the_deadline_is_refused() {
    let layer = plain(3, ms(10))
        .backoff(Backoff::constant(ms(10)).max(Duration::from_secs(10)))
        .deadline(ms(500))
        .build()
        .unwrap();
    let script = Script::new(&[Reply::Limited(ms(600)), Reply::Ok("ok")]);
    let err = send(&layer, &script, 1).await.unwrap_err();
    assert!(matches!(ErrorKind::of(&err), ErrorKind::RateLimited(_)));
    assert_eq!(script.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn no_attempt_starts_after_the_deadline_even_after_waiting_for_readiness() {
    let probe = Probe::new(Answer::Fail);
    let layer = plain(3, ms(100)).deadline(ms(1_000)).build().unwrap();
    let mut svc = layer.layer(probe.clone());
    svc.ready().await.unwrap();
    let mut call = task::spawn(svc.call(1));
    assert!(call.poll().is_pending());
    // The retry's clone is not ready until long after the deadline.
    probe.set_readiness(Readiness::Pending);
    advance(ms(100)).await;
    assert!(call.poll().is_pending());
    advance(ms(2_000)).await;
    probe.set_readiness(Readiness::Ready);
    let std::task::Poll::Ready(Err(err)) = call.poll() else {
        panic!("the first attempt's error stands")
    };
    assert!(err.to_string().contains("failed"));
    assert_eq!(probe.calls(), 1);
}

// ---------------------------------------------------------------- readiness and cancellation

#[tokio::test(start_paused = true)]
async fn every_retry_waits_for_the_inner_service_to_be_ready() {
    // The probe panics if called without a successful poll_ready.
    let probe = Probe::new(Answer::Fail);
    let layer = plain(3, ms(100)).build().unwrap();
    let err = layer.layer(probe.clone()).oneshot(1).await.unwrap_err();
    assert!(err.to_string().contains("failed"));
    assert_eq!(probe.calls(), 3);
    assert!(probe.ready_polls() >= 3, "readied before each attempt");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_during_the_backoff_stops_retrying() {
    // scenario RT-8
    let script = Script::new(&[Reply::Fail("x"), Reply::Ok("ok")]);
    let layer = plain(3, ms(500)).build().unwrap();
    let mut call = task::spawn(send(&layer, &script, 1));
    assert!(call.poll().is_pending());
    assert_eq!(script.calls(), 1);
    drop(call);
    advance(ms(1_000)).await;
    assert_eq!(script.calls(), 1, "never called again");
}

#[tokio::test(start_paused = true)]
async fn retry_keeps_the_tower_contract() {
    support::check_tower_contract(|probe| {
        RetryLayer::builder()
            .backoff(Backoff::constant(ms(1)))
            .build()
            .unwrap()
            .layer(probe)
    })
    .await;
}

// ---------------------------------------------------------------- budget

#[tokio::test(start_paused = true)]
async fn a_spent_budget_returns_the_last_result_as_is() {
    // scenario BU-4: two tokens' worth of retries, shared by clones.
    let layer = RetryLayer::builder()
        .max_attempts(3)
        .backoff(Backoff::constant(Duration::ZERO))
        .budget(RetryBudget::tokens(4, 0.1))
        .build()
        .unwrap();
    let script = Script::new(&[Reply::Fail("down")]);
    let svc = layer.layer(script.service());
    let mut calls = Vec::new();
    for _ in 0..3 {
        let before = script.calls();
        let err = svc.clone().oneshot(1).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "down",
            "the inner error, not a budget error"
        );
        calls.push(script.calls() - before);
    }
    // 4 tokens: the first request spends 1 (retry: 3 left > 2), then 1
    // more (2 left: not more than half), so its third attempt is refused.
    assert_eq!(calls, [2, 1, 1]);
    let c = layer.handle().counts();
    assert_eq!((c.retries, c.budget_refusals), (1, 3));
}

#[tokio::test(start_paused = true)]
async fn successes_refill_the_budget() {
    // Three tokens, a whole one back per success.
    let layer = RetryLayer::builder()
        .max_attempts(2)
        .backoff(Backoff::constant(Duration::ZERO))
        .budget(RetryBudget::tokens(3, 1.0))
        .build()
        .unwrap();
    let down = Script::new(&[Reply::Fail("down")]);
    let up = Script::new(&[Reply::Ok("up")]);
    let _ = send(&layer, &down, 1).await; // 3 -> 2 tokens: retried; -> 1
    assert_eq!(down.calls(), 2);
    let _ = send(&layer, &down, 1).await; // -> 0: not retried
    assert_eq!(down.calls(), 3);
    for _ in 0..3 {
        send(&layer, &up, 1).await.unwrap(); // back to 3
    }
    let _ = send(&layer, &down, 1).await; // -> 2: retried again
    assert_eq!(down.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_windowed_budget_lets_a_ratio_of_requests_retry() {
    // 20 % of requests, no minimum: ten first attempts pay for two retries.
    let layer = RetryLayer::builder()
        .max_attempts(2)
        .backoff(Backoff::constant(Duration::ZERO))
        .budget(RetryBudget::windowed(Duration::from_secs(10), 0, 0.2))
        .build()
        .unwrap();
    let up = Script::new(&[Reply::Ok("up")]);
    for _ in 0..8 {
        send(&layer, &up, 1).await.unwrap();
    }
    let down = Script::new(&[Reply::Fail("down")]);
    for _ in 0..4 {
        let _ = send(&layer, &down, 1).await;
    }
    // 12 requests deposited 2.4 retries: two went.
    assert_eq!(down.calls(), 4 + 2);
    assert_eq!(layer.handle().counts().budget_refusals, 2);
    // Ten seconds later the deposits have expired.
    advance(Duration::from_secs(11)).await;
    let _ = send(&layer, &down, 1).await;
    assert_eq!(down.calls(), 6 + 1);
}

// ---------------------------------------------------------------- configuration

#[test]
fn bad_configuration_is_an_error_naming_the_field() {
    let field = |b: RetryBuilder| b.build().unwrap_err().field();
    assert_eq!(field(RetryLayer::builder().max_attempts(0)), "max_attempts");
    assert_eq!(
        field(RetryLayer::builder().backoff(Backoff::exponential(ms(100)).max(ms(50)))),
        "backoff.max"
    );
    assert_eq!(
        field(RetryLayer::builder().budget(RetryBudget::tokens(0, 0.1))),
        "budget.max_tokens"
    );
    assert_eq!(
        field(RetryLayer::builder().deadline(Duration::ZERO)),
        "deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn the_listener_hears_each_retry_with_its_number_and_delay() {
    // scenario RT-6: linear from 2 s, three retries; then a 123 ms cap.
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    let layer = RetryLayer::builder()
        .max_attempts(4)
        .backoff(Backoff::linear(Duration::from_secs(2)))
        .budget(RetryBudget::unlimited())
        .on_retry(move |e| sink.lock().unwrap().push((e.retry, e.delay)))
        .build()
        .unwrap();
    let script = Script::new(&[Reply::Fail("x")]);
    let _ = send(&layer, &script, 1).await;
    let s = Duration::from_secs;
    assert_eq!(*heard.lock().unwrap(), [(1, s(2)), (2, s(4)), (3, s(6))]);
    assert_eq!(script.waits(), [s(2), s(4), s(6)]);

    // Polly accepts a cap below the base (all delays become the cap); the
    // retry issue requires cap ≥ base, so the cap here bites from retry 2.
    let capped = plain(4, ms(10))
        .backoff(Backoff::linear(ms(100)).max(ms(123)))
        .build()
        .unwrap();
    let script = Script::new(&[Reply::Fail("x")]);
    let _ = send(&capped, &script, 1).await;
    assert_eq!(script.waits(), [ms(100), ms(123), ms(123)]);
}

#[cfg(feature = "serde")]
#[tokio::test(start_paused = true)]
async fn configuration_loads_from_json_and_takes_effect() {
    use palisade::retry::RetryConfig;
    let config: RetryConfig = serde_json::from_str(
        r#"{"name": "orders", "max_attempts": 4, "deadline": "10s",
            "retry_rate_limited": false,
            "backoff": {"kind": "exponential", "base": "100ms", "multiplier": 3.0,
                        "max": "1s", "jitter": "none"},
            "budget": {"kind": "tokens", "max_tokens": 4}}"#,
    )
    .unwrap();
    // The ratio not given is the default budget's.
    assert_eq!(config.budget, Some(RetryBudget::tokens(4, 0.5)));
    let layer = RetryLayer::from_config(config).unwrap();
    assert_eq!(layer.handle().name(), "orders");
    let script = Script::new(&[Reply::Fail("x")]);
    let _ = send(&layer, &script, 1).await;
    // Four tokens: two failures leave two, which is not more than half, so
    // the budget stops the third retry before max_attempts would.
    assert_eq!(script.waits(), [ms(100)]);
    assert_eq!(layer.handle().counts().budget_refusals, 1);

    let windowed: RetryConfig = serde_json::from_str(
        r#"{"budget": {"kind": "windowed", "ttl": "5s"},
            "backoff": {"kind": "constant", "base": "1s", "jitter": {"proportional": 0.5}}}"#,
    )
    .unwrap();
    assert_eq!(
        windowed.budget,
        Some(RetryBudget::windowed(Duration::from_secs(5), 10, 0.2))
    );
    assert_eq!(
        windowed.backoff,
        Backoff::constant(Duration::from_secs(1)).jitter(Jitter::Proportional(0.5))
    );

    // Values are checked when the layer is built, naming the field.
    let bad: RetryConfig =
        serde_json::from_str(r#"{"backoff": {"kind": "linear", "base": "2s", "max": "1s"}}"#)
            .unwrap();
    assert_eq!(
        RetryLayer::from_config(bad).unwrap_err().field(),
        "backoff.max"
    );
    let bad: RetryConfig =
        serde_json::from_str(r#"{"budget": {"kind": "windowed", "ratio": 1.5}}"#).unwrap();
    assert_eq!(
        RetryLayer::from_config(bad).unwrap_err().field(),
        "budget.ratio"
    );
    // Shapes are checked when the file is read.
    for wrong in [
        r#"{"attempts": 3}"#,
        r#"{"backoff": {"kind": "linear", "base": "1s", "multiplier": 2.0}}"#,
        r#"{"backoff": {"kind": "cubic", "base": "1s"}}"#,
        r#"{"backoff": {"kind": "constant"}}"#,
        r#"{"budget": {"kind": "tokens", "ttl": "5s"}}"#,
        r#"{"deadline": "soon"}"#,
    ] {
        let err = serde_json::from_str::<RetryConfig>(wrong).unwrap_err();
        assert!(!err.to_string().is_empty(), "{wrong}");
    }
    let err = serde_json::from_str::<RetryConfig>(
        r#"{"backoff": {"kind": "linear", "base": "1s", "multiplier": 2.0}}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("multiplier"), "{err}");
}

/// scenario CT-3, restated for palisade's token budget (`tokens(10, 0.5)`,
/// 4 attempts): a failed attempt spends a token, a success earns half of
/// one, a retry goes only while more than half the tokens are left after
/// the failure is counted, and the first attempt is never held back. A
/// result the classifier ignores (gRPC's INVALID_ARGUMENT here) changes
/// nothing; tokens stay between 0 and 10. gRPC's pushback is palisade's
/// retry-after hint: 300 ms makes the next attempt leave after exactly
/// 300 ms. (A malformed hint is read as no hint, as a malformed
/// `Retry-After` is, rather than as "do not retry".)
#[tokio::test(start_paused = true)]
async fn the_token_budget_follows_grpc_retry_throttling() {
    use palisade::classify::Outcome;
    let layer = plain(4, ms(1))
        .budget(RetryBudget::tokens(10, 0.5))
        .classifier(with_retry_after(
            |r: &Result<&'static str, BoxError>| match r {
                Ok(_) => Outcome::Success,
                Err(e) if e.to_string() == "invalid" => Outcome::Ignored,
                Err(_) => Outcome::Failure,
            },
            |r: &Result<&'static str, BoxError>| {
                let e = r.as_ref().err()?.to_string();
                e.strip_prefix("wait ").and_then(|n| n.parse().ok()).map(ms)
            },
        ))
        .build()
        .unwrap();
    // How many attempts one call made, answered by `replies`.
    let attempts = |replies: &'static [Reply]| {
        let layer = layer.clone();
        async move {
            let script = Script::new(replies);
            let _ = send(&layer, &script, 1).await;
            script.calls()
        }
    };
    const FAIL: &[Reply] = &[Reply::Fail("x")];
    const OK: &[Reply] = &[Reply::Ok("ok")];
    assert_eq!(attempts(FAIL).await, 4, "call 1: 9, 8, 7, 6");
    assert_eq!(attempts(FAIL).await, 1, "call 2: 5 is not above 5");
    assert_eq!(attempts(FAIL).await, 1, "call 3: sent (4), not retried");
    for _ in 0..4 {
        assert_eq!(attempts(OK).await, 1); // 6
    }
    assert_eq!(attempts(FAIL).await, 1, "call 8: 5");
    for _ in 0..3 {
        attempts(OK).await; // 6.5
    }
    const ONCE: &[Reply] = &[Reply::Fail("x"), Reply::Ok("ok")];
    assert_eq!(attempts(ONCE).await, 2, "call 12: 5.5, retried, then 6");
    assert_eq!(attempts(&[Reply::Fail("invalid")]).await, 1);
    attempts(OK).await; // 6.5: the ignored result changed nothing
    assert_eq!(attempts(FAIL).await, 2, "5.5 retried, 4.5 not");

    // Never below 0: after many failures, 13 successes (6.5) allow a retry.
    for _ in 0..50 {
        attempts(FAIL).await;
    }
    for _ in 0..13 {
        attempts(OK).await;
    }
    assert_eq!(attempts(FAIL).await, 2, "from 0, not from below it");
    // Never above 10: after many successes a failing call makes 4
    // attempts (9, 8, 7, 6), and the next one none more (5).
    for _ in 0..100 {
        attempts(OK).await;
    }
    assert_eq!(attempts(FAIL).await, 4);
    assert_eq!(attempts(FAIL).await, 1);

    // Pushback: the hint sets the wait.
    for _ in 0..20 {
        attempts(OK).await;
    }
    let script = Script::new(&[Reply::Fail("wait 300"), Reply::Ok("ok")]);
    let _ = send(&layer, &script, 1).await;
    assert_eq!(script.waits(), [ms(300)]);
}

/// A request runs in one `retry` span (its name, then the attempts made
/// and the outcome once final), and each attempt in an `attempt` span
/// inside it, numbered from 0: the inner service's own events land in the
/// attempt that made them.
#[tokio::test(start_paused = true)]
async fn a_request_and_each_attempt_run_in_their_own_spans() {
    let tracer = traced::Tracer::default();
    let _subscriber = tracer.install();
    let layer = plain(3, Duration::ZERO).name("orders").build().unwrap();
    let attempts = Arc::new(Mutex::new(0));
    let svc = layer.layer(service_fn(move |()| {
        let n = {
            let mut attempts = attempts.lock().unwrap();
            *attempts += 1;
            *attempts
        };
        tracing::info!(target: "inner", n, "called");
        async move {
            if n < 2 {
                Err::<(), BoxError>("down".into())
            } else {
                Ok(())
            }
        }
    }));
    svc.oneshot(()).await.unwrap();

    let spans = tracer.spans();
    let names: Vec<_> = spans.iter().map(|span| span.name).collect();
    assert_eq!(names, ["retry", "attempt", "attempt"]);
    let request = &spans[0].fields;
    assert_eq!(request["name"], "orders");
    assert_eq!(request["attempts"], "2");
    assert_eq!(request["outcome"], "succeeded_after_retry");
    for (i, attempt) in spans[1..].iter().enumerate() {
        assert_eq!(attempt.parent, Some(1));
        assert_eq!(attempt.fields["number"], i.to_string());
    }
    let inner: Vec<_> = tracer.events("inner").iter().map(|e| e.span).collect();
    assert_eq!(inner, [Some(2), Some(3)]);
}

/// A retry decided but never sent, because the deadline passed while the
/// service was getting ready, ends the request with the last result and
/// an ERROR event saying why (the attempt before it was reported as
/// retrying).
#[tokio::test(start_paused = true)]
async fn a_retry_abandoned_at_the_deadline_is_an_error_event() {
    /// Fails its first call; a clone takes 2 s to get ready.
    struct SlowToReady {
        calls: Arc<Mutex<u32>>,
        getting_ready: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    }
    impl Clone for SlowToReady {
        fn clone(&self) -> Self {
            SlowToReady {
                calls: self.calls.clone(),
                getting_ready: None,
            }
        }
    }
    impl Service<()> for SlowToReady {
        type Response = ();
        type Error = BoxError;
        type Future = std::future::Ready<Result<(), BoxError>>;
        fn poll_ready(
            &mut self,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), BoxError>> {
            if *self.calls.lock().unwrap() == 0 {
                return std::task::Poll::Ready(Ok(()));
            }
            let sleep = self
                .getting_ready
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_secs(2))));
            sleep.as_mut().poll(cx).map(Ok)
        }
        fn call(&mut self, (): ()) -> Self::Future {
            *self.calls.lock().unwrap() += 1;
            std::future::ready(Err("down".into()))
        }
    }

    let tracer = traced::Tracer::default();
    let _subscriber = tracer.install();
    let layer = plain(3, Duration::ZERO)
        .name("orders")
        .deadline(Duration::from_secs(1))
        .build()
        .unwrap();
    let svc = layer.layer(SlowToReady {
        calls: Arc::default(),
        getting_ready: None,
    });
    let err = svc.oneshot(()).await.unwrap_err();
    assert_eq!(err.to_string(), "down");
    let abandoned: Vec<_> = tracer
        .events("palisade::retry")
        .into_iter()
        .filter(|e| e.field("message") == Some("retry abandoned; no attempt follows"))
        .collect();
    assert_eq!(abandoned.len(), 1, "{abandoned:?}");
    assert_eq!(abandoned[0].level, tracing::Level::ERROR);
    assert_eq!(abandoned[0].field("why"), Some("the deadline passed"));
}

// ------------------------------------------------------------------ clones

/// Requests that succeed at once clone nothing below the layer; a request
/// that is retried clones the service once, however many retries it
/// makes (every clone of the inner service costs its `Arc`s a count up and
/// down on cache lines all threads share).
#[tokio::test(start_paused = true)]
async fn only_a_retried_request_clones_the_service() {
    let script = Script::new(&[
        Reply::Ok("a"),
        Reply::Ok("b"),
        Reply::Fail("x"),
        Reply::Fail("y"),
        Reply::Ok("c"),
    ]);
    let counted = CountsClones::new(script.service());
    let clones = counted.counter();
    let mut svc = plain(3, ms(10)).build().unwrap().layer(counted);
    let made = clones();
    let count = || clones() - made;
    assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), "a");
    assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap(), "b");
    assert_eq!(count(), 0, "no retry, no clone");
    assert_eq!(svc.ready().await.unwrap().call(3).await.unwrap(), "c");
    assert_eq!(script.calls(), 5);
    assert_eq!(count(), 1, "one clone for a request's two retries");
}

/// A retry over a service that is `Send` but not `Sync` (a
/// `BoxCloneService`) is `Send`, and so is its response future: the copy
/// of the service kept for retries, shared by every clone, sits behind a
/// lock, so it asks no more of the service than holding it does.
#[test]
fn a_service_that_is_send_but_not_sync_makes_a_send_retry() {
    fn is_send<T: Send>(_: T) {}
    let inner: BoxCloneService<u32, &'static str, BoxError> =
        BoxCloneService::new(service_fn(|_: u32| async { Ok::<_, BoxError>("ok") }));
    let svc = plain(3, ms(10)).build().unwrap().layer(inner);
    is_send(svc.clone());
    is_send(svc.oneshot(1));
}

/// A retry paid for from a windowed budget but never sent gives its unit
/// back: here the caller drops the request during the backoff (a total
/// timeout outside retry does). The budget holds one retry a second; the
/// next request's retry goes only if the first one's came back.
#[tokio::test(start_paused = true)]
async fn a_retry_dropped_during_its_backoff_is_given_back() {
    let layer = plain(2, ms(100))
        .budget(RetryBudget::windowed(Duration::from_secs(1), 1, 0.0))
        .build()
        .unwrap();
    let script = Script::new(&[Reply::Fail("x")]);
    let first = tokio::time::timeout(ms(50), send(&layer, &script, 1)).await;
    assert!(first.is_err(), "dropped during the 100 ms backoff");
    assert_eq!(script.calls(), 1, "the retry never went");

    let again = Script::new(&[Reply::Fail("x"), Reply::Ok("ok")]);
    assert_eq!(send(&layer, &again, 2).await.unwrap(), "ok");
    let counts = layer.handle().counts();
    assert_eq!(
        counts.budget_refusals, 0,
        "the first retry's unit came back"
    );
}
