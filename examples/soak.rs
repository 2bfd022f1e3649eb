//! A soak: the client preset over a chaos layer whose faults switch at
//! random, driven by many callers on a multi-thread runtime, with calls
//! cancelled at random and inner calls that panic. Afterwards it checks
//! that nothing leaked: every bulkhead slot and breaker probe is back, the
//! retry layer's counts agree with what the callers saw, every caller
//! finished, and resident memory stayed flat after warm-up. It prints the
//! figures and exits non-zero on a leak.
//!
//! ```sh
//! cargo run --release --example soak -- --calls 10000000
//! ```
//!
//! Options: `--calls N` (default 1 000 000), `--callers N` (default 128),
//! `--seed N` (default 1).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use palisade::chaos::ChaosLayer;
use palisade::preset::ClientLayer;
use palisade::{BoxError, ErrorKind};
use tower::{Layer, Service, ServiceExt, service_fn};

/// The callers' view of the run.
#[derive(Default)]
struct Seen {
    ok: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    panicked: AtomicU64,
    refused: AtomicU64,
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

const ON_PURPOSE: &str = "soak: an inner call panicked on purpose";

struct Options {
    calls: u64,
    callers: u64,
    seed: u64,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        calls: 1_000_000,
        callers: 128,
        seed: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number = value
            .replace('_', "")
            .parse::<u64>()
            .map_err(|e| format!("{flag} {value}: {e}"))?;
        match flag.as_str() {
            "--calls" => options.calls = number,
            "--callers" => options.callers = number.max(1),
            "--seed" => options.seed = number,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(options)
}

/// Resident memory in bytes, from /proc (0 where there is none).
fn resident() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn main() -> Result<(), BoxError> {
    let options = options()?;
    // The panics are part of the run: keep them off the terminal.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&ON_PURPOSE) {
            default_hook(info);
        }
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    let failed = runtime.block_on(soak(options))?;
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

async fn soak(options: Options) -> Result<bool, BoxError> {
    let preset = ClientLayer::builder()
        .name("soak")
        .total_timeout(Duration::from_secs(1))
        .attempt_timeout(Duration::from_millis(100))
        .max_concurrent(64)
        .seed(options.seed)
        .build()?;
    let handles = preset.handles();
    let chaos = ChaosLayer::builder()
        .name("soak")
        .seed(options.seed)
        .build();
    let faults = chaos.handle();
    let seed = options.seed;
    // The inner service: most calls answer at once, some yield or sleep a
    // millisecond, one in a thousand panics.
    let inner = service_fn(move |n: u64| async move {
        match splitmix64(seed ^ n) % 1000 {
            0 => std::panic::panic_any(ON_PURPOSE),
            1..=20 => tokio::time::sleep(Duration::from_millis(1)).await,
            21..=100 => tokio::task::yield_now().await,
            _ => {}
        }
        Ok::<u64, BoxError>(n)
    });
    let svc = preset.layer(chaos.layer(inner));

    // The faults switch at random every 50 ms: mostly healthy, sometimes
    // errors (now and then enough to open the breaker), latency past the
    // attempt timeout, or an outage.
    let stop = Arc::new(AtomicBool::new(false));
    let switching = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut draw = seed;
            while !stop.load(Ordering::Relaxed) {
                draw = splitmix64(draw);
                faults.clear();
                match draw % 20 {
                    0 => faults.set_outage(true),
                    1..=2 => faults.set_error_rate(0.9)?,
                    3..=6 => faults.set_error_rate(0.3)?,
                    7..=10 => faults.set_latency(0.2, Duration::from_millis(150))?,
                    _ => {}
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            faults.clear();
            Ok::<_, palisade::ConfigError>(())
        })
    };

    let seen = Arc::new(Seen::default());
    let next = Arc::new(AtomicU64::new(0));
    let warm = options.calls / 5;
    let warm_resident = Arc::new(AtomicU64::new(0));
    let started = std::time::Instant::now();
    let mut callers = Vec::new();
    for _ in 0..options.callers {
        let svc = svc.clone();
        let seen = seen.clone();
        let next = next.clone();
        let warm_resident = warm_resident.clone();
        let calls = options.calls;
        callers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= calls {
                    break;
                }
                if n == warm {
                    warm_resident.store(resident(), Ordering::Relaxed);
                }
                let call = one_call(svc.clone(), n, seed);
                // A panic unwinds the call's task only: the caller goes on.
                match tokio::spawn(call).await {
                    Ok(Some(Ok(_))) => seen.ok.fetch_add(1, Ordering::Relaxed),
                    Ok(Some(Err(err))) if is_refusal(&err) => {
                        seen.refused.fetch_add(1, Ordering::Relaxed);
                        seen.failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Ok(Some(Err(_))) => seen.failed.fetch_add(1, Ordering::Relaxed),
                    Ok(None) => seen.cancelled.fetch_add(1, Ordering::Relaxed),
                    Err(_) => seen.panicked.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let mut stuck = 0;
    for caller in callers {
        // A caller still running 60 s after the others would be stuck.
        if tokio::time::timeout(Duration::from_secs(60), caller)
            .await
            .is_err()
        {
            stuck += 1;
        }
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    switching.await??;
    drop(svc);
    // Calls past their deadline drop their attempts at once; give the
    // runtime a moment to run the drops of what was cancelled last.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(report(
        &options,
        &seen,
        &handles,
        stuck,
        took,
        warm_resident.load(Ordering::Relaxed),
    ))
}

/// One call, cancelled at random: some are dropped after a few polls.
async fn one_call<S>(mut svc: S, n: u64, seed: u64) -> Option<Result<u64, BoxError>>
where
    S: Service<u64, Response = u64, Error = BoxError>,
{
    let yields = match splitmix64(seed.rotate_left(17) ^ n) % 100 {
        0..=4 => Some(0),
        5..=9 => Some(3),
        _ => None,
    };
    let call = async {
        svc.ready().await?;
        svc.call(n).await
    };
    match yields {
        None => Some(call.await),
        Some(yields) => {
            tokio::select! {
                biased;
                result = call => Some(result),
                () = give_up_after(yields) => None,
            }
        }
    }
}

async fn give_up_after(yields: u32) {
    for _ in 0..yields {
        tokio::task::yield_now().await;
    }
}

fn is_refusal(err: &BoxError) -> bool {
    !matches!(ErrorKind::of(err), ErrorKind::Inner(_))
}

/// Prints the figures and checks them; `true` when something leaked.
fn report(
    options: &Options,
    seen: &Seen,
    handles: &palisade::preset::ClientHandles,
    stuck: usize,
    took: Duration,
    warm_resident: u64,
) -> bool {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let (ok, failed, cancelled, panicked) = (
        load(&seen.ok),
        load(&seen.failed),
        load(&seen.cancelled),
        load(&seen.panicked),
    );
    let retry = handles.retry.counts();
    let bulkhead = &handles.bulkhead;
    let breaker = handles.circuit_breaker.snapshot();
    let end_resident = resident();
    println!(
        "soak: {} calls by {} callers in {took:.1?}",
        options.calls, options.callers
    );
    println!(
        "  callers saw: {ok} ok, {failed} failed ({} refused by a layer), {cancelled} cancelled, {panicked} panicked",
        load(&seen.refused)
    );
    println!(
        "  retry counted: {} ok, {} failed, {} retries, {} refused by the budget",
        retry.succeeded_without_retry + retry.succeeded_after_retry,
        retry.failed_without_retry + retry.failed_after_retry,
        retry.retries,
        retry.budget_refusals,
    );
    println!(
        "  bulkhead: {} in flight, {} of {} free, {} waiting; breaker {:?} with {} probes out",
        bulkhead.in_flight(),
        bulkhead.available(),
        bulkhead.max_concurrent(),
        bulkhead.waiting(),
        breaker.state,
        breaker.probes_in_flight,
    );
    println!(
        "  resident memory: {:.1} MiB after warm-up ({} calls), {:.1} MiB at the end",
        warm_resident as f64 / 1048576.0,
        options.calls / 5,
        end_resident as f64 / 1048576.0,
    );
    let mut problems = Vec::new();
    if ok + failed + cancelled + panicked != options.calls {
        problems.push("the callers' outcomes do not add up to the calls made".to_string());
    }
    if retry.succeeded_without_retry + retry.succeeded_after_retry != ok {
        problems.push("the retry layer's successes differ from the callers'".to_string());
    }
    if retry.failed_without_retry + retry.failed_after_retry != failed {
        problems.push("the retry layer's failures differ from the callers'".to_string());
    }
    if bulkhead.in_flight() != 0 || bulkhead.available() != bulkhead.max_concurrent() {
        problems.push("bulkhead slots were not all given back".to_string());
    }
    if breaker.probes_in_flight != 0 {
        problems.push("breaker probe slots were not all given back".to_string());
    }
    if stuck != 0 {
        problems.push(format!("{stuck} callers were stuck"));
    }
    // Flat: at most a quarter more than after warm-up, and at least 16 MiB
    // of room for the allocator's own slack.
    let allowed = warm_resident + (warm_resident / 4).max(16 << 20);
    if warm_resident > 0 && end_resident > allowed {
        problems.push("resident memory grew after warm-up".to_string());
    }
    for problem in &problems {
        println!("  LEAK: {problem}");
    }
    if problems.is_empty() {
        println!("  nothing leaked");
    }
    !problems.is_empty()
}
