//! [`HedgeLayer`], its builder and its configuration.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::Hedge;
use super::handle::{Delay, Handle, Learned, Shared};
use crate::classify::DefaultClassifier;
use crate::error::ConfigError;
use crate::name::Name;
use crate::retry::{CloneIf, CloneRequest, RetryBudget, SharedBudget};

const LAYER: &str = "hedge";
const DEFAULT_NAME: &str = "hedge";
const DEFAULT_MAX_ATTEMPTS: u32 = 2;
/// More attempts than this would be a load multiplier, not a hedge.
const MOST_ATTEMPTS: u32 = 10;
const DEFAULT_MIN_SAMPLES: u64 = 10;
const DEFAULT_PERIOD: Duration = Duration::from_secs(60);

/// Applies [`Hedge`] to a service.
///
/// One layer value is one budget and one learned delay, shared by every
/// service it builds and their clones.
#[derive(Clone, Debug)]
pub struct HedgeLayer<C = DefaultClassifier, R = CloneRequest> {
    shared: Arc<Shared>,
    classifier: C,
    replay: R,
}

impl HedgeLayer {
    /// Hedges that go `delay` after the previous attempt was sent (and at
    /// once when an attempt fails). A zero delay sends every attempt at
    /// once; `Duration::MAX` sends the next only when one fails, so two are
    /// never out together.
    pub fn after(delay: Duration) -> HedgeBuilder {
        HedgeBuilder::from_config(HedgeConfig {
            delay: Some(delay),
            ..HedgeConfig::default()
        })
    }

    /// Hedges that go when an attempt has taken longer than `percentile`
    /// (in (0, 1), such as 0.9) of recent successful attempts; no hedge
    /// until [`min_samples`](HedgeBuilder::min_samples) are known. Only
    /// successes are timed: failures that come fast would drag the delay
    /// down.
    pub fn at_percentile(percentile: f64) -> HedgeBuilder {
        HedgeBuilder::from_config(HedgeConfig {
            percentile: Some(percentile),
            ..HedgeConfig::default()
        })
    }

    /// Builds a layer from a [`HedgeConfig`] (loaded from a file, say).
    ///
    /// # Errors
    ///
    /// As [`HedgeBuilder::build`].
    pub fn from_config(config: HedgeConfig) -> Result<Self, ConfigError> {
        HedgeBuilder::from_config(config).build()
    }
}

impl<C, R> HedgeLayer<C, R> {
    /// A handle on the layer's counts and current delay.
    pub fn handle(&self) -> Handle {
        Handle::new(self.shared.clone())
    }
}

impl<S: Clone, C: Clone, R: Clone> Layer<S> for HedgeLayer<C, R> {
    type Service = Hedge<S, C, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Hedge::new(
            inner,
            self.shared.clone(),
            self.classifier.clone(),
            self.replay.clone(),
        )
    }
}

/// Builds a [`HedgeLayer`]: start from [`HedgeLayer::after`] or
/// [`HedgeLayer::at_percentile`].
#[derive(Clone, Debug)]
pub struct HedgeBuilder<C = DefaultClassifier, R = CloneRequest> {
    config: HedgeConfig,
    classifier: C,
    replay: R,
}

impl HedgeBuilder {
    /// A builder with `config`'s settings.
    pub fn from_config(config: HedgeConfig) -> Self {
        HedgeBuilder {
            config,
            classifier: DefaultClassifier,
            replay: CloneRequest,
        }
    }
}

impl<C, R> HedgeBuilder<C, R> {
    /// The settings as they stand.
    pub fn config(&self) -> &HedgeConfig {
        &self.config
    }

    /// The name in errors, events and metrics (default `"hedge"`).
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.config.name = Some(name.into().into_owned());
        self
    }

    /// Attempts per request, the first included (default 2, at most 10).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.config.max_attempts = n;
        self
    }

    /// For a learned delay: the latencies needed before any hedge (default
    /// 10).
    pub fn min_samples(mut self, n: u64) -> Self {
        self.config.min_samples = n;
        self
    }

    /// For a learned delay: how long latencies count, as two periods of
    /// this length, the current and the previous (default 60 s).
    pub fn period(mut self, period: Duration) -> Self {
        self.config.period = period;
        self
    }

    /// What hedges may add to the load: each hedge is paid for like a
    /// retry (default: 20 % of requests plus 10 a second, over 10 s: a
    /// 90th-percentile delay hedges about 10 %, with room for bursts).
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.config.budget = Some(budget);
        self
    }

    /// Which results are successes, which are failures that make the next
    /// hedge go at once, and which are final whatever the other attempts
    /// would say (`Ignored`, such as a 400) (default
    /// [`DefaultClassifier`]).
    pub fn classifier<C2>(self, classifier: C2) -> HedgeBuilder<C2, R> {
        HedgeBuilder {
            config: self.config,
            classifier,
            replay: self.replay,
        }
    }

    /// How a request is copied for a hedge, or found unfit to be sent twice
    /// (see [`Replay`](crate::retry::Replay); default: clone every request).
    pub fn replay<R2>(self, replay: R2) -> HedgeBuilder<C, R2> {
        HedgeBuilder {
            config: self.config,
            classifier: self.classifier,
            replay,
        }
    }

    /// Hedges only the requests `eligible` accepts, by cloning them.
    pub fn hedge_if<F>(self, eligible: F) -> HedgeBuilder<C, CloneIf<F>> {
        self.replay(CloneIf(eligible))
    }

    /// Builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field when: neither or both of `delay`
    /// and `percentile` are set; `percentile` is not in (0, 1);
    /// `max_attempts` is not in 2..=10; `min_samples` is 0; `period` is
    /// zero; the budget is invalid.
    pub fn build(self) -> Result<HedgeLayer<C, R>, ConfigError> {
        let config = self.config;
        let delay = config.check()?;
        let budget = config.budget.unwrap_or_else(default_budget);
        let budget = SharedBudget::new(budget)?;
        let name: Name = match config.name {
            Some(name) => Cow::Owned(name),
            None => Cow::Borrowed(DEFAULT_NAME),
        }
        .into();
        Ok(HedgeLayer {
            shared: Arc::new(Shared::new(name, config.max_attempts, delay, budget)),
            classifier: self.classifier,
            replay: self.replay,
        })
    }
}

fn default_budget() -> RetryBudget {
    RetryBudget::windowed(Duration::from_secs(10), 10, 0.2)
}

/// A [`HedgeLayer`]'s settings as plain data: what its builder fills, what
/// [`HedgeBuilder::build`] checks, and, with the `serde` feature, what a
/// file holds (`Deserialize`). Exactly one of `delay` and `percentile` is
/// set. The classifier and the replay rule are code, set on the builder.
///
/// ```text
/// name = "search"
/// max_attempts = 2
/// percentile = 0.9
/// min_samples = 20
/// period = "1m"
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct HedgeConfig {
    /// See [`HedgeBuilder::name`]; `None`: `"hedge"`.
    pub name: Option<String>,
    /// See [`HedgeBuilder::max_attempts`].
    pub max_attempts: u32,
    /// A fixed delay: see [`HedgeLayer::after`].
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_duration::option"))]
    pub delay: Option<Duration>,
    /// A learned delay: see [`HedgeLayer::at_percentile`].
    pub percentile: Option<f64>,
    /// See [`HedgeBuilder::min_samples`].
    pub min_samples: u64,
    /// See [`HedgeBuilder::period`].
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_duration"))]
    pub period: Duration,
    /// See [`HedgeBuilder::budget`]; `None`: the default.
    pub budget: Option<RetryBudget>,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        HedgeConfig {
            name: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            delay: None,
            percentile: None,
            min_samples: DEFAULT_MIN_SAMPLES,
            period: DEFAULT_PERIOD,
            budget: None,
        }
    }
}

impl HedgeConfig {
    /// Every setting, checked, and the delay they describe; `Err` names
    /// the first bad field.
    fn check(&self) -> Result<Delay, ConfigError> {
        let invalid = |field, rule: String| Err(ConfigError::new(LAYER, field, rule));
        let delay = match (self.delay, self.percentile) {
            (None, None) => return invalid("delay", "set `delay` or `percentile`".into()),
            (Some(_), Some(_)) => {
                return invalid(
                    "percentile",
                    "set either `delay` or `percentile`, not both".into(),
                );
            }
            (None, Some(p)) if !(p > 0.0 && p < 1.0) => {
                return invalid("percentile", format!("must be in (0, 1), got {p}"));
            }
            (Some(delay), None) => Delay::Fixed(delay),
            (None, Some(p)) => Delay::Learned(Learned::new(p, self.min_samples, self.period)),
        };
        if !(2..=MOST_ATTEMPTS).contains(&self.max_attempts) {
            return invalid(
                "max_attempts",
                format!(
                    "must be from 2 to {MOST_ATTEMPTS} (1 would never hedge), got {}",
                    self.max_attempts
                ),
            );
        }
        if self.min_samples == 0 {
            return invalid("min_samples", "must be at least 1".into());
        }
        if self.period.is_zero() {
            return invalid("period", "must be more than zero".into());
        }
        if let Some(budget) = &self.budget {
            budget
                .check()
                .map_err(|(field, rule)| ConfigError::new(LAYER, field, rule))?;
        }
        Ok(delay)
    }
}
