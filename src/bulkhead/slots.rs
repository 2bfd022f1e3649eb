//! The bulkhead's slots: a counting semaphore with a FIFO queue whose fast
//! path is one compare-and-swap to take a slot and one to give it back.
//!
//! tokio's `Semaphore` (under tower's `ConcurrencyLimit`) takes its waiters'
//! mutex on every release, queue or no queue. Here the mutex is taken only
//! while someone is queued: one bit of the state word says so, and every
//! change to that bit happens under the mutex. That gives two invariants the
//! code leans on:
//!
//! - `QUEUED` is set exactly when the queue is not empty (outside the lock).
//! - While the queue is not empty, no slot is free: a released slot goes to
//!   the waiter at the head instead of back to the count, so waiters are
//!   served in arrival order and a newcomer cannot overtake them.
//!
//! The model in `loom_tests` checks these under every interleaving loom can
//! find (`RUSTFLAGS="--cfg loom" cargo test --release --lib loom`).

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

use crate::sync::{Arc, AtomicUsize, Mutex, Ordering, lock};

/// Bit 0 of the state word: someone is queued.
const QUEUED: usize = 1;
/// One free slot, in the state word (the count lives in the upper bits).
const ONE: usize = 2;

/// The most slots a bulkhead can have (leaves room for the flag bit).
pub(crate) const MAX_SLOTS: usize = usize::MAX >> 3;

pub(crate) struct Slots {
    /// `free * ONE | QUEUED`.
    state: AtomicUsize,
    queue: Mutex<VecDeque<Arc<Waiter>>>,
}

/// One caller waiting in the queue.
pub(crate) struct Waiter {
    state: Mutex<WaiterState>,
}

enum WaiterState {
    /// In the queue; the waker of whoever last polled.
    Queued(Option<Waker>),
    /// Handed a slot, not yet collected.
    Granted,
    /// Collected its slot, or gave up; out of the queue either way.
    Done,
}

impl Slots {
    pub(crate) fn new(slots: usize) -> Self {
        debug_assert!(slots <= MAX_SLOTS);
        Slots {
            state: AtomicUsize::new(slots * ONE),
            queue: Mutex::new(VecDeque::new()),
        }
    }

    /// Takes a free slot if there is one and nobody is queued for it.
    #[inline]
    pub(crate) fn try_acquire(&self) -> bool {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & QUEUED != 0 || state < ONE {
                return false;
            }
            match self.state.compare_exchange_weak(
                state,
                state - ONE,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => state = actual,
            }
        }
    }

    /// Gives a slot back: to the count, or to the first waiter in line.
    #[inline]
    pub(crate) fn release(&self) {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & QUEUED != 0 {
                return self.release_to_queue();
            }
            match self.state.compare_exchange_weak(
                state,
                state + ONE,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => state = actual,
            }
        }
    }

    #[cold]
    fn release_to_queue(&self) {
        let mut queue = lock(&self.queue);
        while let Some(waiter) = queue.pop_front() {
            if queue.is_empty() {
                self.state.fetch_and(!QUEUED, Ordering::AcqRel);
            }
            let mut waiter_state = lock(&waiter.state);
            if let WaiterState::Queued(waker) = &mut *waiter_state {
                let waker = waker.take();
                *waiter_state = WaiterState::Granted;
                drop(waiter_state);
                drop(queue);
                if let Some(waker) = waker {
                    waker.wake();
                }
                return;
            }
            // A waiter that gave up leaves the queue under this lock, so
            // every waiter here is still queued; skip any that is not.
        }
        // The queue emptied (waiters gave up) after this release saw the
        // flag: the slot goes back to the count, and the flag is clear.
        self.state.fetch_add(ONE, Ordering::AcqRel);
    }

    /// The slow path of taking a slot: takes one if it freed up since
    /// [`try_acquire`](Self::try_acquire) looked, or joins the queue.
    pub(crate) fn acquire_or_enqueue(&self) -> Result<(), Arc<Waiter>> {
        let mut queue = lock(&self.queue);
        // With the flag set, fast-path acquires fail and releases come to
        // this lock, so the count is ours to read and change.
        let before = self.state.fetch_or(QUEUED, Ordering::AcqRel);
        if queue.is_empty() {
            if before >= ONE {
                // Take the slot and clear the flag in one step.
                self.state.fetch_sub(ONE | QUEUED, Ordering::AcqRel);
                return Ok(());
            }
        } else {
            debug_assert!(before < ONE, "a slot is free while callers queue");
        }
        let waiter = Arc::new(Waiter {
            state: Mutex::new(WaiterState::Queued(None)),
        });
        queue.push_back(waiter.clone());
        Err(waiter)
    }

    /// `Ready` once `waiter` has been handed a slot, which the caller now
    /// owns; otherwise registers the waker.
    pub(crate) fn poll_granted(waiter: &Waiter, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = lock(&waiter.state);
        match &mut *state {
            WaiterState::Granted => {
                *state = WaiterState::Done;
                Poll::Ready(())
            }
            WaiterState::Queued(waker) => {
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            // Collected already: nothing more will come.
            WaiterState::Done => Poll::Pending,
        }
    }

    /// `waiter` gives up. Returns `true` when it had been handed a slot that
    /// it had not collected: the caller then owns that slot (to use it or to
    /// [`release`](Self::release) it).
    pub(crate) fn cancel(&self, waiter: &Arc<Waiter>) -> bool {
        let mut queue = lock(&self.queue);
        let mut state = lock(&waiter.state);
        match std::mem::replace(&mut *state, WaiterState::Done) {
            WaiterState::Queued(_) => {
                queue.retain(|queued| !Arc::ptr_eq(queued, waiter));
                if queue.is_empty() {
                    self.state.fetch_and(!QUEUED, Ordering::AcqRel);
                }
                false
            }
            WaiterState::Granted => true,
            WaiterState::Done => false,
        }
    }

    /// Free slots right now.
    pub(crate) fn available(&self) -> usize {
        self.state.load(Ordering::Acquire) / ONE
    }

    /// Callers queued right now.
    pub(crate) fn queued(&self) -> usize {
        lock(&self.queue).len()
    }

    /// Checks the invariants in the module docs, under the queue's lock.
    #[cfg(test)]
    fn assert_invariants(&self) {
        let queue = lock(&self.queue);
        let state = self.state.load(Ordering::Acquire);
        assert_eq!(
            state & QUEUED != 0,
            !queue.is_empty(),
            "QUEUED iff queue not empty"
        );
        if !queue.is_empty() {
            assert!(state < ONE, "a slot is free while callers queue");
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn poll(waiter: &Waiter) -> Poll<()> {
        Slots::poll_granted(waiter, &mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn fast_path_counts_slots() {
        let slots = Slots::new(2);
        assert!(slots.try_acquire() && slots.try_acquire());
        assert!(!slots.try_acquire());
        assert_eq!(slots.available(), 0);
        slots.release();
        assert_eq!(slots.available(), 1);
        slots.release();
        assert_eq!(slots.available(), 2);
    }

    #[test]
    fn waiters_are_granted_in_order_and_newcomers_queue_behind() {
        let slots = Slots::new(1);
        assert!(slots.try_acquire());
        let first = slots.acquire_or_enqueue().unwrap_err();
        let second = slots.acquire_or_enqueue().unwrap_err();
        assert_eq!(slots.queued(), 2);
        slots.assert_invariants();
        assert!(poll(&first).is_pending());

        slots.release();
        assert!(poll(&second).is_pending());
        assert!(poll(&first).is_ready());
        assert!(
            !slots.try_acquire(),
            "a newcomer may not overtake the queue"
        );
        assert_eq!(slots.available(), 0);

        slots.release();
        assert!(poll(&second).is_ready());
        assert_eq!(slots.queued(), 0);
        slots.release();
        assert_eq!(slots.available(), 1);
        assert!(slots.try_acquire(), "the fast path is open again");
    }

    #[test]
    fn a_cancelled_waiter_leaves_the_queue_and_a_granted_one_hands_back() {
        let slots = Slots::new(1);
        assert!(slots.try_acquire());
        let gives_up = slots.acquire_or_enqueue().unwrap_err();
        let granted = slots.acquire_or_enqueue().unwrap_err();
        assert!(!slots.cancel(&gives_up));
        assert_eq!(slots.queued(), 1);
        slots.assert_invariants();
        slots.release();
        assert!(slots.cancel(&granted), "it owned a slot it never collected");
        slots.release();
        assert_eq!((slots.available(), slots.queued()), (1, 0));
    }

    #[test]
    fn a_release_finds_the_queue_emptied_by_cancellation() {
        let slots = Slots::new(1);
        assert!(slots.try_acquire());
        let waiter = slots.acquire_or_enqueue().unwrap_err();
        assert!(!slots.cancel(&waiter));
        slots.release();
        assert_eq!(slots.available(), 1);
        assert!(slots.try_acquire());
    }

    #[test]
    fn the_slow_path_takes_a_slot_that_freed_up() {
        let slots = Slots::new(1);
        assert!(slots.acquire_or_enqueue().is_ok());
        assert_eq!((slots.available(), slots.queued()), (0, 0));
        slots.release();
        assert!(slots.try_acquire());
    }

    #[test]
    fn the_waker_is_woken_on_grant() {
        // std's, not the shim's: `Wake` takes a std `Arc`, and the flag is
        // the test's own, outside the models (they have their own waker test).
        use std::sync::atomic::AtomicBool;
        use std::task::Wake;

        struct Flag(AtomicBool);
        impl Wake for Flag {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = std::sync::Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let slots = Slots::new(1);
        assert!(slots.try_acquire());
        let waiter = slots.acquire_or_enqueue().unwrap_err();
        assert!(Slots::poll_granted(&waiter, &mut Context::from_waker(&waker)).is_pending());
        slots.release();
        assert!(flag.0.load(Ordering::SeqCst));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::loom_model as model;
    use loom::thread;

    /// Spins (yielding to loom) until `waiter` is granted.
    fn wait_for(waiter: &Waiter) {
        let mut cx = Context::from_waker(Waker::noop());
        while Slots::poll_granted(waiter, &mut cx).is_pending() {
            thread::yield_now();
        }
    }

    /// Takes a slot the way the bulkhead does: fast path, then the queue.
    fn acquire(slots: &Slots) {
        if !slots.try_acquire() {
            if let Err(waiter) = slots.acquire_or_enqueue() {
                wait_for(&waiter);
            }
        }
    }

    /// Releases one slot from another thread.
    fn release_in_thread(slots: &Arc<Slots>) -> thread::JoinHandle<()> {
        let slots = slots.clone();
        thread::spawn(move || slots.release())
    }

    fn hold(slots: &Slots, holders: &AtomicUsize) {
        acquire(slots);
        assert_eq!(
            holders.fetch_add(1, Ordering::SeqCst),
            0,
            "two holders of one slot"
        );
        holders.fetch_sub(1, Ordering::SeqCst);
        slots.release();
    }

    #[test]
    fn loom_never_more_holders_than_slots() {
        model(|| {
            let slots = Arc::new(Slots::new(1));
            let holders = Arc::new(AtomicUsize::new(0));
            let other = {
                let (slots, holders) = (slots.clone(), holders.clone());
                thread::spawn(move || hold(&slots, &holders))
            };
            hold(&slots, &holders);
            other.join().unwrap();
            assert_eq!(slots.available(), 1);
            assert_eq!(slots.queued(), 0);
            slots.assert_invariants();
        });
    }

    /// A fast-path acquire racing a slow-path acquire: the releasing thread
    /// takes the slot back at once, while the main thread queues for it.
    #[test]
    fn loom_a_fast_path_acquire_racing_the_slow_path_never_doubles_a_slot() {
        model(|| {
            let slots = Arc::new(Slots::new(1));
            let holders = Arc::new(AtomicUsize::new(0));
            assert!(slots.try_acquire());
            let other = {
                let (slots, holders) = (slots.clone(), holders.clone());
                thread::spawn(move || {
                    slots.release();
                    if slots.try_acquire() {
                        assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                        thread::yield_now();
                        holders.fetch_sub(1, Ordering::SeqCst);
                        slots.release();
                    }
                })
            };
            hold(&slots, &holders);
            other.join().unwrap();
            assert_eq!(slots.available(), 1);
            slots.assert_invariants();
        });
    }

    /// The waiter parks on a real waker: a grant that forgets to wake it
    /// deadlocks the model.
    #[test]
    fn loom_a_granted_waiter_is_woken() {
        model(|| {
            let slots = Arc::new(Slots::new(1));
            assert!(slots.try_acquire());
            let waiter = slots.acquire_or_enqueue().unwrap_err();
            let releaser = release_in_thread(&slots);
            loom::future::block_on(std::future::poll_fn(|cx| Slots::poll_granted(&waiter, cx)));
            releaser.join().unwrap();
            slots.release();
            assert_eq!(slots.available(), 1);
            slots.assert_invariants();
        });
    }

    #[test]
    fn loom_a_cancel_racing_a_grant_loses_no_slot() {
        model(|| {
            let slots = Arc::new(Slots::new(1));
            assert!(slots.try_acquire());
            let waiter = slots.acquire_or_enqueue().unwrap_err();
            let releaser = release_in_thread(&slots);
            if slots.cancel(&waiter) {
                slots.release();
            }
            releaser.join().unwrap();
            assert_eq!(slots.available(), 1);
            assert_eq!(slots.queued(), 0);
            slots.assert_invariants();
        });
    }

    #[test]
    fn loom_a_release_racing_an_enqueue_is_not_lost() {
        model(|| {
            let slots = Arc::new(Slots::new(1));
            assert!(slots.try_acquire());
            let releaser = release_in_thread(&slots);
            acquire(&slots);
            releaser.join().unwrap();
            assert_eq!(slots.available(), 0);
            slots.release();
            assert_eq!(slots.available(), 1);
            assert_eq!(slots.queued(), 0);
            slots.assert_invariants();
        });
    }

    #[test]
    fn loom_a_waiter_cancelled_while_another_queues_loses_no_slot() {
        model(|| {
            let slots = Arc::new(Slots::new(1));
            assert!(slots.try_acquire());
            let first = slots.acquire_or_enqueue().unwrap_err();
            let second = {
                let slots = slots.clone();
                thread::spawn(move || {
                    // Queues behind `first`, or takes the slot directly if
                    // `first` already gave up and the slot came back.
                    if let Err(waiter) = slots.acquire_or_enqueue() {
                        wait_for(&waiter);
                    }
                    slots.release();
                })
            };
            assert!(!slots.cancel(&first), "nothing was released yet");
            slots.release();
            second.join().unwrap();
            assert_eq!(slots.available(), 1);
            assert_eq!(slots.queued(), 0);
            slots.assert_invariants();
        });
    }
}
