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
#[cfg(any(feature = "bulkhead", feature = "redis"))]
#[derive(Clone)]
pub(crate) struct Level {
    #[cfg(feature = "metrics")]
    gauge: metrics::Gauge,
}

#[cfg(any(feature = "bulkhead", feature = "redis"))]
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
    pub(crate) fn up(&self) {
        #[cfg(feature = "metrics")]
        self.gauge.increment(1.0);
    }

    #[inline]
    pub(crate) fn down(&self) {
        #[cfg(feature = "metrics")]
        self.gauge.decrement(1.0);
    }
}

impl std::fmt::Debug for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Count")
    }
}

#[cfg(any(feature = "bulkhead", feature = "redis"))]
impl std::fmt::Debug for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Level")
    }
}
