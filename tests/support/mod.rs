//! Test support shared by every layer's tests: a probe inner service that
//! enforces the tower readiness contract, and contract checks any layer can
//! run against it.

#![allow(dead_code, unreachable_pub)] // each test binary uses a part of this

pub mod redis_server;
pub mod stress;
pub mod yielder;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade::BoxError;
use tokio::sync::Semaphore;
use tower::{Service, ServiceExt};

/// The inner service's own error type, to check it comes through unchanged.
#[derive(Debug)]
pub struct ProbeError(pub &'static str);

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "probe error: {}", self.0)
    }
}

impl std::error::Error for ProbeError {}

/// How the probe answers a call.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    /// `Ok(request)` on the first poll.
    Now,
    /// `Ok(request)` after this long (tokio time).
    After(Duration),
    /// `Ok(request)` once the test opens the gate for it ([`Probe::release`]),
    /// in the order the calls arrived.
    Gated,
    /// `Err(ProbeError("failed"))` on the first poll.
    Fail,
    /// Panics inside the response future.
    PanicInFuture,
    /// Panics inside `call`.
    PanicInCall,
}

/// How the probe answers `poll_ready`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    Pending,
    Fail,
}

struct ProbeState {
    readiness: Mutex<(Readiness, Vec<Waker>)>,
    answer: Mutex<Answer>,
    gate: Arc<Semaphore>,
    ready_polls: AtomicUsize,
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    dropped_unfinished: AtomicUsize,
    seen: Mutex<Vec<u64>>,
}

/// An inner service that panics when called without having been driven to
/// ready since its last call, and records what it saw.
///
/// Clones share the counters and the controls; each clone has its own
/// readiness, as a tower service's clones do.
pub struct Probe {
    state: Arc<ProbeState>,
    readied: bool,
}

impl Clone for Probe {
    fn clone(&self) -> Self {
        Probe {
            state: self.state.clone(),
            readied: false,
        }
    }
}

impl Probe {
    pub fn new(answer: Answer) -> Self {
        Probe {
            state: Arc::new(ProbeState {
                readiness: Mutex::new((Readiness::Ready, Vec::new())),
                answer: Mutex::new(answer),
                gate: Arc::new(Semaphore::new(0)),
                ready_polls: AtomicUsize::new(0),
                calls: AtomicUsize::new(0),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
                dropped_unfinished: AtomicUsize::new(0),
                seen: Mutex::new(Vec::new()),
            }),
            readied: false,
        }
    }

    pub fn set_answer(&self, answer: Answer) {
        *self.state.answer.lock().unwrap() = answer;
    }

    /// Sets readiness for every clone and wakes any that were waiting.
    pub fn set_readiness(&self, readiness: Readiness) {
        let mut guard = self.state.readiness.lock().unwrap();
        guard.0 = readiness;
        for waker in guard.1.drain(..) {
            waker.wake();
        }
    }

    /// Lets `n` gated calls finish, oldest first.
    pub fn release(&self, n: usize) {
        self.state.gate.add_permits(n);
    }

    pub fn ready_polls(&self) -> usize {
        self.state.ready_polls.load(Ordering::SeqCst)
    }

    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Calls whose response futures are alive right now.
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Response futures dropped before they finished (cancelled work).
    pub fn dropped_unfinished(&self) -> usize {
        self.state.dropped_unfinished.load(Ordering::SeqCst)
    }

    /// Requests in the order the probe was called with them.
    pub fn seen(&self) -> Vec<u64> {
        self.state.seen.lock().unwrap().clone()
    }
}

impl Service<u64> for Probe {
    type Response = u64;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u64, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.state.ready_polls.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.state.readiness.lock().unwrap();
        match guard.0 {
            Readiness::Ready => {
                self.readied = true;
                Poll::Ready(Ok(()))
            }
            Readiness::Pending => {
                guard.1.push(cx.waker().clone());
                Poll::Pending
            }
            Readiness::Fail => Poll::Ready(Err(Box::new(ProbeError("not ready")))),
        }
    }

    fn call(&mut self, request: u64) -> Self::Future {
        assert!(
            std::mem::take(&mut self.readied),
            "tower contract broken: Probe::call without a successful poll_ready"
        );
        self.state.calls.fetch_add(1, Ordering::SeqCst);
        self.state.seen.lock().unwrap().push(request);
        let answer = *self.state.answer.lock().unwrap();
        if let Answer::PanicInCall = answer {
            panic!("probe panicked in call, as asked");
        }
        let tracker = InFlight::enter(self.state.clone());
        let gate = self.state.gate.clone();
        Box::pin(async move {
            let tracker = tracker;
            let result = match answer {
                Answer::Now => Ok(request),
                Answer::After(delay) => {
                    tokio::time::sleep(delay).await;
                    Ok(request)
                }
                Answer::Gated => {
                    gate.acquire().await.expect("gate never closes").forget();
                    Ok(request)
                }
                Answer::Fail => Err(Box::new(ProbeError("failed")) as BoxError),
                Answer::PanicInFuture => panic!("probe panicked in its future, as asked"),
                Answer::PanicInCall => unreachable!(),
            };
            tracker.finish();
            result
        })
    }
}

/// Counts a call in flight for as long as its future lives.
struct InFlight {
    state: Arc<ProbeState>,
    finished: bool,
}

impl InFlight {
    fn enter(state: Arc<ProbeState>) -> Self {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight {
            state,
            finished: false,
        }
    }

    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            self.state.dropped_unfinished.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The service type the contract checks drive.
pub trait Layered:
    Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone + Send + 'static
{
}

impl<S> Layered for S where
    S: Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone + Send + 'static
{
}

/// Tower contract checks that hold for every palisade layer in its
/// pass-through state (nothing open, limited or full). `wrap` puts the layer
/// under test around a probe.
pub async fn check_tower_contract<S: Layered>(wrap: impl Fn(Probe) -> S) {
    readied_clones_are_called_in_any_order(&wrap).await;
    inner_error_passes_through_unboxed(&wrap).await;
    readiness_error_passes_through(&wrap).await;
    pending_readiness_passes_through(&wrap).await;
    works_behind_buffer(&wrap).await;
}

/// Clones are readied on their own and called in any order; the probe panics
/// if any call reaches it unreadied.
async fn readied_clones_are_called_in_any_order<S: Layered>(wrap: &impl Fn(Probe) -> S) {
    let probe = Probe::new(Answer::Now);
    let mut a = wrap(probe.clone());
    let mut b = a.clone();
    let mut untouched = a.clone();
    a.ready().await.unwrap();
    b.ready().await.unwrap();
    assert_eq!(b.call(2).await.unwrap(), 2);
    assert_eq!(a.call(1).await.unwrap(), 1);
    assert_eq!(untouched.ready().await.unwrap().call(3).await.unwrap(), 3);
    assert_eq!(probe.seen(), vec![2, 1, 3]);
}

/// An inner `BoxError` reaches the caller as the very same box: the inner
/// error type downcasts directly, with no palisade wrapper around it.
async fn inner_error_passes_through_unboxed<S: Layered>(wrap: &impl Fn(Probe) -> S) {
    let probe = Probe::new(Answer::Fail);
    let err = wrap(probe).oneshot(1).await.unwrap_err();
    let inner = err
        .downcast_ref::<ProbeError>()
        .unwrap_or_else(|| panic!("inner error was wrapped: {err:?}"));
    assert_eq!(inner.0, "failed");
    assert!(matches!(
        palisade::ErrorKind::of(&err),
        palisade::ErrorKind::Inner(_)
    ));
}

/// scenario TC-2: a readiness error from the inner service is returned as
/// the inner error, unchanged.
async fn readiness_error_passes_through<S: Layered>(wrap: &impl Fn(Probe) -> S) {
    let probe = Probe::new(Answer::Now);
    probe.set_readiness(Readiness::Fail);
    let mut svc = wrap(probe.clone());
    let err = svc.ready().await.err().expect("readiness error expected");
    assert!(
        err.downcast_ref::<ProbeError>().is_some(),
        "readiness error was changed: {err:?}"
    );
    assert_eq!(probe.calls(), 0);
}

/// A pending inner service keeps the layer pending (no busy loop, no call),
/// and the layer wakes when the inner service becomes ready.
async fn pending_readiness_passes_through<S: Layered>(wrap: &impl Fn(Probe) -> S) {
    let probe = Probe::new(Answer::Now);
    probe.set_readiness(Readiness::Pending);
    let mut svc = wrap(probe.clone());
    let mut ready = tokio_test::task::spawn(async move {
        svc.ready().await.unwrap();
        svc.call(7).await.unwrap()
    });
    assert!(ready.poll().is_pending());
    let polls = probe.ready_polls();
    assert!(
        ready.poll().is_pending(),
        "still pending while inner is pending"
    );
    assert_eq!(
        probe.ready_polls(),
        polls + 1,
        "one inner poll per layer poll"
    );
    assert!(!ready.is_woken());
    probe.set_readiness(Readiness::Ready);
    assert!(ready.is_woken(), "inner readiness must wake the caller");
    assert_eq!(ready.poll(), Poll::Ready(7));
}

/// Behind `tower::buffer::Buffer` (which drives readiness in a worker task
/// and makes a readiness error permanent) calls from many handles succeed.
async fn works_behind_buffer<S: Layered>(wrap: &impl Fn(Probe) -> S)
where
    S::Future: Send,
{
    let probe = Probe::new(Answer::Now);
    let buffer = tower::buffer::Buffer::new(wrap(probe.clone()), 8);
    let mut calls = Vec::new();
    for i in 0..16 {
        calls.push(tokio::spawn(buffer.clone().oneshot(i)));
    }
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as u64);
    }
    assert_eq!(probe.calls(), 16);
}

/// A small deterministic generator (xorshift64*), so stress tests can be
/// replayed from their seed without a dependency.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The `BulkheadFull` refusal in `err` (a bulkhead's or an adaptive
/// limit's); any other error fails the test.
pub fn bulkhead_full(err: &BoxError) -> &palisade::error::BulkheadFull {
    match palisade::ErrorKind::of(err) {
        palisade::ErrorKind::BulkheadFull(e) => e,
        other => panic!("expected BulkheadFull, got {other:?}"),
    }
}

/// The value of a response that is ready and `Ok`.
pub fn answered(poll: Poll<Result<u64, BoxError>>) -> u64 {
    match poll {
        Poll::Ready(Ok(v)) => v,
        Poll::Ready(Err(e)) => panic!("call failed: {e}"),
        Poll::Pending => panic!("call still pending"),
    }
}

/// Polls `fut` at most `polls` times, then drops it: a cancellation at a
/// chosen point. `None` when it was cancelled.
pub async fn cancel_after<F: Future>(polls: u64, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut left = polls;
    std::future::poll_fn(move |cx| {
        if left == 0 {
            return Poll::Ready(None);
        }
        left -= 1;
        match fut.as_mut().poll(cx) {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            Poll::Pending => {
                // Come back soon so the budget is spent on real polls.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    })
    .await
}
