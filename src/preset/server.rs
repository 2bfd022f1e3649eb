//! [`ServerLayer`]: the recommended stack in front of an HTTP server, its
//! builder and its configuration.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Response;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::bulkhead::{self, Bulkhead, BulkheadConfig, BulkheadLayer};
use crate::error::{BoxError, ConfigError};
use crate::http::{
    ErrorResponse, ErrorResponseLayer, InExtensions, RateLimitHeaders, ReadDeadline,
    ReadDeadlineHandle, ReadDeadlineLayer,
};
use crate::rate_limit::{self, RateLimit, RateLimitBuilder, RateLimitConfig, RateLimitLayer};
use crate::timeout::{Timeout, TimeoutLayer};

const LAYER: &str = "server";
const DEFAULT_NAME: &str = "server";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MAX_CONCURRENT: usize = 1_000;

/// The service a [`ServerLayer`] makes of `S`: error responses, the
/// caller's deadline, the rate limit (when configured), load shedding and
/// the timeout, outermost first.
pub type Server<S> =
    ErrorResponse<ReadDeadline<ServerRateLimit<Bulkhead<Timeout<S, InExtensions>>>>>;

/// The recommended stack in front of an HTTP server as one layer; see the
/// [module docs](super#servers).
///
/// One layer value is one limiter and one set of slots, shared by every
/// service it builds (hyper and axum clone the stack per connection and per
/// request).
#[derive(Clone, Debug)]
pub struct ServerLayer {
    deadline: ReadDeadlineLayer,
    rate_limit: Option<RateLimitLayer<RateLimitHeaders>>,
    bulkhead: BulkheadLayer,
    timeout: TimeoutLayer<InExtensions>,
}

impl ServerLayer {
    /// A builder, starting from the preset's defaults ([`ServerConfig`]'s
    /// `Default`).
    pub fn builder() -> ServerBuilder {
        ServerBuilder::from_config(ServerConfig::default())
    }

    /// Builds the stack from a [`ServerConfig`] (loaded from a file, say).
    ///
    /// # Errors
    ///
    /// As [`ServerBuilder::build`].
    pub fn from_config(config: ServerConfig) -> Result<Self, ConfigError> {
        ServerBuilder::from_config(config).build()
    }

    /// Handles on the layers that keep state.
    pub fn handles(&self) -> ServerHandles {
        ServerHandles {
            deadline: self.deadline.handle(),
            rate_limit: self.rate_limit.as_ref().map(RateLimitLayer::handle),
            bulkhead: self.bulkhead.handle(),
        }
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = Server<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let shed = self.bulkhead.layer(self.timeout.layer(inner));
        let limited = ServerRateLimit {
            inner: match &self.rate_limit {
                Some(limit) => Admission::Limited {
                    inner: limit.layer(shed),
                },
                None => Admission::Open { inner: shed },
            },
        };
        ErrorResponseLayer::new().layer(self.deadline.layer(limited))
    }
}

/// Handles on a [`ServerLayer`]'s layers.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerHandles {
    /// Callers' deadlines: expired arrivals and malformed headers.
    pub deadline: ReadDeadlineHandle,
    /// The rate limit, when one is configured.
    pub rate_limit: Option<rate_limit::Handle>,
    /// The load-shedding bulkhead's slots.
    pub bulkhead: bulkhead::Handle,
}

/// The server preset's rate limit: a [`RateLimit`] with `RateLimit-*`
/// headers on every answer when the [`ServerConfig`] has one, and nothing
/// otherwise.
#[derive(Clone, Debug)]
pub struct ServerRateLimit<S> {
    inner: Admission<S>,
}

#[derive(Clone, Debug)]
enum Admission<S> {
    Limited {
        inner: RateLimit<S, RateLimitHeaders>,
    },
    Open {
        inner: S,
    },
}

impl<S, Request, B> Service<Request> for ServerRateLimit<S>
where
    S: Service<Request, Response = Response<B>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = ServerRateLimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match &mut self.inner {
            Admission::Limited { inner } => inner.poll_ready(cx),
            Admission::Open { inner } => inner.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match &mut self.inner {
            Admission::Limited { inner } => ServerRateLimitFuture {
                kind: Kind::Limited {
                    inner: inner.call(request),
                },
            },
            Admission::Open { inner } => ServerRateLimitFuture {
                kind: Kind::Open {
                    inner: inner.call(request),
                },
            },
        }
    }
}

pin_project! {
    /// The response future of [`ServerRateLimit`].
    pub struct ServerRateLimitFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Limited { #[pin] inner: rate_limit::ResponseFuture<F, RateLimitHeaders> },
        Open { #[pin] inner: F },
    }
}

impl<F, B, E> Future for ServerRateLimitFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Limited { inner } => inner.poll(cx),
            KindProj::Open { inner } => inner.poll(cx).map_err(Into::into),
        }
    }
}

impl<F> fmt::Debug for ServerRateLimitFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerRateLimitFuture")
    }
}

/// Builds a [`ServerLayer`]: holds a [`ServerConfig`], which the setters
/// fill and [`build`](Self::build) checks.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ServerBuilder {
    config: ServerConfig,
}

impl ServerBuilder {
    /// A builder holding `config`; [`build`](Self::build) checks it.
    pub fn from_config(config: ServerConfig) -> Self {
        ServerBuilder { config }
    }

    /// The settings so far, as [`build`](Self::build) will check them.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The name every layer gets, unless its own settings name it (default
    /// `"server"`).
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.config.name = Some(name.into().into_owned());
        self
    }

    /// The longest a request may run (default 30 s), or less: a caller's
    /// own deadline (`grpc-timeout`, capped at this) is honoured too.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// The most requests in flight at once (default 1 000); the rest are
    /// refused at once with a 503, before any work.
    pub fn max_concurrent(mut self, max_concurrent: usize) -> Self {
        self.config.bulkhead.max_concurrent = max_concurrent;
        self
    }

    /// A rate limit for the whole server (default none): requests past it
    /// are refused with a 429 and `Retry-After`, and every answer carries
    /// `RateLimit-*` headers.
    pub fn rate_limit(mut self, config: RateLimitConfig) -> Self {
        self.config.rate_limit = Some(config);
        self
    }

    /// Checks the settings and builds the stack.
    ///
    /// # Errors
    ///
    /// A layer's own [`ConfigError`] (naming that layer), or the preset's
    /// (layer `"server"`): `timeout` zero.
    pub fn build(self) -> Result<ServerLayer, ConfigError> {
        let config = self.config;
        if config.timeout.is_zero() {
            return Err(ConfigError::new(LAYER, "timeout", "must be more than zero"));
        }
        let name = config.name.unwrap_or_else(|| DEFAULT_NAME.to_owned());
        let rate_limit = match config.rate_limit {
            None => None,
            Some(mut limit) => {
                limit.name.get_or_insert_with(|| name.clone());
                let layer = RateLimitBuilder::from_config(limit).build()?;
                Some(layer.report_state(RateLimitHeaders))
            }
        };
        let mut bulkhead = config.bulkhead;
        bulkhead.name.get_or_insert_with(|| name.clone());
        let timeout = TimeoutLayer::builder()
            .name(name)
            .timeout(config.timeout)
            .build()?
            .deadline_slot(InExtensions);
        Ok(ServerLayer {
            deadline: ReadDeadlineLayer::new().max(config.timeout)?,
            rate_limit,
            bulkhead: BulkheadLayer::from_config(bulkhead)?,
            timeout,
        })
    }
}

/// A [`ServerLayer`]'s settings as plain data: what its builder fills, what
/// [`ServerBuilder::build`] checks, and, with the `serde` feature, what a
/// file holds (`Deserialize`; `rate_limit` and `bulkhead` are the layers'
/// own `*Config` tables). `Default` holds the preset's defaults; a file may
/// leave out any field for its default.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct ServerConfig {
    /// See [`ServerBuilder::name`]; `None`: `"server"`.
    pub name: Option<String>,
    /// See [`ServerBuilder::timeout`].
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_duration"))]
    pub timeout: Duration,
    /// See [`ServerBuilder::rate_limit`].
    pub rate_limit: Option<RateLimitConfig>,
    /// The load-shedding bulkhead: 1 000 requests in flight, failing fast.
    pub bulkhead: BulkheadConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            name: None,
            timeout: DEFAULT_TIMEOUT,
            rate_limit: None,
            bulkhead: BulkheadConfig::new(DEFAULT_MAX_CONCURRENT),
        }
    }
}
