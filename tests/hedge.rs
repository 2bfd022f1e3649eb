//! The hedge layer, under tokio's paused clock, against an inner service
//! whose attempts the test answers by hand. Scenario ids refer to
//! `SCENARIOS-wave2.md`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloned::CountsClones;
use palisade::BoxError;
use palisade::classify::{Classify, Outcome};
use palisade::hedge::{HedgeBuilder, HedgeLayer};
use palisade::retry::RetryBudget;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

#[path = "support/cloned.rs"]
mod cloned;

type Reply = Result<u16, BoxError>;

/// One attempt the inner service received: when, and how to answer it.
struct Call {
    at: Duration,
    answer: Option<oneshot::Sender<Reply>>,
}

/// The inner service's attempts, answered by the test.
#[derive(Clone)]
struct Hand {
    start: Instant,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Hand {
    fn new() -> Self {
        Hand {
            start: Instant::now(),
            calls: Arc::default(),
        }
    }

    fn service(
        &self,
    ) -> impl Service<u16, Response = u16, Error = BoxError, Future: Send> + Clone + Send + 'static
    {
        let hand = self.clone();
        service_fn(move |_: u16| {
            let (answer, reply) = oneshot::channel();
            hand.calls.lock().unwrap().push(Call {
                at: hand.start.elapsed(),
                answer: Some(answer),
            });
            async move { reply.await.unwrap_or_else(|_| Err("never answered".into())) }
        })
    }

    /// When each attempt arrived, in ms.
    fn arrivals(&self) -> Vec<u64> {
        let calls = self.calls.lock().unwrap();
        calls.iter().map(|c| c.at.as_millis() as u64).collect()
    }

    fn answer(&self, attempt: usize, reply: Reply) {
        let answer = self.calls.lock().unwrap()[attempt].answer.take().unwrap();
        let _ = answer.send(reply);
    }

    /// Whether the attempt's future was dropped before it was answered.
    fn cancelled(&self, attempt: usize) -> bool {
        let calls = self.calls.lock().unwrap();
        calls[attempt]
            .answer
            .as_ref()
            .is_some_and(|a| a.is_closed())
    }

    /// Attempts in flight: neither answered nor cancelled.
    fn outstanding(&self) -> usize {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|c| c.answer.as_ref().is_some_and(|a| !a.is_closed()))
            .count()
    }

    /// Moves the clock to `ms` after the start and lets every task run.
    async fn at(&self, ms: u64) {
        tokio::time::sleep_until(self.start + Duration::from_millis(ms)).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }
}

/// 200 succeeds, 503 fails (the next hedge goes at once), anything else is
/// final.
fn statuses(result: &Reply) -> Outcome {
    match result {
        Ok(200) => Outcome::Success,
        Ok(503) | Err(_) => Outcome::Failure,
        Ok(_) => Outcome::Ignored,
    }
}

fn send<S>(svc: S) -> JoinHandle<Reply>
where
    S: Service<u16, Response = u16, Error = BoxError> + Send + 'static,
    S::Future: Send,
{
    tokio::spawn(svc.oneshot(0))
}

fn fixed(delay_ms: u64, attempts: u32) -> HedgeBuilder {
    HedgeLayer::after(Duration::from_millis(delay_ms))
        .max_attempts(attempts)
        .budget(RetryBudget::unlimited())
}

/// Scenario HG-1 (a): an original that answers before the delay is never
/// hedged.
#[tokio::test(start_paused = true)]
async fn an_answer_before_the_delay_sends_no_hedge() {
    let hand = Hand::new();
    let svc = fixed(10, 2).build().unwrap().layer(hand.service());
    let reply = send(svc);
    hand.at(5).await;
    hand.answer(0, Ok(200));
    assert_eq!(reply.await.unwrap().unwrap(), 200);
    hand.at(50).await;
    assert_eq!(hand.arrivals(), [0]);
}

/// Scenario HG-1 (b): a hedge goes at exactly 10 ms; the original answers
/// first, wins, and the hedge is cancelled.
#[tokio::test(start_paused = true)]
async fn the_original_wins_and_the_hedge_is_cancelled() {
    let hand = Hand::new();
    let layer = fixed(10, 2).build().unwrap();
    let handle = layer.handle();
    let reply = send(layer.layer(hand.service()));
    hand.at(9).await;
    assert_eq!(hand.arrivals(), [0]);
    hand.at(10).await;
    assert_eq!(hand.arrivals(), [0, 10]);
    hand.at(11).await;
    hand.answer(0, Ok(200));
    assert_eq!(reply.await.unwrap().unwrap(), 200);
    assert!(hand.cancelled(1), "the hedge's future was dropped");
    assert_eq!(handle.counts().hedges, 1);
    assert_eq!(handle.counts().won_by_hedge, 0);
}

/// Scenario HG-1 (c): the hedge answers first and wins; the original is
/// cancelled.
#[tokio::test(start_paused = true)]
async fn the_hedge_wins_and_the_original_is_cancelled() {
    let hand = Hand::new();
    let layer = fixed(10, 2).build().unwrap();
    let handle = layer.handle();
    let reply = send(layer.layer(hand.service()));
    hand.at(12).await;
    hand.answer(1, Ok(200));
    assert_eq!(reply.await.unwrap().unwrap(), 200);
    assert!(hand.cancelled(0));
    assert_eq!(handle.counts().won_by_hedge, 1);
}

/// Scenario HG-1: with 4 attempts and a 500 ms delay, 1, 2, 3 and 4 are
/// out at 1, 501, 1 001 and 1 501 ms; a zero delay sends them all at once;
/// `Duration::MAX` sends the next only when one fails, never two at once.
#[tokio::test(start_paused = true)]
async fn attempts_go_one_delay_apart() {
    let hand = Hand::new();
    let reply = send(fixed(500, 4).build().unwrap().layer(hand.service()));
    let mut out = Vec::new();
    for ms in [1, 501, 1001, 1501, 5000] {
        hand.at(ms).await;
        out.push(hand.outstanding());
    }
    assert_eq!(out, [1, 2, 3, 4, 4]);
    hand.answer(2, Ok(200));
    assert_eq!(reply.await.unwrap().unwrap(), 200);
    assert_eq!(hand.outstanding(), 0);

    let hand = Hand::new();
    let reply = send(fixed(0, 3).build().unwrap().layer(hand.service()));
    hand.at(0).await;
    assert_eq!(hand.arrivals(), [0, 0, 0]);
    hand.answer(1, Ok(200));
    assert_eq!(reply.await.unwrap().unwrap(), 200);

    let hand = Hand::new();
    let layer = HedgeLayer::after(Duration::MAX)
        .max_attempts(3)
        .budget(RetryBudget::unlimited())
        .classifier(statuses)
        .build()
        .unwrap();
    let reply = send(layer.layer(hand.service()));
    hand.at(60_000).await;
    assert_eq!(hand.outstanding(), 1);
    hand.answer(0, Ok(503));
    hand.at(60_100).await;
    assert_eq!((hand.arrivals(), hand.outstanding()), (vec![0, 60_000], 1));
    hand.answer(1, Ok(200));
    assert_eq!(reply.await.unwrap().unwrap(), 200);
}

/// Scenario HG-2 (a): a request the replay rule refuses (not idempotent,
/// or a body that cannot be copied) is never hedged.
#[tokio::test(start_paused = true)]
async fn a_request_that_may_not_be_sent_twice_is_not_hedged() {
    let hand = Hand::new();
    let layer = fixed(10, 2).hedge_if(|_: &u16| false).build().unwrap();
    let reply = send(layer.layer(hand.service()));
    hand.at(1000).await;
    assert_eq!(hand.arrivals(), [0]);
    hand.answer(0, Ok(200));
    assert_eq!(reply.await.unwrap().unwrap(), 200);
}

/// Scenario HG-2 (b), (c), (d): no hedge until 10 latencies are known;
/// with 1 ms eight times and 10 ms twice, the 90th percentile hedge goes
/// at 10 ms; fast failures are not latencies and do not drag it down.
#[tokio::test(start_paused = true)]
async fn the_learned_delay_waits_for_data_and_ignores_fast_failures() {
    let hand = Hand::new();
    let layer = HedgeLayer::at_percentile(0.9)
        .min_samples(10)
        .budget(RetryBudget::unlimited())
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(hand.service());
    // (b) A slow request with no latencies known: no hedge.
    let reply = send(svc.clone());
    hand.at(1000).await;
    assert_eq!(hand.outstanding(), 1);
    hand.answer(0, Ok(200)); // 1 s: the first latency
    reply.await.unwrap().unwrap();
    assert_eq!(handle.delay(), None);
    // Nine more: 1 ms seven times, 10 ms twice; 1 s stays the largest.
    let mut now = 1000;
    for latency in [1, 1, 1, 1, 1, 1, 1, 10, 10] {
        let n = hand.arrivals().len();
        let reply = send(svc.clone());
        now += latency;
        hand.at(now).await;
        hand.answer(n, Ok(200));
        reply.await.unwrap().unwrap();
    }
    // (c) The 9th of 10 is 10 ms.
    assert_eq!(handle.delay(), Some(Duration::from_millis(10)));
    // (d) Fast failures are not recorded.
    for _ in 0..50 {
        let n = hand.arrivals().len();
        let reply = send(svc.clone());
        now += 1;
        hand.at(now).await;
        hand.answer(n, Err("refused".into()));
        // The failure makes the hedge go at once; it fails as fast.
        hand.at(now).await;
        hand.answer(n + 1, Err("refused".into()));
        reply.await.unwrap().unwrap_err();
    }
    assert_eq!(handle.delay(), Some(Duration::from_millis(10)));
    // A slow request now gets its hedge at exactly 10 ms.
    let n = hand.arrivals().len();
    let reply = send(svc.clone());
    hand.at(now + 10).await;
    assert_eq!(hand.arrivals()[n..], [now, now + 10]);
    hand.answer(n + 1, Ok(200));
    reply.await.unwrap().unwrap();
}

/// Scenario HG-3: (a) a 503 sends the next hedge at once and the one
/// after a delay later; (b) a failure while a hedge runs does not end the
/// race; (c) a 400 is final and cancels the rest; (d) with every attempt
/// failing, the failure comes only after the last.
#[tokio::test(start_paused = true)]
async fn a_failure_sends_the_next_hedge_and_only_a_final_one_ends_the_race() {
    let build = || fixed(500, 3).classifier(statuses).build().unwrap();
    // (a)
    let hand = Hand::new();
    let reply = send(build().layer(hand.service()));
    hand.at(100).await;
    hand.answer(0, Ok(503));
    hand.at(100).await;
    hand.at(600).await;
    assert_eq!(hand.arrivals(), [0, 100, 600]);
    hand.answer(2, Ok(200));
    assert_eq!(reply.await.unwrap().unwrap(), 200);

    // (b)
    let hand = Hand::new();
    let reply = send(build().layer(hand.service()));
    hand.at(550).await;
    hand.answer(0, Ok(503)); // after the hedge went at 500
    hand.at(700).await;
    assert!(!reply.is_finished());
    hand.answer(1, Ok(200));
    assert_eq!(reply.await.unwrap().unwrap(), 200);

    // (c)
    let hand = Hand::new();
    let reply = send(build().layer(hand.service()));
    hand.at(1000).await;
    assert_eq!(hand.outstanding(), 3);
    hand.answer(1, Ok(400));
    assert_eq!(reply.await.unwrap().unwrap(), 400);
    assert!(hand.cancelled(0) && hand.cancelled(2));

    // (d)
    let hand = Hand::new();
    let reply = send(build().layer(hand.service()));
    hand.at(1000).await;
    hand.answer(0, Ok(503));
    hand.answer(2, Ok(503));
    hand.at(1100).await;
    assert!(!reply.is_finished(), "one attempt is still out");
    hand.answer(1, Ok(503));
    assert_eq!(reply.await.unwrap().unwrap(), 503);
    hand.at(5000).await;
    assert_eq!(hand.arrivals().len(), 3, "no retry follows the hedges");
}

/// Hedges are paid for from the budget: with room for hedges on half the
/// requests, ten slow requests send five hedges and the budget refuses
/// the rest.
#[tokio::test(start_paused = true)]
async fn the_budget_bounds_the_hedges() {
    let hand = Hand::new();
    let layer = HedgeLayer::after(Duration::from_millis(10))
        .budget(RetryBudget::windowed(Duration::from_secs(10), 0, 0.5))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(hand.service());
    let replies: Vec<_> = (0..10).map(|_| send(svc.clone())).collect();
    hand.at(100).await;
    let counts = handle.counts();
    assert_eq!(
        (counts.requests, counts.hedges, counts.budget_refusals),
        (10, 5, 5)
    );
    for attempt in 0..hand.arrivals().len() {
        if !hand.cancelled(attempt) {
            hand.answer(attempt, Ok(200));
        }
        hand.at(100).await;
    }
    for reply in replies {
        reply.await.unwrap().unwrap();
    }
}

/// Dropping the response future cancels every attempt still out.
#[tokio::test(start_paused = true)]
async fn dropping_the_call_cancels_every_attempt() {
    let hand = Hand::new();
    let reply = send(fixed(10, 3).build().unwrap().layer(hand.service()));
    hand.at(30).await;
    assert_eq!(hand.outstanding(), 3);
    reply.abort();
    let _ = reply.await;
    assert_eq!(hand.outstanding(), 0);
}

#[test]
fn bad_settings_name_their_field() {
    let field = |builder: HedgeBuilder| builder.build().unwrap_err().field();
    assert_eq!(field(fixed(10, 1)), "max_attempts");
    assert_eq!(field(fixed(10, 11)), "max_attempts");
    assert_eq!(field(HedgeLayer::at_percentile(1.0)), "percentile");
    assert_eq!(
        field(HedgeLayer::at_percentile(0.9).min_samples(0)),
        "min_samples"
    );
    assert_eq!(
        field(HedgeLayer::at_percentile(0.9).period(Duration::ZERO)),
        "period"
    );
    let mut config = palisade::hedge::HedgeConfig::default();
    assert_eq!(
        HedgeLayer::from_config(config.clone()).unwrap_err().field(),
        "delay"
    );
    config.delay = Some(Duration::from_millis(1));
    config.percentile = Some(0.9);
    assert_eq!(
        HedgeLayer::from_config(config).unwrap_err().field(),
        "percentile"
    );
}

/// A hedge refused by a layer below (here a full bulkhead) says nothing
/// about the upstream: it neither ends the race nor sends the next hedge
/// at once, and the caller gets the first attempt's answer when it comes.
/// A refusal with nothing else out is the answer, at once.
#[tokio::test(start_paused = true)]
async fn a_hedge_refused_below_does_not_send_the_next_at_once() {
    let hand = Hand::new();
    let layer = fixed(10, 3).build().unwrap();
    let handle = layer.handle();
    let bulkhead = palisade::bulkhead::BulkheadLayer::new(1).unwrap();
    let reply = send(layer.layer(bulkhead.layer(hand.service())));
    hand.at(15).await;
    // The hedge at 10 ms was refused by the bulkhead; the next waits its
    // delay (20 ms) rather than going at once.
    assert_eq!(handle.counts().hedges, 1);
    assert_eq!(hand.arrivals(), [0]);
    hand.at(25).await;
    assert_eq!(handle.counts().hedges, 2);
    hand.answer(0, Ok(200));
    assert_eq!(reply.await.unwrap().unwrap(), 200);

    let open = palisade::circuit_breaker::CircuitBreakerLayer::builder()
        .build()
        .unwrap();
    open.handle().force_open();
    let refused = send(
        fixed(10, 3)
            .build()
            .unwrap()
            .layer(open.layer(hand.service())),
    );
    hand.at(26).await;
    assert!(refused.is_finished(), "refused at once, not after a delay");
    let err = refused.await.unwrap().unwrap_err();
    assert!(matches!(
        palisade::ErrorKind::of(&err),
        palisade::ErrorKind::CircuitOpen(_)
    ));
}

/// The tower contract: readiness is the inner service's, its error
/// included.
#[tokio::test(start_paused = true)]
async fn readiness_and_its_errors_are_the_inner_services() {
    /// Never ready: its readiness fails.
    #[derive(Clone, Debug)]
    struct Broken;
    impl Service<u16> for Broken {
        type Response = u16;
        type Error = BoxError;
        type Future = std::future::Ready<Reply>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), BoxError>> {
            std::task::Poll::Ready(Err("broken".into()))
        }
        fn call(&mut self, _: u16) -> Self::Future {
            std::future::ready(Ok(200))
        }
    }
    let mut hedged = fixed(10, 2).build().unwrap().layer(Broken);
    let err = hedged.ready().await.unwrap_err();
    assert_eq!(err.to_string(), "broken");
}

/// A hedge that wins is recorded with the first attempt it beat, as at
/// least the time that attempt had run, so hedged requests never pull the
/// learned delay under itself.
/// The first ten calls answer in 1 ms, so the delay starts at 1 ms; then
/// one call in five takes 100 ms. Were the winning hedges' own 1 ms
/// recorded, the delay would stay at 1 ms and every slow call be hedged
/// after 1 ms; with the beaten first attempts counted too, it climbs
/// toward the slow calls (past 5 ms within a thousand requests).
#[tokio::test(start_paused = true)]
async fn hedges_that_win_do_not_pull_the_learned_delay_down() {
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let layer = HedgeLayer::at_percentile(0.9)
        .budget(RetryBudget::unlimited())
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(move |_: u16| {
        let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            let slow = n >= 10 && n % 5 == 4;
            let ms = if slow { 100 } else { 1 };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<u16, BoxError>(200)
        }
    }));
    for _ in 0..10 {
        svc.clone().oneshot(0).await.unwrap();
    }
    assert_eq!(handle.delay(), Some(Duration::from_millis(1)));
    for _ in 0..1000 {
        svc.clone().oneshot(0).await.unwrap();
    }
    // Recording the hedges' own latency would hold it at exactly 1 ms.
    let delay = handle.delay().unwrap();
    assert!(delay >= Duration::from_millis(5), "{delay:?}");
    assert!(handle.counts().won_by_hedge > 0);
}

/// An outcome the classifier calls `Ignored` from the first attempt while
/// a hedge is out is final; no hedge won.
#[tokio::test(start_paused = true)]
async fn an_ignored_answer_is_final_and_no_hedge_won() {
    let hand = Hand::new();
    let layer = fixed(10, 2).classifier(statuses).build().unwrap();
    let handle = layer.handle();
    let reply = send(layer.layer(hand.service()));
    hand.at(20).await;
    hand.answer(0, Ok(404));
    assert_eq!(reply.await.unwrap().unwrap(), 404);
    assert!(hand.cancelled(1));
    assert_eq!(handle.counts().won_by_hedge, 0);
}

/// A refusal that comes after a real failure does not replace it: the
/// first attempt's 503 opens the breaker below, the hedge it sends at once
/// is refused by that breaker, and the caller gets the 503, the upstream's
/// answer.
#[tokio::test(start_paused = true)]
async fn a_refusal_does_not_replace_a_real_failure() {
    let hand = Hand::new();
    let layer = fixed(10, 2).classifier(statuses).build().unwrap();
    let breaker = palisade::circuit_breaker::CircuitBreakerLayer::builder()
        .classifier(statuses)
        .count_window(1)
        .minimum_calls(1)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let reply = send(layer.layer(breaker.layer(hand.service())));
    hand.at(5).await;
    hand.answer(0, Ok(503));
    assert_eq!(
        reply.await.unwrap().unwrap(),
        503,
        "the upstream's failure, not a refusal"
    );
    assert_eq!(handle.state(), palisade::circuit_breaker::State::Open);
    assert_eq!(hand.arrivals(), [0], "the hedge never reached the upstream");
}

/// The caller's answer, which must have come by now: a request still
/// waiting fails the test instead of hanging it.
async fn answered(reply: JoinHandle<Reply>) -> Reply {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(reply.is_finished(), "the caller is still waiting");
    reply.await.unwrap()
}

/// `statuses`, with a server's pushback on every 503: `Duration::MAX` is
/// "do not retry", as `Classify::retry_after` reports it; errors carry
/// none. A closure classifier has no `retry_after`, hence the struct.
#[derive(Clone, Copy)]
struct PushedBack(Option<Duration>);

impl Classify<u16, BoxError> for PushedBack {
    fn classify(&self, result: &Reply) -> Outcome {
        statuses(result)
    }

    fn retry_after(&self, result: &Reply) -> Option<Duration> {
        // The hedge asks only about failures (the pushback may cost more
        // than the classification); a panic here fails the test.
        assert_eq!(statuses(result), Outcome::Failure, "asked of {result:?}");
        match result {
            Ok(503) => self.0,
            _ => None,
        }
    }
}

const DO_NOT_RETRY: Option<Duration> = Some(Duration::MAX);

fn pushed_back(delay_ms: u64, attempts: u32, pushback: Option<Duration>) -> HedgeLayer<PushedBack> {
    fixed(delay_ms, attempts)
        .classifier(PushedBack(pushback))
        .build()
        .unwrap()
}

/// Scenario HG-3, A6 pushback (a): a failure whose pushback says not to
/// retry sends no more hedges; the attempts already out run on, and the
/// first one still wins when it answers. (b) With every attempt out
/// failed, the caller gets the last failure, at once.
#[tokio::test(start_paused = true)]
async fn a_do_not_retry_pushback_stops_hedging_but_not_the_attempts_out() {
    // (a)
    let hand = Hand::new();
    let layer = pushed_back(10, 3, DO_NOT_RETRY);
    let handle = layer.handle();
    let reply = send(layer.layer(hand.service()));
    hand.at(15).await;
    hand.answer(1, Ok(503)); // the hedge sent at 10 ms
    // Without the pushback, the third attempt would go at once, at 15 ms;
    // by the delay alone, at 20 ms.
    hand.at(500).await;
    assert_eq!(hand.arrivals(), [0, 10]);
    assert!(!reply.is_finished(), "the first attempt is still out");
    hand.answer(0, Ok(200));
    assert_eq!(answered(reply).await.unwrap(), 200);
    assert_eq!(handle.counts().hedges, 1);

    // (b)
    let hand = Hand::new();
    let reply = send(pushed_back(10, 3, DO_NOT_RETRY).layer(hand.service()));
    hand.at(15).await;
    hand.answer(0, Ok(503));
    hand.at(500).await;
    assert_eq!(hand.arrivals(), [0, 10]);
    hand.answer(1, Err("refused".into()));
    let err = answered(reply).await.unwrap_err();
    assert_eq!(err.to_string(), "refused", "the last failure");
    assert_eq!(hand.arrivals(), [0, 10]);
}

/// Scenario HG-3, A6 pushback: a failure's pushback delay holds the next
/// hedge until exactly that long after the failure: not at once, and
/// neither at the hedging delay nor one delay after the last attempt; the
/// hedge after it goes back to the hedging delay. (a) The pushback is
/// longer than the delay, and the request waits for it with no attempt
/// out; (b) it is shorter than what was left of the delay.
#[tokio::test(start_paused = true)]
async fn a_pushback_delay_holds_the_next_hedge_then_the_delay_resumes() {
    // (a)
    let hand = Hand::new();
    let layer = pushed_back(100, 4, Some(Duration::from_millis(250)));
    let reply = send(layer.layer(hand.service()));
    hand.at(10).await;
    hand.answer(0, Ok(503));
    hand.at(259).await;
    assert_eq!(hand.arrivals(), [0], "not at once, nor at the 100 ms delay");
    assert!(!reply.is_finished(), "the request waits for its hedge");
    hand.at(260).await;
    assert_eq!(hand.arrivals(), [0, 260]);
    hand.at(359).await;
    assert_eq!(hand.arrivals(), [0, 260]);
    hand.at(360).await;
    assert_eq!(hand.arrivals(), [0, 260, 360], "the delay again");
    hand.answer(2, Ok(200));
    assert_eq!(answered(reply).await.unwrap(), 200);

    // (b)
    let hand = Hand::new();
    let layer = pushed_back(100, 4, Some(Duration::from_millis(20)));
    let reply = send(layer.layer(hand.service()));
    hand.at(110).await;
    hand.answer(1, Ok(503)); // the hedge sent at 100 ms
    hand.at(129).await;
    assert_eq!(hand.arrivals(), [0, 100], "not at once");
    hand.at(130).await;
    assert_eq!(hand.arrivals(), [0, 100, 130], "not at 200 ms");
    hand.at(229).await;
    assert_eq!(hand.arrivals(), [0, 100, 130]);
    hand.at(230).await;
    assert_eq!(hand.arrivals(), [0, 100, 130, 230]);
    hand.answer(0, Ok(200));
    assert_eq!(answered(reply).await.unwrap(), 200);
}

/// Scenario HG-3, A6 pushback: a failure without pushback still sends the
/// next hedge at once, and the one after a delay later, under a
/// classifier that reports pushback (here an error, and a 503 carrying
/// none).
#[tokio::test(start_paused = true)]
async fn a_failure_without_pushback_still_sends_the_next_hedge_at_once() {
    for (layer, failure) in [
        (pushed_back(500, 3, DO_NOT_RETRY), Err("refused".into())),
        (pushed_back(500, 3, None), Ok(503)),
    ] {
        let hand = Hand::new();
        let reply = send(layer.layer(hand.service()));
        hand.at(100).await;
        hand.answer(0, failure);
        hand.at(100).await;
        hand.at(600).await;
        assert_eq!(hand.arrivals(), [0, 100, 600]);
        hand.answer(2, Ok(200));
        assert_eq!(answered(reply).await.unwrap(), 200);
    }
}

/// A budget of one hedge a second and nothing more: a hedge given back
/// shows as the next request's hedge being paid for.
fn one_hedge_a_second() -> RetryBudget {
    RetryBudget::windowed(Duration::from_secs(1), 1, 0.0)
}

/// An inner service whose readiness fails while `failing` is set.
#[derive(Clone)]
struct Unready<S> {
    inner: S,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl<S: Service<u16, Error = BoxError>> Service<u16> for Unready<S> {
    type Response = S::Response;
    type Error = BoxError;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return std::task::Poll::Ready(Err("not ready".into()));
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: u16) -> S::Future {
        self.inner.call(request)
    }
}

/// A request's hedge, paid for at 10 ms from a budget of one hedge a
/// second, waits for the service's readiness (a limit of one call at a
/// time, which the first attempt holds) until the first attempt answers
/// `first` at 20 ms. The payment must come back: the next request's hedge
/// is paid for at 30 ms without a refusal. No hedge reaches the service.
async fn a_waiting_hedge_is_given_back_when_the_first_answers<C>(layer: HedgeLayer<C>, first: u16)
where
    C: Classify<u16, BoxError> + Clone + Send + Sync + 'static,
{
    let hand = Hand::new();
    let handle = layer.handle();
    let one_at_a_time = tower::limit::ConcurrencyLimitLayer::new(1);
    let svc = layer.layer(one_at_a_time.layer(hand.service()));
    let reply = send(svc.clone());
    hand.at(20).await; // paid at 10 ms
    hand.answer(0, Ok(first));
    assert_eq!(answered(reply).await.unwrap(), first);
    let reply = send(svc.clone());
    hand.at(40).await; // paid at 30 ms, if it was given back
    assert_eq!(handle.counts().budget_refusals, 0);
    hand.answer(1, Ok(200));
    assert_eq!(answered(reply).await.unwrap(), 200);
    assert_eq!(hand.arrivals(), [0, 20], "no hedge went");
}

/// Scenario HG-3 and the budget: a hedge is paid for when it is due,
/// before it waits for the service's readiness. One paid for that never
/// goes is given back: (a) the first attempt wins while it waits (here
/// for a limit of one call at a time, which the first attempt holds);
/// (b) the service's readiness fails.
#[tokio::test(start_paused = true)]
async fn a_hedge_paid_for_that_never_goes_is_given_back() {
    // (a)
    let layer = fixed(10, 2).budget(one_hedge_a_second()).build().unwrap();
    a_waiting_hedge_is_given_back_when_the_first_answers(layer, 200).await;

    // (b)
    let hand = Hand::new();
    let layer = fixed(10, 2).budget(one_hedge_a_second()).build().unwrap();
    let handle = layer.handle();
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let svc = layer.layer(Unready {
        inner: hand.service(),
        failing: failing.clone(),
    });
    let reply = send(svc.clone());
    hand.at(5).await;
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    hand.at(15).await; // paid at 10 ms; the service was not ready
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    hand.answer(0, Ok(200));
    assert_eq!(answered(reply).await.unwrap(), 200);
    let reply = send(svc.clone());
    hand.at(25).await;
    assert_eq!(hand.arrivals(), [0, 15, 25], "paid with what came back");
    assert_eq!(handle.counts().budget_refusals, 0);
    hand.answer(2, Ok(200));
    assert_eq!(answered(reply).await.unwrap(), 200);
}

/// A hedge paid for that never goes because the caller dropped the request
/// (as a timeout outside the hedge does) is given back too: (a) while it
/// waits for the service's readiness (a limit of one call at a time, which
/// the first attempt holds); (b) while a pushback holds it.
#[tokio::test(start_paused = true)]
async fn a_hedge_paid_for_is_given_back_when_the_request_is_dropped() {
    let one_at_a_time = tower::limit::ConcurrencyLimitLayer::new(1);
    for pushback in [None, Some(Duration::from_millis(500))] {
        let hand = Hand::new();
        let layer = fixed(10, 3)
            .classifier(PushedBack(pushback))
            .budget(one_hedge_a_second())
            .build()
            .unwrap();
        let handle = layer.handle();
        let svc = layer.layer(one_at_a_time.layer(hand.service()));
        let reply = send(svc.clone());
        hand.at(20).await; // paid at 10 ms, waiting for the first attempt
        if pushback.is_some() {
            // The 503 holds the paid hedge 500 ms.
            hand.answer(0, Ok(503));
            hand.at(30).await;
        }
        reply.abort();
        hand.at(40).await;
        let reply = send(svc.clone());
        hand.at(60).await; // paid at 50 ms, if it was given back
        assert_eq!(handle.counts().budget_refusals, 0, "{pushback:?}");
        let last = hand.arrivals().len() - 1;
        hand.answer(last, Ok(200));
        assert_eq!(answered(reply).await.unwrap(), 200);
        assert_eq!(handle.counts().hedges, 0, "no hedge went");
    }
}

/// Scenario HG-3, A6 pushback, and the budget: (a) a hedge paid for and
/// waiting for the service's readiness (a limit of one call at a time,
/// which the first attempt holds) is given back when a pushback says not
/// to retry; (b) one a pushback holds keeps its payment and goes without
/// paying twice, and the budget it spent is then gone.
#[tokio::test(start_paused = true)]
async fn a_pushback_gives_back_or_keeps_the_hedges_payment() {
    let build = |pushback| {
        fixed(10, 2)
            .classifier(PushedBack(pushback))
            .budget(one_hedge_a_second())
            .build()
            .unwrap()
    };
    let one_at_a_time = tower::limit::ConcurrencyLimitLayer::new(1);
    // (a)
    a_waiting_hedge_is_given_back_when_the_first_answers(build(DO_NOT_RETRY), 503).await;

    // (b) Paid at 10 ms; the 503 at 20 ms holds it 50 ms.
    let hand = Hand::new();
    let layer = build(Some(Duration::from_millis(50)));
    let handle = layer.handle();
    let svc = layer.layer(one_at_a_time.layer(hand.service()));
    let reply = send(svc.clone());
    hand.at(20).await;
    hand.answer(0, Ok(503));
    hand.at(70).await;
    assert_eq!(hand.arrivals(), [0, 70]);
    assert_eq!(
        (handle.counts().hedges, handle.counts().budget_refusals),
        (1, 0),
        "sent on its first payment"
    );
    hand.answer(1, Ok(200));
    assert_eq!(answered(reply).await.unwrap(), 200);
    let reply = send(svc.clone());
    hand.at(90).await;
    assert_eq!(handle.counts().budget_refusals, 1, "the hedge spent it");
    hand.answer(2, Ok(200));
    assert_eq!(answered(reply).await.unwrap(), 200);
}

/// Scenario HG-3, A6 pushback, over gRPC: a hedge's `UNAVAILABLE` with
/// `grpc-retry-pushback-ms: -1` ends hedging for the call; the first
/// attempt, still out, answers `OK` and wins.
#[cfg(feature = "http")]
#[tokio::test(start_paused = true)]
async fn grpc_pushback_that_says_do_not_retry_stops_hedging() {
    use http::Response;
    use palisade::http::GrpcClassifier;
    use std::sync::atomic::{AtomicU32, Ordering};

    let attempts = Arc::new(AtomicU32::new(0));
    let counted = attempts.clone();
    let layer = HedgeLayer::after(Duration::from_millis(10))
        .max_attempts(3)
        .budget(RetryBudget::unlimited())
        .classifier(GrpcClassifier::new())
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(move |_: u16| {
        let attempt = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            let response = Response::builder();
            let response = if attempt == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                response.header("grpc-status", "0")
            } else {
                response
                    .header("grpc-status", "14")
                    .header("grpc-retry-pushback-ms", "-1")
            };
            Ok::<_, BoxError>(response.body(()).unwrap())
        }
    }));
    let started = Instant::now();
    let response = svc.oneshot(0).await.unwrap();
    assert_eq!(response.headers()["grpc-status"], "0");
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    // Without the pushback, the 14 would have sent a third attempt at
    // once, and that one a fourth... up to three.
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
}

/// A request answered before the delay clones nothing below the layer; a
/// hedged one clones the service once, for all its hedges (a clone moves
/// the reference count of every `Arc` in the stack below, on cache lines
/// all threads share).
#[tokio::test(start_paused = true)]
async fn only_a_hedged_request_clones_the_service() {
    let hand = Hand::new();
    let counted = CountsClones::new(hand.service());
    let clones = counted.counter();
    let mut svc = fixed(100, 3).build().unwrap().layer(counted);
    let made = clones();
    let count = || clones() - made;

    let quick = tokio::spawn(svc.ready().await.unwrap().call(0));
    hand.at(10).await;
    hand.answer(0, Ok(200));
    assert_eq!(quick.await.unwrap().unwrap(), 200);
    assert_eq!(count(), 0, "not hedged, no clone");

    let slow = tokio::spawn(svc.ready().await.unwrap().call(0));
    hand.at(230).await;
    // The first request at 0, the second at 10 and its hedges after it.
    assert_eq!(hand.arrivals(), [0, 10, 110, 210], "two hedges went");
    hand.answer(3, Ok(200));
    assert_eq!(slow.await.unwrap().unwrap(), 200);
    assert_eq!(count(), 1, "one clone for the request's two hedges");
}
