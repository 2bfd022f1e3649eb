//! The http module: classification, Retry-After, retry eligibility,
//! rejections as responses and rate-limit headers, with in-process
//! services under tokio's paused clock. The loopback round trips through
//! hyper are in `tests/http_hyper.rs`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Either, Empty, Full};
use palisade::classify::{Classify, Outcome};
use palisade::http::{
    BufferRequestBodyLayer, ErrorResponseLayer, IdempotentReplay, RateLimitHeaders, ReplayBody,
    ReplayableBody, StatusClassifier, bad_gateway_response, default_outcome, error_response,
    is_idempotent, parse_retry_after,
};
use palisade::retry::{Backoff, Jitter, Replay, RetryLayer};
use palisade::{BoxError, ErrorKind};
use serde_json::Value;
use tokio::time::{Instant, advance};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn response(status: u16) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::default());
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response
}

fn with_retry_after(status: u16, value: &'static str) -> Response<Full<Bytes>> {
    let mut response = response(status);
    response
        .headers_mut()
        .insert("retry-after", HeaderValue::from_static(value));
    response
}

// ------------------------------------------------------------- classifier

#[test]
fn every_status_is_classified_by_the_table() {
    let classifier = StatusClassifier::new();
    for code in 100..=999u16 {
        let result = Ok::<_, BoxError>(response(code));
        let expected = if (500..600).contains(&code) || code == 408 || code == 429 {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        assert_eq!(classifier.classify(&result), expected, "status {code}");
        assert_eq!(
            default_outcome(StatusCode::from_u16(code).unwrap()),
            expected
        );
    }
}

#[test]
fn errors_are_classified_as_the_default_classifier_does() {
    let classifier = StatusClassifier::new();
    let refused: Result<Response<Full<Bytes>>, BoxError> = Err(Box::new(std::io::Error::from(
        std::io::ErrorKind::ConnectionRefused,
    )));
    assert_eq!(
        classifier.classify(&refused),
        Outcome::Failure,
        "a connect error"
    );
    let limited: Result<Response<Full<Bytes>>, BoxError> = Err(Box::new(
        palisade::error::RateLimited::new("below", Some(secs(3))),
    ));
    assert_eq!(
        classifier.classify(&limited),
        Outcome::Ignored,
        "a refusal below"
    );
    assert_eq!(classifier.retry_after(&limited), Some(secs(3)));
    // An error type that is not a BoxError is a failure too.
    let io: Result<Response<()>, std::io::Error> = Err(std::io::ErrorKind::TimedOut.into());
    assert_eq!(classifier.classify(&io), Outcome::Failure);
}

#[test]
fn the_status_rule_can_be_changed_for_one_upstream() {
    let lagging = StatusClassifier::by_status(|status| match status {
        StatusCode::NOT_FOUND => Outcome::Failure,
        StatusCode::SERVICE_UNAVAILABLE => Outcome::Ignored,
        other => default_outcome(other),
    });
    assert_eq!(
        lagging.classify(&Ok::<_, BoxError>(response(404))),
        Outcome::Failure
    );
    assert_eq!(
        lagging.classify(&Ok::<_, BoxError>(response(503))),
        Outcome::Ignored
    );
    assert_eq!(
        lagging.classify(&Ok::<_, BoxError>(response(500))),
        Outcome::Failure
    );
    assert_eq!(
        lagging.classify(&Ok::<_, BoxError>(response(200))),
        Outcome::Success
    );
}

#[test]
fn a_response_with_no_body_and_no_headers_is_classified_by_its_status() {
    // Bad input: an empty 503, a bare 200.
    let classifier = StatusClassifier::new();
    let empty = Response::builder()
        .status(503)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let result = Ok::<_, BoxError>(empty);
    assert_eq!(classifier.classify(&result), Outcome::Failure);
    assert_eq!(classifier.retry_after(&result), None);
}

// ------------------------------------------------------------ Retry-After

/// 1994-11-06 08:49:07 GMT: 30 s before the RFC 9110 example date.
fn rfc_now() -> SystemTime {
    UNIX_EPOCH + secs(784_111_747)
}

fn parse(value: &[u8]) -> Option<Duration> {
    parse_retry_after(&HeaderValue::from_bytes(value).unwrap(), rfc_now())
}

#[test]
fn retry_after_reads_delay_seconds() {
    assert_eq!(parse(b"120"), Some(secs(120)));
    assert_eq!(parse(b"1"), Some(secs(1)));
    assert_eq!(parse(b"007"), Some(secs(7)));
    assert_eq!(parse(b" 5 "), Some(secs(5)), "surrounding whitespace");
    assert_eq!(
        parse(b"18446744073709551615"),
        Some(secs(u64::MAX)),
        "the largest that fits"
    );
    assert_eq!(parse(b"0"), None, "no wait at all");
}

#[test]
fn retry_after_reads_all_three_date_formats() {
    let thirty = Some(secs(30));
    assert_eq!(
        parse(b"Sun, 06 Nov 1994 08:49:37 GMT"),
        thirty,
        "IMF-fixdate"
    );
    assert_eq!(parse(b"Sunday, 06-Nov-94 08:49:37 GMT"), thirty, "RFC 850");
    assert_eq!(parse(b"Sun Nov  6 08:49:37 1994"), thirty, "asctime");
}

#[test]
fn retry_after_ignores_garbage_and_the_past() {
    for garbage in [
        &b""[..],
        b"   ",
        b"soon",
        b"+5",
        b"-5",
        b"1.5",
        b"1e3",
        b"5 seconds",
        b"18446744073709551616",                   // one past u64
        b"99999999999999999999999999999999999999", // far past it
        b"Sun, 32 Nov 1994 08:49:37 GMT",          // no such day
        b"Sun, 06 Nov 1994 25:49:37 GMT",          // no such hour
        b"Sun, 06 Nov 1994 08:49:37 PST",          // not GMT
        b"\x80\xff",                               // not text
        b"Sun, 06 Nov 1994 08:49:07 GMT",          // now
        b"Sun, 06 Nov 1994 08:00:00 GMT",          // past
        b"Thu, 01 Jan 1970 00:00:00 GMT",          // long past
    ] {
        assert_eq!(
            parse(garbage),
            None,
            "{:?}",
            String::from_utf8_lossy(garbage)
        );
    }
    // A date far ahead is well-formed: the layers cap what they honour.
    assert!(parse(b"Fri, 31 Dec 9999 23:59:59 GMT").unwrap() > secs(250_000_000_000));
}

#[test]
fn the_classifier_reads_retry_after_from_the_response() {
    let classifier = StatusClassifier::new();
    let result = Ok::<_, BoxError>(with_retry_after(503, "7"));
    assert_eq!(classifier.retry_after(&result), Some(secs(7)));
    let result = Ok::<_, BoxError>(with_retry_after(429, "a while"));
    assert_eq!(classifier.retry_after(&result), None, "malformed: ignored");
    // An HTTP-date is read against the system clock.
    let later = httpdate::fmt_http_date(SystemTime::now() + secs(120));
    let mut dated = response(503);
    dated
        .headers_mut()
        .insert("retry-after", later.parse().unwrap());
    let wait = classifier.retry_after(&Ok::<_, BoxError>(dated)).unwrap();
    assert!(wait > secs(100) && wait <= secs(120), "{wait:?}");
}

// ------------------------------------------------------------ eligibility

fn request(method: Method, key: Option<&'static str>) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(Bytes::from_static(b"{\"quantity\":1}")));
    *request.method_mut() = method;
    if let Some(key) = key {
        request
            .headers_mut()
            .insert("idempotency-key", HeaderValue::from_static(key));
    }
    request
}

#[test]
fn idempotent_methods_are_eligible_and_post_and_patch_need_a_key() {
    let table = [
        (Method::GET, true, true),
        (Method::HEAD, true, true),
        (Method::OPTIONS, true, true),
        (Method::TRACE, true, true),
        (Method::PUT, true, true),
        (Method::DELETE, true, true),
        (Method::POST, false, true),
        (Method::PATCH, false, true),
        (Method::CONNECT, false, false),
        (Method::from_bytes(b"PURGE").unwrap(), false, false),
    ];
    for (method, without_key, with_key) in table {
        assert_eq!(
            is_idempotent(&request(method.clone(), None)),
            without_key,
            "{method}"
        );
        assert_eq!(
            is_idempotent(&request(method.clone(), Some("k-1"))),
            with_key,
            "{method} with a key"
        );
    }
    assert!(
        !is_idempotent(&request(Method::POST, Some(""))),
        "an empty key is no key"
    );
}

#[test]
fn a_replayed_request_is_a_full_copy() {
    #[derive(Clone, Debug, PartialEq)]
    struct Trace(u32);
    let mut original = request(Method::PUT, None);
    *original.uri_mut() = "http://shop.test/products/7?x=1".parse().unwrap();
    *original.version_mut() = http::Version::HTTP_11;
    original
        .headers_mut()
        .insert("x-request-id", HeaderValue::from_static("r-9"));
    original
        .headers_mut()
        .append("accept", HeaderValue::from_static("a/b"));
    original
        .headers_mut()
        .append("accept", HeaderValue::from_static("c/d"));
    original.extensions_mut().insert(Trace(3));
    let copy = IdempotentReplay::new()
        .replay(&original)
        .expect("a PUT with a full body");
    assert_eq!(copy.method(), original.method());
    assert_eq!(copy.uri(), original.uri());
    assert_eq!(copy.version(), original.version());
    assert_eq!(copy.headers(), original.headers());
    assert_eq!(copy.extensions().get::<Trace>(), Some(&Trace(3)));
    let body = futures_body(copy.into_body());
    assert_eq!(body, Bytes::from_static(b"{\"quantity\":1}"));
}

fn futures_body<B: http_body::Body<Data = Bytes>>(body: B) -> Bytes
where
    B::Error: std::fmt::Debug,
{
    tokio_test::block_on(body.collect()).unwrap().to_bytes()
}

#[test]
fn only_bodies_that_can_be_sent_twice_are_copied() {
    let replay = IdempotentReplay::new();
    fn get<B>(body: B) -> Request<B> {
        let mut request = Request::new(body);
        *request.method_mut() = Method::GET;
        request
    }
    assert!(replay.replay(&get(Full::new(Bytes::from("x")))).is_some());
    assert!(replay.replay(&get(Empty::<Bytes>::new())).is_some());
    assert!(replay.replay(&get(String::from("text"))).is_some());
    assert!(replay.replay(&get(Bytes::from("bytes"))).is_some());
    // A boxed (possibly streaming) body does not compile here (see the
    // compile_fail example on `IdempotentReplay`); buffered, it is copied,
    // and passed on streaming, it is declined.
    type Boxed = BoxBody<Bytes, Infallible>;
    let buffered = ReplayableBody::<Boxed>::buffered(Bytes::from("x"));
    let copy = replay.replay(&get(buffered)).expect("a buffered body");
    assert_eq!(futures_body(copy.into_body()), "x");
    let streaming = ReplayableBody::streaming(Full::new(Bytes::from("x")).boxed());
    assert!(replay.replay(&get(streaming)).is_none());
    // A body type of one's own says how to copy it.
    #[derive(Clone)]
    struct Owned(Vec<u8>);
    impl ReplayBody for Owned {
        fn replay_body(&self) -> Option<Self> {
            Some(self.clone())
        }
    }
    assert_eq!(
        replay.replay(&get(Owned(vec![1]))).map(|r| r.into_body().0),
        Some(vec![1])
    );
    // One from another crate, through a function.
    let vec = IdempotentReplay::new().copy_body_with(|body: &Vec<u8>| Some(body.clone()));
    assert_eq!(
        vec.replay(&get(vec![2])).map(Request::into_body),
        Some(vec![2])
    );
    // And the method still rules.
    let mut post = get(Owned(vec![1]));
    *post.method_mut() = Method::POST;
    assert!(replay.replay(&post).is_none());
}

// ------------------------------------------------------------------ retry

/// An upstream answering `script` in turn (then 200s), counting calls.
fn scripted<B: Send + 'static>(
    script: Vec<Response<Full<Bytes>>>,
) -> (
    impl Service<Request<B>, Response = Response<Full<Bytes>>, Error = BoxError, Future: Send> + Clone,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let script = Arc::new(std::sync::Mutex::new(script.into_iter()));
    let svc = service_fn(move |_: Request<B>| {
        seen.fetch_add(1, Ordering::SeqCst);
        let next = script
            .lock()
            .unwrap()
            .next()
            .unwrap_or_else(|| response(200));
        async move { Ok::<_, BoxError>(next) }
    });
    (svc, calls)
}

fn http_retry(max: Duration) -> RetryLayer<StatusClassifier, IdempotentReplay> {
    RetryLayer::builder()
        .max_attempts(3)
        .backoff(
            Backoff::constant(Duration::from_millis(100))
                .max(max)
                .jitter(Jitter::None),
        )
        .classifier(StatusClassifier::new())
        .replay(IdempotentReplay::new())
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_streaming_body_is_sent_once_and_never_retried() {
    type Streaming = ReplayableBody<BoxBody<Bytes, Infallible>>;
    let (upstream, calls) = scripted::<Streaming>(vec![response(503), response(503)]);
    let svc = http_retry(secs(5)).layer(upstream);
    let body = ReplayableBody::streaming(Full::new(Bytes::from("stream")).boxed());
    let answer = svc
        .oneshot(Request::get("/x").body(body).unwrap())
        .await
        .unwrap();
    assert_eq!(answer.status(), 503, "the first answer stands");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // The same request with a body in memory is retried until it works.
    let (upstream, calls) = scripted::<Full<Bytes>>(vec![response(503), response(503)]);
    let svc = http_retry(secs(5)).layer(upstream);
    let answer = svc
        .oneshot(Request::get("/x").body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_post_is_retried_only_with_an_idempotency_key() {
    for (key, expected_calls) in [(None, 1), (Some("order-1"), 2)] {
        let (upstream, calls) = scripted::<Full<Bytes>>(vec![response(502)]);
        let svc = http_retry(secs(5)).layer(upstream);
        let answer = svc.oneshot(request(Method::POST, key)).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), expected_calls, "key {key:?}");
        assert_eq!(answer.status(), if key.is_some() { 200 } else { 502 });
    }
}

#[tokio::test(start_paused = true)]
async fn retry_waits_as_long_as_retry_after_asks() {
    let (upstream, calls) = scripted::<Full<Bytes>>(vec![with_retry_after(429, "3")]);
    let svc = http_retry(secs(10)).layer(upstream);
    let started = Instant::now();
    let call = tokio::spawn(svc.oneshot(request(Method::GET, None)));
    tokio::task::yield_now().await; // the first attempt, at 0
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The backoff alone would have retried after 100 ms.
    advance(Duration::from_millis(2_999)).await;
    tokio::task::yield_now().await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "not before the three seconds"
    );
    advance(Duration::from_millis(1)).await;
    let answer = call.await.unwrap().unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(started.elapsed(), secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_the_backoff_maximum_returns_the_response() {
    // Waiting 2 minutes is more than this retry may wait: it gives the 503
    // back, Retry-After and all, rather than call again early.
    let (upstream, calls) = scripted::<Full<Bytes>>(vec![with_retry_after(503, "120")]);
    let svc = http_retry(secs(5)).layer(upstream);
    let started = Instant::now();
    let answer = svc.oneshot(request(Method::GET, None)).await.unwrap();
    assert_eq!(answer.status(), 503);
    assert_eq!(answer.headers()["retry-after"], "120");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_malformed_retry_after_falls_back_to_the_backoff() {
    let (upstream, calls) = scripted::<Full<Bytes>>(vec![with_retry_after(503, "tomorrow-ish")]);
    let svc = http_retry(secs(5)).layer(upstream);
    let started = Instant::now();
    let answer = svc.oneshot(request(Method::GET, None)).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(started.elapsed(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn a_breaker_opens_for_an_upstreams_retry_after() {
    use palisade::circuit_breaker::{CircuitBreakerLayer, State};
    let breaker = CircuitBreakerLayer::builder()
        .classifier(StatusClassifier::new())
        .open_on_retry_after(secs(60))
        .build()
        .unwrap();
    let handle = breaker.handle();
    let (upstream, calls) = scripted::<Full<Bytes>>(vec![with_retry_after(503, "30")]);
    let mut svc = breaker.layer(upstream);
    let first = svc
        .ready()
        .await
        .unwrap()
        .call(request(Method::GET, None))
        .await
        .unwrap();
    assert_eq!(first.status(), 503);
    assert_eq!(handle.state(), State::Open);
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(request(Method::GET, None))
        .await
        .unwrap_err();
    let ErrorKind::CircuitOpen(open) = ErrorKind::of(&err) else {
        panic!("{err}")
    };
    assert_eq!(open.retry_after(), Some(secs(30)));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    advance(secs(30)).await;
    let probe = svc
        .ready()
        .await
        .unwrap()
        .call(request(Method::GET, None))
        .await
        .unwrap();
    assert_eq!(probe.status(), 200);
}

// ------------------------------------------------ buffering request bodies

/// A request body that comes in `frames`, ending in an error if one is
/// given, of the length `hint` says (by default, one it does not say);
/// counts the frames taken from it.
struct Chunks {
    frames: std::collections::VecDeque<Result<Frame<Bytes>, BoxError>>,
    hint: SizeHint,
    taken: Arc<AtomicUsize>,
}

impl Chunks {
    fn new(chunks: &[&'static str]) -> Self {
        let frames = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        Chunks {
            frames,
            hint: SizeHint::new(),
            taken: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn then(mut self, frame: Result<Frame<Bytes>, BoxError>) -> Self {
        self.frames.push_back(frame);
        self
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = self.frames.pop_front();
        if frame.is_some() {
            self.taken.fetch_add(1, Ordering::SeqCst);
        }
        std::task::Poll::Ready(frame)
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

/// What the upstream read of each attempt's body, in order.
type Attempts = Arc<std::sync::Mutex<Vec<Attempt>>>;

/// What the upstream read of one attempt's body.
#[derive(Clone, Debug, Default, PartialEq)]
struct Attempt {
    data: Vec<u8>,
    trailers: Option<HeaderMap>,
    error: Option<String>,
    buffered: bool,
    // Frames taken from the original body before this attempt was sent.
    taken_before: usize,
}

/// An upstream answering `script` in turn (then 200s), reading each
/// attempt's body to its end (or its error).
fn reading_upstream(
    script: Vec<Response<Full<Bytes>>>,
    taken: Arc<AtomicUsize>,
) -> (
    impl Service<
        Request<ReplayableBody<Chunks>>,
        Response = Response<Full<Bytes>>,
        Error = BoxError,
        Future: Send,
    > + Clone,
    Attempts,
) {
    let attempts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let script = Arc::new(std::sync::Mutex::new(script.into_iter()));
    let svc = service_fn(move |request: Request<ReplayableBody<Chunks>>| {
        let next = script
            .lock()
            .unwrap()
            .next()
            .unwrap_or_else(|| response(200));
        let seen = seen.clone();
        let taken_before = taken.load(Ordering::SeqCst);
        async move {
            let mut body = request.into_body();
            let mut attempt = Attempt {
                buffered: body.is_buffered(),
                taken_before,
                ..Attempt::default()
            };
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => match frame.into_data() {
                        Ok(data) => attempt.data.extend_from_slice(&data),
                        Err(frame) => attempt.trailers = frame.into_trailers().ok(),
                    },
                    Err(error) => {
                        attempt.error = Some(error.to_string());
                        break;
                    }
                }
            }
            seen.lock().unwrap().push(attempt);
            Ok::<_, BoxError>(next)
        }
    });
    (svc, attempts)
}

#[test]
fn a_buffer_of_zero_bytes_is_refused() {
    let err = BufferRequestBodyLayer::new(0).unwrap_err();
    assert_eq!(err.field(), "max_bytes");
    assert!(BufferRequestBodyLayer::new(1).is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_body_within_the_limit_is_buffered_and_each_attempt_sends_all_of_it() {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("c1"));
    let body = Chunks::new(&["{\"qty\":", "1", "}"]).then(Ok(Frame::trailers(trailers.clone())));
    let (upstream, attempts) = reading_upstream(vec![response(503)], body.taken.clone());
    let buffer = BufferRequestBodyLayer::new(9).unwrap();
    let svc = ServiceBuilder::new()
        .layer(buffer.clone())
        .layer(http_retry(secs(5)))
        .service(upstream);
    let answer = svc
        .oneshot(Request::put("/cart/1").body(body).unwrap())
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "retried after the 503");
    let attempt = Attempt {
        data: b"{\"qty\":1}".to_vec(),
        trailers: Some(trailers),
        error: None,
        buffered: true,
        taken_before: 4,
    };
    let attempts = attempts.lock().unwrap();
    assert_eq!(*attempts, [attempt.clone(), attempt]);
    assert_eq!(buffer.passed_unbuffered(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_limit_is_sent_once_whole_and_counted() {
    // Of a length it does not say: two chunks are read before it is known
    // to be too big, and they go first.
    let body = Chunks::new(&["aaaa", "bbbb", "cccc", "dddd"]);
    let (upstream, attempts) = reading_upstream(vec![response(503)], body.taken.clone());
    let buffer = BufferRequestBodyLayer::new(6).unwrap();
    let svc = ServiceBuilder::new()
        .layer(buffer.clone())
        .layer(http_retry(secs(5)))
        .service(upstream);
    let answer = svc
        .oneshot(Request::put("/cart/1").body(body).unwrap())
        .await
        .unwrap();
    assert_eq!(answer.status(), 503, "not retried: the first answer stands");
    let expected = Attempt {
        data: b"aaaabbbbccccdddd".to_vec(),
        taken_before: 2,
        ..Attempt::default()
    };
    assert_eq!(*attempts.lock().unwrap(), [expected]);
    assert_eq!(buffer.passed_unbuffered(), 1);

    // One that says it is too big is not read at all before it is sent.
    let mut body = Chunks::new(&["aaaa", "bbbb"]);
    body.hint = SizeHint::with_exact(8);
    let (upstream, attempts) = reading_upstream(vec![response(503)], body.taken.clone());
    let svc = ServiceBuilder::new()
        .layer(buffer.clone())
        .layer(http_retry(secs(5)))
        .service(upstream);
    let answer = svc
        .oneshot(Request::put("/cart/1").body(body).unwrap())
        .await
        .unwrap();
    assert_eq!(answer.status(), 503);
    let expected = Attempt {
        data: b"aaaabbbb".to_vec(),
        ..Attempt::default()
    };
    assert_eq!(*attempts.lock().unwrap(), [expected]);
    assert_eq!(buffer.passed_unbuffered(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_body_that_fails_while_read_passes_its_error_to_the_service() {
    let body = Chunks::new(&["abc", "def"]).then(Err("connection reset".into()));
    let (upstream, attempts) = reading_upstream(vec![response(503)], body.taken.clone());
    let buffer = BufferRequestBodyLayer::new(1024).unwrap();
    let svc = ServiceBuilder::new()
        .layer(buffer.clone())
        .layer(http_retry(secs(5)))
        .service(upstream);
    let answer = svc
        .oneshot(Request::put("/cart/1").body(body).unwrap())
        .await
        .unwrap();
    // The service answered as it saw fit; nothing was invented here, and
    // a request whose body is gone is not retried.
    assert_eq!(answer.status(), 503);
    let expected = Attempt {
        data: b"abcdef".to_vec(),
        error: Some("connection reset".into()),
        taken_before: 3,
        ..Attempt::default()
    };
    assert_eq!(*attempts.lock().unwrap(), [expected]);
    assert_eq!(buffer.passed_unbuffered(), 1);
}

// ------------------------------------------------ rejections as responses

type Answer = Response<Either<Full<Bytes>, Full<Bytes>>>;

/// The answer's JSON body.
async fn json(answer: Answer) -> (http::response::Parts, Value) {
    let (parts, body) = answer.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts, serde_json::from_slice(&bytes).expect("a JSON body"))
}

/// An upstream that answers 200 "ok" at once.
fn ok_upstream()
-> impl Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = BoxError, Future: Send>
+ Clone {
    service_fn(|_: Request<Full<Bytes>>| async {
        Ok::<_, BoxError>(Response::new(Full::new(Bytes::from("ok"))))
    })
}

async fn answer<S>(svc: &mut S) -> Answer
where
    S: Service<Request<Full<Bytes>>, Response = Answer, Error = Infallible>,
{
    let Ok(svc) = svc.ready().await;
    let Ok(answer) = svc.call(request(Method::GET, None)).await;
    answer
}

#[tokio::test(start_paused = true)]
async fn a_response_passes_through_unchanged() {
    let mut svc = ErrorResponseLayer::new().layer(ok_upstream());
    let answer = answer(&mut svc).await;
    assert_eq!(answer.status(), 200);
    let bytes = answer.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(bytes, "ok");
}

#[tokio::test(start_paused = true)]
async fn rate_limited_is_429_with_retry_after_and_rate_limit_headers() {
    use palisade::rate_limit::RateLimitLayer;
    let mut svc = ServiceBuilder::new()
        .layer(ErrorResponseLayer::new())
        .layer(
            RateLimitLayer::sliding_log(1, secs(10))
                .name("ingress")
                .build()
                .unwrap(),
        )
        .service(ok_upstream());
    assert_eq!(answer(&mut svc).await.status(), 200);
    advance(Duration::from_millis(2_500)).await;
    let (parts, body) = json(answer(&mut svc).await).await;
    assert_eq!(parts.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(parts.headers["content-type"], "application/json");
    assert_eq!(parts.headers["retry-after"], "8", "7.5 s, rounded up");
    assert_eq!(parts.headers["ratelimit-limit"], "1");
    assert_eq!(parts.headers["ratelimit-remaining"], "0");
    assert_eq!(parts.headers["ratelimit-reset"], "8");
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["retry_after"], 8);
    assert!(
        body["message"].as_str().unwrap().contains("`ingress`"),
        "{body}"
    );
}

#[tokio::test(start_paused = true)]
async fn circuit_open_is_503_with_retry_after_when_the_wait_is_known() {
    use palisade::circuit_breaker::CircuitBreakerLayer;
    let breaker = CircuitBreakerLayer::builder()
        .name("products")
        .open_for(secs(5))
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut svc = ServiceBuilder::new()
        .layer(ErrorResponseLayer::new())
        .layer(breaker)
        .service(ok_upstream());
    handle.open();
    let (parts, body) = json(answer(&mut svc).await).await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(parts.headers["retry-after"], "5");
    assert_eq!(body["error"], "circuit_open");
    assert_eq!(body["retry_after"], 5);
    assert!(body["message"].as_str().unwrap().contains("`products`"));
    // Held open by hand: no wait is known, so none is promised.
    handle.force_open();
    let (parts, body) = json(answer(&mut svc).await).await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(parts.headers.get("retry-after").is_none());
    assert!(body.get("retry_after").is_none(), "{body}");
}

#[tokio::test(start_paused = true)]
async fn bulkhead_full_is_503_and_elapsed_is_504() {
    use palisade::bulkhead::BulkheadLayer;
    use palisade::timeout::TimeoutLayer;
    let hung = service_fn(|_: Request<Full<Bytes>>| async {
        std::future::pending::<()>().await;
        Ok::<Response<Full<Bytes>>, BoxError>(Response::new(Full::default()))
    });
    let svc = ServiceBuilder::new()
        .layer(ErrorResponseLayer::new())
        .layer(TimeoutLayer::new(secs(2)).unwrap())
        .layer(
            BulkheadLayer::builder()
                .name("pay")
                .max_concurrent(1)
                .build()
                .unwrap(),
        )
        .service(hung);
    let first = tokio::spawn(svc.clone().oneshot(request(Method::GET, None)));
    tokio::task::yield_now().await;
    // The one slot is taken: the next call is shed at once.
    let Ok(full) = svc.clone().oneshot(request(Method::GET, None)).await;
    let (parts, body) = json(full).await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "bulkhead_full");
    assert!(parts.headers.get("retry-after").is_none());
    // The first one times out.
    advance(secs(2)).await;
    let (parts, body) = json(first.await.unwrap().unwrap()).await;
    assert_eq!(parts.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body["error"], "timeout");
    assert!(body["message"].as_str().unwrap().contains("2s"), "{body}");
}

/// A throttle's refusal is a 503 with no `Retry-After`: it was a draw, and
/// the next call may go through at once.
#[cfg(feature = "throttle")]
#[tokio::test(start_paused = true)]
async fn throttled_is_503_without_retry_after() {
    use palisade::throttle::ThrottleLayer;
    let throttle = ThrottleLayer::builder()
        .name("products")
        .seed(1)
        .min_requests(0)
        .classifier(StatusClassifier::new())
        .build()
        .unwrap();
    let handle = throttle.handle();
    let overloaded = service_fn(|_: Request<Full<Bytes>>| async {
        let mut response = Response::new(Full::default());
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        Ok::<_, BoxError>(response)
    });
    let mut svc = ServiceBuilder::new()
        .layer(ErrorResponseLayer::new())
        .layer(throttle)
        .service(overloaded);
    // 503s from the upstream pass through until the throttle refuses one.
    for _ in 0..20 {
        let refused = handle.rejected();
        let answer = answer(&mut svc).await;
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        if handle.rejected() == refused {
            continue;
        }
        let (parts, body) = json(answer).await;
        assert_eq!(body["error"], "throttled");
        assert!(parts.headers.get("retry-after").is_none());
        assert!(body.get("retry_after").is_none(), "{body}");
        assert!(body["message"].as_str().unwrap().contains("`products`"));
        return;
    }
    panic!("the throttle never refused");
}

/// A handler that calls a palisade-wrapped client without readiness is a
/// bug in this server, not the client's doing: a 500 `not_ready`, with
/// nothing to wait for.
#[tokio::test(start_paused = true)]
async fn not_ready_is_500_without_retry_after() {
    use palisade::bulkhead::BulkheadLayer;
    let client = BulkheadLayer::builder()
        .name("products")
        .max_concurrent(4)
        .build()
        .unwrap()
        .layer(ok_upstream());
    let skips_readiness = service_fn(move |request: Request<Full<Bytes>>| {
        // A clone holds no slot, and this `call` skips `poll_ready`.
        let mut client = client.clone();
        async move { client.call(request).await }
    });
    let mut svc = ErrorResponseLayer::new().layer(skips_readiness);
    let (parts, body) = json(answer(&mut svc).await).await;
    assert_eq!(parts.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"], "not_ready");
    assert!(parts.headers.get("retry-after").is_none());
    assert!(body.get("retry_after").is_none(), "{body}");
    assert!(body["message"].as_str().unwrap().contains("`products`"));
}

fn failing(
    err: fn() -> BoxError,
) -> impl Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = BoxError> + Clone
{
    service_fn(move |_: Request<Full<Bytes>>| async move { Err::<Response<Full<Bytes>>, _>(err()) })
}

#[tokio::test(start_paused = true)]
async fn other_errors_are_502_for_an_upstream_and_500_otherwise_without_their_text() {
    let refused = || -> BoxError {
        // As hyper-util wraps a refused connection: an I/O error inside.
        #[derive(Debug)]
        struct Connect(std::io::Error);
        impl std::fmt::Display for Connect {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl std::error::Error for Connect {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        Box::new(Connect(std::io::ErrorKind::ConnectionRefused.into()))
    };
    let mut svc = ErrorResponseLayer::new().layer(failing(refused));
    let (parts, body) = json(answer(&mut svc).await).await;
    assert_eq!(parts.status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["error"], "upstream_failed");

    let mut svc =
        ErrorResponseLayer::new().layer(failing(|| "db password=hunter2 rejected".into()));
    let (parts, body) = json(answer(&mut svc).await).await;
    assert_eq!(parts.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"], "internal");
    assert!(
        !body.to_string().contains("hunter2"),
        "an inner error's text is not sent"
    );

    // A gateway says every inner error is the upstream's.
    let mut svc = ErrorResponseLayer::new()
        .other_errors(bad_gateway_response)
        .layer(failing(|| "anything".into()));
    assert_eq!(answer(&mut svc).await.status(), StatusCode::BAD_GATEWAY);

    // Or answers as it likes.
    let mut svc = ErrorResponseLayer::new()
        .other_errors(|err: &BoxError| {
            error_response(
                StatusCode::IM_A_TEAPOT,
                "teapot",
                &err.to_string(),
                Some(secs(1)),
            )
        })
        .layer(failing(|| "short and stout".into()));
    let (parts, body) = json(answer(&mut svc).await).await;
    assert_eq!(parts.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(body["message"], "short and stout");
    assert_eq!(parts.headers["retry-after"], "1");
}

#[tokio::test(start_paused = true)]
async fn a_poll_ready_error_is_answered_and_the_inner_service_is_not_called() {
    #[derive(Clone)]
    struct Broken(Arc<AtomicUsize>);
    impl Service<Request<Full<Bytes>>> for Broken {
        type Response = Response<Full<Bytes>>;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Self::Response, BoxError>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), BoxError>> {
            std::task::Poll::Ready(Err("worker gone".into()))
        }
        fn call(&mut self, _: Request<Full<Bytes>>) -> Self::Future {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(Response::new(Full::default())))
        }
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = ErrorResponseLayer::new().layer(Broken(calls.clone()));
    for _ in 0..2 {
        assert_eq!(
            answer(&mut svc).await.status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------- rate-limit headers

#[tokio::test(start_paused = true)]
async fn rate_limit_headers_on_admitted_responses_of_a_direct_limiter() {
    use palisade::rate_limit::RateLimitLayer;
    for (layer, reset) in [
        (RateLimitLayer::sliding_log(3, secs(60)), ["60", "60", "60"]),
        (
            RateLimitLayer::sliding_window(3, secs(60)),
            ["120", "120", "120"],
        ),
        (RateLimitLayer::gcra(3, secs(60)), ["20", "40", "60"]),
    ] {
        let mut svc = ServiceBuilder::new()
            .layer(ErrorResponseLayer::new())
            .layer(layer.build().unwrap().report_state(RateLimitHeaders))
            .service(ok_upstream());
        for (remaining, reset) in ["2", "1", "0"].into_iter().zip(reset) {
            let answer = answer(&mut svc).await;
            assert_eq!(answer.status(), 200);
            assert_eq!(answer.headers()["ratelimit-limit"], "3");
            assert_eq!(answer.headers()["ratelimit-remaining"], remaining);
            assert_eq!(answer.headers()["ratelimit-reset"], reset);
        }
        let limited = answer(&mut svc).await;
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()["ratelimit-remaining"], "0");
        assert!(limited.headers().contains_key("retry-after"));
    }
}

/// scenario FX-1: a fixed window of 10 per 60 s, windows [0, 60 s) and
/// [60 s, 120 s), with the headers on. `Retry-After` is the exact wait
/// rounded up to whole seconds, never 0 before the window ends; the instant
/// 60 s is the next window's; a limit lowered below what the window has
/// admitted refuses with the real wait and `RateLimit-Remaining: 0`.
#[tokio::test(start_paused = true)]
async fn a_fixed_window_answers_with_the_wait_to_its_end_rounded_up() {
    use palisade::rate_limit::RateLimitLayer;
    let layer = RateLimitLayer::fixed_window(10, secs(60))
        .build()
        .unwrap()
        .report_state(RateLimitHeaders);
    let handle = layer.handle();
    let start = Instant::now();
    let at = |ms: u64| start + Duration::from_millis(ms) - Instant::now();
    let mut svc = ServiceBuilder::new()
        .layer(ErrorResponseLayer::new())
        .layer(layer)
        .service(ok_upstream());
    for _ in 0..10 {
        assert_eq!(answer(&mut svc).await.status(), 200);
    }
    for (t, retry_after) in [(45_000, "15"), (59_400, "1"), (59_999, "1")] {
        advance(at(t)).await;
        let limited = answer(&mut svc).await;
        assert_eq!(limited.status(), 429, "at {t} ms");
        assert_eq!(limited.headers()["retry-after"], retry_after, "at {t} ms");
        assert_eq!(limited.headers()["ratelimit-remaining"], "0");
    }
    advance(at(60_000)).await;
    let admitted = answer(&mut svc).await;
    assert_eq!(admitted.status(), 200, "60 s is the next window's");
    assert_eq!(admitted.headers()["ratelimit-remaining"], "9");
    assert_eq!(admitted.headers()["ratelimit-reset"], "60");
    advance(at(60_500)).await;
    for _ in 0..6 {
        assert_eq!(answer(&mut svc).await.status(), 200);
    }
    advance(at(61_000)).await;
    handle.set_limit(5, secs(60)).unwrap();
    let limited = answer(&mut svc).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "59", "until 120 s");
    assert_eq!(limited.headers()["ratelimit-limit"], "5");
    assert_eq!(limited.headers()["ratelimit-remaining"], "0");
    assert_eq!(handle.state().remaining, 0);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_headers_on_a_keyed_limiter_count_per_key() {
    use palisade::rate_limit::RateLimitLayer;
    let client_of = |request: &Request<Full<Bytes>>| {
        request
            .headers()
            .get("x-client-id")
            .and_then(|id| id.to_str().ok())
            .unwrap_or("anonymous")
            .to_owned()
    };
    let svc = ServiceBuilder::new()
        .layer(ErrorResponseLayer::new())
        .layer(
            RateLimitLayer::sliding_window(2, secs(60))
                .keyed(client_of)
                .build()
                .unwrap()
                .report_state(RateLimitHeaders),
        )
        .service(ok_upstream());
    let send = |client: &'static str| {
        let mut request = request(Method::GET, None);
        request
            .headers_mut()
            .insert("x-client-id", HeaderValue::from_static(client));
        let call = svc.clone().oneshot(request);
        async move {
            let Ok(answer) = call.await;
            answer
        }
    };
    assert_eq!(send("alice").await.headers()["ratelimit-remaining"], "1");
    assert_eq!(send("alice").await.headers()["ratelimit-remaining"], "0");
    let limited = send("alice").await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["ratelimit-limit"], "2");
    let bob = send("bob").await;
    assert_eq!(bob.status(), 200, "another client is unaffected");
    assert_eq!(bob.headers()["ratelimit-remaining"], "1");
}
