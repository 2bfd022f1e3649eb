//! The user service: `GET /users`, `GET /users/{id}`, `POST /users`,
//! `PUT /users/{id}`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use palisade::chaos::Handle as FaultHandle;

use crate::api::{AdminAuth, ApiError, Id, JsonBody, service_router};

/// A user.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct User {
    pub id: u64,
    pub name: String,
    pub email: String,
}

/// What `POST /users` and `PUT /users/{id}` take.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFields {
    pub name: String,
    pub email: String,
}

impl UserFields {
    fn check(&self) -> Result<(), ApiError> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(ApiError::invalid("name must have 1 to 100 characters"));
        }
        let email = self.email.trim();
        let well_formed = email.len() <= 254
            && email
                .split_once('@')
                .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
        if !well_formed {
            return Err(ApiError::invalid("email must look like name@example.com"));
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Users {
    next: u64,
    all: BTreeMap<u64, User>,
}

type Store = Arc<Mutex<Users>>;

fn lock(store: &Store) -> MutexGuard<'_, Users> {
    store.lock().unwrap_or_else(|p| p.into_inner())
}

fn seeded() -> Store {
    let mut users = Users::default();
    for (name, email) in [
        ("Ada Lovelace", "ada@example.com"),
        ("Grace Hopper", "grace@example.com"),
        ("Edsger Dijkstra", "edsger@example.com"),
    ] {
        users.next += 1;
        let id = users.next;
        users.all.insert(
            id,
            User {
                id,
                name: name.into(),
                email: email.into(),
            },
        );
    }
    Arc::new(Mutex::new(users))
}

async fn list(State(store): State<Store>) -> Json<Vec<User>> {
    Json(lock(&store).all.values().cloned().collect())
}

async fn one(State(store): State<Store>, Id(id): Id) -> Result<Json<User>, ApiError> {
    lock(&store)
        .all
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("user", id))
}

async fn create(
    State(store): State<Store>,
    JsonBody(fields): JsonBody<UserFields>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    fields.check()?;
    let mut users = lock(&store);
    users.next += 1;
    let user = User {
        id: users.next,
        name: fields.name.trim().into(),
        email: fields.email.trim().into(),
    };
    users.all.insert(user.id, user.clone());
    Ok((StatusCode::CREATED, Json(user)))
}

async fn update(
    State(store): State<Store>,
    Id(id): Id,
    JsonBody(fields): JsonBody<UserFields>,
) -> Result<Json<User>, ApiError> {
    fields.check()?;
    let mut users = lock(&store);
    let user = users
        .all
        .get_mut(&id)
        .ok_or_else(|| ApiError::not_found("user", id))?;
    user.name = fields.name.trim().into();
    user.email = fields.email.trim().into();
    Ok(Json(user.clone()))
}

/// The user service's router.
pub fn router(auth: AdminAuth) -> (Router, FaultHandle) {
    service_router("user", api(seeded()), auth)
}

/// `n` replicas of the service, sharing one store (as replicas share a
/// database), each with faults of its own.
pub fn replicas(auth: AdminAuth, n: usize) -> Vec<(Router, FaultHandle)> {
    let api = api(seeded());
    (0..n)
        .map(|_| service_router("user", api.clone(), auth.clone()))
        .collect()
}

fn api(store: Store) -> Router {
    Router::new()
        .route("/users", get(list).post(create))
        .route("/users/{id}", get(one).put(update))
        .with_state(store)
}
