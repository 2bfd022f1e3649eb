//! The gateway: `/api/{users,products,orders,payments}/...` proxied to each
//! service's own path, behind a per-client rate limit, with palisade's
//! layers in front of every upstream.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use palisade::circuit_breaker::State as CircuitState;
use palisade::http::{ErrorResponseLayer, RateLimitHeaders, bad_gateway_response};
use palisade::rate_limit::{KeyedHandle, RateLimitLayer};
use palisade::{BoxError, ConfigError};
use serde_json::{Value, json};
use tower::ServiceBuilder;

use crate::api::{AdminAuth, ApiError, MAX_BODY, no_route, request_id};
use crate::upstream::{HttpClient, Upstream, UpstreamSettings};

/// Where the services are.
#[derive(Clone, Debug)]
pub struct UpstreamUrls {
    pub user: String,
    pub product: String,
    pub order: String,
    pub payment: String,
}

/// The gateway's settings.
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    pub urls: UpstreamUrls,
    /// Requests per client per window.
    pub rate_limit: (u64, Duration),
    pub upstream: UpstreamSettings,
    /// palisade's layers on (`false`: `--no-resilience`, for comparison).
    pub resilience: bool,
}

/// A client as the ingress limit counts it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// From `X-Client-ID`.
    Id(String),
    /// The peer's address.
    Addr(std::net::IpAddr),
    /// Neither known.
    Unknown,
}

fn client_key(request: &Request) -> ClientKey {
    if let Some(id) = request.headers().get("x-client-id")
        && let Ok(id) = id.to_str()
        && !id.is_empty()
        && id.len() <= 64
    {
        return ClientKey::Id(id.to_owned());
    }
    match request.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(peer)) => ClientKey::Addr(peer.ip()),
        None => ClientKey::Unknown,
    }
}

/// The gateway's state.
#[derive(Clone, Debug)]
pub struct Gateway {
    upstreams: Arc<BTreeMap<&'static str, Upstream>>,
    client: HttpClient,
    ingress: KeyedHandle<ClientKey>,
    settings: Arc<GatewaySettings>,
    auth: AdminAuth,
}

/// Builds the gateway's router; its ingress limiter's handle comes too.
pub fn router(
    settings: GatewaySettings,
    client: HttpClient,
    auth: AdminAuth,
) -> Result<(Router, KeyedHandle<ClientKey>), ConfigError> {
    let urls = &settings.urls;
    let mut upstreams = BTreeMap::new();
    for (name, url) in [
        ("user", &urls.user),
        ("product", &urls.product),
        ("order", &urls.order),
        ("payment", &urls.payment),
    ] {
        let upstream = Upstream::new(
            name,
            url,
            client.clone(),
            &settings.upstream,
            settings.resilience,
        )?;
        upstreams.insert(name, upstream);
    }
    let (limit, window) = settings.rate_limit;
    let ingress = RateLimitLayer::sliding_window(limit, window)
        .name("ingress")
        .keyed(client_key)
        .build()?
        .report_state(RateLimitHeaders);
    let ingress_handle = ingress.handle();
    let gateway = Gateway {
        upstreams: Arc::new(upstreams),
        client,
        ingress: ingress_handle.clone(),
        settings: Arc::new(settings),
        auth,
    };
    let proxy_state = gateway.clone();
    let proxy = ServiceBuilder::new()
        .layer(ErrorResponseLayer::new().other_errors(bad_gateway_response))
        .layer(ingress)
        .service(tower::service_fn(move |request: Request| {
            let gateway = proxy_state.clone();
            async move { proxy(&gateway, request).await }
        }));
    let router = Router::new()
        .route("/health", get(health))
        .route("/admin/resilience", get(resilience))
        .with_state(gateway)
        .route_service("/api/{*path}", proxy)
        .fallback(no_route)
        .layer(axum::middleware::from_fn(request_id));
    Ok((router, ingress_handle))
}

/// Headers that belong to one connection, not to the message.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Which upstream a gateway path goes to, and the path there: `/api/users/1`
/// is the user service's `/users/1`. `None` for a path with dot segments
/// (they could climb to a service's `/admin`).
fn route<'a>(
    upstreams: &'a BTreeMap<&'static str, Upstream>,
    path: &str,
) -> Option<(&'a Upstream, String)> {
    let rest = path.strip_prefix("/api")?;
    let lowered = rest.to_ascii_lowercase();
    if rest.split('/').any(|s| s == "." || s == "..")
        || lowered.contains("%2e")
        || lowered.contains("%2f")
    {
        return None;
    }
    let collection = rest.trim_start_matches('/').split('/').next()?;
    let name = match collection {
        "users" => "user",
        "products" => "product",
        "orders" => "order",
        "payments" => "payment",
        _ => return None,
    };
    Some((upstreams.get(name)?, rest.to_owned()))
}

async fn proxy(gateway: &Gateway, request: Request) -> Result<Response, BoxError> {
    let (mut parts, body) = request.into_parts();
    let Some((upstream, path)) = route(&gateway.upstreams, parts.uri.path()) else {
        return Ok(no_route().await.into_response());
    };
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    // Buffered, so that a retry can send it again; bounded.
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => {
            return Ok(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is over {MAX_BODY} bytes"),
            )
            .into_response());
        }
    };
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    parts.uri = path_and_query.parse()?;
    let forwarded = http::Request::from_parts(parts, Full::<Bytes>::new(body));
    let response = upstream.send(forwarded).await?;
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(
        parts,
        Body::new(body.map_err(BoxError::from)),
    ))
}

fn circuit(state: CircuitState) -> &'static str {
    match state {
        CircuitState::Closed => "closed",
        CircuitState::Open => "open",
        CircuitState::HalfOpen => "half_open",
        CircuitState::ForcedOpen => "forced_open",
        CircuitState::Disabled => "disabled",
        CircuitState::MetricsOnly => "metrics_only",
        _ => "unknown",
    }
}

/// Each upstream's `/health`, asked directly (not through its breaker),
/// with its circuit state.
async fn health(State(gateway): State<Gateway>) -> Response {
    let mut all_healthy = true;
    let mut upstreams = serde_json::Map::new();
    for (name, upstream) in gateway.upstreams.iter() {
        let uri = format!("{}/health", upstream.base);
        let request = http::Request::get(uri).body(Full::<Bytes>::default());
        let healthy = match request {
            Ok(request) => matches!(
                tokio::time::timeout(Duration::from_secs(1), gateway.client.request(request)).await,
                Ok(Ok(response)) if response.status().is_success()
            ),
            Err(_) => false,
        };
        all_healthy &= healthy;
        upstreams.insert(
            (*name).to_owned(),
            json!({"healthy": healthy, "circuit": circuit(upstream.breaker.state())}),
        );
    }
    let status = if all_healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body =
        json!({"status": if all_healthy { "ok" } else { "degraded" }, "upstreams": upstreams});
    (status, Json(body)).into_response()
}

/// Every upstream's breaker, bulkhead and retry figures, and the ingress
/// limiter's.
async fn resilience(
    State(gateway): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    gateway.auth.check(peer, &headers)?;
    let mut upstreams = serde_json::Map::new();
    for (name, upstream) in gateway.upstreams.iter() {
        let b = upstream.breaker.snapshot();
        let r = upstream.retry.counts();
        upstreams.insert(
            (*name).to_owned(),
            json!({
                "breaker": {
                    "state": circuit(b.state),
                    "calls": b.calls,
                    "failures": b.failures,
                    "failure_rate": b.failure_rate,
                    "slow_calls": b.slow_calls,
                    "consecutive_failures": b.consecutive_failures,
                    "not_permitted": b.not_permitted,
                    "retry_after_ms": b.retry_after.map(|d| d.as_millis() as u64),
                },
                "bulkhead": {
                    "max_concurrent": upstream.bulkhead.max_concurrent(),
                    "in_flight": upstream.bulkhead.in_flight(),
                    "rejected": upstream.bulkhead.rejected(),
                },
                "retry": {
                    "retries": r.retries,
                    "succeeded_without_retry": r.succeeded_without_retry,
                    "succeeded_after_retry": r.succeeded_after_retry,
                    "failed_without_retry": r.failed_without_retry,
                    "failed_after_retry": r.failed_after_retry,
                    "budget_refusals": r.budget_refusals,
                },
            }),
        );
    }
    let (limit, window) = gateway.settings.rate_limit;
    Ok(Json(json!({
        "resilience": gateway.settings.resilience,
        "upstreams": upstreams,
        "ingress": {
            "limit": limit,
            "window_secs": window.as_secs_f64(),
            "clients": gateway.ingress.len(),
            "refused": gateway.ingress.refused(),
        },
    })))
}
