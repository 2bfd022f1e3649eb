//! The response future of [`ReadDeadline`](super::ReadDeadline) and
//! [`WriteDeadline`](super::WriteDeadline).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::error::{BoxError, Elapsed};

pin_project! {
    /// The inner service's response, or the deadline error of a request
    /// that was not sent because its time had run out.
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
        Called {
            #[pin]
            future: F,
        },
        Expired {
            error: Option<Elapsed>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn called(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Called { future },
        }
    }

    pub(crate) fn expired(error: Elapsed) -> Self {
        ResponseFuture {
            kind: Kind::Expired { error: Some(error) },
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
            KindProj::Called { future } => future.poll(cx).map_err(Into::into),
            KindProj::Expired { error } => Poll::Ready(Err(match error.take() {
                Some(error) => error.into(),
                None => "deadline: polled after completion".into(),
            })),
        }
    }
}
