//! The store: the connection to Redis behind a timeout and a circuit
//! breaker, and what a limiter shares across its services.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::future::{Future, poll_fn};
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::layer::{OnStoreFailure, RedisConfig};
use super::script::{Answer, GCRA_SCRIPT, SLIDING_WINDOW_SCRIPT};
use crate::circuit_breaker::{self, CircuitBreaker, CircuitBreakerBuilder, Event};
use crate::error::{BoxError, ConfigError, ErrorKind, RateLimited};
use crate::metrics::{Count, Level};
use crate::name::Name;
use crate::rate_limit::KeyedHandle;
use crate::rate_limit::gcra::interval_micros;
use crate::rate_limit::handle::trace_refusal;
use crate::rate_limit::layer::{Kind, LAYER};
use crate::rate_limit::limiter::{Decision, Quota, Snapshot};
use crate::timeout::{Timeout, TimeoutLayer};

/// How many keys known to be over their limit a limiter remembers.
const REFUSALS: usize = 10_000;
/// The most decisions one script call carries.
const MAX_BATCH: usize = 128;
/// The most script calls out at once, per limiter.
const MAX_IN_FLIGHT: usize = 4;

/// A batch of decisions for Redis: a script, its keys, and three
/// arguments per key.
pub(crate) struct Ask {
    script: &'static Script,
    keys: Vec<Vec<u8>>,
    args: Vec<u64>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The connection, made on the first decision and shared by all after it:
/// one multiplexed connection that reconnects by itself.
#[derive(Clone)]
pub(crate) struct Connection {
    client: Client,
    manager: Arc<OnceLock<ConnectionManager>>,
    connect_timeout: Duration,
}

impl Connection {
    pub(crate) fn new(url: &str, decision_timeout: Duration) -> Result<Self, ConfigError> {
        // The URL may hold a password: the error never repeats it.
        let client = Client::open(url).map_err(|_| {
            ConfigError::new(
                LAYER,
                "redis.url",
                "is not a Redis URL: expected redis://[user:password@]host[:port][/db]",
            )
        })?;
        Ok(Connection {
            client,
            manager: Arc::new(OnceLock::new()),
            // A connection outlives the decision that opened it.
            connect_timeout: decision_timeout.max(Duration::from_secs(1)),
        })
    }

    fn manager(&self) -> redis::RedisResult<ConnectionManager> {
        if let Some(manager) = self.manager.get() {
            return Ok(manager.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_number_of_retries(1);
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)?;
        Ok(self.manager.get_or_init(|| manager).clone())
    }
}

impl Service<Ask> for Connection {
    type Response = Vec<Answer>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Vec<Answer>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ask: Ask) -> Self::Future {
        let manager = self.manager();
        Box::pin(async move {
            let mut connection = manager?;
            let mut invocation = ask.script.prepare_invoke();
            for key in &ask.keys {
                invocation.key(&key[..]);
            }
            invocation.arg(&ask.args[..]);
            let reply: Vec<i64> = invocation.invoke_async(&mut connection).await?;
            if reply.len() != 4 * ask.keys.len() {
                return Err(format!(
                    "the limiter's script answered {} numbers for {} keys, not 4 each",
                    reply.len(),
                    ask.keys.len()
                )
                .into());
            }
            Ok(reply
                .chunks_exact(4)
                .map(|four| Answer::from_reply([four[0], four[1], four[2], four[3]]))
                .collect())
        })
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the client: its connection info holds the password.
        f.debug_struct("Connection")
            .field("connected", &self.manager.get().is_some())
            .finish_non_exhaustive()
    }
}

/// The connection behind a decision timeout, behind the guard breaker.
type Guarded = CircuitBreaker<Timeout<Connection>>;

/// What a decision came to.
pub(crate) enum Verdict {
    /// With the key's state after it, where known.
    Admitted(Option<Snapshot>),
    Refused(RateLimited),
}

/// The counts a [`RedisHandle`](super::RedisHandle) reads.
#[derive(Debug)]
pub(crate) struct Counts {
    pub(crate) decisions: AtomicU64,
    pub(crate) round_trips: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) refused_locally: AtomicU64,
    pub(crate) store_failures: AtomicU64,
    pub(crate) decided_without_store: AtomicU64,
    /// `palisade_rate_limit_redis_round_trips_total{name}`.
    round_trip_count: Count,
    /// `palisade_rate_limit_redis_failures_total{name}`.
    failure_count: Count,
    /// `palisade_rate_limit_refused_total{name}`, as the in-process
    /// limiters count it.
    refused_count: Count,
    /// `palisade_rate_limit_redis_degraded{name}`: 1 while decisions
    /// follow the failure mode, 0 while they come from Redis.
    degraded: Level,
    /// For the refusal events.
    name: Name,
}

impl Counts {
    fn new(name: &Name) -> Self {
        let series = name.as_str();
        Counts {
            decisions: AtomicU64::new(0),
            round_trips: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            refused_locally: AtomicU64::new(0),
            store_failures: AtomicU64::new(0),
            decided_without_store: AtomicU64::new(0),
            round_trip_count: Count::new("palisade_rate_limit_redis_round_trips_total", series),
            failure_count: Count::new("palisade_rate_limit_redis_failures_total", series),
            refused_count: Count::new("palisade_rate_limit_refused_total", series),
            degraded: Level::new("palisade_rate_limit_redis_degraded", series),
            name: name.clone(),
        }
    }

    fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.refused_count.add();
        trace_refusal(&self.name);
    }

    fn round_trip(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        self.round_trip_count.add();
    }
}

/// What every service of one Redis-backed limiter shares.
pub(crate) struct Remote {
    pub(crate) name: Name,
    quota: Quota,
    overrides: HashMap<Vec<u8>, Quota>,
    /// `{prefix:name}:w:` or `{prefix:name}:g:`: every key under one hash
    /// tag, the key's bytes after it.
    key_prefix: Vec<u8>,
    pub(crate) config: RedisConfig,
    guard: Guarded,
    pub(crate) guard_handle: circuit_breaker::Handle,
    pub(crate) fallback: Option<Fallback>,
    refusals: Refusals,
    batches: Batches,
    /// With `lease_permits` above one: the permits taken and not yet
    /// spent, per key.
    leases: Option<Leases>,
    max_wait: Duration,
    pub(crate) counts: Counts,
    degraded: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl Remote {
    pub(crate) fn new(
        name: Name,
        quota: Quota,
        overrides: HashMap<Vec<u8>, Quota>,
        config: RedisConfig,
        connection: Connection,
        fallback: Option<Fallback>,
        max_wait: Duration,
    ) -> Result<Self, ConfigError> {
        let breaker_name = format!("{}-redis", name.as_str());
        let events_name = name.clone();
        let breaker = CircuitBreakerBuilder::from_config(config.guard.clone())
            .name(breaker_name.clone())
            .on_event(move |event| guard_event(&events_name, event))
            .build()?;
        let timeout = TimeoutLayer::builder()
            .name(breaker_name)
            .timeout(config.decision_timeout)
            .build()?;
        let guard_handle = breaker.handle();
        let tag = match quota.kind {
            Kind::Gcra => "g",
            _ => "w",
        };
        let key_prefix = format!("{{{}:{}}}:{tag}:", config.key_prefix, name.as_str()).into_bytes();
        Ok(Remote {
            counts: Counts::new(&name),
            name,
            quota,
            overrides,
            key_prefix,
            guard: breaker.layer(timeout.layer(connection)),
            guard_handle,
            fallback,
            refusals: Refusals::new(REFUSALS),
            batches: Batches::default(),
            leases: (config.lease_permits > 1).then(|| Leases::new(REFUSALS, config.lease_for)),
            max_wait,
            degraded: AtomicBool::new(false),
            last_error: Mutex::new(None),
            config,
        })
    }

    /// A permit this replica leased for `key` earlier, spent without a
    /// round trip; the key's state after it.
    pub(crate) fn leased(self: &Arc<Self>, key: &[u8]) -> Option<Snapshot> {
        let leases = self.leases.as_ref()?;
        let (state, left) = leases.take(key)?;
        self.counts.decisions.fetch_add(1, Ordering::Relaxed);
        if left == self.lease_permits() / 2 {
            // Half spent: the next lease is taken in the background, so
            // that the calls for a busy key never wait on Redis.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (remote, key) = (self.clone(), key.to_vec());
                runtime.spawn(async move { remote.renew_lease(key).await });
            }
        }
        Some(state)
    }

    /// Takes another lease for `key` ahead of need; a refusal is
    /// remembered, as a caller's would be.
    async fn renew_lease(self: Arc<Self>, key: Vec<u8>) {
        let quota = self.quota_for(&key);
        match self.ask(&key, quota).await {
            Ok(answer) if answer.granted > 0 => {
                if let Some(leases) = &self.leases {
                    leases.keep(&key, answer.granted, answer.snapshot(limit_of(quota)));
                }
            }
            Ok(answer) => self.refusals.remember(&key, answer.wait),
            // The calls that find the lease spent will ask, and meet the
            // failure then.
            Err(_) => {}
        }
    }

    /// The refusal a key known to be over its limit gets without a round
    /// trip, while it is known to be; `None` when Redis must decide. A
    /// caller who may wait longer than the refusal lasts asks Redis.
    pub(crate) fn refused_locally(&self, key: &[u8]) -> Option<RateLimited> {
        let left = self.refusals.check(key)?;
        if !self.max_wait.is_zero() && left <= self.max_wait {
            return None;
        }
        self.counts.decisions.fetch_add(1, Ordering::Relaxed);
        self.counts.refused_locally.fetch_add(1, Ordering::Relaxed);
        self.counts.refused();
        let quota = self.quota_for(key);
        Some(RateLimited::with_name(self.name.clone(), Some(left)).with_limit(limit_of(quota)))
    }

    /// Permits to take per round trip: one, or a lease's.
    fn lease_permits(&self) -> u64 {
        u64::from(self.config.lease_permits.max(1))
    }

    fn quota_for(&self, key: &[u8]) -> Quota {
        self.overrides.get(key).copied().unwrap_or(self.quota)
    }

    /// Decides one call for `key`: Redis's answer, waiting up to `max_wait`
    /// for a permit; or, when Redis does not answer in time, the configured
    /// failure mode's.
    pub(crate) async fn decide(self: Arc<Self>, key: Vec<u8>) -> Verdict {
        self.counts.decisions.fetch_add(1, Ordering::Relaxed);
        let quota = self.quota_for(&key);
        let started = Instant::now();
        loop {
            let answer = match self.ask(&key, quota).await {
                Ok(answer) => answer,
                Err(err) => return self.without_store(&key, err),
            };
            self.store_back();
            if answer.granted > 0 {
                let state = answer.snapshot(limit_of(quota));
                if let Some(leases) = &self.leases {
                    leases.keep(&key, answer.granted - 1, state);
                }
                return Verdict::Admitted(Some(state));
            }
            // Waiting: ask again when the permit frees, if that is soon
            // enough. Redis decides again: another replica may take it.
            let waited = started.elapsed();
            if !self.max_wait.is_zero() && waited + answer.wait <= self.max_wait {
                tokio::time::sleep(answer.wait).await;
                continue;
            }
            self.refusals.remember(&key, answer.wait);
            self.counts.refused();
            let refusal = RateLimited::with_name(self.name.clone(), Some(answer.wait));
            return Verdict::Refused(refusal.with_limit(limit_of(quota)));
        }
    }

    /// One decision from Redis, sent in the next batch.
    async fn ask(self: &Arc<Self>, key: &[u8], quota: Quota) -> Result<Answer, AskError> {
        let mut redis_key = Vec::with_capacity(self.key_prefix.len() + key.len());
        redis_key.extend_from_slice(&self.key_prefix);
        redis_key.extend_from_slice(key);
        let args = match quota.kind {
            Kind::Gcra => [
                interval_micros(quota.limit, quota.window),
                quota.burst,
                self.lease_permits(),
            ],
            _ => [quota.limit, micros(quota.window), self.lease_permits()],
        };
        let (reply, answer) = oneshot::channel();
        let send = self.batches.push(Pending {
            key: redis_key,
            args,
            reply,
        });
        if send {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(self.clone().send_batches())),
                // Polled outside a tokio runtime: this caller sends.
                Err(_) => self.clone().send_batches().await,
            }
        }
        // Bounded here too: a batch queued behind a slow one must not hold
        // its callers past their own timeout.
        match tokio::time::timeout(self.config.decision_timeout, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(AskError::Failed("the batch was dropped".into())),
            Err(_) => Err(AskError::Failed(format!(
                "no answer within {:?}",
                self.config.decision_timeout
            ))),
        }
    }

    /// Sends what has queued, one batch after another, until the queue is
    /// empty. At most `MAX_IN_FLIGHT` senders run at once: while their
    /// batches are out, the calls that arrive wait for the next one, so a
    /// busy limiter sends a few large scripts instead of many small ones.
    async fn send_batches(self: Arc<Self>) {
        while let Some(batch) = self.batches.next() {
            let script = match self.quota.kind {
                Kind::Gcra => &*GCRA_SCRIPT,
                _ => &*SLIDING_WINDOW_SCRIPT,
            };
            let mut keys = Vec::with_capacity(batch.len());
            let mut args = Vec::with_capacity(3 * batch.len());
            let mut replies = Vec::with_capacity(batch.len());
            for pending in batch {
                keys.push(pending.key);
                args.extend_from_slice(&pending.args);
                replies.push(pending.reply);
            }
            let mut guard = self.guard.clone();
            let answers = match poll_fn(|cx| guard.poll_ready(cx)).await {
                Ok(()) => guard.call(Ask { script, keys, args }).await,
                Err(err) => Err(err),
            };
            match answers {
                Ok(answers) => {
                    self.counts.round_trip();
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(Ok(answer));
                    }
                }
                Err(err) => {
                    let error = match ErrorKind::of(&err) {
                        ErrorKind::CircuitOpen(open) => AskError::Open(open.retry_after()),
                        _ => {
                            self.counts.round_trip();
                            AskError::Failed(err.to_string())
                        }
                    };
                    for reply in replies {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
        }
    }

    /// Redis did not answer: the failure mode decides.
    fn without_store(&self, key: &[u8], err: AskError) -> Verdict {
        match err {
            AskError::Open(retry_after) => self.failure_mode(key, retry_after),
            AskError::Failed(err) => {
                self.counts.store_failures.fetch_add(1, Ordering::Relaxed);
                self.counts.failure_count.add();
                if !self.degraded.load(Ordering::Acquire) {
                    tracing::warn!(
                        limiter = %self.name,
                        mode = ?self.config.on_failure,
                        error = %err,
                        "rate limiter's redis store failed; deciding without it"
                    );
                }
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(err);
                self.failure_mode(key, None)
            }
        }
    }

    /// Decided without a round trip while the guard refuses every call:
    /// `None` when Redis should be asked (the guard is closed, or a probe
    /// may go).
    pub(crate) fn while_guard_open(&self, key: &[u8]) -> Option<Verdict> {
        let retry_after = self.guard_handle.refusing()?;
        self.counts.decisions.fetch_add(1, Ordering::Relaxed);
        Some(self.failure_mode(key, retry_after))
    }

    /// The failure mode's verdict; `retry_after` is when the guard lets a
    /// probe go, where known.
    fn failure_mode(&self, key: &[u8], retry_after: Option<Duration>) -> Verdict {
        if !self.degraded.swap(true, Ordering::AcqRel) {
            self.counts.degraded.up();
            tracing::warn!(
                limiter = %self.name,
                mode = ?self.config.on_failure,
                "rate limiter's redis store is unavailable; deciding without it"
            );
        }
        self.counts
            .decided_without_store
            .fetch_add(1, Ordering::Relaxed);
        match self.config.on_failure {
            OnStoreFailure::FailOpen => Verdict::Admitted(None),
            OnStoreFailure::FailClosed => {
                self.counts.refused();
                Verdict::Refused(RateLimited::store_unavailable(
                    self.name.clone(),
                    retry_after,
                ))
            }
            OnStoreFailure::Local => self.decide_locally(key),
        }
    }

    fn decide_locally(&self, key: &[u8]) -> Verdict {
        let Some(fallback) = &self.fallback else {
            return Verdict::Admitted(None);
        };
        let (decision, state) = fallback.limiter.acquire(fallback.key(key), true);
        match decision {
            Decision::Admitted => Verdict::Admitted(state),
            Decision::Refused { wait } => {
                fallback.limiter.count_refusal();
                self.counts.refused();
                let mut refusal = RateLimited::with_name(self.name.clone(), Some(wait));
                if let Some(state) = state {
                    refusal = refusal.with_limit(state.limit);
                }
                Verdict::Refused(refusal)
            }
            Decision::TooLarge => {
                self.counts.refused();
                Verdict::Refused(RateLimited::with_name(self.name.clone(), None))
            }
        }
    }

    /// Redis answered: back from a failure mode, if in one.
    fn store_back(&self) {
        if self.degraded.swap(false, Ordering::AcqRel) {
            self.counts.degraded.down();
            tracing::info!(limiter = %self.name, "rate limiter's redis store is back");
        }
    }

    pub(crate) fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("name", &self.name)
            .field("quota", &self.quota)
            .field("on_failure", &self.config.on_failure)
            .field("degraded", &self.is_degraded())
            .finish_non_exhaustive()
    }
}

/// A `tracing` event for each change of the guard breaker's state.
fn guard_event(name: &Name, event: &Event) {
    if let Event::Transition(transition) = event {
        tracing::info!(
            limiter = %name,
            from = %transition.from,
            to = %transition.to,
            "rate limiter's redis guard changed state"
        );
    }
}

/// The most a key counts at once: its limit, or a GCRA limiter's burst.
fn limit_of(quota: Quota) -> u64 {
    match quota.kind {
        Kind::Gcra => quota.burst,
        _ => quota.limit,
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Entries by key, each until an instant. Keys are held as hashes (seeded
/// per map), never as themselves. Bounded: when full, what has expired is
/// dropped, and if nothing has, a new entry is not kept.
struct Expiring<V> {
    hasher: RandomState,
    entries: Mutex<HashMap<u64, (Instant, V)>>,
    capacity: usize,
}

impl<V> Expiring<V> {
    fn new(capacity: usize) -> Self {
        Expiring {
            hasher: RandomState::new(),
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Instant, V)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes room in a full map by dropping what has expired at `now`;
    /// whether a new entry fits.
    fn room(&self, entries: &mut HashMap<u64, (Instant, V)>, now: Instant) -> bool {
        if entries.len() >= self.capacity {
            entries.retain(|_, (until, _)| *until > now);
        }
        entries.len() < self.capacity
    }
}

/// Keys known to be over their limit, until their permit frees: they are
/// refused without a round trip.
struct Refusals {
    until: Expiring<()>,
    /// Entries held: a call skips the lock while there are none.
    len: AtomicUsize,
}

impl Refusals {
    fn new(capacity: usize) -> Self {
        Refusals {
            until: Expiring::new(capacity),
            len: AtomicUsize::new(0),
        }
    }

    /// How long `key` is still known to be refused.
    fn check(&self, key: &[u8]) -> Option<Duration> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let hash = self.until.hash(key);
        let now = Instant::now();
        let mut until = self.until.lock();
        let left = until.get(&hash)?.0.saturating_duration_since(now);
        if left.is_zero() {
            until.remove(&hash);
            self.len.store(until.len(), Ordering::Relaxed);
            return None;
        }
        Some(left)
    }

    fn remember(&self, key: &[u8], wait: Duration) {
        let hash = self.until.hash(key);
        let now = Instant::now();
        let mut until = self.until.lock();
        if self.until.room(&mut until, now) {
            until.insert(hash, (now + wait, ()));
        }
        self.len.store(until.len(), Ordering::Relaxed);
    }
}

/// Permits a replica took from Redis beyond the one it needed, per key,
/// spent by the next calls for that key without a round trip until they
/// run out or expire. A lease that finds no room is dropped, and its
/// permits are lost (never over-spent).
struct Leases {
    leases: Expiring<Lease>,
    ttl: Duration,
}

struct Lease {
    left: u64,
    /// The key's state when the lease was taken, its own permits counted
    /// back in.
    state: Snapshot,
}

impl Leases {
    fn new(capacity: usize, ttl: Duration) -> Self {
        Leases {
            leases: Expiring::new(capacity),
            ttl,
        }
    }

    /// Spends one leased permit for `key`, if one is left and unexpired;
    /// the key's state after it, and the permits left.
    fn take(&self, key: &[u8]) -> Option<(Snapshot, u64)> {
        let hash = self.leases.hash(key);
        let mut leases = self.leases.lock();
        let (until, lease) = leases.get_mut(&hash)?;
        if lease.left == 0 || *until <= Instant::now() {
            leases.remove(&hash);
            return None;
        }
        lease.left -= 1;
        let state = Snapshot {
            remaining: lease.state.remaining + lease.left,
            ..lease.state
        };
        Some((state, lease.left))
    }

    /// Keeps `left` more permits for `key`, taken with `state`.
    fn keep(&self, key: &[u8], left: u64, state: Snapshot) {
        if left == 0 {
            return;
        }
        let hash = self.leases.hash(key);
        let now = Instant::now();
        let mut leases = self.leases.lock();
        let room = self.leases.room(&mut leases, now);
        let until = now + self.ttl;
        match leases.entry(hash) {
            // Calls that missed together each took a lease: pool them.
            Entry::Occupied(mut held) if held.get().0 > now => {
                let (held_until, lease) = held.get_mut();
                lease.left += left;
                lease.state = state;
                *held_until = until;
            }
            Entry::Occupied(mut held) => *held.get_mut() = (until, Lease { left, state }),
            Entry::Vacant(free) if room => {
                free.insert((until, Lease { left, state }));
            }
            Entry::Vacant(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(remaining: u64) -> Snapshot {
        Snapshot {
            limit: 10,
            remaining,
            reset: Duration::from_secs(1),
        }
    }

    /// Leased permits are spent one call each, for their key only, and are
    /// gone once they expire.
    #[tokio::test(start_paused = true)]
    async fn leased_permits_are_spent_once_and_expire() {
        let leases = Leases::new(16, Duration::from_millis(100));
        leases.keep(b"a", 2, state(5));
        assert_eq!(leases.take(b"b"), None, "another key's");
        assert_eq!(
            leases.take(b"a").map(|(s, left)| (s.remaining, left)),
            Some((6, 1))
        );
        assert_eq!(
            leases.take(b"a").map(|(s, left)| (s.remaining, left)),
            Some((5, 0))
        );
        assert_eq!(leases.take(b"a"), None, "spent");

        // Two calls that missed together pool what they took.
        leases.keep(b"a", 1, state(5));
        leases.keep(b"a", 1, state(4));
        assert_eq!(leases.take(b"a").map(|(s, _)| s.remaining), Some(5));
        assert_eq!(leases.take(b"a").map(|(s, _)| s.remaining), Some(4));
        assert_eq!(leases.take(b"a"), None);

        leases.keep(b"a", 3, state(5));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(leases.take(b"a"), None, "expired");
    }

    /// A full table drops expired leases for a new one, and otherwise loses
    /// the new lease's permits rather than growing.
    #[tokio::test(start_paused = true)]
    async fn a_full_lease_table_never_grows() {
        let leases = Leases::new(2, Duration::from_millis(100));
        leases.keep(b"a", 1, state(0));
        leases.keep(b"b", 1, state(0));
        leases.keep(b"c", 1, state(0));
        assert_eq!(leases.take(b"c"), None, "no room");
        tokio::time::advance(Duration::from_millis(100)).await;
        leases.keep(b"c", 1, state(0));
        assert!(leases.take(b"c").is_some(), "room once the others expired");
    }

    /// Scenario RD-6 (the local entry's end): a refusal is remembered until
    /// the permit Redis reported frees, not a window later, for its key
    /// only.
    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_remembered_until_its_permit_frees() {
        let refusals = Refusals::new(2);
        assert_eq!(refusals.check(b"a"), None);
        refusals.remember(b"a", Duration::from_millis(30));
        assert_eq!(refusals.check(b"b"), None);
        tokio::time::advance(Duration::from_millis(10)).await;
        assert_eq!(refusals.check(b"a"), Some(Duration::from_millis(20)));
        tokio::time::advance(Duration::from_millis(20)).await;
        assert_eq!(refusals.check(b"a"), None);
        // Full of live refusals: a new one is not remembered.
        refusals.remember(b"x", Duration::from_secs(1));
        refusals.remember(b"y", Duration::from_secs(1));
        refusals.remember(b"z", Duration::from_secs(1));
        assert_eq!(refusals.check(b"z"), None);
        assert!(refusals.check(b"x").is_some());
    }
}

/// The in-process limiter the local failure mode decides with, keyed by a
/// seeded 64-bit hash of each key: no copy of the key per call.
pub(crate) struct Fallback {
    limiter: KeyedHandle<u64>,
    hasher: RandomState,
}

impl Fallback {
    pub(crate) fn new(limiter: KeyedHandle<u64>, hasher: RandomState) -> Self {
        Fallback { limiter, hasher }
    }

    fn key(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// `key`'s state in the local limiter.
    pub(crate) fn state(&self, key: &[u8]) -> crate::rate_limit::RateLimitState {
        self.limiter.state(&self.key(key))
    }
}

/// Why a decision got no answer from Redis.
#[derive(Clone, Debug)]
enum AskError {
    /// The guard is open; a probe may go after this, where known.
    Open(Option<Duration>),
    /// The round trip failed or timed out.
    Failed(String),
}

/// A decision waiting for its batch.
struct Pending {
    key: Vec<u8>,
    args: [u64; 3],
    reply: oneshot::Sender<Result<Answer, AskError>>,
}

/// The decisions waiting for the next batch, and how many tasks are
/// sending batches.
#[derive(Default)]
struct Batches {
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    senders: usize,
}

impl Batches {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a decision; `true` when fewer than `MAX_IN_FLIGHT` tasks
    /// are sending batches, so the caller must start one.
    fn push(&self, pending: Pending) -> bool {
        let mut queue = self.lock();
        queue.pending.push(pending);
        let start = queue.senders < MAX_IN_FLIGHT;
        queue.senders += usize::from(start);
        start
    }

    /// The next batch, or `None` (and the sender stops) when none waits.
    fn next(&self) -> Option<Vec<Pending>> {
        let mut queue = self.lock();
        if queue.pending.is_empty() {
            queue.senders -= 1;
            return None;
        }
        let take = queue.pending.len().min(MAX_BATCH);
        Some(queue.pending.drain(..take).collect())
    }
}
