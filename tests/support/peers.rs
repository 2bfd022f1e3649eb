//! The peers' layers as `benches/layers.rs` measures them, built the same
//! way for `examples/alloc_peers.rs`, so the allocation counts and the
//! times are of the same services: tower's retry policy, and
//! tower-resilience 0.13's layers with the settings of palisade's rows
//! beside them.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::{Budget, TpsBudget};
use tower::{Layer, Service};
use tower_resilience::bulkhead::BulkheadLayer;
use tower_resilience::circuitbreaker::{CircuitBreakerConfigBuilder, DefaultClassifier};
use tower_resilience::ratelimiter::{RateLimiterConfigBuilder, RateLimiterLayer, WindowType};
use tower_resilience::retry::{Retry, RetryBudgetBuilder, RetryLayer};
use tower_resilience::timelimiter::{FixedTimeout, TimeLimiterLayer};

/// tower's retry policy with its `TpsBudget`, as its docs build one: a
/// success deposits, a failure withdraws before retrying.
#[derive(Clone)]
pub struct TowerPolicy(pub Arc<TpsBudget>);

impl<E> tower::retry::Policy<u64, u64, E> for TowerPolicy {
    type Future = std::future::Ready<()>;

    fn retry(&mut self, _: &mut u64, result: &mut Result<u64, E>) -> Option<Self::Future> {
        match result {
            Ok(_) => {
                self.0.deposit();
                None
            }
            Err(_) => self.0.withdraw().then(|| std::future::ready(())),
        }
    }

    fn clone_request(&mut self, request: &u64) -> Option<u64> {
        Some(*request)
    }
}

/// tower-resilience's time limiter, cancelling the call at its timeout (its default). Its
/// detached mode spawns the inner call onto the runtime, which nothing
/// drives while a benchmark polls by hand, so that mode is not measured.
pub fn time_limiter(timeout: Duration) -> TimeLimiterLayer<FixedTimeout> {
    TimeLimiterLayer::builder()
        .timeout_duration(timeout)
        .build()
}

/// The bulkhead refusing when full, as palisade's does (through a
/// `tokio::time::timeout` of zero around the permit).
pub fn bulkhead_fail_fast(limit: usize) -> BulkheadLayer {
    BulkheadLayer::builder()
        .max_concurrent_calls(limit)
        .reject_when_full()
        .build()
        .expect("valid bulkhead")
}

/// The bulkhead waiting for a permit (its default, and what tower's
/// `ConcurrencyLimit` does).
pub fn bulkhead_waiting(limit: usize) -> BulkheadLayer {
    BulkheadLayer::builder()
        .max_concurrent_calls(limit)
        .build()
        .expect("valid bulkhead")
}

/// The breaker with palisade's window in the benchmarks: the last 100 calls.
pub fn breaker() -> CircuitBreakerConfigBuilder<DefaultClassifier> {
    tower_resilience::circuitbreaker::CircuitBreakerLayer::builder().sliding_window_size(100)
}

/// Retry with its token-bucket budget (its default has none) around `inner`.
pub fn retry<S>(inner: S) -> Retry<S, u64, u64, S::Error>
where
    S: Service<u64, Response = u64>,
{
    let budget = RetryBudgetBuilder::new()
        .token_bucket()
        .build()
        .expect("valid budget");
    RetryLayer::builder().budget(budget).build().layer(inner)
}

/// Retry without a budget, its default.
pub fn retry_unbudgeted<S>(inner: S) -> Retry<S, u64, u64, S::Error>
where
    S: Service<u64, Response = u64>,
{
    RetryLayer::builder().build().layer(inner)
}

/// The rate limiter with `window`, admitting `limit` calls per `period`.
pub fn rate_limiter(window: WindowType, limit: u64, period: Duration) -> RateLimiterConfigBuilder {
    RateLimiterLayer::builder()
        .window_type(window)
        .limit_for_period(usize::try_from(limit).expect("a 64-bit target"))
        .refresh_period(period)
}
