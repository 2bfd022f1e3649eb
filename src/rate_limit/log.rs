//! The sliding-window log: exact, memory bounded by the limit.
//!
//! It keeps the time of each of the last `limit` admissions, oldest first. A
//! call is admitted when, with it, no more than `limit` admissions fall in
//! the window-length before it: an admission whose age equals the window has
//! left it. Memory is 8 bytes per permit of the limit, allocated once; a
//! mutex guards the log (held for a few comparisons).

use std::collections::VecDeque;
use std::time::Duration;

use crate::sync::{Mutex, lock};

use super::limiter::{Decision, Snapshot, nanos};

#[derive(Debug)]
pub(crate) struct WindowLog {
    state: Mutex<Log>,
}

#[derive(Debug)]
struct Log {
    limit: u64,
    window: u64,
    /// Admission times, oldest first, never more than `limit`.
    times: VecDeque<u64>,
}

impl WindowLog {
    pub(crate) fn new(limit: u64, window: Duration) -> Self {
        WindowLog {
            state: Mutex::new(Log {
                limit,
                window: nanos(window),
                times: VecDeque::with_capacity(capacity(limit)),
            }),
        }
    }

    /// A log holding `count` admissions (at most `limit`) made at `at`.
    pub(crate) fn with_admissions(limit: u64, window: Duration, at: u64, count: u64) -> Self {
        let log = WindowLog::new(limit, window);
        let count = capacity(count.min(limit));
        lock(&log.state)
            .times
            .extend(std::iter::repeat_n(at, count));
        log
    }

    pub(crate) fn limit(&self) -> u64 {
        lock(&self.state).limit
    }

    pub(crate) fn window(&self) -> Duration {
        Duration::from_nanos(lock(&self.state).window)
    }

    /// Keeps the newest admissions that still fit the new limit.
    pub(crate) fn set(&self, limit: u64, window: Duration) {
        let mut log = lock(&self.state);
        log.limit = limit;
        log.window = nanos(window);
        let excess = log.times.len().saturating_sub(capacity(limit));
        log.times.drain(..excess);
        // Sized here, so that admissions never allocate.
        let room = capacity(limit) - log.times.len();
        log.times.shrink_to(capacity(limit));
        log.times.reserve_exact(room);
    }

    pub(crate) fn acquire(&self, now: u64, n: u64) -> Decision {
        let mut log = lock(&self.state);
        if n > log.limit {
            return Decision::TooLarge;
        }
        // A caller that read the clock before another took the lock must
        // not write an older time after a newer one: the log stays sorted.
        let now = log.times.back().map_or(now, |&last| now.max(last));
        log.expire(now);
        let held = log.times.len() as u64;
        if held + n <= log.limit {
            log.times.extend(std::iter::repeat_n(now, n as usize));
            return Decision::Admitted;
        }
        // The wait until enough of the oldest admissions have left.
        let must_leave = (held + n - log.limit) as usize;
        let leaves_at = log.times[must_leave - 1].saturating_add(log.window);
        Decision::Refused {
            wait: Duration::from_nanos(leaves_at - now),
        }
    }

    pub(crate) fn snapshot(&self, now: u64) -> Snapshot {
        let mut log = lock(&self.state);
        let now = log.times.back().map_or(now, |&last| now.max(last));
        log.expire(now);
        Snapshot {
            limit: log.limit,
            remaining: log.limit.saturating_sub(log.times.len() as u64),
            reset: Duration::from_nanos(
                log.times
                    .back()
                    .map_or(0, |&t| t.saturating_add(log.window) - now),
            ),
        }
    }
}

impl Log {
    /// Drops the admissions that have left the window as of `now`.
    fn expire(&mut self, now: u64) {
        while self
            .times
            .front()
            .is_some_and(|&t| now.saturating_sub(t) >= self.window)
        {
            self.times.pop_front();
        }
    }
}

/// The log's length for `limit`: limits beyond memory's reach are refused
/// when the layer is built, so this only guards the conversion.
fn capacity(limit: u64) -> usize {
    usize::try_from(limit).unwrap_or(usize::MAX)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn an_admission_leaves_when_its_age_equals_the_window() {
        // scenario SW-5: 1 per 100 ms.
        let log = WindowLog::new(1, Duration::from_millis(100));
        assert_eq!(log.acquire(0, 1), Decision::Admitted);
        assert_eq!(
            log.acquire(100 * MS - 1, 1),
            Decision::Refused {
                wait: Duration::from_nanos(1)
            }
        );
        assert_eq!(log.acquire(100 * MS, 1), Decision::Admitted);
    }

    #[test]
    fn the_boundary_burst_is_refused() {
        // scenario SW-4 (sliding log): 100 per second.
        let log = WindowLog::new(100, Duration::from_secs(1));
        let batch = |at: u64| {
            (0..100)
                .filter(|_| log.acquire(at, 1) == Decision::Admitted)
                .count()
        };
        assert_eq!(batch(900 * MS), 100);
        assert_eq!(batch(1_100 * MS), 0);
        assert_eq!(batch(1_900 * MS), 100);
    }

    #[test]
    fn lowering_the_limit_keeps_the_newest_admissions() {
        let log = WindowLog::new(4, Duration::from_secs(1));
        for t in 0..4 {
            assert_eq!(log.acquire(t * MS, 1), Decision::Admitted);
        }
        log.set(2, Duration::from_secs(1));
        let s = log.snapshot(10 * MS);
        assert_eq!((s.limit, s.remaining), (2, 0));
        // The newest, at 3 ms, leaves at 1 003 ms.
        assert_eq!(s.reset, Duration::from_millis(993));
        assert_eq!(
            log.acquire(10 * MS, 1),
            Decision::Refused {
                wait: Duration::from_millis(992)
            }
        );
    }

    proptest! {
        /// Against a reference model: every admission is checked against
        /// all earlier ones, never more than `limit` in any window, and a
        /// refusal only when the window really is full.
        #[test]
        fn never_more_than_the_limit_in_any_window(
            limit in 1u64..6,
            window in 1u64..50,
            steps in proptest::collection::vec((0u64..20, 1u64..3), 1..80),
        ) {
            let log = WindowLog::new(limit, Duration::from_nanos(window));
            let mut admitted: Vec<u64> = Vec::new();
            let mut now = 0;
            for (step, n) in steps {
                now += step;
                let n = n.min(limit);
                let in_window = admitted.iter().filter(|&&t| now - t < window).count() as u64;
                match log.acquire(now, n) {
                    Decision::Admitted => {
                        prop_assert!(in_window + n <= limit);
                        admitted.extend(std::iter::repeat_n(now, n as usize));
                    }
                    Decision::Refused { wait } => {
                        prop_assert!(in_window + n > limit);
                        let at = now + u64::try_from(wait.as_nanos()).unwrap();
                        let then = admitted.iter().filter(|&&t| at - t < window).count() as u64;
                        prop_assert!(then + n <= limit, "room at the reported time");
                        let before = admitted.iter().filter(|&&t| at - 1 - t < window).count() as u64;
                        prop_assert!(before + n > limit, "and not a nanosecond sooner");
                    }
                    Decision::TooLarge => prop_assert!(false),
                }
            }
        }
    }
}
