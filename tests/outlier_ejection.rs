//! Outlier ejection from palisade parts: a breaker built with
//! `eject_while_open` in front of each endpoint of tower's p2c balancer
//! takes a failing endpoint out of the rotation while it is open, and its
//! half-open probe puts it back once it heals. On tokio's paused clock.

use std::hash::{BuildHasherDefault, DefaultHasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use palisade::BoxError;
use palisade::circuit_breaker::{CircuitBreakerLayer, Handle, State};
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwma};
use tower::util::BoxService;
use tower::{Layer, Service, ServiceExt, service_fn};

const OPEN_FOR: Duration = Duration::from_secs(5);
/// The pause between two calls: 100 calls a second.
const PACE: Duration = Duration::from_millis(10);

/// One endpoint: answers its number, or fails while `sick`; counts the
/// calls it answered.
struct Endpoint {
    sick: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    breaker: Handle,
}

type Balanced = Balance<ServiceList<Vec<PeakEwma<BoxService<(), usize, BoxError>>>>, ()>;

/// Three endpoints behind p2c over peak-EWMA, each behind its own
/// ejecting breaker.
fn balanced() -> (Balanced, Vec<Endpoint>) {
    let mut endpoints = Vec::new();
    let mut services = Vec::new();
    for n in 0..3 {
        let sick = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let breaker = CircuitBreakerLayer::builder()
            .name(format!("endpoint-{n}"))
            .consecutive_failures(3)
            .open_for(OPEN_FOR)
            .half_open_probes(1)
            .eject_while_open()
            .build()
            .unwrap();
        endpoints.push(Endpoint {
            sick: sick.clone(),
            served: served.clone(),
            breaker: breaker.handle(),
        });
        let endpoint = service_fn(move |()| {
            let (sick, served) = (sick.clone(), served.clone());
            async move {
                if sick.load(Ordering::Relaxed) {
                    return Err::<usize, BoxError>(format!("endpoint {n} is down").into());
                }
                served.fetch_add(1, Ordering::Relaxed);
                Ok(n)
            }
        });
        let service = BoxService::new(breaker.layer(endpoint));
        services.push(PeakEwma::new(
            service,
            PACE,
            10e9,
            CompleteOnResponse::default(),
        ));
    }
    (
        Balance::from_rng(ServiceList::new(services), seeded()),
        endpoints,
    )
}

/// p2c's random draws, the same in every run: a test of what the balancer
/// does then does not depend on the luck of a run.
fn seeded() -> tower::util::rng::HasherRng<BuildHasherDefault<DefaultHasher>> {
    tower::util::rng::HasherRng::with_hasher(BuildHasherDefault::default())
}

/// `calls` calls at [`PACE`]; how many failed.
async fn run(balanced: &mut Balanced, calls: u64) -> u64 {
    let mut failed = 0;
    for _ in 0..calls {
        let ready = balanced.ready().await.expect("the balancer stays usable");
        if ready.call(()).await.is_err() {
            failed += 1;
        }
        tokio::time::sleep(PACE).await;
    }
    failed
}

#[tokio::test(start_paused = true)]
async fn a_failing_endpoint_is_ejected_while_its_breaker_is_open_then_probed_back() {
    let (mut balanced, endpoints) = balanced();
    let sick = &endpoints[2];
    sick.sick.store(true, Ordering::Relaxed);
    // Until its breaker opens, the sick endpoint fails its share of calls.
    let mut before_open = 0;
    while sick.breaker.state() != State::Open {
        before_open += 1;
        assert!(
            before_open < 1_000,
            "the sick endpoint's breaker never opened"
        );
        run(&mut balanced, 1).await;
    }
    // Then it is out of the rotation: 20 s of calls, four open periods, and
    // only its probes (one per period) fail.
    let failed = run(&mut balanced, 2_000).await;
    assert!(failed * 100 < 2_000, "{failed} of 2000 calls failed");
    assert!(
        failed >= 1,
        "its probes should still have gone to it: {failed} failed"
    );
    let healthy: u64 = endpoints[..2]
        .iter()
        .map(|e| e.served.load(Ordering::Relaxed))
        .sum();
    assert!(healthy >= 2_000 - failed, "{healthy}");

    // Healed: the next probe succeeds, the breaker closes, and the
    // endpoint takes its share again.
    sick.sick.store(false, Ordering::Relaxed);
    let failed = run(&mut balanced, 1_000).await;
    assert_eq!(failed, 0);
    assert_eq!(sick.breaker.state(), State::Closed);
    let served = sick.served.load(Ordering::Relaxed);
    assert!(served >= 100, "the healed endpoint served {served} of 1000");
}

#[tokio::test(start_paused = true)]
async fn without_ejection_an_open_breaker_fails_the_calls_sent_to_it() {
    // The same stack with a breaker that refuses at once: the balancer still
    // sends the sick endpoint its share, and each is refused.
    let mut services = Vec::new();
    for n in 0..3usize {
        let breaker = CircuitBreakerLayer::builder()
            .consecutive_failures(3)
            .open_for(OPEN_FOR)
            .half_open_probes(1)
            .build()
            .unwrap();
        let endpoint = service_fn(move |()| async move {
            if n == 2 {
                return Err::<usize, BoxError>("down".into());
            }
            Ok(n)
        });
        services.push(PeakEwma::new(
            BoxService::new(breaker.layer(endpoint)),
            PACE,
            10e9,
            CompleteOnResponse::default(),
        ));
    }
    let mut balanced: Balanced = Balance::from_rng(ServiceList::new(services), seeded());
    let failed = run(&mut balanced, 2_000).await;
    assert!(failed * 100 >= 2_000, "only {failed} of 2000 failed");
}
