//! The response future of [`Adaptive`](super::Adaptive).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::limiter::{Limiter, Permit};
use crate::classify::Classify;
use crate::error::{BoxError, NotReady};

pin_project! {
    /// The response future of [`Adaptive`](super::Adaptive).
    ///
    /// An admitted call holds its slot until this future completes or is
    /// dropped. When it completes, its outcome is classified and, unless
    /// ignored, becomes a sample; dropped first (cancelled, or the inner
    /// future panicked), it gives the slot back and is no sample.
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
            // Taken when the answer is in.
            call: Option<Call<C>>,
        },
        // The error is built when polled, so this rare variant does not
        // make every response future bigger.
        Rejected {
            limiter: Arc<Limiter>,
        },
        // `call` without a `poll_ready` that returned `Ready(Ok(()))`.
        NotReady {
            limiter: Arc<Limiter>,
        },
    }
}

/// What an admitted call needs to become a sample.
#[derive(Debug)]
struct Call<C> {
    permit: Permit,
    classifier: C,
    /// From [`Permit::now`].
    started: u64,
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn admitted(inner: F, permit: Permit, classifier: C) -> Self {
        ResponseFuture {
            kind: Kind::Admitted {
                inner,
                call: Some(Call {
                    started: permit.now(),
                    permit,
                    classifier,
                }),
            },
        }
    }

    pub(crate) fn rejected(limiter: Arc<Limiter>) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { limiter },
        }
    }

    pub(crate) fn not_ready(limiter: Arc<Limiter>) -> Self {
        ResponseFuture {
            kind: Kind::NotReady { limiter },
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

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Admitted { inner, call } => {
                let result = ready!(inner.poll(cx));
                if let Some(call) = call.take() {
                    // Sampled and freed as soon as the answer is in, not
                    // when the caller gets round to dropping this future.
                    let outcome = call.classifier.classify(&result);
                    call.permit.finish(call.started, outcome);
                }
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Rejected { limiter } => Poll::Ready(Err(limiter.rejection().into())),
            KindProj::NotReady { limiter } => {
                let name = limiter.name().clone();
                Poll::Ready(Err(Box::new(NotReady::new(super::layer::LAYER, name))))
            }
        }
    }
}
