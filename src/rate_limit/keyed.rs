//! One limiter per key (client address, API key, tenant), created on first
//! use, in bounded memory: a table of keys, and past it an overflow sketch
//! that can only over-count (see [`KeyedRateLimitLayer`]).
//!
//! Keys never appear in names, `tracing` events or errors: they are often
//! client ids, tenant names or secrets (API keys). Errors name the layer; a
//! [`KeyedHandle`] looks a key up only for a caller that already holds it.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_layer::Layer;
use tower_service::Service;

use super::future::ResponseFuture;
use super::handle::{RateLimitState, trace_refusal};
use super::layer::{Kind, LAYER, RateLimitBuilder, check_burst, check_quota};
use super::limiter::{Algorithm, Clock, Decision, Quota, Snapshot, nanos};
use super::report::{NoReport, ReportState};
use super::sketch::Sketch;
use crate::error::{BoxError, ConfigError, RateLimited};
use crate::keyed::{self, Evict, NewKey, Store};
use crate::metrics::Count;
use crate::name::Name;
use crate::sync::{self, AtomicU64, Ordering, RwLock};

const DEFAULT_MAX_KEYS: usize = 100_000;
/// The fewest cells in each row of a map's part of the sketch: a small
/// table still gets a sketch wide enough to keep keys apart.
const MIN_SKETCH_WIDTH: usize = 16;

/// Builds a [`KeyedRateLimitLayer`]; made by [`RateLimitBuilder::keyed`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct KeyedRateLimitBuilder<K, F> {
    base: RateLimitBuilder,
    key: F,
    max_keys: usize,
    overrides: Vec<(K, u64, Duration)>,
}

impl<K, F> KeyedRateLimitBuilder<K, F> {
    pub(crate) fn new(base: RateLimitBuilder, key: F) -> Self {
        KeyedRateLimitBuilder {
            base,
            key,
            max_keys: DEFAULT_MAX_KEYS,
            overrides: Vec::new(),
        }
    }

    /// The most keys with a limiter in the table at once (default 100 000;
    /// rounded up to a multiple of 16), and the width of the overflow sketch
    /// that limits the keys past it.
    ///
    /// When a new key finds its part of the table full, a key's limiter is
    /// dropped only if it is at rest (as good as new, which takes a window
    /// with no calls); a key still in use is never dropped, so a flood of
    /// keys cannot reset a key's count. A new key that still finds no room
    /// is decided through the overflow sketch, which can only over-count;
    /// [`KeyedHandle::overflow_calls`] counts those calls. Keys with a limit
    /// of their own always get a place. See [`KeyedRateLimitLayer`] for the
    /// details and the memory both take.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// A limit of its own for `key` (a tenant on a bigger plan): `limit`
    /// per `window`, or for GCRA that rate per period, with a burst of
    /// `limit`.
    pub fn limit_for(mut self, key: K, limit: u64, window: Duration) -> Self {
        self.overrides.push((key, limit, window));
        self
    }

    /// Checks the settings and builds the layer.
    ///
    /// # Errors
    ///
    /// As [`RateLimitBuilder::build`], for the layer's limit and each
    /// key's own; when `max_keys` is 0; and when `max_wait` is set (the key
    /// is known only in `call`, after readiness, so a keyed limiter cannot
    /// make `poll_ready` wait).
    pub fn build(self) -> Result<KeyedRateLimitLayer<K, F>, ConfigError>
    where
        K: Hash + Eq,
    {
        let base = self.base.quota()?;
        if !self.base.max_wait_is_zero() {
            return Err(ConfigError::new(
                LAYER,
                "max_wait",
                "is not available on a keyed limiter: its key is known only in `call`, \
                 after readiness",
            ));
        }
        if self.max_keys == 0 {
            return Err(ConfigError::new(LAYER, "max_keys", "must be at least 1"));
        }
        let mut overrides = HashMap::new();
        for (key, limit, window) in self.overrides {
            check_quota(base.kind, limit, window, base.segments)?;
            if base.kind == Kind::Gcra {
                check_burst(limit, window, limit)?;
            }
            overrides.insert(key, own_quota(base, limit, window));
        }
        let sketch_width = keyed::shard_capacity(self.max_keys).max(MIN_SKETCH_WIDTH);
        Ok(KeyedRateLimitLayer {
            shared: Arc::new(Keyed {
                name: self.base.name_or_default(),
                base: RwLock::new(base),
                clock: Clock::new(),
                store: Store::new(self.max_keys, || Sketch::new(base, sketch_width)),
                overrides: RwLock::new(overrides),
                refused: AtomicU64::new(0),
                refused_count: Count::new(
                    "palisade_rate_limit_refused_total",
                    self.base.name_or_default().as_str(),
                ),
            }),
            key: self.key,
            report: NoReport,
            _key: PhantomData,
        })
    }
}

impl<K, F> fmt::Debug for KeyedRateLimitBuilder<K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimitBuilder")
            .field("base", &self.base)
            .field("max_keys", &self.max_keys)
            .field("overrides", &self.overrides.len())
            .finish_non_exhaustive()
    }
}

/// A key's quota: the layer's kind, its own limit, a burst of that limit.
fn own_quota(base: Quota, limit: u64, window: Duration) -> Quota {
    Quota {
        limit,
        window,
        burst: limit,
        ..base
    }
}

/// A limiter is at rest when it is as good as new: it would decide exactly
/// as a fresh one from now on. That takes its calls having left the window
/// (or its GCRA bucket being full again), so it is idle too.
impl Evict for Algorithm {
    fn may_evict(&self, now: u64) -> bool {
        self.is_fresh(now)
    }
}

/// The keys' limiters, and in each shard its part of the overflow sketch.
type Limiters<K> = Store<K, Algorithm, Sketch>;

struct Keyed<K> {
    name: Name,
    // Every key without a limit of its own starts from this.
    base: RwLock<Quota>,
    clock: Clock,
    store: Limiters<K>,
    overrides: RwLock<HashMap<K, Quota>>,
    refused: AtomicU64,
    /// `palisade_rate_limit_refused_total{name}`: every key's refusals
    /// under the layer's name (a series per key would grow with the keys
    /// and show them).
    refused_count: Count,
}

impl<K> Keyed<K> {
    fn base(&self) -> Quota {
        *sync::read(&self.base)
    }
}

impl<K: Hash + Eq> Keyed<K> {
    /// Takes one permit for `key`, making its limiter on first use. The
    /// key's state comes with a refusal (for its limit), and with an
    /// admission when `report` is set: read in the same lookup, at the same
    /// instant.
    #[inline]
    fn acquire(&self, key: K, report: bool) -> (Decision, Option<Snapshot>) {
        let key = self.store.hashed(key);
        let now = self.clock.now();
        // The state goes out beside the lookup's result, not in it: a
        // 48-byte result read back through the store's `Option` cost about
        // 4 ns a call in stalled copies.
        let mut state = None;
        let looked_up = self.store.get(&key, |limiter| {
            Self::acquire_into(limiter, now, report, &mut state)
        });
        if let Some(decision) = looked_up {
            return (decision, state);
        }
        // The slow path: a key with no limiter in the table. It gets one if
        // its map has room (or it has a limit of its own), starting from
        // what the sketch holds for it; otherwise the sketch decides. Idle
        // keys are swept at most once per window per map.
        let window = nanos(self.base().window);
        let hash = key.hash;
        self.store.get_or_insert(
            key,
            window,
            Acquire {
                keyed: self,
                hash,
                now,
                report,
                own: None,
            },
        )
    }

    /// Takes one permit from a key's limiter, with its state when the
    /// call is refused or `report` is set.
    fn acquire_from(limiter: &Algorithm, now: u64, report: bool) -> (Decision, Option<Snapshot>) {
        let mut state = None;
        let decision = Self::acquire_into(limiter, now, report, &mut state);
        (decision, state)
    }

    /// [`acquire_from`](Self::acquire_from), the state written to `state`.
    #[inline]
    fn acquire_into(
        limiter: &Algorithm,
        now: u64,
        report: bool,
        state: &mut Option<Snapshot>,
    ) -> Decision {
        let decision = limiter.acquire(now, 1);
        if report || decision != Decision::Admitted {
            *state = Some(limiter.snapshot(now));
        }
        decision
    }

    /// A key's limiter, carrying what the sketch holds for it; a key with a
    /// limit of its own converts that as
    /// [`KeyedHandle::set_limit_for`] does.
    fn carried(sketch: &Sketch, hash: u64, own: Option<Quota>, now: u64) -> Algorithm {
        let carried = sketch.limiter(hash, now);
        match own {
            None => carried,
            Some(own) if carried.is_fresh(now) => Algorithm::new(own),
            Some(own) => {
                carried.set_limit(own.limit, own.window, now);
                carried.set_burst(own.burst, now);
                carried
            }
        }
    }

    /// `key`'s own quota, if it has one.
    fn own_quota(&self, key: &K) -> Option<Quota> {
        let overrides = sync::read(&self.overrides);
        overrides.get(key).copied()
    }

    fn state(&self, key: K) -> RateLimitState {
        let now = self.clock.now();
        let key = self.store.hashed(key);
        let shard = Limiters::read(self.store.shard(key.hash));
        let snapshot = match shard.entries.get(&key) {
            Some(limiter) => limiter.snapshot(now),
            None => {
                let now = shard.overflow.now(now);
                let own = self.own_quota(&key.key);
                Self::carried(&shard.overflow, key.hash, own, now).snapshot(now)
            }
        };
        snapshot.into()
    }
}

/// One call for a key with no limiter in the table, as the store places it.
struct Acquire<'a, K> {
    keyed: &'a Keyed<K>,
    hash: u64,
    now: u64,
    report: bool,
    /// The key's own quota, read under its shard's lock (so that a
    /// concurrent `set_limit_for` either comes first or finds the limiter).
    own: Option<Quota>,
}

impl<K: Hash + Eq> NewKey<K, Algorithm, Sketch> for Acquire<'_, K> {
    type Output = (Decision, Option<Snapshot>);

    fn found(self, limiter: &Algorithm) -> Self::Output {
        Keyed::<K>::acquire_from(limiter, self.now, self.report) // made meanwhile
    }

    fn now(&self, sketch: &Sketch) -> u64 {
        // The sketch has seen no instant later than the one used here.
        sketch.now(self.now)
    }

    fn always_placed(&mut self, key: &K) -> bool {
        // A key with a limit of its own always gets a place.
        self.own = self.keyed.own_quota(key);
        self.own.is_some()
    }

    fn place(self, sketch: &Sketch, now: u64) -> (Algorithm, Self::Output) {
        let limiter = Keyed::<K>::carried(sketch, self.hash, self.own, now);
        let acquired = Keyed::<K>::acquire_from(&limiter, now, self.report);
        (limiter, acquired)
    }

    fn overflow(self, sketch: &mut Sketch, now: u64) -> Self::Output {
        sketch.acquire(self.hash, now, self.report)
    }
}

/// Applies a [`KeyedRateLimit`]: one limiter per key taken from each
/// request.
///
/// ```
/// use std::time::Duration;
/// use palisade::rate_limit::RateLimitLayer;
///
/// // 100 requests a minute per client; the partner gets 1 000.
/// let layer = RateLimitLayer::sliding_window(100, Duration::from_secs(60))
///     .name("api")
///     .keyed(|request: &(String, u32)| request.0.clone())
///     .limit_for("partner".to_string(), 1_000, Duration::from_secs(60))
///     .max_keys(50_000)
///     .build()?;
/// let clients = layer.handle();
/// assert_eq!(clients.state(&"partner".to_string()).limit, 1_000);
/// assert_eq!(clients.state(&"someone".to_string()).remaining, 100);
/// # Ok::<(), palisade::ConfigError>(())
/// ```
///
/// # Memory
///
/// A key in the table costs its own size plus a 64-byte limiter, inline in
/// a hash map (which keeps a control byte per slot and up to an eighth
/// spare): about 100 bytes for an `IpAddr` key. A sliding log adds 8 bytes
/// per permit of its limit, a fixed or segmented window 8 bytes per
/// segment. The keys are spread over 16 maps, each behind
/// its own lock, each holding at most `max_keys / 16` keys (rounded up), plus
/// the keys with a limit of their own, which always get a place. A key goes
/// when its limiter is as good as new (it would decide exactly as a fresh
/// one: all its calls have left the window, or its GCRA bucket is full
/// again); such keys are swept when a new key arrives, at most once per
/// window per map. A key still in use is never dropped: its count would go
/// with it.
///
/// The overflow sketch below adds 4 rows of `max_keys` cells (in each map,
/// 4 rows of `max_keys / 16` rounded up, at least 16), allocated for a map
/// the first time a key finds it full, never grown: 8 bytes a cell for
/// GCRA, 16 for the windows. At the default 100 000 keys that is 3.2 MB or
/// 6.4 MB, beside about 10 MB of table for `IpAddr` keys.
///
/// # When the table is full
///
/// A key that finds its map full of keys in use is decided through the
/// overflow sketch: a count-min sketch of 4 rows in which a key has one
/// cell per row, picked by the layer's hash (randomly seeded for each
/// layer, so callers cannot aim keys at a cell). A cell is a limiter state
/// of the layer's algorithm, shared by the keys that land on it: a GCRA
/// theoretical arrival time, or the counts of the current and the previous
/// window. A key's estimate is the least consumed of its 4 cells, and each
/// admission raises each of its cells to the key's new estimate, no
/// further. So:
///
/// - **No key gets more than its limit.** Each cell holds at least what the
///   key alone would, so a key is admitted only when its own limiter would
///   admit it. A sliding log's keys are counted in windows, the previous
///   window's count taken whole rather than weighted: never more than
///   `limit` in any window-length, as with the log, but a burst can keep
///   the key refused for up to two windows instead of one.
/// - **Nothing is reset.** A key in use is never evicted, and a key that
///   finds room in the table again (once idle keys are swept) starts from
///   the sketch's estimate: its counts, its arrival time, or for a log its
///   estimate's calls, taken as made now. It can only have spent more.
/// - **Early refusals are bounded.** A key is admitted whenever one of its
///   4 cells, counting every call admitted through it (its own and the
///   others'), has room for it: over the window (the sliding window's
///   weighted count; for a log, the previous window whole) or, for GCRA,
///   over the last `burst` emission intervals. So it is refused before
///   its own limit only when all 4 of its cells are busy with other keys'
///   calls; in a window, it loses at most the fewest other keys' calls any
///   one of them holds. With `R` calls decided through the sketch per
///   window, spread over `max_keys` cells a row, a cell holds
///   `R / max_keys` of them on average, and (by Markov's inequality, the
///   rows taken as independent) a key finds more than `m` in each of its 4
///   cells with probability at most `(R / (max_keys × m))⁴`. With the
///   defaults and a limit of 100 a minute, a flood of 100 000 new keys a
///   minute past the table puts one call in a cell on average: a new
///   client loses more than 10 of its 100 permits with probability at most
///   10⁻⁴ by that bound (about 10⁻³² for calls spread at random).
///   Locking clients out takes every cell full: about `max_keys × limit`
///   calls a window (10⁷ a minute here), and then only until the window
///   moves on.
///
/// [`KeyedHandle::overflow_calls`] counts the calls decided through the
/// sketch, and [`KeyedHandle::state`] reports a key outside the table from
/// its estimate.
///
/// # The tower contract
///
/// The key is taken in `call`, so unlike [`RateLimit`](super::RateLimit)
/// this layer cannot refuse before polling the inner service's readiness:
/// it passes readiness through, and a refused call fails with
/// `RateLimited` without reaching the inner service. Keys should be cheap to
/// make and hash (an address, an `Arc<str>`, an id). Errors name the layer,
/// never the key: keys are often secrets (API keys).
pub struct KeyedRateLimitLayer<K, F, R = NoReport> {
    shared: Arc<Keyed<K>>,
    key: F,
    report: R,
    _key: PhantomData<fn() -> K>,
}

impl<K, F: Clone, R: Clone> Clone for KeyedRateLimitLayer<K, F, R> {
    fn clone(&self) -> Self {
        KeyedRateLimitLayer {
            shared: self.shared.clone(),
            key: self.key.clone(),
            report: self.report.clone(),
            _key: PhantomData,
        }
    }
}

impl<K, F, R> KeyedRateLimitLayer<K, F, R> {
    /// A handle on every key's limiter.
    pub fn handle(&self) -> KeyedHandle<K> {
        KeyedHandle {
            shared: self.shared.clone(),
        }
    }

    /// Reports each key's state on the responses its limiter admitted,
    /// through `report` ([`ReportState`]: the HTTP `RateLimit-*` headers,
    /// say), from the same lookup that admitted the call.
    pub fn report_state<R2>(self, report: R2) -> KeyedRateLimitLayer<K, F, R2> {
        KeyedRateLimitLayer {
            shared: self.shared,
            key: self.key,
            report,
            _key: PhantomData,
        }
    }
}

impl<S, K, F: Clone, R: Clone> Layer<S> for KeyedRateLimitLayer<K, F, R> {
    type Service = KeyedRateLimit<S, K, F, R>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedRateLimit {
            inner,
            shared: self.shared.clone(),
            key: self.key.clone(),
            report: self.report.clone(),
        }
    }
}

impl<K, F, R> fmt::Debug for KeyedRateLimitLayer<K, F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimitLayer")
            .field("name", &self.shared.name)
            .field("quota", &self.shared.base())
            .finish_non_exhaustive()
    }
}

/// A service with one rate limiter per key; built by
/// [`KeyedRateLimitLayer`].
pub struct KeyedRateLimit<S, K, F, R = NoReport> {
    inner: S,
    shared: Arc<Keyed<K>>,
    key: F,
    report: R,
}

impl<S: Clone, K, F: Clone, R: Clone> Clone for KeyedRateLimit<S, K, F, R> {
    fn clone(&self) -> Self {
        KeyedRateLimit {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            key: self.key.clone(),
            report: self.report.clone(),
        }
    }
}

impl<S, K, F, R> KeyedRateLimit<S, K, F, R> {
    /// A handle on every key's limiter.
    pub fn handle(&self) -> KeyedHandle<K> {
        KeyedHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S, K, F, R, Request> Service<Request> for KeyedRateLimit<S, K, F, R>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
    K: Hash + Eq,
    F: Fn(&Request) -> K,
    R: ReportState<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Request) -> Self::Future {
        let (decision, state) = self.shared.acquire((self.key)(&request), R::REPORTS);
        match decision {
            Decision::Admitted => {
                let report = state.map(|state| (self.report.clone(), state.into()));
                ResponseFuture::admitted(self.inner.call(request), report)
            }
            Decision::Refused { wait } => self.refuse(Some(wait), state),
            Decision::TooLarge => self.refuse(None, state),
        }
    }
}

impl<S, K, F, R> KeyedRateLimit<S, K, F, R> {
    #[cold]
    fn refuse<Fut>(
        &self,
        wait: Option<Duration>,
        state: Option<Snapshot>,
    ) -> ResponseFuture<Fut, R> {
        self.shared.refused.fetch_add(1, Ordering::Relaxed);
        self.shared.refused_count.add();
        trace_refusal(&self.shared.name);
        let mut error = RateLimited::with_name(self.shared.name.clone(), wait);
        if let Some(state) = state {
            error = error.with_limit(state.limit);
        }
        ResponseFuture::rejected(error)
    }
}

impl<S: fmt::Debug, K, F, R> fmt::Debug for KeyedRateLimit<S, K, F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimit")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

/// A handle on a keyed limiter: each key's state and limit.
pub struct KeyedHandle<K> {
    shared: Arc<Keyed<K>>,
}

#[cfg(feature = "redis")]
impl<K: Hash + Eq> KeyedHandle<K> {
    /// Takes one permit for `key`, as a call would: the Redis-backed
    /// limiter's fallback decides through this.
    pub(crate) fn acquire(&self, key: K, report: bool) -> (Decision, Option<Snapshot>) {
        self.shared.acquire(key, report)
    }

    pub(crate) fn count_refusal(&self) {
        self.shared.refused.fetch_add(1, Ordering::Relaxed);
        self.shared.refused_count.add();
        trace_refusal(&self.shared.name);
    }
}

impl<K> Clone for KeyedHandle<K> {
    fn clone(&self) -> Self {
        KeyedHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<K> fmt::Debug for KeyedHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedHandle")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq> KeyedHandle<K> {
    /// The layer's name.
    pub fn name(&self) -> &str {
        self.shared.name.as_str()
    }

    /// `key`'s limit, calls left and time until they are all back; a key
    /// with no limiter in the table reports what the overflow sketch holds
    /// for it (a fresh limiter's state, unless it or keys sharing its cells
    /// were decided there lately).
    pub fn state(&self, key: &K) -> RateLimitState
    where
        K: Clone,
    {
        self.shared.state(key.clone())
    }

    /// How many keys have a limiter in the table now (at most `max_keys`,
    /// rounded up, plus the keys with a limit of their own).
    pub fn len(&self) -> usize {
        self.shared.store.len()
    }

    /// Whether no key has a limiter in the table now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every key whose limiter is as good as new, now (sweeps also
    /// happen on their own as new keys arrive).
    pub fn sweep(&self) {
        let now = self.shared.clock.now();
        for shard in self.shared.store.shards() {
            Limiters::write(shard).sweep(now);
        }
    }

    /// Calls refused so far, for any key (through the table or the
    /// overflow sketch).
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Calls decided through the overflow sketch (admitted or refused),
    /// because their key's map was full of keys in use: how often
    /// `max_keys` was reached.
    pub fn overflow_calls(&self) -> u64 {
        self.shared.store.overflow_calls()
    }

    /// Changes the limit of every key without a limit of its own, from now
    /// on: the keys that have a limiter change as
    /// [`Handle::set_limit`](super::Handle::set_limit) describes, and new
    /// keys start from it. A GCRA limiter keeps its burst. The overflow
    /// sketch keeps what its cells hold: GCRA cells their permits left,
    /// window cells their counts (a new window carries them whole into its
    /// current window, where a window counter in the table starts over).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field, as the builder checks it; the
    /// limit in force stays.
    pub fn set_limit(&self, limit: u64, window: Duration) -> Result<(), ConfigError> {
        let shared = &self.shared;
        {
            let mut base = sync::write(&shared.base);
            check_quota(base.kind, limit, window, base.segments)?;
            if base.kind == Kind::Gcra {
                check_burst(limit, window, base.burst)?;
            }
            base.limit = limit;
            base.window = window;
        }
        // The base first, then the keys: a key made meanwhile either starts
        // from the new limit or is in its map by the time it is changed
        // here. (No lock is held across another, so none can deadlock.)
        let now = shared.clock.now();
        for shard in shared.store.shards() {
            let mut shard = Limiters::write(shard);
            let now = shard.overflow.now(now);
            shard.overflow.set_limit(limit, window, now);
            let overrides = sync::read(&shared.overrides);
            for (key, limiter) in &shard.entries {
                if !overrides.contains_key(&key.key) {
                    limiter.set_limit(limit, window, now);
                }
            }
        }
        Ok(())
    }

    /// Gives `key` a limit of its own from now on (see
    /// [`KeyedRateLimitBuilder::limit_for`]); its counts carry over (a key
    /// outside the table carries the overflow sketch's estimate into the
    /// table on its next call).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field, as the builder checks it.
    pub fn set_limit_for(&self, key: K, limit: u64, window: Duration) -> Result<(), ConfigError>
    where
        K: Clone,
    {
        let base = self.shared.base();
        check_quota(base.kind, limit, window, base.segments)?;
        let quota = own_quota(base, limit, window);
        if base.kind == Kind::Gcra {
            check_burst(limit, window, quota.burst)?;
        }
        // The override first, then the key's limiter, as in `set_limit`.
        sync::write(&self.shared.overrides).insert(key.clone(), quota);
        let now = self.shared.clock.now();
        let hashed = self.shared.store.hashed(key);
        let shard = Limiters::read(self.shared.store.shard(hashed.hash));
        if let Some(limiter) = shard.entries.get(&hashed) {
            limiter.set_limit(limit, window, now);
            limiter.set_burst(quota.burst, now);
        }
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_keys_limiter_is_small() {
        // The memory figure in the docs: the limiter inline in the map's
        // entry, beside the key (and one control byte, at a load of at
        // most 7/8).
        let size = std::mem::size_of::<Algorithm>();
        assert!(size <= 64, "{size} bytes");
    }
}
