//! The fallback layer: what gets an answer and what passes (FB-1, FB-3),
//! a failing answer and a real breaker inside (FB-2), the last good
//! response's cache (age limit, bound, keys), cancellation, readiness and
//! configuration errors.
//!
//! The clock is tokio's paused one throughout.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use palisade::circuit_breaker::{CircuitBreakerLayer, State};
use palisade::classify::Outcome;
use palisade::fallback::{Degraded, EventKind, FallbackLayer, Handle, Reason, Unmarked};
use palisade::http::{StatusClassifier, default_outcome};
use palisade::timeout::TimeoutLayer;
use palisade::{BoxError, ErrorKind};
use tokio::net::TcpListener;
use tokio::time::advance;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

/// What the listener saw: the reason, the original error's message, and
/// what came of it.
type Seen = Arc<Mutex<Vec<(Reason, Option<String>, EventKind)>>>;

fn listener(seen: &Seen) -> impl Fn(&palisade::fallback::Event<'_>) + Send + Sync + 'static {
    let seen = seen.clone();
    move |event| {
        seen.lock()
            .unwrap()
            .push((event.reason, event.error.map(|e| e.to_string()), event.kind))
    }
}

fn events(seen: &Seen) -> Vec<(Reason, Option<String>, EventKind)> {
    std::mem::take(&mut *seen.lock().unwrap())
}

#[derive(Clone, Copy, PartialEq)]
enum Upstream {
    Ok,
    Fails,
    Hangs,
}

fn ok(body: &str) -> Response<String> {
    Response::new(body.to_owned())
}

/// FB-1: configured for open circuits and classified failures, answering
/// a default through a function, in front of a breaker and a timeout.
/// (a) a success passes untouched, no event, the function not called;
/// (b) a classified failure gets the default, marked (`X-Degraded: true`
/// and the extension), with exactly one event carrying the original
/// error; (c) a timeout, not configured, reaches the caller unchanged and
/// the function is not called; (d) behind an open circuit the default is
/// served, marked, one event, and the inner service is not called.
#[tokio::test(start_paused = true)]
async fn answers_only_what_it_was_configured_for_and_marks_it() {
    let mode = Arc::new(Mutex::new(Upstream::Ok));
    let inner_calls = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(AtomicUsize::new(0));
    let seen = Seen::default();
    let (m, n) = (mode.clone(), inner_calls.clone());
    let upstream = service_fn(move |_: ()| {
        n.fetch_add(1, Ordering::SeqCst);
        let mode = *m.lock().unwrap();
        async move {
            match mode {
                Upstream::Ok => Ok(ok("real")),
                Upstream::Fails => Err::<_, BoxError>("connection reset".into()),
                Upstream::Hangs => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(ok("late"))
                }
            }
        }
    });
    let counted = answers.clone();
    let fallback = FallbackLayer::builder()
        .name("catalogue")
        .on(Reason::CircuitOpen)
        .on(Reason::Failure)
        .answer(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(ok("default"))
        })
        .on_event(listener(&seen))
        .build()
        .unwrap();
    let handle = fallback.handle();
    let breaker = CircuitBreakerLayer::builder()
        .name("catalogue")
        .build()
        .unwrap();
    let circuit = breaker.handle();
    let mut svc = ServiceBuilder::new()
        .layer(fallback)
        .layer(breaker)
        .layer(TimeoutLayer::new(Duration::from_secs(1)).unwrap())
        .service(upstream);

    // (a)
    let response = svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(response.body(), "real");
    assert!(response.headers().get("x-degraded").is_none());
    assert!(response.extensions().get::<Degraded>().is_none());
    assert_eq!(answers.load(Ordering::SeqCst), 0);
    assert!(events(&seen).is_empty());

    // (b)
    *mode.lock().unwrap() = Upstream::Fails;
    let response = svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(response.body(), "default");
    assert_eq!(response.headers()["x-degraded"], "true");
    assert_eq!(
        response.extensions().get::<Degraded>(),
        Some(&Degraded {
            reason: Reason::Failure
        })
    );
    assert_eq!(answers.load(Ordering::SeqCst), 1);
    assert_eq!(
        events(&seen),
        [(
            Reason::Failure,
            Some("connection reset".to_owned()),
            EventKind::Served
        )]
    );

    // (c)
    *mode.lock().unwrap() = Upstream::Hangs;
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    let ErrorKind::Elapsed(elapsed) = ErrorKind::of(&err) else {
        panic!("expected the timeout's own error, got {err}");
    };
    assert_eq!(elapsed.timeout(), Duration::from_secs(1));
    assert_eq!(answers.load(Ordering::SeqCst), 1, "not called for it");
    assert!(events(&seen).is_empty());

    // (d)
    circuit.force_open();
    let before = inner_calls.load(Ordering::SeqCst);
    let response = svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(response.body(), "default");
    assert_eq!(response.headers()["x-degraded"], "true");
    assert_eq!(
        response.extensions().get::<Degraded>().map(|d| d.reason),
        Some(Reason::CircuitOpen)
    );
    assert_eq!(inner_calls.load(Ordering::SeqCst), before, "not called");
    let seen = events(&seen);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, Reason::CircuitOpen);
    assert!(
        seen[0]
            .1
            .as_deref()
            .unwrap()
            .contains("`catalogue` is open")
    );

    assert_eq!(handle.served(Reason::Failure), 1);
    assert_eq!(handle.served(Reason::CircuitOpen), 1);
    assert_eq!(handle.served(Reason::Elapsed), 0);
    assert_eq!(handle.served_total(), 2);
}

/// A breaker that opens at 50 % failures over 4 calls.
fn breaker() -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .name("payments")
        .count_window(4)
        .minimum_calls(4)
        .failure_rate(0.5)
        .build()
        .unwrap()
}

/// FB-2: a breaker inside a fallback whose function fails on demand.
/// When the function fails, the caller gets its error: not the original
/// one, and not a success. Then four inner failures each answered by a
/// working function: the caller sees four degraded successes, while the
/// breaker records four failures and opens.
#[tokio::test(start_paused = true)]
async fn a_failing_answer_is_what_the_caller_sees_and_the_breaker_records_the_real_outcome() {
    let answer_fails = Arc::new(AtomicBool::new(true));
    let inner_calls = Arc::new(AtomicUsize::new(0));
    let stack = || {
        let answer_fails = answer_fails.clone();
        let n = inner_calls.clone();
        let seen = Seen::default();
        let fallback = FallbackLayer::builder()
            .name("payments")
            .on(Reason::Failure)
            .on(Reason::CircuitOpen)
            .answer(move |_| {
                if answer_fails.load(Ordering::SeqCst) {
                    Err("the fallback store is down too".into())
                } else {
                    Ok(ok("queued for later"))
                }
            })
            .on_event(listener(&seen))
            .build()
            .unwrap();
        let handle = fallback.handle();
        let breaker = breaker();
        let circuit = breaker.handle();
        let svc = ServiceBuilder::new()
            .layer(fallback)
            .layer(breaker)
            .service(service_fn(move |_: ()| {
                n.fetch_add(1, Ordering::SeqCst);
                async { Err::<Response<String>, BoxError>("card processor unreachable".into()) }
            }));
        (svc, handle, circuit, seen)
    };

    let (mut svc, handle, circuit, seen) = stack();
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert_eq!(err.to_string(), "the fallback store is down too");
    assert_eq!(handle.answer_failures(), 1);
    assert_eq!(handle.served_total(), 0);
    assert_eq!(
        events(&seen),
        [(
            Reason::Failure,
            Some("card processor unreachable".to_owned()),
            EventKind::AnswerFailed
        )]
    );
    assert_eq!(circuit.snapshot().failures, 1, "the real outcome");

    answer_fails.store(false, Ordering::SeqCst);
    let (mut svc, handle, circuit, _) = stack();
    inner_calls.store(0, Ordering::SeqCst);
    for _ in 0..4 {
        let response = svc.ready().await.unwrap().call(()).await.unwrap();
        assert_eq!(response.body(), "queued for later");
        assert_eq!(response.headers()["x-degraded"], "true");
    }
    assert_eq!(handle.served(Reason::Failure), 4);
    assert_eq!(circuit.state(), State::Open, "four failures, not successes");
    let opened_by = circuit.snapshot();
    assert_eq!((opened_by.calls, opened_by.failures), (4, 4));
    // Open: answered without a call, and the circuit stays open.
    let response = svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(response.body(), "queued for later");
    assert_eq!(inner_calls.load(Ordering::SeqCst), 4);
    assert_eq!(handle.served(Reason::CircuitOpen), 1);
    assert_eq!(circuit.state(), State::Open);
}

/// 400 and 404 are the caller's business, not the upstream's failure.
fn ignore_client_errors(status: StatusCode) -> Outcome {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => Outcome::Ignored,
        other => default_outcome(other),
    }
}

type Body = UnsyncBoxBody<Bytes, BoxError>;

/// An upstream on a loopback port answering each path's status:
/// `/status/404` with a 404.
async fn status_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = service_fn(|request: Request<Incoming>| async move {
        let status = request
            .uri()
            .path()
            .trim_start_matches("/status/")
            .parse::<u16>()
            .unwrap_or(500);
        let mut response = Response::new(Full::new(Bytes::from("upstream")));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        Ok::<_, Infallible>(response)
    });
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = TowerToHyperService::new(app);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn body(text: &'static str) -> Body {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// FB-3: one classifier, shared by a breaker and a fallback, ignores 400
/// and 404 and calls 5xx failures. Over real sockets, the 404 and the 400
/// reach the caller unchanged (no mark, no event) and the breaker counts
/// them neither way; only the 503 gets the degraded answer.
#[tokio::test(start_paused = true)]
async fn what_the_breaker_ignores_the_fallback_ignores_too() {
    let addr = status_upstream().await;
    let classifier = StatusClassifier::by_status(ignore_client_errors as fn(_) -> _);
    let seen = Seen::default();
    let fallback = FallbackLayer::builder()
        .name("products")
        .on(Reason::Failure)
        .on(Reason::CircuitOpen)
        .classifier(classifier)
        .answer(|_| Ok(Response::new(body("[]"))))
        .on_event(listener(&seen))
        .build()
        .unwrap();
    let handle = fallback.handle();
    let breaker = CircuitBreakerLayer::builder()
        .name("products")
        .classifier(classifier)
        .build()
        .unwrap();
    let circuit = breaker.handle();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut products = ServiceBuilder::new()
        .layer(fallback)
        .layer(breaker)
        .map_response(|response: Response<Incoming>| {
            response.map(|body| body.map_err(BoxError::from).boxed_unsync())
        })
        .service(client);
    let get = |status: u16| {
        Request::get(format!("http://{addr}/status/{status}"))
            .body(Full::default())
            .unwrap()
    };

    for status in [404, 400] {
        let response = products
            .ready()
            .await
            .unwrap()
            .call(get(status))
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status);
        assert!(response.headers().get("x-degraded").is_none());
        assert!(response.extensions().get::<Degraded>().is_none());
        let text = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(text, "upstream", "the upstream's own answer");
    }
    assert!(events(&seen).is_empty());
    assert_eq!(handle.served_total(), 0);
    let counted = circuit.snapshot();
    assert_eq!((counted.calls, counted.failures), (0, 0), "neither way");

    let response = products
        .ready()
        .await
        .unwrap()
        .call(get(503))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-degraded"], "true");
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, "[]");
    // A 503 is a response, not an error: the event has no error to carry.
    assert_eq!(events(&seen), [(Reason::Failure, None, EventKind::Served)]);
    let counted = circuit.snapshot();
    assert_eq!((counted.calls, counted.failures), (1, 1));
}

/// A user service that answers `user {id} v{n}`, the `n`th good answer,
/// or fails while `down`.
#[derive(Clone)]
struct Users {
    down: Arc<AtomicBool>,
    version: Arc<AtomicUsize>,
}

impl Users {
    fn new() -> Self {
        Users {
            down: Arc::new(AtomicBool::new(false)),
            version: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn service(
        &self,
    ) -> impl Service<u64, Response = String, Error = BoxError, Future: Send> + Clone + use<> {
        let users = self.clone();
        service_fn(move |id: u64| {
            let answer = if users.down.load(Ordering::SeqCst) {
                Err("users: connection refused".into())
            } else {
                let n = users.version.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(format!("user {id} v{n}"))
            };
            std::future::ready(answer)
        })
    }
}

const MAX_AGE: Duration = Duration::from_secs(30);

fn last_good_users(
    users: &Users,
    max_entries: usize,
) -> (
    impl Service<u64, Response = String, Error = BoxError> + use<>,
    Handle,
) {
    let fallback = FallbackLayer::builder()
        .name("users")
        .on(Reason::Failure)
        .last_good(|id: &u64| *id)
        .max_entries(max_entries)
        .max_age(MAX_AGE)
        .mark(|user: &mut String, reason: Reason| {
            user.push_str(&format!(" (degraded: {reason})"));
        })
        .build()
        .unwrap();
    let handle = fallback.handle();
    (fallback.layer(users.service()), handle)
}

async fn call<S>(svc: &mut S, id: u64) -> Result<String, BoxError>
where
    S: Service<u64, Response = String, Error = BoxError>,
{
    svc.ready().await?.call(id).await
}

/// The last good response: served for its own key only, marked, younger
/// than `max_age` only (on the paused clock); a newer good response
/// replaces it, and a failure keeps nothing.
#[tokio::test(start_paused = true)]
async fn the_last_good_response_for_the_key_is_served_until_it_is_too_old() {
    let users = Users::new();
    let (mut svc, handle) = last_good_users(&users, 1_000);
    assert_eq!(call(&mut svc, 1).await.unwrap(), "user 1 v1");
    assert_eq!(call(&mut svc, 1).await.unwrap(), "user 1 v2", "replaced");
    assert_eq!(handle.cached(), 1);

    users.down.store(true, Ordering::SeqCst);
    assert_eq!(
        call(&mut svc, 1).await.unwrap(),
        "user 1 v2 (degraded: failure)"
    );
    // Key 2 never had a good answer: the original error, not key 1's.
    let err = call(&mut svc, 2).await.unwrap_err();
    assert_eq!(err.to_string(), "users: connection refused");
    assert_eq!(handle.cached(), 1, "the failure kept nothing");
    assert_eq!((handle.cache_hits(), handle.cache_misses()), (1, 1));

    advance(MAX_AGE - Duration::from_millis(1)).await;
    assert!(
        call(&mut svc, 1)
            .await
            .unwrap()
            .ends_with("(degraded: failure)")
    );
    advance(Duration::from_millis(1)).await;
    let err = call(&mut svc, 1).await.unwrap_err();
    assert_eq!(err.to_string(), "users: connection refused", "too old");
    assert_eq!(handle.cache_expired(), 1);
    assert_eq!(handle.cache_hits(), 2);
    assert_eq!(handle.served(Reason::Failure), 2);

    // Back up: a good answer is kept again, and served again.
    users.down.store(false, Ordering::SeqCst);
    assert_eq!(call(&mut svc, 1).await.unwrap(), "user 1 v3");
    users.down.store(true, Ordering::SeqCst);
    assert_eq!(
        call(&mut svc, 1).await.unwrap(),
        "user 1 v3 (degraded: failure)"
    );
}

/// A flood of distinct keys never grows the cache past its bound, and
/// does not flush the answer kept before it; once the flood's answers are
/// older than `max_age`, new keys find room again.
#[tokio::test(start_paused = true)]
async fn a_flood_of_keys_stays_within_the_bound() {
    let users = Users::new();
    let (mut svc, handle) = last_good_users(&users, 64);
    assert_eq!(call(&mut svc, 0).await.unwrap(), "user 0 v1");
    for id in 1..=10_000 {
        call(&mut svc, id).await.unwrap();
    }
    assert!(handle.cached() <= 64, "{} keys kept", handle.cached());
    assert!(handle.cache_full() >= 10_000 - 64);

    users.down.store(true, Ordering::SeqCst);
    assert_eq!(
        call(&mut svc, 0).await.unwrap(),
        "user 0 v1 (degraded: failure)",
        "kept through the flood"
    );

    // The flood's answers expire and are swept as new keys arrive.
    advance(MAX_AGE).await;
    users.down.store(false, Ordering::SeqCst);
    for id in 20_000..20_100 {
        call(&mut svc, id).await.unwrap();
    }
    assert!(handle.cached() <= 64);
    users.down.store(true, Ordering::SeqCst);
    let served = (20_000..20_100)
        .filter(|&id| {
            futures_ready(call(&mut svc, id))
                .is_ok_and(|user| user.ends_with("(degraded: failure)"))
        })
        .count();
    // 100 new keys over 16 shards of 4 places: nearly every place is taken
    // again (a shard that drew fewer than 4 of them keeps what it drew).
    assert!(
        (40..=64).contains(&served),
        "new keys found room once the old expired: {served} kept"
    );
}

/// Runs a future that is ready at once (the users service answers at
/// once).
fn futures_ready<T>(future: impl std::future::Future<Output = T>) -> T {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the users service answers at once"),
    }
}

/// Cancellation: a response future dropped before the inner call
/// completes answers nothing, counts nothing and keeps nothing, and the
/// answer function is not called.
#[tokio::test(start_paused = true)]
async fn a_cancelled_call_answers_counts_and_keeps_nothing() {
    let seen = Seen::default();
    let answers = Arc::new(AtomicUsize::new(0));
    let counted = answers.clone();
    let fallback = FallbackLayer::builder()
        .on(Reason::Failure)
        .answer(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(0)
        })
        .mark(Unmarked)
        .on_event(listener(&seen))
        .build()
        .unwrap();
    let handle = fallback.handle();
    let slow_failure = service_fn(|_: ()| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Err::<u64, BoxError>("failed, too late".into())
    });
    let mut svc = fallback.layer(slow_failure);
    let call = svc.ready().await.unwrap().call(());
    assert!(
        tokio::time::timeout(Duration::from_secs(1), call)
            .await
            .is_err()
    );
    advance(Duration::from_secs(20)).await;
    assert_eq!(answers.load(Ordering::SeqCst), 0);
    assert_eq!(handle.served_total(), 0);
    assert!(events(&seen).is_empty());

    // The cache: a good answer cancelled before it came in is not kept.
    let cache = FallbackLayer::builder()
        .on(Reason::Failure)
        .last_good(|_: &()| ())
        .max_age(MAX_AGE)
        .mark(Unmarked)
        .build()
        .unwrap();
    let cache_handle = cache.handle();
    let slow_success = service_fn(|_: ()| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok::<u64, BoxError>(1)
    });
    let mut svc = cache.layer(slow_success);
    let call = svc.ready().await.unwrap().call(());
    assert!(
        tokio::time::timeout(Duration::from_secs(1), call)
            .await
            .is_err()
    );
    assert_eq!(cache_handle.cached(), 0);
}

/// A service whose readiness fails.
#[derive(Clone, Debug)]
struct Broken;

impl Service<()> for Broken {
    type Response = u64;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u64, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Err("the connection pool is closed".into()))
    }

    fn call(&mut self, _: ()) -> Self::Future {
        std::future::ready(Ok(1))
    }
}

/// `poll_ready` passes the inner service's readiness through, its error
/// included: no answer hides a service that must be discarded.
#[tokio::test(start_paused = true)]
async fn readiness_errors_pass_through() {
    let fallback = FallbackLayer::builder()
        .on(Reason::Failure)
        .value(0_u64)
        .mark(Unmarked)
        .build()
        .unwrap();
    let handle = fallback.handle();
    let mut svc = fallback.layer(Broken);
    let err = svc.ready().await.unwrap_err();
    assert_eq!(err.to_string(), "the connection pool is closed");
    assert_eq!(handle.served_total(), 0);
}

/// Bad settings are a `ConfigError` naming the field.
#[test]
fn configuration_errors_name_the_field() {
    let none = FallbackLayer::builder().value(0_u64).mark(Unmarked).build();
    assert_eq!(none.unwrap_err().field(), "on");
    let keyed = || {
        FallbackLayer::builder()
            .on(Reason::Failure)
            .last_good(|id: &u64| *id)
            .mark(Unmarked)
    };
    let no_age = keyed().build::<String>().unwrap_err();
    assert_eq!(no_age.field(), "max_age");
    let zero_age = keyed().max_age(Duration::ZERO).build::<String>();
    assert_eq!(zero_age.unwrap_err().field(), "max_age");
    let no_room = keyed().max_age(MAX_AGE).max_entries(0).build::<String>();
    let err = no_room.unwrap_err();
    assert_eq!(err.field(), "max_entries");
    assert_eq!(
        err.to_string(),
        "invalid fallback configuration: `max_entries` must be at least 1, got 0 \
         (a cache that holds nothing never answers)"
    );
}

/// Only a response the classifier calls a success is kept: one it
/// ignores (a "not found") or calls a failure (a "503") never replaces
/// the last good one, and is never served in another call's place.
#[tokio::test(start_paused = true)]
async fn only_successes_are_kept() {
    let classifier = |result: &Result<String, BoxError>| match result.as_deref() {
        Ok("not found") => Outcome::Ignored,
        Ok("unavailable") | Err(_) => Outcome::Failure,
        Ok(_) => Outcome::Success,
    };
    let fallback = FallbackLayer::builder()
        .on(Reason::Failure)
        .classifier(classifier)
        .last_good(|id: &u64| *id)
        .max_age(MAX_AGE)
        .mark(Unmarked)
        .build()
        .unwrap();
    let answers = Arc::new(Mutex::new(vec!["unavailable", "not found", "good"]));
    let next = answers.clone();
    let mut svc = fallback.layer(service_fn(move |_: u64| {
        let answer = next.lock().unwrap().pop().unwrap_or("unavailable");
        std::future::ready(Ok::<_, BoxError>(answer.to_owned()))
    }));
    assert_eq!(call(&mut svc, 1).await.unwrap(), "good");
    assert_eq!(call(&mut svc, 1).await.unwrap(), "not found", "passes");
    assert_eq!(call(&mut svc, 1).await.unwrap(), "good", "for the 503");
    assert_eq!(
        call(&mut svc, 1).await.unwrap(),
        "good",
        "the 503 was not kept"
    );
}
