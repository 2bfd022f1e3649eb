//! The response future of [`CircuitBreaker`](super::CircuitBreaker).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::period::Ticket;
use crate::classify::{Classify, Outcome};
use crate::error::{BoxError, CircuitOpen, NotReady};
use crate::name::Name;

pin_project! {
    /// The response future of [`CircuitBreaker`](super::CircuitBreaker).
    ///
    /// An admitted call's outcome is classified and recorded when the inner
    /// future completes. Dropping this future before then records nothing
    /// (a cancelled call counts as ignored) and gives a half-open probe's
    /// slot back; a panic in the inner future counts as a failure.
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

/// Records an admitted call's outcome against its ticket.
#[derive(Debug)]
struct Recorder<C> {
    ticket: Option<Ticket>,
    classifier: C,
    // Read only when the breaker detects slow calls.
    started: Option<Instant>,
    // Set while the inner future is being polled: if this is dropped with it
    // set, the inner future panicked.
    polling: bool,
}

impl<C> Drop for Recorder<C> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take()
            && self.polling
        {
            // The inner future panicked: that says the service is broken.
            ticket.finish(Outcome::Failure, self.started);
        }
        // Otherwise cancelled: dropping the ticket records nothing and
        // gives a probe slot back.
    }
}

impl<C> Recorder<C> {
    /// Records a finished call: a failure that carries a retry-after may
    /// open the breaker for that long; any other outcome
    /// goes to the ticket's period.
    #[inline]
    fn finish<T, E>(&self, ticket: Ticket, result: &Result<T, E>)
    where
        C: Classify<T, E>,
    {
        let outcome = self.classifier.classify(result);
        if outcome == Outcome::Failure
            && let Some(longest) = ticket.open_on_retry_after()
        {
            // `Duration::MAX` is "do not retry this call" (gRPC's negative
            // pushback), advice about one call rather than a time the
            // upstream asked for: it opens nothing by itself.
            let carried = self.classifier.retry_after(result);
            if let Some(lasting) = carried.filter(|d| !d.is_zero() && *d != Duration::MAX) {
                return ticket.finish_opening(lasting.min(longest), self.started);
            }
        }
        ticket.finish(outcome, self.started);
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn admitted(inner: F, ticket: Ticket, classifier: C) -> Self {
        let started = ticket.start_time();
        ResponseFuture {
            kind: Kind::Admitted {
                inner,
                recorder: Recorder {
                    ticket: Some(ticket),
                    classifier,
                    started,
                    polling: false,
                },
            },
        }
    }

    pub(crate) fn rejected(error: CircuitOpen) -> Self {
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

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Admitted { inner, recorder } => {
                recorder.polling = true;
                let polled = inner.poll(cx);
                recorder.polling = false;
                let Poll::Ready(result) = polled else {
                    return Poll::Pending;
                };
                if let Some(ticket) = recorder.ticket.take() {
                    recorder.finish(ticket, &result);
                }
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Rejected { error } => Poll::Ready(Err(error.take().unwrap_or_else(|| {
                "circuit breaker response future polled after completion".into()
            }))),
            KindProj::NotReady { name } => Poll::Ready(Err(Box::new(NotReady::new(
                super::layer::LAYER,
                name.clone(),
            )))),
        }
    }
}
