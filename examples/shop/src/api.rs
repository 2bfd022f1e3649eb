//! What every service shares: JSON errors, extractors that answer bad input
//! with them, request ids, the admin guard, fault injection and serving.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use palisade::chaos::{ChaosLayer, Handle as FaultHandle};
use palisade::http::ReadDeadlineLayer;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower::ServiceExt;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::{TimeoutBody, TimeoutError};
use tower_http::trace::TraceLayer;
use tracing::Span;

/// The largest request body a service reads: more is a 413.
pub const MAX_BODY: usize = 1024 * 1024;

/// The header that carries a request's id through every service.
pub const REQUEST_ID: &str = "x-request-id";

/// The longest deadline a caller may ask for (in `grpc-timeout`); a longer
/// one is cut to this.
pub const MAX_DEADLINE: Duration = Duration::from_secs(30);

/// Reads the caller's deadline from `grpc-timeout` (at most
/// [`MAX_DEADLINE`]) for the layers and calls below, and refuses a request
/// that arrives with no time left (a 504, from the error layer above it)
/// without doing any of its work.
pub fn read_deadline() -> ReadDeadlineLayer {
    ReadDeadlineLayer::new()
        .max(MAX_DEADLINE)
        .expect("a cap above zero")
}

/// An error answer: a status and `{"error": kind, "message": ...}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            message: message.into(),
        }
    }

    pub fn not_found(what: &str, id: u64) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {what} with id {id}"),
        )
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "message": self.message});
        (self.status, Json(body)).into_response()
    }
}

/// A JSON body, or a JSON error saying what is wrong with it in the API's
/// terms (the field, and what it should be): 400 for bad syntax, 422 for a
/// missing field or a wrong type, 415 without a JSON content type, 413
/// over [`MAX_BODY`].
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON, sent with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                let error = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    "body_too_large"
                } else {
                    "body_unreadable"
                };
                ApiError::new(rejection.status(), error, rejection.body_text())
            })?;
        // Read here rather than by axum's `Json`, whose messages name our
        // Rust types ("expected struct UserFields").
        let mut json = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut json)
            .map_err(|e| body_error(e.path().to_string(), e.into_inner()))?;
        json.end().map_err(|e| body_error(".".to_owned(), e))?;
        Ok(JsonBody(value))
    }
}

/// `application/json`, or another JSON type (`application/problem+json`).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(axum::http::header::CONTENT_TYPE) else {
        return false;
    };
    let mime = String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase();
    let mime = mime.split(';').next().unwrap_or_default().trim();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// 400 for JSON that does not parse, 422 for JSON of the wrong shape,
/// naming the field.
fn body_error(field: String, inner: serde_json::Error) -> ApiError {
    let message = in_api_terms(&inner.to_string());
    if inner.classify() != serde_json::error::Category::Data {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {message}"),
        );
    }
    let message = if field == "." {
        message
    } else {
        format!("{field}: {message}")
    };
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", message)
}

/// serde's message in JSON's words: "expected struct NewOrder" or
/// "expected u64" names a Rust type, which means nothing to a client.
fn in_api_terms(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    let message = message
        .replace("invalid type: sequence", "invalid type: array")
        .replace("invalid type: map", "invalid type: object")
        .replace("invalid type: unit value", "invalid type: null");
    let Some((head, expected)) = message.rsplit_once("expected ") else {
        return message;
    };
    let expected = match expected {
        e if e.starts_with("struct ") || e == "a map" => "an object",
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a sequence" => "an array",
        "option" => "a value or null",
        other => other,
    };
    format!("{head}expected {expected}")
}

/// A numeric id from the path, or a 400 saying it is not one.
#[derive(Debug, Clone, Copy)]
pub struct Id(pub u64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<u64>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(id)) => Ok(Id(id)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(rejection: PathRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_id",
        format!(
            "the id in the path must be a whole number: {}",
            id_problem(&rejection)
        ),
    )
}

/// What is wrong with the id, without axum's words for it ("Cannot parse
/// `abc` to a `u64`").
fn id_problem(rejection: &PathRejection) -> String {
    match rejection {
        PathRejection::FailedToDeserializePathParams(e) => match e.kind() {
            ErrorKind::ParseError { value, .. }
            | ErrorKind::ParseErrorAtKey { value, .. }
            | ErrorKind::ParseErrorAtIndex { value, .. } => format!("got `{value}`"),
            _ => "it is missing or malformed".to_owned(),
        },
        _ => "it is missing".to_owned(),
    }
}

/// The 404 for a route no service has.
pub async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// axum answers a method a route lacks with an empty 405; this gives it
/// the JSON error every other refusal has. (axum adds `Allow` to it after
/// this layer, as it would to its own.)
pub async fn json_405(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED
        || response
            .headers()
            .contains_key(axum::http::header::CONTENT_TYPE)
    {
        return response;
    }
    let (parts, _) = response.into_parts();
    let message = format!("this route does not take {method}; `Allow` lists those it does");
    let answer = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        message,
    );
    let mut answer = answer.into_response();
    for (name, value) in &parts.headers {
        answer.headers_mut().entry(name).or_insert(value.clone());
    }
    answer
}

/// A request's id, kept in its extensions for the handlers that pass it
/// on to other services.
#[derive(Clone, Debug)]
pub struct RequestId(pub HeaderValue);

/// Who may use the admin endpoints: loopback peers, or with a token only
/// callers that present it.
#[derive(Clone, Debug, Default)]
pub struct AdminAuth {
    pub token: Option<Arc<str>>,
}

impl AdminAuth {
    /// `Ok` when the caller at `peer` with `headers` may change this service.
    pub fn check(&self, peer: SocketAddr, headers: &HeaderMap) -> Result<(), ApiError> {
        match &self.token {
            None if peer.ip().is_loopback() => Ok(()),
            None => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "admin endpoints answer only to loopback callers",
            )),
            Some(token) => {
                let presented = headers
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| bearer(v.as_bytes()));
                // An empty token is refused when the shop starts; checked
                // here too, so that no header can ever match one. Compared
                // in constant time: how long it takes says nothing about
                // how much of a guess was right (the length is not hidden).
                if !token.is_empty()
                    && presented.is_some_and(|p| bool::from(p.ct_eq(token.as_bytes())))
                {
                    Ok(())
                } else {
                    Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "admin endpoints need `Authorization: Bearer <token>`",
                    ))
                }
            }
        }
    }
}

/// The credentials of an `Authorization: Bearer ...` value (the scheme is
/// case-insensitive, RFC 9110 section 11.1).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, credentials) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then_some(credentials)
}

/// Admin state: who may use it, and the service's faults.
#[derive(Clone, Debug)]
pub struct Admin {
    pub auth: AdminAuth,
    pub faults: FaultHandle,
}

/// The faults as `GET /admin/faults` shows them and `PUT` sets them.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSettings {
    #[serde(default)]
    pub error_rate: f64,
    #[serde(default)]
    pub latency_ms: u64,
}

async fn get_faults(
    State(admin): State<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<FaultSettings>, ApiError> {
    admin.auth.check(peer, &headers)?;
    let faults = admin.faults.faults();
    Ok(Json(FaultSettings {
        error_rate: faults.error_rate,
        latency_ms: u64::try_from(faults.latency.as_millis()).unwrap_or(u64::MAX),
    }))
}

async fn put_faults(
    State(admin): State<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(settings): JsonBody<FaultSettings>,
) -> Result<Json<FaultSettings>, ApiError> {
    admin.auth.check(peer, &headers)?;
    if !(0.0..=1.0).contains(&settings.error_rate) {
        return Err(ApiError::invalid("error_rate must be between 0.0 and 1.0"));
    }
    if settings.latency_ms > 60_000 {
        return Err(ApiError::invalid("latency_ms must be at most 60000"));
    }
    let latency = Duration::from_millis(settings.latency_ms);
    let rate = if settings.latency_ms == 0 { 0.0 } else { 1.0 };
    admin
        .faults
        .set_error_rate(settings.error_rate)
        .and_then(|()| admin.faults.set_latency(rate, latency))
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    tracing::warn!(
        error_rate = settings.error_rate,
        latency_ms = settings.latency_ms,
        "faults set"
    );
    Ok(Json(settings))
}

/// The fault routes, for a service's router.
pub fn fault_routes(admin: Admin) -> Router {
    Router::new()
        .route("/admin/faults", get(get_faults).put(put_faults))
        .with_state(admin)
}

/// A chaos layer whose injected failures are 500 responses.
pub fn chaos(
    name: &'static str,
) -> ChaosLayer<impl Fn() -> Result<Response, palisade::BoxError> + Clone> {
    ChaosLayer::builder()
        .name(name)
        .inject(|| {
            Ok(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "injected_fault",
                "a fault injected for testing",
            )
            .into_response())
        })
        .build()
}

/// The parts every service's router gets: `api` (faulted by `chaos`) and
/// `/health`, the admin fault routes, JSON 404s, the body limit and
/// palisade errors as responses. The fault handle comes too.
pub fn service_router(name: &'static str, api: Router, auth: AdminAuth) -> (Router, FaultHandle) {
    let chaos = chaos(name);
    let faults = chaos.handle();
    let admin = Admin {
        auth,
        faults: faults.clone(),
    };
    let api = api.layer(
        tower::ServiceBuilder::new()
            .layer(palisade::http::ErrorResponseLayer::new())
            .layer(read_deadline())
            .layer(chaos),
    );
    let router = Router::new()
        .route(
            "/health",
            get(move || async move { Json(json!({"status": "ok", "service": name})) }),
        )
        .merge(fault_routes(admin))
        .merge(api)
        .fallback(no_route)
        .layer(axum::middleware::from_fn(json_405))
        .layer(DefaultBodyLimit::max(MAX_BODY));
    (router, faults)
}

/// How long a client may take over a request, and how long shutdown waits
/// for the requests in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    /// The most a client may take to send a request's headers; also how
    /// long a keep-alive connection may stay idle. Then the connection is
    /// closed.
    pub header_read_timeout: Duration,
    /// The most a client may pause while sending a body. Then the answer
    /// is a 408 and the connection is closed.
    pub body_read_timeout: Duration,
    /// How long shutdown lets requests in flight finish before it closes
    /// their connections. Idle connections are closed at once.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Serves `router` as the service called `name` on `listener` until
/// `shutdown` resolves. Then it stops accepting, closes idle connections at
/// once, lets the requests in flight finish for up to
/// `options.shutdown_grace`, and closes whatever is still open.
pub async fn serve(
    listener: TcpListener,
    name: &'static str,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let app = with_request_layers(name, router, options.body_read_timeout);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    let graceful = GracefulShutdown::new();
    // Owns every connection's task, so that the ones still open after the
    // grace period can be ended.
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    wait_after_accept_error(name, &error).await;
                    continue;
                }
            },
        };
        // Handlers see the peer as axum's `ConnectInfo`.
        let app = app
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(service = name, %peer, %error, "connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(options.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            service = name,
            open = connections.len(),
            "shutdown grace period over; closing the connections still open"
        );
    }
    connections.shutdown().await;
    Ok(())
}

/// After a failed accept: a connection that went away before it was taken
/// is nothing, while anything else (most likely out of file descriptors)
/// would fail again at once, so it waits a moment rather than spin.
async fn wait_after_accept_error(name: &'static str, error: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        tracing::error!(service = name, %error, "cannot accept a connection");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What every service does around its routes: gives each request an id (a
/// caller's own when it is sane, else a new one) and returns it on the
/// response, logs the request in a `request{service, id, method, path}`
/// span, and answers a body that stalls with a 408.
fn with_request_layers(
    service: &'static str,
    router: Router,
    body_read_timeout: Duration,
) -> Router {
    router
        .layer(axum::middleware::from_fn_with_state(
            body_read_timeout,
            time_out_stalled_body,
        ))
        .layer(
            tower::ServiceBuilder::new()
                .map_request(drop_unusable_request_id)
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(move |request: &Request| request_span(service, request))
                        .on_response(move |response: &Response, latency: Duration, _: &Span| {
                            crate::metrics::record_request(
                                service,
                                response.status().as_u16(),
                                latency,
                            );
                            let latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
                            tracing::info!(
                                status = response.status().as_u16(),
                                latency_ms,
                                "answered"
                            );
                        })
                        // The answer above says it already, status and all.
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::x_request_id())
                .map_request(request_id_for_handlers),
        )
}

/// A caller's request id is kept only when it is sane: it is logged and
/// passed on to every service the request reaches.
fn drop_unusable_request_id(mut request: Request) -> Request {
    if request
        .headers()
        .get(REQUEST_ID)
        .is_some_and(|id| id.is_empty() || id.len() > 128)
    {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

fn request_span(service: &'static str, request: &Request) -> Span {
    let id = request.headers().get(REQUEST_ID).map(HeaderValue::as_bytes);
    tracing::info_span!(
        "request",
        service,
        id = %String::from_utf8_lossy(id.unwrap_or_default()),
        method = %request.method(),
        path = %request.uri().path(),
    )
}

/// tower-http's id as the shop's own [`RequestId`], which the handlers
/// that call other services read.
fn request_id_for_handlers(mut request: Request) -> Request {
    if let Some(id) = request
        .extensions()
        .get::<tower_http::request_id::RequestId>()
    {
        let id = RequestId(id.header_value().clone());
        request.extensions_mut().insert(id);
    }
    request
}

/// Answers 408, and closes the connection, when the client pauses longer
/// than the timeout (the state) while sending the body: whatever the
/// handler made of a body cut short, the client is what went wrong.
async fn time_out_stalled_body(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let stalled = Arc::new(AtomicBool::new(false));
    let seen = stalled.clone();
    let request = request.map(|body| {
        Body::new(TimeoutBody::new(timeout, body).map_err(move |error| {
            if error.is::<TimeoutError>() {
                seen.store(true, Ordering::Relaxed);
            }
            error
        }))
    });
    let response = next.run(request).await;
    if !stalled.load(Ordering::Relaxed) {
        return response;
    }
    let mut response = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        format!("no part of the body came for {} s", timeout.as_secs_f64()),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(token: Option<&str>, peer: &str, authorization: Option<&str>) -> Option<StatusCode> {
        let auth = AdminAuth {
            token: token.map(Arc::from),
        };
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(
                axum::http::header::AUTHORIZATION,
                HeaderValue::from_str(value).unwrap(),
            );
        }
        auth.check(peer.parse().unwrap(), &headers)
            .err()
            .map(|e| e.status)
    }

    #[test]
    fn without_a_token_only_loopback_callers_are_admins() {
        assert_eq!(check(None, "127.0.0.1:5000", None), None);
        assert_eq!(check(None, "[::1]:5000", None), None);
        assert_eq!(
            check(None, "10.0.0.8:5000", None),
            Some(StatusCode::FORBIDDEN)
        );
        // A header does not help a remote caller when no token is set.
        assert_eq!(
            check(None, "10.0.0.8:5000", Some("Bearer x")),
            Some(StatusCode::FORBIDDEN)
        );
    }

    #[test]
    fn with_a_token_only_its_bearer_is_an_admin_wherever_it_calls_from() {
        let token = Some("s3cret");
        assert_eq!(check(token, "10.0.0.8:5000", Some("Bearer s3cret")), None);
        assert_eq!(check(token, "10.0.0.8:5000", Some("bearer s3cret")), None);
        for refused in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer s3cretx"),
            Some("s3cret"),
            Some("Basic s3cret"),
            Some("Bearer "),
        ] {
            assert_eq!(
                check(token, "127.0.0.1:5000", refused),
                Some(StatusCode::UNAUTHORIZED),
                "{refused:?}"
            );
        }
        // An empty token matches nothing, not even an empty bearer.
        assert_eq!(
            check(Some(""), "127.0.0.1:5000", Some("Bearer ")),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            check(Some(""), "127.0.0.1:5000", None),
            Some(StatusCode::UNAUTHORIZED)
        );
    }
}
