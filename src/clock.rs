//! The clock the layers' hot paths read: nanoseconds since an origin.
//!
//! Two sources, one answer. Tokio's clock (`tokio::time::Instant`) is the
//! one tests control: paused, it stands still until the test advances it,
//! and every layer must follow it there exactly as tokio's timers do. But
//! outside tests it is `std::time::Instant::now()`, a read of the system's
//! monotonic clock (through the vDSO, without a system call) that costs
//! about 20 ns on an AMD EPYC VM, most of what a rate limiter's check
//! costs. With the `fast-clock` feature (on by default) the
//! clock reads the CPU's time-stamp counter through `quanta` instead (about
//! 8 ns there), unless tokio's clock is paused.
//!
//! Which source a clock reads is decided at its first reading, not when it
//! is built, so a layer built before the runtime starts still follows a
//! runtime whose clock starts paused. The test is direct: tokio's clock is
//! read, then read again once the system clock has moved on by a
//! microsecond; a paused clock has not moved. From then on the clock keeps
//! its source, so a test must pause time before a layer first reads it
//! (`#[tokio::test(start_paused = true)]` does). Both sources count the
//! same nanoseconds: the counter's readings continue from tokio's reading
//! at that first moment, so the two agree but for the counter's
//! calibration error (parts per million).
//!
//! The counter is calibrated against the system's clock when the first
//! clock of the process is built (about half a millisecond, once), so that
//! no request pays for it; a clock's first reading then spins for a
//! microsecond to decide its source.
//!
//! Where no invariant time-stamp counter is available (or the feature is
//! off) `quanta` and this module read the system's monotonic clock.

use std::time::Duration;

use tokio::time::Instant;

/// Nanoseconds since a clock's origin, from tokio's clock or (with
/// `fast-clock`, while tokio's is not paused) the CPU's counter.
#[derive(Debug)]
pub(crate) struct Clock {
    origin: Instant,
    #[cfg(feature = "fast-clock")]
    counter: quanta::Clock,
    /// Set at the first reading: where the counter's readings start from,
    /// or `None` to read tokio's clock.
    #[cfg(feature = "fast-clock")]
    anchor: std::sync::OnceLock<Option<Anchor>>,
}

/// The time-stamp counter, anchored to tokio's clock at one instant.
#[cfg(feature = "fast-clock")]
#[derive(Clone, Copy, Debug)]
struct Anchor {
    /// The counter's raw reading at the anchor.
    raw: u64,
    /// Nanoseconds since the origin at the anchor, on tokio's clock.
    at: u64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            origin: Instant::now(),
            #[cfg(feature = "fast-clock")]
            counter: quanta::Clock::new(),
            #[cfg(feature = "fast-clock")]
            anchor: std::sync::OnceLock::new(),
        }
    }

    /// Nanoseconds since the origin.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        #[cfg(feature = "fast-clock")]
        if let Some(anchor) = self.anchor.get_or_init(|| self.anchor()) {
            let since = self.counter.delta_as_nanos(anchor.raw, self.counter.raw());
            return anchor.at.saturating_add(since);
        }
        self.tokio_now()
    }

    /// Nanoseconds since the origin, on tokio's clock.
    #[inline]
    fn tokio_now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.origin))
    }

    /// The counter, anchored now; `None` while tokio's clock is paused.
    #[cfg(feature = "fast-clock")]
    #[cold]
    fn anchor(&self) -> Option<Anchor> {
        if tokio_clock_paused() {
            return None;
        }
        Some(Anchor {
            raw: self.counter.raw(),
            at: self.tokio_now(),
        })
    }
}

/// Whether tokio's clock, as this thread sees it, stands still while the
/// system's moves on by a microsecond: then it is paused. A running clock
/// moves with the system's; a paused one moves only when a test advances
/// it or the runtime is idle, neither of which can happen during this
/// synchronous wait.
#[cfg(feature = "fast-clock")]
fn tokio_clock_paused() -> bool {
    let before = Instant::now();
    let system = std::time::Instant::now();
    while system.elapsed() < Duration::from_micros(1) {
        std::hint::spin_loop();
    }
    Instant::now() == before
}

/// `d` in nanoseconds, saturating (in u64 arithmetic: `Duration::as_nanos`
/// goes through u128).
#[inline]
pub(crate) fn nanos(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock first read on a paused runtime follows tokio's clock: it
    /// moves exactly as far as the test advances time, and not otherwise.
    #[tokio::test(start_paused = true)]
    async fn follows_a_paused_clock() {
        let clock = Clock::new();
        let start = clock.now();
        spin(Duration::from_millis(1)); // real time passes
        assert_eq!(clock.now(), start);
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(clock.now() - start, 250_000_000);
    }

    /// Built outside any runtime, first read inside a paused one: it
    /// follows the paused clock all the same.
    #[test]
    fn decides_at_its_first_reading() {
        let clock = Clock::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let start = clock.now();
            tokio::time::advance(Duration::from_secs(3)).await;
            assert_eq!(clock.now() - start, 3_000_000_000);
        });
    }

    /// On a running clock, readings never go back, and move on as far as
    /// the system's clock does over the same stretch (within 1 % and a
    /// microsecond: the counter's calibration, the readings' own cost).
    #[test]
    fn running_clock_keeps_the_system_clocks_pace() {
        let clock = Clock::new();
        let outer = std::time::Instant::now();
        let first = clock.now();
        let inner = std::time::Instant::now();
        let mut last = first;
        while inner.elapsed() < Duration::from_millis(1) {
            let now = clock.now();
            assert!(now >= last, "went back from {last} to {now}");
            last = now;
        }
        let inner = nanos(inner.elapsed());
        let moved = clock.now() - first;
        let outer = nanos(outer.elapsed());
        assert!(
            moved + moved / 100 + 1_000 >= inner && moved <= outer + outer / 100 + 1_000,
            "moved {moved} ns while the system clock moved {inner} to {outer} ns"
        );
    }

    /// Waits until the system's clock has moved on by `d` (real time passes
    /// while tokio's clock is paused).
    fn spin(d: Duration) {
        let start = std::time::Instant::now();
        while start.elapsed() < d {
            std::hint::spin_loop();
        }
    }

    #[cfg(feature = "fast-clock")]
    #[test]
    fn a_running_clock_is_not_taken_for_paused() {
        assert!(!tokio_clock_paused());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        runtime.block_on(async { assert!(!tokio_clock_paused()) });
        let paused = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        paused.block_on(async { assert!(tokio_clock_paused()) });
    }

    #[test]
    fn nanos_saturate() {
        assert_eq!(nanos(Duration::from_millis(3)), 3_000_000);
        assert_eq!(nanos(Duration::MAX), u64::MAX);
    }
}
