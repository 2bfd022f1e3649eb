//! Many tasks on a multi-thread runtime call one adaptive limiter while its
//! limit moves, and are cancelled at random points; afterwards every slot
//! has come back, the limit is within its bounds and every count adds up
//! (AC-3). Nothing here sleeps: the inner service yields instead.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use palisade::ErrorKind;
use palisade::adaptive::AdaptiveLayer;
use support::yielder::{Counters, FAIL, Yielder};
use support::{XorShift, cancel_after};
use tower::{Layer, Service, ServiceExt};

const TASKS: u64 = 64;
const CALLS_PER_TASK: u64 = 200;
const MIN_LIMIT: usize = 2;
const MAX_LIMIT: usize = 16;

#[derive(Default, Debug, PartialEq, Eq)]
struct Tally {
    answered: u64,
    dropped: u64,
    rejected: u64,
    cancelled: u64,
}

async fn hammer(layer: AdaptiveLayer, seed: u64) {
    tokio::time::timeout(Duration::from_secs(120), run(layer, seed))
        .await
        .expect("the stress run stalled");
}

async fn run(layer: AdaptiveLayer, seed: u64) {
    let counters = Arc::new(Counters::default());
    let handle = layer.handle();
    let svc = layer.layer(Yielder(counters.clone()));

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let mut svc = svc.clone();
        let mut rng = XorShift::new(seed ^ (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            for i in 0..CALLS_PER_TASK {
                // A third of the calls run to the end; the rest are dropped
                // after 1 to 12 polls, wherever that falls. One call in
                // eight fails: a drop, so the limit keeps moving both ways.
                let polls = match rng.below(3) {
                    0 => u64::MAX,
                    _ => 1 + rng.below(12),
                };
                let mut request = t * CALLS_PER_TASK + i;
                if rng.below(8) == 0 {
                    request |= FAIL;
                }
                let call = async {
                    svc.ready().await?;
                    svc.call(request).await
                };
                match cancel_after(polls, call).await {
                    None => tally.cancelled += 1,
                    Some(Ok(_)) => tally.answered += 1,
                    Some(Err(err)) => match ErrorKind::of(&err) {
                        ErrorKind::BulkheadFull(_) => tally.rejected += 1,
                        ErrorKind::Inner(_) => tally.dropped += 1,
                        _ => panic!("unexpected error: {err}"),
                    },
                }
                if rng.below(4) == 0 {
                    // Start over with a fresh clone, dropping one that may
                    // hold a reserved slot.
                    svc = svc.clone();
                }
            }
            tally
        }));
    }

    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await.unwrap();
        total.answered += tally.answered;
        total.dropped += tally.dropped;
        total.rejected += tally.rejected;
        total.cancelled += tally.cancelled;
    }
    drop(svc);

    assert_eq!(
        total.answered + total.dropped + total.rejected + total.cancelled,
        TASKS * CALLS_PER_TASK
    );
    assert!(
        total.answered > 0 && total.dropped > 0 && total.rejected > 0 && total.cancelled > 0,
        "{total:?}"
    );
    assert_eq!(handle.in_flight(), 0, "every slot came back: {total:?}");
    assert_eq!(handle.rejected(), total.rejected);
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
    hammer(layer, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gradient_slots_all_come_back_under_cancellation() {
    let layer = AdaptiveLayer::gradient()
        .limits(8, MIN_LIMIT, MAX_LIMIT)
        .build()
        .unwrap();
    hammer(layer, 2).await;
}
