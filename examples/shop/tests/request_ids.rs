//! One request followed through every service by its id, in the logs: the
//! gateway's id reaches the order service, and the order service passes it
//! on to the user, product and payment services.

mod support;

use std::sync::{Arc, Mutex};

use http::{Request, StatusCode};
use serde_json::json;
use support::Shop;
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// The `request` spans opened: (service, request id, path).
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<(String, String, String)>>>);

#[derive(Default)]
struct Fields {
    service: String,
    id: String,
    path: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.set(field, format!("{value:?}"));
    }
}

impl Fields {
    fn set(&mut self, field: &Field, value: String) {
        match field.name() {
            "service" => self.service = value,
            "id" => self.id = value,
            "path" => self.path = value,
            _ => {}
        }
    }
}

impl<S: Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        if attrs.metadata().name() == "request" {
            let mut fields = Fields::default();
            attrs.record(&mut fields);
            self.0
                .lock()
                .unwrap()
                .push((fields.service, fields.id, fields.path));
        }
    }
}

impl Spans {
    /// The services that logged `id`, with their paths.
    fn with_id(&self, id: &str) -> Vec<(String, String)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, seen, _)| seen == id)
            .map(|(service, _, path)| (service.clone(), path.clone()))
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn an_order_is_logged_under_one_id_by_every_service_it_touches() {
    let spans = Spans::default();
    // The runtime has one thread, so every service's task logs here.
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let shop = Shop::start().await;
    let answer = shop
        .send(
            shop.running.gateway,
            Request::post("/api/orders")
                .header("x-request-id", "follow-me-1")
                .header("authorization", support::bearer(2)),
            Some(json!({"user_id": 2, "product_id": 3, "quantity": 1})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(answer.headers["x-request-id"], "follow-me-1");
    let seen = spans.with_id("follow-me-1");
    for (service, path) in [
        ("gateway", "/api/orders"),
        ("order", "/orders"),
        ("user", "/users/2"),
        ("product", "/products/3"),
        ("product", "/products/3/reserve"),
        ("payment", "/payments"),
    ] {
        assert!(
            seen.contains(&(service.to_owned(), path.to_owned())),
            "{service} {path} not logged under the id; logged: {seen:?}"
        );
    }

    // Without an id of the client's own, the gateway's id goes all the way.
    let answer = shop
        .post_as(
            1,
            "/api/orders",
            json!({"user_id": 1, "product_id": 1, "quantity": 1}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let id = answer.headers["x-request-id"].to_str().unwrap().to_owned();
    let services: Vec<String> = spans.with_id(&id).into_iter().map(|(s, _)| s).collect();
    for service in ["gateway", "order", "user", "product", "payment"] {
        assert!(
            services.iter().any(|s| s == service),
            "{service}: {services:?}"
        );
    }
    shop.running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_unusable_caller_id_is_replaced_by_a_new_one_used_everywhere() {
    let spans = Spans::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let shop = Shop::start().await;
    let too_long = "x".repeat(129);
    for unusable in ["", too_long.as_str()] {
        let answer = shop
            .send(
                shop.running.gateway,
                Request::get("/api/products/1").header("x-request-id", unusable),
                None,
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK);
        let id = answer.headers["x-request-id"].to_str().unwrap().to_owned();
        assert!(!id.is_empty() && id != unusable, "{id:?}");
        let seen = spans.with_id(&id);
        for (service, path) in [("gateway", "/api/products/1"), ("product", "/products/1")] {
            assert!(
                seen.contains(&(service.to_owned(), path.to_owned())),
                "{service} {path} not logged under {id}; logged: {seen:?}"
            );
        }
    }
    // 128 bytes is still an id of the caller's own.
    let longest = "y".repeat(128);
    let answer = shop
        .send(
            shop.running.gateway,
            Request::get("/api/products/1").header("x-request-id", longest.as_str()),
            None,
        )
        .await;
    assert_eq!(answer.headers["x-request-id"], longest.as_str());
    shop.running.shutdown().await.unwrap();
}
