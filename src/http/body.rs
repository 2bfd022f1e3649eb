//! [`ReplayBody`]: a request body that can be sent twice, and
//! [`ReplayableBody`], the body [`BufferRequestBodyLayer`](super::BufferRequestBodyLayer)
//! makes of one that streams.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Empty, Full};
use pin_project_lite::pin_project;

/// A request body that can be sent twice: retry needs a copy of the body
/// for each attempt, and a body that streams is gone once sent.
///
/// [`IdempotentReplay`](super::IdempotentReplay) retries only requests
/// whose body type implements this trait, so a stack that could never
/// retry does not compile. Implemented for bodies held in memory:
/// [`Full<Bytes>`], [`Empty<Bytes>`], `String`, [`Bytes`], and
/// [`ReplayableBody`], which declines at run time when it streams.
///
/// A streaming body (hyper's `Incoming`, axum's `Body`, a boxed body) has
/// no copy: put a [`BufferRequestBodyLayer`](super::BufferRequestBodyLayer)
/// outside the retry, which reads bodies up to a size into a
/// [`ReplayableBody`]. For a body type of your own, implement it:
///
/// ```
/// use palisade::http::ReplayBody;
///
/// #[derive(Clone)]
/// struct Json(bytes::Bytes);
///
/// impl ReplayBody for Json {
///     fn replay_body(&self) -> Option<Self> {
///         Some(self.clone()) // cheap: `Bytes` is reference-counted
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a body that can be sent twice, so a retry cannot copy it",
    label = "a streaming body: its bytes are gone once sent",
    note = "put `palisade::http::BufferRequestBodyLayer` outside the retry: it buffers bodies up to a size, so that requests of `palisade::http::ReplayableBody<{Self}>` can be retried",
    note = "or implement `palisade::http::ReplayBody` for a body type of your own"
)]
pub trait ReplayBody: Sized {
    /// A copy of this body to send again, or `None` if it cannot be (the
    /// request is then not retried).
    ///
    /// Called before the body is sent, so a copy holds all of it.
    fn replay_body(&self) -> Option<Self>;
}

impl ReplayBody for Full<Bytes> {
    fn replay_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl ReplayBody for Empty<Bytes> {
    fn replay_body(&self) -> Option<Self> {
        Some(Empty::new())
    }
}

impl ReplayBody for String {
    fn replay_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl ReplayBody for Bytes {
    fn replay_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

pin_project! {
    /// A request body that is either buffered in memory, and so can be sent
    /// again, or streams, and so cannot: what
    /// [`BufferRequestBodyLayer`](super::BufferRequestBodyLayer) hands the
    /// service below it, and what
    /// [`GrpcStatusLayer`](super::GrpcStatusLayer) hands back as a
    /// response's body.
    ///
    /// Its [`ReplayBody`] copy is `None` when it streams, so
    /// [`IdempotentReplay`](super::IdempotentReplay) sends such a request
    /// once and does not retry it. A streaming body sends first what was
    /// read of it before it was found too big (or failed), then the rest of
    /// the original body, or its error: nothing is lost or truncated.
    pub struct ReplayableBody<B: Body> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B: Body> {
        Buffered {
            // What is left to send; a copy made before sending holds all.
            data: Bytes,
            trailers: Option<HeaderMap>,
        },
        Streaming {
            read: ReadAhead,
            #[pin]
            rest: B,
        },
        // Reading the original body failed: what was read, then its error.
        Failed {
            read: ReadAhead,
            error: Option<B::Error>,
        },
    }
}

/// The bytes read of a body before it was found too big or failed: the
/// buffer so far, and the chunk that went past the limit. Sent before the
/// rest, as they came.
#[derive(Debug, Default)]
pub(crate) struct ReadAhead {
    first: Option<Bytes>,
    second: Option<Bytes>,
}

impl ReadAhead {
    /// `first`, then `second`, leaving out empty chunks.
    pub(crate) fn new(first: Bytes, second: Option<Bytes>) -> Self {
        let non_empty = |chunk: Bytes| (!chunk.is_empty()).then_some(chunk);
        ReadAhead {
            first: non_empty(first),
            second: second.and_then(non_empty),
        }
    }

    fn next(&mut self) -> Option<Bytes> {
        self.first.take().or_else(|| self.second.take())
    }

    fn is_empty(&self) -> bool {
        self.first.is_none() && self.second.is_none()
    }

    fn len(&self) -> u64 {
        let len = |chunk: &Option<Bytes>| chunk.as_ref().map_or(0, |c| c.len() as u64);
        len(&self.first) + len(&self.second)
    }
}

impl<B: Body> ReplayableBody<B> {
    /// A body held in memory, which can be sent again.
    pub fn buffered(data: Bytes) -> Self {
        Self::whole(data, None)
    }

    /// A body that streams: it is sent once, and never retried.
    pub fn streaming(body: B) -> Self {
        Self::streaming_after(ReadAhead::default(), body)
    }

    /// Whether the body is held in memory (and so can be sent again).
    pub fn is_buffered(&self) -> bool {
        matches!(self.kind, Kind::Buffered { .. })
    }

    /// All of a body, read before it is sent, with its trailers if it had
    /// any.
    pub(crate) fn whole(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        ReplayableBody {
            kind: Kind::Buffered { data, trailers },
        }
    }

    /// `read`, then the rest of the body.
    pub(crate) fn streaming_after(read: ReadAhead, rest: B) -> Self {
        ReplayableBody {
            kind: Kind::Streaming { read, rest },
        }
    }

    /// `read`, then `error`: the original body failed while it was read.
    pub(crate) fn failed_after(read: ReadAhead, error: B::Error) -> Self {
        ReplayableBody {
            kind: Kind::Failed {
                read,
                error: Some(error),
            },
        }
    }
}

impl<B: Body> ReplayBody for ReplayableBody<B> {
    fn replay_body(&self) -> Option<Self> {
        match &self.kind {
            Kind::Buffered { data, trailers } => {
                Some(ReplayableBody::whole(data.clone(), trailers.clone()))
            }
            Kind::Streaming { .. } | Kind::Failed { .. } => None,
        }
    }
}

impl<B> Body for ReplayableBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Buffered { data, trailers } => {
                let frame = if !data.is_empty() {
                    Some(Frame::data(std::mem::take(data)))
                } else {
                    trailers.take().map(Frame::trailers)
                };
                Poll::Ready(frame.map(Ok))
            }
            KindProj::Streaming { read, rest } => match read.next() {
                Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
                None => rest.poll_frame(cx),
            },
            KindProj::Failed { read, error } => {
                let frame = match read.next() {
                    Some(chunk) => Some(Ok(Frame::data(chunk))),
                    None => error.take().map(Err),
                };
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Buffered { data, trailers } => data.is_empty() && trailers.is_none(),
            Kind::Streaming { read, rest } => read.is_empty() && rest.is_end_stream(),
            Kind::Failed { read, error } => read.is_empty() && error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Buffered { data, .. } => SizeHint::with_exact(data.len() as u64),
            // The original's hint counts what is left of it; what was read
            // ahead comes on top (so a known length stays known: hyper
            // sends it as `content-length`).
            Kind::Streaming { read, rest } => {
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(read.len()));
                }
                hint.set_lower(rest.lower().saturating_add(read.len()));
                hint
            }
            // The length is unknown: it ends in an error.
            Kind::Failed { read, .. } => {
                let mut hint = SizeHint::new();
                hint.set_lower(read.len());
                hint
            }
        }
    }
}

impl<B: Body> fmt::Debug for ReplayableBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Buffered { data, .. } => f
                .debug_struct("ReplayableBody::Buffered")
                .field("len", &data.len())
                .finish_non_exhaustive(),
            Kind::Streaming { read, .. } => f
                .debug_struct("ReplayableBody::Streaming")
                .field("read_ahead", &read.len())
                .finish_non_exhaustive(),
            Kind::Failed { read, .. } => f
                .debug_struct("ReplayableBody::Failed")
                .field("read_ahead", &read.len())
                .finish_non_exhaustive(),
        }
    }
}
