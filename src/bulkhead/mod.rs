//! Limit the calls in flight, so one slow dependency cannot take every
//! connection, thread or socket with it.
//!
//! [`BulkheadLayer`] lets at most `max_concurrent` calls run at once. A call
//! that finds every slot taken either fails at once with [`BulkheadFull`]
//! (the default, `max_wait` zero) or waits up to `max_wait` for a slot, in the
//! order the callers arrived, and then fails with `BulkheadFull`.
//!
//! [`BulkheadFull`]: crate::error::BulkheadFull
//!
//! ```
//! use std::time::Duration;
//! use palisade::bulkhead::BulkheadLayer;
//! use palisade::{BoxError, ErrorKind};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let layer = BulkheadLayer::builder().name("reports").max_concurrent(1).build()?;
//! let handle = layer.handle();
//! let mut svc = ServiceBuilder::new().layer(layer).service(service_fn(|_: ()| async {
//!     tokio::time::sleep(Duration::from_secs(1)).await;
//!     Ok::<_, BoxError>("report")
//! }));
//!
//! let first = svc.ready().await?.call(()); // takes the only slot
//! assert_eq!(handle.in_flight(), 1);
//! let err = svc.ready().await?.call(()).await.unwrap_err();
//! assert!(matches!(ErrorKind::of(&err), ErrorKind::BulkheadFull(_)));
//! assert_eq!(first.await?, "report"); // the slot comes back
//! assert_eq!(handle.in_flight(), 0);
//! assert_eq!(handle.rejected(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! # The tower contract
//!
//! A full bulkhead is a temporary refusal, so it is never an error from
//! `poll_ready` (that would tell the caller to discard the service, and
//! `tower::buffer` would make it permanent). In fail-fast mode `poll_ready`
//! takes a slot or, finding none, returns `Ready(Ok(()))` without polling the
//! inner service, and `call` returns a future that fails with
//! [`BulkheadFull`]. In waiting mode `poll_ready` returns `Pending` while it
//! waits (it wakes itself when a slot frees or the wait runs out). A refusal
//! is not final: polling readiness again before calling takes a slot that has
//! freed up since.
//!
//! The slot is taken in `poll_ready`, kept in the service, and moved into the
//! [`ResponseFuture`] by `call`. It comes back when that future completes, is
//! dropped or cancelled, or the inner service panics; when the inner service's
//! readiness fails; and when a service holding an unused slot is dropped. A
//! clone starts with no slot, so a clone that is never called holds none.
//!
//! # Sharing
//!
//! One layer value is one set of slots, shared by every service it builds and
//! all their clones (hyper clones the whole stack for each request, so a
//! per-instance limit would limit nothing). Use one layer per dependency. The
//! [`Handle`] reports the slots in use, the callers waiting, the calls refused
//! and the configured limit.
//!
//! # Configuration
//!
//! | option | default | rule |
//! |---|---|---|
//! | `max_concurrent` | none, required | 1 ..= `usize::MAX >> 3` |
//! | `max_wait` | zero: fail fast | any; a wait allocates twice (its future and its place in the queue) |
//! | `name` | `"bulkhead"` | any string |
//!
//! A zero `max_concurrent` is a [`ConfigError`](crate::ConfigError) rather
//! than a bulkhead that refuses (or, as tower's `ConcurrencyLimit` does,
//! stalls) every call.

mod future;
mod handle;
mod layer;
mod slots;

pub use future::ResponseFuture;
pub use handle::Handle;
pub use layer::{BulkheadBuilder, BulkheadConfig, BulkheadLayer};

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use crate::error::BoxError;
use handle::{Permit, Shared, WaitForSlot, WhenFull};

/// A service that allows at most a fixed number of calls in flight.
///
/// Built by [`BulkheadLayer`]; see the [module docs](self).
pub struct Bulkhead<S> {
    inner: S,
    shared: Arc<Shared>,
    // The slot reserved for the next call. Kept apart from the rarer states
    // below so the fast path moves one small `Option`, as tower's
    // `ConcurrencyLimit` does.
    permit: Option<Permit>,
    // Waiting for a slot, bounded by `max_wait`.
    waiting: Option<Pin<Box<WaitForSlot>>>,
    // No slot: the next call fails without reaching the inner service.
    refused: bool,
}

impl<S> Bulkhead<S> {
    fn new(inner: S, shared: Arc<Shared>) -> Self {
        Bulkhead {
            inner,
            shared,
            permit: None,
            waiting: None,
            refused: false,
        }
    }

    /// A handle on the shared state.
    pub fn handle(&self) -> Handle {
        Handle::new(self.shared.clone())
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service, giving back any slot this service holds.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Decides this call's slot: reserved, or refused. `Pending` while waiting.
    fn poll_slot(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.permit.is_some() {
            return Poll::Ready(());
        }
        if self.refused {
            // The refusal stands until `call` reports it, unless a slot has
            // freed up since: a caller that polls again gets a fresh look.
            if let Some(permit) = self.shared.try_acquire() {
                self.refused = false;
                self.permit = Some(permit);
            }
            return Poll::Ready(());
        }
        if self.waiting.is_none() {
            match self.shared.try_acquire() {
                Some(permit) => {
                    self.permit = Some(permit);
                    return Poll::Ready(());
                }
                None => match self.shared.when_full() {
                    WhenFull::Admit(permit) => {
                        self.permit = Some(permit);
                        return Poll::Ready(());
                    }
                    WhenFull::Refuse => {
                        self.refused = true;
                        return Poll::Ready(());
                    }
                    WhenFull::Wait(wait) => self.waiting = Some(wait),
                },
            }
        }
        if let Some(waiting) = &mut self.waiting {
            let permit = std::task::ready!(waiting.as_mut().poll(cx));
            self.waiting = None;
            match permit {
                Some(permit) => self.permit = Some(permit),
                None => self.refused = true,
            }
        }
        Poll::Ready(())
    }
}

impl<S: Clone> Clone for Bulkhead<S> {
    /// The clone shares the slots but holds none of its own.
    fn clone(&self) -> Self {
        Bulkhead::new(self.inner.clone(), self.shared.clone())
    }
}

impl<S, Request> Service<Request> for Bulkhead<S>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        std::task::ready!(self.poll_slot(cx));
        if self.permit.is_none() {
            // Refused, decided without touching the inner service's readiness.
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Err(err)) => {
                // A failed service gets no call: give the slot back.
                self.permit = None;
                Poll::Ready(Err(err.into()))
            }
            other => other.map_err(Into::into),
        }
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if let Some(permit) = self.permit.take() {
            return ResponseFuture::admitted(self.inner.call(request), permit);
        }
        if std::mem::take(&mut self.refused) {
            self.shared.count_rejection();
            return ResponseFuture::rejected(self.shared.clone());
        }
        ResponseFuture::not_ready(self.shared.clone())
    }
}

impl<S: fmt::Debug> fmt::Debug for Bulkhead<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .field("reserved", &self.permit.is_some())
            .field("waiting", &self.waiting.is_some())
            .field("refused", &self.refused)
            .finish()
    }
}
