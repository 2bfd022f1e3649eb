//! The response future of [`RateLimit`](super::RateLimit).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;

use super::handle::Shared;
use crate::error::{BoxError, RateLimited};

pin_project! {
    /// The response future of [`RateLimit`](super::RateLimit): the inner
    /// service's, or the refusal.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Admitted {
            #[pin]
            inner: F,
        },
        // The error is built when polled, so this rare variant does not make
        // every response future bigger.
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
}

impl<F> ResponseFuture<F> {
    pub(crate) fn admitted(inner: F) -> Self {
        ResponseFuture {
            kind: Kind::Admitted { inner },
        }
    }

    pub(crate) fn refused(shared: Arc<Shared>, wait: Option<Duration>) -> Self {
        ResponseFuture {
            kind: Kind::Refused { shared, wait },
        }
    }

    pub(crate) fn rejected(error: RateLimited) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { error: Some(error) },
        }
    }

    pub(crate) fn not_ready(shared: Arc<Shared>) -> Self {
        ResponseFuture {
            kind: Kind::NotReady { shared },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Admitted { inner } => Poll::Ready(ready!(inner.poll(cx)).map_err(Into::into)),
            KindProj::Refused { shared, wait } => Poll::Ready(Err(shared.rejection(*wait).into())),
            KindProj::Rejected { error } => Poll::Ready(Err(match error.take() {
                Some(error) => error.into(),
                None => "rate limiter: response future polled after it completed".into(),
            })),
            KindProj::NotReady { shared } => Poll::Ready(Err(format!(
                "rate limiter `{}`: `call` was made without a successful `poll_ready`, \
                 so no permit was taken and the call was not sent",
                shared.name
            )
            .into())),
        }
    }
}
