//! [`RedisRateLimitLayer`], its builder and the store's configuration.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::store::{Connection, Fallback, Remote};
use super::{Global, RedisHandle, RedisRateLimit};
use crate::circuit_breaker::CircuitBreakerConfig;
use crate::error::ConfigError;
use crate::rate_limit::layer::{Kind, LAYER, RateLimitBuilder, check_burst, check_quota};
use crate::rate_limit::limiter::Quota;
use crate::rate_limit::report::NoReport;
use crate::rate_limit::{RateLimitConfig, gcra};

const DEFAULT_DECISION_TIMEOUT: Duration = Duration::from_millis(5);
const DEFAULT_PREFIX: &str = "palisade";
const DEFAULT_LEASE_FOR: Duration = Duration::from_secs(1);
/// Lua's numbers are doubles: integers are exact up to 2^53.
const EXACT: u128 = 1 << 53;
/// A GCRA bucket's length in microseconds, so that a TAT (now, about 2^51
/// µs since 1970, plus the bucket) stays exact.
const MAX_BUCKET_MICROS: u128 = 1 << 51;

/// What a Redis-backed limiter does when it cannot get an answer from Redis
/// in time (a timeout, a lost connection, a script error), and while the
/// breaker that guards the store is open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum OnStoreFailure {
    /// Admit the call: availability over the limit.
    FailOpen,
    /// Refuse the call with a [`RateLimited`](crate::error::RateLimited)
    /// whose [`is_store_unavailable`](crate::error::RateLimited::is_store_unavailable)
    /// is true: the limit over availability.
    FailClosed,
    /// Decide in process, with a limiter of the same algorithm whose limit
    /// (and burst) is the shared one divided by
    /// [`RedisConfig::replicas`], rounded up (the default).
    #[default]
    Local,
}

/// Where a Redis-backed limiter keeps its state, and what it does when
/// Redis fails: plain data, read from a file with the `serde` feature.
///
/// ```text
/// url = "redis://:password@10.0.0.5:6379/0"
/// decision_timeout = "5ms"
/// on_failure = "local"        # or "fail_open", "fail_closed"
/// replicas = 3                # the local fallback takes a third each
/// key_prefix = "shop"
/// lease_permits = 1           # above 1: permits taken per round trip
/// lease_for = "1s"
/// [guard]                     # a CircuitBreakerConfig
/// consecutive_failures = 3
/// open_for = "1s"
/// ```
///
/// Its `Debug` shows the URL without its password.
#[derive(Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct RedisConfig {
    /// The server: `redis://[user:password@]host[:port][/db]`, or
    /// `rediss://` with TLS where the `redis` crate was built with it.
    pub url: String,
    /// The longest one decision may take, round trip and reconnection
    /// included (default 5 ms); past it, [`on_failure`](Self::on_failure)
    /// decides.
    #[cfg_attr(
        feature = "serde",
        serde(default = "default_decision_timeout", with = "crate::serde_duration")
    )]
    pub decision_timeout: Duration,
    /// What to do when Redis does not answer (default
    /// [`OnStoreFailure::Local`]).
    #[cfg_attr(feature = "serde", serde(default))]
    pub on_failure: OnStoreFailure,
    /// How many processes share the limit: the local fallback takes this
    /// share of it (default 1: each process alone admits the whole limit
    /// while Redis is down).
    #[cfg_attr(feature = "serde", serde(default = "default_replicas"))]
    pub replicas: u32,
    /// The first part of every key, inside the hash tag (default
    /// `"palisade"`): `{palisade:<name>}:…`.
    #[cfg_attr(feature = "serde", serde(default = "default_prefix"))]
    pub key_prefix: String,
    /// The circuit breaker in front of Redis: while it is open, decisions
    /// go to `on_failure` without a round trip, and its half-open probes
    /// bring the limiter back to Redis (default: open after 3 failures in
    /// a row, for 1 s).
    #[cfg_attr(feature = "serde", serde(default = "default_guard"))]
    pub guard: CircuitBreakerConfig,
    /// Permits to take per round trip (default 1: none leased). Above one,
    /// a decision takes up to this many permits for its key, when they fit,
    /// and the next calls for that key on this replica spend them without
    /// a round trip. The price: a permit counts in Redis when it is taken,
    /// not when it is spent, so in a window-length up to
    /// `replicas × (lease_permits − 1)` calls more than the limit may be
    /// admitted (permits taken before it and spent in it), and a replica's
    /// unspent permits are lost when they expire
    /// ([`lease_for`](Self::lease_for)).
    #[cfg_attr(feature = "serde", serde(default = "default_lease_permits"))]
    pub lease_permits: u32,
    /// How long leased permits stay spendable (default 1 s).
    #[cfg_attr(
        feature = "serde",
        serde(default = "default_lease_for", with = "crate::serde_duration")
    )]
    pub lease_for: Duration,
}

#[cfg(feature = "serde")]
fn default_lease_permits() -> u32 {
    1
}

#[cfg(feature = "serde")]
fn default_lease_for() -> Duration {
    DEFAULT_LEASE_FOR
}

#[cfg(feature = "serde")]
fn default_decision_timeout() -> Duration {
    DEFAULT_DECISION_TIMEOUT
}

#[cfg(feature = "serde")]
fn default_replicas() -> u32 {
    1
}

#[cfg(feature = "serde")]
fn default_prefix() -> String {
    DEFAULT_PREFIX.to_owned()
}

fn default_guard() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        consecutive_failures: Some(3),
        open_for: Duration::from_secs(1),
        ..CircuitBreakerConfig::default()
    }
}

impl RedisConfig {
    /// The defaults, with the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            decision_timeout: DEFAULT_DECISION_TIMEOUT,
            on_failure: OnStoreFailure::default(),
            replicas: 1,
            key_prefix: DEFAULT_PREFIX.to_owned(),
            guard: default_guard(),
            lease_permits: 1,
            lease_for: DEFAULT_LEASE_FOR,
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &without_password(&self.url))
            .field("decision_timeout", &self.decision_timeout)
            .field("on_failure", &self.on_failure)
            .field("replicas", &self.replicas)
            .field("key_prefix", &self.key_prefix)
            .field("guard", &self.guard)
            .field("lease_permits", &self.lease_permits)
            .field("lease_for", &self.lease_for)
            .finish()
    }
}

/// `url` with the password of its `user:password@` part, if any, shown as
/// `***`.
fn without_password(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |i| after_scheme + i);
    let Some(at) = url[after_scheme..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &url[after_scheme..after_scheme + at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}***{}",
            &url[..after_scheme + colon + 1],
            &url[after_scheme + at..]
        ),
        None => url.to_owned(),
    }
}

impl From<&str> for RedisConfig {
    fn from(url: &str) -> Self {
        RedisConfig::new(url)
    }
}

impl From<String> for RedisConfig {
    fn from(url: String) -> Self {
        RedisConfig::new(url)
    }
}

impl RateLimitBuilder {
    /// One limit shared by every process that builds this limiter with the
    /// same name, kept in Redis (see the [`redis`](super) module): one limit
    /// for all requests, or one per key with
    /// [`RedisRateLimitBuilder::keyed`].
    pub fn redis(self, store: impl Into<RedisConfig>) -> RedisRateLimitBuilder<Global> {
        RedisRateLimitBuilder {
            base: self,
            store: store.into(),
            key: Global,
            overrides: Vec::new(),
        }
    }
}

/// Builds a [`RedisRateLimitLayer`]; made by [`RateLimitBuilder::redis`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct RedisRateLimitBuilder<F> {
    pub(crate) base: RateLimitBuilder,
    pub(crate) store: RedisConfig,
    pub(crate) key: F,
    pub(crate) overrides: Vec<(Vec<u8>, u64, Duration)>,
}

impl<F> fmt::Debug for RedisRateLimitBuilder<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimitBuilder")
            .field("base", &self.base)
            .field("store", &self.store)
            .field("overrides", &self.overrides.len())
            .finish_non_exhaustive()
    }
}

impl RedisRateLimitBuilder<Global> {
    /// One limit per key, taken from each request by `key` (a client
    /// address as a string, an API key): any `Fn(&Request) -> K` where `K`
    /// is bytes (`String`, `Vec<u8>`, `&'static str`). The key's bytes are
    /// the Redis key's last part, as they are; a key's state expires in
    /// Redis once it stops mattering, so there is no `max_keys`.
    pub fn keyed<F>(self, key: F) -> RedisRateLimitBuilder<F> {
        RedisRateLimitBuilder {
            base: self.base,
            store: self.store,
            key,
            overrides: self.overrides,
        }
    }
}

impl<F> RedisRateLimitBuilder<F> {
    /// A limit of its own for `key` (a tenant on a bigger plan): `limit`
    /// per `window`, or for GCRA that rate per period, with a burst of
    /// `limit`. Every replica must be built with the same.
    pub fn limit_for(mut self, key: impl AsRef<[u8]>, limit: u64, window: Duration) -> Self {
        self.overrides.push((key.as_ref().to_vec(), limit, window));
        self
    }

    /// The limiter's settings so far.
    pub fn config(&self) -> &RateLimitConfig {
        self.base.config()
    }

    /// The store's settings so far.
    pub fn store(&self) -> &RedisConfig {
        &self.store
    }

    /// Checks the settings and builds the layer. Nothing connects yet: the
    /// first decision does, within its decision timeout.
    ///
    /// # Errors
    ///
    /// As [`RateLimitBuilder::build`], and a [`ConfigError`] naming the
    /// field when: the algorithm is the sliding log (it keeps each
    /// admission's time in process; use the sliding window or GCRA), the
    /// fixed window or the segmented window (no Redis form);
    /// `redis.url` is not a Redis URL; the window is under a millisecond
    /// (Redis expires keys in milliseconds); `limit × window` in
    /// microseconds (a sliding window) or the bucket (`burst` intervals,
    /// GCRA) passes what the scripts' arithmetic holds exactly (2^53 and
    /// 2^51 microseconds); `redis.decision_timeout`, `redis.replicas` or
    /// `redis.lease_permits` is zero, or `redis.lease_for` is zero with
    /// leases; the name or `redis.key_prefix` holds a `{`
    /// or `}` (they would move the hash tag); or the guard breaker's own
    /// settings are wrong (naming the breaker's field).
    pub fn build(self) -> Result<RedisRateLimitLayer<F>, ConfigError> {
        let quota = self.base.quota()?;
        check_store_quota(quota)?;
        let mut overrides = HashMap::new();
        for (key, limit, window) in self.overrides {
            check_quota(quota.kind, limit, window, quota.segments)?;
            if quota.kind == Kind::Gcra {
                check_burst(limit, window, limit)?;
            }
            let own = Quota {
                limit,
                window,
                burst: limit,
                ..quota
            };
            check_store_quota(own)?;
            overrides.insert(key, own);
        }
        let store = &self.store;
        if store.decision_timeout.is_zero() {
            return Err(invalid("redis.decision_timeout", "must be more than zero"));
        }
        if store.replicas == 0 {
            return Err(invalid("redis.replicas", "must be at least 1"));
        }
        if store.lease_permits == 0 {
            return Err(invalid("redis.lease_permits", "must be at least 1"));
        }
        if store.lease_permits > 1 && store.lease_for.is_zero() {
            return Err(invalid(
                "redis.lease_for",
                "must be more than zero when lease_permits is above 1",
            ));
        }
        let name = self.base.name_or_default();
        for (field, text) in [
            ("name", name.as_str()),
            ("redis.key_prefix", &store.key_prefix),
        ] {
            if text.contains(['{', '}']) {
                return Err(invalid(
                    field,
                    "must not hold `{` or `}`: the limiter's keys share one hash tag, \
                     `{prefix:name}`, so that its scripts run on Redis Cluster",
                ));
            }
        }
        let connection = Connection::new(&store.url, store.decision_timeout)?;
        let fallback = match store.on_failure {
            OnStoreFailure::Local => Some(fallback(&self.base, quota, &overrides, store.replicas)?),
            _ => None,
        };
        let remote = Remote::new(
            name,
            quota,
            overrides,
            self.store.clone(),
            connection,
            fallback,
            self.base.config().max_wait,
        )?;
        Ok(RedisRateLimitLayer {
            shared: Arc::new(remote),
            key: self.key,
            report: NoReport,
        })
    }
}

/// The in-process limiter that decides while Redis is unavailable: the same
/// algorithm, with this replica's share of the limit (and of each key's
/// own).
fn fallback(
    base: &RateLimitBuilder,
    quota: Quota,
    overrides: &HashMap<Vec<u8>, Quota>,
    replicas: u32,
) -> Result<Fallback, ConfigError> {
    let share = |n: u64| n.div_ceil(u64::from(replicas)).max(1);
    let mut config = base.config().clone();
    config.limit = share(quota.limit);
    config.max_wait = Duration::ZERO;
    config.max_waiters = None;
    if quota.kind == Kind::Gcra {
        config.burst = Some(share(quota.burst));
    }
    let hasher = RandomState::new();
    let mut builder = RateLimitBuilder::from_config(config).keyed(|key: &u64| *key);
    for (key, own) in overrides {
        builder = builder.limit_for(hasher.hash_one(&key[..]), share(own.limit), own.window);
    }
    Ok(Fallback::new(builder.build()?.handle(), hasher))
}

/// The bounds the scripts' arithmetic needs, on top of the in-process ones.
fn check_store_quota(quota: Quota) -> Result<(), ConfigError> {
    match quota.kind {
        Kind::SlidingLog => Err(invalid(
            "algorithm",
            "the sliding log keeps every admission's time in this process and has no \
             Redis form; use the sliding window or GCRA with a redis store",
        )),
        Kind::FixedWindow | Kind::SegmentedWindow => Err(invalid(
            "algorithm",
            "the fixed and segmented windows are kept in this process and have no Redis \
             form; use the sliding window or GCRA with a redis store",
        )),
        _ if quota.window < Duration::from_millis(1) => Err(invalid(
            "window",
            format!(
                "must be at least 1ms with a redis store, got {:?}",
                quota.window
            ),
        )),
        Kind::SlidingWindow => {
            if u128::from(quota.limit) * quota.window.as_micros() > EXACT {
                return Err(invalid(
                    "limit",
                    format!(
                        "times the window in microseconds must be at most 2^53 with a redis \
                         store (the scripts' exact arithmetic), got {} × {}",
                        quota.limit,
                        quota.window.as_micros()
                    ),
                ));
            }
            Ok(())
        }
        Kind::Gcra => {
            let interval = gcra::interval_micros(quota.limit, quota.window);
            if u128::from(interval) * u128::from(quota.burst) > MAX_BUCKET_MICROS {
                return Err(invalid(
                    "burst",
                    format!(
                        "{} permits at one per {interval}µs pass the 2^51 µs a redis store's \
                         arithmetic holds exactly",
                        quota.burst
                    ),
                ));
            }
            Ok(())
        }
    }
}

fn invalid(field: &'static str, rule: impl Into<std::borrow::Cow<'static, str>>) -> ConfigError {
    ConfigError::new(LAYER, field, rule)
}

/// Applies a [`RedisRateLimit`]: a limit kept in Redis, shared by every
/// process that builds it with the same name and prefix.
pub struct RedisRateLimitLayer<F = Global, R = NoReport> {
    pub(crate) shared: Arc<Remote>,
    key: F,
    report: R,
}

impl<F: Clone, R: Clone> Clone for RedisRateLimitLayer<F, R> {
    fn clone(&self) -> Self {
        RedisRateLimitLayer {
            shared: self.shared.clone(),
            key: self.key.clone(),
            report: self.report.clone(),
        }
    }
}

impl<F, R> RedisRateLimitLayer<F, R> {
    /// A handle on the limiter: its store's mode and its counts.
    pub fn handle(&self) -> RedisHandle {
        RedisHandle::new(self.shared.clone())
    }

    /// Reports the key's state on each response it admitted, through
    /// `report` (the HTTP `RateLimit-*` headers, say), from the script's
    /// answer.
    pub fn report_state<R2>(self, report: R2) -> RedisRateLimitLayer<F, R2> {
        RedisRateLimitLayer {
            shared: self.shared,
            key: self.key,
            report,
        }
    }
}

impl<S, F: Clone, R: Clone> Layer<S> for RedisRateLimitLayer<F, R> {
    type Service = RedisRateLimit<S, F, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RedisRateLimit::new(
            inner,
            self.shared.clone(),
            self.key.clone(),
            self.report.clone(),
        )
    }
}

impl<F, R> fmt::Debug for RedisRateLimitLayer<F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimitLayer")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        for (url, shown) in [
            (
                "redis://:hunter2@10.0.0.5:6379/0",
                "redis://:***@10.0.0.5:6379/0",
            ),
            ("redis://app:hunter2@host", "redis://app:***@host"),
            (
                "rediss://app:p@ss:w@rd@host:1/2",
                "rediss://app:***@host:1/2",
            ),
            ("redis://host:6379", "redis://host:6379"),
            ("redis://user@host", "redis://user@host"),
        ] {
            assert_eq!(without_password(url), shown);
            let debug = format!("{:?}", RedisConfig::new(url));
            assert!(
                !debug.contains("hunter2") && !debug.contains("rd@"),
                "{debug}"
            );
        }
    }
}
