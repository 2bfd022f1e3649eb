//! The simulated upstream, and the fault profiles it plays.
//!
//! Every call draws its fate from one seeded generator when it arrives, so
//! on tokio's paused clock (one thread, calls in a fixed order) a seed gives
//! the same run every time.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::{Instant, sleep};
use tower::Service;

/// A request: its index in the run, so that the upstream can count the
/// attempts each request cost (retries send clones of it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request {
    pub(crate) id: usize,
}

/// The upstream's answer: its content does not matter here, only whether
/// it is the upstream's own or a degraded one that a fallback made in its
/// place (which the driver counts apart from real successes).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Response {
    pub(crate) degraded: bool,
}

impl Response {
    /// What the upstream answers.
    pub(crate) const REAL: Response = Response { degraded: false };
}

/// Why the upstream failed a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UpstreamError {
    /// A random failure (`steady-errors`, `brown-out`).
    Failed,
    /// The upstream is down (`outage`): it fails at once.
    Down,
    /// Past its capacity (`overload`, `overload-costly`): refused, like a
    /// 503.
    Overloaded,
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpstreamError::Failed => "upstream failed",
            UpstreamError::Down => "upstream down",
            UpstreamError::Overloaded => "upstream overloaded",
        })
    }
}

impl std::error::Error for UpstreamError {}

/// How long a healthy call takes: uniform in this range.
const BASE_LATENCY_MS: (u64, u64) = (5, 20);
/// `steady-errors`: the share of calls that fail.
const STEADY_ERROR_RATE: f64 = 0.3;
/// `slow-tail`: the share of calls that take [`SLOW_CALL`].
const SLOW_SHARE: f64 = 0.1;
const SLOW_CALL: Duration = Duration::from_millis(500);
/// `brown-out`: the error rate reached at the end of the run.
const BROWN_OUT_PEAK: f64 = 0.9;
/// `outage`: when the upstream goes down (from the start of the run) and for
/// how long. The lengths are a whole number of seconds plus 350 ms, so the
/// return falls part-way into a breaker's open period of 1 s (or of 100 ms,
/// or 250 ms...), and differ, so that a breaker whose open period is long
/// is seen to cost more than one whose period is short.
const OUTAGES: [(Duration, Duration); 3] = [
    (Duration::from_millis(500), Duration::from_millis(350)),
    (Duration::from_millis(2500), Duration::from_millis(1350)),
    (Duration::from_millis(5000), Duration::from_millis(3350)),
];
/// An outage is played only if the run goes on this long after it: its
/// recovery is looked for there.
const HEALTHY_AFTER: Duration = Duration::from_secs(1);
/// `overload`: each call holds a worker this long, so the workers together
/// serve `workers / OVERLOAD_SERVICE_TIME` calls a second.
const OVERLOAD_SERVICE_TIME: Duration = Duration::from_millis(20);
/// `overload-costly`: how long refusing a call holds a worker (reading the
/// request and answering 503 is work too).
const REFUSAL_COST: Duration = Duration::from_millis(5);

/// A named way for the upstream to misbehave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Profile {
    SteadyErrors,
    Outage,
    SlowTail,
    BrownOut,
    Overload,
    OverloadCostly,
}

impl Profile {
    pub(crate) const ALL: [Profile; 6] = [
        Profile::SteadyErrors,
        Profile::Outage,
        Profile::SlowTail,
        Profile::BrownOut,
        Profile::Overload,
        Profile::OverloadCostly,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Profile::SteadyErrors => "steady-errors",
            Profile::Outage => "outage",
            Profile::SlowTail => "slow-tail",
            Profile::BrownOut => "brown-out",
            Profile::Overload => "overload",
            Profile::OverloadCostly => "overload-costly",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name() == name)
    }

    /// One line on what the upstream does, for the table's heading.
    pub(crate) fn describe(self, duration: Duration, rate: u32) -> String {
        match self {
            Profile::SteadyErrors => "30 % of calls fail at random".into(),
            Profile::Outage => {
                let outages: Vec<String> = outage_windows(duration)
                    .map(|(down, up)| {
                        format!(
                            "{:.2} s from {:.1} s",
                            (up - down).as_secs_f64(),
                            down.as_secs_f64()
                        )
                    })
                    .collect();
                format!(
                    "down (every call fails at once) for {}, healthy otherwise",
                    outages.join(", ")
                )
            }
            Profile::SlowTail => "10 % of calls take 500 ms".into(),
            Profile::BrownOut => "error rate ramps from 0 to 90 % over the run".into(),
            Profile::Overload => {
                let workers = overload_workers(rate);
                format!(
                    "{workers} workers of 20 ms each ({} calls/s, half the offered load), \
                     a queue of {workers}, refused at once past that",
                    workers as u64 * 1000 / OVERLOAD_SERVICE_TIME.as_millis() as u64
                )
            }
            Profile::OverloadCostly => {
                let workers = overload_workers(rate);
                format!(
                    "as overload, but a refusal waits for one of the {workers} workers \
                     and holds it 5 ms: refused calls eat capacity"
                )
            }
        }
    }
}

/// When the `outage` upstream is down, from the start of the run: each
/// outage as (down, up), in order; those of [`OUTAGES`] followed by at
/// least [`HEALTHY_AFTER`] of the run.
pub(crate) fn outage_windows(duration: Duration) -> impl Iterator<Item = (Duration, Duration)> {
    OUTAGES
        .into_iter()
        .map(|(down, length)| (down, down + length))
        .filter(move |&(_, up)| up + HEALTHY_AFTER <= duration)
}

/// `overload`'s workers: enough to serve half of `rate`.
fn overload_workers(rate: u32) -> usize {
    let per_worker = 1.0 / OVERLOAD_SERVICE_TIME.as_secs_f64();
    ((f64::from(rate) / 2.0 / per_worker).round() as usize).max(1)
}

/// The simulated upstream: a `Service<Request>` that plays a [`Profile`]
/// and counts what it sees. Clones share one state.
#[derive(Clone)]
pub(crate) struct Upstream {
    shared: Arc<Shared>,
}

struct Shared {
    profile: Profile,
    duration: Duration,
    started: Instant,
    rng: Mutex<Rng>,
    /// Calls inside the upstream now (queued, served or being refused), and
    /// the most ever.
    in_flight: AtomicUsize,
    /// Calls admitted now (queued or served, not being refused): the
    /// overload profiles refuse past twice the workers.
    admitted: AtomicUsize,
    peak: AtomicUsize,
    /// Attempts per request id.
    attempts: Vec<AtomicU32>,
    /// `overload`: the workers, and how many calls may wait for one.
    workers: Semaphore,
    worker_count: usize,
}

impl Upstream {
    /// An upstream playing `profile` for a run of `requests` requests over
    /// `duration`, offered at `rate` a second. Its clock starts now.
    pub(crate) fn new(
        profile: Profile,
        duration: Duration,
        rate: u32,
        requests: usize,
        seed: u64,
    ) -> Self {
        let worker_count = overload_workers(rate);
        Upstream {
            shared: Arc::new(Shared {
                profile,
                duration,
                started: Instant::now(),
                rng: Mutex::new(Rng::new(seed)),
                in_flight: AtomicUsize::new(0),
                admitted: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
                attempts: (0..requests).map(|_| AtomicU32::new(0)).collect(),
                workers: Semaphore::new(worker_count),
                worker_count,
            }),
        }
    }

    /// The most calls that were ever inside the upstream at once.
    pub(crate) fn peak_concurrency(&self) -> usize {
        self.shared.peak.load(Ordering::Relaxed)
    }

    /// How many attempts request `id` cost.
    pub(crate) fn attempts(&self, id: usize) -> u32 {
        self.shared.attempts[id].load(Ordering::Relaxed)
    }
}

impl Service<Request> for Upstream {
    type Response = Response;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, UpstreamError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), UpstreamError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        Box::pin(serve(self.shared.clone(), request))
    }
}

/// The fate of one call, drawn when it arrives.
struct Draw {
    latency: Duration,
    /// Uniform in [0, 1): compared with the profile's error rate or slow share.
    chance: f64,
}

async fn serve(shared: Arc<Shared>, request: Request) -> Result<Response, UpstreamError> {
    if let Some(count) = shared.attempts.get(request.id) {
        count.fetch_add(1, Ordering::Relaxed);
    }
    // Busy workers plus a full queue: refused, as a 503.
    if matches!(shared.profile, Profile::Overload | Profile::OverloadCostly)
        && shared.admitted.load(Ordering::Relaxed) >= 2 * shared.worker_count
    {
        if shared.profile == Profile::OverloadCostly {
            // Refusing costs a worker too, so every refused call (a retry
            // of one included) takes capacity from the calls served.
            let _in_flight = InFlight::enter(&shared);
            let _worker = shared.workers.acquire().await;
            sleep(REFUSAL_COST).await;
        }
        return Err(UpstreamError::Overloaded);
    }
    // Dropped when the call ends or when the caller gives up on it (a
    // timeout drops the future, as a client closing its connection).
    let _in_flight = InFlight::enter(&shared);
    let _admitted = Admitted::enter(&shared);
    let elapsed = shared.started.elapsed();
    let draw = {
        let mut rng = shared.rng.lock().unwrap_or_else(|e| e.into_inner());
        let (low, high) = BASE_LATENCY_MS;
        let latency = Duration::from_millis(low + rng.below(high - low + 1));
        Draw {
            latency,
            chance: rng.unit(),
        }
    };
    match shared.profile {
        Profile::SteadyErrors => {
            sleep(draw.latency).await;
            fail_if(draw.chance < STEADY_ERROR_RATE)
        }
        Profile::Outage => {
            if outage_windows(shared.duration).any(|(down, up)| (down..up).contains(&elapsed)) {
                return Err(UpstreamError::Down);
            }
            sleep(draw.latency).await;
            Ok(Response::REAL)
        }
        Profile::SlowTail => {
            let slow = draw.chance < SLOW_SHARE;
            sleep(if slow { SLOW_CALL } else { draw.latency }).await;
            Ok(Response::REAL)
        }
        Profile::BrownOut => {
            let progress = elapsed.as_secs_f64() / shared.duration.as_secs_f64();
            sleep(draw.latency).await;
            fail_if(draw.chance < BROWN_OUT_PEAK * progress.min(1.0))
        }
        Profile::Overload | Profile::OverloadCostly => {
            // Wait for a worker (FIFO): queueing is what makes an overloaded
            // upstream slow.
            let _worker = shared.workers.acquire().await;
            sleep(OVERLOAD_SERVICE_TIME).await;
            Ok(Response::REAL)
        }
    }
}

fn fail_if(failed: bool) -> Result<Response, UpstreamError> {
    if failed {
        Err(UpstreamError::Failed)
    } else {
        Ok(Response::REAL)
    }
}

/// One call inside the upstream; keeps the in-flight count and its peak.
struct InFlight<'a> {
    shared: &'a Shared,
}

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let count = shared.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        shared.peak.fetch_max(count, Ordering::Relaxed);
        InFlight { shared }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The seeds of a run's components, each derived from the run's one seed.
///
/// The upstream's fault draws and the stacks' jitter and throttle draws must
/// not be one stream: the upstream's [`Rng`], palisade's seeding and its
/// throttle's generator are all splitmix64, so a stack given the faults'
/// seed would draw the very numbers that decided the faults (tower's
/// jitter and palisade's throttle draw exactly that sequence), and its
/// "random" retries would line up with the failures. Each component gets
/// `splitmix64(seed ^ TAG)` with a tag of its own instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seeds {
    /// The upstream's fault and latency draws.
    pub(crate) faults: u64,
    /// Every seedable draw of the stack: jitter, throttle.
    pub(crate) stacks: u64,
}

/// "faults" and "stacks" in ASCII: any two distinct constants would do.
const TAG_FAULTS: u64 = 0x6661_756c_7473;
const TAG_STACKS: u64 = 0x7374_6163_6b73;

impl Seeds {
    pub(crate) fn of(seed: u64) -> Seeds {
        Seeds {
            faults: splitmix64(seed ^ TAG_FAULTS),
            stacks: splitmix64(seed ^ TAG_STACKS),
        }
    }
}

/// One step of splitmix64, as a function of its input.
pub(crate) fn splitmix64(x: u64) -> u64 {
    Rng::new(x).next_u64()
}

/// One admitted call; keeps the admitted count.
struct Admitted<'a> {
    shared: &'a Shared,
}

impl<'a> Admitted<'a> {
    fn enter(shared: &'a Shared) -> Self {
        shared.admitted.fetch_add(1, Ordering::Relaxed);
        Admitted { shared }
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.shared.admitted.fetch_sub(1, Ordering::Relaxed);
    }
}

/// splitmix64: small, seedable, and good enough for fault draws.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
