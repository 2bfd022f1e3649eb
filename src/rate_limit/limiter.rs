//! The limiter a layer's services share: one of the three algorithms, and
//! the clock they read.
//!
//! # The clock
//!
//! Every algorithm works in nanoseconds since the limiter was built, read
//! from `tokio::time::Instant`, so tokio's paused clock drives a limiter in
//! tests exactly as it drives timeouts. The price is the clock read itself:
//! 17 to 18 ns per call on the development VM (the same as
//! `std::time::Instant::now()`, which tokio's clock is outside tests), most
//! of a check's cost. A TSC clock (governor's default, quanta) costs about
//! 7 ns there, but runs on while tokio's clock is paused, so a test could
//! not step a limiter through time; palisade keeps one clock.

use std::time::Duration;

use tokio::time::Instant;

use super::gcra::Gcra;
use super::log::WindowLog;
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

/// `d` in nanoseconds, saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[derive(Debug)]
pub(crate) enum Algorithm {
    Counter(WindowCounter),
    Log(WindowLog),
    Gcra(Gcra),
}

/// An algorithm and the origin of its time.
#[derive(Debug)]
pub(crate) struct Limiter {
    origin: Instant,
    pub(crate) algorithm: Algorithm,
}

impl Limiter {
    pub(crate) fn new(algorithm: Algorithm) -> Self {
        Limiter {
            origin: Instant::now(),
            algorithm,
        }
    }

    /// Now, in the algorithms' nanoseconds.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.origin))
    }

    #[inline]
    pub(crate) fn acquire(&self, n: u64) -> Decision {
        let now = self.now();
        match &self.algorithm {
            Algorithm::Counter(a) => a.acquire(now, n),
            Algorithm::Log(a) => a.acquire(now, n),
            Algorithm::Gcra(a) => a.acquire(now, n),
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let now = self.now();
        match &self.algorithm {
            Algorithm::Counter(a) => a.snapshot(now),
            Algorithm::Log(a) => a.snapshot(now),
            Algorithm::Gcra(a) => a.snapshot(now),
        }
    }
}
