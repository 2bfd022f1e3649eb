//! Inner services that cost (almost) nothing, and a driver that runs one
//! whole call by hand. Shared by `tests/alloc.rs` and `benches/layers.rs`,
//! so the allocation test and the benchmarks measure the same thing.

#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use tower::Service;

/// Always ready, answers on the first poll, allocates nothing.
#[derive(Clone)]
pub struct Noop;

impl Service<u64> for Noop {
    type Response = u64;
    type Error = Infallible;
    type Future = std::future::Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u64) -> Self::Future {
        std::future::ready(Ok(request))
    }
}

/// Always ready; its answer is pending on the first poll and ready on the
/// second, so a timeout must arm its timer.
#[derive(Clone)]
pub struct SecondPoll;

pub struct ReadyOnSecondPoll(u64, bool);

impl Future for ReadyOnSecondPoll {
    type Output = Result<u64, Infallible>;
    fn poll(mut self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        if std::mem::replace(&mut self.1, true) {
            Poll::Ready(Ok(self.0))
        } else {
            Poll::Pending
        }
    }
}

impl Service<u64> for SecondPoll {
    type Response = u64;
    type Error = Infallible;
    type Future = ReadyOnSecondPoll;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u64) -> Self::Future {
        ReadyOnSecondPoll(request, false)
    }
}

/// Drives one call to completion by hand, with a no-op waker, and returns
/// the answer (checked to echo the request).
pub fn call_once<S>(svc: &mut S, request: u64) -> u64
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let mut future = pin!(svc.call(request));
    loop {
        if let Poll::Ready(result) = future.as_mut().poll(&mut cx) {
            let answer = result.unwrap();
            assert_eq!(answer, request);
            return answer;
        }
    }
}
