//! Resilience layers for [tower]: circuit breaker, retry with jittered
//! backoff, hedging, rate limiting, client-side throttling, timeouts,
//! bulkheads (fixed or adaptive) and fallbacks.
//!
//! Every layer composes with `tower::ServiceBuilder` around any
//! `tower::Service`: a hyper client, a tonic channel, an axum router, a
//! database pool wrapper.
//!
//! | layer | what it is for | feature |
//! |---|---|---|
//! | [`circuit_breaker`] | stop calling a failing dependency, then probe it before trusting it again | `circuit-breaker` |
//! | [`timeout`] | fail a call that runs too long, cancelling its work | `timeout` |
//! | [`bulkhead`] | cap the calls in flight, so one slow dependency cannot take every resource | `bulkhead` |
//! | `adaptive` | a bulkhead whose limit moves: lowered when the dependency's latency rises or it drops calls, raised when it recovers (AIMD or Gradient2) | `adaptive` |
//! | [`retry`] | send a failed call again, with jittered backoff, within a shared budget and a deadline | `retry` |
//! | [`hedge`] | send a slow call again after a delay (fixed, or a learned percentile) and take the first good answer, within a budget | `hedge` |
//! | [`rate_limit`] | admit calls at a set rate (sliding window, sliding log or GCRA), refusing or queueing the rest; with `redis`, one limit across every replica of a service | `rate-limit` |
//! | [`throttle`] | refuse locally, at random, the share of calls an overloaded upstream is refusing anyway (the SRE book's client-side throttling) | `throttle` |
//! | [`fallback`] | answer with a degraded value (a default, a function's, or the last good response for the key), marked as such, while a dependency refuses or fails | `fallback` |
//! | [`preset`] | the recommended stacks as one layer each: a client's (total timeout, retry, throttle, breaker, attempt timeout, bulkhead) and an HTTP server's, one name and one configuration checked across layers | the client layers' (the server's also `http`, `rate-limit`) |
//! | `chaos` | inject failures, latency and outages on purpose, to test the rest | `chaos` |
//! | `http` | HTTP status classifier, `Retry-After`, idempotent retries, rejections as 429/503/504 responses, `RateLimit-*` headers, deadlines across hops (`grpc-timeout`), gRPC status classifier and trailers layer | `http` |
//!
//! A request can carry a [`deadline`]: timeouts and retry below the layer
//! that set it work to the time left, and over HTTP it travels to the next
//! service.
//!
//! ```
//! # #[cfg(all(feature = "timeout", feature = "bulkhead", feature = "circuit-breaker", feature = "retry", feature = "throttle"))]
//! # fn main() -> Result<(), palisade::BoxError> {
//! use std::time::Duration;
//! use palisade::{bulkhead::BulkheadLayer, circuit_breaker::CircuitBreakerLayer};
//! use palisade::retry::{RetryBudget, RetryLayer};
//! use palisade::{throttle::ThrottleLayer, timeout::TimeoutLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! let inventory = service_fn(|sku: u32| async move { Ok::<_, palisade::BoxError>(sku * 2) });
//! let client = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_secs(5))?) // the whole call, retries included
//!     .layer(
//!         RetryLayer::builder()
//!             .name("inventory")
//!             // half a retry per request: generous, because the throttle follows
//!             .budget(RetryBudget::windowed(Duration::from_secs(10), 10, 0.5))
//!             .build()?,
//!     )
//!     .layer(ThrottleLayer::builder().name("inventory").build()?) // sends what it can take
//!     .layer(CircuitBreakerLayer::builder().name("inventory").build()?)
//!     .layer(TimeoutLayer::new(Duration::from_secs(1))?) // each attempt: a hung one is a failure
//!     .layer(BulkheadLayer::builder().name("inventory").max_concurrent(64).build()?)
//!     .service(inventory);
//! # let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
//! # runtime.block_on(async {
//! assert_eq!(client.oneshot(21).await?, 42);
//! # Ok::<_, palisade::BoxError>(())
//! # })?;
//! # Ok(())
//! # }
//! # #[cfg(not(all(feature = "timeout", feature = "bulkhead", feature = "circuit-breaker", feature = "retry", feature = "throttle")))]
//! # fn main() {}
//! ```
//!
//! # Which tool for which failure
//!
//! Each layer answers one kind of trouble, and can make another worse.
//! The figures are the wind tunnel's (`cargo run --release --example
//! wind_tunnel -- --runs 3`, medians; the README has the whole table): 500
//! requests a second, open-loop, a 1 s caller deadline, palisade's defaults
//! unless said.
//!
//! | the dependency | what helps | what hurts |
//! |---|---|---|
//! | fails some calls at random | **retry** within its budget: 30 % errors go from 69 % served to 97.2 %, at 1.40 calls per request | a breaker with a low threshold, which opens by chance and refuses everything for its open period |
//! | is down | the **circuit breaker**: refuses at once while it is down (0.16 calls per request), back within 108 ms of its return after outages of 0.35 s to 3.35 s (a 1 s open period: about 0.7 s) | retry alone, which sends every request three times to a dead service; a long open period (30 s kept a recovered service unused for the rest of the run) |
//! | is slow now and then | an **attempt timeout** with retry: p99 from 500 ms to 218 ms | a timeout without retry, which would fail the tenth of calls that take 500 ms in this profile, where waiting serves them |
//! | browns out (fails more and more, whatever the load) | retry with a **budget of half a retry per request**: on a ramp from 0 to 90 % errors, 76.2 % served against 55.0 % without layers, at 1.49 calls per request | the default token budget, which stops retrying once a third of attempts fail (62.1 %); a breaker at 50 %, which opens on a service still serving half its calls (45.2 %) |
//! | is overloaded (fails because of the load) | **throttling**, which refuses locally what the service would refuse; where refused work still costs the service, 40.4 % served against 33.6 % without layers | retries the service must refuse: a budget of half a retry per request without the throttle served 23.7 % there; a breaker at 50 % (4.2 % where no layers serve 50.1 %) |
//! | has no room for more calls in flight | a **bulkhead** below the attempt timeout | waiting for a slot with no bound |
//!
//! A client cannot tell a brown-out from an overload: both are a rising
//! share of failures. Hence the recommended stack, the one in the example
//! above, and as one layer [`preset::ClientLayer`]: a retry budget of half a retry per request
//! ([`RetryBudget::windowed`](retry::RetryBudget::windowed)), which keeps
//! retrying through a brown-out, and below it the
//! [throttle], which holds what reaches the service to about
//! twice what it accepts, so that under an overload those retries are
//! refused here instead of by the service. Without a throttle, keep the
//! retry layer's default token budget: it stops retrying when a third of
//! attempts fail, and so cannot feed an overload (33.2 % served where
//! refused work costs, against 33.6 % without layers).
//!
//! And for every call, a [`deadline`] from the caller, so that no layer
//! works on an answer nobody waits for.
//!
//! # Which order
//!
//! Outermost first, as `ServiceBuilder` reads:
//!
//! 1. **A fallback**, if a degraded answer beats an error: outermost, so
//!    that retry has had its attempts first, and the breaker inside still
//!    records each call's real outcome (an answer the fallback makes never
//!    counts as the upstream's success).
//! 2. **A total timeout**, so the caller's wait is bounded whatever happens
//!    inside.
//! 3. **Retry**, so every attempt passes through the layers below it: the
//!    breaker sees each attempt, and an open circuit fails a retry fast
//!    (palisade's retry does not retry a `CircuitOpen`).
//! 4. **Client-side throttling**, just outside the breaker: like the
//!    breaker it sees every attempt, and retry does not retry its refusals,
//!    so retries cannot multiply the load on an overloaded upstream; a call
//!    it refuses never touches the breaker, and while the breaker is open
//!    it sees only refusals, which it ignores. The breaker is for an
//!    upstream that is down, the throttle for one that is struggling.
//! 5. **The circuit breaker**, outside the attempt timeout, so that a hung
//!    call counts as a failure.
//! 6. **A client-side rate limit**, inside the breaker: a call the limiter
//!    refuses never reaches the upstream, so the breaker ignores it (the
//!    default classifier calls it neither success nor failure), and retry
//!    waits out its `retry_after`. (On a server, a rate limit goes
//!    outermost, to shed load before any work.)
//! 7. **An attempt timeout.**
//! 8. **The bulkhead**, innermost, so that its slots are held only while a
//!    call is really in flight (not while a retry waits out its backoff).
//!    An adaptive limit goes just outside the attempt timeout instead, so
//!    that it sees a timed-out call as a drop rather than a cancellation.
//!
//! # Principles
//!
//! - **A temporary refusal is an error from the response future, never from
//!   `poll_ready`.** An error from `poll_ready` tells the caller to discard the
//!   service; a full bulkhead is not a reason to.
//! - **One layer value is one shared state.** Every service a layer builds,
//!   and every clone, shares its state; hyper clones the stack per request.
//! - **Readiness is honoured.** A layer never calls an inner service that was
//!   not driven to ready, and decides a refusal before polling it.
//! - **A call without readiness is an error, not a panic.** A layer that
//!   decides in `poll_ready` (breaker, bulkhead, rate limiter, throttle,
//!   chaos) answers a `call` that no `poll_ready` returning `Ready(Ok(()))`
//!   came just before with [`NotReady`](error::NotReady), naming the layer,
//!   and sends nothing; layers that only pass readiness through (timeout,
//!   retry) hand such a call on to the service below. tower's own layers
//!   panic here; palisade does not, because a panic in a server takes down
//!   the task and every request it carries for one caller's bug, where an
//!   error fails that request alone and says what to fix. The error is the
//!   caller's bug, never the upstream's: the default classifier ignores it,
//!   so no breaker, throttle or retry budget counts it, and retry never
//!   retries it.
//! - **Errors follow tower's convention.** Layers return [`BoxError`];
//!   palisade's own rejections are small types that [`ErrorKind::of`] tells
//!   apart in one call, and an inner error passes through unchanged.
//! - **An outcome counts against the state it was admitted under.** A call
//!   admitted while a breaker was Closed that fails after it went HalfOpen
//!   does not reopen it.
//! - **One clock.** All time comes from `tokio::time`, so every behaviour is
//!   testable with tokio's paused clock.
//! - **The success path is cheap.** No heap allocation per call; see the
//!   benchmarks in the README.
//! - **Bad configuration is a [`ConfigError`]** naming the field and the
//!   rule, never a panic.
//!
//! # Feature flags
//!
//! | feature | default | enables |
//! |---|---|---|
//! | `timeout` | yes | [`timeout`] |
//! | `bulkhead` | yes | [`bulkhead`] |
//! | `circuit-breaker` | yes | [`circuit_breaker`] |
//! | `retry` | yes | [`retry`] |
//! | `rate-limit` | yes | [`rate_limit`] |
//! | `throttle` | yes | [`throttle`] |
//! | `fast-clock` | yes | rate limiters, `adaptive`, retry's windowed budget, the throttle, the timeout's deadlines and the circuit breaker read the CPU's time-stamp counter (through `quanta`) instead of the system's clock, unless tokio's clock is paused at their first reading (see "The clock" in [`rate_limit`], "When the clock starts" in [`timeout`] and "Cost" in [`circuit_breaker`]) |
//! | `fallback` | no | [`fallback`]: a degraded answer in place of chosen refusals and failures |
//! | `hedge` | no | [`hedge`]: a second attempt when the first is slow (turns on `retry`) |
//! | `adaptive` | no | `adaptive`: a concurrency limit that follows the dependency's latency and drops |
//! | `chaos` | no | `chaos`: fault injection for tests and demos |
//! | `http` | no | `http`: HTTP and gRPC classifiers, retry eligibility, error responses, rate-limit headers (needs `http`, `http-body`, `http-body-util`, `bytes` and `httpdate`; not hyper) |
//! | `serde` | no | `serde::Deserialize` for every `*Config` struct |
//! | `metrics` | no | metrics through the `metrics` facade, for every layer: see [Watching it run](#watching-it-run) |
//! | `redis` | no | `rate_limit::redis`: one limit shared by many processes through Redis (needs the `redis` crate and a tokio runtime; turns on `rate-limit`, `circuit-breaker` and `timeout`) |
//!
//! [tower]: https://docs.rs/tower
//!
//! # Watching it run
//!

#![doc = include_str!("../docs/telemetry.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod classify;
#[cfg(any(feature = "timeout", feature = "retry", feature = "http"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "timeout", feature = "retry", feature = "http")))
)]
pub mod deadline;
pub mod error;
// The bounded store of the keyed breaker, the keyed rate limiter and the
// fallback's cache.
#[cfg(any(
    feature = "circuit-breaker",
    feature = "rate-limit",
    feature = "fallback"
))]
mod keyed;
// Each layer uses the handles it reports through; with only some layers
// compiled, some handle types go unused.
#[cfg_attr(
    not(all(
        feature = "bulkhead",
        feature = "rate-limit",
        feature = "retry",
        feature = "circuit-breaker"
    )),
    allow(dead_code)
)]
mod metrics;
mod name;

// The clock of the rate limiters, the adaptive limit, retry's windowed
// budget and the throttle, the timeout's deadlines and the breaker's times.
#[cfg(any(
    feature = "adaptive",
    feature = "circuit-breaker",
    feature = "rate-limit",
    feature = "retry",
    feature = "throttle",
    feature = "timeout"
))]
mod clock;

// Only the layers' configuration structs read durations from files.
#[cfg(all(
    feature = "serde",
    any(
        feature = "timeout",
        feature = "adaptive",
        feature = "bulkhead",
        feature = "circuit-breaker",
        feature = "fallback",
        feature = "retry",
        feature = "rate-limit",
        feature = "throttle"
    )
))]
mod serde_duration;
#[cfg(feature = "retry")]
mod spare;
#[cfg(feature = "retry")]
mod striped;
#[cfg(any(
    feature = "adaptive",
    feature = "bulkhead",
    feature = "chaos",
    feature = "circuit-breaker",
    feature = "fallback",
    feature = "http",
    feature = "retry",
    feature = "rate-limit",
    feature = "throttle"
))]
mod sync;

#[cfg(feature = "adaptive")]
#[cfg_attr(docsrs, doc(cfg(feature = "adaptive")))]
pub mod adaptive;
#[cfg(feature = "bulkhead")]
#[cfg_attr(docsrs, doc(cfg(feature = "bulkhead")))]
pub mod bulkhead;
#[cfg(feature = "chaos")]
#[cfg_attr(docsrs, doc(cfg(feature = "chaos")))]
pub mod chaos;
#[cfg(feature = "circuit-breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "circuit-breaker")))]
pub mod circuit_breaker;
#[cfg(feature = "fallback")]
#[cfg_attr(docsrs, doc(cfg(feature = "fallback")))]
pub mod fallback;
#[cfg(feature = "hedge")]
#[cfg_attr(docsrs, doc(cfg(feature = "hedge")))]
pub mod hedge;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
#[cfg(all(
    feature = "timeout",
    feature = "retry",
    feature = "throttle",
    feature = "circuit-breaker",
    feature = "bulkhead"
))]
#[cfg_attr(
    docsrs,
    doc(cfg(all(
        feature = "timeout",
        feature = "retry",
        feature = "throttle",
        feature = "circuit-breaker",
        feature = "bulkhead"
    )))
)]
pub mod preset;
#[cfg(feature = "rate-limit")]
#[cfg_attr(docsrs, doc(cfg(feature = "rate-limit")))]
pub mod rate_limit;
#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
pub mod retry;
#[cfg(any(
    feature = "retry",
    feature = "circuit-breaker",
    feature = "chaos",
    feature = "throttle"
))]
mod rng;
#[cfg(any(feature = "retry", feature = "rate-limit", feature = "throttle"))]
mod tagged;
#[cfg(feature = "throttle")]
#[cfg_attr(docsrs, doc(cfg(feature = "throttle")))]
pub mod throttle;
#[cfg(feature = "timeout")]
#[cfg_attr(docsrs, doc(cfg(feature = "timeout")))]
pub mod timeout;

pub use error::{BoxError, ConfigError, ErrorKind};
