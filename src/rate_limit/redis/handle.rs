//! [`RedisHandle`]: a Redis-backed limiter's store mode and counts.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::layer::{OnStoreFailure, RedisConfig};
use super::store::Remote;
use crate::circuit_breaker;
use crate::rate_limit::RateLimitState;

/// A handle on a Redis-backed limiter, shared by every service its layer
/// builds.
#[derive(Clone, Debug)]
pub struct RedisHandle {
    shared: Arc<Remote>,
}

/// Where a Redis-backed limiter's decisions come from now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreMode {
    /// From Redis: one limit across processes.
    Shared,
    /// Redis failed its last decision (or its guard is open): decisions
    /// follow [`RedisConfig::on_failure`] until it answers again.
    Degraded(OnStoreFailure),
}

/// What a Redis-backed limiter has done, since it was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisCounts {
    /// Calls decided, by any means.
    pub decisions: u64,
    /// Scripts sent to Redis (a refusal known locally, and a call while the
    /// guard is open, send none).
    pub round_trips: u64,
    /// Calls refused, by any means.
    pub refused: u64,
    /// Calls refused without a round trip: their key was known to be over
    /// its limit until later.
    pub refused_locally: u64,
    /// Round trips that failed: a timeout, a lost connection, an error.
    pub store_failures: u64,
    /// Calls decided by the failure mode, Redis failing or its guard open.
    pub decided_without_store: u64,
}

impl RedisHandle {
    pub(crate) fn new(shared: Arc<Remote>) -> Self {
        RedisHandle { shared }
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        self.shared.name.as_str()
    }

    /// Whether decisions come from Redis now.
    pub fn mode(&self) -> StoreMode {
        if self.shared.is_degraded() {
            StoreMode::Degraded(self.shared.config.on_failure)
        } else {
            StoreMode::Shared
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> RedisCounts {
        let counts = &self.shared.counts;
        let read = |count: &std::sync::atomic::AtomicU64| count.load(Ordering::Relaxed);
        RedisCounts {
            decisions: read(&counts.decisions),
            round_trips: read(&counts.round_trips),
            refused: read(&counts.refused),
            refused_locally: read(&counts.refused_locally),
            store_failures: read(&counts.store_failures),
            decided_without_store: read(&counts.decided_without_store),
        }
    }

    /// The last error from Redis, as text (a timeout, a refused connection,
    /// a wrong password), if any.
    pub fn last_error(&self) -> Option<String> {
        self.shared.last_error()
    }

    /// The breaker in front of Redis: its state and controls.
    pub fn guard(&self) -> circuit_breaker::Handle {
        self.shared.guard_handle.clone()
    }

    /// `key`'s state in the in-process limiter that decides while Redis
    /// is unavailable (with [`OnStoreFailure::Local`]; `None` otherwise).
    pub fn local_state(&self, key: impl AsRef<[u8]>) -> Option<RateLimitState> {
        Some(self.shared.fallback.as_ref()?.state(key.as_ref()))
    }

    /// The store's settings.
    pub fn store(&self) -> &RedisConfig {
        &self.shared.config
    }
}
