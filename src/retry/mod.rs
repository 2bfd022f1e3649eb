//! Retry with jittered backoff, a shared retry budget, a deadline and
//! retry-after hints.
//!
//! A failed call is sent again, up to `max_attempts` in all, after a delay
//! from its [`Backoff`]. What counts as a failure is the shared
//! [classifier](crate::classify)'s call, so a response (an HTTP 503) can be
//! retried as well as an error; the final attempt's result comes back
//! unchanged, whatever it is.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), palisade::BoxError> {
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use palisade::retry::{Backoff, RetryLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! // Fails twice, then answers.
//! let calls = Arc::new(AtomicU32::new(0));
//! let counter = calls.clone();
//! let flaky = service_fn(move |n: u32| {
//!     let call = counter.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         if call < 2 { Err::<u32, palisade::BoxError>("busy".into()) } else { Ok(n * 2) }
//!     }
//! });
//! let retry = RetryLayer::builder()
//!     .max_attempts(3)
//!     .backoff(Backoff::exponential(Duration::from_millis(50)))
//!     .build()?;
//! let counts = retry.handle();
//! let svc = ServiceBuilder::new().layer(retry).service(flaky);
//! assert_eq!(svc.oneshot(21).await?, 42);
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! assert_eq!(counts.counts().succeeded_after_retry, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # What is retried
//!
//! - A result the classifier calls a [`Failure`](crate::classify::Outcome::Failure).
//!   With the [`DefaultClassifier`],
//!   every error except palisade's own refusals.
//! - A palisade [`RateLimited`](crate::error::RateLimited) refusal from a
//!   layer below (turn off with
//!   [`retry_rate_limited`](RetryBuilder::retry_rate_limited)). An open
//!   circuit, a full bulkhead or a throttle's refusal is never retried,
//!   whatever the classifier calls it: the breaker and the throttle exist
//!   to stop those calls (a retry would draw the throttle's dice again),
//!   and a bulkhead sheds load on purpose.
//! - Only requests that [`Replay`] can copy: by default every request is
//!   cloned; [`retry_if`](RetryBuilder::retry_if) limits retries to the
//!   requests a predicate accepts (idempotent ones, say), and a custom
//!   [`Replay`] can refuse requests whose body cannot be sent twice.
//!
//! # How long it waits
//!
//! The [`Backoff`] gives the delay before each retry: constant, linear or
//! exponential, capped at its maximum, spread by a [`Jitter`] and capped
//! again. Each request draws its own random sequence. When a result carries
//! a retry-after ([`Classify::retry_after`]: a `RateLimited` refusal's, an
//! HTTP `Retry-After`), the retry waits at least that long; if that is more
//! than the backoff's maximum, or would pass the deadline, it gives up and
//! returns the result instead (retrying sooner than the upstream asked would
//! most likely fail again).
//!
//! With a [`deadline`](RetryBuilder::deadline), no retry starts after it and
//! no backoff sleeps past it; the attempt in flight is not cut short (put a
//! timeout outside the retry for a hard bound). With
//! [`RetryLayer::deadline_slot`] the request's own
//! [`Deadline`] bounds the retries the same way
//! (the earlier of the two applies, and a retry never starts it afresh), and
//! when the layer's own deadline is the earlier, every attempt carries it,
//! so an attempt timeout below and the next hop work to it. A call that the
//! request's deadline cut short is not retried: there is no time left for
//! it.
//!
//! # The budget
//!
//! Retries multiply load, and multiply it most when a service is already
//! failing. A [`RetryBudget`] bounds retries relative to ordinary traffic;
//! it is on by default and shared by every service one layer builds. When it
//! is spent, the last result is returned as is. The default is a token
//! budget (gRPC's retry throttling: every failed attempt spends a token,
//! every success earns half of one back, retries go only while more than
//! half the tokens are left), because
//! it needs no clock read on the success path; [`RetryBudget::windowed`] is
//! Finagle's (retries up to a ratio of the last seconds' requests). A
//! windowed budget is paid when a retry is decided, before its backoff; a
//! retry that then never goes (the caller dropped the request, the deadline
//! passed, the service failed to get ready) gives its unit back. A windowed
//! budget reads the clock for every request. With the `fast-clock` feature
//! (on by default) that is the CPU's time-stamp counter, as for the rate
//! limiters, unless tokio's clock is paused at the budget's first reading:
//! then it follows tokio's clock for good. A test that steps a windowed
//! budget through time must pause the clock before its first request
//! (`#[tokio::test(start_paused = true)]` does).
//!
//! # On its own
//!
//! The pieces work outside the layer too: [`Backoff::delays`] gives the
//! jittered delays for a loop of your own, and [`SharedBudget`] is a retry
//! budget to ask before each retry that loop makes.
//!
//! # The tower contract
//!
//! `poll_ready` is the inner service's. `call` sends the first attempt on
//! the service that was driven to ready. A request's first retry takes a
//! clone of the service the layer wrapped (kept aside when the layer was
//! applied, never called itself), which it drives to ready before each of
//! its retries. A request that needs no retry clones nothing: cloning a
//! stack for every request (tower's retry does) moves a reference count up
//! and down for each `Arc` in it, on cache lines every thread shares.
//! Dropping the response future stops retrying at once.
//!
//! # Where to put it
//!
//! Outside the circuit breaker (so the breaker sees every attempt and an
//! open circuit fails retries fast) and outside a per-attempt timeout;
//! inside a total timeout.
//!
//! # Configuration
//!
//! | option | default | rule |
//! |---|---|---|
//! | `max_attempts` | 3 (the first call included) | ≥ 1 |
//! | `backoff` | exponential from 100 ms, ×2, at most 5 s, full jitter | max ≥ base, multiplier ≥ 1, proportional jitter in [0, 1] |
//! | `budget` | `RetryBudget::tokens(100, 0.5)` | tokens ≥ 1, ratio in (0, 1]; windowed: ttl 1 s to 60 s, ratio in [0, 1] |
//! | `deadline` | none | > 0 |
//! | `retry_rate_limited` | true | |
//! | `classifier` | `DefaultClassifier` | |
//! | `replay` / `retry_if` | every request, cloned | |
//! | `name` | `"retry"` | any string |
//!
//! [`Classify::retry_after`]: crate::classify::Classify::retry_after

mod attempt;
mod backoff;
mod budget;
mod future;
mod handle;
mod layer;
mod replay;

pub use backoff::{Backoff, Delays, Jitter};
#[cfg(feature = "hedge")]
pub(crate) use budget::Payment;
pub use budget::{RetryBudget, SharedBudget};
pub use future::ResponseFuture;
pub use handle::{Counts, Handle, RetryEvent};
pub use layer::{RetryBuilder, RetryConfig, RetryLayer};
pub use replay::{CloneIf, CloneRequest, Replay};

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;

use crate::classify::{Classify, DefaultClassifier};
use crate::deadline::{Deadline, DeadlineSlot, NoDeadline};
use crate::error::BoxError;
use layer::{Retries, Shared};

/// A service that sends a failed request again, within its limits.
///
/// Built by [`RetryLayer`]; see the [module docs](self).
pub struct Retry<S, C = DefaultClassifier, R = CloneRequest, D = NoDeadline> {
    inner: S,
    retries: Arc<Retries<S>>,
    classifier: C,
    replay: R,
    slot: D,
}

impl<S: Clone, C, R, D> Retry<S, C, R, D> {
    fn new(inner: S, shared: Arc<Shared>, classifier: C, replay: R, slot: D) -> Self {
        Retry {
            retries: Arc::new(Retries::new(shared, &inner)),
            inner,
            classifier,
            replay,
            slot,
        }
    }
}

impl<S, C, R, D> Retry<S, C, R, D> {
    /// A handle on the layer's counters.
    pub fn handle(&self) -> Handle {
        Handle::new(self.retries.shared.clone())
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably. First attempts go to it; retries go
    /// to clones of the service as the layer wrapped it.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: Clone, R: Clone, D: Clone> Clone for Retry<S, C, R, D> {
    /// The clone shares the layer's state and the service retries go to.
    fn clone(&self) -> Self {
        Retry {
            inner: self.inner.clone(),
            retries: self.retries.clone(),
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
            slot: self.slot.clone(),
        }
    }
}

impl<S, C, R, D, Req> Service<Req> for Retry<S, C, R, D>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError> + 'static,
    C: Classify<S::Response, S::Error> + Clone,
    R: Replay<Req> + Clone,
    D: DeadlineSlot<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Req) -> Self::Future {
        let shared = &self.retries.shared;
        let deadline = self.deadline(&mut request);
        if deadline.is_some_and(Deadline::is_expired) {
            // Nobody waits for the answer: not even the first attempt goes.
            return ResponseFuture::expired(
                self.classifier.clone(),
                self.replay.clone(),
                self.retries.clone(),
            );
        }
        let copy = if shared.max_attempts > 1 {
            self.replay.replay(&request)
        } else {
            None
        };
        shared.budget.on_request();
        let span = attempt::request_span(&shared.name);
        let attempt_span = attempt::attempt_span(&span, 0);
        let started = shared.attempts.times_attempts().then(Instant::now);
        // The first attempt goes to the service that was driven to ready;
        // retries go to a clone of the service the layer wrapped, driven
        // to ready first.
        let future = {
            let _entered = attempt_span.enter();
            self.inner.call(request)
        };
        ResponseFuture::new(
            future::FirstAttempt {
                future,
                span,
                attempt_span,
                started,
            },
            copy,
            self.classifier.clone(),
            self.replay.clone(),
            self.retries.clone(),
            deadline.map(Deadline::instant),
        )
    }
}

impl<S, C, R, D> Retry<S, C, R, D> {
    /// The earlier of the request's deadline and this layer's own, which
    /// the request (and so every copy of it) then carries.
    #[inline]
    fn deadline<Req>(&self, request: &mut Req) -> Option<Deadline>
    where
        D: DeadlineSlot<Req>,
    {
        let inherited = self.slot.deadline(request);
        // The clock is read only for a deadline of this layer's own.
        match self.retries.shared.deadline.map(Deadline::after) {
            Some(own) if inherited.is_none_or(|inherited| own < inherited) => {
                self.slot.set_deadline(request, own);
                Some(own)
            }
            _ => inherited,
        }
    }
}

impl<S: fmt::Debug, C, R, D> fmt::Debug for Retry<S, C, R, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("shared", &self.retries.shared)
            .finish_non_exhaustive()
    }
}
