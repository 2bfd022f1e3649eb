//! [`BufferRequestBodyLayer`]: reads request bodies up to a size into
//! memory, so that a retry below can send them again.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Request;
use http::request::Parts;
use http_body::Body;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::body::ReplayableBody;
use super::read::{BodyReader, Read};
use crate::error::{BoxError, ConfigError};
use crate::sync::{AtomicU64, Ordering};

const LAYER: &str = "buffer_request_body";

/// Reads each request body, up to `max_bytes`, into memory before calling
/// the service below, so that a retry there can send it again.
///
/// The service below gets a [`ReplayableBody`]:
///
/// - a body of at most `max_bytes` is read whole (trailers included) and
///   can be copied: [`IdempotentReplay`](super::IdempotentReplay) retries
///   the request;
/// - a bigger body (by its size hint, or once more than `max_bytes` have
///   come) passes on unbuffered: the bytes read while finding that out go
///   first, then the rest of the stream, so nothing is lost or truncated,
///   and the request is sent once and never retried. It is counted in
///   [`passed_unbuffered`](Self::passed_unbuffered), so that a limit too low
///   for the traffic shows;
/// - a body whose reading fails passes on the same way, ending in the
///   original error: the service below sees it when it reads the body, as
///   it would have without this layer, and answers as it sees fit. It is
///   counted too.
///
/// Memory: one buffer per request of at most `max_bytes` (a body that comes
/// in one chunk is kept as it came, without a copy). Put it outermost on
/// a client, outside the retry:
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), palisade::BoxError> {
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::combinators::BoxBody;
/// use http_body_util::{BodyExt, Full};
/// use palisade::http::{BufferRequestBodyLayer, IdempotentReplay, ReplayableBody, StatusClassifier};
/// use palisade::retry::RetryLayer;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// type Streaming = BoxBody<Bytes, std::convert::Infallible>;
///
/// let upstream = service_fn(|request: Request<ReplayableBody<Streaming>>| async move {
///     let body = request.into_body().collect().await?.to_bytes();
///     Ok::<_, palisade::BoxError>(Response::new(Full::new(body)))
/// });
/// let buffer = BufferRequestBodyLayer::new(64 * 1024)?;
/// let client = ServiceBuilder::new()
///     .layer(buffer.clone())
///     .layer(
///         RetryLayer::builder()
///             .classifier(StatusClassifier::new())
///             .replay(IdempotentReplay::new())
///             .build()?,
///     )
///     .service(upstream);
///
/// let body: Streaming = Full::new(Bytes::from("{\"qty\":1}")).boxed();
/// let response = client.oneshot(Request::put("/cart/1").body(body)?).await?;
/// assert_eq!(response.into_body().collect().await?.to_bytes(), "{\"qty\":1}");
/// assert_eq!(buffer.passed_unbuffered(), 0);
/// # Ok(())
/// # }
/// ```
///
/// # The tower contract
///
/// `poll_ready` is always ready: the body is read first, and only then is
/// the service below driven to ready (on a clone) and called, so that a
/// slow sender holds no slot below it (a bulkhead's, a rate limiter's
/// permit) while its body arrives. A timeout outside this layer bounds the
/// reading too. Dropping the response future drops the body unread.
///
/// Bodies must be `Unpin` (hyper's `Incoming` and axum's `Body` are): the
/// body is read in place and then handed on. Errors of the service below
/// come back as a [`BoxError`].
#[derive(Clone)]
pub struct BufferRequestBodyLayer {
    max_bytes: usize,
    passed_unbuffered: Arc<AtomicU64>,
}

impl BufferRequestBodyLayer {
    /// Buffers request bodies of up to `max_bytes`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `max_bytes` when it is 0: no body could be
    /// buffered, and nothing retried.
    pub fn new(max_bytes: usize) -> Result<Self, ConfigError> {
        if max_bytes == 0 {
            return Err(ConfigError::new(LAYER, "max_bytes", "must be at least 1"));
        }
        Ok(BufferRequestBodyLayer {
            max_bytes,
            passed_unbuffered: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The largest body buffered, in bytes.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Requests passed on unbuffered (so never retried) by every service
    /// this layer built: their body was bigger than `max_bytes`, or failed
    /// while it was read.
    pub fn passed_unbuffered(&self) -> u64 {
        self.passed_unbuffered.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for BufferRequestBodyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferRequestBodyLayer")
            .field("max_bytes", &self.max_bytes)
            .field("passed_unbuffered", &self.passed_unbuffered())
            .finish()
    }
}

impl<S> Layer<S> for BufferRequestBodyLayer {
    type Service = BufferRequestBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BufferRequestBody {
            inner,
            layer: self.clone(),
        }
    }
}

/// Reads request bodies up to a size before calling the service below;
/// built by [`BufferRequestBodyLayer`].
#[derive(Clone, Debug)]
pub struct BufferRequestBody<S> {
    inner: S,
    layer: BufferRequestBodyLayer,
}

impl<S> BufferRequestBody<S> {
    /// See [`BufferRequestBodyLayer::passed_unbuffered`].
    pub fn passed_unbuffered(&self) -> u64 {
        self.layer.passed_unbuffered()
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for BufferRequestBody<S>
where
    S: Service<Request<ReplayableBody<B>>> + Clone,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BufferRequestBodyFuture<S, B>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness below is asked for once the body is in (see the type's
        // docs): a slot taken now would be held while the body arrives.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (parts, body) = request.into_parts();
        BufferRequestBodyFuture {
            state: State::Reading,
            reading: Some(Reading {
                parts,
                body: BodyReader::new(body),
            }),
            request: None,
            service: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

pin_project! {
    /// The response future of [`BufferRequestBody`]: reads the body, then
    /// waits for the service below to be ready, then for its answer.
    pub struct BufferRequestBodyFuture<S, B>
    where
        S: Service<Request<ReplayableBody<B>>>,
        B: Body,
    {
        #[pin]
        state: State<S::Future>,
        // The request while its body is read.
        reading: Option<Reading<B>>,
        // The request once read, until the service below is ready for it.
        request: Option<Request<ReplayableBody<B>>>,
        service: S,
        layer: BufferRequestBodyLayer,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Reading,
        Readying,
        Calling {
            #[pin]
            future: F,
        },
    }
}

impl<S, B> Future for BufferRequestBodyFuture<S, B>
where
    S: Service<Request<ReplayableBody<B>>>,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Reading => {
                    let max_bytes = this.layer.max_bytes;
                    let read = match this.reading.as_mut() {
                        Some(reading) => ready!(reading.body.poll_read(cx, max_bytes)),
                        None => return Poll::Ready(Err(polled_after_completion())),
                    };
                    let request = this
                        .reading
                        .take()
                        .map(|reading| reading.into_request(read));
                    if request.as_ref().is_some_and(|r| !r.body().is_buffered()) {
                        this.layer.passed_unbuffered.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(
                            target: "palisade::http",
                            max_bytes,
                            "request body passed on unbuffered: it will not be retried"
                        );
                    }
                    *this.request = request;
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    ready!(this.service.poll_ready(cx)).map_err(Into::into)?;
                    let Some(request) = this.request.take() else {
                        return Poll::Ready(Err(polled_after_completion()));
                    };
                    let future = this.service.call(request);
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => {
                    return future.poll(cx).map_err(Into::into);
                }
            }
        }
    }
}

fn polled_after_completion() -> BoxError {
    "buffer_request_body: response future polled after completion".into()
}

impl<S, B> fmt::Debug for BufferRequestBodyFuture<S, B>
where
    S: Service<Request<ReplayableBody<B>>>,
    B: Body,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferRequestBodyFuture")
            .field("reading", &self.reading.is_some())
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

/// A request whose body is being read.
struct Reading<B> {
    parts: Parts,
    body: BodyReader<B>,
}

impl<B: Body<Data = Bytes> + Unpin> Reading<B> {
    /// The request to send, as `read` left its body.
    fn into_request(self, read: Read<B::Error>) -> Request<ReplayableBody<B>> {
        Request::from_parts(self.parts, self.body.into_body(read))
    }
}
