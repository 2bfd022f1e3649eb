//! [`TimeoutLayer`], its builder and its configuration.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::Timeout;
use crate::clock::Instants;
use crate::deadline::NoDeadline;
use crate::error::ConfigError;
use crate::metrics::Count;
use crate::name::Name;

const LAYER: &str = "timeout";
const DEFAULT_NAME: &str = "timeout";

/// What every [`Timeout`] built from one layer shares; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) name: Name,
    /// `palisade_timeout_elapsed_total{name}`: calls failed because time
    /// ran out (the timer fired, the service was not ready in time, or the
    /// request's deadline had passed).
    pub(crate) elapsed: Count,
    pub(crate) timeout: Duration,
    pub(crate) ready_timeout: Option<Duration>,
    /// Where the timer's deadline is read from.
    pub(crate) instants: Arc<Instants>,
}

/// Applies a [`Timeout`] to a service.
///
/// Build one with [`TimeoutLayer::new`] or [`TimeoutLayer::builder`].
#[derive(Clone, Debug)]
pub struct TimeoutLayer<D = NoDeadline> {
    settings: Settings,
    slot: D,
}

impl TimeoutLayer {
    /// A layer that fails any call taking longer than `timeout` with
    /// [`Elapsed`](crate::error::Elapsed).
    ///
    /// # Errors
    ///
    /// A zero `timeout` is a [`ConfigError`]: it would fail every call.
    pub fn new(timeout: Duration) -> Result<Self, ConfigError> {
        Self::builder().timeout(timeout).build()
    }

    /// A builder for a named timeout, or one that also bounds readiness.
    pub fn builder() -> TimeoutBuilder {
        TimeoutBuilder::default()
    }

    /// Builds a layer from a [`TimeoutConfig`] (loaded from a file, say).
    ///
    /// # Errors
    ///
    /// As [`TimeoutBuilder::build`].
    pub fn from_config(config: TimeoutConfig) -> Result<Self, ConfigError> {
        TimeoutBuilder::from_config(config).build()
    }
}

impl<D> TimeoutLayer<D> {
    /// Honours the deadline requests carry in `slot`: a call fails at this
    /// layer's timeout or at the request's deadline, whichever comes first;
    /// the earlier of the two is handed to the inner service in the
    /// request; and a request whose deadline has already passed is not
    /// sent. See [`deadline`](crate::deadline).
    ///
    /// With a slot that carries deadlines the layer reads the clock in
    /// every `call` (to set the deadline it hands on), so a call that
    /// answers at once costs one clock read more than without.
    pub fn deadline_slot<D2>(self, slot: D2) -> TimeoutLayer<D2> {
        TimeoutLayer {
            settings: self.settings,
            slot,
        }
    }
}

impl<S, D: Clone> Layer<S> for TimeoutLayer<D> {
    type Service = Timeout<S, D>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout::new(inner, self.settings.clone(), self.slot.clone())
    }
}

/// Builds a [`TimeoutLayer`].
///
/// ```
/// use std::time::Duration;
/// use palisade::timeout::TimeoutLayer;
///
/// let layer = TimeoutLayer::builder()
///     .name("inventory")
///     .timeout(Duration::from_millis(800))
///     .ready_timeout(Duration::from_millis(200))
///     .build()?;
/// # Ok::<(), palisade::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct TimeoutBuilder {
    config: TimeoutConfig,
}

impl Default for TimeoutBuilder {
    /// A builder with no timeout yet: [`build`](Self::build) refuses it
    /// until [`timeout`](Self::timeout) is set.
    fn default() -> Self {
        Self::from_config(TimeoutConfig::new(Duration::ZERO))
    }
}

impl TimeoutBuilder {
    /// A builder holding `config`; [`build`](Self::build) checks it.
    pub fn from_config(config: TimeoutConfig) -> Self {
        TimeoutBuilder { config }
    }

    /// The settings so far, as [`build`](Self::build) will check them.
    pub fn config(&self) -> &TimeoutConfig {
        &self.config
    }

    /// The name used in errors and `tracing` events (default `"timeout"`).
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.config.name = Some(name.into().into_owned());
        self
    }

    /// The longest a call may run, from the first time its response future
    /// has to wait (required).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// Also bound the wait for the inner service to become ready (off by
    /// default, as in tower). When the inner service is not ready within
    /// `ready_timeout`, `poll_ready` reports ready and the call fails at once
    /// with an [`Elapsed`](crate::error::Elapsed) whose
    /// [`waiting_for_readiness`](crate::error::Elapsed::waiting_for_readiness)
    /// is `true`; the inner service is not called.
    pub fn ready_timeout(mut self, ready_timeout: Duration) -> Self {
        self.config.ready_timeout = Some(ready_timeout);
        self
    }

    /// Checks the settings and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when `timeout` is not set or is zero, or when
    /// `ready_timeout` is zero.
    pub fn build(self) -> Result<TimeoutLayer, ConfigError> {
        let config = self.config;
        if config.timeout.is_zero() {
            return Err(ConfigError::new(
                LAYER,
                "timeout",
                "must be set to more than zero, got 0 (a zero timeout would fail every call)",
            ));
        }
        if config.ready_timeout.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                LAYER,
                "ready_timeout",
                "must be more than zero (leave it unset to not bound readiness)",
            ));
        }
        let name = match config.name {
            Some(name) => Cow::Owned(name),
            None => Cow::Borrowed(DEFAULT_NAME),
        };
        Ok(TimeoutLayer {
            settings: Settings {
                elapsed: Count::new("palisade_timeout_elapsed_total", &name),
                name: name.into(),
                timeout: config.timeout,
                ready_timeout: config.ready_timeout,
                instants: Arc::new(Instants::new()),
            },
            slot: NoDeadline,
        })
    }
}

/// A [`TimeoutLayer`]'s settings as plain data: what its builder fills,
/// what [`TimeoutBuilder::build`] checks, and, with the `serde` feature,
/// what a file holds (`Deserialize`; `timeout` is required, the rest may be
/// left out). Durations are written as `"250ms"`, `"5s"`, `"1m"` or a
/// number of seconds.
///
/// ```
/// use std::time::Duration;
/// use palisade::timeout::{TimeoutConfig, TimeoutLayer};
///
/// let mut config = TimeoutConfig::new(Duration::from_secs(2));
/// config.name = Some("users".to_string());
/// let layer = TimeoutLayer::from_config(config)?;
/// # Ok::<(), palisade::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct TimeoutConfig {
    /// See [`TimeoutBuilder::name`]; `None`: `"timeout"`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub name: Option<String>,
    /// See [`TimeoutBuilder::timeout`].
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_duration"))]
    pub timeout: Duration,
    /// See [`TimeoutBuilder::ready_timeout`].
    #[cfg_attr(
        feature = "serde",
        serde(default, with = "crate::serde_duration::option")
    )]
    pub ready_timeout: Option<Duration>,
}

impl TimeoutConfig {
    /// A configuration with the given call timeout and nothing else set.
    pub fn new(timeout: Duration) -> Self {
        TimeoutConfig {
            name: None,
            timeout,
            ready_timeout: None,
        }
    }
}
