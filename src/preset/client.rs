//! [`ClientLayer`]: the recommended client stack, its builder and its
//! configuration.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use crate::bulkhead::{self, Bulkhead, BulkheadBuilder, BulkheadConfig, BulkheadLayer};
use crate::circuit_breaker::{
    self, CircuitBreaker, CircuitBreakerBuilder, CircuitBreakerConfig, CircuitBreakerLayer, Event,
};
use crate::classify::DefaultClassifier;
use crate::deadline::NoDeadline;
use crate::error::ConfigError;
use crate::retry::{self, CloneRequest, Retry, RetryBudget, RetryBuilder, RetryConfig, RetryLayer};
use crate::rng::splitmix64;
use crate::throttle::{self, Throttle, ThrottleBuilder, ThrottleConfig, ThrottleLayer};
use crate::timeout::{Timeout, TimeoutLayer};

const LAYER: &str = "client";
const DEFAULT_NAME: &str = "client";
const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_CONCURRENT: usize = 100;

/// The service a [`ClientLayer`] makes of `S`: total timeout, retry,
/// throttle, circuit breaker, attempt timeout and bulkhead, outermost first.
pub type Client<S, C = DefaultClassifier, R = CloneRequest, D = NoDeadline> =
    Timeout<Retry<Throttle<CircuitBreaker<Timeout<Bulkhead<S>, D>, C>, C>, C, R, D>, D>;

/// The recommended client stack as one layer; see the [module docs](super).
///
/// One layer value is one set of layers: every service it builds shares one
/// retry budget, one throttle window, one breaker and one set of bulkhead
/// slots. Build one per dependency.
#[derive(Clone)]
pub struct ClientLayer<C = DefaultClassifier, R = CloneRequest, D = NoDeadline> {
    total_timeout: TimeoutLayer<D>,
    retry: RetryLayer<C, R, D>,
    throttle: ThrottleLayer<C>,
    circuit_breaker: CircuitBreakerLayer<C>,
    attempt_timeout: TimeoutLayer<D>,
    bulkhead: BulkheadLayer,
    config: Arc<ClientConfig>,
}

impl ClientLayer {
    /// A builder, starting from the preset's defaults ([`ClientConfig`]'s
    /// `Default`).
    pub fn builder() -> ClientBuilder {
        ClientBuilder::from_config(ClientConfig::default())
    }

    /// Builds the stack from a [`ClientConfig`] (loaded from a file, say).
    ///
    /// # Errors
    ///
    /// As [`ClientBuilder::build`].
    pub fn from_config(config: ClientConfig) -> Result<Self, ConfigError> {
        ClientBuilder::from_config(config).build()
    }
}

impl<C, R, D> ClientLayer<C, R, D> {
    /// The settings in force, as checked: every layer's name filled in from
    /// the preset's, and the retry budget the preset chose if none was set.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Handles on the layers that keep state: counts, states and controls.
    pub fn handles(&self) -> ClientHandles {
        ClientHandles {
            retry: self.retry.handle(),
            throttle: self.throttle.handle(),
            circuit_breaker: self.circuit_breaker.handle(),
            bulkhead: self.bulkhead.handle(),
        }
    }
}

impl<S: Clone, C: Clone, R: Clone, D: Clone> Layer<S> for ClientLayer<C, R, D> {
    type Service = Client<S, C, R, D>;

    fn layer(&self, inner: S) -> Self::Service {
        let attempt = self.attempt_timeout.layer(self.bulkhead.layer(inner));
        let guarded = self.throttle.layer(self.circuit_breaker.layer(attempt));
        self.total_timeout.layer(self.retry.layer(guarded))
    }
}

impl<C, R, D> fmt::Debug for ClientLayer<C, R, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientLayer")
            .field("retry", &self.retry)
            .field("throttle", &self.throttle)
            .field("circuit_breaker", &self.circuit_breaker)
            .field("bulkhead", &self.bulkhead)
            .finish_non_exhaustive()
    }
}

/// Handles on a [`ClientLayer`]'s layers.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientHandles {
    /// The retry layer's counters.
    pub retry: retry::Handle,
    /// The throttle's window and probability.
    pub throttle: throttle::Handle,
    /// The breaker's state, counts and controls.
    pub circuit_breaker: circuit_breaker::Handle,
    /// The bulkhead's slots.
    pub bulkhead: bulkhead::Handle,
}

/// A breaker listener, as [`CircuitBreakerBuilder::on_event`] takes it.
type Listener = Arc<dyn Fn(&Event) + Send + Sync>;

/// Builds a [`ClientLayer`]: holds a [`ClientConfig`], which the setters
/// fill, and the parts a file cannot hold (a classifier, a replay rule, a
/// deadline slot, a breaker listener).
#[must_use = "a builder does nothing until `build` is called"]
pub struct ClientBuilder<C = DefaultClassifier, R = CloneRequest, D = NoDeadline> {
    config: ClientConfig,
    classifier: C,
    replay: R,
    slot: D,
    listener: Option<Listener>,
    seed: Option<u64>,
}

impl ClientBuilder {
    /// A builder holding `config`; [`build`](Self::build) checks it.
    pub fn from_config(config: ClientConfig) -> Self {
        ClientBuilder {
            config,
            classifier: DefaultClassifier,
            replay: CloneRequest,
            slot: NoDeadline,
            listener: None,
            seed: None,
        }
    }
}

impl<C, R, D> ClientBuilder<C, R, D> {
    /// The settings so far, as [`build`](Self::build) will check them.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The name every layer gets, unless its own table names it (default
    /// `"client"`): the dependency's name, say.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.config.name = Some(name.into().into_owned());
        self
    }

    /// The longest a caller waits, retries and backoff included (default
    /// 30 s).
    pub fn total_timeout(mut self, timeout: Duration) -> Self {
        self.config.total_timeout = timeout;
        self
    }

    /// The longest one attempt may run (default 10 s): a hung attempt fails
    /// here, counts against the breaker and may be retried.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.config.attempt_timeout = timeout;
        self
    }

    /// The most attempts in flight at once (default 100); the bulkhead
    /// refuses the rest at once.
    pub fn max_concurrent(mut self, max_concurrent: usize) -> Self {
        self.config.bulkhead.max_concurrent = max_concurrent;
        self
    }

    /// Attempts per request, the first included (default 3).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.config.retry.max_attempts = attempts;
        self
    }

    /// The retry layer's settings, replacing the preset's.
    pub fn retry(mut self, config: RetryConfig) -> Self {
        self.config.retry = config;
        self
    }

    /// The throttle's settings, replacing the preset's.
    pub fn throttle(mut self, config: ThrottleConfig) -> Self {
        self.config.throttle = config;
        self
    }

    /// The circuit breaker's settings, replacing the preset's.
    pub fn circuit_breaker(mut self, config: CircuitBreakerConfig) -> Self {
        self.config.circuit_breaker = config;
        self
    }

    /// The bulkhead's settings, replacing the preset's.
    pub fn bulkhead(mut self, config: BulkheadConfig) -> Self {
        self.config.bulkhead = config;
        self
    }

    /// Seeds the retry jitter, the breaker's open-period jitter and the
    /// throttle's draws, for reproducible tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Calls `listener` on every circuit breaker [`Event`]; see
    /// [`CircuitBreakerBuilder::on_event`].
    pub fn on_breaker_event(mut self, listener: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// What counts as a success, a failure or neither, for retry, the
    /// throttle and the breaker alike (default [`DefaultClassifier`]; over
    /// HTTP, `http::StatusClassifier`; over gRPC, `http::GrpcClassifier`).
    pub fn classifier<C2>(self, classifier: C2) -> ClientBuilder<C2, R, D> {
        ClientBuilder {
            config: self.config,
            classifier,
            replay: self.replay,
            slot: self.slot,
            listener: self.listener,
            seed: self.seed,
        }
    }

    /// Which requests may be retried, and how they are copied (default:
    /// every request, cloned; over HTTP, `http::IdempotentReplay`; over
    /// gRPC, `http::GrpcReplay`); see
    /// [`Replay`](crate::retry::Replay).
    pub fn replay<R2>(self, replay: R2) -> ClientBuilder<C, R2, D> {
        ClientBuilder {
            config: self.config,
            classifier: self.classifier,
            replay,
            slot: self.slot,
            listener: self.listener,
            seed: self.seed,
        }
    }

    /// Where requests carry their deadline (default none): both timeouts
    /// and retry work to it, and the total timeout's own deadline is handed
    /// down in it; see [`deadline`](crate::deadline).
    pub fn deadline_slot<D2>(self, slot: D2) -> ClientBuilder<C, R, D2> {
        ClientBuilder {
            config: self.config,
            classifier: self.classifier,
            replay: self.replay,
            slot,
            listener: self.listener,
            seed: self.seed,
        }
    }

    /// Checks every layer's settings, then the ones that only make sense
    /// together (see the [module docs](super#checked-together)), and builds
    /// the stack.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`]: the first layer's own that fails (naming that
    /// layer, whose name is also its table's in a [`ClientConfig`] file);
    /// or, when every layer passes alone, every rule across layers that
    /// fails, together (layer `"client"`; see
    /// [`ConfigError::violations`]), each naming its field:
    /// `total_timeout`, `attempt_timeout`, `retry.deadline`,
    /// `retry.backoff`, `circuit_breaker.slow_call_duration`,
    /// `circuit_breaker.minimum_calls`,
    /// `circuit_breaker.consecutive_failures` or
    /// `circuit_breaker.time_window`.
    pub fn build(self) -> Result<ClientLayer<C, R, D>, ConfigError>
    where
        C: Clone,
        D: Clone,
    {
        let mut config = named(self.config);
        config.check()?;
        config.retry.budget.get_or_insert_with(preset_budget);
        let in_force = Arc::new(config.clone());
        let mut retry = RetryBuilder::from_config(config.retry)
            .classifier(self.classifier.clone())
            .replay(self.replay);
        let mut throttle =
            ThrottleBuilder::from_config(config.throttle).classifier(self.classifier.clone());
        let mut breaker =
            CircuitBreakerBuilder::from_config(config.circuit_breaker).classifier(self.classifier);
        if let Some(seed) = self.seed {
            // A stream of its own for each layer: with one seed, their
            // generators would draw the same numbers.
            retry = retry.jitter_seed(splitmix64(seed ^ 1));
            throttle = throttle.seed(splitmix64(seed ^ 2));
            breaker = breaker.jitter_seed(splitmix64(seed ^ 3));
        }
        if let Some(listener) = self.listener {
            breaker = breaker.on_event(move |event| listener(event));
        }
        let name = config.name.unwrap_or_else(|| DEFAULT_NAME.to_owned());
        let timeout = |limit| {
            TimeoutLayer::builder()
                .name(name.clone())
                .timeout(limit)
                .build()
                .map(|layer| layer.deadline_slot(self.slot.clone()))
        };
        Ok(ClientLayer {
            total_timeout: timeout(config.total_timeout)?,
            retry: retry.build()?.deadline_slot(self.slot.clone()),
            throttle: throttle.build()?,
            circuit_breaker: breaker.build()?,
            attempt_timeout: timeout(config.attempt_timeout)?,
            bulkhead: BulkheadBuilder::from_config(config.bulkhead).build()?,
            config: in_force,
        })
    }
}

impl<C, R, D> fmt::Debug for ClientBuilder<C, R, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("config", &self.config)
            .field("listener", &self.listener.is_some())
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

/// The preset's retry budget, where its settings name none: half a retry
/// per request, generous because the throttle below retry refuses what an
/// overloaded upstream would.
fn preset_budget() -> RetryBudget {
    RetryBudget::windowed(Duration::from_secs(10), 10, 0.5)
}

/// The preset's name on every layer whose own settings do not name it.
fn named(mut config: ClientConfig) -> ClientConfig {
    let name = config
        .name
        .get_or_insert_with(|| DEFAULT_NAME.to_owned())
        .clone();
    config.retry.name.get_or_insert_with(|| name.clone());
    config.throttle.name.get_or_insert_with(|| name.clone());
    config
        .circuit_breaker
        .name
        .get_or_insert_with(|| name.clone());
    config.bulkhead.name.get_or_insert(name);
    config
}

/// A [`ClientLayer`]'s settings as plain data: what its builder fills, what
/// [`ClientBuilder::build`] checks, and, with the `serde` feature, what a
/// file holds (`Deserialize`). `Default` holds the preset's defaults; a
/// file may leave out any field or table for its default, and each table
/// is that layer's own `*Config` (see the [module docs](super#from-a-file)).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct ClientConfig {
    /// See [`ClientBuilder::name`]; `None`: `"client"`.
    pub name: Option<String>,
    /// See [`ClientBuilder::total_timeout`].
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_duration"))]
    pub total_timeout: Duration,
    /// See [`ClientBuilder::attempt_timeout`].
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_duration"))]
    pub attempt_timeout: Duration,
    /// The retry layer's settings: its defaults, but a `budget` left unset
    /// (`None`) is the preset's windowed budget of half a retry per request.
    pub retry: RetryConfig,
    /// The throttle's settings: its defaults.
    pub throttle: ThrottleConfig,
    /// The circuit breaker's settings: its defaults.
    pub circuit_breaker: CircuitBreakerConfig,
    /// The bulkhead's settings: 100 calls in flight, failing fast.
    pub bulkhead: BulkheadConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            name: None,
            total_timeout: DEFAULT_TOTAL_TIMEOUT,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            retry: RetryConfig::default(),
            throttle: ThrottleConfig::default(),
            circuit_breaker: CircuitBreakerConfig::default(),
            bulkhead: BulkheadConfig::new(DEFAULT_MAX_CONCURRENT),
        }
    }
}

impl ClientConfig {
    /// Each layer's own checks, then the ones across layers, all of them:
    /// the error lists every rule broken.
    fn check(&self) -> Result<(), ConfigError> {
        for (field, limit) in [
            ("total_timeout", self.total_timeout),
            ("attempt_timeout", self.attempt_timeout),
        ] {
            if limit.is_zero() {
                return Err(invalid(field, "must be more than zero"));
            }
        }
        self.retry.check()?;
        self.throttle.settings()?;
        let breaker = self.circuit_breaker.settings()?;
        BulkheadBuilder::from_config(self.bulkhead.clone()).build()?;
        let violations = [
            self.check_attempt_timeout(),
            self.check_retry_deadline(),
            self.check_retry_delays(),
            self.check_slow_calls(&breaker),
            self.check_breaker_minimum(&breaker),
            self.check_breaker_run(&breaker),
            self.check_breaker_window(&breaker),
        ];
        match ConfigError::all(violations.into_iter().filter_map(Result::err).collect()) {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    fn check_attempt_timeout(&self) -> Result<(), ConfigError> {
        if self.attempt_timeout > self.total_timeout {
            return Err(invalid(
                "attempt_timeout",
                format!(
                    "must be at most total_timeout ({:?}), got {:?}",
                    self.total_timeout, self.attempt_timeout
                ),
            ));
        }
        Ok(())
    }

    fn check_retry_deadline(&self) -> Result<(), ConfigError> {
        let total = self.total_timeout;
        if let Some(deadline) = self.retry.deadline.filter(|d| *d > total) {
            return Err(invalid(
                "retry.deadline",
                format!(
                    "must be at most total_timeout ({total:?}), got {deadline:?}: the total \
                     timeout ends the request first"
                ),
            ));
        }
        Ok(())
    }

    /// The longest delays the backoff can draw before each retry, added
    /// up, fit in the total timeout; otherwise the last retries are
    /// settings that may never act.
    fn check_retry_delays(&self) -> Result<(), ConfigError> {
        let worst = (1..self.retry.max_attempts).fold(Duration::ZERO, |sum, retry| {
            sum.saturating_add(self.retry.backoff.longest(retry))
        });
        if worst > self.total_timeout {
            return Err(invalid(
                "retry.backoff",
                format!(
                    "may wait {worst:?} in all between {} attempts at worst, more than \
                     total_timeout ({:?}): lower the delays or max_attempts, or raise \
                     total_timeout",
                    self.retry.max_attempts, self.total_timeout
                ),
            ));
        }
        Ok(())
    }

    fn check_slow_calls(&self, breaker: &circuit_breaker::Settings) -> Result<(), ConfigError> {
        match &breaker.thresholds.slow {
            Some(slow) if slow.longer_than >= self.attempt_timeout => Err(invalid(
                "circuit_breaker.slow_call_duration",
                format!(
                    "must be below attempt_timeout ({:?}), got {:?}: a call cut at the \
                     attempt timeout is a failure, never a slow call",
                    self.attempt_timeout, slow.longer_than
                ),
            )),
            _ => Ok(()),
        }
    }

    fn check_breaker_minimum(
        &self,
        breaker: &circuit_breaker::Settings,
    ) -> Result<(), ConfigError> {
        let attempts = u64::from(self.retry.max_attempts);
        if breaker.thresholds.minimum_calls <= attempts {
            return Err(invalid(
                "circuit_breaker.minimum_calls",
                format!(
                    "must be more than retry.max_attempts ({attempts}), got {}: one request's \
                     attempts alone could open the breaker",
                    breaker.thresholds.minimum_calls
                ),
            ));
        }
        Ok(())
    }

    fn check_breaker_run(&self, breaker: &circuit_breaker::Settings) -> Result<(), ConfigError> {
        let attempts = u64::from(self.retry.max_attempts);
        match breaker.thresholds.consecutive_failures {
            Some(n) if n <= attempts => Err(invalid(
                "circuit_breaker.consecutive_failures",
                format!(
                    "must be more than retry.max_attempts ({attempts}), got {n}: one request's \
                     attempts alone could open the breaker"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// A time window holds at least two attempts that run to the attempt
    /// timeout, and a whole request.
    fn check_breaker_window(&self, breaker: &circuit_breaker::Settings) -> Result<(), ConfigError> {
        let circuit_breaker::WindowKind::Time { length, .. } = breaker.window else {
            return Ok(());
        };
        let two_attempts = self.attempt_timeout.saturating_mul(2);
        if length < two_attempts || length < self.total_timeout {
            return Err(invalid(
                "circuit_breaker.time_window",
                format!(
                    "must be at least twice attempt_timeout ({two_attempts:?}) and at least \
                     total_timeout ({:?}), got {length:?}, so that it sees several attempts \
                     and a request's attempts together",
                    self.total_timeout
                ),
            ));
        }
        Ok(())
    }
}

fn invalid(field: &'static str, rule: impl Into<Cow<'static, str>>) -> ConfigError {
    ConfigError::new(LAYER, field, rule)
}
