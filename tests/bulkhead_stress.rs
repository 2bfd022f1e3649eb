//! Many tasks on a multi-thread runtime call one bulkhead and are cancelled
//! at random points; afterwards every slot has come back and every count is
//! exact. Nothing here sleeps: the inner service yields instead of waiting.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use palisade::ErrorKind;
use palisade::bulkhead::BulkheadLayer;
use support::yielder::{Counters, Yielder};
use support::{XorShift, cancel_after};
use tower::{Layer, Service, ServiceExt};

const TASKS: u64 = 64;
const CALLS_PER_TASK: u64 = 200;
const MAX_CONCURRENT: usize = 8;

#[derive(Default, Debug, PartialEq, Eq)]
struct Tally {
    answered: u64,
    rejected: u64,
    cancelled: u64,
}

/// A leaked slot would leave waiters stuck forever; this turns that hang
/// into a failure. It bounds the run, it does not time it.
async fn hammer(max_wait: Duration, seed: u64) -> Tally {
    tokio::time::timeout(Duration::from_secs(120), run(max_wait, seed))
        .await
        .expect("the stress run stalled: a slot was probably leaked")
}

async fn run(max_wait: Duration, seed: u64) -> Tally {
    let counters = Arc::new(Counters::default());
    let layer = BulkheadLayer::builder()
        .max_concurrent(MAX_CONCURRENT)
        .max_wait(max_wait)
        .build()
        .unwrap();
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
                // after 1 to 12 polls, wherever that falls (waiting for a
                // slot, holding one, or inside the inner call).
                let polls = match rng.below(3) {
                    0 => u64::MAX,
                    _ => 1 + rng.below(12),
                };
                let call = async {
                    svc.ready().await?;
                    svc.call(t * CALLS_PER_TASK + i).await
                };
                match cancel_after(polls, call).await {
                    None => tally.cancelled += 1,
                    Some(Ok(_)) => tally.answered += 1,
                    Some(Err(err)) => match ErrorKind::of(&err) {
                        ErrorKind::BulkheadFull(_) => tally.rejected += 1,
                        _ => panic!("unexpected error: {err}"),
                    },
                }
                if rng.below(4) == 0 {
                    // Sometimes start over with a fresh clone, dropping one
                    // that may hold a slot or a place in the queue.
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
        total.rejected += tally.rejected;
        total.cancelled += tally.cancelled;
    }
    drop(svc);

    assert_eq!(
        total.answered + total.rejected + total.cancelled,
        TASKS * CALLS_PER_TASK
    );
    assert!(total.answered > 0 && total.cancelled > 0, "{total:?}");
    assert_eq!(handle.in_flight(), 0, "every slot came back: {total:?}");
    assert_eq!(handle.available(), MAX_CONCURRENT);
    assert_eq!(handle.waiting(), 0);
    assert_eq!(handle.rejected(), total.rejected);
    let max_seen = counters.max_in_flight.load(Ordering::SeqCst);
    assert!(max_seen <= MAX_CONCURRENT, "{max_seen} calls ran at once");
    assert_eq!(counters.in_flight.load(Ordering::SeqCst), 0);
    // Every inner call either finished and was answered, or was cancelled.
    let calls = counters.calls.load(Ordering::SeqCst) as u64;
    let finished = counters.finished.load(Ordering::SeqCst) as u64;
    assert!(finished >= total.answered);
    assert!(calls - finished <= total.cancelled);
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fail_fast_slots_all_come_back_under_cancellation() {
    hammer(Duration::ZERO, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_slots_all_come_back_under_cancellation() {
    // Long enough that no wait runs out: every waiter is admitted or cancelled.
    let total = hammer(Duration::from_secs(3600), 2).await;
    assert_eq!(total.rejected, 0, "no wait ran out, so nothing was refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_waits_that_run_out_leave_nothing_behind() {
    hammer(Duration::from_micros(50), 3).await;
}
