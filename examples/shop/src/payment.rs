//! The payment service: `POST /payments`, idempotent per order,
//! `GET /payments/{id}`, and `POST /payments/void`, which cancels an
//! order's payment whether or not it was ever made. Charging and voiding
//! are the order service's alone: each needs its grant for that order and
//! amount ([`Grants`]); the gateway exposes none of these routes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use palisade::chaos::Handle as FaultHandle;

use crate::api::{AdminAuth, ApiError, Id, JsonBody, service_router};
use crate::auth::Grants;

/// `POST /payments`; `amount` in cents.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Charge {
    pub order_id: u64,
    pub amount: u64,
}

/// A payment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Payment {
    pub id: u64,
    pub order_id: u64,
    pub amount: u64,
    pub status: String,
}

/// `POST /payments/void`: the order and the amount it was to be charged.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Void {
    pub order_id: u64,
    pub amount: u64,
}

#[derive(Debug, Default)]
struct Ledger {
    next: u64,
    payments: HashMap<u64, Payment>,
    by_order: HashMap<u64, u64>,
    /// Orders voided, with their amount: such a charge is refused, even
    /// one that arrives after the void (a request slow on its way).
    voided: HashSet<(u64, u64)>,
}

/// The ledger, and the grants charges and voids must carry.
#[derive(Clone, Debug)]
struct Store {
    ledger: Arc<Mutex<Ledger>>,
    grants: Grants,
}

fn lock(store: &Store) -> MutexGuard<'_, Ledger> {
    store.ledger.lock().unwrap_or_else(|p| p.into_inner())
}

async fn charge(
    State(store): State<Store>,
    headers: HeaderMap,
    JsonBody(charge): JsonBody<Charge>,
) -> Result<(StatusCode, Json<Payment>), ApiError> {
    if charge.amount == 0 {
        return Err(ApiError::invalid("amount must be positive"));
    }
    store
        .grants
        .check(&headers, "charge", charge.order_id, charge.amount)?;
    let mut ledger = lock(&store);
    if ledger.voided.contains(&(charge.order_id, charge.amount)) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "voided",
            "this order's payment was voided; it cannot be charged",
        ));
    }
    // One payment per order: a repeat gets the first one back.
    if let Some(id) = ledger.by_order.get(&charge.order_id) {
        let payment = ledger.payments[id].clone();
        if payment.amount != charge.amount {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "amount_mismatch",
                "this order was already charged a different amount",
            ));
        }
        return Ok((StatusCode::OK, Json(payment)));
    }
    ledger.next += 1;
    let payment = Payment {
        id: ledger.next,
        order_id: charge.order_id,
        amount: charge.amount,
        status: "captured".into(),
    };
    ledger.by_order.insert(payment.order_id, payment.id);
    ledger.payments.insert(payment.id, payment.clone());
    Ok((StatusCode::CREATED, Json(payment)))
}

/// Voids the order's payment of that amount or, when there is none (yet),
/// makes sure there never will be. A payment for the order of another
/// amount is not this caller's to void (an order id reused after a
/// restart, say): 409, and it stays. Idempotent: voiding twice answers the
/// same.
async fn void(
    State(store): State<Store>,
    headers: HeaderMap,
    JsonBody(void): JsonBody<Void>,
) -> Result<Json<serde_json::Value>, ApiError> {
    store
        .grants
        .check(&headers, "void", void.order_id, void.amount)?;
    let mut ledger = lock(&store);
    let existing = ledger.by_order.get(&void.order_id).copied();
    let payment = match existing.and_then(|id| ledger.payments.get_mut(&id)) {
        Some(payment) if payment.amount != void.amount => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "amount_mismatch",
                "this order's payment is of another amount; it was not voided",
            ));
        }
        Some(payment) => {
            payment.status = "voided".into();
            Some(payment.clone())
        }
        None => None,
    };
    ledger.voided.insert((void.order_id, void.amount));
    Ok(Json(serde_json::json!({
        "order_id": void.order_id,
        "status": "voided",
        "payment": payment,
    })))
}

async fn one(State(store): State<Store>, Id(id): Id) -> Result<Json<Payment>, ApiError> {
    lock(&store)
        .payments
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("payment", id))
}

/// The payment service's router: charges and voids need a grant signed
/// with `grants`' secret.
pub fn router(auth: AdminAuth, grants: Grants) -> (Router, FaultHandle) {
    let store = Store {
        ledger: Arc::default(),
        grants,
    };
    let api = Router::new()
        .route("/payments", post(charge))
        .route("/payments/void", post(void))
        .route("/payments/{id}", get(one))
        .with_state(store);
    service_router("payment", api, auth)
}
