//! A keyed rate limiter whose table of keys is full, under tokio's paused
//! clock: a flood of new keys neither locks a new client out nor gives any
//! key a fresh allowance, and memory stays bounded.

use std::time::Duration;

use palisade::rate_limit::{RateLimitBuilder, RateLimitLayer};
use palisade::{BoxError, ErrorKind};
use tokio::time::{Instant, advance};
use tower::{Layer, Service, ServiceExt};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A keyed service whose request is its key.
fn keyed(
    builder: RateLimitBuilder,
    max_keys: usize,
) -> (
    palisade::rate_limit::KeyedHandle<u64>,
    impl Service<u64, Response = u64, Error = BoxError>,
) {
    let layer = builder
        .keyed(|key: &u64| *key)
        .max_keys(max_keys)
        .build()
        .unwrap();
    let service = tower::service_fn(|key: u64| async move { Ok::<_, BoxError>(key) });
    (layer.handle(), layer.layer(service))
}

/// Whether one call for `key` is admitted (a refusal must be a rate
/// limit's).
async fn admitted<S>(svc: &mut S, key: u64) -> bool
where
    S: Service<u64, Response = u64, Error = BoxError>,
{
    match svc.ready().await.unwrap().call(key).await {
        Ok(_) => true,
        Err(err) => {
            assert!(
                matches!(ErrorKind::of(&err), ErrorKind::RateLimited(_)),
                "{err}"
            );
            false
        }
    }
}

/// scenario KY-2 (memory stays bounded), under a flood: a million distinct
/// keys, one call each, 2 000 a minute into a table of 1 000 keys (16 maps
/// of 63) with a sliding window of 10 a minute. The table stays full of
/// the flood's keys, busy for up to two windows each, and most of the flood
/// is decided through the overflow sketch. Every minute, halfway through
/// the window, a new client makes 12 calls at once. It gets at most its 10
/// (the sketch only over-counts), and loses permits only to the flood's
/// calls through all four of its sketch cells, about 2 a cell in the window
/// at that instant: on average it gets over 9, and fewer than 4 would need
/// more than 6 of them in each of its four cells (odds under 1 in 10⁹ per
/// client for calls spread at random). Before the sketch, a new key was
/// refused outright while the table was full. The table never holds more
/// than `max_keys` rounded up to a multiple of 16 (the sketch's cells are
/// allocated once: 4 rows of 1 008, checked in its unit tests).
#[tokio::test(start_paused = true)]
async fn a_flood_of_new_keys_does_not_lock_out_a_new_client() {
    const MAX_KEYS: usize = 1_000;
    const FLOOD: u64 = 1_000_000;
    const BATCH: u64 = 1_000;
    let (handle, mut svc) = keyed(RateLimitLayer::sliding_window(10, secs(60)), MAX_KEYS);
    let mut most = 0;
    let mut clients = Vec::new();
    for batch in 0..FLOOD / BATCH {
        for i in 0..BATCH {
            admitted(&mut svc, batch * BATCH + i).await;
        }
        most = most.max(handle.len());
        if batch % 2 == 1 {
            let client = u64::MAX - batch;
            let mut got = 0;
            for _ in 0..12 {
                got += u64::from(admitted(&mut svc, client).await);
            }
            clients.push(got);
        }
        advance(secs(30)).await;
    }
    assert!(most <= 1_008, "{most} keys held");
    assert!(
        handle.overflow_calls() > FLOOD / 2,
        "the flood went through the sketch: {}",
        handle.overflow_calls()
    );
    let total: u64 = clients.iter().sum();
    let fewest = clients.iter().min().copied().unwrap_or(0);
    let most_got = clients.iter().max().copied().unwrap_or(0);
    assert!(most_got <= 10, "a client got {most_got} of its 10");
    assert!(fewest >= 4, "a client got only {fewest} of its 10");
    assert!(
        total * 100 >= clients.len() as u64 * 10 * 90,
        "{total} of {} admitted",
        clients.len() * 10
    );
}

/// A rate limiter's constructor: `RateLimitLayer::gcra` and the like.
type Algorithm = fn(u64, Duration) -> RateLimitBuilder;

/// Calls for `key` until one is refused, checking each admission against
/// `own`, a limiter of the key's own fed exactly its admitted calls:
/// every call admitted for the key must be one its own limiter admits.
/// Returns how many were admitted.
async fn spend<S, O>(svc: &mut S, own: &mut O, key: u64, what: &str) -> u64
where
    S: Service<u64, Response = u64, Error = BoxError>,
    O: Service<u64, Response = u64, Error = BoxError>,
{
    let mut n = 0;
    while admitted(svc, key).await {
        assert!(admitted(own, key).await, "{what}: over its own limit");
        n += 1;
    }
    n
}

/// A client that spent its limit, then a flood that fills the table and
/// then rotates it, then that client again: nothing is reset (scenario
/// FX-3's rule, that a keyed store drops a limiter only once nothing it
/// counted still matters, under a flood).
///
/// For each algorithm (10 per minute, a table of 32 keys, two in each of
/// its 16 maps, so that `B` finds room even in the map that holds `A`,
/// which stays busy throughout): key `A` spends
/// its 10 in the table before the flood, and during it gets back exactly
/// what its own limiter gives back (nothing for the windows, GCRA's
/// steady refill). Key `B` comes while the table is full, spends what the
/// sketch gives it, and comes back once the flood's keys have gone idle
/// and been swept: it now has a place in the table, and starts from what
/// the sketch held for it, never from a fresh limit. Each is checked
/// against a limiter of its own (an unkeyed layer fed exactly its
/// admitted calls): the sketch and the move only ever over-count.
#[tokio::test(start_paused = true)]
async fn a_spent_key_stays_spent_through_a_flood_and_into_the_table() {
    const A: u64 = u64::MAX;
    const B: u64 = u64::MAX - 1;
    // When B spends, and when it comes back: the flood's keys (one call
    // at 0 s each) are idle at 60 s for the log and GCRA, but at 120 s for
    // the sliding window counter (its previous window still counts them
    // until then), and a map is swept at most once a minute.
    // (A segmented window of 3 segments: its keys' calls at 0 s have left
    // at 60 s. A fixed window is left out: at 61 s a new window really
    // does give B its 10 again.)
    let kinds: [(Algorithm, u64, u64); 4] = [
        (RateLimitLayer::sliding_window, 61, 121),
        (RateLimitLayer::sliding_log, 30, 61),
        (RateLimitLayer::gcra, 30, 61),
        (
            |limit, window| RateLimitLayer::segmented_window(limit, window, 3),
            30,
            61,
        ),
    ];
    for (algorithm, spends, returns) in kinds {
        let own = || {
            let service = tower::service_fn(|key: u64| async move { Ok::<_, BoxError>(key) });
            algorithm(10, secs(60)).build().unwrap().layer(service)
        };
        let (mut own_a, mut own_b) = (own(), own());
        let kind = algorithm(10, secs(60)).build().unwrap().handle().kind();
        let (handle, mut svc) = keyed(algorithm(10, secs(60)), 32);
        let start = Instant::now();
        let until = |t: u64| start + secs(t) - Instant::now();

        assert_eq!(spend(&mut svc, &mut own_a, A, "A").await, 10, "{kind:?}");
        // The flood, until every map is full, and some more.
        let mut junk = 0;
        while handle.len() < 32 {
            admitted(&mut svc, junk).await;
            junk += 1;
        }
        for key in junk..junk + 200 {
            admitted(&mut svc, key).await;
        }

        advance(until(spends)).await;
        spend(&mut svc, &mut own_a, A, "A").await;
        assert!(!admitted(&mut own_a, A).await, "{kind:?}: A refused early");
        let overflow = handle.overflow_calls();
        let spent = spend(&mut svc, &mut own_b, B, "B").await;
        assert!(spent > 0, "{kind:?}: B was let in through the sketch");
        assert!(handle.overflow_calls() > overflow, "{kind:?}");

        advance(until(returns)).await;
        let overflow = handle.overflow_calls();
        let again = spend(&mut svc, &mut own_b, B, "B").await;
        assert!(again < 10, "{kind:?}: B got {again}, as if new");
        assert_eq!(
            handle.overflow_calls(),
            overflow,
            "{kind:?}: B is decided in the table now"
        );
    }
}
