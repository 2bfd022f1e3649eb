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
//! - **degr.**: the share answered before the deadline with a degraded
//!   answer that a fallback made in the upstream's place (never counted as
//!   a success);
//! - **p50, p99**: latency of the callers' answers, failures included (a
//!   caller that gave up counts its deadline);
//! - **ampl.**: upstream attempts per request (retries cost this);
//! - **peak**: the most calls inside the upstream at once;
//! - for `outage` (three outages, of 0.35 s, 1.35 s and 3.35 s), each
//!   outage's **recovery**: from the upstream's return to the first request
//!   sent after it that succeeded and opened 100 ms of requests (by send
//!   time) of which at least 90 % succeeded; the worst and the mean of the
//!   three; and the amplification of requests sent while it was down.
//!
//! Run it with `cargo run --release --example wind_tunnel`; flags:
//!
//! ```text
//! --profile NAME         steady-errors, outage, slow-tail, brown-out, overload, overload-costly
//!                        (repeatable; default all)
//! --stack NAME           a name from stacks::STACKS (repeatable; default all)
//! --rate N               requests per second (default 500)
//! --duration SECS        length of each run (default 10)
//! --deadline SECS        the caller's deadline per request (default 1)
//! --runs N               runs each (profile, stack) N times, with seeds seed, seed + 1, ...,
//!                        and prints the median of each figure (default 1)
//! --seed N               seeds the faults and every jitter that can be seeded (default 42;
//!                        each gets a seed of its own derived from it: see upstream::Seeds)
//! --real-time            run every stack in real time, not only those that need it
//! --palisade-config FILE a palisade stack from a TOML file (needs --features serde)
//! ```
//!
//! The stacks that add an optional layer to the recommended one
//! (`palisade-hedged`, `palisade-adaptive`, `palisade-gradient`,
//! `palisade-fallback`) are there only with the library's features for
//! them: `--features hedge,adaptive,fallback`.
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
//! about six times `--duration` for it (plus the last deadlines; times
//! `--runs`), and its rows vary a little from run to run (its retry jitter
//! is not seedable either).

mod drive;
mod stacks;
mod upstream;

use std::process::ExitCode;
use std::time::Duration;

use palisade::BoxError;

use drive::{Report, RunSettings, drive};
use stacks::{Clock, STACKS, StackEntry, StackSettings};
use upstream::{Profile, Seeds, Upstream};

const USAGE: &str = "usage: wind_tunnel [--profile NAME]... [--stack NAME]... [--rate N] \
[--duration SECS] [--deadline SECS] [--runs N] [--seed N] [--real-time] [--palisade-config FILE]";

/// What to run.
struct Args {
    profiles: Vec<Profile>,
    stacks: Vec<&'static StackEntry>,
    run: RunSettings,
    /// Runs per (profile, stack), with seeds `run.seed`, `run.seed + 1`...
    runs: u32,
    real_time: bool,
    settings: StackSettings,
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    let mut results = Vec::new();
    for &profile in &args.profiles {
        println!(
            "\n== {}: {} ({} requests at {}/s over {} s, deadline {}{})",
            profile.name(),
            profile.describe(args.run.duration, args.run.rate),
            args.run.requests(),
            args.run.rate,
            args.run.duration.as_secs_f64(),
            ms(args.run.deadline),
            if args.runs > 1 {
                format!(
                    "; medians of {} runs, seeds {} to {}",
                    args.runs,
                    args.run.seed,
                    args.run.seed + u64::from(args.runs) - 1
                )
            } else {
                String::new()
            },
        );
        print_header(profile);
        for stack in &args.stacks {
            match run_median(profile, stack, &args) {
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

/// `--runs` runs of (profile, stack), one per seed from `--seed` on, and
/// the median of each figure.
fn run_median(profile: Profile, stack: &StackEntry, args: &Args) -> Result<Report, BoxError> {
    let reports = (0..u64::from(args.runs))
        .map(|i| {
            let run = RunSettings {
                seed: args.run.seed.wrapping_add(i),
                ..args.run
            };
            run_one(profile, stack, args, run)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Report::median(&reports).ok_or_else(|| "--runs must be at least 1".into())
}

/// One (profile, stack) run, on a runtime of its own so that runs share
/// nothing: one thread, and the paused clock where the stack allows it.
fn run_one(
    profile: Profile,
    stack: &StackEntry,
    args: &Args,
    run: RunSettings,
) -> Result<Report, BoxError> {
    let mut runtime = tokio::runtime::Builder::new_current_thread();
    runtime.enable_time();
    if clock_of(stack, args) == Clock::Virtual {
        runtime.start_paused(true);
    }
    runtime
        .build()?
        .block_on(measure(profile, stack.build, &args.settings, run))
}

/// Builds a fresh upstream and the stack on it, and drives the run.
async fn measure(
    profile: Profile,
    build: stacks::Build,
    settings: &StackSettings,
    run: RunSettings,
) -> Result<Report, BoxError> {
    let seeds = Seeds::of(run.seed);
    let upstream = Upstream::new(
        profile,
        run.duration,
        run.rate,
        run.requests(),
        seeds.faults,
    );
    let settings = StackSettings {
        seed: seeds.stacks,
        ..settings.clone()
    };
    let stack = build(upstream.clone(), &settings)?;
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
    let mut runs = 1;
    let mut real_time = false;
    let mut settings = StackSettings::default();
    while let Some(flag) = argv.next() {
        if flag == "--real-time" {
            real_time = true;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Err(String::new()); // not an error: main prints the usage
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
            "--runs" => {
                runs = value
                    .parse()
                    .ok()
                    .filter(|r| *r > 0)
                    .ok_or_else(|| bad("not a positive integer"))?
            }
            "--seed" => run.seed = value.parse().map_err(|_| bad("not an integer"))?,
            "--palisade-config" => {
                let text = std::fs::read_to_string(&value).map_err(|e| bad(&e.to_string()))?;
                settings.palisade_config = Some(text);
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
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
                    format!(
                        "--stack {name}: not one of {} (the stacks with an optional layer \
                         need --features hedge,adaptive,fallback)",
                        names.join(", ")
                    )
                })
            })
            .collect::<Result<_, _>>()?
    };
    Ok(Args {
        profiles,
        stacks,
        run,
        runs,
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
        "{:<21} {:<8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>5}",
        "stack", "clock", "success", "degr.", "p50", "p99", "ampl.", "peak"
    );
    if profile == Profile::Outage {
        print!(
            " {:>9} {:>9} {:>12}  each recovery",
            "rec. max", "rec. mean", "ampl. (down)"
        );
    }
    println!();
}

fn print_row(name: &str, clock: Clock, report: &Report) {
    let clock = match clock {
        Clock::Virtual => "virtual",
        Clock::Real => "real",
    };
    print!(
        "{:<21} {:<8} {:>8} {:>8} {:>8} {:>8} {:>6.2} {:>5}",
        name,
        clock,
        percent(report.success_rate),
        percent(report.degraded_rate),
        ms(report.p50),
        ms(report.p99),
        report.amplification,
        report.peak_concurrency,
    );
    if let Some(outage) = &report.outage {
        let each: Vec<String> = outage.recoveries.iter().map(|r| recovery(*r)).collect();
        print!(
            " {:>9} {:>9} {:>12.2}  {}",
            recovery(outage.worst()),
            recovery(outage.mean()),
            outage.amplification,
            each.join(", ")
        );
    }
    println!();
}

/// One line per stack: its success rate under each profile, and the
/// outage's recovery; then the best stack per profile.
fn print_summary(args: &Args, results: &[(Profile, &str, Report)]) {
    println!("\n== summary: success rate (outage: worst recovery)");
    print!("{:<21}", "stack");
    for profile in &args.profiles {
        print!(" {:>15}", profile.name());
    }
    println!();
    for stack in &args.stacks {
        print!("{:<21}", stack.name);
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
                    format!("{} ({})", percent(*success_rate), recovery(o.worst()))
                }
                Some(report) => percent(report.success_rate),
                None => "-".into(),
            };
            print!(" {cell:>15}");
        }
        println!();
    }
    for profile in &args.profiles {
        let rows: Vec<_> = results.iter().filter(|(p, _, _)| p == profile).collect();
        let Some(best) = rows.iter().map(|r| r.2.success_rate).max_by(f64::total_cmp) else {
            continue;
        };
        // Ties as printed count as ties.
        let names: Vec<&str> = rows
            .iter()
            .filter(|r| percent(r.2.success_rate) == percent(best))
            .map(|r| r.1)
            .collect();
        println!(
            "best under {}: {} ({})",
            profile.name(),
            names.join(", "),
            percent(best)
        );
    }
}

fn recovery(recovery: Option<Duration>) -> String {
    recovery.map_or("never".into(), ms)
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

/// The tunnel's own tests: they check its measurements.
#[cfg(test)]
mod tests;
