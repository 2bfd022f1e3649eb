//! The state every [`Fallback`](super::Fallback) from one layer shares,
//! the [`Event`] its listener gets, and the [`Handle`] that reads it.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use super::Reason;
use crate::metrics::Count;
use crate::name::Name;
use crate::sync::{AtomicU64, Ordering};

pub(crate) type Listener = Arc<dyn Fn(&Event<'_>) + Send + Sync>;

/// The cache as the handle reads it, without knowing its types.
pub(crate) trait CacheStats: Send + Sync {
    /// Keys held now.
    fn len(&self) -> usize;
    /// New keys not kept because their shard was full.
    fn not_kept(&self) -> u64;
}

pub(crate) type CacheView = Arc<dyn CacheStats>;

/// What came of one answer the layer made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// The fixed value or the answer function's value was served.
    Served,
    /// The last good response for the key was served.
    ServedFromCache,
    /// The cache held nothing for the key: the original result passed.
    CacheMiss,
    /// The cache's answer for the key was older than `max_age`: the
    /// original result passed.
    CacheExpired,
    /// The answer function failed: its error is what the caller got.
    AnswerFailed,
}

/// The layer acted on a result: what its listener
/// ([`on_event`](super::FallbackBuilder::on_event)) is told.
#[derive(Debug)]
#[non_exhaustive]
pub struct Event<'a> {
    /// The layer's name.
    pub name: &'a str,
    /// Why the layer acted.
    pub reason: Reason,
    /// The original error, when the result was one; `None` when it was a
    /// response the classifier called a failure (an HTTP 503, say).
    pub error: Option<&'a (dyn Error + Send + Sync + 'static)>,
    /// What came of it.
    pub kind: EventKind,
}

/// The name, the listener and the counters, behind one `Arc` per layer
/// value.
pub(crate) struct Shared {
    name: Name,
    listener: Option<Listener>,
    cache: Option<CacheView>,
    served: [AtomicU64; 6],
    answer_failures: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    cache_expired: AtomicU64,
    /// `palisade_fallback_served_total{name, reason}`, by reason.
    served_count: [Count; 6],
    /// `palisade_fallback_answer_failures_total{name}`.
    answer_failures_count: Count,
    /// `palisade_fallback_cache_total{name, result}`: hit, miss, expired.
    cache_count: [Count; 3],
}

impl Shared {
    pub(crate) fn new(name: Name, listener: Option<Listener>, cache: Option<CacheView>) -> Self {
        let served_count = Reason::ALL.map(|reason| {
            Count::labelled(
                "palisade_fallback_served_total",
                name.as_str(),
                "reason",
                reason.as_str(),
            )
        });
        let cache_count = ["hit", "miss", "expired"].map(|result| {
            Count::labelled(
                "palisade_fallback_cache_total",
                name.as_str(),
                "result",
                result,
            )
        });
        Shared {
            answer_failures_count: Count::new(
                "palisade_fallback_answer_failures_total",
                name.as_str(),
            ),
            served_count,
            cache_count,
            name,
            listener,
            cache,
            served: Default::default(),
            answer_failures: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            cache_expired: AtomicU64::new(0),
        }
    }

    /// Counts what came of an answer for `reason`, and tells `tracing` and
    /// the listener.
    #[cold]
    pub(crate) fn record(
        &self,
        reason: Reason,
        error: Option<&(dyn Error + Send + Sync + 'static)>,
        kind: EventKind,
    ) {
        match kind {
            EventKind::Served | EventKind::ServedFromCache => {
                self.served[reason.index()].fetch_add(1, Ordering::Relaxed);
                self.served_count[reason.index()].add();
            }
            EventKind::AnswerFailed => {
                self.answer_failures.fetch_add(1, Ordering::Relaxed);
                self.answer_failures_count.add();
            }
            EventKind::CacheMiss | EventKind::CacheExpired => {}
        }
        let cache_counter = match kind {
            EventKind::ServedFromCache => Some((&self.cache_hits, &self.cache_count[0])),
            EventKind::CacheMiss => Some((&self.cache_misses, &self.cache_count[1])),
            EventKind::CacheExpired => Some((&self.cache_expired, &self.cache_count[2])),
            _ => None,
        };
        if let Some((counter, count)) = cache_counter {
            counter.fetch_add(1, Ordering::Relaxed);
            count.add();
        }
        let outcome = match kind {
            EventKind::Served | EventKind::ServedFromCache => "answered in the upstream's place",
            EventKind::CacheMiss => "no answer kept for the key; the original result passed",
            EventKind::CacheExpired => {
                "the answer kept for the key is too old; the original result passed"
            }
            EventKind::AnswerFailed => "the answer failed; the caller gets its error",
        };
        tracing::debug!(
            target: "palisade::fallback",
            name = %self.name,
            reason = reason.as_str(),
            error = error.map(tracing::field::display),
            kind = ?kind,
            "fallback: {outcome}"
        );
        if let Some(listener) = &self.listener {
            listener(&Event {
                name: self.name.as_str(),
                reason,
                error,
                kind,
            });
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Reads a fallback's counters: answers served by reason, answers that
/// failed, and the cache's hits, misses and expired entries.
///
/// Get one from [`FallbackLayer::handle`](super::FallbackLayer::handle).
/// It is a cheap clone of the shared state, so it sees every service the
/// layer built.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Handle { shared }
    }

    /// The layer's name.
    pub fn name(&self) -> &str {
        self.shared.name.as_str()
    }

    /// Degraded answers served for `reason` (from the cache or not).
    pub fn served(&self, reason: Reason) -> u64 {
        self.shared.served[reason.index()].load(Ordering::Relaxed)
    }

    /// Degraded answers served, for every reason.
    pub fn served_total(&self) -> u64 {
        Reason::ALL.into_iter().map(|r| self.served(r)).sum()
    }

    /// Answers that failed: the answer function returned an error, which
    /// its caller got.
    pub fn answer_failures(&self) -> u64 {
        self.shared.answer_failures.load(Ordering::Relaxed)
    }

    /// Answers served from the cache.
    pub fn cache_hits(&self) -> u64 {
        self.shared.cache_hits.load(Ordering::Relaxed)
    }

    /// Calls that needed an answer when the cache held none for their key.
    pub fn cache_misses(&self) -> u64 {
        self.shared.cache_misses.load(Ordering::Relaxed)
    }

    /// Calls that needed an answer when the cache's for their key was older
    /// than `max_age`.
    pub fn cache_expired(&self) -> u64 {
        self.shared.cache_expired.load(Ordering::Relaxed)
    }

    /// Keys the cache holds now (expired ones included, until they are
    /// swept); 0 without a cache.
    pub fn cached(&self) -> usize {
        self.shared.cache.as_ref().map_or(0, |cache| cache.len())
    }

    /// Good responses not kept because their key was new and its share of
    /// the cache was full of fresh answers: how often `max_entries` was
    /// reached.
    pub fn cache_full(&self) -> u64 {
        self.shared
            .cache
            .as_ref()
            .map_or(0, |cache| cache.not_kept())
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("name", &self.name())
            .field("served", &self.served_total())
            .field("answer_failures", &self.answer_failures())
            .field("cache_hits", &self.cache_hits())
            .field("cache_misses", &self.cache_misses())
            .field("cache_expired", &self.cache_expired())
            .finish()
    }
}
