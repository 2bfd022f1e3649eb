//! [`CircuitBreakerLayer`], its builder and its configuration.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::CircuitBreaker;
use super::breaker::{Breaker, BreakerMetrics, Listener, OpenSchedule, Settings};
use super::handle::{Event, Handle};
use super::keyed::KeyedBuilder;
use super::period::{SlowCalls, Thresholds, to_ppm};
use super::probes::MAX_PROBES;
use super::window::WindowKind;
use crate::classify::DefaultClassifier;
use crate::clock::Instants;
use crate::error::ConfigError;
use crate::name::Name;

pub(crate) const LAYER: &str = "circuit_breaker";
const DEFAULT_NAME: &str = "circuit_breaker";

const DEFAULT_COUNT_WINDOW: usize = 100;
const DEFAULT_MINIMUM_CALLS: u64 = 20;
/// High, so that a dependency that still serves most calls (a brown-out,
/// an overload whose refusals come back at once) is not shut out
/// altogether; a dependency that is down fails far more than this.
const DEFAULT_FAILURE_RATE: f64 = 0.9;
/// Short, so that a dependency that comes back is used again within about
/// 100 ms whatever the length of its outage; its cost is at most
/// `half_open_probes` calls to a dead dependency every 100 ms (3 % of 1 000
/// requests a second). In the wind tunnel's outage profile, 30 s left a
/// recovered upstream unused for the rest of the run; 100 ms was back
/// within 92 ms after each of three outages of 0.35 s to 3.35 s, and a 1 s
/// open period took about 0.7 s.
const DEFAULT_OPEN_FOR: Duration = Duration::from_millis(100);
const DEFAULT_HALF_OPEN_PROBES: u32 = 3;
const DEFAULT_HALF_OPEN_MAX_WAIT: Duration = Duration::from_secs(60);

/// The largest count window: one byte per call it holds.
const MAX_COUNT_WINDOW: usize = 1 << 24;
/// The most buckets a time window may have (32 bytes each).
const MAX_BUCKETS: usize = 10_000;
/// The shortest bucket a time window may have.
const MIN_BUCKET: Duration = Duration::from_millis(1);

/// Applies a [`CircuitBreaker`] to a service.
///
/// One layer value is one breaker: every service it builds, and every clone
/// of those, shares its state. Build one layer per dependency.
#[derive(Clone)]
pub struct CircuitBreakerLayer<C = DefaultClassifier> {
    breaker: Arc<Breaker>,
    classifier: C,
}

impl CircuitBreakerLayer {
    /// A builder, starting from the defaults listed in the
    /// [module docs](super#configuration).
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::default()
    }

    /// Builds a layer from a [`CircuitBreakerConfig`] (loaded from a file,
    /// say), with the default classifier.
    ///
    /// # Errors
    ///
    /// As [`CircuitBreakerBuilder::build`].
    pub fn from_config(config: CircuitBreakerConfig) -> Result<Self, ConfigError> {
        CircuitBreakerBuilder::from_config(config).build()
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// A handle on the breaker: state, counts, manual control.
    pub fn handle(&self) -> Handle {
        Handle::new(self.breaker.clone())
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.breaker.clone(), self.classifier.clone())
    }
}

impl<C> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

/// Builds a [`CircuitBreakerLayer`].
///
/// The builder holds a [`CircuitBreakerConfig`], which each setter fills;
/// every option has a default (see the [module docs](super#configuration))
/// and [`build`](Self::build) checks them all and names the first bad one.
///
/// ```
/// use std::time::Duration;
/// use palisade::circuit_breaker::CircuitBreakerLayer;
///
/// let layer = CircuitBreakerLayer::builder()
///     .name("payments")
///     .time_window(Duration::from_secs(30))
///     .minimum_calls(10)
///     .failure_rate(0.5)
///     .slow_calls(Duration::from_millis(500), 0.8)
///     .open_for(Duration::from_secs(5))
///     .open_backoff(2.0, Duration::from_secs(120))
///     .half_open_probes(3)
///     .build()?;
/// assert_eq!(layer.handle().name(), "payments");
/// # Ok::<(), palisade::ConfigError>(())
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct CircuitBreakerBuilder<C = DefaultClassifier> {
    config: CircuitBreakerConfig,
    classifier: C,
    listener: Option<Listener>,
    seed: Option<u64>,
}

impl Default for CircuitBreakerBuilder {
    fn default() -> Self {
        Self::from_config(CircuitBreakerConfig::default())
    }
}

impl CircuitBreakerBuilder {
    /// A builder holding `config`, so that the parts a file cannot hold (a
    /// classifier, a listener) can be added before [`build`](Self::build),
    /// which checks it:
    ///
    /// ```
    /// use palisade::circuit_breaker::{CircuitBreakerBuilder, CircuitBreakerConfig};
    /// use palisade::classify::Outcome;
    ///
    /// let mut config = CircuitBreakerConfig::default();
    /// config.minimum_calls = Some(5);
    /// let layer = CircuitBreakerBuilder::from_config(config)
    ///     .classifier(|result: &Result<u16, std::io::Error>| match result {
    ///         Ok(status) if *status >= 500 => Outcome::Failure,
    ///         Ok(_) => Outcome::Success,
    ///         Err(_) => Outcome::Failure,
    ///     })
    ///     .build()?;
    /// # let _ = layer;
    /// # Ok::<(), palisade::ConfigError>(())
    /// ```
    pub fn from_config(config: CircuitBreakerConfig) -> Self {
        CircuitBreakerBuilder {
            config,
            classifier: DefaultClassifier,
            listener: None,
            seed: None,
        }
    }
}

impl<C> CircuitBreakerBuilder<C> {
    /// The settings so far, as [`build`](Self::build) will check them.
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.config
    }

    /// The name used in errors, events and the handle (default
    /// `"circuit_breaker"`).
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.config.name = Some(name.into().into_owned());
        self
    }

    /// Judge the last `n` calls (the default, with `n` = 100). Each new
    /// outcome pushes the oldest out. Needs no clock read per call.
    /// Replaces a time window set before.
    pub fn count_window(mut self, n: usize) -> Self {
        self.config.count_window = Some(n);
        self.config.time_window = None;
        self.config.time_window_buckets = None;
        self
    }

    /// Judge the calls of the last `length`, in about one bucket per second
    /// (the most, up to one per second and 10 000, that divide `length`
    /// exactly; one if `length` is under a second). Calls leave the window a
    /// whole bucket at a time. Reads the clock once per call. Replaces a
    /// count window set before.
    pub fn time_window(mut self, length: Duration) -> Self {
        self.config.count_window = None;
        self.config.time_window = Some(length);
        self.config.time_window_buckets = None;
        self
    }

    /// As [`time_window`](Self::time_window), in `buckets` buckets: more
    /// buckets slide more smoothly and cost 32 bytes each.
    pub fn time_window_buckets(mut self, length: Duration, buckets: usize) -> Self {
        self.config.count_window = None;
        self.config.time_window = Some(length);
        self.config.time_window_buckets = Some(buckets);
        self
    }

    /// How many calls the window must hold before its rates count (default
    /// 20, or the window's size if that is smaller). At least 1, and for a
    /// count window at most its size.
    pub fn minimum_calls(mut self, n: u64) -> Self {
        self.config.minimum_calls = Some(n);
        self
    }

    /// Open when at least this share of the window's calls failed (default
    /// 0.9); in (0, 1].
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.config.failure_rate = rate;
        self
    }

    /// Also open when at least `rate` of the window's calls took longer than
    /// `longer_than`, whether they succeeded or failed (off by default).
    /// Reads the clock when each call starts and ends.
    pub fn slow_calls(mut self, longer_than: Duration, rate: f64) -> Self {
        self.config.slow_call_duration = Some(longer_than);
        self.config.slow_call_rate = Some(rate);
        self
    }

    /// Also open after `n` failures in a row, however few calls the window
    /// holds (off by default).
    pub fn consecutive_failures(mut self, n: u64) -> Self {
        self.config.consecutive_failures = Some(n);
        self
    }

    /// How long the breaker stays open before letting probes through
    /// (default 100 ms); the first step when [`open_backoff`](Self::open_backoff)
    /// is set.
    pub fn open_for(mut self, duration: Duration) -> Self {
        self.config.open_for = duration;
        self
    }

    /// Make each consecutive opening (reopening from HalfOpen without having
    /// closed) last `multiplier` times the one before, up to `max`. Closing
    /// starts the schedule over. (In a [`CircuitBreakerConfig`],
    /// `open_multiplier` without `open_max` grows with no cap.)
    pub fn open_backoff(mut self, multiplier: f64, max: Duration) -> Self {
        self.config.open_multiplier = Some(multiplier);
        self.config.open_max = Some(max);
        self
    }

    /// Spread each open duration uniformly by ±`fraction` of itself (default
    /// 0), so that many breakers opened together do not probe together. The
    /// backoff's maximum still holds. In [0, 1).
    pub fn open_jitter(mut self, fraction: f64) -> Self {
        self.config.open_jitter = fraction;
        self
    }

    /// How many probe outcomes HalfOpen judges (default 3); never more than
    /// this many probes are out at once. The breaker closes when that many
    /// report below the thresholds, and reopens as soon as their outcomes
    /// reach a threshold over all of them.
    pub fn half_open_probes(mut self, n: u32) -> Self {
        self.config.half_open_probes = n;
        self
    }

    /// How long HalfOpen waits for its probes to report before it gives up
    /// and reopens (default 60 s): after it, the first call that finds every
    /// probe slot taken reopens the breaker.
    pub fn half_open_max_wait(mut self, duration: Duration) -> Self {
        self.config.half_open_max_wait = duration;
        self
    }

    /// Opens the breaker at once when a failed call's result carries a
    /// retry-after ([`Classify::retry_after`]: an upstream's `Retry-After`, a
    /// ban with a length), for that long but at most `longest`. Off by
    /// default. A hint of zero is no hint, nor is `Duration::MAX` ("do not
    /// retry this call", such as gRPC's negative pushback: advice about
    /// one call, not a time the upstream asked for). Only Closed and HalfOpen open
    /// this way: MetricsOnly never opens, and a forced state holds.
    ///
    /// [`Classify::retry_after`]: crate::classify::Classify::retry_after
    pub fn open_on_retry_after(mut self, longest: Duration) -> Self {
        self.config.open_on_retry_after = Some(longest);
        self
    }

    /// Waiting mode: while the breaker refuses, `poll_ready` returns
    /// `Pending` for up to `max_wait` instead of admitting the call only to
    /// refuse it. Off by default.
    ///
    /// - Open: the service sleeps until the open duration ends, on its own
    ///   timer, without polling the inner service, then decides again
    ///   (usually as a half-open probe). When the open duration outlasts
    ///   `max_wait`, it does not wait at all: the call is refused at once,
    ///   with its `retry_after`.
    /// - HalfOpen with every probe slot taken, or forced open: it waits until
    ///   the breaker changes state, a probe slot comes free, the half-open
    ///   wait bound runs out (then it reopens the breaker and waits out the
    ///   open duration), or `max_wait` passes.
    ///
    /// When the wait ends without an admission, `poll_ready` returns
    /// `Ready(Ok(()))` and the call is refused with [`CircuitOpen`] as usual;
    /// `poll_ready` never fails for a refusal. A caller that waited and is
    /// let through as a probe takes its probe slot in `poll_ready`, so that
    /// of the waiters a freed slot wakes, exactly one gets it and the rest
    /// wait on; it holds the slot until its call ends or the service is
    /// dropped (a clone does not inherit it), and a service that waits, is
    /// admitted and then never calls holds its slot like a hung probe, until
    /// `half_open_max_wait` reopens the breaker. A waiting service holds
    /// nothing, so an abandoned waiter strands nothing. Waiting needs a
    /// tokio runtime with its timer enabled, as timeouts do. Not available on
    /// a keyed breaker, whose key is known only in `call`.
    ///
    /// [`CircuitOpen`]: crate::error::CircuitOpen
    pub fn wait_when_open(mut self, max_wait: Duration) -> Self {
        self.config.wait_when_open = Some(max_wait);
        self
    }

    /// Outlier ejection: fits this breaker in front of one endpoint of a
    /// load balancer, such as tower's `balance::p2c::Balance`, which sends
    /// only to endpoints whose `poll_ready` is ready. It is
    /// [`wait_when_open`](Self::wait_when_open) with no bound of its own:
    /// while the breaker is open, and while its half-open probes are all
    /// out, the endpoint is not ready, so the balancer sends its calls to
    /// the others; when the open duration ends, the endpoint turns ready
    /// holding a probe slot, the balancer sends it a call, and the probes'
    /// outcomes put it back in the rotation or take it out again. No call is
    /// refused with [`CircuitOpen`](crate::error::CircuitOpen) meanwhile,
    /// unless [`half_open_max_wait`](Self::half_open_max_wait) reopens a
    /// breaker whose probes hang (the balancer may have left the endpoint
    /// ready and unused that long).
    ///
    /// One breaker per endpoint, not one over the balancer: a breaker above
    /// it would count every endpoint's failures together and open for all
    /// of them. See the [module docs](super#outlier-ejection-behind-a-balancer).
    pub fn eject_while_open(self) -> Self {
        self.wait_when_open(Duration::MAX)
    }

    /// Seeds the open duration's jitter, for reproducible tests (by default
    /// each breaker draws a random seed).
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Calls `listener` on every [`Event`]: each transition, and thresholds
    /// reached in MetricsOnly. It runs on the thread whose call caused the
    /// event, after the transition is made and its lock released, so it may
    /// read and control the breaker through a [`Handle`]; it should be quick.
    /// Without a listener, events cost nothing but their `tracing` event.
    pub fn on_event(mut self, listener: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// Decides what counts as a success, a failure or neither (default
    /// [`DefaultClassifier`]); see [`crate::classify`].
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerBuilder<C2> {
        CircuitBreakerBuilder {
            config: self.config,
            classifier,
            listener: self.listener,
            seed: self.seed,
        }
    }

    /// Checks the settings and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field when: a rate is outside (0, 1]; a
    /// window, the minimum calls, the probes, the consecutive failures, the
    /// open duration, the slow-call duration or the half-open wait is zero;
    /// both a count and a time window are set, or buckets without a time
    /// window; the minimum calls exceed a count window; a time window's
    /// buckets are shorter than 1 ms, more than 10 000, or do not divide it
    /// exactly; only one of the slow-call duration and rate is set; the
    /// backoff's multiplier is below 1, its maximum below `open_for`, or a
    /// maximum is set without a multiplier; the jitter is outside [0, 1);
    /// `open_on_retry_after` or `wait_when_open` is zero.
    pub fn build(self) -> Result<CircuitBreakerLayer<C>, ConfigError> {
        let settings = self.config.settings()?;
        let (name, listener, seed, classifier) = self.into_parts();
        let metrics = BreakerMetrics::new(name.as_str());
        Ok(CircuitBreakerLayer {
            breaker: Breaker::new(
                name,
                settings,
                listener,
                seed,
                metrics,
                Arc::new(Instants::new()),
            ),
            classifier,
        })
    }

    /// One breaker per key that `key` takes from each request (per host, per
    /// endpoint); see [`KeyedCircuitBreakerLayer`](super::KeyedCircuitBreakerLayer). Every key's breaker has
    /// the settings given to this builder.
    pub fn keyed<F>(self, key: F) -> KeyedBuilder<C, F> {
        KeyedBuilder::new(self, key)
    }

    /// The parts a keyed breaker shares between its keys' breakers.
    pub(crate) fn into_parts(self) -> (Name, Option<Listener>, Option<u64>, C) {
        let name = match self.config.name {
            Some(name) => Cow::Owned(name),
            None => Cow::Borrowed(DEFAULT_NAME),
        };
        (name.into(), self.listener, self.seed, self.classifier)
    }
}

impl<C> fmt::Debug for CircuitBreakerBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerBuilder")
            .field("config", &self.config)
            .field("listener", &self.listener.is_some())
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl CircuitBreakerConfig {
    /// Every setting, checked.
    pub(crate) fn settings(&self) -> Result<Settings, ConfigError> {
        let window = self.checked_window()?;
        let minimum_calls = self.checked_minimum_calls(window)?;
        let failure_ppm = rate("failure_rate", self.failure_rate)?;
        let slow = match (self.slow_call_duration, self.slow_call_rate) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    "slow_call_rate",
                    "must be set with `slow_call_duration`",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "slow_call_duration",
                    "must be set with `slow_call_rate`",
                ));
            }
            (Some(longer_than), Some(slow_rate)) => {
                if longer_than.is_zero() {
                    return Err(invalid("slow_call_duration", "must be more than zero"));
                }
                Some(SlowCalls {
                    longer_than,
                    ppm: rate("slow_call_rate", slow_rate)?,
                })
            }
        };
        if self.consecutive_failures == Some(0) {
            return Err(invalid("consecutive_failures", "must be at least 1"));
        }
        Ok(Settings {
            window,
            thresholds: Thresholds {
                failure_ppm,
                slow,
                minimum_calls,
                consecutive_failures: self.consecutive_failures,
            },
            open: self.checked_open_schedule()?,
            half_open_probes: self.checked_half_open_probes()?,
            half_open_max_wait: positive("half_open_max_wait", self.half_open_max_wait)?,
            open_on_retry_after: self
                .open_on_retry_after
                .map(|d| positive("open_on_retry_after", d))
                .transpose()?,
            wait_when_open: self
                .wait_when_open
                .map(|d| positive("wait_when_open", d))
                .transpose()?,
        })
    }

    fn checked_window(&self) -> Result<WindowKind, ConfigError> {
        match (self.count_window, self.time_window) {
            (Some(_), Some(_)) => Err(invalid(
                "time_window",
                "set `count_window` or `time_window`, not both",
            )),
            (_, None) if self.time_window_buckets.is_some() => Err(invalid(
                "time_window_buckets",
                "must be set with `time_window`",
            )),
            (None, None) => Ok(WindowKind::Count(DEFAULT_COUNT_WINDOW)),
            (Some(0), None) => Err(invalid("count_window", "must hold at least 1 call")),
            (Some(n), None) if n > MAX_COUNT_WINDOW => Err(invalid(
                "count_window",
                format!("must be at most {MAX_COUNT_WINDOW} calls, got {n}"),
            )),
            (Some(n), None) => Ok(WindowKind::Count(n)),
            (None, Some(length)) => checked_time_window(length, self.time_window_buckets),
        }
    }

    fn checked_minimum_calls(&self, window: WindowKind) -> Result<u64, ConfigError> {
        let size = match window {
            WindowKind::Count(n) => Some(n as u64),
            WindowKind::Time { .. } => None,
        };
        match (self.minimum_calls, size) {
            (Some(0), _) => Err(invalid("minimum_calls", "must be at least 1")),
            (Some(n), Some(size)) if n > size => Err(invalid(
                "minimum_calls",
                format!(
                    "{n} is more than the count window holds ({size}), so no rate would ever count"
                ),
            )),
            (Some(n), _) => Ok(n),
            (None, Some(size)) => Ok(DEFAULT_MINIMUM_CALLS.min(size)),
            (None, None) => Ok(DEFAULT_MINIMUM_CALLS),
        }
    }

    fn checked_open_schedule(&self) -> Result<OpenSchedule, ConfigError> {
        let base = positive("open_for", self.open_for)?;
        let (multiplier, max) = match (self.open_multiplier, self.open_max) {
            // No growth, and no cap on the jitter's upper half.
            (None, None) => (1.0, Duration::MAX),
            (None, Some(_)) => {
                return Err(invalid("open_max", "must be set with `open_multiplier`"));
            }
            (Some(multiplier), max) => {
                if !(multiplier.is_finite() && multiplier >= 1.0) {
                    return Err(invalid(
                        "open_multiplier",
                        format!("must be a finite number of at least 1, got {multiplier}"),
                    ));
                }
                let max = max.unwrap_or(Duration::MAX);
                if max < base {
                    return Err(invalid(
                        "open_max",
                        format!("must be at least `open_for` ({base:?}), got {max:?}"),
                    ));
                }
                (multiplier, max)
            }
        };
        if !(0.0..1.0).contains(&self.open_jitter) {
            return Err(invalid(
                "open_jitter",
                format!("must be in [0, 1), got {}", self.open_jitter),
            ));
        }
        Ok(OpenSchedule {
            base,
            multiplier,
            max,
            jitter: self.open_jitter,
        })
    }

    fn checked_half_open_probes(&self) -> Result<u32, ConfigError> {
        match self.half_open_probes {
            0 => Err(invalid("half_open_probes", "must be at least 1")),
            n if n > MAX_PROBES => Err(invalid(
                "half_open_probes",
                format!("must be at most {MAX_PROBES}, got {n}"),
            )),
            n => Ok(n),
        }
    }
}

fn checked_time_window(
    length: Duration,
    buckets: Option<usize>,
) -> Result<WindowKind, ConfigError> {
    if length.is_zero() {
        return Err(invalid("time_window", "must be more than zero"));
    }
    let buckets = buckets.unwrap_or_else(|| default_buckets(length));
    if buckets == 0 || buckets > MAX_BUCKETS {
        return Err(invalid(
            "time_window_buckets",
            format!("must be 1 ..= {MAX_BUCKETS}, got {buckets}"),
        ));
    }
    if !length.as_nanos().is_multiple_of(buckets as u128) {
        return Err(invalid(
            "time_window_buckets",
            format!("{buckets} buckets do not divide {length:?} exactly"),
        ));
    }
    if length / (buckets as u32) < MIN_BUCKET {
        return Err(invalid(
            "time_window_buckets",
            format!("{buckets} buckets of {length:?} are shorter than {MIN_BUCKET:?}"),
        ));
    }
    Ok(WindowKind::Time { length, buckets })
}

/// About one bucket per second, as many as divide `length` exactly into
/// buckets of at least 1 ms, and at most 10 000.
fn default_buckets(length: Duration) -> usize {
    let nanos = length.as_nanos();
    let most = length.as_secs().clamp(1, MAX_BUCKETS as u64) as usize;
    (1..=most)
        .rev()
        .find(|&b| nanos.is_multiple_of(b as u128) && length / (b as u32) >= MIN_BUCKET)
        .unwrap_or(1)
}

fn invalid(field: &'static str, rule: impl Into<Cow<'static, str>>) -> ConfigError {
    ConfigError::new(LAYER, field, rule)
}

fn rate(field: &'static str, value: f64) -> Result<u32, ConfigError> {
    // Written so that NaN fails too.
    if value > 0.0 && value <= 1.0 {
        Ok(to_ppm(value).max(1))
    } else {
        Err(invalid(field, format!("must be in (0, 1], got {value}")))
    }
}

fn positive(field: &'static str, value: Duration) -> Result<Duration, ConfigError> {
    if value.is_zero() {
        Err(invalid(field, "must be more than zero"))
    } else {
        Ok(value)
    }
}

/// A [`CircuitBreakerLayer`]'s settings as plain data: what its builder
/// fills, what [`CircuitBreakerBuilder::build`] checks, and, with the
/// `serde` feature, what a file holds (`Deserialize`). `Default` holds the
/// defaults; a file may leave out any field for its default. Durations are
/// written as `"250ms"`, `"5s"`, `"1m"` or a number of seconds:
///
/// ```text
/// name = "payments"
/// time_window = "30s"
/// minimum_calls = 10
/// failure_rate = 0.5
/// slow_call_duration = "500ms"
/// slow_call_rate = 0.8
/// open_for = "5s"
/// open_multiplier = 2.0
/// open_max = "2m"
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct CircuitBreakerConfig {
    /// See [`CircuitBreakerBuilder::name`]; `None`: `"circuit_breaker"`.
    pub name: Option<String>,
    /// See [`CircuitBreakerBuilder::count_window`]; with neither this nor
    /// `time_window`, the last 100 calls.
    pub count_window: Option<usize>,
    /// See [`CircuitBreakerBuilder::time_window`].
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_duration::option"))]
    pub time_window: Option<Duration>,
    /// See [`CircuitBreakerBuilder::time_window_buckets`]; only with
    /// `time_window`.
    pub time_window_buckets: Option<usize>,
    /// See [`CircuitBreakerBuilder::minimum_calls`]; `None`: 20, or a count
    /// window's size if that is smaller.
    pub minimum_calls: Option<u64>,
    /// See [`CircuitBreakerBuilder::failure_rate`].
    pub failure_rate: f64,
    /// See [`CircuitBreakerBuilder::slow_calls`]; set with `slow_call_rate`.
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_duration::option"))]
    pub slow_call_duration: Option<Duration>,
    /// See [`CircuitBreakerBuilder::slow_calls`]; set with `slow_call_duration`.
    pub slow_call_rate: Option<f64>,
    /// See [`CircuitBreakerBuilder::consecutive_failures`].
    pub consecutive_failures: Option<u64>,
    /// See [`CircuitBreakerBuilder::open_for`].
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_duration"))]
    pub open_for: Duration,
    /// See [`CircuitBreakerBuilder::open_backoff`]; `None`: every opening
    /// lasts `open_for`.
    pub open_multiplier: Option<f64>,
    /// See [`CircuitBreakerBuilder::open_backoff`]; only with
    /// `open_multiplier`; `None`: no cap.
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_duration::option"))]
    pub open_max: Option<Duration>,
    /// See [`CircuitBreakerBuilder::open_jitter`].
    pub open_jitter: f64,
    /// See [`CircuitBreakerBuilder::half_open_probes`].
    pub half_open_probes: u32,
    /// See [`CircuitBreakerBuilder::half_open_max_wait`].
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_duration"))]
    pub half_open_max_wait: Duration,
    /// See [`CircuitBreakerBuilder::open_on_retry_after`].
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_duration::option"))]
    pub open_on_retry_after: Option<Duration>,
    /// See [`CircuitBreakerBuilder::wait_when_open`].
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_duration::option"))]
    pub wait_when_open: Option<Duration>,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            name: None,
            count_window: None,
            time_window: None,
            time_window_buckets: None,
            minimum_calls: None,
            failure_rate: DEFAULT_FAILURE_RATE,
            slow_call_duration: None,
            slow_call_rate: None,
            consecutive_failures: None,
            open_for: DEFAULT_OPEN_FOR,
            open_multiplier: None,
            open_max: None,
            open_jitter: 0.0,
            half_open_probes: DEFAULT_HALF_OPEN_PROBES,
            half_open_max_wait: DEFAULT_HALF_OPEN_MAX_WAIT,
            open_on_retry_after: None,
            wait_when_open: None,
        }
    }
}
