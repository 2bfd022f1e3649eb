//! The shop, started in-process on ephemeral ports, under tokio's paused
//! clock: sockets are real, while open periods, timeouts and injected
//! latency pass in virtual time (the test advances it, or the runtime does
//! when it has nothing else to do). Nothing sleeps in real time.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use palisade_shop::ShopOptions;
use serde_json::{Value, json};
use support::Shop;
use tokio::time::advance;

#[tokio::test(start_paused = true)]
async fn healthy_traffic_gets_answers_with_rate_limit_headers_and_a_request_id() {
    let shop = Shop::start().await;
    let answer = shop.get("/api/products/1").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["name"], "Mechanical keyboard");
    assert_eq!(answer.headers["ratelimit-limit"], "100");
    assert_eq!(answer.headers["ratelimit-remaining"], "99");
    assert!(answer.headers.contains_key("x-request-id"));
    // A caller's own id is kept.
    let own = shop
        .send(
            shop.running.gateway,
            Request::get("/api/users/1")
                .header("x-request-id", "trace-42")
                .header("authorization", support::bearer(1)),
            None,
        )
        .await;
    assert_eq!(own.headers["x-request-id"], "trace-42");
    assert_eq!(own.body["name"], "Ada Lovelace");
    let health = shop.get("/health").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["upstreams"]["product"]["circuit"], "closed");
    shop.running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failing_product_service_opens_the_breaker_then_recovers() {
    let shop = Shop::start().await;
    shop.faults(shop.running.product, 1.0, 0).await;
    // Each request makes up to 3 attempts; after 15 failed calls in a row
    // the breaker opens and the gateway answers 503 at once.
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(shop.get("/api/products/1").await.status.as_u16());
    }
    assert!(statuses.contains(&500), "{statuses:?}");
    let open = shop.get("/api/products/1").await;
    assert_eq!(open.status, StatusCode::SERVICE_UNAVAILABLE, "{statuses:?}");
    assert_eq!(open.body["error"], "circuit_open");
    assert!(open.headers.contains_key("retry-after"));
    // An answer the gateway made up still counts against the client's
    // limit, and says so.
    assert_eq!(open.headers["ratelimit-limit"], "100");
    let health = shop.get("/health").await;
    assert_eq!(health.body["upstreams"]["product"]["circuit"], "open");
    // Other upstreams are untouched.
    assert_eq!(shop.get_as(1, "/api/users/1").await.status, StatusCode::OK);

    shop.faults(shop.running.product, 0.0, 0).await;
    advance(Duration::from_secs(5)).await;
    for _ in 0..3 {
        assert_eq!(shop.get("/api/products/1").await.status, StatusCode::OK);
    }
    let health = shop.get("/health").await;
    assert_eq!(health.body["upstreams"]["product"]["circuit"], "closed");
}

#[tokio::test(start_paused = true)]
async fn a_slow_product_service_is_cut_off_at_the_attempt_timeout() {
    let shop = Shop::start().await;
    shop.faults(shop.running.product, 0.0, 3_000).await;
    let started = tokio::time::Instant::now();
    let answer = shop.get("/api/products/1").await;
    assert_eq!(
        answer.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        answer.body
    );
    assert_eq!(answer.body["error"], "timeout");
    // Three attempts of 2 s at most, with backoff between them: well short
    // of three 3 s answers.
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn one_client_over_its_limit_gets_429s_and_another_is_unaffected() {
    let options = ShopOptions::default()
        .settings("gateway.rate_limit = { limit = 5, window = \"60s\" }")
        .unwrap();
    let shop = Shop::with(options).await;
    // Two customers, told apart by their tokens.
    let as_client = |id: &'static str| {
        Request::get("/api/products/2").header("authorization", support::bearer(id))
    };
    for _ in 0..5 {
        let answer = shop
            .send(shop.running.gateway, as_client("greedy"), None)
            .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let limited = shop
        .send(shop.running.gateway, as_client("greedy"), None)
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.body["error"], "rate_limited");
    assert!(limited.headers.contains_key("retry-after"));
    assert_eq!(limited.headers["ratelimit-remaining"], "0");
    let other = shop
        .send(shop.running.gateway, as_client("polite"), None)
        .await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.headers["ratelimit-remaining"], "4");
}

#[tokio::test(start_paused = true)]
async fn a_failed_payment_cancels_the_order_and_restores_the_stock() {
    let shop = Shop::start().await;
    let before = shop.stock(4).await;
    shop.faults(shop.running.payment, 1.0, 0).await;
    let answer = shop.order(1, 4, 2).await;
    assert_eq!(
        answer.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        answer.body
    );
    assert_eq!(answer.body["error"], "payment_failed");
    assert_eq!(answer.body["order"]["status"], "cancelled");
    assert_eq!(shop.stock(4).await, before, "the stock is back");

    shop.faults(shop.running.payment, 0.0, 0).await;
    let answer = shop.order(1, 4, 2).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(answer.body["status"], "confirmed");
    assert_eq!(answer.body["total"], 25_000);
    assert_eq!(shop.stock(4).await, before - 2);
}

#[tokio::test(start_paused = true)]
async fn the_same_idempotency_key_places_one_order() {
    let shop = Shop::start().await;
    let before = shop.stock(2).await;
    let order = || {
        Request::post("/api/orders")
            .header("idempotency-key", "checkout-7f3a")
            .header("authorization", support::bearer(2))
    };
    let body = json!({"user_id": 2, "product_id": 2, "quantity": 3});
    let first = shop
        .send(shop.running.gateway, order(), Some(body.clone()))
        .await;
    let second = shop.send(shop.running.gateway, order(), Some(body)).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(second.status, StatusCode::CREATED);
    assert_eq!(first.body, second.body, "the same order");
    assert_eq!(shop.stock(2).await, before - 3, "reserved once");
    let orders = shop.get_as(2, "/api/orders").await;
    assert_eq!(orders.body.as_array().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_order_whose_caller_hangs_up_is_still_placed_once_and_found_by_its_key() {
    let shop = Shop::start().await;
    let before = shop.stock(3).await;
    // The payment takes a second; the caller gives up after a tenth.
    shop.faults(shop.running.payment, 0.0, 1_000).await;
    // Straight to the order service, as the gateway would call it.
    let order = || {
        Request::post("/orders")
            .header("idempotency-key", "hung-up-1")
            .header("x-shop-customer", "1")
    };
    let body = json!({"user_id": 1, "product_id": 3, "quantity": 2});
    let gave_up = tokio::time::timeout(
        Duration::from_millis(100),
        shop.send(shop.running.order, order(), Some(body.clone())),
    )
    .await;
    assert!(gave_up.is_err(), "the caller hung up first");
    advance(Duration::from_secs(2)).await;
    shop.faults(shop.running.payment, 0.0, 0).await;
    // The placing goes on without the caller, to its end.
    let mut waited = 0;
    while shop
        .get_as(1, "/api/orders")
        .await
        .body
        .as_array()
        .unwrap()
        .is_empty()
    {
        waited += 1;
        assert!(waited < 100, "the order was never recorded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The order was finished and recorded under its key: asking again
    // returns it, without reserving or charging again.
    let again = shop.send(shop.running.order, order(), Some(body)).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_eq!(again.body["status"], "confirmed");
    assert_eq!(shop.stock(3).await, before - 2, "reserved once");
    let orders = shop.get_as(1, "/api/orders").await;
    assert_eq!(orders.body.as_array().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_order_for_more_than_the_stock_is_refused_and_leaves_nothing_behind() {
    let shop = Shop::start().await;
    let before = shop.stock(4).await;
    let answer = shop.order(1, 4, before + 1).await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.body);
    assert_eq!(answer.body["error"], "out_of_stock");
    assert_eq!(shop.stock(4).await, before);
    let unknown_user = shop.order(999, 1, 1).await;
    assert_eq!(unknown_user.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(shop.get_as(1, "/api/orders").await.body, json!([]));
}

#[tokio::test(start_paused = true)]
async fn bad_input_gets_a_json_4xx_saying_what_is_wrong() {
    let shop = Shop::start().await;
    let gateway = shop.running.gateway;
    let raw = |body: &'static str| {
        let request = Request::post("/api/users").header("content-type", "application/json");
        (request, body)
    };
    for (body, status, error) in [
        (
            "{\"name\": \"x\", ",
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "{\"name\": 5, \"email\": \"a@b.c\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "{\"name\": \"x\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "{\"name\": \"\", \"email\": \"a@b.c\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "{\"name\": \"x\", \"email\": \"nope\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
    ] {
        let (request, body) = raw(body);
        let request = request
            .uri(format!("http://{gateway}/api/users"))
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = shop.client.request(request).await.unwrap();
        assert_eq!(response.status(), status, "{body}");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json: Value = serde_json::from_slice(&bytes).expect("a JSON error");
        assert_eq!(json["error"], error, "{body}");
        assert!(json["message"].is_string());
    }
    let answer = shop.get("/api/users/abc").await;
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_id"))
    );
    let answer = shop.get("/api/nothing/here").await;
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let answer = shop.get("/nowhere").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    // Over 1 MiB.
    let big = "x".repeat(1024 * 1024 + 1);
    let answer = shop
        .post("/api/users", json!({"name": big, "email": "a@b.c"}))
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.body["error"], "body_too_large");
    // Nothing was created by any of it (the list of users is the user
    // service's, not the gateway's).
    let users = shop
        .send(shop.running.user, Request::get("/users"), None)
        .await;
    assert_eq!(users.body.as_array().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_gateway_never_reaches_a_services_admin_endpoints() {
    let shop = Shop::start().await;
    for path in [
        "/api/products/../admin/faults",
        "/api/products/%2e%2e/admin/faults",
        "/api/admin/faults",
        "/admin/faults",
    ] {
        let answer = shop
            .send(
                shop.running.gateway,
                Request::builder().method(Method::PUT).uri(path),
                Some(json!({"error_rate": 1.0})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
    }
    // The product service still has no faults.
    assert_eq!(shop.get("/api/products/1").await.status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn with_a_token_admin_endpoints_answer_only_to_its_bearer() {
    let shop = Shop::with(ShopOptions {
        admin_token: Some("s3cret".into()),
        ..ShopOptions::default()
    })
    .await;
    let put = |auth: Option<&'static str>| {
        let request = Request::put("/admin/faults");
        match auth {
            Some(auth) => request.header("authorization", auth),
            None => request,
        }
    };
    let body = Some(json!({"error_rate": 0.5, "latency_ms": 0}));
    for auth in [
        None,
        Some("Bearer wrong!"),
        Some("Bearer s3cre"),
        Some("s3cret"),
    ] {
        let answer = shop
            .send(shop.running.product, put(auth), body.clone())
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{auth:?}");
    }
    let answer = shop
        .send(shop.running.product, put(Some("Bearer s3cret")), body)
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = shop
        .send(
            shop.running.gateway,
            Request::get("/admin/resilience"),
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let answer = shop
        .send(
            shop.running.gateway,
            Request::get("/admin/resilience").header("authorization", "Bearer s3cret"),
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.body["upstreams"]["product"]["breaker"]["state"],
        "closed"
    );
}

#[tokio::test(start_paused = true)]
async fn faults_reject_values_out_of_range() {
    let shop = Shop::start().await;
    for body in [
        json!({"error_rate": 1.5}),
        json!({"error_rate": -0.1}),
        json!({"latency_ms": 600_000}),
        json!({"error_rate": "high"}),
        json!({"surprise": 1}),
    ] {
        let answer = shop
            .send(
                shop.running.user,
                Request::put("/admin/faults"),
                Some(body.clone()),
            )
            .await;
        assert!(answer.status.is_client_error(), "{body}: {}", answer.status);
        assert!(answer.body["error"].is_string());
    }
    let answer = shop
        .send(shop.running.user, Request::get("/admin/faults"), None)
        .await;
    assert_eq!(answer.body, json!({"error_rate": 0.0, "latency_ms": 0}));
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_a_request_in_flight_finish() {
    let shop = Shop::start().await;
    shop.faults(shop.running.user, 0.0, 1_000).await;
    // Held inside the user service, in its injected delay.
    let slow = shop
        .get_in_flight("/api/users/1", &shop.running.faults.user)
        .await;
    let asked = tokio::time::Instant::now();
    shop.running.shutdown().await.unwrap();
    // Shutdown waited for the answer, a virtual second away.
    assert!(
        asked.elapsed() >= Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(slow.await.unwrap().unwrap(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn without_resilience_the_gateway_is_a_bare_proxy() {
    let shop = Shop::with(ShopOptions {
        resilience: false,
        ..ShopOptions::default()
    })
    .await;
    let answer = shop.get("/api/products/1").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(!answer.headers.contains_key("ratelimit-limit"));
    // No breaker opens, no retry is made: every failure comes through.
    shop.faults(shop.running.product, 1.0, 0).await;
    for _ in 0..30 {
        let answer = shop.get("/api/products/1").await;
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(shop.running.faults.product.failed(), 30);
    // No limit: far past the 100 a client may send.
    shop.faults(shop.running.product, 0.0, 0).await;
    for _ in 0..80 {
        assert_eq!(shop.get("/api/products/2").await.status, StatusCode::OK);
    }
    shop.running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_is_503_bulkhead_full_and_an_unreachable_upstream_502() {
    // A port with nothing listening on it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let options = ShopOptions::default()
        .settings(&format!(
            "[upstreams.user]\nbulkhead = {{ max_concurrent = 1 }}\n\
             [upstreams.product]\nurl = \"http://{closed}\"\n"
        ))
        .unwrap();
    let shop = Shop::with(options).await;

    // One slow call holds the user upstream's only slot.
    shop.faults(shop.running.user, 0.0, 1_000).await;
    let holding = shop
        .get_in_flight("/api/users/1", &shop.running.faults.user)
        .await;
    let full = shop.get_as(2, "/api/users/2").await;
    assert_eq!(
        full.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        full.body
    );
    assert_eq!(full.body["error"], "bulkhead_full");
    assert_eq!(holding.await.unwrap().unwrap(), StatusCode::OK);

    // Nothing answers where the product service is said to be.
    let unreachable = shop.get("/api/products/1").await;
    assert_eq!(
        unreachable.status,
        StatusCode::BAD_GATEWAY,
        "{}",
        unreachable.body
    );
    assert_eq!(unreachable.body["error"], "upstream_failed");
    // The text of the connection error stays in the gateway's log.
    assert!(
        !unreachable.body["message"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1")
    );
    shop.running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_order_is_never_a_paid_one() {
    let shop = Shop::start().await;
    // The payment service is down: the order is cancelled, and its void
    // waits in the background.
    shop.faults(shop.running.payment, 1.0, 0).await;
    let cancelled = shop.order(1, 1, 1).await;
    assert_eq!(
        cancelled.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        cancelled.body
    );
    let order_id = cancelled.body["order"]["id"].as_u64().unwrap();
    let amount = cancelled.body["order"]["total"].as_u64().unwrap();
    shop.faults(shop.running.payment, 0.0, 0).await;

    // A charge for the order reaching the payment service now (a late
    // retry, say) either comes before the void, and the void then voids
    // it, or after, and is refused. Either way no payment stays captured.
    let charge = || {
        shop.send(
            shop.running.payment,
            Request::post("/payments")
                .header("authorization", support::grant("charge", order_id, amount)),
            Some(json!({"order_id": order_id, "amount": amount})),
        )
    };
    let late = charge().await;
    match late.status {
        StatusCode::CREATED => {
            let id = late.body["id"].as_u64().unwrap();
            let mut status = Value::Null;
            for _ in 0..60 {
                advance(Duration::from_secs(1)).await;
                let path = format!("/payments/{id}");
                let payment = shop
                    .send(shop.running.payment, Request::get(path), None)
                    .await;
                status = payment.body["status"].clone();
                if status == "voided" {
                    break;
                }
            }
            assert_eq!(status, "voided", "the background void never landed");
        }
        StatusCode::CONFLICT => assert_eq!(late.body["error"], "voided"),
        other => panic!("{other}: {}", late.body),
    }
    // After the void, whenever it landed, a charge is refused.
    let after = charge().await;
    assert_eq!(after.status, StatusCode::CONFLICT);
    assert_eq!(after.body["error"], "voided");

    // The void is the order service's, not a client's to send through
    // the gateway; nor are reserving and releasing stock.
    for path in [
        "/api/payments/void",
        "/api/products/1/release",
        "/api/products/1/reserve",
    ] {
        let answer = shop
            .post(path, json!({"order_id": 99, "amount": 1, "quantity": 1}))
            .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
    }
    shop.running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_void_leaves_a_payment_of_another_amount_alone() {
    let shop = Shop::start().await;
    // A payment for order 1 of another amount (an order id reused after the
    // order service restarted, say): order 1's own charge fails on it, and
    // its void must not touch it.
    let other = shop
        .send(
            shop.running.payment,
            Request::post("/payments").header("authorization", support::grant("charge", 1, 1)),
            Some(json!({"order_id": 1, "amount": 1})),
        )
        .await;
    assert_eq!(other.status, StatusCode::CREATED);
    let cancelled = shop.order(1, 1, 1).await;
    assert_eq!(
        cancelled.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        cancelled.body
    );
    assert_eq!(cancelled.body["order"]["id"], 1);
    advance(Duration::from_secs(1)).await;
    let path = format!("/payments/{}", other.body["id"]);
    let payment = shop
        .send(shop.running.payment, Request::get(path), None)
        .await;
    assert_eq!(payment.body["status"], "captured");
    shop.running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn stock_a_failed_order_could_not_release_at_once_comes_back_later() {
    let shop = Shop::start().await;
    let before = shop.stock(3).await;
    // Order 1's charge will fail (an earlier charge for another amount),
    // after a second's delay; meanwhile the product service goes down, so
    // the release fails too.
    let earlier = shop
        .send(
            shop.running.payment,
            Request::post("/payments").header("authorization", support::grant("charge", 1, 1)),
            Some(json!({"order_id": 1, "amount": 1})),
        )
        .await;
    assert_eq!(earlier.status, StatusCode::CREATED);
    shop.faults(shop.running.payment, 0.0, 1_000).await;
    let order_service = shop.running.order;
    let client = shop.client.clone();
    let placing = tokio::spawn(async move {
        support::send(
            &client,
            order_service,
            Request::post("/orders").header("x-shop-customer", "1"),
            Some(json!({"user_id": 1, "product_id": 3, "quantity": 4})),
        )
        .await
    });
    while shop.running.faults.payment.delayed() == 0 {
        tokio::task::yield_now().await;
    }
    shop.faults(shop.running.product, 1.0, 0).await;
    let cancelled = placing.await.unwrap();
    assert_eq!(
        cancelled.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        cancelled.body
    );
    assert!(
        shop.running.faults.product.failed() > 0,
        "the release failed at first"
    );
    // Back up: the release, retried in the background, lands.
    shop.faults(shop.running.product, 0.0, 0).await;
    shop.faults(shop.running.payment, 0.0, 0).await;
    let mut stock = 0;
    for _ in 0..60 {
        advance(Duration::from_secs(1)).await;
        stock = shop.stock(3).await;
        if stock == before {
            break;
        }
    }
    assert_eq!(stock, before, "the stock came back");
    shop.running.shutdown().await.unwrap();
}

/// Voids that waited out a long payment outage all land once it is over:
/// the background retries share a budget that refills with time, so a long
/// run of failures cannot stop them for good.
#[tokio::test(start_paused = true)]
async fn compensation_outlasts_a_long_outage() {
    let shop = Shop::start().await;
    shop.faults(shop.running.payment, 1.0, 0).await;
    for _ in 0..20 {
        let answer = shop.order(1, 2, 1).await;
        assert_eq!(
            answer.status,
            StatusCode::PAYMENT_REQUIRED,
            "{}",
            answer.body
        );
    }
    // Long enough for every void to fail many times over.
    tokio::time::sleep(Duration::from_secs(120)).await;
    shop.faults(shop.running.payment, 0.0, 0).await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    for order_id in 1..=20 {
        // A void that landed refuses any later charge of the order.
        let charge = shop
            .send(
                shop.running.payment,
                Request::post("/payments")
                    .header("authorization", support::grant("charge", order_id, 5_400)),
                Some(json!({"order_id": order_id, "amount": 5_400})),
            )
            .await;
        assert_eq!(
            charge.status,
            StatusCode::CONFLICT,
            "order {order_id}: {}",
            charge.body
        );
        assert_eq!(charge.body["error"], "voided");
    }
}
