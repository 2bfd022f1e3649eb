//! The multi-thread stress harness: many tasks call clones of one service
//! at once, some calls cancelled part-way, and the outcomes are tallied.

use std::future::Future;
use std::time::Duration;

use palisade::{BoxError, ErrorKind};
use tower::{Service, ServiceExt};

use super::yielder::FAIL;
use super::{XorShift, cancel_after};

/// How the calls of a stress run ended.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub succeeded: u64,
    /// The inner service's own errors.
    pub failed: u64,
    /// palisade's rejections (an open circuit, a rate limit, ...).
    pub refused: u64,
    pub cancelled: u64,
}

impl Tally {
    pub fn add(&mut self, other: Tally) {
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.refused += other.refused;
        self.cancelled += other.cancelled;
    }

    pub fn total(&self) -> u64 {
        self.succeeded + self.failed + self.refused + self.cancelled
    }
}

/// `tasks` tasks make `calls` calls each through clones of `svc`; one in
/// `fail_one_in` asks the [`Yielder`](super::yielder::Yielder) to fail, a
/// quarter are dropped after 1 to 12 polls, and now and then a task swaps
/// its service for a fresh clone (dropping whatever the old one held).
pub async fn hammer<S>(svc: S, tasks: u64, calls: u64, fail_one_in: u64, seed: u64) -> Tally
where
    S: Service<u64, Response = u64, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let mut handles = Vec::new();
    for t in 0..tasks {
        let mut svc = svc.clone();
        let mut rng = XorShift::new(seed ^ (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        handles.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            for _ in 0..calls {
                let polls = match rng.below(4) {
                    0 => 1 + rng.below(12),
                    _ => u64::MAX,
                };
                let fail = if rng.below(fail_one_in) == 0 { FAIL } else { 0 };
                let request = rng.below(7) | fail;
                let call = async {
                    svc.ready().await?;
                    svc.call(request).await
                };
                // An uncancelled call is awaited plainly: only a real
                // wake-up (or a paused clock moving on) brings it back.
                let outcome = match polls {
                    u64::MAX => Some(call.await),
                    polls => cancel_after(polls, call).await,
                };
                match outcome {
                    None => tally.cancelled += 1,
                    Some(Ok(_)) => tally.succeeded += 1,
                    Some(Err(err)) => match ErrorKind::of(&err) {
                        ErrorKind::Inner(_) => tally.failed += 1,
                        _ => tally.refused += 1,
                    },
                }
                if rng.below(4) == 0 {
                    svc = svc.clone();
                }
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for handle in handles {
        total.add(handle.await.unwrap());
    }
    total
}

/// A stall (a permit leaked, a wake-up lost) fails the test instead of
/// hanging it. It bounds the run; it does not time it.
pub async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("the stress run stalled")
}
