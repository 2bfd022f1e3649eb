//! [`Handle`]: a rate limiter's state, for headers and dashboards, and its
//! limit, changeable at run time.

use std::sync::Arc;
use std::time::Duration;

use super::layer::{Kind, LAYER, check_burst, check_quota};
use super::limiter::{Algorithm, Decision, Limiter, Snapshot};
use super::wait::WaitQueue;
use crate::error::{ConfigError, RateLimited};
use crate::metrics::{Count, Level};
use crate::name::Name;
use crate::sync::{AtomicU64, Ordering};

/// What every service of one layer shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: Name,
    pub(crate) limiter: Limiter,
    /// Zero: refuse at once.
    pub(crate) max_wait: Duration,
    pub(crate) queue: WaitQueue,
    refused: AtomicU64,
    /// `palisade_rate_limit_refused_total{name}`.
    refused_count: Count,
    /// `palisade_rate_limit_remaining{name}`: permits left right after the
    /// last decision.
    remaining: Level,
}

impl Shared {
    pub(crate) fn new(
        name: Name,
        limiter: Limiter,
        max_wait: Duration,
        max_waiters: usize,
    ) -> Self {
        Shared {
            refused_count: Count::new("palisade_rate_limit_refused_total", name.as_str()),
            remaining: Level::new("palisade_rate_limit_remaining", name.as_str()),
            name,
            limiter,
            max_wait,
            queue: WaitQueue::new(max_waiters),
            refused: AtomicU64::new(0),
        }
    }

    /// Takes one permit now; `Err` carries the wait until one frees.
    #[inline]
    pub(crate) fn acquire(&self) -> Result<(), Option<Duration>> {
        // With metrics, the state is read at the decision's instant for
        // the remaining gauge; without, only the decision is made.
        #[cfg(feature = "metrics")]
        let decision = {
            let (decision, state) = self.limiter.acquire_and_snapshot(1);
            self.remaining.set(state.remaining);
            decision
        };
        #[cfg(not(feature = "metrics"))]
        let decision = self.limiter.acquire(1);
        match decision {
            Decision::Admitted => Ok(()),
            Decision::Refused { wait } => Err(Some(wait)),
            // A limit of at least one is checked when the layer is built.
            Decision::TooLarge => Err(None),
        }
    }

    /// [`acquire`](Self::acquire), with the state right after an admission
    /// when `report` is set: one clock reading for both.
    #[inline]
    pub(crate) fn acquire_reporting(
        &self,
        report: bool,
    ) -> Result<Option<RateLimitState>, Option<Duration>> {
        if !report {
            return self.acquire().map(|()| None);
        }
        let (decision, state) = self.limiter.acquire_and_snapshot(1);
        self.remaining.set(state.remaining);
        match decision {
            Decision::Admitted => Ok(Some(state.into())),
            Decision::Refused { wait } => Err(Some(wait)),
            Decision::TooLarge => Err(None),
        }
    }

    /// Counts a refusal, and traces it at DEBUG (refusals come at the rate
    /// of the calls; the counter is the figure to watch).
    pub(crate) fn count_refusal(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.refused_count.add();
        trace_refusal(&self.name);
    }

    pub(crate) fn rejection(&self, wait: Option<Duration>) -> RateLimited {
        // A refusal is rare enough to afford a look at the limit, which the
        // `RateLimit-Limit` header of a 429 reports.
        let limit = self.limiter.snapshot().limit;
        RateLimited::with_name(self.name.clone(), wait).with_limit(limit)
    }
}

/// Traces a refusal by the limiter `name`, at DEBUG: never with its key,
/// which may be a secret.
#[cold]
pub(crate) fn trace_refusal(name: &Name) {
    tracing::debug!(target: "palisade::rate_limit", name = name.as_str(), "call rate limited");
}

/// A handle on a rate limiter, shared by every service its layer builds.
///
/// ```
/// use std::time::Duration;
/// use palisade::rate_limit::RateLimitLayer;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), palisade::ConfigError> {
/// let layer = RateLimitLayer::sliding_window(100, Duration::from_secs(60)).build()?;
/// let handle = layer.handle();
/// assert_eq!(handle.state().remaining, 100);
/// handle.set_limit(500, Duration::from_secs(60))?; // a busier day
/// assert_eq!(handle.state().limit, 500);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl From<Snapshot> for RateLimitState {
    fn from(s: Snapshot) -> Self {
        RateLimitState {
            limit: s.limit,
            remaining: s.remaining,
            reset: s.reset,
        }
    }
}

/// A rate limiter's state at one instant: what the `RateLimit-Limit`,
/// `RateLimit-Remaining` and `RateLimit-Reset` headers report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitState {
    /// The most calls admitted at once: the limit per window, or a GCRA
    /// limiter's burst.
    pub limit: u64,
    /// Calls that would be admitted now, one after another.
    pub remaining: u64,
    /// How long until `remaining` is back to `limit` if no call comes.
    pub reset: Duration,
}

impl Handle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Handle { shared }
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        self.shared.name.as_str()
    }

    /// The limit, the calls left and the time until they are all back.
    pub fn state(&self) -> RateLimitState {
        self.shared.limiter.snapshot().into()
    }

    /// The limit and its window (a GCRA limiter's rate and period).
    pub fn limit(&self) -> (u64, Duration) {
        self.shared.limiter.algorithm.limit()
    }

    /// Calls refused so far.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Callers waiting for a permit now (with a `max_wait`).
    pub fn waiting(&self) -> usize {
        self.shared.queue.len()
    }

    /// Changes the limit (a GCRA limiter's rate per `window`) for the calls
    /// that follow, without rebuilding the stack.
    ///
    /// A sliding window keeps its counts when only the limit changes, and
    /// starts over when the window does; a sliding log keeps its newest
    /// admissions, as many as the new limit holds; a GCRA limiter keeps the
    /// permits left in its bucket, and its burst (change it with
    /// [`set_burst`](Self::set_burst)). A fixed or segmented window keeps
    /// its counts: a limit lowered below them refuses calls (`remaining`
    /// 0) until enough permits come back. A new window renumbers its
    /// segments (a segmented window keeps its number of segments, which
    /// must divide the new window), and the permits still held are carried
    /// into the segment holding the present instant.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field, as the builder checks them; the
    /// limit in force stays.
    pub fn set_limit(&self, limit: u64, window: Duration) -> Result<(), ConfigError> {
        let limiter = &self.shared.limiter;
        check_quota(self.kind(), limit, window, limiter.algorithm.segments())?;
        if let Algorithm::Gcra(a) = &limiter.algorithm {
            check_burst(limit, window, a.burst())?;
        }
        limiter.algorithm.set_limit(limit, window, limiter.now());
        Ok(())
    }

    /// Changes a GCRA limiter's burst: the most calls admitted at once. The
    /// permits left carry over, up to the new burst: a bigger bucket fills
    /// at the rate, it is not handed out at once.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] on `burst` when it is 0, too large for the rate,
    /// or the limiter is not GCRA.
    pub fn set_burst(&self, burst: u64) -> Result<(), ConfigError> {
        let limiter = &self.shared.limiter;
        let Algorithm::Gcra(a) = &limiter.algorithm else {
            return Err(ConfigError::new(
                LAYER,
                "burst",
                "only a GCRA limiter has a burst",
            ));
        };
        let settings = a.settings();
        check_burst(settings.rate, settings.period, burst)?;
        limiter.algorithm.set_burst(burst, limiter.now());
        Ok(())
    }

    /// The limiter's algorithm.
    pub fn kind(&self) -> Kind {
        self.shared.limiter.algorithm.kind()
    }
}
