//! Where an answer comes from: a fixed [`Value`], a function ([`Compute`]),
//! or the last good response for the request's key ([`LastGood`]).

use std::error::Error;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::time::Duration;

use tokio::time::Instant;

use super::Reason;
use crate::error::BoxError;
use crate::keyed::{Evict, Hashed, NewKey, Store};
use crate::sync::{self, Mutex};

/// A result the layer answers for: why, and the original result.
///
/// What an [`answer`](super::FallbackBuilder::answer) function gets.
#[derive(Debug)]
pub struct Failed<Res> {
    reason: Reason,
    result: Result<Res, BoxError>,
}

impl<Res> Failed<Res> {
    pub(crate) fn new(reason: Reason, result: Result<Res, BoxError>) -> Self {
        Failed { reason, result }
    }

    /// Why the layer answers.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The original error, if the result was one.
    pub fn error(&self) -> Option<&(dyn Error + Send + Sync + 'static)> {
        self.result.as_ref().err().map(|err| &**err)
    }

    /// The original response, if the result was one (a response the
    /// classifier called a failure, such as an HTTP 503).
    pub fn response(&self) -> Option<&Res> {
        self.result.as_ref().ok()
    }

    pub(crate) fn into_result(self) -> Result<Res, BoxError> {
        self.result
    }
}

/// What an [`Answer`] made of a result it was asked about.
#[derive(Debug)]
pub(crate) enum Answered<Res> {
    /// An answer from the value or the function.
    Served(Res),
    /// The last good response for the key.
    Cached(Res),
    /// The cache held nothing for the key.
    Missing,
    /// The cache's answer for the key was too old.
    Expired,
    /// The answer function failed.
    Failed(BoxError),
}

mod sealed {
    pub trait Sealed {}
}

/// Where a [`FallbackLayer`](super::FallbackLayer)'s answers come from:
/// [`Value`], [`Compute`] or [`LastGood`], made by the builder's
/// [`value`](super::FallbackBuilder::value),
/// [`answer`](super::FallbackBuilder::answer) and
/// [`last_good`](super::FallbackBuilder::last_good). Sealed: named in
/// bounds, implemented here only. This part reads the request, before the
/// call; [`Respond`] answers, after it.
pub trait Answer<Req, Res>: sealed::Sealed {
    /// What a call remembers of its request until it completes: its cache
    /// key, or nothing.
    type Key;

    #[doc(hidden)]
    fn key(&self, request: &Req) -> Self::Key;
}

/// The part of an [`Answer`] that acts on a finished call, given what the
/// call remembered of its request (`K`). Sealed.
pub trait Respond<K, Res>: sealed::Sealed {
    #[doc(hidden)]
    fn remember(&self, key: K, response: &Res);

    #[doc(hidden)]
    #[allow(private_interfaces)]
    fn answer(&self, key: K, failed: &Failed<Res>) -> Answered<Res>;
}

/// No answer chosen yet: the builder's starting point, with no `build`.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAnswer;

/// A fixed answer, cloned for each call that needs it.
#[derive(Clone, Debug)]
pub struct Value<Res>(pub(crate) Res);

impl<Res> sealed::Sealed for Value<Res> {}

impl<Req, Res: Clone> Answer<Req, Res> for Value<Res> {
    type Key = ();

    #[inline]
    fn key(&self, _: &Req) {}
}

impl<Res: Clone> Respond<(), Res> for Value<Res> {
    #[inline]
    fn remember(&self, _: (), _: &Res) {}

    #[allow(private_interfaces)]
    fn answer(&self, _: (), _: &Failed<Res>) -> Answered<Res> {
        Answered::Served(self.0.clone())
    }
}

/// An answer made by a function of the failure, which may fail.
pub struct Compute<F, Res> {
    pub(crate) answer: F,
    pub(crate) _response: PhantomData<fn() -> Res>,
}

impl<F, Res> sealed::Sealed for Compute<F, Res> {}

impl<F, Req, Res> Answer<Req, Res> for Compute<F, Res>
where
    F: Fn(&Failed<Res>) -> Result<Res, BoxError>,
{
    type Key = ();

    #[inline]
    fn key(&self, _: &Req) {}
}

impl<F, Res> Respond<(), Res> for Compute<F, Res>
where
    F: Fn(&Failed<Res>) -> Result<Res, BoxError>,
{
    #[inline]
    fn remember(&self, _: (), _: &Res) {}

    #[allow(private_interfaces)]
    fn answer(&self, _: (), failed: &Failed<Res>) -> Answered<Res> {
        match (self.answer)(failed) {
            Ok(response) => Answered::Served(response),
            Err(err) => Answered::Failed(err),
        }
    }
}

impl<F, Res> fmt::Debug for Compute<F, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compute").finish_non_exhaustive()
    }
}

/// The last good response for the request's key, no older than `max_age`,
/// from a bounded cache (see the [module docs](super#the-last-good-response)).
pub struct LastGood<F, K, Res> {
    pub(crate) key: F,
    pub(crate) cache: std::sync::Arc<Cache<K, Res>>,
}

impl<F, K, Res> sealed::Sealed for LastGood<F, K, Res> {}

impl<F, Req, K, Res> Answer<Req, Res> for LastGood<F, K, Res>
where
    F: Fn(&Req) -> K,
    K: Hash + Eq,
    Res: Clone,
{
    type Key = K;

    #[inline]
    fn key(&self, request: &Req) -> K {
        (self.key)(request)
    }
}

impl<F, K, Res> Respond<K, Res> for LastGood<F, K, Res>
where
    K: Hash + Eq,
    Res: Clone,
{
    fn remember(&self, key: K, response: &Res) {
        self.cache.remember(key, response);
    }

    #[allow(private_interfaces)]
    fn answer(&self, key: K, _: &Failed<Res>) -> Answered<Res> {
        self.cache.answer(key)
    }
}

impl<F, K, Res> fmt::Debug for LastGood<F, K, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LastGood")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

/// One key's last good response, and when it stops being served.
pub(crate) struct Entry<Res> {
    kept: Mutex<Kept<Res>>,
}

struct Kept<Res> {
    response: Res,
    /// Nanoseconds on the cache's clock.
    expires_at: u64,
}

impl<Res> Entry<Res> {
    fn new(response: Res, expires_at: u64) -> Self {
        Entry {
            kept: Mutex::new(Kept {
                response,
                expires_at,
            }),
        }
    }

    fn replace(&self, response: Res, expires_at: u64) {
        *sync::lock(&self.kept) = Kept {
            response,
            expires_at,
        };
    }
}

impl<Res> Evict for Entry<Res> {
    /// An expired answer is never served again: nothing is lost by
    /// dropping it.
    fn may_evict(&self, now: u64) -> bool {
        now >= sync::lock(&self.kept).expires_at
    }
}

/// The bounded store of last good responses, on tokio's clock (so that
/// paused-clock tests drive `max_age`).
pub(crate) struct Cache<K, Res> {
    store: Store<K, Entry<Res>>,
    started: Instant,
    max_age: u64,
    /// How often a shard sweeps its expired entries, at most.
    sweep_every: u64,
}

impl<K, Res> Cache<K, Res> {
    pub(crate) fn new(max_entries: usize, max_age: Duration) -> Self {
        let max_age = nanos(max_age);
        Cache {
            store: Store::new(max_entries, || ()),
            started: Instant::now(),
            max_age,
            // A quarter of `max_age`: an expired entry lingers at most that
            // much longer, and a full shard of fresh ones is not rescanned
            // for every new key of a flood.
            sweep_every: (max_age / 4).max(1),
        }
    }

    fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.started))
    }
}

impl<K: Send + Sync, Res: Send> super::handle::CacheStats for Cache<K, Res> {
    fn len(&self) -> usize {
        self.store.len()
    }

    fn not_kept(&self) -> u64 {
        self.store.overflow_calls()
    }
}

impl<K: Hash + Eq, Res: Clone> Cache<K, Res> {
    /// Keeps `response` as the key's last good one.
    fn remember(&self, key: K, response: &Res) {
        let now = self.now();
        let expires_at = now.saturating_add(self.max_age);
        let key = self.store.hashed(key);
        let kept = self.store.get(&key, |entry| {
            entry.replace(response.clone(), expires_at);
        });
        if kept.is_none() {
            self.store.get_or_insert(
                key,
                self.sweep_every,
                Insert {
                    response,
                    now,
                    expires_at,
                },
            );
        }
    }

    /// The key's last good response, if it is fresh.
    fn answer(&self, key: K) -> Answered<Res> {
        let now = self.now();
        let key: Hashed<K> = self.store.hashed(key);
        let found = self.store.get(&key, |entry| {
            let kept = sync::lock(&entry.kept);
            (now < kept.expires_at).then(|| kept.response.clone())
        });
        match found {
            None => Answered::Missing,
            Some(None) => Answered::Expired,
            Some(Some(response)) => Answered::Cached(response),
        }
    }
}

impl<K, Res> fmt::Debug for Cache<K, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("store", &self.store)
            .field("max_age_ns", &self.max_age)
            .finish_non_exhaustive()
    }
}

/// A key the store did not hold: kept if its shard has room.
struct Insert<'a, Res> {
    response: &'a Res,
    now: u64,
    expires_at: u64,
}

impl<K, Res: Clone> NewKey<K, Entry<Res>, ()> for Insert<'_, Res> {
    type Output = ();

    fn found(self, entry: &Entry<Res>) {
        entry.replace(self.response.clone(), self.expires_at);
    }

    fn now(&self, _: &()) -> u64 {
        self.now
    }

    fn always_placed(&mut self, _: &K) -> bool {
        false
    }

    fn place(self, _: &(), _: u64) -> (Entry<Res>, ()) {
        (Entry::new(self.response.clone(), self.expires_at), ())
    }

    /// The shard is full of fresh answers: this key's is not kept.
    fn overflow(self, _: &mut (), _: u64) {}
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
