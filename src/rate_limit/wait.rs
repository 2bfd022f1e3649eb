//! Waiting for a permit, first come first served, up to `max_wait`.
//!
//! Callers that find no permit join one queue. Only the head of the queue
//! takes permits: it sleeps until the limiter says one frees, takes it,
//! leaves and wakes the next head. The others sleep until their own
//! deadline or until they reach the head. While anyone waits, a newcomer
//! queues behind them even if a permit is free, so nobody is overtaken.
//! Nothing is reserved while waiting: a waiter that gives up or is dropped
//! consumes nothing, and leaving wakes whoever is head after it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep, sleep_until};

use super::handle::Shared;
use crate::sync::{AtomicUsize, Mutex, Ordering, lock};

/// The queue of callers waiting for a permit.
#[derive(Debug)]
pub(crate) struct WaitQueue {
    // Callers in the queue; read without the lock by newcomers, who may take
    // a permit directly only while it is zero.
    len: AtomicUsize,
    // The most callers in it; a newcomer to a full queue is refused.
    capacity: usize,
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    next_id: u64,
    queue: VecDeque<Entry>,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    deadline: Instant,
    waker: Option<Waker>,
}

/// Where a waiter stands.
enum Place {
    Head,
    /// Behind the head, whose deadline is this.
    Behind(Instant),
    /// Out of the queue: it let its deadline pass while not polled, and a
    /// waiter behind it moved on.
    Gone,
}

impl WaitQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        WaitQueue {
            len: AtomicUsize::new(0),
            capacity,
            entries: Mutex::new(Entries::default()),
        }
    }

    /// Whether anyone is waiting.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// A place at the back, unless the queue is full.
    fn push(&self, deadline: Instant) -> Option<u64> {
        let mut entries = lock(&self.entries);
        if entries.queue.len() >= self.capacity {
            return None;
        }
        let id = entries.next_id;
        entries.next_id += 1;
        entries.queue.push_back(Entry {
            id,
            deadline,
            waker: None,
        });
        self.len.fetch_add(1, Ordering::Release);
        Some(id)
    }

    /// Where `id` stands at `now`. Heads whose deadline has passed are
    /// dropped first: a caller that stopped polling (a timeout around
    /// `ready()`, say) without dropping its service must not hold up the
    /// queue. If `id` is not the head, `waker` is kept to wake it when it
    /// becomes the head.
    fn place(&self, id: u64, now: Instant, waker: &Waker) -> Place {
        let mut entries = lock(&self.entries);
        while let Some(head) = entries.queue.front() {
            if head.id == id {
                return Place::Head;
            }
            if head.deadline >= now {
                break;
            }
            entries.queue.pop_front();
            self.len.fetch_sub(1, Ordering::Release);
        }
        let head_deadline = match entries.queue.front() {
            Some(head) => head.deadline,
            None => return Place::Gone,
        };
        match entries.queue.iter_mut().find(|e| e.id == id) {
            Some(entry) => {
                match &entry.waker {
                    Some(w) if w.will_wake(waker) => {}
                    _ => entry.waker = Some(waker.clone()),
                }
                Place::Behind(head_deadline)
            }
            None => Place::Gone,
        }
    }

    /// Takes `id` out of the queue and wakes the new head, if it changed.
    fn remove(&self, id: u64) {
        let mut entries = lock(&self.entries);
        let Some(at) = entries.queue.iter().position(|e| e.id == id) else {
            return;
        };
        entries.queue.remove(at);
        self.len.fetch_sub(1, Ordering::Release);
        if at == 0
            && let Some(waker) = entries.queue.front_mut().and_then(|e| e.waker.take())
        {
            drop(entries);
            waker.wake();
        }
    }
}

/// One caller's place in the queue, and its timer. Dropping it leaves the
/// queue.
#[derive(Debug)]
pub(crate) struct Waiting {
    shared: Arc<Shared>,
    id: u64,
    deadline: Instant,
    sleep: Pin<Box<Sleep>>,
}

/// How a wait ended.
pub(crate) enum Waited {
    Admitted,
    /// Gave up; the limiter's wait at that moment, if it knew one.
    Refused(Option<Duration>),
}

impl Waiting {
    /// Joins the queue, to wait until `max_wait` from now at most; `None`
    /// if the queue is full.
    pub(crate) fn join(shared: Arc<Shared>, max_wait: Duration) -> Option<Self> {
        let now = Instant::now();
        let deadline = now
            .checked_add(max_wait)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        let id = shared.queue.push(deadline)?;
        Some(Waiting {
            shared,
            id,
            deadline,
            sleep: Box::pin(sleep_until(deadline)),
        })
    }

    pub(crate) fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<Waited> {
        loop {
            let now = Instant::now();
            if now > self.deadline {
                return Poll::Ready(Waited::Refused(None));
            }
            match self.shared.queue.place(self.id, now, cx.waker()) {
                Place::Gone => return Poll::Ready(Waited::Refused(None)),
                Place::Behind(head_deadline) => {
                    // Woken on reaching the head; else at its own deadline,
                    // or at the head's, to step past a head that stopped
                    // polling.
                    let wake = self.deadline.min(head_deadline + Duration::from_nanos(1));
                    self.sleep.as_mut().reset(wake);
                    std::task::ready!(self.sleep.as_mut().poll(cx));
                }
                Place::Head => match self.shared.acquire() {
                    Ok(()) => return Poll::Ready(Waited::Admitted),
                    // More than the limiter ever grants: waiting cannot help.
                    Err(None) => return Poll::Ready(Waited::Refused(None)),
                    Err(Some(wait)) => {
                        // Never zero, so a paused clock moves on.
                        let wait = wait.max(Duration::from_nanos(1));
                        let ready_at = now.checked_add(wait).filter(|&at| at <= self.deadline);
                        let Some(ready_at) = ready_at else {
                            // It would come too late: give up now, not at
                            // the deadline.
                            return Poll::Ready(Waited::Refused(Some(wait)));
                        };
                        self.sleep.as_mut().reset(ready_at);
                        std::task::ready!(self.sleep.as_mut().poll(cx));
                    }
                },
            }
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.shared.queue.remove(self.id);
    }
}
