//! Answer with a degraded value instead of an error while a dependency is
//! down.
//!
//! [`FallbackLayer`] watches each call's result. For the [`Reason`]s it was
//! configured for (an open circuit, a full bulkhead, a timeout, a rate
//! limit, a throttle, or a failure as a [classifier](crate::classify)
//! judges it) it answers with a value of its own, marked as degraded.
//! Every other result, successes and errors alike, passes through
//! unchanged, and no answer is made for it.
//!
//! The answer is one of:
//!
//! - a fixed value ([`value`](FallbackBuilder::value)), cloned for each
//!   answer;
//! - a function of the failure ([`answer`](FallbackBuilder::answer)),
//!   which may fail: then its error is what the caller gets;
//! - the last good response for the same key
//!   ([`last_good`](FallbackBuilder::last_good)), no older than
//!   `max_age`; when there is none, the original result passes.
//!
//! ```
//! use std::time::Duration;
//! use palisade::circuit_breaker::CircuitBreakerLayer;
//! use palisade::fallback::{FallbackLayer, Reason, Unmarked};
//! use palisade::BoxError;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let fallback = FallbackLayer::builder()
//!     .name("recommendations")
//!     .on(Reason::CircuitOpen)
//!     .on(Reason::Failure)
//!     .value(Vec::<String>::new()) // nothing to recommend today
//!     .mark(Unmarked)              // an empty list needs no mark
//!     .build()?;
//! let handle = fallback.handle();
//! let breaker = CircuitBreakerLayer::builder().name("recommendations").build()?;
//! let recommendations = ServiceBuilder::new()
//!     .layer(fallback)
//!     .layer(breaker)
//!     .service(service_fn(|_user: u64| async {
//!         Err::<Vec<String>, BoxError>("connection refused".into())
//!     }));
//!
//! assert!(recommendations.oneshot(7).await?.is_empty());
//! assert_eq!(handle.served(Reason::Failure), 1);
//! # Ok(())
//! # }
//! ```
//!
//! # What gets an answer
//!
//! Each result has at most one [`Reason`], and gets an answer only when the
//! layer was configured [`on`](FallbackBuilder::on) it:
//!
//! 1. An error that [`ErrorKind::of`](crate::ErrorKind::of) recognises as a
//!    palisade refusal or timeout has that reason
//!    ([`CircuitOpen`](Reason::CircuitOpen),
//!    [`BulkheadFull`](Reason::BulkheadFull), [`Elapsed`](Reason::Elapsed),
//!    [`RateLimited`](Reason::RateLimited),
//!    [`Throttled`](Reason::Throttled)), whatever the classifier says. A
//!    [`NotReady`](crate::error::NotReady) has none: it is the caller's
//!    bug, which an answer would hide.
//! 2. Any other result is a [`Failure`](Reason::Failure) when the
//!    classifier says [`Outcome::Failure`](crate::classify::Outcome): an
//!    inner error with the [`DefaultClassifier`], an HTTP 503 with the
//!    `http` module's `StatusClassifier`.
//!
//! Give the fallback the breaker's own classifier, and what the breaker
//! ignores the fallback ignores too: with a classifier that calls a 404
//! [`Ignored`](crate::classify::Outcome::Ignored), a "not found" reaches
//! the caller as it is, never replaced by a cached list.
//!
//! # The degraded mark
//!
//! A caller must be able to tell a degraded answer from a real one. The
//! layer marks every answer it makes through a [`Mark`], chosen with
//! [`mark`](FallbackBuilder::mark):
//!
//! - the default, [`MarkDegradable`], asks the response type to mark itself
//!   ([`Degradable`]). With the `http` feature, `http::Response<B>` does:
//!   an `X-Degraded: true` header ([`DEGRADED_HEADER`]), which crosses the
//!   network, and a [`Degraded`] extension naming the reason, for layers
//!   above in the same process. A response type that cannot carry a mark
//!   does not compile with the default, rather than passing unmarked.
//! - a closure `Fn(&mut Response, Reason)`, for a type of your own.
//! - [`Unmarked`], when the answer says what it is by itself (an empty
//!   list, a field set by the answer function).
//!
//! The marker is a part of the configuration, not a wrapper around the
//! response, so the layer's response type is the inner service's: the
//! fallback drops into an existing stack (an axum router, a hyper client)
//! with no other change. An answer served from the cache is marked too: it
//! was a real response once, but it is not the answer to this call.
//!
//! # Placement
//!
//! Outermost, or just inside a total timeout: fallback → retry → breaker →
//! attempt timeout → bulkhead. A breaker inside the fallback records every
//! call's real outcome, so a degraded answer never counts as the
//! upstream's success, and never closes a circuit or keeps one closed; and
//! retry gets its attempts before the fallback gives up on the call.
//!
//! # The last good response
//!
//! With [`last_good`](FallbackBuilder::last_good), a function of the
//! request gives each call a key, computed before the call. A response the
//! classifier calls a [`Success`](crate::classify::Outcome::Success) is
//! kept (cloned, so this mode alone needs `Response: Clone`) under its key,
//! replacing the one before; a failure keeps nothing. When a call with that
//! key then gets a reason, its answer is a copy of the kept response, if it
//! is younger than `max_age`. With none, or only an older one, the
//! original result passes, as it would without the layer.
//!
//! The cache is bounded: at most `max_entries` keys (rounded up to a
//! multiple of 16), in 16 shards of equal size. Expired entries are swept
//! when a new key arrives in their shard, at most once per quarter of
//! `max_age`, so an expired entry may hold its place up to 1.25 ×
//! `max_age`. A new key that finds its shard
//! full of fresh entries is not kept: so a flood of new keys (an attacker
//! making up ids) never grows memory past the bound, and cannot flush the
//! answers already kept for the keys that matter; they age out at
//! `max_age`. Keys appear in no event, metric or error: they are often user
//! ids.
//!
//! # The tower contract
//!
//! `poll_ready` passes the inner service's readiness through, errors
//! included: an error there tells the caller to discard the service, and no
//! answer should hide that. The response future is cancel-safe: dropped
//! before it completes, it answers nothing, counts nothing and keeps
//! nothing. Without the cache a call allocates nothing on the success path.
//!
//! # Events and metrics
//!
//! The [`Handle`] counts the answers served by reason, the answers that
//! failed, and the cache's hits, misses and expired entries. Each time the
//! layer acts on a reason it emits a `tracing` event (target
//! `palisade::fallback`) and calls the listener given to
//! [`on_event`](FallbackBuilder::on_event) with an [`Event`]: the reason,
//! the original error (when the failure was one) and what came of it.
//! With the `metrics` feature:
//!
//! | series | labels |
//! |---|---|
//! | `palisade_fallback_served_total` | `name`, `reason` (`circuit_open`, `rate_limited`, `bulkhead_full`, `throttled`, `elapsed`, `failure`) |
//! | `palisade_fallback_answer_failures_total` | `name` |
//! | `palisade_fallback_cache_total` | `name`, `result` (`hit`, `miss`, `expired`) |
//!
//! # Configuration
//!
//! | option | default | rule |
//! |---|---|---|
//! | `name` | `"fallback"` | any string |
//! | `on` | none | at least one [`Reason`] |
//! | the answer | none | one of `value`, `answer`, `last_good`: `build` exists only once one is chosen |
//! | `classifier` | [`DefaultClassifier`] | any [`Classify`] |
//! | `mark` | [`MarkDegradable`] | any [`Mark`] |
//! | `max_entries` | 10 000 | at least 1 (`last_good` only) |
//! | `max_age` | none, required for `last_good` | more than zero |
//!
//! [`DefaultClassifier`]: crate::classify::DefaultClassifier

mod answer;
mod future;
mod handle;
mod layer;
mod mark;

pub use answer::{Answer, Compute, Failed, LastGood, NoAnswer, Respond, Value};
pub use future::ResponseFuture;
pub use handle::{Event, EventKind, Handle};
pub use layer::{FallbackBuilder, FallbackConfig, FallbackLayer, LastGoodKey};
#[cfg(feature = "http")]
pub use mark::DEGRADED_HEADER;
pub use mark::{Degradable, Degraded, Mark, MarkDegradable, Unmarked};

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use crate::classify::{Classify, DefaultClassifier, Outcome};
use crate::error::{BoxError, ErrorKind};
use handle::Shared;

/// Why the layer acted on a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Reason {
    /// A circuit breaker refused the call
    /// ([`CircuitOpen`](crate::error::CircuitOpen)).
    CircuitOpen,
    /// A rate limiter refused the call
    /// ([`RateLimited`](crate::error::RateLimited)).
    RateLimited,
    /// A bulkhead refused the call
    /// ([`BulkheadFull`](crate::error::BulkheadFull)).
    BulkheadFull,
    /// A client-side throttle refused the call
    /// ([`Throttled`](crate::error::Throttled)).
    Throttled,
    /// A timeout fired ([`Elapsed`](crate::error::Elapsed)).
    Elapsed,
    /// The classifier called the result a
    /// [`Failure`](crate::classify::Outcome::Failure).
    Failure,
}

impl Reason {
    /// Every reason, in the order of [`index`](Self::index).
    const ALL: [Reason; 6] = [
        Reason::CircuitOpen,
        Reason::RateLimited,
        Reason::BulkheadFull,
        Reason::Throttled,
        Reason::Elapsed,
        Reason::Failure,
    ];

    /// Every refusal a palisade layer makes, and a timeout: the reasons
    /// that are not [`Failure`](Reason::Failure).
    pub const REFUSALS: [Reason; 5] = [
        Reason::CircuitOpen,
        Reason::RateLimited,
        Reason::BulkheadFull,
        Reason::Throttled,
        Reason::Elapsed,
    ];

    /// The reason's name in events and metrics, such as `"circuit_open"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::CircuitOpen => "circuit_open",
            Reason::RateLimited => "rate_limited",
            Reason::BulkheadFull => "bulkhead_full",
            Reason::Throttled => "throttled",
            Reason::Elapsed => "elapsed",
            Reason::Failure => "failure",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The reason a palisade error carries, if it is one of the refusals.
    fn of_kind(kind: &ErrorKind<'_>) -> Option<Reason> {
        match kind {
            ErrorKind::CircuitOpen(_) => Some(Reason::CircuitOpen),
            ErrorKind::RateLimited(_) => Some(Reason::RateLimited),
            ErrorKind::BulkheadFull(_) => Some(Reason::BulkheadFull),
            ErrorKind::Throttled(_) => Some(Reason::Throttled),
            ErrorKind::Elapsed(_) => Some(Reason::Elapsed),
            _ => None,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of reasons, one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Reasons(u8);

impl Reasons {
    pub(crate) fn with(self, reason: Reason) -> Self {
        Reasons(self.0 | 1 << reason.index())
    }

    pub(crate) fn contains(self, reason: Reason) -> bool {
        self.0 & 1 << reason.index() != 0
    }
}

/// What the layer does with a finished call's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Hand it to the caller as it is.
    Pass,
    /// A success: hand it on, and keep a copy if the answer keeps any.
    Keep,
    /// Answer in its place.
    Answer(Reason),
}

/// Everything the services of one layer share: the answer, the
/// classifier, the marker, and the counters.
pub(crate) struct Policy<A, C, M> {
    shared: Arc<Shared>,
    reasons: Reasons,
    answer: A,
    classifier: C,
    mark: M,
}

impl<A, C, M> Policy<A, C, M> {
    /// The reason `result` gets an answer for, if it does.
    #[inline]
    fn verdict<Res>(&self, result: &Result<Res, BoxError>) -> Verdict
    where
        C: Classify<Res, BoxError>,
    {
        if let Err(err) = result {
            let kind = ErrorKind::of(err);
            if let Some(reason) = Reason::of_kind(&kind) {
                return self.answer_if_chosen(reason);
            }
            if let ErrorKind::NotReady(_) = kind {
                return Verdict::Pass;
            }
        }
        match self.classifier.classify(result) {
            Outcome::Failure => self.answer_if_chosen(Reason::Failure),
            Outcome::Success if result.is_ok() => Verdict::Keep,
            _ => Verdict::Pass,
        }
    }

    fn answer_if_chosen(&self, reason: Reason) -> Verdict {
        if self.reasons.contains(reason) {
            Verdict::Answer(reason)
        } else {
            Verdict::Pass
        }
    }
}

impl<A, C, M> fmt::Debug for Policy<A, C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("shared", &self.shared)
            .field("reasons", &self.reasons)
            .finish_non_exhaustive()
    }
}

/// A service that answers with a degraded value for the results it was
/// configured for.
///
/// Built by [`FallbackLayer`]; see the [module docs](self).
pub struct Fallback<S, A, C = DefaultClassifier, M = MarkDegradable> {
    inner: S,
    policy: Arc<Policy<A, C, M>>,
}

impl<S, A, C, M> Fallback<S, A, C, M> {
    fn new(inner: S, policy: Arc<Policy<A, C, M>>) -> Self {
        Fallback { inner, policy }
    }

    /// A handle on the layer's counters.
    pub fn handle(&self) -> Handle {
        Handle::new(self.policy.shared.clone())
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

impl<S: Clone, A, C, M> Clone for Fallback<S, A, C, M> {
    fn clone(&self) -> Self {
        Fallback::new(self.inner.clone(), self.policy.clone())
    }
}

impl<S, Request, A, C, M> Service<Request> for Fallback<S, A, C, M>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
    A: Answer<Request, S::Response> + Respond<A::Key, S::Response>,
    C: Classify<S::Response, BoxError>,
    M: Mark<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, A::Key, A, C, M>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // Before the call: the request is the inner service's from here on.
        let key = self.policy.answer.key(&request);
        ResponseFuture::new(self.inner.call(request), key, self.policy.clone())
    }
}

impl<S: fmt::Debug, A, C, M> fmt::Debug for Fallback<S, A, C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_index_in_the_order_of_all() {
        for (i, reason) in Reason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
        let set = Reasons::default().with(Reason::Elapsed);
        assert!(set.contains(Reason::Elapsed));
        assert!(!set.contains(Reason::Failure));
    }
}
