//! [`AdaptiveLayer`], its builder and its configuration.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::Adaptive;
use super::aimd::{Aimd, AimdConfig};
use super::gradient::{Gradient, GradientConfig};
use super::handle::Handle;
use super::limiter::{Bounds, Estimator, Limiter};
use crate::classify::DefaultClassifier;
use crate::error::ConfigError;
use crate::name::Name;

pub(crate) const LAYER: &str = "adaptive";
const DEFAULT_NAME: &str = "adaptive";

// Netflix's concurrency-limits defaults, for both algorithms.
const DEFAULT_INITIAL_LIMIT: usize = 20;
const DEFAULT_MIN_LIMIT: usize = 20;
const DEFAULT_MAX_LIMIT: usize = 200;
/// The highest limit: far beyond any real concurrency, and small enough
/// that Gradient2's estimate, a float, holds it exactly.
const MAX_LIMIT: usize = u32::MAX as usize;

pub(crate) fn invalid(field: &'static str, rule: impl Into<Cow<'static, str>>) -> ConfigError {
    ConfigError::new(LAYER, field, rule)
}

/// Applies an [`Adaptive`] limit to a service.
///
/// One layer value is one limit: every service it builds, and every clone
/// of those, shares its slots and its algorithm. Build one layer per
/// dependency.
#[derive(Clone)]
pub struct AdaptiveLayer<C = DefaultClassifier> {
    limiter: Arc<Limiter>,
    classifier: C,
}

impl AdaptiveLayer {
    /// A builder for an AIMD limit: one more slot per healthy sample from a
    /// busy limiter, a tenth fewer per drop or slow call.
    pub fn aimd() -> AdaptiveBuilder<AimdConfig> {
        AdaptiveBuilder::new(AimdConfig::default())
    }

    /// A builder for a Gradient2 limit, which follows the ratio of the
    /// long-term latency to the latest.
    pub fn gradient() -> AdaptiveBuilder<GradientConfig> {
        AdaptiveBuilder::new(GradientConfig::default())
    }

    /// Builds a layer from an [`AdaptiveConfig`] (loaded from a file, say),
    /// with the default classifier.
    ///
    /// # Errors
    ///
    /// As [`AdaptiveBuilder::build`].
    pub fn from_config(config: AdaptiveConfig) -> Result<Self, ConfigError> {
        AdaptiveBuilder::from_config(config).build()
    }
}

impl<C> AdaptiveLayer<C> {
    /// A handle on the shared state: the limit, the calls in flight, the
    /// refusals.
    pub fn handle(&self) -> Handle {
        Handle::new(self.limiter.clone())
    }
}

impl<S, C: Clone> Layer<S> for AdaptiveLayer<C> {
    type Service = Adaptive<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Adaptive::new(inner, self.limiter.clone(), self.classifier.clone())
    }
}

impl<C> fmt::Debug for AdaptiveLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLayer")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

/// Builds an [`AdaptiveLayer`]: from [`AdaptiveLayer::aimd`] or
/// [`AdaptiveLayer::gradient`], with that algorithm's parameters, or from
/// an [`AdaptiveConfig`].
///
/// ```
/// use std::time::Duration;
/// use palisade::adaptive::AdaptiveLayer;
///
/// let aimd = AdaptiveLayer::aimd()
///     .name("payments")
///     .limits(10, 5, 100) // initial, min, max
///     .backoff_factor(0.8)
///     .slow_after(Duration::from_secs(2))
///     .build()?;
/// assert_eq!(aimd.handle().limit(), 10);
///
/// let gradient = AdaptiveLayer::gradient()
///     .name("products")
///     .smoothing(0.1)
///     .build()?;
/// assert_eq!(gradient.handle().limit(), 20);
/// # Ok::<(), palisade::ConfigError>(())
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct AdaptiveBuilder<A = Algorithm, C = DefaultClassifier> {
    name: Option<String>,
    initial_limit: usize,
    min_limit: usize,
    max_limit: usize,
    algorithm: A,
    classifier: C,
}

impl<A> AdaptiveBuilder<A> {
    fn new(algorithm: A) -> Self {
        AdaptiveBuilder {
            name: None,
            initial_limit: DEFAULT_INITIAL_LIMIT,
            min_limit: DEFAULT_MIN_LIMIT,
            max_limit: DEFAULT_MAX_LIMIT,
            algorithm,
            classifier: DefaultClassifier,
        }
    }
}

impl AdaptiveBuilder {
    /// A builder holding `config`, so that a classifier can be added before
    /// [`build`](Self::build), which checks it.
    pub fn from_config(config: AdaptiveConfig) -> Self {
        AdaptiveBuilder {
            name: config.name,
            initial_limit: config.initial_limit,
            min_limit: config.min_limit,
            max_limit: config.max_limit,
            algorithm: config.algorithm,
            classifier: DefaultClassifier,
        }
    }
}

impl<A, C> AdaptiveBuilder<A, C> {
    /// The name used in errors, events, metrics and the handle (default
    /// `"adaptive"`).
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into().into_owned());
        self
    }

    /// The limit to start from (default 20), within the bounds.
    pub fn initial_limit(mut self, limit: usize) -> Self {
        self.initial_limit = limit;
        self
    }

    /// The lowest the limit goes (default 20), at least 1.
    pub fn min_limit(mut self, limit: usize) -> Self {
        self.min_limit = limit;
        self
    }

    /// The highest the limit goes (default 200), at least `min_limit`.
    pub fn max_limit(mut self, limit: usize) -> Self {
        self.max_limit = limit;
        self
    }

    /// The initial, lowest and highest limit at once.
    pub fn limits(self, initial: usize, min: usize, max: usize) -> Self {
        self.initial_limit(initial).min_limit(min).max_limit(max)
    }

    /// Decides which finished calls are samples, and which of those are
    /// drops; default [`DefaultClassifier`]. A
    /// [`Failure`](crate::classify::Outcome::Failure) is a drop: the
    /// dependency refused the call or failed it under load (an HTTP 503 or
    /// 429, a timeout). A [`Success`](crate::classify::Outcome::Success) is
    /// a healthy sample, and an
    /// [`Ignored`](crate::classify::Outcome::Ignored) outcome is no sample.
    /// A classifier that calls a bad request a failure makes every bad
    /// request lower the limit: count the caller's own mistakes (an HTTP
    /// 400 or 404) as successes or ignore them.
    pub fn classifier<C2>(self, classifier: C2) -> AdaptiveBuilder<A, C2> {
        AdaptiveBuilder {
            name: self.name,
            initial_limit: self.initial_limit,
            min_limit: self.min_limit,
            max_limit: self.max_limit,
            algorithm: self.algorithm,
            classifier,
        }
    }

    /// The settings so far, as [`build`](Self::build) will check them.
    pub fn config(&self) -> AdaptiveConfig
    where
        A: Clone + Into<Algorithm>,
    {
        AdaptiveConfig {
            name: self.name.clone(),
            initial_limit: self.initial_limit,
            min_limit: self.min_limit,
            max_limit: self.max_limit,
            algorithm: self.algorithm.clone().into(),
        }
    }

    /// Checks the settings and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field when: `min_limit` is 0;
    /// `max_limit` is below `min_limit` or above `u32::MAX`;
    /// `initial_limit` is outside `min_limit ..= max_limit`; or one of the
    /// algorithm's parameters breaks its rule (see [`AimdConfig`] and
    /// [`GradientConfig`]).
    pub fn build(self) -> Result<AdaptiveLayer<C>, ConfigError>
    where
        A: Into<Algorithm>,
    {
        let config = AdaptiveConfig {
            name: self.name,
            initial_limit: self.initial_limit,
            min_limit: self.min_limit,
            max_limit: self.max_limit,
            algorithm: self.algorithm.into(),
        };
        Ok(AdaptiveLayer {
            limiter: Arc::new(config.limiter()?),
            classifier: self.classifier,
        })
    }
}

impl<C> AdaptiveBuilder<AimdConfig, C> {
    /// What the limit is multiplied by on a drop or a slow call (default
    /// 0.9), in (0, 1).
    pub fn backoff_factor(mut self, factor: f64) -> Self {
        self.algorithm.backoff_factor = factor;
        self
    }

    /// A successful call slower than this counts as a drop (default 5 s).
    pub fn slow_after(mut self, after: std::time::Duration) -> Self {
        self.algorithm.slow_after = after;
        self
    }
}

impl<C> AdaptiveBuilder<GradientConfig, C> {
    /// How much slower than the long-term average a call may be before it
    /// counts as queueing (default 1.5), at least 1.
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.algorithm.tolerance = tolerance;
        self
    }

    /// How many samples the long-term RTT averages over, about (default
    /// 600).
    pub fn long_window(mut self, samples: u32) -> Self {
        self.algorithm.long_window = samples;
        self
    }

    /// Calls added to each target, so the limit keeps probing upward while
    /// latency holds (default 4).
    pub fn queue_allowance(mut self, calls: f64) -> Self {
        self.algorithm.queue_allowance = calls;
        self
    }

    /// The share of the way to the target the limit moves per sample
    /// (default 0.2), in (0, 1].
    pub fn smoothing(mut self, smoothing: f64) -> Self {
        self.algorithm.smoothing = smoothing;
        self
    }
}

impl<A: fmt::Debug, C> fmt::Debug for AdaptiveBuilder<A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveBuilder")
            .field("name", &self.name)
            .field("initial_limit", &self.initial_limit)
            .field("min_limit", &self.min_limit)
            .field("max_limit", &self.max_limit)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Which algorithm moves the limit, with its parameters.
///
/// With the `serde` feature, a file names it as a table:
/// `[algorithm.aimd]` or `[algorithm.gradient]` in TOML,
/// `{"algorithm": {"gradient": {}}}` in JSON.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Algorithm {
    /// Additive increase, multiplicative decrease.
    Aimd(AimdConfig),
    /// Gradient2: the limit follows the long-term latency over the latest.
    Gradient(GradientConfig),
}

impl From<AimdConfig> for Algorithm {
    fn from(config: AimdConfig) -> Self {
        Algorithm::Aimd(config)
    }
}

impl From<GradientConfig> for Algorithm {
    fn from(config: GradientConfig) -> Self {
        Algorithm::Gradient(config)
    }
}

/// An [`AdaptiveLayer`]'s settings as plain data: what its builder fills,
/// what [`AdaptiveBuilder::build`] checks, and, with the `serde` feature,
/// what a file holds (`Deserialize`). The algorithm is required; any other
/// field may be left out for its default. The classifier is code, so it is
/// set on the builder.
///
/// ```text
/// name = "payments"
/// initial_limit = 20
/// min_limit = 20
/// max_limit = 200
///
/// [algorithm.gradient]
/// smoothing = 0.2
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct AdaptiveConfig {
    /// See [`AdaptiveBuilder::name`]; `None`: `"adaptive"`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub name: Option<String>,
    /// See [`AdaptiveBuilder::initial_limit`].
    #[cfg_attr(feature = "serde", serde(default = "default_initial_limit"))]
    pub initial_limit: usize,
    /// See [`AdaptiveBuilder::min_limit`].
    #[cfg_attr(feature = "serde", serde(default = "default_min_limit"))]
    pub min_limit: usize,
    /// See [`AdaptiveBuilder::max_limit`].
    #[cfg_attr(feature = "serde", serde(default = "default_max_limit"))]
    pub max_limit: usize,
    /// The algorithm and its parameters.
    pub algorithm: Algorithm,
}

#[cfg(feature = "serde")]
fn default_initial_limit() -> usize {
    DEFAULT_INITIAL_LIMIT
}

#[cfg(feature = "serde")]
fn default_min_limit() -> usize {
    DEFAULT_MIN_LIMIT
}

#[cfg(feature = "serde")]
fn default_max_limit() -> usize {
    DEFAULT_MAX_LIMIT
}

impl AdaptiveConfig {
    /// The default limits (20, from 20 to 200) with `algorithm`, and no
    /// name.
    pub fn new(algorithm: impl Into<Algorithm>) -> Self {
        AdaptiveConfig {
            name: None,
            initial_limit: DEFAULT_INITIAL_LIMIT,
            min_limit: DEFAULT_MIN_LIMIT,
            max_limit: DEFAULT_MAX_LIMIT,
            algorithm: algorithm.into(),
        }
    }

    /// Checks every setting and makes the shared state; `Err` names the
    /// first bad field.
    fn limiter(self) -> Result<Limiter, ConfigError> {
        let (initial, min, max) = (self.initial_limit, self.min_limit, self.max_limit);
        if min == 0 {
            return Err(invalid(
                "min_limit",
                "must be at least 1, got 0 (a limit of 0 refuses every call)",
            ));
        }
        if max < min {
            return Err(invalid(
                "max_limit",
                format!("must be at least min_limit ({min}), got {max}"),
            ));
        }
        if max > MAX_LIMIT {
            return Err(invalid(
                "max_limit",
                format!("must be at most {MAX_LIMIT}, got {max}"),
            ));
        }
        if !(min..=max).contains(&initial) {
            return Err(invalid(
                "initial_limit",
                format!("must be within min_limit ..= max_limit ({min} ..= {max}), got {initial}"),
            ));
        }
        let bounds = Bounds { min, max };
        let estimator = match &self.algorithm {
            Algorithm::Aimd(aimd) => {
                aimd.check()?;
                Estimator::Aimd(Aimd::new(aimd, initial, bounds))
            }
            Algorithm::Gradient(gradient) => {
                gradient.check()?;
                Estimator::Gradient(Gradient::new(gradient, initial, bounds))
            }
        };
        let name: Name = match self.name {
            Some(name) => Cow::Owned(name),
            None => Cow::Borrowed(DEFAULT_NAME),
        }
        .into();
        Ok(Limiter::new(name, bounds, estimator))
    }
}
