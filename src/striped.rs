//! Counters that many threads add to without sharing a cache line.
//!
//! A statistic counted on every call (a handle's "requests that succeeded")
//! is written far more often than it is read. Kept in one atomic, every
//! addition from another core first pulls the cache line over: on a 2-core
//! VM, about a hundred nanoseconds a call once two threads call at the same
//! time, more than the rest of a layer's work. Here each thread adds to one
//! of a few stripes, each on cache lines of its own, and a reader adds the
//! stripes up. A reading is not a snapshot: additions made while it runs
//! may or may not be in it, as with one relaxed atomic per counter.

use std::cell::Cell;

use crate::sync::{AtomicU64, CachePadded, Ordering};

/// Stripes per counter set: enough that a few busy threads rarely share
/// one; more would only make readings slower and the set bigger.
const STRIPES: usize = 8;

/// `N` counters, striped by thread: each thread's share on cache lines of
/// its own.
#[derive(Debug)]
pub(crate) struct StripedCounts<const N: usize> {
    stripes: Box<[CachePadded<[AtomicU64; N]>; STRIPES]>,
}

impl<const N: usize> StripedCounts<N> {
    pub(crate) fn new() -> Self {
        StripedCounts {
            stripes: Box::new(std::array::from_fn(|_| {
                CachePadded(std::array::from_fn(|_| AtomicU64::new(0)))
            })),
        }
    }

    /// Adds one to counter `i` (`i < N`), on this thread's stripe.
    #[inline]
    pub(crate) fn add_one(&self, i: usize) {
        if let Some(counter) = self.stripes[stripe()].get(i) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counter `i`, all stripes added up.
    pub(crate) fn get(&self, i: usize) -> u64 {
        self.stripes
            .iter()
            .filter_map(|stripe| stripe.get(i))
            .map(|counter| counter.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// This thread's stripe: handed out in turn as threads first count, so
/// that up to `STRIPES` threads each get one of their own.
#[inline]
fn stripe() -> usize {
    // std's atomic: a static needs a const constructor, which loom's lacks.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|stripe| {
        let mut index = stripe.get();
        if index == usize::MAX {
            index = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % STRIPES;
            stripe.set(index);
        }
        index
    })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up() {
        let counts = StripedCounts::<2>::new();
        std::thread::scope(|scope| {
            for t in 0..12 {
                let counts = &counts;
                scope.spawn(move || {
                    for _ in 0..1000 {
                        counts.add_one(t % 2);
                    }
                });
            }
        });
        assert_eq!(counts.get(0), 6000);
        assert_eq!(counts.get(1), 6000);
        // Out of range: ignored, reads as nothing.
        counts.add_one(2);
        assert_eq!(counts.get(2), 0);
    }

    #[test]
    fn a_thread_keeps_its_stripe() {
        std::thread::spawn(|| {
            let first = stripe();
            assert!(first < STRIPES);
            assert_eq!(stripe(), first);
        })
        .join()
        .unwrap();
    }
}
