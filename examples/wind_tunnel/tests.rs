//! Checks of the tunnel's measurements themselves, on the paused clock:
//! `cargo test --example wind_tunnel`.

use std::time::Duration;

use palisade::BoxError;
use palisade::bulkhead::BulkheadLayer;
use palisade::retry::{Backoff, RetryBudget, RetryLayer};
use tower::Layer;
use tower::util::BoxCloneService;

use super::*;
use crate::stacks::Stack;

fn short_run(seed: u64) -> RunSettings {
    RunSettings {
        rate: 500,
        duration: Duration::from_secs(2),
        deadline: Duration::from_secs(1),
        seed,
    }
}

fn stack(name: &str) -> stacks::Build {
    STACKS
        .iter()
        .find(|s| s.name == name)
        .expect("a stack of that name")
        .build
}

async fn run(profile: Profile, build: stacks::Build, seed: u64) -> Report {
    run_for(profile, build, short_run(seed)).await
}

async fn run_for(profile: Profile, build: stacks::Build, run: RunSettings) -> Report {
    measure(
        profile,
        build,
        &StackSettings {
            seed: run.seed,
            palisade_config: None,
        },
        run,
    )
    .await
    .expect("the stack builds")
}

/// A full 10 s run, long enough for all three outages.
async fn full_outage_run(build: stacks::Build) -> drive::Outage {
    let run = RunSettings {
        duration: Duration::from_secs(10),
        ..short_run(1)
    };
    let report = run_for(Profile::Outage, build, run).await;
    report.outage.expect("the outage profile measures recovery")
}

#[tokio::test(start_paused = true)]
async fn the_bare_stack_gets_the_upstreams_success_rate_at_one_attempt_per_request() {
    let report = run(Profile::SteadyErrors, stack("none"), 1).await;
    assert_eq!(report.requests, 1000);
    assert!((0.66..0.74).contains(&report.success_rate), "{report:?}");
    assert_eq!(report.amplification, 1.0);
    // One call each, of 5 to 20 ms: so are the callers' answers.
    assert!(
        report.p50 >= Duration::from_millis(5) && report.p99 <= Duration::from_millis(20),
        "{report:?}"
    );
}

/// A retry of three attempts with no budget against 30 % errors costs
/// 1 + 0.3 + 0.09 attempts and fails 0.3³ of requests: the attempts a
/// request's retries send are all counted to it.
fn unbudgeted_retry(upstream: Upstream, _: &StackSettings) -> Result<Stack, BoxError> {
    let retry = RetryLayer::builder()
        .max_attempts(3)
        .budget(RetryBudget::unlimited())
        .backoff(Backoff::constant(Duration::from_millis(10)))
        .build()?;
    Ok(BoxCloneService::new(retry.layer(upstream)))
}

#[tokio::test(start_paused = true)]
async fn amplification_counts_every_attempt_of_a_request() {
    let report = run(Profile::SteadyErrors, unbudgeted_retry, 1).await;
    assert!((1.33..1.45).contains(&report.amplification), "{report:?}");
    assert!((0.955..0.995).contains(&report.success_rate), "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn the_bare_stack_recovers_from_every_outage_at_once() {
    let run = RunSettings {
        duration: Duration::from_secs(10),
        ..short_run(1)
    };
    let report = run_for(Profile::Outage, stack("none"), run).await;
    let outage = report
        .outage
        .clone()
        .expect("the outage profile measures recovery");
    assert_eq!(outage.recoveries, [Some(Duration::ZERO); 3]);
    assert_eq!(outage.amplification, 1.0);
    // Down for 0.35 + 1.35 + 3.35 s of the 10 s run: those requests, and
    // no others, fail.
    assert!((report.success_rate - 0.495).abs() < 0.002, "{report:?}");
}

/// Recovery is found to the request, not to a window: the first success
/// that opens 100 ms of at least 90 % successes.
#[test]
fn recovery_is_measured_to_the_request() {
    // A request every 2 ms from 0.9 s; up at 1 s; everything fails until
    // 1.036 s, but for a lone success at 1.010 s.
    let answers: Vec<drive::Answer> = (0..300)
        .map(|i| {
            let sent = Duration::from_millis(900 + 2 * i as u64);
            let ok = sent >= Duration::from_millis(1036) || sent == Duration::from_millis(1010);
            drive::Answer {
                id: i,
                sent,
                latency: Duration::from_millis(10),
                ok,
                degraded: false,
            }
        })
        .collect();
    let up = Duration::from_secs(1);
    let recovery = |until| drive::recovery(&answers, up, until);
    assert_eq!(
        recovery(Duration::from_secs(2)),
        Some(Duration::from_millis(36))
    );
    // The window must end before the next outage (or the run) does.
    assert_eq!(recovery(Duration::from_millis(1135)), None);
    assert_eq!(
        recovery(Duration::from_millis(1136)),
        Some(Duration::from_millis(36))
    );
}

/// A breaker open for 30 s, longer than the run.
fn breaker_open_30_s(upstream: upstream::Upstream, _: &StackSettings) -> Result<Stack, BoxError> {
    let breaker = palisade::circuit_breaker::CircuitBreakerLayer::builder()
        .open_for(Duration::from_secs(30))
        .build()?;
    Ok(BoxCloneService::new(breaker.layer(upstream)))
}

#[tokio::test(start_paused = true)]
async fn a_breaker_still_open_at_the_end_of_the_run_never_recovers() {
    let outage = full_outage_run(breaker_open_30_s).await;
    assert_eq!(outage.recoveries, [None; 3], "{outage:?}");
    assert_eq!((outage.worst(), outage.mean()), (None, None));
}

/// The outages end part-way into a 1 s open period, so a breaker open 1 s
/// (`palisade`) is seen to cost most of a second after each, and one open
/// 100 ms (palisade's default) less than a tenth of that.
#[tokio::test(start_paused = true)]
async fn recovery_tells_a_long_open_period_from_a_short_one() {
    let short = full_outage_run(stack("palisade-defaults")).await;
    let worst = short.worst().expect("recovered");
    assert!(
        worst > Duration::ZERO && worst <= Duration::from_millis(150),
        "{short:?}"
    );
    let long = full_outage_run(stack("palisade")).await;
    let mean = long.mean().expect("recovered");
    assert!(mean >= Duration::from_millis(500), "{long:?}");
    assert!(long.worst() >= Some(mean) && short.mean() <= Some(worst));
}

fn bulkhead_of_eight(upstream: Upstream, _: &StackSettings) -> Result<Stack, BoxError> {
    Ok(BoxCloneService::new(BulkheadLayer::new(8)?.layer(upstream)))
}

#[tokio::test(start_paused = true)]
async fn peak_concurrency_reaches_a_bulkhead_and_never_passes_it() {
    // 500 ms calls pile up past eight without a bulkhead...
    let bare = run(Profile::SlowTail, stack("none"), 1).await;
    assert!(bare.peak_concurrency > 8, "{bare:?}");
    // ...and fill it exactly with one.
    let limited = run(Profile::SlowTail, bulkhead_of_eight, 1).await;
    assert_eq!(limited.peak_concurrency, 8, "{limited:?}");
}

#[tokio::test(start_paused = true)]
async fn retries_cannot_serve_more_than_the_overloaded_upstreams_capacity() {
    // 250 calls/s of capacity against 500 offered: about half served.
    let report = run(Profile::Overload, unbudgeted_retry, 1).await;
    assert!(report.success_rate < 0.55, "{report:?}");
    assert!(report.amplification > 1.5, "{report:?}");
    // Five workers and a queue of five.
    assert_eq!(report.peak_concurrency, 10, "{report:?}");
}

/// Refusals that hold a worker 5 ms leave the workers' 5000 ms a second
/// for x served calls of 20 ms and 500 - x refused ones: x = 500 / 3.
#[tokio::test(start_paused = true)]
async fn refusals_that_cost_the_upstream_capacity_serve_fewer_calls() {
    let free = run(Profile::Overload, stack("none"), 1).await;
    assert!(free.success_rate > 0.49, "{free:?}");
    let costly = run(Profile::OverloadCostly, stack("none"), 1).await;
    assert!((0.31..0.36).contains(&costly.success_rate), "{costly:?}");
    assert_eq!(costly.amplification, 1.0);
    // Refused calls wait for a worker too, so more are inside at once.
    assert!(costly.peak_concurrency > 10, "{costly:?}");
    // Retries of refused calls now cost what they would have served...
    let retried = run(Profile::OverloadCostly, unbudgeted_retry, 1).await;
    assert!(
        retried.success_rate < costly.success_rate - 0.05,
        "{retried:?}"
    );
}

/// ...and a stack that refuses locally part of what the upstream would
/// refuse leaves it that capacity: the recommended stack, with its
/// throttle, serves more than the defaults, and sends fewer attempts, though
/// its budget allows more retries.
#[tokio::test(start_paused = true)]
async fn the_throttle_serves_more_when_refusals_cost_capacity() {
    let run = RunSettings {
        duration: Duration::from_secs(10),
        ..short_run(1)
    };
    let plain = run_for(Profile::OverloadCostly, stack("palisade-defaults"), run).await;
    let recommended = run_for(Profile::OverloadCostly, stack("palisade-recommended"), run).await;
    assert!(
        recommended.success_rate > plain.success_rate + 0.03,
        "{recommended:?} against {plain:?}"
    );
    assert!(
        recommended.amplification < plain.amplification,
        "{recommended:?}"
    );
}

/// Where errors do not come from load (the brown-out ramp), the
/// recommended stack's budget of half a retry per request keeps retrying
/// after the token budget of the defaults has stopped (once a third of
/// attempts fail), and serves clearly more, within 1.5 attempts per
/// request.
#[tokio::test(start_paused = true)]
async fn the_recommended_budget_keeps_retrying_through_a_brown_out() {
    let run = RunSettings {
        duration: Duration::from_secs(10),
        ..short_run(1)
    };
    let plain = run_for(Profile::BrownOut, stack("palisade-defaults"), run).await;
    let recommended = run_for(Profile::BrownOut, stack("palisade-recommended"), run).await;
    assert!(
        recommended.success_rate > plain.success_rate + 0.1,
        "{recommended:?} against {plain:?}"
    );
    assert!(recommended.amplification <= 1.5, "{recommended:?}");
}

#[tokio::test(start_paused = true)]
async fn a_seed_repeats_a_run_and_another_seed_changes_it() {
    let first = run(Profile::BrownOut, stack("palisade"), 7).await;
    assert_eq!(run(Profile::BrownOut, stack("palisade"), 7).await, first);
    assert_ne!(run(Profile::BrownOut, stack("palisade"), 8).await, first);
}

/// The faults and the stacks draw from streams of their own: with one seed
/// for both, tower's jitter and palisade's throttle (both a splitmix64
/// sequence from their seed) drew the very numbers that decided the faults.
#[test]
fn the_faults_and_the_stacks_draw_from_separate_streams() {
    for seed in [0, 1, 42, 43] {
        let seeds = upstream::Seeds::of(seed);
        assert_ne!(seeds.faults, seeds.stacks);
        let draws = |seed| {
            let mut rng = upstream::Rng::new(seed);
            (0..10_000).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        let faults: std::collections::HashSet<u64> = draws(seeds.faults).into_iter().collect();
        let shared = draws(seeds.stacks)
            .into_iter()
            .filter(|x| faults.contains(x))
            .count();
        assert_eq!(shared, 0, "seed {seed}: the streams overlap");
    }
    // Neighbouring run seeds (--runs uses seed, seed + 1, ...) do not give
    // neighbouring fault seeds either.
    assert_ne!(
        upstream::Seeds::of(43).faults,
        upstream::Seeds::of(42).faults.wrapping_add(1)
    );
}

/// The sample file builds the same stack as `palisade`, so it measures
/// the same.
#[cfg(feature = "serde")]
#[tokio::test(start_paused = true)]
async fn a_palisade_config_file_builds_the_stack_it_describes() {
    let settings = StackSettings {
        seed: 3,
        palisade_config: Some(include_str!("palisade.toml").to_owned()),
    };
    let from_file = measure(
        Profile::Outage,
        stack("palisade-file"),
        &settings,
        short_run(3),
    )
    .await;
    let from_code = run(Profile::Outage, stack("palisade"), 3).await;
    assert_eq!(from_file.expect("the sample file is valid"), from_code);
    let bad = StackSettings {
        seed: 3,
        palisade_config: Some("[retry]\nmax_atempts = 3".into()),
    };
    let error = measure(Profile::Outage, stack("palisade-file"), &bad, short_run(3))
        .await
        .err();
    assert!(error.is_some_and(|e| e.to_string().contains("max_atempts")));
}

#[test]
fn flags_pick_profiles_stacks_and_settings() {
    let argv = [
        "--profile",
        "outage,overload",
        "--stack",
        "none",
        "--rate",
        "200",
        "--duration",
        "2.5",
        "--seed",
        "9",
        "--runs",
        "3",
    ];
    let args = parse_args(argv.into_iter().map(String::from)).expect("valid flags");
    assert_eq!(args.profiles, [Profile::Outage, Profile::Overload]);
    assert_eq!(
        args.stacks.iter().map(|s| s.name).collect::<Vec<_>>(),
        ["none"]
    );
    assert_eq!(args.run.requests(), 500);
    assert_eq!(args.run.seed, 9);
    assert_eq!(args.runs, 3);
    assert!(parse_args(["--runs", "0"].into_iter().map(String::from)).is_err());
    let default = parse_args(std::iter::empty()).expect("no flags");
    assert_eq!(default.runs, 1);
    assert!(
        parse_args(["--stack", "nope"].into_iter().map(String::from))
            .is_err_and(|m| m.contains("--features hedge,adaptive,fallback"))
    );
    assert!(parse_args(["--rate", "0"].into_iter().map(String::from)).is_err());
    // --help is no error: main prints the usage and exits 0 on an empty message.
    assert!(parse_args(["--help"].into_iter().map(String::from)).is_err_and(|m| m.is_empty()));
}

/// `--runs`: each figure is the median of that figure over the runs, an
/// outage that never recovered counting as the longest.
#[test]
fn the_median_of_runs_is_taken_figure_by_figure() {
    let ms = Duration::from_millis;
    let report = |success, p99, peak, recoveries: [Option<u64>; 3]| Report {
        requests: 1000,
        success_rate: success,
        degraded_rate: 1.0 - success,
        p50: ms(10),
        p99: ms(p99),
        amplification: success * 2.0,
        peak_concurrency: peak,
        outage: Some(drive::Outage {
            recoveries: recoveries.iter().map(|r| r.map(ms)).collect(),
            amplification: success,
        }),
    };
    let runs = [
        report(0.9, 300, 7, [Some(5), None, Some(40)]),
        report(0.5, 100, 9, [Some(1), None, None]),
        report(0.7, 200, 8, [Some(3), Some(20), Some(60)]),
    ];
    let median = Report::median(&runs).expect("three runs");
    assert_eq!(
        median,
        report(0.7, 200, 8, [Some(3), None, Some(60)]),
        "no run is the median of every figure"
    );
    assert_eq!(Report::median(&runs[..1]).as_ref(), Some(&runs[0]));
    assert_eq!(Report::median(&[]), None);
}

/// A stack that answers every request at once with a fallback's degraded
/// answer.
fn always_degraded(_: Upstream, _: &StackSettings) -> Result<Stack, BoxError> {
    let answer = tower::service_fn(|_: upstream::Request| async {
        Ok::<_, BoxError>(upstream::Response { degraded: true })
    });
    Ok(BoxCloneService::new(answer))
}

#[tokio::test(start_paused = true)]
async fn a_degraded_answer_is_counted_apart_from_a_success() {
    let report = run(Profile::SteadyErrors, always_degraded, 1).await;
    assert_eq!(report.success_rate, 0.0, "{report:?}");
    assert_eq!(report.degraded_rate, 1.0, "{report:?}");
    let real = run(Profile::SteadyErrors, stack("none"), 1).await;
    assert_eq!(real.degraded_rate, 0.0, "{real:?}");
}

/// The recommended stack built layer by layer (as the hedged, adaptive
/// stacks build it, to put a layer between two of its own) is the preset:
/// the same run, figure for figure. So the figures of those stacks differ
/// from the recommended stack's by what their added layer does, and by
/// nothing else.
fn recommended_by_hand(upstream: Upstream, settings: &StackSettings) -> Result<Stack, BoxError> {
    let layers = stacks::recommended::RecommendedLayers::new(settings)?;
    let stack = tower::ServiceBuilder::new()
        .layer(layers.total_timeout)
        .layer(layers.retry)
        .layer(layers.throttle)
        .layer(layers.breaker)
        .layer(layers.attempt_timeout)
        .layer(layers.bulkhead)
        .service(upstream);
    Ok(BoxCloneService::new(stack))
}

#[tokio::test(start_paused = true)]
async fn the_recommended_layers_stacked_by_hand_are_the_preset() {
    for profile in [Profile::BrownOut, Profile::OverloadCostly] {
        let preset = run(profile, stack("palisade-recommended"), 5).await;
        assert_eq!(run(profile, recommended_by_hand, 5).await, preset);
    }
}

/// A 10 s run: long enough for p99 to be one request in a hundred of
/// 5000.
fn ten_seconds() -> RunSettings {
    RunSettings {
        duration: Duration::from_secs(10),
        ..short_run(1)
    }
}

/// On the slow tail, where a tenth of calls take 500 ms, a hedge after the
/// 90th percentile of attempts (under 20 ms) answers the slow requests from
/// their second attempt, unless it is slow too (1 % of requests, 0.1²).
/// The unhedged stack's slow requests wait for the 100 ms attempt timeout,
/// a backoff and a retry, or two if the retry is slow too (1 % again): so
/// the hedged p99 is at most about the unhedged stack's shorter wait, and
/// the unhedged p99 at least that. The hedge costs a few more attempts
/// per request, within its budget of 20 %.
#[cfg(feature = "hedge")]
#[tokio::test(start_paused = true)]
async fn the_hedge_cuts_the_slow_tails_p99_for_a_few_more_attempts() {
    let plain = run_for(
        Profile::SlowTail,
        stack("palisade-recommended"),
        ten_seconds(),
    )
    .await;
    let hedged = run_for(Profile::SlowTail, stack("palisade-hedged"), ten_seconds()).await;
    assert!(plain.p99 > Duration::from_millis(200), "{plain:?}");
    assert!(hedged.p99 < Duration::from_millis(150), "{hedged:?}");
    assert!(hedged.success_rate >= plain.success_rate, "{hedged:?}");
    assert!(
        hedged.amplification <= plain.amplification + 0.1,
        "{hedged:?} against {plain:?}"
    );
}

/// tower's hedge, at the same percentile, lowers the p99 of the `tower`
/// stack too. By less, or by as much, from one seed to the next: its
/// first attempt's timeout ends the race at once (the hedge is dropped),
/// and the `tower` stack retries after a backoff from 10 ms, so both p99s
/// fall on one side or the other of about 130 ms.
#[tokio::test(start_paused = true)]
async fn towers_hedge_lowers_the_slow_tails_p99_too() {
    let plain = run_for(Profile::SlowTail, stack("tower"), ten_seconds()).await;
    let hedged = run_for(Profile::SlowTail, stack("tower-hedge"), ten_seconds()).await;
    assert!(hedged.p99 < plain.p99, "{hedged:?} against {plain:?}");
    assert!(hedged.amplification > plain.amplification, "{hedged:?}");
}

/// On an overload whose refusals are free, the adaptive limits serve what
/// the fixed bulkhead serves (the upstream's capacity); where refusals
/// cost the upstream capacity, they serve more, with fewer attempts: the
/// limit falls to what the upstream serves, and the calls past it are
/// refused here, at no cost to the upstream.
#[cfg(feature = "adaptive")]
#[tokio::test(start_paused = true)]
async fn an_adaptive_limit_serves_at_least_the_fixed_bulkheads_share_of_an_overload() {
    let fixed = run_for(
        Profile::Overload,
        stack("palisade-recommended"),
        ten_seconds(),
    )
    .await;
    let fixed_costly = run_for(
        Profile::OverloadCostly,
        stack("palisade-recommended"),
        ten_seconds(),
    )
    .await;
    for (name, margin) in [("palisade-adaptive", 0.03), ("palisade-gradient", 0.01)] {
        let free = run_for(Profile::Overload, stack(name), ten_seconds()).await;
        assert!(
            free.success_rate >= fixed.success_rate - 0.005,
            "{name}: {free:?} against {fixed:?}"
        );
        let costly = run_for(Profile::OverloadCostly, stack(name), ten_seconds()).await;
        assert!(
            costly.success_rate > fixed_costly.success_rate + margin,
            "{name}: {costly:?} against {fixed_costly:?}"
        );
        assert!(
            costly.amplification < fixed_costly.amplification,
            "{name}: {costly:?} against {fixed_costly:?}"
        );
        // The fixed bulkhead's 64 slots fill with refused calls waiting
        // for a worker; the adaptive limit stays well below.
        assert!(
            costly.peak_concurrency < stacks::BULKHEAD / 2,
            "{name}: {costly:?}"
        );
    }
}

/// Why the tunnel keeps both algorithms: with the default classifier every
/// upstream error is a drop, and AIMD cuts its limit for each, so where
/// errors do not come from load it refuses calls the upstream would have
/// served; Gradient2, which reads latency, serves what the fixed bulkhead
/// serves.
#[cfg(feature = "adaptive")]
#[tokio::test(start_paused = true)]
async fn aimd_reads_errors_that_are_not_load_as_drops_and_gradient_does_not() {
    let fixed = run(Profile::SteadyErrors, stack("palisade-recommended"), 1).await;
    let gradient = run(Profile::SteadyErrors, stack("palisade-gradient"), 1).await;
    let aimd = run(Profile::SteadyErrors, stack("palisade-adaptive"), 1).await;
    assert!(
        (gradient.success_rate - fixed.success_rate).abs() < 0.005,
        "{gradient:?} against {fixed:?}"
    );
    assert!(
        aimd.success_rate < fixed.success_rate - 0.03,
        "{aimd:?} against {fixed:?}"
    );
}

/// Through an outage the fallback answers every request the recommended
/// stack fails, and counts none of them as a success: the real successes
/// and the recoveries are the recommended stack's (the breaker inside the
/// fallback still sees the upstream's real outcomes), and the rest are
/// degraded.
#[cfg(feature = "fallback")]
#[tokio::test(start_paused = true)]
async fn the_fallbacks_answers_are_counted_as_degraded_not_as_successes() {
    let plain = run_for(
        Profile::Outage,
        stack("palisade-recommended"),
        ten_seconds(),
    )
    .await;
    let fallback = run_for(Profile::Outage, stack("palisade-fallback"), ten_seconds()).await;
    assert_eq!(fallback.success_rate, plain.success_rate, "{fallback:?}");
    assert_eq!(fallback.outage, plain.outage, "{fallback:?}");
    assert_eq!(plain.degraded_rate, 0.0, "{plain:?}");
    assert!(
        (fallback.success_rate + fallback.degraded_rate - 1.0).abs() < 1e-9,
        "{fallback:?}"
    );
}
