//! Waiting mode: `poll_ready` waits for the breaker to admit a call, on its
//! own timer and on the breaker's changes, instead of refusing at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::sync::{Notify, futures::OwnedNotified};
use tokio::time::{Instant, Sleep, sleep_until};

pin_project! {
    /// One service's wait for admission, from its first refusal until it is
    /// admitted or gives up. Boxed once per wait, never on the admitted path.
    #[derive(Debug)]
    pub(crate) struct Wait {
        deadline: Instant,
        // Wakes the waiter when the open duration ends (or at the deadline).
        #[pin]
        sleep: Sleep,
        // Wakes the waiter when the breaker changes state or a probe slot
        // comes free: created before the decision it guards, so a change
        // made in between is not missed.
        #[pin]
        changed: OwnedNotified,
    }
}

impl Wait {
    pub(crate) fn start(deadline: Instant, changed: &Arc<Notify>) -> Pin<Box<Self>> {
        Box::pin(Wait {
            deadline,
            sleep: sleep_until(deadline),
            changed: changed.clone().notified_owned(),
        })
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Waits until `wake_at` (no later than the deadline) or a change.
    pub(crate) fn poll_until(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        wake_at: Instant,
        changed: &Arc<Notify>,
    ) -> Poll<()> {
        let mut this = self.project();
        if this.changed.as_mut().poll(cx).is_ready() {
            // Listen again before deciding again.
            this.changed.set(changed.clone().notified_owned());
            return Poll::Ready(());
        }
        let wake_at = wake_at.min(*this.deadline);
        if this.sleep.deadline() != wake_at {
            this.sleep.as_mut().reset(wake_at);
        }
        this.sleep.poll(cx)
    }
}

/// Until when a refused caller waits before it decides again: the end of
/// the open duration (`retry_after` from `now`), or, when that is not known,
/// `recheck_at` (the end of the half-open wait bound) or the `deadline` that
/// ends the whole wait, whichever comes first. `None`: waiting cannot help,
/// so deliver the refusal.
pub(crate) fn wake_at(
    now: Instant,
    deadline: Instant,
    retry_after: Option<Duration>,
    recheck_at: Option<Instant>,
) -> Option<Instant> {
    if now >= deadline {
        return None;
    }
    match retry_after {
        None => Some(recheck_at.map_or(deadline, |at| at.min(deadline))),
        // Waiting for an open duration that outlasts the wait would only
        // delay the refusal.
        Some(left) => now.checked_add(left).filter(|at| *at <= deadline),
    }
}
