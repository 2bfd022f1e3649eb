//! The response future of [`Timeout`](super::Timeout).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::layer::Settings;
use crate::clock::Source;
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
            due: Due,
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

/// When the timer fires.
#[derive(Clone, Copy, Debug)]
enum Due {
    /// At a deadline read in `call` (to hand it on).
    At(Instant),
    /// `timeout` after the first wait, read from this clock then.
    AfterFirstWait(Source),
}

impl Due {
    /// The deadline, or `None` beyond the clock's range.
    #[inline]
    fn instant(self, timeout: Duration) -> Option<Instant> {
        match self {
            Due::At(instant) => Some(instant),
            Due::AfterFirstWait(clock) => clock.now().checked_add(timeout),
        }
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, timeout: Duration, clock: Source, settings: &Settings) -> Self {
        ResponseFuture {
            kind: Kind::Call {
                inner,
                timer: Timer::Unarmed,
                timeout,
                due: Due::AfterFirstWait(clock),
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
                due: Due::At(until),
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
                due,
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
                            sleep: match due.instant(*timeout) {
                                Some(until) => tokio::time::sleep_until(until),
                                // Beyond the clock's range: tokio's far future.
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future::{pending, poll_fn};
    use std::time::Duration;

    use tokio::time::Instant;
    use tower::{Layer, Service, ServiceExt, service_fn};

    use super::*;
    use crate::timeout::TimeoutLayer;

    impl<F> ResponseFuture<F> {
        /// The armed timer's deadline.
        fn deadline(&self) -> Option<Instant> {
            match &self.kind {
                Kind::Call {
                    timer: Timer::Armed { sleep },
                    ..
                } => Some(sleep.deadline()),
                _ => None,
            }
        }
    }

    /// The timer is set `timeout` after the first wait, on tokio's clock,
    /// whichever clock the layer reads: the CPU's counter while tokio's
    /// clock runs as the system's, tokio's own once a test has paused it
    /// and moved it on by an hour.
    #[test]
    fn the_timer_is_set_on_tokios_clock() {
        const TIMEOUT: Duration = Duration::from_secs(5);
        crate::clock::on_running_and_moved_on_clocks(async |moved_on| {
            let never = service_fn(|()| pending::<Result<(), Infallible>>());
            let mut svc = TimeoutLayer::new(TIMEOUT).expect("valid").layer(never);
            svc.ready().await.expect("ready");
            let mut call = std::pin::pin!(svc.call(()));
            let before = Instant::now();
            let first = poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx).is_pending())).await;
            let after = Instant::now();
            assert!(first);
            let deadline = call.deadline().expect("armed");
            let slack = Duration::from_millis(1);
            assert!(
                deadline + slack >= before + TIMEOUT && deadline <= after + TIMEOUT + slack,
                "moved on: {moved_on}; {deadline:?} outside {before:?} ..= {after:?} + {TIMEOUT:?}"
            );
        });
    }
}
