//! Per-call overhead of each layer on a no-op inner service, side by side
//! with tower's own layers, in one run.
//!
//! Each iteration is one whole call: `poll_ready`, `call`, and polling the
//! response future to completion with a no-op waker, inside a tokio
//! current-thread runtime context (timeouts need its timer). Subtract the
//! `bare` row to get a layer's overhead.
//!
//! Run with `cargo bench --bench layers`; later layers add their rows here.

#[path = "../tests/support/noop.rs"]
mod noop;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use noop::{Noop, SecondPoll, call_once};
use palisade::bulkhead::BulkheadLayer;
use palisade::timeout::TimeoutLayer;
use tower::{Layer, Service};

fn row<S>(c: &mut Criterion, name: &str, mut svc: S)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    c.bench_function(name, |b| b.iter(|| call_once(&mut svc, black_box(1))));
}

const TIMEOUT: Duration = Duration::from_secs(30);
const LIMIT: usize = 64;

fn palisade_timeout() -> TimeoutLayer {
    TimeoutLayer::new(TIMEOUT).expect("valid timeout")
}

fn palisade_bulkhead() -> BulkheadLayer {
    BulkheadLayer::new(LIMIT).expect("valid limit")
}

fn layers(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();

    row(c, "bare", Noop);

    row(
        c,
        "timeout/tower",
        tower::timeout::Timeout::new(Noop, TIMEOUT),
    );
    row(c, "timeout/palisade", palisade_timeout().layer(Noop));
    // The inner call has to wait once, so both must arm a timer.
    row(c, "timeout_armed/bare", SecondPoll);
    row(
        c,
        "timeout_armed/tower",
        tower::timeout::Timeout::new(SecondPoll, TIMEOUT),
    );
    row(
        c,
        "timeout_armed/palisade",
        palisade_timeout().layer(SecondPoll),
    );

    row(
        c,
        "bulkhead/tower_concurrency_limit",
        tower::limit::ConcurrencyLimit::new(Noop, LIMIT),
    );
    row(c, "bulkhead/palisade", palisade_bulkhead().layer(Noop));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = layers
}
criterion_main!(benches);
