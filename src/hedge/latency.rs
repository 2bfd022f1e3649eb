//! The hedge delay learned online: a percentile of the latencies of recent
//! successful attempts, over a rotating period.
//!
//! Latencies go into a histogram of microseconds whose buckets are exact
//! below 16 µs and then split each power of two in 16 (a bucket spans at
//! most a sixteenth of its values), from 0 to `u64::MAX` µs: no latency is
//! out of range, and none is refused. Each bucket also keeps the largest
//! latency it holds, which is what a percentile reports: an observed
//! latency, never a bucket's edge. Two periods are kept, the current one
//! and the one before it, so the estimate never starts from nothing when a
//! period turns.

use std::time::Duration;

use tokio::time::Instant;

/// Sub-buckets per power of two, and their bits.
const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
/// Enough buckets for every `u64`.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// The bucket of `micros`.
fn bucket(micros: u64) -> usize {
    if micros < SUB as u64 {
        return micros as usize;
    }
    let high = 63 - micros.leading_zeros(); // at least SUB_BITS
    let sub = (micros >> (high - SUB_BITS)) as usize & (SUB - 1);
    (high - SUB_BITS + 1) as usize * SUB + sub
}

/// One period's histogram.
struct Period {
    counts: Box<[u64; BUCKETS]>,
    largest: Box<[u64; BUCKETS]>,
    total: u64,
}

impl Period {
    fn new() -> Self {
        Period {
            counts: Box::new([0; BUCKETS]),
            largest: Box::new([0; BUCKETS]),
            total: 0,
        }
    }

    fn clear(&mut self) {
        self.counts.fill(0);
        self.largest.fill(0);
        self.total = 0;
    }

    fn add(&mut self, micros: u64) {
        let i = bucket(micros);
        self.counts[i] += 1;
        self.largest[i] = self.largest[i].max(micros);
        self.total += 1;
    }
}

/// The latencies of the current period and the one before.
pub(crate) struct Latencies {
    current: Period,
    previous: Period,
    /// When the current period began.
    since: Instant,
    period: Duration,
}

impl Latencies {
    pub(crate) fn new(period: Duration, now: Instant) -> Self {
        Latencies {
            current: Period::new(),
            previous: Period::new(),
            since: now,
            period,
        }
    }

    /// Turns the periods that have ended by `now`.
    fn rotate(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < self.period {
            return;
        }
        if elapsed >= self.period.saturating_mul(2) {
            // Two periods or more without a record: nothing is recent.
            self.previous.clear();
            self.current.clear();
            self.since = now;
        } else {
            std::mem::swap(&mut self.previous, &mut self.current);
            self.current.clear();
            self.since += self.period;
        }
    }

    /// Records a successful attempt's latency at `now`; the latencies the
    /// current period holds since.
    pub(crate) fn record(&mut self, latency: Duration, now: Instant) -> u64 {
        self.rotate(now);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.current.add(micros);
        self.current.total
    }

    /// The `percentile` (in (0, 1)) of the recent latencies: the smallest
    /// recorded latency that at least that share of them do not exceed.
    /// `None` with fewer than `min_samples` recorded.
    pub(crate) fn percentile(
        &mut self,
        percentile: f64,
        min_samples: u64,
        now: Instant,
    ) -> Option<Duration> {
        self.rotate(now);
        let total = self.current.total + self.previous.total;
        if total == 0 || total < min_samples {
            return None;
        }
        // The rank of the sample sought, from 1; the small margin keeps a
        // product such as 0.9 × 10 from rounding up past 9.
        let rank = ((percentile * total as f64) - 1e-9).ceil().max(1.0) as u64;
        let mut seen = 0;
        for i in 0..BUCKETS {
            seen += self.current.counts[i] + self.previous.counts[i];
            if seen >= rank {
                let micros = self.current.largest[i].max(self.previous.largest[i]);
                return Some(Duration::from_micros(micros));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn buckets_are_ordered_and_cover_every_value() {
        let mut last = 0;
        for micros in (0..100_000).chain([u64::MAX / 2, u64::MAX]) {
            let b = bucket(micros);
            assert!(b >= last && b < BUCKETS, "{micros}: {b}");
            last = b;
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    /// Scenario HG-2 (c): of 1, 1, 1, 1, 1, 1, 1, 1, 10, 10 ms the 90th
    /// percentile is 10 ms, exactly; (e) a latency of 40 s, or of any
    /// length, is recorded without an error.
    #[tokio::test(start_paused = true)]
    async fn the_percentile_is_an_observed_latency() {
        let now = Instant::now();
        let mut latencies = Latencies::new(Duration::from_secs(60), now);
        for latency in [1, 1, 1, 1, 1, 1, 1, 1, 10, 10] {
            latencies.record(ms(latency), now);
        }
        assert_eq!(latencies.percentile(0.9, 10, now), Some(ms(10)));
        assert_eq!(latencies.percentile(0.5, 10, now), Some(ms(1)));
        assert_eq!(latencies.percentile(0.9, 11, now), None, "too few");
        latencies.record(Duration::from_secs(40), now);
        latencies.record(Duration::MAX, now);
        assert_eq!(
            latencies.percentile(0.99, 1, now),
            Some(Duration::from_micros(u64::MAX))
        );
    }

    /// A period's latencies count for one period more, then are forgotten.
    #[tokio::test(start_paused = true)]
    async fn old_periods_are_forgotten() {
        let start = Instant::now();
        let mut latencies = Latencies::new(Duration::from_secs(60), start);
        latencies.record(ms(100), start);
        let later = start + Duration::from_secs(90);
        latencies.record(ms(1), later);
        assert_eq!(latencies.percentile(1.0 - 1e-6, 1, later), Some(ms(100)));
        let much_later = start + Duration::from_secs(150);
        assert_eq!(latencies.percentile(0.5, 1, much_later), Some(ms(1)));
        let idle = start + Duration::from_secs(400);
        assert_eq!(latencies.percentile(0.5, 1, idle), None);
    }
}
