//! Limit the rate of calls: a sliding-window counter, a sliding-window log,
//! GCRA (a token bucket), a fixed window or a segmented sliding window.
//!
//! [`RateLimitLayer`] admits calls while its limiter has permits and refuses
//! the rest with [`RateLimited`], which carries the exact time until a
//! permit frees (`retry_after`). One layer value is one limiter, shared by
//! every service it builds and all their clones: behind hyper, which clones
//! the stack for every request, it still limits (tower's `RateLimit` is
//! per instance, so there it limits nothing).
//!
//! [`RateLimited`]: crate::error::RateLimited
//!
//! ```
//! use std::time::Duration;
//! use palisade::rate_limit::RateLimitLayer;
//! use palisade::{BoxError, ErrorKind};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let layer = RateLimitLayer::sliding_log(2, Duration::from_secs(1)).name("search").build()?;
//! let handle = layer.handle();
//! let mut svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|q: &'static str| async move { Ok::<_, BoxError>(q.len()) }));
//!
//! assert_eq!(svc.ready().await?.call("rust").await?, 4);
//! tokio::time::advance(Duration::from_millis(400)).await;
//! assert_eq!(svc.ready().await?.call("tower").await?, 5);
//! let err = svc.ready().await?.call("tokio").await.unwrap_err();
//! let ErrorKind::RateLimited(limited) = ErrorKind::of(&err) else { panic!() };
//! // The first permit frees one window after it was taken.
//! assert_eq!(limited.retry_after(), Some(Duration::from_millis(600)));
//! assert_eq!(handle.state().remaining, 0);
//! # Ok(())
//! # }
//! ```
//!
//! # Algorithms
//!
//! | algorithm | admits | memory | per call |
//! |---|---|---|---|
//! | [`sliding_window`](RateLimitLayer::sliding_window) | about `limit` per `window`: the previous window's count, weighted by the part still covered, plus the current one's | two words | one compare-and-swap |
//! | [`sliding_log`](RateLimitLayer::sliding_log) | exactly at most `limit` in any `window` | 8 bytes × `limit` | a mutex for a few comparisons |
//! | [`gcra`](RateLimitLayer::gcra) | `rate` per `period`, up to `burst` at once after a quiet spell | one word | one compare-and-swap |
//! | [`fixed_window`](RateLimitLayer::fixed_window) | exactly at most `limit` in each window `[0, w)`, `[w, 2w)`, … from the limiter's start (up to twice that across a boundary) | one count | a mutex for one addition |
//! | [`segmented_window`](RateLimitLayer::segmented_window) | exactly at most `limit` in the last `segments` segments of `window / segments` | 8 bytes × `segments` (at most 64) | a mutex for a sum of `segments` counts |
//!
//! The sliding window's estimate assumes the previous window's calls were
//! spread evenly. When they came at its very end, a window-length straddling
//! the boundary can admit more than `limit`, never more than twice. Choose
//! the log where the bound must be exact, GCRA for a steady rate with a set
//! burst.
//!
//! The fixed and segmented windows count exactly, in whole segments of
//! time aligned to the limiter's start (a fixed window is one segment). A
//! permit belongs to the segment it was taken in and comes back when that
//! segment slides out of the window; a refused call waits until enough
//! have come back, a fixed window's until its window ends (the instant the
//! next window starts is the next window's). **A burst taken in one segment
//! therefore keeps the window closed for a whole window, not one
//! segment**: 6 per 30 s in 3 segments, all 6 taken at 1 s, are all
//! refused until 30 s, when all 6 come back at once. That is the defined
//! behaviour (as in .NET's `SlidingWindowRateLimiter`), not a bug; use GCRA
//! for permits that come back one at a time. More segments follow the
//! traffic more closely at 8 bytes and one addition per segment per call.
//! Both keep their counts behind a short mutex, like the log: a call adds
//! up the window's segments and takes its permit as one step, which one
//! compare-and-swap cannot do for several counts.
//!
//! Every `retry_after` a limiter reports is exact: the earliest instant at
//! which the call would be admitted if nothing else took the permits first
//! (one nanosecond earlier it would be refused). The tests check this
//! against the algorithms' definitions. (A waiter that runs out of time
//! behind others in the queue reports none: its turn never came.)
//!
//! # The tower contract
//!
//! An exhausted limiter is a temporary refusal, never an error from
//! `poll_ready`. `poll_ready` takes the permit first, before it looks at the
//! inner service: refused, it returns `Ready(Ok(()))` without touching the
//! inner service's readiness, and `call` returns a future that fails with
//! `RateLimited`; admitted, it drives the inner service to ready. Polling
//! readiness again before `call` looks again, so a refusal is not final. The
//! permit is kept in the service until `call` uses it; a clone starts
//! without one. A service dropped with an unused permit does not give it
//! back: permits are spent by time, and it frees when the window moves on.
//!
//! # Waiting
//!
//! With [`max_wait`](RateLimitBuilder::max_wait), a call that finds no
//! permit waits for one instead of failing: `poll_ready` returns `Pending`
//! and wakes itself. Waiting callers form one queue, served first come,
//! first served; while anyone waits, a newcomer queues behind them even if
//! a permit happens to be free. Only the head of the queue takes permits,
//! at the instant the limiter says one frees. A call is refused (in the
//! response future, as ever) when its `max_wait`, counted once from when
//! it started waiting, runs out; a call that finds the queue empty and
//! would wait longer than `max_wait` is refused at once, and so is the head
//! once its permit would come too late. A waiter wakes on tokio's timer,
//! whose resolution is one millisecond: it may be admitted up to a
//! millisecond after the exact instant its permit frees. A waiter reserves
//! nothing: one that is dropped, or gives up, consumes no permit, and its
//! place goes to the next. [`max_waiters`](RateLimitBuilder::max_waiters)
//! bounds the queue: a call that finds it full is refused at once.
//!
//! # Changing the limit at run time
//!
//! [`Handle::set_limit`] (and [`Handle::set_burst`]) change the limit for
//! the calls that follow, without rebuilding the stack;
//! [`Handle::state`] gives the figures the `RateLimit-Limit`,
//! `RateLimit-Remaining` and `RateLimit-Reset` headers carry.
//!
//! # One limiter per key
//!
//! [`RateLimitBuilder::keyed`] builds a [`KeyedRateLimitLayer`]: one limiter
//! per key taken from each request (a client address, an API key, a
//! tenant), made on first use. At most `max_keys` keys have one in the
//! table, so a flood of distinct keys cannot grow memory without bound:
//! only a limiter as good as new makes room for a new key, and a key that
//! finds none is limited through an overflow sketch that can only
//! over-count (so a flood can neither reset a key's count nor lock new
//! clients out). Errors and events name the layer, never the key (keys are
//! often client ids or secrets); a [`KeyedHandle`] reads one key's state.
//!
//! # The clock
//!
//! A reading of the clock was most of a check's cost: about 20 ns for
//! `std::time::Instant::now()` on an x86-64 VM, against about 8 ns for
//! the CPU's time-stamp counter. With the `fast-clock` feature (on by
//! default) a limiter reads the counter (through `quanta`), except when
//! tokio's clock is paused at the limiter's first reading: then it follows
//! tokio's clock for good, so tests step a limiter through time with
//! `tokio::time::advance` exactly as they step timeouts. Pause the clock
//! before a limiter first decides (`#[tokio::test(start_paused = true)]`
//! does); a limiter that first read a running clock does not follow a
//! pause that comes later. A limiter's own durations (windows, refill,
//! `retry_after`) are measured on the counter, which agrees with the
//! system's clock to its calibration (parts per million).
//!
//! # Configuration
//!
//! | option | default | rule |
//! |---|---|---|
//! | `limit` (rate) | required | 1 to 2^40 − 1; a sliding log at most 2^20 |
//! | `window` (period) | required | > 0 |
//! | `burst` | the rate (GCRA only) | ≥ 1 |
//! | `segments` | required (segmented window only) | 1 to 64, dividing `window` into whole nanoseconds |
//! | `max_wait` | zero: refuse at once | any |
//! | `max_waiters` | no bound | any; a call finding the queue full is refused |
//! | `name` | `"rate_limit"` | any string |

mod future;
mod gcra;
mod handle;
mod keyed;
mod layer;
mod limiter;
mod log;
#[cfg(all(feature = "redis", not(loom)))]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
mod report;
mod segmented;
mod seqlock;
mod sketch;
mod wait;
mod window;

pub use future::ResponseFuture;
pub use handle::{Handle, RateLimitState};
pub use keyed::{KeyedHandle, KeyedRateLimit, KeyedRateLimitBuilder, KeyedRateLimitLayer};
pub use layer::{Kind, RateLimitBuilder, RateLimitConfig, RateLimitLayer};
#[cfg(all(feature = "redis", not(loom)))]
pub use redis::{OnStoreFailure, RedisConfig, RedisHandle, RedisRateLimitLayer};
pub use report::{NoReport, ReportState};

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_service::Service;

use crate::error::BoxError;
use handle::Shared;
use wait::{Waited, Waiting};

/// A service that admits calls at a limited rate.
///
/// Built by [`RateLimitLayer`]; see the [module docs](self).
pub struct RateLimit<S, R = NoReport> {
    inner: S,
    shared: Arc<Shared>,
    permit: Permit,
    // A place in the queue, with a `max_wait`.
    waiting: Option<Waiting>,
    report: R,
}

/// What `poll_ready` decided for the next call.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Permit {
    None,
    /// With the state after the admission, when it is reported.
    Taken(Option<RateLimitState>),
    Refused(Option<Duration>),
}

impl<S, R> RateLimit<S, R> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>, report: R) -> Self {
        RateLimit {
            inner,
            shared,
            permit: Permit::None,
            waiting: None,
            report,
        }
    }

    /// A handle on the shared limiter.
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

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Decides this call's permit: taken, or refused. `Pending` while
    /// waiting in the queue. With `report`, a taken permit carries the
    /// state after it.
    #[inline]
    fn poll_permit(&mut self, cx: &mut Context<'_>, report: bool) -> Poll<()> {
        if let Permit::Taken(_) = self.permit {
            return Poll::Ready(());
        }
        if self.shared.max_wait.is_zero() {
            // A first look, or a fresh one after a refusal.
            self.permit = match self.shared.acquire_reporting(report) {
                Ok(state) => Permit::Taken(state),
                Err(wait) => Permit::Refused(wait),
            };
            return Poll::Ready(());
        }
        self.poll_permit_or_wait(cx, report)
    }

    /// [`poll_permit`](Self::poll_permit) with a `max_wait`.
    fn poll_permit_or_wait(&mut self, cx: &mut Context<'_>, report: bool) -> Poll<()> {
        let max_wait = self.shared.max_wait;
        if self.waiting.is_none() {
            // A fresh look: an earlier refusal does not stand.
            self.permit = Permit::None;
            // The limiter's wait, when a newcomer found the queue empty.
            let mut wait = None;
            if self.shared.queue.is_empty() {
                // While others wait, a newcomer queues behind them instead.
                match self.shared.acquire_reporting(report) {
                    Ok(state) => self.permit = Permit::Taken(state),
                    Err(Some(w)) if w <= max_wait => wait = Some(w),
                    Err(w) => self.permit = Permit::Refused(w),
                }
                if self.permit != Permit::None {
                    return Poll::Ready(());
                }
            }
            match Waiting::join(self.shared.clone(), max_wait) {
                Some(waiting) => self.waiting = Some(waiting),
                None => {
                    // The queue is full: refused at once.
                    self.permit = Permit::Refused(wait);
                    return Poll::Ready(());
                }
            }
        }
        let Some(waiting) = self.waiting.as_mut() else {
            return Poll::Ready(());
        };
        let waited = std::task::ready!(waiting.poll_wait(cx));
        // Leaving the queue wakes the next in line.
        self.waiting = None;
        self.permit = match waited {
            // A second look at the clock, on this slower path only.
            Waited::Admitted => {
                Permit::Taken(report.then(|| self.shared.limiter.snapshot().into()))
            }
            Waited::Refused(wait) => Permit::Refused(wait),
        };
        Poll::Ready(())
    }
}

impl<S: Clone, R: Clone> Clone for RateLimit<S, R> {
    /// The clone shares the limiter but holds no permit of its own.
    fn clone(&self) -> Self {
        RateLimit::new(self.inner.clone(), self.shared.clone(), self.report.clone())
    }
}

impl<S, R, Request> Service<Request> for RateLimit<S, R>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
    R: ReportState<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, R>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        std::task::ready!(self.poll_permit(cx, R::REPORTS));
        if let Permit::Refused(_) = self.permit {
            // Decided without touching the inner service's readiness.
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Request) -> Self::Future {
        match std::mem::replace(&mut self.permit, Permit::None) {
            Permit::Taken(state) => ResponseFuture::admitted(
                self.inner.call(request),
                state.map(|state| (self.report.clone(), state)),
            ),
            Permit::Refused(wait) => {
                self.shared.count_refusal();
                ResponseFuture::refused(self.shared.clone(), wait)
            }
            Permit::None => ResponseFuture::not_ready(self.shared.clone()),
        }
    }
}

impl<S: fmt::Debug, R> fmt::Debug for RateLimit<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .field("permit", &self.permit)
            .field("waiting", &self.waiting.is_some())
            .finish()
    }
}
