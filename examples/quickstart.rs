//! The recommended client stack around a service, and what each kind of
//! refusal tells the caller. Run it with `cargo run --example quickstart`.

use std::time::Duration;

use palisade::preset::ClientLayer;
use palisade::{BoxError, ErrorKind};
use tower::{ServiceBuilder, ServiceExt, service_fn};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Any tower service: a hyper client, a tonic channel. This one fails
    // for item 0.
    let inventory = service_fn(|item: u32| async move {
        match item {
            0 => Err::<u32, BoxError>("no such item".into()),
            _ => Ok(item * 2),
        }
    });

    // A total timeout, retry within a budget, client-side throttling, a
    // circuit breaker, an attempt timeout and a bulkhead, in that order.
    let layer = ClientLayer::builder()
        .name("inventory")
        .total_timeout(Duration::from_secs(3))
        .attempt_timeout(Duration::from_secs(1))
        .max_concurrent(64)
        .build()?;
    let handles = layer.handles(); // breaker state, retry counts, ...
    let client = ServiceBuilder::new().layer(layer).service(inventory);

    for item in [21, 0] {
        match client.clone().oneshot(item).await {
            Ok(stock) => println!("item {item}: {stock} in stock"),
            Err(err) => match ErrorKind::of(&err) {
                ErrorKind::CircuitOpen(open) => {
                    println!(
                        "not sent: circuit open, try again in {:?}",
                        open.retry_after()
                    )
                }
                ErrorKind::Throttled(_) | ErrorKind::BulkheadFull(_) => {
                    println!("shed here: the service never saw it")
                }
                ErrorKind::Elapsed(_) => println!("too slow: abandoned, its outcome unknown"),
                _ => println!("item {item}: the service said {err}"),
            },
        }
    }
    let retries = handles.retry.counts().retries;
    println!(
        "breaker {}, {retries} retries",
        handles.circuit_breaker.state()
    );
    Ok(())
}
