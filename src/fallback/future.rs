//! The response future of [`Fallback`](super::Fallback).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::answer::{Answered, Failed, Respond};
use super::handle::EventKind;
use super::{Mark, Policy, Reason, Verdict};
use crate::classify::Classify;
use crate::error::BoxError;

pin_project! {
    /// The response future of [`Fallback`](super::Fallback).
    ///
    /// Decides on the inner call's result when it completes, and only
    /// then: dropped before that, it answers, counts and keeps nothing.
    pub struct ResponseFuture<F, K, A, C, M> {
        #[pin]
        inner: F,
        // Taken when the result is in; `None` only after that.
        key: Option<K>,
        policy: Arc<Policy<A, C, M>>,
    }
}

impl<F, K, A, C, M> ResponseFuture<F, K, A, C, M> {
    pub(crate) fn new(inner: F, key: K, policy: Arc<Policy<A, C, M>>) -> Self {
        ResponseFuture {
            inner,
            key: Some(key),
            policy,
        }
    }
}

impl<F, K, A, C, M, T, E> Future for ResponseFuture<F, K, A, C, M>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, BoxError>,
    M: Mark<T>,
    A: Respond<K, T>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx)).map_err(Into::into);
        let Some(key) = this.key.take() else {
            // Polled again after completing: the inner future's business.
            return Poll::Ready(result);
        };
        let policy = &**this.policy;
        Poll::Ready(match policy.verdict(&result) {
            Verdict::Pass => result,
            Verdict::Keep => {
                if let Ok(response) = &result {
                    policy.answer.remember(key, response);
                }
                result
            }
            Verdict::Answer(reason) => answer(policy, reason, key, result),
        })
    }
}

/// Answers in the place of `result`, for `reason`.
#[cold]
fn answer<T, K, A, C, M>(
    policy: &Policy<A, C, M>,
    reason: Reason,
    key: K,
    result: Result<T, BoxError>,
) -> Result<T, BoxError>
where
    M: Mark<T>,
    A: Respond<K, T>,
{
    let failed = Failed::new(reason, result);
    let (outcome, kind) = match policy.answer.answer(key, &failed) {
        Answered::Served(mut response) => {
            policy.mark.mark(&mut response, reason);
            (Ok(response), EventKind::Served)
        }
        Answered::Cached(mut response) => {
            policy.mark.mark(&mut response, reason);
            (Ok(response), EventKind::ServedFromCache)
        }
        Answered::Failed(err) => (Err(err), EventKind::AnswerFailed),
        Answered::Missing => {
            policy
                .shared
                .record(reason, failed.error(), EventKind::CacheMiss);
            return failed.into_result();
        }
        Answered::Expired => {
            policy
                .shared
                .record(reason, failed.error(), EventKind::CacheExpired);
            return failed.into_result();
        }
    };
    policy.shared.record(reason, failed.error(), kind);
    outcome
}

impl<F: fmt::Debug, K, A, C, M> fmt::Debug for ResponseFuture<F, K, A, C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}
