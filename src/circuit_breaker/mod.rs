//! Stop calling a dependency that is failing, give it time to recover, and
//! probe it carefully before trusting it again.
//!
//! [`CircuitBreakerLayer`] watches the outcomes of the calls through it. When
//! too many fail (or are too slow), it opens: calls fail at once with
//! [`CircuitOpen`] instead of piling onto a struggling service. After a
//! while it lets a few probe calls through, and closes again when they
//! succeed.
//!
//! ```
//! use std::time::Duration;
//! use palisade::circuit_breaker::{CircuitBreakerLayer, State};
//! use palisade::{BoxError, ErrorKind};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let layer = CircuitBreakerLayer::builder()
//!     .name("inventory")
//!     .count_window(10)
//!     .minimum_calls(4)
//!     .failure_rate(0.5)
//!     .open_for(Duration::from_secs(5))
//!     .half_open_probes(1)
//!     .build()?;
//! let handle = layer.handle();
//! let mut svc = ServiceBuilder::new().layer(layer).service(service_fn(|fail: bool| async move {
//!     if fail { Err::<&str, BoxError>("upstream down".into()) } else { Ok("stock: 7") }
//! }));
//!
//! for fail in [false, true, false, true] {
//!     let _ = svc.ready().await?.call(fail).await;
//! }
//! assert_eq!(handle.state(), State::Open); // 2 of 4 failed: 50 %
//!
//! let err = svc.ready().await?.call(false).await.unwrap_err();
//! let ErrorKind::CircuitOpen(open) = ErrorKind::of(&err) else { panic!("{err}") };
//! assert_eq!(open.retry_after(), Some(Duration::from_secs(5)));
//!
//! tokio::time::advance(Duration::from_secs(5)).await;
//! assert_eq!(svc.ready().await?.call(false).await?, "stock: 7"); // the probe
//! assert_eq!(handle.state(), State::Closed);
//! # Ok(())
//! # }
//! ```
//!
//! # States
//!
//! - **Closed.** Calls go through; their outcomes go into a sliding window.
//!   Once the window holds `minimum_calls`, a failure rate at or above
//!   `failure_rate`, or a slow-call rate at or above the slow-call threshold,
//!   opens the breaker. So do `consecutive_failures` failures in a row, if
//!   set, however few calls the window holds.
//! - **Open.** Calls fail at once with [`CircuitOpen`], whose `retry_after`
//!   says how long until probes may go; the inner service is not touched,
//!   not even its readiness. The open duration is fixed, or grows with each
//!   reopening ([`open_backoff`](CircuitBreakerBuilder::open_backoff)), with
//!   optional jitter. There is no background task: the first call after the
//!   open duration moves the breaker to HalfOpen. With
//!   [`open_on_retry_after`](CircuitBreakerBuilder::open_on_retry_after), a
//!   single failure whose result carries a retry-after (an upstream's 429 or
//!   503 with `Retry-After`, a ban) opens the breaker at once, for that long.
//! - **HalfOpen.** Probe calls go through, never more than
//!   `half_open_probes` at once however many callers race for them; the rest
//!   fail with `CircuitOpen` (no `retry_after`). The breaker judges exactly
//!   `half_open_probes` outcomes: it closes, with an empty window, when that
//!   many have reported below both thresholds, and reopens as soon as the
//!   probes' outcomes reach a threshold over all of them (with 4 probes at
//!   50 %, the second failure reopens it; resilience4j would wait for all
//!   four, tower-resilience reopens on a rate over the probes so far). A
//!   probe that is cancelled, or whose outcome is ignored, gives its slot
//!   back, so another caller can take its place. If the probes have not
//!   settled within `half_open_max_wait` (a probe hangs), the next call that
//!   finds every slot taken reopens the breaker.
//! - **ForcedOpen, Disabled, MetricsOnly** are set by hand through the
//!   [`Handle`]: refuse everything; let everything through and record
//!   nothing; record everything and report thresholds reached (as
//!   [`Event::ThresholdExceeded`], once each) but never open.
//!
//! Each state, from one transition to the next, is its own period with its
//! own counts. A call's outcome counts against the period it was admitted
//! in: a slow call admitted while Closed that fails after the breaker went
//! HalfOpen does not reopen it.
//!
//! # One breaker per upstream
//!
//! [`CircuitBreakerBuilder::keyed`] builds a [`KeyedCircuitBreakerLayer`]:
//! one breaker per key taken from each request (a host, an endpoint), each
//! with the builder's settings, made on first use. At most `max_keys` keys
//! have one of their own, so a flood of distinct keys cannot grow memory
//! without bound: only an idle Closed breaker makes room for a new key, and
//! a key that finds none shares one overflow breaker with the others (so a
//! flood can neither reset an open breaker nor get fresh Closed ones). Every
//! breaker carries the layer's name, never the key (keys are often client
//! ids or secrets); a [`KeyedHandle`] reads and controls one key's breaker.
//!
//! # What counts
//!
//! A [`Classify`] implementation decides whether
//! each result is a success, a failure, or ignored (counted neither way);
//! by default [`DefaultClassifier`]:
//! errors are failures, except calls a palisade layer below refused (an open
//! circuit, a rate limit, a full bulkhead), which are ignored. A call that
//! is cancelled (its future dropped) is ignored; a call whose inner future
//! panics is a failure. With slow-call detection on, a call strictly longer
//! than the threshold is slow, whether it succeeded or failed.
//!
//! A call that its request's [`Deadline`](crate::deadline::Deadline) cut
//! short, before a timeout's own limit, is ignored too, neither a failure
//! nor slow: the breaker judges a dependency by the time it is allowed, not
//! by the time its callers had left. Callers in a hurry do not open it.
//!
//! # Where to put it
//!
//! Inside retry (`retry(breaker(service))`), the breaker sees every attempt:
//! three failed attempts of one request count three times, and once it
//! opens, retry's attempts fail fast with `CircuitOpen`, which retry does
//! not retry. Outside retry (`breaker(retry(service))`), it sees one outcome
//! per request, after retries: it opens later, and retries keep hitting a
//! failing service in the meantime. Inside is the usual choice. Put a
//! per-attempt timeout inside the breaker, so that hung calls count as
//! failures.
//!
//! # Configuration
//!
//! The default threshold is high on purpose. A breaker answers a dependency
//! that is down: it stops the calls that cannot succeed. Opened on a
//! dependency that still serves half its calls, it refuses every call for
//! its open period, and callers get less than the dependency could give
//! them; at 50 % an upstream at 30 % random errors opens it now and then by
//! chance. Retry with its budget deals with scattered failures, and
//! [throttling](crate::throttle) with a struggling dependency. At 0.9 a
//! window of 100 calls opens on 90 failures: a dependency that is down
//! fails them all and opens it as fast as at 0.5, while one that still
//! serves a tenth of its calls keeps serving them. In the README's wind
//! tunnel, where the error rate ramps from 0 to 90 %, the recommended
//! stack served 76.5 % with the breaker at 0.9 and 73.2 % at 0.8, and
//! recovered from outages as fast (within 100 ms of the dependency's
//! return).
//!
//! | option | default | rule |
//! |---|---|---|
//! | `count_window` / `time_window` | last 100 calls | window ≥ 1; a time window has one bucket per second unless told, buckets ≥ 1 ms, at most 10 000, dividing it exactly |
//! | `minimum_calls` | 20 (or the count window, if smaller) | ≥ 1, ≤ a count window's size |
//! | `failure_rate` | 0.9 | in (0, 1] |
//! | `slow_calls` | off | duration > 0, rate in (0, 1] |
//! | `consecutive_failures` | off | ≥ 1 |
//! | `open_for` | 100 ms | > 0 |
//! | `open_backoff` | off (fixed) | multiplier ≥ 1, max ≥ `open_for` |
//! | `open_jitter` | 0 | in [0, 1) |
//! | `half_open_probes` | 3 | 1 ..= 2 097 151 |
//! | `half_open_max_wait` | 60 s | > 0 |
//! | `open_on_retry_after` | off | longest opening > 0 |
//! | `wait_when_open` | off (refuse at once) | longest wait > 0; not on a keyed breaker |
//! | `name` | `"circuit_breaker"` | any string |
//!
//! A bad value is a [`ConfigError`](crate::ConfigError) naming the field.
//!
//! # Cost
//!
//! Closed, with a count window and no slow-call detection, a call costs a
//! lock-free load of the current period, an atomic reference count, and a
//! few atomic operations on the window; no clock read, no lock, no
//! allocation. A time window reads the clock when a call ends; slow-call
//! detection, when it starts and ends; an open breaker's refusal, to tell
//! the caller how long is left. Transitions take a short lock.
//!
//! With the `fast-clock` feature (a default) those readings come from the
//! CPU's time-stamp counter, translated to tokio's clock (about 8 ns a
//! reading on an x86-64 VM instead of 20). A breaker whose first reading
//! inside a runtime (when it is built, if it is built inside one) finds
//! tokio's clock paused, or paused, advanced and running again, reads
//! tokio's clock from then on, so paused-clock tests drive it: pause
//! before that (`#[tokio::test(start_paused = true)]` does).
//!
//! # Metrics
//!
//! With the `metrics` feature, each breaker reports its state (a gauge per
//! state), its transitions, its calls by outcome and, when it times its
//! calls, their durations: the series are listed with every layer's in
//! [the crate's documentation](crate#watching-it-run).
//!
//! A keyed layer's breakers count their calls and transitions together
//! under the layer's name and report no state gauge: a series per key
//! would grow with the keys and show them. So that a scrape shows what the
//! next call would meet, an open breaker moves to half-open when its open
//! period passes, on a tokio timer, rather than at the next call (which
//! may be minutes later); the move is counted once, whether the timer or a
//! call makes it. Without the feature, or outside a tokio runtime, the
//! move waits for the next call, as it always does without metrics.
//!
//! # The tower contract
//!
//! An open breaker is a temporary refusal, so it is never an error from
//! `poll_ready`: `poll_ready` returns `Ready(Ok(()))` without polling the
//! inner service, and the response future fails with [`CircuitOpen`]. Polling
//! readiness again before calling takes a fresh look. The decision is kept in
//! the service (a clone starts without one) and used by `call`, which decides
//! again if the breaker has moved on in between, so no call goes out on an
//! admission from a state that has ended. In HalfOpen, `poll_ready` only
//! checks that a probe slot is free and `call` takes it (or, if another
//! caller took the last one first, fails with `CircuitOpen`): a service that
//! polls ready and never calls holds no slot.
//!
//! In waiting mode ([`wait_when_open`](CircuitBreakerBuilder::wait_when_open))
//! `poll_ready` returns `Pending` while the breaker refuses, for a bounded
//! time: it sleeps on its own timer until the open duration ends, or until
//! the breaker changes state or a probe slot comes free, and only then polls
//! the inner service. It still never fails for a refusal: when the wait
//! cannot help (the open duration outlasts it) or is over, `poll_ready`
//! returns `Ready(Ok(()))` and the call fails with `CircuitOpen`. The wait's
//! timer is allocated once per wait, never on the admitted path.
//!
//! # Outlier ejection behind a balancer
//!
//! A balancer over replicas of a service should stop sending to the one
//! that fails while the others answer. With a breaker in front of each
//! endpoint, built with
//! [`eject_while_open`](CircuitBreakerBuilder::eject_while_open), an open
//! breaker keeps its endpoint's `poll_ready` pending, and a balancer that
//! sends only to ready endpoints (tower's `balance::p2c::Balance`: its
//! ready cache moves an endpoint out of the rotation while `poll_ready` is
//! pending, and after every call until it is ready again) leaves it out.
//! When the open duration ends, the endpoint comes back as a half-open
//! probe: one call tells whether it serves again. Calls that failed before
//! the breaker opened, and failed probes, reach the caller; a retry above
//! the balancer sends them on to another endpoint.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), palisade::BoxError> {
//! use std::time::Duration;
//! use palisade::circuit_breaker::CircuitBreakerLayer;
//! use tower::balance::p2c::Balance;
//! use tower::discover::ServiceList;
//! use tower::load::{CompleteOnResponse, PeakEwma};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! let endpoint = |replica: u32| service_fn(move |()| async move { Ok::<_, palisade::BoxError>(replica) });
//! let replicas = (0..3).map(|replica| {
//!     let breaker = CircuitBreakerLayer::builder()
//!         .name(format!("replica-{replica}"))
//!         .consecutive_failures(3)
//!         .open_for(Duration::from_secs(5))
//!         .half_open_probes(1)
//!         .eject_while_open()
//!         .build()
//!         .expect("valid settings");
//!     let rtt = Duration::from_millis(10);
//!     PeakEwma::new(breaker.layer(endpoint(replica)), rtt, 10e9, CompleteOnResponse::default())
//! });
//! let balanced = Balance::new(ServiceList::new(replicas.collect::<Vec<_>>()));
//! assert!(balanced.oneshot(()).await? < 3);
//! # Ok(())
//! # }
//! ```
//!
//! [`CircuitOpen`]: crate::error::CircuitOpen

mod breaker;
mod future;
mod handle;
mod keyed;
mod layer;
mod metrics;
mod period;
mod probes;
mod wait;
mod window;

// For the client preset's checks across layers, which need every client layer.
#[cfg(all(
    feature = "timeout",
    feature = "retry",
    feature = "throttle",
    feature = "bulkhead"
))]
pub(crate) use breaker::Settings;
pub use future::ResponseFuture;
pub use handle::{Event, Handle, Reason, Snapshot, State, ThresholdExceeded, Transition};
pub use keyed::{KeyedBuilder, KeyedCircuitBreaker, KeyedCircuitBreakerLayer, KeyedHandle};
pub use layer::{CircuitBreakerBuilder, CircuitBreakerConfig, CircuitBreakerLayer};
// For the client preset's checks across layers, which need every client layer.
#[cfg(all(
    feature = "timeout",
    feature = "retry",
    feature = "throttle",
    feature = "bulkhead"
))]
pub(crate) use window::WindowKind;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;

use crate::classify::{Classify, DefaultClassifier};
use crate::error::{BoxError, CircuitOpen};
use breaker::{Admission, Breaker};
use period::Period;
use wait::Wait;

/// Waiting mode decides again at most this many times per `poll_ready`
/// before it yields to other tasks; each round is a change or a timer that
/// fired, so this is reached only by a breaker changing state very fast.
const MAX_WAIT_ROUNDS: usize = 4;

/// A service that stops calling its inner service while that keeps failing.
///
/// Built by [`CircuitBreakerLayer`]; see the [module docs](self).
pub struct CircuitBreaker<S, C = DefaultClassifier> {
    inner: S,
    breaker: Arc<Breaker>,
    classifier: C,
    // Decided in `poll_ready`, consumed by `call`.
    admission: Option<Admission>,
    // The period this service last saw admit every call: while it lasts,
    // admission is a flag check and a reference count.
    cached: Option<Arc<Period>>,
    // Waiting mode, while `poll_ready` waits for admission.
    wait: Option<Pin<Box<Wait>>>,
}

impl<S, C> CircuitBreaker<S, C> {
    fn new(inner: S, breaker: Arc<Breaker>, classifier: C) -> Self {
        CircuitBreaker {
            inner,
            breaker,
            classifier,
            admission: None,
            cached: None,
            wait: None,
        }
    }

    /// A handle on the shared breaker.
    pub fn handle(&self) -> Handle {
        Handle::new(self.breaker.clone())
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

    /// Decides whether the next call may go ahead, unless that is already
    /// decided and still holds.
    fn decide(&mut self) {
        let ask = match &self.admission {
            None => true,
            // A refusal gets a fresh look: probes may be allowed by now.
            Some(Admission::Refused(_)) => true,
            // Admitted under a period that has ended while the inner service
            // was becoming ready: the call would count for nothing.
            Some(admission) => admission.is_stale(&self.cached),
        };
        if ask {
            self.admission = match self.breaker.admit_cached(&mut self.cached) {
                // The common case written as a constant: built aside and
                // copied in, its part-written copy stalled the CPU's
                // store forwarding (about 4 ns a call).
                Admission::Cached => Some(Admission::Cached),
                other => Some(other),
            };
        }
    }
}

impl<S, C> CircuitBreaker<S, C> {
    /// Waiting mode, after a refusal: waits for the open duration to end or
    /// the breaker to change. `Ready(true)`: decide again; `Ready(false)`:
    /// waiting cannot help, deliver the refusal.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let Some((max_wait, changed)) = self.breaker.waiting() else {
            return Poll::Ready(false);
        };
        let Some(Admission::Refused(retry_after)) = &self.admission else {
            return Poll::Ready(false);
        };
        let now = Instant::now();
        let deadline = match &self.wait {
            Some(wait) => wait.deadline(),
            None => now.checked_add(max_wait).unwrap_or_else(|| far_future(now)),
        };
        let recheck_at = match retry_after {
            None => self.breaker.recheck_at(),
            Some(_) => None,
        };
        let Some(wake_at) = wait::wake_at(now, deadline, *retry_after, recheck_at) else {
            return Poll::Ready(false);
        };
        match &mut self.wait {
            Some(wait) => wait
                .as_mut()
                .poll_until(cx, wake_at, changed)
                .map(|()| true),
            None => {
                // Listen for changes first, then decide again: a change made
                // since the refusal is then not missed.
                self.wait = Some(Wait::start(deadline, changed));
                Poll::Ready(true)
            }
        }
    }
}

/// About thirty years from `now`: tokio's own stand-in for "never".
fn far_future(now: Instant) -> Instant {
    now.checked_add(std::time::Duration::from_secs(86_400 * 365 * 30))
        .unwrap_or(now)
}

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    /// The clone shares the breaker but holds no admission of its own.
    fn clone(&self) -> Self {
        let mut clone = CircuitBreaker::new(
            self.inner.clone(),
            self.breaker.clone(),
            self.classifier.clone(),
        );
        clone.cached = self.cached.clone();
        clone
    }
}

impl<S, C, Request> Service<Request> for CircuitBreaker<S, C>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let mut rounds = 0;
        loop {
            self.decide();
            if self.wait.is_some() {
                // Waiting mode: a probe takes its slot now (see `wait_when_open`).
                if let Some(admission) = self.admission.take() {
                    self.admission = Some(Breaker::take_probe_slot(admission));
                }
            }
            if self.admission.as_ref().is_some_and(Admission::may_call) {
                break;
            }
            // Refused, decided without touching the inner service: the
            // refusal goes out from `call`, unless waiting mode waits.
            rounds += 1;
            if rounds > MAX_WAIT_ROUNDS {
                // The breaker is changing fast: let other tasks run, then
                // go on waiting.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if !std::task::ready!(self.poll_wait(cx)) {
                self.wait = None;
                return Poll::Ready(Ok(()));
            }
        }
        self.wait = None;
        match self.inner.poll_ready(cx) {
            Poll::Ready(Err(err)) => {
                // No call will follow: give a probe slot back.
                self.admission = None;
                Poll::Ready(Err(err.into()))
            }
            other => other.map_err(Into::into),
        }
    }

    #[inline]
    fn call(&mut self, request: Request) -> Self::Future {
        let Some(admission) = self.admission.take() else {
            return ResponseFuture::not_ready(self.breaker.name().clone());
        };
        match self.breaker.confirm(admission, &mut self.cached) {
            Ok(ticket) => {
                ResponseFuture::admitted(self.inner.call(request), ticket, self.classifier.clone())
            }
            Err(retry_after) => {
                self.breaker.count_not_permitted();
                ResponseFuture::rejected(CircuitOpen::new(self.breaker.name().clone(), retry_after))
            }
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .field("admission", &self.admission)
            .finish_non_exhaustive()
    }
}
