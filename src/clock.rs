//! The clocks the layers' hot paths read: nanoseconds since an origin
//! ([`Clock`], for the rate limiters, the adaptive limit, retry's windowed
//! budget and the throttle), and tokio `Instant`s that meet tokio's own
//! ([`Instants`], for the timeout's deadlines and the circuit breaker).
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
//!
//! A [`Clock`]'s nanoseconds only meet each other, so its counter is
//! anchored once. An [`Instants`]' readings meet tokio's timer wheel, which
//! keeps the system's time, so its counter is anchored to the system's
//! clock again and again (see there).

// A build with the timeout or the breaker but none of the others uses only
// `Instants`, and one with neither only `Clock`: the full build checks both.
#![cfg_attr(
    not(all(
        any(feature = "timeout", feature = "circuit-breaker"),
        any(
            feature = "adaptive",
            feature = "rate-limit",
            feature = "retry",
            feature = "throttle"
        )
    )),
    allow(dead_code)
)]

use std::sync::OnceLock;
#[cfg(feature = "fast-clock")]
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
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

/// Where a layer reads `Instant`s from (a timer's deadline, say): tokio's
/// clock, or (with `fast-clock`) the CPU's counter translated to tokio's
/// clock. One per layer, shared by its services.
///
/// The source is decided at the layer's first reading inside a runtime,
/// much as a [`Clock`]'s is: the counter, unless tokio's clock is paused
/// or a test has moved it away from the system's (paused, advanced and
/// resumed it). Until then (and outside a runtime) readings come from
/// tokio's clock.
///
/// Unlike a [`Clock`]'s nanoseconds, these `Instant`s are compared with
/// tokio's own (its timer wheel fires on them), so the counter's
/// translation is anchored to the system's clock again every
/// [`REANCHOR_EVERY`]: the two may drift apart by hundreds of parts per
/// million while NTP slews the system's clock, which is at most a few
/// microseconds between anchors, far below the timer's millisecond.
#[derive(Debug, Default)]
pub(crate) struct Instants {
    decided: OnceLock<Source>,
}

/// Which clock an [`Instants`] reads, copied into whatever reads it later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// `tokio::time::Instant::now()`.
    Tokio,
    /// The process's [`Anchored`] counter.
    #[cfg(feature = "fast-clock")]
    Counter,
}

impl Instants {
    /// Sources for one layer. With `fast-clock` this calibrates the
    /// process's counter if nothing has yet (about half a millisecond,
    /// once), so that no request pays for it.
    pub(crate) fn new() -> Self {
        #[cfg(feature = "fast-clock")]
        Anchored::get();
        Instants::default()
    }

    /// The source to read, decided now if this is the layer's first
    /// reading inside a runtime; `None` outside one, before that.
    pub(crate) fn decided(&self) -> Option<Source> {
        if let Some(source) = self.decided.get() {
            return Some(*source);
        }
        #[cfg(feature = "fast-clock")]
        if tokio::runtime::Handle::try_current().is_err() {
            return None;
        }
        Some(*self.decided.get_or_init(|| {
            #[cfg(feature = "fast-clock")]
            if tokio_clock_is_the_systems() {
                return Source::Counter;
            }
            Source::Tokio
        }))
    }

    /// Now, on tokio's clock, from the layer's source (tokio's own until
    /// that is decided).
    #[inline]
    pub(crate) fn now(&self) -> Instant {
        self.decided().unwrap_or(Source::Tokio).now()
    }
}

impl Source {
    /// Now, on tokio's clock.
    #[inline]
    pub(crate) fn now(self) -> Instant {
        match self {
            Source::Tokio => Instant::now(),
            #[cfg(feature = "fast-clock")]
            Source::Counter => Anchored::get().now(),
        }
    }
}

/// How often the counter's translation to the system's clock is taken
/// again (see [`Instants`]).
#[cfg(feature = "fast-clock")]
const REANCHOR_EVERY: u64 = 10_000_000;

/// The CPU's counter, translated to the system's monotonic clock (which is
/// tokio's while tokio's is not paused). One per process: any reader may
/// take the translation again when it is due, and readers that race to do
/// so each store one that is right to within the counter's calibration.
#[cfg(feature = "fast-clock")]
#[derive(Debug)]
struct Anchored {
    counter: quanta::Clock,
    /// The counter's raw reading and the system's clock at the same moment,
    /// when the process's first layer was built.
    raw: u64,
    origin: std::time::Instant,
    /// Added to the counter's nanoseconds since `raw` to give the system
    /// clock's nanoseconds since `origin`.
    offset: AtomicI64,
    /// The counter's nanoseconds since `raw` at which to anchor again.
    next: AtomicU64,
}

#[cfg(feature = "fast-clock")]
impl Anchored {
    /// The process's.
    #[inline]
    fn get() -> &'static Anchored {
        static ANCHORED: OnceLock<Anchored> = OnceLock::new();
        ANCHORED.get_or_init(Anchored::new)
    }

    fn new() -> Self {
        let counter = quanta::Clock::new();
        Anchored {
            raw: counter.raw(),
            origin: std::time::Instant::now(),
            counter,
            offset: AtomicI64::new(0),
            next: AtomicU64::new(REANCHOR_EVERY),
        }
    }

    #[inline]
    fn now(&self) -> Instant {
        let counted = self.counter.delta_as_nanos(self.raw, self.counter.raw());
        if counted >= self.next.load(Ordering::Relaxed) {
            return self.anchor(counted);
        }
        // Counted nanoseconds fit an `i64` for 292 years; a negative sum
        // (the counter a little behind right after the origin) is the origin.
        let since = (counted as i64).saturating_add(self.offset.load(Ordering::Relaxed));
        match self
            .origin
            .checked_add(Duration::from_nanos(since.max(0) as u64))
        {
            Some(now) => Instant::from_std(now),
            None => Instant::now(),
        }
    }

    /// Reads the system's clock, and translates the counter by it from now on.
    #[cold]
    fn anchor(&self, counted: u64) -> Instant {
        let now = std::time::Instant::now();
        let since = nanos(now.saturating_duration_since(self.origin));
        self.offset
            .store(since as i64 - counted as i64, Ordering::Relaxed);
        self.next
            .store(counted.saturating_add(REANCHOR_EVERY), Ordering::Relaxed);
        Instant::from_std(now)
    }
}

/// Whether tokio's clock, as this thread sees it, reads what the system's
/// does: it is not paused, and was not moved on by a test that paused it,
/// advanced it and let it run again (it then keeps the lead).
#[cfg(feature = "fast-clock")]
fn tokio_clock_is_the_systems() -> bool {
    if tokio_clock_paused() {
        return false;
    }
    let tokio = Instant::now().into_std();
    let system = std::time::Instant::now();
    // Read in that order, the system's clock is ahead by the reading's
    // cost; a lead either way beyond this is not that.
    let apart = system
        .saturating_duration_since(tokio)
        .max(tokio.saturating_duration_since(system));
    apart < Duration::from_micros(100)
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

/// For the tests of the layers that read [`Instants`]: runs `test` on a
/// runtime whose clock runs as the system's, then on one whose clock was
/// paused, moved on by an hour and let run again (the two cases a layer's
/// source tells apart); `test` is told which (`true`: moved on).
#[cfg(test)]
pub(crate) fn on_running_and_moved_on_clocks(test: impl AsyncFn(bool)) {
    for moved_on in [false, true] {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(moved_on)
            .build()
            .expect("runtime");
        runtime.block_on(async {
            if moved_on {
                tokio::time::advance(Duration::from_secs(3600)).await;
                tokio::time::resume();
            }
            test(moved_on).await;
        });
    }
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

    /// `a` and `b` at most `slack` apart.
    fn close(a: Instant, b: Instant, slack: Duration) -> bool {
        a.saturating_duration_since(b) <= slack && b.saturating_duration_since(a) <= slack
    }

    /// The counter's `Instant`s read as tokio's clock does, while that is
    /// the system's (here, outside a runtime): between two of its readings.
    #[cfg(feature = "fast-clock")]
    #[test]
    fn counter_instants_read_as_tokios_clock() {
        for _ in 0..1000 {
            let before = Instant::now();
            let counted = Source::Counter.now();
            let after = Instant::now();
            let slack = Duration::from_micros(50);
            assert!(
                counted + slack >= before && counted <= after + slack,
                "{counted:?} outside {before:?} ..= {after:?}"
            );
        }
    }

    /// A translation gone wrong (here, set a second off) holds only until
    /// the next anchoring, which the first reading after it is due takes.
    #[cfg(feature = "fast-clock")]
    #[test]
    fn the_counter_is_anchored_again_when_due() {
        let anchored = Anchored::new();
        anchored.next.store(u64::MAX, Ordering::Relaxed);
        anchored.offset.store(1_000_000_000, Ordering::Relaxed);
        let slack = Duration::from_millis(1);
        assert!(!close(anchored.now(), Instant::now(), slack));
        anchored.next.store(0, Ordering::Relaxed);
        assert!(close(anchored.now(), Instant::now(), slack));
        assert!(close(anchored.now(), Instant::now(), slack));
        assert!(anchored.next.load(Ordering::Relaxed) >= REANCHOR_EVERY);
    }

    /// A layer's source is left open outside a runtime, then decided at
    /// its first reading inside one: tokio's clock where that is paused,
    /// or was paused and moved on; the counter where it runs as the
    /// system's.
    #[cfg(feature = "fast-clock")]
    #[test]
    fn a_source_is_decided_inside_a_runtime() {
        let runtime = |paused| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(paused)
                .build()
                .expect("runtime")
        };
        let instants = Instants::new();
        assert_eq!(instants.decided(), None);
        runtime(true).block_on(async { assert_eq!(instants.decided(), Some(Source::Tokio)) });
        // Decided once: a layer keeps its source.
        runtime(false).block_on(async { assert_eq!(instants.decided(), Some(Source::Tokio)) });

        let running = Instants::new();
        runtime(false).block_on(async { assert_eq!(running.decided(), Some(Source::Counter)) });

        let moved_on = Instants::new();
        runtime(true).block_on(async {
            tokio::time::advance(Duration::from_secs(3600)).await;
            tokio::time::resume();
            assert_eq!(moved_on.decided(), Some(Source::Tokio));
        });
    }

    #[test]
    fn nanos_saturate() {
        assert_eq!(nanos(Duration::from_millis(3)), 3_000_000);
        assert_eq!(nanos(Duration::MAX), u64::MAX);
    }
}
