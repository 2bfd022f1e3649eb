//! Fail calls that take too long.
//!
//! [`TimeoutLayer`] gives every call a deadline. When the deadline passes, the
//! inner call's future is dropped, which stops its work here (whether a
//! service on the other side of a network had already carried the request out
//! is not known), and the caller gets an [`Elapsed`] error naming the layer and
//! the limit. A call that finishes in
//! time returns its own result unchanged; an inner error passes through as it
//! is (a `BoxError` from below is not boxed again).
//!
//! ```
//! use std::time::Duration;
//! use palisade::timeout::TimeoutLayer;
//! use palisade::{BoxError, ErrorKind};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let slow = service_fn(|_: ()| async {
//!     tokio::time::sleep(Duration::from_secs(10)).await;
//!     Ok::<_, BoxError>("done")
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(TimeoutLayer::builder().name("search").timeout(Duration::from_secs(1)).build()?)
//!     .service(slow);
//!
//! let err = svc.oneshot(()).await.unwrap_err();
//! let ErrorKind::Elapsed(elapsed) = ErrorKind::of(&err) else { panic!("{err}") };
//! assert_eq!(elapsed.name(), "search");
//! assert_eq!(elapsed.timeout(), Duration::from_secs(1));
//! # Ok(())
//! # }
//! ```
//!
//! # When the clock starts
//!
//! The response future polls the inner call first. Only if that first poll is
//! not ready does it arm the timer, with the deadline `timeout` from that
//! moment. A call that completes at once therefore never reads the clock or
//! touches tokio's timer wheel, which makes the layer nearly free on cache
//! hits and other immediate answers. The price, compared with
//! `tower::timeout::Timeout` (whose clock starts inside `call`), is that time
//! before the response future is first polled, and the time spent inside that
//! first poll, are not counted. Response futures are normally polled as soon
//! as they are made, so the two agree in practice.
//!
//! A timer built in that first poll has to be moved into the response
//! future, which costs a call that waits about 10 ns more than building it
//! in `call` (on an x86-64 VM, against a timer path of about 100 ns). The
//! deadline's clock reading wins it back: with the `fast-clock` feature (a
//! default) "now" comes from the CPU's time-stamp counter, translated to
//! tokio's clock and checked against the system's every 10 ms, at about
//! 8 ns instead of 20. That holds while tokio's clock runs as the
//! system's; where a test has paused it (or paused it, advanced it and let
//! it run again) when the layer is first made ready inside a runtime, the
//! layer reads tokio's clock itself, so paused-clock tests see the
//! deadline exactly `timeout` after the first wait. Pause before that
//! first readiness check (`#[tokio::test(start_paused = true)]` does).
//!
//! # Deadlines
//!
//! With [`TimeoutLayer::deadline_slot`] the layer also honours the
//! [`Deadline`] a request carries (for HTTP,
//! `palisade::http::InExtensions`): the call fails at this layer's timeout
//! or at the request's deadline, whichever comes first; the earlier of the
//! two is the deadline the inner service receives in the request (and so
//! the one written on the next hop); and a request whose deadline has
//! already passed is not sent at all. An [`Elapsed`] says which fired:
//! [`by_deadline`](Elapsed::by_deadline) is `true` when the request's
//! deadline did, and the default classifier then ignores the call (see
//! [`deadline`](crate::deadline)). With a deadline slot the clock is read
//! in `call`, so a call that answers at once costs one clock read; without
//! one (the default) nothing changes. tokio's timer fires on whole
//! milliseconds, so a deadline a few nanoseconds away fires at the next
//! millisecond.
//!
//! # Readiness
//!
//! By default, like tower's, this layer does not bound the wait for the inner
//! service to become ready: `poll_ready` passes the inner readiness through,
//! and time spent waiting there does not count against the call. With
//! [`TimeoutBuilder::ready_timeout`] it does bound it, without breaking the
//! tower contract: when the wait runs out, `poll_ready` returns `Ready(Ok(()))`
//! (an error there would tell the caller to discard the service for good) and
//! the next `call` fails at once with an `Elapsed` whose
//! [`waiting_for_readiness`](Elapsed::waiting_for_readiness) is `true`. The
//! inner service is not called (unless it has become ready by the time
//! readiness is polled again). The readiness bound and the call timeout are
//! separate budgets.
//!
//! # Configuration
//!
//! | option | default | rule |
//! |---|---|---|
//! | `timeout` | none, required | greater than zero |
//! | `ready_timeout` | unset (readiness not bounded) | greater than zero |
//! | `name` | `"timeout"` | any string |
//!
//! A zero timeout is a [`ConfigError`](crate::ConfigError): it would fail every
//! call, and Polly and tower disagree on whether it means "fail at once" or "no
//! limit". To run without a limit, leave the layer out.
//!
//! # Placement
//!
//! Outside a retry layer a timeout bounds the whole call, retries and backoff
//! included; inside it, each attempt. The crate docs show both in the
//! recommended stack.
//!
//! The timer comes from `tokio::time`, so the layer needs a tokio runtime with
//! time enabled (as tower's does), and it follows tokio's paused clock in
//! tests.

mod future;
mod layer;

pub use future::ResponseFuture;
pub use layer::{TimeoutBuilder, TimeoutConfig, TimeoutLayer};

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::clock::Source;
use crate::deadline::{Deadline, DeadlineSlot, NoDeadline};
use crate::error::{BoxError, Elapsed, Why};
use layer::Settings;

/// A service that fails calls taking longer than a limit with [`Elapsed`].
///
/// Built by [`TimeoutLayer`]; see the [module docs](self).
#[derive(Debug)]
pub struct Timeout<S, D = NoDeadline> {
    inner: S,
    settings: Settings,
    ready_wait: ReadyWait,
    slot: D,
    /// The clock a call's timer reads, once this service knows it (see
    /// `clock::Instants`); tokio's until then.
    clock: Option<Source>,
}

/// The bounded wait for the inner service's readiness. Each clone starts with
/// its own, unarmed: a wait belongs to the clone that is waiting.
#[derive(Debug, Default)]
struct ReadyWait {
    // Boxed because a `Sleep` is `!Unpin` and a service is not pinned; made
    // on the first wait and reused (reset) after that.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
    expired: bool,
}

impl ReadyWait {
    /// Arms the timer if this is the start of a wait, then reports whether
    /// the wait has run out (registering the waker if not).
    fn poll_expired(&mut self, limit: Duration, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            let Some(deadline) = Instant::now().checked_add(limit) else {
                // A limit beyond the clock's range never runs out.
                return false;
            };
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        let expired = self
            .timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        if expired {
            self.armed = false;
            self.expired = true;
        }
        expired
    }
}

impl<S, D> Timeout<S, D> {
    fn new(inner: S, settings: Settings, slot: D) -> Self {
        Timeout {
            inner,
            settings,
            ready_wait: ReadyWait::default(),
            slot,
            clock: None,
        }
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
}

impl<S: Clone, D: Clone> Clone for Timeout<S, D> {
    fn clone(&self) -> Self {
        let mut clone = Timeout::new(self.inner.clone(), self.settings.clone(), self.slot.clone());
        clone.clock = self.clock;
        clone
    }
}

impl<S, D, Request> Service<Request> for Timeout<S, D>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
    D: DeadlineSlot<Request>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.clock.is_none() {
            self.learn_clock();
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(result) => {
                // Ready after all, even if the wait had run out: the call goes
                // through.
                self.ready_wait.armed = false;
                self.ready_wait.expired = false;
                Poll::Ready(result.map_err(Into::into))
            }
            // The wait ran out earlier: the next call fails without reaching
            // `inner`.
            Poll::Pending if self.ready_wait.expired => Poll::Ready(Ok(())),
            Poll::Pending => match self.settings.ready_timeout {
                Some(limit) if self.ready_wait.poll_expired(limit, cx) => Poll::Ready(Ok(())),
                _ => Poll::Pending,
            },
        }
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if std::mem::take(&mut self.ready_wait.expired) {
            return ResponseFuture::failed(self.not_ready_in_time());
        }
        if !self.slot.carries_deadlines() {
            return ResponseFuture::new(
                self.inner.call(request),
                self.settings.timeout,
                self.clock.unwrap_or(Source::Tokio),
                &self.settings,
            );
        }
        self.call_within_deadline(request)
    }
}

impl<S, D> Timeout<S, D> {
    /// The error of a call whose service was not ready in time (the call
    /// is not sent). Out of line: it is rare, and `call` stays small enough
    /// to be inlined into the layer above.
    #[cold]
    fn not_ready_in_time(&self) -> Elapsed {
        let limit = self.settings.ready_timeout.unwrap_or(self.settings.timeout);
        tracing::debug!(
            target: "palisade::timeout",
            name = %self.settings.name,
            timeout = ?limit,
            "service not ready in time; call not sent"
        );
        self.settings.elapsed.add();
        Elapsed::new(self.settings.name.clone(), limit, true)
    }

    /// Learns the layer's clock (decided at its first reading inside a
    /// runtime). In `poll_ready`, not `call`: `call` then only copies it.
    #[cold]
    fn learn_clock(&mut self) {
        self.clock = self.settings.instants.decided();
    }

    /// Calls with the earlier of the request's deadline and this layer's
    /// own, handing that one on; a request whose deadline has passed is
    /// not sent.
    fn call_within_deadline<Request>(&mut self, mut request: Request) -> ResponseFuture<S::Future>
    where
        S: Service<Request>,
        D: DeadlineSlot<Request>,
    {
        let now = Instant::now();
        let own = Deadline::after_from(now, self.settings.timeout);
        match self.slot.deadline(&request) {
            Some(inherited) if inherited.instant() <= now => {
                tracing::debug!(
                    target: "palisade::timeout",
                    name = %self.settings.name,
                    late_by = ?now.duration_since(inherited.instant()),
                    "the request's deadline has passed; call not sent"
                );
                self.settings.elapsed.add();
                let name = self.settings.name.clone();
                ResponseFuture::failed(Elapsed::because(name, Duration::ZERO, Why::Expired))
            }
            Some(inherited) if inherited < own => {
                let left = inherited.remaining_at(now);
                let future = self.inner.call(request);
                ResponseFuture::until(
                    future,
                    inherited.instant(),
                    left,
                    Why::Deadline,
                    &self.settings,
                )
            }
            _ => {
                self.slot.set_deadline(&mut request, own);
                let future = self.inner.call(request);
                let timeout = self.settings.timeout;
                ResponseFuture::until(future, own.instant(), timeout, Why::Timeout, &self.settings)
            }
        }
    }
}
