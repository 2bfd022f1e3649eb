//! What the shop exposes at `GET /metrics` on each gateway: palisade's
//! layers (their `palisade_…` series) and every service's requests, in
//! Prometheus's text format.
//!
//! palisade makes its metric handles when a layer is built, against the
//! recorder installed then, so [`install`] runs before anything is built.
//! The recorder is the process's: every shop started in one process (the
//! tests start many) reports into it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
/// Requests recorded: every [`UPKEEP_EVERY`]th folds the latencies held
/// since into the summaries, which the recorder needs done now and then;
/// no timer of its own.
static RECORDED: AtomicU64 = AtomicU64::new(0);
const UPKEEP_EVERY: u64 = 1024;

/// Installs the Prometheus recorder, once per process; `None` when another
/// recorder was installed first (then `/metrics` says so).
pub fn install() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .as_ref()
}

/// The text a scrape gets, or `None` without the recorder.
pub fn render() -> Option<String> {
    install().map(PrometheusHandle::render)
}

/// Counts one answered request of `service` with its status, and its
/// latency: `shop_http_requests_total{service, code}` and
/// `shop_http_request_duration_seconds{service}` (a summary).
pub fn record_request(service: &'static str, code: u16, latency: Duration) {
    metrics::counter!(
        "shop_http_requests_total",
        "service" => service,
        "code" => code.to_string()
    )
    .increment(1);
    metrics::histogram!("shop_http_request_duration_seconds", "service" => service)
        .record(latency.as_secs_f64());
    if RECORDED.fetch_add(1, Ordering::Relaxed) % UPKEEP_EVERY == UPKEEP_EVERY - 1
        && let Some(Some(handle)) = RECORDER.get()
    {
        handle.run_upkeep();
    }
}
