//! What a client may and may not do through the gateway: the routes it
//! may call, the tokens it needs, the limit it cannot dodge, the orders
//! and idempotency keys that are its own, and the charges only the order
//! service can make. Real sockets on 127.0.0.1, tokio's paused clock.

mod support;

use std::time::Duration;

use http::{Method, Request, StatusCode};
use palisade_shop::ShopOptions;
use serde_json::json;
use support::{Shop, bearer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A token signed by `secret`, expiring `exp_offset` seconds from now
/// (negative: in the past).
fn token_with(secret: &str, kid: Option<&str>, sub: &str, exp_offset: i64) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    let exp = jsonwebtoken::get_current_timestamp() as i64 + exp_offset;
    let claims = json!({"sub": sub, "exp": exp});
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_client_cannot_charge_or_void_an_order_it_did_not_place() {
    let shop = Shop::start().await;
    let charge = json!({"order_id": 1, "amount": 1});
    // Through the gateway: the payment routes are not a customer's.
    for (method, path) in [
        (Method::POST, "/api/payments"),
        (Method::POST, "/api/payments/void"),
        (Method::GET, "/api/payments/1"),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", bearer(1));
        let answer = shop
            .send(shop.running.gateway, request, Some(charge.clone()))
            .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(answer.body["error"], "not_found", "{path}");
    }
    // At the payment service itself: no grant, a grant for another amount
    // or order, a grant signed with another secret, a customer's token.
    let other_secret = palisade_shop::auth::Grants::new("another-secret-0123456789abcdef-01");
    for authorization in [
        None,
        Some(support::grant("charge", 1, 999)),
        Some(support::grant("charge", 2, 1)),
        Some(support::grant("void", 1, 1)),
        Some(format!("Bearer {}", other_secret.sign("charge", 1, 1))),
        Some(bearer(1)),
    ] {
        let mut request = Request::post("/payments");
        if let Some(authorization) = &authorization {
            request = request.header("authorization", authorization);
        }
        let answer = shop
            .send(shop.running.payment, request, Some(charge.clone()))
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{authorization:?}");
        assert_eq!(answer.body["error"], "not_granted");
    }
    // So the order that takes id 1 is charged its own amount.
    let order = shop.order(1, 1, 1).await;
    assert_eq!(order.status, StatusCode::CREATED, "{}", order.body);
    assert_eq!(order.body["id"], 1);
    // Nor can its payment be voided without the order service's grant.
    let void = shop
        .send(
            shop.running.payment,
            Request::post("/payments/void").header("authorization", support::grant("void", 1, 5)),
            Some(json!({"order_id": 1, "amount": order.body["total"]})),
        )
        .await;
    assert_eq!(void.status, StatusCode::FORBIDDEN, "{}", void.body);
    let payment = shop
        .send(shop.running.payment, Request::get("/payments/1"), None)
        .await;
    assert_eq!(payment.body["status"], "captured");
    assert_eq!(payment.body["amount"], order.body["total"]);
    shop.running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_gateway_answers_only_the_routes_a_customer_may_call() {
    let shop = Shop::start().await;
    assert_eq!(shop.order(1, 2, 1).await.status, StatusCode::CREATED);
    // Another user's data, the list of users, payments: not routed.
    let users = shop.get_as(1, "/api/users").await;
    assert_eq!(users.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(users.headers["allow"], "POST");
    assert_eq!(users.body["error"], "method_not_allowed");
    let other = shop.get_as(1, "/api/users/2").await;
    assert_eq!(other.status, StatusCode::NOT_FOUND, "{}", other.body);
    let put = shop
        .send(
            shop.running.gateway,
            Request::put("/api/users/2").header("authorization", bearer(1)),
            Some(json!({"name": "Mallory", "email": "m@example.com"})),
        )
        .await;
    assert_eq!(put.status, StatusCode::NOT_FOUND);
    let grace = shop
        .send(shop.running.user, Request::get("/users/2"), None)
        .await;
    assert_eq!(grace.body["name"], "Grace Hopper", "unchanged");
    // A customer's own user, to read and change.
    let own = shop
        .send(
            shop.running.gateway,
            Request::put("/api/users/1").header("authorization", bearer(1)),
            Some(json!({"name": "Ada King", "email": "ada@example.com"})),
        )
        .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    assert_eq!(
        shop.get_as(1, "/api/users/1").await.body["name"],
        "Ada King"
    );
    let payment = shop.get_as(1, "/api/payments/1").await;
    assert_eq!(payment.status, StatusCode::NOT_FOUND);
    let delete = shop
        .send(
            shop.running.gateway,
            Request::delete("/api/orders/1").header("authorization", bearer(1)),
            None,
        )
        .await;
    assert_eq!(delete.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(delete.headers["allow"], "GET");
    assert_eq!(delete.body["error"], "method_not_allowed");
    shop.running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_missing_bad_or_expired_token_is_a_401_before_any_upstream_is_called() {
    let shop = Shop::start().await;
    // Any call that reached the order service would sit in this delay.
    shop.faults(shop.running.order, 0.0, 1_000).await;
    let body = json!({"user_id": 1, "product_id": 1, "quantity": 1});
    let order = |authorization: Option<String>| {
        let mut request = Request::post("/api/orders");
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        shop.send(shop.running.gateway, request, Some(body.clone()))
    };
    let missing = order(None).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.body["error"], "unauthorized");
    assert_eq!(missing.headers["www-authenticate"], "Bearer");
    for bad in [
        format!(
            "Bearer {}",
            token_with("not-the-key-0123456789abcdef-0123", Some("test"), "1", 60)
        ),
        format!(
            "Bearer {}",
            token_with(support::TEST_SECRET, Some("other"), "1", 60)
        ),
        "Bearer not.a.jwt".to_owned(),
        format!("Basic {}", support::token(1)),
    ] {
        let answer = order(Some(bad.clone())).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(answer.body["error"], "invalid_token", "{bad}");
        let challenge = answer.headers["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with(r#"Bearer error="invalid_token""#),
            "{challenge}"
        );
    }
    let expired = token_with(support::TEST_SECRET, Some("test"), "1", -120);
    let answer = order(Some(format!("Bearer {expired}"))).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body["error"], "token_expired");
    assert_eq!(
        answer.headers["www-authenticate"],
        r#"Bearer error="invalid_token", error_description="the token has expired""#
    );
    // An anonymous route refuses a bad token too, rather than ignore it.
    let browse = shop
        .send(
            shop.running.gateway,
            Request::get("/api/products/1").header("authorization", format!("Bearer {expired}")),
            None,
        )
        .await;
    assert_eq!(browse.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        shop.running.faults.order.delayed(),
        0,
        "the order service was called"
    );

    // The refusal comes from the request's head: a body announced but
    // never sent is not waited for.
    let mut stream = tokio::net::TcpStream::connect(shop.running.gateway)
        .await
        .unwrap();
    stream
        .write_all(
            b"POST /api/orders HTTP/1.1\r\nhost: shop\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut head))
        .await
        .expect("answered without the body")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 401");
    shop.running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_limit_keys_on_the_verified_customer_not_on_a_header_the_client_picks() {
    let options = ShopOptions::default()
        .settings("gateway.rate_limit = { limit = 5, window = \"60s\" }")
        .unwrap();
    let shop = Shop::with(options).await;
    let get = |client_id: String, authorization: Option<String>| {
        let mut request = Request::get("/api/products/1").header("x-client-id", client_id);
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        shop.send(shop.running.gateway, request, None)
    };
    // Anonymous: a new X-Client-ID each time changes nothing; the peer's
    // address is what counts.
    for i in 0..5 {
        assert_eq!(get(format!("anon-{i}"), None).await.status, StatusCode::OK);
    }
    let dodging = get("anon-new".into(), None).await;
    assert_eq!(dodging.status, StatusCode::TOO_MANY_REQUESTS);
    // A customer counts as themselves, whatever X-Client-ID says, and
    // whatever others at the same address have spent.
    for i in 0..5 {
        let answer = get(format!("rotating-{i}"), Some(bearer("alice"))).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.headers["ratelimit-remaining"], (4 - i).to_string());
    }
    let alice = get("rotating-new".into(), Some(bearer("alice"))).await;
    assert_eq!(alice.status, StatusCode::TOO_MANY_REQUESTS);
    let bob = get("rotating-new".into(), Some(bearer("bob"))).await;
    assert_eq!(bob.status, StatusCode::OK);
    assert_eq!(bob.headers["ratelimit-remaining"], "4");
    shop.running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn idempotency_keys_and_orders_belong_to_their_customer() {
    let shop = Shop::start().await;
    let order = |customer: u64, key: &'static str, body: serde_json::Value| {
        let request = Request::post("/api/orders")
            .header("idempotency-key", key)
            .header("authorization", bearer(customer));
        shop.send(shop.running.gateway, request, Some(body))
    };
    let ada = json!({"user_id": 1, "product_id": 1, "quantity": 1});
    let first = order(1, "checkout-1", ada.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.body["customer"], "1");
    // Another customer's same key is another order, not the first one.
    let grace = json!({"user_id": 2, "product_id": 1, "quantity": 1});
    let second = order(2, "checkout-1", grace).await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.body);
    assert_ne!(second.body["id"], first.body["id"]);
    assert_eq!(second.body["customer"], "2");
    // The same key with another request is refused, not answered with the
    // first order.
    let changed = json!({"user_id": 1, "product_id": 1, "quantity": 2});
    let reused = order(1, "checkout-1", changed).await;
    assert_eq!(
        reused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reused.body
    );
    assert_eq!(reused.body["error"], "idempotency_key_reused");
    assert!(reused.body["message"].is_string());
    // The same key with the same request is the first order.
    let again = order(1, "checkout-1", ada).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body, first.body);

    // Each customer sees their own orders only, even naming themselves
    // someone else in the header the gateway sets.
    let path = format!("/api/orders/{}", first.body["id"]);
    assert_eq!(shop.get_as(1, &path).await.status, StatusCode::OK);
    let peek = shop
        .send(
            shop.running.gateway,
            Request::get(path.as_str())
                .header("authorization", bearer(2))
                .header("x-shop-customer", "1"),
            None,
        )
        .await;
    assert_eq!(peek.status, StatusCode::NOT_FOUND, "{}", peek.body);
    let listed = shop.get_as(2, "/api/orders").await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
    assert_eq!(listed.body[0]["id"], second.body["id"]);
    // And orders only for themselves.
    let for_ada = order(
        2,
        "checkout-2",
        json!({"user_id": 1, "product_id": 1, "quantity": 1}),
    )
    .await;
    assert_eq!(for_ada.status, StatusCode::FORBIDDEN, "{}", for_ada.body);
    // The order service itself takes no order without a customer.
    let nobody = shop
        .send(
            shop.running.order,
            Request::post("/orders"),
            Some(json!({"user_id": 1, "product_id": 1, "quantity": 1})),
        )
        .await;
    assert_eq!(nobody.status, StatusCode::UNAUTHORIZED, "{}", nobody.body);
    shop.running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn every_405_is_a_json_error_with_allow() {
    let shop = Shop::start().await;
    for (addr, method, path, allow) in [
        // axum answers HEAD wherever it answers GET.
        (shop.running.user, Method::PATCH, "/users/1", "GET,HEAD,PUT"),
        (
            shop.running.product,
            Method::DELETE,
            "/products",
            "GET,HEAD",
        ),
        (shop.running.gateway, Method::POST, "/health", "GET,HEAD"),
        (
            shop.running.gateway,
            Method::PATCH,
            "/api/users/1",
            "GET, PUT",
        ),
    ] {
        let request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("authorization", bearer(1));
        let answer = shop.send(addr, request, None).await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(answer.headers["allow"], allow, "{path}");
        assert_eq!(answer.headers["content-type"], "application/json", "{path}");
        assert_eq!(answer.body["error"], "method_not_allowed", "{path}");
        let message = answer.body["message"].as_str().unwrap();
        assert!(message.contains(method.as_str()), "{path}: {message}");
    }
    shop.running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn error_messages_say_what_is_wrong_without_rust_type_names() {
    let shop = Shop::start().await;
    let raw = |addr, path: &str, body: &'static str| {
        let request = Request::post(path)
            .header("content-type", "application/json")
            .header("authorization", bearer(1))
            .header("x-shop-customer", "1");
        support::send_raw(&shop.client, addr, request, body)
    };
    let gateway = shop.running.gateway;
    for (addr, path, body, says) in [
        (gateway, "/api/users", "[]", "expected an object"),
        (
            gateway,
            "/api/users",
            "null",
            "invalid type: null, expected an object",
        ),
        (gateway, "/api/users", "\"ada\"", "expected an object"),
        (
            gateway,
            "/api/users",
            "{\"name\": 5, \"email\": \"a@b.c\"}",
            "name: invalid type: integer `5`, expected a string",
        ),
        (
            gateway,
            "/api/orders",
            "{\"user_id\": \"one\", \"product_id\": 1, \"quantity\": 1}",
            "user_id: invalid type: string \"one\", expected a whole number, 0 or more",
        ),
        (
            gateway,
            "/api/orders",
            "{\"user_id\": 1, \"product_id\": -1, \"quantity\": 1}",
            "product_id: invalid value: integer `-1`, expected a whole number, 0 or more",
        ),
        (
            gateway,
            "/api/orders",
            "{\"user_id\": 1, \"product_id\": 1}",
            "missing field `quantity`",
        ),
        (
            gateway,
            "/api/orders",
            "{\"user_id\": 1, \"product_id\": 1, \"quantity\": 1.5}",
            "expected a whole number, 0 or more",
        ),
        (
            gateway,
            "/api/users",
            "{\"name\": \"x\",",
            "the body is not valid JSON",
        ),
    ] {
        let answer = raw(addr, path, body).await;
        assert!(answer.status.is_client_error(), "{body}: {}", answer.status);
        let message = answer.body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(says),
            "{body}: {message:?} does not say {says:?}"
        );
        for rust in ["struct", "u64", "UserFields", "NewOrder", "line 1 column"] {
            assert!(!message.contains(rust), "{body}: {message:?} names {rust}");
        }
    }
    let answer = shop
        .send(shop.running.product, Request::get("/products/abc"), None)
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let message = answer.body["message"].as_str().unwrap();
    assert_eq!(
        message,
        "the id in the path must be a whole number: got `abc`"
    );
    shop.running.shutdown().await.unwrap();
}
