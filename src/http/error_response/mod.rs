//! [`ErrorResponse`]: palisade's rejections, and other errors, as HTTP
//! responses.

mod future;
mod layer;

pub use future::ResponseFuture;
pub use layer::{DefaultErrors, ErrorResponseLayer, OtherErrors};

use std::convert::Infallible;
use std::fmt::{self, Write as _};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};
use tower_service::Service;

use super::headers::{insert_rate_limit, insert_retry_after, seconds_up};
use crate::error::{BoxError, ErrorKind};

/// A service whose errors become responses, so that it never fails: built
/// by [`ErrorResponseLayer`]; see the
/// [module docs](super#rejections-as-responses).
///
/// Its response body is `Either<B, Full<Bytes>>`: the inner service's body,
/// or the JSON one made from an error. An error from the inner service's
/// `poll_ready` is kept, and every call answered from it, because the
/// service is then ready (it never fails) but the inner one must not be
/// called.
pub struct ErrorResponse<S, F = DefaultErrors> {
    inner: S,
    other_errors: F,
    // The inner service's `poll_ready` failed: it is not called again.
    broken: Option<BoxError>,
}

impl<S, F> ErrorResponse<S, F> {
    pub(crate) fn new(inner: S, other_errors: F) -> Self {
        ErrorResponse {
            inner,
            other_errors,
            broken: None,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, F: Clone> Clone for ErrorResponse<S, F> {
    fn clone(&self) -> Self {
        ErrorResponse::new(self.inner.clone(), self.other_errors.clone())
    }
}

impl<S: fmt::Debug, F> fmt::Debug for ErrorResponse<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorResponse")
            .field("inner", &self.inner)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl<S, F, Request, B> Service<Request> for ErrorResponse<S, F>
where
    S: Service<Request, Response = Response<B>>,
    S::Error: Into<BoxError>,
    F: OtherErrors + Clone,
{
    type Response = Response<Either<B, Full<Bytes>>>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future, F>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.broken.is_none()
            && let Err(err) = ready!(self.inner.poll_ready(cx))
        {
            self.broken = Some(err.into());
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match &self.broken {
            None => ResponseFuture::called(self.inner.call(request), self.other_errors.clone()),
            Some(err) => ResponseFuture::answered(error_to_response(err, &self.other_errors)),
        }
    }
}

/// The response for `err`: a palisade rejection as documented, anything
/// else through `other_errors`.
fn error_to_response<F: OtherErrors>(err: &BoxError, other_errors: &F) -> Response<Full<Bytes>> {
    match ErrorKind::of(err) {
        ErrorKind::RateLimited(e) => {
            let wait = e.retry_after();
            let mut response = error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                &e.to_string(),
                wait,
            );
            if let Some(limit) = e.limit() {
                // Nothing remains, and the limit is back in part when the
                // next request would be admitted.
                let reset = wait.unwrap_or(Duration::ZERO);
                insert_rate_limit(response.headers_mut(), limit, 0, reset);
            }
            response
        }
        ErrorKind::CircuitOpen(e) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "circuit_open",
            &e.to_string(),
            e.retry_after(),
        ),
        ErrorKind::BulkheadFull(e) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "bulkhead_full",
            &e.to_string(),
            None,
        ),
        // No `Retry-After`: the refusal was a draw at a probability, and
        // the next call may go through at once; a wait would only delay
        // the callers the upstream could serve.
        ErrorKind::Throttled(e) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "throttled",
            &e.to_string(),
            None,
        ),
        ErrorKind::Elapsed(e) => {
            error_response(StatusCode::GATEWAY_TIMEOUT, "timeout", &e.to_string(), None)
        }
        // A bug in this server, not the client's doing: nothing to wait
        // for, and nothing the client can change.
        ErrorKind::NotReady(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "not_ready",
            &e.to_string(),
            None,
        ),
        _ => other_errors.respond(err),
    }
}

/// A JSON error response: `status`, `Content-Type: application/json`, and
/// the body `{"error": error, "message": message, "retry_after": seconds}`
/// (`retry_after` only when `retry_after` is `Some`, in whole seconds
/// rounded up, with a `Retry-After` header to match). The strings are
/// escaped as JSON requires.
///
/// ```
/// use std::time::Duration;
/// use http::StatusCode;
/// use palisade::http::error_response;
///
/// let response = error_response(
///     StatusCode::SERVICE_UNAVAILABLE,
///     "maintenance",
///     "back at \"noon\"",
///     Some(Duration::from_millis(1500)),
/// );
/// assert_eq!(response.headers()["retry-after"], "2");
/// ```
pub fn error_response(
    status: StatusCode,
    error: &str,
    message: &str,
    retry_after: Option<Duration>,
) -> Response<Full<Bytes>> {
    let mut body = String::with_capacity(48 + error.len() + message.len());
    body.push_str("{\"error\":");
    push_json_string(&mut body, error);
    body.push_str(",\"message\":");
    push_json_string(&mut body, message);
    if let Some(wait) = retry_after {
        let _ = write!(body, ",\"retry_after\":{}", seconds_up(wait));
    }
    body.push('}');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(wait) = retry_after {
        insert_retry_after(response.headers_mut(), wait);
    }
    response
}

/// The answer [`ErrorResponseLayer::new`] gives an error that is not one of
/// palisade's rejections.
///
/// - `502 Bad Gateway`, `{"error": "upstream_failed"}`, when the error is a
///   failed exchange with an upstream: an I/O error anywhere in its
///   [`source`](std::error::Error::source) chain (a refused or reset
///   connection, for which hyper-util's client errors carry one), or a
///   chaos layer's injected fault.
/// - `500 Internal Server Error`, `{"error": "internal"}`, otherwise. That
///   includes client errors with no I/O error inside, such as hyper's for
///   an upstream that closed before sending a whole response or sent a
///   malformed one: this crate does not depend on hyper, so it cannot tell
///   them from the service's own failures.
///
/// The message is generic: an inner error's text can hold what a client
/// should not see, so it is logged (`tracing`, level `debug`) and not sent.
/// A gateway, where every error of the inner service is the upstream's,
/// uses [`bad_gateway_response`] instead.
pub fn default_error_response(err: &BoxError) -> Response<Full<Bytes>> {
    if is_upstream_failure(err) {
        bad_gateway_response(err)
    } else {
        tracing::debug!(error = %err, "palisade: answering an error with 500");
        error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the service failed to answer",
            None,
        )
    }
}

/// `502 Bad Gateway`, `{"error": "upstream_failed"}` for any error, with a
/// generic message (the error is logged at `debug`, not sent).
pub fn bad_gateway_response(err: &BoxError) -> Response<Full<Bytes>> {
    tracing::debug!(error = %err, "palisade: answering an upstream failure with 502");
    error_response(
        StatusCode::BAD_GATEWAY,
        "upstream_failed",
        "the upstream service failed to answer",
        None,
    )
}

/// Whether `err` failed talking to another service: an I/O error somewhere
/// in its chain, or an injected fault. The chain is followed a bounded
/// number of steps, in case it is cyclic.
fn is_upstream_failure(err: &BoxError) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(&**err);
    for _ in 0..16 {
        let Some(e) = current else { return false };
        if e.is::<std::io::Error>() {
            return true;
        }
        #[cfg(feature = "chaos")]
        if e.is::<crate::chaos::InjectedFault>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// Appends `s` as a JSON string, quotes included.
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::push_json_string;

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        push_json_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
    }
}
