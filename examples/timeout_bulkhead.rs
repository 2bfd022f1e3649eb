//! A timeout and a bulkhead around a slow, flaky service.
//!
//! Twenty requests arrive, one every 25 ms, at a service that is sometimes
//! fast, sometimes slow and sometimes broken. The bulkhead lets three run at
//! a time; a request that finds them all busy waits up to 100 ms for one and
//! is then shed. The timeout cancels any call that runs past 300 ms once it
//! has its slot: the wait for a slot happens in `poll_ready`, which a timeout
//! does not count unless given a `ready_timeout`, so a request can take up to
//! 100 + 300 ms in all. The program prints what happened to each request.
//!
//! Run it with `cargo run --example timeout_bulkhead`.

use std::time::Duration;

use palisade::bulkhead::BulkheadLayer;
use palisade::timeout::TimeoutLayer;
use palisade::{BoxError, ErrorKind};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// The flaky upstream: request `n` takes a latency and succeeds or fails
/// according to a fixed pattern, so every run prints the same story.
async fn flaky_upstream(n: u32) -> Result<String, BoxError> {
    let (latency_ms, fails) = match n % 5 {
        0 => (40, false),
        1 => (120, false),
        2 => (900, false), // far past the timeout
        3 => (60, true),   // answers quickly, with an error
        _ => (200, false),
    };
    tokio::time::sleep(Duration::from_millis(latency_ms)).await;
    if fails {
        Err(format!("upstream error for request {n}").into())
    } else {
        Ok(format!("result {n}"))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let bulkhead = BulkheadLayer::builder()
        .name("upstream")
        .max_concurrent(3)
        .max_wait(Duration::from_millis(100))
        .build()?;
    let slots = bulkhead.handle();
    let client = ServiceBuilder::new()
        .layer(
            TimeoutLayer::builder()
                .name("upstream")
                .timeout(Duration::from_millis(300))
                .build()?,
        )
        .layer(bulkhead)
        .service(service_fn(flaky_upstream));

    println!("20 requests, one every 25 ms; 3 slots, 100 ms queue; 300 ms timeout\n");
    println!("{:>7}  {:>8}  outcome", "request", "took");
    let start = Instant::now();
    let mut calls = Vec::new();
    for n in 0..20 {
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            let began = Instant::now();
            let result = client.oneshot(n).await;
            (n, began.elapsed(), result)
        }));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut tally = [0usize; 4];
    for call in calls {
        let (n, took, result) = call.await?;
        let outcome = match &result {
            Ok(body) => {
                tally[0] += 1;
                format!("ok: {body}")
            }
            Err(err) => match ErrorKind::of(err) {
                ErrorKind::BulkheadFull(_) => {
                    tally[1] += 1;
                    format!("shed: {err}")
                }
                ErrorKind::Elapsed(_) => {
                    tally[2] += 1;
                    format!("timed out: {err}")
                }
                _ => {
                    tally[3] += 1;
                    format!("failed: {err}")
                }
            },
        };
        println!("{n:>7}  {:>6}ms  {outcome}", took.as_millis());
    }
    println!(
        "\n{} ok, {} shed by the bulkhead, {} timed out, {} failed upstream, in {} ms",
        tally[0],
        tally[1],
        tally[2],
        tally[3],
        start.elapsed().as_millis()
    );
    println!(
        "bulkhead `{}`: {} in flight, {} rejected in all",
        slots.name(),
        slots.in_flight(),
        slots.rejected()
    );
    Ok(())
}
