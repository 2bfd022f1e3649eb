//! Per-call overhead of each layer on a no-op inner service, side by side
//! with tower's own layers, in one run.
//!
//! Each iteration is one whole call: `poll_ready`, `call`, and polling the
//! response future to completion with a no-op waker, inside a tokio
//! current-thread runtime context (timeouts need its timer). Subtract the
//! `bare` row to get a layer's overhead.
//!
//! Rows are named `group/library_variant`: `timeout/tower`,
//! `timeout/tower_resilience`, `timeout/palisade`. Every peer (tower,
//! tower-resilience, governor) is driven exactly as palisade is, on the same
//! inner service, so a group's rows compare like for like.
//!
//! The README's tables come from one run of
//! `cargo bench -p palisade --bench layers --features adaptive,chaos,fallback,http`
//! followed by `scripts/bench-tables`; a row added here needs its line in
//! that script's layout too. With the `metrics` feature the bench also
//! measures what metrics cost each layer; the tables' run leaves it off, as
//! it adds to the layers' cost even without a recorder.

#[path = "../tests/support/noop.rs"]
mod noop;
#[path = "../tests/support/peers.rs"]
mod peers;
#[cfg(feature = "metrics")]
#[path = "../tests/support/recorder.rs"]
mod recorder;

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use noop::{Noop, SecondPoll, call_once};
use palisade::bulkhead::BulkheadLayer;
use palisade::circuit_breaker::{CircuitBreakerBuilder, CircuitBreakerLayer};
use palisade::fallback::{FallbackLayer, Reason, Unmarked};
use palisade::hedge::HedgeLayer;
use palisade::rate_limit::{RateLimitBuilder, RateLimitLayer};
use palisade::retry::{RetryBudget, RetryLayer};
use palisade::timeout::TimeoutLayer;
use tower::retry::budget::TpsBudget;
use tower::{Layer, Service};

fn row<S>(c: &mut Criterion, name: &str, mut svc: S)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    c.bench_function(name, |b| b.iter(|| call_once(&mut svc, black_box(1))));
}

const TIMEOUT: Duration = Duration::from_secs(30);
const LIMIT: usize = 64;

fn palisade_timeout() -> TimeoutLayer {
    TimeoutLayer::new(TIMEOUT).expect("valid timeout")
}

fn palisade_bulkhead() -> BulkheadLayer {
    BulkheadLayer::new(LIMIT).expect("valid limit")
}

fn breaker() -> CircuitBreakerBuilder {
    CircuitBreakerLayer::builder().count_window(100)
}

/// One refused call: `poll_ready`, `call`, and the error out of the future.
fn refuse_once<S>(svc: &mut S) -> bool
where
    S: Service<u64, Response = u64>,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let mut future = pin!(svc.call(1));
    matches!(future.as_mut().poll(&mut cx), Poll::Ready(Err(_)))
}

fn refusal_row<S>(c: &mut Criterion, name: &str, mut svc: S)
where
    S: Service<u64, Response = u64>,
{
    assert!(refuse_once(&mut svc), "{name} should refuse");
    c.bench_function(name, |b| b.iter(|| refuse_once(&mut svc)));
}

/// Two threads call clones of one service at once; reports the aggregate
/// time per call (wall time of the run divided by all calls made).
fn two_thread_row<S>(c: &mut Criterion, name: &str, svc: S, runtime: &tokio::runtime::Runtime)
where
    S: Service<u64, Response = u64> + Clone + Send,
    S::Error: std::fmt::Debug,
{
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            // Timed from the moment both threads are ready to call, so the
            // threads' start-up is not measured and the two run side by
            // side for the whole sample (a thread started late would call
            // alone for a while, and contention would go unmeasured). Each
            // worker reads the clock itself: from the first start to the
            // last end.
            let start = std::sync::Barrier::new(2);
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..2)
                    .map(|_| {
                        let mut svc = svc.clone();
                        let handle = runtime.handle().clone();
                        let start = &start;
                        scope.spawn(move || {
                            let _guard = handle.enter();
                            start.wait();
                            let began = std::time::Instant::now();
                            for i in 0..iters {
                                call_once(&mut svc, black_box(i));
                            }
                            (began, std::time::Instant::now())
                        })
                    })
                    .collect();
                let spans: Vec<_> = workers
                    .into_iter()
                    .map(|worker| worker.join().expect("a worker panicked"))
                    .collect();
                let began = spans.iter().map(|s| s.0).min().expect("two workers");
                let ended = spans.iter().map(|s| s.1).max().expect("two workers");
                (ended - began) / 2
            })
        })
    });
}

/// tower's hedge policy: every request may be hedged.
#[derive(Clone)]
struct HedgeAll;

impl<R: Clone> tower::hedge::Policy<R> for HedgeAll {
    fn clone_request(&self, request: &R) -> Option<R> {
        Some(request.clone())
    }

    fn can_retry(&self, _: &R) -> bool {
        true
    }
}

fn layers(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();

    row(c, "bare", Noop);

    // What one clock read costs: the floor under every row that reads one.
    c.bench_function("clock/std_instant_now", |b| {
        b.iter(|| black_box(std::time::Instant::now()))
    });
    c.bench_function("clock/tokio_instant_now", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    let quanta = quanta::Clock::new();
    c.bench_function("clock/quanta_now", |b| b.iter(|| black_box(quanta.now())));

    row(
        c,
        "timeout/tower",
        tower::timeout::Timeout::new(Noop, TIMEOUT),
    );
    row(
        c,
        "timeout/tower_resilience",
        peers::time_limiter(TIMEOUT).layer(Noop),
    );
    row(c, "timeout/palisade", palisade_timeout().layer(Noop));
    // The inner call has to wait once, so each must arm a timer.
    row(c, "timeout_armed/bare", SecondPoll);
    row(
        c,
        "timeout_armed/tower",
        tower::timeout::Timeout::new(SecondPoll, TIMEOUT),
    );
    row(
        c,
        "timeout_armed/tower_resilience",
        peers::time_limiter(TIMEOUT).layer(SecondPoll),
    );
    row(
        c,
        "timeout_armed/palisade",
        palisade_timeout().layer(SecondPoll),
    );

    row(
        c,
        "bulkhead/tower_concurrency_limit",
        tower::limit::ConcurrencyLimit::new(Noop, LIMIT),
    );
    row(
        c,
        "bulkhead/tower_resilience_fail_fast",
        peers::bulkhead_fail_fast(LIMIT).layer(Noop),
    );
    row(
        c,
        "bulkhead/tower_resilience_waiting",
        peers::bulkhead_waiting(LIMIT).layer(Noop),
    );
    row(c, "bulkhead/palisade", palisade_bulkhead().layer(Noop));
    // The adaptive limit beside the fixed one and beside tower-resilience's
    // (AIMD, the same bounds): a slot, a clock read, and the algorithm's
    // update per call.
    #[cfg(feature = "adaptive")]
    {
        use palisade::adaptive::AdaptiveLayer;
        let aimd = tower_resilience::adaptive::Aimd::builder()
            .initial_limit(LIMIT)
            .min_limit(1)
            .max_limit(LIMIT)
            .build()
            .expect("valid limit");
        row(
            c,
            "adaptive/tower_resilience_aimd",
            tower_resilience::adaptive::AdaptiveLimiterLayer::new(aimd).layer(Noop),
        );
        let aimd = AdaptiveLayer::aimd().limits(LIMIT, 1, LIMIT);
        row(
            c,
            "adaptive/palisade_aimd",
            aimd.build().expect("valid limit").layer(Noop),
        );
        let gradient = AdaptiveLayer::gradient().limits(LIMIT, 1, LIMIT);
        row(
            c,
            "adaptive/palisade_gradient",
            gradient.build().expect("valid limit").layer(Noop),
        );
    }

    let count = breaker().build().expect("valid breaker");
    row(c, "breaker/closed_count", count.layer(Noop));
    let timed = breaker()
        .time_window(Duration::from_secs(30))
        .build()
        .expect("valid breaker");
    row(c, "breaker/closed_time", timed.layer(Noop));
    let slow = breaker()
        .time_window(Duration::from_secs(30))
        .slow_calls(Duration::from_secs(1), 0.5)
        .build()
        .expect("valid breaker");
    row(c, "breaker/closed_time_slow", slow.layer(Noop));
    let open = breaker().build().expect("valid breaker");
    open.handle().open_for(Duration::from_secs(3_600));
    refusal_row(c, "breaker/open_refusal", open.layer(Noop));
    let forced = breaker().build().expect("valid breaker");
    forced.handle().force_open();
    refusal_row(c, "breaker/forced_open_refusal", forced.layer(Noop));
    // tower-resilience's breaker, Closed, and Open for an hour (forced
    // open through its handle, as palisade's `open_for` opens it; its
    // refusal reads the clock to see whether the hour is up).
    let closed = peers::breaker().build().expect("valid breaker");
    row(
        c,
        "breaker/tower_resilience_closed_count",
        closed.layer(Noop),
    );
    let (open, handle) = peers::breaker()
        .wait_duration_in_open(Duration::from_secs(3_600))
        .build_with_handle()
        .expect("valid breaker");
    runtime.block_on(handle.force_open());
    refusal_row(c, "breaker/tower_resilience_open_refusal", open.layer(Noop));
    let shared = breaker().build().expect("valid breaker");
    two_thread_row(
        c,
        "breaker/closed_count_two_threads",
        shared.layer(Noop),
        &runtime,
    );
    two_thread_row(c, "bare_two_threads", Noop, &runtime);

    // Client-side throttling, a healthy upstream (probability 0): beside
    // the Closed breaker's rows.
    #[cfg(feature = "throttle")]
    row(
        c,
        "throttle/healthy",
        palisade::throttle::ThrottleLayer::builder()
            .build()
            .expect("valid throttle")
            .layer(Noop),
    );

    // Fallback, the call succeeding: palisade's pass-through without a
    // cache (classified, handed on), beside tower-resilience's fallback to
    // a value (which clones the request and boxes its future per call).
    row(
        c,
        "fallback/tower_resilience_value",
        tower_resilience::fallback::FallbackLayer::<u64, u64, std::convert::Infallible>::value(0)
            .layer(Noop),
    );
    row(
        c,
        "fallback/palisade_value",
        FallbackLayer::builder()
            .on(Reason::CircuitOpen)
            .on(Reason::Failure)
            .value(0)
            .mark(Unmarked)
            .build()
            .expect("valid fallback")
            .layer(Noop),
    );

    // Hedging, the first attempt answering at once: tower's `Hedge` and
    // palisade's, both at the 90th percentile of latencies after 10.
    row(
        c,
        "hedge/tower",
        tower::hedge::Hedge::new(Noop, HedgeAll, 10, 0.9, Duration::from_secs(10)),
    );
    row(
        c,
        "hedge/palisade",
        HedgeLayer::at_percentile(0.9)
            .build()
            .expect("valid hedge")
            .layer(Noop),
    );

    // Retry, the first attempt succeeding: the budgets' success paths.
    let tps = TpsBudget::new(Duration::from_secs(10), 10, 0.2);
    row(
        c,
        "retry/tower_tps_budget",
        tower::retry::Retry::new(peers::TowerPolicy(std::sync::Arc::new(tps)), Noop),
    );
    let retry = |budget| {
        RetryLayer::builder()
            .budget(budget)
            .build()
            .expect("valid retry")
    };
    row(c, "retry/tower_resilience_token_bucket", peers::retry(Noop));
    row(
        c,
        "retry/palisade_token_budget",
        retry(RetryBudget::default()).layer(Noop),
    );
    row(
        c,
        "retry/palisade_windowed_budget",
        retry(RetryBudget::windowed(Duration::from_secs(10), 10, 0.2)).layer(Noop),
    );
    // Without a budget (tower-resilience's default).
    row(
        c,
        "retry_unbudgeted/tower_resilience",
        peers::retry_unbudgeted(Noop),
    );
    row(
        c,
        "retry_unbudgeted/palisade",
        retry(RetryBudget::unlimited()).layer(Noop),
    );

    stacks(c);
}

/// The usual client stack, each library's four layers (three for tower,
/// which has no breaker) with the settings of the rows above, budgets
/// included: palisade's retry → breaker → timeout → bulkhead; tower's
/// retry → timeout → concurrency limit; tower-resilience's in the order its
/// composition guide gives for a client (retry → breaker → bulkhead →
/// time limiter), as the wind tunnel builds it.
fn stacks(c: &mut Criterion) {
    row(c, "stack/tower", tower_stack());
    let breaker_layer = peers::breaker().build().expect("valid breaker");
    let bulkhead = peers::bulkhead_fail_fast(LIMIT);
    let resilience =
        peers::retry(breaker_layer.layer(bulkhead.layer(peers::time_limiter(TIMEOUT).layer(Noop))));
    row(c, "stack/tower_resilience", resilience);
    let retry = RetryLayer::builder().build().expect("valid retry");
    let breaker_layer = breaker().build().expect("valid breaker");
    let palisade =
        retry.layer(breaker_layer.layer(palisade_timeout().layer(palisade_bulkhead().layer(Noop))));
    row(c, "stack/palisade", palisade.clone());

    // The same stacks, two threads calling clones of one (as two workers of
    // a server do): what they share (budgets, breaker, slots) is contended.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    two_thread_row(c, "stack_two_threads/tower", tower_stack(), &runtime);
    two_thread_row(c, "stack_two_threads/palisade", palisade, &runtime);
}

/// tower's client stack: retry (its `TpsBudget`) → timeout → concurrency
/// limit.
fn tower_stack() -> impl Service<u64, Response = u64, Error = tower::BoxError> + Clone + Send {
    let tps = TpsBudget::new(Duration::from_secs(10), 10, 0.2);
    tower::retry::Retry::new(
        peers::TowerPolicy(std::sync::Arc::new(tps)),
        tower::timeout::Timeout::new(tower::limit::ConcurrencyLimit::new(Noop, LIMIT), TIMEOUT),
    )
}

/// Rate limiting, every call admitted: palisade's algorithms through
/// the layer, beside governor's own direct check (no tower service around
/// it, its TSC clock).
fn rate_limits(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    let build = |b: RateLimitBuilder| b.build().expect("valid limit").layer(Noop);
    let most = (1 << 40) - 1;
    row(
        c,
        "rate_limit/palisade_sliding_window",
        build(RateLimitLayer::sliding_window(most, Duration::from_secs(1))),
    );
    // 2^20 entries over 1 ms: a call admits one and expires about one.
    row(
        c,
        "rate_limit/palisade_sliding_log",
        build(RateLimitLayer::sliding_log(
            1 << 20,
            Duration::from_millis(1),
        )),
    );
    row(
        c,
        "rate_limit/palisade_gcra",
        build(RateLimitLayer::gcra(most, Duration::from_secs(1))),
    );
    row(
        c,
        "rate_limit/palisade_fixed_window",
        build(RateLimitLayer::fixed_window(most, Duration::from_secs(1))),
    );
    // The most segments: a call adds up all 64 counts.
    row(
        c,
        "rate_limit/palisade_segmented_window_64",
        build(RateLimitLayer::segmented_window(
            most,
            Duration::from_secs(1),
            64,
        )),
    );
    let governor =
        governor::RateLimiter::direct(governor::Quota::per_second(std::num::NonZeroU32::MAX));
    c.bench_function("rate_limit/governor_direct_check", |b| {
        b.iter(|| black_box(governor.check()).is_ok())
    });
    // tower-resilience's limiter, each of its algorithms with the limits
    // of palisade's counterpart above.
    use tower_resilience::ratelimiter::WindowType;
    let peer = |config: tower_resilience::ratelimiter::RateLimiterConfigBuilder| {
        config.build().expect("valid limit").layer(Noop)
    };
    let second = Duration::from_secs(1);
    row(
        c,
        "rate_limit/tower_resilience_sliding_counter",
        peer(peers::rate_limiter(
            WindowType::SlidingCounter,
            most,
            second,
        )),
    );
    let millisecond = Duration::from_millis(1);
    row(
        c,
        "rate_limit/tower_resilience_sliding_log",
        peer(peers::rate_limiter(
            WindowType::SlidingLog,
            1 << 20,
            millisecond,
        )),
    );
    // A token bucket of `most` tokens, no burst on top: GCRA's peer.
    row(
        c,
        "rate_limit/tower_resilience_token_bucket",
        peer(peers::rate_limiter(WindowType::Fixed, most, second).burst_size(0)),
    );
    row(
        c,
        "rate_limit/tower_resilience_fixed_window",
        peer(peers::rate_limiter(WindowType::Fixed, most, second)),
    );

    // Chaos with no fault set: one atomic load, against the bare service.
    #[cfg(feature = "chaos")]
    row(
        c,
        "chaos/no_fault",
        palisade::chaos::ChaosLayer::new().layer(Noop),
    );

    // Keyed, one key that already has its limiter (the request is the key).
    row(
        c,
        "rate_limit/palisade_keyed_gcra",
        RateLimitLayer::gcra(most, Duration::from_secs(1))
            .keyed(|request: &u64| *request)
            .build()
            .expect("valid limit")
            .layer(Noop),
    );
    let governor =
        governor::RateLimiter::keyed(governor::Quota::per_second(std::num::NonZeroU32::MAX));
    c.bench_function("rate_limit/governor_keyed_check", |b| {
        b.iter(|| black_box(governor.check_key(&black_box(1u64))).is_ok())
    });
}

/// One whole call of an HTTP-shaped service (`u64` in, `http::Response`
/// out); the response is dropped after.
#[cfg(feature = "http")]
fn http_row<S, B>(c: &mut Criterion, name: &str, mut svc: S)
where
    S: Service<u64, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
{
    c.bench_function(name, |b| {
        b.iter(|| {
            let mut cx = Context::from_waker(Waker::noop());
            assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
            let mut future = pin!(svc.call(black_box(1)));
            loop {
                if let Poll::Ready(result) = future.as_mut().poll(&mut cx) {
                    return black_box(result.unwrap()).status();
                }
            }
        })
    });
}

/// The http module on the success path: the error-response layer passing a
/// response through, and rate-limit headers written on it.
#[cfg(feature = "http")]
fn http(c: &mut Criterion) {
    use palisade::http::{ErrorResponseLayer, RateLimitHeaders};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    let answer = tower::service_fn(|n: u64| {
        std::future::ready(Ok::<_, std::convert::Infallible>(http::Response::new(n)))
    });
    http_row(c, "http/bare_response", answer);
    http_row(
        c,
        "http/error_response_pass_through",
        ErrorResponseLayer::new().layer(answer),
    );
    let window = || RateLimitLayer::sliding_window((1 << 40) - 1, Duration::from_secs(1));
    http_row(
        c,
        "http/sliding_window_no_headers",
        window().build().expect("valid limit").layer(answer),
    );
    http_row(
        c,
        "http/sliding_window_ratelimit_headers",
        window()
            .build()
            .expect("valid limit")
            .report_state(RateLimitHeaders)
            .layer(answer),
    );
}

/// One whole call of an `http::Request` service, the request made anew
/// each time by `request` (its cost is in every row: subtract the bare
/// one).
#[cfg(feature = "http")]
fn request_row<S, B>(
    c: &mut Criterion,
    name: &str,
    request: impl Fn() -> http::Request<()>,
    mut svc: S,
) where
    S: Service<http::Request<()>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
{
    c.bench_function(name, |b| {
        b.iter(|| {
            let mut cx = Context::from_waker(Waker::noop());
            assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
            let mut future = pin!(svc.call(black_box(request())));
            loop {
                if let Poll::Ready(result) = future.as_mut().poll(&mut cx) {
                    return black_box(result.unwrap()).status();
                }
            }
        })
    });
}

/// Deadline support: what a timeout and the header layers cost with no
/// deadline about (the default slot, a request without one, a request
/// without the header) and with one.
#[cfg(feature = "http")]
fn deadlines(c: &mut Criterion) {
    use palisade::deadline::Deadline;
    use palisade::http::{InExtensions, ReadDeadlineLayer, WriteDeadlineLayer};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    let answer = tower::service_fn(|_: http::Request<()>| {
        std::future::ready(Ok::<_, std::convert::Infallible>(http::Response::new(())))
    });
    let plain = || http::Request::new(());
    let carrying = || {
        let mut request = http::Request::new(());
        request.extensions_mut().insert(Deadline::after(TIMEOUT));
        request
    };
    let with_header = || {
        let mut request = http::Request::new(());
        let value = http::HeaderValue::from_static("20S");
        request.headers_mut().insert("grpc-timeout", value);
        request
    };
    request_row(c, "deadline/bare_request", plain, answer);
    request_row(c, "deadline/bare_request_carrying", carrying, answer);
    request_row(c, "deadline/bare_request_with_header", with_header, answer);
    request_row(
        c,
        "deadline/timeout_default_slot",
        plain,
        palisade_timeout().layer(answer),
    );
    let in_extensions = || palisade_timeout().deadline_slot(InExtensions);
    request_row(
        c,
        "deadline/timeout_in_extensions_none_carried",
        plain,
        in_extensions().layer(answer),
    );
    request_row(
        c,
        "deadline/timeout_in_extensions_earlier_carried",
        carrying,
        in_extensions().layer(answer),
    );
    request_row(
        c,
        "deadline/read_no_header",
        plain,
        ReadDeadlineLayer::new().layer(answer),
    );
    request_row(
        c,
        "deadline/read_header",
        with_header,
        ReadDeadlineLayer::new().layer(answer),
    );
    request_row(
        c,
        "deadline/write_none_carried",
        plain,
        WriteDeadlineLayer::new().layer(answer),
    );
    request_row(
        c,
        "deadline/write_carried",
        carrying,
        WriteDeadlineLayer::new().layer(answer),
    );
}

#[cfg(not(feature = "http"))]
fn http(_: &mut Criterion) {}

#[cfg(not(feature = "http"))]
fn deadlines(_: &mut Criterion) {}

/// With the `metrics` feature, each layer whose success path updates a
/// metric, built without a recorder (its handles do nothing) and with one
/// (a recorder of atomics, as cheap as a real one's hot path), in the same
/// run: what the metrics cost a call.
#[cfg(feature = "metrics")]
fn metrics_rows(c: &mut Criterion) {
    let recorded = recorder::Recorded::default();
    let off = breaker().build().expect("valid breaker");
    let on = metrics::with_local_recorder(&recorded, || breaker().build().expect("valid breaker"));
    row(c, "metrics/breaker_closed_count/off", off.layer(Noop));
    row(c, "metrics/breaker_closed_count/recorded", on.layer(Noop));
    let off = palisade_bulkhead();
    let on = metrics::with_local_recorder(&recorded, palisade_bulkhead);
    row(c, "metrics/bulkhead/off", off.layer(Noop));
    row(c, "metrics/bulkhead/recorded", on.layer(Noop));
    let retry = || {
        RetryLayer::builder()
            .budget(RetryBudget::unlimited())
            .build()
            .expect("valid retry")
    };
    let off = retry();
    let on = metrics::with_local_recorder(&recorded, retry);
    row(c, "metrics/retry/off", off.layer(Noop));
    row(c, "metrics/retry/recorded", on.layer(Noop));
    let most = (1 << 40) - 1;
    type Algorithm = fn(u64, Duration) -> RateLimitBuilder;
    let limits: [(&str, Algorithm); 2] = [
        ("sliding_window", RateLimitLayer::sliding_window),
        ("gcra", RateLimitLayer::gcra),
    ];
    for (algorithm, limit) in limits {
        let build = || {
            limit(most, Duration::from_secs(1))
                .build()
                .expect("valid limit")
        };
        let off = build();
        let on = metrics::with_local_recorder(&recorded, build);
        row(
            c,
            &format!("metrics/rate_limit_{algorithm}/off"),
            off.layer(Noop),
        );
        row(
            c,
            &format!("metrics/rate_limit_{algorithm}/recorded"),
            on.layer(Noop),
        );
    }
}

#[cfg(not(feature = "metrics"))]
fn metrics_rows(_: &mut Criterion) {}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = layers, rate_limits, http, deadlines, metrics_rows
}
criterion_main!(benches);
