//! The overflow sketch of a keyed limiter: a count-min sketch whose cells
//! are limiter states, deciding for the keys that find the table full.
//!
//! A key has one cell in each of [`ROWS`] rows, picked from its (seeded)
//! hash. Every admission of the key raises each of its cells at least to
//! the key's new state, so every cell holds at least what the key alone
//! would hold; a cell is shared with other keys, and can only hold more.
//! The key's estimate is the least-consumed of its cells, which is still at
//! least the key's own state: a key is never admitted more than its own
//! limiter would admit. The update is conservative (a cell is raised only
//! as far as the key's new estimate), so a cell never holds more than the
//! calls admitted through it would make it hold.
//!
//! A cell is one word for GCRA (a theoretical arrival time) and two for the
//! windows (the current window's count, tagged with its number, and the
//! previous window's). A sliding log cannot live in a cell; its keys are
//! counted as the sliding window counter counts, but the previous window's
//! count is taken in full rather than weighted (`previous + current`),
//! which bounds every window-length as the log does, at the price of
//! refusing until up to two windows after a burst instead of one. A
//! segmented window's keys are counted the same way: a permit counted
//! through the window it was taken in and the next is counted at least as
//! long as its segment keeps it. A fixed window's keys are counted exactly:
//! the current window's count alone.
//!
//! The cells are allocated the first time a key overflows, and never grow.

use std::time::Duration;

use super::gcra::{self, Gcra};
use super::layer::Kind;
use super::limiter::{Algorithm, Decision, Quota, Snapshot, nanos};
use super::log::WindowLog;
use super::segmented::SegmentedWindow;
use super::window::{self, WindowCounter, window_nanos};

/// The sketch's rows: a key has one cell in each.
pub(crate) const ROWS: usize = 4;

/// A window cell's current count takes the low bits of its first word, the
/// window's number the rest. Counts stay within the limit (at most 2^40 − 1)
/// but for a window change, which saturates. A tag wraps after 2^24
/// windows: an idle cell may then pass for a current one, which only ever
/// over-counts.
const COUNT_BITS: u32 = 40;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const TAG_MASK: u64 = (1 << (64 - COUNT_BITS)) - 1;

#[derive(Debug)]
pub(crate) struct Sketch {
    /// The algorithm and the limit of every key decided here (the layer's;
    /// keys with a limit of their own are never decided here).
    quota: Quota,
    /// Cells per row.
    width: usize,
    /// `ROWS × width` cells, row after row, of one word (GCRA) or two
    /// (windows); empty until a key first overflows.
    words: Vec<u64>,
    /// The latest instant seen: callers read the clock before taking the
    /// lock, and a window count must never be read for a window older than
    /// one it was written in.
    latest: u64,
}

/// A key's cell in each row.
type Place = [usize; ROWS];

/// What a key's cells say of it: the least consumed of each reading.
#[derive(Clone, Copy, Debug)]
enum Estimate {
    Tat(u64),
    Counts {
        epoch: u64,
        into: u64,
        previous: u64,
        current: u64,
    },
}

impl Sketch {
    pub(crate) fn new(quota: Quota, width: usize) -> Self {
        Sketch {
            quota,
            width: width.max(1),
            words: Vec::new(),
            latest: 0,
        }
    }

    /// The cells it has (allocated or not yet).
    pub(crate) fn cells(&self) -> usize {
        ROWS * self.width
    }

    /// The bytes its cells take once allocated.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.cells() * self.words_per_cell() * std::mem::size_of::<u64>()
    }

    fn words_per_cell(&self) -> usize {
        match self.quota.kind {
            Kind::Gcra => 1,
            Kind::SlidingWindow | Kind::SlidingLog | Kind::FixedWindow | Kind::SegmentedWindow => 2,
        }
    }

    /// `now`, or a later instant already seen.
    pub(crate) fn now(&self, now: u64) -> u64 {
        now.max(self.latest)
    }

    fn place(&self, hash: u64) -> Place {
        std::array::from_fn(|row| row * self.width + column(hash, row, self.width))
    }

    fn word(&self, i: usize) -> u64 {
        // An unallocated sketch reads as zeros: every reading fresh.
        self.words.get(i).copied().unwrap_or(0)
    }

    fn words_mut(&mut self) -> &mut [u64] {
        if self.words.is_empty() {
            self.words = vec![0; self.cells() * self.words_per_cell()];
        }
        &mut self.words
    }

    /// A window cell's counts for window `epoch − 1` and `epoch`.
    fn counts(&self, cell: usize, epoch: u64) -> (u64, u64) {
        let tagged = self.word(2 * cell);
        let (tag, count) = (tagged >> COUNT_BITS, tagged & COUNT_MAX);
        if tag == epoch & TAG_MASK {
            (self.word(2 * cell + 1), count)
        } else if tag == epoch.wrapping_sub(1) & TAG_MASK {
            (count, 0)
        } else {
            (0, 0)
        }
    }

    fn write_counts(&mut self, cell: usize, epoch: u64, previous: u64, current: u64) {
        let words = self.words_mut();
        words[2 * cell] = (epoch & TAG_MASK) << COUNT_BITS | current.min(COUNT_MAX);
        words[2 * cell + 1] = previous;
    }

    fn estimate(&self, place: &Place, now: u64) -> Estimate {
        if self.quota.kind == Kind::Gcra {
            let tat = place.iter().map(|&cell| self.word(cell)).min();
            return Estimate::Tat(tat.unwrap_or(0));
        }
        let window = window_nanos(self.quota.window);
        let epoch = now / window;
        let (mut previous, mut current) = (u64::MAX, u64::MAX);
        for &cell in place {
            let (p, c) = self.counts(cell, epoch);
            previous = previous.min(p);
            current = current.min(c);
        }
        Estimate::Counts {
            epoch,
            into: now - epoch * window,
            previous,
            current,
        }
    }

    /// Takes one permit for the key hashed to `hash`. The key's state comes
    /// with a refusal, and with an admission when `report` is set.
    pub(crate) fn acquire(
        &mut self,
        hash: u64,
        now: u64,
        report: bool,
    ) -> (Decision, Option<Snapshot>) {
        let now = self.now(now);
        self.latest = now;
        let place = self.place(hash);
        let estimate = self.estimate(&place, now);
        let (decision, after) = match estimate {
            Estimate::Tat(tat) => self.acquire_tat(&place, tat, now),
            Estimate::Counts {
                epoch,
                into,
                previous,
                current,
            } => self.acquire_counts(&place, epoch, into, previous, current),
        };
        let state =
            (report || decision != Decision::Admitted).then(|| self.snapshot_of(after, now));
        (decision, state)
    }

    fn acquire_tat(&mut self, place: &Place, tat: u64, now: u64) -> (Decision, Estimate) {
        let Quota {
            limit,
            window,
            burst,
            ..
        } = self.quota;
        let interval = gcra::interval(limit, nanos(window));
        let span = interval.saturating_mul(burst);
        let next = tat.max(now).saturating_add(interval);
        match (next - now).checked_sub(span) {
            None | Some(0) => {
                let words = self.words_mut();
                for &cell in place {
                    words[cell] = words[cell].max(next);
                }
                (Decision::Admitted, Estimate::Tat(next))
            }
            Some(over) => (
                Decision::Refused {
                    wait: Duration::from_nanos(over),
                },
                Estimate::Tat(tat),
            ),
        }
    }

    fn acquire_counts(
        &mut self,
        place: &Place,
        epoch: u64,
        into: u64,
        previous: u64,
        current: u64,
    ) -> (Decision, Estimate) {
        let estimate = Estimate::Counts {
            epoch,
            into,
            previous,
            current,
        };
        let limit = self.quota.limit;
        let window = window_nanos(self.quota.window);
        let fits = match self.quota.kind {
            Kind::SlidingLog | Kind::SegmentedWindow => previous.saturating_add(current) < limit,
            Kind::FixedWindow => current < limit,
            _ => window::fits(previous, current + 1, limit, window, into),
        };
        if !fits {
            let wait = match self.quota.kind {
                // Room comes when the previous window leaves the count, or
                // the current one too.
                Kind::SlidingLog | Kind::SegmentedWindow if current < limit => window - into,
                Kind::SlidingLog | Kind::SegmentedWindow => 2 * window - into,
                Kind::FixedWindow => window - into,
                _ => nanos(window::wait(previous, current, 1, limit, window, into)).max(1),
            };
            let wait = Duration::from_nanos(wait);
            return (Decision::Refused { wait }, estimate);
        }
        // Each cell's current count rises to the key's new estimate, no
        // further: the least a cell can hold while holding the key.
        let raised = current + 1;
        for &cell in place {
            let (p, c) = self.counts(cell, epoch);
            self.write_counts(cell, epoch, p, c.max(raised));
        }
        let after = Estimate::Counts {
            epoch,
            into,
            previous,
            current: raised,
        };
        (Decision::Admitted, after)
    }

    fn snapshot_of(&self, estimate: Estimate, now: u64) -> Snapshot {
        let Quota {
            kind,
            limit,
            window,
            burst,
            ..
        } = self.quota;
        match estimate {
            Estimate::Tat(tat) => {
                gcra::snapshot(tat, now, gcra::interval(limit, nanos(window)), burst)
            }
            Estimate::Counts {
                into,
                previous,
                current,
                ..
            } => {
                let window = window_nanos(window);
                if kind == Kind::SlidingWindow {
                    return window::snapshot(previous, current, limit, window, into);
                }
                if kind == Kind::FixedWindow {
                    // Its previous window is over; the current one's count
                    // is all back when it ends.
                    let reset = if current > 0 { window - into } else { 0 };
                    return Snapshot {
                        limit,
                        remaining: limit.saturating_sub(current),
                        reset: Duration::from_nanos(reset),
                    };
                }
                Snapshot {
                    limit,
                    remaining: limit.saturating_sub(previous.saturating_add(current)),
                    reset: Duration::from_nanos(window::reset(previous, current, window, into)),
                }
            }
        }
    }

    /// A limiter of the layer's algorithm and limit for the key hashed to
    /// `hash`, starting from the sketch's estimate: the key carries its
    /// count (or more) into the table. A sliding log starts with its
    /// estimate's admissions all made `now`, and so does a segmented
    /// window.
    pub(crate) fn limiter(&self, hash: u64, now: u64) -> Algorithm {
        let now = self.now(now);
        let Quota {
            limit,
            window,
            burst,
            kind,
            segments,
        } = self.quota;
        match self.estimate(&self.place(hash), now) {
            Estimate::Tat(tat) => Algorithm::Gcra(Gcra::with_tat(limit, window, burst, tat)),
            Estimate::Counts {
                epoch,
                previous,
                current,
                ..
            } => match kind {
                Kind::SlidingLog => {
                    let held = previous.saturating_add(current);
                    Algorithm::Log(WindowLog::with_admissions(limit, window, now, held))
                }
                Kind::SegmentedWindow => {
                    let held = previous.saturating_add(current);
                    Algorithm::Segmented(SegmentedWindow::with_held(
                        limit, window, segments, now, held,
                    ))
                }
                Kind::FixedWindow => {
                    Algorithm::Fixed(SegmentedWindow::with_held(limit, window, 1, now, current))
                }
                _ => Algorithm::Counter(WindowCounter::with_counts(
                    limit, window, epoch, previous, current,
                )),
            },
        }
    }

    /// Changes the layer's limit at `now`. GCRA cells keep their permits
    /// left, as a GCRA limiter does; window cells keep their counts, and a
    /// new window carries each cell's counts whole into its current window
    /// (a window counter in the table starts over instead: the sketch
    /// cannot tell its keys apart, and must not under-count any).
    pub(crate) fn set_limit(&mut self, limit: u64, window: Duration, now: u64) {
        let now = self.now(now);
        self.latest = now;
        let old = self.quota;
        self.quota.limit = limit;
        self.quota.window = window;
        if self.words.is_empty() {
            return;
        }
        if old.kind == Kind::Gcra {
            let before = gcra::interval(old.limit, nanos(old.window));
            let after = gcra::interval(limit, nanos(window));
            let burst = old.burst;
            for tat in &mut self.words {
                let left = gcra::left(*tat, now, before, burst).min(burst);
                *tat = now.saturating_add(after.saturating_mul(burst - left));
            }
            return;
        }
        let (before, after) = (window_nanos(old.window), window_nanos(window));
        if before != after {
            for cell in 0..self.cells() {
                let (p, c) = self.counts(cell, now / before);
                self.write_counts(cell, now / after, 0, p.saturating_add(c));
            }
        }
    }
}

/// The key's cell in `row`: the key's hash is already seeded per layer, so
/// a caller cannot aim keys at a cell; splitmix64's finaliser over the hash
/// and the row makes each row's choice its own.
fn column(hash: u64, row: usize, width: usize) -> usize {
    let mut z = hash ^ (row as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // A multiply-shift maps it onto the row without a division.
    ((u128::from(z) * width as u128) >> 64) as usize
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEYS: usize = 6;

    /// A segmented window gets 3 segments of `window` each.
    fn quota(kind: Kind, limit: u64, window: u64) -> Quota {
        let segments = if kind == Kind::SegmentedWindow { 3 } else { 1 };
        Quota {
            kind,
            limit,
            window: Duration::from_nanos(window * u64::from(segments)),
            burst: limit,
            segments,
        }
    }

    fn kinds() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::SlidingWindow),
            Just(Kind::SlidingLog),
            Just(Kind::Gcra),
            Just(Kind::FixedWindow),
            Just(Kind::SegmentedWindow),
        ]
    }

    /// Distinct, well-spread hashes for a test's keys.
    fn hash(key: usize) -> u64 {
        (key as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    proptest! {
        /// Over-count only: keys decided through a sketch one or two cells
        /// wide (so that they share cells) are each checked against a
        /// limiter of their own fed with exactly the calls the sketch
        /// admitted for them. Every admission is one their own limiter
        /// admits too, so no key ever gets more than its limit in a window
        /// (a sliding log's key is checked against the exact log), however
        /// the others' traffic falls and the limit changes.
        #[test]
        fn a_key_decided_through_the_sketch_never_gets_more_than_its_limit(
            kind in kinds(),
            limit in 1u64..6,
            window in 1u64..60,
            width in 1usize..3,
            steps in proptest::collection::vec((0..KEYS, 0u64..20, 0u64..12), 1..300),
        ) {
            let q = quota(kind, limit, window);
            let mut sketch = Sketch::new(q, width);
            let own: Vec<Algorithm> = (0..KEYS).map(|_| Algorithm::new(q)).collect();
            let mut now = 0;
            for (key, step, change) in steps {
                now += step;
                if change == 0 {
                    let limit = 1 + step % 5;
                    sketch.set_limit(limit, q.window, now);
                    for limiter in &own {
                        limiter.set_limit(limit, q.window, now);
                    }
                    continue;
                }
                let (decision, _) = sketch.acquire(hash(key), now, false);
                if decision == Decision::Admitted {
                    let own = own[key].acquire(now, 1);
                    prop_assert_eq!(own, Decision::Admitted, "key {} at {}", key, now);
                }
            }
        }

        /// A key alone in its cells is decided exactly as its own limiter
        /// would decide (the sliding window counter, GCRA and the fixed
        /// window), waits
        /// included, and what it carries into the table is that state.
        #[test]
        fn a_key_alone_in_its_cells_is_decided_exactly(
            kind in prop_oneof![Just(Kind::Gcra), Just(Kind::SlidingWindow), Just(Kind::FixedWindow)],
            limit in 1u64..6,
            window in 1u64..60,
            steps in proptest::collection::vec(0u64..20, 1..100),
        ) {
            let q = quota(kind, limit, window);
            let mut sketch = Sketch::new(q, 64);
            let own = Algorithm::new(q);
            let mut now = 0;
            for step in steps {
                now += step;
                let (decision, state) = sketch.acquire(hash(0), now, true);
                prop_assert_eq!(decision, own.acquire(now, 1));
                prop_assert_eq!(state, Some(own.snapshot(now)));
                prop_assert_eq!(sketch.limiter(hash(0), now).snapshot(now), own.snapshot(now));
            }
        }
    }

    #[test]
    fn a_sliding_log_key_is_refused_until_its_count_has_left_in_full() {
        // 2 per 100 ns: the previous window counts whole, so a burst at
        // the end of one window holds the next one closed.
        let mut sketch = Sketch::new(quota(Kind::SlidingLog, 2, 100), 16);
        for _ in 0..2 {
            assert_eq!(sketch.acquire(hash(0), 90, false).0, Decision::Admitted);
        }
        let refused = |wait| Decision::Refused {
            wait: Duration::from_nanos(wait),
        };
        assert_eq!(sketch.acquire(hash(0), 90, false).0, refused(110));
        assert_eq!(sketch.acquire(hash(0), 150, false).0, refused(50));
        assert_eq!(sketch.acquire(hash(0), 200, false).0, Decision::Admitted);
        // What it carries into the table: the admission of this window
        // (the two at 90 have left), as if made now.
        let log = sketch.limiter(hash(0), 250);
        let state = log.snapshot(250);
        assert_eq!(
            (state.remaining, state.reset),
            (1, Duration::from_nanos(100))
        );
    }

    #[test]
    fn a_new_limit_or_window_keeps_what_the_cells_hold() {
        // GCRA, 4 per 400 ns: 4 taken at 0; then 2 per 400 ns. The bucket
        // is still empty, and refills at the new rate.
        let mut sketch = Sketch::new(quota(Kind::Gcra, 4, 400), 16);
        for _ in 0..4 {
            assert_eq!(sketch.acquire(hash(0), 0, false).0, Decision::Admitted);
        }
        sketch.set_limit(2, Duration::from_nanos(400), 0);
        assert_eq!(
            sketch.acquire(hash(0), 0, false).0,
            Decision::Refused {
                wait: Duration::from_nanos(200)
            }
        );
        // Windows, 3 per 100 ns: 3 taken at 50; the window becomes 1 000 ns.
        // They stay counted, now as the new window's.
        for kind in [Kind::SlidingWindow, Kind::SlidingLog] {
            let mut sketch = Sketch::new(quota(kind, 3, 100), 16);
            for _ in 0..3 {
                assert_eq!(sketch.acquire(hash(0), 50, false).0, Decision::Admitted);
            }
            sketch.set_limit(3, Duration::from_nanos(1_000), 60);
            let state = sketch.limiter(hash(0), 60).snapshot(60);
            assert_eq!(state.remaining, 0, "{kind:?}");
            assert!(
                matches!(
                    sketch.acquire(hash(0), 999, false).0,
                    Decision::Refused { .. }
                ),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn the_cells_are_allocated_once_at_their_fixed_size() {
        let mut sketch = Sketch::new(quota(Kind::SlidingWindow, 10, 100), 63);
        assert_eq!(sketch.cells(), 4 * 63);
        assert!(sketch.words.is_empty(), "nothing until a key overflows");
        for key in 0..10_000 {
            sketch.acquire(hash(key), key as u64, false);
        }
        assert_eq!(sketch.words.len() * 8, sketch.bytes());
        assert_eq!(sketch.bytes(), 4 * 63 * 16);
        assert_eq!(Sketch::new(quota(Kind::Gcra, 1, 1), 63).bytes(), 4 * 63 * 8);
    }

    #[test]
    fn rows_pick_their_cells_independently() {
        // Keys that share a cell in one row mostly do not in the next.
        let width = 64;
        let shared = (0..10_000)
            .filter(|&key| column(hash(key), 0, width) == column(hash(0), 0, width))
            .filter(|&key| column(hash(key), 1, width) == column(hash(0), 1, width))
            .count();
        // About 10 000 / 64² = 2.4 keys besides key 0 itself.
        assert!(shared <= 12, "{shared}");
    }
}
