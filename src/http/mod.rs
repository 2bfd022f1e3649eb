//! HTTP for palisade's layers: a status classifier, `Retry-After`, which
//! requests a retry may send again (and a layer that buffers request bodies
//! so that they can be), rejections as responses, rate-limit headers, and
//! gRPC's status codes and retry pushback.
//!
//! Built on the `http` and `http-body` crates only, so it serves any tower
//! HTTP stack: hyper and hyper-util, axum, tonic, reqwest middleware.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), palisade::BoxError> {
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use palisade::circuit_breaker::CircuitBreakerLayer;
//! use palisade::http::{IdempotentReplay, StatusClassifier};
//! use palisade::retry::RetryLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! // An upstream that is busy once, and says for how long.
//! let calls = Arc::new(AtomicU32::new(0));
//! let seen = calls.clone();
//! let upstream = service_fn(move |_: Request<Full<Bytes>>| {
//!     let busy = seen.fetch_add(1, Ordering::SeqCst) == 0;
//!     async move {
//!         let mut response = Response::new(Full::new(Bytes::from("ok")));
//!         if busy {
//!             *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
//!             response.headers_mut().insert("retry-after", "1".parse()?);
//!         }
//!         Ok::<_, palisade::BoxError>(response)
//!     }
//! });
//! let client = ServiceBuilder::new()
//!     .layer(
//!         RetryLayer::builder()
//!             .classifier(StatusClassifier::new()) // 5xx, 408, 429: retry
//!             .replay(IdempotentReplay::new())     // GET is idempotent
//!             .build()?,
//!     )
//!     .layer(CircuitBreakerLayer::builder().classifier(StatusClassifier::new()).build()?)
//!     .service(upstream);
//!
//! let started = tokio::time::Instant::now();
//! let response = client.oneshot(Request::get("/products/1").body(Full::default())?).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(calls.load(Ordering::SeqCst), 2);
//! assert!(started.elapsed() >= Duration::from_secs(1)); // waited as asked
//! # Ok(())
//! # }
//! ```
//!
//! # Classifying responses
//!
//! [`StatusClassifier`] counts 5xx, `408` and `429` responses as failures and
//! errors as [`DefaultClassifier`](crate::classify::DefaultClassifier)
//! does (a connect error or a timeout fails; a palisade refusal is
//! ignored). [`StatusClassifier::by_status`] changes the rule for one
//! upstream. The breaker and retry take it through their `classifier`
//! settings.
//!
//! # `Retry-After`
//!
//! [`StatusClassifier`] reads a response's `Retry-After` (delay-seconds or
//! an HTTP-date, see [`parse_retry_after`]) as its
//! [`retry_after`](crate::classify::Classify::retry_after). Retry waits at
//! least that long before the next attempt. A wait beyond the retry's
//! backoff maximum, or past its deadline, is not cut short: retry gives up
//! and returns the response, `Retry-After` and all, because calling sooner
//! than the server asked would most likely fail again, and the caller can
//! see the wait it asked for. A breaker built with `open_on_retry_after`
//! opens for the wait, up to the bound it is given. An absent or malformed
//! value is ignored.
//!
//! # Which requests are retried
//!
//! [`IdempotentReplay`] lets retry send again only what RFC 9110 calls
//! idempotent (`GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`), plus a
//! `POST` or `PATCH` that carries an `Idempotency-Key`.
//!
//! Retry needs a body it can send twice, and the body's type says whether
//! it can: [`ReplayBody`] is implemented for bodies in memory
//! (`Full<Bytes>`, `Empty<Bytes>`, `String`, `Bytes`, [`ReplayableBody`]),
//! and a retry with [`IdempotentReplay`] over any other body type does not
//! compile. A streaming body (hyper's `Incoming`, axum's `Body`, a boxed
//! body: what a server or a proxy has) needs [`BufferRequestBodyLayer`]
//! outside the retry: it reads each body up to a size into memory, and a
//! bigger one passes on streaming, is sent once, never retried, and
//! counted. A proxy's stack is then buffer → retry → breaker → client:
//!
//! ```no_run
//! use http::{Request, Response};
//! use hyper::body::Incoming;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use palisade::circuit_breaker::CircuitBreakerLayer;
//! use palisade::http::{BufferRequestBodyLayer, IdempotentReplay, ReplayableBody, StatusClassifier};
//! use palisade::retry::RetryLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # async fn run(request: Request<Incoming>) -> Result<(), palisade::BoxError> {
//! let http = Client::builder(TokioExecutor::new()).build_http::<ReplayableBody<Incoming>>();
//! let buffer = BufferRequestBodyLayer::new(64 * 1024)?; // bodies up to 64 KiB can be retried
//! let upstream = ServiceBuilder::new()
//!     .layer(buffer.clone())
//!     .layer(
//!         RetryLayer::builder()
//!             .classifier(StatusClassifier::new())
//!             .replay(IdempotentReplay::new())
//!             .build()?,
//!     )
//!     .layer(CircuitBreakerLayer::builder().classifier(StatusClassifier::new()).build()?)
//!     .service(http);
//!
//! // A request the proxy received, its body streaming, forwarded as it is.
//! let response: Response<Incoming> = upstream.clone().oneshot(request).await?;
//! // Bodies sent once because they were too big: a limit too low shows here.
//! println!("{} passed unbuffered", buffer.passed_unbuffered());
//! # Ok(())
//! # }
//! ```
//!
//! # Rejections as responses
//!
//! A hyper server closes the connection when its service fails, and axum
//! wants services that never fail. [`ErrorResponseLayer`], outermost on a
//! server or gateway, turns each error into a response:
//!
//! | error | status | `"error"` | `Retry-After` |
//! |---|---|---|---|
//! | [`RateLimited`](crate::error::RateLimited) | 429 | `rate_limited` | when known; with `RateLimit-Limit`, `RateLimit-Remaining: 0`, `RateLimit-Reset` |
//! | [`CircuitOpen`](crate::error::CircuitOpen) | 503 | `circuit_open` | when known |
//! | [`BulkheadFull`](crate::error::BulkheadFull) | 503 | `bulkhead_full` | |
//! | [`Throttled`](crate::error::Throttled) | 503 | `throttled` | never: the next call may go through at once |
//! | [`Elapsed`](crate::error::Elapsed) | 504 | `timeout`; the message says whether the call was not sent (so had no effect) or was abandoned with its outcome unknown | |
//! | [`NotReady`](crate::error::NotReady) | 500 | `not_ready`: a layer was called without readiness, a bug in this server | never |
//! | anything else | [`default_error_response`]: 502 for an upstream's failure, 500 otherwise; or your function | | |
//!
//! Each body is JSON: `{"error": "...", "message": "...", "retry_after":
//! seconds}`, `retry_after` only when the wait is known (whole seconds,
//! rounded up, as in the header). A rejection's message names the layer
//! that refused; another error's message is generic, so that nothing of its
//! text reaches a client. With it, axum's `HandleErrorLayer` is not needed.
//!
//! # Deadlines across hops
//!
//! [`ReadDeadlineLayer`] on a server turns a caller's `grpc-timeout` header
//! into a [`Deadline`](crate::deadline::Deadline) in the request's
//! extensions (refusing a request that arrives with no time left, a 504
//! through [`ErrorResponseLayer`], without calling the service);
//! [`InExtensions`] lets a timeout and retry honour it; and
//! [`WriteDeadlineLayer`], innermost on a client, writes the time left on
//! each request it sends. See [`deadline`] for the rules.
//!
//! # gRPC
//!
//! [`GrpcClassifier`] classifies a gRPC call by its `grpc-status` (UNAVAILABLE,
//! DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED fail; OK succeeds; the caller's
//! errors, such as NOT_FOUND, are ignored; adjustable) and reads
//! `grpc-retry-pushback-ms` as its retry-after; [`GrpcStatusLayer`], below
//! the retry and the breaker, reads unary responses to their trailers so
//! that a status sent there is seen too; [`GrpcReplay`] lets retry send
//! again calls to the methods it names. See [`grpc`].
//!
//! # Rate-limit headers
//!
//! [`RateLimitHeaders`] (feature `rate-limit` too) adds `RateLimit-Limit`,
//! `RateLimit-Remaining` and `RateLimit-Reset` to each response a limiter
//! admitted, from the state it decided on, for direct and keyed limiters:
//! `RateLimitLayer::...build()?.report_state(RateLimitHeaders)`.
//!
//! # A client stack (hyper-util)
//!
//! ```no_run
//! # async fn run() -> Result<(), palisade::BoxError> {
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::Request;
//! use http_body_util::Full;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use palisade::circuit_breaker::CircuitBreakerLayer;
//! use palisade::http::{IdempotentReplay, StatusClassifier};
//! use palisade::{bulkhead::BulkheadLayer, retry::RetryLayer, timeout::TimeoutLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let products = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_secs(10))?)
//!     .layer(
//!         RetryLayer::builder()
//!             .name("products")
//!             .classifier(StatusClassifier::new())
//!             .replay(IdempotentReplay::new())
//!             .build()?,
//!     )
//!     .layer(
//!         CircuitBreakerLayer::builder()
//!             .name("products")
//!             .classifier(StatusClassifier::new())
//!             .build()?,
//!     )
//!     .layer(TimeoutLayer::new(Duration::from_secs(2))?)
//!     .layer(BulkheadLayer::builder().name("products").max_concurrent(64).build()?)
//!     .service(http);
//!
//! let request = Request::get("http://127.0.0.1:8003/products/1").body(Full::default())?;
//! let response = products.oneshot(request).await?;
//! println!("{}", response.status());
//! # Ok(())
//! # }
//! ```
//!
//! # A server stack (hyper)
//!
//! hyper-util's `TowerToHyperService` clones the service for each request;
//! each clone shares its layers' state, so the limits hold across
//! connections.
//!
//! ```no_run
//! # async fn run() -> Result<(), palisade::BoxError> {
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use hyper::body::Incoming;
//! use hyper_util::rt::TokioIo;
//! use hyper_util::service::TowerToHyperService;
//! use palisade::http::{ErrorResponseLayer, RateLimitHeaders};
//! use palisade::rate_limit::RateLimitLayer;
//! use palisade::{bulkhead::BulkheadLayer, timeout::TimeoutLayer};
//! use tower::{ServiceBuilder, service_fn};
//!
//! let app = service_fn(|_: Request<Incoming>| async {
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("hello"))))
//! });
//! let service = ServiceBuilder::new()
//!     .layer(ErrorResponseLayer::new()) // refusals become 429/503/504 responses
//!     .layer(
//!         RateLimitLayer::sliding_window(1_000, Duration::from_secs(1))
//!             .build()?
//!             .report_state(RateLimitHeaders),
//!     )
//!     .layer(TimeoutLayer::new(Duration::from_secs(5))?)
//!     .layer(BulkheadLayer::builder().max_concurrent(256).build()?)
//!     .service(app);
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! loop {
//!     let (stream, _) = listener.accept().await?;
//!     let service = TowerToHyperService::new(service.clone());
//!     tokio::spawn(async move {
//!         let io = TokioIo::new(stream);
//!         let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
//!     });
//! }
//! # }
//! ```

mod body;
mod buffer;
mod classify;
pub mod deadline;
mod error_response;
pub mod grpc;
mod headers;
mod read;
#[cfg(feature = "retry")]
mod replay;
mod retry_after;

pub use body::{ReplayBody, ReplayableBody};
pub use buffer::{BufferRequestBody, BufferRequestBodyFuture, BufferRequestBodyLayer};
pub use classify::{StatusClassifier, default_outcome};
pub use deadline::{
    BodyDeadline, BodyDeadlineLayer, DeadlineBody, GRPC_TIMEOUT, InExtensions, ReadDeadline,
    ReadDeadlineHandle, ReadDeadlineLayer, WriteDeadline, WriteDeadlineLayer,
};
pub use error_response::{
    DefaultErrors, ErrorResponse, ErrorResponseLayer, OtherErrors, ResponseFuture,
    bad_gateway_response, default_error_response, error_response,
};
#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
pub use grpc::GrpcReplay;
pub use grpc::{
    GRPC_RETRY_PUSHBACK_MS, GRPC_STATUS, GrpcClassifier, GrpcCode, GrpcStatus, GrpcStatusFuture,
    GrpcStatusLayer, default_grpc_outcome, parse_retry_pushback,
};
#[cfg(feature = "rate-limit")]
#[cfg_attr(docsrs, doc(cfg(feature = "rate-limit")))]
pub use headers::RateLimitHeaders;
pub use headers::{RATELIMIT_LIMIT, RATELIMIT_REMAINING, RATELIMIT_RESET};
#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
pub use replay::{IDEMPOTENCY_KEY, IdempotentReplay, ReplayBodies, is_idempotent};
pub use retry_after::{parse_retry_after, retry_after};
