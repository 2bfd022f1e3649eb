//! The shop's layers serve callers better than no layers when an upstream
//! fails part of its calls, and shield it when it fails all of them. Real
//! sockets on 127.0.0.1, tokio's paused clock.

mod support;

use http::{Request, StatusCode};
use palisade_shop::ShopOptions;
use support::Shop;

const REQUESTS: u64 = 1_000;

/// A shop whose ingress limit does not get in the way of one client's 1 000
/// requests, with or without palisade's layers.
async fn shop(resilience: bool) -> Shop {
    let options = ShopOptions {
        resilience,
        ..ShopOptions::default()
    }
    .settings("gateway.rate_limit = { limit = 100000, window = \"60s\" }")
    .unwrap();
    Shop::with(options).await
}

/// What callers got through the gateway, and what the product service saw.
struct Served {
    succeeded: u64,
    /// Calls that reached the product service: each injected failure, and
    /// each success (a request succeeds at most once).
    upstream_calls: u64,
    /// Requests answered without any time passing (refused at once).
    answered_at_once: u64,
}

async fn drive(shop: &Shop, error_rate: f64) -> Served {
    shop.faults(shop.running.product, error_rate, 0).await;
    let failed_before = shop.running.faults.product.failed();
    let mut served = Served {
        succeeded: 0,
        upstream_calls: 0,
        answered_at_once: 0,
    };
    for _ in 0..REQUESTS {
        let started = tokio::time::Instant::now();
        let answer = shop
            .send(shop.running.gateway, Request::get("/api/products/1"), None)
            .await;
        served.succeeded += u64::from(answer.status == StatusCode::OK);
        if started.elapsed().is_zero() && answer.status != StatusCode::OK {
            served.answered_at_once += 1;
        }
        // Traffic spread over time, as real traffic is.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let failed = shop.running.faults.product.failed() - failed_before;
    served.upstream_calls = failed + served.succeeded;
    served
}

fn rate(served: &Served) -> f64 {
    served.succeeded as f64 / REQUESTS as f64
}

/// At 30 % random errors the layered stack succeeds at least as often as
/// the bare proxy, and at least 85 % of the time, while the product service
/// sees at most 1.5 times the requests; its breaker does not open by
/// chance.
#[tokio::test(start_paused = true)]
async fn at_30_percent_errors_the_layers_serve_callers_better_than_none() {
    let bare = drive(&shop(false).await, 0.3).await;
    let layered_shop = shop(true).await;
    let layered = drive(&layered_shop, 0.3).await;
    let amplification = layered.upstream_calls as f64 / REQUESTS as f64;
    eprintln!(
        "30 % errors: {:.1} % served through the layers ({amplification:.2} × upstream calls), {:.1} % bare",
        100.0 * rate(&layered),
        100.0 * rate(&bare)
    );
    assert!(
        rate(&layered) >= rate(&bare) && rate(&layered) >= 0.85,
        "served {:.1} % with the layers, {:.1} % bare",
        100.0 * rate(&layered),
        100.0 * rate(&bare)
    );
    assert!(
        amplification <= 1.5,
        "the product service saw {amplification:.2} × the requests"
    );
    let product = layered_shop.running.control.upstream("product").unwrap();
    assert_eq!(product.transitions.total(), 0, "the breaker never opened");
}

/// With every call failing the breaker opens, later answers come at once,
/// and the product service sees at most 1.2 times the requests.
#[tokio::test(start_paused = true)]
async fn when_every_call_fails_the_breaker_opens_and_shields_the_upstream() {
    let shop = shop(true).await;
    let served = drive(&shop, 1.0).await;
    let amplification = served.upstream_calls as f64 / REQUESTS as f64;
    eprintln!(
        "100 % errors: {amplification:.3} × upstream calls, {} of {REQUESTS} answered at once",
        served.answered_at_once
    );
    assert_eq!(served.succeeded, 0);
    assert!(
        amplification <= 1.2,
        "the product service saw {amplification:.2} × the requests"
    );
    assert!(
        served.answered_at_once as f64 >= 0.8 * REQUESTS as f64,
        "{} of {REQUESTS} answered at once",
        served.answered_at_once
    );
    let product = shop.running.control.upstream("product").unwrap();
    assert!(product.transitions.total() >= 1, "the breaker opened");
}
