//! [`ThrottleLayer`], its builder and its configuration.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::Throttle;
use super::handle::Handle;
use super::throttler::{Settings, Throttler};
use crate::classify::DefaultClassifier;
use crate::error::ConfigError;
use crate::name::Name;
use crate::rng::Rng;

pub(crate) const LAYER: &str = "throttle";
const DEFAULT_NAME: &str = "throttle";

const DEFAULT_K: f64 = 2.0;
const DEFAULT_PADDING: f64 = 1.0;
/// As many as a circuit breaker's default `minimum_calls`: two calls a
/// second over the default window. Below that, a client adds too little
/// load for refusing its calls to help, and a lone request's retry would be
/// refused half the time after a single failure.
const DEFAULT_MIN_REQUESTS: u64 = 20;
/// At least one call in ten goes through, whatever the window holds: after
/// an outage the window is full of refusals and no accepts, and the formula
/// alone would let through about one call per window, keeping a recovered
/// upstream (and the breaker's probes) waiting for tens of seconds.
const DEFAULT_MAX_PROBABILITY: f64 = 0.9;
/// Short, because reaction and recovery both take a few windows; see the
/// module docs' "Defaults".
const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
const DEFAULT_BUCKETS: usize = 10;
/// At most the tags' lookahead (1024 epochs): a bucket reused one lap (a
/// window's worth of buckets) later must read as ahead of the epoch a
/// held-up caller still holds, not as an older one it may overwrite.
/// (Distinct tags within a window would allow 2^24.) Callers held up for
/// longer than a whole window are dropped before they touch a bucket.
const MAX_BUCKETS: usize = 1_000;
const MIN_BUCKET: Duration = Duration::from_millis(1);

/// Applies a [`Throttle`] to a service.
///
/// One layer value is one throttle: every service it builds, and every
/// clone of those, shares its window. Build one layer per upstream.
#[derive(Clone)]
pub struct ThrottleLayer<C = DefaultClassifier> {
    throttler: Arc<Throttler>,
    classifier: C,
}

impl ThrottleLayer {
    /// A builder, starting from the defaults listed in the
    /// [module docs](super#configuration).
    pub fn builder() -> ThrottleBuilder {
        ThrottleBuilder::default()
    }

    /// Builds a layer from a [`ThrottleConfig`] (loaded from a file, say),
    /// with the default classifier.
    ///
    /// # Errors
    ///
    /// As [`ThrottleBuilder::build`].
    pub fn from_config(config: ThrottleConfig) -> Result<Self, ConfigError> {
        ThrottleBuilder::from_config(config).build()
    }
}

impl<C> ThrottleLayer<C> {
    /// A handle on the throttle: its window and rejection probability.
    pub fn handle(&self) -> Handle {
        Handle::new(self.throttler.clone())
    }
}

impl<S, C: Clone> Layer<S> for ThrottleLayer<C> {
    type Service = Throttle<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Throttle::new(inner, self.throttler.clone(), self.classifier.clone())
    }
}

impl<C> fmt::Debug for ThrottleLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleLayer")
            .field("throttler", &self.throttler)
            .finish_non_exhaustive()
    }
}

/// Builds a [`ThrottleLayer`].
///
/// Every option has a default (see the [module docs](super#configuration));
/// [`build`](Self::build) checks them all and names the first bad one.
///
/// ```
/// use std::time::Duration;
/// use palisade::throttle::ThrottleLayer;
///
/// let layer = ThrottleLayer::builder()
///     .name("products")
///     .k(2.0)
///     .window(Duration::from_secs(30))
///     .window_buckets(30)
///     .padding(1.0)
///     .build()?;
/// assert_eq!(layer.handle().probability(), 0.0);
/// # Ok::<(), palisade::ConfigError>(())
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct ThrottleBuilder<C = DefaultClassifier> {
    config: ThrottleConfig,
    classifier: C,
}

impl Default for ThrottleBuilder {
    fn default() -> Self {
        Self::from_config(ThrottleConfig::default())
    }
}

impl<C> ThrottleBuilder<C> {
    /// The settings so far, as [`build`](Self::build) will check them.
    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    /// The name used in errors and the handle (default `"throttle"`).
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.config.name = Some(name.into().into_owned());
        self
    }

    /// The multiplier K on accepts (default 2): calls are refused once the
    /// window's requests exceed K times its accepts, so the upstream keeps
    /// receiving about K times what it accepts. At least 1: below 1, even
    /// an upstream that accepts every call would have some refused. A
    /// lower K (1.1, say) throttles sooner and harder; a higher one lets
    /// more doomed calls through.
    pub fn k(mut self, k: f64) -> Self {
        self.config.k = k;
        self
    }

    /// How far back outcomes count (default 10 s). Reaction to an overload
    /// and recovery after it both take about a window or two, so shorter is
    /// faster; the window should still hold enough calls to judge by.
    pub fn window(mut self, window: Duration) -> Self {
        self.config.window = window;
        self
    }

    /// How many buckets the window is kept in (default 10): outcomes leave
    /// it a bucket at a time. At most 1 000; each bucket is at least 1 ms
    /// and they divide the window exactly. A decision that needs the
    /// window reads every bucket, so more buckets slide more smoothly and
    /// cost a little more then.
    pub fn window_buckets(mut self, buckets: usize) -> Self {
        self.config.window_buckets = buckets;
        self
    }

    /// Added to the requests in the formula's denominator (default 1), so
    /// that a few failures in a quiet window do not refuse most calls: with
    /// padding P, one failure alone refuses 1 / (1 + P) of the calls. More
    /// than 0.
    pub fn padding(mut self, padding: f64) -> Self {
        self.config.padding = padding;
        self
    }

    /// The highest probability a call is refused with (default 0.9), in
    /// (0, 1]: at least `1 − max_probability` of the calls go through
    /// however bad the window looks, so that an upstream back from an
    /// outage is found out within moments rather than after the window's
    /// worth of refusals has aged out. 1 is the SRE book's formula
    /// uncapped.
    pub fn max_probability(mut self, max_probability: f64) -> Self {
        self.config.max_probability = max_probability;
        self
    }

    /// Refuse nothing while the window holds fewer than this many requests
    /// (default 20). The formula alone refuses the next call with
    /// probability 1/2 after a single failure in an empty window, so a
    /// client that calls rarely would see its retries refused; such a
    /// client adds too little load for refusals to help. 0 applies the
    /// formula from the first call.
    pub fn min_requests(mut self, n: u64) -> Self {
        self.config.min_requests = n;
        self
    }

    /// Seeds the random draws, for reproducible tests (by default each
    /// throttle draws a random seed). Clones share one sequence, drawn in
    /// the order decisions are made.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// Decides what counts as an accept (a success), a request without one
    /// (a failure) or neither (ignored); default [`DefaultClassifier`]; see
    /// the [module docs](super#what-counts).
    pub fn classifier<C2>(self, classifier: C2) -> ThrottleBuilder<C2> {
        ThrottleBuilder {
            config: self.config,
            classifier,
        }
    }

    /// Checks the settings and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field when: `k` is below 1 or not a
    /// finite number; `padding` is not a finite number above 0;
    /// `max_probability` is not in (0, 1]; the window
    /// is zero; the buckets are 0, more than 1 000, shorter than 1 ms, or do
    /// not divide the window exactly.
    pub fn build(self) -> Result<ThrottleLayer<C>, ConfigError> {
        let settings = self.config.settings()?;
        let name: Name = match self.config.name {
            Some(name) => Cow::Owned(name),
            None => Cow::Borrowed(DEFAULT_NAME),
        }
        .into();
        let seed = self
            .config
            .seed
            .unwrap_or_else(|| Rng::random_seed(name.as_str().len() as u64));
        Ok(ThrottleLayer {
            throttler: Arc::new(Throttler::new(name, settings, seed)),
            classifier: self.classifier,
        })
    }
}

impl ThrottleBuilder {
    /// A builder holding `config`, so that a classifier can be added before
    /// [`build`](Self::build), which checks it.
    pub fn from_config(config: ThrottleConfig) -> Self {
        ThrottleBuilder {
            config,
            classifier: DefaultClassifier,
        }
    }
}

impl<C> fmt::Debug for ThrottleBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn invalid(field: &'static str, rule: impl Into<Cow<'static, str>>) -> ConfigError {
    ConfigError::new(LAYER, field, rule)
}

/// A [`ThrottleLayer`]'s settings as plain data: what its builder fills,
/// what [`ThrottleBuilder::build`] checks, and, with the `serde` feature,
/// what a file holds (`Deserialize`). `Default` holds the defaults; a file
/// may leave out any field for its default. The classifier is code, so it
/// is set on the builder.
///
/// Durations are written as `"250ms"`, `"5s"`, `"1m"` or a number of
/// seconds:
///
/// ```text
/// name = "products"
/// k = 2.0
/// window = "10s"
/// window_buckets = 10
/// padding = 1.0
/// max_probability = 0.9
/// min_requests = 20
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct ThrottleConfig {
    /// See [`ThrottleBuilder::name`]; `None`: `"throttle"`.
    pub name: Option<String>,
    /// See [`ThrottleBuilder::k`].
    pub k: f64,
    /// See [`ThrottleBuilder::window`].
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_duration"))]
    pub window: Duration,
    /// See [`ThrottleBuilder::window_buckets`].
    pub window_buckets: usize,
    /// See [`ThrottleBuilder::padding`].
    pub padding: f64,
    /// See [`ThrottleBuilder::max_probability`].
    pub max_probability: f64,
    /// See [`ThrottleBuilder::min_requests`].
    pub min_requests: u64,
    /// See [`ThrottleBuilder::seed`]; `None`: a random seed.
    pub seed: Option<u64>,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            name: None,
            k: DEFAULT_K,
            window: DEFAULT_WINDOW,
            window_buckets: DEFAULT_BUCKETS,
            padding: DEFAULT_PADDING,
            max_probability: DEFAULT_MAX_PROBABILITY,
            min_requests: DEFAULT_MIN_REQUESTS,
            seed: None,
        }
    }
}

impl ThrottleConfig {
    /// Every setting, checked; `Err` names the first bad field.
    pub(crate) fn settings(&self) -> Result<Settings, ConfigError> {
        // Written so that NaN fails too.
        if !(self.k.is_finite() && self.k >= 1.0) {
            return Err(invalid(
                "k",
                format!(
                    "must be a finite number of at least 1 (below 1, calls to a healthy \
                     upstream are refused), got {}",
                    self.k
                ),
            ));
        }
        if !(self.padding.is_finite() && self.padding > 0.0) {
            return Err(invalid(
                "padding",
                format!(
                    "must be a finite number above 0 (with 0, one failure alone refuses \
                     every call), got {}",
                    self.padding
                ),
            ));
        }
        if !(self.max_probability > 0.0 && self.max_probability <= 1.0) {
            return Err(invalid(
                "max_probability",
                format!("must be in (0, 1], got {}", self.max_probability),
            ));
        }
        if self.window.is_zero() {
            return Err(invalid("window", "must be more than zero"));
        }
        let buckets = self.window_buckets;
        if buckets == 0 || buckets > MAX_BUCKETS {
            return Err(invalid(
                "window_buckets",
                format!("must be 1 ..= {MAX_BUCKETS}, got {buckets}"),
            ));
        }
        if !self.window.as_nanos().is_multiple_of(buckets as u128) {
            return Err(invalid(
                "window_buckets",
                format!("{buckets} buckets do not divide {:?} exactly", self.window),
            ));
        }
        if self.window / (buckets as u32) < MIN_BUCKET {
            return Err(invalid(
                "window_buckets",
                format!(
                    "{buckets} buckets of {:?} are shorter than {MIN_BUCKET:?}",
                    self.window
                ),
            ));
        }
        Ok(Settings {
            k: self.k,
            padding: self.padding,
            max_probability: self.max_probability,
            min_requests: self.min_requests,
            window: self.window,
            buckets,
        })
    }
}
