//! Circuit breaker (in progress: the sliding windows).

#![allow(dead_code)] // the windows are used by the breaker as it lands

// Design of the rest (issue 3), for the sessions that build it:
//
// - Each state period (Closed, Open, HalfOpen, ForcedOpen, Disabled,
//   MetricsOnly) is its own `Period` with its own window and probe tally. The
//   breaker holds the current one in an `ArcSwap` (arc-swap: a lock-free load
//   per call, a store per transition), and every admitted call holds an `Arc`
//   to the period it was admitted under. A late result lands in a detached
//   period, so generations are exact by construction (principle 5), and a
//   window is never reset while other threads write to it.
// - A period reaches its breaker through a `Weak`, upgraded only to make a
//   transition. Transitions take a mutex and re-check that the period is
//   still current (`Arc::ptr_eq`), so no two threads make the same one.
// - HalfOpen probes: a compare-and-swap slot counter capped at the probe
//   limit; a probe dropped or ignored gives its slot back through `Drop`. The
//   breaker reopens as soon as the probes' rate is certain to reach the
//   threshold over all N probes, and closes when all N report below it.
// - Open -> HalfOpen happens lazily, on the first call after the open
//   duration; the half-open wait bound is checked the same way.
// - The closed path, count window, no slow-call detection: one `ArcSwap`
//   load and an `Arc` clone to admit, a `fetch_add` and a `swap` to record,
//   no clock read.

mod window;
