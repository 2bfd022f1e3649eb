//! The fixed window and the segmented sliding window: exact counts of the
//! permits taken in whole segments of time.
//!
//! Time since the limiter's origin is cut into segments of `window /
//! segments` each: segment `j` is `[j × s, (j + 1) × s)`, so the first
//! window starts when the limiter is built. The window at any instant is
//! the segment holding it and the `segments − 1` before it. A permit
//! belongs to the segment it was taken in and comes back when that segment
//! slides out of the window, `segments` segments later. A call is admitted
//! while the permits held in the window, with it, stay within the limit;
//! refused, it is told when enough of them come back (the oldest first).
//!
//! With one segment this is the fixed window: windows `[0, w)`, `[w, 2w)`,
//! and so on, at most `limit` in each, every permit back when its window
//! ends (the instant `w` belongs to the new window). One code path serves
//! both, so a fixed window is exactly a segmented window of one segment.
//!
//! Because a permit comes back only when its own segment leaves the window,
//! a burst taken in one segment keeps the window closed for a whole window,
//! not one segment: 6 permits per 30 s in 3 segments, all 6 taken at 1 s,
//! come back together at 30 s, and calls at 11 s and 21 s are refused. This
//! is the defined behaviour (the same as .NET's `SlidingWindowRateLimiter`),
//! not a slow refill; choose GCRA for permits that come back one by one.
//!
//! The state is one count per segment (8 bytes each, at most
//! [`MAX_SEGMENTS`]), allocated when the limiter is built. A mutex guards
//! it, held for at most one pass over the counts: a call must check the sum
//! of every segment in the window and add to the newest as one step, and a
//! window sliding on must clear the segments it left behind, which no
//! single compare-and-swap covers. (The sliding window counter gets away
//! with one because it keeps only two counts and estimates the rest.)

use std::time::Duration;

use crate::sync::{Mutex, lock};

use super::limiter::{Decision, Snapshot, nanos};

/// The most segments a window may have: each is a count the limiter keeps
/// and a call may add up.
pub(crate) const MAX_SEGMENTS: u32 = 64;

#[derive(Debug)]
pub(crate) struct SegmentedWindow {
    state: Mutex<Segments>,
}

#[derive(Debug)]
struct Segments {
    limit: u64,
    /// Nanoseconds per segment: the window is `counts.len()` of them.
    segment: u64,
    /// The latest instant seen. Callers read the clock before taking the
    /// lock, so one may arrive with an instant older than what another has
    /// already counted in; it is taken as this instant, and the segment it
    /// falls in is the newest the counts hold.
    latest: u64,
    /// Permits taken in each segment of the window, segment `j` at slot
    /// `j % counts.len()`.
    counts: Box<[u64]>,
}

impl SegmentedWindow {
    /// `limit` per `window`, in `segments` segments (`1..=MAX_SEGMENTS`,
    /// dividing the window into whole nanoseconds, as the builder checks).
    pub(crate) fn new(limit: u64, window: Duration, segments: u32) -> Self {
        let segments = segments.max(1);
        SegmentedWindow {
            state: Mutex::new(Segments {
                limit,
                segment: segment_nanos(window, segments),
                latest: 0,
                counts: vec![0; segments as usize].into_boxed_slice(),
            }),
        }
    }

    /// A limiter holding `held` permits taken at `at`.
    pub(crate) fn with_held(
        limit: u64,
        window: Duration,
        segments: u32,
        at: u64,
        held: u64,
    ) -> Self {
        let w = SegmentedWindow::new(limit, window, segments);
        {
            let mut state = lock(&w.state);
            state.latest = at;
            let slot = state.slot(at / state.segment);
            state.counts[slot] = held;
        }
        w
    }

    /// The limit and the window.
    pub(crate) fn settings(&self) -> (u64, Duration) {
        let state = lock(&self.state);
        (state.limit, Duration::from_nanos(state.window()))
    }

    /// Segments per window.
    pub(crate) fn segments(&self) -> u32 {
        lock(&self.state).counts.len() as u32
    }

    /// New settings from `now` on. A new limit keeps the counts (lowered
    /// below them, calls are refused until enough come back). A new window
    /// renumbers the segments, so every permit still held is carried into
    /// the segment `now` falls in under the new numbering: none comes back
    /// sooner than a whole new window from that segment's start.
    pub(crate) fn set(&self, limit: u64, window: Duration, now: u64) {
        let mut state = lock(&self.state);
        state.advance(now);
        state.limit = limit;
        let segment = segment_nanos(window, state.counts.len() as u32);
        if segment != state.segment {
            let held = state.held();
            state.counts.fill(0);
            state.segment = segment;
            let slot = state.slot(state.latest / segment);
            state.counts[slot] = held;
        }
    }

    pub(crate) fn acquire(&self, now: u64, n: u64) -> Decision {
        let mut state = lock(&self.state);
        if n > state.limit {
            return Decision::TooLarge;
        }
        let (now, current) = state.advance(now);
        let held = state.held();
        if held + n <= state.limit {
            let slot = state.slot(current);
            state.counts[slot] += n;
            return Decision::Admitted;
        }
        // n ≤ limit, so the permits that must come back are some of those
        // held, and the wait is never zero.
        let back_at = state.back_at(current, held + n - state.limit);
        Decision::Refused {
            wait: Duration::from_nanos(back_at - now),
        }
    }

    pub(crate) fn snapshot(&self, now: u64) -> Snapshot {
        let mut state = lock(&self.state);
        let (now, current) = state.advance(now);
        let held = state.held();
        let reset = match held {
            0 => 0,
            held => state.back_at(current, held) - now,
        };
        Snapshot {
            limit: state.limit,
            // Never negative after the limit was lowered below the count.
            remaining: state.limit.saturating_sub(held),
            reset: Duration::from_nanos(reset),
        }
    }
}

impl Segments {
    fn window(&self) -> u64 {
        self.segment.saturating_mul(self.counts.len() as u64)
    }

    fn slot(&self, segment: u64) -> usize {
        (segment % self.counts.len() as u64) as usize
    }

    /// Moves the window on to `now` (or the latest instant seen, if later):
    /// the segments it left behind are cleared, their permits back. Returns
    /// that instant and the number of the segment it falls in.
    fn advance(&mut self, now: u64) -> (u64, u64) {
        let now = now.max(self.latest);
        let newest = self.latest / self.segment;
        let current = now / self.segment;
        // The slots of segments newest + 1 ..= current held the segments a
        // window earlier, which have now left; a long gap clears them all.
        let left = (current - newest).min(self.counts.len() as u64);
        for j in newest + 1..=newest + left {
            let slot = self.slot(j);
            self.counts[slot] = 0;
        }
        self.latest = now;
        (now, current)
    }

    /// The permits held in the window.
    fn held(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// When at least `need` of the permits held have come back, the oldest
    /// segment first, with `current` the newest segment. `need` is at most
    /// what is held.
    fn back_at(&self, current: u64, need: u64) -> u64 {
        let segments = self.counts.len() as u64;
        let mut back = 0;
        // Segment current + 1 + i − segments leaves when segment
        // current + 1 + i begins.
        for i in 0..segments {
            let leaves = current + 1 + i;
            back += self.counts[self.slot(leaves)];
            if back >= need {
                return leaves.saturating_mul(self.segment);
            }
        }
        // Everything held is back once the newest segment leaves.
        (current + segments).saturating_mul(self.segment)
    }
}

/// Nanoseconds per segment, never 0 (segments are numbered by dividing by
/// it).
fn segment_nanos(window: Duration, segments: u32) -> u64 {
    (nanos(window) / u64::from(segments.max(1))).max(1)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000 * MS;

    fn refused(wait: u64) -> Decision {
        Decision::Refused {
            wait: Duration::from_nanos(wait),
        }
    }

    #[test]
    fn one_segment_is_the_fixed_window() {
        // scenario FX-1 (the algorithm alone): 10 per 60 s.
        let w = SegmentedWindow::new(10, Duration::from_secs(60), 1);
        for _ in 0..10 {
            assert_eq!(w.acquire(0, 1), Decision::Admitted);
        }
        assert_eq!(w.acquire(45 * S, 1), refused(15 * S));
        assert_eq!(w.acquire(60 * S - 1, 1), refused(1));
        assert_eq!(w.acquire(60 * S, 1), Decision::Admitted);
        let s = w.snapshot(60 * S);
        assert_eq!((s.remaining, s.reset), (9, Duration::from_secs(60)));
    }

    #[test]
    fn a_lower_limit_keeps_the_counts_and_a_new_window_carries_them() {
        let w = SegmentedWindow::new(10, Duration::from_secs(60), 3);
        for _ in 0..7 {
            assert_eq!(w.acquire(S, 1), Decision::Admitted);
        }
        w.set(5, Duration::from_secs(60), 2 * S);
        let s = w.snapshot(2 * S);
        assert_eq!((s.limit, s.remaining), (5, 0), "never negative");
        // The 7 were taken in segment 0 ([0, 20 s)): back at 60 s.
        assert_eq!(w.acquire(2 * S, 1), refused(58 * S));
        // A window of 30 s (segments of 10 s): the 7 move to the segment
        // holding 2 s, [0, 10 s), and come back at 30 s.
        w.set(5, Duration::from_secs(30), 2 * S);
        assert_eq!(w.acquire(2 * S, 1), refused(28 * S));
        assert_eq!(w.acquire(30 * S, 1), Decision::Admitted);
    }

    #[test]
    fn a_late_caller_counts_at_the_latest_instant() {
        let w = SegmentedWindow::new(1, Duration::from_secs(1), 2);
        assert_eq!(w.acquire(S, 1), Decision::Admitted);
        // Read the clock before the call above took the lock: still refused,
        // and told the wait from the later instant.
        assert_eq!(w.acquire(S / 4, 1), refused(S));
    }

    #[test]
    fn a_long_idle_spell_clears_every_segment() {
        let w = SegmentedWindow::new(4, Duration::from_millis(40), 4);
        for t in 0..4 {
            assert_eq!(w.acquire(t * 10 * MS, 1), Decision::Admitted);
        }
        let s = w.snapshot(10_000 * S);
        assert_eq!((s.remaining, s.reset), (4, Duration::ZERO));
    }

    #[test]
    fn idle_from_creation_and_again_once_its_permits_are_back() {
        // scenario FX-3 (the algorithm alone): what a keyed store asks
        // before it drops a limiter.
        use super::super::layer::Kind;
        use super::super::limiter::{Algorithm, Quota};
        for (kind, segments) in [(Kind::FixedWindow, 1), (Kind::SegmentedWindow, 2)] {
            let a = Algorithm::new(Quota {
                kind,
                limit: 1,
                window: Duration::from_secs(2),
                burst: 1,
                segments,
            });
            assert!(a.is_fresh(0), "{kind:?} new");
            assert_eq!(a.acquire(0, 1), Decision::Admitted);
            assert!(!a.is_fresh(100 * MS), "{kind:?}: the call has ended");
            assert!(!a.is_fresh(2 * S - 1), "{kind:?}: still in the window");
            assert!(a.is_fresh(2 * S), "{kind:?}: back");
        }
    }

    /// The permits in the window, by the definition: those taken in one of
    /// the `segments` segments ending with the one `at` falls in.
    fn held_at(taken: &[u64], at: u64, segment: u64, segments: u64) -> u64 {
        let current = at / segment;
        taken
            .iter()
            .filter(|&&t| t / segment + segments > current)
            .count() as u64
    }

    proptest! {
        /// Against the definition, over random traffic and limits: every
        /// admission fits the window, every refusal is of a full window,
        /// and its wait is exact: the call fits at that instant and not a
        /// nanosecond before (if nothing else is taken meanwhile).
        #[test]
        fn every_refusal_waits_exactly_until_the_permits_come_back(
            limit in 1u64..6,
            segment in 1u64..30,
            segments in 1u64..5,
            steps in proptest::collection::vec((0u64..40, 1u64..3), 1..120),
        ) {
            let window = Duration::from_nanos(segment * segments);
            let w = SegmentedWindow::new(limit, window, segments as u32);
            let mut taken: Vec<u64> = Vec::new();
            let mut now = 0;
            for (step, n) in steps {
                now += step;
                let n = n.min(limit);
                let held = held_at(&taken, now, segment, segments);
                match w.acquire(now, n) {
                    Decision::Admitted => {
                        prop_assert!(held + n <= limit);
                        taken.extend(std::iter::repeat_n(now, n as usize));
                    }
                    Decision::Refused { wait } => {
                        prop_assert!(held + n > limit);
                        let at = now + nanos(wait);
                        let then = held_at(&taken, at, segment, segments);
                        prop_assert!(then + n <= limit, "room at the reported time");
                        let before = held_at(&taken, at - 1, segment, segments);
                        prop_assert!(before + n > limit, "and not a nanosecond sooner");
                    }
                    Decision::TooLarge => prop_assert!(false),
                }
                let s = w.snapshot(now);
                prop_assert_eq!(s.remaining, limit - held_at(&taken, now, segment, segments));
            }
        }
    }
}
