//! The stacks under test: one line each in [`STACKS`].
//!
//! To measure your own stack, write a function like [`palisade_matched`]
//! (it gets the upstream and returns the stack, boxed) and add a line for
//! it to [`STACKS`]; or, for a palisade stack, write its settings to a TOML
//! file and pass `--palisade-config FILE` (see [`palisade_file`]).

use std::time::Duration;

use palisade::BoxError;
use palisade::bulkhead::BulkheadLayer;
use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::preset::ClientLayer;
use palisade::retry::{Backoff, Jitter, RetryLayer};
use palisade::timeout::TimeoutLayer;
use tower::ServiceBuilder;
use tower::ServiceExt;
use tower::util::BoxCloneService;

use crate::upstream::{Request, Response, Upstream};

/// Any stack, boxed: the driver needs nothing more than this.
pub(crate) type Stack = BoxCloneService<Request, Response, BoxError>;

/// Which clock a stack's timers follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Clock {
    /// Only `tokio::time`: the stack runs on tokio's paused clock, which
    /// jumps to the next timer whenever every task waits (fast, and the
    /// same every run).
    Virtual,
    /// The stack reads `std::time::Instant` somewhere, which a paused
    /// tokio clock does not move: it runs in real time.
    Real,
}

/// What a constructor gets besides the upstream.
#[derive(Clone, Debug, Default)]
pub(crate) struct StackSettings {
    /// Seed for the stack's jitter and throttle, where the library lets one
    /// set it: the run's [`Seeds::stacks`](crate::upstream::Seeds), set by
    /// `measure` for each run.
    pub(crate) seed: u64,
    /// `--palisade-config`: the file's contents.
    pub(crate) palisade_config: Option<String>,
}

/// Builds a stack on the upstream.
pub(crate) type Build = fn(Upstream, &StackSettings) -> Result<Stack, BoxError>;

/// A named stack and how to build it.
pub(crate) struct StackEntry {
    pub(crate) name: &'static str,
    pub(crate) clock: Clock,
    pub(crate) build: Build,
}

/// Every stack the tunnel knows; `--stack NAME` picks some. Add yours here.
pub(crate) const STACKS: &[StackEntry] = &[
    entry("none", Clock::Virtual, no_layers),
    entry("tower", Clock::Virtual, tower_stack),
    entry("tower-resilience", Clock::Real, tower_resilience_stack),
    entry("palisade-defaults", Clock::Virtual, palisade_defaults),
    entry("palisade", Clock::Virtual, palisade_matched),
    entry("palisade-recommended", Clock::Virtual, palisade_recommended),
    // The recommended stack with one of the optional layers added: each
    // only with the library feature of its layer.
    #[cfg(feature = "hedge")]
    entry("palisade-hedged", Clock::Virtual, palisade_hedged),
    #[cfg(feature = "adaptive")]
    entry("palisade-adaptive", Clock::Virtual, palisade_adaptive),
    #[cfg(feature = "adaptive")]
    entry("palisade-gradient", Clock::Virtual, palisade_gradient),
    #[cfg(feature = "fallback")]
    entry("palisade-fallback", Clock::Virtual, palisade_fallback),
    entry("tower-hedge", Clock::Virtual, tower_hedge_stack),
    // Only with --palisade-config FILE (or named with --stack).
    entry("palisade-file", Clock::Virtual, palisade_file),
];

const fn entry(name: &'static str, clock: Clock, build: Build) -> StackEntry {
    StackEntry { name, clock, build }
}

// The settings every stack shares where its library has them.

/// Attempts per request, the first included.
pub(crate) const ATTEMPTS: u32 = 3;
/// First backoff delay; it doubles, jittered.
pub(crate) const BACKOFF_BASE: Duration = Duration::from_millis(10);
/// Each attempt's timeout.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(100);
/// The breaker opens at this failure rate over [`BREAKER_WINDOW`] calls,
/// once it has seen [`BREAKER_MIN_CALLS`], for [`BREAKER_OPEN_FOR`].
pub(crate) const BREAKER_FAILURE_RATE: f64 = 0.5;
pub(crate) const BREAKER_WINDOW: usize = 100;
pub(crate) const BREAKER_MIN_CALLS: usize = 20;
pub(crate) const BREAKER_OPEN_FOR: Duration = Duration::from_secs(1);
/// Calls in flight at most.
pub(crate) const BULKHEAD: usize = 64;
/// Hedging: a second attempt goes when the first has taken longer than
/// this percentile of recent successful attempts, once
/// [`HEDGE_MIN_SAMPLES`] are known, counted over periods of
/// [`HEDGE_PERIOD`]. tower's hedge has no fixed delay, so both hedges learn
/// theirs. The period is short for a real service (palisade's default is
/// 60 s), as the runs are: tower's hedge reads only the last full period,
/// so it hedges nothing in a run's first period, which at 100 ms is 0.1 %
/// of a 10 s run, too few to move its p99.
pub(crate) const HEDGE_PERCENTILE: f64 = 0.9;
pub(crate) const HEDGE_MIN_SAMPLES: u64 = 10;
pub(crate) const HEDGE_PERIOD: Duration = Duration::from_millis(100);
/// `palisade-adaptive`, `palisade-gradient`: the limit they start at (it
/// moves between 1 and [`BULKHEAD`]).
#[cfg(feature = "adaptive")]
pub(crate) const ADAPTIVE_INITIAL: usize = 20;

/// (a) No layers: the upstream as it is.
fn no_layers(upstream: Upstream, _: &StackSettings) -> Result<Stack, BoxError> {
    Ok(BoxCloneService::new(upstream.map_err(BoxError::from)))
}

/// (d) palisade, each layer as `builder().build()` leaves it, in the
/// crate's recommended order (retry, breaker, attempt timeout, bulkhead;
/// the caller's deadline plays the total timeout). Jitter is seeded.
fn palisade_defaults(upstream: Upstream, settings: &StackSettings) -> Result<Stack, BoxError> {
    let stack = ServiceBuilder::new()
        .layer(RetryLayer::builder().jitter_seed(settings.seed).build()?)
        .layer(
            CircuitBreakerLayer::builder()
                .jitter_seed(settings.seed)
                .build()?,
        )
        .layer(TimeoutLayer::new(ATTEMPT_TIMEOUT)?)
        .layer(BulkheadLayer::new(BULKHEAD)?)
        .service(upstream);
    Ok(BoxCloneService::new(stack.map_err(BoxError::from)))
}

/// The stack the crate docs recommend, as its preset
/// (`palisade::preset::ClientLayer`): a total timeout, retry with a budget
/// of half a retry per request, client-side throttling, the breaker, the
/// attempt timeout and a bulkhead. The total timeout is the callers' default deadline, 1 s.
fn palisade_recommended(upstream: Upstream, settings: &StackSettings) -> Result<Stack, BoxError> {
    let stack = ServiceBuilder::new()
        .layer(recommended_preset(settings)?)
        .service(upstream);
    Ok(BoxCloneService::new(stack))
}

/// The preset of `palisade-recommended`, with the tunnel's settings.
fn recommended_preset(settings: &StackSettings) -> Result<ClientLayer, BoxError> {
    let preset = ClientLayer::builder()
        .total_timeout(Duration::from_secs(1))
        .attempt_timeout(ATTEMPT_TIMEOUT)
        .max_concurrent(BULKHEAD)
        .seed(settings.seed)
        .build()?;
    Ok(preset)
}

/// The recommended stack's layers one by one, for the stacks that add a
/// layer between two of them (and the test that checks they are the
/// preset).
#[cfg(any(test, feature = "hedge", feature = "adaptive"))]
pub(crate) mod recommended {
    use palisade::BoxError;
    use palisade::bulkhead::{BulkheadBuilder, BulkheadLayer};
    use palisade::circuit_breaker::{CircuitBreakerBuilder, CircuitBreakerLayer};
    use palisade::retry::{RetryBuilder, RetryLayer};
    use palisade::throttle::{ThrottleBuilder, ThrottleLayer};
    use palisade::timeout::TimeoutLayer;

    use super::{StackSettings, recommended_preset};
    use crate::upstream::splitmix64;

    /// The recommended stack's layers one by one, so that another can go
    /// between two of them: the preset's own settings as it checked them, and
    /// each layer's seed derived as the preset derives it, so that stacked in
    /// the preset's order they are the preset (a test checks it).
    pub(crate) struct RecommendedLayers {
        pub(crate) total_timeout: TimeoutLayer,
        pub(crate) retry: RetryLayer,
        pub(crate) throttle: ThrottleLayer,
        pub(crate) breaker: CircuitBreakerLayer,
        pub(crate) attempt_timeout: TimeoutLayer,
        pub(crate) bulkhead: BulkheadLayer,
    }

    impl RecommendedLayers {
        pub(crate) fn new(settings: &StackSettings) -> Result<Self, BoxError> {
            let config = recommended_preset(settings)?.config().clone();
            let seed = |tag: u64| splitmix64(settings.seed ^ tag);
            Ok(RecommendedLayers {
                total_timeout: TimeoutLayer::new(config.total_timeout)?,
                retry: RetryBuilder::from_config(config.retry)
                    .jitter_seed(seed(1))
                    .build()?,
                throttle: ThrottleBuilder::from_config(config.throttle)
                    .seed(seed(2))
                    .build()?,
                breaker: CircuitBreakerBuilder::from_config(config.circuit_breaker)
                    .jitter_seed(seed(3))
                    .build()?,
                attempt_timeout: TimeoutLayer::new(config.attempt_timeout)?,
                bulkhead: BulkheadBuilder::from_config(config.bulkhead).build()?,
            })
        }
    }
}

/// The recommended stack, hedged at the 90th percentile of recent attempts
/// (see [`HEDGE_PERCENTILE`]), two attempts at most as tower's hedge sends,
/// and the hedge's default budget of 20 % of requests plus 10 a second. A
/// hedge after the 90th percentile goes for a tenth of requests by
/// definition, plus those whose first attempt fails: 20 % lets through all
/// of them on the slow tail, and still caps the extra load when every call
/// is slow (10 % refused part of them at this rate).
///
/// The hedge goes just outside the attempt timeout, so that each attempt
/// has a deadline of its own: outside it, one 100 ms timeout would cut the
/// first attempt and its hedge together. It goes inside retry: a retry is
/// then a fresh pair of attempts after both failed, the hedge's delay
/// learns from single attempts (not from attempts plus retries and
/// backoff), and one request sends at most 2 × 3 attempts. Outside retry,
/// each hedge would carry retries of its own, and a hedge would go
/// whenever a first attempt failed and backed off. It goes inside the
/// breaker and the throttle too: they see one outcome per attempt pair
/// (a slow attempt that its hedge beat is no failure), and while the
/// circuit is open or the throttle refuses no hedge is sent at all.
#[cfg(feature = "hedge")]
fn palisade_hedged(upstream: Upstream, settings: &StackSettings) -> Result<Stack, BoxError> {
    use palisade::hedge::HedgeLayer;

    let layers = recommended::RecommendedLayers::new(settings)?;
    let hedge = HedgeLayer::at_percentile(HEDGE_PERCENTILE)
        .min_samples(HEDGE_MIN_SAMPLES)
        .period(HEDGE_PERIOD)
        .build()?;
    let stack = ServiceBuilder::new()
        .layer(layers.total_timeout)
        .layer(layers.retry)
        .layer(layers.throttle)
        .layer(layers.breaker)
        .layer(hedge)
        .layer(layers.attempt_timeout)
        .layer(layers.bulkhead)
        .service(upstream);
    Ok(BoxCloneService::new(stack))
}

/// The recommended stack with the fixed bulkhead of 64 replaced by an
/// AIMD limit between 1 and the same 64 calls (see [`adaptive_stack`]).
/// AIMD cuts its limit on every drop, and with the default classifier every
/// upstream error is one: fast on an overload, but it also cuts the limit
/// for errors that do not come from load (`steady-errors`, `brown-out`).
#[cfg(feature = "adaptive")]
fn palisade_adaptive(upstream: Upstream, settings: &StackSettings) -> Result<Stack, BoxError> {
    use palisade::adaptive::AdaptiveLayer;

    let limit = AdaptiveLayer::aimd()
        .limits(ADAPTIVE_INITIAL, 1, BULKHEAD)
        .build()?;
    adaptive_stack(upstream, settings, limit)
}

/// As `palisade-adaptive`, with a Gradient2 limit: it follows the latency
/// (a drop counts as the slowest call), so errors that come at the usual
/// speed move it less than they move AIMD, and an overload less quickly.
#[cfg(feature = "adaptive")]
fn palisade_gradient(upstream: Upstream, settings: &StackSettings) -> Result<Stack, BoxError> {
    use palisade::adaptive::AdaptiveLayer;

    let limit = AdaptiveLayer::gradient()
        .limits(ADAPTIVE_INITIAL, 1, BULKHEAD)
        .build()?;
    adaptive_stack(upstream, settings, limit)
}

/// The recommended stack with `limit` in the bulkhead's place.
///
/// The limit goes where the bulkhead was, inside retry and the breaker (each
/// attempt takes a slot), but outside the attempt timeout: a timeout below
/// it answers `Elapsed`, which the limit reads as a drop, where a timeout
/// above it would drop the call's future, which counts for nothing. The
/// lowest limit is 1, not the default 20: this upstream serves 5 calls at
/// once.
#[cfg(feature = "adaptive")]
fn adaptive_stack(
    upstream: Upstream,
    settings: &StackSettings,
    limit: palisade::adaptive::AdaptiveLayer,
) -> Result<Stack, BoxError> {
    let layers = recommended::RecommendedLayers::new(settings)?;
    let stack = ServiceBuilder::new()
        .layer(layers.total_timeout)
        .layer(layers.retry)
        .layer(layers.throttle)
        .layer(layers.breaker)
        .layer(limit)
        .layer(layers.attempt_timeout)
        .service(upstream);
    Ok(BoxCloneService::new(stack))
}

/// The recommended stack under a fallback that answers a fixed default,
/// marked degraded, when the circuit is open and when the upstream fails
/// (after retry has given up).
///
/// The fallback goes outermost, as its docs advise: the breaker inside it
/// records the upstream's real outcomes (a degraded answer never closes a
/// circuit), and retry has had its attempts before the fallback answers.
/// A caller's deadline that passes first is no fallback's to hide.
#[cfg(feature = "fallback")]
fn palisade_fallback(upstream: Upstream, settings: &StackSettings) -> Result<Stack, BoxError> {
    use palisade::fallback::{FallbackLayer, Reason};

    let fallback = FallbackLayer::builder()
        .on(Reason::CircuitOpen)
        .on(Reason::Failure)
        // The default is the usual answer, marked: what makes it degraded
        // is that the upstream did not give it.
        .value(Response::REAL)
        .mark(|response: &mut Response, _: Reason| response.degraded = true)
        .build()?;
    let stack = ServiceBuilder::new()
        .layer(fallback)
        .layer(recommended_preset(settings)?)
        .service(upstream);
    Ok(BoxCloneService::new(stack))
}

/// palisade with the settings the other stacks share (backoff from 10 ms,
/// a breaker at 50 % over 100 calls, open 1 s), its defaults otherwise.
fn palisade_matched(upstream: Upstream, settings: &StackSettings) -> Result<Stack, BoxError> {
    let retry = RetryLayer::builder()
        .max_attempts(ATTEMPTS)
        .backoff(Backoff::exponential(BACKOFF_BASE).jitter(Jitter::Full))
        .jitter_seed(settings.seed)
        .build()?;
    let breaker = CircuitBreakerLayer::builder()
        .count_window(BREAKER_WINDOW)
        .minimum_calls(BREAKER_MIN_CALLS as u64)
        .failure_rate(BREAKER_FAILURE_RATE)
        .open_for(BREAKER_OPEN_FOR)
        .jitter_seed(settings.seed)
        .build()?;
    let stack = ServiceBuilder::new()
        .layer(retry)
        .layer(breaker)
        .layer(TimeoutLayer::new(ATTEMPT_TIMEOUT)?)
        .layer(BulkheadLayer::new(BULKHEAD)?)
        .service(upstream);
    Ok(BoxCloneService::new(stack))
}

/// A palisade stack read from `--palisade-config FILE`: TOML tables
/// `[retry]`, `[throttle]`, `[circuit_breaker]`, `[timeout]` and `[bulkhead]`, each the
/// library's `*Config` type (see their docs for the fields). A table left
/// out leaves its layer out; the order is the recommended one.
///
/// ```toml
/// [retry]
/// max_attempts = 3
/// backoff = { kind = "exponential", base = "10ms", jitter = "full" }
///
/// [circuit_breaker]
/// failure_rate = 0.5
/// open_for = "1s"
///
/// [timeout]
/// timeout = "100ms"
///
/// [bulkhead]
/// max_concurrent = 64
/// ```
#[cfg(feature = "serde")]
fn palisade_file(upstream: Upstream, settings: &StackSettings) -> Result<Stack, BoxError> {
    use palisade::bulkhead::BulkheadConfig;
    use palisade::circuit_breaker::{CircuitBreakerBuilder, CircuitBreakerConfig};
    use palisade::retry::{RetryBuilder, RetryConfig};
    use palisade::throttle::{ThrottleBuilder, ThrottleConfig};
    use palisade::timeout::TimeoutConfig;
    use tower::Layer;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        retry: Option<RetryConfig>,
        throttle: Option<ThrottleConfig>,
        circuit_breaker: Option<CircuitBreakerConfig>,
        timeout: Option<TimeoutConfig>,
        bulkhead: Option<BulkheadConfig>,
    }

    let text = settings
        .palisade_config
        .as_deref()
        .ok_or("the palisade-file stack needs --palisade-config FILE")?;
    let file: File = toml::from_str(text)?;
    // Built from the inside out, boxing at each step, so that any table
    // may be missing.
    let mut stack = no_layers(upstream, settings)?;
    if let Some(config) = file.bulkhead {
        stack = BoxCloneService::new(BulkheadLayer::from_config(config)?.layer(stack));
    }
    if let Some(config) = file.timeout {
        stack = BoxCloneService::new(TimeoutLayer::from_config(config)?.layer(stack));
    }
    if let Some(config) = file.circuit_breaker {
        let breaker = CircuitBreakerBuilder::from_config(config)
            .jitter_seed(settings.seed)
            .build()?;
        stack = BoxCloneService::new(breaker.layer(stack));
    }
    if let Some(config) = file.throttle {
        let throttle = ThrottleBuilder::from_config(config)
            .seed(settings.seed)
            .build()?;
        stack = BoxCloneService::new(throttle.layer(stack));
    }
    if let Some(config) = file.retry {
        let retry = RetryBuilder::from_config(config)
            .jitter_seed(settings.seed)
            .build()?;
        stack = BoxCloneService::new(retry.layer(stack));
    }
    Ok(stack)
}

#[cfg(not(feature = "serde"))]
fn palisade_file(_: Upstream, _: &StackSettings) -> Result<Stack, BoxError> {
    Err("--palisade-config needs the serde feature: cargo run --release --example wind_tunnel --features serde".into())
}

/// (b) tower's own layers: `tower::retry` with a `TpsBudget` (its default:
/// 10 s, 10 retries a second, 20 %) and jittered exponential backoff,
/// `tower::timeout` per attempt, `ConcurrencyLimit` (which waits for a
/// slot).
fn tower_stack(upstream: Upstream, settings: &StackSettings) -> Result<Stack, BoxError> {
    use tower_policy::TowerRetry;
    let stack = ServiceBuilder::new()
        .retry(TowerRetry::new(settings.seed)?)
        .timeout(ATTEMPT_TIMEOUT)
        .concurrency_limit(BULKHEAD)
        .service(upstream);
    Ok(BoxCloneService::new(stack))
}

/// The `tower` stack with tower's own hedge (`tower::hedge::Hedge`)
/// between retry and the attempt timeout, where `palisade-hedged` has its
/// hedge and for the same reasons: at the 90th percentile of recent
/// successful attempts, once 10 are known, over periods of 100 ms (see
/// [`HEDGE_PERCENTILE`]). tower's hedge has no budget: its policy may
/// refuse a hedge, but hears of no outcome to budget with, so this one
/// hedges every request it may. A `Hedge` cannot be cloned, so it is
/// shared the way tower shares such a service, behind a `Buffer` (a task
/// that owns it and takes requests over a channel), with room for every
/// request a run can have waiting, so that only the concurrency limit
/// limits.
fn tower_hedge_stack(upstream: Upstream, settings: &StackSettings) -> Result<Stack, BoxError> {
    use tower::buffer::Buffer;
    use tower::hedge::Hedge;
    use tower_policy::{HedgeAlways, TowerRetry};

    let attempt = ServiceBuilder::new()
        .timeout(ATTEMPT_TIMEOUT)
        .concurrency_limit(BULKHEAD)
        .service(upstream);
    let hedged = Hedge::new::<Request>(
        attempt,
        HedgeAlways,
        HEDGE_MIN_SAMPLES,
        HEDGE_PERCENTILE as f32,
        HEDGE_PERIOD,
    );
    let stack = ServiceBuilder::new()
        .retry(TowerRetry::new(settings.seed)?)
        .service(Buffer::new(hedged, TOWER_BUFFER));
    Ok(BoxCloneService::new(stack))
}

/// `tower-hedge`'s buffer: more than the callers a run at the default
/// rate and deadline can have waiting at once.
const TOWER_BUFFER: usize = 4096;

/// tower leaves the retry policy to the user; this is the one its docs
/// sketch, with the budget and backoff it ships.
mod tower_policy {
    use std::sync::{Arc, Mutex};

    use palisade::BoxError;
    use tower::retry::Policy;
    use tower::retry::backoff::{
        Backoff, ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff,
    };
    use tower::retry::budget::{Budget, TpsBudget};
    use tower::util::rng::Rng;

    use super::{ATTEMPTS, BACKOFF_BASE};
    use crate::upstream::{Request, Rng as Splitmix};

    #[derive(Clone)]
    pub(super) struct TowerRetry {
        budget: Arc<TpsBudget>,
        backoff: ExponentialBackoff<SeededRng>,
        attempts_left: u32,
    }

    impl TowerRetry {
        pub(super) fn new(seed: u64) -> Result<Self, BoxError> {
            let mut maker = ExponentialBackoffMaker::new(
                BACKOFF_BASE,
                std::time::Duration::from_secs(1),
                0.99, // tower's default
                SeededRng::new(seed),
            )
            .map_err(|e| format!("{e:?}"))?;
            Ok(TowerRetry {
                budget: Arc::new(TpsBudget::default()),
                backoff: maker.make_backoff(),
                attempts_left: ATTEMPTS - 1,
            })
        }
    }

    impl<Res, E> Policy<Request, Res, E> for TowerRetry {
        type Future = tokio::time::Sleep;

        fn retry(&mut self, _: &mut Request, result: &mut Result<Res, E>) -> Option<Self::Future> {
            match result {
                Ok(_) => {
                    self.budget.deposit();
                    None
                }
                Err(_) if self.attempts_left > 0 && self.budget.withdraw() => {
                    self.attempts_left -= 1;
                    Some(self.backoff.next_backoff())
                }
                Err(_) => None,
            }
        }

        fn clone_request(&mut self, request: &Request) -> Option<Request> {
            Some(*request)
        }
    }

    /// tower's hedge policy: every request may be copied, and every hedge
    /// may go.
    #[derive(Clone, Copy)]
    pub(super) struct HedgeAlways;

    impl tower::hedge::Policy<Request> for HedgeAlways {
        fn clone_request(&self, request: &Request) -> Option<Request> {
            Some(*request)
        }

        fn can_retry(&self, _: &Request) -> bool {
            true
        }
    }

    /// tower's `Rng` trait over one seeded generator that every clone
    /// shares: tower clones the policy (backoff included) for each request,
    /// and clones of a plain generator would all draw the same jitter.
    #[derive(Clone)]
    pub(super) struct SeededRng(Arc<Mutex<Splitmix>>);

    impl SeededRng {
        fn new(seed: u64) -> Self {
            SeededRng(Arc::new(Mutex::new(Splitmix::new(seed))))
        }
    }

    impl Rng for SeededRng {
        fn next_u64(&mut self) -> u64 {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).next_u64()
        }
    }
}

/// (c) tower-resilience 0.13 in the order its composition guide gives for a
/// client: retry (not retrying an open circuit, as it advises), circuit
/// breaker, bulkhead, per-call time limiter.
///
/// Its breaker leaves Open by reading `std::time::Instant`, and its retry
/// jitter draws from `rand`'s thread generator, so this stack runs in real
/// time and its jitter is not seeded.
fn tower_resilience_stack(upstream: Upstream, _: &StackSettings) -> Result<Stack, BoxError> {
    use tower_resilience::bulkhead::BulkheadLayer;
    use tower_resilience::circuitbreaker::{CircuitBreakerError, CircuitBreakerLayer};
    use tower_resilience::retry::{ExponentialRandomBackoff, RetryLayer};
    use tower_resilience::timelimiter::TimeLimiterLayer;

    let breaker = CircuitBreakerLayer::builder()
        .failure_rate_threshold(BREAKER_FAILURE_RATE)
        .sliding_window_size(BREAKER_WINDOW)
        .minimum_number_of_calls(BREAKER_MIN_CALLS)
        .wait_duration_in_open(BREAKER_OPEN_FOR)
        .build()?;
    let bulkhead = BulkheadLayer::builder()
        .max_concurrent_calls(BULKHEAD)
        .build()?;
    let time_limiter = TimeLimiterLayer::builder()
        .timeout_duration(ATTEMPT_TIMEOUT)
        .build();
    let retry = RetryLayer::builder()
        .max_attempts(ATTEMPTS as usize)
        .backoff(ExponentialRandomBackoff::new(BACKOFF_BASE, 0.5)?)
        .retry_on(|e| !matches!(e, CircuitBreakerError::OpenCircuit))
        .build();
    let stack = ServiceBuilder::new()
        .layer(retry)
        .layer(breaker)
        .layer(bulkhead)
        .layer(time_limiter)
        .service(upstream)
        .map_err(|e| BoxError::from(e.to_string()));
    Ok(BoxCloneService::new(stack))
}
