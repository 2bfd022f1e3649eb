//! GCRA, the generic cell rate algorithm: a token bucket kept as one
//! number.
//!
//! A permit is emitted every `interval` (period ÷ rate, rounded up to the
//! nanosecond so the rate is never exceeded); the bucket holds up to `burst`
//! of them. The state is the theoretical arrival time (TAT): when the bucket
//! will be full again if nothing more is taken. Taking `n` permits moves it
//! `n` intervals later; the take is allowed while the TAT stays within
//! `burst` intervals of now. One compare-and-swap per call, no lock, no
//! refill timer.

use std::time::Duration;

use crate::sync::{AtomicU64, Ordering};

use super::limiter::{Decision, Snapshot, nanos};

#[derive(Debug)]
pub(crate) struct Gcra {
    /// The theoretical arrival time, in nanoseconds since the origin.
    tat: AtomicU64,
    /// Nanoseconds between permits.
    interval: AtomicU64,
    burst: AtomicU64,
    // What the handle reports and changes: the rate per period.
    rate: AtomicU64,
    period: AtomicU64,
}

impl Gcra {
    pub(crate) fn new(rate: u64, period: Duration, burst: u64) -> Self {
        let g = Gcra {
            tat: AtomicU64::new(0),
            interval: AtomicU64::new(0),
            burst: AtomicU64::new(0),
            rate: AtomicU64::new(0),
            period: AtomicU64::new(0),
        };
        g.store_settings(rate, period, burst);
        g
    }

    /// A limiter whose theoretical arrival time is already `tat`.
    pub(crate) fn with_tat(rate: u64, period: Duration, burst: u64, tat: u64) -> Self {
        let g = Gcra::new(rate, period, burst);
        g.tat.store(tat, Ordering::Relaxed);
        g
    }

    /// New settings from `now` on. The permits left carry over (at most the
    /// new burst); the part of a permit already refilled does not.
    pub(crate) fn set(&self, rate: u64, period: Duration, burst: u64, now: u64) {
        let (old_interval, old_burst) = (self.interval(), self.burst());
        self.store_settings(rate, period, burst);
        let interval = self.interval();
        let _ = self
            .tat
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                let left = left(tat, now, old_interval, old_burst).min(burst);
                Some(now + interval.saturating_mul(burst - left))
            });
    }

    fn interval(&self) -> u64 {
        self.interval.load(Ordering::Relaxed)
    }

    fn store_settings(&self, rate: u64, period: Duration, burst: u64) {
        let period = nanos(period);
        self.rate.store(rate, Ordering::Relaxed);
        self.period.store(period, Ordering::Relaxed);
        self.interval
            .store(interval(rate, period), Ordering::Relaxed);
        self.burst.store(burst, Ordering::Relaxed);
    }

    pub(crate) fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    pub(crate) fn period(&self) -> Duration {
        Duration::from_nanos(self.period.load(Ordering::Relaxed))
    }

    pub(crate) fn burst(&self) -> u64 {
        self.burst.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn acquire(&self, now: u64, n: u64) -> Decision {
        let interval = self.interval.load(Ordering::Relaxed);
        let burst = self.burst.load(Ordering::Relaxed);
        if n > burst {
            return Decision::TooLarge;
        }
        let span = interval.saturating_mul(burst);
        let cost = interval.saturating_mul(n);
        let mut later = 0;
        let taken = self
            .tat
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                let next = tat.max(now).saturating_add(cost);
                // Allowed while the bucket, after the take, is not past
                // full: next − now ≤ burst intervals.
                match (next - now).checked_sub(span) {
                    None | Some(0) => Some(next),
                    Some(over) => {
                        later = over;
                        None
                    }
                }
            });
        match taken {
            Ok(_) => Decision::Admitted,
            Err(_) => Decision::Refused {
                wait: Duration::from_nanos(later),
            },
        }
    }

    pub(crate) fn snapshot(&self, now: u64) -> Snapshot {
        snapshot(
            self.tat.load(Ordering::Relaxed),
            now,
            self.interval(),
            self.burst(),
        )
    }
}

/// Nanoseconds between permits at `rate` per `period` nanoseconds.
pub(crate) fn interval(rate: u64, period: u64) -> u64 {
    period.div_ceil(rate.max(1)).max(1)
}

/// The state of a bucket whose TAT is `tat`, at `now`.
pub(crate) fn snapshot(tat: u64, now: u64, interval: u64, burst: u64) -> Snapshot {
    Snapshot {
        limit: burst,
        remaining: left(tat, now, interval, burst),
        reset: Duration::from_nanos(tat.saturating_sub(now)),
    }
}

/// Whole permits left in a bucket whose TAT is `tat`, at `now`.
pub(crate) fn left(tat: u64, now: u64, interval: u64, burst: u64) -> u64 {
    let owed = tat.saturating_sub(now);
    interval
        .saturating_mul(burst)
        .saturating_sub(owed)
        .checked_div(interval)
        .unwrap_or(0)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    fn admits(g: &Gcra, at: u64) -> bool {
        g.acquire(at, 1) == Decision::Admitted
    }

    #[test]
    fn a_burst_then_a_steady_refill() {
        // scenario TB-6: 2 per second, burst 2.
        let g = Gcra::new(2, Duration::from_secs(1), 2);
        assert!(admits(&g, 0));
        assert!(admits(&g, MS));
        assert!(!admits(&g, 2 * MS));
        assert!(admits(&g, 1_002 * MS));
        assert!(admits(&g, 1_003 * MS));
        assert!(!admits(&g, 1_004 * MS));
        // 1 per second: refused until exactly 1 s after the first.
        let g = Gcra::new(1, Duration::from_secs(1), 1);
        assert!(admits(&g, 0));
        assert_eq!(
            g.acquire(0, 1),
            Decision::Refused {
                wait: Duration::from_secs(1)
            }
        );
    }

    #[test]
    fn burst_credit_is_the_sustained_rate_plus_stored_credit() {
        // scenario TB-5: 2 per second with room for 4.
        let g = Gcra::new(2, Duration::from_secs(1), 4);
        assert!((0..4).all(|_| admits(&g, 0)));
        assert_eq!(g.snapshot(0).remaining, 0);
        assert_eq!(
            g.acquire(0, 1),
            Decision::Refused {
                wait: Duration::from_millis(500)
            }
        );
        assert_eq!(g.snapshot(1_000 * MS).remaining, 2);
        assert_eq!(
            g.snapshot(11_000 * MS).remaining,
            4,
            "never more than the burst"
        );
    }

    #[test]
    fn remaining_counts_down_and_reset_is_when_the_bucket_is_full() {
        // scenario TB-10: 4 per second.
        let g = Gcra::new(4, Duration::from_secs(1), 4);
        let left: Vec<u64> = (0..4)
            .map(|_| {
                assert!(admits(&g, 0));
                g.snapshot(0).remaining
            })
            .collect();
        assert_eq!(left, [3, 2, 1, 0]);
        assert!(!admits(&g, 0));
        assert_eq!(g.snapshot(0).reset, Duration::from_secs(1));
        // Period 90 ms, burst 2, after a long idle.
        let g = Gcra::new(1, Duration::from_millis(90), 2);
        assert!(admits(&g, 120_000 * MS));
        assert_eq!(g.snapshot(120_000 * MS).remaining, 1);
        assert!(admits(&g, 120_000 * MS));
        assert_eq!(g.snapshot(120_000 * MS).remaining, 0);
        assert!(!admits(&g, 120_000 * MS));
    }

    #[test]
    fn batches_too_big_for_the_bucket_are_told_apart() {
        // scenarios TB-8 and QW-4 (an oversized request is its own error,
        // not a rate-limit refusal): 5 per second.
        let g = Gcra::new(5, Duration::from_secs(1), 5);
        for n in [15, 7, 6] {
            assert_eq!(g.acquire(0, n), Decision::TooLarge);
        }
        assert_eq!(g.acquire(0, 5), Decision::Admitted);
        assert_eq!(g.acquire(3_000 * MS, 15), Decision::TooLarge);
        // 4 per second, batches of 2.
        let g = Gcra::new(4, Duration::from_secs(1), 4);
        assert_eq!(g.acquire(0, 2), Decision::Admitted);
        assert_eq!(g.acquire(0, 2), Decision::Admitted);
        assert!(matches!(g.acquire(MS, 2), Decision::Refused { .. }));
        assert_eq!(g.acquire(1_001 * MS, 2), Decision::Admitted);
        assert_eq!(g.acquire(1_002 * MS, 2), Decision::Admitted);
        assert!(matches!(g.acquire(1_003 * MS, 2), Decision::Refused { .. }));
    }

    #[test]
    fn a_new_rate_or_burst_keeps_the_permits_left() {
        // Found in review: the TAT was kept and re-read at the new
        // interval, so lowering the rate handed out permits.
        let g = Gcra::new(10, Duration::from_secs(1), 10);
        assert!((0..10).all(|_| admits(&g, 0)));
        g.set(1, Duration::from_secs(1), 10, 0);
        assert_eq!(g.snapshot(0).remaining, 0);
        assert_eq!(
            g.acquire(0, 1),
            Decision::Refused {
                wait: Duration::from_secs(1)
            }
        );
        // Raising it: the next permit comes at the new interval.
        let g = Gcra::new(1, Duration::from_secs(1), 10);
        assert!((0..10).all(|_| admits(&g, 0)));
        g.set(10, Duration::from_secs(1), 10, 0);
        assert_eq!(
            g.acquire(0, 1),
            Decision::Refused {
                wait: Duration::from_millis(100)
            }
        );
        // A bigger burst is room to refill, not permits granted at once.
        let g = Gcra::new(2, Duration::from_secs(1), 2);
        assert!(admits(&g, 0));
        g.set(2, Duration::from_secs(1), 6, 0);
        assert_eq!(g.snapshot(0).remaining, 1);
    }

    #[test]
    fn elapsed_time_is_never_lost() {
        // scenario TB-3, for a continuous GCRA: 10 permits, 1 per 10 min.
        const MIN: u64 = 60_000 * MS;
        let g = Gcra::new(1, Duration::from_secs(600), 10);
        assert!((0..3).all(|_| admits(&g, 0)));
        assert_eq!(g.snapshot(0).remaining, 7);
        assert_eq!(
            g.snapshot(10 * MIN - MS).remaining,
            7,
            "almost a period: kept"
        );
        assert_eq!(
            g.snapshot(20 * MIN).remaining,
            9,
            "and counted in full later"
        );
    }

    #[test]
    fn concurrent_checks_take_exactly_the_burst() {
        // scenario TB-11: 20 per second, 20 threads check at once.
        let g = std::sync::Arc::new(Gcra::new(20, Duration::from_secs(1), 20));
        let admitted: usize = (0..20)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || admits(&g, 0))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| usize::from(t.join().unwrap()))
            .sum();
        assert_eq!(admitted, 20);
        assert!(!admits(&g, 2 * MS));
        assert!(admits(&g, 1_000 * MS));
    }

    #[test]
    fn far_from_the_origin_nothing_overflows() {
        // scenario TB-4: 2^32 ms past the origin, 10 permits, 1 per 2 ms.
        let start = (1u64 << 32) * MS;
        let g = Gcra::new(1, Duration::from_millis(2), 10);
        assert!((0..10).all(|_| admits(&g, start)));
        assert_eq!(
            g.acquire(start, 1),
            Decision::Refused {
                wait: Duration::from_millis(2)
            }
        );
        assert!(!admits(&g, start + MS));
        assert!(admits(&g, start + 2 * MS));
        let huge = Gcra::new(u64::from(u32::MAX), Duration::from_secs(1), 1 << 40);
        assert!(admits(&huge, 1 << 62));
    }

    proptest! {
        /// scenario TB-9: for any rate, after the burst and some spaced
        /// admissions the next check is refused until exactly the reported
        /// instant, however the wait is split.
        #[test]
        fn the_reported_wait_is_exact(rate in 1u64..10_000, k in 0u64..20, parts in 1u64..6) {
            let g = Gcra::new(rate, Duration::from_secs(1), rate);
            let interval = 1_000_000_000u64.div_ceil(rate);
            let mut now = 0;
            for _ in 0..rate { prop_assert!(admits(&g, now)); }
            for _ in 0..k {
                now += interval;
                prop_assert!(admits(&g, now));
            }
            let Decision::Refused { wait } = g.acquire(now, 1) else {
                return Err(TestCaseError::fail("the bucket is empty"));
            };
            let wait = u64::try_from(wait.as_nanos()).unwrap();
            let step = wait / parts;
            for i in 1..parts {
                prop_assert!(!admits(&g, now + i * step.min(wait - 1)));
            }
            prop_assert!(admits(&g, now + wait));
        }
    }
}
