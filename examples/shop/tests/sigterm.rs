//! SIGTERM, which container runtimes and systemd send, stops the shop as
//! gracefully as Ctrl-C (SIGINT): the request in flight is answered. A
//! test binary of its own: the signals go to the whole process, which
//! would end without a handler for them.

#![cfg(unix)]

mod support;

use std::pin::pin;

use http::StatusCode;
use palisade_shop::stop_signal;
use support::Shop;

fn send(signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Waits for `stop` by yielding only: virtual time stands still (the
/// request in flight stays in its injected delay) while the signal comes.
async fn signalled(stop: impl Future<Output = &'static str>) -> &'static str {
    let mut stop = pin!(stop);
    for _ in 0..10_000_000 {
        tokio::select! {
            biased;
            signal = &mut stop => return signal,
            () = tokio::task::yield_now() => {}
        }
    }
    panic!("no signal came");
}

#[tokio::test(start_paused = true)]
async fn sigterm_and_sigint_let_the_request_in_flight_finish() {
    let shop = Shop::start().await;
    shop.faults(shop.running.product, 0.0, 1_500).await;
    let in_flight = shop
        .get_in_flight("/api/products/1", &shop.running.faults.product)
        .await;
    let stop = stop_signal().expect("the handlers are installed");
    send("-TERM");
    assert_eq!(signalled(stop).await, "SIGTERM");
    assert!(!in_flight.is_finished());
    shop.running.shutdown().await.unwrap();
    assert_eq!(in_flight.await.unwrap().unwrap(), StatusCode::OK);

    let stop = stop_signal().expect("the handlers are installed");
    send("-INT");
    assert_eq!(signalled(stop).await, "SIGINT");
}
