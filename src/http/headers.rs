//! The rate-limit response headers, and the whole seconds they count in.

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

/// `RateLimit-Limit`: the most requests admitted at once.
pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`: the requests that would be admitted now.
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset`, in whole seconds rounded up: on an admitted response,
/// until the limit is whole again (for a sliding window, up to two windows
/// after a burst, as its estimate lets go of the previous window); on a 429
/// from [`ErrorResponseLayer`](super::ErrorResponseLayer), until the next
/// request would be admitted, the same as its `Retry-After`.
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// `d` in whole seconds, rounded up: a client that waits this long is not
/// early.
pub(crate) fn seconds_up(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// Sets the three `RateLimit-*` headers.
pub(crate) fn insert_rate_limit(
    headers: &mut HeaderMap,
    limit: u64,
    remaining: u64,
    reset: Duration,
) {
    headers.insert(RATELIMIT_LIMIT, HeaderValue::from(limit));
    headers.insert(RATELIMIT_REMAINING, HeaderValue::from(remaining));
    headers.insert(RATELIMIT_RESET, HeaderValue::from(seconds_up(reset)));
}

/// Sets `Retry-After` in whole seconds, rounded up.
pub(crate) fn insert_retry_after(headers: &mut HeaderMap, wait: Duration) {
    headers.insert(RETRY_AFTER, HeaderValue::from(seconds_up(wait)));
}

#[cfg(feature = "rate-limit")]
pub use report::RateLimitHeaders;

#[cfg(feature = "rate-limit")]
mod report {
    use http::Response;

    use crate::rate_limit::{RateLimitState, ReportState};

    /// Adds `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`
    /// (whole seconds, rounded up) to every response a rate limiter
    /// admitted, from the state it decided on: no second lookup.
    ///
    /// Set it with
    /// [`RateLimitLayer::report_state`](crate::rate_limit::RateLimitLayer::report_state)
    /// or the keyed layer's. A refused request has no response of the
    /// limiter's to carry them: the [`ErrorResponseLayer`](super::super::ErrorResponseLayer)
    /// answers it with a 429 carrying `Retry-After` and the same three
    /// headers (`RateLimit-Remaining: 0`).
    ///
    /// Only responses carry the headers, not errors: for an admitted call
    /// that fails (a timeout below the limiter, say) to answer with them
    /// too, put an `ErrorResponseLayer` below the limiter as well as the
    /// one above it, so that the failure reaches the limiter as a response.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), palisade::BoxError> {
    /// use std::time::Duration;
    /// use http::{Request, Response};
    /// use palisade::http::RateLimitHeaders;
    /// use palisade::rate_limit::RateLimitLayer;
    /// use tower::{ServiceBuilder, ServiceExt, service_fn};
    ///
    /// let limit = RateLimitLayer::sliding_window(100, Duration::from_secs(60))
    ///     .build()?
    ///     .report_state(RateLimitHeaders);
    /// let svc = ServiceBuilder::new().layer(limit).service(service_fn(|_: Request<()>| async {
    ///     Ok::<_, palisade::BoxError>(Response::new(()))
    /// }));
    /// let response = svc.oneshot(Request::new(())).await?;
    /// assert_eq!(response.headers()["ratelimit-limit"], "100");
    /// assert_eq!(response.headers()["ratelimit-remaining"], "99");
    /// assert_eq!(response.headers()["ratelimit-reset"], "120");
    /// # Ok(())
    /// # }
    /// ```
    #[derive(Clone, Copy, Debug, Default)]
    pub struct RateLimitHeaders;

    impl<B> ReportState<Response<B>> for RateLimitHeaders {
        fn report(&self, response: &mut Response<B>, state: RateLimitState) {
            super::insert_rate_limit(
                response.headers_mut(),
                state.limit,
                state.remaining,
                state.reset,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::seconds_up;
    use std::time::Duration;

    #[test]
    fn seconds_up_rounds_up_and_saturates() {
        assert_eq!(seconds_up(Duration::ZERO), 0);
        assert_eq!(seconds_up(Duration::from_millis(1)), 1);
        assert_eq!(seconds_up(Duration::from_secs(2)), 2);
        assert_eq!(seconds_up(Duration::MAX), u64::MAX);
    }
}
