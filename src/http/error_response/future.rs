//! The response future of [`ErrorResponse`](super::ErrorResponse).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;

use super::{DefaultErrors, OtherErrors, error_to_response};
use crate::error::BoxError;

pin_project! {
    /// The response future of [`ErrorResponse`](super::ErrorResponse): the
    /// inner service's response, or one made from its error. Never fails.
    pub struct ResponseFuture<Fut, F> {
        #[pin]
        kind: Kind<Fut, F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<Fut, F> {
        Called {
            #[pin]
            future: Fut,
            other_errors: F,
        },
        // The inner service failed before it was called.
        Answered {
            response: Option<Response<Full<Bytes>>>,
        },
    }
}

impl<Fut, F> ResponseFuture<Fut, F> {
    pub(crate) fn called(future: Fut, other_errors: F) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                other_errors,
            },
        }
    }

    pub(crate) fn answered(response: Response<Full<Bytes>>) -> Self {
        ResponseFuture {
            kind: Kind::Answered {
                response: Some(response),
            },
        }
    }
}

impl<Fut, F, B, E> Future for ResponseFuture<Fut, F>
where
    Fut: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    F: OtherErrors,
{
    type Output = Result<Response<Either<B, Full<Bytes>>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = match self.project().kind.project() {
            KindProj::Called {
                future,
                other_errors,
            } => match ready!(future.poll(cx)) {
                Ok(response) => response.map(Either::Left),
                Err(err) => error_to_response(&err.into(), other_errors).map(Either::Right),
            },
            KindProj::Answered { response } => match response.take() {
                Some(response) => response.map(Either::Right),
                // Polled again after it completed: a caller's bug, answered
                // rather than panicking.
                None => error_to_response(
                    &"palisade: response future polled after it completed".into(),
                    &DefaultErrors,
                )
                .map(Either::Right),
            },
        };
        Poll::Ready(Ok(response))
    }
}

impl<Fut, F> std::fmt::Debug for ResponseFuture<Fut, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
