//! Gateways sharing their per-client limit in a real `redis-server` (each
//! test starts its own on a free loopback port): the limit holds across
//! gateways, and with Redis gone each gateway answers in the configured
//! failure mode. These run on the real clock, as Redis decides time; they
//! count answers and never assert a duration.

mod support;

// The library's own.
#[path = "../../../tests/support/redis_server.rs"]
mod redis_server;

use std::net::SocketAddr;

use http::{Request, StatusCode};
use palisade_shop::ShopOptions;
use redis_server::RedisServer;
use serde_json::Value;
use support::Shop;

/// Two gateways in front of the services, their limit of `limit` an hour
/// per client kept in `redis`, failing over to `on_failure`. A decision
/// may take 2 s: these tests count admissions, which a timeout on a
/// loaded machine would skew.
async fn two_gateways(redis: &RedisServer, limit: u64, on_failure: &str) -> Shop {
    let options = ShopOptions {
        gateway_replicas: 2,
        ..ShopOptions::default()
    }
    .settings(&format!(
        r#"
        [gateway.rate_limit]
        limit = {limit}
        window = "1h"
        [gateway.rate_limit.redis]
        url = "{url}"
        decision_timeout = "2s"
        on_failure = "{on_failure}"
        replicas = 2
        "#,
        url = redis.url(),
    ))
    .unwrap();
    let shop = Shop::with(options).await;
    assert_eq!(shop.running.gateways.len(), 2);
    shop
}

/// `calls` requests from one customer, alternating between the gateways;
/// the statuses, in order.
async fn alternating(shop: &Shop, calls: usize) -> Vec<StatusCode> {
    let mut statuses = Vec::new();
    for n in 0..calls {
        let (gateway, _) = &shop.running.gateways[n % 2];
        statuses.push(get_as_customer(shop, *gateway).await.status);
    }
    statuses
}

async fn get_as_customer(shop: &Shop, gateway: SocketAddr) -> support::Answer {
    let request = Request::get("/api/products/1").header("authorization", support::bearer(7));
    shop.send(gateway, request, None).await
}

fn count(statuses: &[StatusCode], status: StatusCode) -> usize {
    statuses.iter().filter(|&&s| s == status).count()
}

/// `GET /admin/resilience` of `gateway`: its `ingress` figures.
async fn ingress(shop: &Shop, gateway: SocketAddr) -> Value {
    let answer = shop
        .send(gateway, Request::get("/admin/resilience"), None)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["ingress"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_admit_one_clients_limit_once_between_them() {
    let redis = RedisServer::start();
    let shop = two_gateways(&redis, 6, "fail_closed").await;
    let statuses = alternating(&shop, 20).await;
    // Each gateway alone would have admitted 6 (12 in all).
    assert_eq!(count(&statuses, StatusCode::OK), 6, "{statuses:?}");
    assert_eq!(
        count(&statuses, StatusCode::TOO_MANY_REQUESTS),
        14,
        "{statuses:?}"
    );
    // The same answers as the in-process limiter's, from either gateway.
    for (gateway, _) in &shop.running.gateways {
        let refused = get_as_customer(&shop, *gateway).await;
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.body["error"], "rate_limited", "{}", refused.body);
        assert!(refused.headers.contains_key("retry-after"));
        assert_eq!(refused.headers["ratelimit-limit"], "6");
        assert_eq!(refused.headers["ratelimit-remaining"], "0");
    }
    // Another customer has a limit of their own.
    let other = Request::get("/api/products/1").header("authorization", support::bearer(8));
    let other = shop.send(shop.running.gateway, other, None).await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.headers["ratelimit-remaining"], "5");
    // Each gateway shows where its limit is kept, and what it decided.
    let mut decisions = 0;
    for (gateway, _) in &shop.running.gateways {
        let ingress = ingress(&shop, *gateway).await;
        assert_eq!(ingress["store"], "redis", "{ingress}");
        assert_eq!(ingress["mode"], "shared", "{ingress}");
        assert_eq!(ingress["counts"]["store_failures"], 0, "{ingress}");
        decisions += ingress["counts"]["decisions"].as_u64().unwrap();
    }
    assert_eq!(decisions, 20 + 2 + 1);
    shop.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_killed_each_gateway_keeps_its_share_of_the_limit_locally() {
    let mut redis = RedisServer::start();
    let shop = two_gateways(&redis, 6, "local").await;
    let shared = alternating(&shop, 2).await;
    assert_eq!(shared, [StatusCode::OK; 2]);
    redis.kill();
    // Each gateway now admits its share, 6 / 2 replicas = 3, on its own.
    let statuses = alternating(&shop, 20).await;
    assert_eq!(count(&statuses, StatusCode::OK), 6, "{statuses:?}");
    assert_eq!(
        count(&statuses, StatusCode::TOO_MANY_REQUESTS),
        14,
        "{statuses:?}"
    );
    for (gateway, _) in &shop.running.gateways {
        let ingress = ingress(&shop, *gateway).await;
        assert_eq!(ingress["mode"], "local", "{ingress}");
        assert!(ingress["last_error"].is_string(), "{ingress}");
        assert!(
            ingress["counts"]["decided_without_store"].as_u64().unwrap() >= 10,
            "{ingress}"
        );
    }
    shop.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_killed_and_fail_closed_every_call_is_refused() {
    let mut redis = RedisServer::start();
    let shop = two_gateways(&redis, 100, "fail_closed").await;
    assert_eq!(alternating(&shop, 2).await, [StatusCode::OK; 2]);
    redis.kill();
    let statuses = alternating(&shop, 10).await;
    assert_eq!(statuses, [StatusCode::TOO_MANY_REQUESTS; 10]);
    let refused = get_as_customer(&shop, shop.running.gateway).await;
    assert_eq!(refused.body["error"], "rate_limited", "{}", refused.body);
    for (gateway, _) in &shop.running.gateways {
        let ingress = ingress(&shop, *gateway).await;
        assert_eq!(ingress["mode"], "fail_closed", "{ingress}");
    }
    shop.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn more_than_one_gateway_without_redis_is_refused() {
    let options = ShopOptions {
        gateway_replicas: 2,
        base_port: 0,
        ..ShopOptions::default()
    };
    let error = palisade_shop::start(options).await.unwrap_err();
    assert!(error.to_string().contains("--redis-url"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reaches_every_gateway() {
    let redis = RedisServer::start();
    let file = std::env::temp_dir().join(format!(
        "palisade-shop-shared-limit-{}.toml",
        std::process::id()
    ));
    let settings = |limit: u64| {
        format!(
            "[gateway.rate_limit]\nlimit = {limit}\nwindow = \"1h\"\n\
             [gateway.rate_limit.redis]\nurl = \"{}\"\ndecision_timeout = \"2s\"\n",
            redis.url()
        )
    };
    std::fs::write(&file, settings(3)).unwrap();
    let options = ShopOptions {
        gateway_replicas: 2,
        config_file: Some(file.clone()),
        ..ShopOptions::default()
    };
    let shop = Shop::with(options).await;
    assert_eq!(count(&alternating(&shop, 4).await, StatusCode::OK), 3);
    std::fs::write(&file, settings(5)).unwrap();
    let changed = shop.running.reload_config().unwrap();
    assert_eq!(changed, ["gateway.rate_limit"]);
    for (_, gateway) in &shop.running.gateways {
        assert_eq!(gateway.config().rate_limit().0, 5);
    }
    // The counts stayed in Redis: 3 spent of the new 5.
    assert_eq!(count(&alternating(&shop, 4).await, StatusCode::OK), 2);
    shop.running.shutdown().await.unwrap();
    let _ = std::fs::remove_file(&file);
}
