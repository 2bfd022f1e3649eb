//! What every service shares: JSON errors, extractors that answer bad input
//! with them, request ids, the admin guard, fault injection and serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use palisade::chaos::{ChaosLayer, Handle as FaultHandle};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tracing::Instrument;

/// The largest request body a service reads: more is a 413.
pub const MAX_BODY: usize = 1024 * 1024;

/// The header that carries a request's id through every service.
pub const REQUEST_ID: &str = "x-request-id";
use subtle::ConstantTimeEq;

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

/// A JSON body, or a JSON error saying what is wrong with it: 400 for bad
/// syntax, 422 for a missing field or a wrong type, 415 without a JSON
/// content type, 413 over [`MAX_BODY`].
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let error = match rejection {
        JsonRejection::JsonDataError(_) => "invalid_body",
        JsonRejection::JsonSyntaxError(_) => "malformed_json",
        JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
        JsonRejection::BytesRejection(_) => "body_too_large",
        _ => "bad_request",
    };
    ApiError::new(rejection.status(), error, rejection.body_text())
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
        format!("the id must be a whole number: {}", rejection.body_text()),
    )
}

/// The 404 for a route no service has.
pub async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// A request's id, kept in its extensions.
#[derive(Clone, Debug)]
pub struct RequestId(pub HeaderValue);

/// Gives each request an id (keeping one the caller sent, when it is
/// sane), logs the request under it with the service's name, and returns
/// it on the response. The state is the service's name.
pub async fn request_id(
    State(service): State<&'static str>,
    mut request: Request,
    next: Next,
) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .cloned()
        .unwrap_or_else(new_request_id);
    request.headers_mut().insert(REQUEST_ID, id.clone());
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "request",
        service,
        id = %String::from_utf8_lossy(id.as_bytes()),
        method = %request.method(),
        path = %request.uri().path(),
    );
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| tracing::info!(status = response.status().as_u16(), "answered"));
    response.headers_mut().insert(REQUEST_ID, id);
    response
}

fn new_request_id() -> HeaderValue {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let prefix = *PREFIX.get_or_init(|| {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(std::process::id()) as u32
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    HeaderValue::from_str(&format!("{prefix:08x}-{n:08}"))
        .expect("hex and digits are a valid header")
}

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
/// `/health`, the admin fault routes, JSON 404s, the body limit, request
/// ids, and palisade errors as responses. The fault handle comes too.
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
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(name, request_id));
    (router, faults)
}

/// Serves `router` on `listener` until `shutdown` resolves; requests in
/// flight then finish before this returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
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
