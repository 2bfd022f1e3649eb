//! Slow clients: a request's headers and body must come within their
//! timeouts, and shutdown waits for requests in flight only so long. Raw
//! sockets on 127.0.0.1 under tokio's paused clock: the runtime moves
//! virtual time on when it has nothing else to do.

mod support;

use std::io::ErrorKind;
use std::time::Duration;

use http::StatusCode;
use palisade_shop::api::ServeOptions;
use support::{Shop, bearer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Longer than every timeout here: a connection still open then was left
/// open.
const PATIENCE: Duration = Duration::from_secs(120);

/// Everything the server sends until it closes the connection, or `None`
/// if it is still open after [`PATIENCE`].
async fn read_until_closed(stream: &mut TcpStream) -> Option<String> {
    let mut bytes = Vec::new();
    match tokio::time::timeout(PATIENCE, stream.read_to_end(&mut bytes)).await {
        Ok(Ok(_)) => {}
        // Closed with data it had not read: a reset.
        Ok(Err(error)) if error.kind() == ErrorKind::ConnectionReset => {}
        Ok(Err(error)) => panic!("reading: {error}"),
        Err(_) => return None,
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The head of a JSON request for `path` whose body is `length` bytes.
/// The head of a JSON `POST`, as customer 1 (the gateway checks the token
/// before it reads a body).
fn post_head(path: &str, length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: shop\r\ncontent-type: application/json\r\n\
         authorization: {}\r\ncontent-length: {length}\r\n\r\n",
        bearer(1)
    )
}

fn about(actual: Duration, expected: Duration) -> bool {
    actual >= expected && actual < expected + Duration::from_millis(100)
}

#[tokio::test(start_paused = true)]
async fn a_client_that_sends_half_its_headers_is_cut_off_at_the_header_timeout() {
    let shop = Shop::start().await;
    let timeout = ServeOptions::default().header_read_timeout;
    for addr in [shop.running.gateway, shop.running.product] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: shop\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        let answer = read_until_closed(&mut stream).await;
        assert_eq!(answer.as_deref(), Some(""), "{addr}: still open");
        assert!(about(started.elapsed(), timeout), "{:?}", started.elapsed());
    }
    shop.running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_client_that_sends_half_its_body_gets_a_408_and_is_cut_off() {
    let shop = Shop::start().await;
    let timeout = ServeOptions::default().body_read_timeout;
    // Through the gateway's proxy, and to a service's JSON handler.
    for (addr, path) in [
        (shop.running.gateway, "/api/orders"),
        (shop.running.user, "/users"),
    ] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let half = br#"{"user_id": 1, "product"#;
        stream
            .write_all(post_head(path, 2 * half.len()).as_bytes())
            .await
            .unwrap();
        stream.write_all(half).await.unwrap();
        let started = Instant::now();
        let answer = read_until_closed(&mut stream)
            .await
            .unwrap_or_else(|| panic!("{path}: still open"));
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(answer.contains(r#""error":"body_timeout""#), "{answer}");
        assert!(answer.contains("connection: close"), "{answer}");
        assert!(answer.contains("x-request-id: "), "{answer}");
        assert!(about(started.elapsed(), timeout), "{:?}", started.elapsed());
    }
    // The service is none the worse.
    assert_eq!(shop.get_as(1, "/api/users/1").await.status, StatusCode::OK);
    shop.running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_a_stalled_request_after_the_grace_period() {
    let shop = Shop::start().await;
    let grace = ServeOptions::default().shutdown_grace;
    // The user service holds the request for a second before its handler
    // reads the body; the count of delays says it has the request.
    shop.faults(shop.running.user, 0.0, 1_000).await;
    let delayed = shop.running.faults.user.delayed();
    let mut stalled = TcpStream::connect(shop.running.user).await.unwrap();
    stalled
        .write_all(post_head("/users", 100).as_bytes())
        .await
        .unwrap();
    stalled.write_all(br#"{"name": "#).await.unwrap();
    while shop.running.faults.user.delayed() == delayed {
        tokio::task::yield_now().await;
    }

    let started = Instant::now();
    tokio::time::timeout(PATIENCE, shop.running.shutdown())
        .await
        .expect("shutdown waits no longer than the grace period")
        .unwrap();
    assert!(about(started.elapsed(), grace), "{:?}", started.elapsed());
    // Closed without an answer.
    assert_eq!(read_until_closed(&mut stalled).await.as_deref(), Some(""));
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_idle_connections_at_once() {
    let shop = Shop::start().await;
    // The client keeps its connection to the gateway, and the gateway its
    // connections to the services, for the next request.
    assert_eq!(shop.get("/health").await.status, StatusCode::OK);
    // And a connection that has sent nothing yet.
    let silent = TcpStream::connect(shop.running.order).await.unwrap();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }

    let started = Instant::now();
    shop.running.shutdown().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
}
