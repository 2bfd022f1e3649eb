//! The chaos layer, under tokio's paused clock.

mod support;

use std::time::Duration;

use palisade::chaos::{ChaosLayer, InjectedFault};
use palisade::{BoxError, ErrorKind};
use support::{Answer, Probe};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

/// `calls` calls through a fresh service of `layer`: (failed, total time).
async fn run(layer: &ChaosLayer, calls: u64) -> (u64, Duration) {
    let probe = Probe::new(Answer::Now);
    let mut svc = layer.layer(probe.clone());
    let start = Instant::now();
    let mut failed = 0;
    for i in 0..calls {
        match svc.ready().await.unwrap().call(i).await {
            Ok(answer) => assert_eq!(answer, i),
            Err(err) => {
                assert!(err.downcast_ref::<InjectedFault>().is_some(), "{err}");
                assert!(matches!(ErrorKind::of(&err), ErrorKind::Inner(_)));
                failed += 1;
            }
        }
    }
    assert_eq!(
        probe.calls() as u64,
        calls - failed,
        "a failed call never reaches it"
    );
    (failed, start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn no_fault_and_certain_faults_are_exact() {
    let layer = ChaosLayer::builder().seed(1).build();
    let faults = layer.handle();
    assert_eq!(run(&layer, 1_000).await, (0, Duration::ZERO));
    faults.set_error_rate(1.0).unwrap();
    assert_eq!(run(&layer, 1_000).await.0, 1_000);
    faults.set_error_rate(0.0).unwrap();
    faults.set_latency(1.0, Duration::from_millis(5)).unwrap();
    assert_eq!(run(&layer, 100).await, (0, Duration::from_millis(500)));
    faults.clear();
    faults.set_outage(true);
    assert_eq!(run(&layer, 10).await.0, 10);
    faults.set_outage(false);
    assert_eq!(run(&layer, 10).await.0, 0);
    assert_eq!((faults.failed(), faults.delayed()), (1_010, 100));
}

#[tokio::test(start_paused = true)]
async fn rates_hold_within_statistical_bounds() {
    // 20 000 calls at 30 %: the standard deviation is 65 calls; allow 5.
    let layer = ChaosLayer::builder().seed(42).build();
    let faults = layer.handle();
    faults.set_error_rate(0.3).unwrap();
    let (failed, _) = run(&layer, 20_000).await;
    assert!((6_000 - 325..=6_000 + 325).contains(&failed), "{failed}");
    // Latency on a quarter of the rest: each delayed call adds 1 ms.
    faults.set_error_rate(0.0).unwrap();
    faults.set_latency(0.25, Duration::from_millis(1)).unwrap();
    let (_, took) = run(&layer, 20_000).await;
    let delayed = took.as_millis() as u64;
    assert!((5_000 - 310..=5_000 + 310).contains(&delayed), "{delayed}");
}

#[tokio::test(start_paused = true)]
async fn a_seed_repeats_the_faults() {
    let pattern = |seed| async move {
        let layer = ChaosLayer::builder().seed(seed).build();
        layer.handle().set_error_rate(0.5).unwrap();
        let mut svc = layer.layer(Probe::new(Answer::Now));
        let mut outcomes = Vec::new();
        for i in 0..64 {
            outcomes.push(svc.ready().await.unwrap().call(i).await.is_ok());
        }
        outcomes
    };
    assert_eq!(pattern(9).await, pattern(9).await);
    assert_ne!(pattern(9).await, pattern(10).await);
}

#[tokio::test(start_paused = true)]
async fn a_failed_call_does_not_touch_the_inner_service_and_a_delay_holds_the_call() {
    let layer = ChaosLayer::new();
    let faults = layer.handle();
    let probe = Probe::new(Answer::Now);
    let mut svc = layer.layer(probe.clone());
    faults.set_outage(true);
    let polls = probe.ready_polls();
    assert!(svc.ready().await.unwrap().call(1).await.is_err());
    assert_eq!(probe.ready_polls(), polls, "readiness untouched");
    faults.clear();
    faults.set_latency(1.0, Duration::from_secs(1)).unwrap();
    let start = Instant::now();
    assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap(), 2);
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_supplied_response_stands_in_for_the_service() {
    let layer = ChaosLayer::builder()
        .inject(|| Ok::<u64, BoxError>(500))
        .build();
    layer.handle().set_error_rate(1.0).unwrap();
    let mut svc = layer.layer(Probe::new(Answer::Now));
    assert_eq!(svc.ready().await.unwrap().call(7).await.unwrap(), 500);
}

/// `call` without `poll_ready` has no fault drawn for it: the caller's
/// bug, reported as such (not as an injected fault), and nothing sent.
#[tokio::test(start_paused = true)]
async fn a_call_without_readiness_is_not_ready_and_not_sent() {
    let layer = ChaosLayer::builder().name("payments").seed(1).build();
    let probe = Probe::new(Answer::Now);
    let mut svc = layer.layer(probe.clone());
    let err = svc.call(1).await.unwrap_err();
    let ErrorKind::NotReady(e) = ErrorKind::of(&err) else {
        panic!("expected NotReady, got {err}");
    };
    assert_eq!((e.layer(), e.name()), ("chaos", "payments"));
    assert_eq!(probe.calls(), 0);
    assert_eq!(layer.handle().failed(), 0, "no fault was injected");
    assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn chaos_keeps_the_tower_contract() {
    support::check_tower_contract(|probe| ChaosLayer::new().layer(probe)).await;
}

#[test]
fn rates_outside_zero_to_one_are_refused_and_change_nothing() {
    let faults = ChaosLayer::new().handle();
    faults.set_error_rate(0.5).unwrap();
    for bad in [-0.1, 1.5, f64::NAN] {
        assert_eq!(
            faults.set_error_rate(bad).unwrap_err().field(),
            "error_rate"
        );
        assert_eq!(
            faults
                .set_latency(bad, Duration::from_secs(1))
                .unwrap_err()
                .field(),
            "latency_rate"
        );
    }
    assert_eq!(faults.faults().error_rate, 0.5);
    assert_eq!(faults.faults().latency_rate, 0.0);
}
