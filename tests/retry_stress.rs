//! Many tasks on a two-worker runtime send requests through clones of one
//! retry layer, with random cancellation: the shared budget holds its bound
//! under load, and every finished request is counted exactly once. Nothing
//! sleeps: the backoff is zero and the inner service yields instead.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use palisade::retry::{Backoff, RetryBudget, RetryLayer};
use support::stress::{bounded, hammer};
use support::yielder::{Counters, Yielder};
use tower::Layer;

const TASKS: u64 = 16;
const REQUESTS: u64 = 400;

fn layer(budget: RetryBudget, attempts: u32) -> RetryLayer {
    RetryLayer::builder()
        .max_attempts(attempts)
        .backoff(Backoff::constant(Duration::ZERO))
        .budget(budget)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_budget_holds_its_bound_when_everything_fails() {
    // Ten tokens, none earned back: a failure spends one before the check,
    // so only the failures that leave 9, 8, 7 or 6 tokens may retry,
    // however the tasks interleave.
    let layer = layer(RetryBudget::tokens(10, 0.1), 5);
    let counters = Arc::new(Counters::default());
    let svc = layer.layer(Yielder(counters.clone()));
    let tally = bounded(hammer(svc, TASKS, REQUESTS, 1, 7)).await;

    let c = layer.handle().counts();
    assert!(c.retries <= 4, "{c:?}");
    assert!(c.budget_refusals > 0, "{c:?}");
    assert_eq!(tally.succeeded, 0);
    assert_eq!(c.failed_without_retry + c.failed_after_retry, tally.failed);
    assert_eq!(c.succeeded_without_retry + c.succeeded_after_retry, 0);
    let calls = counters.calls.load(Ordering::SeqCst) as u64;
    assert!(calls <= TASKS * REQUESTS + c.retries, "{calls} calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_budget_refills_under_mixed_load_and_counts_every_request_once() {
    // One request in eight fails every attempt, spending one token per
    // attempt; the others earn a tenth each. Retried failures spend faster
    // than successes earn, so the bucket hovers around half and the budget
    // both grants and refuses.
    let layer = layer(RetryBudget::tokens(10, 0.1), 3);
    let counters = Arc::new(Counters::default());
    let svc = layer.layer(Yielder(counters.clone()));
    let tally = bounded(hammer(svc, TASKS, REQUESTS, 8, 11)).await;

    let c = layer.handle().counts();
    assert_eq!(
        c.succeeded_without_retry + c.succeeded_after_retry,
        tally.succeeded
    );
    assert_eq!(c.failed_without_retry + c.failed_after_retry, tally.failed);
    assert_eq!(
        c.succeeded_after_retry, 0,
        "a failing request fails throughout"
    );
    assert!(c.retries > 4, "successes refill the bucket: {c:?}");
    assert!(c.budget_refusals > 0, "{c:?}");
    // A retry is granted only while fewer than five tokens are missing
    // after its failure's spend, so (the deficit, capped at five, rising a
    // whole token per granted retry and falling a tenth per success)
    // retries ≤ 5 + successes / 10. A success landing between another
    // task's spend and its check can let one more through: allow one per
    // task. Without a budget there would be two retries per failure.
    let bound = 5 + tally.succeeded / 10 + TASKS;
    assert!(c.retries <= bound, "{c:?}, bound {bound}");
    assert!(2 * tally.failed > bound, "the bound is a real limit here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windowed_budget_holds_its_ratio_under_load() {
    // No reserve, a fifth of the requests: every first attempt deposits,
    // every retry withdraws five deposits' worth. Racing threads may each
    // take the last unit once (two workers: two at most at any moment).
    // The ttl is long enough that nothing expires during the run.
    let layer = layer(RetryBudget::windowed(Duration::from_secs(60), 0, 0.2), 2);
    let counters = Arc::new(Counters::default());
    let svc = layer.layer(Yielder(counters.clone()));
    let tally = bounded(hammer(svc, TASKS, REQUESTS, 1, 13)).await;

    let c = layer.handle().counts();
    let requests = TASKS * REQUESTS - tally.cancelled;
    assert!(c.retries > 0, "{c:?}");
    assert!(c.retries <= TASKS * REQUESTS / 5 + 2, "{c:?}");
    assert!(c.budget_refusals > 0, "{c:?}");
    assert_eq!(c.failed_without_retry + c.failed_after_retry, tally.failed);
    assert!(tally.failed <= requests);
}
