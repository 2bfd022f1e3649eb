//! The state every [`Adaptive`](super::Adaptive) from one layer shares: the
//! calls in flight, the limit in force, and the algorithm that moves it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::aimd::Aimd;
use super::gradient::Gradient;
use crate::classify::Outcome;
use crate::clock::Clock;
use crate::error::BulkheadFull;
use crate::metrics::{Count, Level};
use crate::name::Name;
use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering, lock};

/// One finished call, as the algorithms see it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Sample {
    /// From `call` to the answer, on the crate's clock.
    pub(crate) latency: Duration,
    /// Calls in flight when this one was admitted, itself included.
    pub(crate) in_flight: usize,
    /// The dependency refused it or failed it as overloaded.
    pub(crate) dropped: bool,
}

/// The range a limit is held in, checked when the layer is built:
/// `1 <= min <= max`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    pub(crate) min: usize,
    pub(crate) max: usize,
}

impl Bounds {
    pub(crate) fn clamp(self, limit: usize) -> usize {
        limit.clamp(self.min, self.max)
    }
}

/// The algorithm a layer was built with, and its state.
#[derive(Clone, Debug)]
pub(crate) enum Estimator {
    Aimd(Aimd),
    Gradient(Gradient),
}

impl Estimator {
    fn limit(&self) -> usize {
        match self {
            Estimator::Aimd(aimd) => aimd.limit(),
            Estimator::Gradient(gradient) => gradient.limit(),
        }
    }

    fn update(&mut self, sample: &Sample) -> usize {
        match self {
            Estimator::Aimd(aimd) => aimd.update(sample),
            Estimator::Gradient(gradient) => gradient.update(sample),
        }
    }
}

/// The shared state, behind one `Arc` per layer value.
pub(crate) struct Limiter {
    name: Name,
    /// The limit in force, as whole calls: read by every admission,
    /// written after a sample moves it.
    limit: AtomicUsize,
    /// Slots held: calls in flight and slots reserved by ready services.
    in_flight: AtomicUsize,
    rejected: AtomicU64,
    bounds: Bounds,
    /// The algorithm's own state, updated once per finished call. A short
    /// mutex rather than atomics: Gradient2 reads and writes its estimate
    /// and its long-term average together, and a compare-and-swap loop over
    /// both would be no cheaper. Admission never takes it.
    estimator: Mutex<Estimator>,
    /// `palisade_adaptive_limit{name}`.
    limit_level: Level,
    /// `palisade_adaptive_in_flight{name}`.
    in_flight_level: Level,
    /// `palisade_adaptive_rejected_total{name}`.
    rejected_count: Count,
    /// Times each call: two readings per call, so the cheaper clock.
    clock: Clock,
}

/// One slot, held by a call; gives it back when dropped.
pub(crate) struct Permit {
    limiter: Arc<Limiter>,
    /// Calls in flight when this one was admitted, itself included.
    in_flight: usize,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.in_flight.fetch_sub(1, Ordering::Release);
        self.limiter.in_flight_level.down();
    }
}

impl Permit {
    /// Now, on the clock that times calls (nanoseconds).
    pub(crate) fn now(&self) -> u64 {
        self.limiter.clock.now()
    }

    /// The call admitted with this permit, started at `started` (from
    /// [`now`](Self::now)), ended with `outcome`: a success or a failure is
    /// a sample (a failure a drop); an ignored outcome is none. The slot
    /// comes back either way.
    pub(crate) fn finish(self, started: u64, outcome: Outcome) {
        let dropped = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::Ignored => return,
        };
        self.limiter.record(&Sample {
            latency: Duration::from_nanos(self.now().saturating_sub(started)),
            in_flight: self.in_flight,
            dropped,
        });
    }
}

impl Limiter {
    pub(crate) fn new(name: Name, bounds: Bounds, estimator: Estimator) -> Self {
        let limit = estimator.limit();
        let limit_level = Level::new("palisade_adaptive_limit", name.as_str());
        limit_level.set(limit as u64);
        Limiter {
            in_flight_level: Level::new("palisade_adaptive_in_flight", name.as_str()),
            rejected_count: Count::new("palisade_adaptive_rejected_total", name.as_str()),
            limit_level,
            name,
            limit: AtomicUsize::new(limit),
            in_flight: AtomicUsize::new(0),
            rejected: AtomicU64::new(0),
            bounds,
            estimator: Mutex::new(estimator),
            clock: Clock::new(),
        }
    }

    /// Takes a slot if fewer calls are in flight than the limit allows.
    #[inline]
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let mut in_flight = self.in_flight.load(Ordering::Relaxed);
        loop {
            // Read afresh each round: a limit that fell meanwhile holds.
            if in_flight >= self.limit.load(Ordering::Relaxed) {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                in_flight,
                in_flight + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => in_flight = actual,
            }
        }
        self.in_flight_level.up();
        Some(Permit {
            limiter: self.clone(),
            in_flight: in_flight + 1,
        })
    }

    /// Feeds one sample to the algorithm and publishes the limit it gives.
    fn record(&self, sample: &Sample) {
        let mut estimator = lock(&self.estimator);
        let limit = estimator.update(sample);
        // Stored under the lock, so that two samples finishing together
        // cannot leave the older limit in force.
        if self.limit.swap(limit, Ordering::Relaxed) != limit {
            self.limit_level.set(limit as u64);
        }
    }

    #[cold]
    pub(crate) fn count_rejection(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.rejected_count.add();
        tracing::debug!(
            target: "palisade::adaptive",
            name = %self.name,
            limit = self.limit(),
            "adaptive limit reached; call rejected"
        );
    }

    /// The error a refused call resolves to.
    pub(crate) fn rejection(&self) -> BulkheadFull {
        BulkheadFull::new(self.name.clone(), self.limit(), Duration::ZERO)
    }

    pub(crate) fn name(&self) -> &Name {
        &self.name
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    pub(crate) fn bounds(&self) -> Bounds {
        self.bounds
    }
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("name", &self.name)
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}
