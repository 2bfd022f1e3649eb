//! The bounded store behind the keyed layers (the keyed circuit breaker and
//! the keyed rate limiter): one entry per key, made on first use, in memory
//! that a flood of distinct keys cannot grow, and with one rule for what
//! happens when it is full.
//!
//! # Layout
//!
//! Keys are spread over 16 shards by their hash (one hash per call, from a
//! randomly seeded hasher per store, so callers cannot aim keys at a
//! shard), each a map behind its own lock. A known key costs a read lock
//! and a lookup; only a new key takes its shard's write lock. Each shard
//! holds at most `max_keys / 16` keys, rounded up (so the store holds at
//! most `max_keys` rounded up to a multiple of 16), plus the keys its layer
//! places whatever the bound (a rate limit of the key's own, a breaker
//! made through the handle: an operator's choice, not traffic's).
//!
//! # When a shard is full
//!
//! 1. An entry is evicted only when it is **at rest** (its state is the
//!    same as a fresh entry's, so dropping it loses nothing) and has been
//!    unused for the layer's idle period. Each layer says what that means
//!    for it ([`Evict`]). Idle entries are swept when a new key arrives in
//!    their shard, at most once per idle period per shard. Nothing else is
//!    ever evicted: an entry whose state matters stays until it is at rest,
//!    so a flood of new keys can never reset a key's state.
//! 2. A new key that still finds its shard full goes to the **overflow**,
//!    which never forgets and errs only on the safe side: for the rate
//!    limiter, a count-min sketch that can only over-count; for the
//!    breaker, one breaker shared by every key without one of its own. At
//!    worst the keys in the overflow share one judgement.
//! 3. The store counts the calls decided by the overflow
//!    ([`Store::overflow_calls`]): how often the bound was reached.
//!
//! Keys never leave the store for names, events or errors: keys are often
//! client ids, tenant names or secrets.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};

use crate::sync::{self, AtomicU64, Ordering, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Keys are spread over this many shards, each behind its own lock.
pub(crate) const SHARDS: usize = 16;

/// The most keys a shard holds for a store of `max_keys`.
pub(crate) fn shard_capacity(max_keys: usize) -> usize {
    max_keys.div_ceil(SHARDS)
}

/// An entry's say in whether it may be evicted.
pub(crate) trait Evict {
    /// Whether the entry is at rest and unused for its layer's idle period,
    /// at `now` (nanoseconds on the layer's clock). Asked once per sweep of
    /// its shard, so an entry may use the question to start its next idle
    /// period (clearing a "used" flag, say).
    fn may_evict(&self, now: u64) -> bool;
}

/// A key with its hash, computed once per call: it picks the shard, and the
/// shard's map uses it as is.
#[derive(Debug)]
pub(crate) struct Hashed<K> {
    pub(crate) hash: u64,
    pub(crate) key: K,
}

impl<K> Hash for Hashed<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl<K: PartialEq> PartialEq for Hashed<K> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.key == other.key
    }
}

impl<K: Eq> Eq for Hashed<K> {}

/// The hasher of a shard's map: the hash is already made.
#[derive(Default)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `Hashed` is hashed here, through `write_u64`; this keeps the
        // hasher total all the same.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
}

pub(crate) type Map<K, V> = HashMap<Hashed<K>, V, BuildHasherDefault<PassThrough>>;

/// One shard: its keys' entries, and its part of the overflow (the
/// limiter's sketch rows; nothing for the breaker, whose overflow breaker
/// is shared by all shards).
#[derive(Debug)]
pub(crate) struct Shard<K, V, O> {
    pub(crate) entries: Map<K, V>,
    /// When idle entries were last swept, on the layer's clock.
    last_sweep: u64,
    pub(crate) overflow: O,
}

impl<K, V: Evict, O> Shard<K, V, O> {
    /// Drops the entries that may be evicted now.
    pub(crate) fn sweep(&mut self, now: u64) {
        self.last_sweep = now;
        self.entries.retain(|_, entry| !entry.may_evict(now));
    }
}

/// What a layer does with a key its store does not hold yet: the store
/// decides, under the shard's write lock, whether the key gets an entry of
/// its own or goes to the overflow, and asks the layer for the rest.
pub(crate) trait NewKey<K, V, O> {
    /// What the call gets from its entry or from the overflow.
    type Output;

    /// Another caller made the key's entry meanwhile.
    fn found(self, entry: &V) -> Self::Output;

    /// The instant to decide at, in nanoseconds on the layer's clock (the
    /// overflow may have seen a later one than the caller read).
    fn now(&self, overflow: &O) -> u64;

    /// Whether the key gets an entry even in a full shard. Asked for every
    /// new key, before [`place`](Self::place) or
    /// [`overflow`](Self::overflow).
    fn always_placed(&mut self, key: &K) -> bool;

    /// The key's new entry, and what the call gets from it.
    fn place(self, overflow: &O, now: u64) -> (V, Self::Output);

    /// The shard is full: the overflow decides.
    fn overflow(self, overflow: &mut O, now: u64) -> Self::Output;
}

/// A bounded, sharded map from keys to entries, with an overflow for the
/// keys that find no room (see the module docs).
pub(crate) struct Store<K, V, O = (), S = RandomState> {
    hasher: S,
    shards: Box<[RwLock<Shard<K, V, O>>]>,
    shard_capacity: usize,
    overflow_calls: AtomicU64,
}

impl<K, V, O> Store<K, V, O> {
    /// A store of at most `max_keys` (rounded up to a multiple of 16), each
    /// shard with its part of the overflow from `overflow`.
    pub(crate) fn new(max_keys: usize, overflow: impl FnMut() -> O) -> Self {
        Self::with_hasher(max_keys, RandomState::new(), overflow)
    }
}

impl<K, V, O, S> Store<K, V, O, S> {
    pub(crate) fn with_hasher(max_keys: usize, hasher: S, mut overflow: impl FnMut() -> O) -> Self {
        Store {
            hasher,
            shards: (0..SHARDS)
                .map(|_| {
                    RwLock::new(Shard {
                        entries: Map::default(),
                        last_sweep: 0,
                        overflow: overflow(),
                    })
                })
                .collect(),
            shard_capacity: shard_capacity(max_keys),
            overflow_calls: AtomicU64::new(0),
        }
    }

    /// Every shard, for the handles' reads and changes across keys.
    pub(crate) fn shards(&self) -> impl Iterator<Item = &RwLock<Shard<K, V, O>>> {
        self.shards.iter()
    }

    /// Takes a read lock on a shard. This module's code does not panic
    /// while holding one; the fallback's cache runs a user's `clone` under
    /// it, and a lock that poisons is used as it is.
    pub(crate) fn read(shard: &RwLock<Shard<K, V, O>>) -> RwLockReadGuard<'_, Shard<K, V, O>> {
        sync::read(shard)
    }

    /// Takes a write lock on a shard, as [`read`](Self::read).
    pub(crate) fn write(shard: &RwLock<Shard<K, V, O>>) -> RwLockWriteGuard<'_, Shard<K, V, O>> {
        sync::write(shard)
    }

    /// The shard a hash belongs to.
    pub(crate) fn shard(&self, hash: u64) -> &RwLock<Shard<K, V, O>> {
        // Middle bits: a map inside uses the low ones to place a key and
        // the top seven to tell keys apart.
        &self.shards[(hash >> 32) as usize % SHARDS]
    }

    /// How many keys have an entry now.
    pub(crate) fn len(&self) -> usize {
        self.shards()
            .map(|shard| Self::read(shard).entries.len())
            .sum()
    }

    /// Calls decided by the overflow so far.
    pub(crate) fn overflow_calls(&self) -> u64 {
        self.overflow_calls.load(Ordering::Relaxed)
    }
}

impl<K: Hash + Eq, V: Evict, O, S: BuildHasher> Store<K, V, O, S> {
    pub(crate) fn hashed(&self, key: K) -> Hashed<K> {
        Hashed {
            hash: self.hasher.hash_one(&key),
            key,
        }
    }

    /// The fast path: `use_entry` on the key's entry, under its shard's
    /// read lock, if it has one.
    #[inline]
    pub(crate) fn get<R>(&self, key: &Hashed<K>, use_entry: impl FnOnce(&V) -> R) -> Option<R> {
        Self::read(self.shard(key.hash))
            .entries
            .get(key)
            .map(use_entry)
    }

    /// The slow path, for a key [`get`](Self::get) did not find: under its
    /// shard's write lock, the key's entry if it was made meanwhile;
    /// otherwise idle entries are swept (at most once per `idle_after`
    /// nanoseconds), and the key gets an entry of its own if there is room
    /// (or its layer always places it), or goes to the overflow.
    #[cold]
    pub(crate) fn get_or_insert<N: NewKey<K, V, O>>(
        &self,
        key: Hashed<K>,
        idle_after: u64,
        mut new: N,
    ) -> N::Output {
        let mut shard = Self::write(self.shard(key.hash));
        if let Some(entry) = shard.entries.get(&key) {
            return new.found(entry);
        }
        let now = new.now(&shard.overflow);
        if now.saturating_sub(shard.last_sweep) >= idle_after {
            shard.sweep(now);
        }
        // Asked whether the shard is full or not: the layer may read what it
        // needs for the key's entry (under the lock) as it answers.
        let always_placed = new.always_placed(&key.key);
        if shard.entries.len() >= self.shard_capacity && !always_placed {
            // Full of entries whose state matters: none is evicted, and the
            // overflow, which errs only on the safe side, decides.
            self.overflow_calls.fetch_add(1, Ordering::Relaxed);
            return new.overflow(&mut shard.overflow, now);
        }
        let (entry, output) = new.place(&shard.overflow, now);
        shard.entries.insert(key, entry);
        output
    }

    /// Forgets the key's entry; returns whether it had one.
    // Only the breaker's handle removes a key by hand.
    #[cfg_attr(not(feature = "circuit-breaker"), allow(dead_code))]
    pub(crate) fn remove(&self, key: K) -> bool {
        let key = self.hashed(key);
        Self::write(self.shard(key.hash))
            .entries
            .remove(&key)
            .is_some()
    }
}

impl<K, V, O, S> fmt::Debug for Store<K, V, O, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("shard_capacity", &self.shard_capacity)
            .field("overflow_calls", &self.overflow_calls)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::{Arc, loom_model as model};
    use loom::thread;

    /// An entry that is never at rest.
    struct Busy;

    impl Evict for Busy {
        fn may_evict(&self, _: u64) -> bool {
            false
        }
    }

    /// A new key's call: its own entry, or the overflow.
    struct Call;

    #[derive(Debug, PartialEq)]
    enum Placed {
        Own,
        Overflow,
    }

    impl NewKey<u64, Busy, ()> for Call {
        type Output = Placed;

        fn found(self, _: &Busy) -> Placed {
            Placed::Own
        }

        fn now(&self, _: &()) -> u64 {
            0
        }

        fn always_placed(&mut self, _: &u64) -> bool {
            false
        }

        fn place(self, _: &(), _: u64) -> (Busy, Placed) {
            (Busy, Placed::Own)
        }

        fn overflow(self, _: &mut (), _: u64) -> Placed {
            Placed::Overflow
        }
    }

    fn call(store: &Store<u64, Busy, (), BuildHasherDefault<PassThrough>>, key: u64) -> Placed {
        let key = store.hashed(key);
        match store.get(&key, |_| Placed::Own) {
            Some(placed) => placed,
            None => store.get_or_insert(key, u64::MAX, Call),
        }
    }

    #[test]
    fn loom_two_new_keys_racing_for_a_shards_last_place_get_one_each_way() {
        model(|| {
            // One place per shard; keys 1 and 2 hash to themselves, so both
            // fall in shard 0, which already holds key 3 of its two places.
            let store = Arc::new(Store::with_hasher(
                2 * SHARDS,
                BuildHasherDefault::<PassThrough>::default(),
                || (),
            ));
            assert_eq!(call(&store, 3), Placed::Own);
            let racers: Vec<_> = [1, 2]
                .into_iter()
                .map(|key| {
                    let store = store.clone();
                    thread::spawn(move || call(&store, key))
                })
                .collect();
            let mut placed: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
            placed.sort_by_key(|p| *p == Placed::Overflow);
            assert_eq!(placed, [Placed::Own, Placed::Overflow]);
            assert_eq!(store.len(), 2, "the bound holds");
            assert_eq!(store.overflow_calls(), 1, "the overflow counted its call");
            // The key that won the place keeps it: its next call is its own.
            let own = [1, 2]
                .into_iter()
                .filter(|&key| store.get(&store.hashed(key), |_| ()).is_some())
                .count();
            assert_eq!(own, 1);
        });
    }
}
