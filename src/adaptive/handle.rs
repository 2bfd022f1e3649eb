//! [`Handle`]: reads an adaptive limiter's state.

use std::fmt;
use std::sync::Arc;

use super::limiter::Limiter;

/// Reads an adaptive limiter's state: the limit in force, the calls in
/// flight, and how many calls it refused.
///
/// Get one from [`AdaptiveLayer::handle`](super::AdaptiveLayer::handle). It
/// is a cheap clone of the shared state, so it sees every service the layer
/// built.
#[derive(Clone)]
pub struct Handle {
    limiter: Arc<Limiter>,
}

impl Handle {
    pub(crate) fn new(limiter: Arc<Limiter>) -> Self {
        Handle { limiter }
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        self.limiter.name().as_str()
    }

    /// The limit in force: a call is admitted while fewer than this many
    /// are in flight. It changes only when a call finishes.
    pub fn limit(&self) -> usize {
        self.limiter.limit()
    }

    /// The configured lowest limit.
    pub fn min_limit(&self) -> usize {
        self.limiter.bounds().min
    }

    /// The configured highest limit.
    pub fn max_limit(&self) -> usize {
        self.limiter.bounds().max
    }

    /// Slots held: calls in flight, plus slots reserved by services that
    /// are ready but have not been called yet. After the limit falls this
    /// may exceed it for a while: running calls are never cut short.
    pub fn in_flight(&self) -> usize {
        self.limiter.in_flight()
    }

    /// Calls refused since the layer was built.
    pub fn rejected(&self) -> u64 {
        self.limiter.rejected()
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("name", &self.name())
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .field("rejected", &self.rejected())
            .finish()
    }
}
