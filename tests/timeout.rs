//! The timeout layer, under tokio's paused clock.

mod support;

use std::time::Duration;

use palisade::timeout::{Timeout, TimeoutLayer};
use palisade::{BoxError, ErrorKind};
use support::{Answer, Probe, ProbeError, Readiness};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn timeout(limit: Duration, probe: Probe) -> Timeout<Probe> {
    TimeoutLayer::new(limit).unwrap().layer(probe)
}

/// A 5 s call timeout that also bounds readiness to 1 s.
fn ready_bounded(probe: &Probe) -> Timeout<Probe> {
    TimeoutLayer::builder()
        .timeout(secs(5))
        .ready_timeout(secs(1))
        .build()
        .unwrap()
        .layer(probe.clone())
}

fn elapsed(err: &BoxError) -> &palisade::error::Elapsed {
    match ErrorKind::of(err) {
        ErrorKind::Elapsed(e) => e,
        other => panic!("expected Elapsed, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn honours_the_tower_contract() {
    support::check_tower_contract(|probe| timeout(secs(1), probe)).await;
    support::check_tower_contract(|probe| {
        TimeoutLayer::builder()
            .timeout(secs(1))
            .ready_timeout(secs(1))
            .build()
            .unwrap()
            .layer(probe)
    })
    .await;
}

// scenario TO-1
#[tokio::test(start_paused = true)]
async fn a_slow_call_fails_at_exactly_the_limit_naming_it() {
    let probe = Probe::new(Answer::After(secs(4)));
    let svc = TimeoutLayer::builder()
        .name("search")
        .timeout(secs(2))
        .build()
        .unwrap()
        .layer(probe.clone());
    let start = Instant::now();
    let err = svc.oneshot(1).await.unwrap_err();
    assert_eq!(start.elapsed(), secs(2));
    let e = elapsed(&err);
    assert_eq!(e.name(), "search");
    assert_eq!(e.timeout(), secs(2));
    assert!(!e.waiting_for_readiness());
    assert_eq!(
        err.to_string(),
        "timeout `search`: no answer within 2s; the call was abandoned, \
         and whether the service carried it out is unknown"
    );
}

// scenario TO-1
#[tokio::test(start_paused = true)]
async fn a_call_within_the_limit_returns_its_own_result() {
    let probe = Probe::new(Answer::After(secs(1)));
    let start = Instant::now();
    assert_eq!(timeout(secs(2), probe).oneshot(9).await.unwrap(), 9);
    assert_eq!(start.elapsed(), secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_result_ready_at_the_deadline_wins_the_tie() {
    let probe = Probe::new(Answer::After(secs(2)));
    assert_eq!(timeout(secs(2), probe).oneshot(3).await.unwrap(), 3);
}

// scenario TO-2
#[tokio::test(start_paused = true)]
async fn a_caller_that_gives_up_first_drops_the_work_without_a_timeout() {
    let probe = Probe::new(Answer::After(secs(10)));
    let svc = timeout(secs(10), probe.clone());
    let start = Instant::now();
    let outcome = tokio::time::timeout(secs(1), svc.oneshot(1)).await;
    assert!(outcome.is_err(), "the caller's own deadline fired");
    assert_eq!(start.elapsed(), secs(1));
    assert_eq!(probe.in_flight(), 0);
    assert_eq!(probe.dropped_unfinished(), 1);
}

// scenario TO-3: palisade refuses a zero timeout at build time (open decision 8)
#[test]
fn nonsense_configuration_is_a_config_error() {
    let err = TimeoutLayer::new(Duration::ZERO).unwrap_err();
    assert_eq!((err.layer(), err.field()), ("timeout", "timeout"));
    assert!(err.to_string().contains("more than zero"), "{err}");

    // A builder never given a timeout says it must be set.
    let err = TimeoutLayer::builder().build().unwrap_err();
    assert_eq!(err.field(), "timeout");
    assert!(err.rule().starts_with("must be set"), "{err}");

    let err = TimeoutLayer::builder()
        .timeout(secs(1))
        .ready_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "ready_timeout");
}

#[tokio::test(start_paused = true)]
async fn the_longest_timeout_does_not_overflow_the_clock() {
    let probe = Probe::new(Answer::After(secs(3600)));
    let svc = TimeoutLayer::builder()
        .timeout(Duration::MAX)
        .ready_timeout(Duration::MAX)
        .build()
        .unwrap()
        .layer(probe);
    assert_eq!(svc.oneshot(5).await.unwrap(), 5);
}

// scenario TO-4
#[tokio::test(start_paused = true)]
async fn the_timed_out_work_is_dropped_at_the_limit() {
    let probe = Probe::new(Answer::After(ms(200)));
    let svc = timeout(ms(50), probe.clone());
    let call = tokio::spawn(svc.oneshot(1));
    tokio::time::sleep(ms(10)).await;
    assert_eq!(probe.in_flight(), 1, "the work is running");
    let err = call.await.unwrap().unwrap_err();
    elapsed(&err);
    assert_eq!(probe.in_flight(), 0);
    assert_eq!(
        probe.dropped_unfinished(),
        1,
        "the inner future was dropped"
    );
}

// scenario TO-4: dropped at the deadline even while the caller keeps the future
#[tokio::test(start_paused = true)]
async fn the_inner_future_is_dropped_at_the_deadline_not_when_the_caller_lets_go() {
    let probe = Probe::new(Answer::After(ms(200)));
    let mut svc = timeout(ms(50), probe.clone());
    let mut call = tokio_test::task::spawn(svc.ready().await.unwrap().call(1));
    assert!(call.poll().is_pending());
    tokio::time::advance(ms(50)).await;
    match call.poll() {
        std::task::Poll::Ready(Err(err)) => {
            elapsed(&err);
        }
        other => panic!("expected Elapsed, got {other:?}"),
    }
    assert_eq!(
        probe.in_flight(),
        0,
        "dropped before the caller drops the future"
    );
    assert_eq!(probe.dropped_unfinished(), 1);
    tokio::time::advance(ms(500)).await;
    assert!(
        matches!(call.poll(), std::task::Poll::Ready(Err(_))),
        "a timed-out call never turns into a success"
    );
}

// scenario TO-5: baseline, readiness is not bounded and does not count
#[tokio::test(start_paused = true)]
async fn waiting_for_readiness_does_not_count_against_the_call() {
    let probe = Probe::new(Answer::After(ms(500)));
    probe.set_readiness(Readiness::Pending);
    let svc = timeout(secs(1), probe.clone());
    let call = tokio::spawn(svc.oneshot(4));
    tokio::time::sleep(secs(5)).await;
    assert_eq!(probe.calls(), 0);
    probe.set_readiness(Readiness::Ready);
    assert_eq!(call.await.unwrap().unwrap(), 4);
}

// scenario TO-5: palisade's optional readiness bound
#[tokio::test(start_paused = true)]
async fn a_readiness_bound_fails_the_call_without_calling_the_inner_service() {
    let probe = Probe::new(Answer::Now);
    probe.set_readiness(Readiness::Pending);
    let mut svc = TimeoutLayer::builder()
        .name("pool")
        .timeout(secs(5))
        .ready_timeout(secs(1))
        .build()
        .unwrap()
        .layer(probe.clone());

    let start = Instant::now();
    // The wait running out is not a readiness error: the service stays usable.
    svc.ready()
        .await
        .expect("readiness never fails for a timeout");
    assert_eq!(start.elapsed(), secs(1));
    let err = svc.call(1).await.unwrap_err();
    let e = elapsed(&err);
    assert!(e.waiting_for_readiness());
    assert_eq!(e.timeout(), secs(1));
    assert_eq!(e.name(), "pool");
    assert!(ErrorKind::of(&err).is_rejected_before_call());
    assert_eq!(probe.calls(), 0, "the inner service was not called");

    // The next wait gets a fresh second, measured from its own start.
    tokio::time::advance(secs(30)).await;
    let start = Instant::now();
    svc.ready().await.unwrap();
    assert_eq!(start.elapsed(), secs(1));
    elapsed(&svc.call(2).await.unwrap_err());

    // Once the inner service is ready, calls go through again.
    probe.set_readiness(Readiness::Ready);
    assert_eq!(svc.ready().await.unwrap().call(3).await.unwrap(), 3);
    assert_eq!(probe.seen(), vec![3]);
}

#[tokio::test(start_paused = true)]
async fn readiness_that_arrives_in_time_resets_the_bound() {
    let probe = Probe::new(Answer::Now);
    probe.set_readiness(Readiness::Pending);
    let mut svc = ready_bounded(&probe);
    let mut ready = tokio_test::task::spawn(async {
        svc.ready().await.unwrap();
    });
    assert!(ready.poll().is_pending());
    tokio::time::advance(ms(900)).await;
    probe.set_readiness(Readiness::Ready);
    assert!(ready.poll().is_ready());
    drop(ready);
    assert_eq!(svc.call(1).await.unwrap(), 1);

    // A later wait starts from zero, not from the 900 ms already spent.
    probe.set_readiness(Readiness::Pending);
    let start = Instant::now();
    svc.ready().await.unwrap();
    assert_eq!(start.elapsed(), secs(1));
}

#[tokio::test(start_paused = true)]
async fn readiness_that_arrives_after_the_bound_but_before_the_call_is_used() {
    let probe = Probe::new(Answer::Now);
    probe.set_readiness(Readiness::Pending);
    let mut svc = ready_bounded(&probe);
    svc.ready().await.unwrap(); // the wait ran out
    probe.set_readiness(Readiness::Ready);
    svc.ready().await.unwrap(); // a fresh look finds the inner service ready
    assert_eq!(svc.call(1).await.unwrap(), 1);
}

/// Behind a `Buffer`, a readiness error would be permanent for every handle.
/// The readiness bound reports through the call instead, so the buffer
/// survives an outage of its inner service.
#[tokio::test(start_paused = true)]
async fn a_readiness_bound_does_not_poison_a_buffer() {
    let probe = Probe::new(Answer::Now);
    probe.set_readiness(Readiness::Pending);
    let svc = ready_bounded(&probe);
    let buffer = tower::buffer::Buffer::new(svc, 4);
    let err = buffer.clone().oneshot(1).await.unwrap_err();
    assert!(elapsed(&err).waiting_for_readiness());
    probe.set_readiness(Readiness::Ready);
    assert_eq!(buffer.clone().oneshot(2).await.unwrap(), 2);
}

/// palisade arms the timer when the call first has to wait, not in `call`:
/// time before the first poll is not counted (see the module docs).
#[tokio::test(start_paused = true)]
async fn the_clock_starts_when_the_call_first_waits() {
    let probe = Probe::new(Answer::After(secs(10)));
    let mut svc = timeout(secs(2), probe.clone());
    let call = svc.ready().await.unwrap().call(1);
    tokio::time::advance(secs(3)).await;
    let start = Instant::now();
    let err = call.await.unwrap_err();
    elapsed(&err);
    assert_eq!(start.elapsed(), secs(2));
}

/// On a paused clock the timer follows tokio's clock, not the CPU's counter
/// (which the layer reads on a running one): real time that passes before
/// the call first waits moves neither the clock nor the deadline. Scenario
/// TO-1, on a paused clock while real time passes.
#[tokio::test(start_paused = true)]
async fn a_paused_clock_is_followed_while_real_time_passes() {
    let probe = Probe::new(Answer::After(secs(10)));
    let mut svc = timeout(ms(50), probe.clone());
    let call = svc.ready().await.unwrap().call(1);
    let real = std::time::Instant::now();
    while real.elapsed() < ms(3) {
        std::hint::spin_loop();
    }
    let start = Instant::now();
    let err = call.await.unwrap_err();
    elapsed(&err);
    assert_eq!(start.elapsed(), ms(50));
}

#[tokio::test(start_paused = true)]
async fn inner_errors_are_not_timeouts() {
    let probe = Probe::new(Answer::Fail);
    let err = timeout(secs(1), probe).oneshot(1).await.unwrap_err();
    assert!(err.downcast_ref::<ProbeError>().is_some());
}

#[tokio::test(start_paused = true)]
async fn a_clone_does_not_inherit_an_expired_readiness_wait() {
    let probe = Probe::new(Answer::Now);
    probe.set_readiness(Readiness::Pending);
    let mut svc = ready_bounded(&probe);
    svc.ready().await.unwrap(); // expired: svc's next call will fail
    let mut clone = svc.clone();
    probe.set_readiness(Readiness::Ready);
    assert_eq!(clone.ready().await.unwrap().call(7).await.unwrap(), 7);
    elapsed(&svc.call(8).await.unwrap_err());
    assert_eq!(probe.seen(), vec![7]);
}

#[tokio::test(start_paused = true)]
async fn an_expired_readiness_wait_stays_expired_while_the_inner_service_is_pending() {
    let probe = Probe::new(Answer::Now);
    probe.set_readiness(Readiness::Pending);
    let mut svc = ready_bounded(&probe);
    svc.ready().await.unwrap();
    let start = Instant::now();
    svc.ready().await.unwrap(); // polled again: still decided, no new wait
    assert_eq!(start.elapsed(), Duration::ZERO);
    elapsed(&svc.call(1).await.unwrap_err());
}

#[tokio::test(start_paused = true)]
async fn a_clone_of_an_expired_service_waits_its_own_full_bound() {
    let probe = Probe::new(Answer::Now);
    probe.set_readiness(Readiness::Pending);
    let mut svc = ready_bounded(&probe);
    svc.ready().await.unwrap();
    let mut clone = svc.clone();
    let start = Instant::now();
    clone.ready().await.unwrap();
    assert_eq!(start.elapsed(), secs(1), "the clone started its own wait");
    elapsed(&clone.call(1).await.unwrap_err());
}

#[cfg(feature = "serde")]
#[test]
fn configuration_loads_from_json() {
    use palisade::timeout::TimeoutConfig;

    let config: TimeoutConfig =
        serde_json::from_str(r#"{ "name": "users", "timeout": "250ms", "ready_timeout": 1.5 }"#)
            .unwrap();
    assert_eq!(config.name.as_deref(), Some("users"));
    assert_eq!(config.timeout, ms(250));
    assert_eq!(config.ready_timeout, Some(ms(1500)));
    TimeoutLayer::from_config(config).unwrap();

    let zero: TimeoutConfig = serde_json::from_str(r#"{ "timeout": "0s" }"#).unwrap();
    assert_eq!(
        TimeoutLayer::from_config(zero).unwrap_err().field(),
        "timeout"
    );

    let err = serde_json::from_str::<TimeoutConfig>(r#"{ "timeout": "soon" }"#).unwrap_err();
    assert!(err.to_string().contains("is not a duration"), "{err}");
    let err =
        serde_json::from_str::<TimeoutConfig>(r#"{ "timeout": 1, "timout": 2 }"#).unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
}
