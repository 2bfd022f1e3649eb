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
    measure(
        profile,
        build,
        &StackSettings {
            seed,
            palisade_config: None,
        },
        short_run(seed),
    )
    .await
    .expect("the stack builds")
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
async fn the_bare_stack_recovers_from_the_outage_at_once() {
    let report = run(Profile::Outage, stack("none"), 1).await;
    let outage = report.outage.expect("the outage profile measures recovery");
    assert_eq!(outage.recovery, Some(Duration::ZERO));
    assert_eq!(outage.amplification, 1.0);
    // Down for 0.8 s of the 2 s run: those requests, and no others, fail.
    assert!((report.success_rate - 0.6).abs() < 0.005, "{report:?}");
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
    let report = run(Profile::Outage, breaker_open_30_s, 1).await;
    assert_eq!(report.outage.and_then(|o| o.recovery), None, "{report:?}");
    // palisade's default breaker (open 100 ms) is back within the run,
    // after the upstream.
    let report = run(Profile::Outage, stack("palisade-defaults"), 1).await;
    let recovery = report.outage.and_then(|o| o.recovery).expect("recovered");
    assert!(
        recovery > Duration::ZERO && recovery <= Duration::from_millis(200),
        "{report:?}"
    );
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
    ];
    let args = parse_args(argv.into_iter().map(String::from)).expect("valid flags");
    assert_eq!(args.profiles, [Profile::Outage, Profile::Overload]);
    assert_eq!(
        args.stacks.iter().map(|s| s.name).collect::<Vec<_>>(),
        ["none"]
    );
    assert_eq!(args.run.requests(), 500);
    assert_eq!(args.run.seed, 9);
    assert!(parse_args(["--stack", "nope"].into_iter().map(String::from)).is_err());
    assert!(parse_args(["--rate", "0"].into_iter().map(String::from)).is_err());
    // --help is no error: main prints the usage and exits 0 on an empty message.
    assert!(parse_args(["--help"].into_iter().map(String::from)).is_err_and(|m| m.is_empty()));
}
