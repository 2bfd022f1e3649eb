//! The response future of [`Retry`](super::Retry): attempts, backoff sleeps
//! and readiness, until a result is final.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep};
use tower_service::Service;
use tracing::Span;

use super::attempt::{Attempt, ResultKind, attempt_span};
use super::budget::Payment;
use super::handle::RetryEvent;
use super::layer::{Retries, Shared};
use super::replay::Replay;
use crate::classify::{Classify, Outcome, kind_of};
use crate::error::{BoxError, Elapsed, ErrorKind, Why};
use crate::rng::Rng;

pin_project! {
    /// The response future of [`Retry`](super::Retry).
    ///
    /// Dropping it stops at once: no further attempt is made, and nothing
    /// is left reserved.
    #[project = ResponseFutureProj]
    pub struct ResponseFuture<S, Req, C, R>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S::Future>,
        // The service retries go to, driven to ready before each: a clone
        // made at the first retry, so a request that needs none clones
        // nothing.
        service: Option<S>,
        // The copy the next attempt sends; `None` once the request may not
        // be sent again.
        request: Option<Req>,
        // What the retry decided on paid the budget, until it is sent;
        // given back if it never is (the caller dropped the request during
        // the backoff, the deadline passed, the service failed to get
        // ready).
        paid: Option<Payment>,
        // The last attempt's result, kept until the next attempt is sent, in
        // case waiting for readiness runs past the deadline.
        last: Option<Result<S::Response, S::Error>>,
        classifier: C,
        replay: R,
        retries: Arc<Retries<S>>,
        // Attempts sent so far.
        attempt: u32,
        // When the deadline passes, if there is one.
        deadline: Option<Instant>,
        // Drawn at the first retry, so a request that needs none costs no
        // draw.
        rng: Option<Rng>,
        previous_delay: Option<Duration>,
        // The request's span, and the current attempt's inside it; both
        // disabled when no subscriber takes them.
        span: Span,
        attempt_span: Span,
        // When the current attempt started, if attempts are timed.
        started: Option<Instant>,
    }

    impl<S, Req, C, R> PinnedDrop for ResponseFuture<S, Req, C, R>
    where
        S: Service<Req>,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(payment) = this.paid.take() {
                this.retries.shared.budget.refund(payment);
            }
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling {
            #[pin]
            future: F,
        },
        Sleeping {
            #[pin]
            sleep: Sleep,
        },
        Readying,
        // The request's deadline had passed before the first attempt: none
        // is sent.
        Expired,
    }
}

impl<S, Req, C, R> ResponseFuture<S, Req, C, R>
where
    S: Service<Req>,
{
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        first: FirstAttempt<S::Future>,
        request: Option<Req>,
        classifier: C,
        replay: R,
        retries: Arc<Retries<S>>,
        deadline: Option<Instant>,
    ) -> Self {
        ResponseFuture {
            state: State::Calling {
                future: first.future,
            },
            service: None,
            request,
            paid: None,
            last: None,
            classifier,
            replay,
            retries,
            attempt: 1,
            deadline,
            rng: None,
            previous_delay: None,
            span: first.span,
            attempt_span: first.attempt_span,
            started: first.started,
        }
    }

    /// A call whose deadline passed before its first attempt: it fails with
    /// the deadline error, and the service is not called.
    pub(crate) fn expired(classifier: C, replay: R, retries: Arc<Retries<S>>) -> Self {
        ResponseFuture {
            state: State::Expired,
            service: None,
            request: None,
            paid: None,
            last: None,
            classifier,
            replay,
            retries,
            attempt: 0,
            deadline: None,
            rng: None,
            previous_delay: None,
            span: Span::none(),
            attempt_span: Span::none(),
            started: None,
        }
    }
}

/// The first attempt, made in `call`: its future, the spans it was made
/// in, and when it started if attempts are timed.
pub(crate) struct FirstAttempt<F> {
    pub(crate) future: F,
    pub(crate) span: Span,
    pub(crate) attempt_span: Span,
    pub(crate) started: Option<Instant>,
}

/// What follows an attempt's result.
enum Next {
    /// The result is final: whether it is a success, and whether the layer
    /// judged it a failure worth retrying (but could not retry).
    Return { succeeded: bool, handled: bool },
    /// Retry after this long, paid for with this.
    Retry(Duration, Payment),
}

impl<S, Req, C, R> Future for ResponseFuture<S, Req, C, R>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError> + 'static,
    C: Classify<S::Response, S::Error>,
    R: Replay<Req>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let result = {
                        let _entered = this.attempt_span.enter();
                        ready!(future.poll(cx))
                    };
                    let next = decide(
                        &result,
                        *this.attempt,
                        this.request.is_some(),
                        this.classifier,
                        &this.retries.shared,
                        *this.deadline,
                        this.rng,
                        this.previous_delay,
                    );
                    this.report_attempt(&result, &next);
                    match next {
                        Next::Return { succeeded, .. } => {
                            this.finish(succeeded);
                            return Poll::Ready(result.map_err(Into::into));
                        }
                        Next::Retry(delay, payment) => {
                            *this.last = Some(result);
                            *this.paid = Some(payment);
                            if delay.is_zero() {
                                this.state.set(State::Readying);
                            } else {
                                this.state.set(State::Sleeping {
                                    sleep: sleep(delay),
                                });
                            }
                        }
                    }
                }
                StateProj::Sleeping { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Readying);
                }
                StateProj::Expired => {
                    let name = this.retries.shared.name.clone();
                    let expired = Elapsed::because(name, Duration::ZERO, Why::Expired);
                    return Poll::Ready(Err(expired.into()));
                }
                StateProj::Readying => {
                    let service = this.service.get_or_insert_with(|| this.retries.service());
                    if let Err(err) = ready!(service.poll_ready(cx)) {
                        let why = "the service failed while getting ready";
                        this.retries.shared.attempts.abandoned(*this.attempt, why);
                        this.refund();
                        this.finish(false);
                        return Poll::Ready(Err(err.into()));
                    }
                    let past_deadline = this.deadline.is_some_and(|d| Instant::now() >= d);
                    // The last attempt sends the copy itself; earlier ones a
                    // copy of it.
                    let request = if past_deadline {
                        None
                    } else if *this.attempt + 1 >= this.retries.shared.max_attempts {
                        this.request.take()
                    } else {
                        this.request.as_ref().and_then(|r| this.replay.replay(r))
                    };
                    let Some(request) = request else {
                        // No attempt starts after the deadline: the last
                        // result stands.
                        let why = if past_deadline {
                            "the deadline passed"
                        } else {
                            "the request could not be copied"
                        };
                        this.retries.shared.attempts.abandoned(*this.attempt, why);
                        this.refund();
                        return Poll::Ready(this.give_back_last());
                    };
                    *this.paid = None; // spent: the retry goes
                    *this.last = None; // released, never returned
                    *this.attempt += 1;
                    *this.attempt_span = attempt_span(this.span, *this.attempt - 1);
                    *this.started = this
                        .retries
                        .shared
                        .attempts
                        .times_attempts()
                        .then(Instant::now);
                    let future = {
                        let _entered = this.attempt_span.enter();
                        service.call(request)
                    };
                    this.state.set(State::Calling { future });
                }
            }
        }
    }
}

impl<S, Req, C, R> ResponseFutureProj<'_, S, Req, C, R>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
{
    /// Ends with the result kept from the last attempt.
    fn give_back_last(&mut self) -> Result<S::Response, BoxError> {
        match self.last.take() {
            Some(result) => {
                let succeeded = self.classifier.classify(&result) == Outcome::Success;
                self.finish(succeeded);
                result.map_err(Into::into)
            }
            None => Err("retry: no result to return".into()),
        }
    }

    /// Gives back what a retry that will not go paid the budget.
    fn refund(&mut self) {
        if let Some(payment) = self.paid.take() {
            self.retries.shared.budget.refund(payment);
        }
    }

    /// Counts the request's end and records it on its span.
    fn finish(&mut self, succeeded: bool) {
        let outcome = self
            .retries
            .shared
            .counters
            .finished(succeeded, *self.attempt > 1);
        self.span.record("attempts", *self.attempt);
        self.span.record("outcome", outcome);
    }

    /// Reports the attempt that just ended with `result`.
    fn report_attempt(&mut self, result: &Result<S::Response, S::Error>, next: &Next)
    where
        S::Error: 'static,
    {
        let (handled, retrying) = match next {
            Next::Return { handled, .. } => (*handled, false),
            Next::Retry(..) => (true, true),
        };
        self.retries.shared.attempts.finished(&Attempt {
            number: *self.attempt - 1,
            handled,
            retrying,
            result: ResultKind::of(result),
            took: self.started.take().map(|started| started.elapsed()),
        });
    }
}

/// Decides what follows an attempt's `result`: its outcome feeds the
/// budget; a retryable failure is retried if attempts, the request, the
/// deadline and then the budget all allow.
#[allow(clippy::too_many_arguments)]
#[inline]
fn decide<T, E, C>(
    result: &Result<T, E>,
    attempt: u32,
    may_replay: bool,
    classifier: &C,
    shared: &Shared,
    deadline: Option<Instant>,
    rng: &mut Option<Rng>,
    previous_delay: &mut Option<Duration>,
) -> Next
where
    E: 'static,
    C: Classify<T, E>,
{
    let outcome = classifier.classify(result);
    let retryable = match outcome {
        Outcome::Success => {
            shared.budget.on_success();
            return Next::Return {
                succeeded: true,
                handled: false,
            };
        }
        Outcome::Failure => {
            shared.budget.on_failure();
            // Shed on purpose below, or a caller's bug: never retried,
            // whatever a classifier of the user's own calls it.
            !is_never_retried(result)
        }
        Outcome::Ignored => shared.retry_rate_limited && is_rate_limited(result),
    };
    if !retryable || attempt >= shared.max_attempts || !may_replay {
        return Next::Return {
            succeeded: false,
            handled: retryable,
        };
    }
    match retry_delay(
        result,
        attempt,
        classifier,
        shared,
        deadline,
        rng,
        previous_delay,
    ) {
        Some((delay, payment)) => Next::Retry(delay, payment),
        None => Next::Return {
            succeeded: false,
            handled: true,
        },
    }
}

/// The wait before the next attempt, or `None` when the next attempt must
/// not go: the result asked for a wait beyond the backoff's maximum or the
/// deadline, or the budget is spent.
#[allow(clippy::too_many_arguments)]
#[cold]
fn retry_delay<T, E, C>(
    result: &Result<T, E>,
    attempt: u32,
    classifier: &C,
    shared: &Shared,
    deadline: Option<Instant>,
    rng: &mut Option<Rng>,
    previous_delay: &mut Option<Duration>,
) -> Option<(Duration, Payment)>
where
    C: Classify<T, E>,
{
    let rng = rng.get_or_insert_with(|| shared.rng());
    let backoff = shared.backoff.delay(attempt, *previous_delay, rng);
    let retry_after = classifier.retry_after(result);
    let delay = match retry_after {
        // Retrying sooner than the upstream asked would most likely fail
        // again; waiting longer than the backoff allows is not wanted
        // either: give up. `Duration::MAX` is a result's "do not retry"
        // (gRPC's negative pushback), even where the backoff has no
        // maximum.
        Some(asked) if asked == Duration::MAX || asked > shared.backoff.max => return None,
        Some(asked) => backoff.max(asked),
        None => backoff,
    };
    if let Some(deadline) = deadline {
        let now = Instant::now();
        if now.checked_add(delay).is_none_or(|wake| wake >= deadline) {
            return None;
        }
    }
    let Some(payment) = shared.budget.try_pay() else {
        shared.counters.budget_refusal();
        return None;
    };
    *previous_delay = Some(backoff);
    shared.counters.retry();
    shared.on_retry(&RetryEvent {
        name: shared.name.as_str(),
        retry: attempt,
        delay,
        retry_after,
    });
    Some((delay, payment))
}

/// Whether `result` is an error no retry can help: a refusal whose layer
/// sheds calls on purpose (an open circuit, a full bulkhead, a throttled
/// call), or a layer called without readiness, which is a bug in the
/// caller and would only happen again.
#[cold]
fn is_never_retried<T, E: 'static>(result: &Result<T, E>) -> bool {
    let Err(err) = result else { return false };
    matches!(
        kind_of(err),
        Some(
            ErrorKind::CircuitOpen(_)
                | ErrorKind::BulkheadFull(_)
                | ErrorKind::Throttled(_)
                | ErrorKind::NotReady(_)
        )
    )
}

/// Whether `result` is a palisade rate-limit refusal.
fn is_rate_limited<T, E: 'static>(result: &Result<T, E>) -> bool {
    let Err(err) = result else { return false };
    matches!(kind_of(err), Some(ErrorKind::RateLimited(_)))
}

impl<S, Req, C, R> std::fmt::Debug for ResponseFuture<S, Req, C, R>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempt", &self.attempt)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
