//! The gateway: the routes a customer may call ([`ROUTES`]), each proxied
//! to its service's own path once the caller's token is checked, behind a
//! per-client rate limit (in this process, or in Redis when several
//! gateways share it), with palisade's layers in front of every upstream.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use palisade::deadline::Deadline;
use palisade::http::{ErrorResponseLayer, RateLimitHeaders, bad_gateway_response};
use palisade::rate_limit::redis::StoreMode;
use palisade::rate_limit::{
    KeyedHandle, KeyedRateLimitLayer, Kind, OnStoreFailure, RateLimitBuilder, RateLimitConfig,
    RedisHandle, RedisRateLimitLayer,
};
use palisade::{BoxError, ConfigError};
use serde_json::{Value, json};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

use crate::api::{AdminAuth, ApiError, MAX_BODY, json_405, no_route, read_deadline};
use crate::auth::{AuthError, CUSTOMER, Verifier};
use crate::catalogue::{CATALOGUE, CatalogueFallback};
use crate::config::{ShopConfig, UPSTREAMS};
use crate::upstream::{HttpClient, Upstream};

/// Where the services are, unless the configuration says otherwise.
#[derive(Clone, Debug)]
pub struct UpstreamUrls {
    pub user: String,
    pub product: String,
    pub order: String,
    pub payment: String,
    /// Every replica of the services started with several (`--replicas`),
    /// by name, the one at its url first.
    pub replicas: BTreeMap<&'static str, Vec<String>>,
}

impl UpstreamUrls {
    /// Where `name` is: its replicas, or the one at its url.
    pub fn endpoints(&self, name: &str) -> Vec<String> {
        if let Some(replicas) = self.replicas.get(name) {
            return replicas.clone();
        }
        let url = match name {
            "user" => &self.user,
            "product" => &self.product,
            "order" => &self.order,
            _ => &self.payment,
        };
        vec![url.clone()]
    }
}

/// A client as the ingress limit counts it: only what the gateway can
/// trust, never a header the client picks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// A customer, by their verified token's `sub`.
    Customer(String),
    /// A caller without a token, by the peer's address.
    Addr(std::net::IpAddr),
    /// Neither known.
    Unknown,
}

/// The client's key as bytes, for a limit kept in Redis: the kind of key
/// first, so that a customer called `1.2.3.4` and that address stay apart.
fn client_key_bytes(request: &Request) -> Vec<u8> {
    match client_key(request) {
        ClientKey::Customer(sub) => [b"customer:", sub.as_bytes()].concat(),
        ClientKey::Addr(ip) => format!("addr:{ip}").into_bytes(),
        ClientKey::Unknown => b"unknown".to_vec(),
    }
}

fn client_key(request: &Request) -> ClientKey {
    if let Some(Admission::Admitted {
        caller: Some(sub), ..
    }) = request.extensions().get::<Admission>()
    {
        return ClientKey::Customer(sub.clone());
    }
    match request.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(peer)) => ClientKey::Addr(peer.ip()),
        None => ClientKey::Unknown,
    }
}

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone. A token, when sent, must be good; it then keys the limit.
    Anyone,
    /// A customer with a token. The service answers with their own data
    /// only (their orders), told who they are by the gateway.
    Customer,
    /// A customer, on their own user: `{id}` must be their token's `sub`.
    OwnUser,
}

/// A route a client may call through the gateway.
#[derive(Debug)]
pub struct Route {
    /// The path under `/api`, also the service's own; `{id}` is a whole
    /// number.
    pub path: &'static str,
    pub methods: &'static [&'static str],
    pub upstream: &'static str,
    pub access: Access,
}

/// Everything a client may call; the rest is 404 (405, with `Allow`,
/// where only the method differs). Not here, being the services' business
/// and not a customer's: the saga's steps (reserving and releasing stock,
/// charging and voiding a payment), the list of every user, and payments.
pub const ROUTES: [Route; 6] = [
    Route {
        path: "/products",
        methods: &["GET"],
        upstream: "product",
        access: Access::Anyone,
    },
    Route {
        path: "/products/{id}",
        methods: &["GET"],
        upstream: "product",
        access: Access::Anyone,
    },
    // Signing up needs no token: the identity provider issues it after.
    Route {
        path: "/users",
        methods: &["POST"],
        upstream: "user",
        access: Access::Anyone,
    },
    Route {
        path: "/users/{id}",
        methods: &["GET", "PUT"],
        upstream: "user",
        access: Access::OwnUser,
    },
    Route {
        path: "/orders",
        methods: &["GET", "POST"],
        upstream: "order",
        access: Access::Customer,
    },
    Route {
        path: "/orders/{id}",
        methods: &["GET"],
        upstream: "order",
        access: Access::Customer,
    },
];

/// The route `path` is, with the `{id}` in it: the path must be the
/// route's exactly, so nothing else (dot segments, `/admin`, another
/// service's path) can be reached.
fn find_route(path: &str) -> Option<(&'static Route, Option<&str>)> {
    let rest = path.strip_prefix("/api")?;
    ROUTES.iter().find_map(|route| {
        let mut id = None;
        let (mut want, mut have) = (route.path.split('/'), rest.split('/'));
        loop {
            match (want.next(), have.next()) {
                (None, None) => return Some((route, id)),
                (Some("{id}"), Some(segment)) if !segment.is_empty() => id = Some(segment),
                (Some(a), Some(b)) if a == b => {}
                _ => return None,
            }
        }
    })
}

/// What the gateway decided about a request from its head alone, before
/// the limiter and before reading the body.
#[derive(Clone, Debug)]
enum Admission {
    /// On `route`, as the customer `caller` (`None`: no token).
    Admitted {
        route: &'static Route,
        caller: Option<String>,
    },
    Refused(Refusal),
}

#[derive(Clone, Debug)]
enum Refusal {
    NoRoute,
    /// The method the route does not take, and those it does.
    Method(axum::http::Method, &'static [&'static str]),
    BadId,
    Auth(AuthError),
    /// Another customer's user: answered as if there were none.
    NotYours(u64),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::NoRoute => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route").into_response()
            }
            Refusal::Method(method, methods) => {
                let allow = methods.join(", ");
                let message = format!("this route does not take {method}; it takes {allow}");
                let mut response = ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    message,
                )
                .into_response();
                if let Ok(allow) = HeaderValue::from_str(&allow) {
                    response.headers_mut().insert(header::ALLOW, allow);
                }
                response
            }
            Refusal::BadId => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_id",
                "the id in the path must be a whole number",
            )
            .into_response(),
            Refusal::Auth(error) => error.into_response(),
            Refusal::NotYours(id) => ApiError::not_found("user", id).into_response(),
        }
    }
}

/// Finds the request's route and checks its caller: from the head alone,
/// so that a refused request reaches no upstream and is not read.
fn admit(verifier: &Verifier, request: &Request) -> Admission {
    let refused = Admission::Refused;
    let Some((route, id)) = find_route(request.uri().path()) else {
        return refused(Refusal::NoRoute);
    };
    if !route.methods.contains(&request.method().as_str()) {
        return refused(Refusal::Method(request.method().clone(), route.methods));
    }
    let id = match id.map(str::parse::<u64>) {
        Some(Err(_)) => return refused(Refusal::BadId),
        Some(Ok(id)) => Some(id),
        None => None,
    };
    let caller = match verifier.caller(request.headers()) {
        Ok(caller) => caller,
        Err(error) => return refused(Refusal::Auth(error)),
    };
    match (route.access, &caller, id) {
        (Access::Anyone, _, _) => {}
        (_, None, _) => return refused(Refusal::Auth(AuthError::Missing)),
        (Access::OwnUser, Some(sub), Some(id)) if *sub != id.to_string() => {
            return refused(Refusal::NotYours(id));
        }
        _ => {}
    }
    Admission::Admitted { route, caller }
}

type Upstreams = BTreeMap<&'static str, Upstream>;

/// The ingress limiter: one sliding window per client, reporting its state
/// as `RateLimit-*` headers.
type LocalIngress = KeyedRateLimitLayer<ClientKey, fn(&Request) -> ClientKey, RateLimitHeaders>;

/// The same limit kept in Redis, shared by every gateway that uses it.
type SharedIngress = RedisRateLimitLayer<fn(&Request) -> Vec<u8>, RateLimitHeaders>;

/// The per-client limiter in force: the same limit, keys and answers
/// either way; only where the counts live differs.
#[derive(Clone, Debug)]
enum IngressLayer {
    Local(LocalIngress),
    Shared(SharedIngress),
}

/// A handle on the per-client limiter in force.
#[derive(Clone, Debug)]
pub enum IngressHandle {
    /// Counted in this process.
    Local(KeyedHandle<ClientKey>),
    /// Counted in Redis: its store mode and counts.
    Shared(RedisHandle),
}

impl IngressLayer {
    fn handle(&self) -> IngressHandle {
        match self {
            IngressLayer::Local(layer) => IngressHandle::Local(layer.handle()),
            IngressLayer::Shared(layer) => IngressHandle::Shared(layer.handle()),
        }
    }
}

/// `/api/...` through the ingress limit and the proxy, rejections answered.
type ApiService = BoxCloneSyncService<Request, Response, Infallible>;

/// `GET /metrics`: every series in Prometheus's text format.
async fn scrape() -> Response {
    match crate::metrics::render() {
        Some(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics_unavailable",
            "another metrics recorder was installed before the shop's",
        )
        .into_response(),
    }
}

/// The settings in force and what was built from them. A reload makes a
/// new one; a call keeps the one it started with to the end.
struct Generation {
    config: Arc<ShopConfig>,
    upstreams: Arc<Upstreams>,
    ingress: IngressLayer,
    /// The product list's fallback; `None` without resilience.
    catalogue: Option<CatalogueFallback>,
    api: ApiService,
}

/// The gateway: its settings in force, swapped whole by a reload.
#[derive(Clone)]
pub struct Gateway {
    current: Arc<ArcSwap<Generation>>,
    client: HttpClient,
    urls: Arc<UpstreamUrls>,
    resilience: bool,
    auth: AdminAuth,
    /// The configuration file, shown by `/admin/config`.
    source: Option<Arc<Path>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("resilience", &self.resilience)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway calling the services at `urls` (unless `config` names
    /// others), with palisade's layers when `resilience` is on.
    pub fn new(
        config: ShopConfig,
        urls: UpstreamUrls,
        client: HttpClient,
        resilience: bool,
        auth: AdminAuth,
        source: Option<&Path>,
    ) -> Result<Gateway, ConfigError> {
        let upstreams = UPSTREAMS
            .into_iter()
            .map(|name| {
                Ok((
                    name,
                    build_upstream(name, &config, &urls, &client, resilience)?,
                ))
            })
            .collect::<Result<Upstreams, ConfigError>>()?;
        let ingress = ingress_layer(&config)?;
        let catalogue = resilience
            .then(|| CatalogueFallback::new(&config.catalogue_fallback))
            .transpose()?;
        let generation = Generation::new(config, upstreams, ingress, catalogue, resilience);
        Ok(Gateway {
            current: Arc::new(ArcSwap::from_pointee(generation)),
            client,
            urls: Arc::new(urls),
            resilience,
            auth,
            source: source.map(Arc::from),
        })
    }

    fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Puts `config` in force for new calls; calls in flight finish with
    /// the settings they started with. An upstream whose settings did not
    /// change keeps its layers, and with them its breaker's state and its
    /// counts; so does the ingress limiter. Answers what changed.
    pub fn apply(&self, config: ShopConfig) -> Result<Vec<String>, ConfigError> {
        let old = self.current();
        let mut changed = Vec::new();
        let mut upstreams = Upstreams::new();
        for name in UPSTREAMS {
            let (new, kept) = (&config.upstreams[name], &old.upstreams[name]);
            let (endpoints, balanced) = new.endpoints_or(&self.urls.endpoints(name));
            let upstream = if Some(new) == old.config.upstreams.get(name) {
                kept.clone()
            } else if let (Some(replicas), true) = (&kept.replicas, balanced)
                && old.config.upstreams[name].client == new.client
            {
                // Only its replicas changed: the balancer takes the new list
                // (discovery), and the replicas that stay keep their
                // breakers and load.
                replicas.set_replicas(endpoints);
                changed.push(format!("upstreams.{name}.endpoints"));
                kept.clone()
            } else {
                changed.push(format!("upstreams.{name}"));
                build_upstream(name, &config, &self.urls, &self.client, self.resilience)?
            };
            upstreams.insert(name, upstream);
        }
        let (new_limit, old_limit) = (&config.rate_limit, &old.config.rate_limit);
        let same_store = config.rate_limit_store == old.config.rate_limit_store;
        let ingress = match &old.ingress {
            _ if new_limit == old_limit && same_store => old.ingress.clone(),
            IngressLayer::Local(local)
                if same_store && only_limit_differs(new_limit, old_limit) =>
            {
                // The same limiter with a new limit: every client keeps what
                // it has spent.
                local
                    .handle()
                    .set_limit(new_limit.limit, new_limit.window)?;
                changed.push("gateway.rate_limit".to_owned());
                old.ingress.clone()
            }
            // Another window, algorithm, burst, queue or store: a new
            // limiter. In process every client starts afresh; in Redis the
            // counts outlive the limiter, and the new one (same name) finds
            // them there.
            _ => {
                changed.push("gateway.rate_limit".to_owned());
                ingress_layer(&config)?
            }
        };
        if config.auth != old.config.auth {
            // The generation's verifier is built from it: keys rotate here.
            changed.push("gateway.auth".to_owned());
        }
        // Unchanged, the fallback keeps its copies and counts; changed, it
        // starts with none (a copy kept under the old max_age might be
        // older than the new one allows).
        let catalogue = match &old.catalogue {
            Some(kept) if config.catalogue_fallback == old.config.catalogue_fallback => {
                Some(kept.clone())
            }
            Some(_) => {
                changed.push("gateway.catalogue_fallback".to_owned());
                Some(CatalogueFallback::new(&config.catalogue_fallback)?)
            }
            None => None,
        };
        let generation = Generation::new(config, upstreams, ingress, catalogue, self.resilience);
        self.current.store(Arc::new(generation));
        Ok(changed)
    }

    /// The settings in force.
    pub fn config(&self) -> Arc<ShopConfig> {
        self.current().config.clone()
    }

    /// The per-client limiter in force.
    pub fn ingress(&self) -> IngressHandle {
        self.current().ingress.handle()
    }

    /// The product list's fallback in force (`None` without resilience).
    pub fn catalogue_fallback(&self) -> Option<CatalogueFallback> {
        self.current().catalogue.clone()
    }

    /// The upstream called `name`, as now in force.
    pub fn upstream(&self, name: &str) -> Option<Upstream> {
        self.current().upstreams.get(name).cloned()
    }

    /// The gateway's routes. [`crate::api::serve`] adds request ids,
    /// logging and the client timeouts.
    pub fn router(&self) -> Router {
        let gateway = self.clone();
        let api = tower::service_fn(move |request: Request| {
            let api = gateway.current().api.clone();
            api.oneshot(request)
        });
        Router::new()
            .route("/health", get(health))
            .route("/metrics", get(scrape))
            .route("/admin/resilience", get(resilience))
            .route("/admin/config", get(show_config))
            .with_state(self.clone())
            .route_service("/api/{*path}", api)
            .fallback(no_route)
            .layer(axum::middleware::from_fn(json_405))
    }
}

impl Generation {
    /// `resilience` off (`--no-resilience`): no ingress limit either, so
    /// that a load test compares the proxy with and without every palisade
    /// layer.
    fn new(
        config: ShopConfig,
        upstreams: Upstreams,
        ingress: IngressLayer,
        catalogue: Option<CatalogueFallback>,
        resilience: bool,
    ) -> Generation {
        let upstreams = Arc::new(upstreams);
        let verifier = Verifier::new(&config.auth, "gateway.auth").unwrap_or_else(|error| {
            // Checked when the configuration was read; refusing every
            // token is the safe side should it ever get here.
            tracing::error!(%error, "gateway.auth refused; every token will be");
            Verifier::without_keys(&config.auth)
        });
        let verifier = Arc::new(verifier);
        // Before the limiter, which keys on the caller found here.
        let admit = move |mut request: Request| {
            let admission = admit(&verifier, &request);
            request.extensions_mut().insert(admission);
            request
        };
        let (routes, list) = (upstreams.clone(), catalogue.clone());
        let proxy = tower::service_fn(move |request: Request| {
            let (routes, list) = (routes.clone(), list.clone());
            async move { proxy(&routes, list.as_ref(), request).await }
        });
        let answered = ErrorResponseLayer::new().other_errors(bad_gateway_response);
        let api = if resilience {
            // Upstream failures become responses below the limiter, so that
            // they carry its RateLimit-* headers like any other answer; the
            // outer layer answers the limiter's own refusals.
            // A client may send a deadline of its own (`grpc-timeout`); the
            // upstream calls work to it, and it goes on to the services.
            let below = ServiceBuilder::new()
                .layer(answered)
                .layer(read_deadline())
                .service(proxy);
            let above = ServiceBuilder::new()
                .map_response(IntoResponse::into_response)
                .layer(ErrorResponseLayer::new())
                .map_request(admit);
            match &ingress {
                IngressLayer::Local(limit) => {
                    BoxCloneSyncService::new(above.layer(limit.clone()).service(below))
                }
                IngressLayer::Shared(limit) => {
                    BoxCloneSyncService::new(above.layer(limit.clone()).service(below))
                }
            }
        } else {
            BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .map_response(IntoResponse::into_response)
                    .map_request(admit)
                    .layer(answered)
                    .service(proxy),
            )
        };
        Generation {
            config: Arc::new(config),
            upstreams,
            ingress,
            catalogue,
            api,
        }
    }
}

/// `name`'s upstream: its stack over its endpoints (balanced when there
/// are several), as `config` sets it.
pub(crate) fn build_upstream(
    name: &'static str,
    config: &ShopConfig,
    urls: &UpstreamUrls,
    client: &HttpClient,
    resilience: bool,
) -> Result<Upstream, ConfigError> {
    let settings = &config.upstreams[name];
    let (endpoints, balanced) = settings.endpoints_or(&urls.endpoints(name));
    Upstream::new(
        name,
        &endpoints,
        balanced,
        client.clone(),
        settings,
        resilience,
    )
}

/// Whether `new` is `old` with another limit only, which the limiter in
/// force can take with every client's count kept. Not a new window (a
/// sliding window starts its counts over then anyway), and not for GCRA
/// without an explicit burst: a new limiter's burst would follow the new
/// limit, the old one's would not.
fn only_limit_differs(new: &RateLimitConfig, old: &RateLimitConfig) -> bool {
    let mut with_new_limit = old.clone();
    with_new_limit.limit = new.limit;
    with_new_limit == *new && (new.algorithm != Kind::Gcra || new.burst.is_some())
}

/// The per-client limiter `config` describes. Every gateway builds it
/// with the same name, so that in Redis they count under the same keys.
fn ingress_layer(config: &ShopConfig) -> Result<IngressLayer, ConfigError> {
    let mut rate_limit = config.rate_limit.clone();
    rate_limit.name.get_or_insert_with(|| "ingress".to_owned());
    let builder = RateLimitBuilder::from_config(rate_limit);
    Ok(match &config.rate_limit_store {
        None => IngressLayer::Local(
            builder
                .keyed(client_key as fn(&Request) -> ClientKey)
                .build()?
                .report_state(RateLimitHeaders),
        ),
        Some(store) => IngressLayer::Shared(
            builder
                .redis(store.clone())
                .keyed(client_key_bytes as fn(&Request) -> Vec<u8>)
                .build()?
                .report_state(RateLimitHeaders),
        ),
    })
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

/// Whether reading a body failed on the size limit (rather than on the
/// connection).
fn is_too_large(err: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

async fn proxy(
    upstreams: &Upstreams,
    catalogue: Option<&CatalogueFallback>,
    request: Request,
) -> Result<Response, BoxError> {
    let (mut parts, body) = request.into_parts();
    let (route, caller) = match parts.extensions.remove::<Admission>() {
        Some(Admission::Admitted { route, caller }) => (route, caller),
        Some(Admission::Refused(refusal)) => return Ok(refusal.into_response()),
        None => return Ok(no_route().await.into_response()),
    };
    let Some(upstream) = upstreams.get(route.upstream) else {
        return Ok(no_route().await.into_response());
    };
    // The path matched a route exactly: under `/api` it is the service's.
    let path = parts.uri.path().strip_prefix("/api").unwrap_or("/");
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    // Buffered, so that a retry can send it again; bounded.
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(err) if is_too_large(&err) => {
            return Ok(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is over {MAX_BODY} bytes"),
            )
            .into_response());
        }
        Err(_) => {
            return Ok(ApiError::new(
                StatusCode::BAD_REQUEST,
                "body_unreadable",
                "the request body could not be read to its end",
            )
            .into_response());
        }
    };
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    // The services learn who calls from the gateway alone: a copy the
    // client sent is dropped, and so is its token, which they do not need.
    parts.headers.remove(CUSTOMER);
    parts.headers.remove(header::AUTHORIZATION);
    if let Some(sub) = caller {
        parts
            .headers
            .insert(CUSTOMER, HeaderValue::from_bytes(sub.as_bytes())?);
    }
    // What the gateway's own layers left here (the peer address, the
    // matched route) means nothing upstream, and a retry would copy it; the
    // caller's deadline, if it sent one, goes on.
    let deadline = parts.extensions.remove::<Deadline>();
    parts.extensions.clear();
    if let Some(deadline) = deadline {
        parts.extensions.insert(deadline);
    }
    parts.uri = path_and_query.parse()?;
    let forwarded = http::Request::from_parts(parts, Full::<Bytes>::new(body));
    let (mut parts, body) = match catalogue {
        // The product list alone may be answered with a copy.
        Some(catalogue) if route.path == CATALOGUE => {
            let (parts, list) = catalogue.list(upstream, forwarded).await?.into_parts();
            (parts, Body::from(list))
        }
        _ => {
            let (parts, body) = upstream.send(forwarded).await?.into_parts();
            (parts, Body::new(body.map_err(BoxError::from)))
        }
    };
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body))
}

/// Each upstream's `/health`, asked directly (not through its breaker) and
/// all at once, with its circuit state.
async fn health(State(gateway): State<Gateway>) -> Response {
    let current = gateway.current();
    let mut checks = tokio::task::JoinSet::new();
    for (name, upstream) in current.upstreams.iter() {
        let (name, client) = (*name, gateway.client.clone());
        let uri = format!("{}/health", upstream.base);
        checks.spawn(async move {
            let healthy = match http::Request::get(uri).body(Full::<Bytes>::default()) {
                Ok(request) => matches!(
                    tokio::time::timeout(Duration::from_secs(1), client.request(request)).await,
                    Ok(Ok(response)) if response.status().is_success()
                ),
                Err(_) => false,
            };
            (name, healthy)
        });
    }
    let mut healthy = BTreeMap::new();
    while let Some(Ok((name, up))) = checks.join_next().await {
        healthy.insert(name, up);
    }
    let mut upstreams = serde_json::Map::new();
    let mut all_healthy = true;
    for (name, upstream) in current.upstreams.iter() {
        let up = healthy.get(name).copied().unwrap_or(false);
        all_healthy &= up;
        upstreams.insert(
            (*name).to_owned(),
            json!({"healthy": up, "circuit": upstream.breaker.state().to_string()}),
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

/// Every upstream's breaker, bulkhead and retry figures, the ingress
/// limiter's, and the product list's fallback's.
async fn resilience(
    State(gateway): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    gateway.auth.check(peer, &headers)?;
    let current = gateway.current();
    let mut upstreams = serde_json::Map::new();
    for (name, upstream) in current.upstreams.iter() {
        let b = upstream.breaker.snapshot();
        let r = upstream.retry.counts();
        // Each replica's breaker, when a balancer spreads the calls: an
        // open one is out of the rotation.
        let replicas: serde_json::Map<String, Value> = upstream
            .replicas
            .iter()
            .flat_map(|balanced| balanced.replicas())
            .map(|(base, breaker)| {
                let s = breaker.snapshot();
                let state =
                    json!({"state": s.state.to_string(), "calls": s.calls, "failures": s.failures});
                (base, state)
            })
            .collect();
        upstreams.insert(
            (*name).to_owned(),
            json!({
                "replicas": replicas,
                "breaker": {
                    "state": b.state.to_string(),
                    "transitions": upstream.transitions.since(0),
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
    let (limit, window) = current.config.rate_limit();
    let mut ingress = json!({"limit": limit, "window_secs": window.as_secs_f64()});
    match current.ingress.handle() {
        IngressHandle::Local(handle) => {
            ingress["store"] = json!("local");
            ingress["clients"] = json!(handle.len());
            ingress["refused"] = json!(handle.refused());
        }
        IngressHandle::Shared(handle) => {
            let counts = handle.counts();
            ingress["store"] = json!("redis");
            ingress["mode"] = json!(store_mode(handle.mode()));
            ingress["refused"] = json!(counts.refused);
            ingress["counts"] = json!({
                "decisions": counts.decisions,
                "round_trips": counts.round_trips,
                "refused": counts.refused,
                "refused_locally": counts.refused_locally,
                "store_failures": counts.store_failures,
                "decided_without_store": counts.decided_without_store,
            });
            ingress["last_error"] = json!(handle.last_error());
        }
    }
    Ok(Json(json!({
        "resilience": gateway.resilience,
        "upstreams": upstreams,
        "ingress": ingress,
        "catalogue_fallback": current.catalogue.as_ref().map(CatalogueFallback::counts),
    })))
}

/// `shared` while Redis decides; otherwise the failure mode deciding
/// instead (`local`, `fail_open`, `fail_closed`), as the file names them.
fn store_mode(mode: StoreMode) -> &'static str {
    match mode {
        StoreMode::Degraded(OnStoreFailure::FailOpen) => "fail_open",
        StoreMode::Degraded(OnStoreFailure::FailClosed) => "fail_closed",
        StoreMode::Degraded(_) => "local",
        _ => "shared",
    }
}

/// The settings in force (defaults, file and flags merged) and where they
/// came from.
async fn show_config(
    State(gateway): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    gateway.auth.check(peer, &headers)?;
    Ok(Json(json!({
        "file": gateway.source.as_ref().map(|path| path.display().to_string()),
        "resilience": gateway.resilience,
        "config": gateway.config().to_json(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Changed with the allow-list: payments are no longer routed, and a
    // path must be a route's exactly.
    #[test]
    fn api_paths_go_to_their_service_and_never_climb_out_of_it() {
        fn routed(path: &str) -> Option<(&'static str, Option<&str>)> {
            find_route(path).map(|(route, id)| (route.upstream, id))
        }
        assert_eq!(routed("/api/users/1"), Some(("user", Some("1"))));
        assert_eq!(routed("/api/products"), Some(("product", None)));
        assert_eq!(routed("/api/orders/7"), Some(("order", Some("7"))));
        for refused in [
            "/api/payments/3",
            "/api/payments",
            "/api/admin/faults",
            "/api/users/../admin/faults",
            "/api/users/./1",
            "/api/users/%2e%2e/admin/faults",
            "/api/users/..%2fadmin/x",
            "/api/../users/1",
            "/api/inventory/1",
            "/api/products/1/reserve",
            "/api/products/1/Release",
            "/api/payments/void",
            "/api/products/1/",
            "/api//products",
            "/api/Products",
            "/users/1",
            "/api",
        ] {
            assert_eq!(routed(refused), None, "{refused}");
        }
    }

    #[test]
    fn each_route_takes_its_methods_and_callers_only() {
        let secret = "0123456789abcdef0123456789abcdef";
        let config = crate::auth::AuthConfig {
            keys: vec![crate::auth::KeyConfig {
                kid: None,
                alg: "HS256".into(),
                secret: Some(secret.into()),
                public_key: None,
            }],
            ..Default::default()
        };
        let verifier = Verifier::new(&config, "gateway.auth").unwrap();
        let token = crate::auth::mint_hs256(secret.as_bytes(), None, "2", Duration::from_secs(60));
        let admit = |method: &str, path: &str, customer: bool| {
            let mut request = Request::builder().method(method).uri(path);
            if customer {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            match admit(&verifier, &request.body(Body::empty()).unwrap()) {
                Admission::Admitted { caller, .. } => Ok(caller),
                Admission::Refused(refusal) => Err(refusal.into_response().status().as_u16()),
            }
        };
        assert_eq!(admit("GET", "/api/products/1", false), Ok(None));
        assert_eq!(admit("GET", "/api/products/1", true), Ok(Some("2".into())));
        assert_eq!(admit("POST", "/api/users", false), Ok(None));
        assert_eq!(admit("GET", "/api/users/2", true), Ok(Some("2".into())));
        assert_eq!(admit("PUT", "/api/users/2", true), Ok(Some("2".into())));
        assert_eq!(admit("POST", "/api/orders", true), Ok(Some("2".into())));
        assert_eq!(admit("GET", "/api/orders/9", true), Ok(Some("2".into())));
        // Refused, with the status each gets.
        assert_eq!(admit("GET", "/api/users/2", false), Err(401));
        assert_eq!(admit("GET", "/api/users/1", true), Err(404));
        assert_eq!(admit("GET", "/api/users/x", true), Err(400));
        assert_eq!(admit("POST", "/api/orders", false), Err(401));
        assert_eq!(admit("GET", "/api/users", true), Err(405));
        assert_eq!(admit("DELETE", "/api/orders/9", true), Err(405));
        assert_eq!(admit("POST", "/api/payments", true), Err(404));
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_a_new_limit_is_taken_in_place() {
        let minute = Duration::from_secs(60);
        let old = RateLimitConfig::new(100, minute);
        assert!(only_limit_differs(&RateLimitConfig::new(50, minute), &old));
        assert!(!only_limit_differs(
            &RateLimitConfig::new(100, minute * 2),
            &old
        ));
        let mut gcra = old.clone();
        gcra.algorithm = Kind::Gcra;
        let mut more = gcra.clone();
        more.limit = 1_000;
        // The burst would stay at 100 in place; a new limiter's is 1 000.
        assert!(!only_limit_differs(&more, &gcra));
        gcra.burst = Some(100);
        more.burst = Some(100);
        assert!(only_limit_differs(&more, &gcra));
    }
}
