//! [`Handle`]: the faults a chaos layer injects, changed at run time.

use std::sync::Arc;
use std::time::Duration;

use crate::error::ConfigError;
use crate::metrics::Count;
use crate::name::Name;
use crate::rng::splitmix64;
use crate::sync::{AtomicU64, Ordering};

pub(crate) const LAYER: &str = "chaos";
/// Rates are kept in millionths.
const MILLION: u64 = 1_000_000;
/// The packed settings: error rate in bits 0..21, latency rate in 21..42,
/// the outage switch at 42. Zero means no fault at all.
const RATE_BITS: u32 = 21;
const RATE_MASK: u64 = (1 << RATE_BITS) - 1;
const OUTAGE: u64 = 1 << (2 * RATE_BITS);

/// What one call gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    Delay(Duration),
    Fail,
}

/// What every service of one layer shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: Name,
    settings: AtomicU64,
    latency: AtomicU64,
    seed: u64,
    draws: AtomicU64,
    failed: AtomicU64,
    delayed: AtomicU64,
    /// `palisade_chaos_injected_total{name, fault}`: `error` then
    /// `latency`.
    injected: [Count; 2],
}

impl Shared {
    pub(crate) fn new(name: Name, seed: u64) -> Self {
        Shared {
            injected: ["error", "latency"].map(|fault| {
                Count::labelled(
                    "palisade_chaos_injected_total",
                    name.as_str(),
                    "fault",
                    fault,
                )
            }),
            name,
            settings: AtomicU64::new(0),
            latency: AtomicU64::new(0),
            seed,
            draws: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            delayed: AtomicU64::new(0),
        }
    }

    /// The fault for the next call. With no fault set, one atomic load.
    #[inline]
    pub(crate) fn draw(&self) -> Fault {
        let settings = self.settings.load(Ordering::Relaxed);
        if settings == 0 {
            return Fault::None;
        }
        self.draw_with(settings)
    }

    #[cold]
    fn draw_with(&self, settings: u64) -> Fault {
        if settings & OUTAGE != 0 {
            return self.fail();
        }
        // One draw per call, in call order: the same seed and the same
        // calls give the same faults.
        let n = self.draws.fetch_add(1, Ordering::Relaxed);
        let bits = splitmix64(self.seed ^ splitmix64(n));
        // Two uniform draws in [0, 1 000 000) from the two halves.
        let below = |half: u64| ((half & 0xFFFF_FFFF) * MILLION) >> 32;
        if below(bits) < settings & RATE_MASK {
            return self.fail();
        }
        if below(bits >> 32) < (settings >> RATE_BITS) & RATE_MASK {
            self.delayed.fetch_add(1, Ordering::Relaxed);
            self.injected[1].add();
            return Fault::Delay(Duration::from_nanos(self.latency.load(Ordering::Relaxed)));
        }
        Fault::None
    }

    fn fail(&self) -> Fault {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.injected[0].add();
        Fault::Fail
    }

    fn update(&self, f: impl Fn(u64) -> u64) {
        let _ = self
            .settings
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| Some(f(s)));
    }
}

/// A handle on a chaos layer: read and change its faults while it runs.
///
/// ```
/// use std::time::Duration;
/// use palisade::chaos::ChaosLayer;
///
/// let chaos = ChaosLayer::builder().name("payments").seed(7).build();
/// let faults = chaos.handle();
/// faults.set_error_rate(0.25)?;                       // a quarter of calls fail
/// faults.set_latency(0.5, Duration::from_millis(200))?; // half wait 200 ms more
/// faults.set_outage(true);                            // every call fails
/// assert!(faults.faults().outage);
/// faults.clear();                                     // back to normal
/// assert_eq!(faults.faults().error_rate, 0.0);
/// # Ok::<(), palisade::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Handle {
    shared: Arc<Shared>,
}

/// The faults a chaos layer injects now.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Faults {
    /// The share of calls that fail, in [0, 1].
    pub error_rate: f64,
    /// The share of calls that are delayed, in [0, 1].
    pub latency_rate: f64,
    /// How long a delayed call waits before it is sent.
    pub latency: Duration,
    /// Whether every call fails.
    pub outage: bool,
}

impl Handle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Handle { shared }
    }

    /// The layer's name.
    pub fn name(&self) -> &str {
        self.shared.name.as_str()
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        let s = self.shared.settings.load(Ordering::Relaxed);
        let rate = |ppm: u64| ppm as f64 / MILLION as f64;
        Faults {
            error_rate: rate(s & RATE_MASK),
            latency_rate: rate((s >> RATE_BITS) & RATE_MASK),
            latency: Duration::from_nanos(self.shared.latency.load(Ordering::Relaxed)),
            outage: s & OUTAGE != 0,
        }
    }

    /// Fails this share of calls (0 to 1, to the millionth).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] on `error_rate` outside [0, 1]; nothing changes.
    pub fn set_error_rate(&self, rate: f64) -> Result<(), ConfigError> {
        let ppm = ppm("error_rate", rate)?;
        self.shared.update(|s| (s & !RATE_MASK) | ppm);
        Ok(())
    }

    /// Delays this share of calls (0 to 1) by `latency` before they are
    /// sent.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] on `latency_rate` outside [0, 1]; nothing changes.
    pub fn set_latency(&self, rate: f64, latency: Duration) -> Result<(), ConfigError> {
        let ppm = ppm("latency_rate", rate)?;
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.shared.latency.store(nanos, Ordering::Relaxed);
        self.shared
            .update(|s| (s & !(RATE_MASK << RATE_BITS)) | ppm << RATE_BITS);
        Ok(())
    }

    /// Fails every call while on: an outage of the service behind.
    pub fn set_outage(&self, on: bool) {
        self.shared
            .update(|s| if on { s | OUTAGE } else { s & !OUTAGE });
    }

    /// Turns every fault off.
    pub fn clear(&self) {
        self.shared.update(|_| 0);
    }

    /// Calls failed on purpose so far.
    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// Calls delayed on purpose so far.
    pub fn delayed(&self) -> u64 {
        self.shared.delayed.load(Ordering::Relaxed)
    }
}

fn ppm(field: &'static str, rate: f64) -> Result<u64, ConfigError> {
    // Written so that NaN fails too.
    if (0.0..=1.0).contains(&rate) {
        Ok((rate * MILLION as f64).round() as u64)
    } else {
        Err(ConfigError::new(
            LAYER,
            field,
            format!("must be in [0, 1], got {rate}"),
        ))
    }
}
