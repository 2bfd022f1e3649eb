//! The demo, run in-process under tokio's paused clock: every phase must
//! show what it is there to show.

use palisade_shop::{ShopOptions, demo, start};

#[tokio::test(start_paused = true)]
async fn every_demo_phase_shows_what_it_should() {
    let running = start(demo::with_demo_key(ShopOptions {
        base_port: 0,
        ..ShopOptions::default()
    }))
    .await
    .expect("the shop starts");
    let mut tables = Vec::new();
    let reports = demo::run(&running, &mut tables, false).await;
    let tables = String::from_utf8(tables).unwrap();
    assert_eq!(reports.len(), 9);
    for (number, report) in reports.iter().enumerate() {
        assert!(report.passed(), "{}", report.table(number + 1));
        assert!(report.requests > 0);
        assert!(tables.contains(report.title));
    }
    // The phases' own figures, beyond their checks.
    let [
        healthy,
        failing,
        recovery,
        slow,
        limited,
        payment,
        scattered,
        replica,
        catalogue,
    ] = &reports[..]
    else {
        unreachable!()
    };
    assert!(healthy.transitions.is_empty());
    assert_eq!(failing.transitions, ["gateway→product closed→open"]);
    assert_eq!(
        recovery.transitions,
        [
            "gateway→product open→half_open",
            "gateway→product half_open→closed"
        ]
    );
    assert_eq!(slow.statuses.get(&504), Some(&3));
    assert_eq!(limited.statuses.get(&429), Some(&10));
    assert_eq!(payment.statuses.get(&402), Some(&5));
    // Nobody's order breaker opened over cancelled orders.
    assert!(
        !payment
            .transitions
            .iter()
            .any(|t| t.starts_with("gateway→order"))
    );
    // Scattered failures open no breaker, and most of them are retried
    // into answers.
    assert!(
        scattered.transitions.is_empty(),
        "{:?}",
        scattered.transitions
    );
    assert!(scattered.retries > 0);
    assert!(
        scattered.statuses.get(&200) > Some(&850),
        "{:?}",
        scattered.statuses
    );
    // The failing replica's errors before its ejection are retried on the
    // others: hardly any request fails at all.
    let failed: usize = replica
        .statuses
        .iter()
        .filter(|(status, _)| **status != 200)
        .map(|(_, n)| n)
        .sum();
    assert!(failed * 100 < replica.requests, "{:?}", replica.statuses);
    // The list's copy served while the product circuit was open, between
    // its opening and its closing again. (The order service's breakers may
    // move meanwhile: it voids phase 6's payments in the background.)
    let product: Vec<&String> = catalogue
        .transitions
        .iter()
        .filter(|t| t.starts_with("gateway→product"))
        .collect();
    assert_eq!(
        product,
        [
            "gateway→product closed→open",
            "gateway→product open→half_open",
            "gateway→product half_open→closed"
        ]
    );
    assert_eq!(
        catalogue.statuses.get(&503),
        Some(&2),
        "{:?}",
        catalogue.statuses
    );
    running.shutdown().await.unwrap();
}
