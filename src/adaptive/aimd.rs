//! AIMD: additive increase, multiplicative decrease, as TCP's congestion
//! window and Netflix's concurrency-limits `AIMDLimit` move.
//!
//! A healthy sample from a busy limiter (at least half the limit in flight)
//! adds one to the limit; a drop, or a sample slower than `slow_after`,
//! multiplies it by `backoff_factor`. The limit stays within its bounds.

use std::time::Duration;

use super::limiter::{Bounds, Sample};
use crate::error::ConfigError;

const DEFAULT_BACKOFF_FACTOR: f64 = 0.9;
const DEFAULT_SLOW_AFTER: Duration = Duration::from_secs(5);

/// AIMD's parameters: how hard a drop cuts the limit, and how slow a
/// successful call must be to count as one.
///
/// With the `serde` feature, a file may leave out either field for its
/// default:
///
/// ```text
/// [algorithm.aimd]
/// backoff_factor = 0.9
/// slow_after = "5s"
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct AimdConfig {
    /// What the limit is multiplied by on a drop or a slow call (default
    /// 0.9), in (0, 1).
    pub backoff_factor: f64,
    /// A successful call that took longer than this counts as a drop
    /// (default 5 s); more than zero.
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_duration"))]
    pub slow_after: Duration,
}

impl Default for AimdConfig {
    fn default() -> Self {
        AimdConfig {
            backoff_factor: DEFAULT_BACKOFF_FACTOR,
            slow_after: DEFAULT_SLOW_AFTER,
        }
    }
}

impl AimdConfig {
    /// Checks the parameters; `Err` names the first bad field.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        // Written so that NaN fails too.
        if !(self.backoff_factor > 0.0 && self.backoff_factor < 1.0) {
            return Err(super::layer::invalid(
                "backoff_factor",
                format!(
                    "must be in (0, 1) (the share of the limit kept after a drop), got {}",
                    self.backoff_factor
                ),
            ));
        }
        if self.slow_after.is_zero() {
            return Err(super::layer::invalid(
                "slow_after",
                "must be more than zero (with zero, every call counts as a drop)",
            ));
        }
        Ok(())
    }
}

/// The AIMD limit over a stream of samples.
#[derive(Clone, Debug)]
pub(crate) struct Aimd {
    limit: usize,
    bounds: Bounds,
    backoff_factor: f64,
    slow_after: Duration,
}

impl Aimd {
    /// Starts at `initial`, which the caller has checked lies within
    /// `bounds`.
    pub(crate) fn new(config: &AimdConfig, initial: usize, bounds: Bounds) -> Self {
        Aimd {
            limit: initial,
            bounds,
            backoff_factor: config.backoff_factor,
            slow_after: config.slow_after,
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Takes one sample in and returns the new limit.
    pub(crate) fn update(&mut self, sample: &Sample) -> usize {
        let limit = if sample.dropped || sample.latency > self.slow_after {
            // Rounded down, as the limit is a whole number of calls: 30
            // becomes 27, 21 becomes 18 (and then the minimum).
            (self.limit as f64 * self.backoff_factor) as usize
        } else if sample.in_flight.saturating_mul(2) >= self.limit {
            self.limit.saturating_add(1)
        } else {
            // Fewer than half the slots in use: the limit is not what holds
            // the callers back, so a fast answer says nothing about whether
            // more would be served as fast.
            self.limit
        };
        self.limit = self.bounds.clamp(limit);
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// AC-1's limiter: backoff 0.9, slow after 5 s, bounds 20 to `max`.
    fn aimd(limit: usize, max: usize) -> Aimd {
        let bounds = Bounds { min: 20, max };
        Aimd::new(&AimdConfig::default(), limit, bounds)
    }

    fn ok(latency: Duration, in_flight: usize) -> Sample {
        Sample {
            latency,
            in_flight,
            dropped: false,
        }
    }

    fn drop_after(latency: Duration, in_flight: usize) -> Sample {
        Sample {
            latency,
            in_flight,
            dropped: true,
        }
    }

    /// AC-1 (a): at limit 20, a successful 1 ms sample with 10 in flight
    /// (half the limit: busy) adds one.
    #[test]
    fn a_healthy_busy_sample_adds_one() {
        let mut limit = aimd(20, 200);
        assert_eq!(limit.update(&ok(MS, 10)), 21);
        assert_eq!(limit.limit(), 21);
    }

    /// AC-1 (b): with only 5 in flight the capacity is not being used, so
    /// it is not grown.
    #[test]
    fn a_healthy_idle_sample_changes_nothing() {
        let mut limit = aimd(20, 200);
        assert_eq!(limit.update(&ok(MS, 5)), 20);
        // One short of half the limit is still idle.
        assert_eq!(limit.update(&ok(MS, 9)), 20);
    }

    /// AC-1 (c): a drop at 30 cuts the limit by a tenth, to 27, however
    /// few calls are in flight.
    #[test]
    fn a_drop_cuts_the_limit_by_the_backoff_factor() {
        let mut limit = aimd(30, 200);
        assert_eq!(limit.update(&drop_after(MS, 1)), 27);
    }

    /// AC-1 (d): a successful sample slower than 5 s counts as a drop;
    /// exactly 5 s does not.
    #[test]
    fn a_slow_success_counts_as_a_drop() {
        let mut limit = aimd(30, 200);
        assert_eq!(limit.update(&ok(Duration::from_secs(6), 30)), 27);
        let mut limit = aimd(30, 200);
        assert_eq!(limit.update(&ok(Duration::from_secs(5), 30)), 31);
    }

    /// AC-1 (e): at the maximum, a healthy busy sample keeps it there.
    #[test]
    fn the_limit_never_grows_past_the_maximum() {
        let mut limit = aimd(21, 21);
        assert_eq!(limit.update(&ok(MS, 21)), 21);
    }

    /// AC-1 (f): a drop at 21 would make 18.9; the minimum, 20, holds.
    #[test]
    fn the_limit_never_falls_below_the_minimum() {
        let mut limit = aimd(21, 200);
        assert_eq!(limit.update(&drop_after(MS, 21)), 20);
        assert_eq!(limit.update(&drop_after(MS, 20)), 20);
    }

    #[test]
    fn bad_parameters_name_their_field() {
        let field = |config: AimdConfig| config.check().unwrap_err().field();
        for backoff_factor in [0.0, 1.0, -0.5, f64::NAN] {
            let config = AimdConfig {
                backoff_factor,
                ..AimdConfig::default()
            };
            assert_eq!(field(config), "backoff_factor", "{backoff_factor}");
        }
        let config = AimdConfig {
            slow_after: Duration::ZERO,
            ..AimdConfig::default()
        };
        assert_eq!(field(config), "slow_after");
        assert!(AimdConfig::default().check().is_ok());
    }
}
