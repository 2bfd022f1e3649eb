//! A call path to another service: hyper-util's client wrapped in the
//! palisade stack a real team would put there.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::http::{HeaderValue, Method, Request, Response, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use palisade::bulkhead::Handle as BulkheadHandle;
use palisade::circuit_breaker::{Event, Handle as BreakerHandle, State};
use palisade::deadline::Deadline;
use palisade::http::{
    BodyDeadlineLayer, DeadlineBody, IdempotentReplay, InExtensions, StatusClassifier,
    WriteDeadlineLayer,
};
use palisade::preset::ClientBuilder;
use palisade::retry::Handle as RetryHandle;
use palisade::{BoxError, ConfigError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceBuilder, ServiceExt};

use crate::api::REQUEST_ID;
use crate::config::UpstreamConfig;
use crate::replicas::Balanced;

/// The HTTP client every upstream shares (one connection pool).
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// How long the client keeps an idle connection for another request.
/// Shorter than the services' header read timeout (10 s by default), which
/// closes idle connections too: a connection the server is about to close
/// could otherwise be taken for a request that the close then cuts off.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// A client with keep-alive and `TCP_NODELAY`.
pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .build(connector)
}

/// The client as the innermost service of a stack: one `Arc` to clone.
///
/// Retry keeps a clone of the service below it for each call, and the
/// stack is cloned per call; hyper-util's `Client` holds several `Arc`s,
/// and under load on more than one core their reference counts bounce
/// between cores on every clone and drop. Behind one `Arc` there is one
/// count to move (the README's load section has the figures).
#[derive(Clone, Debug)]
pub struct SharedClient(Arc<HttpClient>);

impl SharedClient {
    pub fn new(client: HttpClient) -> Self {
        SharedClient(Arc::new(client))
    }
}

impl tower::Service<Request<Full<Bytes>>> for SharedClient {
    type Response = Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = hyper_util::client::legacy::ResponseFuture;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // The client is always ready: it queues for a connection itself.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        self.0.request(request)
    }
}

/// What a call to an upstream carries on from the call it serves.
#[derive(Clone, Debug, Default)]
pub struct Inbound {
    /// The request id, logged by every service.
    pub request_id: Option<HeaderValue>,
    /// When the caller stops waiting: calls made for it work to this, and
    /// no step starts after it.
    pub deadline: Option<Deadline>,
}

/// An upstream's answer: its body is held to the call's deadline too.
pub type Answer = Response<DeadlineBody<Incoming>>;

type Stack = BoxCloneSyncService<Request<Full<Bytes>>, Answer, BoxError>;

/// One upstream service and the layers in front of it.
#[derive(Clone)]
pub struct Upstream {
    pub name: &'static str,
    /// Its address; the first replica's when it has several.
    pub base: String,
    /// Its replicas behind a balancer, when it has several (or the
    /// configuration lists its `endpoints`); requests then leave `send`
    /// with a path only, made absolute by the replica that takes them.
    pub replicas: Option<Balanced>,
    stack: Stack,
    pub breaker: BreakerHandle,
    pub bulkhead: BulkheadHandle,
    pub retry: RetryHandle,
    /// The breaker's changes of state.
    pub transitions: Transitions,
}

/// A breaker's changes of state, the last [`Transitions::KEPT`] of them.
#[derive(Clone, Debug, Default)]
pub struct Transitions {
    inner: Arc<Mutex<TransitionLog>>,
}

#[derive(Debug, Default)]
struct TransitionLog {
    total: usize,
    recent: VecDeque<(State, State)>,
}

impl Transitions {
    /// How many are kept.
    pub const KEPT: usize = 64;

    fn lock(&self) -> MutexGuard<'_, TransitionLog> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, from: State, to: State) {
        let mut log = self.lock();
        log.total += 1;
        if log.recent.len() == Self::KEPT {
            log.recent.pop_front();
        }
        log.recent.push_back((from, to));
    }

    /// How many there have been.
    pub fn total(&self) -> usize {
        self.lock().total
    }

    /// Those after the first `seen` (as far as kept), as `closed→open`.
    pub fn since(&self, seen: usize) -> Vec<String> {
        self.changes_since(seen)
            .into_iter()
            .map(|(from, to)| format!("{from}→{to}"))
            .collect()
    }

    /// Those after the first `seen` (as far as kept), as (from, to).
    pub fn changes_since(&self, seen: usize) -> Vec<(State, State)> {
        let log = self.lock();
        let skip = seen.saturating_sub(log.total - log.recent.len());
        log.recent.iter().skip(skip).copied().collect()
    }
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
    /// `name` at `endpoints` (`http://127.0.0.1:8003`, one or more),
    /// through `client`: with palisade's layers, or bare when `resilience`
    /// is off (then at the first endpoint only). Balanced over its
    /// endpoints when `balanced` (see [`crate::replicas`]).
    pub fn new(
        name: &'static str,
        endpoints: &[String],
        balanced: bool,
        client: HttpClient,
        config: &UpstreamConfig,
        resilience: bool,
    ) -> Result<Self, ConfigError> {
        let base = endpoints.first().map_or("", String::as_str);
        // A name from the file wins; else the upstream's own.
        let mut preset = ClientBuilder::from_config(config.client.clone());
        if config.client.name.is_none() {
            preset = preset.name(name);
        }
        let transitions = Transitions::default();
        let log = transitions.clone();
        // Retry and both timeouts work to the deadline a call carries (the
        // caller's, passed on), and the next service is told the time left.
        let layer = preset
            .classifier(StatusClassifier::new())
            .replay(IdempotentReplay::new())
            .deadline_slot(InExtensions)
            .on_breaker_event(move |event| {
                if let Event::Transition(t) = event {
                    tracing::info!(upstream = name, from = %t.from, to = %t.to, reason = ?t.reason, "circuit breaker");
                    log.push(t.from, t.to);
                }
            })
            .build()?;
        let handles = layer.handles();
        let client = SharedClient::new(client);
        let replicas = match (resilience, balanced) {
            (true, true) => {
                let open_for = config.client.circuit_breaker.open_for;
                Some(Balanced::new(name, endpoints, client.clone(), open_for)?)
            }
            _ => None,
        };
        let stack = match &replicas {
            Some(replicas) => BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .layer(layer)
                    .layer(BodyDeadlineLayer::new())
                    .layer(WriteDeadlineLayer::new())
                    .service(replicas.clone()),
            ),
            None if resilience => BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .layer(layer)
                    .layer(BodyDeadlineLayer::new())
                    .layer(WriteDeadlineLayer::new())
                    .service(client),
            ),
            None => BoxCloneSyncService::new(
                BodyDeadlineLayer::new()
                    .layer(client)
                    .map_err(BoxError::from),
            ),
        };
        Ok(Upstream {
            name,
            base: base.trim_end_matches('/').to_owned(),
            replicas,
            stack,
            breaker: handles.circuit_breaker,
            bulkhead: handles.bulkhead,
            retry: handles.retry,
            transitions,
        })
    }

    /// Sends `request` (its URI a path, made absolute here).
    pub async fn send(&self, mut request: Request<Full<Bytes>>) -> Result<Answer, BoxError> {
        if self.replicas.is_none() {
            let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
            *request.uri_mut() = format!("{}{}", self.base, path).parse()?;
        }
        self.stack.clone().oneshot(request).await
    }

    /// A JSON call: `method path` with `body`, passing on the request id
    /// and the deadline of `inbound` (the call this one serves), with an
    /// `Idempotency-Key` and a bearer token when given. Answers the status
    /// and the body.
    pub async fn call<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        inbound: &Inbound,
        idempotency_key: Option<&str>,
        bearer: Option<&str>,
    ) -> Result<(StatusCode, Bytes), BoxError> {
        let body = match body {
            Some(body) => Bytes::from(serde_json::to_vec(body)?),
            None => Bytes::new(),
        };
        let mut request = Request::builder().method(method).uri(path);
        if !body.is_empty() {
            request = request.header("content-type", "application/json");
        }
        if let Some(id) = &inbound.request_id {
            request = request.header(REQUEST_ID, id);
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        if let Some(token) = bearer {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(deadline) = inbound.deadline {
            request = request.extension(deadline);
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
        inbound: &Inbound,
    ) -> Result<Option<T>, BoxError> {
        let (status, body) = self
            .call::<()>(Method::GET, path, None, inbound, None, None)
            .await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(serde_json::from_slice(&body)?)),
            s => Err(format!("{} answered {s}", self.name).into()),
        }
    }
}
