//! The rate-limit layer, under tokio's paused clock. Scenario ids refer to
//! `SCENARIOS.md`; the algorithms' own formulas are tested in their modules.

mod support;

use std::time::Duration;

use palisade::rate_limit::{
    KeyedRateLimitLayer, Kind, RateLimitBuilder, RateLimitLayer, RateLimitState,
};
use palisade::{BoxError, ErrorKind};
use support::{Answer, Probe};
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt};

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// One call through `svc`: `Ok(answer)`, or the refusal's retry-after.
async fn send<S>(svc: &mut S, request: u64) -> Result<u64, Option<Duration>>
where
    S: Service<u64, Response = u64, Error = BoxError>,
{
    match svc.ready().await.unwrap().call(request).await {
        Ok(answer) => Ok(answer),
        Err(err) => match ErrorKind::of(&err) {
            ErrorKind::RateLimited(limited) => Err(limited.retry_after()),
            _ => panic!("not a rate-limit refusal: {err}"),
        },
    }
}

/// Every algorithm; the segmented window in 4 segments (every window the
/// tests use divides into 4).
fn all_kinds(limit: u64, window: Duration) -> [RateLimitBuilder; 5] {
    [
        RateLimitLayer::sliding_window(limit, window),
        RateLimitLayer::sliding_log(limit, window),
        RateLimitLayer::gcra(limit, window),
        RateLimitLayer::fixed_window(limit, window),
        RateLimitLayer::segmented_window(limit, window, 4),
    ]
}

// ---------------------------------------------------------------- refusals

#[tokio::test(start_paused = true)]
async fn a_refusal_carries_the_wait_and_never_reaches_the_inner_service() {
    // scenario QW-7, and principle 4: the inner service's readiness is not
    // even polled for a refused call.
    for builder in all_kinds(2, secs(1)) {
        let layer = builder.name("api").build().unwrap();
        let probe = Probe::new(Answer::Now);
        let mut svc = layer.layer(probe.clone());
        assert_eq!(send(&mut svc, 1).await, Ok(1));
        advance(ms(250)).await;
        assert_eq!(send(&mut svc, 2).await, Ok(2));
        let polls = probe.ready_polls();
        let err = svc.ready().await.unwrap().call(3).await.unwrap_err();
        let ErrorKind::RateLimited(limited) = ErrorKind::of(&err) else {
            panic!("{err}");
        };
        assert_eq!(limited.name(), "api");
        let wait = limited.retry_after().expect("a wait");
        // The sliding window's calls can weigh on into the next window.
        assert!(wait > Duration::ZERO && wait <= secs(2), "{wait:?}");
        assert_eq!(probe.calls(), 2, "{:?}", layer.handle().kind());
        assert_eq!(probe.ready_polls(), polls, "readiness untouched");
        assert_eq!(layer.handle().refused(), 1);
        // Waiting exactly that long admits.
        advance(wait).await;
        assert_eq!(
            send(&mut svc, 4).await,
            Ok(4),
            "{:?}",
            layer.handle().kind()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_exact_waits_of_each_algorithm() {
    // 2 per second, calls at 0 and 250 ms, a third at 250 ms.
    let waits: Vec<Option<Duration>> = {
        let mut waits = Vec::new();
        for builder in all_kinds(2, secs(1)) {
            let mut svc = builder.build().unwrap().layer(Probe::new(Answer::Now));
            send(&mut svc, 1).await.unwrap();
            advance(ms(250)).await;
            send(&mut svc, 2).await.unwrap();
            waits.push(send(&mut svc, 3).await.unwrap_err());
            advance(ms(750)).await; // reset the clock's phase for the next
        }
        waits
    };
    // The counter: both calls in window 0; at 1 s they weigh 2 in full
    // until the next window starts, and then slide out.
    // The log: the first admission leaves at 1 s.
    // GCRA: 500 ms per permit; the bucket of 2 was full at 0.
    // The fixed window: both in window 0, back when it ends at 1 s.
    // The segmented window (4 of 250 ms): the first permit, taken in
    // segment 0, comes back when it slides out at 1 s.
    assert_eq!(
        waits,
        [
            Some(ms(750) + ms(500)),
            Some(ms(750)),
            Some(ms(250)),
            Some(ms(750)),
            Some(ms(750))
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_looked_at_again_when_readiness_is_polled_again() {
    let layer = RateLimitLayer::gcra(1, secs(1)).build().unwrap();
    let probe = Probe::new(Answer::Now);
    let mut svc = layer.layer(probe.clone());
    assert_eq!(send(&mut svc, 1).await, Ok(1));
    svc.ready().await.unwrap(); // refused for now
    advance(secs(1)).await;
    svc.ready().await.unwrap(); // a fresh look: admitted
    assert_eq!(svc.call(2).await.unwrap(), 2);
    assert_eq!(
        layer.handle().refused(),
        0,
        "the refusal never reached a call"
    );
}

// ---------------------------------------------------------------- sharing

#[tokio::test(start_paused = true)]
async fn every_service_and_clone_of_one_layer_shares_the_limit() {
    // scenario TC-3: hyper clones the stack for every request.
    let layer = RateLimitLayer::sliding_log(3, secs(10)).build().unwrap();
    let probe = Probe::new(Answer::Now);
    let mut a = layer.layer(probe.clone());
    let mut b = layer.layer(probe.clone());
    let mut c = a.clone();
    assert!(send(&mut a, 1).await.is_ok());
    assert!(send(&mut b, 2).await.is_ok());
    assert!(send(&mut c, 3).await.is_ok());
    for mut svc in [a.clone(), b, c, a] {
        assert!(send(&mut svc, 4).await.is_err());
    }
    assert_eq!(probe.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_clone_holds_no_permit_and_a_permit_is_used_by_the_call() {
    // Principle 3: the permit taken in poll_ready stays with the service
    // that took it.
    let layer = RateLimitLayer::sliding_log(1, secs(10))
        .name("ingress")
        .build()
        .unwrap();
    let probe = Probe::new(Answer::Now);
    let mut readied = layer.layer(probe.clone());
    readied.ready().await.unwrap();
    let mut clone = readied.clone();
    // Called without readiness: the caller's bug, named, and not sent.
    let err = clone.call(9).await.unwrap_err();
    let ErrorKind::NotReady(e) = ErrorKind::of(&err) else {
        panic!("expected NotReady, got {err}");
    };
    assert_eq!((e.layer(), e.name()), ("rate_limit", "ingress"));
    assert_eq!(readied.call(1).await.unwrap(), 1);
    assert_eq!(probe.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_keeps_the_tower_contract() {
    // scenarios TC-2 to TC-4, with a limit never reached, for each
    // algorithm.
    let kinds: [fn() -> RateLimitBuilder; 5] = [
        || RateLimitLayer::sliding_window(1_000, secs(1)),
        || RateLimitLayer::sliding_log(1_000, secs(1)),
        || RateLimitLayer::gcra(1_000, secs(1)),
        || RateLimitLayer::fixed_window(1_000, secs(1)),
        || RateLimitLayer::segmented_window(1_000, secs(1), 4),
    ];
    for builder in kinds {
        support::check_tower_contract(|probe| builder().build().unwrap().layer(probe)).await;
    }
}

// ---------------------------------------------------------------- windows

#[tokio::test(start_paused = true)]
async fn the_log_never_admits_more_than_its_limit_in_any_window() {
    // scenario SW-5: 3 per 100 ms, one attempt every 25 ms for 40 attempts.
    let mut svc = RateLimitLayer::sliding_log(3, ms(100))
        .build()
        .unwrap()
        .layer(Probe::new(Answer::Now));
    let start = tokio::time::Instant::now();
    let mut admitted = Vec::new();
    for i in 0..40 {
        if send(&mut svc, i).await.is_ok() {
            admitted.push(start.elapsed());
        }
        advance(ms(25)).await;
    }
    assert!(admitted.len() >= 3);
    for &t in &admitted {
        let in_window = admitted
            .iter()
            .filter(|&&u| u <= t && t - u < ms(100))
            .count();
        assert!(
            in_window <= 3,
            "{in_window} admitted in the 100 ms up to {t:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn state_reports_limit_remaining_and_reset() {
    let layer = RateLimitLayer::gcra(4, secs(1)).build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Probe::new(Answer::Now));
    let state = || {
        let RateLimitState {
            limit,
            remaining,
            reset,
            ..
        } = handle.state();
        (limit, remaining, reset)
    };
    assert_eq!(state(), (4, 4, Duration::ZERO));
    send(&mut svc, 1).await.unwrap();
    send(&mut svc, 2).await.unwrap();
    assert_eq!(state(), (4, 2, ms(500)));
    advance(ms(250)).await;
    assert_eq!(state(), (4, 3, ms(250)));
}

/// What a fresh limiter from `builder` decides for `steps`: at each
/// instant (milliseconds from the limiter's start), up to that many calls,
/// stopping at the first refusal; for each step, the calls admitted and
/// the refusal's wait.
async fn decisions(
    builder: RateLimitBuilder,
    steps: &[(u64, u64)],
) -> Vec<(u64, Option<Duration>)> {
    let start = tokio::time::Instant::now();
    let mut svc = builder.build().unwrap().layer(Probe::new(Answer::Now));
    let mut decided = Vec::new();
    for &(at, calls) in steps {
        advance(start + ms(at) - tokio::time::Instant::now()).await;
        let mut admitted = 0;
        let mut wait = None;
        for i in 0..calls {
            match send(&mut svc, i).await {
                Ok(_) => admitted += 1,
                Err(refused) => {
                    wait = Some(refused.expect("a refusal's wait"));
                    break;
                }
            }
        }
        decided.push((admitted, wait));
    }
    decided
}

/// scenario FX-2 (a): 2 permits taken at 1 s, 11 s and 21 s of a window of
/// 6 per 30 s in 3 segments of 10 s. Each pair comes back when its segment
/// slides out: the first at 30 s, the second at 40 s.
#[tokio::test(start_paused = true)]
async fn a_segmented_window_gives_permits_back_a_segment_at_a_time() {
    let steps = [
        (1_000, 2),
        (11_000, 2),
        (21_000, 2),
        (25_000, 1),
        (30_000, 3),
        (40_000, 3),
    ];
    let builder = RateLimitLayer::segmented_window(6, secs(30), 3);
    assert_eq!(
        decisions(builder, &steps).await,
        [
            (2, None),
            (2, None),
            (2, None),
            (0, Some(secs(5))),
            (2, Some(secs(10))),
            (2, Some(secs(10))),
        ]
    );
}

/// scenario FX-2 (b): a burst of all 6 at 1 s, in one segment, keeps the
/// window closed for a whole window (until 30 s), not one segment: the
/// permits belong to the segment they were taken in.
#[tokio::test(start_paused = true)]
async fn a_burst_in_one_segment_keeps_the_segmented_window_closed_a_whole_window() {
    let steps = [
        (1_000, 7),
        (11_000, 1),
        (21_000, 1),
        (29_999, 1),
        (30_000, 7),
    ];
    let builder = RateLimitLayer::segmented_window(6, secs(30), 3);
    assert_eq!(
        decisions(builder, &steps).await,
        [
            (6, Some(secs(29))),
            (0, Some(secs(19))),
            (0, Some(secs(9))),
            (0, Some(ms(1))),
            (6, Some(secs(30))),
        ]
    );
}

/// scenario FX-2 (c): one segment decides exactly as the fixed window, for
/// the traffic of (a) and of (b); with (a) all 6 are back at 30 s.
#[tokio::test(start_paused = true)]
async fn one_segment_is_exactly_the_fixed_window() {
    let a = [
        (1_000, 2),
        (11_000, 2),
        (21_000, 2),
        (25_000, 1),
        (30_000, 3),
        (40_000, 3),
    ];
    let b = [
        (1_000, 7),
        (11_000, 1),
        (21_000, 1),
        (29_999, 1),
        (30_000, 7),
    ];
    for steps in [&a[..], &b[..]] {
        let one = decisions(RateLimitLayer::segmented_window(6, secs(30), 1), steps).await;
        let fixed = decisions(RateLimitLayer::fixed_window(6, secs(30)), steps).await;
        assert_eq!(one, fixed);
    }
    let fixed = decisions(RateLimitLayer::fixed_window(6, secs(30)), &a).await;
    assert_eq!(
        fixed,
        [
            (2, None),
            (2, None),
            (2, None),
            (0, Some(secs(5))),
            (3, None),
            (3, None),
        ]
    );
}

/// scenario FX-1 (the limiter alone; the headers are in `tests/http.rs`):
/// 10 per 60 s in windows [0, 60 s), [60 s, 120 s). A refusal waits exactly
/// until the window ends, the instant 60 s belongs to the new window, and
/// a limit lowered below what the window already admitted refuses with the
/// real wait and reports 0 remaining.
#[tokio::test(start_paused = true)]
async fn a_fixed_window_refuses_until_its_end_and_opens_at_the_boundary() {
    let layer = RateLimitLayer::fixed_window(10, secs(60)).build().unwrap();
    let handle = layer.handle();
    let start = tokio::time::Instant::now();
    let mut svc = layer.layer(Probe::new(Answer::Now));
    let at = |t: u64| start + ms(t) - tokio::time::Instant::now();
    for i in 0..10 {
        assert_eq!(send(&mut svc, i).await, Ok(i));
    }
    for (t, wait) in [(45_000, secs(15)), (59_400, ms(600)), (59_999, ms(1))] {
        advance(at(t)).await;
        assert_eq!(send(&mut svc, 0).await, Err(Some(wait)), "at {t} ms");
    }
    advance(at(60_000)).await;
    assert_eq!(send(&mut svc, 1).await, Ok(1), "60 s opens the next window");
    advance(at(60_500)).await;
    for i in 0..6 {
        assert_eq!(send(&mut svc, i).await, Ok(i));
    }
    advance(at(61_000)).await;
    handle.set_limit(5, secs(60)).unwrap();
    assert_eq!(send(&mut svc, 0).await, Err(Some(secs(59))));
    let state = handle.state();
    assert_eq!((state.limit, state.remaining), (5, 0));
    assert_eq!(state.reset, secs(59));
    advance(at(120_000)).await;
    assert_eq!(send(&mut svc, 0).await, Ok(0));
}

// ---------------------------------------------------------------- run-time changes

#[tokio::test(start_paused = true)]
async fn the_limit_changes_at_run_time_through_the_handle() {
    for builder in all_kinds(2, secs(60)) {
        let layer = builder.build().unwrap();
        let handle = layer.handle();
        let mut svc = layer.layer(Probe::new(Answer::Now));
        let kind = handle.kind();
        assert!(send(&mut svc, 1).await.is_ok());
        assert!(send(&mut svc, 2).await.is_ok());
        assert!(send(&mut svc, 3).await.is_err(), "{kind:?}");

        handle.set_limit(4, secs(60)).unwrap();
        if kind == Kind::Gcra {
            handle.set_burst(4).unwrap();
        }
        assert_eq!(handle.limit(), (4, secs(60)));
        match kind {
            // The windows keep their counts: two more.
            Kind::SlidingWindow | Kind::SlidingLog | Kind::FixedWindow | Kind::SegmentedWindow => {
                assert!(send(&mut svc, 4).await.is_ok(), "{kind:?}");
                assert!(send(&mut svc, 5).await.is_ok(), "{kind:?}");
            }
            // The bucket keeps its level (empty); the new rate refills it
            // twice as fast: one permit 15 s on.
            _ => {
                assert!(send(&mut svc, 4).await.is_err());
                advance(secs(15)).await;
                assert!(send(&mut svc, 4).await.is_ok());
            }
        }
        assert!(send(&mut svc, 6).await.is_err(), "{kind:?}");

        // A bad change is refused, naming the field, and the limit stays.
        assert_eq!(handle.set_limit(0, secs(60)).unwrap_err().field(), "limit");
        assert_eq!(
            handle.set_limit(5, Duration::ZERO).unwrap_err().field(),
            "window"
        );
        assert_eq!(handle.limit(), (4, secs(60)));
    }
}

#[tokio::test(start_paused = true)]
async fn lowering_the_limit_takes_effect_at_once() {
    let layer = RateLimitLayer::sliding_window(10, secs(60))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Probe::new(Answer::Now));
    for i in 0..3 {
        assert!(send(&mut svc, i).await.is_ok());
    }
    handle.set_limit(3, secs(60)).unwrap();
    assert!(send(&mut svc, 4).await.is_err());
    assert_eq!(handle.state().remaining, 0);
}

// ---------------------------------------------------------------- configuration

#[test]
fn bad_configuration_is_an_error_naming_the_field() {
    let field = |b: RateLimitBuilder| b.build().unwrap_err().field();
    assert_eq!(field(RateLimitLayer::sliding_window(0, secs(1))), "limit");
    assert_eq!(field(RateLimitLayer::gcra(0, secs(1))), "limit");
    assert_eq!(
        field(RateLimitLayer::sliding_log(1 << 21, secs(1))),
        "limit"
    );
    assert_eq!(
        field(RateLimitLayer::sliding_window(1 << 41, secs(1))),
        "limit"
    );
    assert_eq!(
        field(RateLimitLayer::sliding_log(5, Duration::ZERO)),
        "window"
    );
    assert_eq!(field(RateLimitLayer::gcra(5, secs(1)).burst(0)), "burst");
    assert_eq!(
        field(RateLimitLayer::sliding_window(5, secs(1)).burst(9)),
        "burst"
    );
    assert!(
        RateLimitLayer::sliding_log(1 << 20, secs(1))
            .build()
            .is_ok()
    );
    let layer = RateLimitLayer::sliding_log(5, secs(1)).build().unwrap();
    assert_eq!(layer.handle().set_burst(3).unwrap_err().field(), "burst");
    // Segments: at least one, at most 64, cutting the window into whole
    // nanoseconds (a second does not divide by 3).
    let segmented = |segments| RateLimitLayer::segmented_window(5, secs(1), segments);
    assert_eq!(field(segmented(0)), "segments");
    assert_eq!(field(segmented(65)), "segments");
    assert_eq!(field(segmented(3)), "window");
    assert!(segmented(64).build().is_ok());
    assert!(
        RateLimitLayer::segmented_window(5, secs(3), 3)
            .build()
            .is_ok()
    );
    // A new window must divide into the limiter's segments too.
    let handle = segmented(4).build().unwrap().handle();
    let odd = secs(1) + Duration::from_nanos(1);
    assert_eq!(handle.set_limit(5, odd).unwrap_err().field(), "window");
    assert_eq!(handle.limit(), (5, secs(1)));
    assert!(handle.set_limit(5, secs(2)).is_ok());
}

#[cfg(feature = "serde")]
#[test]
fn configuration_loads_from_json() {
    use palisade::rate_limit::RateLimitConfig;
    let config: RateLimitConfig = serde_json::from_str(
        r#"{"name": "api", "algorithm": "gcra", "limit": 10, "window": "1s", "burst": 20,
            "max_wait": "50ms", "max_waiters": 8}"#,
    )
    .unwrap();
    let handle = RateLimitLayer::from_config(config).unwrap().handle();
    assert_eq!(
        (
            handle.name(),
            handle.kind(),
            handle.limit(),
            handle.state().limit
        ),
        ("api", Kind::Gcra, (10, secs(1)), 20)
    );
    let plain: RateLimitConfig = serde_json::from_str(r#"{"limit": 100, "window": "1m"}"#).unwrap();
    assert_eq!(plain, RateLimitConfig::new(100, secs(60)));
    let zero: RateLimitConfig = serde_json::from_str(r#"{"limit": 0, "window": "1m"}"#).unwrap();
    assert_eq!(
        RateLimitLayer::from_config(zero).unwrap_err().field(),
        "limit"
    );
    assert!(
        serde_json::from_str::<RateLimitConfig>(r#"{"limit": 1, "window": "1s", "algo": "x"}"#)
            .is_err()
    );
    assert!(
        serde_json::from_str::<RateLimitConfig>(
            r#"{"limit": 1, "window": "1s", "algorithm": "leaky"}"#
        )
        .is_err()
    );
    // The fixed and segmented windows; only the latter has segments, and
    // must say how many.
    let load = |json: &str| {
        RateLimitLayer::from_config(serde_json::from_str::<RateLimitConfig>(json).unwrap())
    };
    let fixed = load(r#"{"algorithm": "fixed_window", "limit": 10, "window": "1m"}"#);
    let fixed = fixed.unwrap().handle();
    assert_eq!(
        (fixed.kind(), fixed.limit()),
        (Kind::FixedWindow, (10, secs(60)))
    );
    let segmented =
        load(r#"{"algorithm": "segmented_window", "limit": 6, "window": "30s", "segments": 3}"#);
    let segmented = segmented.unwrap().handle();
    assert_eq!(
        (segmented.kind(), segmented.limit()),
        (Kind::SegmentedWindow, (6, secs(30)))
    );
    for json in [
        r#"{"algorithm": "segmented_window", "limit": 6, "window": "30s"}"#,
        r#"{"algorithm": "fixed_window", "limit": 6, "window": "30s", "segments": 3}"#,
        r#"{"limit": 6, "window": "30s", "segments": 3}"#,
    ] {
        assert_eq!(load(json).unwrap_err().field(), "segments", "{json}");
    }
}

// ---------------------------------------------------------------- waiting

/// Spawns one call through a clone of `svc`; its result comes back with the
/// time it took, from the spawn.
fn spawn_call<S>(
    svc: &S,
    request: u64,
) -> tokio::task::JoinHandle<(Result<u64, Option<Duration>>, Duration)>
where
    S: Service<u64, Response = u64, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let mut svc = svc.clone();
    let start = tokio::time::Instant::now();
    tokio::spawn(async move {
        let result = send(&mut svc, request).await;
        (result, start.elapsed())
    })
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_arrival_order_each_when_its_permit_frees() {
    let layer = RateLimitLayer::gcra(1, ms(100))
        .max_wait(secs(1))
        .build()
        .unwrap();
    let probe = Probe::new(Answer::Now);
    let mut svc = layer.layer(probe.clone());
    assert_eq!(send(&mut svc, 0).await, Ok(0));
    let waiters: Vec<_> = (1..=3).map(|i| spawn_call(&svc, i)).collect();
    tokio::task::yield_now().await;
    assert_eq!(layer.handle().waiting(), 3);
    let mut results = Vec::new();
    for waiter in waiters {
        results.push(waiter.await.unwrap());
    }
    assert_eq!(
        results,
        [(Ok(1), ms(100)), (Ok(2), ms(200)), (Ok(3), ms(300))]
    );
    assert_eq!(probe.seen(), [0, 1, 2, 3]);
    assert_eq!(layer.handle().waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_permit_later_than_max_wait_is_refused_at_once() {
    // scenario FW-2 (waiting allowed up to 250 ms): 1 permit per 250 ms.
    let layer = RateLimitLayer::gcra(1, ms(250))
        .max_wait(ms(250))
        .build()
        .unwrap();
    let mut svc = layer.layer(Probe::new(Answer::Now));
    assert_eq!(send(&mut svc, 1).await, Ok(1));
    let second = spawn_call(&svc, 2);
    assert_eq!(second.await.unwrap(), (Ok(2), ms(250)));
    // Taken at 250 ms; another now would wait 250 ms: allowed. Two more
    // than the bucket holds would wait 500 ms: refused at once.
    let limiter = RateLimitLayer::gcra(1, ms(250))
        .burst(1)
        .max_wait(ms(100))
        .build()
        .unwrap();
    let mut strict = limiter.layer(Probe::new(Answer::Now));
    assert_eq!(send(&mut strict, 1).await, Ok(1));
    let start = tokio::time::Instant::now();
    assert_eq!(send(&mut strict, 2).await, Err(Some(ms(250))));
    assert_eq!(start.elapsed(), Duration::ZERO, "refused without waiting");
    assert_eq!(limiter.handle().waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_consumes_nothing() {
    // scenario QW-3 (last case): 1 per second, waiting up to 5 s.
    let layer = RateLimitLayer::gcra(1, secs(1))
        .max_wait(secs(5))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Probe::new(Answer::Now));
    assert_eq!(send(&mut svc, 1).await, Ok(1));
    let waiter = spawn_call(&svc, 2);
    tokio::task::yield_now().await;
    assert_eq!(handle.waiting(), 1);
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    assert_eq!(handle.waiting(), 0, "its place is freed");
    advance(secs(1)).await;
    assert_eq!(send(&mut svc, 3).await, Ok(3));
    assert_eq!(handle.state().remaining, 0);
}

#[tokio::test(start_paused = true)]
async fn one_total_timeout_across_re_waits() {
    // scenario QW-6: 1 per second, waiting up to 1.5 s; two waiters start
    // together.
    let layer = RateLimitLayer::sliding_log(1, secs(1))
        .max_wait(ms(1_500))
        .build()
        .unwrap();
    let mut svc = layer.layer(Probe::new(Answer::Now));
    assert_eq!(send(&mut svc, 1).await, Ok(1));
    let a = spawn_call(&svc, 2);
    let b = spawn_call(&svc, 3);
    assert_eq!(a.await.unwrap(), (Ok(2), secs(1)));
    // b is head from 1 s on; its permit would free at 2 s, past its
    // deadline, so it gives up at once, at 1 s.
    let (result, waited) = b.await.unwrap();
    assert_eq!((result, waited), (Err(Some(secs(1))), secs(1)));
    assert_eq!(layer.handle().state().remaining, 0);
    assert_eq!(layer.handle().waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_newcomer_does_not_overtake_a_waiter() {
    // scenario QW-1 (oldest first): 1 per second, waiting up to 5 s.
    let layer = RateLimitLayer::sliding_log(1, secs(1))
        .max_wait(secs(5))
        .build()
        .unwrap();
    let probe = Probe::new(Answer::Now);
    let mut svc = layer.layer(probe.clone());
    assert_eq!(send(&mut svc, 1).await, Ok(1));
    let a = spawn_call(&svc, 2);
    tokio::task::yield_now().await;
    // The permit frees at 1 s; a newcomer polled at that instant, before
    // the waiter, must queue behind it.
    advance(secs(1)).await;
    let mut newcomer = tokio_test::task::spawn(svc.clone());
    let mut ready = newcomer.enter(|cx, mut svc| svc.poll_ready(cx).is_pending());
    assert!(ready, "the newcomer waits its turn");
    assert_eq!(a.await.unwrap(), (Ok(2), secs(1)));
    assert!(newcomer.is_woken(), "woken on reaching the head");
    ready = newcomer.enter(|cx, mut svc| svc.poll_ready(cx).is_pending());
    assert!(ready, "the head waits for its permit");
    advance(secs(1)).await;
    assert!(newcomer.is_woken(), "woken by its own timer");
    ready = newcomer.enter(|cx, mut svc| svc.poll_ready(cx).is_ready());
    assert!(ready);
    assert_eq!(probe.seen(), [1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_stops_polling_does_not_hold_up_the_queue() {
    // Found in review: a caller that gave up on `ready()` (a timeout around
    // it) but kept its service stayed head of the queue for good.
    let layer = RateLimitLayer::gcra(1, ms(100))
        .max_wait(secs(1))
        .build()
        .unwrap();
    let mut a = layer.layer(Probe::new(Answer::Now));
    assert_eq!(send(&mut a, 1).await, Ok(1));
    let gave_up = tokio::time::timeout(ms(10), a.ready()).await;
    assert!(gave_up.is_err(), "a waits, then its caller gives up");
    advance(secs(5)).await;
    let mut b = layer.layer(Probe::new(Answer::Now));
    let start = tokio::time::Instant::now();
    assert_eq!(send(&mut b, 2).await, Ok(2));
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(layer.handle().waiting(), 0);
    drop(a); // leaving a queue it is no longer in is harmless
}

#[tokio::test(start_paused = true)]
async fn a_waiter_behind_a_stalled_head_moves_on_at_the_heads_deadline() {
    let layer = RateLimitLayer::gcra(1, secs(1))
        .max_wait(ms(1_500))
        .build()
        .unwrap();
    let mut a = layer.layer(Probe::new(Answer::Now));
    assert_eq!(send(&mut a, 1).await, Ok(1));
    // a queues (head) and stops polling.
    let _ = tokio::time::timeout(ms(1), a.ready()).await;
    let b = spawn_call(&layer.layer(Probe::new(Answer::Now)), 2);
    // a's deadline is 1.5 s after it queued; b steps past it then, when
    // the permit (free since 1 s) is there.
    let (result, waited) = b.await.unwrap();
    assert_eq!(result, Ok(2));
    assert!(waited <= ms(1_500), "{waited:?}");
}

// ---------------------------------------------------------------- keyed

type Request = (&'static str, u64);

fn client(request: &Request) -> &'static str {
    request.0
}

/// A keyed service over a probe answering the request's number.
fn keyed_probe() -> impl Service<Request, Response = u64, Error = BoxError> + Clone {
    let probe = Probe::new(Answer::Now);
    tower::service_fn(move |(_, n): Request| {
        let mut probe = probe.clone();
        async move { probe.ready().await?.call(n).await }
    })
}

async fn send_as<S>(svc: &mut S, who: &'static str, n: u64) -> Result<u64, Option<Duration>>
where
    S: Service<Request, Response = u64, Error = BoxError>,
{
    match svc.ready().await.unwrap().call((who, n)).await {
        Ok(answer) => Ok(answer),
        Err(err) => match ErrorKind::of(&err) {
            ErrorKind::RateLimited(limited) => Err(limited.retry_after()),
            _ => panic!("not a rate-limit refusal: {err}"),
        },
    }
}

#[tokio::test(start_paused = true)]
async fn each_key_has_its_own_limiter() {
    // scenario KY-1: 2 per second per key, the TB-6 pattern for each.
    let layer = RateLimitLayer::gcra(2, secs(1))
        .keyed(client)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(keyed_probe());
    for who in ["one", "two"] {
        assert!(send_as(&mut svc, who, 1).await.is_ok(), "{who}");
        advance(ms(1)).await;
        assert!(send_as(&mut svc, who, 2).await.is_ok(), "{who}");
        advance(ms(1)).await;
        assert!(send_as(&mut svc, who, 3).await.is_err(), "{who}");
        advance(ms(1_000)).await;
        assert!(send_as(&mut svc, who, 4).await.is_ok(), "{who}");
        advance(ms(1)).await;
        assert!(send_as(&mut svc, who, 5).await.is_ok(), "{who}");
        advance(ms(1)).await;
        assert!(send_as(&mut svc, who, 6).await.is_err(), "{who}");
    }
    assert_eq!(handle.len(), 2);
    assert_eq!(handle.refused(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_key_gets_the_exact_wait_and_the_layers_name_not_the_key() {
    let layer = RateLimitLayer::sliding_log(1, secs(10))
        .name("api")
        .keyed(client)
        .build()
        .unwrap();
    let mut svc = layer.layer(keyed_probe());
    assert!(send_as(&mut svc, "secret-key", 1).await.is_ok());
    advance(secs(4)).await;
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(("secret-key", 2))
        .await
        .unwrap_err();
    let ErrorKind::RateLimited(limited) = ErrorKind::of(&err) else {
        panic!("{err}");
    };
    assert_eq!(
        (limited.name(), limited.retry_after()),
        ("api", Some(secs(6)))
    );
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_key_with_a_limit_of_its_own() {
    let layer = RateLimitLayer::sliding_window(1, secs(60))
        .keyed(client)
        .limit_for("partner", 3, secs(60))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(keyed_probe());
    let admitted = |who| {
        let mut svc = svc.clone();
        async move {
            let mut n = 0;
            while send_as(&mut svc, who, n).await.is_ok() {
                n += 1;
            }
            n
        }
    };
    assert_eq!(admitted("partner").await, 3);
    assert_eq!(admitted("someone").await, 1);
    assert_eq!(handle.state(&"partner").limit, 3);
    // Raised at run time, for a key that already has a limiter and keeps
    // its count.
    handle.set_limit_for("someone", 2, secs(60)).unwrap();
    assert_eq!(admitted("someone").await, 1);
    assert_eq!(handle.state(&"someone").remaining, 0);
    assert_eq!(
        handle
            .set_limit_for("someone", 0, secs(60))
            .unwrap_err()
            .field(),
        "limit"
    );
    assert!(send_as(&mut svc, "x", 1).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_key_goes_once_its_limiter_is_as_good_as_new() {
    // scenario KY-2: 1 per second per key; "foo" at 0, "bar" at 200 ms,
    // "baz" at 800 ms. palisade drops a key as soon as its limiter would
    // decide exactly as a fresh one (its bucket full again: "foo" at
    // 1 000 ms), where governor keeps it one emission interval longer.
    let layer = RateLimitLayer::gcra(1, secs(1))
        .keyed(client)
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let handle = layer.handle();
    let mut svc = layer.layer(keyed_probe());
    assert_eq!(handle.len(), 0);
    let at = |t: u64| start + ms(t) - tokio::time::Instant::now();
    let mut held = Vec::new();
    for (who, t) in [("foo", 0), ("bar", 200), ("baz", 800)] {
        advance(at(t)).await;
        assert!(send_as(&mut svc, who, 1).await.is_ok());
        held.push(handle.len());
    }
    assert_eq!(held, [1, 2, 3]);
    handle.sweep();
    assert_eq!(handle.len(), 3, "at 800 ms all three are in use");
    // Each bucket is full again one second after its call.
    for (t, left) in [(999, 3), (1_000, 2), (1_199, 2), (1_200, 1), (1_800, 0)] {
        advance(at(t)).await;
        handle.sweep();
        assert_eq!(handle.len(), left, "at {t} ms");
    }
    // A key that comes back starts afresh.
    assert!(send_as(&mut svc, "foo", 2).await.is_ok());
    assert_eq!(handle.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_million_distinct_keys_leave_memory_bounded() {
    // One call each from a million clients, a thousand every 10 ms. A key
    // is as good as new two windows after its call, and each map is swept
    // at most once a window, so about 300 ms of keys (30 000) are held at
    // most; the map never holds more than max_keys.
    const MAX_KEYS: usize = 48_000;
    let layer = RateLimitLayer::sliding_window(5, ms(100))
        .keyed(|n: &u64| *n)
        .max_keys(MAX_KEYS)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(tower::service_fn(
        |n: u64| async move { Ok::<_, BoxError>(n) },
    ));
    let mut most = 0;
    let mut refused = 0;
    for batch in 0..1_000u64 {
        for i in 0..1_000 {
            if svc
                .ready()
                .await
                .unwrap()
                .call(batch * 1_000 + i)
                .await
                .is_err()
            {
                refused += 1;
            }
        }
        most = most.max(handle.len());
        advance(ms(10)).await;
    }
    assert!(most <= MAX_KEYS, "{most} keys held");
    assert_eq!(refused, 0, "idle keys made room for every newcomer");
    assert_eq!(handle.overflow_calls(), 0, "no key went past the table");
}

/// A full table keeps its busy keys (none is evicted, so none gets a
/// fresh limit) and decides a new key through the overflow sketch instead
/// of refusing it. (This test asserted the old behaviour, a new key
/// refused while the table was full, before the sketch.)
#[tokio::test(start_paused = true)]
async fn a_full_map_of_busy_keys_keeps_them_and_lets_a_new_key_through_the_sketch() {
    let layer = RateLimitLayer::gcra(1, secs(60))
        .keyed(|n: &u64| *n)
        .max_keys(16)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(tower::service_fn(
        |n: u64| async move { Ok::<_, BoxError>(n) },
    ));
    // Fill a map: each key is busy for a minute after its call.
    let mut n = 0;
    let mut last = Ok(0);
    while handle.overflow_calls() == 0 {
        last = svc.ready().await.unwrap().call(n).await;
        n += 1;
    }
    assert!(handle.len() <= 16, "{}", handle.len());
    let newcomer = n - 1;
    assert!(last.is_ok(), "the first key past the table is admitted");
    assert!(handle.refused() == 0);
    // The busy keys keep their state: none got a fresh limit; nor did
    // the newcomer, whose permit the sketch holds.
    for key in 0..n {
        assert_eq!(handle.state(&key).remaining, 0, "key {key}");
        assert!(svc.ready().await.unwrap().call(key).await.is_err());
    }
    assert_eq!(handle.overflow_calls(), 2, "the newcomer, twice");
    // Once they are idle, a new key takes a place in the table again.
    advance(secs(61)).await;
    assert!(svc.ready().await.unwrap().call(newcomer).await.is_ok());
    assert_eq!(handle.overflow_calls(), 2);
}

/// A key with a limit of its own always gets a place in the table, full or
/// not: the sketch knows only the layer's limit.
#[tokio::test(start_paused = true)]
async fn a_key_with_a_limit_of_its_own_has_a_place_in_a_full_table() {
    const PARTNER: u64 = u64::MAX;
    let layer = RateLimitLayer::gcra(1, secs(60))
        .keyed(|n: &u64| *n)
        .limit_for(PARTNER, 5, secs(60))
        .max_keys(16)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(tower::service_fn(
        |n: u64| async move { Ok::<_, BoxError>(n) },
    ));
    let mut n = 0;
    while handle.len() < 16 {
        let _ = svc.ready().await.unwrap().call(n).await;
        n += 1;
    }
    let mut admitted = 0;
    while svc.ready().await.unwrap().call(PARTNER).await.is_ok() {
        admitted += 1;
    }
    assert_eq!(admitted, 5);
    assert_eq!(handle.len(), 17);
    assert_eq!(handle.state(&PARTNER).limit, 5);
}

/// A key decided through the sketch, then given a limit of its own at run
/// time, takes a place in the table with its spent permit converted (as
/// `set_limit_for` converts a key in the table), not a fresh bucket.
#[tokio::test(start_paused = true)]
async fn a_key_given_its_own_limit_outside_the_table_carries_its_count() {
    let layer = RateLimitLayer::gcra(1, secs(60))
        .keyed(|n: &u64| *n)
        .max_keys(16)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(tower::service_fn(
        |n: u64| async move { Ok::<_, BoxError>(n) },
    ));
    let mut key = 0;
    while handle.overflow_calls() == 0 {
        assert!(svc.ready().await.unwrap().call(key).await.is_ok());
        key += 1;
    }
    let outside = key - 1;
    handle.set_limit_for(outside, 3, secs(60)).unwrap();
    // Its bucket is empty, and now refills one permit per 20 s.
    assert!(svc.ready().await.unwrap().call(outside).await.is_err());
    assert_eq!(handle.overflow_calls(), 1, "decided in the table");
    advance(secs(20)).await;
    assert!(svc.ready().await.unwrap().call(outside).await.is_ok());
    assert!(svc.ready().await.unwrap().call(outside).await.is_err());
}

/// `KeyedHandle::set_limit` reaches the keys decided through the sketch
/// too: a key outside the table, with the same calls as a key in it, has
/// the same limit and permits left after the change, and gets as many
/// more (a GCRA limiter keeps its burst, so only its refill changes).
#[tokio::test(start_paused = true)]
async fn a_new_limit_reaches_the_keys_outside_the_table() {
    let kinds = [
        "sliding window",
        "sliding log",
        "gcra",
        "fixed window",
        "segmented window",
    ];
    for (kind, builder) in kinds.into_iter().zip(all_kinds(10, secs(60))) {
        let layer = builder.keyed(|n: &u64| *n).max_keys(16).build().unwrap();
        let handle = layer.handle();
        let mut svc = layer.layer(tower::service_fn(
            |n: u64| async move { Ok::<_, BoxError>(n) },
        ));
        let mut key = 0;
        while handle.overflow_calls() == 0 {
            assert!(svc.ready().await.unwrap().call(key).await.is_ok());
            key += 1;
        }
        let (inside, outside) = (0, key - 1);
        for key in [inside, outside] {
            assert!(svc.ready().await.unwrap().call(key).await.is_ok());
        }
        advance(secs(1)).await;
        handle.set_limit(3, secs(60)).unwrap();
        let (a, b) = (handle.state(&inside), handle.state(&outside));
        assert_eq!((a.limit, a.remaining), (b.limit, b.remaining), "{kind}");
        // Now, and after a GCRA interval at the new rate.
        for wait in [0, 20] {
            advance(secs(wait)).await;
            let mut more = [0, 0];
            for (n, key) in more.iter_mut().zip([inside, outside]) {
                while svc.ready().await.unwrap().call(key).await.is_ok() {
                    *n += 1;
                }
            }
            assert_eq!(more[0], more[1], "{kind} after {wait} s");
        }
    }
}

/// scenario FX-3: keyed limiters of 1 per 2 s, a segmented window of 2
/// segments and a fixed window. A key's limiter stays while its admission
/// at 0 is inside its window (both: until 2 s), however soon the call
/// itself ended: sweeps at 0.5 s and 1.5 s keep it, so the call at 0.6 s
/// is refused rather than granted by a fresh limiter. From 2 s it is idle
/// and goes; the call at 2.1 s is admitted, and its admission keeps the
/// key through the sweep at 2.5 s. A keyed limiter never has waiters (it
/// cannot be built with a `max_wait`), so waiting never keeps one.
#[tokio::test(start_paused = true)]
async fn a_windowed_key_stays_until_nothing_it_counted_is_in_its_window() {
    for (kind, builder) in [
        ("segmented", RateLimitLayer::segmented_window(1, secs(2), 2)),
        ("fixed", RateLimitLayer::fixed_window(1, secs(2))),
    ] {
        let waiting: Result<KeyedRateLimitLayer<&str, _>, _> =
            builder.clone().max_wait(secs(1)).keyed(client).build();
        assert_eq!(waiting.unwrap_err().field(), "max_wait");
        let layer = builder.keyed(client).build().unwrap();
        let handle = layer.handle();
        let start = tokio::time::Instant::now();
        let at = |t: u64| start + ms(t) - tokio::time::Instant::now();
        let mut svc = layer.layer(keyed_probe());
        assert_eq!(send_as(&mut svc, "a", 1).await, Ok(1));
        advance(at(100)).await; // the call has ended
        for t in [500, 1_500, 1_999] {
            advance(at(t)).await;
            handle.sweep();
            assert_eq!(handle.len(), 1, "{kind}: swept at {t} ms");
            if t == 500 {
                advance(at(600)).await;
                assert_eq!(send_as(&mut svc, "a", 2).await, Err(Some(ms(1_400))));
            }
        }
        advance(at(2_000)).await;
        handle.sweep();
        assert_eq!(handle.len(), 0, "{kind}: idle at 2 s");
        advance(at(2_100)).await;
        assert_eq!(send_as(&mut svc, "a", 3).await, Ok(3));
        advance(at(2_500)).await;
        handle.sweep();
        assert_eq!(handle.len(), 1, "{kind}: in use again");
    }
}

#[test]
fn a_keyed_limiter_cannot_wait() {
    let err = RateLimitLayer::gcra(1, secs(1))
        .max_wait(secs(1))
        .keyed::<&str, _>(client)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_wait");
    let err = RateLimitLayer::gcra(1, secs(1))
        .keyed::<&str, _>(client)
        .max_keys(0)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_keys");
}

// ---------------------------------------------------------------- scenarios restated for one permit per call
//
// A palisade call takes exactly one permit, and waiters are served oldest
// first only (the rate-limiting issue asks for FIFO): the scenarios' batch
// requests, zero-permit requests and newest-first queues have no
// counterpart, and are restated here with single permits.

/// A segmented window with a `max_wait`: 2 per 2 s in segments of 1 s,
/// one permit taken at 0 and one at 1 s. Two callers queued at 1 s are
/// admitted in order as each segment slides out, at 2 s and at 3 s.
#[tokio::test(start_paused = true)]
async fn queued_callers_of_a_segmented_window_are_admitted_as_segments_slide_out() {
    let layer = RateLimitLayer::segmented_window(2, secs(2), 2)
        .max_wait(secs(10))
        .build()
        .unwrap();
    let probe = Probe::new(Answer::Now);
    let mut svc = layer.layer(probe.clone());
    assert_eq!(send(&mut svc, 1).await, Ok(1));
    advance(secs(1)).await;
    assert_eq!(send(&mut svc, 2).await, Ok(2));
    let a = spawn_call(&svc, 3);
    tokio::task::yield_now().await;
    let b = spawn_call(&svc, 4);
    tokio::task::yield_now().await;
    assert_eq!(a.await.unwrap(), (Ok(3), secs(1)));
    assert_eq!(b.await.unwrap(), (Ok(4), secs(2)));
    assert_eq!(probe.seen(), [1, 2, 3, 4], "in arrival order");
}

#[tokio::test(start_paused = true)]
async fn queued_callers_are_admitted_in_order_as_the_window_slides() {
    // scenario SW-2 (a), oldest first: limit 2 over two seconds, queue 3.
    let layer = RateLimitLayer::sliding_log(2, secs(2))
        .max_wait(secs(10))
        .max_waiters(3)
        .build()
        .unwrap();
    let probe = Probe::new(Answer::Now);
    let mut svc = layer.layer(probe.clone());
    assert_eq!(send(&mut svc, 1).await, Ok(1));
    assert_eq!(send(&mut svc, 2).await, Ok(2));
    let a = spawn_call(&svc, 3);
    tokio::task::yield_now().await;
    let b = spawn_call(&svc, 4);
    tokio::task::yield_now().await;
    advance(secs(1)).await;
    assert_eq!(
        (probe.calls(), layer.handle().waiting()),
        (2, 2),
        "both still wait"
    );
    assert_eq!(a.await.unwrap(), (Ok(3), secs(2)));
    assert_eq!(b.await.unwrap().0, Ok(4));
    assert_eq!(probe.seen(), [1, 2, 3, 4], "in arrival order");
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_the_newcomer_and_accepts_again_once_served() {
    // scenarios QW-2 (oldest first: the newcomer fails) and SW-3 (the
    // figures, read as snapshots that later calls do not change).
    let layer = RateLimitLayer::gcra(1, secs(1))
        .max_wait(secs(5))
        .max_waiters(1)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Probe::new(Answer::Now));
    assert_eq!(send(&mut svc, 1).await, Ok(1));
    let before = handle.state();
    let a = spawn_call(&svc, 2);
    tokio::task::yield_now().await;
    assert_eq!((handle.state().remaining, handle.waiting()), (0, 1));
    let start = tokio::time::Instant::now();
    assert_eq!(send(&mut svc, 3).await, Err(None), "the queue is full");
    assert_eq!(start.elapsed(), Duration::ZERO, "refused at once");
    assert_eq!(handle.refused(), 1);
    assert_eq!(
        a.await.unwrap(),
        (Ok(2), secs(1)),
        "the waiter keeps its place"
    );
    // Served: the queue takes a newcomer again.
    let c = spawn_call(&svc, 4);
    assert_eq!(c.await.unwrap(), (Ok(4), secs(1)));
    assert_eq!((handle.waiting(), handle.refused()), (0, 1));
    assert_eq!(before.remaining, 0, "an earlier snapshot stays as it was");
}

#[tokio::test(start_paused = true)]
async fn waits_within_a_timeout_to_the_nanosecond() {
    // scenario FW-3: 3 permits per 10 ms, waiting up to 12 ms; nine calls
    // 1 ns apart, from 10 ms. A sliding log frees each permit one window
    // after it was taken (where a fixed window frees them all at the next
    // cycle): the 4th to 6th wait 10 ms - 3 ns each, and the 7th to 9th,
    // whose permits would free 20 ms on, are refused. The limiter's waits
    // are exact to the nanosecond; a waiting caller wakes on tokio's
    // timer, whose resolution is a millisecond, so it may wait up to that
    // much longer (here the first waiter's timer rounds up to the next
    // tick, and the three 1 ns steps of the set-up are on top).
    let layer = RateLimitLayer::sliding_log(3, ms(10))
        .max_wait(ms(12))
        .build()
        .unwrap();
    let svc = layer.layer(Probe::new(Answer::Now));
    advance(ms(10)).await;
    let mut calls = Vec::new();
    for i in 1..=9 {
        advance(Duration::from_nanos(1)).await;
        calls.push(spawn_call(&svc, i));
        tokio::task::yield_now().await;
    }
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap());
    }
    let answers: Vec<_> = results[..6].iter().map(|(r, _)| *r).collect();
    assert_eq!(answers, [Ok(1), Ok(2), Ok(3), Ok(4), Ok(5), Ok(6)]);
    assert!(results[..3].iter().all(|(_, w)| w.is_zero()));
    let exact = ms(10) - Duration::from_nanos(3);
    for (_, waited) in &results[3..6] {
        assert!(
            *waited >= exact && *waited <= exact + ms(1) + Duration::from_nanos(9),
            "{waited:?}"
        );
    }
    for (result, waited) in &results[6..] {
        assert!(result.is_err(), "{result:?}");
        assert!(*waited <= ms(12), "{waited:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_refusal_reports_the_wait_to_the_next_permit() {
    // scenario FW-4, first case: limit 2 per 20 s, both taken.
    let mut svc = RateLimitLayer::sliding_log(2, secs(20))
        .build()
        .unwrap()
        .layer(Probe::new(Answer::Now));
    assert_eq!(send(&mut svc, 1).await, Ok(1));
    assert_eq!(send(&mut svc, 2).await, Ok(2));
    assert_eq!(send(&mut svc, 3).await, Err(Some(secs(20))));
    advance(secs(5)).await;
    assert_eq!(send(&mut svc, 4).await, Err(Some(secs(15))));
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_limiter_makes_a_waiter_wait_one_interval() {
    // scenario TB-11 (waiting): 10 per second, exhausted.
    let layer = RateLimitLayer::gcra(10, secs(1))
        .max_wait(secs(1))
        .build()
        .unwrap();
    let mut svc = layer.layer(Probe::new(Answer::Now));
    for i in 0..10 {
        assert_eq!(send(&mut svc, i).await, Ok(i));
    }
    let start = tokio::time::Instant::now();
    assert_eq!(send(&mut svc, 10).await, Ok(10));
    assert_eq!(start.elapsed(), ms(100));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_outlives_the_layer_and_its_handles() {
    // scenario QW-4 (disposal): the limiter lives as long as any service
    // of it, so dropping the layer and every handle leaves a waiter to be
    // served, not stranded.
    let layer = RateLimitLayer::gcra(1, secs(1))
        .max_wait(secs(5))
        .build()
        .unwrap();
    let mut svc = layer.layer(Probe::new(Answer::Now));
    assert_eq!(send(&mut svc, 1).await, Ok(1));
    let waiter = spawn_call(&svc, 2);
    drop((layer, svc));
    assert_eq!(waiter.await.unwrap(), (Ok(2), secs(1)));
}

// ---------------------------------------------------------- report_state

/// A response with room for the state its limiter reports.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Reported(Option<RateLimitState>);

fn reporter(response: &mut Reported, state: RateLimitState) {
    response.0 = Some(state);
}

fn answers_reported()
-> impl Service<u64, Response = Reported, Error = BoxError, Future: Send> + Clone {
    tower::service_fn(|_: u64| async { Ok::<_, BoxError>(Reported::default()) })
}

#[tokio::test(start_paused = true)]
async fn report_state_hands_each_admitted_response_the_state_it_was_admitted_under() {
    for builder in all_kinds(3, secs(1)) {
        let layer = builder.build().unwrap().report_state(reporter);
        let handle = layer.handle();
        let mut svc = layer.layer(answers_reported());
        for remaining in [2, 1, 0] {
            let reported = svc.ready().await.unwrap().call(0).await.unwrap();
            let state = reported.0.expect("an admitted response is reported");
            assert_eq!((state.limit, state.remaining), (3, remaining));
            assert!(!state.reset.is_zero());
            // The same state the handle reads at this instant.
            assert_eq!(state, handle.state());
        }
        // A refusal has no response to report on; its error names the limit.
        let err = svc.ready().await.unwrap().call(0).await.unwrap_err();
        let ErrorKind::RateLimited(limited) = ErrorKind::of(&err) else {
            panic!("{err}")
        };
        assert_eq!(limited.limit(), Some(3));
    }
}

#[tokio::test(start_paused = true)]
async fn report_state_covers_a_caller_admitted_after_waiting() {
    let layer = RateLimitLayer::sliding_log(1, secs(1))
        .max_wait(secs(2))
        .build()
        .unwrap()
        .report_state(reporter);
    let mut svc = layer.layer(answers_reported());
    let first = svc.ready().await.unwrap().call(0).await.unwrap();
    assert_eq!(first.0.map(|s| s.remaining), Some(0));
    // This one waits a second for the permit, and is reported all the same.
    let second = svc.ready().await.unwrap().call(0).await.unwrap();
    let state = second.0.expect("reported after waiting");
    assert_eq!((state.limit, state.remaining, state.reset), (1, 0, secs(1)));
}

#[tokio::test(start_paused = true)]
async fn report_state_on_a_keyed_limiter_reports_each_keys_own_state() {
    let layer = RateLimitLayer::sliding_log(2, secs(60))
        .keyed(|client: &u64| *client)
        .limit_for(7, 5, secs(60))
        .build()
        .unwrap()
        .report_state(reporter);
    let mut svc = layer.layer(answers_reported());
    async fn state<S>(svc: &mut S, client: u64) -> Result<RateLimitState, BoxError>
    where
        S: Service<u64, Response = Reported, Error = BoxError>,
    {
        let reported = svc.ready().await?.call(client).await?;
        Ok(reported.0.expect("an admitted response is reported"))
    }
    let a = state(&mut svc, 1).await.unwrap();
    assert_eq!((a.limit, a.remaining), (2, 1));
    let b = state(&mut svc, 2).await.unwrap();
    assert_eq!((b.limit, b.remaining), (2, 1), "another key is untouched");
    let own = state(&mut svc, 7).await.unwrap();
    assert_eq!((own.limit, own.remaining), (5, 4), "a key's own limit");
    assert_eq!(state(&mut svc, 1).await.unwrap().remaining, 0);
    let err = state(&mut svc, 1).await.unwrap_err();
    let ErrorKind::RateLimited(limited) = ErrorKind::of(&err) else {
        panic!("{err}")
    };
    assert_eq!(limited.limit(), Some(2));
    assert_eq!(limited.retry_after(), Some(secs(60)));
}
