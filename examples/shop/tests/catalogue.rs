//! The product list's fallback: while the product service cannot answer,
//! `GET /api/products` is answered with the last good copy of the same
//! list, marked `X-Degraded: true`; nothing else ever is. On real sockets,
//! under tokio's paused clock.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use palisade::circuit_breaker::State;
use palisade::fallback::Reason;
use palisade_shop::ShopOptions;
use palisade_shop::catalogue::CatalogueFallback;
use support::Shop;
use tokio::time::advance;

/// An answer with its body as it came, byte for byte.
struct Raw {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Raw {
    fn degraded(&self) -> bool {
        self.headers.get("x-degraded").is_some_and(|v| v == "true")
    }
}

/// `GET path` through the gateway, anonymous, with `request_id`.
async fn get_raw(shop: &Shop, path: &str, request_id: &str) -> Raw {
    let request = Request::get(format!("http://{}{path}", shop.running.gateway))
        .header("x-request-id", request_id)
        .body(Full::<Bytes>::default())
        .unwrap();
    let (parts, body) = shop.client.request(request).await.unwrap().into_parts();
    Raw {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

fn fallback(shop: &Shop) -> CatalogueFallback {
    shop.running
        .control
        .catalogue_fallback()
        .expect("a fallback with resilience on")
}

fn product_circuit(shop: &Shop) -> State {
    shop.running
        .control
        .upstream("product")
        .unwrap()
        .breaker
        .state()
}

/// Fails every call to the product service until its circuit opens.
async fn open_the_product_circuit(shop: &Shop) {
    shop.faults(shop.running.product, 1.0, 0).await;
    for _ in 0..10 {
        if product_circuit(shop) == State::Open {
            return;
        }
        shop.get("/api/products/1").await;
    }
    assert_eq!(product_circuit(shop), State::Open);
}

#[tokio::test(start_paused = true)]
async fn while_the_product_circuit_is_open_the_list_is_its_last_good_copy_marked_degraded() {
    let shop = Shop::start().await;
    let healthy = get_raw(&shop, "/api/products", "healthy-1").await;
    assert_eq!(healthy.status, StatusCode::OK);
    assert!(!healthy.degraded());
    open_the_product_circuit(&shop).await;

    let copy = get_raw(&shop, "/api/products", "while-open-1").await;
    assert_eq!(copy.status, StatusCode::OK);
    assert!(copy.degraded(), "{:?}", copy.headers);
    assert_eq!(copy.body, healthy.body, "the last good list, byte for byte");
    // The copy answers this request: its id, not the one that fetched it.
    assert_eq!(copy.headers["x-request-id"], "while-open-1");
    assert_eq!(copy.headers["ratelimit-limit"], "100");

    // A product's own page never gets a copy: its price must be current.
    let detail = shop.get("/api/products/2").await;
    assert_eq!(detail.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(detail.body["error"], "circuit_open");
    assert!(!detail.headers.contains_key("x-degraded"));
    // A list never fetched while the service was well has no copy: the
    // error it would have had.
    let unseen = get_raw(&shop, "/api/products?sort=price", "while-open-2").await;
    assert_eq!(unseen.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!unseen.degraded());
    let unseen: serde_json::Value = serde_json::from_slice(&unseen.body).unwrap();
    assert_eq!(unseen["error"], "circuit_open");

    let handle = fallback(&shop).handle();
    assert_eq!(handle.served(Reason::CircuitOpen), 1);
    assert_eq!(handle.served_total(), 1);
    assert_eq!((handle.cache_hits(), handle.cache_misses()), (1, 1));
    // The breaker inside saw the calls refused, never the copy: still open.
    assert_eq!(product_circuit(&shop), State::Open);
    let admin = shop.get("/admin/resilience").await;
    let shown = &admin.body["catalogue_fallback"];
    assert_eq!(shown["name"], "catalogue");
    assert_eq!(shown["served"]["circuit_open"], 1);
    assert_eq!(shown["served"]["failure"], 0);
    assert_eq!(shown["cache"]["hits"], 1);
    assert_eq!(shown["cache"]["misses"], 1);
    assert_eq!(shown["cache"]["expired"], 0);
    assert_eq!(shown["cache"]["entries"], 1);
    // And in the scrape, under the fallback's name (the counts of every
    // test in this file, which share the recorder).
    let scrape = get_raw(&shop, "/metrics", "scrape-1").await;
    let text = String::from_utf8(scrape.body.to_vec()).unwrap();
    for series in [
        "palisade_fallback_served_total{name=\"catalogue\",reason=\"circuit_open\"}",
        "palisade_fallback_cache_total{name=\"catalogue\",result=\"hit\"}",
        "palisade_fallback_cache_total{name=\"catalogue\",result=\"miss\"}",
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }

    // Recovered (after the open period and the throttle's window): the
    // list is the service's again, unmarked, and shows what changed since
    // the copy was made.
    shop.faults(shop.running.product, 0.0, 0).await;
    advance(Duration::from_secs(10)).await;
    let order = shop.order(1, 4, 1).await;
    assert_eq!(order.status, StatusCode::CREATED, "{}", order.body);
    let fresh = get_raw(&shop, "/api/products", "recovered-1").await;
    assert_eq!(fresh.status, StatusCode::OK);
    assert!(!fresh.degraded(), "{:?}", fresh.headers);
    assert_ne!(fresh.body, healthy.body, "one USB-C dock fewer in stock");
    let list: serde_json::Value = serde_json::from_slice(&fresh.body).unwrap();
    assert_eq!(list[3]["stock"], 4);
    assert_eq!(handle.served_total(), 1, "no copy served since");
    shop.running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn failures_after_retry_and_timeouts_get_the_copy_too() {
    let shop = Shop::start().await;
    let healthy = get_raw(&shop, "/api/products", "healthy-1").await;
    // Failing, circuit still closed: retried, then the copy.
    shop.faults(shop.running.product, 1.0, 0).await;
    let failed = get_raw(&shop, "/api/products", "failing-1").await;
    assert_eq!(failed.status, StatusCode::OK);
    assert!(failed.degraded());
    assert_eq!(failed.body, healthy.body);
    assert_eq!(product_circuit(&shop), State::Closed);
    // Too slow: each attempt cut at its timeout, then the copy.
    shop.faults(shop.running.product, 0.0, 3_000).await;
    let slow = get_raw(&shop, "/api/products", "slow-1").await;
    assert_eq!(slow.status, StatusCode::OK);
    assert!(slow.degraded());
    assert_eq!(slow.body, healthy.body);
    let handle = fallback(&shop).handle();
    assert_eq!(handle.served(Reason::Failure), 1);
    assert_eq!(handle.served(Reason::Elapsed), 1);
    // The same faults on a product's own page: the errors as they are.
    let detail = shop.get("/api/products/1").await;
    assert_eq!(detail.status, StatusCode::GATEWAY_TIMEOUT);
    shop.faults(shop.running.product, 1.0, 0).await;
    let detail = shop.get("/api/products/1").await;
    assert_eq!(detail.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!detail.headers.contains_key("x-degraded"));
    assert_eq!(handle.served_total(), 2);
    shop.running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_copy_older_than_max_age_is_not_served() {
    let options = ShopOptions::default()
        .settings("[gateway.catalogue_fallback]\nmax_age = \"30s\"\n")
        .unwrap();
    let shop = Shop::with(options).await;
    let healthy = get_raw(&shop, "/api/products", "healthy-1").await;
    assert_eq!(healthy.status, StatusCode::OK);
    // Held open by hand, so that only the copy's age changes.
    let product = shop.running.control.upstream("product").unwrap();
    assert!(product.breaker.force_open());
    advance(Duration::from_secs(29)).await;
    let copy = get_raw(&shop, "/api/products", "at-29s").await;
    assert!(copy.degraded());
    assert_eq!(copy.body, healthy.body);
    advance(Duration::from_secs(1)).await;
    let too_old = get_raw(&shop, "/api/products", "at-30s").await;
    assert_eq!(too_old.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!too_old.degraded());
    let handle = fallback(&shop).handle();
    assert_eq!((handle.cache_hits(), handle.cache_expired()), (1, 1));
    let admin = shop.get("/admin/resilience").await;
    assert_eq!(admin.body["catalogue_fallback"]["cache"]["expired"], 1);
    shop.running.shutdown().await.unwrap();
}

/// A file of its own for one test, removed when dropped.
struct File(PathBuf);

impl Drop for File {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test(start_paused = true)]
async fn its_settings_reload_and_a_bad_one_is_refused_naming_the_field() {
    let path = std::env::temp_dir().join(format!(
        "palisade-shop-{}-catalogue.toml",
        std::process::id()
    ));
    std::fs::write(&path, "").unwrap();
    let file = File(path);
    let shop = Shop::with(ShopOptions {
        config_file: Some(file.0.clone()),
        ..ShopOptions::default()
    })
    .await;
    let defaults = shop.running.control.config().catalogue_fallback.clone();
    assert_eq!(defaults.max_age, Some(Duration::from_secs(300)));
    assert_eq!(get_raw(&shop, "/api/products", "h").await.status, 200);

    for (text, field) in [
        (
            "[gateway.catalogue_fallback]\nmax_age = \"0s\"\n",
            "gateway.catalogue_fallback.max_age: must be more than zero",
        ),
        (
            "[gateway.catalogue_fallback]\nmax_age = \"soon\"\n",
            "gateway.catalogue_fallback.max_age: ",
        ),
        (
            "[gateway.catalogue_fallback]\non = []\n",
            "gateway.catalogue_fallback.on: ",
        ),
        (
            "[gateway.catalogue_fallback]\non = [\"sometimes\"]\n",
            "gateway.catalogue_fallback.on",
        ),
        (
            "[gateway.catalogue_fallback]\nmax_entries = 0\n",
            "gateway.catalogue_fallback.max_entries: ",
        ),
        (
            "[gateway.catalogue_fallback]\nmaxage = \"1m\"\n",
            "gateway.catalogue_fallback.maxage: unknown field",
        ),
    ] {
        std::fs::write(&file.0, text).unwrap();
        let error = shop.running.reload_config().expect_err(text).to_string();
        assert!(error.contains(field), "{error:?} does not name {field}");
        // Refused whole: the fallback in force keeps its copy.
        assert_eq!(
            shop.running.control.config().catalogue_fallback,
            defaults,
            "{text}"
        );
    }
    assert_eq!(fallback(&shop).handle().cached(), 1);

    // Unchanged settings keep the copies; new ones start without.
    std::fs::write(&file.0, "[gateway.rate_limit]\nlimit = 50\n").unwrap();
    assert_eq!(
        shop.running.reload_config().unwrap(),
        ["gateway.rate_limit"]
    );
    assert_eq!(fallback(&shop).handle().cached(), 1);
    let longer =
        "[gateway.rate_limit]\nlimit = 50\n[gateway.catalogue_fallback]\nmax_age = \"1m\"\n";
    std::fs::write(&file.0, longer).unwrap();
    assert_eq!(
        shop.running.reload_config().unwrap(),
        ["gateway.catalogue_fallback"]
    );
    let config = shop.running.control.config();
    assert_eq!(
        config.catalogue_fallback.max_age,
        Some(Duration::from_secs(60))
    );
    assert_eq!(fallback(&shop).handle().cached(), 0);
    shop.running.shutdown().await.unwrap();
}
