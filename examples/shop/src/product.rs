//! The product service: `GET /products`, `GET /products/{id}`, and stock
//! reservations, idempotent per order.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use palisade::chaos::Handle as FaultHandle;

use crate::api::{AdminAuth, ApiError, Id, JsonBody, service_router};

/// A product; `price` is in cents.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Product {
    pub id: u64,
    pub name: String,
    pub price: u64,
    pub stock: u64,
}

/// `POST /products/{id}/reserve`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Reserve {
    pub order_id: u64,
    pub quantity: u64,
}

/// `POST /products/{id}/release`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub order_id: u64,
}

/// A reservation's state, as both endpoints answer it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Reservation {
    pub order_id: u64,
    pub product_id: u64,
    pub quantity: u64,
    /// `reserved` or `released`.
    pub status: String,
    pub stock: u64,
}

#[derive(Debug, Default)]
struct Catalog {
    products: BTreeMap<u64, Product>,
    // (product, order) -> (quantity, released)
    reservations: HashMap<(u64, u64), (u64, bool)>,
}

type Store = Arc<Mutex<Catalog>>;

fn lock(store: &Store) -> MutexGuard<'_, Catalog> {
    store.lock().unwrap_or_else(|p| p.into_inner())
}

fn seeded() -> Store {
    let mut catalog = Catalog::default();
    for (id, name, price, stock) in [
        (1, "Mechanical keyboard", 8_900, 1_000_000),
        (2, "Trackball", 5_400, 1_000_000),
        (3, "27-inch monitor", 32_900, 1_000_000),
        (4, "USB-C dock", 12_500, 5),
    ] {
        catalog.products.insert(
            id,
            Product {
                id,
                name: name.into(),
                price,
                stock,
            },
        );
    }
    Arc::new(Mutex::new(catalog))
}

async fn list(State(store): State<Store>) -> Json<Vec<Product>> {
    Json(lock(&store).products.values().cloned().collect())
}

async fn one(State(store): State<Store>, Id(id): Id) -> Result<Json<Product>, ApiError> {
    lock(&store)
        .products
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("product", id))
}

async fn reserve(
    State(store): State<Store>,
    Id(id): Id,
    JsonBody(reserve): JsonBody<Reserve>,
) -> Result<Json<Reservation>, ApiError> {
    if reserve.quantity == 0 || reserve.quantity > 1_000 {
        return Err(ApiError::invalid("quantity must be 1 to 1000"));
    }
    let mut catalog = lock(&store);
    let Catalog {
        products,
        reservations,
    } = &mut *catalog;
    let product = products
        .get_mut(&id)
        .ok_or_else(|| ApiError::not_found("product", id))?;
    let answer = |quantity, released: bool, stock| Reservation {
        order_id: reserve.order_id,
        product_id: id,
        quantity,
        status: if released { "released" } else { "reserved" }.into(),
        stock,
    };
    // The same order again: the same answer, nothing taken twice.
    if let Some(&(quantity, released)) = reservations.get(&(id, reserve.order_id)) {
        if released {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "released",
                "this order's reservation was released",
            ));
        }
        return Ok(Json(answer(quantity, false, product.stock)));
    }
    if product.stock < reserve.quantity {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "out_of_stock",
            format!("only {} left", product.stock),
        ));
    }
    product.stock -= reserve.quantity;
    reservations.insert((id, reserve.order_id), (reserve.quantity, false));
    Ok(Json(answer(reserve.quantity, false, product.stock)))
}

async fn release(
    State(store): State<Store>,
    Id(id): Id,
    JsonBody(release): JsonBody<Release>,
) -> Result<Json<Reservation>, ApiError> {
    let mut catalog = lock(&store);
    let Catalog {
        products,
        reservations,
    } = &mut *catalog;
    let product = products
        .get_mut(&id)
        .ok_or_else(|| ApiError::not_found("product", id))?;
    // Releasing what was never reserved is a no-op that remembers the
    // order, so a reservation arriving late cannot take stock for it.
    let entry = reservations
        .entry((id, release.order_id))
        .or_insert((0, true));
    if !entry.1 {
        product.stock += entry.0;
        entry.1 = true;
    }
    Ok(Json(Reservation {
        order_id: release.order_id,
        product_id: id,
        quantity: entry.0,
        status: "released".into(),
        stock: product.stock,
    }))
}

/// The product service's router.
pub fn router(auth: AdminAuth) -> (Router, FaultHandle) {
    service_router("product", api(seeded()), auth)
}

/// `n` replicas of the service, sharing one store (as replicas share a
/// database), each with faults of its own.
pub fn replicas(auth: AdminAuth, n: usize) -> Vec<(Router, FaultHandle)> {
    let api = api(seeded());
    (0..n)
        .map(|_| service_router("product", api.clone(), auth.clone()))
        .collect()
}

fn api(store: Store) -> Router {
    Router::new()
        .route("/products", get(list))
        .route("/products/{id}", get(one))
        .route("/products/{id}/reserve", post(reserve))
        .route("/products/{id}/release", post(release))
        .with_state(store)
}
