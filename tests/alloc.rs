//! Proves the success paths allocate nothing: a counting global allocator
//! counts this thread's allocations while a layer handles calls.

#[path = "support/counting.rs"]
mod counting;
#[path = "support/noop.rs"]
mod noop;
#[cfg(feature = "metrics")]
#[path = "support/recorder.rs"]
mod recorder;

use std::time::Duration;

use counting::allocations;
use noop::{Noop, SecondPoll, call_once};
use palisade::bulkhead::BulkheadLayer;
use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::fallback::{FallbackLayer, Reason, Unmarked, Value};
use palisade::rate_limit::RateLimitLayer;
use palisade::retry::{RetryBudget, RetryLayer};
use palisade::timeout::TimeoutLayer;
use tower::{Layer, Service};

const CALLS: u64 = 1_000;

/// Runs `CALLS` calls inside a tokio runtime (a timeout needs its timer) and
/// returns the allocations they made, after one warm-up call.
fn allocations_per_run<S>(mut svc: S) -> u64
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    call_once(&mut svc, 0); // warm-up
    allocations(|| {
        for i in 0..CALLS {
            call_once(&mut svc, i);
        }
    })
}

fn timeout() -> TimeoutLayer {
    TimeoutLayer::builder()
        .name("alloc")
        .timeout(Duration::from_secs(1))
        .ready_timeout(Duration::from_secs(1))
        .build()
        .unwrap()
}

fn bulkhead() -> BulkheadLayer {
    BulkheadLayer::new(8).unwrap()
}

fn fallback() -> FallbackLayer<Value<u64>, palisade::classify::DefaultClassifier, Unmarked> {
    FallbackLayer::builder()
        .on(Reason::CircuitOpen)
        .on(Reason::Failure)
        .value(0)
        .mark(Unmarked)
        .build()
        .unwrap()
}

#[test]
fn the_counter_sees_allocations() {
    let n = allocations(|| drop(std::hint::black_box(Box::new(1u64))));
    assert_eq!(
        n, 1,
        "the counting allocator must count, or the tests below prove nothing"
    );
}

#[test]
fn timeout_success_path_allocates_nothing() {
    assert_eq!(allocations_per_run(timeout().layer(Noop)), 0);
}

#[test]
fn timeout_with_an_armed_timer_allocates_nothing() {
    assert_eq!(allocations_per_run(timeout().layer(SecondPoll)), 0);
}

#[test]
fn bulkhead_success_path_allocates_nothing() {
    assert_eq!(allocations_per_run(bulkhead().layer(Noop)), 0);
}

#[test]
fn a_waiting_bulkhead_with_free_slots_allocates_nothing() {
    let waiting = || {
        BulkheadLayer::builder()
            .max_concurrent(8)
            .max_wait(Duration::from_millis(50))
            .build()
            .unwrap()
    };
    assert_eq!(allocations_per_run(waiting().layer(Noop)), 0);
    assert_eq!(
        allocations_per_run(timeout().layer(waiting().layer(Noop))),
        0
    );
}

#[test]
fn both_layers_stacked_allocate_nothing() {
    let svc = timeout().layer(bulkhead().layer(Noop));
    assert_eq!(allocations_per_run(svc), 0);
}

#[test]
fn closed_breaker_success_path_allocates_nothing() {
    let count = CircuitBreakerLayer::builder().count_window(100).build();
    assert_eq!(allocations_per_run(count.unwrap().layer(Noop)), 0);
    // A time window with slow-call detection reads the clock, and records
    // into buckets: still nothing on the heap.
    let timed = CircuitBreakerLayer::builder()
        .time_window(Duration::from_secs(30))
        .slow_calls(Duration::from_secs(1), 0.5)
        .build();
    assert_eq!(allocations_per_run(timed.unwrap().layer(Noop)), 0);
}

#[test]
fn retry_success_path_allocates_nothing() {
    for budget in [
        RetryBudget::default(),
        RetryBudget::windowed(Duration::from_secs(10), 10, 0.2),
    ] {
        let retry = RetryLayer::builder().budget(budget).build().unwrap();
        assert_eq!(allocations_per_run(retry.layer(Noop)), 0, "{budget:?}");
    }
}

/// A request whose first attempt answers before the hedge delay sends no
/// hedge and allocates nothing: with a fixed delay (its timer made but
/// never registered), and with a learned delay (here never learned: a
/// no-op service answers within a microsecond, which is not hedged, so
/// each request is timed and recorded, under the histogram's lock).
#[cfg(feature = "hedge")]
#[test]
fn a_request_answered_before_its_hedge_allocates_nothing() {
    use palisade::hedge::HedgeLayer;
    let fixed = HedgeLayer::after(Duration::from_millis(10))
        .build()
        .unwrap();
    assert_eq!(allocations_per_run(fixed.layer(Noop)), 0);
    let learned = HedgeLayer::at_percentile(0.9).build().unwrap();
    assert_eq!(allocations_per_run(learned.layer(Noop)), 0);
}

#[test]
fn an_admitted_call_through_each_rate_limiter_allocates_nothing() {
    let most = (1 << 40) - 1;
    for builder in [
        RateLimitLayer::sliding_window(most, Duration::from_secs(1)),
        // The log allocates its 2^20 entries once, when it is built.
        RateLimitLayer::sliding_log(1 << 20, Duration::from_millis(1)),
        RateLimitLayer::gcra(most, Duration::from_secs(1)),
        // The windows' counts are allocated once, when they are built.
        RateLimitLayer::fixed_window(most, Duration::from_secs(1)),
        RateLimitLayer::segmented_window(most, Duration::from_secs(1), 64),
    ] {
        let layer = builder.build().unwrap();
        let kind = layer.handle().kind();
        assert_eq!(allocations_per_run(layer.layer(Noop)), 0, "{kind:?}");
    }
}

#[test]
fn an_admitted_call_for_a_known_key_allocates_nothing() {
    let layer = RateLimitLayer::gcra((1 << 40) - 1, Duration::from_secs(1))
        .keyed(|request: &u64| *request % 4)
        .build()
        .unwrap();
    // The warm-up call makes key 0; the run calls keys 0 to 3, so make
    // them all first.
    let mut svc = layer.layer(Noop);
    for key in 0..4 {
        call_once(&mut svc, key);
    }
    assert_eq!(allocations_per_run(svc), 0);
}

#[test]
fn a_call_for_a_known_key_through_a_keyed_breaker_allocates_nothing() {
    let layer = CircuitBreakerLayer::builder()
        .name("alloc")
        .keyed(|request: &u64| *request % 4)
        .build()
        .unwrap();
    let mut svc = layer.layer(Noop);
    for key in 0..4 {
        call_once(&mut svc, key);
    }
    assert_eq!(allocations_per_run(svc), 0);
}

#[cfg(feature = "chaos")]
#[test]
fn chaos_with_no_fault_set_allocates_nothing() {
    let chaos = palisade::chaos::ChaosLayer::new();
    assert_eq!(allocations_per_run(chaos.layer(Noop)), 0);
}

/// A healthy upstream, probability 0: the decision is one load, the
/// success a clock read and a count in its bucket; and with failures in
/// the window (below the threshold), a decision reads every bucket.
#[cfg(feature = "throttle")]
#[test]
fn throttle_success_path_allocates_nothing() {
    use palisade::throttle::ThrottleLayer;
    let layer = ThrottleLayer::builder().build().unwrap();
    assert_eq!(allocations_per_run(layer.layer(Noop)), 0);
    // A failure in the window: each decision now sums the window (it stays
    // at probability 0, as the accepts outweigh it). The window is an hour,
    // so that the failure is still in it however slowly the test runs (it
    // runs on the real clock: the allocator counts this thread only).
    let layer = ThrottleLayer::builder()
        .window(Duration::from_secs(3_600))
        .build()
        .unwrap();
    let failing = tower::service_fn(|_: u64| async { Err::<u64, &str>("failed") });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        use tower::ServiceExt;
        for i in 0..10 {
            layer.layer(Noop).oneshot(i).await.unwrap();
        }
        let _ = layer.layer(failing).oneshot(0).await;
    });
    assert_eq!(allocations_per_run(layer.layer(Noop)), 0);
    let handle = layer.handle();
    assert!(handle.requests() > 1_000);
    assert_eq!(
        handle.requests(),
        handle.accepts() + 1,
        "the failure was still in the window"
    );
    assert_eq!(handle.probability(), 0.0);
}

/// A success through a fallback without a cache: classified, passed on,
/// nothing kept; also in front of a breaker, as it is placed.
#[test]
fn fallback_pass_through_allocates_nothing() {
    assert_eq!(allocations_per_run(fallback().layer(Noop)), 0);
    let breaker = CircuitBreakerLayer::builder().build().unwrap();
    assert_eq!(
        allocations_per_run(fallback().layer(breaker.layer(Noop))),
        0
    );
}

/// The adaptive limit's success path: a compare-and-swap for the slot, a
/// clock read, and the algorithm's update under its lock; for both
/// algorithms, and for a call that must wait for its answer.
#[cfg(feature = "adaptive")]
#[test]
fn adaptive_success_path_allocates_nothing() {
    use palisade::adaptive::AdaptiveLayer;
    let aimd = || AdaptiveLayer::aimd().build().unwrap();
    let gradient = || AdaptiveLayer::gradient().build().unwrap();
    assert_eq!(allocations_per_run(aimd().layer(Noop)), 0);
    assert_eq!(allocations_per_run(gradient().layer(Noop)), 0);
    assert_eq!(allocations_per_run(gradient().layer(SecondPoll)), 0);
}

/// hyper clones the whole stack for every request.
#[test]
fn a_fresh_clone_per_call_allocates_nothing() {
    let breaker = CircuitBreakerLayer::builder().build().unwrap();
    let retry = RetryLayer::builder().build().unwrap();
    let svc = retry.layer(breaker.layer(timeout().layer(bulkhead().layer(Noop))));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    // Warm-up: arc-swap gives each thread its own slot on first use, once.
    call_once(&mut svc.clone(), 0);
    let n = allocations(|| {
        for i in 0..CALLS {
            call_once(&mut svc.clone(), i);
        }
    });
    assert_eq!(n, 0);
}

/// With the `metrics` feature and a recorder installed, the success paths
/// still allocate nothing: the handles are made at build time, and a call
/// only updates them.
#[cfg(feature = "metrics")]
#[test]
fn with_a_metrics_recorder_the_success_paths_allocate_nothing() {
    let recorded = recorder::Recorded::default();
    let _recorder = metrics::set_default_local_recorder(&recorded);
    let breaker = CircuitBreakerLayer::builder()
        .count_window(100)
        .build()
        .unwrap();
    let retry = RetryLayer::builder().build().unwrap();
    let limit = RateLimitLayer::sliding_window(1 << 30, Duration::from_secs(1))
        .build()
        .unwrap();
    let bulkhead = bulkhead();
    let fallback = fallback();
    assert_eq!(allocations_per_run(breaker.layer(Noop)), 0);
    assert_eq!(allocations_per_run(bulkhead.layer(Noop)), 0);
    assert_eq!(allocations_per_run(retry.layer(Noop)), 0);
    assert_eq!(allocations_per_run(limit.layer(Noop)), 0);
    assert_eq!(allocations_per_run(fallback.layer(Noop)), 0);
    #[cfg(feature = "adaptive")]
    {
        let adaptive = palisade::adaptive::AdaptiveLayer::gradient()
            .build()
            .unwrap();
        assert_eq!(allocations_per_run(adaptive.layer(Noop)), 0);
    }
    // The metrics did move: the handles are the recorder's.
    assert!(
        recorded.counter(
            "palisade_circuit_breaker_calls_total{name=\"circuit_breaker\",outcome=\"success\"}"
        ) > 1_000
    );
}
