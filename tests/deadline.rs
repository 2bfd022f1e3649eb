//! Deadlines across layers and hops: a timeout honours the request's
//! deadline and hands the earlier one on, retry lives inside it, a breaker
//! ignores calls it cut short, and over HTTP the time left travels in
//! `grpc-timeout` and an expired arrival is refused without work. All on
//! tokio's paused clock.

use std::convert::Infallible;
use std::future::pending;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use palisade::circuit_breaker::{CircuitBreakerLayer, State};
use palisade::deadline::Deadline;
use palisade::http::{
    BodyDeadlineLayer, ErrorResponseLayer, InExtensions, ReadDeadlineLayer, StatusClassifier,
    WriteDeadlineLayer,
};
use palisade::retry::{Backoff, Jitter, RetryLayer};
use palisade::timeout::TimeoutLayer;
use palisade::{BoxError, ErrorKind};
use tokio::net::TcpListener;
use tokio::time::{Instant, advance};
use tower::util::BoxCloneService;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

type Req = Request<()>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn elapsed(err: &BoxError) -> &palisade::error::Elapsed {
    match ErrorKind::of(err) {
        ErrorKind::Elapsed(e) => e,
        other => panic!("expected Elapsed, got {other:?}: {err}"),
    }
}

fn with_deadline(left: Duration) -> Req {
    let mut request = Request::new(());
    request.extensions_mut().insert(Deadline::after(left));
    request
}

/// An inner service that never answers and records the deadline each
/// request carried, as time left when it arrived.
#[derive(Clone, Default)]
struct Hangs {
    seen: Arc<Mutex<Vec<Option<Duration>>>>,
}

impl Hangs {
    fn service(&self) -> impl Service<Req, Response = (), Error = BoxError, Future: Send> + Clone {
        let seen = self.seen.clone();
        service_fn(move |request: Req| {
            let left = request
                .extensions()
                .get::<Deadline>()
                .map(|d| d.remaining());
            seen.lock().unwrap().push(left);
            async { pending::<Result<(), BoxError>>().await }
        })
    }

    fn seen(&self) -> Vec<Option<Duration>> {
        self.seen.lock().unwrap().clone()
    }
}

/// Scenario DL-1: the earlier of the request's deadline and the layer's
/// timeout fires, whichever set it, and it is the one handed on.
#[tokio::test(start_paused = true)]
async fn the_earliest_deadline_wins_and_is_handed_on() {
    // tokio's timer fires on whole milliseconds: a 1 ns deadline fails at
    // the first one.
    let cases = [
        // (the request's deadline, the layer's timeout, the limit, when it
        // fails, whether the request's deadline is the one that fired)
        (ms(1_000), ms(2_000), ms(1_000), ms(1_000), true),
        (ms(2_000), ms(1_000), ms(1_000), ms(1_000), false),
        (
            Duration::from_nanos(1),
            Duration::from_secs(3600),
            Duration::from_nanos(1),
            ms(1),
            true,
        ),
    ];
    for (carried, timeout, limit, fails_at, by_deadline) in cases {
        let hangs = Hangs::default();
        let svc = ServiceBuilder::new()
            .layer(
                TimeoutLayer::new(timeout)
                    .unwrap()
                    .deadline_slot(InExtensions),
            )
            .service(hangs.service());
        let start = Instant::now();
        let err = svc.oneshot(with_deadline(carried)).await.unwrap_err();
        assert_eq!(start.elapsed(), fails_at, "{carried:?} through {timeout:?}");
        let e = elapsed(&err);
        assert_eq!(e.by_deadline(), by_deadline);
        assert_eq!(e.timeout(), limit);
        assert_eq!(
            hangs.seen(),
            vec![Some(limit)],
            "the earlier deadline goes on"
        );
    }
}

/// Scenario DL-1: without a deadline on the request the layer's own
/// timeout applies unchanged (and is handed on); with the default slot no
/// deadline is read or attached at all.
#[tokio::test(start_paused = true)]
async fn without_a_carried_deadline_the_layers_own_applies() {
    let hangs = Hangs::default();
    let svc = ServiceBuilder::new()
        .layer(
            TimeoutLayer::new(ms(700))
                .unwrap()
                .deadline_slot(InExtensions),
        )
        .service(hangs.service());
    let start = Instant::now();
    let err = svc.oneshot(Request::new(())).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(700));
    assert!(!elapsed(&err).by_deadline());
    assert_eq!(hangs.seen(), vec![Some(ms(700))]);

    let hangs = Hangs::default();
    let plain = ServiceBuilder::new()
        .layer(TimeoutLayer::new(ms(700)).unwrap())
        .service(hangs.service());
    let start = Instant::now();
    let err = plain.oneshot(with_deadline(ms(100))).await.unwrap_err();
    assert_eq!(
        start.elapsed(),
        ms(700),
        "the default slot reads no deadline"
    );
    assert!(!elapsed(&err).by_deadline());
    assert_eq!(hangs.seen(), vec![Some(ms(100))], "nor writes one");
}

/// Scenario DL-2: a request whose time is already spent is not sent.
#[tokio::test(start_paused = true)]
async fn a_request_whose_deadline_has_passed_is_not_sent() {
    let hangs = Hangs::default();
    let svc = ServiceBuilder::new()
        .layer(
            TimeoutLayer::new(ms(500))
                .unwrap()
                .deadline_slot(InExtensions),
        )
        .service(hangs.service());
    let request = with_deadline(ms(10));
    advance(ms(10)).await;
    let err = svc.oneshot(request).await.unwrap_err();
    let e = elapsed(&err);
    assert!(e.by_deadline() && !e.was_sent());
    assert!(ErrorKind::of(&err).is_rejected_before_call());
    assert!(hangs.seen().is_empty(), "the inner service was not called");
}

/// Retry sends not even a first attempt for a request whose deadline has
/// passed.
#[tokio::test(start_paused = true)]
async fn retry_sends_nothing_once_the_deadline_has_passed() {
    let hangs = Hangs::default();
    let retry = RetryLayer::builder().build().unwrap();
    let counts = retry.handle();
    let svc = ServiceBuilder::new()
        .layer(retry.deadline_slot(InExtensions))
        .service(hangs.service());
    let request = with_deadline(ms(10));
    advance(ms(10)).await;
    let err = svc.oneshot(request).await.unwrap_err();
    assert!(elapsed(&err).by_deadline() && !elapsed(&err).was_sent());
    assert!(hangs.seen().is_empty(), "the inner service was not called");
    assert_eq!(counts.counts().retries, 0);
}

/// An inner service that records the `grpc-timeout` header each attempt
/// carried, and answers with `answer` (or never, for `None`).
fn recorder(
    answer: Option<StatusCode>,
    retry_after: Option<&'static str>,
) -> (Hop, Arc<Mutex<Vec<String>>>) {
    let headers = Arc::new(Mutex::new(Vec::new()));
    let seen = headers.clone();
    let service = service_fn(move |request: Request<Full<Bytes>>| {
        let sent = request
            .headers()
            .get_all("grpc-timeout")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
            .join(",");
        seen.lock().unwrap().push(sent);
        async move {
            let Some(status) = answer else {
                return pending().await;
            };
            let mut response = Response::new(Full::default());
            *response.status_mut() = status;
            if let Some(wait) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from_static(wait));
            }
            Ok(response)
        }
    });
    (BoxCloneService::new(service), headers)
}

fn get() -> Request<Full<Bytes>> {
    Request::get("/").body(Full::default()).unwrap()
}

/// `retry` around attempts of at most 100 ms that honour the deadline and
/// write it on the request they send `upstream`.
fn attempts(
    retry: RetryLayer<
        palisade::classify::DefaultClassifier,
        palisade::retry::CloneRequest,
        InExtensions,
    >,
    upstream: Hop,
) -> Hop {
    BoxCloneService::new(
        ServiceBuilder::new()
            .layer(retry)
            .layer(
                TimeoutLayer::new(ms(100))
                    .unwrap()
                    .deadline_slot(InExtensions),
            )
            .layer(WriteDeadlineLayer::new())
            .service(upstream),
    )
}

/// Scenario DL-5: each attempt gets only what is left, and says so
/// downstream; the call fails at the overall deadline exactly.
#[tokio::test(start_paused = true)]
async fn retries_live_inside_the_deadline_and_say_so_downstream() {
    let (upstream, headers) = recorder(None, None);
    let retry = RetryLayer::builder()
        .max_attempts(3)
        .backoff(Backoff::constant(Duration::ZERO).jitter(Jitter::None))
        .deadline(ms(250))
        .build()
        .unwrap()
        .deadline_slot(InExtensions);
    let svc = attempts(retry, upstream);
    let start = Instant::now();
    let err = svc.oneshot(get()).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(250));
    assert!(elapsed(&err).by_deadline(), "{err}");
    assert_eq!(
        *headers.lock().unwrap(),
        ["100000u", "100000u", "50000000n"],
        "100 ms, 100 ms, then the 50 ms left"
    );
}

/// Scenario DL-5: a deadline the request brings bounds the retries just as
/// the layer's own does; a retry never starts it afresh.
#[tokio::test(start_paused = true)]
async fn an_inherited_deadline_bounds_every_attempt() {
    let (upstream, headers) = recorder(None, None);
    let retry = RetryLayer::builder()
        .max_attempts(5)
        .backoff(Backoff::constant(ms(20)).jitter(Jitter::None))
        .build()
        .unwrap()
        .deadline_slot(InExtensions);
    let svc = attempts(retry, upstream);
    let mut request = get();
    request.extensions_mut().insert(Deadline::after(ms(300)));
    let start = Instant::now();
    let err = svc.oneshot(request).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(300));
    assert!(elapsed(&err).by_deadline());
    // 0-100, 120-220, 240-300: the third is given the 60 ms left.
    assert_eq!(
        *headers.lock().unwrap(),
        ["100000u", "100000u", "60000000n"]
    );
}

/// Scenario DL-6: a Retry-After longer than the time left ends the retries
/// at once with the response, and so does a backoff that would sleep past
/// the deadline; whether the deadline is the layer's or the request's.
#[tokio::test(start_paused = true)]
async fn retry_never_waits_for_what_cannot_finish_in_time() {
    for own in [true, false] {
        let (upstream, headers) = recorder(Some(StatusCode::TOO_MANY_REQUESTS), Some("60"));
        let mut builder = RetryLayer::builder()
            .classifier(StatusClassifier::new())
            .backoff(Backoff::exponential(ms(100)).max(Duration::from_secs(120)));
        if own {
            builder = builder.deadline(Duration::from_secs(30));
        }
        let svc = ServiceBuilder::new()
            .layer(builder.build().unwrap().deadline_slot(InExtensions))
            .service(upstream);
        let mut request = get();
        if !own {
            request
                .extensions_mut()
                .insert(Deadline::after(Duration::from_secs(30)));
        }
        let start = Instant::now();
        let response = svc.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(start.elapsed(), Duration::ZERO, "own deadline: {own}");
        assert_eq!(headers.lock().unwrap().len(), 1, "no second attempt");
    }

    let (upstream, headers) = recorder(Some(StatusCode::SERVICE_UNAVAILABLE), None);
    let svc = ServiceBuilder::new()
        .layer(
            RetryLayer::builder()
                .classifier(StatusClassifier::new())
                .backoff(Backoff::constant(Duration::from_secs(20)).jitter(Jitter::None))
                .build()
                .unwrap()
                .deadline_slot(InExtensions),
        )
        .service(upstream);
    let mut request = get();
    request
        .extensions_mut()
        .insert(Deadline::after(Duration::from_secs(15)));
    let start = Instant::now();
    let response = svc.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(headers.lock().unwrap().len(), 1);
}

/// A breaker does not open because callers arrive with little time left:
/// calls their deadline cut short are ignored, neither failures nor slow
/// (though they ran past the slow-call threshold), while the same slowness
/// against the layer's own timeout opens it.
#[tokio::test(start_paused = true)]
async fn a_breaker_ignores_calls_cut_short_by_their_callers_deadline() {
    let slow = service_fn(|_: Req| async {
        tokio::time::sleep(ms(200)).await;
        Ok::<_, BoxError>(())
    });
    let breaker = CircuitBreakerLayer::builder()
        .count_window(4)
        .minimum_calls(4)
        .failure_rate(0.5)
        .slow_calls(ms(5), 0.5)
        .build()
        .unwrap();
    let health = breaker.handle();
    let svc = ServiceBuilder::new()
        .layer(breaker)
        .layer(
            TimeoutLayer::new(ms(100))
                .unwrap()
                .deadline_slot(InExtensions),
        )
        .service(slow);
    for _ in 0..10 {
        let err = svc
            .clone()
            .oneshot(with_deadline(ms(10)))
            .await
            .unwrap_err();
        assert!(elapsed(&err).by_deadline());
    }
    assert_eq!(health.state(), State::Closed);
    assert_eq!(health.snapshot().calls, 0, "none of them counted");
    for _ in 0..4 {
        let err = svc.clone().oneshot(Request::new(())).await.unwrap_err();
        assert!(!elapsed(&err).by_deadline());
    }
    assert_eq!(health.state(), State::Open, "its own timeouts still count");
}

/// Scenario DL-2: no deadline, no header; an inbound copy is replaced, so
/// exactly one value leaves and it is the time left now; and a request
/// whose time ran out before the write is not sent.
#[tokio::test(start_paused = true)]
async fn the_header_is_written_once_from_the_time_left_now() {
    let (upstream, headers) = recorder(Some(StatusCode::OK), None);
    let svc = ServiceBuilder::new()
        .layer(WriteDeadlineLayer::new())
        .service(upstream);

    svc.clone().oneshot(get()).await.unwrap();
    let mut forwarded = get();
    forwarded
        .headers_mut()
        .append("grpc-timeout", HeaderValue::from_static("10S"));
    svc.clone().oneshot(forwarded).await.unwrap();
    let mut stale = get();
    stale
        .headers_mut()
        .append("grpc-timeout", HeaderValue::from_static("10S"));
    stale.extensions_mut().insert(Deadline::after(ms(900)));
    advance(ms(400)).await;
    svc.clone().oneshot(stale).await.unwrap();
    assert_eq!(*headers.lock().unwrap(), ["", "", "500000u"]);

    let mut spent = get();
    spent.extensions_mut().insert(Deadline::after(ms(5)));
    advance(ms(5)).await;
    let err = svc.oneshot(spent).await.unwrap_err();
    assert!(elapsed(&err).by_deadline() && !elapsed(&err).was_sent());
    assert_eq!(headers.lock().unwrap().len(), 3, "not sent");
}

/// A server handler that counts its calls and answers with the time its
/// request has left, in milliseconds (`none` without a deadline).
fn reports_time_left<B: Send + 'static>() -> (
    impl Service<
        Request<B>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let service = service_fn(move |request: Request<B>| {
        counted.fetch_add(1, Ordering::SeqCst);
        let left = match request.extensions().get::<Deadline>() {
            Some(d) => d.remaining().as_millis().to_string(),
            None => "none".to_owned(),
        };
        assert!(
            !request.headers().contains_key("grpc-timeout"),
            "the header is removed once read"
        );
        async move { Ok(Response::new(Full::new(Bytes::from(left)))) }
    });
    (service, calls)
}

async fn text(response: Response<impl http_body::Body<Error: std::fmt::Debug>>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn with_header(value: &'static str) -> Request<Full<Bytes>> {
    Request::get("/")
        .header("grpc-timeout", value)
        .body(Full::default())
        .unwrap()
}

/// Scenario DL-3: valid values become deadlines, capped by the server's
/// maximum; malformed ones are ignored (served without a deadline from
/// them, never as expired) and counted.
#[tokio::test(start_paused = true)]
async fn a_server_reads_the_callers_deadline_capped_by_its_own_maximum() {
    let (handler, calls) = reports_time_left();
    let read = ReadDeadlineLayer::new().max(ms(999)).unwrap();
    let counts = read.handle();
    let svc = ServiceBuilder::new().layer(read).service(handler);
    for (value, left) in [
        ("00000010m", "10"),
        ("500m", "500"),
        ("1000m", "999"),
        ("1234S", "999"),
    ] {
        let response = svc.clone().oneshot(with_header(value)).await.unwrap();
        assert_eq!(text(response).await, left, "{value}");
    }
    let malformed = [
        "-1S",
        "1234x",
        "1234s",
        "1234",
        "1",
        "",
        "9a1S",
        "000000001S",
    ];
    for value in malformed {
        let response = svc.clone().oneshot(with_header(value)).await.unwrap();
        assert_eq!(text(response).await, "none", "{value:?}");
    }
    assert_eq!(counts.malformed(), malformed.len() as u64);
    assert_eq!(counts.expired(), 0);
    assert_eq!(calls.load(Ordering::SeqCst), 4 + malformed.len());
    assert!(ReadDeadlineLayer::new().max(Duration::ZERO).is_err());
}

/// Scenario DL-4: an expired arrival is refused without calling the
/// handler, counted with how late it was, and not retried by a retry layer
/// above; one with time left is served.
#[tokio::test(start_paused = true)]
async fn an_expired_arrival_is_refused_without_work() {
    let (handler, calls) = reports_time_left();
    let read = ReadDeadlineLayer::new();
    let counts = read.handle();
    let retry = RetryLayer::builder().build().unwrap();
    let retries = retry.handle();
    let svc = ServiceBuilder::new()
        .layer(retry)
        .layer(read)
        .service(handler);

    let err = svc.clone().oneshot(with_header("0n")).await.unwrap_err();
    assert!(elapsed(&err).by_deadline());
    let mut queued = get();
    queued.extensions_mut().insert(Deadline::after(ms(200)));
    advance(ms(1_000)).await; // spent in queues before reaching the layer
    let err = svc.clone().oneshot(queued).await.unwrap_err();
    assert!(elapsed(&err).by_deadline());
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the handler never ran");
    assert_eq!(counts.expired(), 2);
    assert_eq!(counts.late_total(), ms(800));
    assert_eq!(retries.counts().retries, 0, "an expired refusal is final");

    let mut in_time = get();
    in_time.extensions_mut().insert(Deadline::after(ms(1_000)));
    advance(ms(200)).await;
    let response = svc.oneshot(in_time).await.unwrap();
    assert_eq!(text(response).await, "800");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A service of the chain, boxed so that chains of any length have one type.
type Hop = BoxCloneService<Request<Full<Bytes>>, Response<Full<Bytes>>, BoxError>;

/// The network between two services: only headers cross it (a request's
/// extensions, where its deadline lives in-process, do not).
fn network(server: Hop) -> Hop {
    BoxCloneService::new(server.map_request(|mut request: Request<Full<Bytes>>| {
        request.extensions_mut().clear();
        request
    }))
}

/// A caller with a 1 s timeout of its own, calling `next` over the network.
fn caller(next: Hop) -> Hop {
    BoxCloneService::new(
        ServiceBuilder::new()
            .layer(
                TimeoutLayer::new(ms(1_000))
                    .unwrap()
                    .deadline_slot(InExtensions),
            )
            .layer(WriteDeadlineLayer::new())
            .service(network(next)),
    )
}

/// A service in the chain: reads its caller's deadline, spends `work`, and
/// calls `next` over the network through a 5 s timeout of its own that
/// honours the deadline.
fn middle(work: Duration, next: Hop) -> Hop {
    let calls_on: Hop = BoxCloneService::new(
        ServiceBuilder::new()
            .layer(
                TimeoutLayer::new(ms(5_000))
                    .unwrap()
                    .deadline_slot(InExtensions),
            )
            .layer(WriteDeadlineLayer::new())
            .service(network(next)),
    );
    let handler = service_fn(move |request: Request<Full<Bytes>>| {
        let next = calls_on.clone();
        async move {
            tokio::time::sleep(work).await;
            next.oneshot(request).await
        }
    });
    BoxCloneService::new(
        ServiceBuilder::new()
            .layer(ReadDeadlineLayer::new())
            .service(handler),
    )
}

/// The last service: reports the time its request has left.
fn last() -> (Hop, Arc<AtomicUsize>) {
    let (handler, calls) = reports_time_left();
    let service = ServiceBuilder::new()
        .layer(ReadDeadlineLayer::new())
        .service(handler.map_err(|never: Infallible| -> BoxError { match never {} }));
    (BoxCloneService::new(service), calls)
}

/// Two hops, then three: each service sees what is left of the first
/// caller's second, after the time the services before it spent.
#[tokio::test(start_paused = true)]
async fn the_deadline_crosses_two_and_three_hops() {
    let two = caller(middle(ms(100), last().0));
    let response = two.oneshot(get()).await.unwrap();
    assert_eq!(text(response).await, "900");

    let three = caller(middle(ms(100), middle(ms(150), last().0)));
    let response = three.oneshot(get()).await.unwrap();
    assert_eq!(text(response).await, "750");
}

/// Three hops where the services are too slow: the whole chain ends at the
/// first caller's deadline (each service's timeout works to that same
/// instant, so the first one's fires), and the service that would have been
/// called after it is never called.
#[tokio::test(start_paused = true)]
async fn a_chain_ends_at_the_first_callers_deadline() {
    let (end, calls) = last();
    let chain = caller(middle(ms(600), middle(ms(600), end)));
    let start = Instant::now();
    let err = chain.oneshot(get()).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(1_000));
    assert!(elapsed(&err).by_deadline(), "{err}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the last service was not reached"
    );
}

/// Over real HTTP on loopback: a hyper client stack writes the header, a
/// hyper server reads it (capped), and an arrival with no time left is a
/// 504 JSON answer without the handler running.
#[tokio::test(start_paused = true)]
async fn the_deadline_crosses_a_real_http_hop() {
    let (handler, calls) = reports_time_left();
    let server = ServiceBuilder::new()
        .layer(ErrorResponseLayer::new())
        .layer(ReadDeadlineLayer::new().max(ms(10_000)).unwrap())
        .service(handler);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = TowerToHyperService::new(server.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let client = ServiceBuilder::new()
        .layer(
            TimeoutLayer::new(Duration::from_secs(30))
                .unwrap()
                .deadline_slot(InExtensions),
        )
        .layer(WriteDeadlineLayer::new())
        .service(http.clone());
    let url = format!("http://{addr}/");
    let request = Request::get(&url).body(Full::default()).unwrap();
    let response: Response<Incoming> = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(text(response).await, "10000", "30 s asked, capped at 10 s");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let expired = Request::get(&url)
        .header("grpc-timeout", "0m")
        .body(Full::default())
        .unwrap();
    let response = http.request(expired).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let body = text(response).await;
    assert!(body.contains("\"error\":\"timeout\""), "{body}");
    assert!(body.contains("not sent"), "{body}");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the handler did not run");
}

/// A body of five chunks, one every 400 ms, that says when it was dropped
/// unfinished.
struct SlowBody {
    left: u32,
    next: std::pin::Pin<Box<tokio::time::Sleep>>,
    dropped_early: Arc<std::sync::atomic::AtomicBool>,
}

impl http_body::Body for SlowBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        std::task::ready!(self.next.as_mut().poll(cx));
        self.left -= 1;
        let next = tokio::time::Instant::now() + ms(400);
        self.next.as_mut().reset(next);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from("chunk")))))
    }
}

impl Drop for SlowBody {
    fn drop(&mut self) {
        if self.left > 0 {
            self.dropped_early.store(true, Ordering::SeqCst);
        }
    }
}

/// An upstream that answers its head at 100 ms, then a chunk at 500, 900,
/// 1 300, 1 700 and 2 100 ms.
fn slow_body_upstream(
    dropped_early: Arc<std::sync::atomic::AtomicBool>,
) -> impl Service<Req, Response = Response<SlowBody>, Error = BoxError> + Clone {
    service_fn(move |_: Req| {
        let dropped_early = dropped_early.clone();
        async move {
            tokio::time::sleep(ms(100)).await;
            let next = Box::pin(tokio::time::sleep(ms(400)));
            let body = SlowBody {
                left: 5,
                next,
                dropped_early,
            };
            Ok::<_, BoxError>(Response::new(body))
        }
    })
}

/// Reads `body` to its end or its first error; answers when each chunk
/// came, from `start`, and the error.
async fn read_body<B>(body: B, start: Instant) -> (Vec<Duration>, Option<BoxError>)
where
    B: http_body::Body<Error = BoxError> + Unpin,
{
    let mut body = body;
    let mut chunks = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(_) => chunks.push(start.elapsed()),
            Err(err) => return (chunks, Some(err)),
        }
    }
    (chunks, None)
}

/// Scenario DL-7: with a 1 s deadline the caller gets the head at 100 ms
/// and the chunks sent at 500 and 900 ms, then a deadline error at exactly
/// 1 s, and the rest of the body is dropped; a body that ends in time is
/// untouched, and without a deadline a slow body is never cut.
#[tokio::test(start_paused = true)]
async fn the_deadline_covers_the_whole_response_body() {
    let dropped_early = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let svc = ServiceBuilder::new()
        .layer(
            TimeoutLayer::new(ms(1_000))
                .unwrap()
                .deadline_slot(InExtensions),
        )
        .layer(BodyDeadlineLayer::new())
        .service(slow_body_upstream(dropped_early.clone()));
    let start = Instant::now();
    let response = svc.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(start.elapsed(), ms(100), "the head");
    let (chunks, err) = read_body(response.into_body(), start).await;
    assert_eq!(chunks, [ms(500), ms(900)]);
    let err = err.expect("cut at the deadline");
    assert!(
        elapsed(&err).by_deadline() && elapsed(&err).was_sent(),
        "{err}"
    );
    assert_eq!(start.elapsed(), ms(1_000));
    assert!(
        dropped_early.load(Ordering::SeqCst),
        "the stream was dropped"
    );

    // Time enough: the whole body, untouched.
    let patient = ServiceBuilder::new()
        .layer(
            TimeoutLayer::new(ms(5_000))
                .unwrap()
                .deadline_slot(InExtensions),
        )
        .layer(BodyDeadlineLayer::new())
        .service(slow_body_upstream(Arc::default()));
    let start = Instant::now();
    let response = patient.oneshot(Request::new(())).await.unwrap();
    let (chunks, err) = read_body(response.into_body(), start).await;
    assert!(err.is_none());
    assert_eq!(chunks, [500, 900, 1_300, 1_700, 2_100].map(ms));

    // No deadline at all: never cut.
    let unbounded = ServiceBuilder::new()
        .layer(BodyDeadlineLayer::new())
        .service(slow_body_upstream(Arc::default()));
    let start = Instant::now();
    let response = unbounded.oneshot(Request::new(())).await.unwrap();
    let (chunks, err) = read_body(response.into_body(), start).await;
    assert!(err.is_none());
    assert_eq!(chunks.len(), 5);
}
