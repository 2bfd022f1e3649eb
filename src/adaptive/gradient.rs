//! Gradient2, after Netflix's concurrency-limits `Gradient2Limit`: the
//! limit follows the ratio of a long-term average latency to the latest
//! sample's.
//!
//! Each sample gives a gradient, `tolerance × long-term RTT ÷ sample RTT`,
//! held within 0.5 ..= 1: 1 while the sample is no slower than `tolerance`
//! times the long-term average (no queueing), down to 0.5 as it gets
//! slower. The target is `limit × gradient + queue_allowance`, and the
//! limit moves `smoothing` of the way there. So a healthy sample creeps
//! the limit up by about `smoothing × queue_allowance`, and the slowest
//! lowers it by about `smoothing / 2` of itself: a tenth with the defaults.
//!
//! The long-term RTT is the plain average of the first ten samples, then an
//! exponential average over about `long_window` samples. After a long slow
//! spell it sits well above a normal sample; while it is more than twice
//! the latest sample it is also cut by 5 % per sample, so that the limit is
//! not held down long after the dependency has recovered.
//!
//! Two choices differ from `Gradient2Limit`, which ignores drops: a drop
//! counts as the slowest sample there can be (gradient 0.5), since an
//! overloaded dependency that fails fast would otherwise look healthy; and
//! its latency stays out of the long-term average, which a fast refusal
//! would drag down and a timeout up. Each sample's gradient is taken
//! against the long-term average before the sample joins it.

use super::limiter::{Bounds, Sample};
use crate::error::ConfigError;

const DEFAULT_TOLERANCE: f64 = 1.5;
const DEFAULT_LONG_WINDOW: u32 = 600;
const DEFAULT_QUEUE_ALLOWANCE: f64 = 4.0;
const DEFAULT_SMOOTHING: f64 = 0.2;
/// The lowest gradient: one slow sample halves the target at most, so an
/// outlier cannot shed most of the load at once.
const MIN_GRADIENT: f64 = 0.5;
/// Samples averaged plainly before the exponential average takes over, so
/// the first few do not weigh almost nothing.
const WARMUP: u32 = 10;
/// While the long-term RTT is more than this many times a sample's...
const STALE_RATIO: f64 = 2.0;
/// ...it is multiplied by this.
const STALE_DECAY: f64 = 0.95;

/// Gradient2's parameters.
///
/// With the `serde` feature, a file may leave out any field for its
/// default:
///
/// ```text
/// [algorithm.gradient]
/// tolerance = 1.5
/// long_window = 600
/// queue_allowance = 4.0
/// smoothing = 0.2
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct GradientConfig {
    /// How much slower than the long-term average a sample may be before
    /// it counts as queueing (default 1.5); at least 1.
    pub tolerance: f64,
    /// The long-term RTT is an exponential average over about this many
    /// samples (default 600); at least 1.
    pub long_window: u32,
    /// Added to the target, so the limit keeps probing upward while
    /// latency holds (default 4 calls); 0 or more.
    pub queue_allowance: f64,
    /// The share of the way to the target the limit moves per sample
    /// (default 0.2), in (0, 1].
    pub smoothing: f64,
}

impl Default for GradientConfig {
    fn default() -> Self {
        GradientConfig {
            tolerance: DEFAULT_TOLERANCE,
            long_window: DEFAULT_LONG_WINDOW,
            queue_allowance: DEFAULT_QUEUE_ALLOWANCE,
            smoothing: DEFAULT_SMOOTHING,
        }
    }
}

impl GradientConfig {
    /// Checks the parameters; `Err` names the first bad field.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        use super::layer::invalid;
        // Written so that NaN fails too.
        if !(self.tolerance.is_finite() && self.tolerance >= 1.0) {
            return Err(invalid(
                "tolerance",
                format!(
                    "must be a finite number of at least 1 (below 1, a dependency as fast as \
                     ever reads as queueing), got {}",
                    self.tolerance
                ),
            ));
        }
        if self.long_window == 0 {
            return Err(invalid("long_window", "must be at least 1 sample, got 0"));
        }
        if !(self.queue_allowance.is_finite() && self.queue_allowance >= 0.0) {
            return Err(invalid(
                "queue_allowance",
                format!(
                    "must be a finite number of 0 or more, got {}",
                    self.queue_allowance
                ),
            ));
        }
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return Err(invalid(
                "smoothing",
                format!("must be in (0, 1], got {}", self.smoothing),
            ));
        }
        Ok(())
    }
}

/// The Gradient2 limit over a stream of samples.
#[derive(Clone, Debug)]
pub(crate) struct Gradient {
    /// The limit before rounding down to whole calls.
    estimate: f64,
    long_rtt: LongRtt,
    bounds: Bounds,
    tolerance: f64,
    queue_allowance: f64,
    smoothing: f64,
}

/// The long-term RTT, in seconds.
#[derive(Clone, Debug)]
struct LongRtt {
    seconds: f64,
    /// Samples taken in, up to the warm-up's length.
    samples: u32,
    warmup: u32,
    factor: f64,
}

impl LongRtt {
    fn new(window: u32) -> Self {
        LongRtt {
            seconds: 0.0,
            samples: 0,
            warmup: window.min(WARMUP),
            factor: 2.0 / (f64::from(window) + 1.0),
        }
    }

    fn get(&self) -> Option<f64> {
        (self.samples > 0).then_some(self.seconds)
    }

    fn add(&mut self, rtt: f64) {
        if self.samples < self.warmup {
            self.samples += 1;
            self.seconds += (rtt - self.seconds) / f64::from(self.samples);
        } else {
            self.seconds += (rtt - self.seconds) * self.factor;
        }
    }
}

impl Gradient {
    /// Starts at `initial`, which the caller has checked lies within
    /// `bounds`, with no long-term RTT yet.
    pub(crate) fn new(config: &GradientConfig, initial: usize, bounds: Bounds) -> Self {
        Gradient {
            estimate: initial as f64,
            long_rtt: LongRtt::new(config.long_window),
            bounds,
            tolerance: config.tolerance,
            queue_allowance: config.queue_allowance,
            smoothing: config.smoothing,
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.estimate as usize
    }

    /// Takes one sample in and returns the new limit.
    pub(crate) fn update(&mut self, sample: &Sample) -> usize {
        let gradient = if sample.dropped {
            MIN_GRADIENT
        } else {
            self.measure(sample.latency.as_secs_f64())
        };
        // Fewer than half the slots in use: the limit is not what holds the
        // callers back, so the sample says nothing about it.
        if (sample.in_flight as f64) < self.estimate / 2.0 {
            return self.limit();
        }
        let target = self.estimate * gradient + self.queue_allowance;
        let estimate = self.estimate * (1.0 - self.smoothing) + target * self.smoothing;
        self.estimate = estimate.clamp(self.bounds.min as f64, self.bounds.max as f64);
        self.limit()
    }

    /// The gradient of a successful sample of `rtt` seconds, which then
    /// joins the long-term RTT.
    fn measure(&mut self, rtt: f64) -> f64 {
        if rtt <= 0.0 {
            // Answered within one tick of the clock: no queueing to see,
            // and nothing to average.
            return 1.0;
        }
        let long = self.long_rtt.get().unwrap_or(rtt);
        let gradient = (self.tolerance * long / rtt).clamp(MIN_GRADIENT, 1.0);
        self.long_rtt.add(rtt);
        if self.long_rtt.seconds > STALE_RATIO * rtt {
            self.long_rtt.seconds *= STALE_DECAY;
        }
        gradient
    }

    #[cfg(test)]
    fn estimate(&self) -> f64 {
        self.estimate
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// AC-2's state: limit 100, bounds 20 to 200, a long-term RTT of
    /// 10 ms past its warm-up, the default parameters (tolerance 1.5,
    /// queue allowance 4, smoothing 0.2).
    fn at_100_with_10ms() -> Gradient {
        let bounds = Bounds { min: 20, max: 200 };
        let mut gradient = Gradient::new(&GradientConfig::default(), 100, bounds);
        gradient.long_rtt = LongRtt {
            seconds: 0.010,
            samples: WARMUP,
            warmup: WARMUP,
            factor: 2.0 / 601.0,
        };
        gradient
    }

    fn ok(ms: u64, in_flight: usize) -> Sample {
        Sample {
            latency: Duration::from_millis(ms),
            in_flight,
            dropped: false,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// AC-2 (a): a 30 ms sample against 10 ms gives 1.5 × 10 / 30 = 0.5;
    /// the target is 100 × 0.5 + 4 = 54, and the limit moves a fifth of
    /// the way: 100 × 0.8 + 54 × 0.2 = 90.8, 90 whole calls. One slow
    /// sample takes off a tenth at most.
    #[test]
    fn a_slow_sample_lowers_the_limit_by_a_tenth_at_most() {
        let mut gradient = at_100_with_10ms();
        assert_eq!(gradient.update(&ok(30, 80)), 90);
        assert!(close(gradient.estimate(), 90.8), "{}", gradient.estimate());
        // Much slower still: the gradient is held at 0.5.
        let mut gradient = at_100_with_10ms();
        gradient.update(&ok(3_000, 80));
        assert!(close(gradient.estimate(), 90.8), "{}", gradient.estimate());
    }

    /// AC-2 (b): a 10 ms sample gives 1.5, held at 1; the target is 104
    /// and the limit creeps up to 100.8.
    #[test]
    fn a_normal_sample_creeps_the_limit_up() {
        let mut gradient = at_100_with_10ms();
        assert_eq!(gradient.update(&ok(10, 80)), 100);
        assert!(close(gradient.estimate(), 100.8), "{}", gradient.estimate());
        // Within the tolerance (15 ms) is no queueing either.
        let mut gradient = at_100_with_10ms();
        gradient.update(&ok(15, 80));
        assert!(close(gradient.estimate(), 100.8), "{}", gradient.estimate());
    }

    /// AC-2 (c): with 40 in flight, fewer than half the limit, no sample
    /// moves the limit: fast, slow or dropped.
    #[test]
    fn a_sample_from_a_half_idle_limiter_changes_nothing() {
        for sample in [
            ok(10, 40),
            ok(30, 40),
            Sample {
                dropped: true,
                ..ok(10, 40)
            },
        ] {
            let mut gradient = at_100_with_10ms();
            assert_eq!(gradient.update(&sample), 100);
            assert!(close(gradient.estimate(), 100.0), "{sample:?}");
        }
    }

    /// AC-2 (d): the limit moves on samples only; nothing else changes it.
    /// (The layer test `no_calls_for_a_minute_leave_the_limit_alone` runs
    /// the minute on the clock.)
    #[test]
    fn without_samples_the_limit_stays() {
        let gradient = at_100_with_10ms();
        assert_eq!(gradient.limit(), 100);
        assert!(close(gradient.estimate(), 100.0));
    }

    /// AC-2 (e): slow samples without end take the limit down to the
    /// minimum, never below; fast ones then take it up to the maximum,
    /// never above.
    #[test]
    fn the_limit_stays_within_its_bounds_both_ways() {
        let mut gradient = at_100_with_10ms();
        let mut lowest = usize::MAX;
        for _ in 0..2_000 {
            let limit = gradient.update(&ok(30, gradient.limit()));
            assert!((20..=200).contains(&limit), "{limit}");
            lowest = lowest.min(limit);
        }
        assert_eq!(lowest, 20);
        let mut highest = 0;
        for _ in 0..2_000 {
            let limit = gradient.update(&ok(5, gradient.limit()));
            assert!((20..=200).contains(&limit), "{limit}");
            highest = highest.max(limit);
        }
        assert_eq!(highest, 200);
        assert_eq!(gradient.limit(), 200);
    }

    /// A drop counts as the slowest sample, whatever its latency, and its
    /// latency stays out of the long-term RTT.
    #[test]
    fn a_drop_is_the_slowest_sample_and_leaves_the_average_alone() {
        let mut gradient = at_100_with_10ms();
        let fast_refusal = Sample {
            dropped: true,
            ..ok(1, 80)
        };
        assert_eq!(gradient.update(&fast_refusal), 90);
        assert!(close(gradient.estimate(), 90.8));
        assert!(close(gradient.long_rtt.seconds, 0.010));
    }

    /// The long-term RTT averages the first samples plainly, then
    /// exponentially; one far above a sample is cut by 5 % as well.
    #[test]
    fn the_long_term_rtt_warms_up_then_smooths() {
        let bounds = Bounds { min: 20, max: 200 };
        let mut gradient = Gradient::new(&GradientConfig::default(), 20, bounds);
        // The first sample is its own baseline: gradient 1.
        gradient.update(&ok(10, 20));
        assert!(close(gradient.estimate(), 20.8));
        gradient.update(&ok(20, 20));
        assert!(close(gradient.long_rtt.seconds, 0.015));
        let mut long = LongRtt::new(600);
        for _ in 0..WARMUP {
            long.add(0.010);
        }
        long.add(0.070);
        assert!(close(long.seconds, 0.010 + 0.060 * 2.0 / 601.0));
        let mut gradient = at_100_with_10ms();
        gradient.update(&ok(4, 100));
        let expected = (0.010 + (0.004 - 0.010) * 2.0 / 601.0) * 0.95;
        assert!(close(gradient.long_rtt.seconds, expected));
    }

    #[test]
    fn bad_parameters_name_their_field() {
        let field = |config: GradientConfig| config.check().unwrap_err().field();
        let default = GradientConfig::default;
        for tolerance in [0.9, f64::NAN, f64::INFINITY] {
            let config = GradientConfig {
                tolerance,
                ..default()
            };
            assert_eq!(field(config), "tolerance");
        }
        let config = GradientConfig {
            long_window: 0,
            ..default()
        };
        assert_eq!(field(config), "long_window");
        for queue_allowance in [-1.0, f64::NAN] {
            let config = GradientConfig {
                queue_allowance,
                ..default()
            };
            assert_eq!(field(config), "queue_allowance");
        }
        for smoothing in [0.0, 1.5, f64::NAN] {
            let config = GradientConfig {
                smoothing,
                ..default()
            };
            assert_eq!(field(config), "smoothing");
        }
        assert!(default().check().is_ok());
    }
}
