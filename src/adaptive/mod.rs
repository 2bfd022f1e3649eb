//! A concurrency limit that moves: a bulkhead whose limit falls when the
//! dependency slows down or drops calls, and rises again when it recovers,
//! as in Netflix's concurrency-limits.
//!
//! A fixed bulkhead (`palisade::bulkhead`) needs its limit chosen up front, and
//! the right one changes with the dependency's health and load.
//! [`AdaptiveLayer`] admits a call while fewer calls are in flight than the
//! current limit, and refuses the rest at once with
//! [`BulkheadFull`](crate::error::BulkheadFull) (whose limit is the one in
//! force). Each finished call is a sample, and an algorithm moves the limit
//! from the samples:
//!
//! - **AIMD** ([`AdaptiveLayer::aimd`]): one more slot per healthy call
//!   while at least half the slots are in use; the limit times 0.9 per
//!   drop, or per call slower than `slow_after`. Simple, and reacts only
//!   to drops and very slow calls.
//! - **Gradient2** ([`AdaptiveLayer::gradient`]): the limit follows the
//!   ratio of a long-term average latency to each call's, so it falls as
//!   queueing shows in the latency, before anything fails. Drops count as
//!   the slowest calls.
//!
//! ```
//! use std::time::Duration;
//! use palisade::adaptive::AdaptiveLayer;
//! use palisade::{BoxError, ErrorKind};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let layer = AdaptiveLayer::aimd().name("payments").limits(2, 1, 10).build()?;
//! let handle = layer.handle();
//! // Answers after 10 ms; `true` asks it to fail as an overloaded service would.
//! let mut svc = ServiceBuilder::new().layer(layer).service(service_fn(|overloaded: bool| async move {
//!     tokio::time::sleep(Duration::from_millis(10)).await;
//!     if overloaded { Err::<(), BoxError>("overloaded".into()) } else { Ok(()) }
//! }));
//!
//! let first = svc.ready().await?.call(false);
//! let second = svc.ready().await?.call(false);
//! let err = svc.ready().await?.call(false).await.unwrap_err(); // 2 in flight, limit 2
//! assert!(matches!(ErrorKind::of(&err), ErrorKind::BulkheadFull(_)));
//! first.await?;
//! second.await?;
//! assert_eq!(handle.limit(), 4); // two healthy calls while busy: one slot each
//! svc.ready().await?.call(true).await.unwrap_err();
//! assert_eq!(handle.limit(), 3); // a drop: 4 × 0.9, rounded down
//! assert_eq!((handle.in_flight(), handle.rejected()), (0, 1));
//! # Ok(())
//! # }
//! ```
//!
//! # What counts
//!
//! A sample is a call's latency (from `call` to its answer; with the
//! `fast-clock` feature, on the CPU's counter unless tokio's clock is
//! paused when the layer first times a call, as in tests), the calls in
//! flight when it was admitted, and whether it was dropped. A [`Classify`]
//! implementation, [`DefaultClassifier`] unless the builder is given
//! another, decides:
//!
//! - [`Success`](crate::classify::Outcome::Success): a healthy sample.
//! - [`Failure`](crate::classify::Outcome::Failure): a drop, the signal
//!   that the dependency is overloaded. The default classifier counts a
//!   palisade timeout's [`Elapsed`](crate::error::Elapsed) and any error
//!   from below as one.
//! - [`Ignored`](crate::classify::Outcome::Ignored): no sample (the slot
//!   comes back all the same). The default classifier ignores palisade's
//!   refusals from layers below, which never reached the dependency, and
//!   calls a request's deadline cut short.
//! - A call whose response future is dropped before it answers (cancelled,
//!   or its inner future panicked) is no sample either: how it would have
//!   ended is not known.
//!
//! # Where it goes
//!
//! Where the fixed bulkhead would: inside retry and the circuit breaker,
//! so that every attempt takes a slot. But **outside the attempt timeout**:
//! a timeout below it answers with `Elapsed`, a drop; a timeout above it
//! drops its future, which counts for nothing, and a limiter that never
//! sees its slow calls end cannot learn from them.
//!
//! A call that finds no free slot fails at once: there is no waiting mode.
//! The limit is the concurrency the dependency serves well, so calls queued
//! in front of it would only add their wait to the latency the algorithm
//! reads. A caller that must wait for a slot wants the fixed bulkhead's
//! `max_wait` (palisade's retry never retries a `BulkheadFull`).
//!
//! # The tower contract
//!
//! As the fixed bulkhead's fail-fast mode: `poll_ready`
//! takes a slot or, finding none, returns `Ready(Ok(()))` without polling
//! the inner service, and `call` returns a future that fails with
//! `BulkheadFull`. The slot is kept in the service, moved into the
//! [`ResponseFuture`] by `call`, and comes back when that future completes,
//! is dropped, or the inner service panics; when the inner service's
//! readiness fails; and when a service holding an unused slot is dropped.
//! A clone starts with no slot. When the limit falls below the calls in
//! flight, those calls run to the end; new ones are refused until fewer
//! than the new limit remain.
//!
//! One layer value is one limit, shared by every service it builds and all
//! their clones. Admission is one compare-and-swap on the count in flight;
//! the algorithm's update after each call takes a short lock.
//!
//! # Configuration
//!
//! | option | default | rule |
//! |---|---|---|
//! | `initial_limit` | 20 | within `min_limit ..= max_limit` |
//! | `min_limit` | 20 | at least 1 |
//! | `max_limit` | 200 | `min_limit ..= u32::MAX` |
//! | `name` | `"adaptive"` | any string |
//! | AIMD `backoff_factor` | 0.9 | in (0, 1) |
//! | AIMD `slow_after` | 5 s | more than zero |
//! | Gradient2 `tolerance` | 1.5 | at least 1 |
//! | Gradient2 `long_window` | 600 samples | at least 1 |
//! | Gradient2 `queue_allowance` | 4 calls | 0 or more |
//! | Gradient2 `smoothing` | 0.2 | in (0, 1] |
//!
//! The defaults are concurrency-limits'. With the default bounds the limit
//! never goes below 20: lower `min_limit` for a dependency that serves
//! fewer calls at once.

mod aimd;
mod future;
mod gradient;
mod handle;
mod layer;
mod limiter;

pub use aimd::AimdConfig;
pub use future::ResponseFuture;
pub use gradient::GradientConfig;
pub use handle::Handle;
pub use layer::{AdaptiveBuilder, AdaptiveConfig, AdaptiveLayer, Algorithm};

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use crate::classify::{Classify, DefaultClassifier};
use crate::error::BoxError;
use limiter::{Limiter, Permit};

/// A service that allows at most the current adaptive limit of calls in
/// flight.
///
/// Built by [`AdaptiveLayer`]; see the [module docs](self).
pub struct Adaptive<S, C = DefaultClassifier> {
    inner: S,
    limiter: Arc<Limiter>,
    classifier: C,
    // The slot reserved for the next call.
    permit: Option<Permit>,
    // No slot: the next call fails without reaching the inner service.
    refused: bool,
}

impl<S, C> Adaptive<S, C> {
    fn new(inner: S, limiter: Arc<Limiter>, classifier: C) -> Self {
        Adaptive {
            inner,
            limiter,
            classifier,
            permit: None,
            refused: false,
        }
    }

    /// A handle on the shared state.
    pub fn handle(&self) -> Handle {
        Handle::new(self.limiter.clone())
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
}

impl<S: Clone, C: Clone> Clone for Adaptive<S, C> {
    /// The clone shares the limit but holds no slot of its own.
    fn clone(&self) -> Self {
        Adaptive::new(
            self.inner.clone(),
            self.limiter.clone(),
            self.classifier.clone(),
        )
    }
}

impl<S, C, Request> Service<Request> for Adaptive<S, C>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.permit.is_none() {
            // A refusal is not final: a fresh look may find a slot that
            // freed up, or a limit that rose, since the last one.
            self.permit = self.limiter.try_acquire();
            self.refused = self.permit.is_none();
            if self.refused {
                // Decided without touching the inner service's readiness.
                return Poll::Ready(Ok(()));
            }
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
            let inner = self.inner.call(request);
            return ResponseFuture::admitted(inner, permit, self.classifier.clone());
        }
        if std::mem::take(&mut self.refused) {
            self.limiter.count_rejection();
            return ResponseFuture::rejected(self.limiter.clone());
        }
        ResponseFuture::not_ready(self.limiter.clone())
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Adaptive<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adaptive")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .field("reserved", &self.permit.is_some())
            .field("refused", &self.refused)
            .finish_non_exhaustive()
    }
}
