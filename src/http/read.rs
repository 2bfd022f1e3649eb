//! Reading a body into memory up to a size, keeping what was read when it
//! turns out bigger, or fails: shared by
//! [`BufferRequestBodyLayer`](super::BufferRequestBodyLayer) (request
//! bodies) and [`GrpcStatusLayer`](super::GrpcStatusLayer) (response
//! bodies).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::Body;

use super::body::{ReadAhead, ReplayableBody};

/// A body being read into memory.
pub(crate) struct BodyReader<B> {
    body: B,
    buffer: Buffer,
}

/// How reading a body ended.
pub(crate) enum Read<E> {
    /// All of it is in the buffer, followed by these trailers, if any.
    Whole(Option<HeaderMap>),
    /// It is bigger than the limit: the buffer, then this chunk if one
    /// went past it, then the rest of the body.
    TooBig(Option<Bytes>),
    /// It failed: the buffer, then this error.
    Failed(E),
}

impl<B: Body<Data = Bytes> + Unpin> BodyReader<B> {
    pub(crate) fn new(body: B) -> Self {
        BodyReader {
            body,
            buffer: Buffer::Empty,
        }
    }

    /// Reads until the body ends, fails, or turns out bigger than
    /// `max_bytes`.
    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        max_bytes: usize,
    ) -> Poll<Read<B::Error>> {
        loop {
            // The size hint counts what is left, so this holds at any point:
            // a body that says it is too big is not read at all.
            let read = self.buffer.len() as u64;
            if read.saturating_add(self.body.size_hint().lower()) > max_bytes as u64 {
                return Poll::Ready(Read::TooBig(None));
            }
            if self.body.is_end_stream() {
                return Poll::Ready(Read::Whole(None));
            }
            let frame = match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => return Poll::Ready(Read::Whole(None)),
                Some(Err(error)) => return Poll::Ready(Read::Failed(error)),
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                Ok(chunk) if self.buffer.len() + chunk.len() > max_bytes => {
                    return Poll::Ready(Read::TooBig(Some(chunk)));
                }
                Ok(chunk) => {
                    let read = (self.buffer.len() + chunk.len()) as u64;
                    let expected = read.saturating_add(self.body.size_hint().lower());
                    self.buffer
                        .push(chunk, expected.min(max_bytes as u64) as usize);
                }
                // Trailers come last.
                Err(frame) => return Poll::Ready(Read::Whole(frame.into_trailers().ok())),
            }
        }
    }

    /// The body to hand on, as `read` left it: whole, or what was read
    /// followed by the rest (or by the error).
    pub(crate) fn into_body(self, read: Read<B::Error>) -> ReplayableBody<B> {
        let data = self.buffer.into_bytes();
        match read {
            Read::Whole(trailers) => ReplayableBody::whole(data, trailers),
            Read::TooBig(chunk) => {
                ReplayableBody::streaming_after(ReadAhead::new(data, chunk), self.body)
            }
            Read::Failed(error) => ReplayableBody::failed_after(ReadAhead::new(data, None), error),
        }
    }
}

/// The bytes of a body read so far. The first chunk is kept as it came,
/// without a copy (a body that comes in one chunk costs nothing more); a
/// second one starts a buffer, sized for the whole body when its size hint
/// says how big it is.
enum Buffer {
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Buffer {
    fn len(&self) -> usize {
        match self {
            Buffer::Empty => 0,
            Buffer::One(chunk) => chunk.len(),
            Buffer::Many(buffer) => buffer.len(),
        }
    }

    /// Appends `chunk`; `expected` is how long the body is likely to be.
    fn push(&mut self, chunk: Bytes, expected: usize) {
        if chunk.is_empty() {
            return;
        }
        *self = match std::mem::replace(self, Buffer::Empty) {
            Buffer::Empty => Buffer::One(chunk),
            Buffer::One(first) => {
                let mut buffer = BytesMut::with_capacity(expected.max(first.len() + chunk.len()));
                buffer.extend_from_slice(&first);
                buffer.extend_from_slice(&chunk);
                Buffer::Many(buffer)
            }
            Buffer::Many(mut buffer) => {
                buffer.extend_from_slice(&chunk);
                Buffer::Many(buffer)
            }
        };
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Buffer::Empty => Bytes::new(),
            Buffer::One(chunk) => chunk,
            Buffer::Many(buffer) => buffer.freeze(),
        }
    }
}
