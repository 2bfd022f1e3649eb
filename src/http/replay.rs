//! [`IdempotentReplay`]: which HTTP requests a retry may send again, and
//! how it copies them.

use std::any::Any;

use bytes::Bytes;
use http::{HeaderName, Method, Request};
use http_body_util::{Empty, Full};

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
/// [`is_idempotent`] and its body is cheap to copy.
///
/// A body is cheap to copy when it is already in memory. By default these
/// body types are copied: [`Full<Bytes>`](http_body_util::Full),
/// [`Empty<Bytes>`](http_body_util::Empty) and `String`. Any other body
/// type (hyper's `Incoming`, a boxed or streaming body) is sent once and
/// never retried: its bytes are gone once sent. For a body type of your own,
/// say how to copy it with [`copy_body_with`](Self::copy_body_with).
///
/// The copy keeps the method, URI, version, headers and extensions.
///
/// ```
/// use std::time::Duration;
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
#[derive(Clone, Copy, Debug, Default)]
pub struct IdempotentReplay<C = CheapBodies> {
    copy_body: C,
}

/// The body types [`IdempotentReplay`] copies by default: `Full<Bytes>`,
/// `Empty<Bytes>` and `String`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheapBodies;

impl IdempotentReplay {
    /// Retries idempotent requests whose body is one of [`CheapBodies`].
    pub fn new() -> Self {
        IdempotentReplay {
            copy_body: CheapBodies,
        }
    }
}

impl<C> IdempotentReplay<C> {
    /// Copies bodies with `copy_body` instead: `None` means the body cannot
    /// be sent twice, and the request is not retried.
    pub fn copy_body_with<B, F>(self, copy_body: F) -> IdempotentReplay<F>
    where
        F: Fn(&B) -> Option<B>,
    {
        IdempotentReplay { copy_body }
    }
}

impl<B: 'static> Replay<Request<B>> for IdempotentReplay<CheapBodies> {
    fn replay(&self, request: &Request<B>) -> Option<Request<B>> {
        if !is_idempotent(request) {
            return None;
        }
        Some(copy_request(request, copy_cheap_body(request.body())?))
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
fn copy_request<B>(request: &Request<B>, body: B) -> Request<B> {
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    copy
}

/// A copy of `body` when its type is one of [`CheapBodies`]. The type is
/// told at run time, so a stack whose body type streams still compiles and
/// simply never retries.
fn copy_cheap_body<B: 'static>(body: &B) -> Option<B> {
    let body: &dyn Any = body;
    if let Some(full) = body.downcast_ref::<Full<Bytes>>() {
        cast(full.clone())
    } else if body.is::<Empty<Bytes>>() {
        cast(Empty::<Bytes>::new())
    } else if let Some(text) = body.downcast_ref::<String>() {
        cast(text.clone())
    } else {
        None
    }
}

/// `value` as a `B`, when it is one; without boxing it.
fn cast<T: 'static, B: 'static>(value: T) -> Option<B> {
    let mut slot = Some(value);
    (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<B>>()?
        .take()
}
