//! gRPC: [`GrpcClassifier`], which reads a call's outcome from its
//! `grpc-status` and its wait from `grpc-retry-pushback-ms`;
//! [`GrpcStatusLayer`], which makes a status sent in real trailers visible
//! to it; and [`GrpcReplay`], which lets retry send a call again.
//!
//! A gRPC call fails inside a `200 OK`: its status is `grpc-status`, in the
//! response headers when the call ends before any message (a
//! *trailers-only* response, how most errors come back), or else in the
//! trailers after the body. A classifier sees the response when its headers
//! arrive, before the body, so it reads the first kind alone;
//! [`GrpcStatusLayer`], below the retry and the breaker, reads the body of a
//! unary call to its trailers first, and hands on the same bytes and
//! trailers.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), palisade::BoxError> {
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use bytes::Bytes;
//! use http::{HeaderMap, Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use palisade::circuit_breaker::CircuitBreakerLayer;
//! use palisade::http::{GrpcClassifier, GrpcReplay, GrpcStatusLayer};
//! use palisade::retry::RetryLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! // An upstream that is unavailable once (in its trailers, as a proxy
//! // that sent the headers first would say it), then answers.
//! let calls = Arc::new(AtomicU32::new(0));
//! let seen = calls.clone();
//! let upstream = service_fn(move |_: Request<Full<Bytes>>| {
//!     let status = if seen.fetch_add(1, Ordering::SeqCst) == 0 { "14" } else { "0" };
//!     let mut trailers = HeaderMap::new();
//!     trailers.insert("grpc-status", status.parse().unwrap());
//!     let body = Full::new(Bytes::from_static(b"\0\0\0\0\0"))
//!         .with_trailers(std::future::ready(Some(Ok(trailers))));
//!     async move { Ok::<_, palisade::BoxError>(Response::new(body)) }
//! });
//! let client = ServiceBuilder::new()
//!     .layer(
//!         RetryLayer::builder()
//!             .classifier(GrpcClassifier::new())
//!             .replay(GrpcReplay::all()) // every method may be called twice
//!             .build()?,
//!     )
//!     .layer(CircuitBreakerLayer::builder().classifier(GrpcClassifier::new()).build()?)
//!     .layer(GrpcStatusLayer::default()) // unary responses up to 4 MiB
//!     .service(upstream);
//!
//! let response = client.oneshot(Request::post("/shop.Prices/Quote").body(Full::default())?).await?;
//! let trailers = response.into_body().collect().await?.trailers().cloned();
//! assert_eq!(trailers.unwrap()["grpc-status"], "0");
//! assert_eq!(calls.load(Ordering::SeqCst), 2); // UNAVAILABLE, retried
//! # Ok(())
//! # }
//! ```
//!
//! # The rules
//!
//! - **Outcomes** ([`default_grpc_outcome`], or your own function of the
//!   code through [`GrpcClassifier::by_code`]): `UNAVAILABLE`,
//!   `DEADLINE_EXCEEDED` and `RESOURCE_EXHAUSTED` are failures, retried
//!   and counted by a breaker; `OK` is a success; every other code is
//!   ignored. A response without `grpc-status` whose HTTP status is not
//!   `200` (a proxy's `503`) is read as gRPC maps it; a malformed
//!   `grpc-status` is `UNKNOWN`. Errors count as for any HTTP client.
//! - **Pushback** ([`parse_retry_pushback`]): `grpc-retry-pushback-ms`
//!   beside the status is retry's least wait; a negative or unreadable
//!   value asks for no retry at all, and retry obeys. A hedge heeds both:
//!   after the failure, its next attempt goes when the wait is over, or
//!   none goes.
//! - **Trailers** ([`GrpcStatusLayer`]): a unary response's body is read,
//!   up to a limit (4 MiB by default), to find the status in its trailers;
//!   a bigger body passes on unread and counts as a success, and streaming
//!   methods can be left out.
//!
//! Every gRPC call is a `POST`: [`GrpcReplay`] lets
//! retry send again calls to the methods it names, whose body can be sent
//! twice. A tonic client's body streams, so a tonic client also needs a
//! [`BufferRequestBodyLayer`](super::BufferRequestBodyLayer) outside the
//! retry.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::response::Parts;
use http::{Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

#[cfg(feature = "retry")]
use super::ReplayBody;
use super::body::ReplayableBody;
use super::read::{BodyReader, Read};
use crate::classify::{Classify, DefaultClassifier, Outcome};
use crate::error::{BoxError, ConfigError};
#[cfg(feature = "retry")]
use crate::retry::Replay;
use crate::sync::{AtomicU64, Ordering};

const LAYER: &str = "grpc_status";

/// The header, or trailer, that carries a gRPC call's status code.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The header, or trailer, in which a gRPC server says how long to wait
/// before a retry, or not to retry: see [`parse_retry_pushback`].
pub const GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// A gRPC status code, `0` to `16`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct GrpcCode(u8);

impl GrpcCode {
    /// `0`: the call succeeded.
    pub const OK: GrpcCode = GrpcCode(0);
    /// `1`: the caller cancelled the call.
    pub const CANCELLED: GrpcCode = GrpcCode(1);
    /// `2`: an error with no better code, or a status that could not be
    /// read.
    pub const UNKNOWN: GrpcCode = GrpcCode(2);
    /// `3`: the request is wrong, whatever the server's state.
    pub const INVALID_ARGUMENT: GrpcCode = GrpcCode(3);
    /// `4`: the deadline passed before the call completed.
    pub const DEADLINE_EXCEEDED: GrpcCode = GrpcCode(4);
    /// `5`: what the request names does not exist.
    pub const NOT_FOUND: GrpcCode = GrpcCode(5);
    /// `6`: what the request would create exists already.
    pub const ALREADY_EXISTS: GrpcCode = GrpcCode(6);
    /// `7`: the caller may not do this.
    pub const PERMISSION_DENIED: GrpcCode = GrpcCode(7);
    /// `8`: a quota or a resource ran out (a rate limit, a full queue).
    pub const RESOURCE_EXHAUSTED: GrpcCode = GrpcCode(8);
    /// `9`: the system is not in the state the call needs.
    pub const FAILED_PRECONDITION: GrpcCode = GrpcCode(9);
    /// `10`: the call was aborted (a conflict between transactions).
    pub const ABORTED: GrpcCode = GrpcCode(10);
    /// `11`: past the valid range.
    pub const OUT_OF_RANGE: GrpcCode = GrpcCode(11);
    /// `12`: the method is not implemented here.
    pub const UNIMPLEMENTED: GrpcCode = GrpcCode(12);
    /// `13`: an invariant broke in the server.
    pub const INTERNAL: GrpcCode = GrpcCode(13);
    /// `14`: the service cannot serve now; a retry may succeed.
    pub const UNAVAILABLE: GrpcCode = GrpcCode(14);
    /// `15`: data was lost or corrupted.
    pub const DATA_LOSS: GrpcCode = GrpcCode(15);
    /// `16`: the caller did not authenticate.
    pub const UNAUTHENTICATED: GrpcCode = GrpcCode(16);

    const NAMES: [&'static str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];

    /// The code numbered `code`; [`UNKNOWN`](Self::UNKNOWN) for a number
    /// gRPC does not define.
    pub const fn new(code: u32) -> GrpcCode {
        if code <= 16 {
            GrpcCode(code as u8)
        } else {
            GrpcCode::UNKNOWN
        }
    }

    /// The code's number.
    pub const fn as_u32(self) -> u32 {
        self.0 as u32
    }

    /// The code's name, as gRPC spells it (`"UNAVAILABLE"`).
    pub const fn name(self) -> &'static str {
        Self::NAMES[self.0 as usize]
    }

    /// A `grpc-status` value: one or more ASCII digits. Anything else, and
    /// a number beyond 16, is [`UNKNOWN`](Self::UNKNOWN), as a gRPC client
    /// reads it.
    fn from_header(value: &HeaderValue) -> GrpcCode {
        digits(value.as_bytes().trim_ascii())
            .and_then(|n| u32::try_from(n).ok())
            .map_or(GrpcCode::UNKNOWN, GrpcCode::new)
    }

    /// The code of a response that carries no `grpc-status`, from its HTTP
    /// status, as gRPC maps them (a proxy's or a load balancer's answer).
    fn from_http(status: StatusCode) -> GrpcCode {
        match status.as_u16() {
            400 => GrpcCode::INTERNAL,
            401 => GrpcCode::UNAUTHENTICATED,
            403 => GrpcCode::PERMISSION_DENIED,
            404 => GrpcCode::UNIMPLEMENTED,
            429 | 502 | 503 | 504 => GrpcCode::UNAVAILABLE,
            _ => GrpcCode::UNKNOWN,
        }
    }
}

impl fmt::Debug for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `1*DIGIT`, without overflow.
fn digits(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u64, |n, &b| {
        let digit = b.is_ascii_digit().then(|| u64::from(b - b'0'))?;
        n.checked_mul(10)?.checked_add(digit)
    })
}

/// The outcome of a call that ended with `code`, as [`GrpcClassifier::new`]
/// sees it:
///
/// - [`UNAVAILABLE`](GrpcCode::UNAVAILABLE),
///   [`DEADLINE_EXCEEDED`](GrpcCode::DEADLINE_EXCEEDED) and
///   [`RESOURCE_EXHAUSTED`](GrpcCode::RESOURCE_EXHAUSTED) are failures:
///   each says the service could not serve the call now, and may later;
/// - [`OK`](GrpcCode::OK) is a success;
/// - every other code is ignored: `INVALID_ARGUMENT`, `NOT_FOUND`,
///   `PERMISSION_DENIED` and the like are the caller's problem, and
///   `INTERNAL`, `UNKNOWN` or `UNIMPLEMENTED` are not made better by
///   sending the same call again. None of them counts for or against the
///   service's health.
pub fn default_grpc_outcome(code: GrpcCode) -> Outcome {
    match code {
        GrpcCode::OK => Outcome::Success,
        GrpcCode::UNAVAILABLE | GrpcCode::DEADLINE_EXCEEDED | GrpcCode::RESOURCE_EXHAUSTED => {
            Outcome::Failure
        }
        _ => Outcome::Ignored,
    }
}

/// A [classifier](crate::classify) for gRPC calls,
/// `Result<http::Response<B>, E>`: the breaker and retry count what it
/// says.
///
/// A response's status code is, first found:
///
/// 1. its `grpc-status` header (a trailers-only response);
/// 2. the `grpc-status` trailer, when a [`GrpcStatusLayer`] below read the
///    body to its trailers (a complete body without one is
///    [`UNKNOWN`](GrpcCode::UNKNOWN), as a gRPC client reads it);
/// 3. for a status other than `200 OK`, the code gRPC maps it to: 400
///    `INTERNAL`, 401 `UNAUTHENTICATED`, 403 `PERMISSION_DENIED`, 404
///    `UNIMPLEMENTED`, 429, 502, 503 and 504 `UNAVAILABLE`, any other
///    `UNKNOWN` (so a proxy's 503 is a failure).
///
/// A `grpc-status` that is not a number from 0 to 16 is `UNKNOWN`. The
/// code is classified by [`default_grpc_outcome`] unless built with
/// [`by_code`](Self::by_code). A `200 OK` whose status is in trailers that
/// no layer read is a success: nothing that was seen says otherwise (put a
/// [`GrpcStatusLayer`] below to see it).
///
/// An error is classified as [`DefaultClassifier`] does (and as
/// [`StatusClassifier`](super::StatusClassifier) does): a palisade refusal
/// from a layer below, or a call the request's deadline cut short, is
/// ignored, and every other error (a connect error, a reset stream, a
/// timeout's own) is a failure.
///
/// Its [`retry_after`](Classify::retry_after) is the
/// `grpc-retry-pushback-ms` found beside the status (see
/// [`parse_retry_pushback`]), or a palisade refusal's own. A pushback that
/// says not to retry reads as [`Duration::MAX`]: a wait longer than any
/// backoff allows, so retry returns the response without another attempt
/// and a hedge sends no more attempts for the call (a breaker built with
/// `open_on_retry_after` does not open on it: it is advice about one call,
/// not a time the upstream asked for).
///
/// ```
/// use http::Response;
/// use palisade::classify::{Classify, Outcome};
/// use palisade::http::{GrpcClassifier, GrpcCode, default_grpc_outcome};
///
/// let answer = |status: &str| Ok::<_, palisade::BoxError>(
///     Response::builder().header("grpc-status", status).body(()).unwrap(),
/// );
/// let classifier = GrpcClassifier::new();
/// assert_eq!(classifier.classify(&answer("14")), Outcome::Failure); // UNAVAILABLE
/// assert_eq!(classifier.classify(&answer("5")), Outcome::Ignored); // NOT_FOUND
///
/// // For an upstream whose ABORTED means "lost a race, try again":
/// let racing = GrpcClassifier::by_code(|code| match code {
///     GrpcCode::ABORTED => Outcome::Failure,
///     other => default_grpc_outcome(other),
/// });
/// assert_eq!(racing.classify(&answer("10")), Outcome::Failure);
/// ```
#[derive(Clone, Copy)]
pub struct GrpcClassifier<F = fn(GrpcCode) -> Outcome> {
    by_code: F,
}

impl GrpcClassifier {
    /// Classifies calls by [`default_grpc_outcome`].
    pub fn new() -> Self {
        GrpcClassifier {
            by_code: default_grpc_outcome,
        }
    }

    /// Classifies calls by `by_code`; errors as [`new`](Self::new) does.
    pub fn by_code<F>(by_code: F) -> GrpcClassifier<F>
    where
        F: Fn(GrpcCode) -> Outcome,
    {
        GrpcClassifier { by_code }
    }
}

impl Default for GrpcClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl<F> fmt::Debug for GrpcClassifier<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcClassifier").finish_non_exhaustive()
    }
}

impl<B, E, F> Classify<Response<B>, E> for GrpcClassifier<F>
where
    E: 'static,
    F: Fn(GrpcCode) -> Outcome,
{
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        match result {
            Ok(response) => {
                status_of(response).map_or(Outcome::Success, |s| (self.by_code)(s.code))
            }
            Err(_) => DefaultClassifier.classify(result),
        }
    }

    fn retry_after(&self, result: &Result<Response<B>, E>) -> Option<Duration> {
        match result {
            Ok(response) => parse_retry_pushback(status_of(response)?.pushback?),
            Err(_) => DefaultClassifier.retry_after(result),
        }
    }
}

/// What a response says of how its call ended.
struct CallStatus<'a> {
    code: GrpcCode,
    /// The `grpc-retry-pushback-ms` sent with the status.
    pushback: Option<&'a HeaderValue>,
}

/// The status of the call `response` answers, where the classifier finds it
/// (see [`GrpcClassifier`]); `None` when it is in trailers no layer read.
fn status_of<B>(response: &Response<B>) -> Option<CallStatus<'_>> {
    let headers = response.headers();
    if let Some(status) = headers.get(GRPC_STATUS) {
        return Some(CallStatus {
            code: GrpcCode::from_header(status),
            pushback: headers.get(GRPC_RETRY_PUSHBACK_MS),
        });
    }
    if let Some(trailers) = response.extensions().get::<TrailersRead>() {
        return Some(CallStatus {
            code: trailers
                .status
                .as_ref()
                .map_or(GrpcCode::UNKNOWN, GrpcCode::from_header),
            pushback: trailers.pushback.as_ref(),
        });
    }
    (response.status() != StatusCode::OK).then(|| CallStatus {
        code: GrpcCode::from_http(response.status()),
        pushback: None,
    })
}

/// Reads a `grpc-retry-pushback-ms` value as gRPC's retry design defines
/// it: a non-negative 32-bit integer of milliseconds is the wait before a
/// retry; a negative value, or one that cannot be read (not a number, past
/// 2³¹ − 1), is the server asking not to retry at all, returned as
/// [`Duration::MAX`]. `0` is no wait, returned as `None` (a zero
/// `Retry-After` is read the same way).
///
/// Retry waits for the longer of the pushback and its own backoff, and a
/// pushback beyond the backoff's maximum makes it give up, as it does for
/// a `Retry-After`.
///
/// ```
/// use std::time::Duration;
/// use http::HeaderValue;
/// use palisade::http::parse_retry_pushback;
///
/// let value = HeaderValue::from_static;
/// assert_eq!(parse_retry_pushback(&value("250")), Some(Duration::from_millis(250)));
/// assert_eq!(parse_retry_pushback(&value("-1")), Some(Duration::MAX)); // do not retry
/// assert_eq!(parse_retry_pushback(&value("soon")), Some(Duration::MAX));
/// assert_eq!(parse_retry_pushback(&value("0")), None);
/// ```
pub fn parse_retry_pushback(value: &HeaderValue) -> Option<Duration> {
    let millis = digits(value.as_bytes().trim_ascii()).filter(|&ms| ms <= i32::MAX as u64);
    match millis {
        Some(0) => None,
        Some(ms) => Some(Duration::from_millis(ms)),
        None => Some(Duration::MAX),
    }
}

/// The status and pushback a response's trailers carried, put in its
/// extensions by [`GrpcStatusLayer`] once it read them.
#[derive(Clone, Debug)]
struct TrailersRead {
    status: Option<HeaderValue>,
    pushback: Option<HeaderValue>,
}

impl TrailersRead {
    fn new(trailers: Option<&HeaderMap>) -> Self {
        let get = |name| trailers.and_then(|t| t.get(name)).cloned();
        TrailersRead {
            status: get(GRPC_STATUS),
            pushback: get(GRPC_RETRY_PUSHBACK_MS),
        }
    }
}

/// Reads the body of each unary gRPC response whose status is not in its
/// headers, up to `max_bytes`, so that a [`GrpcClassifier`] above sees the
/// status in its trailers.
///
/// Put it below the retry and the breaker (innermost, next to the client):
/// they classify the response this layer returns.
///
/// - A response whose headers carry `grpc-status` (trailers-only, how most
///   errors come back), or whose HTTP status is not `200 OK`, passes on at
///   once, unread: the classifier reads it as it is.
/// - Any other is read whole, trailers included, and handed on with the
///   same bytes and the same trailers; the trailers' status and pushback go
///   in its extensions, where the classifier looks.
/// - A body bigger than `max_bytes` (by its size hint, or once more than
///   that has come) passes on as it is: what was read first, then the rest
///   of the stream, nothing lost. Its status stays unseen, so the call is
///   classified as a success. It is counted in
///   [`passed_unread`](Self::passed_unread), so that a limit too low shows.
/// - A body that fails while it is read makes the call fail with that
///   error: the stream broke before the call ended, which the classifier
///   counts as a failure.
///
/// The default limit, [`DEFAULT_MAX_BYTES`](Self::DEFAULT_MAX_BYTES), is
/// 4 MiB: gRPC clients refuse a bigger message by default, so a unary
/// answer never needs more.
///
/// # Streaming calls
///
/// Reading a body whole ends streaming: a server-streaming call would get
/// its messages only when the stream ends, and one that never ends, never.
/// By default every response is read (a client of unary services). A client
/// of a service that also streams names its unary methods with
/// [`unary_methods`](Self::unary_methods); responses to the others pass on
/// unread, their status unseen when it comes in trailers.
///
/// ```
/// use palisade::http::GrpcStatusLayer;
///
/// let layer = GrpcStatusLayer::new(1024 * 1024)?
///     .unary_methods(|path| path != "/shop.Orders/Watch");
/// # let _ = layer;
/// # Ok::<(), palisade::ConfigError>(())
/// ```
///
/// Memory: one buffer per call of at most `max_bytes`, for the time the
/// body is read. Bodies must be `Unpin` (hyper's `Incoming` and tonic's
/// `Body` are). Errors, the service's and the body's, come back as a
/// [`BoxError`].
#[derive(Clone)]
pub struct GrpcStatusLayer<P = fn(&str) -> bool> {
    max_bytes: usize,
    unary: P,
    passed_unread: Arc<AtomicU64>,
}

/// [`GrpcStatusLayer`]'s default: every method is unary.
fn every_method(_: &str) -> bool {
    true
}

impl GrpcStatusLayer {
    /// The default limit: 4 MiB, the largest message a gRPC client accepts
    /// unless told otherwise.
    pub const DEFAULT_MAX_BYTES: usize = 4 * 1024 * 1024;

    /// Reads response bodies of up to `max_bytes` to their trailers.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `max_bytes` when it is 0: no status in
    /// trailers would be seen.
    pub fn new(max_bytes: usize) -> Result<Self, ConfigError> {
        if max_bytes == 0 {
            return Err(ConfigError::new(LAYER, "max_bytes", "must be at least 1"));
        }
        Ok(GrpcStatusLayer {
            max_bytes,
            unary: every_method,
            passed_unread: Arc::new(AtomicU64::new(0)),
        })
    }
}

impl Default for GrpcStatusLayer {
    /// Reads response bodies of up to
    /// [`DEFAULT_MAX_BYTES`](Self::DEFAULT_MAX_BYTES).
    fn default() -> Self {
        GrpcStatusLayer {
            max_bytes: Self::DEFAULT_MAX_BYTES,
            unary: every_method,
            passed_unread: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl<P> GrpcStatusLayer<P> {
    /// Reads only the responses to requests whose path `unary` accepts: a
    /// gRPC request's path is `/package.Service/Method`. Name the unary
    /// methods (or leave out the streaming ones).
    pub fn unary_methods<P2>(self, unary: P2) -> GrpcStatusLayer<P2>
    where
        P2: Fn(&str) -> bool,
    {
        GrpcStatusLayer {
            max_bytes: self.max_bytes,
            unary,
            passed_unread: self.passed_unread,
        }
    }

    /// The largest body read, in bytes.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Responses passed on unread by every service this layer built because
    /// their body was bigger than `max_bytes` (so classified as successes).
    pub fn passed_unread(&self) -> u64 {
        self.passed_unread.load(Ordering::Relaxed)
    }
}

impl<P> fmt::Debug for GrpcStatusLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcStatusLayer")
            .field("max_bytes", &self.max_bytes)
            .field("passed_unread", &self.passed_unread())
            .finish_non_exhaustive()
    }
}

impl<S, P: Clone> Layer<S> for GrpcStatusLayer<P> {
    type Service = GrpcStatus<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcStatus {
            inner,
            layer: self.clone(),
        }
    }
}

/// Reads unary gRPC responses to their trailers; built by
/// [`GrpcStatusLayer`].
#[derive(Clone)]
pub struct GrpcStatus<S, P = fn(&str) -> bool> {
    inner: S,
    layer: GrpcStatusLayer<P>,
}

impl<S, P> GrpcStatus<S, P> {
    /// See [`GrpcStatusLayer::passed_unread`].
    pub fn passed_unread(&self) -> u64 {
        self.layer.passed_unread()
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug, P> fmt::Debug for GrpcStatus<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcStatus")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, P, ReqB, ResB> Service<Request<ReqB>> for GrpcStatus<S, P>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    P: Fn(&str) -> bool,
    ResB: Body<Data = Bytes> + Unpin,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<ReplayableBody<ResB>>;
    type Error = BoxError;
    type Future = GrpcStatusFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let unary = (self.layer.unary)(request.uri().path());
        GrpcStatusFuture {
            state: State::Calling {
                future: self.inner.call(request),
            },
            unary,
            reading: None,
            max_bytes: self.layer.max_bytes,
            passed_unread: self.layer.passed_unread.clone(),
        }
    }
}

pin_project! {
    /// The response future of [`GrpcStatus`]: waits for the response, then
    /// reads its body when its status is in its trailers.
    pub struct GrpcStatusFuture<F, B> {
        #[pin]
        state: State<F>,
        // Whether the request was to a unary method.
        unary: bool,
        // The response while its body is read.
        reading: Option<(Parts, BodyReader<B>)>,
        max_bytes: usize,
        passed_unread: Arc<AtomicU64>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling {
            #[pin]
            future: F,
        },
        Reading,
    }
}

impl<F, E, B> Future for GrpcStatusFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ReplayableBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let StateProj::Calling { future } = this.state.as_mut().project() {
            let response = ready!(future.poll(cx)).map_err(Into::into)?;
            if !(*this.unary && status_in_trailers(&response)) {
                return Poll::Ready(Ok(response.map(ReplayableBody::streaming)));
            }
            let (parts, body) = response.into_parts();
            *this.reading = Some((parts, BodyReader::new(body)));
            this.state.set(State::Reading);
        }
        let read = match this.reading.as_mut() {
            Some((_, body)) => ready!(body.poll_read(cx, *this.max_bytes)),
            None => return Poll::Ready(Err(polled_after_completion())),
        };
        let Some((mut parts, body)) = this.reading.take() else {
            return Poll::Ready(Err(polled_after_completion()));
        };
        let body = match read {
            Read::Whole(trailers) => {
                parts
                    .extensions
                    .insert(TrailersRead::new(trailers.as_ref()));
                body.into_body(Read::Whole(trailers))
            }
            Read::TooBig(chunk) => {
                this.passed_unread.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    target: "palisade::http",
                    max_bytes = *this.max_bytes,
                    "gRPC response passed on unread: a status in its trailers is not classified"
                );
                body.into_body(Read::TooBig(chunk))
            }
            // The stream broke before the call ended.
            Read::Failed(error) => return Poll::Ready(Err(error.into())),
        };
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

/// Whether the status of the call `response` answers comes after its body:
/// a `200 OK` whose headers do not carry it.
fn status_in_trailers<B>(response: &Response<B>) -> bool {
    response.status() == StatusCode::OK && !response.headers().contains_key(GRPC_STATUS)
}

fn polled_after_completion() -> BoxError {
    "grpc_status: response future polled after completion".into()
}

impl<F, B> fmt::Debug for GrpcStatusFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcStatusFuture")
            .field("unary", &self.unary)
            .field("reading", &self.reading.is_some())
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

/// The [`Replay`] for gRPC: retries a call to the methods it is given, if
/// its body can be sent twice.
///
/// Every gRPC call is a `POST`, so
/// [`IdempotentReplay`](super::IdempotentReplay) would retry none. Whether
/// a method may be called twice is the service's word (gRPC's own retry
/// policy is configured per method, by the service's owner):
/// [`methods`](Self::methods) names them by path,
/// `/package.Service/Method`, and [`all`](Self::all) is for a service whose
/// every method may be. Bodies are copied through [`ReplayBody`]: a tonic
/// client's body streams, so put a
/// [`BufferRequestBodyLayer`](super::BufferRequestBodyLayer) outside the
/// retry.
///
/// The copy keeps the method, URI, version, headers and extensions.
///
/// ```
/// use palisade::http::{GrpcClassifier, GrpcReplay};
/// use palisade::retry::RetryLayer;
///
/// let retry = RetryLayer::builder()
///     .classifier(GrpcClassifier::new())
///     .replay(GrpcReplay::methods(|path| path.starts_with("/shop.Prices/")))
///     .build()?;
/// # let _ = retry;
/// # Ok::<(), palisade::ConfigError>(())
/// ```
#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
#[derive(Clone, Copy)]
pub struct GrpcReplay<P = fn(&str) -> bool> {
    methods: P,
}

#[cfg(feature = "retry")]
impl GrpcReplay {
    /// Retries calls to every method.
    pub fn all() -> Self {
        GrpcReplay {
            methods: |_: &str| true,
        }
    }

    /// Retries calls to the methods whose path `methods` accepts.
    pub fn methods<P>(methods: P) -> GrpcReplay<P>
    where
        P: Fn(&str) -> bool,
    {
        GrpcReplay { methods }
    }
}

#[cfg(feature = "retry")]
impl<P> fmt::Debug for GrpcReplay<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcReplay").finish_non_exhaustive()
    }
}

#[cfg(feature = "retry")]
impl<B: ReplayBody, P: Fn(&str) -> bool> Replay<Request<B>> for GrpcReplay<P> {
    fn replay(&self, request: &Request<B>) -> Option<Request<B>> {
        if !(self.methods)(request.uri().path()) {
            return None;
        }
        Some(super::replay::copy_request(
            request,
            request.body().replay_body()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{BulkheadFull, RateLimited};
    use crate::name::Name;

    type Answer = Result<Response<()>, BoxError>;

    /// A trailers-only answer: `grpc-status` (and any other headers) in
    /// the response headers.
    fn trailers_only(headers: &[(&str, &str)]) -> Answer {
        let mut response = Response::builder();
        for &(name, value) in headers {
            response = response.header(name, value);
        }
        Ok(response.body(()).unwrap())
    }

    fn with_status(status: &str) -> Answer {
        trailers_only(&[("grpc-status", status)])
    }

    /// An answer whose trailers a `GrpcStatusLayer` read.
    fn trailers_read(trailers: &[(&'static str, &'static str)]) -> Answer {
        let mut map = HeaderMap::new();
        for &(name, value) in trailers {
            map.insert(name, HeaderValue::from_static(value));
        }
        let mut response = Response::new(());
        response
            .extensions_mut()
            .insert(TrailersRead::new(Some(&map)));
        Ok(response)
    }

    fn http_status(status: u16) -> Answer {
        Ok(Response::builder().status(status).body(()).unwrap())
    }

    /// The code the classifier found in `answer`, by way of `by_code`.
    fn code_seen(answer: &Answer) -> Option<GrpcCode> {
        let seen = std::cell::Cell::new(None);
        GrpcClassifier::by_code(|code| {
            seen.set(Some(code));
            Outcome::Ignored
        })
        .classify(answer);
        seen.get()
    }

    #[test]
    fn trailers_only_codes_are_classified_by_the_default_rule() {
        let c = GrpcClassifier::new();
        assert_eq!(
            c.classify(&with_status("14")),
            Outcome::Failure,
            "UNAVAILABLE"
        );
        assert_eq!(
            c.classify(&with_status("4")),
            Outcome::Failure,
            "DEADLINE_EXCEEDED"
        );
        assert_eq!(
            c.classify(&with_status("8")),
            Outcome::Failure,
            "RESOURCE_EXHAUSTED"
        );
        assert_eq!(c.classify(&with_status("0")), Outcome::Success, "OK");
        for ignored in [
            "1", "2", "3", "5", "6", "7", "9", "10", "11", "12", "13", "15", "16",
        ] {
            assert_eq!(
                c.classify(&with_status(ignored)),
                Outcome::Ignored,
                "{ignored}"
            );
        }
    }

    #[test]
    fn by_code_changes_the_rule() {
        let aborted_fails = GrpcClassifier::by_code(|code| match code {
            GrpcCode::ABORTED => Outcome::Failure,
            other => default_grpc_outcome(other),
        });
        assert_eq!(aborted_fails.classify(&with_status("10")), Outcome::Failure);
        assert_eq!(aborted_fails.classify(&with_status("14")), Outcome::Failure);
        assert_eq!(aborted_fails.classify(&with_status("5")), Outcome::Ignored);
    }

    #[test]
    fn a_malformed_status_is_unknown() {
        for malformed in [
            "",
            "abc",
            "1 4",
            "-1",
            "+1",
            "17",
            "255",
            "99999999999999999999999",
        ] {
            assert_eq!(
                code_seen(&with_status(malformed)),
                Some(GrpcCode::UNKNOWN),
                "{malformed:?}"
            );
            assert_eq!(
                GrpcClassifier::new().classify(&with_status(malformed)),
                Outcome::Ignored,
                "{malformed:?}"
            );
        }
        // Leading zeros and surrounding blanks are still a number.
        assert_eq!(code_seen(&with_status("014")), Some(GrpcCode::UNAVAILABLE));
        assert_eq!(code_seen(&with_status(" 14 ")), Some(GrpcCode::UNAVAILABLE));
        assert_eq!(
            code_seen(&with_status("16")),
            Some(GrpcCode::UNAUTHENTICATED)
        );
    }

    #[test]
    fn a_status_other_than_200_without_grpc_status_is_mapped_as_grpc_maps_it() {
        let mapped = [
            (400, GrpcCode::INTERNAL),
            (401, GrpcCode::UNAUTHENTICATED),
            (403, GrpcCode::PERMISSION_DENIED),
            (404, GrpcCode::UNIMPLEMENTED),
            (429, GrpcCode::UNAVAILABLE),
            (502, GrpcCode::UNAVAILABLE),
            (503, GrpcCode::UNAVAILABLE),
            (504, GrpcCode::UNAVAILABLE),
            (500, GrpcCode::UNKNOWN),
            (418, GrpcCode::UNKNOWN),
            (302, GrpcCode::UNKNOWN),
        ];
        for (status, code) in mapped {
            assert_eq!(code_seen(&http_status(status)), Some(code), "{status}");
        }
        let c = GrpcClassifier::new();
        assert_eq!(c.classify(&http_status(503)), Outcome::Failure);
        assert_eq!(c.classify(&http_status(404)), Outcome::Ignored);
        // grpc-status, when there, wins over the HTTP status.
        let both: Answer = Ok(Response::builder()
            .status(503)
            .header("grpc-status", "0")
            .body(())
            .unwrap());
        assert_eq!(c.classify(&both), Outcome::Success);
    }

    #[test]
    fn a_200_whose_status_no_layer_read_is_a_success() {
        assert_eq!(code_seen(&http_status(200)), None);
        assert_eq!(
            GrpcClassifier::new().classify(&http_status(200)),
            Outcome::Success
        );
    }

    #[test]
    fn the_status_in_trailers_read_by_the_layer_is_classified() {
        let c = GrpcClassifier::new();
        let unavailable = trailers_read(&[("grpc-status", "14")]);
        assert_eq!(c.classify(&unavailable), Outcome::Failure);
        assert_eq!(
            c.classify(&trailers_read(&[("grpc-status", "0")])),
            Outcome::Success
        );
        assert_eq!(
            c.classify(&trailers_read(&[("grpc-status", "5")])),
            Outcome::Ignored
        );
        // A call that ended without a status: UNKNOWN, as a gRPC client
        // reads it.
        assert_eq!(code_seen(&trailers_read(&[])), Some(GrpcCode::UNKNOWN));
        // A status in the headers comes first.
        let mut both = trailers_read(&[("grpc-status", "14")]).unwrap();
        both.headers_mut()
            .insert(GRPC_STATUS, HeaderValue::from_static("0"));
        assert_eq!(c.classify(&Answer::Ok(both)), Outcome::Success);
    }

    #[test]
    fn retry_after_is_the_pushback_beside_the_status() {
        let c = GrpcClassifier::new();
        let pushed = trailers_only(&[("grpc-status", "14"), ("grpc-retry-pushback-ms", "1500")]);
        assert_eq!(c.retry_after(&pushed), Some(Duration::from_millis(1500)));
        let in_trailers = trailers_read(&[("grpc-status", "8"), ("grpc-retry-pushback-ms", "250")]);
        assert_eq!(
            c.retry_after(&in_trailers),
            Some(Duration::from_millis(250))
        );
        assert_eq!(c.retry_after(&with_status("14")), None, "no pushback");
        // A pushback without a status says nothing of this call.
        let alone = trailers_only(&[("grpc-retry-pushback-ms", "1500")]);
        assert_eq!(c.retry_after(&alone), None);
    }

    #[test]
    fn a_negative_or_unreadable_pushback_means_do_not_retry() {
        let c = GrpcClassifier::new();
        let pushback = |value: &str| {
            c.retry_after(&trailers_only(&[
                ("grpc-status", "14"),
                ("grpc-retry-pushback-ms", value),
            ]))
        };
        for refusal in [
            "-1",
            "-250",
            "soon",
            "",
            "1.5",
            "+5",
            "2147483648",
            "99999999999999999999999",
        ] {
            assert_eq!(pushback(refusal), Some(Duration::MAX), "{refusal:?}");
        }
        assert_eq!(
            pushback("2147483647"),
            Some(Duration::from_millis(2_147_483_647))
        );
        assert_eq!(pushback("0"), None, "no wait");
    }

    #[test]
    fn errors_are_classified_as_the_default_classifier_does() {
        let c = GrpcClassifier::new();
        let broken: Answer = Err("stream reset".into());
        assert_eq!(c.classify(&broken), Outcome::Failure);
        let shed: Answer = Err(Box::new(BulkheadFull::new(
            Name::Static("b"),
            1,
            Duration::ZERO,
        )));
        assert_eq!(c.classify(&shed), Outcome::Ignored);
        let limited: Answer = Err(Box::new(RateLimited::new(
            "r",
            Some(Duration::from_secs(2)),
        )));
        assert_eq!(c.retry_after(&limited), Some(Duration::from_secs(2)));
        assert_eq!(c.retry_after(&broken), None);
    }

    #[test]
    fn codes_are_numbered_and_named_as_grpc_does() {
        assert_eq!(GrpcCode::new(14), GrpcCode::UNAVAILABLE);
        assert_eq!(GrpcCode::new(17), GrpcCode::UNKNOWN);
        assert_eq!(GrpcCode::UNAUTHENTICATED.as_u32(), 16);
        assert_eq!(
            GrpcCode::RESOURCE_EXHAUSTED.to_string(),
            "RESOURCE_EXHAUSTED"
        );
        assert_eq!(format!("{:?}", GrpcCode::OK), "OK (0)");
    }

    #[test]
    fn a_limit_of_zero_is_refused() {
        let err = GrpcStatusLayer::new(0).unwrap_err();
        assert!(err.to_string().contains("max_bytes"), "{err}");
        assert_eq!(GrpcStatusLayer::default().max_bytes(), 4 * 1024 * 1024);
    }
}
