//! Deadlines across HTTP hops: the time left travels in a header.
//!
//! A [`Deadline`] lives in a request's extensions ([`InExtensions`] is the
//! [`DeadlineSlot`] that keeps it there), where palisade's timeout and
//! retry find it. Between services it travels as the time left, in gRPC's
//! `grpc-timeout` form (`250m` is 250 ms; at most eight digits and a unit
//! letter, `H M S m u n`), because a time left needs no synchronised
//! clocks and gRPC servers (tonic included) already read it:
//!
//! - [`WriteDeadlineLayer`], innermost on a client, writes the time left at
//!   the moment of sending, in the finest unit that fits eight digits,
//!   rounded up. It replaces any copy of the header the request already
//!   had (a proxy forwarding its inbound headers), so exactly one value
//!   leaves, and it is the time left now. A request without a deadline
//!   leaves without the header. A request whose time is spent is not sent:
//!   its caller gets an [`Elapsed`] whose
//!   [`by_deadline`](crate::error::Elapsed::by_deadline) is `true`.
//! - [`ReadDeadlineLayer`], on a server, turns the header into a deadline
//!   in the request's extensions, counted from the request's arrival (so a
//!   little later than the caller's own, by the time on the wire), capped
//!   by the server's own
//!   [`max`](ReadDeadlineLayer::max), and removes the header (the
//!   extension now says it, and a handler that forwards headers must not
//!   pass on a stale time). A request that arrives with no time left (`0m`,
//!   or a deadline set earlier that has passed by the time it reaches this
//!   layer, after queueing, say) is refused without calling the service:
//!   the error is an `Elapsed` (a 504 through
//!   [`ErrorResponseLayer`](super::ErrorResponseLayer)), and the
//!   [`ReadDeadlineHandle`] counts it and how late it was.
//! - [`BodyDeadlineLayer`], on a client below the timeout, holds the
//!   response body to the same deadline: a body still streaming when it
//!   passes ends there with an `Elapsed`, and the rest is dropped.
//! - A malformed value (`1234`, `-1S`, nine digits) is ignored, as Envoy and
//!   Finagle ignore it: the request is served under the server's own
//!   timeouts, never as expired, and the handle counts it. gRPC refuses such
//!   a request instead; a deadline that cannot be read is no reason to
//!   refuse work a client asked for.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), palisade::BoxError> {
//! use std::time::Duration;
//! use http::{Request, Response};
//! use palisade::deadline::Deadline;
//! use palisade::http::{InExtensions, ReadDeadlineLayer, WriteDeadlineLayer};
//! use palisade::timeout::TimeoutLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! // The next hop: shows the header it was sent.
//! let upstream = service_fn(|request: Request<()>| async move {
//!     let sent = request.headers()["grpc-timeout"].to_str()?.to_owned();
//!     Ok::<_, palisade::BoxError>(Response::new(sent))
//! });
//! // A server that reads its caller's deadline, and calls on with a
//! // timeout of its own: the earlier of the two goes on.
//! let service = ServiceBuilder::new()
//!     .layer(ReadDeadlineLayer::new().max(Duration::from_secs(30))?)
//!     .layer(TimeoutLayer::new(Duration::from_secs(2))?.deadline_slot(InExtensions))
//!     .layer(WriteDeadlineLayer::new())
//!     .service(upstream);
//!
//! let request = Request::get("/").header("grpc-timeout", "500m").body(())?;
//! let response = service.oneshot(request).await?;
//! assert_eq!(response.body(), "500000u"); // 500 ms left, in the finest unit that fits
//! # Ok(())
//! # }
//! ```

mod body;
mod future;
mod grpc_timeout;
mod layer;

pub use body::{BodyDeadline, BodyDeadlineFuture, BodyDeadlineLayer, DeadlineBody};
pub use future::ResponseFuture;
pub use layer::{ReadDeadlineLayer, WriteDeadlineLayer};

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderName, Request};
use tokio::time::Instant;
use tower_service::Service;

use crate::deadline::{Deadline, DeadlineSlot};
use crate::error::{BoxError, Elapsed, Why};
use crate::name::Name;
use crate::sync::{AtomicU64, Ordering};

/// The header a deadline travels in unless told otherwise: `grpc-timeout`.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The name deadline refusals carry.
const NAME: Name = Name::Static("deadline");

/// Keeps an `http::Request`'s [`Deadline`] in its extensions: the
/// [`DeadlineSlot`] for HTTP stacks.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// use std::time::Duration;
/// use palisade::deadline::{Deadline, DeadlineSlot};
/// use palisade::http::InExtensions;
///
/// let mut request = http::Request::new(());
/// assert_eq!(InExtensions.deadline(&request), None);
/// let deadline = Deadline::after(Duration::from_secs(1));
/// InExtensions.set_deadline(&mut request, deadline);
/// assert_eq!(request.extensions().get::<Deadline>(), Some(&deadline));
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct InExtensions;

impl<B> DeadlineSlot<Request<B>> for InExtensions {
    #[inline]
    fn deadline(&self, request: &Request<B>) -> Option<Deadline> {
        request.extensions().get::<Deadline>().copied()
    }

    #[inline]
    fn set_deadline(&self, request: &mut Request<B>, deadline: Deadline) {
        request.extensions_mut().insert(deadline);
    }
}

/// Reads the caller's deadline from a header; built by
/// [`ReadDeadlineLayer`]; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct ReadDeadline<S> {
    inner: S,
    shared: Arc<ReadShared>,
}

#[derive(Debug)]
pub(crate) struct ReadShared {
    header: HeaderName,
    max: Option<Duration>,
    expired: AtomicU64,
    late_nanos: AtomicU64,
    malformed: AtomicU64,
}

impl ReadShared {
    pub(crate) fn new(header: HeaderName, max: Option<Duration>) -> Self {
        ReadShared {
            header,
            max,
            expired: AtomicU64::new(0),
            late_nanos: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
        }
    }
}

impl<S> ReadDeadline<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The deadline `request` brings: one set before this layer, or its
    /// header's, capped, whichever is earlier. Removes the header.
    fn inbound<B>(&self, request: &mut Request<B>, now: Instant) -> Option<Deadline> {
        let set = request.extensions().get::<Deadline>().copied();
        let Some(header) = request.headers_mut().remove(&self.shared.header) else {
            return set;
        };
        let Some(left) = grpc_timeout::parse(header.as_bytes()) else {
            self.shared.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                target: "palisade::deadline",
                value = ?header,
                "malformed deadline header ignored"
            );
            return set;
        };
        let left = self.shared.max.map_or(left, |max| left.min(max));
        let sent = Deadline::after_from(now, left);
        Some(set.map_or(sent, |set| set.earliest(sent)))
    }
}

impl<S, B> Service<Request<B>> for ReadDeadline<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // No header and no deadline: nothing to read, no clock read.
        if !request.headers().contains_key(&self.shared.header)
            && request.extensions().get::<Deadline>().is_none()
        {
            return ResponseFuture::called(self.inner.call(request));
        }
        let now = Instant::now();
        let Some(deadline) = self.inbound(&mut request, now) else {
            return ResponseFuture::called(self.inner.call(request));
        };
        if deadline.instant() <= now {
            let late = now.duration_since(deadline.instant());
            self.shared.expired.fetch_add(1, Ordering::Relaxed);
            let late_nanos = u64::try_from(late.as_nanos()).unwrap_or(u64::MAX);
            self.shared
                .late_nanos
                .fetch_add(late_nanos, Ordering::Relaxed);
            tracing::debug!(
                target: "palisade::deadline",
                late_by = ?late,
                "request arrived past its deadline; refused"
            );
            return ResponseFuture::expired(Elapsed::because(NAME, Duration::ZERO, Why::Expired));
        }
        request.extensions_mut().insert(deadline);
        ResponseFuture::called(self.inner.call(request))
    }
}

/// What a [`ReadDeadlineLayer`] has seen, shared by every service it built.
#[derive(Clone, Debug)]
pub struct ReadDeadlineHandle {
    shared: Arc<ReadShared>,
}

impl ReadDeadlineHandle {
    /// Requests refused because they arrived with no time left.
    pub fn expired(&self) -> u64 {
        self.shared.expired.load(Ordering::Relaxed)
    }

    /// How late those requests were, added up (zero for one that arrived
    /// saying it had no time left; the time since its deadline for one
    /// whose deadline passed while it queued).
    pub fn late_total(&self) -> Duration {
        Duration::from_nanos(self.shared.late_nanos.load(Ordering::Relaxed))
    }

    /// Requests whose header could not be read, and were served without a
    /// deadline from it.
    pub fn malformed(&self) -> u64 {
        self.shared.malformed.load(Ordering::Relaxed)
    }
}

/// Writes the time left on an outgoing request; built by
/// [`WriteDeadlineLayer`]; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct WriteDeadline<S> {
    inner: S,
    header: HeaderName,
}

impl<S> WriteDeadline<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for WriteDeadline<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // Replaced, never added to: a forwarded inbound copy says how much
        // time there was, not how much there is.
        request.headers_mut().remove(&self.header);
        if let Some(deadline) = request.extensions().get::<Deadline>().copied() {
            match grpc_timeout::encode(deadline.remaining()) {
                Some(left) => {
                    request.headers_mut().insert(self.header.clone(), left);
                }
                None => {
                    return ResponseFuture::expired(Elapsed::because(
                        NAME,
                        Duration::ZERO,
                        Why::Expired,
                    ));
                }
            }
        }
        ResponseFuture::called(self.inner.call(request))
    }
}
