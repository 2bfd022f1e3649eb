//! A call path to another service: hyper-util's client wrapped in the
//! palisade stack a real team would put there.

use std::time::Duration;

use axum::http::{HeaderValue, Method, Request, Response, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use palisade::bulkhead::{BulkheadLayer, Handle as BulkheadHandle};
use palisade::circuit_breaker::{CircuitBreakerLayer, Handle as BreakerHandle};
use palisade::http::{IdempotentReplay, StatusClassifier};
use palisade::retry::{Backoff, Handle as RetryHandle, RetryLayer};
use palisade::timeout::TimeoutLayer;
use palisade::{BoxError, ConfigError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

use crate::api::REQUEST_ID;

/// The HTTP client every upstream shares (one connection pool).
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A client with keep-alive and `TCP_NODELAY`.
pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// The resilience settings of one upstream.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    pub attempt_timeout: Duration,
    pub max_attempts: u32,
    pub breaker_window: usize,
    pub breaker_minimum_calls: u64,
    pub breaker_failure_rate: f64,
    pub breaker_open_for: Duration,
    pub breaker_probes: u32,
    pub bulkhead: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            attempt_timeout: Duration::from_secs(2),
            max_attempts: 3,
            breaker_window: 20,
            breaker_minimum_calls: 10,
            breaker_failure_rate: 0.5,
            breaker_open_for: Duration::from_secs(5),
            breaker_probes: 3,
            bulkhead: 64,
        }
    }
}

type Stack = BoxCloneSyncService<Request<Full<Bytes>>, Response<Incoming>, BoxError>;

/// One upstream service and the layers in front of it.
#[derive(Clone)]
pub struct Upstream {
    pub name: &'static str,
    pub base: String,
    stack: Stack,
    pub breaker: BreakerHandle,
    pub bulkhead: BulkheadHandle,
    pub retry: RetryHandle,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// `name` at `base` (`http://127.0.0.1:8003`), through `client`: with
    /// palisade's layers, or bare when `resilience` is off.
    pub fn new(
        name: &'static str,
        base: &str,
        client: HttpClient,
        settings: &UpstreamSettings,
        resilience: bool,
    ) -> Result<Self, ConfigError> {
        let retry = RetryLayer::builder()
            .name(name)
            .max_attempts(settings.max_attempts)
            .backoff(Backoff::exponential(Duration::from_millis(50)).max(Duration::from_secs(1)))
            .deadline(Duration::from_secs(10))
            .classifier(StatusClassifier::new())
            .replay(IdempotentReplay::new())
            .build()?;
        let breaker = CircuitBreakerLayer::builder()
            .name(name)
            .count_window(settings.breaker_window)
            .minimum_calls(settings.breaker_minimum_calls)
            .failure_rate(settings.breaker_failure_rate)
            .open_for(settings.breaker_open_for)
            .half_open_probes(settings.breaker_probes)
            .classifier(StatusClassifier::new())
            .build()?;
        let bulkhead = BulkheadLayer::builder()
            .name(name)
            .max_concurrent(settings.bulkhead)
            .build()?;
        let timeout = TimeoutLayer::builder()
            .name(name)
            .timeout(settings.attempt_timeout)
            .build()?;
        let (retry_handle, breaker_handle, bulkhead_handle) =
            (retry.handle(), breaker.handle(), bulkhead.handle());
        let stack = if resilience {
            BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .layer(retry)
                    .layer(breaker)
                    .layer(timeout)
                    .layer(bulkhead)
                    .service(client),
            )
        } else {
            BoxCloneSyncService::new(client.map_err(BoxError::from))
        };
        Ok(Upstream {
            name,
            base: base.trim_end_matches('/').to_owned(),
            stack,
            breaker: breaker_handle,
            bulkhead: bulkhead_handle,
            retry: retry_handle,
        })
    }

    /// Sends `request` (its URI a path, made absolute here).
    pub async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, BoxError> {
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        *request.uri_mut() = format!("{}{}", self.base, path).parse()?;
        self.stack.clone().oneshot(request).await
    }

    /// A JSON call: `method path` with `body`, passing `request_id` on, and
    /// an `Idempotency-Key` when given. Answers the status and the body.
    pub async fn call<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        request_id: Option<&HeaderValue>,
        idempotency_key: Option<&str>,
    ) -> Result<(StatusCode, Bytes), BoxError> {
        let body = match body {
            Some(body) => Bytes::from(serde_json::to_vec(body)?),
            None => Bytes::new(),
        };
        let mut request = Request::builder().method(method).uri(path);
        if !body.is_empty() {
            request = request.header("content-type", "application/json");
        }
        if let Some(id) = request_id {
            request = request.header(REQUEST_ID, id);
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let response = self.send(request.body(Full::new(body))?).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }

    /// `GET path` as JSON: `Ok(None)` on a 404.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        request_id: Option<&HeaderValue>,
    ) -> Result<Option<T>, BoxError> {
        let (status, body) = self
            .call::<()>(Method::GET, path, None, request_id, None)
            .await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(serde_json::from_slice(&body)?)),
            s => Err(format!("{} answered {s}", self.name).into()),
        }
    }
}
