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
//!
//! The settings (interval and burst) are two words, and a change through
//! the handle also rescales the TAT to the new interval. A [`SeqLock`]
//! makes that one step: a call reads the settings and the TAT, then checks
//! that no change began meanwhile, so it decides under the old state or the
//! new one, never a mix (a new interval with the old burst, or with the TAT
//! still counted in the old interval). Packing them into one word would
//! save the check but does not fit (a burst up to 2^62 and an interval up
//! to 2^56 ns); an `ArcSwap` of them would cost a read-modify-write per call.
//! One case is left: a change that completes between a call's check and
//! its compare-and-swap, and rescales the TAT to exactly the value the call
//! read (the compare-and-swap cannot tell), lets that call through as
//! decided under the old settings.

use std::time::Duration;

use crate::sync::{AtomicU64, Ordering};

use super::limiter::{Decision, Snapshot, nanos};
use super::seqlock::SeqLock;

#[derive(Debug)]
pub(crate) struct Gcra {
    /// The theoretical arrival time, in nanoseconds since the origin.
    tat: AtomicU64,
    /// Guards the settings below, and the TAT while a change rescales it.
    settings: SeqLock,
    /// Nanoseconds between permits.
    interval: AtomicU64,
    burst: AtomicU64,
    // What the handle reports and changes: the rate per period.
    rate: AtomicU64,
    period: AtomicU64,
}

/// A GCRA limiter's settings, read as one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) rate: u64,
    pub(crate) period: Duration,
    pub(crate) burst: u64,
}

impl Gcra {
    pub(crate) fn new(rate: u64, period: Duration, burst: u64) -> Self {
        let period = nanos(period);
        Gcra {
            tat: AtomicU64::new(0),
            settings: SeqLock::default(),
            interval: AtomicU64::new(interval(rate, period)),
            burst: AtomicU64::new(burst),
            rate: AtomicU64::new(rate),
            period: AtomicU64::new(period),
        }
    }

    /// A limiter whose theoretical arrival time is already `tat`.
    pub(crate) fn with_tat(rate: u64, period: Duration, burst: u64, tat: u64) -> Self {
        let g = Gcra::new(rate, period, burst);
        g.tat.store(tat, Ordering::Relaxed);
        g
    }

    /// New settings from `now` on. The permits left carry over (at most the
    /// new burst); the part of a permit already refilled does not.
    #[cfg(test)]
    pub(crate) fn set(&self, rate: u64, period: Duration, burst: u64, now: u64) {
        self.change(now, |_| Settings {
            rate,
            period,
            burst,
        });
    }

    /// A new rate per period from `now` on, keeping the burst.
    pub(crate) fn set_rate(&self, rate: u64, period: Duration, now: u64) {
        self.change(now, |old| Settings {
            rate,
            period,
            ..old
        });
    }

    /// A new burst from `now` on, keeping the rate.
    pub(crate) fn set_burst(&self, burst: u64, now: u64) {
        self.change(now, |old| Settings { burst, ..old });
    }

    /// Replaces the settings with what `new` makes of them, and the TAT
    /// with one that leaves the same whole permits under them, as one step:
    /// a call meanwhile reads all of it before or all of it after.
    fn change(&self, now: u64, new: impl FnOnce(Settings) -> Settings) {
        self.settings.write(|| {
            // The only writer: these loads see the settings the TAT was
            // counted in.
            let (old_interval, old_burst) = (self.interval(), self.burst.load(Ordering::Relaxed));
            let new = new(self.settings_unguarded());
            let period = nanos(new.period);
            let interval = interval(new.rate, period);
            self.rate.store(new.rate, Ordering::Relaxed);
            self.period.store(period, Ordering::Relaxed);
            self.interval.store(interval, Ordering::Relaxed);
            self.burst.store(new.burst, Ordering::Relaxed);
            let _ = self
                .tat
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                    let left = left(tat, now, old_interval, old_burst).min(new.burst);
                    Some(now + interval.saturating_mul(new.burst - left))
                });
        });
    }

    fn interval(&self) -> u64 {
        self.interval.load(Ordering::Relaxed)
    }

    fn settings_unguarded(&self) -> Settings {
        Settings {
            rate: self.rate.load(Ordering::Relaxed),
            period: Duration::from_nanos(self.period.load(Ordering::Relaxed)),
            burst: self.burst.load(Ordering::Relaxed),
        }
    }

    /// The rate, period and burst, as set together.
    pub(crate) fn settings(&self) -> Settings {
        self.settings.read(|| self.settings_unguarded())
    }

    pub(crate) fn burst(&self) -> u64 {
        self.burst.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn acquire(&self, now: u64, n: u64) -> Decision {
        'read: loop {
            let version = self.settings.begin_read();
            let interval = self.interval.load(Ordering::Relaxed);
            let burst = self.burst.load(Ordering::Relaxed);
            let mut tat = self.tat.load(Ordering::Relaxed);
            loop {
                // The settings and the TAT are one state only if no change
                // began meanwhile: a change rescales the TAT to its
                // interval, which the old interval would misread.
                if !self.settings.unchanged(version) {
                    continue 'read;
                }
                if n > burst {
                    return Decision::TooLarge;
                }
                let next = tat.max(now).saturating_add(interval.saturating_mul(n));
                // Allowed while the bucket, after the take, is not past
                // full: next − now ≤ burst intervals.
                if let Some(over) = (next - now)
                    .checked_sub(interval.saturating_mul(burst))
                    .filter(|&over| over > 0)
                {
                    return Decision::Refused {
                        wait: Duration::from_nanos(over),
                    };
                }
                // A change that rescaled the TAT after the check makes this
                // fail (unless it lands on the very same nanosecond).
                match self.tat.compare_exchange_weak(
                    tat,
                    next,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Decision::Admitted,
                    Err(actual) => tat = actual,
                }
            }
        }
    }

    pub(crate) fn snapshot(&self, now: u64) -> Snapshot {
        let (tat, interval, burst) = self.settings.read(|| {
            (
                self.tat.load(Ordering::Relaxed),
                self.interval(),
                self.burst.load(Ordering::Relaxed),
            )
        });
        snapshot(tat, now, interval, burst)
    }
}

/// Nanoseconds between permits at `rate` per `period` nanoseconds.
pub(crate) fn interval(rate: u64, period: u64) -> u64 {
    period.div_ceil(rate.max(1)).max(1)
}

/// Microseconds between permits at `rate` per `period`, for the Redis
/// store, whose scripts count in microseconds.
#[cfg(feature = "redis")]
pub(crate) fn interval_micros(rate: u64, period: Duration) -> u64 {
    let micros = u64::try_from(period.as_micros()).unwrap_or(u64::MAX);
    micros.div_ceil(rate.max(1)).max(1)
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

#[cfg(all(test, loom))]
mod loom_tests {
    use super::super::limiter::Algorithm;
    use super::*;
    use crate::sync::{Arc, loom_model as model};
    use loom::thread;

    const NOW: u64 = 5_000_000_000;
    const SECOND: Duration = Duration::from_secs(1);

    /// What a limiter at `(rate, burst)` per second with theoretical
    /// arrival time `tat` ends with, for one call at `NOW` and a change to
    /// `(to_rate, to_burst)` made one after the other: the call first, or
    /// the change first. Each is a decision and the TAT left.
    fn in_sequence(
        (rate, burst): (u64, u64),
        (to_rate, to_burst): (u64, u64),
        tat: u64,
    ) -> [(Decision, u64); 2] {
        let first = Gcra::with_tat(rate, SECOND, burst, tat);
        let call_first = first.acquire(NOW, 1);
        first.set(to_rate, SECOND, to_burst, NOW);
        let second = Gcra::with_tat(rate, SECOND, burst, tat);
        second.set(to_rate, SECOND, to_burst, NOW);
        let change_first = second.acquire(NOW, 1);
        [
            (call_first, first.tat.load(Ordering::Relaxed)),
            (change_first, second.tat.load(Ordering::Relaxed)),
        ]
    }

    /// A call racing a change of the settings decides, and leaves the TAT,
    /// as under one whole configuration or the other: as if the call came
    /// just before the change or just after it.
    fn a_call_racing_a_change_sees_one_whole_configuration(
        from: (u64, u64),
        to: (u64, u64),
        tat: u64,
    ) {
        model(move || {
            let gcra = Arc::new(Gcra::with_tat(from.0, SECOND, from.1, tat));
            let changer = {
                let gcra = gcra.clone();
                thread::spawn(move || gcra.set(to.0, SECOND, to.1, NOW))
            };
            // The call on a thread of its own: on the model's main thread
            // loom explored only the interleaving where it ran first.
            let caller = {
                let gcra = gcra.clone();
                thread::spawn(move || gcra.acquire(NOW, 1))
            };
            changer.join().unwrap();
            let decision = caller.join().unwrap();
            let outcome = (decision, gcra.tat.load(Ordering::Relaxed));
            let allowed = in_sequence(from, to, tat);
            assert!(
                allowed.contains(&outcome),
                "{outcome:?} is neither the call before the change nor after it: {allowed:?}"
            );
        });
    }

    #[test]
    fn loom_a_call_racing_a_new_rate_and_burst_never_mixes_them() {
        // An empty bucket of 10 at 10 per second, changed to 1 per second
        // with a burst of 1: the new interval (1 s) with the old burst (10)
        // would admit; both whole configurations refuse.
        a_call_racing_a_change_sees_one_whole_configuration((10, 10), (1, 1), NOW + 1_000_000_000);
    }

    #[test]
    fn loom_a_call_racing_a_lower_rate_never_reads_the_old_tat_at_the_new_interval() {
        // An empty bucket of 10 at 10 per second, lowered to 1 per second:
        // the old TAT (1 s ahead) read at the new interval has 9 permits
        // left, which no configuration ever had.
        a_call_racing_a_change_sees_one_whole_configuration((10, 10), (1, 10), NOW + 1_000_000_000);
    }

    #[test]
    fn loom_a_new_rate_racing_a_new_burst_keeps_both() {
        model(|| {
            let algorithm = Arc::new(Algorithm::Gcra(Gcra::new(10, SECOND, 10)));
            let rate = {
                let algorithm = algorithm.clone();
                thread::spawn(move || algorithm.set_limit(5, SECOND, NOW))
            };
            let burst = {
                let algorithm = algorithm.clone();
                thread::spawn(move || algorithm.set_burst(3, NOW))
            };
            rate.join().unwrap();
            assert!(burst.join().unwrap());
            let Algorithm::Gcra(gcra) = &*algorithm else {
                unreachable!("built as GCRA")
            };
            let expected = Settings {
                rate: 5,
                period: SECOND,
                burst: 3,
            };
            assert_eq!(gcra.settings(), expected, "one change lost the other");
        });
    }
}
