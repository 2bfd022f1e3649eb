//! The Redis-backed limiter against a `redis-server` of its own on
//! loopback: decisions per second and their latency beside plain `PING`
//! round trips (same client, same concurrency, same run), leases, the cost
//! of a call while Redis is down, and the overshoot leases allow.
//!
//! Run with `cargo bench --features redis --bench redis` (needs
//! `redis-server` on the PATH). Per-call costs are criterion rows, beside
//! the in-process keyed limiter's.

#[path = "../tests/support/noop.rs"]
mod noop;
#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::Criterion;
use noop::{Noop, call_once};
use palisade::rate_limit::{OnStoreFailure, RateLimitLayer, RedisConfig};
use redis_server::{RedisServer, free_port};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

const CALLERS: usize = 64;
const RUN: Duration = Duration::from_secs(5);
const KEYS: u64 = 10_000;
/// A limit per second never reached here, within what a Redis store's
/// arithmetic holds.
const NO_LIMIT: u64 = 1_000_000_000;

fn main() {
    let redis = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(throughput(&redis));
    runtime.block_on(overshoot(&redis));
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    per_call(&mut c, &redis, &runtime);
    c.final_summary();
}

type Svc = BoxCloneSyncService<u64, u64, palisade::BoxError>;

/// `layer` over a service that answers at once, boxed so that its futures
/// are plainly `Send`.
fn echo<L>(layer: L) -> Svc
where
    L: Layer<
        tower::util::ServiceFn<fn(u64) -> std::future::Ready<Result<u64, palisade::BoxError>>>,
    >,
    L::Service: tower::Service<u64, Response = u64, Error = palisade::BoxError>
        + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as tower::Service<u64>>::Future: Send + 'static,
{
    let answer: fn(u64) -> std::future::Ready<Result<u64, palisade::BoxError>> =
        |n| std::future::ready(Ok(n));
    BoxCloneSyncService::new(layer.layer(tower::service_fn(answer)))
}

/// What `CALLERS` callers looping for `RUN` achieved: calls per second,
/// and the median and 99th percentile of their latencies.
struct Figures {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>9.0}/s  p50 {:>7.1?}  p99 {:>7.1?}",
            self.per_second, self.p50, self.p99
        )
    }
}

/// Runs `op` from `CALLERS` tasks for `RUN`, timing each call.
async fn drive<F, Fut>(op: F) -> Figures
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..CALLERS as u64 {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = caller;
            while started.elapsed() < RUN {
                let at = Instant::now();
                op(n % KEYS).await;
                latencies.push(at.elapsed());
                n += CALLERS as u64;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Figures {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
    }
}

fn store(redis: &RedisServer) -> RedisConfig {
    let mut store = RedisConfig::new(redis.url());
    // Measured, not cut: a decision that took longer would be the failure
    // mode's, not Redis's.
    store.decision_timeout = Duration::from_secs(1);
    store.on_failure = OnStoreFailure::FailClosed;
    store
}

async fn throughput(redis: &RedisServer) {
    let client = redis::Client::open(redis.url()).unwrap();
    let connection = redis::aio::ConnectionManager::new(client).await.unwrap();
    let ping = drive(move |_| {
        let mut connection = connection.clone();
        async move {
            let _: String = redis::cmd("PING")
                .query_async(&mut connection)
                .await
                .unwrap();
        }
    })
    .await;

    let mut decided = Vec::new();
    for (name, limit) in [
        (
            "sliding window",
            RateLimitLayer::sliding_window(NO_LIMIT, Duration::from_secs(1)),
        ),
        (
            "GCRA",
            RateLimitLayer::gcra(NO_LIMIT, Duration::from_secs(1)),
        ),
    ] {
        let layer = limit
            .name(format!("bench-{name}"))
            .redis(store(redis))
            .keyed(|n: &u64| n.to_be_bytes())
            .build()
            .unwrap();
        let handle = layer.handle();
        let svc = echo(layer);
        let figures = drive(move |n| {
            let svc = svc.clone();
            async move {
                svc.oneshot(n).await.unwrap();
            }
        })
        .await;
        decided.push((name, figures, handle.counts()));
    }

    let mut leased_store = store(redis);
    leased_store.lease_permits = 32;
    let leased = RateLimitLayer::sliding_window(NO_LIMIT, Duration::from_secs(1))
        .name("bench-leased")
        .redis(leased_store)
        .keyed(|n: &u64| (n % 64).to_be_bytes())
        .build()
        .unwrap();
    let leased_handle = leased.handle();
    let svc = echo(leased);
    let with_leases = drive(move |n| {
        let svc = svc.clone();
        async move {
            svc.oneshot(n).await.unwrap();
        }
    })
    .await;
    let leased_counts = leased_handle.counts();

    println!("loopback redis-server, one connection manager, {CALLERS} callers, {RUN:?} each:");
    println!("  PING                     {ping}");
    for (name, decisions, counts) in &decided {
        println!("  decisions, {name:<14}{decisions}");
        println!(
            "    / PING                 {:.2} of the throughput, p99 {:.2}×; {:.3} round trips \
             per decision, {} failures",
            decisions.per_second / ping.per_second,
            decisions.p99.as_secs_f64() / ping.p99.as_secs_f64(),
            counts.round_trips as f64 / counts.decisions as f64,
            counts.store_failures
        );
    }
    println!("  decisions, leases of 32  {with_leases}");
    println!(
        "  round trips / decision   {:.3} with leases of 32 (64 keys)",
        leased_counts.round_trips as f64 / leased_counts.decisions as f64
    );
}

/// Four replicas hammer one key of a GCRA limit (1 000 a second, a burst
/// of 100), with and without leases of 32: the most admitted in any span
/// beyond what GCRA allows in it (burst + rate × span). Admissions are
/// timed as their answers arrive, so a few show up late or early by a
/// round trip.
async fn overshoot(redis: &RedisServer) {
    for lease_permits in [1, 32] {
        over_admission(redis, lease_permits).await;
    }
}

async fn over_admission(redis: &RedisServer, lease_permits: u32) {
    const REPLICAS: usize = 4;
    const RATE: f64 = 1_000.0;
    const BURST: f64 = 100.0;
    let started = Instant::now();
    let admitted_at = Arc::new(std::sync::Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicU64::new(0));
    let name = format!("overshoot-{lease_permits}");
    let mut tasks = Vec::new();
    for replica in 0..REPLICAS {
        let mut store = store(redis);
        store.lease_permits = lease_permits;
        let layer = RateLimitLayer::gcra(1_000, Duration::from_secs(1))
            .burst(BURST as u64)
            .name(name.clone())
            .redis(store)
            .keyed(|_: &u64| *b"one-key")
            .build()
            .unwrap();
        let svc = echo(layer);
        for _ in 0..CALLERS / REPLICAS {
            let (svc, admitted_at, calls) = (svc.clone(), admitted_at.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                while started.elapsed() < RUN {
                    calls.fetch_add(1, Ordering::Relaxed);
                    if svc.clone().oneshot(replica as u64).await.is_ok() {
                        admitted_at.lock().unwrap().push(started.elapsed());
                    } else {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut times = admitted_at.lock().unwrap().clone();
    times.sort_unstable();
    // max over i <= j of (j - i + 1) - BURST - RATE × (t_j - t_i), in one
    // pass: keep the best RATE × t_i - i seen so far.
    let mut best = f64::MIN;
    let mut most = f64::MIN;
    for (j, t) in times.iter().enumerate() {
        let t = t.as_secs_f64();
        best = best.max(RATE * t - j as f64);
        most = most.max(j as f64 + 1.0 - BURST - RATE * t + best);
    }
    println!(
        "over-admission, {REPLICAS} replicas, leases of {lease_permits}: {} admitted of {} calls \
         in {RUN:?}; at most {most:.0} beyond burst + rate × span (bound {})",
        times.len(),
        calls.load(Ordering::Relaxed),
        REPLICAS as u32 * (lease_permits - 1),
    );
}

fn per_call(c: &mut Criterion, redis: &RedisServer, runtime: &tokio::runtime::Runtime) {
    let _entered = runtime.enter();
    let mut local = RateLimitLayer::sliding_window(NO_LIMIT, Duration::from_secs(1))
        .keyed(|n: &u64| n % 64)
        .build()
        .unwrap()
        .layer(Noop);
    c.bench_function("redis/in-process keyed limiter", |b| {
        b.iter(|| call_once(&mut local, black_box(1)))
    });

    // One hot key: a lease of 32 lasts 32 calls, far less than the round
    // trip that renews it, so one call in about 32 waits on Redis. A lease
    // of a million lasts long enough for the renewal to arrive first: the
    // cost of spending a leased permit.
    for (permits, name) in [
        (32, "redis/leases of 32, one hot key"),
        (
            1_000_000,
            "redis/a leased permit spent (leases of 1 000 000)",
        ),
    ] {
        let mut leased_store = store(redis);
        leased_store.lease_permits = permits;
        leased_store.lease_for = Duration::from_secs(3600);
        let mut leased = RateLimitLayer::sliding_window(100_000_000, Duration::from_secs(60))
            .name(format!("per-call-leased-{permits}"))
            .redis(leased_store)
            .keyed(|n: &u64| (n % 64).to_be_bytes())
            .build()
            .unwrap()
            .layer(Noop);
        // Polled until the runtime's workers bring Redis's answer, when a
        // call waits on it.
        c.bench_function(name, |b| b.iter(|| call_once(&mut leased, black_box(1))));
    }

    for (mode, name) in [
        (
            OnStoreFailure::FailOpen,
            "redis/redis down, guard open, fail open",
        ),
        (
            OnStoreFailure::Local,
            "redis/redis down, guard open, local limiter",
        ),
    ] {
        let mut down = RedisConfig::new(format!("redis://127.0.0.1:{}", free_port()));
        down.on_failure = mode;
        let mut svc = RateLimitLayer::sliding_window(NO_LIMIT, Duration::from_secs(1))
            .name("down")
            .redis(down)
            .keyed(|n: &u64| (n % 64).to_be_bytes())
            .build()
            .unwrap()
            .layer(Noop);
        // Failures until the guard opens; then no round trip per call.
        for n in 0..10 {
            runtime.block_on((&mut svc).oneshot(n)).unwrap();
        }
        c.bench_function(name, |b| b.iter(|| call_once(&mut svc, black_box(1))));
    }
}
