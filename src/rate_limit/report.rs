//! Reporting a limiter's state on the responses it admitted: the hook behind
//! HTTP `RateLimit-*` headers.

use super::handle::RateLimitState;

/// Writes a rate limiter's state into a response it admitted (the HTTP
/// `RateLimit-*` headers, say).
///
/// The state is the one the limiter decided on, taken with the same clock
/// reading and (for a keyed limiter) the same key lookup as the admission, so
/// reporting costs no second lookup. Set one with
/// [`RateLimitLayer::report_state`](super::RateLimitLayer::report_state);
/// [`palisade::http::RateLimitHeaders`](crate#feature-flags) (feature
/// `http`) is the HTTP one, and any `Fn(&mut Res, RateLimitState)` works too.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), palisade::BoxError> {
/// use std::time::Duration;
/// use palisade::rate_limit::{RateLimitLayer, RateLimitState};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// // A response type of its own, with room for the figures.
/// #[derive(Debug, Default)]
/// struct Reply { remaining: Option<u64> }
///
/// let limit = RateLimitLayer::sliding_log(3, Duration::from_secs(1))
///     .build()?
///     .report_state(|reply: &mut Reply, state: RateLimitState| {
///         reply.remaining = Some(state.remaining);
///     });
/// let svc = ServiceBuilder::new()
///     .layer(limit)
///     .service(service_fn(|()| async { Ok::<_, palisade::BoxError>(Reply::default()) }));
/// assert_eq!(svc.oneshot(()).await?.remaining, Some(2));
/// # Ok(())
/// # }
/// ```
pub trait ReportState<Res> {
    /// Whether this reporter reports at all. When `false` the limiter skips
    /// taking the state, so [`NoReport`] costs nothing.
    const REPORTS: bool = true;

    /// Writes `state` into `response`.
    fn report(&self, response: &mut Res, state: RateLimitState);
}

/// Reports nothing: the default.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoReport;

impl<Res> ReportState<Res> for NoReport {
    const REPORTS: bool = false;

    #[inline]
    fn report(&self, _: &mut Res, _: RateLimitState) {}
}

impl<Res, F: Fn(&mut Res, RateLimitState)> ReportState<Res> for F {
    fn report(&self, response: &mut Res, state: RateLimitState) {
        self(response, state)
    }
}
