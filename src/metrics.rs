//! Metric handles for the layers (feature `metrics`): made once, when a
//! layer is built, against the recorder installed then, so that a call
//! costs one update and no lookup. Without the feature they are empty and
//! their methods do nothing.

/// A counter, such as `palisade_bulkhead_rejected_total{name}`.
#[derive(Clone)]
pub(crate) struct Count {
    #[cfg(feature = "metrics")]
    counter: metrics::Counter,
}

impl Count {
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn new(series: &'static str, name: &str) -> Self {
        Count {
            #[cfg(feature = "metrics")]
            counter: metrics::counter!(series, "name" => name.to_owned()),
        }
    }

    /// A counter with one more label beside the name.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    #[cfg_attr(not(any(feature = "retry", feature = "fallback")), allow(dead_code))]
    pub(crate) fn labelled(
        series: &'static str,
        name: &str,
        label: &'static str,
        value: &'static str,
    ) -> Self {
        Count {
            #[cfg(feature = "metrics")]
            counter: metrics::counter!(series, "name" => name.to_owned(), label => value),
        }
    }

    #[inline]
    pub(crate) fn add(&self) {
        #[cfg(feature = "metrics")]
        self.counter.increment(1);
    }
}

/// A gauge that goes up and down, such as
/// `palisade_bulkhead_in_use{name}`.
#[cfg(any(feature = "adaptive", feature = "bulkhead", feature = "rate-limit"))]
#[derive(Clone)]
pub(crate) struct Level {
    #[cfg(feature = "metrics")]
    gauge: metrics::Gauge,
}

#[cfg(any(feature = "adaptive", feature = "bulkhead", feature = "rate-limit"))]
impl Level {
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn new(series: &'static str, name: &str) -> Self {
        Level {
            #[cfg(feature = "metrics")]
            gauge: {
                let gauge = metrics::gauge!(series, "name" => name.to_owned());
                gauge.set(0.0);
                gauge
            },
        }
    }

    #[inline]
    #[cfg_attr(
        not(any(feature = "adaptive", feature = "bulkhead", feature = "redis")),
        allow(dead_code)
    )]
    pub(crate) fn up(&self) {
        #[cfg(feature = "metrics")]
        self.gauge.increment(1.0);
    }

    #[inline]
    #[cfg_attr(
        not(any(feature = "adaptive", feature = "bulkhead", feature = "redis")),
        allow(dead_code)
    )]
    pub(crate) fn down(&self) {
        #[cfg(feature = "metrics")]
        self.gauge.decrement(1.0);
    }

    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    #[cfg_attr(
        not(any(feature = "adaptive", feature = "rate-limit")),
        allow(dead_code)
    )]
    pub(crate) fn set(&self, value: u64) {
        #[cfg(feature = "metrics")]
        self.gauge.set(value as f64);
    }
}

/// A histogram of durations, in seconds, such as
/// `palisade_bulkhead_wait_duration_seconds{name}`.
#[cfg(any(feature = "bulkhead", feature = "circuit-breaker"))]
#[derive(Clone)]
pub(crate) struct Durations {
    #[cfg(feature = "metrics")]
    histogram: metrics::Histogram,
}

#[cfg(any(feature = "bulkhead", feature = "circuit-breaker"))]
impl Durations {
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn new(series: &'static str, name: &str) -> Self {
        Durations {
            #[cfg(feature = "metrics")]
            histogram: metrics::histogram!(series, "name" => name.to_owned()),
        }
    }

    /// A histogram with one more label beside the name.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    #[cfg_attr(
        not(all(feature = "circuit-breaker", feature = "metrics")),
        allow(dead_code)
    )]
    pub(crate) fn labelled(
        series: &'static str,
        name: &str,
        label: &'static str,
        value: &'static str,
    ) -> Self {
        Durations {
            #[cfg(feature = "metrics")]
            histogram: metrics::histogram!(series, "name" => name.to_owned(), label => value),
        }
    }

    /// Records the time from `start` to now. Without the feature the clock
    /// is not read.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn since(&self, start: tokio::time::Instant) {
        #[cfg(feature = "metrics")]
        self.record(start.elapsed());
    }

    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables, dead_code))]
    pub(crate) fn record(&self, took: std::time::Duration) {
        #[cfg(feature = "metrics")]
        self.histogram.record(took.as_secs_f64());
    }
}

#[cfg(any(feature = "bulkhead", feature = "circuit-breaker"))]
impl std::fmt::Debug for Durations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Durations")
    }
}

impl std::fmt::Debug for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Count")
    }
}

#[cfg(any(feature = "adaptive", feature = "bulkhead", feature = "rate-limit"))]
impl std::fmt::Debug for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Level")
    }
}
