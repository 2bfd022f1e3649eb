//! The open-loop driver and what it measures.
//!
//! Requests arrive at a fixed rate whatever happens to earlier ones, as
//! callers do: a stack that answers slowly does not slow its callers down,
//! it piles them up. Each caller gives up at its deadline, and that counts
//! as a failure.

use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};
use tower::ServiceExt;

use crate::stacks::Stack;
use crate::upstream::{Profile, Request, Upstream, outage_window};

/// What a run is: how fast, how long, how patient the callers are, and the
/// seed of every random draw the tunnel makes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunSettings {
    /// Requests per second.
    pub(crate) rate: u32,
    pub(crate) duration: Duration,
    /// The caller's deadline for each request.
    pub(crate) deadline: Duration,
    pub(crate) seed: u64,
}

impl RunSettings {
    pub(crate) fn requests(&self) -> usize {
        (f64::from(self.rate) * self.duration.as_secs_f64()) as usize
    }
}

/// The windows the outage's recovery is measured in.
pub(crate) const RECOVERY_WINDOW: Duration = Duration::from_millis(100);
/// The share of a window's requests that must succeed for it to count as
/// recovered.
pub(crate) const RECOVERED_SUCCESS: f64 = 0.9;

/// What happened to one request, from its caller's side.
#[derive(Clone, Copy, Debug)]
struct Answer {
    id: usize,
    /// When it was sent, from the start of the run.
    sent: Duration,
    /// How long until the caller had an answer (its deadline at most).
    latency: Duration,
    ok: bool,
}

/// The measurements of one (profile, stack) run.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Report {
    pub(crate) requests: usize,
    /// Share of requests answered with a success before their deadline.
    pub(crate) success_rate: f64,
    /// Latency of the callers' answers, failures included.
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    /// Upstream attempts per request.
    pub(crate) amplification: f64,
    /// The most calls inside the upstream at once.
    pub(crate) peak_concurrency: usize,
    /// `outage` only: see [`Outage`].
    pub(crate) outage: Option<Outage>,
}

/// How a stack went through the outage.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Outage {
    /// From the upstream's return to the start of the first 100 ms window
    /// (by send time, windows aligned on the return) in which at least 90 %
    /// of the requests sent succeeded. `None`: not within the run.
    pub(crate) recovery: Option<Duration>,
    /// Upstream attempts per request, for requests sent while it was down.
    pub(crate) amplification: f64,
}

/// Drives `stack` (built on `upstream`) open-loop through a run and
/// measures it. Call it on the runtime that will run the stack, right after
/// building the upstream: the upstream's clock starts when it is built.
pub(crate) async fn drive(
    stack: Stack,
    upstream: &Upstream,
    profile: Profile,
    run: RunSettings,
) -> Report {
    let started = Instant::now();
    let period = Duration::from_secs(1) / run.rate;
    let mut callers = JoinSet::new();
    for id in 0..run.requests() {
        // Absolute arrival times: a late wake-up does not shift the rest.
        sleep_until(started + period * id as u32).await;
        let stack = stack.clone();
        callers.spawn(async move {
            let sent = Instant::now();
            let answer = timeout(run.deadline, stack.oneshot(Request { id })).await;
            Answer {
                id,
                sent: sent - started,
                latency: sent.elapsed().min(run.deadline),
                ok: matches!(answer, Ok(Ok(_))),
            }
        });
    }
    let mut answers = Vec::with_capacity(run.requests());
    while let Some(answer) = callers.join_next().await {
        answers.push(answer.expect("a caller task panicked"));
    }
    answers.sort_by_key(|a| a.id);
    measure(&answers, upstream, profile, run)
}

fn measure(answers: &[Answer], upstream: &Upstream, profile: Profile, run: RunSettings) -> Report {
    let requests = answers.len();
    let successes = answers.iter().filter(|a| a.ok).count();
    let mut latencies: Vec<Duration> = answers.iter().map(|a| a.latency).collect();
    latencies.sort();
    let attempts: u64 = answers
        .iter()
        .map(|a| u64::from(upstream.attempts(a.id)))
        .sum();
    Report {
        requests,
        success_rate: ratio(successes as f64, requests),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        amplification: ratio(attempts as f64, requests),
        peak_concurrency: upstream.peak_concurrency(),
        outage: (profile == Profile::Outage).then(|| outage(answers, upstream, run)),
    }
}

fn outage(answers: &[Answer], upstream: &Upstream, run: RunSettings) -> Outage {
    let (down, up) = outage_window(run.duration);
    let during: Vec<&Answer> = answers
        .iter()
        .filter(|a| (down..up).contains(&a.sent))
        .collect();
    let attempts: u64 = during
        .iter()
        .map(|a| u64::from(upstream.attempts(a.id)))
        .sum();
    let mut recovery = None;
    let mut window = up;
    while window < run.duration {
        let sent: Vec<&Answer> = answers
            .iter()
            .filter(|a| (window..window + RECOVERY_WINDOW).contains(&a.sent))
            .collect();
        let ok = sent.iter().filter(|a| a.ok).count();
        if !sent.is_empty() && ratio(ok as f64, sent.len()) >= RECOVERED_SUCCESS {
            recovery = Some(window - up);
            break;
        }
        window += RECOVERY_WINDOW;
    }
    Outage {
        recovery,
        amplification: ratio(attempts as f64, during.len()),
    }
}

fn ratio(part: f64, whole: usize) -> f64 {
    if whole == 0 { 0.0 } else { part / whole as f64 }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
