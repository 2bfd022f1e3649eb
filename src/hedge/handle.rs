//! What every [`Hedge`](super::Hedge) of one layer shares, and the
//! [`Handle`] that reads it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::latency::Latencies;
use crate::metrics::Count;
use crate::name::Name;
use crate::retry::SharedBudget;
use crate::sync::{AtomicU64, Mutex, Ordering};

/// When hedges go.
pub(crate) enum Delay {
    /// This long after the previous attempt was sent.
    Fixed(Duration),
    /// A percentile of recent successful latencies, once enough are known.
    Learned(Learned),
}

/// The learned delay: the latencies, and the percentile read from them,
/// kept in nanoseconds (`u64::MAX` while too few are known) so that a call
/// reads it without the lock.
pub(crate) struct Learned {
    percentile: f64,
    min_samples: u64,
    latencies: Mutex<Latencies>,
    current: AtomicU64,
}

const UNKNOWN: u64 = u64::MAX;

impl Learned {
    pub(crate) fn new(percentile: f64, min_samples: u64, period: Duration) -> Self {
        Learned {
            percentile,
            min_samples,
            latencies: Mutex::new(Latencies::new(period, Instant::now())),
            current: AtomicU64::new(UNKNOWN),
        }
    }

    /// The delay now, if enough latencies are known.
    pub(crate) fn delay(&self) -> Option<Duration> {
        match self.current.load(Ordering::Relaxed) {
            UNKNOWN => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    /// Records a request that succeeded: its first attempt, sent at
    /// `first`, as having taken until now (exactly, if it won; at least,
    /// if a hedge sent at `hedge` won, which is recorded too). Then reads
    /// the percentile again: after each of the first 256 records of a
    /// period, then once per 16 (reading it walks the histogram, and one
    /// latency more among hundreds barely moves it).
    pub(crate) fn record(&self, first: Instant, hedge: Option<Instant>) {
        let now = Instant::now();
        let mut latencies = crate::sync::lock(&self.latencies);
        let mut recorded = latencies.record(now.saturating_duration_since(first), now);
        let before = recorded - 1;
        if let Some(hedge) = hedge {
            recorded = latencies.record(now.saturating_duration_since(hedge), now);
        }
        if recorded > 256 && before / 16 == recorded / 16 {
            return;
        }
        // A percentile of zero (answers within a microsecond) would send
        // every hedge at once: such a service is not hedged.
        let nanos = latencies
            .percentile(self.percentile, self.min_samples, now)
            .filter(|d| !d.is_zero())
            .map_or(UNKNOWN, |d| {
                u64::try_from(d.as_nanos()).unwrap_or(UNKNOWN - 1)
            });
        self.current.store(nanos, Ordering::Relaxed);
    }
}

/// The layer's settings, budget and counters.
pub(crate) struct Shared {
    pub(crate) name: Name,
    pub(crate) max_attempts: u32,
    pub(crate) delay: Delay,
    pub(crate) budget: SharedBudget,
    requests: AtomicU64,
    sent: AtomicU64,
    won: AtomicU64,
    budget_refusals: AtomicU64,
    /// `palisade_hedge_sent_total{name}`.
    sent_count: Count,
    /// `palisade_hedge_won_total{name}`.
    won_count: Count,
    /// `palisade_hedge_budget_refusals_total{name}`.
    refused_count: Count,
}

impl Shared {
    pub(crate) fn new(name: Name, max_attempts: u32, delay: Delay, budget: SharedBudget) -> Self {
        Shared {
            sent_count: Count::new("palisade_hedge_sent_total", name.as_str()),
            won_count: Count::new("palisade_hedge_won_total", name.as_str()),
            refused_count: Count::new("palisade_hedge_budget_refusals_total", name.as_str()),
            name,
            max_attempts,
            delay,
            budget,
            requests: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            won: AtomicU64::new(0),
            budget_refusals: AtomicU64::new(0),
        }
    }

    /// The delay before a request's first hedge, or `None` when it gets
    /// none (the learned delay is not known yet).
    pub(crate) fn delay(&self) -> Option<Duration> {
        match &self.delay {
            Delay::Fixed(delay) => Some(*delay),
            Delay::Learned(learned) => learned.delay(),
        }
    }

    /// Whether the delay is learned from latencies.
    pub(crate) fn learns(&self) -> bool {
        matches!(self.delay, Delay::Learned(_))
    }

    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    #[cold]
    pub(crate) fn count_sent(&self, attempt: u32) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.sent_count.add();
        tracing::debug!(target: "palisade::hedge", name = self.name.as_str(), attempt, "hedge sent");
    }

    #[cold]
    pub(crate) fn count_won(&self) {
        self.won.fetch_add(1, Ordering::Relaxed);
        self.won_count.add();
    }

    #[cold]
    pub(crate) fn count_budget_refusal(&self) {
        self.budget_refusals.fetch_add(1, Ordering::Relaxed);
        self.refused_count.add();
        tracing::debug!(target: "palisade::hedge", name = self.name.as_str(), "hedge refused by the budget");
    }

    /// A failure's pushback asked for no more attempts: hedging stopped
    /// for its request.
    #[cold]
    pub(crate) fn pushback_stopped(&self) {
        tracing::debug!(target: "palisade::hedge", name = self.name.as_str(), "hedging stopped by the server's pushback");
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// A handle on a hedge layer: its counts and its current delay.
#[derive(Clone, Debug)]
pub struct Handle {
    shared: Arc<Shared>,
}

/// The counts of a hedge layer since it was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counts {
    /// Requests through the layer.
    pub requests: u64,
    /// Hedges sent (attempts after the first).
    pub hedges: u64,
    /// Requests answered by a hedge rather than by their first attempt.
    pub won_by_hedge: u64,
    /// Hedges the budget refused.
    pub budget_refusals: u64,
}

impl Handle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Handle { shared }
    }

    /// The layer's name.
    pub fn name(&self) -> &str {
        self.shared.name.as_str()
    }

    /// The delay a request would wait now before its first hedge: the fixed
    /// one, or the learned percentile; `None` while too few latencies are
    /// known to learn it (requests get no hedge then).
    pub fn delay(&self) -> Option<Duration> {
        self.shared.delay()
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let s = &self.shared;
        Counts {
            requests: load(&s.requests),
            hedges: load(&s.sent),
            won_by_hedge: load(&s.won),
            budget_refusals: load(&s.budget_refusals),
        }
    }
}
