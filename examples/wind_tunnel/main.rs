//! A wind tunnel for resilience stacks: what callers get when the upstream
//! misbehaves.
//!
//! Nanoseconds per call are not why anyone adds resilience layers; they add
//! them so that callers are still served when a dependency fails. This
//! program drives several tower stacks side by side against a simulated
//! upstream, open-loop (requests arrive at a fixed rate whatever the
//! answers), each request with a client deadline, through named fault
//! profiles, and prints for each (profile, stack):
//!
//! - **success**: the share of requests answered with a success before the
//!   caller's deadline;
//! - **p50, p99**: latency of the callers' answers, failures included (a
//!   caller that gave up counts its deadline);
//! - **ampl.**: upstream attempts per request (retries cost this);
//! - **peak**: the most calls inside the upstream at once;
//! - for `outage`, **recovery**: from the upstream's return to the start of
//!   the first 100 ms window of requests (by send time, windows aligned on
//!   the return) of which at least 90 % succeeded; and the amplification of
//!   requests sent while it was down.
//!
//! Run it with `cargo run --release --example wind_tunnel`; flags:
//!
//! ```text
//! --profile NAME         steady-errors, outage, slow-tail, brown-out, overload (repeatable; default all)
//! --stack NAME           a name from stacks::STACKS (repeatable; default all)
//! --rate N               requests per second (default 500)
//! --duration SECS        length of each run (default 10)
//! --deadline SECS        the caller's deadline per request (default 1)
//! --seed N               seeds the faults and every jitter that can be seeded (default 42)
//! --real-time            run every stack in real time, not only those that need it
//! --palisade-config FILE a palisade stack from a TOML file (needs --features serde)
//! ```
//!
//! To measure a stack of your own, add a line to `stacks::STACKS`.
//!
//! # Time
//!
//! Stacks whose timers all follow `tokio::time` (no layers, tower,
//! palisade) run on tokio's paused clock: virtual time that jumps to the
//! next timer whenever every task waits, so a 10 s run takes a fraction of
//! a second and repeats exactly. tower-resilience's circuit breaker decides
//! when to leave Open by reading `std::time::Instant`, which the paused
//! clock does not move, so its stack runs in real time: a full run takes
//! about five times `--duration` for it (plus the last deadline), and its
//! rows vary a little from run to run (its retry jitter is not seedable
//! either).

mod drive;
mod stacks;
mod upstream;

use std::process::ExitCode;
use std::time::Duration;

use palisade::BoxError;

use drive::{Report, RunSettings, drive};
use stacks::{Clock, STACKS, StackEntry, StackSettings};
use upstream::{Profile, Upstream};

const USAGE: &str = "usage: wind_tunnel [--profile NAME]... [--stack NAME]... [--rate N] \
[--duration SECS] [--deadline SECS] [--seed N] [--real-time] [--palisade-config FILE]";

/// What to run.
struct Args {
    profiles: Vec<Profile>,
    stacks: Vec<&'static StackEntry>,
    run: RunSettings,
    real_time: bool,
    settings: StackSettings,
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    let mut results = Vec::new();
    for &profile in &args.profiles {
        println!(
            "\n== {}: {} ({} requests at {}/s over {} s, deadline {})",
            profile.name(),
            profile.describe(args.run.duration, args.run.rate),
            args.run.requests(),
            args.run.rate,
            args.run.duration.as_secs_f64(),
            ms(args.run.deadline),
        );
        print_header(profile);
        for stack in &args.stacks {
            match run_one(profile, stack, &args) {
                Ok(report) => {
                    print_row(stack.name, clock_of(stack, &args), &report);
                    results.push((profile, stack.name, report));
                }
                Err(e) => {
                    eprintln!("stack {}: {e}", stack.name);
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    print_summary(&args, &results);
    println!(
        "\n(took {:.1} s of wall-clock time)",
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

fn clock_of(stack: &StackEntry, args: &Args) -> Clock {
    if args.real_time {
        Clock::Real
    } else {
        stack.clock
    }
}

/// One (profile, stack) run, on a runtime of its own so that runs share
/// nothing: one thread, and the paused clock where the stack allows it.
fn run_one(profile: Profile, stack: &StackEntry, args: &Args) -> Result<Report, BoxError> {
    let mut runtime = tokio::runtime::Builder::new_current_thread();
    runtime.enable_time();
    if clock_of(stack, args) == Clock::Virtual {
        runtime.start_paused(true);
    }
    runtime
        .build()?
        .block_on(measure(profile, stack.build, &args.settings, args.run))
}

/// Builds a fresh upstream and the stack on it, and drives the run.
async fn measure(
    profile: Profile,
    build: stacks::Build,
    settings: &StackSettings,
    run: RunSettings,
) -> Result<Report, BoxError> {
    let upstream = Upstream::new(profile, run.duration, run.rate, run.requests(), run.seed);
    let stack = build(upstream.clone(), settings)?;
    Ok(drive(stack, &upstream, profile, run).await)
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut profiles = Vec::new();
    let mut stack_names: Vec<String> = Vec::new();
    let mut run = RunSettings {
        rate: 500,
        duration: Duration::from_secs(10),
        deadline: Duration::from_secs(1),
        seed: 42,
    };
    let mut real_time = false;
    let mut settings = StackSettings::default();
    while let Some(flag) = argv.next() {
        if flag == "--real-time" {
            real_time = true;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |what: &str| format!("{flag} {value}: {what}");
        match flag.as_str() {
            "--profile" => {
                for name in value.split(',') {
                    profiles.push(Profile::from_name(name).ok_or_else(|| {
                        let names: Vec<&str> = Profile::ALL.iter().map(|p| p.name()).collect();
                        bad(&format!("not one of {}", names.join(", ")))
                    })?);
                }
            }
            "--stack" => stack_names.extend(value.split(',').map(str::to_owned)),
            "--rate" => {
                run.rate = value
                    .parse()
                    .ok()
                    .filter(|r| *r > 0)
                    .ok_or_else(|| bad("not a positive integer"))?
            }
            "--duration" => {
                run.duration =
                    seconds(&value).ok_or_else(|| bad("not a positive number of seconds"))?
            }
            "--deadline" => {
                run.deadline =
                    seconds(&value).ok_or_else(|| bad("not a positive number of seconds"))?
            }
            "--seed" => run.seed = value.parse().map_err(|_| bad("not an integer"))?,
            "--palisade-config" => {
                let text = std::fs::read_to_string(&value).map_err(|e| bad(&e.to_string()))?;
                settings.palisade_config = Some(text);
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    settings.seed = run.seed;
    if profiles.is_empty() {
        profiles = Profile::ALL.to_vec();
    }
    let stacks = if stack_names.is_empty() {
        // The file's stack joins the default set only when there is a file.
        STACKS
            .iter()
            .filter(|s| s.name != "palisade-file" || settings.palisade_config.is_some())
            .collect()
    } else {
        stack_names
            .iter()
            .map(|name| {
                STACKS.iter().find(|s| s.name == name).ok_or_else(|| {
                    let names: Vec<&str> = STACKS.iter().map(|s| s.name).collect();
                    format!("--stack {name}: not one of {}", names.join(", "))
                })
            })
            .collect::<Result<_, _>>()?
    };
    Ok(Args {
        profiles,
        stacks,
        run,
        real_time,
        settings,
    })
}

fn seconds(value: &str) -> Option<Duration> {
    let secs: f64 = value.parse().ok()?;
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

fn print_header(profile: Profile) {
    print!(
        "{:<18} {:<8} {:>8} {:>8} {:>8} {:>6} {:>5}",
        "stack", "clock", "success", "p50", "p99", "ampl.", "peak"
    );
    if profile == Profile::Outage {
        print!(" {:>9} {:>12}", "recovery", "ampl. (down)");
    }
    println!();
}

fn print_row(name: &str, clock: Clock, report: &Report) {
    let clock = match clock {
        Clock::Virtual => "virtual",
        Clock::Real => "real",
    };
    print!(
        "{:<18} {:<8} {:>8} {:>8} {:>8} {:>6.2} {:>5}",
        name,
        clock,
        percent(report.success_rate),
        ms(report.p50),
        ms(report.p99),
        report.amplification,
        report.peak_concurrency,
    );
    if let Some(outage) = report.outage {
        print!(
            " {:>9} {:>12.2}",
            outage.recovery.map_or("never".into(), ms),
            outage.amplification
        );
    }
    println!();
}

/// One line per stack: its success rate under each profile, and the
/// outage's recovery; then the best stack per profile.
fn print_summary(args: &Args, results: &[(Profile, &str, Report)]) {
    println!("\n== summary: success rate (outage recovery)");
    print!("{:<18}", "stack");
    for profile in &args.profiles {
        print!(" {:>15}", profile.name());
    }
    println!();
    for stack in &args.stacks {
        print!("{:<18}", stack.name);
        for profile in &args.profiles {
            let report = results
                .iter()
                .find(|(p, s, _)| p == profile && *s == stack.name)
                .map(|r| &r.2);
            let cell = match report {
                Some(Report {
                    success_rate,
                    outage: Some(o),
                    ..
                }) => {
                    format!(
                        "{} ({})",
                        percent(*success_rate),
                        o.recovery.map_or("never".into(), ms)
                    )
                }
                Some(report) => percent(report.success_rate),
                None => "-".into(),
            };
            print!(" {cell:>15}");
        }
        println!();
    }
    for profile in &args.profiles {
        let best = results
            .iter()
            .filter(|(p, _, _)| p == profile)
            .max_by(|a, b| a.2.success_rate.total_cmp(&b.2.success_rate));
        if let Some((_, name, report)) = best {
            println!(
                "best under {}: {name} ({})",
                profile.name(),
                percent(report.success_rate)
            );
        }
    }
}

fn percent(rate: f64) -> String {
    format!("{:.1} %", rate * 100.0)
}

fn ms(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// These check the tunnel's measurements themselves, on the paused clock:
/// `cargo test --example wind_tunnel`.
#[cfg(test)]
mod tests {
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

    #[tokio::test(start_paused = true)]
    async fn a_breaker_still_open_at_the_end_of_the_run_never_recovers() {
        // palisade's default breaker opens for 30 s, longer than the run.
        let report = run(Profile::Outage, stack("palisade-defaults"), 1).await;
        assert_eq!(report.outage.and_then(|o| o.recovery), None, "{report:?}");
        // The 1 s breaker is back within the run, after the upstream.
        let report = run(Profile::Outage, stack("palisade"), 1).await;
        let recovery = report.outage.and_then(|o| o.recovery).expect("recovered");
        assert!(
            recovery > Duration::ZERO && recovery < Duration::from_secs(1),
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
        assert_eq!(args.settings.seed, 9);
        assert!(parse_args(["--stack", "nope"].into_iter().map(String::from)).is_err());
        assert!(parse_args(["--rate", "0"].into_iter().map(String::from)).is_err());
    }
}
