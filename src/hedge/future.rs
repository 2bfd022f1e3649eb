//! The response future of [`Hedge`](super::Hedge): the first attempt, the
//! hedges sent after it, and the timer that sends the next.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::handle::{Delay, Shared};
use crate::classify::{Classify, Outcome, kind_of};
use crate::error::{BoxError, ErrorKind};
use crate::retry::{Payment, Replay};
use crate::spare::WithSpare;

pin_project! {
    /// The response future of [`Hedge`](super::Hedge).
    ///
    /// Dropping it cancels every attempt still out, and gives back a hedge
    /// paid for but not sent.
    #[project = ResponseFutureProj]
    pub struct ResponseFuture<S, Req, C, R>
    where
        S: Service<Req>,
    {
        #[pin]
        first: Option<S::Future>,
        // Hedges in flight, with when each was sent; allocated only when
        // one is sent.
        hedges: Vec<(Pin<Box<S::Future>>, Instant)>,
        // Sends the next hedge when it fires.
        #[pin]
        timer: Option<Sleep>,
        hedging: Option<Hedging<S, Req, R>>,
        // When the first attempt was sent, if the request may be hedged.
        started: Option<Instant>,
        // The last failure, returned if no attempt succeeds.
        last: Option<Result<S::Response, S::Error>>,
        classifier: C,
        // The layer's state, and the service hedges go to.
        layer: Arc<WithSpare<Shared, S>>,
    }

    // A caller that drops the request (a timeout outside the hedge) ends
    // it too: a hedge paid for but not sent gives its payment back.
    impl<S, Req, C, R> PinnedDrop for ResponseFuture<S, Req, C, R>
    where
        S: Service<Req>,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(payment) = this.hedging.take().and_then(|h| h.paid) {
                this.layer.shared.budget.refund(payment);
            }
        }
    }
}

/// What sending more attempts needs: a clone of the service (made when the
/// first hedge is due), the copy of the request, and where the sending
/// stands.
pub(crate) struct Hedging<S, Req, R> {
    service: Option<S>,
    request: Option<Req>,
    replay: R,
    /// Attempts sent so far, the first included.
    sent: u32,
    /// A hedge is due: the timer fired or an attempt failed.
    due: bool,
    /// The next hedge waits for the timer a failure's pushback set: the
    /// request waits for it even with no attempt out.
    held: bool,
    /// What the next hedge paid the budget, once it is due (it waits for
    /// the service's readiness); given back if it never goes.
    paid: Option<Payment>,
}

impl<S, Req, C, R> ResponseFuture<S, Req, C, R>
where
    S: Service<Req>,
{
    /// A request that is not hedged: its one attempt, timed from `started`
    /// when the delay is learned (its latency counts all the same).
    pub(crate) fn single(
        future: S::Future,
        started: Option<Instant>,
        classifier: C,
        layer: Arc<WithSpare<Shared, S>>,
    ) -> Self {
        ResponseFuture {
            first: Some(future),
            hedges: Vec::new(),
            timer: None,
            hedging: None,
            started,
            last: None,
            classifier,
            layer,
        }
    }

    /// A request that may be hedged: its first attempt, sent at `started`,
    /// and what sending more needs.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn hedged(
        future: S::Future,
        started: Instant,
        first_hedge_at: Option<Instant>,
        request: Req,
        replay: R,
        classifier: C,
        layer: Arc<WithSpare<Shared, S>>,
    ) -> Self {
        ResponseFuture {
            first: Some(future),
            hedges: Vec::new(),
            timer: first_hedge_at.map(tokio::time::sleep_until),
            hedging: Some(Hedging {
                service: None,
                request: Some(request),
                replay,
                sent: 1,
                due: false,
                held: false,
                paid: None,
            }),
            started: Some(started),
            last: None,
            classifier,
            layer,
        }
    }
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
            // Attempts first: an answer that is ready wins over sending more.
            if let Some(first) = this.first.as_mut().as_pin_mut()
                && let Poll::Ready(result) = first.poll(cx)
            {
                this.first.set(None);
                if let Some(done) = this.judge(result, None) {
                    return Poll::Ready(this.finish(done));
                }
            }
            let mut i = 0;
            while i < this.hedges.len() {
                let Poll::Ready(result) = this.hedges[i].0.as_mut().poll(cx) else {
                    i += 1;
                    continue;
                };
                let (_, sent) = this.hedges.swap_remove(i);
                if let Some(done) = this.judge(result, Some(sent)) {
                    return Poll::Ready(this.finish(done));
                }
            }
            if let Some(timer) = this.timer.as_mut().as_pin_mut()
                && timer.poll(cx).is_ready()
            {
                this.timer.set(None);
                if let Some(hedging) = this.hedging.as_mut() {
                    hedging.due = true;
                    hedging.held = false;
                }
            }
            if this.hedging.as_ref().is_some_and(|h| h.due) {
                match this.send(cx) {
                    // Sent: poll it (and the timer it armed) at once.
                    Poll::Ready(true) => continue,
                    Poll::Ready(false) | Poll::Pending => {}
                }
            }
            let out = this.first.is_some() || !this.hedges.is_empty();
            // A hedge due, or held by a pushback, is still to come.
            let coming = this.hedging.as_ref().is_some_and(|h| h.due || h.held);
            if out || coming {
                return Poll::Pending;
            }
            // Every attempt failed, and no more may go.
            return Poll::Ready(match this.last.take() {
                Some(result) => result.map_err(Into::into),
                None => Err("hedge: no attempt was made".into()),
            });
        }
    }
}

impl<S, Req, C, R> ResponseFutureProj<'_, S, Req, C, R>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError> + 'static,
    C: Classify<S::Response, S::Error>,
    R: Replay<Req>,
{
    /// Judges an attempt's result: a success or a final outcome ends the
    /// request (the other attempts are dropped with this future); a
    /// failure is kept, and sets when the next hedge goes (see
    /// [`after_failure`](Self::after_failure)).
    /// `hedge` is when the attempt was sent, if it was a hedge.
    fn judge(
        &mut self,
        result: Result<S::Response, S::Error>,
        hedge: Option<Instant>,
    ) -> Option<Result<S::Response, BoxError>> {
        // A refusal by a layer below (an open circuit, a full bulkhead, a
        // throttle, a rate limit) says nothing about the upstream: it does
        // not end the race while other attempts are out, and would meet the
        // next hedge too, so it sends none at once. With nothing else out,
        // it is the answer, unless an attempt failed for real before it.
        if is_refusal(&result) {
            if self.last.is_none() {
                *self.last = Some(result);
            }
            return None;
        }
        match self.classifier.classify(&result) {
            Outcome::Success => {
                self.layer.shared.budget.on_success();
                // The attempts' latencies: a first attempt that won, as it
                // took; a hedge that won, as it took, and the first attempt
                // it beat as at least the time it had run (recording the
                // hedge alone would let hedged requests pull the delay
                // down; the request's wait alone, push it up).
                if let (Delay::Learned(learned), Some(started)) =
                    (&self.layer.shared.delay, *self.started)
                {
                    learned.record(started, hedge);
                }
                if hedge.is_some() {
                    self.layer.shared.count_won();
                }
                Some(result.map_err(Into::into))
            }
            // Not the upstream's failure (a 404, a bad request): another
            // attempt would answer the same.
            Outcome::Ignored => Some(result.map_err(Into::into)),
            Outcome::Failure => {
                self.layer.shared.budget.on_failure();
                // Read only when it could change something: it may cost
                // more than the classification.
                let pushback = if self.may_hedge() {
                    self.classifier.retry_after(&result)
                } else {
                    None
                };
                *self.last = Some(result);
                self.after_failure(pushback);
                None
            }
        }
    }

    /// Whether another hedge may still go for this request.
    fn may_hedge(&self) -> bool {
        self.hedging
            .as_ref()
            .is_some_and(|h| h.sent < self.layer.shared.max_attempts && h.request.is_some())
    }

    /// Sets when the next hedge goes after a failure, by the server's
    /// pushback as gRPC's hedging defines it: without one, at once; after
    /// a wait, that long from now (the hedges after it go back to the
    /// delay); asked not to retry ([`Duration::MAX`], as
    /// [`Classify::retry_after`] reports it), never: the attempts out run
    /// on and may still win, but no more are sent.
    fn after_failure(&mut self, pushback: Option<Duration>) {
        let Some(hedging) = self.hedging.as_mut() else {
            return;
        };
        let Some(wait) = pushback else {
            hedging.due = true;
            return;
        };
        // A wait past what the clock can hold is as good as never.
        match Instant::now().checked_add(wait) {
            Some(at) if wait != Duration::MAX => {
                // A hedge already paid for keeps its payment for when it
                // goes.
                hedging.due = false;
                hedging.held = true;
                self.timer.set(Some(tokio::time::sleep_until(at)));
            }
            _ => {
                self.layer.shared.pushback_stopped();
                self.stop();
            }
        }
    }

    /// Sends the hedge that is due, once the service is ready: `true` when
    /// sent; `false` when no more will go (none left, no copy, or the
    /// budget refused), which ends hedging for this request.
    fn send(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let Some(hedging) = self.hedging.as_mut() else {
            return Poll::Ready(false);
        };
        if hedging.sent >= self.layer.shared.max_attempts || hedging.request.is_none() {
            return Poll::Ready(self.stop());
        }
        // Paid for first, so that a hedge the budget refuses never queues
        // for the service's readiness.
        if hedging.paid.is_none() {
            let Some(payment) = self.layer.shared.budget.try_pay() else {
                self.layer.shared.count_budget_refusal();
                return Poll::Ready(self.stop());
            };
            hedging.paid = Some(payment);
        }
        let service = hedging.service.get_or_insert_with(|| self.layer.service());
        if let Err(err) = ready!(service.poll_ready(cx)) {
            // The service cannot take more: this is the hedge's failure.
            if self.last.is_none() {
                *self.last = Some(Err(err));
            }
            return Poll::Ready(self.stop());
        }
        // The last attempt sends the copy itself; earlier ones a copy of it.
        let request = if hedging.sent + 1 >= self.layer.shared.max_attempts {
            hedging.request.take()
        } else {
            hedging
                .request
                .as_ref()
                .and_then(|r| hedging.replay.replay(r))
        };
        let Some(request) = request else {
            return Poll::Ready(self.stop());
        };
        let future = service.call(request);
        hedging.sent += 1;
        hedging.due = false;
        hedging.held = false;
        hedging.paid = None;
        self.layer.shared.count_sent(hedging.sent - 1);
        self.hedges.push((Box::pin(future), Instant::now()));
        // The next hedge goes one delay after this one, if one may.
        let next = match self.layer.shared.delay() {
            Some(delay) if hedging.sent < self.layer.shared.max_attempts => {
                Instant::now().checked_add(delay)
            }
            _ => None,
        };
        self.timer.set(next.map(tokio::time::sleep_until));
        Poll::Ready(true)
    }

    /// Ends the request with `done`: the attempts still out are cancelled
    /// now, not when the caller drops this future.
    fn finish(&mut self, done: Result<S::Response, BoxError>) -> Result<S::Response, BoxError> {
        self.first.set(None);
        self.hedges.clear();
        self.stop();
        done
    }

    /// No more hedges for this request. A hedge paid for but not sent
    /// gives its payment back: only hedges that go cost the budget.
    fn stop(&mut self) -> bool {
        if let Some(payment) = self.hedging.take().and_then(|h| h.paid) {
            self.layer.shared.budget.refund(payment);
        }
        self.timer.set(None);
        false
    }
}

/// Whether `result` is a palisade layer's refusal, which says nothing
/// about the upstream and would meet the next attempt too.
fn is_refusal<T, E: 'static>(result: &Result<T, E>) -> bool {
    let Err(err) = result else { return false };
    matches!(
        kind_of(err),
        Some(
            ErrorKind::CircuitOpen(_)
                | ErrorKind::BulkheadFull(_)
                | ErrorKind::Throttled(_)
                | ErrorKind::RateLimited(_)
        )
    )
}

impl<S, Req, C, R> std::fmt::Debug for ResponseFuture<S, Req, C, R>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("hedges", &self.hedges.len())
            .field("sent", &self.hedging.as_ref().map(|h| h.sent))
            .finish_non_exhaustive()
    }
}
