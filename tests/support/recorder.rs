//! A `metrics` recorder for tests: it keeps every counter and gauge in an
//! atomic, and every histogram's values in a list, readable at any time
//! without resetting them.

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
    histograms: Arc<Mutex<BTreeMap<String, Arc<Values>>>>,
}

/// A histogram's values, in the order they were recorded. Room for the
/// first 2^15 is made when the series is registered, so that recording
/// them allocates nothing (the allocation test counts what a call costs).
struct Values(Mutex<Vec<f64>>);

impl Default for Values {
    fn default() -> Self {
        Values(Mutex::new(Vec::with_capacity(1 << 15)))
    }
}

impl metrics::HistogramFn for Values {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

/// `name{label="value",...}`, the labels sorted.
fn series_of(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|label| format!("{}=\"{}\"", label.key(), label.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorded {
    fn slot(&self, key: &Key) -> Arc<AtomicU64> {
        self.series
            .lock()
            .unwrap()
            .entry(series_of(key))
            .or_default()
            .clone()
    }

    /// A histogram's values (none if never registered).
    pub fn histogram(&self, series: &str) -> Vec<f64> {
        self.histograms
            .lock()
            .unwrap()
            .get(series)
            .map_or_else(Vec::new, |values| values.0.lock().unwrap().clone())
    }

    /// Every histogram series whose name is `name`, with its values.
    pub fn histograms_named(&self, name: &str) -> Vec<(String, Vec<f64>)> {
        let prefix = format!("{name}{{");
        self.histograms
            .lock()
            .unwrap()
            .iter()
            .filter(|(series, _)| series.starts_with(&prefix))
            .map(|(series, values)| (series.clone(), values.0.lock().unwrap().clone()))
            .collect()
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

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let values = self
            .histograms
            .lock()
            .unwrap()
            .entry(series_of(key))
            .or_default()
            .clone();
        Histogram::from_arc(values)
    }
}
