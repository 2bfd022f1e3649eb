//! The breaker's metrics (feature `metrics`): its state as one gauge per
//! state, its transitions, and its calls by outcome. Every handle is made
//! when the breaker is built, against the recorder installed then, so a
//! call costs one counter increment and no lookup. Without the feature this
//! is an empty type whose methods do nothing.

#[cfg(feature = "metrics")]
use std::sync::Arc;

use tokio::time::Instant;

use super::handle::State;
use crate::classify::Outcome;
#[cfg(feature = "metrics")]
use crate::metrics::Durations;

/// Every state, in the order of the gauges and transition counters.
#[cfg(feature = "metrics")]
const STATES: [State; 6] = [
    State::Closed,
    State::Open,
    State::HalfOpen,
    State::ForcedOpen,
    State::Disabled,
    State::MetricsOnly,
];

#[cfg(feature = "metrics")]
fn index(state: State) -> usize {
    match state {
        State::Closed => 0,
        State::Open => 1,
        State::HalfOpen => 2,
        State::ForcedOpen => 3,
        State::Disabled => 4,
        State::MetricsOnly => 5,
    }
}

/// A breaker's metric handles, shared by its state periods.
#[derive(Clone)]
pub(crate) struct BreakerMetrics {
    #[cfg(feature = "metrics")]
    handles: Arc<Handles>,
}

#[cfg(feature = "metrics")]
struct Handles {
    /// `palisade_circuit_breaker_state{name, state}`: 1 for the current
    /// state, 0 for every other. `None` for a keyed layer's breakers, which
    /// share one name: their states are not one series.
    state: Option<[metrics::Gauge; 6]>,
    /// `palisade_circuit_breaker_transitions_total{name, from, to}`.
    transitions: [[metrics::Counter; 6]; 6],
    /// `palisade_circuit_breaker_calls_total{name, outcome}`: success,
    /// failure, ignored, then not_permitted.
    calls: [metrics::Counter; 4],
    /// `palisade_circuit_breaker_call_duration_seconds{name, outcome}`:
    /// success, failure, ignored; recorded for calls the breaker times.
    durations: [Durations; 3],
}

impl BreakerMetrics {
    /// The handles for the breaker `name`, in state Closed.
    pub(crate) fn new(name: &str) -> Self {
        Self::with_states(name, true)
    }

    /// The handles a keyed layer's breakers share: their calls and
    /// transitions counted together under the layer's name, and no state
    /// gauges (one series cannot hold many breakers' states, and a series
    /// per key would grow without bound and show the keys).
    pub(crate) fn counts_only(name: &str) -> Self {
        Self::with_states(name, false)
    }

    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn with_states(name: &str, states: bool) -> Self {
        #[cfg(feature = "metrics")]
        {
            let name = name.to_owned();
            let state = states.then(|| {
                STATES.map(|state| {
                    metrics::gauge!(
                        "palisade_circuit_breaker_state",
                        "name" => name.clone(),
                        "state" => state.to_string()
                    )
                })
            });
            let transitions = STATES.map(|from| {
                STATES.map(|to| {
                    metrics::counter!(
                        "palisade_circuit_breaker_transitions_total",
                        "name" => name.clone(),
                        "from" => from.to_string(),
                        "to" => to.to_string()
                    )
                })
            });
            let durations = ["success", "failure", "ignored"].map(|outcome| {
                Durations::labelled(
                    "palisade_circuit_breaker_call_duration_seconds",
                    &name,
                    "outcome",
                    outcome,
                )
            });
            let calls = ["success", "failure", "ignored", "not_permitted"].map(|outcome| {
                metrics::counter!(
                    "palisade_circuit_breaker_calls_total",
                    "name" => name.clone(),
                    "outcome" => outcome
                )
            });
            for (i, gauge) in state.iter().flatten().enumerate() {
                gauge.set(if i == index(State::Closed) { 1.0 } else { 0.0 });
            }
            BreakerMetrics {
                handles: Arc::new(Handles {
                    state,
                    transitions,
                    calls,
                    durations,
                }),
            }
        }
        #[cfg(not(feature = "metrics"))]
        BreakerMetrics {}
    }

    /// A transition: counted, and the state gauges moved (the old one to 0
    /// first, so that no scrape sees two states at 1). Called under the
    /// breaker's transition lock, so transitions update them in order.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn transition(&self, from: State, to: State) {
        #[cfg(feature = "metrics")]
        {
            let handles = &self.handles;
            handles.transitions[index(from)][index(to)].increment(1);
            if let Some(state) = &handles.state {
                state[index(from)].set(0.0);
                state[index(to)].set(1.0);
            }
        }
    }

    /// A call's outcome, recorded by the period that admitted it, and its
    /// duration if the breaker timed it (`started`: it detects slow calls).
    /// Untimed calls are not timed for the histogram: two clock readings
    /// would cost more than the rest of the breaker's work.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn outcome(&self, outcome: Outcome, started: Option<Instant>) {
        #[cfg(feature = "metrics")]
        {
            let i = match outcome {
                Outcome::Success => 0,
                Outcome::Failure => 1,
                Outcome::Ignored => 2,
            };
            self.handles.calls[i].increment(1);
            if let Some(started) = started {
                self.handles.durations[i].since(started);
            }
        }
    }

    /// A call refused.
    #[inline]
    pub(crate) fn not_permitted(&self) {
        #[cfg(feature = "metrics")]
        self.handles.calls[3].increment(1);
    }
}
