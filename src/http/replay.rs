//! [`IdempotentReplay`]: which HTTP requests a retry may send again, and
//! how it copies them.

use http::{HeaderName, Method, Request};

use super::ReplayBody;
use crate::retry::Replay;

/// The `Idempotency-Key` request header, which makes a `POST` or `PATCH`
/// safe to send twice.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Whether `request` may be sent twice without changing its effect: its
/// method is idempotent under RFC 9110 (`GET`, `HEAD`, `OPTIONS`, `TRACE`,
/// `PUT`, `DELETE`), or it is a `POST` or `PATCH` with a non-empty
/// `Idempotency-Key` header (the server then applies it once). `CONNECT`
/// and methods RFC 9110 does not define are never.
pub fn is_idempotent<B>(request: &Request<B>) -> bool {
    match *request.method() {
        Method::GET
        | Method::HEAD
        | Method::OPTIONS
        | Method::TRACE
        | Method::PUT
        | Method::DELETE => true,
        Method::POST | Method::PATCH => request
            .headers()
            .get(IDEMPOTENCY_KEY)
            .is_some_and(|key| !key.is_empty()),
        _ => false,
    }
}

/// The [`Replay`] for HTTP: retries a request only if it
/// [`is_idempotent`] and its body can be sent twice.
///
/// Retry needs a body it can send twice. Which bodies can is said by their
/// type: this replay copies requests whose body implements [`ReplayBody`]
/// ([`Full<Bytes>`](http_body_util::Full),
/// [`Empty<Bytes>`](http_body_util::Empty), `String`, `Bytes`,
/// [`ReplayableBody`](super::ReplayableBody)), and a retry layer with it
/// over any other body type does not compile. A streaming body (hyper's
/// `Incoming`, axum's `Body`, a boxed body) is gone once sent: put a
/// [`BufferRequestBodyLayer`](super::BufferRequestBodyLayer) outside the
/// retry, which reads bodies up to a size into memory; a bigger body then
/// passes on as a streaming `ReplayableBody`, which this replay declines at
/// run time: it is sent once and never retried.
///
/// For a body type of your own, implement [`ReplayBody`]. For one from
/// another crate, which you cannot implement it for,
/// [`copy_body_with`](Self::copy_body_with) takes a function instead.
///
/// The copy keeps the method, URI, version, headers and extensions.
///
/// ```
/// use palisade::http::{IdempotentReplay, StatusClassifier};
/// use palisade::retry::RetryLayer;
///
/// let retry = RetryLayer::builder()
///     .classifier(StatusClassifier::new())
///     .replay(IdempotentReplay::new())
///     .build()?;
/// # let _ = retry;
/// # Ok::<(), palisade::ConfigError>(())
/// ```
///
/// A stack whose requests stream does not compile (the error says that
/// `IdempotentReplay` cannot copy such a request, and what to do):
///
/// ```compile_fail,E0277
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::combinators::BoxBody;
/// use palisade::http::{IdempotentReplay, StatusClassifier};
/// use palisade::retry::RetryLayer;
/// use tower::util::BoxCloneService;
/// use tower::{ServiceBuilder, service_fn};
///
/// type Streaming = BoxBody<Bytes, std::convert::Infallible>;
///
/// let upstream = service_fn(|_: Request<Streaming>| async {
///     Ok::<_, palisade::BoxError>(Response::new(String::new()))
/// });
/// let retry = RetryLayer::builder()
///     .classifier(StatusClassifier::new())
///     .replay(IdempotentReplay::new())
///     .build()?;
/// let client: BoxCloneService<Request<Streaming>, _, _> =
///     BoxCloneService::new(ServiceBuilder::new().layer(retry).service(upstream));
/// # Ok::<(), palisade::BoxError>(())
/// ```
///
/// With the bodies buffered first, it does:
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::combinators::BoxBody;
/// use palisade::http::{BufferRequestBodyLayer, IdempotentReplay, ReplayableBody, StatusClassifier};
/// use palisade::retry::RetryLayer;
/// use tower::util::BoxCloneService;
/// use tower::{ServiceBuilder, service_fn};
///
/// type Streaming = BoxBody<Bytes, std::convert::Infallible>;
///
/// let upstream = service_fn(|_: Request<ReplayableBody<Streaming>>| async {
///     Ok::<_, palisade::BoxError>(Response::new(String::new()))
/// });
/// let retry = RetryLayer::builder()
///     .classifier(StatusClassifier::new())
///     .replay(IdempotentReplay::new())
///     .build()?;
/// let buffer = BufferRequestBodyLayer::new(64 * 1024)?;
/// let client: BoxCloneService<Request<Streaming>, _, _> = BoxCloneService::new(
///     ServiceBuilder::new().layer(buffer).layer(retry).service(upstream),
/// );
/// # Ok::<(), palisade::BoxError>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct IdempotentReplay<C = ReplayBodies> {
    copy_body: C,
}

/// How [`IdempotentReplay`] copies bodies by default: through their
/// [`ReplayBody`] implementation.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplayBodies;

impl IdempotentReplay {
    /// Retries idempotent requests whose body implements [`ReplayBody`].
    pub fn new() -> Self {
        IdempotentReplay {
            copy_body: ReplayBodies,
        }
    }
}

impl<C> IdempotentReplay<C> {
    /// Copies bodies with `copy_body` instead of through [`ReplayBody`]:
    /// for a body type from another crate, which you cannot implement the
    /// trait for. `None` means the body cannot be sent twice, and the
    /// request is not retried.
    pub fn copy_body_with<B, F>(self, copy_body: F) -> IdempotentReplay<F>
    where
        F: Fn(&B) -> Option<B>,
    {
        IdempotentReplay { copy_body }
    }
}

impl<B: ReplayBody> Replay<Request<B>> for IdempotentReplay<ReplayBodies> {
    fn replay(&self, request: &Request<B>) -> Option<Request<B>> {
        if !is_idempotent(request) {
            return None;
        }
        Some(copy_request(request, request.body().replay_body()?))
    }
}

impl<B, F> Replay<Request<B>> for IdempotentReplay<F>
where
    F: Fn(&B) -> Option<B>,
{
    fn replay(&self, request: &Request<B>) -> Option<Request<B>> {
        if !is_idempotent(request) {
            return None;
        }
        Some(copy_request(request, (self.copy_body)(request.body())?))
    }
}

/// `request` with `body` in place of its own.
pub(crate) fn copy_request<B>(request: &Request<B>, body: B) -> Request<B> {
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    copy
}
