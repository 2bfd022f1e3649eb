//! Many tasks on a two-worker runtime call clones of one rate-limited
//! service at once, with random cancellation: the limiter admits exactly
//! its limit, never one more, and refuses the rest. The window is far longer
//! than the run, so no permit frees while it lasts; nothing sleeps.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade::BoxError;
use palisade::rate_limit::{RateLimitBuilder, RateLimitLayer};
use support::stress::hammer;
use support::yielder::{Counters, Yielder};
use tower::{Layer, Service, ServiceExt};

const TASKS: u64 = 16;
const CALLS: u64 = 200;
const LIMIT: u64 = 500;

/// No call fails in the inner service: one in `u64::MAX` asks it to.
const NEVER: u64 = u64::MAX;

async fn admits_exactly_its_limit(builder: RateLimitBuilder, seed: u64) {
    let layer = builder.build().unwrap();
    let handle = layer.handle();
    let counters = Arc::new(Counters::default());
    let tally = hammer(
        layer.layer(Yielder(counters.clone())),
        TASKS,
        CALLS,
        NEVER,
        seed,
    )
    .await;
    let (answered, refused, cancelled) = (tally.succeeded, tally.refused, tally.cancelled);
    assert_eq!(tally.failed, 0, "every error is a rate-limit refusal");
    // A call is sent in the poll that takes its permit, so the inner
    // service sees exactly the admitted calls, cancelled ones included.
    let sent = counters.calls.load(Ordering::SeqCst) as u64;
    assert_eq!(sent, LIMIT, "{:?}", handle.kind());
    assert!(answered <= sent);
    assert_eq!(answered + refused + cancelled, TASKS * CALLS);
    assert_eq!(handle.refused(), refused);
    assert_eq!(handle.state().remaining, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sliding_log_admits_exactly_its_limit_under_contention() {
    admits_exactly_its_limit(
        RateLimitLayer::sliding_log(LIMIT, Duration::from_secs(36_000)),
        1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcra_admits_exactly_its_burst_under_contention() {
    admits_exactly_its_limit(RateLimitLayer::gcra(LIMIT, Duration::from_secs(36_000)), 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sliding_window_admits_exactly_its_limit_within_one_window() {
    // Within its first window the counter has no previous count to weigh,
    // so it is exact too.
    admits_exactly_its_limit(
        RateLimitLayer::sliding_window(LIMIT, Duration::from_secs(36_000)),
        3,
    )
    .await;
}

/// Waiting callers, many tasks, random cancellation, on tokio's paused
/// clock (one thread: waits are timers, and tests never sleep in real
/// time). No waiter is lost (a lost wake-up stalls the run, which the
/// bound turns into a failure), the rate holds, and the queue empties.
#[tokio::test(start_paused = true)]
async fn waiters_under_cancellation_keep_the_rate_and_the_queue_drains() {
    let layer = RateLimitLayer::gcra(10, Duration::from_millis(100))
        .max_wait(Duration::from_millis(100))
        .build()
        .unwrap();
    let handle = layer.handle();
    let counters = Arc::new(Counters::default());
    let start = tokio::time::Instant::now();
    let run = hammer(
        layer.layer(Yielder(counters.clone())),
        TASKS,
        CALLS,
        NEVER,
        4,
    );
    let tally = tokio::time::timeout(Duration::from_secs(3_600), run)
        .await
        .expect("a waiter was never woken");
    let (answered, refused, cancelled) = (tally.succeeded, tally.refused, tally.cancelled);
    assert_eq!(tally.failed, 0);
    let elapsed = start.elapsed();
    let sent = counters.calls.load(Ordering::SeqCst) as u64;
    // 10 at once, then one per 10 ms.
    let most = 10 + elapsed.as_millis() as u64 / 10;
    assert!(sent <= most, "{sent} sent in {elapsed:?}");
    assert!(
        answered > 0 && refused > 0 && cancelled > 0,
        "{answered} answered, {refused} refused, {cancelled} cancelled"
    );
    assert_eq!(answered + refused + cancelled, TASKS * CALLS);
    assert_eq!(handle.waiting(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_limiter_admits_exactly_each_keys_limit_under_contention() {
    // The requests are 0 to 6, each its own key; every key gets hundreds of
    // calls, and admits exactly its 50, however they race.
    const PER_KEY: u64 = 50;
    let layer = RateLimitLayer::sliding_log(PER_KEY, Duration::from_secs(36_000))
        .keyed(|request: &u64| *request)
        .build()
        .unwrap();
    let handle = layer.handle();
    let counters = Arc::new(Counters::default());
    let tally = hammer(
        layer.layer(Yielder(counters.clone())),
        TASKS,
        CALLS,
        NEVER,
        5,
    )
    .await;
    let (answered, refused, cancelled) = (tally.succeeded, tally.refused, tally.cancelled);
    assert_eq!(tally.failed, 0);
    let sent = counters.calls.load(Ordering::SeqCst) as u64;
    assert_eq!(sent, 7 * PER_KEY);
    assert_eq!(answered + refused + cancelled, TASKS * CALLS);
    assert_eq!(handle.refused(), refused);
    assert_eq!(handle.len(), 7);
    for key in 0..7 {
        assert_eq!(handle.state(&key).remaining, 0, "key {key}");
    }
}

/// A keyed limiter whose table is full, for each algorithm: every map
/// holds a key busy for the whole run, so the seven keys the tasks call
/// are all decided through the overflow sketch, under contention. No key
/// is admitted more than its limit, and none loses more than a few permits
/// to the others sharing its cells (it would need every one of its four
/// cells shared with a key that spent them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_keyed_limiter_admits_no_key_more_than_its_limit_under_contention() {
    const PER_KEY: u64 = 50;
    let window = Duration::from_secs(36_000);
    let kinds = [
        RateLimitLayer::sliding_window(PER_KEY, window),
        RateLimitLayer::sliding_log(PER_KEY, window),
        RateLimitLayer::gcra(PER_KEY, window),
    ];
    for (seed, builder) in (6..).zip(kinds) {
        let layer = builder
            .keyed(|request: &u64| *request)
            .max_keys(16)
            .build()
            .unwrap();
        let handle = layer.handle();
        let sent: Arc<[AtomicU64; 7]> = Arc::default();
        let counted = sent.clone();
        let mut svc = layer.layer(tower::service_fn(move |key: u64| {
            // Counted when called, so a call cancelled afterwards counts.
            if let Some(count) = counted.get(key as usize) {
                count.fetch_add(1, Ordering::SeqCst);
            }
            async move { Ok::<_, BoxError>(key) }
        }));
        let mut filler = 1_000;
        while handle.len() < 16 {
            svc.ready().await.unwrap().call(filler).await.unwrap();
            filler += 1;
        }
        let tally = hammer(svc, TASKS, CALLS, NEVER, seed).await;
        assert_eq!(tally.failed, 0);
        assert_eq!(tally.total(), TASKS * CALLS);
        assert_eq!(handle.len(), 16, "the table stayed full");
        assert!(handle.overflow_calls() >= tally.succeeded + tally.refused);
        for (key, sent) in sent.iter().enumerate() {
            let sent = sent.load(Ordering::SeqCst);
            assert!(
                (PER_KEY - 5..=PER_KEY).contains(&sent),
                "key {key}: {sent} admitted of {PER_KEY}"
            );
        }
    }
}
