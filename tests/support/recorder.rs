//! A `metrics` recorder for tests: it keeps every counter and gauge in an
//! atomic, readable at any time without resetting it.

#![allow(dead_code, unreachable_pub)] // each test binary uses a part of this

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// Series by name and labels, written `name{label="value",...}` with the
/// labels sorted.
#[derive(Clone, Default)]
pub struct Recorded {
    series: Arc<Mutex<BTreeMap<String, Arc<AtomicU64>>>>,
}

impl Recorded {
    fn slot(&self, key: &Key) -> Arc<AtomicU64> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|label| format!("{}=\"{}\"", label.key(), label.value()))
            .collect();
        labels.sort();
        let series = format!("{}{{{}}}", key.name(), labels.join(","));
        self.series
            .lock()
            .unwrap()
            .entry(series)
            .or_default()
            .clone()
    }

    /// A counter's value (0 if never registered).
    pub fn counter(&self, series: &str) -> u64 {
        self.read(series)
    }

    /// A gauge's value (0 if never registered).
    pub fn gauge(&self, series: &str) -> f64 {
        f64::from_bits(self.read(series))
    }

    fn read(&self, series: &str) -> u64 {
        self.series
            .lock()
            .unwrap()
            .get(series)
            .map_or(0, |value| value.load(Ordering::SeqCst))
    }

    /// Every series whose name is `name`, with its raw value.
    pub fn named(&self, name: &str) -> Vec<(String, u64)> {
        let prefix = format!("{name}{{");
        self.series
            .lock()
            .unwrap()
            .iter()
            .filter(|(series, _)| series.starts_with(&prefix))
            .map(|(series, value)| (series.clone(), value.load(Ordering::SeqCst)))
            .collect()
    }
}

impl Recorder for Recorded {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.slot(key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.slot(key))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}
