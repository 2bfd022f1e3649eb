//! The client preset: the recommended stack as one layer, one name, one
//! configuration checked across its layers.

mod support;

use std::time::Duration;

use palisade::circuit_breaker::{CircuitBreakerConfig, State};
use palisade::preset::{ClientConfig, ClientLayer};
use palisade::retry::{Backoff, Jitter};
use palisade::{BoxError, ErrorKind};
use support::{Answer, Probe};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[tokio::test(start_paused = true)]
async fn the_preset_keeps_the_tower_contract() {
    support::check_tower_contract(|probe| {
        ClientLayer::builder().seed(1).build().unwrap().layer(probe)
    })
    .await;
}

/// One name, given once, names every layer; a layer's own table may still
/// name it otherwise.
#[test]
fn one_name_names_every_layer() {
    let handles = ClientLayer::builder()
        .name("inventory")
        .build()
        .unwrap()
        .handles();
    assert_eq!(handles.retry.name(), "inventory");
    assert_eq!(handles.throttle.name(), "inventory");
    assert_eq!(handles.circuit_breaker.name(), "inventory");
    assert_eq!(handles.bulkhead.name(), "inventory");

    let mut breaker = CircuitBreakerConfig::default();
    breaker.name = Some("inventory-breaker".into());
    let handles = ClientLayer::builder()
        .name("inventory")
        .circuit_breaker(breaker)
        .build()
        .unwrap()
        .handles();
    assert_eq!(handles.circuit_breaker.name(), "inventory-breaker");
    assert_eq!(handles.retry.name(), "inventory");
}

/// The preset's retry budget is half a retry per request (a budget left
/// unset); the rest is each layer's own defaults.
#[test]
fn the_defaults_are_the_recommended_stack() {
    let config = ClientConfig::default();
    assert_eq!(config.retry.budget, None);
    assert!(uses_windowed_budget(
        ClientLayer::from_config(config.clone()).unwrap()
    ));
    assert_eq!(config.circuit_breaker, CircuitBreakerConfig::default());
    assert_eq!(config.retry.max_attempts, 3);
    assert_eq!(
        (config.total_timeout, config.attempt_timeout),
        (secs(30), secs(10))
    );
    assert_eq!(config.bulkhead.max_concurrent, 100);
}

/// Whether a built preset's retry runs the windowed budget.
fn uses_windowed_budget<C, R, D>(layer: ClientLayer<C, R, D>) -> bool {
    format!("{layer:?}").contains("budget: Windowed")
}

/// A dependency that hangs: each attempt is cut at the attempt timeout (a
/// failure the breaker counts), retried, and the caller's whole wait is
/// bounded by the total timeout; no bulkhead slot is left held.
#[tokio::test(start_paused = true)]
async fn a_hung_dependency_costs_the_caller_at_most_the_total_timeout() {
    let probe = Probe::new(Answer::After(secs(3600)));
    let layer = ClientLayer::builder()
        .name("inventory")
        .total_timeout(secs(1))
        .attempt_timeout(ms(300))
        .build()
        .unwrap();
    let handles = layer.handles();
    let client = layer.layer(probe.clone());
    let started = Instant::now();
    let err: BoxError = client.oneshot(7).await.unwrap_err();
    let waited = started.elapsed();
    assert!(
        matches!(ErrorKind::of(&err), ErrorKind::Elapsed(_)),
        "{err}"
    );
    assert!(waited <= secs(1), "the caller waited {waited:?}");
    // The first attempt timed out at 300 ms and was retried at least once.
    assert!(probe.calls() >= 2, "{} attempts", probe.calls());
    assert_eq!(handles.retry.counts().retries, probe.calls() as u64 - 1);
    let snapshot = handles.circuit_breaker.snapshot();
    assert!(
        snapshot.failures >= 2,
        "the breaker saw the cut attempts as failures: {snapshot:?}"
    );
    assert_eq!(handles.bulkhead.in_flight(), 0);
    assert_eq!(probe.in_flight(), 0);
}

/// A dependency that is down: the breaker opens, and later requests are
/// refused at once (by the breaker, or by the throttle in front of it,
/// which by then refuses most calls too), without being retried.
#[tokio::test(start_paused = true)]
async fn a_dependency_that_is_down_is_refused_at_once_and_not_retried() {
    let probe = Probe::new(Answer::Fail);
    // Open for a minute, so that the test's requests all fall in one open
    // period (its backoff sleeps move the paused clock on).
    let mut breaker = CircuitBreakerConfig::default();
    breaker.open_for = secs(60);
    let layer = ClientLayer::builder()
        .seed(3)
        .circuit_breaker(breaker)
        .build()
        .unwrap();
    let handles = layer.handles();
    let client = layer.layer(probe.clone());
    for n in 0..40 {
        let _ = client.clone().oneshot(n).await;
    }
    assert_eq!(handles.circuit_breaker.state(), State::Open);
    let calls = probe.calls();
    let retries = handles.retry.counts().retries;
    for n in 100..120 {
        let started = Instant::now();
        let err = client.clone().oneshot(n).await.unwrap_err();
        assert!(
            matches!(
                ErrorKind::of(&err),
                ErrorKind::CircuitOpen(_) | ErrorKind::Throttled(_)
            ),
            "{err}"
        );
        assert!(started.elapsed().is_zero(), "answered at once");
    }
    assert_eq!(probe.calls(), calls, "nothing reached the dependency");
    assert_eq!(handles.retry.counts().retries, retries, "not retried");
}

/// With light traffic and the breaker's `consecutive_failures`, as the
/// preset's docs advise, the breaker, not the throttle, answers a
/// dependency that goes down: 15 failures in a row open it before failures
/// outnumber the throttle's accepts, so callers get `CircuitOpen`, and the
/// dependency is used again after the open period with no throttle left
/// refusing (the throttle forgets its failures once the breaker refuses).
#[tokio::test(start_paused = true)]
async fn with_light_traffic_the_breaker_answers_an_outage_before_the_throttle() {
    let probe = Probe::new(Answer::Now);
    let mut breaker = CircuitBreakerConfig::default();
    breaker.consecutive_failures = Some(15);
    let layer = ClientLayer::builder()
        .seed(5)
        .circuit_breaker(breaker)
        .build()
        .unwrap();
    let handles = layer.handles();
    let client = layer.layer(probe.clone());
    // A call a second: 25 accepts in the throttle's window.
    for n in 0..25 {
        client.clone().oneshot(n).await.unwrap();
        tokio::time::sleep(ms(400)).await;
    }
    probe.set_answer(Answer::Fail);
    let mut kinds = Vec::new();
    for n in 0..30 {
        let err = client.clone().oneshot(n).await.unwrap_err();
        kinds.push(match ErrorKind::of(&err) {
            ErrorKind::CircuitOpen(_) => "open",
            ErrorKind::Throttled(_) => "throttled",
            _ => "failed",
        });
        tokio::time::sleep(ms(10)).await;
    }
    assert!(!kinds.contains(&"throttled"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"open"), "{kinds:?}");
    assert_eq!(handles.throttle.probability(), 0.0);
    // Back after the open period: every call served.
    probe.set_answer(Answer::Now);
    tokio::time::sleep(ms(200)).await;
    for n in 0..10 {
        client.clone().oneshot(n).await.unwrap();
    }
    assert_eq!(handles.circuit_breaker.state(), State::Closed);
}

/// Settings that only make sense together are refused, naming the field.
#[test]
fn settings_that_contradict_each_other_are_refused() {
    let b = ClientLayer::builder;
    let breaker = |edit: fn(&mut CircuitBreakerConfig)| {
        let mut config = CircuitBreakerConfig::default();
        edit(&mut config);
        config
    };
    let cases = [
        (
            b().total_timeout(secs(1)).attempt_timeout(secs(2)),
            "attempt_timeout",
        ),
        (
            b().circuit_breaker(breaker(|c| c.minimum_calls = Some(3))),
            "circuit_breaker.minimum_calls",
        ),
        (
            b().circuit_breaker(breaker(|c| c.consecutive_failures = Some(2))),
            "circuit_breaker.consecutive_failures",
        ),
        (
            b().circuit_breaker(breaker(|c| {
                c.slow_call_duration = Some(Duration::from_secs(10));
                c.slow_call_rate = Some(0.5);
            })),
            "circuit_breaker.slow_call_duration",
        ),
        (
            b().circuit_breaker(breaker(|c| c.time_window = Some(Duration::from_secs(5)))),
            "circuit_breaker.time_window",
        ),
        (b().total_timeout(Duration::ZERO), "total_timeout"),
    ];
    for (builder, field) in cases {
        let err = builder.build().unwrap_err();
        assert_eq!((err.layer(), err.field()), ("client", field), "{err}");
    }
    // The backoff's worst case counts: three attempts with full jitter may
    // wait up to 200 + 400 ms, which fits in 1 s; with 600 ms constant
    // delays they may wait 1.2 s, which does not.
    let mut retry = ClientConfig::default().retry;
    retry.backoff = Backoff::constant(ms(600));
    let err = b()
        .total_timeout(secs(1))
        .attempt_timeout(ms(300))
        .retry(retry)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "retry.backoff", "{err}");
    b().total_timeout(secs(1))
        .attempt_timeout(ms(300))
        .build()
        .unwrap();
    // A layer's own rule is that layer's error.
    let err = b()
        .circuit_breaker(breaker(|c| c.failure_rate = 2.0))
        .build()
        .unwrap_err();
    assert_eq!(
        (err.layer(), err.field()),
        ("circuit_breaker", "failure_rate")
    );
}

/// Scenario PS-1 (variant: palisade's own defaults are shorter than the
/// scenario's, so each case sets the scenario's: total 30 s, attempt 10 s,
/// three retries from 2 s with jitter, a 30 s breaker window). Timeouts,
/// retry delays and the breaker window are checked against each other,
/// equality allowed, and every rule broken is reported at once.
#[test]
fn the_timeouts_are_checked_against_each_other_and_every_violation_is_reported() {
    let scenario = || {
        let mut retry = ClientConfig::default().retry;
        retry.max_attempts = 4;
        retry.backoff = Backoff::exponential(secs(2)).jitter(Jitter::Full);
        let mut breaker = CircuitBreakerConfig::default();
        breaker.time_window = Some(secs(30));
        ClientLayer::builder()
            .total_timeout(secs(30))
            .attempt_timeout(secs(10))
            .retry(retry)
            .circuit_breaker(breaker)
    };
    let window = |length| {
        let mut breaker = CircuitBreakerConfig::default();
        breaker.time_window = Some(length);
        breaker
    };
    let retry_with = |attempts, backoff| {
        let mut retry = ClientConfig::default().retry;
        retry.max_attempts = attempts;
        retry.backoff = backoff;
        retry
    };
    let fields = |err: palisade::ConfigError| -> Vec<&'static str> {
        err.violations().map(|(field, _)| field).collect()
    };

    // (a) the defaults: 2 + 4 + 8 s of delay at worst fit in 30 s.
    scenario().build().unwrap();
    // (b) an attempt longer than the total, naming both (the 14 s of
    // delays do not fit in 2 s either).
    let err = scenario()
        .attempt_timeout(secs(3))
        .total_timeout(secs(2))
        .build()
        .unwrap_err();
    assert_eq!(
        fields(err.clone()),
        ["attempt_timeout", "retry.backoff"],
        "{err}"
    );
    assert!(
        err.rule().contains("2s") && err.rule().contains("3s"),
        "{err}"
    );
    // (c) a total of 2 s under the 10 s attempt (and the 14 s of delays).
    let err = scenario().total_timeout(secs(2)).build().unwrap_err();
    assert!(fields(err.clone()).contains(&"attempt_timeout"), "{err}");
    // (d) a base delay of a day.
    let err = scenario()
        .retry(retry_with(4, Backoff::exponential(secs(86_400))))
        .build()
        .unwrap_err();
    assert_eq!(fields(err.clone()), ["retry.backoff"], "{err}");
    assert!(err.rule().contains("30s"), "{err}");
    // (e) attempt = total = 30 s, a window of exactly twice that.
    scenario()
        .attempt_timeout(secs(30))
        .circuit_breaker(window(secs(60)))
        .build()
        .unwrap();
    // (f) as (e), with a 15 s window.
    let err = scenario()
        .attempt_timeout(secs(30))
        .circuit_breaker(window(secs(15)))
        .build()
        .unwrap_err();
    assert_eq!(
        fields(err.clone()),
        ["circuit_breaker.time_window"],
        "{err}"
    );
    assert!(
        err.rule().contains("60s") && err.rule().contains("15s"),
        "{err}"
    );
    // (g) total 1 s, window 1 s, attempt left at 10 s: all three at once.
    let err = scenario()
        .total_timeout(secs(1))
        .circuit_breaker(window(secs(1)))
        .build()
        .unwrap_err();
    assert_eq!(
        fields(err.clone()),
        [
            "attempt_timeout",
            "retry.backoff",
            "circuit_breaker.time_window"
        ],
        "{err}"
    );
    let shown = err.to_string();
    for field in ["attempt_timeout", "retry.backoff", "time_window"] {
        assert!(shown.contains(field), "{shown}");
    }
    // (h) one retry after a constant delay equal to the total.
    scenario()
        .retry(retry_with(2, Backoff::constant(secs(30))))
        .build()
        .unwrap();
}

/// Scenario PS-3 (second half): one client overrides the process-wide
/// defaults (attempt 60 s, total 180 s) and its 45 s call succeeds, while a
/// client on the defaults cuts the same call at its 10 s attempt timeout;
/// each client's settings in force read back from its layer.
#[tokio::test(start_paused = true)]
async fn one_client_overrides_the_defaults_and_each_reads_back_its_own() {
    let defaults = ClientConfig::default();
    let mut slow_reports = defaults.clone();
    slow_reports.name = Some("reports".into());
    slow_reports.attempt_timeout = secs(60);
    slow_reports.total_timeout = secs(180);
    let reports = ClientLayer::from_config(slow_reports).unwrap();
    let mut catalog = defaults.clone();
    catalog.name = Some("catalog".into());
    let catalog = ClientLayer::from_config(catalog).unwrap();

    let endpoint = Probe::new(Answer::After(secs(45)));
    let started = Instant::now();
    reports.layer(endpoint.clone()).oneshot(1).await.unwrap();
    assert_eq!(started.elapsed(), secs(45));

    let started = Instant::now();
    let err = catalog.layer(endpoint).oneshot(1).await.unwrap_err();
    assert_eq!(
        started.elapsed(),
        secs(30),
        "three attempts, then the total"
    );
    assert!(
        matches!(ErrorKind::of(&err), ErrorKind::Elapsed(_)),
        "{err}"
    );

    let read = |layer: &ClientLayer| {
        let config = layer.config();
        (
            config.name.clone().unwrap(),
            config.attempt_timeout,
            config.total_timeout,
            config.retry.name.clone().unwrap(),
        )
    };
    assert_eq!(
        read(&reports),
        ("reports".into(), secs(60), secs(180), "reports".into())
    );
    assert_eq!(
        read(&catalog),
        ("catalog".into(), secs(10), secs(30), "catalog".into())
    );
    assert!(
        catalog.config().retry.budget.is_some(),
        "the preset's budget"
    );
}

/// The whole stack from one file, each layer's table its own `*Config`.
#[cfg(feature = "serde")]
#[test]
fn the_preset_reads_from_a_file() {
    let config: ClientConfig = toml::from_str(
        r#"
        name = "inventory"
        total_timeout = "5s"
        attempt_timeout = "1s"

        [retry]
        max_attempts = 2

        [circuit_breaker]
        open_for = "1s"

        [bulkhead]
        max_concurrent = 8
        "#,
    )
    .unwrap();
    let built = ClientLayer::builder()
        .name("inventory")
        .total_timeout(secs(5))
        .attempt_timeout(secs(1))
        .max_attempts(2)
        .max_concurrent(8);
    let mut breaker = CircuitBreakerConfig::default();
    breaker.open_for = secs(1);
    let built = built.circuit_breaker(breaker);
    // A table is the layer's config: what it leaves out takes the layer's
    // defaults, and a retry table that names no budget keeps the preset's.
    let mut retry = palisade::retry::RetryConfig::default();
    retry.max_attempts = 2;
    let built = built.retry(retry);
    assert_eq!(built.config(), &config);
    let layer = ClientLayer::from_config(config).unwrap();
    assert_eq!(layer.handles().bulkhead.max_concurrent(), 8);
    assert!(uses_windowed_budget(layer));
    // One that names a budget gets it.
    let tokens: ClientConfig = toml::from_str(
        "[retry]\nbudget = { kind = \"tokens\", max_tokens = 10, token_ratio = 0.1 }",
    )
    .unwrap();
    assert!(!uses_windowed_budget(
        ClientLayer::from_config(tokens).unwrap()
    ));
    assert!(toml::from_str::<ClientConfig>("attempt = \"1s\"").is_err());
}

/// The server preset drops work nobody waits for: a request runs at most
/// its timeout, or the caller's deadline (`grpc-timeout`) if sooner, and
/// the answer is a 504.
#[cfg(all(feature = "http", feature = "rate-limit"))]
#[tokio::test(start_paused = true)]
async fn the_server_preset_cuts_work_at_the_timeout_or_the_callers_deadline() {
    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::Full;
    use palisade::preset::ServerLayer;
    use tower::{ServiceBuilder, service_fn};

    let slow = service_fn(|_: Request<Full<Bytes>>| async {
        tokio::time::sleep(secs(60)).await;
        Ok::<_, BoxError>(Response::new(Full::new(Bytes::from("late"))))
    });
    let server = ServerLayer::builder().timeout(secs(2)).build().unwrap();
    let app = ServiceBuilder::new().layer(server).service(slow);
    for (deadline, waited) in [(None, secs(2)), (Some("500m"), ms(500))] {
        let mut request = Request::new(Full::default());
        if let Some(deadline) = deadline {
            request
                .headers_mut()
                .insert("grpc-timeout", deadline.parse().unwrap());
        }
        let started = Instant::now();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(started.elapsed(), waited, "{deadline:?}");
    }
}

/// Scenario PS-2 (variant: palisade's layers share the preset's one name and
/// tell themselves apart by their kind, which every error and `ConfigError`
/// carries): over HTTP, a GET that fails twice then succeeds is retried and
/// each of its three attempts reaches the breaker; a POST whose attempt
/// timed out, with no response to read anything from, is not retried: the
/// replay rule decides on the request, before it is sent.
#[cfg(feature = "http")]
#[tokio::test(start_paused = true)]
async fn the_preset_retries_a_get_but_never_a_post_whose_attempt_timed_out() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http::{Method, Request, Response, StatusCode};
    use http_body_util::Full;
    use palisade::http::{IdempotentReplay, StatusClassifier};
    use tower::service_fn;

    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let upstream = service_fn(move |request: Request<Full<Bytes>>| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        async move {
            if request.method() == Method::POST {
                // Hangs: the attempt timeout ends it, with no response.
                tokio::time::sleep(secs(3600)).await;
            }
            let mut response = Response::new(Full::new(Bytes::from("ok")));
            if n < 2 {
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            Ok::<_, BoxError>(response)
        }
    });
    let layer = ClientLayer::builder()
        .name("catalog")
        .total_timeout(secs(10))
        .attempt_timeout(secs(1))
        .classifier(StatusClassifier::new())
        .replay(IdempotentReplay::new())
        .build()
        .unwrap();
    let handles = layer.handles();
    let client = layer.layer(upstream);

    let get = Request::get("/items/1").body(Full::default()).unwrap();
    let response = client.clone().oneshot(get).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(handles.circuit_breaker.snapshot().calls, 3, "every attempt");
    assert_eq!(handles.retry.counts().retries, 2);

    let post = Request::post("/orders").body(Full::default()).unwrap();
    let err = client.clone().oneshot(post).await.unwrap_err();
    assert!(
        matches!(ErrorKind::of(&err), ErrorKind::Elapsed(_)),
        "{err}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 4, "the POST went once");
    assert_eq!(handles.retry.counts().retries, 2, "and was not retried");
}

/// Scenario PS-3 (variant: the first half; palisade has no client of its
/// own with a default timeout underneath): a request that keeps retrying
/// runs until the preset's total timeout of 150 s, and nothing below it
/// cuts it sooner with another error.
#[tokio::test(start_paused = true)]
async fn nothing_below_the_preset_cuts_a_request_before_its_total_timeout() {
    let probe = Probe::new(Answer::After(secs(3600)));
    let mut retry = ClientConfig::default().retry;
    retry.max_attempts = 150;
    retry.backoff = Backoff::constant(ms(500)).jitter(palisade::retry::Jitter::Full);
    retry.budget = Some(palisade::retry::RetryBudget::unlimited());
    let mut breaker = CircuitBreakerConfig::default();
    breaker.failure_rate = 1.0;
    breaker.minimum_calls = Some(200);
    breaker.count_window = Some(1_000);
    let layer = ClientLayer::builder()
        .total_timeout(secs(150))
        .attempt_timeout(secs(1))
        .retry(retry)
        .circuit_breaker(breaker)
        .throttle({
            let mut throttle = palisade::throttle::ThrottleConfig::default();
            throttle.min_requests = u64::MAX;
            throttle
        })
        .build()
        .unwrap();
    let client = layer.layer(probe.clone());
    let started = Instant::now();
    let err = client.oneshot(1).await.unwrap_err();
    assert_eq!(started.elapsed(), secs(150));
    match ErrorKind::of(&err) {
        ErrorKind::Elapsed(elapsed) => assert_eq!(elapsed.timeout(), secs(150), "{err}"),
        _ => panic!("{err}"),
    }
    assert!(probe.calls() > 100, "{} attempts", probe.calls());
}
