//! The response future of [`RateLimit`](super::RateLimit).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;

use super::handle::{RateLimitState, Shared};
use super::report::{NoReport, ReportState};
use crate::error::{BoxError, NotReady, RateLimited};

pin_project! {
    /// The response future of [`RateLimit`](super::RateLimit): the inner
    /// service's, or the refusal.
    #[derive(Debug)]
    pub struct ResponseFuture<F, R = NoReport> {
        #[pin]
        kind: Kind<F, R>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, R> {
        Admitted {
            #[pin]
            inner: F,
            // The state to report on the response, when it is reported.
            report: Option<(R, RateLimitState)>,
        },
        // Not admitted: the error comes when polled.
        Failed {
            refusal: Refusal,
        },
    }
}

/// Why a call was not admitted. The error is built when polled, so these
/// rare variants do not make every response future bigger.
#[derive(Debug)]
enum Refusal {
    Refused {
        shared: Arc<Shared>,
        wait: Option<Duration>,
    },
    // A keyed limiter's refusal, made in `call`.
    Rejected {
        error: Option<RateLimited>,
    },
    // `call` without a `poll_ready` that returned `Ready(Ok(()))`.
    NotReady {
        shared: Arc<Shared>,
    },
}

impl Refusal {
    /// The error the call ends with. Out of line: the admitted path,
    /// inlined into the caller, stays small.
    #[cold]
    #[inline(never)]
    fn error(&mut self) -> BoxError {
        match self {
            Refusal::Refused { shared, wait } => shared.rejection(*wait).into(),
            Refusal::Rejected { error } => match error.take() {
                Some(error) => error.into(),
                None => "rate limiter: response future polled after it completed".into(),
            },
            Refusal::NotReady { shared } => {
                let name = shared.name.clone();
                Box::new(NotReady::new(super::layer::LAYER, name))
            }
        }
    }
}

impl<F, R> ResponseFuture<F, R> {
    pub(crate) fn admitted(inner: F, report: Option<(R, RateLimitState)>) -> Self {
        ResponseFuture {
            kind: Kind::Admitted { inner, report },
        }
    }

    pub(crate) fn refused(shared: Arc<Shared>, wait: Option<Duration>) -> Self {
        ResponseFuture {
            kind: Kind::Failed {
                refusal: Refusal::Refused { shared, wait },
            },
        }
    }

    pub(crate) fn rejected(error: RateLimited) -> Self {
        ResponseFuture {
            kind: Kind::Failed {
                refusal: Refusal::Rejected { error: Some(error) },
            },
        }
    }

    pub(crate) fn not_ready(shared: Arc<Shared>) -> Self {
        ResponseFuture {
            kind: Kind::Failed {
                refusal: Refusal::NotReady { shared },
            },
        }
    }
}

impl<F, R, T, E> Future for ResponseFuture<F, R>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    R: ReportState<T>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Admitted { inner, report } => {
                let mut result = ready!(inner.poll(cx));
                if let (Ok(response), Some((report, state))) = (&mut result, report.take()) {
                    report.report(response, state);
                }
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Failed { refusal } => Poll::Ready(Err(refusal.error())),
        }
    }
}
