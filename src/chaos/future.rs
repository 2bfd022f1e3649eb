//! The response future of [`Chaos`](super::Chaos).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::error::BoxError;

pin_project! {
    /// The response future of [`Chaos`](super::Chaos): the inner service's,
    /// perhaps after an injected delay, or an injected failure.
    #[derive(Debug)]
    pub struct ResponseFuture<F, T> {
        #[pin]
        kind: Kind<F, T>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, T> {
        Pass {
            #[pin]
            inner: F,
        },
        // The inner future is not polled (so, for a lazy client, the request
        // is not sent) until the delay is over. Boxed: only delayed calls
        // pay for the timer's size.
        Delayed {
            sleep: Pin<Box<Sleep>>,
            #[pin]
            inner: F,
        },
        Failed {
            outcome: Option<Result<T, BoxError>>,
        },
    }
}

impl<F, T> ResponseFuture<F, T> {
    #[inline]
    pub(crate) fn pass(inner: F) -> Self {
        ResponseFuture {
            kind: Kind::Pass { inner },
        }
    }

    pub(crate) fn delayed(inner: F, sleep: Sleep) -> Self {
        ResponseFuture {
            kind: Kind::Delayed {
                sleep: Box::pin(sleep),
                inner,
            },
        }
    }

    pub(crate) fn failed(outcome: Result<T, BoxError>) -> Self {
        ResponseFuture {
            kind: Kind::Failed {
                outcome: Some(outcome),
            },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    // Inlined into the layer above, so that a call with no fault set costs
    // one load; left to itself the compiler has kept it out of line.
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Pass { inner } => Poll::Ready(ready!(inner.poll(cx)).map_err(Into::into)),
            KindProj::Delayed { sleep, inner } => {
                ready!(sleep.as_mut().poll(cx));
                Poll::Ready(ready!(inner.poll(cx)).map_err(Into::into))
            }
            KindProj::Failed { outcome } => {
                Poll::Ready(outcome.take().unwrap_or_else(|| {
                    Err("chaos: response future polled after it completed".into())
                }))
            }
        }
    }
}
