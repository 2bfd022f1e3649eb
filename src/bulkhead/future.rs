//! The response future of [`Bulkhead`](super::Bulkhead).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::handle::{Permit, Shared};
use crate::error::{BoxError, NotReady};

pin_project! {
    /// The response future of [`Bulkhead`](super::Bulkhead).
    ///
    /// An admitted call holds its slot until this future completes or is
    /// dropped, whichever comes first; cancellation and a panic in the inner
    /// service both drop it.
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
            permit: Option<Permit>,
        },
        // The error is built when polled, from the shared state, so this
        // rare variant does not make every response future bigger.
        Rejected {
            shared: Arc<Shared>,
        },
        // `call` without a `poll_ready` that returned `Ready(Ok(()))`.
        NotReady {
            shared: Arc<Shared>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn admitted(inner: F, permit: Permit) -> Self {
        ResponseFuture {
            kind: Kind::Admitted {
                inner,
                permit: Some(permit),
            },
        }
    }

    pub(crate) fn rejected(shared: Arc<Shared>) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { shared },
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
            KindProj::Admitted { inner, permit } => {
                let result = ready!(inner.poll(cx));
                // Free the slot as soon as the answer is in, not when the
                // caller gets round to dropping this future.
                drop(permit.take());
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Rejected { shared } => Poll::Ready(Err(shared.rejection().into())),
            KindProj::NotReady { shared } => {
                let name = shared.name().clone();
                Poll::Ready(Err(Box::new(NotReady::new(super::layer::LAYER, name))))
            }
        }
    }
}
