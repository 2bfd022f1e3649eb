//! Client-side adaptive throttling: refuse locally, at random, the share of
//! calls an overloaded upstream would refuse anyway.
//!
//! [`ThrottleLayer`] counts, over a sliding time window, the requests it
//! has seen and how many of them the upstream accepted. While requests stay
//! within K times the accepts, every call goes through. Beyond that, each
//! call is refused here, without being sent, with probability
//!
//! ```text
//! max(0, (requests − K × accepts) / (requests + padding))
//! ```
//!
//! (at most `max_probability`, 0.9 by default) and fails at once with
//! [`Throttled`]. This is client-side throttling as the Google SRE book
//! describes it ("Handling Overload"). A call refused here still counts as
//! a request (one without an accept), which keeps the probability up while
//! the upstream is short of room: what limits itself is the volume sent,
//! requests × (1 − probability), which settles at about K times what the
//! upstream accepts: enough to see it recover, not enough to keep it
//! drowning.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), palisade::BoxError> {
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use palisade::throttle::ThrottleLayer;
//! use palisade::{BoxError, ErrorKind};
//! use tokio::time::{Instant, sleep};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! // An overloaded upstream: it accepts 10 calls a second and refuses the
//! // rest at once.
//! let start = Instant::now();
//! let load = Arc::new(Mutex::new((0, 0))); // (second, calls in it)
//! let seen = load.clone();
//! let upstream = service_fn(move |n: u32| {
//!     let mut load = seen.lock().unwrap();
//!     let second = start.elapsed().as_secs();
//!     if load.0 != second {
//!         *load = (second, 0);
//!     }
//!     load.1 += 1;
//!     let accepted = load.1 <= 10;
//!     async move { if accepted { Ok(n) } else { Err::<u32, BoxError>("overloaded".into()) } }
//! });
//!
//! let throttle = ThrottleLayer::builder().name("products").seed(7).build()?;
//! let handle = throttle.handle();
//! let mut client = ServiceBuilder::new().layer(throttle).service(upstream);
//!
//! // 100 calls a second for 30 seconds.
//! let (mut sent, mut throttled) = (0, 0);
//! for n in 0..3_000 {
//!     match client.ready().await?.call(n).await {
//!         Err(err) if matches!(ErrorKind::of(&err), ErrorKind::Throttled(_)) => throttled += 1,
//!         _ => sent += 1,
//!     }
//!     sleep(Duration::from_millis(10)).await;
//! }
//! // Most calls were refused here, never sent...
//! assert!(throttled > 2_000, "{throttled}");
//! assert!(handle.probability() > 0.5);
//! // ...and the upstream received about twice what it could take, not ten
//! // times: 30 s at 10 accepted a second, K = 2.
//! assert!((450..900).contains(&sent), "{sent}");
//! # Ok(())
//! # }
//! ```
//!
//! # Throttle or breaker?
//!
//! A [circuit breaker](crate::circuit_breaker) answers an upstream that is
//! **down**: once most calls fail it refuses them all, for a while, then
//! probes. An upstream that is **struggling** (overloaded, browning out)
//! still serves part of its traffic; a breaker either stays closed and lets
//! every call pile on, or opens and shuts callers out of the share it could
//! serve. The throttle keeps sending about that share (times K) and refuses
//! the rest here, where a refusal is cheap, and follows the upstream's
//! capacity up and down as it changes. Use both: the breaker for outages,
//! the throttle for overload.
//!
//! After an outage longer than its window, the throttle's window holds
//! refusals and no accepts, and the formula alone would let about one call
//! a window through: a recovered upstream would go unnoticed for a long
//! while (37 s in this crate's test of a 30 s outage at 100 calls a
//! second). The cap on the probability keeps at least a tenth of the calls
//! going, so the upstream's return is seen at once, and the share sent
//! then grows as accepts come back: full traffic after 16 s in the same
//! test, about a window and a half. A breaker alone is back within its
//! open period; for an upstream that may be down for long, that is the
//! faster tool, and with a breaker below it the throttle leaves the outage
//! to the breaker (see "What counts").
//!
//! The throttle assumes failures come from load: the calls it refuses are
//! the ones the upstream had no room for. An upstream that fails a fixed
//! share of calls whatever the load (a bad node, a bug) gains nothing from
//! fewer calls; with K = 2 the throttle leaves it alone while at least half
//! the calls succeed, and throttles it hard below that.
//!
//! # What counts
//!
//! A [`Classify`] implementation decides, by default [`DefaultClassifier`]:
//!
//! - [`Success`](crate::classify::Outcome::Success) is a request and an
//!   accept: the upstream took the call. An answer that says no for the
//!   caller's own reasons (an HTTP 400 or 404) is an accept too: the
//!   upstream had room for it. The `http` feature's `StatusClassifier`
//!   counts it so; so must a
//!   classifier of your own, or a stream of bad requests would throttle a
//!   healthy upstream.
//! - [`Failure`](crate::classify::Outcome::Failure) is a request without an
//!   accept: an overload answer (an HTTP 503 or 429), a timeout, a refused
//!   connection.
//! - [`Ignored`](crate::classify::Outcome::Ignored) counts neither way. The
//!   default classifier ignores palisade's refusals from layers below (an
//!   open circuit, a rate limit, a full bulkhead, another throttle): those
//!   calls never reached the upstream.
//! - A call refused here is a request without an accept.
//! - An open circuit from a breaker below ([`CircuitOpen`]) pauses the
//!   throttle: until the next accept it refuses nothing (every call goes
//!   to the breaker, which answers it) and counts no failures (the
//!   breaker's failed probes). The breaker has judged the upstream down,
//!   and an outage is the breaker's to answer;
//!   otherwise the probes of an outage longer than the window would fill
//!   it, and once the upstream is back and the breaker closes, the
//!   throttle would go on refusing most calls for most of a window (45
//!   calls in 50 after a 30 s outage, in this crate's test). What the
//!   window already holds stays, so an overload that opens the breaker now
//!   and then is still throttled: forgetting the window instead left the
//!   wind tunnel's costly overload at 20.3 % served, in real time, against
//!   36.8 % with the pause.
//! - A call whose response future is dropped before it finishes is not
//!   counted (its outcome is not known); one whose future panics is a
//!   request without an accept.
//!
//! Outcomes are counted when they are known, not when calls start, so a
//! burst of calls still in flight is not mistaken for requests the
//! upstream refused.
//!
//! # Defaults
//!
//! - **K = 2**, the SRE book's: the upstream receives up to twice what it
//!   accepts, so it can show that it has room again.
//! - **A window of 10 s, in 10 buckets of 1 s.** The SRE book uses two
//!   minutes. But the throttle reacts to an overload only once the old
//!   accepts have left the window (about a window), and after the upstream
//!   recovers, the calls let through grow by a factor of e about every
//!   0.63 window with K = 2 (every W / x, where x = K (1 − e^−x)): both
//!   take a window or a few. Both scale with the window, so a 2-minute
//!   one is twelve times slower to react and to recover, while the
//!   upstream receives the same share in the steady state. This crate's
//!   test of a 30 s outage at 100 calls a second sees full traffic back
//!   16 s after the upstream returns with the 10 s default (it asserts at
//!   most 20 s). 10 s still holds enough outcomes to judge by at a call a
//!   second or more. Outcomes leave the window a bucket at a time: each
//!   counts for between 9 and 10 s.
//! - **Padding 1**, the SRE book's. It matters only in a nearly empty
//!   window: after a single failure there, the next call is refused with
//!   probability 1/2 (1 / (1 + padding)); each refusal raises that (it
//!   counts as a request), and accepts bring it down (one accept beside
//!   the lone failure, to 0).
//! - **At least 20 requests in the window** before anything is refused
//!   (`min_requests`, like a breaker's minimum calls). The padding alone
//!   barely damps a quiet window: after one failure the next call, often
//!   that request's own retry, would be refused half the time. A client
//!   that calls less than about twice a second adds too little load for
//!   refusals to help, so it is left alone.
//!
//! # Where to put it
//!
//! Inside retry, just outside the circuit breaker:
//! `retry(throttle(breaker(…)))`. Like the breaker, it then sees every
//! attempt, and retry does not retry a [`Throttled`] refusal (the
//! [`DefaultClassifier`] ignores it, and retry retries only failures), so
//! retries cannot multiply the load on an overloaded upstream. Outside the
//! breaker, a call it refuses never touches the breaker (nor takes a
//! half-open probe's place), and it ignores the breaker's refusals; the cap
//! on its probability lets the breaker's probes through after an outage
//! (see above).
//!
//! # Configuration
//!
//! | option | default | rule |
//! |---|---|---|
//! | `k` | 2 | finite, ≥ 1 |
//! | `window` | 10 s | > 0 |
//! | `window_buckets` | 10 | 1 ..= 1 000, each ≥ 1 ms, dividing the window exactly |
//! | `padding` | 1 | finite, > 0 |
//! | `max_probability` | 0.9 | in (0, 1] |
//! | `min_requests` | 20 | any |
//! | `seed` | random | any |
//! | `classifier` | `DefaultClassifier` | |
//! | `name` | `"throttle"` | any string |
//!
//! A bad value is a [`ConfigError`](crate::ConfigError) naming the field.
//!
//! # Cost
//!
//! While the window holds no request without an accept (a healthy
//! upstream), a decision is one atomic load, with no clock read; a success
//! then costs a clock read and a compare-and-swap on its bucket, and an
//! `Arc` clone to carry the shared state into the response future. Once
//! the window holds a failure, each decision reads the clock and every
//! bucket, and draws a random number (a shared atomic counter) when the
//! probability is above 0. Nothing is allocated, except a refusal's boxed
//! error.
//!
//! The clock is the throttle's own: with the `fast-clock` feature (on by
//! default) the CPU's time-stamp counter, about 8 ns a reading against
//! 20 ns for tokio's clock, unless tokio's clock is paused at the
//! throttle's first reading; then it follows tokio's clock for good. A
//! test that steps a throttle's window through time must pause the clock
//! before its first call (`#[tokio::test(start_paused = true)]` does).
//!
//! # The tower contract
//!
//! A refusal is temporary, so it is never an error from `poll_ready`.
//! `poll_ready` decides first, without touching the inner service: a call
//! to be refused returns `Ready(Ok(()))` at once, the inner service is not
//! polled (so nothing below reserves anything for it), and `call` returns
//! a future that fails with [`Throttled`]. A call to be admitted polls the
//! inner service's readiness, and `call` sends it. The decision is kept in
//! the service until `call` uses it (a clone starts without one), so
//! polling readiness again does not draw again, except that a refusal
//! decided in an earlier bucket of the window is drawn afresh. `call` uses
//! it only if the last `poll_ready` returned `Ready(Ok(()))`; otherwise
//! (no `poll_ready`, or one that returned `Pending`) the call is not sent
//! and fails with [`NotReady`], a bug in the caller rather than a failure
//! of the upstream, and recorded as neither.
//!
//! [`Classify`]: crate::classify::Classify
//! [`Throttled`]: crate::error::Throttled
//! [`NotReady`]: crate::error::NotReady
//! [`CircuitOpen`]: crate::error::CircuitOpen

mod future;
mod handle;
mod layer;
mod throttler;

pub use future::ResponseFuture;
pub use handle::{Handle, Snapshot};
pub use layer::{ThrottleBuilder, ThrottleConfig, ThrottleLayer};

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use crate::classify::{Classify, DefaultClassifier};
use crate::error::{BoxError, Throttled};
use throttler::{Decision, Throttler};

/// A service that refuses calls locally while its upstream accepts too few.
///
/// Built by [`ThrottleLayer`]; see the [module docs](self).
pub struct Throttle<S, C = DefaultClassifier> {
    inner: S,
    throttler: Arc<Throttler>,
    classifier: C,
    // Decided in `poll_ready`, used by `call`.
    decision: Option<Decision>,
    // Whether the last `poll_ready` returned `Ready(Ok(()))`: only then may
    // `call` use the decision (an admission kept across a `Pending` would
    // call an inner service that is not ready).
    ready: bool,
}

impl<S, C> Throttle<S, C> {
    fn new(inner: S, throttler: Arc<Throttler>, classifier: C) -> Self {
        Throttle {
            inner,
            throttler,
            classifier,
            decision: None,
            ready: false,
        }
    }

    /// A handle on the shared throttle.
    pub fn handle(&self) -> Handle {
        Handle::new(self.throttler.clone())
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Decides the next call, unless that is decided already: an admission
    /// stands (the inner service may hold something for it), and so does a
    /// refusal drawn in the current bucket, so that polling again does not
    /// draw again.
    #[inline]
    fn decide(&mut self) -> Decision {
        let stands = match self.decision {
            Some(Decision::Admit) => true,
            Some(Decision::Reject { epoch, .. }) => self.throttler.epoch_now() == epoch,
            None => false,
        };
        match self.decision {
            Some(decision) if stands => decision,
            _ => {
                let decision = self.throttler.decide();
                self.decision = Some(decision);
                decision
            }
        }
    }
}

impl<S: Clone, C: Clone> Clone for Throttle<S, C> {
    /// The clone shares the throttle but holds no decision of its own.
    fn clone(&self) -> Self {
        Throttle::new(
            self.inner.clone(),
            self.throttler.clone(),
            self.classifier.clone(),
        )
    }
}

impl<S, C, Request> Service<Request> for Throttle<S, C>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let Decision::Reject { .. } = self.decide() {
            // Decided without touching the inner service's readiness.
            self.ready = true;
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                self.ready = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => {
                // No call will follow.
                self.decision = None;
                self.ready = false;
                Poll::Ready(Err(err.into()))
            }
            Poll::Pending => {
                // The admission stands for the next `poll_ready`, but a
                // `call` now would find the inner service unready.
                self.ready = false;
                Poll::Pending
            }
        }
    }

    #[inline]
    fn call(&mut self, request: Request) -> Self::Future {
        if !std::mem::take(&mut self.ready) {
            return ResponseFuture::not_ready(self.throttler.name().clone());
        }
        match self.decision.take() {
            Some(Decision::Admit) => ResponseFuture::admitted(
                self.inner.call(request),
                self.throttler.clone(),
                self.classifier.clone(),
            ),
            Some(Decision::Reject { probability, .. }) => {
                self.throttler.record_rejection();
                let name = self.throttler.name().clone();
                ResponseFuture::rejected(Throttled::new(name, probability))
            }
            None => ResponseFuture::not_ready(self.throttler.name().clone()),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Throttle<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle")
            .field("inner", &self.inner)
            .field("throttler", &self.throttler)
            .field("decision", &self.decision)
            .finish_non_exhaustive()
    }
}
