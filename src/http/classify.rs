//! [`StatusClassifier`]: which HTTP responses count as failures.

use std::fmt;
use std::time::Duration;

use http::{Response, StatusCode};

use super::retry_after::retry_after;
use crate::classify::{Classify, DefaultClassifier, Outcome};

/// The outcome of a response with `status`, as [`StatusClassifier::new`]
/// sees it: a server error (5xx), `408 Request Timeout` and `429 Too Many
/// Requests` are failures (each says the server could not serve the call
/// now, and may serve it later); every other status is a success (a 404 is
/// a correct answer from a healthy server).
pub fn default_outcome(status: StatusCode) -> Outcome {
    if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        Outcome::Failure
    } else {
        Outcome::Success
    }
}

/// A [classifier](crate::classify) for `Result<http::Response<B>, E>`:
/// the breaker and retry count what it says.
///
/// - A response is classified by its status: [`default_outcome`] unless
///   built with [`by_status`](Self::by_status).
/// - An error is classified as [`DefaultClassifier`] does: a palisade
///   refusal from a layer below (open circuit, rate limit, full bulkhead,
///   throttle), or a call the request's deadline cut short, is ignored, and
///   every other error (a connect error, a reset connection, a timeout's
///   own) is a failure.
/// - Its [`retry_after`](Classify::retry_after) is the response's
///   `Retry-After` header (see [`retry_after`](super::retry_after())), or a
///   palisade refusal's own.
///
/// ```
/// use http::{Response, StatusCode};
/// use palisade::classify::{Classify, Outcome};
/// use palisade::http::{StatusClassifier, default_outcome};
///
/// let answer = |status: u16| Ok::<_, palisade::BoxError>(
///     Response::builder().status(status).body(()).unwrap(),
/// );
/// let classifier = StatusClassifier::new();
/// assert_eq!(classifier.classify(&answer(503)), Outcome::Failure);
/// assert_eq!(classifier.classify(&answer(404)), Outcome::Success);
///
/// // For an upstream whose 404 means "not synced yet, try again":
/// let lagging = StatusClassifier::by_status(|status| match status {
///     StatusCode::NOT_FOUND => Outcome::Failure,
///     other => default_outcome(other),
/// });
/// assert_eq!(lagging.classify(&answer(404)), Outcome::Failure);
/// ```
#[derive(Clone, Copy)]
pub struct StatusClassifier<F = fn(StatusCode) -> Outcome> {
    by_status: F,
}

impl StatusClassifier {
    /// Classifies responses by [`default_outcome`].
    pub fn new() -> Self {
        StatusClassifier {
            by_status: default_outcome,
        }
    }

    /// Classifies responses by `by_status`; errors as
    /// [`new`](Self::new) does.
    pub fn by_status<F>(by_status: F) -> StatusClassifier<F>
    where
        F: Fn(StatusCode) -> Outcome,
    {
        StatusClassifier { by_status }
    }
}

impl Default for StatusClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl<F> fmt::Debug for StatusClassifier<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusClassifier").finish_non_exhaustive()
    }
}

impl<B, E, F> Classify<Response<B>, E> for StatusClassifier<F>
where
    E: 'static,
    F: Fn(StatusCode) -> Outcome,
{
    #[inline]
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        match result {
            Ok(response) => (self.by_status)(response.status()),
            Err(_) => DefaultClassifier.classify(result),
        }
    }

    fn retry_after(&self, result: &Result<Response<B>, E>) -> Option<Duration> {
        match result {
            Ok(response) => retry_after(response.headers()),
            Err(_) => DefaultClassifier.retry_after(result),
        }
    }
}
