//! [`BodyDeadlineLayer`]: the request's deadline covers the response body.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_layer::Layer;
use tower_service::Service;

use super::NAME;
use crate::deadline::Deadline;
use crate::error::{BoxError, Elapsed, Why};

/// Holds the response body to the request's [`Deadline`]: a body still
/// streaming when the deadline passes ends there with an
/// [`Elapsed`] error (its [`by_deadline`](Elapsed::by_deadline) is
/// `true`), and the rest of it is dropped, which resets the stream.
///
/// A timeout's response future ends when the response's head arrives; the
/// body that follows can take as long again. Put this layer below a
/// [`TimeoutLayer`](crate::timeout::TimeoutLayer) that hands its deadline
/// on (`deadline_slot(InExtensions)`), or below a
/// [`ReadDeadlineLayer`](super::ReadDeadlineLayer): it reads the deadline
/// the request carries in its extensions when it is called. A body that
/// ends before the deadline is untouched, and a request without a deadline
/// gets its body as it comes, however slowly.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), palisade::BoxError> {
/// use std::time::Duration;
/// use http::{Request, Response};
/// use http_body_util::{BodyExt, Full};
/// use palisade::http::{BodyDeadlineLayer, InExtensions};
/// use palisade::timeout::TimeoutLayer;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// let upstream = service_fn(|_: Request<()>| async {
///     Ok::<_, palisade::BoxError>(Response::new(Full::new(bytes::Bytes::from("all of it"))))
/// });
/// let client = ServiceBuilder::new()
///     .layer(TimeoutLayer::new(Duration::from_secs(1))?.deadline_slot(InExtensions))
///     .layer(BodyDeadlineLayer::new())
///     .service(upstream);
/// let body = client.oneshot(Request::new(())).await?.into_body().collect().await?;
/// assert_eq!(body.to_bytes(), "all of it"); // in time: untouched
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct BodyDeadlineLayer {
    _private: (),
}

impl BodyDeadlineLayer {
    /// The layer.
    pub fn new() -> Self {
        BodyDeadlineLayer { _private: () }
    }
}

impl<S> Layer<S> for BodyDeadlineLayer {
    type Service = BodyDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyDeadline { inner }
    }
}

/// Holds the response body to the request's deadline; built by
/// [`BodyDeadlineLayer`].
#[derive(Clone, Debug)]
pub struct BodyDeadline<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for BodyDeadline<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<DeadlineBody<ResBody>>;
    type Error = S::Error;
    type Future = BodyDeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let deadline = request.extensions().get::<Deadline>().copied();
        BodyDeadlineFuture {
            inner: self.inner.call(request),
            deadline,
        }
    }
}

pin_project! {
    /// The response future of [`BodyDeadline`]: the inner response, its body
    /// held to the deadline.
    #[derive(Debug)]
    pub struct BodyDeadlineFuture<F> {
        #[pin]
        inner: F,
        deadline: Option<Deadline>,
    }
}

impl<F, B, E> Future for BodyDeadlineFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<DeadlineBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let deadline = *this.deadline;
        Poll::Ready(Ok(response.map(|body| DeadlineBody::new(body, deadline))))
    }
}

pin_project! {
    /// A response body that ends with [`Elapsed`] at the request's deadline.
    #[derive(Debug)]
    pub struct DeadlineBody<B> {
        // `None` once the deadline has passed: the rest is dropped.
        #[pin]
        inner: Option<B>,
        // `None` without a deadline. Boxed, so that the body is `Unpin`
        // whenever the inner one is (callers may read it without pinning).
        timer: Option<Pin<Box<Sleep>>>,
    }
}

impl<B> DeadlineBody<B> {
    fn new(inner: B, deadline: Option<Deadline>) -> Self {
        DeadlineBody {
            inner: Some(inner),
            timer: deadline.map(|d| Box::pin(tokio::time::sleep_until(d.instant()))),
        }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(None); // ended at the deadline
        };
        // A frame that is ready wins a tie with the timer.
        if let Poll::Ready(frame) = inner.poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let expired = this
            .timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        if !expired {
            return Poll::Pending;
        }
        // Dropped now, not when the caller drops the body: the stream is
        // reset at the deadline.
        this.inner.set(None);
        let elapsed = Elapsed::because(NAME, std::time::Duration::ZERO, Why::Body);
        Poll::Ready(Some(Err(elapsed.into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
