//! Heap allocations per call, for every row of `benches/layers.rs` that has
//! a peer: palisade's layers beside tower's, tower-resilience's and
//! governor's, built and driven exactly as the benchmarks drive them.
//! `tests/alloc.rs` proves palisade's success paths allocate nothing; this
//! counts what each library allocates, with the same counting allocator,
//! and prints a markdown table.
//!
//! Run it with `cargo run --release --example alloc_peers`.

#[path = "../tests/support/counting.rs"]
mod counting;
#[path = "../tests/support/noop.rs"]
mod noop;
#[path = "../tests/support/peers.rs"]
mod peers;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use counting::allocations;
use noop::{Noop, SecondPoll, call_once};
use palisade::bulkhead::BulkheadLayer;
use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::fallback::{FallbackLayer, Reason, Unmarked};
use palisade::rate_limit::RateLimitLayer;
use palisade::retry::{RetryBudget, RetryLayer};
use palisade::timeout::TimeoutLayer;
use tower::retry::budget::TpsBudget;
use tower::{Layer, Service};
use tower_resilience::ratelimiter::WindowType;

/// The benchmarks' settings.
const TIMEOUT: Duration = Duration::from_secs(30);
const LIMIT: usize = 64;
const MOST: u64 = (1 << 40) - 1;

/// Calls counted per row, after one warm-up call.
const CALLS: u64 = 1_000;

/// Allocations per call of `call`, made `CALLS` times after a warm-up.
fn per_call(mut call: impl FnMut(u64)) -> f64 {
    call(0);
    let total = allocations(|| {
        for i in 0..CALLS {
            call(i);
        }
    });
    total as f64 / CALLS as f64
}

/// Allocations per successful call through `svc`.
fn success<S>(mut svc: S) -> f64
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    per_call(|i| {
        call_once(&mut svc, i);
    })
}

/// Allocations per refused call through `svc` (its error dropped after).
fn refusal<S>(mut svc: S) -> f64
where
    S: Service<u64, Response = u64>,
{
    per_call(|i| {
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
        let mut future = pin!(svc.call(i));
        let refused = matches!(future.as_mut().poll(&mut cx), Poll::Ready(Err(_)));
        assert!(refused, "the call should be refused");
    })
}

fn palisade_timeout() -> TimeoutLayer {
    TimeoutLayer::new(TIMEOUT).expect("valid timeout")
}

fn palisade_bulkhead() -> BulkheadLayer {
    BulkheadLayer::new(LIMIT).expect("valid limit")
}

fn palisade_breaker() -> palisade::circuit_breaker::CircuitBreakerBuilder {
    CircuitBreakerLayer::builder().count_window(100)
}

fn palisade_retry(budget: RetryBudget) -> palisade::retry::RetryLayer {
    RetryLayer::builder()
        .budget(budget)
        .build()
        .expect("valid retry")
}

fn tower_retry<S>(inner: S) -> tower::retry::Retry<peers::TowerPolicy, S> {
    let tps = TpsBudget::new(Duration::from_secs(10), 10, 0.2);
    tower::retry::Retry::new(peers::TowerPolicy(Arc::new(tps)), inner)
}

fn timeouts(rows: &mut Vec<(&'static str, f64)>) {
    rows.push((
        "timeout/tower",
        success(tower::timeout::Timeout::new(Noop, TIMEOUT)),
    ));
    rows.push((
        "timeout/tower_resilience",
        success(peers::time_limiter(TIMEOUT).layer(Noop)),
    ));
    rows.push(("timeout/palisade", success(palisade_timeout().layer(Noop))));
    rows.push((
        "timeout_armed/tower",
        success(tower::timeout::Timeout::new(SecondPoll, TIMEOUT)),
    ));
    rows.push((
        "timeout_armed/tower_resilience",
        success(peers::time_limiter(TIMEOUT).layer(SecondPoll)),
    ));
    rows.push((
        "timeout_armed/palisade",
        success(palisade_timeout().layer(SecondPoll)),
    ));
}

fn bulkheads_and_breakers(rows: &mut Vec<(&'static str, f64)>) {
    let limit = tower::limit::ConcurrencyLimit::new(Noop, LIMIT);
    rows.push(("bulkhead/tower_concurrency_limit", success(limit)));
    let fail_fast = peers::bulkhead_fail_fast(LIMIT).layer(Noop);
    rows.push(("bulkhead/tower_resilience_fail_fast", success(fail_fast)));
    let waiting = peers::bulkhead_waiting(LIMIT).layer(Noop);
    rows.push(("bulkhead/tower_resilience_waiting", success(waiting)));
    rows.push((
        "bulkhead/palisade",
        success(palisade_bulkhead().layer(Noop)),
    ));

    let closed = peers::breaker().build().expect("valid breaker");
    rows.push((
        "breaker/tower_resilience_closed_count",
        success(closed.layer(Noop)),
    ));
    let closed = palisade_breaker().build().expect("valid breaker");
    rows.push(("breaker/closed_count", success(closed.layer(Noop))));
}

fn open_breakers(rows: &mut Vec<(&'static str, f64)>, runtime: &tokio::runtime::Runtime) {
    let (open, handle) = peers::breaker()
        .wait_duration_in_open(Duration::from_secs(3_600))
        .build_with_handle()
        .expect("valid breaker");
    runtime.block_on(handle.force_open());
    rows.push((
        "breaker/tower_resilience_open_refusal",
        refusal(open.layer(Noop)),
    ));
    let open = palisade_breaker().build().expect("valid breaker");
    open.handle().open_for(Duration::from_secs(3_600));
    rows.push(("breaker/open_refusal", refusal(open.layer(Noop))));
}

/// The adaptive limits (AIMD, the same bounds) and the hedges (the first
/// attempt answering at once), where their features are on.
fn adaptives_and_hedges(rows: &mut Vec<(&'static str, f64)>) {
    #[cfg(feature = "adaptive")]
    {
        let aimd = tower_resilience::adaptive::Aimd::builder()
            .initial_limit(64)
            .min_limit(1)
            .max_limit(64)
            .build()
            .expect("valid limit");
        let peer = tower_resilience::adaptive::AdaptiveLimiterLayer::new(aimd);
        rows.push(("adaptive/tower_resilience_aimd", success(peer.layer(Noop))));
        let ours = palisade::adaptive::AdaptiveLayer::aimd()
            .limits(64, 1, 64)
            .build()
            .expect("valid limit");
        rows.push(("adaptive/palisade_aimd", success(ours.layer(Noop))));
    }
    #[cfg(feature = "hedge")]
    {
        #[derive(Clone)]
        struct HedgeAll;
        impl tower::hedge::Policy<u64> for HedgeAll {
            fn clone_request(&self, request: &u64) -> Option<u64> {
                Some(*request)
            }
            fn can_retry(&self, _: &u64) -> bool {
                true
            }
        }
        let peer = tower::hedge::Hedge::new(Noop, HedgeAll, 10, 0.9, Duration::from_secs(10));
        rows.push(("hedge/tower", success(peer)));
        let ours = palisade::hedge::HedgeLayer::at_percentile(0.9)
            .build()
            .expect("valid hedge");
        rows.push(("hedge/palisade", success(ours.layer(Noop))));
    }
    let _ = rows;
}

fn fallbacks_and_retries(rows: &mut Vec<(&'static str, f64)>) {
    let value =
        tower_resilience::fallback::FallbackLayer::<u64, u64, std::convert::Infallible>::value(0);
    rows.push((
        "fallback/tower_resilience_value",
        success(value.layer(Noop)),
    ));
    let value = FallbackLayer::builder()
        .on(Reason::CircuitOpen)
        .on(Reason::Failure)
        .value(0)
        .mark(Unmarked)
        .build()
        .expect("valid fallback");
    rows.push(("fallback/palisade_value", success(value.layer(Noop))));

    rows.push(("retry/tower_tps_budget", success(tower_retry(Noop))));
    rows.push((
        "retry/tower_resilience_token_bucket",
        success(peers::retry(Noop)),
    ));
    let token = palisade_retry(RetryBudget::default());
    rows.push(("retry/palisade_token_budget", success(token.layer(Noop))));
    let windowed = palisade_retry(RetryBudget::windowed(Duration::from_secs(10), 10, 0.2));
    rows.push((
        "retry/palisade_windowed_budget",
        success(windowed.layer(Noop)),
    ));
    rows.push((
        "retry_unbudgeted/tower_resilience",
        success(peers::retry_unbudgeted(Noop)),
    ));
    let unlimited = palisade_retry(RetryBudget::unlimited());
    rows.push(("retry_unbudgeted/palisade", success(unlimited.layer(Noop))));
}

fn stacks(rows: &mut Vec<(&'static str, f64)>) {
    let tower = tower_retry(tower::timeout::Timeout::new(
        tower::limit::ConcurrencyLimit::new(Noop, LIMIT),
        TIMEOUT,
    ));
    rows.push(("stack/tower", success(tower)));
    let breaker = peers::breaker().build().expect("valid breaker");
    let bulkhead = peers::bulkhead_fail_fast(LIMIT);
    let resilience =
        peers::retry(breaker.layer(bulkhead.layer(peers::time_limiter(TIMEOUT).layer(Noop))));
    rows.push(("stack/tower_resilience", success(resilience)));
    let retry = RetryLayer::builder().build().expect("valid retry");
    let breaker = palisade_breaker().build().expect("valid breaker");
    let palisade =
        retry.layer(breaker.layer(palisade_timeout().layer(palisade_bulkhead().layer(Noop))));
    rows.push(("stack/palisade", success(palisade)));
}

fn rate_limits(rows: &mut Vec<(&'static str, f64)>) {
    let second = Duration::from_secs(1);
    let millisecond = Duration::from_millis(1);
    let peer = |config: tower_resilience::ratelimiter::RateLimiterConfigBuilder| {
        success(config.build().expect("valid limit").layer(Noop))
    };
    let palisade = |builder: palisade::rate_limit::RateLimitBuilder| {
        success(builder.build().expect("valid limit").layer(Noop))
    };
    rows.push((
        "rate_limit/tower_resilience_sliding_counter",
        peer(peers::rate_limiter(
            WindowType::SlidingCounter,
            MOST,
            second,
        )),
    ));
    rows.push((
        "rate_limit/palisade_sliding_window",
        palisade(RateLimitLayer::sliding_window(MOST, second)),
    ));
    rows.push((
        "rate_limit/tower_resilience_sliding_log",
        peer(peers::rate_limiter(
            WindowType::SlidingLog,
            1 << 20,
            millisecond,
        )),
    ));
    rows.push((
        "rate_limit/palisade_sliding_log",
        palisade(RateLimitLayer::sliding_log(1 << 20, millisecond)),
    ));
    let governor =
        governor::RateLimiter::direct(governor::Quota::per_second(std::num::NonZeroU32::MAX));
    rows.push((
        "rate_limit/governor_direct_check",
        per_call(|_| assert!(governor.check().is_ok())),
    ));
    rows.push((
        "rate_limit/tower_resilience_token_bucket",
        peer(peers::rate_limiter(WindowType::Fixed, MOST, second).burst_size(0)),
    ));
    rows.push((
        "rate_limit/palisade_gcra",
        palisade(RateLimitLayer::gcra(MOST, second)),
    ));
    rows.push((
        "rate_limit/tower_resilience_fixed_window",
        peer(peers::rate_limiter(WindowType::Fixed, MOST, second)),
    ));
    rows.push((
        "rate_limit/palisade_fixed_window",
        palisade(RateLimitLayer::fixed_window(MOST, second)),
    ));
}

fn main() {
    // The benchmarks' runtime: current-thread, with the timer a timeout
    // needs, entered but never driven.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    let mut rows = Vec::new();
    timeouts(&mut rows);
    bulkheads_and_breakers(&mut rows);
    open_breakers(&mut rows, &runtime);
    fallbacks_and_retries(&mut rows);
    adaptives_and_hedges(&mut rows);
    stacks(&mut rows);
    rate_limits(&mut rows);
    println!("| row | allocations per call |");
    println!("|---|---|");
    for (row, allocations) in rows {
        // Whole numbers as such; an occasional growth shows as a fraction.
        if allocations.fract() == 0.0 {
            println!("| `{row}` | {allocations:.0} |");
        } else {
            println!("| `{row}` | {allocations:.3} |");
        }
    }
}
