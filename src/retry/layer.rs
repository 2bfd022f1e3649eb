//! [`RetryLayer`], its builder and the state its services share.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::Retry;
use super::attempt::AttemptReports;
use super::backoff::Backoff;
use super::budget::{Budget, RetryBudget};
use super::handle::{Counters, Handle, RetryEvent};
use super::replay::{CloneIf, CloneRequest};
use crate::classify::DefaultClassifier;
use crate::deadline::NoDeadline;
use crate::error::ConfigError;
use crate::name::Name;
use crate::rng::{Rng, splitmix64};
use crate::spare::WithSpare;
use crate::sync::{AtomicU64, Ordering};

const LAYER: &str = "retry";
const DEFAULT_NAME: &str = "retry";
const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// A user's callback for each retry.
type Listener = Arc<dyn Fn(&RetryEvent<'_>) + Send + Sync>;

/// What every service of one layer shares: the settings, the budget and the
/// counters.
pub(crate) struct Shared {
    pub(crate) name: Name,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) deadline: Option<Duration>,
    pub(crate) retry_rate_limited: bool,
    pub(crate) budget: Budget,
    pub(crate) counters: Counters,
    pub(crate) attempts: AttemptReports,
    listener: Option<Listener>,
    seed: u64,
    // Requests that needed a jitter generator so far.
    draws: AtomicU64,
}

/// What a [`Retry`]'s clones and their response futures share: the
/// layer's state, and the service retries go to.
pub(crate) type Retries<S> = WithSpare<Shared, S>;

impl Shared {
    /// A fresh generator for one request's retries: every request gets its
    /// own sequence (tower 0.5's backoff gave every request in a process
    /// the same one), reproducible from the seed in request order.
    pub(crate) fn rng(&self) -> Rng {
        let n = self.draws.fetch_add(1, Ordering::Relaxed);
        Rng::new(splitmix64(self.seed ^ n))
    }

    pub(crate) fn on_retry(&self, event: &RetryEvent<'_>) {
        tracing::debug!(
            target: "palisade::retry",
            name = event.name,
            retry = event.retry,
            delay_ms = event.delay.as_millis() as u64,
            "retrying"
        );
        if let Some(listener) = &self.listener {
            listener(event);
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("deadline", &self.deadline)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// Applies [`Retry`] to a service.
///
/// One layer value is one budget and one set of counters, shared by every
/// service it builds and their clones.
#[derive(Clone)]
pub struct RetryLayer<C = DefaultClassifier, R = CloneRequest, D = NoDeadline> {
    shared: Arc<Shared>,
    classifier: C,
    replay: R,
    slot: D,
}

impl RetryLayer {
    /// A builder, starting from the defaults in the [module docs](super#configuration).
    pub fn builder() -> RetryBuilder {
        RetryBuilder::default()
    }
}

impl RetryLayer {
    /// Builds a layer from a [`RetryConfig`] (loaded from a file, say).
    ///
    /// # Errors
    ///
    /// As [`RetryBuilder::build`].
    pub fn from_config(config: RetryConfig) -> Result<Self, ConfigError> {
        RetryBuilder::from_config(config).build()
    }
}

impl<C, R, D> RetryLayer<C, R, D> {
    /// A handle on the layer's counters.
    pub fn handle(&self) -> Handle {
        Handle::new(self.shared.clone())
    }

    /// Honours the deadline requests carry in `slot`: no attempt starts,
    /// and no backoff sleeps, past the earlier of the request's deadline
    /// and this layer's own [`deadline`](RetryBuilder::deadline); when this
    /// layer's own comes first, every attempt carries it. See
    /// [`deadline`](crate::deadline).
    pub fn deadline_slot<D2>(self, slot: D2) -> RetryLayer<C, R, D2> {
        RetryLayer {
            shared: self.shared,
            classifier: self.classifier,
            replay: self.replay,
            slot,
        }
    }
}

impl<S: Clone, C: Clone, R: Clone, D: Clone> Layer<S> for RetryLayer<C, R, D> {
    type Service = Retry<S, C, R, D>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(
            inner,
            self.shared.clone(),
            self.classifier.clone(),
            self.replay.clone(),
            self.slot.clone(),
        )
    }
}

impl<C, R, D> fmt::Debug for RetryLayer<C, R, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RetryLayer`]; [`build`](Self::build) checks every setting.
///
/// ```
/// use std::time::Duration;
/// use palisade::retry::{Backoff, Jitter, RetryBudget, RetryLayer};
///
/// let layer = RetryLayer::builder()
///     .name("inventory")
///     .max_attempts(4)
///     .backoff(
///         Backoff::exponential(Duration::from_millis(50))
///             .max(Duration::from_secs(1))
///             .jitter(Jitter::Full),
///     )
///     .budget(RetryBudget::tokens(10, 0.1))
///     .deadline(Duration::from_secs(3))
///     .build()?;
/// assert_eq!(layer.handle().name(), "inventory");
/// # Ok::<(), palisade::ConfigError>(())
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct RetryBuilder<C = DefaultClassifier, R = CloneRequest> {
    config: RetryConfig,
    seed: Option<u64>,
    listener: Option<Listener>,
    classifier: C,
    replay: R,
}

impl Default for RetryBuilder {
    fn default() -> Self {
        Self::from_config(RetryConfig::default())
    }
}

/// 100 ms, doubling, at most 5 s, full jitter.
fn default_backoff() -> Backoff {
    Backoff::exponential(Duration::from_millis(100))
        .max(Duration::from_secs(5))
        .jitter(super::Jitter::Full)
}

impl<C, R> RetryBuilder<C, R> {
    /// The settings so far, as [`build`](Self::build) will check them.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// The name used in events and the handle (default `"retry"`).
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.config.name = Some(name.into().into_owned());
        self
    }

    /// Attempts in all, the first included (default 3; at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.config.max_attempts = n;
        self
    }

    /// The delay before each retry (default: exponential from 100 ms,
    /// doubling, at most 5 s, full jitter).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// The retry budget (default [`RetryBudget::tokens(100, 0.5)`](RetryBudget::tokens)).
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.config.budget = Some(budget);
        self
    }

    /// A bound on the whole request, from its first call: no retry starts
    /// after it and no backoff sleeps past it (default none). The attempt in
    /// flight when it passes is not cut short: put a timeout outside the
    /// retry for that.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.config.deadline = Some(deadline);
        self
    }

    /// Whether a palisade [`RateLimited`](crate::error::RateLimited)
    /// refusal from below is retried, after at least its `retry_after`
    /// (default true). An open circuit or a full bulkhead is never retried
    /// by the default classifier.
    pub fn retry_rate_limited(mut self, retry: bool) -> Self {
        self.config.retry_rate_limited = retry;
        self
    }

    /// Seeds the jitter, for reproducible tests: the n-th request to need a
    /// retry draws the same delays on every run (by default each layer
    /// draws a random seed).
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Calls `listener` before each retry (it also goes to `tracing`, at
    /// DEBUG). It runs in the request's task; it should be quick.
    pub fn on_retry(mut self, listener: impl Fn(&RetryEvent<'_>) + Send + Sync + 'static) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// Decides which results are failures to retry, and reads a result's
    /// retry-after (default [`DefaultClassifier`]); see [`crate::classify`].
    pub fn classifier<C2>(self, classifier: C2) -> RetryBuilder<C2, R> {
        self.with_parts(|_, replay| (classifier, replay))
    }

    /// Decides which requests may be retried and copies them (default:
    /// every request, cloned); see [`Replay`](super::Replay).
    pub fn replay<R2>(self, replay: R2) -> RetryBuilder<C, R2> {
        self.with_parts(|classifier, _| (classifier, replay))
    }

    /// The same settings with the classifier and replay `parts` makes.
    fn with_parts<C2, R2>(self, parts: impl FnOnce(C, R) -> (C2, R2)) -> RetryBuilder<C2, R2> {
        let (classifier, replay) = parts(self.classifier, self.replay);
        RetryBuilder {
            config: self.config,
            seed: self.seed,
            listener: self.listener,
            classifier,
            replay,
        }
    }

    /// Retries only the requests `eligible` accepts (cloning them).
    pub fn retry_if<F>(self, eligible: F) -> RetryBuilder<C, CloneIf<F>> {
        self.replay(CloneIf(eligible))
    }

    /// Checks the settings and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field when: `max_attempts` is 0; the
    /// backoff's maximum is below its base, its multiplier below 1 or a
    /// proportional jitter outside [0, 1]; the budget's tokens are 0, its
    /// token ratio outside (0, 1], its ttl outside 1 s to 60 s or its ratio
    /// outside [0, 1]; the deadline is 0.
    pub fn build(self) -> Result<RetryLayer<C, R>, ConfigError> {
        let config = self.config;
        config.check()?;
        let name: Name = match config.name {
            Some(name) => Cow::Owned(name),
            None => Cow::Borrowed(DEFAULT_NAME),
        }
        .into();
        let seed = self
            .seed
            .unwrap_or_else(|| Rng::random_seed(name.as_str().len() as u64));
        Ok(RetryLayer {
            shared: Arc::new(Shared {
                counters: Counters::new(name.as_str()),
                attempts: AttemptReports::new(name.clone(), config.max_attempts),
                name,
                max_attempts: config.max_attempts,
                backoff: config.backoff,
                deadline: config.deadline,
                retry_rate_limited: config.retry_rate_limited,
                budget: Budget::new(config.budget.unwrap_or_default()),
                listener: self.listener,
                seed,
                draws: AtomicU64::new(0),
            }),
            classifier: self.classifier,
            replay: self.replay,
            slot: NoDeadline,
        })
    }
}

impl RetryBuilder {
    /// A builder holding `config`, so that the parts a file cannot hold (a
    /// classifier, a replay rule, a listener) can be added before
    /// [`build`](Self::build), which checks it:
    ///
    /// ```
    /// use palisade::retry::{RetryBuilder, RetryConfig};
    /// use palisade::classify::Outcome;
    ///
    /// let mut config = RetryConfig::default();
    /// config.max_attempts = 4;
    /// let layer = RetryBuilder::from_config(config)
    ///     .classifier(|result: &Result<u16, std::io::Error>| match result {
    ///         Ok(503) | Err(_) => Outcome::Failure,
    ///         Ok(_) => Outcome::Success,
    ///     })
    ///     .build()?;
    /// # let _ = layer;
    /// # Ok::<(), palisade::ConfigError>(())
    /// ```
    pub fn from_config(config: RetryConfig) -> Self {
        RetryBuilder {
            config,
            seed: None,
            listener: None,
            classifier: DefaultClassifier,
            replay: CloneRequest,
        }
    }
}

/// A [`RetryLayer`]'s settings as plain data: what its builder fills, what
/// [`RetryBuilder::build`] checks, and, with the `serde` feature, what a
/// file holds (`Deserialize`). `Default` holds the defaults; a file may
/// leave out any field for its default. The classifier, the replay rule and
/// the listener are code, so they are set on the builder.
///
/// Durations are written as `"250ms"`, `"5s"`, `"1m"` or a number of
/// seconds, and the [`Backoff`] and [`RetryBudget`] tables are described on
/// their types:
///
/// ```text
/// name = "orders"
/// max_attempts = 3
/// deadline = "3s"
///
/// [backoff]
/// kind = "exponential"
/// base = "100ms"
/// max = "2s"
/// jitter = "full"
///
/// [budget]
/// kind = "tokens"
/// max_tokens = 10
/// token_ratio = 0.1
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct RetryConfig {
    /// See [`RetryBuilder::name`]; `None`: `"retry"`.
    pub name: Option<String>,
    /// See [`RetryBuilder::max_attempts`].
    pub max_attempts: u32,
    /// See [`RetryBuilder::backoff`].
    pub backoff: Backoff,
    /// See [`RetryBuilder::budget`]; `None`: the default,
    /// [`RetryBudget::tokens(100, 0.5)`](RetryBudget::tokens). (The client
    /// preset reads `None` as its own default, a windowed budget.)
    pub budget: Option<RetryBudget>,
    /// See [`RetryBuilder::deadline`].
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_duration::option"))]
    pub deadline: Option<Duration>,
    /// See [`RetryBuilder::retry_rate_limited`].
    pub retry_rate_limited: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            name: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: default_backoff(),
            budget: None,
            deadline: None,
            retry_rate_limited: true,
        }
    }
}

impl RetryConfig {
    /// Every setting, checked; `Err` names the first bad field.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::new(
                LAYER,
                "max_attempts",
                "must be at least 1",
            ));
        }
        let invalid = |(field, rule): (&'static str, String)| ConfigError::new(LAYER, field, rule);
        self.backoff.check().map_err(invalid)?;
        if let Some(budget) = &self.budget {
            budget.check().map_err(invalid)?;
        }
        if self.deadline.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                LAYER,
                "deadline",
                "must be more than zero",
            ));
        }
        Ok(())
    }
}

impl<C, R> fmt::Debug for RetryBuilder<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBuilder")
            .field("config", &self.config)
            .field("seed", &self.seed)
            .field("listener", &self.listener.is_some())
            .finish_non_exhaustive()
    }
}
