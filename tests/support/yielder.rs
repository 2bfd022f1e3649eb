//! An inner service for the multi-thread stress tests: always ready, it
//! yields to the scheduler a few times per call instead of sleeping, and
//! counts what it saw.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use palisade::BoxError;
use tower::Service;

/// A request with this bit set fails; the low bits say how often to yield
/// (`request % 7` times).
pub const FAIL: u64 = 1 << 32;

#[derive(Default)]
pub struct Counters {
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub calls: AtomicUsize,
    pub finished: AtomicUsize,
}

#[derive(Clone)]
pub struct Yielder(pub Arc<Counters>);

/// Counts a call in flight for as long as its future lives.
struct Leave(Arc<Counters>);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Service<u64> for Yielder {
    type Response = u64;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u64, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u64) -> Self::Future {
        let counters = self.0.clone();
        counters.calls.fetch_add(1, Ordering::SeqCst);
        let now = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counters.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let guard = Leave(counters);
        Box::pin(async move {
            for _ in 0..request % 7 {
                tokio::task::yield_now().await;
            }
            guard.0.finished.fetch_add(1, Ordering::SeqCst);
            // Leaves before answering, so the caller never sees it in flight.
            drop(guard);
            if request & FAIL != 0 {
                Err("failed".into())
            } else {
                Ok(request)
            }
        })
    }
}
