//! Each service running alone, finding the others through the
//! `*_SERVICE_URL` variables, as separate processes would.

mod support;

use std::collections::HashMap;

use http::{Request, StatusCode};
use palisade_shop::{ShopOptions, Single, start_service, urls_from_env};
use serde_json::json;

async fn alone(name: &str, env: &HashMap<&str, String>) -> Single {
    // The gateway's key, and the secret the order and payment services
    // share: separate processes cannot make one up between them.
    let options = ShopOptions {
        base_port: 0,
        ..ShopOptions::default()
    }
    .settings(support::TEST_SETTINGS)
    .unwrap();
    let urls = urls_from_env(8000, |var| env.get(var).cloned());
    start_service(name, options, urls).await.expect(name)
}

#[tokio::test(start_paused = true)]
async fn services_started_alone_find_each_other_through_the_environment() {
    let mut env = HashMap::new();
    let mut services = Vec::new();
    for (name, var) in [
        ("user", "USER_SERVICE_URL"),
        ("product", "PRODUCT_SERVICE_URL"),
        ("payment", "PAYMENT_SERVICE_URL"),
        ("order", "ORDER_SERVICE_URL"),
    ] {
        let service = alone(name, &env).await;
        env.insert(var, format!("http://{}", service.addr));
        services.push(service);
    }
    let gateway = alone("gateway", &env).await;
    assert!(gateway.control.is_some());

    let client = palisade_shop::upstream::http_client();
    let answer = support::send(
        &client,
        gateway.addr,
        Request::post("/api/orders").header("authorization", support::bearer(3)),
        Some(json!({"user_id": 3, "product_id": 2, "quantity": 1})),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(answer.body["status"], "confirmed");
    let health = support::send(&client, gateway.addr, Request::get("/health"), None).await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);

    gateway.shutdown().await.unwrap();
    for service in services {
        service.shutdown().await.unwrap();
    }
}

#[test]
fn without_the_variables_services_are_found_on_the_default_ports() {
    let urls = urls_from_env(9000, |var| {
        (var == "PAYMENT_SERVICE_URL").then(|| "http://pay.internal:80".to_owned())
    });
    assert_eq!(urls.user, "http://127.0.0.1:9001");
    assert_eq!(urls.order, "http://127.0.0.1:9002");
    assert_eq!(urls.product, "http://127.0.0.1:9003");
    assert_eq!(urls.payment, "http://pay.internal:80");
}

#[tokio::test]
async fn an_unknown_service_is_refused() {
    let error = start_service(
        "inventory",
        ShopOptions::default(),
        urls_from_env(8000, |_| None),
    )
    .await
    .expect_err("no such service");
    assert!(error.to_string().contains("inventory"), "{error}");
}
