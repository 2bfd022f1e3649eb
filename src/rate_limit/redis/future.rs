//! The response future of [`RedisRateLimit`](super::RedisRateLimit).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_service::Service;

use super::store::Verdict;
use crate::error::BoxError;
use crate::rate_limit::handle::RateLimitState;
use crate::rate_limit::report::ReportState;

/// A decision that waits on Redis.
pub(crate) type Decision = Pin<Box<dyn Future<Output = Verdict> + Send>>;

pin_project! {
    /// The response future of [`RedisRateLimit`](super::RedisRateLimit):
    /// the decision, when it waits on Redis, then the inner service's call;
    /// or a refusal.
    pub struct ResponseFuture<F, S, Request, R> {
        #[pin]
        state: State<F, S, Request, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, Request, R> {
        // Admitted: the inner service's call.
        Calling {
            #[pin]
            future: F,
            report: Option<(R, RateLimitState)>,
        },
        // Waiting on Redis, holding the ready inner service and the
        // request for when the decision admits the call.
        Deciding {
            decision: Decision,
            inner: Option<S>,
            request: Option<Request>,
            report: Option<R>,
        },
        Refused {
            error: Option<BoxError>,
        },
    }
}

impl<F, S, Request, R> ResponseFuture<F, S, Request, R> {
    pub(crate) fn calling(future: F, report: Option<(R, RateLimitState)>) -> Self {
        ResponseFuture {
            state: State::Calling { future, report },
        }
    }

    pub(crate) fn deciding(decision: Decision, inner: S, request: Request, report: R) -> Self {
        ResponseFuture {
            state: State::Deciding {
                decision,
                inner: Some(inner),
                request: Some(request),
                report: Some(report),
            },
        }
    }

    pub(crate) fn refused(error: BoxError) -> Self {
        ResponseFuture {
            state: State::Refused { error: Some(error) },
        }
    }
}

impl<F, S, Request, R, T, E> Future for ResponseFuture<F, S, Request, R>
where
    S: Service<Request, Future = F>,
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    R: ReportState<T>,
{
    type Output = Result<T, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut state = self.as_mut().project().state;
            match state.as_mut().project() {
                StateProj::Calling { future, report } => {
                    let mut result = ready!(future.poll(cx));
                    if let (Ok(response), Some((reporter, state))) = (&mut result, report.take()) {
                        reporter.report(response, state);
                    }
                    return Poll::Ready(result.map_err(Into::into));
                }
                StateProj::Deciding {
                    decision,
                    inner,
                    request,
                    report,
                } => {
                    let verdict = ready!(decision.as_mut().poll(cx));
                    let (Some(mut inner), Some(request)) = (inner.take(), request.take()) else {
                        return Poll::Ready(Err(POLLED_AFTER_COMPLETION.into()));
                    };
                    match verdict {
                        Verdict::Admitted(admitted) => {
                            let report = report
                                .take()
                                .filter(|_| R::REPORTS)
                                .zip(admitted.map(RateLimitState::from));
                            let future = inner.call(request);
                            state.set(State::Calling { future, report });
                        }
                        Verdict::Refused(refusal) => return Poll::Ready(Err(refusal.into())),
                    }
                }
                StateProj::Refused { error } => {
                    let error = error.take();
                    return Poll::Ready(Err(
                        error.unwrap_or_else(|| POLLED_AFTER_COMPLETION.into())
                    ));
                }
            }
        }
    }
}

const POLLED_AFTER_COMPLETION: &str =
    "redis rate limiter: response future polled after it completed";

impl<F, S, Request, R> fmt::Debug for ResponseFuture<F, S, Request, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Calling { .. } => "calling",
            State::Deciding { .. } => "deciding",
            State::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
