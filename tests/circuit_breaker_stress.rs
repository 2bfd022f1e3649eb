//! Many tasks on a two-worker runtime hammer one breaker, with random
//! cancellation: through its half-open period, over and over, never more
//! than the allowed probes run at once and every transition happens exactly
//! once; in Closed, the counts come out exact. Nothing sleeps: the inner
//! service yields instead of waiting.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::circuit_breaker::{CircuitBreakerBuilder, CircuitBreakerLayer, Event, Reason, State};
use support::stress::{bounded, hammer};
use support::yielder::{Counters, Yielder};
use tower::Layer;

const PROBES: usize = 3;
const ROUNDS: u64 = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_never_lets_more_than_its_probes_through() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let layer = CircuitBreakerLayer::builder()
        .half_open_probes(PROBES as u32)
        .failure_rate(0.5) // two failed probes of three reopen it
        .open_for(Duration::from_secs(3_600))
        .on_event(move |e| {
            if let Event::Transition(t) = e {
                sink.lock()
                    .unwrap()
                    .push((t.generation, t.from, t.to, t.reason));
            }
        })
        .build()
        .unwrap();
    let handle = layer.handle();
    let counters = Arc::new(Counters::default());
    let svc = layer.layer(Yielder(counters.clone()));

    let mut full_rounds = 0;
    bounded(async {
        for round in 0..ROUNDS {
            counters.max_in_flight.store(0, Ordering::SeqCst);
            // Open, with the open duration already over: the first call of
            // the round moves the breaker to HalfOpen, and every call after
            // fails, so the probes reopen it for an hour.
            assert!(handle.open_for(Duration::ZERO));
            let tally = hammer(svc.clone(), 32, 4, 1, round).await;
            let max = counters.max_in_flight.load(Ordering::SeqCst);
            assert!(max <= PROBES, "round {round}: {max} probes at once");
            full_rounds += usize::from(max == PROBES);
            assert_eq!(counters.in_flight.load(Ordering::SeqCst), 0);
            assert_eq!(handle.state(), State::Open, "round {round}: {tally:?}");
            assert_eq!(tally.succeeded, 0);
            assert!(tally.failed >= 2, "round {round}: {tally:?}");
        }
    })
    .await;
    // The race is real: the probes were often all out at once.
    assert!(full_rounds > 0, "no round had {PROBES} probes in flight");

    // Every transition exactly once: a manual open, Open to HalfOpen, and
    // HalfOpen back to Open, per round, each with its own generation.
    let mut events = events.lock().unwrap().clone();
    events.sort_by_key(|e| e.0);
    assert_eq!(events.len() as u64, 3 * ROUNDS);
    for (i, (generation, from, to, reason)) in events.into_iter().enumerate() {
        assert_eq!(generation, i as u64 + 1);
        let expected = match i % 3 {
            0 => (State::Open, Reason::Manual),
            1 => (State::HalfOpen, Reason::OpenDurationPassed),
            _ => (State::Open, Reason::FailureRate),
        };
        assert_eq!((to, reason), expected, "transition {i}");
        if i % 3 == 0 && i > 0 {
            assert_eq!(from, State::Open, "transition {i}");
        }
    }
}

async fn closed_counts_are_exact(builder: CircuitBreakerBuilder, seed: u64) {
    let layer = builder.build().unwrap();
    let handle = layer.handle();
    let counters = Arc::new(Counters::default());
    let svc = layer.layer(Yielder(counters.clone()));
    let tally = bounded(hammer(svc, 64, 200, 3, seed)).await;
    let s = handle.snapshot();
    assert_eq!(s.state, State::Closed);
    assert_eq!(tally.refused, 0);
    assert!(tally.cancelled > 0 && tally.failed > 0, "{tally:?}");
    // A cancelled call counts neither way; every finished one counts once.
    assert_eq!(s.calls, tally.succeeded + tally.failed, "{tally:?}");
    assert_eq!(s.failures, tally.failed, "{tally:?}");
    assert_eq!(counters.in_flight.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_count_window_counts_exactly_under_contention() {
    // The window holds every call (64 × 200 < 16 384), and never trips.
    let builder = CircuitBreakerLayer::builder()
        .count_window(16_384)
        .minimum_calls(16_384)
        .failure_rate(1.0);
    closed_counts_are_exact(builder, 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_time_window_counts_exactly_under_contention() {
    let builder = CircuitBreakerLayer::builder()
        .time_window(Duration::from_secs(3_600))
        .minimum_calls(1_000_000)
        .failure_rate(1.0);
    closed_counts_are_exact(builder, 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_never_lost_through_half_open() {
    // Waiting mode: callers that find every probe slot taken wait for a
    // slot or for the breaker to close. With cancelled probes and cancelled
    // waiters in the mix, every round must finish (no lost wake-up, no
    // stranded slot) and close the breaker. The wait bound is an hour, so
    // only a wake-up, never the timer, can end a wait here.
    let layer = CircuitBreakerLayer::builder()
        .half_open_probes(PROBES as u32)
        .open_for(Duration::from_secs(3_600))
        .wait_when_open(Duration::from_secs(3_600))
        .build()
        .unwrap();
    let handle = layer.handle();
    let counters = Arc::new(Counters::default());
    let svc = layer.layer(Yielder(counters.clone()));
    bounded(async {
        for round in 0..ROUNDS / 3 {
            assert!(handle.open_for(Duration::ZERO));
            let tally = hammer(svc.clone(), 32, 4, u64::MAX, 1_000 + round).await;
            assert_eq!(handle.state(), State::Closed, "round {round}: {tally:?}");
            assert_eq!(tally.failed, 0, "round {round}: {tally:?}");
            // A waiter that was let through holds its probe slot, so only a
            // caller that never waited can lose a slot between readiness
            // and its call: few refusals, never most calls.
            assert!(
                tally.refused * 4 < tally.succeeded,
                "round {round}: {tally:?}"
            );
            assert!(tally.succeeded >= PROBES as u64, "round {round}: {tally:?}");
            assert_eq!(counters.in_flight.load(Ordering::SeqCst), 0);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_keyed_breaker_keeps_its_bound_and_its_isolations_under_contention() {
    // 500 keys, in turn, through a store of 32 (2 in each of its 16 parts):
    // most calls find no room and share the overflow breaker, while new
    // keys race each other for the places. No breaker ever opens on its
    // own (the window holds every call), and key 0 is isolated by hand.
    const KEYS: u64 = 500;
    let next = Arc::new(AtomicU64::new(0));
    let isolated_calls = Arc::new(AtomicU64::new(0));
    let key_of = {
        let (next, isolated_calls) = (next.clone(), isolated_calls.clone());
        move |_: &u64| {
            let key = next.fetch_add(1, Ordering::SeqCst) % KEYS;
            if key == 0 {
                isolated_calls.fetch_add(1, Ordering::SeqCst);
            }
            key
        }
    };
    let layer = CircuitBreakerLayer::builder()
        .count_window(16_384)
        .minimum_calls(16_384)
        .failure_rate(1.0)
        .keyed(key_of)
        .max_keys(32)
        .build()
        .unwrap();
    let hosts = layer.handle();
    assert!(hosts.breaker(0).force_open());
    let counters = Arc::new(Counters::default());
    let svc = layer.layer(Yielder(counters.clone()));
    let tally = bounded(hammer(svc, 64, 200, 3, 21)).await;

    assert_eq!(counters.in_flight.load(Ordering::SeqCst), 0);
    assert!(tally.cancelled > 0 && tally.failed > 0, "{tally:?}");
    assert_eq!(hosts.len(), 32, "full, and never past the bound");
    assert_eq!(hosts.get(&0).map(|h| h.state()), Some(State::ForcedOpen));
    assert_eq!(
        tally.refused,
        isolated_calls.load(Ordering::SeqCst),
        "only the isolated key's calls were refused, every one of them"
    );
    // Every finished call counted once, in its key's breaker or the
    // overflow breaker; the overflow also saw cancelled calls.
    let own: u64 = hosts
        .keys()
        .iter()
        .map(|key| hosts.get(key).unwrap().snapshot().calls)
        .sum();
    let finished = tally.succeeded + tally.failed;
    assert!(own <= finished, "{own} counted, {tally:?}");
    assert!(
        hosts.overflow_calls() >= finished - own,
        "{} overflow calls, {own} counted, {tally:?}",
        hosts.overflow_calls()
    );
    assert!(hosts.overflow_calls() > finished / 2, "{tally:?}");
}
