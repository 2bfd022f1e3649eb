//! The shop started in-process for a test, and a client for it.

#![allow(dead_code)]

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use palisade_shop::auth::mint_hs256;
use palisade_shop::upstream::{HttpClient, http_client};
use palisade_shop::{Running, ShopOptions, start};
use serde_json::{Value, json};

/// The HS256 secret test shops check customers' tokens with (kid `test`):
/// the tests play the identity provider.
pub const TEST_SECRET: &str = "test-secret-0123456789abcdef-0123";

/// The secret of the order service's grants in test shops.
pub const CHARGE_SECRET: &str = "charge-secret-0123456789abcdef-01";

/// The settings every test shop starts with: the test key and the charge
/// secret, as a configuration file would give them.
pub const TEST_SETTINGS: &str = r#"
[gateway.auth]
keys = [{ kid = "test", alg = "HS256", secret = "test-secret-0123456789abcdef-0123" }]
[charges]
secret = "charge-secret-0123456789abcdef-01"
"#;

/// A token for customer `user`, good for an hour.
pub fn token(user: impl ToString) -> String {
    mint_hs256(
        TEST_SECRET.as_bytes(),
        Some("test"),
        &user.to_string(),
        std::time::Duration::from_secs(3600),
    )
}

/// `Authorization: Bearer` with a token for customer `user`.
pub fn bearer(user: impl ToString) -> String {
    format!("Bearer {}", token(user))
}

/// The order service's grant for `act` on `order_id` for `amount`, as
/// `Authorization` (for tests that play the order service).
pub fn grant(act: &str, order_id: u64, amount: u64) -> String {
    let grants = palisade_shop::auth::Grants::new(CHARGE_SECRET);
    format!("Bearer {}", grants.sign(act, order_id, amount))
}

pub struct Shop {
    pub running: Running,
    pub client: HttpClient,
}

/// An answer: status, headers, JSON body (`Null` when not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Value,
}

impl Shop {
    pub async fn start() -> Shop {
        Self::with(ShopOptions::default()).await
    }

    /// A shop with `options`, laid over [`TEST_SETTINGS`].
    pub async fn with(mut options: ShopOptions) -> Shop {
        let mut overrides: toml::Table = TEST_SETTINGS.parse().unwrap();
        palisade_shop::config::merge(&mut overrides, &options.overrides);
        options.overrides = overrides;
        Self::bare(options).await
    }

    /// A shop with `options` alone.
    pub async fn bare(options: ShopOptions) -> Shop {
        let running = start(ShopOptions {
            base_port: 0,
            ..options
        })
        .await
        .expect("the shop starts");
        Shop {
            running,
            client: http_client(),
        }
    }

    pub async fn send(
        &self,
        addr: SocketAddr,
        request: http::request::Builder,
        body: Option<Value>,
    ) -> Answer {
        send(&self.client, addr, request, body).await
    }

    /// `GET path` through the gateway as customer 1, in a task of its own,
    /// once `faults` (the service it reaches) has it in an injected delay:
    /// a call held in flight. Answers its status when it ends.
    pub async fn get_in_flight(
        &self,
        path: &str,
        faults: &palisade::chaos::Handle,
    ) -> tokio::task::JoinHandle<Result<StatusCode, hyper_util::client::legacy::Error>> {
        let delayed = faults.delayed();
        let client = self.client.clone();
        let uri = format!("http://{}{path}", self.running.gateway);
        let call = tokio::spawn(async move {
            let request = Request::get(uri)
                .header("authorization", bearer(1))
                .body(Full::<Bytes>::default())
                .unwrap();
            client.request(request).await.map(|r| r.status())
        });
        while faults.delayed() == delayed {
            tokio::task::yield_now().await;
        }
        call
    }

    /// `POST /api/orders` through the gateway as customer `user_id`,
    /// without an Idempotency-Key.
    pub async fn order(&self, user_id: u64, product_id: u64, quantity: u64) -> Answer {
        let body = json!({"user_id": user_id, "product_id": product_id, "quantity": quantity});
        self.post_as(user_id, "/api/orders", body).await
    }

    /// `GET path` through the gateway, anonymous.
    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.running.gateway, Request::get(path), None)
            .await
    }

    /// `GET path` through the gateway as customer `user`.
    pub async fn get_as(&self, user: u64, path: &str) -> Answer {
        let request = Request::get(path).header("authorization", bearer(user));
        self.send(self.running.gateway, request, None).await
    }

    /// `POST path` through the gateway, anonymous.
    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(self.running.gateway, Request::post(path), Some(body))
            .await
    }

    /// `POST path` through the gateway as customer `user`.
    pub async fn post_as(&self, user: u64, path: &str, body: Value) -> Answer {
        let request = Request::post(path).header("authorization", bearer(user));
        self.send(self.running.gateway, request, Some(body)).await
    }

    pub async fn faults(&self, service: SocketAddr, error_rate: f64, latency_ms: u64) {
        let answer = self
            .send(
                service,
                Request::put("/admin/faults"),
                Some(json!({"error_rate": error_rate, "latency_ms": latency_ms})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }

    pub async fn stock(&self, product: u64) -> u64 {
        let answer = self
            .send(
                self.running.product,
                Request::get(format!("/products/{product}")),
                None,
            )
            .await;
        answer.body["stock"].as_u64().expect("a stock figure")
    }
}

/// Sends `request` (its URI a path) to `addr`, with `body` as it is.
pub async fn send_raw(
    client: &HttpClient,
    addr: SocketAddr,
    request: http::request::Builder,
    body: &'static str,
) -> Answer {
    let mut request = request.body(Full::new(Bytes::from(body))).unwrap();
    let path = request.uri().path_and_query().unwrap().as_str().to_owned();
    *request.uri_mut() = format!("http://{addr}{path}").parse().unwrap();
    let (mut parts, body) = client
        .request(request)
        .await
        .expect("an answer")
        .into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: std::mem::take(&mut parts.headers),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// Sends `request` (its URI a path) to `addr`, with `body` as JSON.
pub async fn send(
    client: &HttpClient,
    addr: SocketAddr,
    request: http::request::Builder,
    body: Option<Value>,
) -> Answer {
    let (request, body) = match body {
        Some(body) => (
            request.header("content-type", "application/json"),
            Bytes::from(body.to_string()),
        ),
        None => (request, Bytes::new()),
    };
    let mut request = request.body(Full::new(body)).unwrap();
    let path = request.uri().path_and_query().unwrap().as_str().to_owned();
    *request.uri_mut() = format!("http://{addr}{path}").parse().unwrap();
    let (mut parts, body) = client
        .request(request)
        .await
        .expect("an answer")
        .into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: std::mem::take(&mut parts.headers),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}
