//! The probe slots of a half-open period: at most `limit` calls admitted at
//! once, under any contention, and a tally of what they reported.
//!
//! A slot is taken with a compare-and-swap capped at the limit, so no race
//! lets one probe too many through. A probe that reports an outcome keeps its
//! slot (the period judges exactly `limit` outcomes); a probe that is dropped
//! unfinished, or whose outcome is ignored, gives its slot back so another
//! caller can take its place.
//!
//! The tally packs three counters into one word, so each report is one
//! `fetch_add` that returns the tally before and after it: the report that
//! settles the period sees the verdict change, and only that report acts.

use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Bits per field of the packed tally.
const FIELD_BITS: u32 = 21;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;

/// The most probes a half-open period may admit (each tally field must hold
/// the limit).
pub(crate) const MAX_PROBES: u32 = FIELD_MASK as u32;

/// What the probes of one half-open period have reported so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) reported: u32,
    pub(crate) failures: u32,
    pub(crate) slow: u32,
}

impl Tally {
    fn unpack(word: u64) -> Self {
        Tally {
            reported: (word & FIELD_MASK) as u32,
            failures: ((word >> FIELD_BITS) & FIELD_MASK) as u32,
            slow: ((word >> (2 * FIELD_BITS)) & FIELD_MASK) as u32,
        }
    }
}

pub(crate) struct Probes {
    limit: u32,
    // Slots held: probes in flight plus probes that reported.
    taken: AtomicU32,
    tally: AtomicU64,
}

impl Probes {
    /// `limit` is at least 1 and at most [`MAX_PROBES`] (the builder checks).
    pub(crate) fn new(limit: u32) -> Self {
        Probes {
            limit: limit.clamp(1, MAX_PROBES),
            taken: AtomicU32::new(0),
            tally: AtomicU64::new(0),
        }
    }

    pub(crate) fn limit(&self) -> u32 {
        self.limit
    }

    /// Takes a slot if one is free.
    pub(crate) fn try_take(&self) -> bool {
        let mut taken = self.taken.load(Ordering::Acquire);
        while taken < self.limit {
            match self.taken.compare_exchange_weak(
                taken,
                taken + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => taken = actual,
            }
        }
        false
    }

    /// Whether a slot is free right now (another caller may take it first).
    pub(crate) fn has_free_slot(&self) -> bool {
        self.taken.load(Ordering::Acquire) < self.limit
    }

    /// Gives back a slot whose probe will never report.
    pub(crate) fn give_back(&self) {
        self.taken.fetch_sub(1, Ordering::AcqRel);
    }

    /// Records one probe's outcome (its slot stays taken); returns the tally
    /// before and after.
    pub(crate) fn report(&self, failure: bool, slow: bool) -> (Tally, Tally) {
        let add = 1 | u64::from(failure) << FIELD_BITS | u64::from(slow) << (2 * FIELD_BITS);
        let before = self.tally.fetch_add(add, Ordering::AcqRel);
        (Tally::unpack(before), Tally::unpack(before + add))
    }

    pub(crate) fn tally(&self) -> Tally {
        Tally::unpack(self.tally.load(Ordering::Acquire))
    }

    /// Probes admitted that have not reported yet.
    pub(crate) fn in_flight(&self) -> u32 {
        let taken = self.taken.load(Ordering::Acquire);
        taken.saturating_sub(self.tally().reported)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn slots_stop_at_the_limit_and_come_back() {
        let probes = Probes::new(2);
        assert!(probes.try_take());
        assert!(probes.try_take());
        assert!(!probes.try_take(), "a third probe while two are out");
        probes.give_back();
        assert!(probes.try_take(), "a slot given back can be taken again");
        assert_eq!(probes.in_flight(), 2);
    }

    #[test]
    fn a_report_keeps_its_slot_and_shows_the_tally_before_and_after() {
        let probes = Probes::new(3);
        assert!(probes.try_take());
        let (before, after) = probes.report(true, true);
        assert_eq!(before, Tally::default());
        let one_slow_failure = Tally {
            reported: 1,
            failures: 1,
            slow: 1,
        };
        assert_eq!(after, one_slow_failure);
        assert!(probes.try_take());
        assert!(probes.try_take());
        assert!(
            !probes.try_take(),
            "the reported probe still holds its slot"
        );
        assert_eq!(probes.in_flight(), 2);
    }

    #[test]
    fn the_tally_holds_the_largest_limit() {
        let probes = Probes::new(MAX_PROBES);
        for _ in 0..MAX_PROBES {
            probes.report(true, true);
        }
        let full = Tally {
            reported: MAX_PROBES,
            failures: MAX_PROBES,
            slow: MAX_PROBES,
        };
        assert_eq!(probes.tally(), full, "no field spills into the next");
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::circuit_breaker::period::{Thresholds, Verdict, to_ppm};
    use crate::sync::loom_model as model;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicUsize;
    use loom::thread;

    #[test]
    fn loom_never_more_probes_than_the_limit() {
        model(|| {
            let probes = Arc::new(Probes::new(1));
            let out = Arc::new(AtomicUsize::new(0));
            let threads: Vec<_> = (0..3)
                .map(|i| {
                    let (probes, out) = (probes.clone(), out.clone());
                    thread::spawn(move || {
                        if probes.try_take() {
                            let holders = out.fetch_add(1, Ordering::SeqCst) + 1;
                            assert_eq!(holders, 1, "two probes out at once");
                            out.fetch_sub(1, Ordering::SeqCst);
                            // One is cancelled (gives its slot back), the
                            // others report (and keep it).
                            if i == 0 {
                                probes.give_back();
                            } else {
                                probes.report(false, false);
                            }
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(probes.in_flight(), 0, "no slot left dangling");
            assert!(probes.tally().reported <= 1);
        });
    }

    #[test]
    fn loom_exactly_one_report_settles_the_period() {
        // Two probes at 50 %: whichever way the reports interleave, exactly
        // one of them sees the verdict change, and only that one acts.
        model(|| {
            let thresholds = Thresholds {
                failure_ppm: to_ppm(0.5),
                slow: None,
                minimum_calls: 1,
                consecutive_failures: None,
            };
            let probes = Arc::new(Probes::new(2));
            assert!(probes.try_take() && probes.try_take());
            let settled = Arc::new(AtomicUsize::new(0));
            let threads: Vec<_> = [true, false]
                .into_iter()
                .map(|failure| {
                    let (probes, settled) = (probes.clone(), settled.clone());
                    thread::spawn(move || {
                        let (before, after) = probes.report(failure, false);
                        let changed = thresholds.over_probes(before, 2) == Verdict::Pending
                            && thresholds.over_probes(after, 2) != Verdict::Pending;
                        if changed {
                            settled.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(settled.load(Ordering::SeqCst), 1);
        });
    }
}
