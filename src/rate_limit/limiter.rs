//! The limiter a layer's services share: one of the algorithms, and
//! the clock they read.
//!
//! Every algorithm works in nanoseconds since the limiter was built, read
//! from the crate's clock (`crate::clock`): tokio's while it is paused, so
//! tests step a limiter through time exactly as they step timeouts, and
//! with the `fast-clock` feature the CPU's counter otherwise, as a clock
//! read is most of a check's cost.

use std::time::Duration;

use super::gcra::Gcra;
use super::layer::Kind;
use super::log::WindowLog;
use super::segmented::SegmentedWindow;
use super::window::WindowCounter;

/// What an algorithm says to a request for permits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Admitted,
    /// Not now; they would fit after `wait`, if nothing else took them.
    Refused {
        wait: Duration,
    },
    /// More permits than the limiter ever grants at once.
    TooLarge,
}

/// A limiter's state as the rate-limit headers report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    pub(crate) reset: Duration,
}

pub(crate) use crate::clock::{Clock, nanos};

/// The settings an algorithm starts from: the layer's, or a key's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Quota {
    pub(crate) kind: Kind,
    pub(crate) limit: u64,
    pub(crate) window: Duration,
    /// GCRA only.
    pub(crate) burst: u64,
    /// Segments per window: a segmented window's; 1 for every other kind.
    pub(crate) segments: u32,
}

#[derive(Debug)]
pub(crate) enum Algorithm {
    Counter(WindowCounter),
    Log(WindowLog),
    Gcra(Gcra),
    /// A segmented window of one segment.
    Fixed(SegmentedWindow),
    Segmented(SegmentedWindow),
}

impl Algorithm {
    pub(crate) fn new(quota: Quota) -> Self {
        match quota.kind {
            Kind::SlidingWindow => {
                Algorithm::Counter(WindowCounter::new(quota.limit, quota.window))
            }
            Kind::SlidingLog => Algorithm::Log(WindowLog::new(quota.limit, quota.window)),
            Kind::Gcra => Algorithm::Gcra(Gcra::new(quota.limit, quota.window, quota.burst)),
            Kind::FixedWindow => {
                Algorithm::Fixed(SegmentedWindow::new(quota.limit, quota.window, 1))
            }
            Kind::SegmentedWindow => Algorithm::Segmented(SegmentedWindow::new(
                quota.limit,
                quota.window,
                quota.segments,
            )),
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        match self {
            Algorithm::Counter(_) => Kind::SlidingWindow,
            Algorithm::Log(_) => Kind::SlidingLog,
            Algorithm::Gcra(_) => Kind::Gcra,
            Algorithm::Fixed(_) => Kind::FixedWindow,
            Algorithm::Segmented(_) => Kind::SegmentedWindow,
        }
    }

    #[inline]
    pub(crate) fn acquire(&self, now: u64, n: u64) -> Decision {
        match self {
            Algorithm::Counter(a) => a.acquire(now, n),
            Algorithm::Log(a) => a.acquire(now, n),
            Algorithm::Gcra(a) => a.acquire(now, n),
            Algorithm::Fixed(a) | Algorithm::Segmented(a) => a.acquire(now, n),
        }
    }

    pub(crate) fn snapshot(&self, now: u64) -> Snapshot {
        match self {
            Algorithm::Counter(a) => a.snapshot(now),
            Algorithm::Log(a) => a.snapshot(now),
            Algorithm::Gcra(a) => a.snapshot(now),
            Algorithm::Fixed(a) | Algorithm::Segmented(a) => a.snapshot(now),
        }
    }

    /// Whether it would decide exactly as a fresh one would from `now` on:
    /// then a keyed limiter may drop it.
    pub(crate) fn is_fresh(&self, now: u64) -> bool {
        let s = self.snapshot(now);
        s.remaining == s.limit && s.reset.is_zero()
    }

    /// The limit and its window (a GCRA limiter's rate and period).
    pub(crate) fn limit(&self) -> (u64, Duration) {
        match self {
            Algorithm::Counter(a) => a.settings(),
            Algorithm::Log(a) => (a.limit(), a.window()),
            Algorithm::Gcra(a) => {
                let settings = a.settings();
                (settings.rate, settings.period)
            }
            Algorithm::Fixed(a) | Algorithm::Segmented(a) => a.settings(),
        }
    }

    /// Segments per window: a segmented window's, 1 for the others.
    pub(crate) fn segments(&self) -> u32 {
        match self {
            Algorithm::Segmented(a) => a.segments(),
            _ => 1,
        }
    }

    /// Changes the limit at `now`; a GCRA limiter keeps its burst.
    pub(crate) fn set_limit(&self, limit: u64, window: Duration, now: u64) {
        match self {
            Algorithm::Counter(a) => a.set(limit, window),
            Algorithm::Log(a) => a.set(limit, window),
            Algorithm::Gcra(a) => a.set_rate(limit, window, now),
            Algorithm::Fixed(a) | Algorithm::Segmented(a) => a.set(limit, window, now),
        }
    }

    /// Changes a GCRA limiter's burst at `now`; `false` for the others.
    pub(crate) fn set_burst(&self, burst: u64, now: u64) -> bool {
        match self {
            Algorithm::Gcra(a) => {
                a.set_burst(burst, now);
                true
            }
            _ => false,
        }
    }
}

/// An algorithm and its clock.
#[derive(Debug)]
pub(crate) struct Limiter {
    clock: Clock,
    pub(crate) algorithm: Algorithm,
}

impl Limiter {
    pub(crate) fn new(algorithm: Algorithm) -> Self {
        Limiter {
            clock: Clock::new(),
            algorithm,
        }
    }

    #[inline]
    #[cfg_attr(feature = "metrics", allow(dead_code))] // then the state is read too
    pub(crate) fn acquire(&self, n: u64) -> Decision {
        self.algorithm.acquire(self.clock.now(), n)
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        self.algorithm.snapshot(self.clock.now())
    }

    /// [`acquire`](Self::acquire), with the state right after it, read at
    /// the same instant.
    pub(crate) fn acquire_and_snapshot(&self, n: u64) -> (Decision, Snapshot) {
        let now = self.clock.now();
        (self.algorithm.acquire(now, n), self.algorithm.snapshot(now))
    }

    pub(crate) fn now(&self) -> u64 {
        self.clock.now()
    }
}
