//! The throttle's [`Handle`] and its [`Snapshot`].

use std::sync::Arc;

use super::throttler::{Throttler, probability};

/// A handle on a throttle, shared by every service its layer builds: what
/// the window holds and how likely a call is to be refused.
#[derive(Clone, Debug)]
pub struct Handle {
    throttler: Arc<Throttler>,
}

/// A throttle's window, read at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Requests in the window: calls that reached the upstream and were
    /// classified a success or a failure, and calls refused here.
    pub requests: u64,
    /// Requests in the window the upstream accepted (classified a success).
    pub accepts: u64,
    /// The probability that the next call is refused:
    /// max(0, (requests − K × accepts) / (requests + padding)).
    pub probability: f64,
    /// Calls refused here since the layer was built (not only those in the
    /// window).
    pub rejected: u64,
}

impl Handle {
    pub(crate) fn new(throttler: Arc<Throttler>) -> Self {
        Handle { throttler }
    }

    /// The throttle's name.
    pub fn name(&self) -> &str {
        self.throttler.name().as_str()
    }

    /// The window now. Reads the clock and sums the window's buckets.
    pub fn snapshot(&self) -> Snapshot {
        let t = &self.throttler;
        let counts = t.counts_at(t.epoch_now());
        let settings = t.settings();
        Snapshot {
            requests: counts.requests(),
            accepts: counts.accepts,
            probability: probability(counts, settings),
            rejected: t.rejected(),
        }
    }

    /// Requests in the window now; see [`Snapshot::requests`].
    pub fn requests(&self) -> u64 {
        self.snapshot().requests
    }

    /// Accepts in the window now; see [`Snapshot::accepts`].
    pub fn accepts(&self) -> u64 {
        self.snapshot().accepts
    }

    /// The probability that the next call is refused, now.
    pub fn probability(&self) -> f64 {
        self.snapshot().probability
    }

    /// Calls refused here since the layer was built.
    pub fn rejected(&self) -> u64 {
        self.throttler.rejected()
    }
}
