//! [`RateLimitLayer`], its builder and its configuration.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::RateLimit;
use super::handle::{Handle, Shared};
use super::keyed::KeyedRateLimitBuilder;
use super::limiter::{Algorithm, Limiter, Quota, nanos};
use super::report::NoReport;
use super::segmented::MAX_SEGMENTS;
use crate::error::ConfigError;
use crate::name::Name;
use crate::tagged::COUNT_MAX;

pub(crate) const LAYER: &str = "rate_limit";
const DEFAULT_NAME: &str = "rate_limit";
/// The sliding log keeps 8 bytes per permit: at most 8 MiB.
pub(crate) const MAX_LOG_LIMIT: u64 = 1 << 20;
/// The longest window (or period): 2^56 ns, about 2.3 years, so that the
/// algorithms' sums of times stay far from overflowing.
pub(crate) const MAX_WINDOW: Duration = Duration::from_nanos(1 << 56);

/// Applies [`RateLimit`] to a service.
///
/// One layer value is one limiter, shared by every service it builds and
/// their clones. Build one with [`sliding_window`](Self::sliding_window),
/// [`sliding_log`](Self::sliding_log), [`gcra`](Self::gcra),
/// [`fixed_window`](Self::fixed_window) or
/// [`segmented_window`](Self::segmented_window).
#[derive(Clone, Debug)]
pub struct RateLimitLayer<R = NoReport> {
    shared: Arc<Shared>,
    report: R,
}

impl RateLimitLayer {
    /// A sliding-window counter: at most about `limit` calls in any
    /// `window`, in constant memory and without a lock. The count is an
    /// estimate (see the [module docs](super#algorithms)).
    pub fn sliding_window(limit: u64, window: Duration) -> RateLimitBuilder {
        RateLimitBuilder::new(Kind::SlidingWindow, limit, window)
    }

    /// A sliding-window log: exactly at most `limit` calls in any `window`,
    /// keeping the time of each of the last `limit` admissions (8 bytes
    /// each, `limit` at most 2^20).
    pub fn sliding_log(limit: u64, window: Duration) -> RateLimitBuilder {
        RateLimitBuilder::new(Kind::SlidingLog, limit, window)
    }

    /// GCRA, a token bucket: `rate` permits per `period`, at most
    /// [`burst`](RateLimitBuilder::burst) at once (default `rate`).
    pub fn gcra(rate: u64, period: Duration) -> RateLimitBuilder {
        RateLimitBuilder::new(Kind::Gcra, rate, period)
    }

    /// A fixed window: at most `limit` calls in each window `[0, w)`,
    /// `[w, 2w)`, ... counted from when the limiter is built. A refused
    /// call is told to wait until its window ends; the instant `w` belongs
    /// to the next window. Up to twice the limit can pass in a
    /// window-length straddling a boundary.
    pub fn fixed_window(limit: u64, window: Duration) -> RateLimitBuilder {
        RateLimitBuilder::new(Kind::FixedWindow, limit, window)
    }

    /// A sliding window of `segments` segments (`window / segments` each,
    /// counted from when the limiter is built): at most `limit` calls in
    /// the window's segments. A permit comes back when the segment it was
    /// taken in slides out of the window, so a burst taken in one segment
    /// keeps the window closed for a whole window, not one segment (see the
    /// [module docs](super#algorithms)). One segment is the
    /// [fixed window](Self::fixed_window).
    ///
    /// `segments` is 1 to 64 and must divide the window into whole
    /// nanoseconds; [`build`](RateLimitBuilder::build) checks it.
    pub fn segmented_window(limit: u64, window: Duration, segments: u32) -> RateLimitBuilder {
        let mut builder = RateLimitBuilder::new(Kind::SegmentedWindow, limit, window);
        builder.config.segments = Some(segments);
        builder
    }

    /// Builds a layer from a [`RateLimitConfig`] (loaded from a file, say).
    ///
    /// # Errors
    ///
    /// As [`RateLimitBuilder::build`].
    pub fn from_config(config: RateLimitConfig) -> Result<Self, ConfigError> {
        RateLimitBuilder::from_config(config).build()
    }
}

impl<R> RateLimitLayer<R> {
    /// A handle on the limiter: its state, its limit.
    pub fn handle(&self) -> Handle {
        Handle::new(self.shared.clone())
    }

    /// Reports the limiter's state on each response it admitted, through
    /// `report` ([`ReportState`](super::ReportState): the HTTP `RateLimit-*` headers, say). The
    /// limiter stays the same one.
    pub fn report_state<R2>(self, report: R2) -> RateLimitLayer<R2> {
        RateLimitLayer {
            shared: self.shared,
            report,
        }
    }
}

impl<S, R: Clone> Layer<S> for RateLimitLayer<R> {
    type Service = RateLimit<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.shared.clone(), self.report.clone())
    }
}

/// Which algorithm a limiter runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Kind {
    /// [`RateLimitLayer::sliding_window`].
    SlidingWindow,
    /// [`RateLimitLayer::sliding_log`].
    SlidingLog,
    /// [`RateLimitLayer::gcra`].
    Gcra,
    /// [`RateLimitLayer::fixed_window`].
    FixedWindow,
    /// [`RateLimitLayer::segmented_window`].
    SegmentedWindow,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::SlidingWindow => "sliding_window",
            Kind::SlidingLog => "sliding_log",
            Kind::Gcra => "gcra",
            Kind::FixedWindow => "fixed_window",
            Kind::SegmentedWindow => "segmented_window",
        }
    }
}

/// Builds a [`RateLimitLayer`]; [`build`](Self::build) checks every setting.
///
/// ```
/// use std::time::Duration;
/// use palisade::rate_limit::RateLimitLayer;
///
/// let layer = RateLimitLayer::gcra(10, Duration::from_secs(1))
///     .name("search")
///     .burst(20)
///     .build()?;
/// assert_eq!(layer.handle().state().remaining, 20);
/// # Ok::<(), palisade::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct RateLimitBuilder {
    config: RateLimitConfig,
}

impl RateLimitBuilder {
    /// A builder holding `config`, so that the parts a file cannot hold (a
    /// key function, a listener) can be added before building, which
    /// checks it:
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade::rate_limit::{RateLimitBuilder, RateLimitConfig};
    ///
    /// let config = RateLimitConfig::new(100, Duration::from_secs(60));
    /// let per_client = RateLimitBuilder::from_config(config)
    ///     .keyed(|request: &(String, u32)| request.0.clone())
    ///     .build()?;
    /// assert_eq!(per_client.handle().state(&"someone".to_string()).remaining, 100);
    /// # Ok::<(), palisade::ConfigError>(())
    /// ```
    pub fn from_config(config: RateLimitConfig) -> Self {
        RateLimitBuilder { config }
    }

    fn new(kind: Kind, limit: u64, window: Duration) -> Self {
        let mut config = RateLimitConfig::new(limit, window);
        config.algorithm = kind;
        Self::from_config(config)
    }

    /// The settings so far, as [`build`](Self::build) will check them.
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// The most callers waiting at once, with a `max_wait` (default: no
    /// bound but `max_wait` itself). A call that finds the queue full is
    /// refused at once; the callers already waiting keep their places.
    pub fn max_waiters(mut self, max_waiters: usize) -> Self {
        self.config.max_waiters = Some(max_waiters);
        self
    }

    /// How long a call may wait for a permit (default zero: refuse at
    /// once). Waiting callers are served first come, first served; while
    /// one waits, `poll_ready` returns `Pending` and wakes itself. A call
    /// whose permit would come later than `max_wait` is refused at once.
    /// Waiting uses tokio's timer, so it needs a runtime with time enabled.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.config.max_wait = max_wait;
        self
    }

    /// The name used in errors and the handle (default `"rate_limit"`).
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.config.name = Some(name.into().into_owned());
        self
    }

    /// A GCRA limiter's bucket size: the most calls admitted at once, after
    /// a quiet spell (default: the rate). Only for [`RateLimitLayer::gcra`].
    pub fn burst(mut self, burst: u64) -> Self {
        self.config.burst = Some(burst);
        self
    }

    /// One limiter per key, taken from each request by `key` (a client
    /// address, an `X-Client-ID` header, an API key): see
    /// [`KeyedRateLimitLayer`](super::KeyedRateLimitLayer). Each key starts
    /// from this builder's settings.
    pub fn keyed<K, F>(self, key: F) -> KeyedRateLimitBuilder<K, F> {
        KeyedRateLimitBuilder::new(self, key)
    }

    pub(crate) fn name_or_default(&self) -> Name {
        match &self.config.name {
            Some(name) => Cow::Owned(name.clone()),
            None => Cow::Borrowed(DEFAULT_NAME),
        }
        .into()
    }

    pub(crate) fn max_wait_is_zero(&self) -> bool {
        self.config.max_wait.is_zero()
    }

    /// Checks the settings and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field when: the limit (or rate) is 0,
    /// above 2^40 − 1 (a sliding window's count) or above 2^20 (a sliding
    /// log's memory); the window (or period) is zero or longer than 2^56 ns
    /// (about 2.3 years); a burst is 0, set on a limiter other than GCRA, or
    /// so large that refilling it would take more than 2^62 ns; `segments`
    /// is missing from a segmented window, set on another limiter, 0, above
    /// 64, or does not divide the window into whole nanoseconds.
    pub fn build(self) -> Result<RateLimitLayer, ConfigError> {
        let quota = self.quota()?;
        let name = self.name_or_default();
        Ok(RateLimitLayer {
            shared: Arc::new(Shared::new(
                name,
                Limiter::new(Algorithm::new(quota)),
                self.config.max_wait,
                self.config.max_waiters.unwrap_or(usize::MAX),
            )),
            report: NoReport,
        })
    }

    /// The checked quota every limiter this builder makes starts from.
    pub(crate) fn quota(&self) -> Result<Quota, ConfigError> {
        let RateLimitConfig {
            algorithm: kind,
            limit,
            window,
            burst,
            segments,
            ..
        } = self.config;
        let segments = match (kind, segments) {
            (Kind::SegmentedWindow, Some(segments)) => segments,
            (Kind::SegmentedWindow, None) => {
                return Err(ConfigError::new(
                    LAYER,
                    "segments",
                    format!("a segmented window needs its segments, 1 to {MAX_SEGMENTS}"),
                ));
            }
            (_, None) => 1,
            (kind, Some(_)) => {
                return Err(ConfigError::new(
                    LAYER,
                    "segments",
                    format!(
                        "only a segmented window has segments, not a {}",
                        kind.as_str()
                    ),
                ));
            }
        };
        check_quota(kind, limit, window, segments)?;
        if burst.is_some() && kind != Kind::Gcra {
            return Err(ConfigError::new(
                LAYER,
                "burst",
                format!("only a GCRA limiter has a burst, not a {}", kind.as_str()),
            ));
        }
        let burst = burst.unwrap_or(limit);
        if kind == Kind::Gcra {
            check_burst(limit, window, burst)?;
        }
        Ok(Quota {
            kind,
            limit,
            window,
            burst,
            segments,
        })
    }
}

/// The checks on a limit and its window (with a segmented window's
/// segments; 1 for the others), for the builder and the handle.
pub(crate) fn check_quota(
    kind: Kind,
    limit: u64,
    window: Duration,
    segments: u32,
) -> Result<(), ConfigError> {
    let most = match kind {
        Kind::SlidingLog => MAX_LOG_LIMIT,
        Kind::SlidingWindow | Kind::Gcra | Kind::FixedWindow | Kind::SegmentedWindow => COUNT_MAX,
    };
    if kind == Kind::SegmentedWindow {
        check_segments(window, segments)?;
    }
    let kind = kind.as_str();
    if limit == 0 {
        return Err(ConfigError::new(
            LAYER,
            "limit",
            "must be at least 1 (a limit of 0 refuses every call)",
        ));
    }
    if limit > most {
        return Err(ConfigError::new(
            LAYER,
            "limit",
            format!("must be at most {most} for a {kind}, got {limit}"),
        ));
    }
    if window.is_zero() {
        return Err(ConfigError::new(LAYER, "window", "must be more than zero"));
    }
    if window > MAX_WINDOW {
        return Err(ConfigError::new(
            LAYER,
            "window",
            format!("must be at most {MAX_WINDOW:?} (2^56 ns), got {window:?}"),
        ));
    }
    Ok(())
}

/// The checks on a segmented window's segments: each is a count kept and
/// added up on every call, so there are at most [`MAX_SEGMENTS`]; and they
/// cut the window into whole nanoseconds, so that a permit comes back
/// exactly one window after its segment began.
fn check_segments(window: Duration, segments: u32) -> Result<(), ConfigError> {
    if segments == 0 || segments > MAX_SEGMENTS {
        return Err(ConfigError::new(
            LAYER,
            "segments",
            format!("must be 1 to {MAX_SEGMENTS}, got {segments}"),
        ));
    }
    if !nanos(window).is_multiple_of(u64::from(segments)) {
        return Err(ConfigError::new(
            LAYER,
            "window",
            format!("must divide into {segments} segments of whole nanoseconds, got {window:?}"),
        ));
    }
    Ok(())
}

/// The check on a GCRA limiter's burst, with its rate and period: the
/// bucket must be at least one permit, and all of it must be a span of
/// time the arithmetic holds (at most 2^62 ns, 146 years).
pub(crate) fn check_burst(rate: u64, period: Duration, burst: u64) -> Result<(), ConfigError> {
    if burst == 0 {
        return Err(ConfigError::new(LAYER, "burst", "must be at least 1"));
    }
    let interval = u128::from(nanos(period).div_ceil(rate.max(1)));
    if interval * u128::from(burst) > 1 << 62 {
        return Err(ConfigError::new(
            LAYER,
            "burst",
            format!(
                "{burst} permits at one per {:?} would take more than 146 years to refill",
                Duration::from_nanos(interval as u64)
            ),
        ));
    }
    Ok(())
}

/// A [`RateLimitLayer`]'s settings as plain data: what its builder fills,
/// what [`RateLimitBuilder::build`] checks, and, with the `serde` feature,
/// what a file holds (`Deserialize`; `limit` and `window` are required,
/// the rest may be left out). Durations are written as `"250ms"`, `"5s"`,
/// `"1m"` or a number of seconds:
///
/// ```text
/// name = "api"
/// algorithm = "gcra"      # or "sliding_window", "sliding_log",
///                         # "fixed_window", "segmented_window"
/// limit = 100             # a GCRA limiter's rate
/// window = "1m"           # a GCRA limiter's period
/// burst = 20              # GCRA only
/// segments = 6            # a segmented window only, and required there
/// max_wait = "50ms"       # default: refuse at once
/// max_waiters = 100       # default: no bound
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct RateLimitConfig {
    /// See [`RateLimitBuilder::name`]; `None`: `"rate_limit"`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub name: Option<String>,
    /// The algorithm (default the sliding window).
    #[cfg_attr(feature = "serde", serde(default = "default_kind"))]
    pub algorithm: Kind,
    /// The limit per window, or a GCRA limiter's rate per period.
    pub limit: u64,
    /// The window, or a GCRA limiter's period.
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_duration"))]
    pub window: Duration,
    /// See [`RateLimitBuilder::burst`].
    #[cfg_attr(feature = "serde", serde(default))]
    pub burst: Option<u64>,
    /// A segmented window's segments (see
    /// [`RateLimitLayer::segmented_window`]); required for it, refused for
    /// the others.
    #[cfg_attr(feature = "serde", serde(default))]
    pub segments: Option<u32>,
    /// See [`RateLimitBuilder::max_wait`] (default zero).
    #[cfg_attr(feature = "serde", serde(default, with = "crate::serde_duration"))]
    pub max_wait: Duration,
    /// See [`RateLimitBuilder::max_waiters`] (default no bound).
    #[cfg_attr(feature = "serde", serde(default))]
    pub max_waiters: Option<usize>,
}

#[cfg(feature = "serde")]
fn default_kind() -> Kind {
    Kind::SlidingWindow
}

impl RateLimitConfig {
    /// A sliding window of `limit` calls per `window`, with no name.
    pub fn new(limit: u64, window: Duration) -> Self {
        RateLimitConfig {
            name: None,
            algorithm: Kind::SlidingWindow,
            limit,
            window,
            burst: None,
            segments: None,
            max_wait: Duration::ZERO,
            max_waiters: None,
        }
    }
}
