//! The gateway's deadline reaches the order service and every step of its
//! saga: when the gateway gives up on an order, so does the saga, which
//! cancels and compensates instead of finishing an order its caller was
//! told had timed out. Real sockets on 127.0.0.1, tokio's paused clock.

mod support;

use std::time::Duration;

use http::{Request, StatusCode};
use serde_json::json;
use support::{Shop, bearer};

/// The order service's view of order `id`.
async fn order(shop: &Shop, id: u64) -> serde_json::Value {
    let answer = shop
        .send(
            shop.running.order,
            Request::get(format!("/orders/{id}")),
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body
}

/// The payment service's payment `id`, or `None` when there is none.
async fn payment(shop: &Shop, id: u64) -> Option<serde_json::Value> {
    let answer = shop
        .send(
            shop.running.payment,
            Request::get(format!("/payments/{id}")),
            None,
        )
        .await;
    (answer.status == StatusCode::OK).then_some(answer.body)
}

/// An order that takes longer than the gateway waits (1.8 s to read the
/// product, 1.8 s to reserve it, 1.8 s to charge, against the gateway's
/// 5 s): the client's 504 says the outcome is unknown, never "cancelled";
/// and the order is then indeed not carried out: the charge in flight at
/// the deadline is cut short with it, the order cancelled, its stock
/// released and any payment voided.
#[tokio::test(start_paused = true)]
async fn a_gateway_timeout_and_the_saga_agree() {
    let shop = Shop::start().await;
    let stock = shop.stock(2).await;
    shop.faults(shop.running.product, 0.0, 1_800).await;
    shop.faults(shop.running.payment, 0.0, 1_800).await;
    let started = tokio::time::Instant::now();
    let answer = shop.order(1, 2, 1).await;
    assert_eq!(
        answer.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        answer.body
    );
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    let message = answer.body["message"].as_str().unwrap();
    assert!(message.contains("unknown"), "{message}");
    assert!(!message.contains("cancelled"), "{message}");

    // Let the saga and its compensation finish.
    shop.faults(shop.running.product, 0.0, 0).await;
    shop.faults(shop.running.payment, 0.0, 0).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cancelled = order(&shop, 1).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["cancelled_because"], "deadline_exceeded");
    if let Some(payment) = payment(&shop, 1).await {
        assert_eq!(payment["status"], "voided", "never left captured");
    }
    assert_eq!(shop.stock(2).await, stock, "the stock is back");
}

/// A step that would start after the deadline is not started: reading the
/// user and the product, then reserving it, take 1.9 s each against the
/// gateway's 5 s, so the reservation runs past the deadline and the charge
/// is never sent.
#[tokio::test(start_paused = true)]
async fn no_step_starts_after_the_deadline() {
    let shop = Shop::start().await;
    let stock = shop.stock(2).await;
    shop.faults(shop.running.user, 0.0, 1_900).await;
    shop.faults(shop.running.product, 0.0, 1_900).await;
    let answer = shop.order(1, 2, 1).await;
    assert_eq!(
        answer.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        answer.body
    );

    shop.faults(shop.running.user, 0.0, 0).await;
    shop.faults(shop.running.product, 0.0, 0).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(payment(&shop, 1).await, None, "the charge was never sent");
    assert_eq!(shop.stock(2).await, stock, "the reservation was released");
}

/// A client's own, shorter deadline (`grpc-timeout`) bounds the gateway's
/// calls and, through them, the saga; a request that arrives with no time
/// left is refused before any upstream is called.
#[tokio::test(start_paused = true)]
async fn a_clients_deadline_crosses_every_hop() {
    let shop = Shop::start().await;
    shop.faults(shop.running.payment, 0.0, 800).await;
    let body = json!({"user_id": 1, "product_id": 2, "quantity": 1});
    let started = tokio::time::Instant::now();
    let answer = shop
        .send(
            shop.running.gateway,
            Request::post("/api/orders")
                .header("authorization", bearer(1))
                .header("grpc-timeout", "500m"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        answer.body
    );
    assert_eq!(started.elapsed(), Duration::from_millis(500));
    shop.faults(shop.running.payment, 0.0, 0).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(order(&shop, 1).await["status"], "cancelled");

    let answer = shop
        .send(
            shop.running.gateway,
            Request::post("/api/orders")
                .header("authorization", bearer(1))
                .header("grpc-timeout", "0m"),
            Some(body),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        answer.body
    );
    assert!(
        answer.body["message"]
            .as_str()
            .unwrap()
            .contains("not sent")
    );
    let orders = shop
        .send(
            shop.running.order,
            Request::get("/orders").header("x-shop-customer", "1"),
            None,
        )
        .await;
    assert_eq!(orders.body.as_array().unwrap().len(), 1, "no second order");
}

/// An order its caller's deadline cancelled frees its Idempotency-Key: the
/// same key then places the order anew (the first one stays cancelled, its
/// payment voided), rather than answering "payment failed" forever.
#[tokio::test(start_paused = true)]
async fn an_order_its_deadline_cancelled_can_be_placed_again_with_its_key() {
    let shop = Shop::start().await;
    shop.faults(shop.running.payment, 0.0, 1_500).await;
    let place = |deadline: Option<&'static str>| {
        let mut request = Request::post("/orders")
            .header("x-shop-customer", "1")
            .header("idempotency-key", "k-1");
        if let Some(deadline) = deadline {
            request = request.header("grpc-timeout", deadline);
        }
        shop.send(
            shop.running.order,
            request,
            Some(json!({"user_id": 1, "product_id": 2, "quantity": 1})),
        )
    };
    let first = place(Some("1S")).await;
    assert_eq!(first.status, StatusCode::GATEWAY_TIMEOUT, "{}", first.body);
    assert_eq!(first.body["error"], "deadline_exceeded");
    assert_eq!(first.body["order"]["status"], "cancelled");

    shop.faults(shop.running.payment, 0.0, 0).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let again = place(None).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_eq!(again.body["id"], 2, "a new order");
    assert_eq!(again.body["status"], "confirmed");
    let repeated = place(None).await;
    assert_eq!(repeated.body["id"], 2, "the key now answers the new order");
    assert_eq!(
        order(&shop, 1).await["cancelled_because"],
        "deadline_exceeded"
    );
}
