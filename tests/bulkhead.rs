//! The bulkhead layer, under tokio's paused clock.

mod support;

use std::task::Poll;
use std::time::Duration;

use palisade::ErrorKind;
use palisade::bulkhead::{Bulkhead, BulkheadLayer, Handle, ResponseFuture};
use support::{Answer, Probe, ProbeError, Readiness, answered, bulkhead_full};
use tokio::time::Instant;
use tokio_test::task;
use tower::{Layer, Service, ServiceExt};

type ProbeFuture = <Probe as Service<u64>>::Future;

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn fail_fast(max: usize, probe: &Probe) -> (Bulkhead<Probe>, Handle) {
    let layer = BulkheadLayer::builder()
        .name("db")
        .max_concurrent(max)
        .build()
        .unwrap();
    (layer.layer(probe.clone()), layer.handle())
}

fn waiting(max: usize, max_wait: Duration, probe: &Probe) -> (Bulkhead<Probe>, Handle) {
    let layer = BulkheadLayer::builder()
        .name("db")
        .max_concurrent(max)
        .max_wait(max_wait)
        .build()
        .unwrap();
    (layer.layer(probe.clone()), layer.handle())
}

/// Readies `svc` and calls it; the response future is wrapped in a mock task
/// so the test decides when it is polled.
async fn start(
    svc: &mut Bulkhead<Probe>,
    request: u64,
) -> task::Spawn<ResponseFuture<ProbeFuture>> {
    let mut call = task::spawn(svc.ready().await.unwrap().call(request));
    assert!(call.poll().is_pending() || call.is_woken());
    call
}

#[tokio::test(start_paused = true)]
async fn honours_the_tower_contract() {
    support::check_tower_contract(|probe| fail_fast(8, &probe).0).await;
    support::check_tower_contract(|probe| waiting(8, ms(100), &probe).0).await;
}

// scenario BH-1
#[tokio::test(start_paused = true)]
async fn fail_fast_admits_up_to_the_limit_and_refuses_the_rest() {
    let probe = Probe::new(Answer::Gated);
    let (mut svc, handle) = fail_fast(2, &probe);
    let mut first = start(&mut svc, 1).await;
    let mut second = start(&mut svc, 2).await;
    assert_eq!((handle.in_flight(), handle.available()), (2, 0));

    let polls = probe.ready_polls();
    let err = svc.ready().await.unwrap().call(3).await.unwrap_err();
    let rejection = bulkhead_full(&err);
    assert_eq!(rejection.name(), "db");
    assert_eq!(rejection.max_concurrent(), 2);
    assert_eq!(rejection.waited(), Duration::ZERO);
    assert!(ErrorKind::of(&err).is_rejected_before_call());
    assert_eq!(
        err.to_string(),
        "bulkhead `db` is full (2 calls in flight), so the call was not sent"
    );
    assert_eq!(
        probe.ready_polls(),
        polls,
        "a refusal does not poll the inner service"
    );
    assert_eq!(probe.calls(), 2);

    probe.release(1);
    assert_eq!(answered(first.poll()), 1);
    assert_eq!(handle.available(), 1);
    probe.release(1);
    assert_eq!(answered(second.poll()), 2);
    assert_eq!(handle.available(), 2);

    probe.set_answer(Answer::Now);
    assert_eq!(svc.ready().await.unwrap().call(4).await.unwrap(), 4);
    assert_eq!(handle.rejected(), 1);
    assert_eq!(handle.in_flight(), 0);
}

// scenario BH-1 (variant: palisade refuses a bulkhead with no slots) and open decision 7
#[test]
fn nonsense_configuration_is_a_config_error() {
    let err = BulkheadLayer::new(0).unwrap_err();
    assert_eq!((err.layer(), err.field()), ("bulkhead", "max_concurrent"));
    assert_eq!(
        err.to_string(),
        "invalid bulkhead configuration: `max_concurrent` must be set to at least 1, got 0 \
         (a bulkhead with no slots refuses every call)"
    );
    // A builder never given a limit says it must be set.
    assert!(
        BulkheadLayer::builder()
            .build()
            .unwrap_err()
            .rule()
            .starts_with("must be set")
    );
    let err = BulkheadLayer::new(usize::MAX).unwrap_err();
    assert_eq!(err.field(), "max_concurrent");
    assert!(err.rule().starts_with("must be at most"), "{err}");
}

// scenario BH-2
#[tokio::test(start_paused = true)]
async fn a_bounded_wait_fails_at_exactly_max_wait() {
    let probe = Probe::new(Answer::After(ms(200)));
    let (mut svc, handle) = waiting(1, ms(50), &probe);
    let first = tokio::spawn(svc.clone().oneshot(1));
    tokio::time::sleep(ms(10)).await;

    let start = Instant::now();
    let mut second = svc.clone();
    let mut wait = task::spawn(second.ready());
    assert!(wait.poll().is_pending());
    assert_eq!(handle.waiting(), 1);
    drop(wait);
    // The wait belongs to the service, not to one `ready()` future: it keeps
    // its place in the queue and its deadline.
    assert_eq!(handle.waiting(), 1);

    let err = second.ready().await.unwrap().call(2).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(50));
    assert_eq!(handle.waiting(), 0);
    assert_eq!(bulkhead_full(&err).waited(), ms(50));
    assert!(
        err.to_string().ends_with("no slot freed up within 50ms"),
        "{err}"
    );

    assert_eq!(
        first.await.unwrap().unwrap(),
        1,
        "the first call is unharmed"
    );
    assert_eq!(svc.ready().await.unwrap().call(3).await.unwrap(), 3);
    assert_eq!(handle.rejected(), 1);
    assert_eq!(probe.seen(), vec![1, 3]);
}

// scenario BH-2
#[tokio::test(start_paused = true)]
async fn a_waiter_is_admitted_as_soon_as_a_slot_frees() {
    let probe = Probe::new(Answer::After(ms(30)));
    let (svc, handle) = waiting(1, ms(50), &probe);
    let first = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    let start = Instant::now();
    assert_eq!(svc.clone().oneshot(2).await.unwrap(), 2);
    // Admitted when the first call finished at 30 ms, then ran for 30 ms.
    assert_eq!(start.elapsed(), ms(60));
    first.await.unwrap().unwrap();
    assert_eq!(handle.rejected(), 0);
}

// scenario BH-2
#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_consumes_nothing() {
    let probe = Probe::new(Answer::Gated);
    let (mut svc, handle) = waiting(1, Duration::from_secs(2), &probe);
    let mut first = start(&mut svc, 1).await;

    let mut waiter = svc.clone();
    let outcome = tokio::time::timeout(ms(100), waiter.ready()).await;
    assert!(outcome.is_err(), "the caller gave up well before 2 s");
    drop(waiter);
    assert_eq!(handle.waiting(), 0);

    probe.release(1);
    assert_eq!(answered(first.poll()), 1);
    assert_eq!(handle.available(), 1, "the cancelled waiter took no slot");
    assert_eq!(handle.rejected(), 0, "a cancellation is not a rejection");
}

// scenario BH-3
#[tokio::test(start_paused = true)]
async fn the_slot_comes_back_on_every_path() {
    let probe = Probe::new(Answer::Fail);
    let (mut svc, handle) = fail_fast(1, &probe);

    // A call that fails.
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(err.downcast_ref::<ProbeError>().is_some());
    assert_eq!(handle.available(), 1);

    // A response future dropped before it completes.
    probe.set_answer(Answer::Gated);
    let call = start(&mut svc, 2).await;
    assert_eq!(handle.available(), 0);
    drop(call);
    assert_eq!(handle.available(), 1);
    assert_eq!(probe.dropped_unfinished(), 1);

    // A service dropped while holding a reserved slot it never used.
    let mut reserved = svc.clone();
    reserved.ready().await.unwrap();
    assert_eq!(handle.available(), 0);
    drop(reserved);
    assert_eq!(handle.available(), 1);

    // A panic inside `call`, and inside the response future.
    for answer in [Answer::PanicInCall, Answer::PanicInFuture] {
        probe.set_answer(answer);
        let svc = svc.clone();
        let outcome = tokio::spawn(svc.oneshot(3)).await;
        assert!(outcome.unwrap_err().is_panic());
        assert_eq!(handle.available(), 1, "{answer:?}");
    }

    // Mixed outcomes leave every slot free.
    let (svc, handle) = fail_fast(4, &probe);
    let mut calls = Vec::new();
    for i in 0..4 {
        probe.set_answer(if i % 2 == 0 {
            Answer::Now
        } else {
            Answer::Fail
        });
        calls.push(svc.clone().oneshot(i));
    }
    for call in calls {
        let _ = call.await;
    }
    assert_eq!((handle.available(), handle.in_flight()), (4, 0));
}

// scenario TC-2
#[tokio::test(start_paused = true)]
async fn a_readiness_error_gives_the_reserved_slot_back() {
    let probe = Probe::new(Answer::Now);
    probe.set_readiness(Readiness::Fail);
    let (mut svc, handle) = fail_fast(1, &probe);
    let err = svc.ready().await.err().unwrap();
    assert!(err.downcast_ref::<ProbeError>().is_some());
    assert_eq!(handle.available(), 1);
}

// scenario BH-2: one service, one wait after another
#[tokio::test(start_paused = true)]
async fn a_service_waits_again_after_each_wait() {
    let probe = Probe::new(Answer::After(ms(30)));
    let (mut svc, handle) = waiting(1, ms(100), &probe);
    for round in 0..3 {
        let holder = tokio::spawn(svc.clone().oneshot(100 + round));
        tokio::task::yield_now().await;
        let start = Instant::now();
        assert_eq!(svc.ready().await.unwrap().call(round).await.unwrap(), round);
        assert_eq!(
            start.elapsed(),
            ms(60),
            "admitted at 30 ms, answered at 60 ms"
        );
        holder.await.unwrap().unwrap();
    }
    assert_eq!(handle.rejected(), 0);
}

// scenario BH-2: a rejection does not stick to the service
#[tokio::test(start_paused = true)]
async fn after_a_rejection_the_next_call_waits_the_full_max_wait_again() {
    let probe = Probe::new(Answer::Gated);
    let (mut svc, handle) = waiting(1, ms(50), &probe);
    let _held = start(&mut svc.clone(), 1).await;
    for _ in 0..2 {
        let start = Instant::now();
        let err = svc.ready().await.unwrap().call(2).await.unwrap_err();
        bulkhead_full(&err);
        assert_eq!(start.elapsed(), ms(50));
    }
    assert_eq!(handle.rejected(), 2);
}

// scenario BH-4
#[tokio::test(start_paused = true)]
async fn waiters_are_served_first_come_first_served() {
    let probe = Probe::new(Answer::After(ms(50)));
    let (svc, handle) = waiting(1, Duration::from_secs(1), &probe);
    let mut calls = Vec::new();
    for i in 0..5 {
        calls.push(tokio::spawn(svc.clone().oneshot(i)));
        tokio::time::sleep(ms(5)).await;
    }
    assert_eq!(handle.waiting(), 4);
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(probe.seen(), vec![0, 1, 2, 3, 4]);
    assert_eq!(probe.max_in_flight(), 1);
}

// scenario BH-6: the third caller waits, and is woken when a response completes
#[tokio::test(start_paused = true)]
async fn a_waiter_is_woken_when_a_response_completes() {
    let probe = Probe::new(Answer::Gated);
    let (mut svc, _handle) = waiting(2, Duration::from_secs(60), &probe);
    let mut one = start(&mut svc, 1).await;
    let mut two = start(&mut svc, 2).await;
    assert_eq!(probe.calls(), 2);

    let mut third = svc.clone();
    let mut ready = task::spawn(third.ready());
    assert!(ready.poll().is_pending());
    assert!(!ready.is_woken());
    probe.release(1);
    assert!(
        !ready.is_woken(),
        "the slot is held until the response completes"
    );
    assert_eq!(answered(one.poll()), 1);
    assert!(ready.is_woken());
    assert!(ready.poll().is_ready());
    drop(ready);
    let mut three = task::spawn(third.call(3));
    assert!(three.poll().is_pending());
    probe.release(2);
    assert_eq!(answered(two.poll()), 2);
    assert_eq!(answered(three.poll()), 3);
}

// scenario BH-6: clones, and dropping a readied clone
#[tokio::test(start_paused = true)]
async fn dropping_a_readied_clone_wakes_the_next() {
    let probe = Probe::new(Answer::Gated);
    let (s1, _) = waiting(1, Duration::from_secs(60), &probe);
    let mut s1 = s1;
    let mut s2 = s1.clone();
    s1.ready().await.unwrap();
    let mut r2 = task::spawn(s2.ready());
    assert!(r2.poll().is_pending());
    drop(s1);
    assert!(r2.is_woken());
    assert!(r2.poll().is_ready());
}

// scenario BH-6: a wake-up is handed on, not lost, and not broadcast
#[tokio::test(start_paused = true)]
async fn a_wake_up_is_handed_on_not_broadcast() {
    let probe = Probe::new(Answer::Now);
    let (mut s1, handle) = waiting(1, Duration::from_secs(60), &probe);
    let mut s2 = s1.clone();
    let mut s3 = s1.clone();
    s1.ready().await.unwrap();

    let mut r2 = task::spawn(async move {
        std::future::poll_fn(|cx| s2.poll_ready(cx)).await.unwrap();
        s2
    });
    let mut r3 = task::spawn(std::future::poll_fn(|cx| s3.poll_ready(cx)));
    assert!(r2.poll().is_pending() && r3.poll().is_pending());
    assert_eq!(handle.waiting(), 2);

    drop(s1);
    assert!(r2.is_woken());
    assert!(!r3.is_woken(), "only the first waiter is woken");
    drop(r2); // S2 is dropped holding the slot it was handed, without being polled again
    assert!(r3.is_woken(), "the wake-up is handed on");
    assert!(r3.poll().is_ready());
    assert_eq!(handle.waiting(), 0);
}

// scenario TC-3
#[tokio::test(start_paused = true)]
async fn every_service_one_layer_builds_shares_the_slots() {
    let probe = Probe::new(Answer::Gated);
    let layer = BulkheadLayer::new(2).unwrap();
    let mut a = layer.layer(probe.clone());
    let mut b = layer.layer(probe.clone()).clone();
    let _one = start(&mut a, 1).await;
    let _two = start(&mut b, 2).await;
    let err = a.clone().oneshot(3).await.unwrap_err();
    bulkhead_full(&err);
    assert_eq!(layer.handle().in_flight(), 2);
    assert_eq!(a.handle().rejected(), 1);

    // A separate layer value is a separate set of slots.
    let other = BulkheadLayer::new(2).unwrap();
    let mut c = other.layer(probe.clone());
    let _three = start(&mut c, 3).await;
    assert_eq!(other.handle().in_flight(), 1);
}

// scenario TC-3: a clone that is never called holds no slot
#[tokio::test(start_paused = true)]
async fn an_idle_clone_holds_no_slot() {
    let probe = Probe::new(Answer::Now);
    let (mut svc, handle) = fail_fast(1, &probe);
    svc.ready().await.unwrap();
    let clone = svc.clone();
    assert_eq!(
        handle.in_flight(),
        1,
        "only the readied service holds a slot"
    );
    drop(svc);
    assert_eq!(handle.in_flight(), 0);
    drop(clone);
}

// scenario TC-4
#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_stays_ready_and_fails_in_the_call() {
    let probe = Probe::new(Answer::Gated);
    let (mut svc, _) = fail_fast(1, &probe);
    let _held = start(&mut svc, 1).await;
    probe.set_readiness(Readiness::Pending);
    let polls = probe.ready_polls();

    let mut other = svc.clone();
    let mut ready = task::spawn(other.ready());
    assert!(ready.poll().is_ready(), "readiness reports Ready when full");
    drop(ready);
    let mut call = task::spawn(other.call(2));
    match call.poll() {
        Poll::Ready(Err(err)) => {
            bulkhead_full(&err);
        }
        other => panic!("expected an immediate BulkheadFull, got {other:?}"),
    }
    assert_eq!(
        probe.ready_polls(),
        polls,
        "the pending inner was not polled"
    );
}

#[tokio::test(start_paused = true)]
async fn polling_again_after_a_refusal_takes_a_slot_that_freed_up() {
    let probe = Probe::new(Answer::Gated);
    let (mut svc, handle) = fail_fast(1, &probe);
    let mut held = start(&mut svc, 1).await;
    let mut other = svc.clone();
    other.ready().await.unwrap(); // refused: the slot is taken
    probe.release(1);
    assert_eq!(answered(held.poll()), 1);
    other.ready().await.unwrap(); // a fresh look finds the free slot
    probe.set_answer(Answer::Now);
    assert_eq!(other.call(2).await.unwrap(), 2);
    assert_eq!(handle.rejected(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_call_without_readiness_is_an_error_not_a_panic() {
    let probe = Probe::new(Answer::Now);
    let (mut svc, handle) = fail_fast(1, &probe);
    let err = svc.call(1).await.unwrap_err();
    let ErrorKind::NotReady(e) = ErrorKind::of(&err) else {
        panic!("expected NotReady, got {err}");
    };
    assert_eq!((e.layer(), e.name()), ("bulkhead", "db"));
    assert!(err.to_string().contains("bug in the caller"), "{err}");
    assert_eq!(probe.calls(), 0);
    assert_eq!(handle.available(), 1);
    assert_eq!(handle.rejected(), 0, "not a refusal");
    // The service is still usable the right way.
    assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_rejection_behind_a_buffer_does_not_poison_it() {
    let probe = Probe::new(Answer::Gated);
    let (svc, handle) = fail_fast(1, &probe);
    let buffer = tower::buffer::Buffer::new(svc, 4);
    let held = tokio::spawn(buffer.clone().oneshot(1));
    tokio::task::yield_now().await;
    let err = buffer.clone().oneshot(2).await.unwrap_err();
    bulkhead_full(&err);
    probe.release(1);
    assert_eq!(held.await.unwrap().unwrap(), 1);
    probe.set_answer(Answer::Now);
    assert_eq!(buffer.clone().oneshot(3).await.unwrap(), 3);
    assert_eq!(handle.rejected(), 1);
}

#[test]
fn the_handle_reports_the_configuration() {
    let layer = BulkheadLayer::builder()
        .name(String::from("reports"))
        .max_concurrent(3)
        .max_wait(ms(20))
        .build()
        .unwrap();
    let handle = layer.handle();
    assert_eq!(handle.name(), "reports");
    assert_eq!(handle.max_concurrent(), 3);
    assert_eq!(handle.max_wait(), ms(20));
    assert_eq!(
        (
            handle.in_flight(),
            handle.available(),
            handle.waiting(),
            handle.rejected()
        ),
        (0, 3, 0, 0)
    );
    let debug = format!("{handle:?}");
    assert!(
        debug.contains("reports") && debug.contains("max_concurrent: 3"),
        "{debug}"
    );
}

#[cfg(feature = "serde")]
#[test]
fn configuration_loads_from_json() {
    use palisade::bulkhead::BulkheadConfig;

    let config: BulkheadConfig =
        serde_json::from_str(r#"{ "name": "db", "max_concurrent": 16, "max_wait": "50ms" }"#)
            .unwrap();
    assert_eq!(config.max_wait, ms(50));
    let layer = BulkheadLayer::from_config(config).unwrap();
    assert_eq!(layer.handle().name(), "db");

    let config: BulkheadConfig = serde_json::from_str(r#"{ "max_concurrent": 4 }"#).unwrap();
    assert_eq!(config, BulkheadConfig::new(4));

    let config: BulkheadConfig = serde_json::from_str(r#"{ "max_concurrent": 0 }"#).unwrap();
    assert_eq!(
        BulkheadLayer::from_config(config).unwrap_err().field(),
        "max_concurrent"
    );
    assert!(serde_json::from_str::<BulkheadConfig>(r#"{ "max_concurrent": -1 }"#).is_err());
}
