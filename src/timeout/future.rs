//! The response future of [`Timeout`](super::Timeout).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::error::{BoxError, Elapsed};
use crate::name::Name;

pin_project! {
    /// The response future of [`Timeout`](super::Timeout): the inner call,
    /// raced against a timer that is armed the first time the call has to wait.
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
        Call {
            #[pin]
            inner: F,
            #[pin]
            timer: Timer,
            timeout: Duration,
            name: Name,
        },
        // The inner service did not become ready in time and was not called.
        NotReady {
            error: Elapsed,
        },
    }
}

pin_project! {
    #[project = TimerProj]
    #[derive(Debug)]
    enum Timer {
        // Not armed yet: a call that completes on its first poll never reads
        // the clock or touches the timer wheel.
        Unarmed,
        Armed {
            #[pin]
            sleep: Sleep,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, timeout: Duration, name: Name) -> Self {
        ResponseFuture {
            kind: Kind::Call {
                inner,
                timer: Timer::Unarmed,
                timeout,
                name,
            },
        }
    }

    pub(crate) fn not_ready(error: Elapsed) -> Self {
        ResponseFuture {
            kind: Kind::NotReady { error },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::NotReady { error } => Poll::Ready(Err(error.clone().into())),
            KindProj::Call {
                inner,
                mut timer,
                timeout,
                name,
            } => {
                // The inner future goes first: a result that is ready wins a
                // tie with the timer.
                if let Poll::Ready(result) = inner.poll(cx) {
                    return Poll::Ready(result.map_err(Into::into));
                }
                loop {
                    match timer.as_mut().project() {
                        TimerProj::Armed { sleep } => {
                            ready!(sleep.poll(cx));
                            break;
                        }
                        TimerProj::Unarmed => timer.set(Timer::Armed {
                            sleep: tokio::time::sleep(*timeout),
                        }),
                    }
                }
                tracing::debug!(
                    target: "palisade::timeout",
                    name = %name,
                    timeout = ?timeout,
                    "call timed out and was cancelled"
                );
                Poll::Ready(Err(Elapsed::new(name.clone(), *timeout, false).into()))
            }
        }
    }
}
