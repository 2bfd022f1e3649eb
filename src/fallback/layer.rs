//! [`FallbackLayer`], its builder and its configuration.

use std::borrow::Cow;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::answer::{Cache, Compute, Failed, LastGood, NoAnswer, Value};
use super::handle::{CacheView, Event, Handle, Listener, Shared};
use super::mark::MarkDegradable;
use super::{Fallback, Policy, Reason, Reasons};
use crate::classify::DefaultClassifier;
use crate::error::{BoxError, ConfigError};
use crate::name::Name;

const LAYER: &str = "fallback";
const DEFAULT_NAME: &str = "fallback";
const DEFAULT_MAX_ENTRIES: usize = 10_000;

/// Applies a [`Fallback`] to a service.
///
/// One layer value is one set of counters (and one cache, with
/// [`last_good`](FallbackBuilder::last_good)), shared by every service it
/// builds and all their clones.
pub struct FallbackLayer<A, C = DefaultClassifier, M = MarkDegradable> {
    policy: Arc<Policy<A, C, M>>,
}

impl FallbackLayer<NoAnswer> {
    /// A builder: choose the reasons with [`on`](FallbackBuilder::on) and
    /// the answer with [`value`](FallbackBuilder::value),
    /// [`answer`](FallbackBuilder::answer) or
    /// [`last_good`](FallbackBuilder::last_good).
    pub fn builder() -> FallbackBuilder {
        FallbackBuilder::default()
    }
}

impl<A, C, M> FallbackLayer<A, C, M> {
    /// A handle on the counters: answers served by reason, answers that
    /// failed, the cache's hits, misses and expired entries.
    pub fn handle(&self) -> Handle {
        Handle::new(self.policy.shared.clone())
    }
}

impl<A, C, M> Clone for FallbackLayer<A, C, M> {
    fn clone(&self) -> Self {
        FallbackLayer {
            policy: self.policy.clone(),
        }
    }
}

impl<S, A, C, M> Layer<S> for FallbackLayer<A, C, M> {
    type Service = Fallback<S, A, C, M>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback::new(inner, self.policy.clone())
    }
}

impl<A, C, M> fmt::Debug for FallbackLayer<A, C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("policy", &self.policy)
            .finish()
    }
}

/// The key function of a [`last_good`](FallbackBuilder::last_good)
/// answer, before [`build`](FallbackBuilder::build) makes its cache.
pub struct LastGoodKey<F, K> {
    key: F,
    _key: PhantomData<fn() -> K>,
}

impl<F, K> fmt::Debug for LastGoodKey<F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LastGoodKey").finish_non_exhaustive()
    }
}

/// Builds a [`FallbackLayer`].
///
/// `build` exists once an answer is chosen:
///
/// ```
/// use std::time::Duration;
/// use palisade::fallback::{FallbackLayer, Reason, Unmarked};
///
/// let layer = FallbackLayer::builder()
///     .name("prices")
///     .on(Reason::CircuitOpen)
///     .on(Reason::Elapsed)
///     .last_good(|sku: &u32| *sku)
///     .max_entries(50_000)
///     .max_age(Duration::from_secs(300))
///     .mark(Unmarked)
///     .build::<u64>()?;
/// assert_eq!(layer.handle().name(), "prices");
/// # Ok::<(), palisade::ConfigError>(())
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct FallbackBuilder<A = NoAnswer, C = DefaultClassifier, M = MarkDegradable> {
    config: FallbackConfig,
    answer: A,
    classifier: C,
    mark: M,
    listener: Option<Listener>,
}

impl Default for FallbackBuilder {
    /// A builder with no reason and no answer yet.
    fn default() -> Self {
        Self::from_config(FallbackConfig::default())
    }
}

impl FallbackBuilder {
    /// A builder holding `config`, so that the parts a file cannot hold (the
    /// answer, a classifier, a marker) can be added before `build`, which
    /// checks it.
    pub fn from_config(config: FallbackConfig) -> Self {
        FallbackBuilder {
            config,
            answer: NoAnswer,
            classifier: DefaultClassifier,
            mark: MarkDegradable,
            listener: None,
        }
    }
}

impl<A, C, M> FallbackBuilder<A, C, M> {
    /// The settings so far, as `build` will check them.
    pub fn config(&self) -> &FallbackConfig {
        &self.config
    }

    /// The name used in events, metrics and the handle (default
    /// `"fallback"`).
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.config.name = Some(name.into().into_owned());
        self
    }

    /// Answers for `reason` too. At least one is required; a result with a
    /// reason not chosen passes unchanged.
    pub fn on(mut self, reason: Reason) -> Self {
        if !self.config.on.contains(&reason) {
            self.config.on.push(reason);
        }
        self
    }

    /// Judges results with `classifier` (default [`DefaultClassifier`]):
    /// what it calls a failure has [`Reason::Failure`], and only what it
    /// calls a success is kept by [`last_good`](Self::last_good). Give it
    /// the breaker's classifier, so that what the breaker ignores gets no
    /// answer. It sees the inner service's error as a
    /// [`BoxError`](crate::BoxError).
    pub fn classifier<C2>(self, classifier: C2) -> FallbackBuilder<A, C2, M> {
        FallbackBuilder {
            config: self.config,
            answer: self.answer,
            classifier,
            mark: self.mark,
            listener: self.listener,
        }
    }

    /// Marks each answer with `mark` (default [`MarkDegradable`]; see the
    /// [module docs](super#the-degraded-mark)).
    pub fn mark<M2>(self, mark: M2) -> FallbackBuilder<A, C, M2> {
        FallbackBuilder {
            config: self.config,
            answer: self.answer,
            classifier: self.classifier,
            mark,
            listener: self.listener,
        }
    }

    /// Calls `listener` each time the layer acts on a result: an answer
    /// served or failed, a cache miss. It runs on the caller's task, so it
    /// must be quick.
    pub fn on_event(mut self, listener: impl Fn(&Event<'_>) + Send + Sync + 'static) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// The most keys the [`last_good`](Self::last_good) cache holds
    /// (default 10 000, rounded up to a multiple of 16).
    pub fn max_entries(mut self, max_entries: usize) -> Self {
        self.config.max_entries = Some(max_entries);
        self
    }

    /// How long a [`last_good`](Self::last_good) answer may be served
    /// after the response it copies came in (required with `last_good`).
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.config.max_age = Some(max_age);
        self
    }

    /// Answers with a clone of `value`.
    pub fn value<Res: Clone>(self, value: Res) -> FallbackBuilder<Value<Res>, C, M> {
        self.with_answer(Value(value))
    }

    /// Answers with what `answer` makes of the failure; when it fails, its
    /// error is what the caller gets, in place of the original result.
    pub fn answer<Res, F>(self, answer: F) -> FallbackBuilder<Compute<F, Res>, C, M>
    where
        F: Fn(&Failed<Res>) -> Result<Res, BoxError>,
    {
        self.with_answer(Compute {
            answer,
            _response: PhantomData,
        })
    }

    /// Answers with the last good response for the request's key, as
    /// `key` computes it before the call, if it is younger than
    /// [`max_age`](Self::max_age); otherwise the original result passes.
    /// See the [module docs](super#the-last-good-response).
    pub fn last_good<Req, K, F>(self, key: F) -> FallbackBuilder<LastGoodKey<F, K>, C, M>
    where
        F: Fn(&Req) -> K,
    {
        self.with_answer(LastGoodKey {
            key,
            _key: PhantomData,
        })
    }

    fn with_answer<A2>(self, answer: A2) -> FallbackBuilder<A2, C, M> {
        FallbackBuilder {
            config: self.config,
            answer,
            classifier: self.classifier,
            mark: self.mark,
            listener: self.listener,
        }
    }

    /// Checks the settings common to every answer, and builds the layer
    /// with the answer `made` of the chosen one.
    fn finish<A2>(
        self,
        made: impl FnOnce(A) -> (A2, Option<CacheView>),
    ) -> Result<FallbackLayer<A2, C, M>, ConfigError> {
        if self.config.on.is_empty() {
            return Err(ConfigError::new(
                LAYER,
                "on",
                "must name at least one reason (a fallback for nothing never answers)",
            ));
        }
        let reasons = self
            .config
            .on
            .iter()
            .fold(Reasons::default(), |set, &reason| set.with(reason));
        let name = match self.config.name {
            Some(name) => Name::from(name),
            None => Name::Static(DEFAULT_NAME),
        };
        let (answer, cache) = made(self.answer);
        Ok(FallbackLayer {
            policy: Arc::new(Policy {
                shared: Arc::new(Shared::new(name, self.listener, cache)),
                reasons,
                answer,
                classifier: self.classifier,
                mark: self.mark,
            }),
        })
    }
}

impl<Res, C, M> FallbackBuilder<Value<Res>, C, M> {
    /// Checks the settings and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when no reason was chosen (`on`).
    pub fn build(self) -> Result<FallbackLayer<Value<Res>, C, M>, ConfigError> {
        self.finish(|answer| (answer, None))
    }
}

impl<F, Res, C, M> FallbackBuilder<Compute<F, Res>, C, M> {
    /// Checks the settings and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when no reason was chosen (`on`).
    pub fn build(self) -> Result<FallbackLayer<Compute<F, Res>, C, M>, ConfigError> {
        self.finish(|answer| (answer, None))
    }
}

impl<F, K, C, M> FallbackBuilder<LastGoodKey<F, K>, C, M> {
    /// Checks the settings and builds the layer, with its cache of `Res`,
    /// the inner service's response type (usually inferred from the service
    /// the layer wraps).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when no reason was chosen (`on`), `max_age` is not
    /// set or is zero, or `max_entries` is zero.
    #[allow(clippy::type_complexity)] // the layer's type, spelled out once
    pub fn build<Res>(self) -> Result<FallbackLayer<LastGood<F, K, Res>, C, M>, ConfigError>
    where
        K: Hash + Eq + Send + Sync + 'static,
        Res: Send + 'static,
    {
        let max_entries = self.config.max_entries.unwrap_or(DEFAULT_MAX_ENTRIES);
        if max_entries == 0 {
            return Err(ConfigError::new(
                LAYER,
                "max_entries",
                "must be at least 1, got 0 (a cache that holds nothing never answers)",
            ));
        }
        let max_age = match self.config.max_age {
            None => {
                return Err(ConfigError::new(
                    LAYER,
                    "max_age",
                    "must be set with `last_good`: how old an answer may be served",
                ));
            }
            Some(age) if age.is_zero() => {
                return Err(ConfigError::new(
                    LAYER,
                    "max_age",
                    "must be more than zero (every kept answer would be too old)",
                ));
            }
            Some(age) => age,
        };
        let cache = Arc::new(Cache::new(max_entries, max_age));
        let stats: CacheView = cache.clone();
        self.finish(|LastGoodKey { key, .. }| (LastGood { key, cache }, Some(stats)))
    }
}

impl<A: fmt::Debug, C, M> fmt::Debug for FallbackBuilder<A, C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackBuilder")
            .field("config", &self.config)
            .field("answer", &self.answer)
            .finish_non_exhaustive()
    }
}

/// A [`FallbackLayer`]'s settings as plain data: what its builder fills,
/// what `build` checks, and, with the `serde` feature, what a file holds
/// (`Deserialize`). The answer, the classifier and the marker are code,
/// added to the builder ([`FallbackBuilder::from_config`]).
///
/// ```
/// use std::time::Duration;
/// use palisade::fallback::{FallbackBuilder, FallbackConfig, Reason, Unmarked};
///
/// let mut config = FallbackConfig::default();
/// config.on = vec![Reason::CircuitOpen, Reason::Failure];
/// config.max_age = Some(Duration::from_secs(60));
/// let layer = FallbackBuilder::from_config(config)
///     .last_good(|user: &u64| *user)
///     .mark(Unmarked)
///     .build::<String>()?;
/// # let _ = layer;
/// # Ok::<(), palisade::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct FallbackConfig {
    /// See [`FallbackBuilder::name`]; `None`: `"fallback"`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub name: Option<String>,
    /// See [`FallbackBuilder::on`]: written as `["circuit_open", "failure"]`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub on: Vec<Reason>,
    /// See [`FallbackBuilder::max_entries`]; `None`: 10 000.
    #[cfg_attr(feature = "serde", serde(default))]
    pub max_entries: Option<usize>,
    /// See [`FallbackBuilder::max_age`].
    #[cfg_attr(
        feature = "serde",
        serde(default, with = "crate::serde_duration::option")
    )]
    pub max_age: Option<Duration>,
}
