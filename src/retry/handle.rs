//! [`Handle`]: what a retry layer has done.

use std::sync::Arc;
use std::time::Duration;

use super::layer::Shared;
use crate::metrics::Count;
use crate::striped::StripedCounts;
use crate::sync::{AtomicU64, Ordering};

/// A handle on a retry layer's counters, shared by every service it builds.
#[derive(Clone, Debug)]
pub struct Handle {
    shared: Arc<Shared>,
}

/// The counts of a retry layer since it was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counts {
    /// Requests whose first attempt succeeded.
    pub succeeded_without_retry: u64,
    /// Requests that succeeded on a retry.
    pub succeeded_after_retry: u64,
    /// Requests that failed (or were ignored by the classifier) on their
    /// first attempt and were not retried.
    pub failed_without_retry: u64,
    /// Requests that were retried and still failed.
    pub failed_after_retry: u64,
    /// Retries made.
    pub retries: u64,
    /// Retries the budget refused (the last result was returned as is).
    pub budget_refusals: u64,
}

/// A request's outcomes, as labels: in the order of `Counters::finished`.
const OUTCOMES: [&str; 4] = [
    "succeeded_without_retry",
    "succeeded_after_retry",
    "failed_without_retry",
    "failed_after_retry",
];

/// The layer's counters, and their metrics: `palisade_retry_requests_total
/// {name, outcome}`, `palisade_retry_retries_total{name}` and
/// `palisade_retry_budget_refusals_total{name}`.
#[derive(Debug)]
pub(crate) struct Counters {
    /// Requests by outcome, in the order of `finished`: counted on every
    /// request, so striped by thread.
    outcomes: StripedCounts<4>,
    pub(crate) retries: AtomicU64,
    pub(crate) budget_refusals: AtomicU64,
    /// In the order of `finished`'s outcomes.
    requests: [Count; 4],
    retried: Count,
    refused_by_budget: Count,
}

impl Counters {
    pub(crate) fn new(name: &str) -> Self {
        let requests = OUTCOMES.map(|outcome| {
            Count::labelled("palisade_retry_requests_total", name, "outcome", outcome)
        });
        Counters {
            outcomes: StripedCounts::new(),
            retries: AtomicU64::new(0),
            budget_refusals: AtomicU64::new(0),
            requests,
            retried: Count::new("palisade_retry_retries_total", name),
            refused_by_budget: Count::new("palisade_retry_budget_refusals_total", name),
        }
    }

    /// Counts a request's end; returns its outcome's label.
    #[inline]
    pub(crate) fn finished(&self, succeeded: bool, retried: bool) -> &'static str {
        let i = match (succeeded, retried) {
            (true, false) => 0,
            (true, true) => 1,
            (false, false) => 2,
            (false, true) => 3,
        };
        self.outcomes.add_one(i);
        self.requests[i].add();
        OUTCOMES[i]
    }

    /// Counts a retry made.
    pub(crate) fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.retried.add();
    }

    /// Counts a retry the budget refused.
    pub(crate) fn budget_refusal(&self) {
        self.budget_refusals.fetch_add(1, Ordering::Relaxed);
        self.refused_by_budget.add();
    }
}

/// A retry about to be made, as reported to an `on_retry` listener.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct RetryEvent<'a> {
    /// The layer's name.
    pub name: &'a str,
    /// Which retry this is: 1 for the second attempt.
    pub retry: u32,
    /// How long it waits first.
    pub delay: Duration,
    /// The wait a retry-after in the failed result asked for, if any.
    pub retry_after: Option<Duration>,
}

impl Handle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Handle { shared }
    }

    /// The layer's name.
    pub fn name(&self) -> &str {
        self.shared.name.as_str()
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        let c = &self.shared.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            succeeded_without_retry: c.outcomes.get(0),
            succeeded_after_retry: c.outcomes.get(1),
            failed_without_retry: c.outcomes.get(2),
            failed_after_retry: c.outcomes.get(3),
            retries: load(&c.retries),
            budget_refusals: load(&c.budget_refusals),
        }
    }
}
