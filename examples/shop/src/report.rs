//! A picture of the demo: one self-contained HTML page (inline SVG and
//! CSS, no script, nothing fetched) drawn from a [`Recording`] of a run.
//!
//! The page shows, under a title with the date and each phase's pass or
//! fail:
//!
//! - requests over time, stacked by outcome, with the phases as bands;
//! - each upstream's breaker state over time, one band per upstream, on the
//!   same time axis;
//! - latency percentiles (p50, p90, p99) per phase.
//!
//! Drawing needs nothing but std: the demo fills the recording
//! ([`crate::demo::run_recorded`]), [`render`] turns it into the page.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What one run of the demo did, over time.
#[derive(Debug, Clone)]
pub struct Recording {
    /// When the run started, for the page's title.
    pub started_at: SystemTime,
    /// The phases in order.
    pub phases: Vec<PhaseSpan>,
    /// Every request of every phase.
    pub requests: Vec<RequestRecord>,
    /// Each upstream's breaker state: a sample where it was first seen, and
    /// one at each change after.
    pub breakers: Vec<BreakerSample>,
}

/// One phase: when it ran and what it checked.
#[derive(Debug, Clone)]
pub struct PhaseSpan {
    /// From 1.
    pub number: usize,
    pub title: String,
    /// Since the run started.
    pub start: Duration,
    pub end: Duration,
    /// What the phase should show, and whether it did.
    pub checks: Vec<(String, bool)>,
}

impl PhaseSpan {
    /// Every check held.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|(_, held)| *held)
    }
}

/// One request as the demo's client saw it.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// When it was sent, since the run started.
    pub at: Duration,
    /// The phase's number.
    pub phase: usize,
    /// `ok`, `no answer`, or the status and the error's kind
    /// (`503 circuit_open`); see [`outcome`].
    pub outcome: String,
    pub latency: Duration,
}

/// A breaker's state as the page tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
    /// Forced open, disabled, or counting only: set by hand.
    Other,
}

/// An upstream's breaker state from `at` on (since the run started).
#[derive(Debug, Clone)]
pub struct BreakerSample {
    pub at: Duration,
    /// Who calls whom, as `gateway→product`.
    pub upstream: String,
    pub state: BreakerState,
}

/// An answer's class for the page: `ok` for 2xx, `no answer` for a request
/// that got none (`status` 0), else the status with the error's kind when
/// the body names one (`503 circuit_open`, `504 timeout`).
pub fn outcome(status: u16, error_kind: Option<&str>) -> String {
    match (status, error_kind) {
        (200..=299, _) => "ok".into(),
        (0, _) => "no answer".into(),
        (status, Some(kind)) => format!("{status} {kind}"),
        (status, None) => status.to_string(),
    }
}

// The Okabe–Ito palette: told apart with any common colour blindness.
const GREEN: &str = "#009E73";
const VERMILLION: &str = "#D55E00";
const BLUE: &str = "#0072B2";
const ORANGE: &str = "#E69F00";
const PURPLE: &str = "#CC79A7";
const SKY: &str = "#56B4E9";
const YELLOW: &str = "#F0E442";
const BLACK: &str = "#000000";
const GREY: &str = "#999999";

/// Colours for outcomes other than `ok`, in the order they sort.
/// Vermillion is kept for `circuit_open`: the colour of an open breaker.
const ERROR_COLOURS: [&str; 5] = [BLUE, ORANGE, PURPLE, SKY, YELLOW];

/// The plots' geometry, shared so that their time axes line up.
const WIDTH: f64 = 1100.0;
/// Room for the upstreams' names left of the plots.
const LEFT: f64 = 250.0;
const RIGHT: f64 = 20.0;
const PLOT_WIDTH: f64 = WIDTH - LEFT - RIGHT;
/// The narrowest share of the time axis a phase gets: a phase of 30
/// requests in 50 ms would be a hairline next to a 6 s one.
const MIN_PHASE_SHARE: f64 = 0.07;

/// Writes the page for `recording` to `path`.
pub fn write(path: &Path, recording: &Recording) -> std::io::Result<()> {
    std::fs::write(path, render(recording))
}

/// The page for `recording`.
pub fn render(recording: &Recording) -> String {
    let axis = TimeAxis::new(&recording.phases);
    let mut page = String::new();
    let title = format!(
        "palisade shop demo, {}",
        utc_date_time(recording.started_at)
    );
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    page.push_str(&phase_list(&recording.phases));
    page.push_str("<h2>Requests over time, by outcome</h2>\n");
    page.push_str(&requests_chart(recording, &axis));
    page.push_str("<h2>Breaker state over time, per upstream</h2>\n");
    page.push_str(&breakers_chart(recording, &axis));
    page.push_str("<h2>Latency per phase</h2>\n");
    page.push_str(&latency_chart(recording));
    page.push_str("</body>\n</html>\n");
    page
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}\
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 4px}\
ol.phases{padding-left:0;list-style:none;margin:8px 0;columns:2;font-size:14px}\
ol.phases li{margin:2px 0}.pass,.fail{display:inline-block;width:3.2em;font-weight:bold}\
.pass{color:#006d50}.fail{color:#b34700}.summary{font-size:15px;margin:4px 0}\
details{font-size:12px;color:#444;margin-left:3.4em}\
svg{display:block;font-size:12px}svg text{fill:#222}.note{font-size:12px;color:#555;margin:2px 0}";

/// The date and time (UTC, to the minute) of `at`.
pub fn utc_date_time(at: SystemTime) -> String {
    let seconds = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        of_day / 3600,
        of_day % 3600 / 60
    )
}

/// The Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Each phase with PASS or FAIL (in words: colour is only a second hint)
/// and its checks, folded.
fn phase_list(phases: &[PhaseSpan]) -> String {
    let passed = phases.iter().filter(|p| p.passed()).count();
    let mut out = format!(
        "<p class=\"summary\">{passed} of {} phases showed what they should.</p>\n<ol class=\"phases\">\n",
        phases.len()
    );
    for phase in phases {
        let (class, word) = if phase.passed() {
            ("pass", "PASS")
        } else {
            ("fail", "FAIL")
        };
        let checks: String = phase
            .checks
            .iter()
            .map(|(check, held)| {
                let mark = if *held { "ok" } else { "FAIL" };
                format!("<li>{mark}: {}</li>", escape(check))
            })
            .collect();
        let _ = writeln!(
            out,
            "<li class=\"phase\" data-phase=\"{n}\"><span class=\"{class}\">{word}</span>\
             {n}. {title} <small>({secs})</small><details><summary>checks</summary><ul>{checks}</ul></details></li>",
            n = phase.number,
            title = escape(&phase.title),
            secs = seconds_label(phase.end.saturating_sub(phase.start).as_secs_f64()),
        );
    }
    out.push_str("</ol>\n");
    out
}

/// Maps time to x: each phase gets a stretch of the axis proportional to
/// its length, but at least [`MIN_PHASE_SHARE`] of it; within a phase,
/// time is to scale.
struct TimeAxis {
    /// Per phase: its start and end, and the x of each.
    stretches: Vec<(Duration, Duration, f64, f64)>,
}

impl TimeAxis {
    fn new(phases: &[PhaseSpan]) -> TimeAxis {
        let lengths: Vec<f64> = phases
            .iter()
            .map(|p| p.end.saturating_sub(p.start).as_secs_f64())
            .collect();
        let total: f64 = lengths.iter().sum::<f64>().max(f64::MIN_POSITIVE);
        let shares: Vec<f64> = lengths
            .iter()
            .map(|l| (l / total).max(MIN_PHASE_SHARE))
            .collect();
        let share_total: f64 = shares.iter().sum::<f64>().max(f64::MIN_POSITIVE);
        let mut x = LEFT;
        let mut stretches = Vec::new();
        for (phase, share) in phases.iter().zip(shares) {
            let width = PLOT_WIDTH * share / share_total;
            stretches.push((phase.start, phase.end, x, x + width));
            x += width;
        }
        TimeAxis { stretches }
    }

    /// The x of `t`; between phases, the next phase's left edge.
    fn x(&self, t: Duration) -> f64 {
        for &(start, end, x0, x1) in &self.stretches {
            if t <= end {
                if t <= start || end <= start {
                    return x0;
                }
                let fraction = (t - start).as_secs_f64() / (end - start).as_secs_f64();
                return x0 + fraction * (x1 - x0);
            }
        }
        self.stretches.last().map_or(LEFT, |s| s.3)
    }

    /// Ticks (time, label): each phase's edges, and round steps inside the
    /// phases wide enough for them.
    fn ticks(&self) -> Vec<(Duration, String)> {
        let mut ticks = Vec::new();
        for (i, &(start, end, x0, x1)) in self.stretches.iter().enumerate() {
            ticks.push((start, seconds_label(start.as_secs_f64())));
            let seconds = (end - start.min(end)).as_secs_f64();
            if seconds > 0.0 {
                let per_second = (x1 - x0) / seconds;
                let step = [
                    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
                ]
                .into_iter()
                .find(|step| step * per_second >= 70.0)
                .unwrap_or(60.0);
                let mut t = (start.as_secs_f64() / step).floor() * step + step;
                while t < end.as_secs_f64() {
                    let x = x0 + (t - start.as_secs_f64()) * per_second;
                    if x - x0 >= 40.0 && x1 - x >= 40.0 {
                        ticks.push((Duration::from_secs_f64(t), seconds_label(t)));
                    }
                    t += step;
                }
            }
            if i + 1 == self.stretches.len() {
                ticks.push((end, seconds_label(end.as_secs_f64())));
            }
        }
        ticks
    }
}

fn seconds_label(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{seconds:.1} s")
    } else {
        format!("{seconds:.2} s")
    }
}

/// Requests per second over time, stacked by outcome, over the phases'
/// bands.
fn requests_chart(recording: &Recording, axis: &TimeAxis) -> String {
    const TOP: f64 = 40.0;
    const HEIGHT: f64 = 260.0;
    let bottom = TOP + HEIGHT;
    let outcomes = outcome_colours(&recording.requests);
    let bins = request_bins(recording, axis, &outcomes);
    let peak = bins.iter().map(|b| b.total_rate()).fold(0.0, f64::max);
    let y_max = nice_top(peak);
    // A square-root scale: three slow requests stay visible next to a
    // thousand a second.
    let y = |rate: f64| bottom - HEIGHT * (rate / y_max).sqrt();
    let mut svg = svg_open(
        "requests",
        bottom + 90.0,
        "Requests per second over time, stacked by outcome",
    );
    svg.push_str(&phase_bands(&recording.phases, axis, TOP, HEIGHT));
    svg.push_str("<g class=\"bars\">");
    for bin in &bins {
        let mut rate_below = 0.0;
        for (i, &count) in bin.counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let rate = count as f64 / bin.seconds;
            let (outcome, colour) = &outcomes[i];
            let _ = write!(
                svg,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\">\
                 <title>{count} × {} at {}</title></rect>",
                bin.x0,
                y(rate_below + rate),
                (bin.x1 - bin.x0 - 0.5).max(0.5),
                y(rate_below) - y(rate_below + rate),
                escape(outcome),
                seconds_label(bin.start.as_secs_f64()),
            );
            rate_below += rate;
        }
    }
    svg.push_str("</g>");
    let mut ticks: Vec<(f64, String)> = vec![(bottom, "0".into())];
    for value in round_values(y_max) {
        // Far enough from the last one to read.
        if ticks.last().is_none_or(|(last, _)| last - y(value) >= 16.0) {
            ticks.push((y(value), format!("{value}")));
        }
    }
    svg.push_str(&y_axis(
        "requests per second (square-root scale)",
        ticks,
        TOP,
        bottom,
    ));
    svg.push_str(&time_axis(axis, bottom));
    let legend: Vec<(&str, &str)> = outcomes.iter().map(|(o, c)| (o.as_str(), *c)).collect();
    svg.push_str(&legend_row(&legend, bottom + 62.0));
    svg.push_str("</svg>\n");
    svg.push_str(
        "<p class=\"note\">Counted by the time each request was sent. Short phases are drawn \
         wider than their share of the run; within a phase, time is to scale.</p>\n",
    );
    svg
}

/// Each outcome seen, `ok` first, with its colour.
fn outcome_colours(requests: &[RequestRecord]) -> Vec<(String, &'static str)> {
    let mut seen: Vec<&str> = requests.iter().map(|r| r.outcome.as_str()).collect();
    seen.sort_by_key(|o| (*o != "ok", *o == "no answer", *o));
    seen.dedup();
    let mut errors = ERROR_COLOURS.iter().cycle();
    seen.into_iter()
        .map(|o| {
            let colour = match o {
                "ok" => GREEN,
                "no answer" => BLACK,
                o if o.ends_with(" circuit_open") => VERMILLION,
                _ => errors.next().copied().unwrap_or(GREY),
            };
            (o.to_owned(), colour)
        })
        .collect()
}

/// A slice of one phase's time, with its requests by outcome.
struct Bin {
    start: Duration,
    seconds: f64,
    x0: f64,
    x1: f64,
    /// Per outcome, in [`outcome_colours`]' order.
    counts: Vec<usize>,
}

impl Bin {
    fn total_rate(&self) -> f64 {
        self.counts.iter().sum::<usize>() as f64 / self.seconds
    }
}

/// Each phase cut into bins about 10 px wide.
fn request_bins(recording: &Recording, axis: &TimeAxis, outcomes: &[(String, &str)]) -> Vec<Bin> {
    let mut bins = Vec::new();
    for (phase, &(start, end, x0, x1)) in recording.phases.iter().zip(&axis.stretches) {
        let n = ((x1 - x0) / 10.0).round().max(1.0) as usize;
        // A phase of no length still holds its requests, in one bin.
        let seconds = (end.saturating_sub(start)).as_secs_f64().max(1e-3) / n as f64;
        let first = bins.len();
        for i in 0..n {
            bins.push(Bin {
                start: start + Duration::from_secs_f64(seconds * i as f64),
                seconds,
                x0: x0 + (x1 - x0) * i as f64 / n as f64,
                x1: x0 + (x1 - x0) * (i + 1) as f64 / n as f64,
                counts: vec![0; outcomes.len()],
            });
        }
        for request in recording
            .requests
            .iter()
            .filter(|r| r.phase == phase.number)
        {
            let offset = request.at.saturating_sub(start).as_secs_f64();
            let i = ((offset / seconds) as usize).min(n - 1);
            if let Some(o) = outcomes.iter().position(|(o, _)| *o == request.outcome) {
                bins[first + i].counts[o] += 1;
            }
        }
    }
    bins
}

/// One band per upstream: its breaker's state over time, blank before it
/// was first seen.
fn breakers_chart(recording: &Recording, axis: &TimeAxis) -> String {
    const TOP: f64 = 10.0;
    const ROW: f64 = 22.0;
    const GAP: f64 = 6.0;
    // In the order they were first seen; by name among those seen at once
    // (a balancer's replicas).
    let mut upstreams: Vec<(Duration, &str)> = Vec::new();
    for sample in &recording.breakers {
        if !upstreams.iter().any(|(_, u)| *u == sample.upstream) {
            upstreams.push((sample.at, &sample.upstream));
        }
    }
    upstreams.sort();
    let upstreams: Vec<&str> = upstreams.into_iter().map(|(_, u)| u).collect();
    let height = upstreams.len() as f64 * (ROW + GAP);
    let bottom = TOP + height;
    let end = recording.phases.last().map_or(Duration::ZERO, |p| p.end);
    let mut svg = svg_open(
        "breakers",
        bottom + 90.0,
        "Each upstream's breaker state over time",
    );
    svg.push_str(&phase_lines(axis, TOP, height));
    for (row, upstream) in upstreams.iter().enumerate() {
        let top = TOP + row as f64 * (ROW + GAP);
        let samples: Vec<&BreakerSample> = recording
            .breakers
            .iter()
            .filter(|s| s.upstream == *upstream)
            .collect();
        let _ = write!(
            svg,
            "<g class=\"breaker-band\" data-upstream=\"{name}\">\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{name}</text>\
             <rect x=\"{LEFT}\" y=\"{top:.1}\" width=\"{PLOT_WIDTH}\" height=\"{ROW}\" fill=\"none\" stroke=\"#ccc\"/>",
            LEFT - 8.0,
            top + ROW / 2.0 + 4.0,
            name = escape(upstream),
        );
        // A state held for less than a pixel (a half-open breaker whose
        // first probe closes it) still gets a sliver, pushing the next on.
        let mut drawn_to = LEFT;
        for (i, sample) in samples.iter().enumerate() {
            let until = samples.get(i + 1).map_or(end, |next| next.at);
            let right = LEFT + PLOT_WIDTH;
            let x0 = axis.x(sample.at).max(drawn_to).min(right - 3.0);
            let x1 = axis.x(until).max(x0 + 3.0).min(right);
            drawn_to = x1;
            let (colour, name) = state_style(sample.state);
            let _ = write!(
                svg,
                "<rect class=\"state {name}\" x=\"{x0:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{ROW}\" fill=\"{colour}\">\
                 <title>{} {name} from {} to {}</title></rect>",
                x1 - x0,
                escape(upstream),
                seconds_label(sample.at.as_secs_f64()),
                seconds_label(until.as_secs_f64()),
            );
        }
        svg.push_str("</g>");
    }
    svg.push_str(&time_axis(axis, bottom));
    let mut legend = vec![
        ("closed", GREEN),
        ("half-open", YELLOW),
        ("open", VERMILLION),
    ];
    if recording
        .breakers
        .iter()
        .any(|s| s.state == BreakerState::Other)
    {
        legend.push(("forced open, disabled or counting only", GREY));
    }
    legend.push(("not running yet", "#ffffff"));
    svg.push_str(&legend_row(&legend, bottom + 62.0));
    svg.push_str("</svg>\n");
    svg
}

fn state_style(state: BreakerState) -> (&'static str, &'static str) {
    match state {
        BreakerState::Closed => (GREEN, "closed"),
        BreakerState::HalfOpen => (YELLOW, "half-open"),
        BreakerState::Open => (VERMILLION, "open"),
        BreakerState::Other => (GREY, "other"),
    }
}

/// p50, p90 and p99 of each phase's latencies, grouped by phase, on a
/// log scale (they run from under a millisecond to seconds).
fn latency_chart(recording: &Recording) -> String {
    const TOP: f64 = 20.0;
    const HEIGHT: f64 = 220.0;
    const QUANTILES: [(f64, &str, &str); 3] = [
        (0.50, "p50", BLUE),
        (0.90, "p90", ORANGE),
        (0.99, "p99", VERMILLION),
    ];
    let bottom = TOP + HEIGHT;
    let per_phase: Vec<Vec<f64>> = recording
        .phases
        .iter()
        .map(|phase| {
            let mut ms: Vec<f64> = recording
                .requests
                .iter()
                .filter(|r| r.phase == phase.number)
                .map(|r| r.latency.as_secs_f64() * 1e3)
                .collect();
            ms.sort_by(f64::total_cmp);
            QUANTILES
                .iter()
                .map(|(q, _, _)| quantile(&ms, *q))
                .collect()
        })
        .collect();
    let slowest = per_phase.iter().flatten().copied().fold(1.0, f64::max);
    // Decades from 0.1 ms to the one above the slowest.
    let (low, high) = (-1.0_f64, slowest.log10().ceil().max(0.0));
    let y = |ms: f64| bottom - HEIGHT * (ms.max(0.1).log10() - low) / (high - low);
    let mut svg = svg_open(
        "latency",
        bottom + 90.0,
        "Latency percentiles per phase, log scale",
    );
    let decades = (low as i32..=high as i32)
        .map(|d| {
            let ms = 10f64.powi(d);
            (y(ms), millis_label(ms))
        })
        .collect();
    svg.push_str(&y_axis("latency (log scale)", decades, TOP, bottom));
    let group = PLOT_WIDTH / recording.phases.len().max(1) as f64;
    let bar = (group - 24.0) / QUANTILES.len() as f64;
    for (i, (phase, values)) in recording.phases.iter().zip(&per_phase).enumerate() {
        let x0 = LEFT + i as f64 * group + 12.0;
        let _ = write!(
            svg,
            "<g class=\"latency-group\" data-phase=\"{n}\"><title>Phase {n}: {}</title>",
            escape(&phase.title),
            n = phase.number
        );
        for (j, (&ms, &(_, name, colour))) in values.iter().zip(&QUANTILES).enumerate() {
            let _ = write!(
                svg,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\">\
                 <title>phase {}: {name} {}</title></rect>",
                x0 + j as f64 * bar,
                y(ms),
                bar - 2.0,
                bottom - y(ms),
                phase.number,
                millis_label(ms),
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">phase {}</text></g>",
            x0 + (group - 24.0) / 2.0,
            bottom + 18.0,
            phase.number
        );
    }
    let legend: Vec<(&str, &str)> = QUANTILES.iter().map(|(_, n, c)| (*n, *c)).collect();
    svg.push_str(&legend_row(&legend, bottom + 50.0));
    svg.push_str("</svg>\n");
    svg
}

/// The `q` quantile of sorted values (nearest rank); 0 for none.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn millis_label(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{} s", ms / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

/// A round number at or above `peak`: 1, 1.5, 2, 3, 5 or 7 times a power
/// of ten, at least 1.
fn nice_top(peak: f64) -> f64 {
    (0..15)
        .flat_map(|power| [1.0, 1.5, 2.0, 3.0, 5.0, 7.0].map(|m| m * 10f64.powi(power)))
        .find(|v| *v >= peak)
        .unwrap_or(peak)
}

/// 1, 2, 5, 10, 20, 50, … up to `top`.
fn round_values(top: f64) -> impl Iterator<Item = f64> {
    (0..15)
        .flat_map(|power| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(power)))
        .take_while(move |v| *v <= top)
}

fn svg_open(class: &str, height: f64, label: &str) -> String {
    format!(
        "<svg class=\"{class}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"{}\">",
        escape(label)
    )
}

/// The phases as alternating bands behind a plot, each labelled with its
/// number, and its name where it fits.
fn phase_bands(phases: &[PhaseSpan], axis: &TimeAxis, top: f64, height: f64) -> String {
    let mut out = String::from("<g class=\"phases\">");
    for (i, (phase, &(_, _, x0, x1))) in phases.iter().zip(&axis.stretches).enumerate() {
        let fill = if i % 2 == 0 { "#eeeeee" } else { "#f9f9f9" };
        let mark = if phase.passed() { "" } else { " FAIL" };
        let full = format!("{}. {}{mark}", phase.number, phase.title);
        // About 6.5 px a character at 12 px.
        let label = if full.chars().count() as f64 * 6.5 <= (x1 - x0) - 6.0 {
            full.clone()
        } else {
            format!("{}{mark}", phase.number)
        };
        let _ = write!(
            out,
            "<g class=\"phase-band\" data-phase=\"{n}\"><title>Phase {}</title>\
             <rect x=\"{x0:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{height:.1}\" fill=\"{fill}\"/>\
             <line x1=\"{x0:.1}\" y1=\"{:.1}\" x2=\"{x0:.1}\" y2=\"{:.1}\" stroke=\"#888\" stroke-dasharray=\"3 3\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-weight=\"bold\">{}</text></g>",
            escape(&full),
            x1 - x0,
            top - 24.0,
            top + height,
            x0 + 3.0,
            top - 8.0,
            escape(&label),
            n = phase.number,
        );
    }
    out.push_str("</g>");
    out
}

/// The phases' edges as dashed lines, for plots below the bands.
fn phase_lines(axis: &TimeAxis, top: f64, height: f64) -> String {
    let mut out = String::from("<g class=\"phase-lines\">");
    for &(_, _, x0, _) in &axis.stretches {
        let _ = write!(
            out,
            "<line x1=\"{x0:.1}\" y1=\"{top:.1}\" x2=\"{x0:.1}\" y2=\"{:.1}\" stroke=\"#888\" stroke-dasharray=\"3 3\"/>",
            top + height
        );
    }
    out.push_str("</g>");
    out
}

/// A time axis along `y`, in seconds since the run started.
fn time_axis(axis: &TimeAxis, y: f64) -> String {
    let mut out = format!(
        "<g class=\"axis x\"><line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#222\"/>",
        LEFT + PLOT_WIDTH
    );
    for (t, label) in axis.ticks() {
        let x = axis.x(t);
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#222\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            y + 5.0,
            y + 18.0
        );
    }
    let _ = write!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">time since the demo started (seconds)</text></g>",
        LEFT + PLOT_WIDTH / 2.0,
        y + 36.0
    );
    out
}

/// A value axis at the plot's left edge: `ticks` as (y, label), with
/// light grid lines across the plot.
fn y_axis(title: &str, ticks: Vec<(f64, String)>, top: f64, bottom: f64) -> String {
    let mut out = format!(
        "<g class=\"axis y\"><line x1=\"{LEFT}\" y1=\"{top:.1}\" x2=\"{LEFT}\" y2=\"{bottom:.1}\" stroke=\"#222\"/>"
    );
    for (y, label) in ticks {
        let _ = write!(
            out,
            "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#000\" stroke-opacity=\"0.12\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 5.0,
            LEFT + PLOT_WIDTH,
            LEFT - 8.0,
            y + 4.0,
            escape(&label)
        );
    }
    let (x, y) = (LEFT - 70.0, (top + bottom) / 2.0);
    let _ = write!(
        out,
        "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 {x:.1} {y:.1})\">{}</text></g>",
        escape(title)
    );
    out
}

/// Coloured swatches with their names, in rows from the plot's left at
/// `y` (a second row 20 px below, should they not fit in one).
fn legend_row(entries: &[(&str, &str)], y: f64) -> String {
    let mut out = String::from("<g class=\"legend\">");
    let (mut x, mut y) = (LEFT, y);
    for (name, colour) in entries {
        let width = 19.0 + name.chars().count() as f64 * 6.8 + 22.0;
        if x > LEFT && x + width > WIDTH {
            (x, y) = (LEFT, y + 20.0);
        }
        let _ = write!(
            out,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"14\" height=\"14\" fill=\"{colour}\" stroke=\"#555\"/>\
             <text x=\"{:.1}\" y=\"{y:.1}\">{}</text>",
            y - 11.0,
            x + 19.0,
            escape(name)
        );
        x += width;
    }
    out.push_str("</g>");
    out
}

/// `text` safe in HTML and SVG text and attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn phase(number: usize, title: &str, start: u64, end: u64, held: bool) -> PhaseSpan {
        PhaseSpan {
            number,
            title: title.into(),
            start: ms(start),
            end: ms(end),
            checks: vec![(format!("phase {number} showed it"), held)],
        }
    }

    fn request(at: u64, phase: usize, outcome: &str, latency: u64) -> RequestRecord {
        RequestRecord {
            at: ms(at),
            phase,
            outcome: outcome.into(),
            latency: ms(latency),
        }
    }

    fn sample(at: u64, upstream: &str, state: BreakerState) -> BreakerSample {
        BreakerSample {
            at: ms(at),
            upstream: upstream.into(),
            state,
        }
    }

    /// Three phases, the second failing its check: a breaker that opens,
    /// probes and closes, and two replicas started in the last phase.
    fn recording() -> Recording {
        use BreakerState::*;
        Recording {
            started_at: UNIX_EPOCH + Duration::from_secs(1_764_906_000),
            phases: vec![
                phase(1, "healthy traffic", 0, 50, true),
                phase(2, "the <product> service fails", 50, 5_100, false),
                phase(3, "one replica fails", 5_100, 8_000, true),
            ],
            requests: vec![
                request(5, 1, "ok", 2),
                request(10, 1, "ok", 3),
                request(60, 2, "500 injected_fault", 40),
                request(200, 2, "503 circuit_open", 1),
                request(5_150, 3, "ok", 1_500),
                request(6_000, 3, "504 timeout", 2_000),
            ],
            breakers: vec![
                sample(0, "gateway→product", Closed),
                sample(150, "gateway→product", Open),
                sample(5_110, "gateway→product", HalfOpen),
                sample(5_110, "gateway→product", Closed),
                // A balancer's replicas, seen at once, in its order.
                sample(5_200, "gateway→product replica 2", Closed),
                sample(5_200, "gateway→product replica 1", Closed),
                sample(5_300, "gateway→product replica 2", Open),
            ],
        }
    }

    #[test]
    fn the_page_has_a_band_per_phase_and_per_upstream_and_its_axes() {
        let page = render(&recording());
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<h1>palisade shop demo, 2025-12-05 03:40 UTC</h1>"));
        // Each phase: named with its verdict at the top, a band over the
        // requests, a group of latency bars.
        for (n, verdict, title) in [
            (1, "PASS", "healthy traffic"),
            (2, "FAIL", "the &lt;product&gt; service fails"),
            (3, "PASS", "one replica fails"),
        ] {
            assert!(page.contains(&format!(
                "<li class=\"phase\" data-phase=\"{n}\"><span class=\"{}\">{verdict}</span>{n}. {title}",
                verdict.to_lowercase()
            )));
            assert_eq!(page.matches(&format!("data-phase=\"{n}\"")).count(), 3);
            assert!(page.contains(&format!(
                "<g class=\"phase-band\" data-phase=\"{n}\"><title>Phase {n}. {title}"
            )));
            assert!(page.contains(&format!("<g class=\"latency-group\" data-phase=\"{n}\">")));
        }
        assert_eq!(page.matches("<g class=\"phase-band\"").count(), 3);
        assert!(page.contains("2 of 3 phases showed what they should."));
        // Each upstream: one band, in the order first seen (by name when
        // seen at once), with its states.
        let band_of = |upstream: &str| {
            page.find(&format!(
                "<g class=\"breaker-band\" data-upstream=\"{upstream}\">"
            ))
            .expect(upstream)
        };
        let product = band_of("gateway→product");
        let replica = band_of("gateway→product replica 1");
        assert!(product < replica && replica < band_of("gateway→product replica 2"));
        assert_eq!(page.matches("<g class=\"breaker-band\"").count(), 3);
        let band = &page[product..replica];
        for state in ["closed", "open", "half-open"] {
            assert!(
                band.contains(&format!("<rect class=\"state {state}\"")),
                "{state}"
            );
        }
        assert_eq!(band.matches("<rect class=\"state ").count(), 4);
        // The axes: time under the requests and the breakers, values left
        // of the requests and the latencies, with their units.
        assert_eq!(page.matches("<g class=\"axis x\">").count(), 2);
        assert_eq!(page.matches("<g class=\"axis y\">").count(), 2);
        assert!(page.contains("time since the demo started (seconds)"));
        assert!(page.contains(">requests per second (square-root scale)</text>"));
        assert!(page.contains(">latency (log scale)</text>"));
        for tick in [
            ">0.00 s</text>",
            ">0.05 s</text>",
            ">5.1 s</text>",
            ">8.0 s</text>",
        ] {
            assert!(page.contains(tick), "{tick}");
        }
        for tick in [">0.1 ms</text>", ">1 s</text>", ">10 s</text>"] {
            assert!(page.contains(tick), "{tick}");
        }
        // The legends: every outcome, every state, every percentile.
        for entry in [
            ">ok</text>",
            ">500 injected_fault</text>",
            ">503 circuit_open</text>",
            ">504 timeout</text>",
            ">closed</text>",
            ">half-open</text>",
            ">open</text>",
            ">not running yet</text>",
            ">p50</text>",
            ">p90</text>",
            ">p99</text>",
        ] {
            assert_eq!(page.matches(entry).count(), 1, "{entry}");
        }
        // Well nested, and nothing fetched.
        assert_eq!(page.matches("<svg ").count(), 3);
        assert_eq!(page.matches("</svg>").count(), 3);
        assert_eq!(page.matches("<g ").count(), page.matches("</g>").count());
        assert!(!page.contains("<script") && !page.contains("src=") && !page.contains("href="));
    }

    #[test]
    fn a_state_shorter_than_a_pixel_still_shows() {
        let page = render(&recording());
        let half_open = page
            .split("<rect class=\"state half-open\" ")
            .nth(1)
            .expect("the half-open state");
        let width: f64 = half_open
            .split("width=\"")
            .nth(1)
            .and_then(|w| w.split('"').next())
            .and_then(|w| w.parse().ok())
            .expect("its width");
        assert!(width >= 3.0, "{width}");
    }

    #[test]
    fn short_phases_get_a_readable_share_of_the_time_axis() {
        let axis = TimeAxis::new(&recording().phases);
        let widths: Vec<f64> = axis.stretches.iter().map(|s| s.3 - s.2).collect();
        assert!(
            widths[0] >= PLOT_WIDTH * MIN_PHASE_SHARE * 0.9,
            "{widths:?}"
        );
        assert!((widths.iter().sum::<f64>() - PLOT_WIDTH).abs() < 1e-6);
        // To scale within a phase, in order across them.
        assert_eq!(axis.x(ms(0)), LEFT);
        assert!((axis.x(ms(2_575)) - (axis.stretches[1].2 + widths[1] / 2.0)).abs() < 1e-6);
        assert!((axis.x(ms(8_000)) - (LEFT + PLOT_WIDTH)).abs() < 1e-6);
        let xs: Vec<f64> = (0..=80).map(|t| axis.x(ms(t * 100))).collect();
        assert!(xs.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn answers_are_classed_by_status_and_error_kind() {
        assert_eq!(outcome(200, None), "ok");
        assert_eq!(outcome(201, Some("ignored")), "ok");
        assert_eq!(outcome(0, None), "no answer");
        assert_eq!(outcome(503, Some("circuit_open")), "503 circuit_open");
        assert_eq!(outcome(429, None), "429");
    }

    #[test]
    fn outcomes_sort_ok_first_and_open_circuits_in_the_open_colour() {
        let requests = recording().requests;
        let colours = outcome_colours(&requests);
        let names: Vec<&str> = colours.iter().map(|(o, _)| o.as_str()).collect();
        assert_eq!(
            names,
            [
                "ok",
                "500 injected_fault",
                "503 circuit_open",
                "504 timeout"
            ]
        );
        assert_eq!(colours[0].1, GREEN);
        assert_eq!(colours[2].1, state_style(BreakerState::Open).0);
    }

    #[test]
    fn a_legend_too_long_for_one_row_wraps_within_the_page() {
        let names: Vec<String> = (1..=9).map(|i| format!("50{i} some_error_kind")).collect();
        let entries: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), BLUE)).collect();
        let legend = legend_row(&entries, 100.0);
        assert!(legend.contains("y=\"100.0\">501 some_error_kind</text>"));
        assert!(legend.contains("y=\"120.0\">"));
        let xs = legend
            .split("<text x=\"")
            .skip(1)
            .filter_map(|t| t.split('"').next()?.parse::<f64>().ok());
        for x in xs {
            assert!(x + "509 some_error_kind".len() as f64 * 6.8 <= WIDTH, "{x}");
        }
    }

    #[test]
    fn dates_are_utc_to_the_minute() {
        assert_eq!(utc_date_time(UNIX_EPOCH), "1970-01-01 00:00 UTC");
        // 2024-02-29 23:59:59, a leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_251_199);
        assert_eq!(utc_date_time(leap), "2024-02-29 23:59 UTC");
    }
}
