//! Many tasks on a multi-thread runtime call one adaptive limiter while its
//! limit moves, and are cancelled at random points; afterwards every slot
//! has come back, the limit is within its bounds and every count adds up
//! (AC-3). Nothing here sleeps: the inner service yields instead.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use palisade::adaptive::AdaptiveLayer;
use support::stress::{bounded, hammer};
use support::yielder::{Counters, Yielder};
use tower::Layer;

const TASKS: u64 = 64;
const CALLS_PER_TASK: u64 = 200;
const MIN_LIMIT: usize = 2;
const MAX_LIMIT: usize = 16;

/// The shared harness's run (a quarter of the calls dropped after 1 to 12
/// polls; one in eight fails, a drop, so the limit keeps moving both ways),
/// then every slot and count checked.
async fn run(layer: AdaptiveLayer, seed: u64) {
    let counters = Arc::new(Counters::default());
    let handle = layer.handle();
    let svc = layer.layer(Yielder(counters.clone()));
    let total = bounded(hammer(svc, TASKS, CALLS_PER_TASK, 8, seed)).await;

    assert_eq!(total.total(), TASKS * CALLS_PER_TASK);
    assert!(
        total.succeeded > 0 && total.failed > 0 && total.refused > 0 && total.cancelled > 0,
        "{total:?}"
    );
    assert_eq!(handle.in_flight(), 0, "every slot came back: {total:?}");
    assert_eq!(handle.rejected(), total.refused);
    let limit = handle.limit();
    assert!((MIN_LIMIT..=MAX_LIMIT).contains(&limit), "limit {limit}");
    let max_seen = counters.max_in_flight.load(Ordering::SeqCst);
    assert!(max_seen <= MAX_LIMIT, "{max_seen} calls ran at once");
    assert_eq!(counters.in_flight.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aimd_slots_all_come_back_under_cancellation() {
    let layer = AdaptiveLayer::aimd()
        .limits(8, MIN_LIMIT, MAX_LIMIT)
        .build()
        .unwrap();
    run(layer, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gradient_slots_all_come_back_under_cancellation() {
    let layer = AdaptiveLayer::gradient()
        .limits(8, MIN_LIMIT, MAX_LIMIT)
        .build()
        .unwrap();
    run(layer, 2).await;
}
