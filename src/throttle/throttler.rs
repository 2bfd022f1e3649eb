//! The throttle's shared state: accepts and misses over a sliding time
//! window, in epoch-tagged buckets, and the rejection probability they
//! give.
//!
//! Each outcome touches one counter of one bucket: an accept, or a miss (a
//! request without an accept: a failure, or a local rejection). Requests
//! are accepts plus misses. Reading the window sums its buckets, so the
//! success path avoids it: with K ≥ 1 the probability can only be above 0
//! while the window holds a miss, and one word records the epoch of the
//! latest miss. While that is empty or has left the window, a decision is
//! one atomic load, with no clock read.

use std::time::Duration;

use crate::classify::Outcome;
use crate::clock::Clock;
use crate::metrics::Count;
use crate::name::Name;
use crate::rng::SharedRng;
use crate::sync::{AtomicBool, AtomicU64, Ordering};
use crate::tagged::{TaggedCount, Unchanged};

/// One bucket of the window: its epoch's accepts and misses.
#[derive(Debug, Default)]
struct Bucket {
    accepts: TaggedCount,
    misses: TaggedCount,
}

/// The settings a throttle is built with, checked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub(crate) k: f64,
    pub(crate) padding: f64,
    pub(crate) max_probability: f64,
    /// Below this many requests in the window, nothing is refused.
    pub(crate) min_requests: u64,
    pub(crate) window: Duration,
    pub(crate) buckets: usize,
}

/// What one decision came to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Decision {
    Admit,
    /// Rejected at this probability, drawn in this epoch.
    Reject {
        probability: f64,
        epoch: u64,
    },
}

/// The window's contents at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Counts {
    pub(crate) accepts: u64,
    pub(crate) misses: u64,
}

impl Counts {
    pub(crate) fn requests(&self) -> u64 {
        self.accepts.saturating_add(self.misses)
    }
}

/// Every service of one layer shares one of these.
#[derive(Debug)]
pub(crate) struct Throttler {
    name: Name,
    settings: Settings,
    /// The CPU's counter with `fast-clock`, tokio's clock while that is
    /// paused at the first reading: the epochs go nowhere else.
    clock: Clock,
    bucket_nanos: u64,
    buckets: Box<[Bucket]>,
    /// The latest epoch in which a miss was recorded, plus one; 0 when there
    /// is none, or none left in the window.
    last_miss: AtomicU64,
    /// The latest epoch any caller has seen: spares most calls a division,
    /// and tells a held-up caller from a count left by a wrap of the tags.
    latest: AtomicU64,
    /// Calls refused here since the layer was built.
    rejected: AtomicU64,
    /// `palisade_throttle_refused_total{name}`.
    refused_count: Count,
    /// Set when a breaker below refused (the upstream is down, which is
    /// the breaker's to answer), cleared by the next accept: failures in
    /// between are not counted.
    breaker_open: AtomicBool,
    rng: SharedRng,
}

impl Throttler {
    pub(crate) fn new(name: Name, settings: Settings, seed: u64) -> Self {
        let window_nanos = u64::try_from(settings.window.as_nanos()).unwrap_or(u64::MAX);
        Throttler {
            refused_count: Count::new("palisade_throttle_refused_total", name.as_str()),
            name,
            settings,
            clock: Clock::new(),
            bucket_nanos: (window_nanos / settings.buckets as u64).max(1),
            buckets: (0..settings.buckets).map(|_| Bucket::default()).collect(),
            last_miss: AtomicU64::new(0),
            latest: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            breaker_open: AtomicBool::new(false),
            rng: SharedRng::new(seed),
        }
    }

    pub(crate) fn name(&self) -> &Name {
        &self.name
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// The epoch (bucket number since the clock's origin) it is now.
    #[inline]
    pub(crate) fn epoch_now(&self) -> u64 {
        self.epoch(self.clock.now())
    }

    /// The epoch `nanos` (since the clock's origin) falls in.
    #[inline]
    fn epoch(&self, nanos: u64) -> u64 {
        let hint = self.latest.load(Ordering::Relaxed);
        // The hint is right while its bucket holds `now`: a multiplication
        // checks it, where finding the bucket takes a division.
        if let Some(into) = hint
            .checked_mul(self.bucket_nanos)
            .and_then(|start| nanos.checked_sub(start))
            && into < self.bucket_nanos
        {
            return hint;
        }
        let epoch = nanos / self.bucket_nanos;
        self.latest.fetch_max(epoch, Ordering::Relaxed);
        epoch
    }

    fn bucket(&self, epoch: u64) -> &Bucket {
        &self.buckets[(epoch % self.buckets.len() as u64) as usize]
    }

    /// Decides whether the next call goes, drawing from the layer's random
    /// sequence when the probability is above zero.
    #[inline]
    pub(crate) fn decide(&self) -> Decision {
        if self.last_miss.load(Ordering::Relaxed) == 0 {
            // No miss in the window: requests equal accepts, and with
            // K ≥ 1 the formula is at most 0.
            return Decision::Admit;
        }
        if self.breaker_open.load(Ordering::Relaxed) {
            // A breaker below is answering: the call goes to it.
            return Decision::Admit;
        }
        self.decide_at(self.epoch_now(), || self.rng.unit())
    }

    /// Decides at `epoch`, drawing with `draw` only if the probability is
    /// above zero: a call is rejected when the draw is strictly below it,
    /// so a probability of 0 never rejects, whatever the draw.
    #[cold]
    pub(crate) fn decide_at(&self, epoch: u64, draw: impl FnOnce() -> f64) -> Decision {
        let probability = self.probability_at(epoch);
        if probability > 0.0 && draw() < probability {
            Decision::Reject { probability, epoch }
        } else {
            Decision::Admit
        }
    }

    /// The rejection probability at `epoch`:
    /// max(0, (requests − K × accepts) / (requests + padding)).
    pub(crate) fn probability_at(&self, epoch: u64) -> f64 {
        if !self.misses_in_window(epoch) {
            return 0.0;
        }
        probability(self.counts_at(epoch), &self.settings)
    }

    /// Whether a miss may still be in the window at `epoch`; forgets the
    /// latest miss once it has left.
    fn misses_in_window(&self, epoch: u64) -> bool {
        let marked = self.last_miss.load(Ordering::Relaxed);
        let Some(miss_epoch) = marked.checked_sub(1) else {
            return false;
        };
        if epoch.saturating_sub(miss_epoch) < self.buckets.len() as u64 {
            return true;
        }
        // Left the window. A miss recorded meanwhile changed the word, and
        // then it stays.
        let _ = self
            .last_miss
            .compare_exchange(marked, 0, Ordering::Relaxed, Ordering::Relaxed);
        false
    }

    /// The accepts and misses of the window ending with `epoch`.
    pub(crate) fn counts_at(&self, epoch: u64) -> Counts {
        let first = epoch.saturating_sub(self.buckets.len() as u64 - 1);
        let mut counts = Counts {
            accepts: 0,
            misses: 0,
        };
        for e in first..=epoch {
            let bucket = self.bucket(e);
            counts.accepts = counts.accepts.saturating_add(bucket.accepts.get(e));
            counts.misses = counts.misses.saturating_add(bucket.misses.get(e));
        }
        counts
    }

    /// Records a finished call's outcome now: a success is a request and an
    /// accept, a failure a request without one, and an ignored call
    /// nothing (it never reached the upstream, or says nothing of it).
    #[inline]
    pub(crate) fn record(&self, outcome: Outcome) {
        if outcome == Outcome::Success {
            // Loaded first, so that the healthy path does not write it.
            if self.breaker_open.load(Ordering::Relaxed) {
                self.breaker_open.store(false, Ordering::Relaxed);
            }
            self.record_at(self.epoch_now(), true)
        } else {
            self.record_miss(outcome)
        }
    }

    /// A failure is a miss, unless a breaker below is answering; an ignored
    /// call is nothing.
    #[inline(never)]
    fn record_miss(&self, outcome: Outcome) {
        if outcome == Outcome::Failure && !self.breaker_open.load(Ordering::Relaxed) {
            self.record_at(self.epoch_now(), false)
        }
    }

    /// A circuit breaker below refused a call: the upstream is down, and an
    /// outage is the breaker's to answer. Until the next accept, this
    /// throttle refuses nothing (the breaker does) and counts no failures
    /// (the breaker's failed probes), so that after a long outage the
    /// window does not hold them and the throttle does not go on refusing
    /// a recovered upstream once the breaker closes. What the window
    /// already holds stays: an overload that opened the breaker for a
    /// moment is still seen when it closes.
    pub(crate) fn breaker_opened(&self) {
        self.breaker_open.store(true, Ordering::Relaxed);
    }

    /// Records a call refused here: a request without an accept, so that
    /// the share refused limits itself.
    pub(crate) fn record_rejection(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.refused_count.add();
        tracing::debug!(target: "palisade::throttle", name = self.name.as_str(), "call throttled");
        if !self.breaker_open.load(Ordering::Relaxed) {
            self.record_at(self.epoch_now(), false);
        }
    }

    /// Records an accept, or a miss, in `epoch`.
    pub(crate) fn record_at(&self, epoch: u64, accepted: bool) {
        if self.latest.load(Ordering::Relaxed) >= epoch.saturating_add(self.buckets.len() as u64) {
            // Held up past a whole window: the outcome has left it. Dropped
            // here, before the bucket is touched, because the bucket may
            // by now hold a tag so far ahead (more than `AHEAD`, with more
            // than 512 buckets and a stall of two windows) that it would
            // pass for an older one and be overwritten.
            return;
        }
        let bucket = self.bucket(epoch);
        let count = if accepted {
            &bucket.accepts
        } else {
            &bucket.misses
        };
        match count.update(epoch, |n| Some(n.saturating_add(1))) {
            Ok(_) => {}
            Err(Unchanged::Ahead) => self.ahead(count, epoch),
            Err(Unchanged::Declined) => {}
        }
        if !accepted {
            // Relaxed: a reader may see the mark before the miss, or the
            // miss before the mark. Either way it only reads the window a
            // call late or early; the counts themselves are exact.
            self.last_miss.fetch_max(epoch + 1, Ordering::Relaxed);
        }
    }

    /// The bucket carries a later epoch's tag. Either this caller was held
    /// up past a whole window (its outcome has left the window anyway, so
    /// it is dropped), or the tag is left from a wrap of the 24-bit tags
    /// after a long idle spell (nobody has seen a later epoch): then the
    /// count starts over, in one compare-and-swap so that two callers
    /// doing so at once both count.
    ///
    /// The wrap comes after 2^24 buckets: 4.66 hours with 1 ms buckets,
    /// 194 days with the default 1 s ones. A bucket idle for exactly a
    /// multiple of that would pass for current, and its old counts be read
    /// once more until the next outcome in it; a throttle that quiet for
    /// that long barely notices.
    #[cold]
    fn ahead(&self, count: &TaggedCount, epoch: u64) {
        if self.latest.load(Ordering::Relaxed) > epoch {
            return;
        }
        count.restart_add(epoch, 1);
    }
}

/// The SRE book's formula, capped at the settings' `max_probability`; 0
/// while the window holds fewer than `min_requests` requests.
pub(crate) fn probability(counts: Counts, settings: &Settings) -> f64 {
    if counts.requests() < settings.min_requests {
        return 0.0;
    }
    sre_probability(counts, settings.k, settings.padding).min(settings.max_probability)
}

/// The SRE book's formula alone, 0 for an empty window.
pub(crate) fn sre_probability(counts: Counts, k: f64, padding: f64) -> f64 {
    let requests = counts.requests() as f64;
    let accepts = counts.accepts as f64;
    let p = (requests - k * accepts) / (requests + padding);
    // `max` also turns the NaN of an empty window with no padding into 0.
    p.max(0.0)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn throttler(k: f64, padding: f64, window: Duration, buckets: usize) -> Throttler {
        // Uncapped: these tests are of the formula itself.
        let settings = Settings {
            k,
            padding,
            max_probability: 1.0,
            min_requests: 0,
            window,
            buckets,
        };
        Throttler::new(Name::Static("t"), settings, 7)
    }

    /// A window of an hour: no test here moves the clock.
    fn hour(k: f64, padding: f64) -> Throttler {
        throttler(k, padding, Duration::from_secs(3_600), 10)
    }

    fn fill(t: &Throttler, accepts: u64, misses: u64) {
        for _ in 0..accepts {
            t.record_at(0, true);
        }
        for _ in 0..misses {
            t.record_at(0, false);
        }
    }

    /// Scenario CT-1 (a)-(e): the probabilities, with K = 2 and a padding
    /// of 1, and no rejection at probability 0 even when the draw is 0.
    #[test]
    fn the_formula_and_no_rejection_at_zero() {
        let cases = [
            (60, 40, 0.0),
            (50, 50, 0.0),
            (30, 70, 40.0 / 101.0),
            (0, 100, 100.0 / 101.0),
            (0, 0, 0.0),
        ];
        for (accepts, misses, expected) in cases {
            let t = hour(2.0, 1.0);
            fill(&t, accepts, misses);
            let p = t.probability_at(0);
            assert!((p - expected).abs() < 1e-12, "{accepts}/{misses}: {p}");
            let decision = t.decide_at(0, || 0.0);
            if expected == 0.0 {
                assert_eq!(decision, Decision::Admit, "a draw of exactly 0 at p = 0");
            } else {
                assert!(matches!(decision, Decision::Reject { .. }));
            }
        }
    }

    /// Scenario CT-1 (c): 10 000 draws from the seeded sequence, the window
    /// frozen (decisions are not recorded), reject within 2 points of
    /// 40/101.
    #[test]
    fn draws_reject_at_the_formulas_rate() {
        let t = hour(2.0, 1.0);
        fill(&t, 30, 70);
        let rejected = (0..10_000)
            .filter(|_| matches!(t.decide_at(0, || t.rng.unit()), Decision::Reject { .. }))
            .count();
        let share = rejected as f64 / 10_000.0;
        assert!((share - 40.0 / 101.0).abs() < 0.02, "rejected {share}");
    }

    /// Scenario CT-1, the fixed-draw sequence: a draw of 0.5, K = 1.1 and a
    /// padding of 8; the upstream answers 9 throttles, 6 accepts and 4
    /// throttles, with a decision after each (a rejection recorded as a
    /// request without an accept, as the service records it).
    #[test]
    fn the_fixed_draw_sequence() {
        let t = hour(1.1, 8.0);
        let answers = "TTTTTTTTTAAAAAATTTT";
        let mut decisions = String::new();
        for answer in answers.chars() {
            t.record_at(0, answer == 'A');
            match t.decide_at(0, || 0.5) {
                Decision::Admit => decisions.push('n'),
                Decision::Reject { .. } => {
                    t.record_at(0, false);
                    decisions.push('y');
                }
            }
        }
        // 8 passes, 5 rejections, 3 passes, 3 rejections.
        assert_eq!(decisions, "nnnnnnnnyyyyynnnyyy");
    }

    #[test]
    fn records_leave_the_window_a_bucket_at_a_time() {
        let t = throttler(2.0, 1.0, Duration::from_secs(10), 10);
        fill(&t, 0, 5);
        assert_eq!(t.counts_at(9).misses, 5, "the last bucket of the window");
        assert!(t.probability_at(9) > 0.0);
        assert_eq!(t.counts_at(10).misses, 0, "a whole window later");
        assert_eq!(t.probability_at(10), 0.0);
        assert_eq!(
            t.last_miss.load(Ordering::Relaxed),
            0,
            "the mark is cleared"
        );
        // A held-up caller's miss from a bucket since reused (by a miss in
        // epoch 25) is dropped, and leaves the newer miss alone.
        t.latest.store(25, Ordering::Relaxed);
        t.record_at(25, false);
        t.record_at(15, false);
        assert_eq!(
            t.counts_at(25),
            Counts {
                accepts: 0,
                misses: 1
            }
        );
        // The same miss found ahead by the bucket's own tag: `ahead` drops
        // it too, since a later epoch has been seen.
        let misses = &t.bucket(15).misses;
        assert_eq!(misses.update(15, |n| Some(n + 1)), Err(Unchanged::Ahead));
        t.ahead(misses, 15);
        assert_eq!(t.counts_at(25).misses, 1);
        // Nobody has seen a later epoch: the tag ahead is left from a wrap
        // of the tags, and the count starts over.
        t.latest.store(15, Ordering::Relaxed);
        t.ahead(misses, 15);
        assert_eq!((t.counts_at(15).misses, misses.get(25)), (1, 0));
    }

    /// With more than 512 buckets, a tag two windows ahead is more than
    /// `AHEAD` ahead and would pass for an older one: a caller held up that
    /// long must still leave the live bucket alone.
    #[test]
    fn a_caller_held_up_two_windows_leaves_a_live_bucket_alone() {
        let t = throttler(2.0, 1.0, Duration::from_secs(600), 600);
        let later = 5 + 2 * 600;
        t.latest.store(later, Ordering::Relaxed);
        t.record_at(later, false);
        t.record_at(later, true);
        t.record_at(5, false);
        t.record_at(5, true);
        assert_eq!(
            t.counts_at(later),
            Counts {
                accepts: 1,
                misses: 1
            }
        );
    }

    /// Threads record as fast as they can over a real window of 20 ms in
    /// 10 buckets, for at least three whole windows, so that buckets start
    /// afresh while others add to them. Every epoch still in the window at
    /// the end holds exactly the outcomes recorded in it: starting a bucket
    /// over never loses, and a late caller never adds to, a count of the
    /// window. (Real time, not the paused clock: that cannot span threads.)
    #[test]
    fn each_bucket_in_the_window_counts_exactly_while_buckets_roll_over() {
        use std::collections::HashMap;
        let t = std::sync::Arc::new(throttler(2.0, 1.0, Duration::from_millis(20), 10));
        let start = t.epoch_now();
        let threads: Vec<_> = (0..4)
            .map(|n| {
                let t = t.clone();
                std::thread::spawn(move || {
                    let mut recorded: HashMap<(u64, bool), u64> = HashMap::new();
                    for i in 0..10_000_000u64 {
                        let epoch = t.epoch_now();
                        let accepted = (i + n) % 3 != 0;
                        t.record_at(epoch, accepted);
                        *recorded.entry((epoch, accepted)).or_default() += 1;
                        if epoch >= start + 30 {
                            break;
                        }
                    }
                    recorded
                })
            })
            .collect();
        let mut recorded: HashMap<(u64, bool), u64> = HashMap::new();
        for thread in threads {
            for (key, n) in thread.join().unwrap() {
                *recorded.entry(key).or_default() += n;
            }
        }
        let last = t.latest.load(Ordering::Relaxed);
        assert!(last >= start + 30, "the window rolled over three times");
        for epoch in last - 9..=last {
            let bucket = t.bucket(epoch);
            let expected = |accepted| recorded.get(&(epoch, accepted)).copied().unwrap_or(0);
            assert_eq!(
                (bucket.accepts.get(epoch), bucket.misses.get(epoch)),
                (expected(true), expected(false)),
                "epoch {epoch}"
            );
        }
    }

    #[test]
    fn a_late_miss_keeps_its_mark() {
        let t = throttler(2.0, 1.0, Duration::from_secs(10), 10);
        t.record_at(0, false);
        t.record_at(12, false);
        t.record_at(3, false); // held up: the mark stays at the later one
        assert_eq!(t.last_miss.load(Ordering::Relaxed), 13);
        assert!(t.probability_at(21) > 0.0);
    }

    #[test]
    fn an_empty_window_with_no_padding_is_zero() {
        let counts = Counts {
            accepts: 0,
            misses: 0,
        };
        assert_eq!(sre_probability(counts, 2.0, 0.0), 0.0);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::{Arc, loom_model as model};
    use loom::thread;

    /// K = 2, uncapped, 10 s in 10 buckets.
    fn throttler() -> Arc<Throttler> {
        let settings = Settings {
            k: 2.0,
            padding: 1.0,
            max_probability: 1.0,
            min_requests: 0,
            window: Duration::from_secs(10),
            buckets: 10,
        };
        Arc::new(Throttler::new(Name::Static("t"), settings, 1))
    }

    /// A reader clearing a mark that has left the window, while a new miss
    /// is recorded: the new miss keeps its mark, so the next decision still
    /// reads the window.
    #[test]
    fn loom_a_miss_recorded_while_an_old_mark_is_cleared_keeps_its_mark() {
        model(|| {
            let t = throttler();
            // A miss in epoch 0, which has left the window by epoch 10.
            t.record_at(0, false);
            let recorder = {
                let t = t.clone();
                thread::spawn(move || t.record_at(10, false))
            };
            let _ = t.probability_at(10);
            recorder.join().unwrap();
            assert_eq!(t.last_miss.load(Ordering::Relaxed), 11);
            assert!(t.probability_at(10) > 0.0);
        });
    }

    /// Two misses in a bucket whose tag is left from a wrap of the tags
    /// (nobody has seen a later epoch): both start the count over at once,
    /// and both count.
    #[test]
    fn loom_two_restarts_of_a_wrapped_bucket_both_count() {
        model(|| {
            let t = throttler();
            // Bucket 3 holds epoch 13's tag; `latest` is still 0.
            t.record_at(13, false);
            let other = {
                let t = t.clone();
                thread::spawn(move || t.record_at(3, false))
            };
            t.record_at(3, false);
            other.join().unwrap();
            assert_eq!(t.counts_at(3).misses, 2);
        });
    }
}
