//! One limit shared by many processes, kept in Redis (feature `redis`).
//!
//! Every replica of a gateway that builds the same limiter (the same name
//! and [`key_prefix`](RedisConfig::key_prefix)) against the same Redis
//! shares one count: a limit of 100 a minute admits 100 a minute across
//! all of them, not 100 each.
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> Result<(), palisade::BoxError> {
//! use std::time::Duration;
//! use palisade::rate_limit::{RateLimitLayer, RedisConfig};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! // 100 requests a minute per client, across every replica.
//! let mut store = RedisConfig::new("redis://127.0.0.1:6379");
//! store.replicas = 3; // while Redis is down, each replica admits a third
//! let limit = RateLimitLayer::sliding_window(100, Duration::from_secs(60))
//!     .name("api")
//!     .redis(store)
//!     .keyed(|request: &(String, u32)| request.0.clone())
//!     .build()?;
//! let handle = limit.handle();
//! let svc = ServiceBuilder::new()
//!     .layer(limit)
//!     .service(service_fn(|(_, n): (String, u32)| async move { Ok::<_, palisade::BoxError>(n) }));
//! svc.oneshot(("client-7".to_string(), 1)).await?;
//! assert_eq!(handle.counts().round_trips, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Algorithms
//!
//! The sliding-window counter and GCRA run as Lua scripts: each decision is
//! one `EVALSHA`, atomic in Redis, loaded once and loaded again by itself
//! when Redis answers `NOSCRIPT` (after a restart or `SCRIPT FLUSH`). They
//! decide exactly as the in-process limiters do, in microseconds instead of
//! nanoseconds. Time comes from Redis (`TIME` inside the script), never
//! from a replica, so replicas whose clocks disagree share one exact limit.
//! The sliding log keeps every admission's time and has no Redis form:
//! asking for one is a [`ConfigError`](crate::ConfigError).
//!
//! A key is `{<key_prefix>:<name>}:<w or g>:<the key's bytes>`. The part in
//! braces is a hash tag, so all of one limiter's keys live on one Redis
//! Cluster slot; the key's bytes come after it, as they are, so no key can
//! reach another limiter's keys or move the tag (the name and prefix may
//! not hold braces). Every write sets an expiry at the instant the key's
//! state stops mattering: idle keys cost Redis nothing.
//!
//! # When Redis fails
//!
//! A decision that takes longer than
//! [`decision_timeout`](RedisConfig::decision_timeout) (5 ms by default,
//! reconnection included), or fails (a lost connection, a wrong password,
//! a script error), is decided by [`on_failure`](RedisConfig::on_failure):
//! admitted ([`OnStoreFailure::FailOpen`]), refused with a
//! [`RateLimited`](crate::error::RateLimited) that
//! [says so](crate::error::RateLimited::is_store_unavailable)
//! ([`OnStoreFailure::FailClosed`]), or decided in process by a limiter of
//! the same algorithm holding this replica's share of the limit
//! ([`OnStoreFailure::Local`], the default). A circuit breaker guards the
//! store (its [`guard`](RedisConfig::guard) settings): once it opens, calls
//! go to the failure mode without a round trip, and its half-open probes
//! bring the limiter back to Redis when Redis answers again. Each change
//! is a `tracing` event, and [`RedisHandle::mode`] reports it. No call waits
//! on Redis longer than the decision timeout (plus `max_wait`, when set).
//!
//! # Fewer round trips
//!
//! - **Batches.** While a script call is out (at most four at once per
//!   limiter), the decisions that arrive queue, and the next call carries
//!   them all (up to 128), decided in turn on one reading of Redis's
//!   clock: under load a round trip serves many decisions, and the server
//!   runs one script instead of many.
//! - **Known refusals.** A refusal carries when the key's next permit
//!   frees. Until then, the limiter refuses that key without asking Redis:
//!   its count can only have grown meanwhile, on any replica. (A caller
//!   whose `max_wait` reaches past that instant asks Redis and waits.) The
//!   key is remembered as a 64-bit hash (seeded per limiter), for up to
//!   10 000 keys. The instant is taken when the answer arrives, so such a
//!   refusal may last the answer's transit time (microseconds on a LAN)
//!   longer than Redis's would.
//! - **Leases** ([`lease_permits`](RedisConfig::lease_permits), off by
//!   default). A decision takes up to `K` permits for its key, as many as
//!   fit, and this replica spends the rest on that key's next calls
//!   without a round trip, taking the next lease in the background once
//!   half is spent. A permit counts in Redis when it is taken, so in any
//!   window-length at most `replicas × (K − 1)` calls beyond the limit are
//!   admitted (permits taken before it, spent in it); unspent permits
//!   expire after [`lease_for`](RedisConfig::lease_for) and are lost.
//! - **While Redis is down**, once the guard opens, a call is decided by
//!   the failure mode in `call`, with no round trip and no wait.
//!
//! # Why a layer of its own
//!
//! The in-process limiters decide in `poll_ready`, with a few atomic
//! operations, and cost nanoseconds; a decision in Redis is a round trip,
//! which can only be awaited. So the Redis-backed limiter is its own
//! service, [`RedisRateLimit`], which shares the builder, the settings,
//! the errors, the `RateLimit-*` reporting and the algorithms' definitions
//! with the in-process ones, but not their code path: a storage trait over
//! both would make every in-process decision pay for an `await` it never
//! needs. The key is known only in `call`, so the decision is made in the
//! response future, and the inner service, made ready first, is called
//! once the decision admits the call (the service is cloned to take the
//! ready one's place, as tower's async middleware does). It needs a tokio
//! runtime and a `Clone` inner service, and allocates the decision's
//! future when it waits on Redis; a call decided in process (a leased
//! permit, a known refusal, the guard open) allocates nothing for it.
//!
//! # Waiting
//!
//! With [`max_wait`](crate::rate_limit::RateLimitBuilder::max_wait), a
//! refused call sleeps until the instant Redis said a permit frees and asks
//! again, while its `max_wait` allows; another replica may take the permit
//! first. There is no queue across processes: waiters are not served first
//! come, first served.

mod future;
mod handle;
mod layer;
mod script;
mod store;

pub use future::ResponseFuture;
pub use handle::{RedisCounts, RedisHandle, StoreMode};
pub use layer::{OnStoreFailure, RedisConfig, RedisRateLimitBuilder, RedisRateLimitLayer};

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::report::{NoReport, ReportState};
use crate::error::{BoxError, NotReady};
use store::{Remote, Verdict};

/// Takes the key a Redis-backed limiter counts a request under: any
/// `Fn(&Request) -> K` where `K` is bytes (`String`, `Vec<u8>`, `&str`),
/// or [`Global`] for one limit over all requests.
pub trait KeyFor<Request> {
    /// Appends the request's key to `key`.
    fn key_for(&self, request: &Request, key: &mut Vec<u8>);
}

impl<Request, K: AsRef<[u8]>, F: Fn(&Request) -> K> KeyFor<Request> for F {
    fn key_for(&self, request: &Request, key: &mut Vec<u8>) {
        key.extend_from_slice(self(request).as_ref());
    }
}

/// One limit over all requests: the key of
/// [`RateLimitBuilder::redis`](crate::rate_limit::RateLimitBuilder::redis).
#[derive(Clone, Copy, Debug, Default)]
pub struct Global;

impl<Request> KeyFor<Request> for Global {
    fn key_for(&self, _: &Request, _: &mut Vec<u8>) {}
}

/// A service whose calls are admitted by a limit kept in Redis; built by
/// [`RedisRateLimitLayer`]. See the [module docs](self).
pub struct RedisRateLimit<S, F = Global, R = NoReport> {
    inner: S,
    shared: Arc<Remote>,
    key_for: F,
    report: R,
    ready: bool,
    /// The current call's key, kept to spare an allocation per call.
    key: Vec<u8>,
}

impl<S, F, R> RedisRateLimit<S, F, R> {
    fn new(inner: S, shared: Arc<Remote>, key_for: F, report: R) -> Self {
        RedisRateLimit {
            inner,
            shared,
            key_for,
            report,
            ready: false,
            key: Vec::new(),
        }
    }

    /// A handle on the limiter.
    pub fn handle(&self) -> RedisHandle {
        RedisHandle::new(self.shared.clone())
    }
}

impl<S: Clone, F: Clone, R: Clone> Clone for RedisRateLimit<S, F, R> {
    /// The clone shares the limiter; it is not ready until polled.
    fn clone(&self) -> Self {
        RedisRateLimit::new(
            self.inner.clone(),
            self.shared.clone(),
            self.key_for.clone(),
            self.report.clone(),
        )
    }
}

impl<S, F, R, Request> Service<Request> for RedisRateLimit<S, F, R>
where
    S: Service<Request> + Clone,
    S::Error: Into<BoxError>,
    F: KeyFor<Request>,
    R: ReportState<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S, Request, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let polled = self.inner.poll_ready(cx).map_err(Into::into);
        self.ready = matches!(polled, Poll::Ready(Ok(())));
        polled
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if !std::mem::take(&mut self.ready) {
            let error = NotReady::new(crate::rate_limit::layer::LAYER, self.shared.name.clone());
            return ResponseFuture::refused(Box::new(error));
        }
        self.key.clear();
        self.key_for.key_for(&request, &mut self.key);
        // Decided here when this replica knows the answer: a leased permit,
        // a key known to be over its limit, or Redis's guard open.
        let known = match self.shared.leased(&self.key) {
            Some(state) => Some(Verdict::Admitted(Some(state))),
            None => self
                .shared
                .refused_locally(&self.key)
                .map(Verdict::Refused)
                .or_else(|| self.shared.while_guard_open(&self.key)),
        };
        match known {
            Some(Verdict::Admitted(state)) => {
                let report = state
                    .filter(|_| R::REPORTS)
                    .map(|state| (self.report.clone(), state.into()));
                ResponseFuture::calling(self.inner.call(request), report)
            }
            Some(Verdict::Refused(refusal)) => ResponseFuture::refused(Box::new(refusal)),
            None => {
                // The ready service goes with the call; its clone stays, to
                // be made ready for the next.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let decision = Box::pin(self.shared.clone().decide(self.key.clone()));
                ResponseFuture::deciding(decision, inner, request, self.report.clone())
            }
        }
    }
}

impl<S: fmt::Debug, F, R> fmt::Debug for RedisRateLimit<S, F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimit")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}
