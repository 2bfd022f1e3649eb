//! One breaker per key (per host, per endpoint), created on first use, with
//! a bound on how many are kept.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::breaker::{Breaker, Listener, Settings};
use super::future::ResponseFuture;
use super::handle::{Handle, State};
use super::layer::CircuitBreakerBuilder;
use crate::classify::{Classify, DefaultClassifier};
use crate::error::{BoxError, CircuitOpen, ConfigError};
use crate::name::Name;
use crate::sync::{self, AtomicBool, Ordering, RwLock, RwLockReadGuard, RwLockWriteGuard};

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

    /// The most keys kept at once (default 1 000). When a new key would pass
    /// it, an eighth of the keys go: idle Closed ones first, then Closed
    /// ones, and only if every breaker is in another state, any. A flood of
    /// distinct keys costs at most this many breakers.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// A key whose breaker is Closed and has had no calls for this long
    /// (default 10 minutes) may be dropped: it goes between one and two of
    /// these after its last call, when a new key arrives, and starts afresh
    /// if it comes back. Keys in any other state (open, forced open,
    /// disabled, metrics only) are kept, so an isolation set by hand holds.
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
        Ok(KeyedCircuitBreakerLayer {
            shared: Arc::new(Keyed {
                name,
                settings,
                listener,
                seed,
                max_keys: self.max_keys,
                idle_after: self.idle_after,
                keys: RwLock::new(Keys {
                    breakers: HashMap::new(),
                    last_sweep: None,
                }),
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
    fn is_closed(&self) -> bool {
        self.breaker.current().state() == State::Closed
    }

    fn touch(&self) -> Arc<Breaker> {
        // Loaded first, so a busy key does not write the shared line.
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
        self.breaker.clone()
    }
}

struct Keys<K> {
    breakers: HashMap<K, Entry>,
    last_sweep: Option<Instant>,
}

struct Keyed<K> {
    name: Name,
    settings: Settings,
    listener: Option<Listener>,
    seed: Option<u64>,
    max_keys: usize,
    idle_after: Duration,
    keys: RwLock<Keys<K>>,
}

impl<K: Hash + Eq + Clone + fmt::Debug> Keyed<K> {
    fn read(&self) -> RwLockReadGuard<'_, Keys<K>> {
        // Nothing panics while holding it, and a breaker's listener never
        // runs under it, so a poisoned lock holds nothing half-done.
        sync::read(&self.keys)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Keys<K>> {
        sync::write(&self.keys)
    }

    /// The key's breaker, if it has one; looking does not count as use.
    fn get(&self, key: &K) -> Option<Arc<Breaker>> {
        let keys = self.read();
        keys.breakers.get(key).map(|entry| entry.breaker.clone())
    }

    /// The key's breaker, made if it is new; marks the key as in use.
    fn breaker(&self, key: K) -> Arc<Breaker> {
        if let Some(breaker) = self.read().breakers.get(&key).map(Entry::touch) {
            return breaker;
        }
        let mut keys = self.write();
        if let Some(entry) = keys.breakers.get(&key) {
            return entry.touch(); // another caller made it meanwhile
        }
        self.sweep_idle(&mut keys);
        if keys.breakers.len() >= self.max_keys {
            self.make_room(&mut keys);
        }
        let name = Name::from(format!("{}[{key:?}]", self.name));
        let breaker = Breaker::new(name, self.settings, self.listener.clone(), self.seed);
        let entry = Entry {
            breaker: breaker.clone(),
            used: AtomicBool::new(true),
        };
        keys.breakers.insert(key, entry);
        breaker
    }

    /// Drops the Closed keys with no call since the last sweep, if that was
    /// at least `idle_after` ago. A key in any other state is kept: an open
    /// breaker still protects its upstream, and an isolation set by hand
    /// must hold.
    fn sweep_idle(&self, keys: &mut Keys<K>) {
        let now = Instant::now();
        let Some(last) = keys.last_sweep else {
            keys.last_sweep = Some(now);
            return;
        };
        if now.saturating_duration_since(last) < self.idle_after {
            return;
        }
        keys.last_sweep = Some(now);
        keys.breakers
            .retain(|_, entry| entry.used.swap(false, Ordering::Relaxed) || !entry.is_closed());
    }

    /// Drops an eighth of the keys (at least one): idle Closed ones, then
    /// Closed ones, then (a last resort, when every breaker is open) any.
    /// Scanning for a batch keeps a flood of new keys O(1) per key.
    fn make_room(&self, keys: &mut Keys<K>) {
        let target = keys.breakers.len() + 1 - self.max_keys + self.max_keys / 8;
        let mut removed = 0;
        let passes: [&dyn Fn(&Entry) -> bool; 3] = [
            &|e| !e.used.load(Ordering::Relaxed) && e.is_closed(),
            &|e| e.is_closed(),
            &|_| true,
        ];
        for pass in passes {
            keys.breakers.retain(|_, entry| {
                if removed < target && pass(entry) {
                    removed += 1;
                    false
                } else {
                    true
                }
            });
            if removed >= target {
                return;
            }
        }
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
/// to make (a host as an `Arc<str>`, an id); the breaker's name in errors
/// and events is the layer's name followed by the key in brackets.
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
    K: Hash + Eq + Clone + fmt::Debug,
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
        let breaker = self.shared.breaker((self.key)(&request));
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

impl<K: Hash + Eq + Clone + fmt::Debug> KeyedHandle<K> {
    /// The key's breaker, if it has one now.
    pub fn get(&self, key: &K) -> Option<Handle> {
        self.shared.get(key).map(Handle::new)
    }

    /// The key's breaker, made now if it has none (to open it before any
    /// traffic, say); it counts toward `max_keys`.
    pub fn breaker(&self, key: K) -> Handle {
        Handle::new(self.shared.breaker(key))
    }

    /// How many keys have a breaker now.
    pub fn len(&self) -> usize {
        self.shared.read().breakers.len()
    }

    /// Whether no key has a breaker now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys that have a breaker now.
    pub fn keys(&self) -> Vec<K> {
        self.shared.read().breakers.keys().cloned().collect()
    }

    /// Forgets the key's breaker; its next call starts a fresh one.
    /// Returns whether it had one.
    pub fn remove(&self, key: &K) -> bool {
        self.shared.write().breakers.remove(key).is_some()
    }
}

impl<K> fmt::Debug for KeyedHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedHandle")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}
