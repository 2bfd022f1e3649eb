//! The response future of [`Throttle`](super::Throttle).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::throttler::Throttler;
use crate::classify::{Classify, Outcome};
use crate::error::{BoxError, ErrorKind, NotReady, Throttled};
use crate::name::Name;

pin_project! {
    /// The response future of [`Throttle`](super::Throttle).
    ///
    /// An admitted call's outcome is classified and recorded when the inner
    /// future completes. Dropping this future before then records nothing
    /// (whether the upstream accepted the call is not known); a panic in
    /// the inner future counts as a failure.
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, C> {
        Admitted {
            #[pin]
            inner: F,
            recorder: Recorder<C>,
        },
        // Boxed in `call`, so polling moves out a pointer, not the error.
        Rejected {
            error: Option<BoxError>,
        },
        // `call` without a `poll_ready` that returned `Ready(Ok(()))`.
        NotReady {
            name: Name,
        },
    }
}

/// Records an admitted call's outcome.
#[derive(Debug)]
struct Recorder<C> {
    // Taken when the outcome is recorded.
    throttler: Option<Arc<Throttler>>,
    classifier: C,
    // Set while the inner future is being polled: if this is dropped with it
    // set, the inner future panicked.
    polling: bool,
}

impl<C> Drop for Recorder<C> {
    fn drop(&mut self) {
        if let Some(throttler) = self.throttler.take()
            && self.polling
        {
            // The inner future panicked: no accept.
            throttler.record(Outcome::Failure);
        }
        // Otherwise cancelled: nothing is known, nothing is recorded.
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn admitted(inner: F, throttler: Arc<Throttler>, classifier: C) -> Self {
        ResponseFuture {
            kind: Kind::Admitted {
                inner,
                recorder: Recorder {
                    throttler: Some(throttler),
                    classifier,
                    polling: false,
                },
            },
        }
    }

    pub(crate) fn rejected(error: Throttled) -> Self {
        ResponseFuture {
            kind: Kind::Rejected {
                error: Some(Box::new(error)),
            },
        }
    }

    pub(crate) fn not_ready(name: Name) -> Self {
        ResponseFuture {
            kind: Kind::NotReady { name },
        }
    }
}

/// Records a failed call's outcome, and passes its error on. Out of line,
/// so that the success path stays small enough to inline.
#[cold]
#[inline(never)]
fn record_error(throttler: &Throttler, outcome: Outcome, err: BoxError) -> BoxError {
    // An open circuit below: the upstream is down, and the breaker answers
    // that (see `breaker_opened`).
    if matches!(ErrorKind::of(&err), ErrorKind::CircuitOpen(_)) {
        throttler.breaker_opened();
    } else {
        throttler.record(outcome);
    }
    err
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Admitted { inner, recorder } => {
                recorder.polling = true;
                let polled = inner.poll(cx);
                recorder.polling = false;
                let Poll::Ready(result) = polled else {
                    return Poll::Pending;
                };
                let Some(throttler) = recorder.throttler.take() else {
                    return Poll::Ready(result.map_err(Into::into));
                };
                let outcome = recorder.classifier.classify(&result);
                match result {
                    Ok(response) => {
                        throttler.record(outcome);
                        Poll::Ready(Ok(response))
                    }
                    Err(err) => Poll::Ready(Err(record_error(&throttler, outcome, err.into()))),
                }
            }
            KindProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| "throttle response future polled after completion".into()))),
            KindProj::NotReady { name } => Poll::Ready(Err(Box::new(NotReady::new(
                super::layer::LAYER,
                name.clone(),
            )))),
        }
    }
}
