//! Replicas of the product service behind the gateway's balancer, on
//! tokio's paused clock (sockets real): a replica that fails every call is
//! ejected and clients see no errors; a reload adds and removes replicas.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use palisade::circuit_breaker::{Handle, State};
use palisade_shop::ShopOptions;
use support::Shop;

/// Three replicas of user and product; a limit no test reaches.
fn three_replicas() -> ShopOptions {
    ShopOptions {
        replicas: 3,
        ..ShopOptions::default()
    }
    .settings("gateway.rate_limit = { limit = 100000, window = \"60s\" }")
    .unwrap()
}

/// No error at all.
const NONE: [StatusCode; 0] = [];

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// The gateway's breaker for the product replica at `addr`, if its
/// balancer holds that replica.
fn breaker(shop: &Shop, addr: SocketAddr) -> Option<Handle> {
    let product = shop.running.control.upstream("product")?;
    let replicas = product.replicas?.replicas();
    replicas
        .into_iter()
        .find(|(base, _)| *base == url(addr))
        .map(|(_, breaker)| breaker)
}

/// `calls` product reads through the gateway, 10 ms apart; the statuses
/// other than 200.
async fn read_products(shop: &Shop, calls: usize) -> Vec<StatusCode> {
    let mut errors = Vec::new();
    for _ in 0..calls {
        let status = shop.get("/api/products/1").await.status;
        if status != StatusCode::OK {
            errors.push(status);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    errors
}

#[tokio::test(start_paused = true)]
async fn a_replica_failing_every_call_is_ejected_and_comes_back_healed() {
    let shop = Shop::with(three_replicas()).await;
    let products = &shop.running.products;
    assert_eq!(products.len(), 3);
    assert_eq!(read_products(&shop, 30).await, NONE);
    let (sick, faults) = &products[2];
    shop.faults(*sick, 1.0, 0).await;
    // The first failures reach the sick replica; retry sends them on
    // through the balancer (a call fails only if p2c draws the sick replica
    // for all three attempts), and after 5 in a row its breaker takes it
    // out.
    let mut calls = 0;
    while breaker(&shop, *sick).unwrap().state() != State::Open {
        calls += 1;
        assert!(calls < 1_000, "the sick replica was never ejected");
        read_products(&shop, 1).await;
    }
    let failed_before = faults.failed();
    assert!(failed_before >= 5, "{failed_before}");
    let admin = shop.get("/admin/resilience").await.body;
    let shown = &admin["upstreams"]["product"]["replicas"];
    assert_eq!(shown[url(*sick)]["state"], "open", "{shown}");
    assert_eq!(shown[url(products[0].0)]["state"], "closed", "{shown}");
    // Out of the rotation for its open period (5 s): 300 calls, none of
    // them sent to it, and no client sees an error.
    assert_eq!(read_products(&shop, 300).await, NONE);
    assert_eq!(faults.failed(), failed_before);
    // The service as a whole stayed healthy.
    let product = shop.running.control.upstream("product").unwrap();
    assert_eq!(product.breaker.state(), State::Closed);

    // Healed: after its open period a probe goes to it, and it serves again.
    shop.faults(*sick, 0.0, 0).await;
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(read_products(&shop, 300).await, NONE);
    let sick_breaker = breaker(&shop, *sick).unwrap();
    assert_eq!(sick_breaker.state(), State::Closed);
    assert!(
        sick_breaker.snapshot().calls > 10,
        "it takes its share again"
    );
    shop.running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_reload_adds_and_removes_replicas() {
    let file = std::env::temp_dir().join(format!(
        "palisade-shop-replicas-{}.toml",
        std::process::id()
    ));
    std::fs::write(&file, "").unwrap();
    let shop = Shop::with(ShopOptions {
        config_file: Some(file.clone()),
        ..three_replicas()
    })
    .await;
    let [(p0, f0), (p1, _), (p2, f2)] = [0, 1, 2].map(|n| shop.running.products[n].clone());
    // A round trip of 1 ms each, as on a network: peak-EWMA then sees the
    // replicas' costs (on the paused clock every answer would take none,
    // and a replica added could never look cheaper than one that answered).
    for (replica, _) in &shop.running.products {
        shop.faults(*replica, 0.0, 1).await;
    }
    // By default the balancer holds the three replicas started.
    read_products(&shop, 10).await;
    for replica in [p0, p1, p2] {
        assert!(breaker(&shop, replica).is_some(), "{replica}");
    }

    // Removed: the file lists two of them.
    let endpoints = |addrs: [SocketAddr; 2]| {
        format!(
            "[upstreams.product]\nendpoints = [\"{}\", \"{}\"]\n",
            url(addrs[0]),
            url(addrs[1])
        )
    };
    std::fs::write(&file, endpoints([p0, p1])).unwrap();
    let changed = shop.running.reload_config().unwrap();
    assert_eq!(changed, ["upstreams.product.endpoints"]);
    // A call that would reach it now fails: none does.
    f2.set_error_rate(1.0).unwrap();
    assert_eq!(read_products(&shop, 100).await, NONE);
    assert_eq!(f2.failed(), 0);
    assert!(breaker(&shop, p2).is_none());

    // Added back, and another removed; the one that stayed kept its
    // breaker (the same counts).
    let p1_calls = breaker(&shop, p1).unwrap().snapshot().calls;
    assert!(p1_calls > 0);
    f2.set_error_rate(0.0).unwrap();
    f0.set_error_rate(1.0).unwrap();
    std::fs::write(&file, endpoints([p1, p2])).unwrap();
    shop.running.reload_config().unwrap();
    assert_eq!(read_products(&shop, 100).await, NONE);
    assert_eq!(f0.failed(), 0);
    assert!(breaker(&shop, p0).is_none());
    let added = breaker(&shop, p2).expect("the replica added is in the balancer");
    assert!(added.snapshot().calls > 0, "the replica added serves");
    assert!(breaker(&shop, p1).unwrap().snapshot().calls > p1_calls);

    // The order service's balancer took the same list.
    let placed = shop.order(1, 1, 1).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.body);
    let orders_products = shop.running.orders.products.replicas.as_ref().unwrap();
    let held: BTreeSet<String> = orders_products
        .replicas()
        .into_iter()
        .map(|(base, _)| base)
        .collect();
    assert_eq!(held, BTreeSet::from([url(p1), url(p2)]));
    shop.running.shutdown().await.unwrap();
    let _ = std::fs::remove_file(&file);
}

#[tokio::test(start_paused = true)]
async fn with_one_replica_there_is_no_balancer() {
    let shop = Shop::start().await;
    let product = shop.running.control.upstream("product").unwrap();
    assert!(product.replicas.is_none());
    assert_eq!(shop.running.products.len(), 1);
    assert_eq!(shop.get("/api/products/1").await.status, StatusCode::OK);
}
