//! The breaker's sliding windows: the last N outcomes, or the outcomes of the
//! last T split into buckets. Both keep running totals, so recording an
//! outcome and reading the totals are O(1) whatever N or T, and both are
//! lock-free: many threads record into one window at once.
//!
//! A window belongs to one state period of the breaker (see `period.rs`): a
//! fresh period gets a fresh window, so nothing here ever has to be reset
//! while other threads write to it.

use std::time::Duration;

use crate::sync::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, CachePadded, Ordering};

/// One recorded (not ignored) outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) failure: bool,
    pub(crate) slow: bool,
}

/// What a window holds right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

/// The shape of a window, from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WindowKind {
    /// The last `n` outcomes.
    Count(usize),
    /// The outcomes of the last `length`, in `buckets` buckets that leave
    /// the window whole.
    Time { length: Duration, buckets: usize },
}

pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    /// A new, empty window; `now` is the time on the breaker's clock, in
    /// nanoseconds since the breaker was built.
    pub(crate) fn new(kind: WindowKind, now: u64) -> Self {
        match kind {
            WindowKind::Count(n) => Window::Count(CountWindow::new(n)),
            WindowKind::Time { length, buckets } => {
                Window::Time(TimeWindow::new(length, buckets, now))
            }
        }
    }

    /// Records one outcome that finished at `now` (unused by count windows);
    /// returns about how many calls the window holds with it (exact when no
    /// other thread records at the same moment). The breaker records through
    /// [`record_and_judge`](Self::record_and_judge).
    #[cfg(test)]
    pub(crate) fn record(&self, record: Record, now: u64) -> u64 {
        match self {
            Window::Count(w) => w.record(record),
            Window::Time(w) => w.record(record, now),
        }
    }

    /// Records one outcome and returns the totals to judge it by, or `None`
    /// when it cannot have raised either rate: a fast success in a window
    /// that already holds `minimum` calls, and (time window) from which no
    /// bucket has left since the last outcome was judged. A bucket leaving
    /// can raise the rates, so the next outcome after it is always judged.
    #[inline]
    pub(crate) fn record_and_judge(
        &self,
        record: Record,
        now: u64,
        minimum: u64,
    ) -> Option<Totals> {
        match self {
            Window::Count(w) => {
                let calls = w.record(record);
                (record.failure || record.slow || calls <= minimum).then(|| w.totals())
            }
            Window::Time(w) => {
                let calls = w.record(record, now);
                let judge = record.failure || record.slow || calls <= minimum || w.take_moved();
                judge.then(|| w.current_totals())
            }
        }
    }

    /// The totals as of `now`; a time window first lets go of buckets that
    /// have aged out, so an idle window does not report stale rates.
    #[inline]
    pub(crate) fn totals(&self, now: u64) -> Totals {
        match self {
            Window::Count(w) => w.totals(),
            Window::Time(w) => w.totals(now),
        }
    }
}

/// Reads a running total that concurrent writers may briefly push below the
/// true value (a delta is applied after its slot changed).
fn read_total(total: &AtomicI64, at_most: u64) -> u64 {
    (total.load(Ordering::Acquire).max(0) as u64).min(at_most)
}

const RECORDED: u8 = 1;
const FAILURE: u8 = 2;
const SLOW: u8 = 4;

fn encode(record: Record) -> u8 {
    RECORDED | if record.failure { FAILURE } else { 0 } | if record.slow { SLOW } else { 0 }
}

/// The last `n` outcomes: a ring in which each new outcome replaces the
/// oldest, with running totals adjusted by the difference.
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    // Outcomes recorded so far; the next goes to `head % n`. Written by
    // every call: on lines of its own, away from what calls only read.
    head: CachePadded<AtomicU64>,
    failures: AtomicI64,
    slow: AtomicI64,
}

impl CountWindow {
    fn new(n: usize) -> Self {
        CountWindow {
            slots: (0..n.max(1)).map(|_| AtomicU8::new(0)).collect(),
            head: CachePadded(AtomicU64::new(0)),
            failures: AtomicI64::new(0),
            slow: AtomicI64::new(0),
        }
    }

    #[inline]
    fn record(&self, record: Record) -> u64 {
        let head = self.head.fetch_add(1, Ordering::Relaxed);
        let n = self.slots.len() as u64;
        let calls = (head + 1).min(n);
        let new = encode(record);
        // `swap`, not a load and a store: two writers that wrap onto the same
        // slot must each see what the other replaced, or the totals drift.
        let old = self.slots[(head % n) as usize].swap(new, Ordering::AcqRel);
        if old == new {
            return calls; // the common steady state: nothing to adjust
        }
        let delta = |bit: u8| i64::from(new & bit != 0) - i64::from(old & bit != 0);
        let failures = delta(FAILURE);
        if failures != 0 {
            self.failures.fetch_add(failures, Ordering::AcqRel);
        }
        let slow = delta(SLOW);
        if slow != 0 {
            self.slow.fetch_add(slow, Ordering::AcqRel);
        }
        calls
    }

    fn totals(&self) -> Totals {
        let calls = self
            .head
            .load(Ordering::Acquire)
            .min(self.slots.len() as u64);
        Totals {
            calls,
            failures: read_total(&self.failures, calls),
            slow: read_total(&self.slow, calls),
        }
    }
}

/// A bucket's epoch while one thread empties it for a new epoch.
const ROTATING: u64 = u64::MAX;

/// `TimeWindow::latest` packs an epoch above a bucket index of this many
/// bits (there are at most 10 000 buckets).
const LATEST_INDEX_BITS: u32 = 16;
const LATEST_INDEX_MASK: u64 = (1 << LATEST_INDEX_BITS) - 1;
/// A `latest` that matches no bucket (its epoch is `ROTATING`'s).
const NO_LATEST: u64 = u64::MAX;

/// Packs an epoch and its bucket's index for `TimeWindow::latest`, when
/// they fit (an epoch beyond 2^48 buckets, some 9 years of 1 ms buckets,
/// goes without the hint).
fn pack_latest(epoch: u64, index: u64) -> Option<u64> {
    (epoch < 1 << (64 - LATEST_INDEX_BITS) && index <= LATEST_INDEX_MASK)
        .then_some(epoch << LATEST_INDEX_BITS | index)
}

struct Bucket {
    // Which bucket-length interval since the breaker was built this bucket
    // counts (`now / bucket_nanos`).
    epoch: AtomicU64,
    calls: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
}

/// The outcomes of the last `length`, in buckets. A bucket leaves the window
/// whole, when the time it covers is `length` old, and its counts leave the
/// running totals with it.
pub(crate) struct TimeWindow {
    bucket_nanos: u64,
    buckets: Box<[Bucket]>,
    // Every bucket for an epoch up to this one has been moved to it, so the
    // totals hold nothing older than the window.
    swept: AtomicU64,
    // Set when buckets leave the window, cleared by the next outcome judged.
    moved: AtomicBool,
    // A recent epoch and its bucket's index, packed (`pack_latest`): while
    // the clock stays in that epoch, an outcome finds its bucket without
    // the two divisions (some 6 ns) that `now / bucket_nanos` and
    // `epoch % buckets` cost. Only a hint: it is checked against the
    // bucket's own epoch before use.
    latest: AtomicU64,
    calls: AtomicI64,
    failures: AtomicI64,
    slow: AtomicI64,
}

impl TimeWindow {
    fn new(length: Duration, buckets: usize, now: u64) -> Self {
        let buckets = buckets.max(1);
        let length = u64::try_from(length.as_nanos()).unwrap_or(u64::MAX);
        let bucket_nanos = (length / buckets as u64).max(1);
        TimeWindow {
            bucket_nanos,
            buckets: (0..buckets)
                .map(|_| Bucket {
                    epoch: AtomicU64::new(0),
                    calls: AtomicU64::new(0),
                    failures: AtomicU64::new(0),
                    slow: AtomicU64::new(0),
                })
                .collect(),
            swept: AtomicU64::new(now / bucket_nanos),
            moved: AtomicBool::new(false),
            latest: AtomicU64::new(NO_LATEST),
            calls: AtomicI64::new(0),
            failures: AtomicI64::new(0),
            slow: AtomicI64::new(0),
        }
    }

    fn bucket(&self, epoch: u64) -> &Bucket {
        &self.buckets[(epoch % self.buckets.len() as u64) as usize]
    }

    /// The bucket that counts `now`, if the `latest` hint finds it: the
    /// hint's epoch covers `now`, and its bucket counts that epoch already.
    #[inline]
    fn latest_bucket(&self, now: u64) -> Option<&Bucket> {
        let latest = self.latest.load(Ordering::Relaxed);
        let (epoch, index) = (latest >> LATEST_INDEX_BITS, latest & LATEST_INDEX_MASK);
        // `epoch * bucket_nanos` came from an earlier `now`, so it fits.
        let begins = epoch.wrapping_mul(self.bucket_nanos);
        if now.wrapping_sub(begins) >= self.bucket_nanos {
            return None;
        }
        let bucket = self.buckets.get(index as usize)?;
        (bucket.epoch.load(Ordering::Acquire) == epoch).then_some(bucket)
    }

    /// Finds (and if need be claims) the bucket that counts `now`, moving
    /// the window on first; `None` if that bucket has already moved on.
    #[inline]
    fn bucket_for(&self, now: u64) -> Option<&Bucket> {
        if let Some(bucket) = self.latest_bucket(now) {
            return Some(bucket);
        }
        let epoch = now / self.bucket_nanos;
        self.advance(epoch);
        let index = epoch % self.buckets.len() as u64;
        let bucket = &self.buckets[index as usize];
        if !self.claim(bucket, epoch) {
            return None;
        }
        if let Some(latest) = pack_latest(epoch, index) {
            self.latest.store(latest, Ordering::Relaxed);
        }
        Some(bucket)
    }

    #[inline]
    fn record(&self, record: Record, now: u64) -> u64 {
        let Some(bucket) = self.bucket_for(now) else {
            // The bucket has moved on to a later epoch: this outcome is older
            // than the window (its thread was held up), so it no longer counts.
            return 0;
        };
        bucket.calls.fetch_add(1, Ordering::AcqRel);
        let calls = self.calls.fetch_add(1, Ordering::AcqRel).max(0) as u64 + 1;
        if record.failure {
            bucket.failures.fetch_add(1, Ordering::AcqRel);
            self.failures.fetch_add(1, Ordering::AcqRel);
        }
        if record.slow {
            bucket.slow.fetch_add(1, Ordering::AcqRel);
            self.slow.fetch_add(1, Ordering::AcqRel);
        }
        calls
    }

    fn totals(&self, now: u64) -> Totals {
        self.advance(now / self.bucket_nanos);
        self.current_totals()
    }

    /// Whether buckets have left since this was last asked. Loaded first,
    /// so the common case writes nothing shared.
    #[inline]
    fn take_moved(&self) -> bool {
        self.moved.load(Ordering::Relaxed) && self.moved.swap(false, Ordering::AcqRel)
    }

    /// The running totals, without first letting old buckets go.
    #[inline]
    fn current_totals(&self) -> Totals {
        let calls = self.calls.load(Ordering::Acquire).max(0) as u64;
        Totals {
            calls,
            failures: read_total(&self.failures, calls),
            slow: read_total(&self.slow, calls),
        }
    }

    /// Moves every bucket that now lies outside the window to its new epoch,
    /// emptied. Each epoch is swept once, by whichever thread moves `swept`
    /// past it, so the work is O(1) per call averaged over time (and at most
    /// one pass over the buckets after an idle spell).
    fn advance(&self, epoch: u64) {
        let mut swept = self.swept.load(Ordering::Acquire);
        while swept < epoch {
            match self.swept.compare_exchange_weak(
                swept,
                epoch,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    let oldest_kept = epoch.saturating_sub(self.buckets.len() as u64 - 1);
                    for moved_to in (swept + 1).max(oldest_kept)..=epoch {
                        self.claim(self.bucket(moved_to), moved_to);
                    }
                    self.moved.store(true, Ordering::Release);
                    return;
                }
                Err(actual) => swept = actual,
            }
        }
    }

    /// Makes `bucket` count `epoch`, emptying it first if it counts an older
    /// one. `false` when it already counts a later epoch.
    fn claim(&self, bucket: &Bucket, epoch: u64) -> bool {
        loop {
            let current = bucket.epoch.load(Ordering::Acquire);
            if current == epoch {
                return true;
            }
            if current == ROTATING {
                // Another thread is emptying it: three swaps, a moment.
                std::hint::spin_loop();
                continue;
            }
            if current > epoch {
                return false;
            }
            if bucket
                .epoch
                .compare_exchange(current, ROTATING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let calls = bucket.calls.swap(0, Ordering::AcqRel);
                let failures = bucket.failures.swap(0, Ordering::AcqRel);
                let slow = bucket.slow.swap(0, Ordering::AcqRel);
                self.calls.fetch_sub(calls as i64, Ordering::AcqRel);
                self.failures.fetch_sub(failures as i64, Ordering::AcqRel);
                self.slow.fetch_sub(slow as i64, Ordering::AcqRel);
                bucket.epoch.store(epoch, Ordering::Release);
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Record = Record {
        failure: false,
        slow: false,
    };
    const F: Record = Record {
        failure: true,
        slow: false,
    };
    const SLOW_S: Record = Record {
        failure: false,
        slow: true,
    };
    const SLOW_F: Record = Record {
        failure: true,
        slow: true,
    };

    fn ms(ms: u64) -> u64 {
        ms * 1_000_000
    }

    fn totals(calls: u64, failures: u64, slow: u64) -> Totals {
        Totals {
            calls,
            failures,
            slow,
        }
    }

    fn count(n: usize) -> Window {
        Window::new(WindowKind::Count(n), 0)
    }

    fn time(length_ms: u64, buckets: usize) -> Window {
        Window::new(
            WindowKind::Time {
                length: Duration::from_millis(length_ms),
                buckets,
            },
            0,
        )
    }

    // scenario CB-W2
    #[test]
    fn slow_outcomes_count_as_slow_whether_they_failed_or_not() {
        for window in [count(5), time(5_000, 5)] {
            for record in [SLOW_S, SLOW_F, S, S, S] {
                window.record(record, 0);
            }
            assert_eq!(window.totals(0), totals(5, 1, 2));
        }
        assert_eq!(count(5).totals(0), Totals::default(), "an empty window");
    }

    // scenario CB-W3
    #[test]
    fn the_oldest_outcome_leaves_a_full_count_window() {
        let window = count(10);
        for record in [S, S, F, F] {
            window.record(record, 0);
        }
        assert_eq!(window.totals(0), totals(4, 2, 0));
        for record in [F, F, F, F, S, S, S, S] {
            window.record(record, 0);
        }
        assert_eq!(window.totals(0), totals(10, 6, 0), "60 %");
        for record in [S, S, S] {
            window.record(record, 0);
        }
        assert_eq!(window.totals(0), totals(10, 3, 0), "30 %");
    }

    #[test]
    fn an_outcome_from_an_earlier_bucket_goes_to_that_bucket_not_the_latest() {
        // The latest-bucket hint points at second 3; an outcome a held-up
        // thread stamped in second 1 must land in second 1's bucket, and
        // leave the window with it.
        let window = time(5_000, 5);
        window.record(F, ms(3_100));
        window.record(S, ms(3_200)); // found through the hint
        window.record(F, ms(1_500));
        assert_eq!(window.totals(ms(3_300)), totals(3, 2, 0));
        assert_eq!(window.totals(ms(6_000)), totals(2, 1, 0), "second 1 left");
        assert_eq!(window.totals(ms(8_000)), totals(0, 0, 0), "second 3 left");
        // An outcome older than the window counts nothing.
        assert_eq!(window.record(F, ms(2_000)), 0);
        window.record(S, ms(8_100));
        assert_eq!(window.totals(ms(8_100)), totals(1, 0, 0));
    }

    #[test]
    fn the_hint_is_checked_against_its_buckets_epoch() {
        // The hint still names second 3, but that bucket left with the
        // window: an outcome stamped in second 3 is too old to count.
        let window = time(5_000, 5);
        window.record(F, ms(3_100));
        assert_eq!(window.totals(ms(8_500)), totals(0, 0, 0));
        assert_eq!(window.record(F, ms(3_200)), 0, "older than the window");
    }

    #[test]
    fn the_latest_hint_packs_what_fits_and_refuses_the_rest() {
        assert_eq!(pack_latest(5, 3), Some(5 << LATEST_INDEX_BITS | 3));
        assert_eq!(pack_latest(1 << 48, 0), None);
        assert_eq!(pack_latest(1, 1 << 16), None);
    }

    #[test]
    fn a_window_of_one_holds_the_last_outcome() {
        let window = count(1);
        window.record(F, 0);
        assert_eq!(window.totals(0), totals(1, 1, 0));
        window.record(SLOW_S, 0);
        assert_eq!(window.totals(0), totals(1, 0, 1));
    }

    // scenario CB-W4
    #[test]
    fn a_time_window_drops_whole_buckets() {
        let window = time(5_000, 5);
        let steps = [
            (0, F, (1, 1)),
            (100, S, (2, 1)),
            (200, S, (3, 1)),
            (1_200, S, (4, 1)),
            (2_200, S, (5, 1)),
            (3_200, F, (6, 2)),
            (4_200, S, (7, 2)),
            (5_200, S, (5, 1)),
            (6_200, S, (5, 1)),
            (11_200, S, (1, 0)),
        ];
        for (at, record, (calls, failures)) in steps {
            window.record(record, ms(at));
            assert_eq!(
                window.totals(ms(at)),
                totals(calls, failures, 0),
                "after recording at {at} ms"
            );
        }
    }

    // scenario CB-W5
    #[test]
    fn reading_an_idle_time_window_lets_old_buckets_go() {
        let window = time(5_000, 5);
        window.record(F, ms(0));
        window.record(S, ms(100));
        window.record(SLOW_F, ms(800));
        assert_eq!(window.totals(ms(800)), totals(3, 2, 1));
        assert_eq!(window.totals(ms(4_800)), totals(3, 2, 1));
        assert_eq!(
            window.totals(ms(5_800)),
            totals(0, 0, 0),
            "no record in between"
        );
        window.record(S, ms(5_900));
        assert_eq!(window.totals(ms(5_900)), totals(1, 0, 0));
        window.record(S, ms(10_900));
        assert_eq!(
            window.totals(ms(10_900)),
            totals(1, 0, 0),
            "the 5.9 s call left"
        );
    }

    // scenario CB-W6 (a)
    #[test]
    fn a_bucket_leaves_when_it_is_exactly_the_window_old() {
        let window = time(10_000, 10);
        let mut now = 0;
        let mut reads = Vec::new();
        for round in 0..5 {
            let first = if round < 2 { F } else { S };
            window.record(first, ms(now));
            window.record(S, ms(now));
            now += 2_000;
            reads.push(window.totals(ms(now)));
        }
        now += 2_000;
        reads.push(window.totals(ms(now)));
        let expected = [(2, 1), (4, 2), (6, 2), (8, 2), (8, 1), (6, 0)];
        for (read, (calls, failures)) in reads.iter().zip(expected) {
            assert_eq!((read.calls, read.failures), (calls, failures));
        }
    }

    // scenario CB-W6 (b), (c), (d)
    #[test]
    fn polly_sampling_cases() {
        let window = time(10_000, 10);
        for second in 0..10 {
            window.record(S, ms(second * 1_000));
        }
        assert_eq!(window.totals(ms(10_000)).calls, 9);
        assert_eq!(window.totals(ms(11_000)).calls, 8);

        for later in [10_000, 10_001] {
            let window = time(10_000, 10);
            window.record(S, 0);
            window.record(S, 0);
            assert_eq!(window.totals(ms(later)), Totals::default());
        }

        let single = time(100, 1);
        for record in [F, S, S, S, S] {
            single.record(record, 0);
        }
        assert_eq!(single.totals(0), totals(5, 1, 0));
        assert_eq!(single.totals(ms(100)), Totals::default());
    }

    #[test]
    fn a_long_idle_spell_sweeps_each_bucket_once() {
        let window = time(1_000, 10);
        window.record(F, 0);
        assert_eq!(window.totals(ms(1_000_000_000)), Totals::default());
        window.record(S, ms(1_000_000_050));
        assert_eq!(window.totals(ms(1_000_000_050)), totals(1, 0, 0));
    }

    #[test]
    fn an_outcome_older_than_the_window_is_not_counted() {
        let window = time(1_000, 10);
        window.record(S, ms(5_000));
        // A thread held up for seconds records an outcome from long ago.
        window.record(F, ms(100));
        assert_eq!(window.totals(ms(5_000)), totals(1, 0, 0));
    }

    #[test]
    fn concurrent_writers_leave_exact_totals() {
        let window = std::sync::Arc::new(count(64));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let window = window.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        let failure = (i + t) % 3 == 0;
                        window.record(
                            Record {
                                failure,
                                slow: i % 5 == 0,
                            },
                            0,
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let Window::Count(ring) = &*window else {
            unreachable!()
        };
        let (mut failures, mut slow) = (0, 0);
        for slot in ring.slots.iter() {
            let bits = slot.load(Ordering::SeqCst);
            failures += u64::from(bits & FAILURE != 0);
            slow += u64::from(bits & SLOW != 0);
        }
        assert_eq!(window.totals(0), totals(64, failures, slow));
    }

    mod reference_model {
        use super::*;
        use proptest::prelude::*;

        /// One step: advance the clock, then record an outcome or only read.
        #[derive(Clone, Debug)]
        struct Step {
            advance_ms: u64,
            record: Option<Record>,
        }

        fn step() -> impl Strategy<Value = Step> {
            (0u64..1_500, 0u8..6).prop_map(|(advance_ms, kind)| Step {
                advance_ms,
                record: match kind {
                    0 | 1 => Some(S),
                    2 => Some(F),
                    3 => Some(SLOW_S),
                    4 => Some(SLOW_F),
                    _ => None,
                },
            })
        }

        fn tally<'a>(records: impl Iterator<Item = &'a Record>) -> Totals {
            records.fold(Totals::default(), |t, r| Totals {
                calls: t.calls + 1,
                failures: t.failures + u64::from(r.failure),
                slow: t.slow + u64::from(r.slow),
            })
        }

        proptest! {
            /// The ring against "the last n outcomes of a plain list".
            #[test]
            fn count_window_matches_the_last_n_outcomes(
                n in 1usize..24,
                steps in proptest::collection::vec(step(), 0..200),
            ) {
                let window = count(n);
                let mut list = Vec::new();
                for step in steps {
                    if let Some(record) = step.record {
                        window.record(record, 0);
                        list.push(record);
                    }
                    let start = list.len().saturating_sub(n);
                    prop_assert_eq!(window.totals(0), tally(list[start..].iter()));
                }
            }

            /// The buckets against "every outcome whose bucket is younger
            /// than the window", read after every step.
            #[test]
            fn time_window_matches_the_outcomes_of_the_last_t(
                length_ms in 1u64..5_000,
                buckets in 1usize..12,
                steps in proptest::collection::vec(step(), 0..200),
            ) {
                let window = time(length_ms, buckets);
                let bucket_nanos = (ms(length_ms) / buckets as u64).max(1);
                let mut now = 0;
                let mut list: Vec<(u64, Record)> = Vec::new();
                for step in steps {
                    now += ms(step.advance_ms);
                    if let Some(record) = step.record {
                        window.record(record, now);
                        list.push((now / bucket_nanos, record));
                    }
                    let current = now / bucket_nanos;
                    let oldest = current.saturating_sub(buckets as u64 - 1);
                    let expected = tally(
                        list.iter().filter(|(epoch, _)| *epoch >= oldest).map(|(_, r)| r),
                    );
                    prop_assert_eq!(window.totals(now), expected);
                }
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::{Arc, loom_model as model};
    use loom::thread;

    #[test]
    fn loom_outcomes_racing_onto_one_slot_keep_the_totals_exact() {
        // A window of one slot, holding a slow failure: a success and a
        // fast failure replace it at once. Whichever lands last, the
        // totals count exactly what the slot holds.
        model(|| {
            let window = Arc::new(CountWindow::new(1));
            window.record(Record {
                failure: true,
                slow: true,
            });
            let threads = [(false, false), (true, false)].map(|(failure, slow)| {
                let window = window.clone();
                thread::spawn(move || {
                    window.record(Record { failure, slow });
                })
            });
            for thread in threads {
                thread.join().unwrap();
            }
            let held = window.slots[0].load(Ordering::Relaxed);
            let expected = Totals {
                calls: 1,
                failures: u64::from(held & FAILURE != 0),
                slow: u64::from(held & SLOW != 0),
            };
            assert_eq!(window.totals(), expected);
            assert_eq!(
                window.failures.load(Ordering::Relaxed),
                expected.failures as i64
            );
            assert_eq!(window.slow.load(Ordering::Relaxed), expected.slow as i64);
        });
    }
}
