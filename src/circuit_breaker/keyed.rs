//! One breaker per key (per host, per endpoint, per tenant), created on
//! first use, with a bound on how many are kept; past it, one overflow
//! breaker shared by the keys without one of their own.
//!
//! Keys never appear in names, `tracing` events or errors: they are often
//! client ids, tenant names or secrets. Every key's breaker, and the
//! overflow breaker, carries the layer's name; a [`KeyedHandle`] looks a key
//! up only for a caller that already holds it.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::breaker::{Breaker, BreakerMetrics, Listener, Settings};
use super::future::ResponseFuture;
use super::handle::{Handle, State};
use super::layer::CircuitBreakerBuilder;
use crate::classify::{Classify, DefaultClassifier};
use crate::clock::Instants;
use crate::error::{BoxError, CircuitOpen, ConfigError};
use crate::keyed::{Evict, Hashed, NewKey, Store};
use crate::name::Name;
use crate::sync::{AtomicBool, Ordering};

const DEFAULT_MAX_KEYS: usize = 1_000;
const DEFAULT_IDLE_AFTER: Duration = Duration::from_secs(600);

/// Builds a [`KeyedCircuitBreakerLayer`]; made by
/// [`CircuitBreakerBuilder::keyed`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct KeyedBuilder<C, F> {
    breaker: CircuitBreakerBuilder<C>,
    key: F,
    max_keys: usize,
    idle_after: Duration,
}

impl<C, F> KeyedBuilder<C, F> {
    pub(crate) fn new(breaker: CircuitBreakerBuilder<C>, key: F) -> Self {
        KeyedBuilder {
            breaker,
            key,
            max_keys: DEFAULT_MAX_KEYS,
            idle_after: DEFAULT_IDLE_AFTER,
        }
    }

    /// The most keys with a breaker of their own at once (default 1 000;
    /// rounded up to a multiple of 16, as keys are spread over 16 parts of
    /// the store by their hash, each holding its share). A flood of
    /// distinct keys costs at most this many breakers, plus one.
    ///
    /// When a new key finds its part full, a key's breaker is dropped only
    /// if it is Closed and has been idle (see
    /// [`idle_after`](Self::idle_after)); a breaker in any other state
    /// (Open, HalfOpen, forced open, disabled, metrics only) is never
    /// dropped, so a flood of keys cannot reset an isolation. A new key that
    /// still finds no room shares the **overflow breaker** (the same
    /// settings, the layer's name) with every other key without a breaker
    /// of its own: such keys share its judgement, and get no fresh Closed
    /// breaker. [`KeyedHandle::overflow_calls`] counts their calls. Keys
    /// made through [`KeyedHandle::breaker`] always get a breaker of their
    /// own.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// A key whose breaker is Closed and has had no calls for this long
    /// (default 10 minutes) may be dropped: it goes between one and two of
    /// these after its last call, when a new key arrives in its part of the
    /// store, and starts afresh if it comes back. Keys in any other state
    /// (open, forced open, disabled, metrics only) are kept, so an isolation
    /// holds.
    pub fn idle_after(mut self, idle_after: Duration) -> Self {
        self.idle_after = idle_after;
        self
    }

    /// Checks the settings and builds the layer.
    ///
    /// # Errors
    ///
    /// As [`CircuitBreakerBuilder::build`], when `max_keys` or `idle_after`
    /// is zero, and when `wait_when_open` is set.
    pub fn build<K>(self) -> Result<KeyedCircuitBreakerLayer<K, F, C>, ConfigError> {
        let settings = self.breaker.config().settings()?;
        if settings.wait_when_open.is_some() {
            return Err(ConfigError::new(
                "circuit_breaker",
                "wait_when_open",
                "is not available on a keyed breaker: its key is known only in `call`, \
                 after readiness",
            ));
        }
        if self.max_keys == 0 {
            return Err(ConfigError::new(
                "circuit_breaker",
                "max_keys",
                "must be at least 1",
            ));
        }
        if self.idle_after.is_zero() {
            return Err(ConfigError::new(
                "circuit_breaker",
                "idle_after",
                "must be more than zero",
            ));
        }
        let (name, listener, seed, classifier) = self.breaker.into_parts();
        let metrics = BreakerMetrics::counts_only(name.as_str());
        let instants = Arc::new(Instants::new());
        let overflow = Breaker::new(
            name.clone(),
            settings,
            listener.clone(),
            seed,
            metrics.clone(),
            instants.clone(),
        );
        Ok(KeyedCircuitBreakerLayer {
            shared: Arc::new(Keyed {
                name,
                settings,
                listener,
                seed,
                metrics,
                instants,
                max_keys: self.max_keys,
                idle_after: self.idle_after,
                origin: Instant::now(),
                store: Store::new(self.max_keys, || ()),
                overflow,
            }),
            key: self.key,
            classifier,
        })
    }
}

impl<C, F> fmt::Debug for KeyedBuilder<C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBuilder")
            .field("breaker", &self.breaker)
            .field("max_keys", &self.max_keys)
            .field("idle_after", &self.idle_after)
            .finish_non_exhaustive()
    }
}

struct Entry {
    breaker: Arc<Breaker>,
    // Set by each call, cleared by each sweep: clear at a sweep means no
    // call since the one before.
    used: AtomicBool,
}

impl Entry {
    fn touch(&self) -> Arc<Breaker> {
        // Loaded first, so a busy key does not write the shared line.
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
        self.breaker.clone()
    }
}

/// A breaker is at rest when Closed: an open breaker still protects its
/// upstream, a half-open one has probes out, and a state set by hand must
/// hold. It is idle when no call came since the last sweep of its part of
/// the store, at least `idle_after` ago.
impl Evict for Entry {
    fn may_evict(&self, _now: u64) -> bool {
        // Cleared whatever the state, so that the next sweep sees only
        // calls made after this one.
        let used = self.used.swap(false, Ordering::Relaxed);
        !used && self.breaker.current().state() == State::Closed
    }
}

struct Keyed<K> {
    name: Name,
    settings: Settings,
    listener: Option<Listener>,
    seed: Option<u64>,
    /// Shared by every key's breaker: counts under the layer's name.
    metrics: BreakerMetrics,
    /// Shared by every key's breaker: where their clocks read the time.
    instants: Arc<Instants>,
    max_keys: usize,
    idle_after: Duration,
    /// The store's clock starts here.
    origin: Instant,
    store: Store<K, Entry>,
    /// The breaker of every key the store has no room for.
    overflow: Arc<Breaker>,
}

impl<K: Hash + Eq> Keyed<K> {
    /// The key's breaker, if it has one; looking does not count as use.
    fn get(&self, key: K) -> Option<Arc<Breaker>> {
        let key = self.store.hashed(key);
        self.store.get(&key, |entry| entry.breaker.clone())
    }

    /// The breaker that judges the key's call: its own (made if it is new
    /// and there is room, or made whatever the bound if `always_placed`),
    /// or the overflow breaker. Marks the key as in use.
    #[inline]
    fn breaker(&self, key: K, always_placed: bool) -> Arc<Breaker> {
        let key = self.store.hashed(key);
        if let Some(breaker) = self.store.get(&key, Entry::touch) {
            return breaker;
        }
        self.new_key(key, always_placed)
    }

    #[cold]
    fn new_key(&self, key: Hashed<K>, always_placed: bool) -> Arc<Breaker> {
        let now = nanos(Instant::now().saturating_duration_since(self.origin));
        let idle_after = nanos(self.idle_after);
        self.store.get_or_insert(
            key,
            idle_after,
            Place {
                keyed: self,
                now,
                always_placed,
            },
        )
    }
}

/// `d` in nanoseconds, saturating.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A key the store has no breaker for, as the store places it.
struct Place<'a, K> {
    keyed: &'a Keyed<K>,
    now: u64,
    always_placed: bool,
}

impl<K> NewKey<K, Entry, ()> for Place<'_, K> {
    type Output = Arc<Breaker>;

    fn found(self, entry: &Entry) -> Arc<Breaker> {
        entry.touch() // another caller made it meanwhile
    }

    fn now(&self, (): &()) -> u64 {
        self.now
    }

    fn always_placed(&mut self, _: &K) -> bool {
        self.always_placed
    }

    fn place(self, (): &(), _: u64) -> (Entry, Arc<Breaker>) {
        let keyed = self.keyed;
        // The layer's name, never the key's: keys are often secrets.
        let breaker = Breaker::new(
            keyed.name.clone(),
            keyed.settings,
            keyed.listener.clone(),
            keyed.seed,
            keyed.metrics.clone(),
            keyed.instants.clone(),
        );
        let entry = Entry {
            breaker: breaker.clone(),
            used: AtomicBool::new(true),
        };
        (entry, breaker)
    }

    fn overflow(self, (): &mut (), _: u64) -> Arc<Breaker> {
        self.keyed.overflow.clone()
    }
}

/// Applies a [`KeyedCircuitBreaker`] to a service: one breaker per key taken
/// from each request.
///
/// ```
/// use std::time::Duration;
/// use palisade::circuit_breaker::{CircuitBreakerLayer, State};
///
/// // One breaker per upstream host.
/// let layer = CircuitBreakerLayer::builder()
///     .name("upstreams")
///     .count_window(20)
///     .keyed(|request: &(String, u32)| request.0.clone())
///     .max_keys(500)
///     .build()?;
/// let hosts = layer.handle();
/// hosts.breaker("flaky.example".to_string()).force_open();
/// assert_eq!(hosts.get(&"flaky.example".to_string()).map(|h| h.state()), Some(State::ForcedOpen));
/// # Ok::<(), palisade::ConfigError>(())
/// ```
///
/// The key is taken in `call`, so unlike [`CircuitBreaker`](super::CircuitBreaker)
/// this layer cannot refuse before polling the inner service's readiness: it
/// passes readiness through, and a call for an open key fails with
/// [`CircuitOpen`] without reaching the inner service. Keys should be cheap
/// to make and hash (a host as an `Arc<str>`, an id). Every breaker's name
/// in errors and events is the layer's name, never the key.
///
/// # When the store is full
///
/// At most [`max_keys`](KeyedBuilder::max_keys) keys have a breaker of
/// their own. A Closed breaker idle for
/// [`idle_after`](KeyedBuilder::idle_after) makes room for a new key; no
/// other breaker is ever dropped. A new key that finds no room is judged by
/// the overflow breaker, which all such keys share: a flood of distinct
/// keys gets neither fresh Closed breakers nor the power to reset one.
pub struct KeyedCircuitBreakerLayer<K, F, C = DefaultClassifier> {
    shared: Arc<Keyed<K>>,
    key: F,
    classifier: C,
}

impl<K, F: Clone, C: Clone> Clone for KeyedCircuitBreakerLayer<K, F, C> {
    fn clone(&self) -> Self {
        KeyedCircuitBreakerLayer {
            shared: self.shared.clone(),
            key: self.key.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<K, F, C> KeyedCircuitBreakerLayer<K, F, C> {
    /// A handle on every key's breaker.
    pub fn handle(&self) -> KeyedHandle<K> {
        KeyedHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S, K, F: Clone, C: Clone> Layer<S> for KeyedCircuitBreakerLayer<K, F, C> {
    type Service = KeyedCircuitBreaker<S, K, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker {
            inner,
            shared: self.shared.clone(),
            key: self.key.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<K, F, C> fmt::Debug for KeyedCircuitBreakerLayer<K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .field("name", &self.shared.name)
            .field("max_keys", &self.shared.max_keys)
            .finish_non_exhaustive()
    }
}

/// A service with one circuit breaker per key; built by
/// [`KeyedCircuitBreakerLayer`].
pub struct KeyedCircuitBreaker<S, K, F, C = DefaultClassifier> {
    inner: S,
    shared: Arc<Keyed<K>>,
    key: F,
    classifier: C,
}

impl<S: Clone, K, F: Clone, C: Clone> Clone for KeyedCircuitBreaker<S, K, F, C> {
    fn clone(&self) -> Self {
        KeyedCircuitBreaker {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            key: self.key.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S, K, F, C> KeyedCircuitBreaker<S, K, F, C> {
    /// A handle on every key's breaker.
    pub fn handle(&self) -> KeyedHandle<K> {
        KeyedHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S, K, F, C, Request> Service<Request> for KeyedCircuitBreaker<S, K, F, C>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
    K: Hash + Eq,
    F: Fn(&Request) -> K,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let breaker = self.shared.breaker((self.key)(&request), false);
        match breaker.confirm(breaker.admit(), &mut None) {
            Ok(ticket) => {
                ResponseFuture::admitted(self.inner.call(request), ticket, self.classifier.clone())
            }
            Err(retry_after) => {
                breaker.count_not_permitted();
                ResponseFuture::rejected(CircuitOpen::new(breaker.name().clone(), retry_after))
            }
        }
    }
}

impl<S: fmt::Debug, K, F, C> fmt::Debug for KeyedCircuitBreaker<S, K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

/// A handle on a keyed breaker: read and control one key's breaker.
pub struct KeyedHandle<K> {
    shared: Arc<Keyed<K>>,
}

impl<K> Clone for KeyedHandle<K> {
    fn clone(&self) -> Self {
        KeyedHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<K: Hash + Eq> KeyedHandle<K> {
    /// The key's breaker, if it has one of its own now (not the overflow
    /// breaker).
    pub fn get(&self, key: &K) -> Option<Handle>
    where
        K: Clone,
    {
        self.shared.get(key.clone()).map(Handle::new)
    }

    /// The key's breaker, made now if it has none (to open it before any
    /// traffic, say). It counts toward `max_keys`, but is made even past
    /// it: a key named by hand always gets a breaker of its own.
    pub fn breaker(&self, key: K) -> Handle {
        Handle::new(self.shared.breaker(key, true))
    }

    /// How many keys have a breaker of their own now.
    pub fn len(&self) -> usize {
        self.shared.store.len()
    }

    /// Whether no key has a breaker of its own now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys that have a breaker of their own now.
    pub fn keys(&self) -> Vec<K>
    where
        K: Clone,
    {
        let mut keys = Vec::with_capacity(self.len());
        for shard in self.shared.store.shards() {
            let shard = Store::<K, Entry>::read(shard);
            keys.extend(shard.entries.keys().map(|key| key.key.clone()));
        }
        keys
    }

    /// Forgets the key's breaker; its next call starts a fresh one.
    /// Returns whether it had one.
    pub fn remove(&self, key: &K) -> bool
    where
        K: Clone,
    {
        self.shared.store.remove(key.clone())
    }

    /// Calls judged by the shared overflow breaker (admitted or refused),
    /// because their key had no breaker of its own and no room for one: how
    /// often `max_keys` was reached.
    pub fn overflow_calls(&self) -> u64 {
        self.shared.store.overflow_calls()
    }
}

impl<K> fmt::Debug for KeyedHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedHandle")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}
