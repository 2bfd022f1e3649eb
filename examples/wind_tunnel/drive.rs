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
use crate::upstream::{Profile, Request, Upstream, outage_windows};

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

/// A recovered stack serves at least [`RECOVERED_SUCCESS`] of the requests
/// sent over this long.
pub(crate) const RECOVERY_WINDOW: Duration = Duration::from_millis(100);
/// The share of a window's requests that must succeed for it to count as
/// recovered.
pub(crate) const RECOVERED_SUCCESS: f64 = 0.9;

/// What happened to one request, from its caller's side.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Answer {
    pub(crate) id: usize,
    /// When it was sent, from the start of the run.
    pub(crate) sent: Duration,
    /// How long until the caller had an answer (its deadline at most).
    pub(crate) latency: Duration,
    /// Answered with the upstream's own success before the deadline.
    pub(crate) ok: bool,
    /// Answered before the deadline with a degraded answer a fallback made
    /// in the upstream's place: not a success, and not a failure either.
    pub(crate) degraded: bool,
}

/// The measurements of one (profile, stack) run.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Report {
    pub(crate) requests: usize,
    /// Share of requests answered with a success before their deadline.
    /// A fallback's degraded answer is not one.
    pub(crate) success_rate: f64,
    /// Share of requests answered with a fallback's degraded answer before
    /// their deadline.
    pub(crate) degraded_rate: f64,
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

impl Report {
    /// Each figure's median over `reports` (runs of one profile and stack
    /// with different seeds), figure by figure, so the result need not be
    /// any one run's; with an even count, the lower of the middle two. An
    /// outage that never recovered counts as the longest recovery.
    pub(crate) fn median(reports: &[Report]) -> Option<Report> {
        let first = reports.first()?;
        let median_f64 = |f: fn(&Report) -> f64| median(reports.iter().map(f), f64::total_cmp);
        let median_of = |f: fn(&Report) -> Duration| median(reports.iter().map(f), Ord::cmp);
        let outage = first.outage.as_ref().map(|o| {
            let outages: Vec<&Outage> = reports.iter().filter_map(|r| r.outage.as_ref()).collect();
            Outage {
                recoveries: (0..o.recoveries.len())
                    .map(|i| {
                        let each = outages.iter().map(|o| o.recoveries[i]);
                        median(each, |a, b| {
                            a.unwrap_or(Duration::MAX).cmp(&b.unwrap_or(Duration::MAX))
                        })
                    })
                    .collect(),
                amplification: median(outages.iter().map(|o| o.amplification), f64::total_cmp),
            }
        });
        Some(Report {
            requests: median(reports.iter().map(|r| r.requests), Ord::cmp),
            success_rate: median_f64(|r| r.success_rate),
            degraded_rate: median_f64(|r| r.degraded_rate),
            p50: median_of(|r| r.p50),
            p99: median_of(|r| r.p99),
            amplification: median_f64(|r| r.amplification),
            peak_concurrency: median(reports.iter().map(|r| r.peak_concurrency), Ord::cmp),
            outage,
        })
    }
}

/// The median of `values` (not empty), the lower one of an even count.
fn median<T>(
    values: impl Iterator<Item = T>,
    order: impl FnMut(&T, &T) -> std::cmp::Ordering,
) -> T {
    let mut values: Vec<T> = values.collect();
    values.sort_by(order);
    values.swap_remove((values.len() - 1) / 2)
}

/// How a stack went through the outages.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Outage {
    /// Each outage's recovery, in order: from the upstream's return to the
    /// first request sent after it that succeeded and opened
    /// [`RECOVERY_WINDOW`] of requests (by send time) of which at least
    /// [`RECOVERED_SUCCESS`] succeeded. Its resolution is the requests'
    /// spacing (2 ms at 500 a second). `None`: not before the next outage
    /// or the end of the run.
    pub(crate) recoveries: Vec<Option<Duration>>,
    /// Upstream attempts per request, for requests sent while it was down.
    pub(crate) amplification: f64,
}

impl Outage {
    /// The longest recovery; `None` if an outage never recovered.
    pub(crate) fn worst(&self) -> Option<Duration> {
        self.recoveries
            .iter()
            .try_fold(Duration::ZERO, |worst, r| r.map(|r| worst.max(r)))
    }

    /// The mean recovery; `None` if an outage never recovered.
    pub(crate) fn mean(&self) -> Option<Duration> {
        let total = self
            .recoveries
            .iter()
            .try_fold(Duration::ZERO, |sum, r| r.map(|r| sum + r))?;
        Some(total / self.recoveries.len().max(1) as u32)
    }
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
            let degraded = match answer {
                Ok(Ok(response)) => Some(response.degraded),
                _ => None,
            };
            Answer {
                id,
                sent: sent - started,
                latency: sent.elapsed().min(run.deadline),
                ok: degraded == Some(false),
                degraded: degraded == Some(true),
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
    let degraded = answers.iter().filter(|a| a.degraded).count();
    let mut latencies: Vec<Duration> = answers.iter().map(|a| a.latency).collect();
    latencies.sort();
    let attempts: u64 = answers
        .iter()
        .map(|a| u64::from(upstream.attempts(a.id)))
        .sum();
    Report {
        requests,
        success_rate: ratio(successes as f64, requests),
        degraded_rate: ratio(degraded as f64, requests),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        amplification: ratio(attempts as f64, requests),
        peak_concurrency: upstream.peak_concurrency(),
        outage: (profile == Profile::Outage).then(|| outage(answers, upstream, run)),
    }
}

fn outage(answers: &[Answer], upstream: &Upstream, run: RunSettings) -> Outage {
    let windows: Vec<(Duration, Duration)> = outage_windows(run.duration).collect();
    let during: Vec<&Answer> = answers
        .iter()
        .filter(|a| {
            windows
                .iter()
                .any(|(down, up)| (*down..*up).contains(&a.sent))
        })
        .collect();
    let attempts: u64 = during
        .iter()
        .map(|a| u64::from(upstream.attempts(a.id)))
        .sum();
    let recoveries = windows
        .iter()
        .enumerate()
        .map(|(i, &(_, up))| {
            // Recovery must come before the next outage begins.
            let until = windows.get(i + 1).map_or(run.duration, |next| next.0);
            recovery(answers, up, until)
        })
        .collect();
    Outage {
        recoveries,
        amplification: ratio(attempts as f64, during.len()),
    }
}

/// From `up` to the first request sent in `[up, until)` that succeeded and
/// opened a [`RECOVERY_WINDOW`] (ending by `until`) of requests of which at
/// least [`RECOVERED_SUCCESS`] succeeded. `answers` are in sending order.
pub(crate) fn recovery(answers: &[Answer], up: Duration, until: Duration) -> Option<Duration> {
    let after: Vec<&Answer> = answers
        .iter()
        .filter(|a| (up..until).contains(&a.sent))
        .collect();
    for (i, first) in after.iter().enumerate() {
        let end = first.sent + RECOVERY_WINDOW;
        if end > until {
            break;
        }
        if !first.ok {
            continue;
        }
        let window: Vec<&&Answer> = after[i..].iter().take_while(|a| a.sent < end).collect();
        let ok = window.iter().filter(|a| a.ok).count();
        if ratio(ok as f64, window.len()) >= RECOVERED_SUCCESS {
            return Some(first.sent - up);
        }
    }
    None
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
