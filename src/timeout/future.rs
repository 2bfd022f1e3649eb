//! The response future of [`Timeout`](super::Timeout).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::layer::Settings;
use crate::error::{BoxError, Elapsed, Why};
use crate::metrics::Count;
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
            // When the timer fires, if the clock was read in `call` (to
            // hand a deadline on); else `timeout` from the first wait.
            until: Option<Instant>,
            // What firing means: this layer's timeout, or the request's
            // deadline.
            why: Why,
            name: Name,
            // Counts the call if its time runs out.
            elapsed: Count,
        },
        // Timed out: the inner service was never called (it did not become
        // ready in time), or its call ran too long and has been dropped.
        Failed {
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
    pub(crate) fn new(inner: F, timeout: Duration, settings: &Settings) -> Self {
        ResponseFuture {
            kind: Kind::Call {
                inner,
                timer: Timer::Unarmed,
                timeout,
                until: None,
                why: Why::Timeout,
                name: settings.name.clone(),
                elapsed: settings.elapsed.clone(),
            },
        }
    }

    /// A call that fails at `until`: the layer's own deadline (`why` is
    /// [`Why::Timeout`]) or the request's, `timeout` after the call.
    pub(crate) fn until(
        inner: F,
        until: Instant,
        timeout: Duration,
        why: Why,
        settings: &Settings,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Call {
                inner,
                timer: Timer::Unarmed,
                timeout,
                until: Some(until),
                why,
                name: settings.name.clone(),
                elapsed: settings.elapsed.clone(),
            },
        }
    }

    pub(crate) fn failed(error: Elapsed) -> Self {
        ResponseFuture {
            kind: Kind::Failed { error },
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
        let mut kind = self.project().kind;
        let error = match kind.as_mut().project() {
            KindProj::Failed { error } => return Poll::Ready(Err(error.clone().into())),
            KindProj::Call {
                inner,
                mut timer,
                timeout,
                until,
                why,
                name,
                elapsed,
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
                            sleep: match until {
                                Some(until) => tokio::time::sleep_until(*until),
                                None => tokio::time::sleep(*timeout),
                            },
                        }),
                    }
                }
                tracing::debug!(
                    target: "palisade::timeout",
                    name = %name,
                    timeout = ?timeout,
                    by_deadline = *why == Why::Deadline,
                    "call timed out and was abandoned"
                );
                elapsed.add();
                Elapsed::because(name.clone(), *timeout, *why)
            }
        };
        // Drop the inner future now, not when the caller drops this one: the
        // work is cancelled and whatever it holds (a bulkhead slot, a
        // connection) is released at the deadline.
        kind.set(Kind::Failed {
            error: error.clone(),
        });
        Poll::Ready(Err(error.into()))
    }
}
