//! The sliding-window counter: constant memory, lock-free, approximate.
//!
//! Time is cut into fixed windows. The estimate of the calls in the last
//! window-length is the previous window's count, weighted by how much of it
//! the sliding window still covers, plus the current window's count:
//! `previous × (1 − elapsed / window) + current`. A call is admitted while
//! the estimate, with it, stays within the limit.
//!
//! The estimate assumes the previous window's calls were spread evenly. When
//! they were not, the admitted count in some window-length can exceed the
//! limit: at most by the previous window's count times the part of it the
//! estimate wrongly takes as gone, so never more than twice the limit (all
//! of the previous window's calls at its very end). The sliding log
//! ([`super::log`]) is exact where that matters.

use std::time::Duration;

use crate::sync::{AtomicU64, Ordering};
use crate::tagged::{TaggedCount, Unchanged};

use super::limiter::{Decision, Snapshot, nanos};
use super::seqlock::SeqLock;

/// The counter's shared state: the limit and window (atomics, so a handle
/// can change them while calls go through) and two tagged counts, one per
/// window parity: the current window's, and the previous one's.
///
/// A [`SeqLock`] makes a change of the settings one step, restarting the
/// counts with it when the window changes: a call decides under the old
/// limit, window and counts, or under the new ones, never a mix. The one
/// race left is GCRA's: a change that completes between a call's check and
/// its compare-and-swap and leaves the count word exactly as the call read
/// it.
#[derive(Debug)]
pub(crate) struct WindowCounter {
    /// Guards the limit and window, and the counts while a change of
    /// window restarts them.
    settings: SeqLock,
    limit: AtomicU64,
    window: AtomicU64,
    counts: [TaggedCount; 2],
    // The latest window number seen: a hint that spares most calls a
    // 64-bit division (a multiplication checks it).
    latest: AtomicU64,
}

impl WindowCounter {
    pub(crate) fn new(limit: u64, window: Duration) -> Self {
        WindowCounter {
            settings: SeqLock::default(),
            limit: AtomicU64::new(limit),
            window: AtomicU64::new(window_nanos(window)),
            counts: [TaggedCount::default(), TaggedCount::default()],
            latest: AtomicU64::new(0),
        }
    }

    /// A counter that has counted `previous` calls in window `epoch − 1`
    /// and `current` in window `epoch` (windows numbered as `now / window`,
    /// as this counter numbers them).
    pub(crate) fn with_counts(
        limit: u64,
        window: Duration,
        epoch: u64,
        previous: u64,
        current: u64,
    ) -> Self {
        let counter = WindowCounter::new(limit, window);
        if epoch > 0 {
            counter.count(epoch - 1).add(epoch - 1, previous);
        }
        counter.count(epoch).add(epoch, current);
        counter.latest.store(epoch, Ordering::Relaxed);
        counter
    }

    /// The limit and the window in nanoseconds, unguarded: read them
    /// between the [`SeqLock`]'s `begin_read` and `unchanged`.
    fn limit_and_window(&self) -> (u64, u64) {
        (
            self.limit.load(Ordering::Relaxed),
            self.window.load(Ordering::Relaxed),
        )
    }

    /// The limit and its window, as set together.
    pub(crate) fn settings(&self) -> (u64, Duration) {
        let (limit, window) = self.settings.read(|| self.limit_and_window());
        (limit, Duration::from_nanos(window))
    }

    /// Changing the window renumbers the windows, so the counts start over;
    /// changing only the limit keeps them.
    pub(crate) fn set(&self, limit: u64, window: Duration) {
        let window = window_nanos(window);
        self.settings.write(|| {
            self.limit.store(limit, Ordering::Relaxed);
            if self.window.swap(window, Ordering::Relaxed) != window {
                // Old counts would carry old window numbers, which may pass
                // for later windows than the new numbering's.
                self.latest.store(0, Ordering::Relaxed);
                for count in &self.counts {
                    count.restart(0);
                }
            }
        });
    }

    fn count(&self, epoch: u64) -> &TaggedCount {
        &self.counts[(epoch & 1) as usize]
    }

    /// The window `now` falls in, and how far into it.
    #[inline]
    fn locate(&self, now: u64, window: u64) -> (u64, u64) {
        let hint = self.latest.load(Ordering::Relaxed);
        // The hint is right while its window holds `now`.
        if let Some(into) = hint
            .checked_mul(window)
            .and_then(|start| now.checked_sub(start))
            .filter(|&into| into < window)
        {
            return (hint, into);
        }
        let epoch = now / window;
        // Never lowered (only a change of window resets it): a caller that
        // read the clock and was held up past a window must not pull the
        // hint back, or `ahead` would take the later window's count for a
        // stale one and restart it.
        self.latest.fetch_max(epoch, Ordering::Relaxed);
        (epoch, now - epoch * window)
    }

    /// Takes `n` permits at `now` (nanoseconds since the limiter's origin).
    #[inline]
    pub(crate) fn acquire(&self, now: u64, n: u64) -> Decision {
        loop {
            let version = self.settings.begin_read();
            let (limit, window) = self.limit_and_window();
            if n > limit {
                return Decision::TooLarge;
            }
            if let Some(decision) = self.acquire_in(version, now, n, limit, window) {
                return decision;
            }
        }
    }

    /// [`acquire`](Self::acquire) under the settings read at `version`;
    /// `None` if they changed before it could decide.
    #[inline]
    fn acquire_in(
        &self,
        version: u64,
        now: u64,
        n: u64,
        limit: u64,
        window: u64,
    ) -> Option<Decision> {
        let (epoch, into) = self.locate(now, window);
        let previous = self.count(epoch.wrapping_sub(1)).get(epoch.wrapping_sub(1));
        let mut changed = false;
        let take = |current: u64| {
            // Checked after reading the counts and before writing one: a
            // change of window restarts them, and a count written in the
            // old numbering after that would pass for a new window's.
            if !self.settings.unchanged(version) {
                changed = true;
                return None;
            }
            fits(previous, current + n, limit, window, into).then_some(current + n)
        };
        let taken = self.count(epoch).update(epoch, take);
        if changed {
            return None;
        }
        Some(match taken {
            Ok(_) => Decision::Admitted,
            Err(Unchanged::Declined) => self.refusal(previous, epoch, n, limit, window, into),
            // A stale tag's restart must not follow a change of window,
            // which restarts the counts itself.
            Err(Unchanged::Ahead) if !self.settings.unchanged(version) => return None,
            Err(Unchanged::Ahead) => self.ahead(previous, epoch, n, limit, window, into),
        })
    }

    #[cold]
    fn refusal(
        &self,
        previous: u64,
        epoch: u64,
        n: u64,
        limit: u64,
        window: u64,
        into: u64,
    ) -> Decision {
        let current = self.count(epoch).get(epoch);
        Decision::Refused {
            // Never zero: counts that changed meanwhile must not make a
            // caller retry in a loop.
            wait: wait(previous, current, n, limit, window, into).max(Duration::from_nanos(1)),
        }
    }

    /// The count for `epoch` carries a later window's tag. Either this
    /// caller read the clock and was then held up past a window (others
    /// have moved on: the window hint is ahead of `epoch`), or the tag is
    /// stale, left from a wrap of the 24-bit tags after a long idle spell:
    /// then nobody has seen a later window, and the count starts over.
    #[cold]
    fn ahead(
        &self,
        previous: u64,
        epoch: u64,
        n: u64,
        limit: u64,
        window: u64,
        into: u64,
    ) -> Decision {
        if self.latest.load(Ordering::Relaxed) > epoch {
            // Its next look reads the clock afresh.
            return Decision::Refused {
                wait: Duration::from_nanos(1),
            };
        }
        self.count(epoch).restart(epoch);
        let take =
            |current: u64| fits(previous, current + n, limit, window, into).then_some(current + n);
        match self.count(epoch).update(epoch, take) {
            Ok(_) => Decision::Admitted,
            Err(_) => self.refusal(previous, epoch, n, limit, window, into),
        }
    }

    pub(crate) fn snapshot(&self, now: u64) -> Snapshot {
        let (previous, current, limit, window, into) = self.settings.read(|| {
            let (limit, window) = self.limit_and_window();
            let (epoch, into) = self.locate(now, window);
            let previous = self.count(epoch.wrapping_sub(1)).get(epoch.wrapping_sub(1));
            let current = self.count(epoch).get(epoch);
            (previous, current, limit, window, into)
        });
        snapshot(previous, current, limit, window, into)
    }
}

/// A window's length in nanoseconds, never 0 (windows are numbered by
/// dividing by it).
pub(crate) fn window_nanos(window: Duration) -> u64 {
    nanos(window).max(1)
}

/// The state of a counter holding `previous` and `current`, `into`
/// nanoseconds into the current window.
pub(crate) fn snapshot(
    previous: u64,
    current: u64,
    limit: u64,
    window: u64,
    into: u64,
) -> Snapshot {
    // The previous window's weight, rounded up: what is left of a call
    // still counts as a whole one.
    let weighted = (u128::from(previous) * u128::from(window - into)).div_ceil(window.into());
    let used = u64::try_from(weighted)
        .unwrap_or(u64::MAX)
        .saturating_add(current);
    Snapshot {
        limit,
        remaining: limit.saturating_sub(used),
        reset: Duration::from_nanos(reset(previous, current, window, into)),
    }
}

/// Nanoseconds until a counter holding `previous` and `current` has
/// counted nothing that still matters.
pub(crate) fn reset(previous: u64, current: u64, window: u64, into: u64) -> u64 {
    match (previous, current) {
        (_, c) if c > 0 => 2 * window - into,
        (p, _) if p > 0 => window - into,
        _ => 0,
    }
}

/// Whether `previous` weighted by the part of the window still ahead plus
/// `current` fits in `limit`, `into` nanoseconds into the current window:
/// `previous × (window − into) / window + current ≤ limit`, in integers.
#[inline]
pub(crate) fn fits(previous: u64, current: u64, limit: u64, window: u64, into: u64) -> bool {
    let lhs =
        u128::from(previous) * u128::from(window - into) + u128::from(current) * u128::from(window);
    lhs <= u128::from(limit) * u128::from(window)
}

/// The exact wait until `n` more permits fit, if nothing else happens:
/// within the current window as the previous one slides out, else in the
/// next one, as the current one does. `n ≤ limit`.
pub(crate) fn wait(
    previous: u64,
    current: u64,
    n: u64,
    limit: u64,
    window: u64,
    into: u64,
) -> Duration {
    let left = window - into;
    // In this window: previous × (left − d) ≤ (limit − current − n) × window.
    if let Some(room) = limit.checked_sub(current + n) {
        if previous == 0 {
            return Duration::ZERO;
        }
        let keep = u128::from(room) * u128::from(window) / u128::from(previous);
        return Duration::from_nanos(left.saturating_sub(u64::try_from(keep).unwrap_or(u64::MAX)));
    }
    // In the next: current × (window − d) ≤ (limit − n) × window.
    if current == 0 {
        return Duration::from_nanos(left);
    }
    let keep = u128::from(limit - n) * u128::from(window) / u128::from(current);
    let next = window.saturating_sub(u64::try_from(keep).unwrap_or(u64::MAX));
    Duration::from_nanos(left + next)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    fn admitted(w: &WindowCounter, now: u64, tries: u64) -> u64 {
        (0..tries)
            .filter(|_| matches!(w.acquire(now, 1), Decision::Admitted))
            .count() as u64
    }

    #[test]
    fn the_boundary_burst_is_bounded_by_the_weighted_estimate() {
        // scenario SW-4 (sliding counter): 100 per second.
        let w = WindowCounter::new(100, Duration::from_secs(1));
        assert_eq!(admitted(&w, 0, 150), 100);
        assert_eq!(admitted(&w, 1_500 * MS, 100), 50);
    }

    #[test]
    fn snapshot_reports_what_is_left_and_when_it_is_all_back() {
        let w = WindowCounter::new(10, Duration::from_secs(1));
        assert_eq!(admitted(&w, 200 * MS, 4), 4);
        let s = w.snapshot(200 * MS);
        assert_eq!((s.limit, s.remaining), (10, 6));
        assert_eq!(s.reset, Duration::from_millis(1_800));
        // Half-way through the next window, half of the 4 still counts.
        let s = w.snapshot(1_500 * MS);
        assert_eq!((s.remaining, s.reset), (8, Duration::from_millis(500)));
        assert_eq!(w.snapshot(3_000 * MS).remaining, 10);
    }

    #[test]
    fn a_stale_or_wrong_window_hint_is_corrected() {
        let w = WindowCounter::new(3, Duration::from_millis(10));
        assert_eq!(w.locate(25 * MS, 10 * MS), (2, 5 * MS));
        assert_eq!(w.locate(29 * MS, 10 * MS), (2, 9 * MS), "from the hint");
        assert_eq!(w.locate(5 * MS, 10 * MS), (0, 5 * MS), "a late caller");
        assert_eq!(w.locate(30 * MS, 10 * MS), (3, 0));
        // A window changed through the handle: the hint is checked against
        // the window it is used with.
        assert_eq!(w.locate(30 * MS, 7 * MS), (4, 2 * MS));
        w.latest.store(u64::MAX / 2, Ordering::Relaxed);
        assert_eq!(
            w.locate(30 * MS, 7 * MS),
            (4, 2 * MS),
            "an overflowing hint"
        );
    }

    #[test]
    fn a_longer_window_starts_the_counts_over_instead_of_refusing() {
        // Found in review: the old counts' window numbers passed for later
        // windows under the new numbering, and every call was refused.
        let w = WindowCounter::new(100, Duration::from_secs(1));
        assert_eq!(w.acquire(1_000_000 * MS, 1), Decision::Admitted);
        w.set(100, Duration::from_secs(2));
        for t in [1_000_000, 1_000_500, 1_001_000, 1_002_000] {
            assert_eq!(w.acquire(t * MS, 1), Decision::Admitted, "at {t} ms");
        }
        // Only the limit: the counts stay.
        w.set(4, Duration::from_secs(2));
        assert!(matches!(
            w.acquire(1_002_000 * MS, 1),
            Decision::Refused { .. }
        ));
    }

    #[test]
    fn a_stale_tag_after_a_long_idle_spell_is_not_taken_for_a_later_window() {
        // Found in review: idle for just under 2^24 windows, the tags wrap
        // and the old count looked newer.
        let w = WindowCounter::new(5, Duration::from_millis(1));
        assert_eq!(w.acquire(0, 1), Decision::Admitted);
        let later = ((1 << crate::tagged::TAG_BITS) - 10) * MS;
        for i in 0..5 {
            assert_eq!(w.acquire(later + i, 1), Decision::Admitted, "call {i}");
        }
        assert!(matches!(w.acquire(later + 5, 1), Decision::Refused { wait } if !wait.is_zero()));
    }

    #[test]
    fn a_caller_late_by_windows_does_not_restart_the_current_count() {
        // A caller that read the clock, then was held up while others
        // moved on two windows, finds its window's count tagged with the
        // later one. It must be refused (to look at the clock again), not
        // take the tag for a stale one and restart the count others hold.
        let w = WindowCounter::new(2, Duration::from_millis(10));
        assert_eq!(admitted(&w, 25 * MS, 2), 2);
        assert_eq!(
            w.acquire(5 * MS, 1),
            Decision::Refused {
                wait: Duration::from_nanos(1)
            }
        );
        assert_eq!(admitted(&w, 25 * MS, 1), 0, "the window is still full");
    }

    #[test]
    fn a_batch_larger_than_the_limit_is_too_large() {
        // scenario QW-4: more than the limit is its own error, and takes
        // nothing.
        let w = WindowCounter::new(5, Duration::from_secs(1));
        assert_eq!(w.acquire(0, 6), Decision::TooLarge);
        assert_eq!(w.acquire(0, 5), Decision::Admitted);
    }

    proptest! {
        /// The reported wait is the first instant at which the permits fit:
        /// refused one nanosecond before, admitted at it.
        #[test]
        fn the_wait_is_exact(
            limit in 1u64..8,
            window in 1u64..64,
            calls in proptest::collection::vec((0u64..200, 1u64..4), 1..24),
        ) {
            let w = WindowCounter::new(limit, Duration::from_nanos(window));
            let mut now = 0;
            for (step, n) in calls {
                now += step;
                let n = n.min(limit);
                if let Decision::Refused { wait } = w.acquire(now, n) {
                    let wait = u64::try_from(wait.as_nanos()).unwrap();
                    prop_assert!(wait > 0);
                    // Probing must not change the counts: use a copy.
                    let probe = copy(&w, now);
                    let early = probe.acquire(now + wait - 1, n);
                    prop_assert!(early != Decision::Admitted, "admitted a nanosecond early");
                    let probe = copy(&w, now);
                    prop_assert_eq!(probe.acquire(now + wait, n), Decision::Admitted);
                }
            }
        }
    }

    proptest! {
        /// The documented bound: never more than `limit` in one of the
        /// counter's own windows, never more than twice `limit` in any
        /// window-length; and against a true sliding window it only errs
        /// by what the previous window's weight assumed.
        #[test]
        fn the_admitted_count_stays_within_the_documented_bound(
            limit in 1u64..10,
            window in 2u64..60,
            steps in proptest::collection::vec(0u64..12, 1..200),
        ) {
            let w = WindowCounter::new(limit, Duration::from_nanos(window));
            let mut admitted = Vec::new();
            let mut now = 0;
            for step in steps {
                now += step;
                if w.acquire(now, 1) == Decision::Admitted {
                    admitted.push(now);
                }
            }
            for &t in &admitted {
                let epoch = t / window;
                let same_window = admitted.iter().filter(|&&u| u / window == epoch).count();
                prop_assert!(same_window as u64 <= limit);
                let sliding = admitted.iter().filter(|&&u| u <= t && t - u < window).count();
                prop_assert!(sliding as u64 <= 2 * limit, "{sliding} in the window to {t}");
            }
        }
    }

    /// A counter with the same counts as `w` at `now`.
    fn copy(w: &WindowCounter, now: u64) -> WindowCounter {
        let (limit, window) = w.settings();
        let epoch = now / nanos(window);
        let c = WindowCounter::new(limit, window);
        for e in [epoch.wrapping_sub(1), epoch] {
            let n = w.count(e).get(e);
            if n > 0 {
                c.count(e).add(e, n);
            }
        }
        c
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::{Arc, loom_model as model};
    use loom::thread;

    const SECOND: u64 = 1_000_000_000;

    /// A counter of `limit` per `window` seconds that counted 4 calls in
    /// its window 0 and none in window 1.
    fn counter((limit, window): (u64, u64)) -> WindowCounter {
        WindowCounter::with_counts(limit, Duration::from_secs(window), 1, 4, 0)
    }

    /// What a call for `n` at `now`, and the state right after, are when
    /// the counter changes from `from` to `to` just before the call or just
    /// after it.
    fn in_sequence(
        from: (u64, u64),
        to: (u64, u64),
        now: u64,
        n: u64,
    ) -> [(Decision, Snapshot); 2] {
        let to_window = Duration::from_secs(to.1);
        let first = counter(from);
        let call_first = first.acquire(now, n);
        first.set(to.0, to_window);
        let second = counter(from);
        second.set(to.0, to_window);
        let change_first = second.acquire(now, n);
        [
            (call_first, first.snapshot(now)),
            (change_first, second.snapshot(now)),
        ]
    }

    #[test]
    fn loom_a_call_racing_a_new_limit_and_window_sees_one_whole_configuration() {
        // 4 per second, changed to 3 per 3 s, half-way into window 1: a
        // call for 3 is refused for 250 ms before the change (half of the 4
        // still counts) and admitted after it (the counts start over). The
        // new limit with the old window, or the old one with the new
        // window, decides otherwise; so does the old configuration on the
        // counts the change has already restarted.
        let (from, to, now, n) = ((4, 1), (3, 3), 3 * SECOND / 2, 3);
        model(move || {
            let counter = Arc::new(counter(from));
            let changer = {
                let counter = counter.clone();
                thread::spawn(move || counter.set(to.0, Duration::from_secs(to.1)))
            };
            // On a thread of its own: on the model's main thread loom
            // explored only the interleaving where the call ran first.
            let caller = {
                let counter = counter.clone();
                thread::spawn(move || counter.acquire(now, n))
            };
            changer.join().unwrap();
            let outcome = (caller.join().unwrap(), counter.snapshot(now));
            let allowed = in_sequence(from, to, now, n);
            assert!(
                allowed.contains(&outcome),
                "{outcome:?} is neither the call before the change nor after it: {allowed:?}"
            );
        });
    }
}
