//! `GET /metrics` on the gateway: palisade's layers and the services'
//! requests, in Prometheus's text format.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::Shop;

/// The scrape's status, content type and text.
async fn scrape(shop: &Shop) -> (StatusCode, String, String) {
    let request = Request::get(format!("http://{}/metrics", shop.running.gateway))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = shop.client.request(request).await.expect("an answer");
    let status = response.status();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8(text.to_vec()).unwrap(),
    )
}

#[tokio::test(start_paused = true)]
async fn the_gateway_exposes_the_layers_and_the_requests() {
    let shop = Shop::start().await;
    assert_eq!(shop.get("/api/products/1").await.status, StatusCode::OK);
    let (status, content_type, text) = scrape(&shop).await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    // Each upstream's breaker shows exactly one state at 1: closed.
    for upstream in ["user", "order", "product", "payment"] {
        let closed =
            format!("palisade_circuit_breaker_state{{name=\"{upstream}\",state=\"closed\"}} 1");
        assert!(text.contains(&closed), "{closed} missing from:\n{text}");
        let open =
            format!("palisade_circuit_breaker_state{{name=\"{upstream}\",state=\"open\"}} 0");
        assert!(text.contains(&open), "{open} missing");
    }
    assert!(
        text.contains("palisade_circuit_breaker_calls_total{name=\"product\",outcome=\"success\"}"),
        "{text}"
    );
    // The services' requests, by service and status code.
    for service in ["gateway", "product"] {
        let requests = format!("shop_http_requests_total{{service=\"{service}\",code=\"200\"}}");
        assert!(text.contains(&requests), "{requests} missing");
    }
    assert!(
        text.contains("shop_http_request_duration_seconds"),
        "{text}"
    );
    shop.running.shutdown().await.unwrap();
}
