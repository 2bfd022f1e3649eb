//! [`BulkheadLayer`], its builder and its configuration.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::Bulkhead;
use super::handle::{Handle, Shared};
use super::slots::MAX_SLOTS;
use crate::error::ConfigError;

pub(crate) const LAYER: &str = "bulkhead";
const DEFAULT_NAME: &str = "bulkhead";

/// Applies a [`Bulkhead`] to a service.
///
/// One layer value is one set of slots: every service it builds, and every
/// clone of those, draws from the same `max_concurrent` slots. Build separate
/// layers for separate limits.
#[derive(Clone, Debug)]
pub struct BulkheadLayer {
    shared: Arc<Shared>,
}

impl BulkheadLayer {
    /// A fail-fast bulkhead: at most `max_concurrent` calls in flight, and a
    /// call that finds no free slot fails at once with
    /// [`BulkheadFull`](crate::error::BulkheadFull).
    ///
    /// # Errors
    ///
    /// As [`BulkheadBuilder::build`].
    pub fn new(max_concurrent: usize) -> Result<Self, ConfigError> {
        Self::builder().max_concurrent(max_concurrent).build()
    }

    /// A builder for a named bulkhead, or one that waits for a slot.
    pub fn builder() -> BulkheadBuilder {
        BulkheadBuilder::default()
    }

    /// Builds a layer from a [`BulkheadConfig`] (loaded from a file, say).
    ///
    /// # Errors
    ///
    /// As [`BulkheadBuilder::build`].
    pub fn from_config(config: BulkheadConfig) -> Result<Self, ConfigError> {
        BulkheadBuilder::from_config(config).build()
    }

    /// A handle on the shared state: slots in use, waiters, rejections.
    pub fn handle(&self) -> Handle {
        Handle::new(self.shared.clone())
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead::new(inner, self.shared.clone())
    }
}

/// Builds a [`BulkheadLayer`].
///
/// ```
/// use std::time::Duration;
/// use palisade::bulkhead::BulkheadLayer;
///
/// let layer = BulkheadLayer::builder()
///     .name("database")
///     .max_concurrent(16)
///     .max_wait(Duration::from_millis(50))
///     .build()?;
/// assert_eq!(layer.handle().max_concurrent(), 16);
/// # Ok::<(), palisade::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct BulkheadBuilder {
    config: BulkheadConfig,
}

impl Default for BulkheadBuilder {
    /// A builder with no limit yet: [`build`](Self::build) refuses it until
    /// [`max_concurrent`](Self::max_concurrent) is set.
    fn default() -> Self {
        Self::from_config(BulkheadConfig::new(0))
    }
}

impl BulkheadBuilder {
    /// A builder holding `config`; [`build`](Self::build) checks it.
    pub fn from_config(config: BulkheadConfig) -> Self {
        BulkheadBuilder { config }
    }

    /// The settings so far, as [`build`](Self::build) will check them.
    pub fn config(&self) -> &BulkheadConfig {
        &self.config
    }

    /// The name used in errors, events and the handle (default `"bulkhead"`).
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.config.name = Some(name.into().into_owned());
        self
    }

    /// The most calls in flight at once (required, at least 1).
    pub fn max_concurrent(mut self, max_concurrent: usize) -> Self {
        self.config.max_concurrent = max_concurrent;
        self
    }

    /// How long a call may wait for a free slot before it fails with
    /// [`BulkheadFull`](crate::error::BulkheadFull). Zero, the default, fails
    /// at once. While waiting, `poll_ready` returns `Pending`; waiters are
    /// served in the order they arrived. Waiting uses `tokio::time`, so a
    /// bulkhead with a `max_wait` must be polled inside a tokio runtime with
    /// time enabled (a fail-fast bulkhead needs no runtime at all).
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.config.max_wait = max_wait;
        self
    }

    /// Checks the settings and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when `max_concurrent` is not set, is zero (every call
    /// would be refused), or is larger than `usize::MAX >> 3`.
    pub fn build(self) -> Result<BulkheadLayer, ConfigError> {
        let config = self.config;
        let max_concurrent = config.max_concurrent;
        if max_concurrent == 0 {
            return Err(ConfigError::new(
                LAYER,
                "max_concurrent",
                "must be set to at least 1, got 0 (a bulkhead with no slots refuses every call)",
            ));
        }
        if max_concurrent > MAX_SLOTS {
            return Err(ConfigError::new(
                LAYER,
                "max_concurrent",
                format!("must be at most {MAX_SLOTS}, got {max_concurrent}"),
            ));
        }
        let name = match config.name {
            Some(name) => Cow::Owned(name),
            None => Cow::Borrowed(DEFAULT_NAME),
        };
        Ok(BulkheadLayer {
            shared: Arc::new(Shared::new(name.into(), max_concurrent, config.max_wait)),
        })
    }
}

/// A [`BulkheadLayer`]'s settings as plain data: what its builder fills,
/// what [`BulkheadBuilder::build`] checks, and, with the `serde` feature,
/// what a file holds (`Deserialize`; `max_concurrent` is required, the rest
/// may be left out). Durations are written as `"250ms"`, `"5s"`, `"1m"` or a
/// number of seconds; `max_wait` left out fails fast.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct BulkheadConfig {
    /// See [`BulkheadBuilder::name`]; `None`: `"bulkhead"`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub name: Option<String>,
    /// See [`BulkheadBuilder::max_concurrent`].
    pub max_concurrent: usize,
    /// See [`BulkheadBuilder::max_wait`].
    #[cfg_attr(feature = "serde", serde(default, with = "crate::serde_duration"))]
    pub max_wait: Duration,
}

impl BulkheadConfig {
    /// A fail-fast configuration with the given limit and no name.
    pub fn new(max_concurrent: usize) -> Self {
        BulkheadConfig {
            name: None,
            max_concurrent,
            max_wait: Duration::ZERO,
        }
    }
}
