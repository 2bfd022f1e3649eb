//! gRPC: `GrpcStatusLayer` reading statuses from real trailers, its size
//! limit and opt-out, and `GrpcClassifier` driving retry and a breaker end
//! to end, with in-process services under tokio's paused clock. A tonic
//! client and server over loopback are in the shop's `grpc` example.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use palisade::BoxError;
use palisade::circuit_breaker::{CircuitBreakerLayer, State};
use palisade::classify::{Classify, Outcome};
use palisade::http::{GrpcClassifier, GrpcReplay, GrpcStatusLayer, ReplayableBody};
use palisade::retry::{Backoff, Jitter, RetryLayer};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

const QUOTE: &str = "/shop.Prices/Quote";

/// A response body as one comes off the network: these frames, one a
/// poll, with no size hint.
struct Frames(VecDeque<Result<Frame<Bytes>, BoxError>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.0.pop_front())
    }
}

fn trailers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|&(name, value)| (name.parse().unwrap(), HeaderValue::from_static(value)))
        .collect()
}

/// A unary answer: a message in `chunks`, then these trailers.
fn answer(chunks: &[&'static str], trailer: &[(&'static str, &'static str)]) -> Response<Frames> {
    let mut frames: VecDeque<_> = chunks
        .iter()
        .map(|chunk| Ok(Frame::data(Bytes::from_static(chunk.as_bytes()))))
        .collect();
    frames.push_back(Ok(Frame::trailers(trailers(trailer))));
    Response::new(Frames(frames))
}

/// A trailers-only answer: the status in the headers, no body.
fn trailers_only(status: &'static str) -> Response<Frames> {
    let mut response = Response::new(Frames(VecDeque::new()));
    response
        .headers_mut()
        .insert("grpc-status", HeaderValue::from_static(status));
    response
}

fn request(path: &str) -> Request<Full<Bytes>> {
    Request::post(path).body(Full::default()).unwrap()
}

type Answer = Result<Response<ReplayableBody<Frames>>, BoxError>;

/// The answer `response` makes through `layer`.
async fn through(layer: &GrpcStatusLayer, path: &str, response: Response<Frames>) -> Answer {
    let response = std::sync::Mutex::new(Some(response));
    let upstream = service_fn(move |_: Request<Full<Bytes>>| {
        let response = response.lock().unwrap().take().unwrap();
        async move { Ok::<_, BoxError>(response) }
    });
    layer.layer(upstream).oneshot(request(path)).await
}

/// The body's bytes and trailers, as the caller reads them.
async fn read(answer: Answer) -> (Bytes, Option<HeaderMap>) {
    let collected = answer.unwrap().into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (collected.to_bytes(), trailers)
}

#[tokio::test(start_paused = true)]
async fn a_status_in_real_trailers_is_seen_and_the_body_handed_on_unchanged() {
    let layer = GrpcStatusLayer::default();
    let classifier = GrpcClassifier::new();
    let sent = [("grpc-status", "14"), ("grpc-message", "overloaded")];

    let unavailable = through(&layer, QUOTE, answer(&["\0\0\0\0\x02", "hi"], &sent)).await;
    assert_eq!(classifier.classify(&unavailable), Outcome::Failure);
    let (bytes, trailer) = read(unavailable).await;
    assert_eq!(bytes, "\0\0\0\0\x02hi");
    assert_eq!(trailer, Some(trailers(&sent)));

    let ok = through(
        &layer,
        QUOTE,
        answer(&["\0\0\0\0\0"], &[("grpc-status", "0")]),
    )
    .await;
    assert_eq!(classifier.classify(&ok), Outcome::Success);
    let not_found = through(&layer, QUOTE, answer(&[], &[("grpc-status", "5")])).await;
    assert_eq!(classifier.classify(&not_found), Outcome::Ignored);
    // Ended without a status: UNKNOWN, ignored by the default rule.
    let cut = Response::new(Frames(VecDeque::from([Ok(Frame::data(Bytes::from("x")))])));
    let cut = through(&layer, QUOTE, cut).await;
    assert_eq!(classifier.classify(&cut), Outcome::Ignored);
    assert_eq!(read(cut).await, (Bytes::from("x"), None));
    assert_eq!(layer.passed_unread(), 0);

    // Without the layer, the same answer looks like a success: its status
    // comes after the headers the classifier sees.
    let unseen: Result<_, BoxError> = Ok(answer(&["hi"], &sent));
    assert_eq!(classifier.classify(&unseen), Outcome::Success);
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_limit_passes_on_unread_and_whole() {
    let layer = GrpcStatusLayer::new(8).unwrap();
    let sent = [("grpc-status", "14")];
    // 6 bytes read, then a chunk that goes past 8: the rest streams.
    let big = through(&layer, QUOTE, answer(&["abcdef", "ghij", "kl"], &sent)).await;
    assert_eq!(
        GrpcClassifier::new().classify(&big),
        Outcome::Success,
        "unseen"
    );
    assert_eq!(layer.passed_unread(), 1);
    let (bytes, trailer) = read(big).await;
    assert_eq!(bytes, "abcdefghijkl");
    assert_eq!(trailer, Some(trailers(&sent)));

    // A body whose size hint says it is too big is not read at all.
    let upstream = service_fn(|_: Request<Full<Bytes>>| async {
        Ok::<_, BoxError>(Response::new(Full::new(Bytes::from_static(b"0123456789"))))
    });
    let sized = layer.layer(upstream).oneshot(request(QUOTE)).await;
    assert_eq!(layer.passed_unread(), 2);
    let body = sized.unwrap().into_body().collect().await.unwrap();
    assert_eq!(body.to_bytes(), "0123456789");

    // At the limit exactly, it is read.
    let at_limit = through(&layer, QUOTE, answer(&["abcd", "efgh"], &sent)).await;
    assert_eq!(GrpcClassifier::new().classify(&at_limit), Outcome::Failure);
    assert_eq!(layer.passed_unread(), 2);
}

#[tokio::test(start_paused = true)]
async fn trailers_only_answers_and_other_http_statuses_pass_unread() {
    let layer = GrpcStatusLayer::default();
    // A body that fails if read: these answers must not be.
    let unreadable = || {
        Frames(VecDeque::from([Err::<Frame<Bytes>, BoxError>(
            "read".into(),
        )]))
    };
    let mut only = trailers_only("14");
    *only.body_mut() = unreadable();
    let only = through(&layer, QUOTE, only).await;
    assert_eq!(GrpcClassifier::new().classify(&only), Outcome::Failure);
    assert!(only.is_ok(), "the body was read: {only:?}");

    let mut proxy = Response::new(unreadable());
    *proxy.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    let proxy = through(&layer, QUOTE, proxy).await;
    assert_eq!(GrpcClassifier::new().classify(&proxy), Outcome::Failure);
    assert!(proxy.is_ok(), "the body was read: {proxy:?}");
    assert_eq!(layer.passed_unread(), 0);
}

#[tokio::test(start_paused = true)]
async fn responses_to_methods_not_named_unary_pass_unread() {
    let layer = GrpcStatusLayer::default().unary_methods(|path| path == QUOTE);
    let upstream = service_fn(|_: Request<Full<Bytes>>| async {
        Ok::<_, BoxError>(answer(&["tick"], &[("grpc-status", "14")]))
    });
    let mut service = layer.layer(upstream);
    let classifier = GrpcClassifier::new();

    let unary = service.ready().await.unwrap().call(request(QUOTE)).await;
    assert_eq!(classifier.classify(&unary), Outcome::Failure);
    let streaming = service
        .ready()
        .await
        .unwrap()
        .call(request("/shop.Prices/Watch"))
        .await;
    assert_eq!(classifier.classify(&streaming), Outcome::Success, "unseen");
    assert_eq!(read(streaming).await.0, "tick");
    assert_eq!(service.passed_unread(), 0, "not read is not over the limit");
}

#[tokio::test(start_paused = true)]
async fn a_body_that_breaks_while_read_fails_the_call() {
    let layer = GrpcStatusLayer::default();
    let broken = Response::new(Frames(VecDeque::from([
        Ok(Frame::data(Bytes::from("half"))),
        Err("connection reset".into()),
    ])));
    let answer = through(&layer, QUOTE, broken).await;
    assert_eq!(GrpcClassifier::new().classify(&answer), Outcome::Failure);
    assert_eq!(answer.unwrap_err().to_string(), "connection reset");
}

/// An upstream that answers each call with the next of `answers`,
/// counting calls.
fn scripted(
    answers: Vec<fn() -> Response<Frames>>,
) -> (
    impl Service<Request<Full<Bytes>>, Response = Response<Frames>, Error = BoxError> + Clone,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let answers = Arc::new(answers);
    let upstream = service_fn(move |_: Request<Full<Bytes>>| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        let response = answers[n.min(answers.len() - 1)]();
        async move { Ok::<_, BoxError>(response) }
    });
    (upstream, calls)
}

fn retry(max_attempts: u32) -> RetryLayer<GrpcClassifier, GrpcReplay> {
    RetryLayer::builder()
        .classifier(GrpcClassifier::new())
        .replay(GrpcReplay::all())
        .max_attempts(max_attempts)
        .backoff(
            Backoff::constant(Duration::from_millis(100))
                .max(Duration::from_secs(5))
                .jitter(Jitter::None),
        )
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn unavailable_is_retried_end_to_end_in_headers_and_in_trailers() {
    let (upstream, calls) = scripted(vec![
        || trailers_only("14"),
        || answer(&["busy"], &[("grpc-status", "14")]),
        || answer(&["\0\0\0\0\x01!"], &[("grpc-status", "0")]),
    ]);
    let retry = retry(3);
    let handle = retry.handle();
    let client = ServiceBuilder::new()
        .layer(retry)
        .layer(GrpcStatusLayer::default())
        .service(upstream);

    let started = Instant::now();
    let (bytes, trailer) = read(client.oneshot(request(QUOTE)).await).await;
    assert_eq!(bytes, "\0\0\0\0\x01!");
    assert_eq!(trailer, Some(trailers(&[("grpc-status", "0")])));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(handle.counts().retries, 2);
    assert_eq!(handle.counts().succeeded_after_retry, 1);
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(200),
        "two backoffs"
    );
}

#[tokio::test(start_paused = true)]
async fn codes_that_are_the_callers_problem_are_not_retried() {
    let (upstream, calls) = scripted(vec![|| answer(&[], &[("grpc-status", "5")])]);
    let client = ServiceBuilder::new()
        .layer(retry(3))
        .layer(GrpcStatusLayer::default())
        .service(upstream);
    let (_, trailer) = read(client.oneshot(request(QUOTE)).await).await;
    assert_eq!(trailer.unwrap()["grpc-status"], "5");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn retry_waits_for_the_servers_pushback() {
    let (upstream, calls) = scripted(vec![
        || {
            answer(
                &[],
                &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "1500")],
            )
        },
        || answer(&[], &[("grpc-status", "0")]),
    ]);
    let client = ServiceBuilder::new()
        .layer(retry(3))
        .layer(GrpcStatusLayer::default())
        .service(upstream);
    let started = Instant::now();
    let (_, trailer) = read(client.oneshot(request(QUOTE)).await).await;
    assert_eq!(trailer.unwrap()["grpc-status"], "0");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(1500),
        "not the 100 ms backoff"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pushback_that_says_do_not_retry_is_obeyed() {
    for refusal in [
        || trailers_only_with_pushback("-1"),
        || trailers_only_with_pushback("soon"),
    ] {
        let (upstream, calls) = scripted(vec![refusal, || trailers_only("0")]);
        let retry = retry(3);
        let handle = retry.handle();
        let client = ServiceBuilder::new()
            .layer(retry)
            .layer(GrpcStatusLayer::default())
            .service(upstream);
        let response = client.oneshot(request(QUOTE)).await.unwrap();
        assert_eq!(response.headers()["grpc-status"], "14");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(handle.counts().retries, 0);
    }
}

fn trailers_only_with_pushback(pushback: &'static str) -> Response<Frames> {
    let mut response = trailers_only("14");
    response
        .headers_mut()
        .insert("grpc-retry-pushback-ms", HeaderValue::from_static(pushback));
    response
}

#[tokio::test(start_paused = true)]
async fn a_breaker_counts_unavailable_in_trailers_and_ignores_not_found() {
    let (upstream, calls) = scripted(vec![
        || answer(&[], &[("grpc-status", "5")]),
        || answer(&[], &[("grpc-status", "5")]),
        || answer(&[], &[("grpc-status", "14")]),
        || answer(&[], &[("grpc-status", "14")]),
    ]);
    let breaker = CircuitBreakerLayer::builder()
        .classifier(GrpcClassifier::new())
        .consecutive_failures(2)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut client = ServiceBuilder::new()
        .layer(breaker)
        .layer(GrpcStatusLayer::default())
        .service(upstream);
    for _ in 0..2 {
        client
            .ready()
            .await
            .unwrap()
            .call(request(QUOTE))
            .await
            .unwrap();
    }
    assert_eq!(handle.snapshot().calls, 0, "NOT_FOUND counts neither way");
    for _ in 0..2 {
        client
            .ready()
            .await
            .unwrap()
            .call(request(QUOTE))
            .await
            .unwrap();
    }
    assert_eq!(handle.state(), State::Open);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn grpc_replay_copies_calls_to_the_methods_it_names_whole() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let upstream = service_fn(move |request: Request<Full<Bytes>>| {
        let content_type = request.headers().get("content-type").cloned();
        record
            .lock()
            .unwrap()
            .push((request.uri().path().to_owned(), content_type));
        async { Ok::<_, BoxError>(trailers_only("14")) }
    });
    let retry = RetryLayer::builder()
        .classifier(GrpcClassifier::new())
        .replay(GrpcReplay::methods(|path| path == QUOTE))
        .max_attempts(2)
        .build()
        .unwrap();
    let mut client = ServiceBuilder::new().layer(retry).service(upstream);
    for path in [QUOTE, "/shop.Orders/Place"] {
        let mut call = request(path);
        call.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        client.ready().await.unwrap().call(call).await.unwrap();
    }
    let grpc = Some(HeaderValue::from_static("application/grpc"));
    let seen = seen.lock().unwrap();
    assert_eq!(
        *seen,
        [
            (QUOTE.to_owned(), grpc.clone()),
            (QUOTE.to_owned(), grpc.clone()),
            ("/shop.Orders/Place".to_owned(), grpc),
        ],
        "a retry sends the same call, and only to the methods named"
    );
}
