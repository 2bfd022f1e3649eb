//! Round trips through hyper on loopback: palisade's layers around
//! hyper-util's client, in front of a hyper server that is itself wrapped
//! in palisade's server-side layers, with an upstream that fails and
//! recovers, and upstreams that misbehave at the HTTP level.
//!
//! The clock is tokio's paused one: sockets are real, but backoffs and
//! open periods pass when the test advances time (or when the runtime has
//! nothing else to do), so nothing sleeps in real time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use palisade::circuit_breaker::{CircuitBreakerLayer, Handle as BreakerHandle, State};
use palisade::http::{
    BufferRequestBodyLayer, ErrorResponseLayer, IdempotentReplay, RateLimitHeaders, ReplayableBody,
    StatusClassifier, bad_gateway_response,
};
use palisade::rate_limit::RateLimitLayer;
use palisade::retry::{Backoff, Jitter, RetryLayer};
use palisade::{BoxError, ErrorKind};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::advance;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Serves `service` over HTTP/1 on an ephemeral loopback port, as a hyper
/// server does: one clone of the service per connection.
async fn serve<S, B>(service: S) -> SocketAddr
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let io = TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    addr
}

/// A product service: 200 with a JSON body, or 503 while `failing`; behind
/// an ingress rate limit of `limit` a minute, turned into responses.
struct Upstream {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

async fn upstream(limit: u64) -> Upstream {
    let calls = Arc::new(AtomicUsize::new(0));
    let failing = Arc::new(AtomicBool::new(false));
    let (seen, down) = (calls.clone(), failing.clone());
    let app = service_fn(move |_: Request<Incoming>| {
        seen.fetch_add(1, Ordering::SeqCst);
        let failing = down.load(Ordering::SeqCst);
        async move {
            let mut response = Response::new(Full::new(Bytes::from(r#"{"id":1}"#)));
            if failing {
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            Ok::<_, Infallible>(response)
        }
    });
    let service = ServiceBuilder::new()
        .layer(ErrorResponseLayer::new())
        .layer(
            RateLimitLayer::sliding_log(limit, Duration::from_secs(60))
                .name("ingress")
                .build()
                .unwrap()
                .report_state(RateLimitHeaders),
        )
        .service(app);
    Upstream {
        addr: serve(service).await,
        calls,
        failing,
    }
}

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn retry() -> RetryLayer<StatusClassifier, IdempotentReplay> {
    RetryLayer::builder()
        .max_attempts(3)
        .backoff(
            Backoff::constant(Duration::from_millis(100))
                .max(Duration::from_secs(1))
                .jitter(Jitter::None),
        )
        .classifier(StatusClassifier::new())
        .replay(IdempotentReplay::new())
        .build()
        .unwrap()
}

/// The client side: retry outside a breaker, around hyper-util's client.
fn client_stack(
    client: HttpClient,
) -> (
    impl Service<Request<Full<Bytes>>, Response = Response<Incoming>, Error = BoxError, Future: Send>
    + Clone
    + Send
    + 'static,
    BreakerHandle,
) {
    let breaker = CircuitBreakerLayer::builder()
        .name("products")
        .classifier(StatusClassifier::new())
        .count_window(4)
        .minimum_calls(4)
        .failure_rate(0.5)
        .open_for(Duration::from_secs(5))
        .half_open_probes(1)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let stack = ServiceBuilder::new()
        .layer(retry())
        .layer(breaker)
        .service(client);
    (stack, handle)
}

fn get(addr: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .body(Full::default())
        .unwrap()
}

async fn body_json(response: Response<Incoming>) -> (http::response::Parts, Value) {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts, serde_json::from_slice(&bytes).expect("a JSON body"))
}

#[tokio::test(start_paused = true)]
async fn a_real_upstream_that_fails_and_recovers() {
    let upstream = upstream(1_000).await;
    let (mut products, breaker) = client_stack(http_client());

    // Healthy: one call, one answer, with the upstream's rate-limit headers.
    let response = products
        .ready()
        .await
        .unwrap()
        .call(get(upstream.addr, "/products/1"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["ratelimit-limit"], "1000");
    assert_eq!(response.headers()["ratelimit-remaining"], "999");
    let (_, body) = body_json(response).await;
    assert_eq!(body["id"], 1);
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 1);

    // Failing: three attempts, all 503; the breaker sees 3 failures in 4
    // calls and opens. The last 503 comes back as it is.
    upstream.failing.store(true, Ordering::SeqCst);
    let response = products
        .ready()
        .await
        .unwrap()
        .call(get(upstream.addr, "/products/1"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 4);
    assert_eq!(breaker.state(), State::Open);

    // Open: refused at once, without reaching the upstream, and not retried.
    let err = products
        .ready()
        .await
        .unwrap()
        .call(get(upstream.addr, "/products/1"))
        .await
        .unwrap_err();
    assert!(
        matches!(ErrorKind::of(&err), ErrorKind::CircuitOpen(_)),
        "{err}"
    );
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 4);

    // Recovered: after the open period a probe goes through and closes it.
    upstream.failing.store(false, Ordering::SeqCst);
    advance(Duration::from_secs(5)).await;
    let response = products
        .ready()
        .await
        .unwrap()
        .call(get(upstream.addr, "/products/1"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn the_upstreams_rate_limit_reaches_the_client_as_a_429_it_does_not_retry_early() {
    let upstream = upstream(2).await;
    let (mut products, breaker) = client_stack(http_client());
    for remaining in ["1", "0"] {
        let response = products
            .ready()
            .await
            .unwrap()
            .call(get(upstream.addr, "/products/1"))
            .await
            .unwrap();
        assert_eq!(response.headers()["ratelimit-remaining"], remaining);
    }
    // The third is refused at the upstream's door: a 429 asking for a
    // minute, longer than the client's retry may wait, so it is handed back.
    let response = products
        .ready()
        .await
        .unwrap()
        .call(get(upstream.addr, "/products/1"))
        .await
        .unwrap();
    let (parts, body) = body_json(response).await;
    assert_eq!(parts.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(parts.headers["retry-after"], "60");
    assert_eq!(parts.headers["ratelimit-remaining"], "0");
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["retry_after"], 60);
    assert_eq!(
        upstream.calls.load(Ordering::SeqCst),
        2,
        "the app never saw the third"
    );
    assert_eq!(
        breaker.snapshot().failures,
        1,
        "a 429 is a failure to the breaker"
    );
}

/// A raw TCP upstream that answers every connection with `reply` (after
/// reading the request head) and then closes it.
async fn raw_upstream(reply: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(reply).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, connections)
}

#[tokio::test(start_paused = true)]
async fn an_upstream_that_closes_mid_response_is_reported_not_a_panic() {
    // Headers promise 100 bytes; 7 come, then the connection closes. The
    // response itself is a 200, so the layers pass it on; reading the body
    // reports the cut.
    let (addr, _) = raw_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial").await;
    let (mut products, _) = client_stack(http_client());
    let response = products
        .ready()
        .await
        .unwrap()
        .call(get(addr, "/products/1"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.into_body().collect().await.is_err(),
        "the cut body is an error"
    );

    // Closed before a status line: an error, classified as a failure and
    // retried (a GET), then returned.
    let (addr, connections) = raw_upstream(b"").await;
    let (mut products, breaker) = client_stack(http_client());
    let err = products
        .ready()
        .await
        .unwrap()
        .call(get(addr, "/products/1"))
        .await
        .unwrap_err();
    assert!(matches!(ErrorKind::of(&err), ErrorKind::Inner(_)), "{err}");
    assert_eq!(connections.load(Ordering::SeqCst), 3, "three attempts");
    assert_eq!(breaker.snapshot().failures, 3);
}

#[tokio::test(start_paused = true)]
async fn a_malformed_retry_after_from_a_real_upstream_is_ignored() {
    // obs-text where a number or date belongs: hyper accepts the bytes, the
    // classifier ignores the value, and the backoff decides.
    let (addr, connections) = raw_upstream(
        b"HTTP/1.1 503 Service Unavailable\r\nretry-after: \x80\xfflater\r\ncontent-length: 0\r\n\r\n",
    )
    .await;
    let (mut products, _) = client_stack(http_client());
    let response = products
        .ready()
        .await
        .unwrap()
        .call(get(addr, "/products/1"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(connections.load(Ordering::SeqCst), 3);
}

/// A gateway in front of `upstream`: buffers the request body (so retries
/// can resend it), forwards it through the client stack, and turns every
/// error into a response.
async fn gateway(upstream: SocketAddr) -> SocketAddr {
    let (products, _) = client_stack(http_client());
    let forward = service_fn(move |request: Request<Incoming>| {
        let products = products.clone();
        async move {
            let (mut parts, body) = request.into_parts();
            let body = body.collect().await?.to_bytes();
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            parts.uri = format!("http://{upstream}{path}").parse()?;
            products
                .oneshot(Request::from_parts(parts, Full::new(body)))
                .await
        }
    });
    let service = ServiceBuilder::new()
        .layer(ErrorResponseLayer::new().other_errors(bad_gateway_response))
        .service(forward);
    serve(service).await
}

#[tokio::test(start_paused = true)]
async fn a_gateway_answers_json_for_an_unreachable_or_broken_upstream() {
    // Nothing listens on a port just released.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let client = http_client();
    for upstream in [closed, raw_upstream(b"").await.0] {
        let gateway = gateway(upstream).await;
        let response = client.request(get(gateway, "/products/1")).await.unwrap();
        let (parts, body) = body_json(response).await;
        assert_eq!(parts.status, StatusCode::BAD_GATEWAY, "{upstream}");
        assert_eq!(body["error"], "upstream_failed");
    }

    // And a healthy upstream behind the gateway answers through it.
    let upstream = upstream(10).await;
    let gateway = gateway(upstream.addr).await;
    let response = client.request(get(gateway, "/products/1")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["ratelimit-remaining"], "9");
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_a_502_by_default() {
    // hyper-util's connect error carries the I/O error, which the default
    // answer recognises as an upstream's failure.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let err = http_client().request(get(closed, "/")).await.unwrap_err();
    let response = palisade::http::default_error_response(&BoxError::from(err));
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
}

// ------------------------------------------------ buffering request bodies

/// A request body sent in `chunks`, its length unsaid: hyper sends it
/// chunked, and the server cannot know its size before reading it.
struct Chunked(std::collections::VecDeque<Bytes>);

impl Chunked {
    fn new(chunk: &'static [u8], count: usize) -> Self {
        Chunked((0..count).map(|_| Bytes::from_static(chunk)).collect())
    }
}

impl http_body::Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|c| Ok(http_body::Frame::data(c))))
    }
}

/// A server that buffers request bodies up to `max_bytes` in front of a
/// retry, in front of an app that answers 503 to the next attempt while
/// `fail_next` is set (clearing it), 200 otherwise, and records what it
/// read of each attempt's body (its bytes, or the error that ended it).
struct BufferingServer {
    addr: SocketAddr,
    buffer: BufferRequestBodyLayer,
    fail_next: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Result<Bytes, String>>>>,
}

async fn buffering_server(max_bytes: usize) -> BufferingServer {
    let fail_next = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let (failing, seen) = (fail_next.clone(), attempts.clone());
    let app = service_fn(move |request: Request<ReplayableBody<Incoming>>| {
        let fail = failing.swap(false, Ordering::SeqCst);
        let seen = seen.clone();
        async move {
            let read = match request.into_body().collect().await {
                Ok(body) => Ok(body.to_bytes()),
                Err(error) => Err(error.to_string()),
            };
            seen.lock().unwrap().push(read);
            let mut response = Response::new(Full::new(Bytes::from("done")));
            if fail {
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            Ok::<_, Infallible>(response)
        }
    });
    let buffer = BufferRequestBodyLayer::new(max_bytes).unwrap();
    let service = ServiceBuilder::new()
        .layer(buffer.clone())
        .layer(retry())
        .service(app);
    BufferingServer {
        addr: serve(service).await,
        buffer,
        fail_next,
        attempts,
    }
}

fn put<B>(addr: SocketAddr, body: B) -> Request<B> {
    Request::put(format!("http://{addr}/cart/1"))
        .body(body)
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_incoming_body_is_buffered_so_the_retry_sends_the_same_bytes() {
    let server = buffering_server(1024).await;
    let json = Bytes::from_static(br#"{"product":7,"quantity":3}"#);

    // With a content-length.
    server.fail_next.store(true, Ordering::SeqCst);
    let response = http_client()
        .request(put(server.addr, Full::new(json.clone())))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "retried after the 503");
    assert_eq!(
        *server.attempts.lock().unwrap(),
        [Ok(json.clone()), Ok(json)]
    );

    // Chunked, its length unknown until read.
    server.attempts.lock().unwrap().clear();
    server.fail_next.store(true, Ordering::SeqCst);
    let chunked = Client::builder(TokioExecutor::new()).build_http::<Chunked>();
    let response = chunked
        .request(put(server.addr, Chunked::new(b"0123456789", 3)))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let sent = Bytes::from_static(b"012345678901234567890123456789");
    assert_eq!(
        *server.attempts.lock().unwrap(),
        [Ok(sent.clone()), Ok(sent)]
    );
    assert_eq!(server.buffer.passed_unbuffered(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_incoming_body_over_the_limit_is_sent_once_whole_and_counted() {
    let server = buffering_server(16).await;

    // Its content-length says it is too big: passed on before any is read.
    server.fail_next.store(true, Ordering::SeqCst);
    let big = Bytes::from(vec![b'x'; 100]);
    let response = http_client()
        .request(put(server.addr, Full::new(big.clone())))
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "not retried"
    );
    assert_eq!(*server.attempts.lock().unwrap(), [Ok(big)]);
    assert_eq!(server.buffer.passed_unbuffered(), 1);

    // Chunked: found too big while read; what was read goes first, then
    // the rest of the stream.
    server.attempts.lock().unwrap().clear();
    server.fail_next.store(true, Ordering::SeqCst);
    let chunked = Client::builder(TokioExecutor::new()).build_http::<Chunked>();
    let response = chunked
        .request(put(server.addr, Chunked::new(b"abcdefghij", 10)))
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "not retried"
    );
    let sent = Bytes::from("abcdefghij".repeat(10));
    assert_eq!(*server.attempts.lock().unwrap(), [Ok(sent)]);
    assert_eq!(server.buffer.passed_unbuffered(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_incoming_body_cut_off_midway_reaches_the_service_as_its_error() {
    let server = buffering_server(1024).await;
    // A client that promises 100 bytes, sends 10 and stops sending.
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"PUT /cart/1 HTTP/1.1\r\nhost: shop\r\ncontent-length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    // Whatever the server answers, it closes the connection after it.
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;

    let attempts = server.attempts.lock().unwrap();
    assert_eq!(attempts.len(), 1, "sent once, not retried: {attempts:?}");
    let error = attempts[0].as_ref().unwrap_err();
    assert!(error.contains("body"), "hyper's own error: {error}");
    assert_eq!(server.buffer.passed_unbuffered(), 1);
}

/// The server preset in front of a real hyper server, each refusal an HTTP
/// answer: past its in-flight limit a 503 at once (`bulkhead_full`), past
/// its rate limit a 429 with `Retry-After` (`rate_limited`), and a caller
/// whose deadline has already passed a 504 (`timeout`) before any work;
/// the app's own answers carry `RateLimit-*` headers. Nothing here waits on a timer, so it runs on the real clock
/// and never sleeps.
#[tokio::test]
async fn the_server_preset_sheds_limits_and_answers_as_http() {
    use palisade::preset::ServerLayer;
    use palisade::rate_limit::RateLimitConfig;
    use tokio::sync::Semaphore;

    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let (counted, held) = (calls.clone(), gate.clone());
    let app = service_fn(move |request: Request<Incoming>| {
        let (counted, held) = (counted.clone(), held.clone());
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            if request.uri().path() == "/slow" {
                held.acquire().await.unwrap().forget();
            }
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok"))))
        }
    });
    let preset = ServerLayer::builder()
        .name("api")
        .max_concurrent(2)
        .rate_limit(RateLimitConfig::new(5, Duration::from_secs(60)))
        .build()
        .unwrap();
    let addr = serve(ServiceBuilder::new().layer(preset).service(app)).await;
    let client = http_client();

    // Two slow requests hold both slots; a third is shed at once.
    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(client.request(get(addr, "/slow"))))
        .collect();
    while calls.load(Ordering::SeqCst) < 2 {
        tokio::task::yield_now().await;
    }
    let (parts, body) = body_json(client.request(get(addr, "/")).await.unwrap()).await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "bulkhead_full");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the shed request did no work"
    );
    gate.add_permits(2);
    for answer in slow {
        let response = answer.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["ratelimit-limit"], "5");
    }

    // Five a minute: two left, then a 429 that says when.
    let mut statuses = Vec::new();
    loop {
        let response = client.request(get(addr, "/")).await.unwrap();
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let (parts, body) = body_json(response).await;
            assert_eq!(body["error"], "rate_limited");
            assert!(parts.headers.contains_key("retry-after"));
            break;
        }
        assert!(statuses.len() <= 5, "{statuses:?}");
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );

    // A caller whose deadline has passed: refused before the limiter and
    // before any work.
    let before = calls.load(Ordering::SeqCst);
    let mut expired = get(addr, "/");
    expired
        .headers_mut()
        .insert("grpc-timeout", "0S".parse().unwrap());
    let (parts, body) = body_json(client.request(expired).await.unwrap()).await;
    assert_eq!(parts.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body["error"], "timeout");
    assert_eq!(calls.load(Ordering::SeqCst), before);
}
