//! The common stacks in one call: [`ClientLayer`], every layer a client of a
//! dependency needs, in the order that works, with one name and one
//! configuration; and, with the `http` and `rate-limit` features,
//! `ServerLayer`, the same for an HTTP server (see [Servers](#servers)).
//!
//! A client stack has six layers, outermost first:
//!
//! 1. a **total timeout**, which bounds the caller's wait, retries included,
//!    and hands its deadline to the layers below;
//! 2. **retry**, with a budget of half a retry per request;
//! 3. **client-side throttling**, which refuses locally what an overloaded
//!    dependency would refuse (so that those retries cannot feed an
//!    overload), and whose refusals are never retried;
//! 4. the **circuit breaker**, which stops calling a dependency that is
//!    down;
//! 5. an **attempt timeout**, so that a hung attempt is a failure the
//!    breaker sees;
//! 6. a fail-fast **bulkhead**, holding its slots only while an attempt is
//!    in flight.
//!
//! The crate docs ("Which tool for which failure", "Which order") say why
//! each is there and in that place. The preset's defaults are the crate's
//! recommended stack: each layer's own defaults, except the retry budget,
//! which is `RetryBudget::windowed(10 s, 10, 0.5)` (generous, because the
//! throttle below it stops retries from feeding an overload), plus a 30 s
//! total timeout, a 10 s attempt timeout and 100 calls in flight.
//!
//! # Light traffic
//!
//! The throttle acts once failures outnumber the accepts in its 10 s
//! window; the breaker once 90 % of its last 100 calls failed. Under heavy
//! traffic the breaker answers an outage first, and the throttle then
//! leaves it to the breaker. Under light traffic (under about ten calls a
//! second) the window holds few accepts and the throttle acts first: it
//! refuses nine calls in ten at once, lets the tenth fail, and the breaker
//! sees too few calls to open for a long while. For such a client, add
//! `consecutive_failures` to the breaker, below the throttle's
//! `min_requests` (15, say, under its 20): a dependency that is down fails
//! every call, and fifteen in a row open the breaker before the throttle
//! may act. It is not the default because at high error rates, and under
//! an overload, failures come in runs, and it opens the breaker on a
//! dependency still serving part of its calls: in the README's wind
//! tunnel, twenty in a row took the brown-out ramp from 76.5 % served to
//! 74.1 %, and fifteen took the overload whose refusals cost capacity
//! from 40.3 % to 33.7 %.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), palisade::BoxError> {
//! use std::time::Duration;
//! use palisade::preset::ClientLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! let inventory = service_fn(|sku: u32| async move { Ok::<_, palisade::BoxError>(sku * 2) });
//! let layer = ClientLayer::builder()
//!     .name("inventory")
//!     .total_timeout(Duration::from_secs(5))
//!     .attempt_timeout(Duration::from_secs(1))
//!     .max_concurrent(64)
//!     .build()?;
//! let handles = layer.handles();
//! let client = ServiceBuilder::new().layer(layer).service(inventory);
//! assert_eq!(client.oneshot(21).await?, 42);
//! assert_eq!(handles.circuit_breaker.name(), "inventory");
//! # Ok(())
//! # }
//! ```
//!
//! # Checked together
//!
//! [`build`](ClientBuilder::build) checks each layer's settings as that
//! layer's builder would, then the settings that only make sense together,
//! and reports every one of those that fails at once, each naming its field,
//! in one [`ConfigError`](crate::ConfigError):
//!
//! - the attempt timeout is at most the total timeout, and so is retry's own
//!   deadline;
//! - the retries' delays fit in the total timeout: the longest delay the
//!   backoff and its jitter can draw before each retry, added up, is at most
//!   the total timeout, or the last retries are settings that may never act
//!   (attempts are not counted in: most failures come back faster than the
//!   attempt timeout, so an attempt timeout equal to the total is allowed);
//! - a slow-call threshold is below the attempt timeout (a call cut at the
//!   attempt timeout is a failure, so a threshold at or above it never
//!   fires);
//! - the breaker needs more calls than one request's attempts before it
//!   judges (`minimum_calls` and `consecutive_failures` above
//!   `max_attempts`), so that one unlucky request cannot open it;
//! - a time window is at least twice the attempt timeout, so that it holds
//!   several attempts that ran to their timeout, and at least the total
//!   timeout, so that it sees a request's attempts together.
//!
//! ```
//! use std::time::Duration;
//! use palisade::circuit_breaker::CircuitBreakerConfig;
//! use palisade::preset::ClientLayer;
//!
//! let mut breaker = CircuitBreakerConfig::default();
//! breaker.time_window = Some(Duration::from_secs(1));
//! let err = ClientLayer::builder()
//!     .total_timeout(Duration::from_secs(1))
//!     .attempt_timeout(Duration::from_secs(2))
//!     .circuit_breaker(breaker)
//!     .build()
//!     .unwrap_err();
//! let fields: Vec<&str> = err.violations().map(|(field, _)| field).collect();
//! assert_eq!(fields, ["attempt_timeout", "circuit_breaker.time_window"]);
//! ```
//!
//! # From a file
//!
//! With the `serde` feature, [`ClientConfig`] reads from a file, each
//! layer's table being that layer's own `*Config`: what a table leaves out
//! takes that layer's defaults, which are the preset's too, and a `[retry]`
//! table that names no `budget` keeps the preset's windowed one.
//!
//! ```text
//! name = "inventory"
//! total_timeout = "5s"
//! attempt_timeout = "1s"
//!
//! [retry]
//! max_attempts = 3
//! budget = { kind = "windowed", ttl = "10s", min_per_sec = 10, ratio = 0.5 }
//!
//! [circuit_breaker]
//! open_for = "1s"
//!
//! [bulkhead]
//! max_concurrent = 64
//! ```
//!
//! # Servers
//!
//! `ServerLayer` (features `http` and `rate-limit`) puts in front of an
//! HTTP server, outermost first:
//!
//! 1. **error responses**: every refusal below becomes an answer (429 with
//!    `Retry-After`, 503, 504, as JSON) instead of a failed connection;
//! 2. the **caller's deadline** (`grpc-timeout`), capped at the timeout; a
//!    request that arrives with no time left is refused with a 504 before
//!    any work;
//! 3. an optional **rate limit** for the whole server, with `RateLimit-*`
//!    headers on every answer: the cheapest refusal, first;
//! 4. **load shedding**: a fail-fast bulkhead, so that past
//!    `max_concurrent` requests in flight the rest are refused at once
//!    rather than queued behind them;
//! 5. a **timeout**, or the caller's deadline if sooner: work nobody waits
//!    for is dropped.
//!
//! ```
//! # #[cfg(all(feature = "http", feature = "rate-limit"))]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), palisade::BoxError> {
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use palisade::preset::ServerLayer;
//! use palisade::rate_limit::RateLimitConfig;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! let app = service_fn(|_: Request<Full<Bytes>>| async {
//!     Ok::<_, palisade::BoxError>(Response::new(Full::new(Bytes::from("hello"))))
//! });
//! let server = ServerLayer::builder()
//!     .name("api")
//!     .timeout(Duration::from_secs(10))
//!     .max_concurrent(256)
//!     .rate_limit(RateLimitConfig::new(1_000, Duration::from_secs(1)))
//!     .build()?;
//! let app = ServiceBuilder::new().layer(server).service(app);
//! let response = app.oneshot(Request::new(Full::default())).await?;
//! assert_eq!(response.headers()["ratelimit-limit"], "1000");
//! # Ok(())
//! # }
//! # #[cfg(not(all(feature = "http", feature = "rate-limit")))]
//! # fn main() {}
//! ```

mod client;
#[cfg(all(feature = "http", feature = "rate-limit"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "http", feature = "rate-limit"))))]
mod server;

pub use client::{Client, ClientBuilder, ClientConfig, ClientHandles, ClientLayer};
#[cfg(all(feature = "http", feature = "rate-limit"))]
pub use server::{
    Server, ServerBuilder, ServerConfig, ServerHandles, ServerLayer, ServerRateLimit,
    ServerRateLimitFuture,
};
