//! Hedge slow calls: when an attempt has not answered after a delay, send
//! the same request again and take whichever answers first.
//!
//! [`HedgeLayer`] cuts the slow tail of a dependency whose calls are
//! usually fast: a call stuck behind a slow replica, a pause or a lost
//! packet gets a second chance after `delay`, and the first good answer
//! wins. The other attempts are cancelled: their futures are dropped (so
//! their connections are released), and late answers are never seen.
//!
//! ```
//! use std::time::Duration;
//! use palisade::BoxError;
//! use palisade::hedge::HedgeLayer;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let layer = HedgeLayer::after(Duration::from_millis(10)).name("search").build()?;
//! let handle = layer.handle();
//! let calls = std::sync::atomic::AtomicU32::new(0);
//! let calls = &*Box::leak(Box::new(calls));
//! // The first attempt is stuck; the hedge answers.
//! let svc = layer.layer(service_fn(move |q: &'static str| async move {
//!     if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
//!         std::future::pending::<()>().await;
//!     }
//!     Ok::<_, BoxError>(q.len())
//! }));
//! assert_eq!(svc.oneshot("rust").await?, 4);
//! assert_eq!(handle.counts().won_by_hedge, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # When hedges go
//!
//! - The delay is fixed ([`HedgeLayer::after`]) or learned
//!   ([`HedgeLayer::at_percentile`]): a percentile of the latencies of
//!   recent successful requests, so that only the slowest calls are
//!   hedged. Until enough latencies are known, requests are not hedged.
//! - The next hedge goes one delay after the previous attempt was sent,
//!   up to `max_attempts` in all (default 2).
//! - An attempt that fails (the classifier's `Failure`, such as a 503)
//!   does not end the race: the next hedge goes at once (unless the
//!   failure's pushback says otherwise, below), and the caller gets a
//!   failure only when every attempt has failed. An outcome the
//!   classifier calls `Ignored` (such as a 400 or a 404) is final: it is
//!   returned at once, as another attempt would answer the same.
//! - A failure's server pushback ([`Classify::retry_after`], asked only of
//!   failures; gRPC's `grpc-retry-pushback-ms` through `GrpcClassifier`)
//!   is obeyed as gRPC's hedging defines it. A wait holds the next hedge
//!   until that long after the failure, not at once nor at the delay, and
//!   the hedges after it go one delay apart again. The request waits for
//!   that hedge even with no attempt out, however long the server asked
//!   for: a timeout outside the hedge bounds it. "Do not retry"
//!   (`Duration::MAX`) sends no more hedges for the request: the attempts
//!   out run on and may still win, and if they all fail the caller gets
//!   the last failure.
//! - A refusal by a layer below (an open circuit, a full bulkhead, a
//!   throttle, a rate limit) says nothing about the upstream: it neither
//!   ends the race nor sends the next hedge at once; with no other attempt
//!   out it is the answer, at once.
//! - Only requests that may be sent twice are hedged: the [`Replay`] rule
//!   (default: clone every request; [`HedgeBuilder::hedge_if`] or, over
//!   HTTP, `IdempotentReplay`) makes the copies. A request it refuses has
//!   one attempt.
//! - Hedges are paid for from a budget of the retry layer's kind
//!   ([`RetryBudget`](crate::retry::RetryBudget); by default 20 % of
//!   requests plus 10 a second): when the dependency is slow for
//!   everyone, hedging stops adding load instead of doubling it. A hedge
//!   is paid for when it is due, before it waits for the service's
//!   readiness; one that then never goes (the request ended, its caller
//!   dropped it, the service's readiness failed, or a pushback said not
//!   to retry) is given back.
//!
//! Hedge outside the timeout of one attempt and inside a retry layer if
//! there is one, so that each attempt has its own deadline.
//!
//! # What it costs
//!
//! A request that may be hedged reads the clock when its first attempt
//! goes (a windowed budget reads it too), copies the request, and makes a
//! timer that joins tokio's timer wheel only if the attempt is still out
//! at the first poll. Its first hedge clones the service (a spare of the
//! one the layer wrapped, kept when the layer was applied: a request
//! answered in time clones nothing); a hedge sent reads the clock,
//! allocates its future and re-arms the timer. A learned delay reads the
//! clock and takes a short lock per successful request to record its
//! attempts' latencies: the winner's as it took and, when a hedge won, the
//! first attempt it beat as at least the time it had run (so hedging
//! neither pulls the delay down, as recording the fast hedges alone would,
//! nor pushes it up, as recording the callers' waits would). A service
//! that answers within a microsecond is not hedged.
//!
//! [`Replay`]: crate::retry::Replay
//! [`Classify::retry_after`]: crate::classify::Classify::retry_after

mod future;
mod handle;
mod latency;
mod layer;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;

use crate::classify::{Classify, DefaultClassifier};
use crate::error::BoxError;
use crate::retry::{CloneRequest, Replay};
use crate::spare::WithSpare;

pub use future::ResponseFuture;
pub use handle::{Counts, Handle};
pub use layer::{HedgeBuilder, HedgeConfig, HedgeLayer};

use handle::Shared;

/// Sends a request again when its attempt is slow; see the
/// [module docs](self).
pub struct Hedge<S, C = DefaultClassifier, R = CloneRequest> {
    inner: S,
    // The layer's state, and the service hedges go to.
    hedges: Arc<WithSpare<Shared, S>>,
    classifier: C,
    replay: R,
}

impl<S: Clone, C, R> Hedge<S, C, R> {
    fn new(inner: S, shared: Arc<Shared>, classifier: C, replay: R) -> Self {
        Hedge {
            hedges: Arc::new(WithSpare::new(shared, &inner)),
            inner,
            classifier,
            replay,
        }
    }
}

impl<S, C, R> Hedge<S, C, R> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: Clone, R: Clone> Clone for Hedge<S, C, R> {
    /// The clone shares the layer's state and the service hedges go to.
    fn clone(&self) -> Self {
        Hedge {
            inner: self.inner.clone(),
            hedges: self.hedges.clone(),
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
        }
    }
}

impl<S, C, R, Req> Service<Req> for Hedge<S, C, R>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError> + 'static,
    C: Classify<S::Response, S::Error> + Clone,
    R: Replay<Req> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let shared = &self.hedges.shared;
        shared.count_request();
        shared.budget.on_request();
        let delay = shared.delay();
        let copy = delay.and_then(|_| self.replay.replay(&request));
        // A hedged request is timed (its hedge goes a delay after it
        // starts), and so is an unhedged one under a learned delay, since a
        // request unhedged for want of data is how the data comes.
        let timed = (delay.is_some() && copy.is_some()) || shared.learns();
        let started = timed.then(Instant::now);
        let (Some(delay), Some(copy), Some(started)) = (delay, copy, started) else {
            let future = self.inner.call(request);
            return ResponseFuture::single(
                future,
                started,
                self.classifier.clone(),
                self.hedges.clone(),
            );
        };
        let future = self.inner.call(request);
        ResponseFuture::hedged(
            future,
            started,
            started.checked_add(delay),
            copy,
            self.replay.clone(),
            self.classifier.clone(),
            self.hedges.clone(),
        )
    }
}

impl<S: fmt::Debug, C, R> fmt::Debug for Hedge<S, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("inner", &self.inner)
            .field("shared", &self.hedges.shared)
            .finish_non_exhaustive()
    }
}
