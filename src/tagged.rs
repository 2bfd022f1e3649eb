//! [`TaggedCount`]: a count that belongs to one epoch (a slot of a time
//! window), in one atomic word, so that moving on to a new epoch is a single
//! compare-and-swap rather than a reset other threads must wait for. The
//! retry budget's windowed slots and the sliding-window rate limiter are
//! built from it, and stay lock-free.

use crate::sync::{AtomicU64, Ordering};

/// Bits of an epoch kept in a tag. A count idle for exactly a multiple of
/// 2^24 epochs (19 days of 100 ms epochs) would pass for current; each user
/// says what that costs it.
pub(crate) const TAG_BITS: u32 = 24;
const COUNT_BITS: u32 = 64 - TAG_BITS;
/// The largest count: 2^40 - 1.
pub(crate) const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
/// How far ahead (in epochs) a tag may be and still be taken for a newer
/// epoch than a held-up thread's, rather than an older one wrapped around.
/// A count idle since a tag up to this far ahead of the current one refuses
/// updates until the current tag passes it.
pub(crate) const AHEAD: u64 = 1 << 10;

/// Why [`TaggedCount::update`] changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unchanged {
    /// The update function declined.
    Declined,
    /// The count belongs to a later epoch (or looks as if it does).
    Ahead,
}

/// A count in the low 40 bits, the epoch it counts in the high 24.
#[derive(Debug)]
pub(crate) struct TaggedCount(AtomicU64);

impl Default for TaggedCount {
    fn default() -> Self {
        TaggedCount(AtomicU64::new(0))
    }
}

impl TaggedCount {
    fn tag(epoch: u64) -> u64 {
        epoch & TAG_MASK
    }

    /// Replaces the count of `epoch` with what `f` makes of it (an older
    /// epoch's count reads as 0), or leaves it if `f` returns `None`. A
    /// thread held up past the next epoch of this count changes nothing.
    /// Returns the count `f` accepted. The result saturates at
    /// [`COUNT_MAX`].
    #[inline]
    pub(crate) fn update(
        &self,
        epoch: u64,
        mut f: impl FnMut(u64) -> Option<u64>,
    ) -> Result<u64, Unchanged> {
        let tag = Self::tag(epoch);
        let mut why = Unchanged::Declined;
        let mut accepted = 0;
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                let held = word >> COUNT_BITS;
                // A count a little ahead of `tag` is a newer epoch's, which a
                // held-up thread must leave alone; anything else is older (the
                // tags wrap, so "ahead" has to be a short distance).
                let count = match held.wrapping_sub(tag) & TAG_MASK {
                    0 => word & COUNT_MAX,
                    ahead if ahead <= AHEAD => {
                        why = Unchanged::Ahead;
                        return None;
                    }
                    _ => 0,
                };
                why = Unchanged::Declined;
                accepted = count;
                f(count).map(|new| tag << COUNT_BITS | new.min(COUNT_MAX))
            })
            .map(|_| accepted)
            .map_err(|_| why)
    }

    /// Adds `amount` in `epoch`; `false` if a newer epoch holds the count.
    #[inline]
    #[cfg_attr(not(any(feature = "rate-limit", feature = "retry")), allow(dead_code))]
    pub(crate) fn add(&self, epoch: u64, amount: u64) -> bool {
        self.update(epoch, |count| Some(count.saturating_add(amount)))
            .is_ok()
    }

    /// Starts `epoch` afresh at 0, whatever the count held: for a holder
    /// that knows the held tag is stale (left from a wrap of the tags, or
    /// from before its epochs were renumbered) rather than newer.
    #[cold]
    #[cfg_attr(not(feature = "rate-limit"), allow(dead_code))]
    pub(crate) fn restart(&self, epoch: u64) {
        self.0
            .store(Self::tag(epoch) << COUNT_BITS, Ordering::Relaxed);
    }

    /// Adds `amount` in `epoch` whatever tag the count holds: a count of
    /// `epoch` grows, any other tag (taken for stale, as by
    /// [`restart`](Self::restart)) starts over at `amount`. One
    /// compare-and-swap, so two holders restarting the same epoch at once
    /// both count, where a restart followed by an add could lose one.
    #[cold]
    #[cfg_attr(not(feature = "throttle"), allow(dead_code))]
    pub(crate) fn restart_add(&self, epoch: u64, amount: u64) {
        let tag = Self::tag(epoch);
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                let count = if word >> COUNT_BITS == tag {
                    word & COUNT_MAX
                } else {
                    0
                };
                Some(tag << COUNT_BITS | count.saturating_add(amount).min(COUNT_MAX))
            });
    }

    /// The count if it belongs to `epoch`, else 0.
    #[inline]
    pub(crate) fn get(&self, epoch: u64) -> u64 {
        let word = self.0.load(Ordering::Relaxed);
        if word >> COUNT_BITS == Self::tag(epoch) {
            word & COUNT_MAX
        } else {
            0
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_tagged_count_starts_over_in_a_new_epoch_and_ignores_a_late_one() {
        let c = TaggedCount::default();
        assert!(c.add(5, 7));
        assert!(c.add(5, 3));
        assert_eq!((c.get(5), c.get(15)), (10, 0));
        assert!(c.add(15, 1), "a newer epoch drops the old count");
        assert_eq!((c.get(5), c.get(15)), (0, 1));
        assert!(
            !c.add(5, 100),
            "a held-up thread's older epoch adds nothing"
        );
        assert_eq!(c.get(15), 1);

        // Across the tag's wrap, the order still holds.
        let last = (1 << TAG_BITS) - 1;
        let w = TaggedCount::default();
        assert!(w.add(last - AHEAD - 1, 1), "far behind an untouched count");
        assert!(w.add(last, 2));
        assert!(w.add(last + 10, 4), "epoch 2^24 + 9 follows 2^24 - 1");
        assert_eq!((w.get(last), w.get(last + 10)), (0, 4));
        assert!(!w.add(last, 1));

        // A count saturates instead of spilling into the tag.
        let full = TaggedCount::default();
        assert!(full.add(3, COUNT_MAX));
        assert!(full.add(3, 5));
        assert_eq!(full.get(3), COUNT_MAX);
    }

    #[test]
    fn an_update_sees_the_epochs_count_and_may_decline() {
        let c = TaggedCount::default();
        assert_eq!(c.update(4, |n| (n < 2).then_some(n + 1)), Ok(0));
        assert_eq!(c.update(4, |n| (n < 2).then_some(n + 1)), Ok(1));
        assert_eq!(
            c.update(4, |n| (n < 2).then_some(n + 1)),
            Err(Unchanged::Declined)
        );
        assert_eq!(c.get(4), 2);
        assert_eq!(c.update(5, |n| (n < 2).then_some(n + 1)), Ok(0));
        assert_eq!(c.get(5), 1);
        assert_eq!(c.update(3, |n| Some(n + 1)), Err(Unchanged::Ahead));
        c.restart(3);
        assert_eq!((c.get(3), c.get(5)), (0, 0));
        assert_eq!(c.update(3, |n| Some(n + 1)), Ok(0));
    }

    #[test]
    fn restart_add_starts_a_stale_tag_over_and_adds_to_its_own() {
        let c = TaggedCount::default();
        assert!(c.add(5, 3));
        c.restart_add(3, 2);
        assert_eq!((c.get(3), c.get(5)), (2, 0), "a tag ahead starts over");
        c.restart_add(3, 1);
        assert_eq!(c.get(3), 3, "its own tag's count grows");
        c.restart_add(3, COUNT_MAX);
        assert_eq!(c.get(3), COUNT_MAX, "and saturates");
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::{Arc, loom_model as model};
    use loom::thread;

    #[test]
    fn loom_a_new_epoch_wins_over_a_late_add_and_same_epoch_adds_all_count() {
        model(|| {
            let count = Arc::new(TaggedCount::default());
            let late = {
                let count = count.clone();
                thread::spawn(move || count.add(0, 1))
            };
            let same = {
                let count = count.clone();
                thread::spawn(move || count.add(10, 1))
            };
            let added_now = count.add(10, 1);
            let added_late = late.join().unwrap();
            assert!(
                same.join().unwrap() && added_now,
                "the newest epoch always adds"
            );
            // Epoch 0's add lands only before epoch 10 starts, and is then
            // dropped with it.
            assert_eq!(count.get(10), 2, "late add landed: {added_late}");
            assert_eq!(count.get(0), 0);
        });
    }
}
