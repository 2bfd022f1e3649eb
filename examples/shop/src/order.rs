//! The order service: `GET /orders`, `GET /orders/{id}`, and `POST /orders`,
//! which checks the user and product, reserves stock, charges payment, and
//! when the charge fails releases the stock and voids the charge (it may
//! have gone through unseen), retrying either until its service answers (a
//! small saga).
//!
//! Every order belongs to the customer the gateway names in the
//! [`CUSTOMER`] header; a customer sees only their own orders, and their
//! `Idempotency-Key`s are theirs alone. Without the header (a caller
//! inside the shop) every order is seen. Charges and voids carry a grant
//! signed for their order and amount ([`Grants`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use palisade::deadline::Deadline;
use palisade::retry::{Backoff, Jitter, RetryBudget, SharedBudget};
use palisade::{BoxError, ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::json;

use palisade::chaos::Handle as FaultHandle;

use crate::api::{AdminAuth, ApiError, Id, JsonBody, RequestId, service_router};
use crate::auth::{CUSTOMER, Grants};
use crate::payment::{Charge, Payment, Void};
use crate::product::{Product, Release, Reserve};
use crate::upstream::{Inbound, Upstream};
use crate::user::User;

/// `POST /orders`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    pub user_id: u64,
    pub product_id: u64,
    pub quantity: u64,
}

/// An order; `total` in cents; `status` is `confirmed` or `cancelled`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Order {
    pub id: u64,
    pub user_id: u64,
    pub product_id: u64,
    pub quantity: u64,
    pub total: u64,
    pub status: String,
    /// Why a cancelled order was: `payment_failed`, or `deadline_exceeded`
    /// when its caller's deadline passed before it was paid for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_because: Option<String>,
    /// Whose it is: their token's `sub`.
    pub customer: String,
}

impl Order {
    /// Cancelled because nobody was waiting for it any more.
    fn abandoned(&self) -> bool {
        self.cancelled_because.as_deref() == Some(DEADLINE_EXCEEDED)
    }
}

const DEADLINE_EXCEEDED: &str = "deadline_exceeded";

/// What an `Idempotency-Key` has led to, with the request it came with:
/// the key means that request and no other.
#[derive(Debug, Clone)]
enum Keyed {
    InProgress(NewOrder),
    Done(u64, NewOrder),
}

#[derive(Debug, Default)]
struct Orders {
    next: u64,
    all: BTreeMap<u64, Order>,
    /// By customer and key: one customer's key is nothing to another.
    keys: HashMap<(String, String), Keyed>,
}

/// The order service's state: its orders and its upstreams.
#[derive(Clone, Debug)]
pub struct OrderService {
    orders: Arc<Mutex<Orders>>,
    pub users: Upstream,
    pub products: Upstream,
    pub payments: Upstream,
    grants: Grants,
    /// Bounds the background retries of compensating steps, all of them
    /// together, so that a service that is down is not flooded with them:
    /// at most 5 a second, plus a fifth of the steps started in the last
    /// 10 s.
    compensation_budget: SharedBudget,
}

impl OrderService {
    /// Calls `users`, `products` and `payments`, signing each charge and
    /// void with `grants`.
    pub fn new(users: Upstream, products: Upstream, payments: Upstream, grants: Grants) -> Self {
        OrderService {
            orders: Arc::default(),
            users,
            products,
            payments,
            grants,
            // Windowed, so that it refills with time: a token budget earns
            // only from successes, and after a long outage there would be
            // none left to earn from, and the pending steps would wait
            // until they were given up.
            compensation_budget: SharedBudget::new(RetryBudget::windowed(
                Duration::from_secs(10),
                5,
                0.2,
            ))
            .expect("a valid budget"),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Orders> {
        self.orders.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An upstream's failure as this service answers it.
fn upstream_error(upstream: &str, err: &BoxError) -> ApiError {
    tracing::warn!(upstream, error = %err, "upstream call failed");
    match ErrorKind::of(err) {
        ErrorKind::CircuitOpen(_) | ErrorKind::BulkheadFull(_) | ErrorKind::RateLimited(_) => {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_unavailable",
                format!("the {upstream} service is not taking calls now"),
            )
        }
        ErrorKind::Elapsed(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!("the {upstream} service did not answer in time"),
        ),
        _ => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_failed",
            format!("the {upstream} service failed"),
        ),
    }
}

/// The customer the gateway named, if any.
fn customer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CUSTOMER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Whether `order` is for the caller's eyes: theirs, or any for a caller
/// inside the shop.
fn visible(order: &Order, customer: Option<&str>) -> bool {
    customer.is_none_or(|customer| order.customer == customer)
}

async fn list(State(service): State<OrderService>, headers: HeaderMap) -> Json<Vec<Order>> {
    let customer = customer(&headers);
    let orders = service.lock();
    let mine = orders
        .all
        .values()
        .filter(|o| visible(o, customer.as_deref()));
    Json(mine.cloned().collect())
}

/// Another customer's order is answered as if there were none.
async fn one(
    State(service): State<OrderService>,
    Id(id): Id,
    headers: HeaderMap,
) -> Result<Json<Order>, ApiError> {
    let customer = customer(&headers);
    service
        .lock()
        .all
        .get(&id)
        .filter(|order| visible(order, customer.as_deref()))
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("order", id))
}

/// The answer for a finished order: 201 when confirmed; one cancelled
/// because its caller's deadline passed is a 504 that carries the order; one
/// cancelled because its payment failed is a 402 that carries the order. Not a 5xx: this
/// service did its job (it cancelled the order and released the stock), so
/// a gateway must neither retry the call nor count it against this
/// service's circuit; the payment service's failures count against its own
/// circuit, here.
fn order_response(order: Order) -> Response {
    if order.status == "confirmed" {
        (StatusCode::CREATED, Json(order)).into_response()
    } else if order.abandoned() {
        let body = json!({
            "error": DEADLINE_EXCEEDED,
            "message": "the caller's deadline passed before the order was paid for; it is cancelled, its stock released and any payment for it voided; the same Idempotency-Key places it anew",
            "order": order,
        });
        (StatusCode::GATEWAY_TIMEOUT, Json(body)).into_response()
    } else {
        let body = json!({
            "error": "payment_failed",
            "message": "the payment failed; the order is cancelled, its stock released (or as soon as the product service answers), and any payment for it voided",
            "order": order,
        });
        (StatusCode::PAYMENT_REQUIRED, Json(body)).into_response()
    }
}

async fn create(
    State(service): State<OrderService>,
    request_id: Option<Extension<RequestId>>,
    deadline: Option<Extension<Deadline>>,
    headers: HeaderMap,
    JsonBody(new): JsonBody<NewOrder>,
) -> Result<Response, ApiError> {
    let Some(customer) = customer(&headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an order needs a customer: place it through the gateway, with a token",
        ));
    };
    if new.user_id.to_string() != customer {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("a customer orders for themselves: user_id must be {customer}"),
        ));
    }
    if new.quantity == 0 || new.quantity > 1_000 {
        return Err(ApiError::invalid("quantity must be 1 to 1000"));
    }
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(key) => match key.to_str() {
            Ok(key) if !key.is_empty() && key.len() <= 128 => Some(key.to_owned()),
            _ => {
                return Err(ApiError::invalid(
                    "Idempotency-Key must be 1 to 128 visible characters",
                ));
            }
        },
    };
    let key = key.map(|key| (customer.clone(), key));
    if let Some(key) = &key {
        let mut orders = service.lock();
        match orders.keys.get(key) {
            Some(Keyed::InProgress(first) | Keyed::Done(_, first)) if *first != new => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used for another order; use a new key for a new order",
                ));
            }
            Some(Keyed::Done(id, _)) => return Ok(order_response(orders.all[id].clone())),
            Some(Keyed::InProgress(_)) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "in_progress",
                    "an order with this Idempotency-Key is being placed",
                ));
            }
            None => {
                orders
                    .keys
                    .insert(key.clone(), Keyed::InProgress(new.clone()));
            }
        }
    }
    // The caller's deadline (the gateway's, passed on) bounds every step:
    // none starts after it, and a step cut short by it counts as failed, so
    // the order is cancelled and compensated rather than finished after
    // the caller was told it timed out.
    let inbound = Inbound {
        request_id: request_id.map(|Extension(RequestId(id))| id),
        deadline: deadline.map(|Extension(deadline)| deadline),
    };
    // In a task of its own, bookkeeping included, so that a caller who
    // hangs up leaves neither an order half placed nor its key stuck in
    // progress: the order is finished (or cancelled) and recorded, and a
    // retry with the same key gets it.
    let placing = service.clone();
    tokio::spawn(async move {
        let placed = place(&placing, &new, customer, &inbound).await;
        record(&placing, placed, key, new)
    })
    .await
    .unwrap_or_else(|_| {
        Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "placing the order failed",
        ))
    })
}

/// Records a placed order under its key; a refused one frees the key.
fn record(
    service: &OrderService,
    placed: Result<Order, ApiError>,
    key: Option<(String, String)>,
    new: NewOrder,
) -> Result<Response, ApiError> {
    let mut orders = service.lock();
    match placed {
        Ok(order) => {
            if let Some(key) = key {
                if order.abandoned() {
                    // Cancelled for lack of time, not for anything the
                    // request said: the key may place it again.
                    orders.keys.remove(&key);
                } else {
                    orders.keys.insert(key, Keyed::Done(order.id, new));
                }
            }
            orders.all.insert(order.id, order.clone());
            Ok(order_response(order))
        }
        Err(err) => {
            // Nothing was done: the key may be used again.
            if let Some(key) = key {
                orders.keys.remove(&key);
            }
            Err(err)
        }
    }
}

/// Places `new`: checks, reserves, charges. `Err` means nothing is left
/// reserved; a failed charge is an `Ok` cancelled order.
async fn place(
    service: &OrderService,
    new: &NewOrder,
    customer: String,
    inbound: &Inbound,
) -> Result<Order, ApiError> {
    let user: Option<User> = service
        .users
        .get_json(&format!("/users/{}", new.user_id), inbound)
        .await
        .map_err(|e| upstream_error("user", &e))?;
    if user.is_none() {
        return Err(ApiError::invalid(format!(
            "no user with id {}",
            new.user_id
        )));
    }
    let product: Product = service
        .products
        .get_json(&format!("/products/{}", new.product_id), inbound)
        .await
        .map_err(|e| upstream_error("product", &e))?
        .ok_or_else(|| ApiError::invalid(format!("no product with id {}", new.product_id)))?;
    let total = product
        .price
        .checked_mul(new.quantity)
        .ok_or_else(|| ApiError::invalid("the total is too large"))?;
    let id = {
        let mut orders = service.lock();
        orders.next += 1;
        orders.next
    };
    let mut order = Order {
        id,
        user_id: new.user_id,
        product_id: new.product_id,
        quantity: new.quantity,
        total,
        status: "confirmed".into(),
        cancelled_because: None,
        customer,
    };
    let key = format!("order-{id}");
    let reserve = Reserve {
        order_id: id,
        quantity: new.quantity,
    };
    let reserved = service
        .products
        .call(
            Method::POST,
            &format!("/products/{}/reserve", new.product_id),
            Some(&reserve),
            inbound,
            Some(&key),
            None,
        )
        .await;
    match reserved {
        Ok((status, _)) if status.is_success() => {}
        Ok((StatusCode::CONFLICT, body)) => {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "not enough stock".into());
            return Err(ApiError::new(StatusCode::CONFLICT, "out_of_stock", message));
        }
        other => {
            // The reservation may or may not have happened: release it,
            // which is a no-op if it did not.
            release(service, new.product_id, id, inbound).await;
            return Err(match other {
                Err(e) => upstream_error("product", &e),
                Ok((status, _)) => ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_failed",
                    format!("the product service answered {status}"),
                ),
            });
        }
    }
    let charge = Charge {
        order_id: id,
        amount: total,
    };
    let grant = service.grants.sign("charge", id, total);
    let charged = service
        .payments
        .call(
            Method::POST,
            "/payments",
            Some(&charge),
            inbound,
            Some(&key),
            Some(&grant),
        )
        .await;
    let paid = match &charged {
        Ok((status, body)) if status.is_success() => {
            serde_json::from_slice::<Payment>(body).is_ok()
        }
        Ok((status, _)) => {
            tracing::warn!(order = id, %status, "payment refused");
            false
        }
        Err(err) => {
            tracing::warn!(order = id, error = %err, "payment failed");
            false
        }
    };
    if !paid {
        // Not paid because the caller stopped waiting (the charge was cut
        // short, or not sent), or because the payment failed.
        let late = inbound.deadline.is_some_and(Deadline::is_expired);
        // The charge may have gone through even so (an answer lost to a
        // timeout): void it, in the background, so that a payment service
        // that is slow or down does not hold the caller's answer too.
        spawn_void(service, id, total, inbound);
        release(service, new.product_id, id, inbound).await;
        order.status = "cancelled".into();
        let because = if late {
            DEADLINE_EXCEEDED
        } else {
            "payment_failed"
        };
        order.cancelled_because = Some(because.into());
    }
    Ok(order)
}

/// Voids order `order_id`'s payment of `amount` (idempotent on the
/// payment side), in a task of its own that keeps trying until the payment
/// service answers.
fn spawn_void(service: &OrderService, order_id: u64, amount: u64, inbound: &Inbound) {
    let (service, inbound) = (service.clone(), compensating(inbound));
    tokio::spawn(until_done(
        "void the payment",
        order_id,
        service.clone(),
        move || {
            let (service, inbound) = (service.clone(), inbound.clone());
            async move { try_void(&service, order_id, amount, &inbound).await }
        },
    ));
}

/// What a compensating step carries on from the call it cleans up after:
/// the request id, not the deadline. It must run however late it is.
fn compensating(inbound: &Inbound) -> Inbound {
    Inbound {
        request_id: inbound.request_id.clone(),
        deadline: None,
    }
}

/// How long a compensating step is retried before it is given up (and
/// logged as an error, for someone to settle by hand).
const GIVE_UP_AFTER: Duration = Duration::from_secs(600);

/// Runs a compensating step until it is over: once now, then, if the
/// service did not answer, again after about 1 s, 2 s, 4 s... up to every
/// 30 s (jittered, so that steps waiting on one service do not all come
/// back together), for at most [`GIVE_UP_AFTER`]. A retry the service's
/// shared compensation budget refuses waits for the next turn. Answers
/// whether it was over at the first try; the rest goes on in a task of its
/// own.
async fn until_done<F, Fut>(
    what: &'static str,
    order_id: u64,
    service: OrderService,
    mut attempt: F,
) -> bool
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let budget = service.compensation_budget;
    budget.on_request();
    if attempt().await {
        budget.on_success();
        return true;
    }
    budget.on_failure();
    tracing::warn!(order_id, what, "not done yet; retrying in the background");
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let backoff = Backoff::exponential(Duration::from_secs(1))
            .max(Duration::from_secs(30))
            .jitter(Jitter::Equal);
        for delay in backoff.delays() {
            tokio::time::sleep(delay).await;
            if started.elapsed() >= GIVE_UP_AFTER {
                tracing::error!(order_id, what, "given up; settle it by hand");
                return;
            }
            if !budget.try_retry() {
                tracing::debug!(order_id, what, "retry budget spent; waiting a turn");
                continue;
            }
            if attempt().await {
                budget.on_success();
                tracing::info!(order_id, what, "done");
                return;
            }
            budget.on_failure();
            tracing::debug!(order_id, what, "not done yet");
        }
    });
    false
}

async fn try_void(service: &OrderService, order_id: u64, amount: u64, inbound: &Inbound) -> bool {
    // Signed at each attempt: the background retries outlast a grant.
    let grant = service.grants.sign("void", order_id, amount);
    let voided = service
        .payments
        .call(
            Method::POST,
            "/payments/void",
            Some(&Void { order_id, amount }),
            inbound,
            Some(&format!("void-order-{order_id}")),
            Some(&grant),
        )
        .await;
    settled("void the payment", order_id, &voided)
}

/// Whether a compensating call is over: it worked, or it was refused in a
/// way that trying again cannot change (a 4xx other than 408 and 429,
/// logged).
fn settled(what: &str, order_id: u64, result: &Result<(StatusCode, Bytes), BoxError>) -> bool {
    match result {
        Ok((status, _)) if status.is_success() => true,
        Ok((StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS, _)) => false,
        Ok((status, _)) if status.is_client_error() => {
            tracing::error!(order_id, what, %status, "refused; not retried");
            true
        }
        _ => false,
    }
}

/// Gives an order's stock back (idempotent on the product side), now or,
/// when the product service cannot be reached, in the background.
async fn release(service: &OrderService, product_id: u64, order_id: u64, inbound: &Inbound) {
    let (steps, inbound) = (service.clone(), compensating(inbound));
    until_done("release the stock", order_id, service.clone(), move || {
        let (service, inbound) = (steps.clone(), inbound.clone());
        async move {
            let released = service
                .products
                .call(
                    Method::POST,
                    &format!("/products/{product_id}/release"),
                    Some(&Release { order_id }),
                    &inbound,
                    Some(&format!("order-{order_id}")),
                    None,
                )
                .await;
            settled("release the stock", order_id, &released)
        }
    })
    .await;
}

/// The order service's router.
pub fn router(service: OrderService, auth: AdminAuth) -> (Router, FaultHandle) {
    let api = Router::new()
        .route("/orders", get(list).post(create))
        .route("/orders/{id}", get(one))
        .with_state(service);
    service_router("order", api, auth)
}
