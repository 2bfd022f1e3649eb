//! The defaults keep callers served: the recommended stack built with every
//! default (retry, circuit breaker, an attempt timeout) against an upstream
//! that fails at random, compared with calling it bare. On tokio's paused
//! clock, with a seeded fault pattern, so a run repeats.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade::circuit_breaker::{CircuitBreakerLayer, State};
use palisade::retry::RetryLayer;
use palisade::timeout::TimeoutLayer;
use palisade::{BoxError, ErrorKind};
use support::XorShift;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

const REQUESTS: u64 = 2_000;

/// The fault pattern's seed: `SEED=n cargo test --test defaults` tries
/// another.
fn seed() -> u64 {
    std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7)
}

/// An upstream that fails `percent` of its calls at random (seeded), taking
/// 5 ms for each, and counts them.
fn upstream(
    percent: u64,
    seed: u64,
) -> (
    impl Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone + Send,
    Arc<AtomicU64>,
) {
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let rng = Arc::new(std::sync::Mutex::new(XorShift::new(seed)));
    let service = service_fn(move |n: u64| {
        counted.fetch_add(1, Ordering::SeqCst);
        let fails = rng.lock().unwrap().below(100) < percent;
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if fails {
                Err::<u64, BoxError>("upstream error".into())
            } else {
                Ok(n)
            }
        }
    });
    (service, calls)
}

/// What callers got: successes, and how many calls the upstream saw.
struct Served {
    succeeded: u64,
    upstream_calls: u64,
    /// Requests answered without any time passing (refused at once).
    answered_at_once: u64,
}

async fn drive<S>(mut service: S, calls: Arc<AtomicU64>) -> Served
where
    S: Service<u64, Response = u64, Error = BoxError>,
{
    let mut served = Served {
        succeeded: 0,
        upstream_calls: 0,
        answered_at_once: 0,
    };
    for n in 0..REQUESTS {
        let started = Instant::now();
        let result = service.ready().await.unwrap().call(n).await;
        served.succeeded += u64::from(result.is_ok());
        if started.elapsed().is_zero() {
            served.answered_at_once += 1;
            let err = result.expect_err("a success takes the upstream's 5 ms");
            assert!(matches!(ErrorKind::of(&err), ErrorKind::CircuitOpen(_)));
        }
        // Some time between requests, as real traffic has.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    served.upstream_calls = calls.load(Ordering::SeqCst);
    served
}

async fn bare(percent: u64) -> Served {
    let (upstream, calls) = upstream(percent, seed());
    drive(upstream, calls).await
}

/// The recommended stack with every default: retry outside the breaker,
/// an attempt timeout inside it.
async fn defaults(percent: u64) -> (Served, palisade::circuit_breaker::Handle) {
    let (upstream, calls) = upstream(percent, seed());
    let breaker = CircuitBreakerLayer::builder().build().unwrap();
    let health = breaker.handle();
    let stack = ServiceBuilder::new()
        .layer(RetryLayer::builder().build().unwrap())
        .layer(breaker)
        .layer(TimeoutLayer::new(Duration::from_secs(1)).unwrap())
        .service(upstream);
    (drive(stack, calls).await, health)
}

/// At 30 % random errors the defaults serve callers at least as well as no
/// layers and at least 85 % of the time, sending the upstream at most 1.5
/// times the requests; the breaker stays closed (the upstream serves most
/// calls).
#[tokio::test(start_paused = true)]
async fn at_30_percent_errors_the_defaults_help() {
    let bare = bare(30).await;
    let (layered, health) = defaults(30).await;
    let rate = |s: &Served| s.succeeded as f64 / REQUESTS as f64;
    let amplification = layered.upstream_calls as f64 / REQUESTS as f64;
    eprintln!(
        "30 % errors: {:.1} % served with the defaults ({amplification:.2} × upstream calls), {:.1} % bare",
        100.0 * rate(&layered),
        100.0 * rate(&bare)
    );
    assert!(
        rate(&layered) >= rate(&bare) && rate(&layered) >= 0.85,
        "served {:.1} % with the defaults, {:.1} % bare",
        100.0 * rate(&layered),
        100.0 * rate(&bare)
    );
    assert!(
        amplification <= 1.5,
        "the upstream saw {amplification:.2} × the requests"
    );
    assert_eq!(health.snapshot().state, State::Closed);
    assert_eq!(layered.answered_at_once, 0, "no call was shut out");
}

/// With every call failing, the breaker opens, later requests are answered
/// at once without reaching the upstream, and the upstream sees at most 1.2
/// times the requests. The breaker's short default open period (100 ms)
/// lets its 3 probes through every 100 ms, about 7 requests of this
/// traffic (one every 15 ms), so some requests are probes rather than
/// answered at once: at least 70 % are refused at once.
#[tokio::test(start_paused = true)]
async fn when_every_call_fails_the_breaker_opens_and_answers_at_once() {
    let (layered, health) = defaults(100).await;
    let amplification = layered.upstream_calls as f64 / REQUESTS as f64;
    eprintln!(
        "100 % errors: {amplification:.3} × upstream calls, {} of {REQUESTS} answered at once",
        layered.answered_at_once
    );
    assert_eq!(layered.succeeded, 0);
    assert_ne!(health.snapshot().state, State::Closed);
    assert!(
        amplification <= 1.2,
        "the upstream saw {amplification:.2} × the requests"
    );
    assert!(
        layered.answered_at_once as f64 >= 0.7 * REQUESTS as f64,
        "{} of {REQUESTS} answered at once",
        layered.answered_at_once
    );
}

/// The default breaker leaves alone a dependency that still serves some of
/// its calls: one that fails 6 calls in 7 (86 %, a deep brown-out) keeps
/// its breaker closed, so every call it can serve is served. At the old
/// default, 0.8, the breaker opened on it and refused calls it would have
/// served. One that fails every call still opens it (the test above).
#[tokio::test(start_paused = true)]
async fn the_default_breaker_stays_closed_while_one_call_in_seven_succeeds() {
    let breaker = CircuitBreakerLayer::builder().build().unwrap();
    let health = breaker.handle();
    let mut service =
        ServiceBuilder::new()
            .layer(breaker)
            .service(service_fn(|n: u64| async move {
                if n.is_multiple_of(7) {
                    Ok(n)
                } else {
                    Err::<u64, BoxError>("upstream error".into())
                }
            }));
    let mut served = 0;
    for n in 0..700 {
        served += u64::from(service.ready().await.unwrap().call(n).await.is_ok());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(served, 100, "every call the dependency could serve");
    assert_eq!(health.snapshot().state, State::Closed);
}
