//! How long to wait before each retry: a schedule (constant, linear,
//! exponential) capped at a maximum, then spread by jitter, and capped again.

use std::time::Duration;

use crate::rng::Rng;

/// The delay before each retry, before jitter: see [`Backoff::constant`],
/// [`Backoff::linear`] and [`Backoff::exponential`].
///
/// ```
/// use std::time::Duration;
/// use palisade::retry::{Backoff, Jitter};
///
/// // 100 ms, 200 ms, 400 ms, ... at most 2 s, each drawn uniformly below that.
/// let backoff = Backoff::exponential(Duration::from_millis(100))
///     .max(Duration::from_secs(2))
///     .jitter(Jitter::Full);
/// # let _ = backoff;
/// ```
///
/// With the `serde` feature it implements `Deserialize`, as a table with a
/// `kind` (`"constant"`, `"linear"` or `"exponential"`), a `base` delay and
/// optionally `multiplier` (exponential only), `max` and `jitter`
/// (`"none"`, `"full"`, `"equal"`, `"decorrelated"` or
/// `{ proportional = 0.25 }`):
///
/// ```text
/// [backoff]
/// kind = "exponential"
/// base = "100ms"
/// max = "5s"
/// jitter = "full"
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "spec::BackoffSpec"))]
pub struct Backoff {
    pub(crate) schedule: Schedule,
    pub(crate) base: Duration,
    pub(crate) max: Duration,
    pub(crate) jitter: Jitter,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Schedule {
    Constant,
    Linear,
    Exponential { multiplier: f64 },
}

/// How a delay is spread, so that clients that failed together do not retry
/// together. The result never exceeds the backoff's maximum.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Jitter {
    /// The delay as scheduled.
    None,
    /// Uniform in `[0, d]`: the widest spread ("full jitter").
    Full,
    /// `d / 2` plus uniform in `[0, d / 2]`: never less than half the delay.
    Equal,
    /// `min(max, uniform(base, 3 × previous delay))`, starting from the base:
    /// grows on its own, ignoring the schedule's multiplier ("decorrelated
    /// jitter").
    Decorrelated,
    /// `d × (1 ± p)`, uniform: `Proportional(0.25)` is ±25 %. `p` in
    /// `[0, 1]`.
    Proportional(f64),
}

impl Backoff {
    /// The same delay before every retry.
    pub fn constant(delay: Duration) -> Self {
        Self::new(Schedule::Constant, delay)
    }

    /// `base`, `2 × base`, `3 × base`, ...
    pub fn linear(base: Duration) -> Self {
        Self::new(Schedule::Linear, base)
    }

    /// `base`, then doubling (or growing by [`multiplier`](Self::multiplier)).
    pub fn exponential(base: Duration) -> Self {
        Self::new(Schedule::Exponential { multiplier: 2.0 }, base)
    }

    fn new(schedule: Schedule, base: Duration) -> Self {
        Backoff {
            schedule,
            base,
            max: Duration::MAX,
            jitter: Jitter::None,
        }
    }

    /// The growth factor of an exponential backoff (default 2; at least 1).
    /// No effect on the other schedules.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        if let Schedule::Exponential { .. } = self.schedule {
            self.schedule = Schedule::Exponential { multiplier };
        }
        self
    }

    /// The longest delay, before and after jitter (default: no cap).
    pub fn max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// How each delay is spread (default [`Jitter::None`]).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The delays before each retry in turn (the first retry's first),
    /// jittered, from a random seed: for a loop of your own, such as a
    /// background task that retries until a service answers. The sequence
    /// never ends; bound it with `take`, a deadline or a budget.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade::retry::{Backoff, Jitter};
    ///
    /// let backoff = Backoff::exponential(Duration::from_secs(1)).max(Duration::from_secs(30));
    /// let delays: Vec<Duration> = backoff.delays().take(7).collect();
    /// assert_eq!(delays[..3], [1, 2, 4].map(Duration::from_secs));
    /// assert_eq!(delays[6], Duration::from_secs(30)); // capped
    ///
    /// // Jittered, each delay is drawn within its band.
    /// let jittered = backoff.jitter(Jitter::Equal).delays().take(3);
    /// for (delay, band) in jittered.zip([1, 2, 4]) {
    ///     let band = Duration::from_secs(band);
    ///     assert!(band / 2 <= delay && delay <= band);
    /// }
    /// ```
    ///
    /// The values are not checked here: a maximum below the base gives
    /// delays capped at the maximum. [`RetryBuilder::build`] checks them.
    ///
    /// [`RetryBuilder::build`]: super::RetryBuilder::build
    pub fn delays(&self) -> Delays {
        self.delays_seeded(Rng::random_seed(self.base.subsec_nanos().into()))
    }

    /// As [`delays`](Self::delays), from `seed`: the same seed, the same
    /// sequence.
    pub fn delays_seeded(&self, seed: u64) -> Delays {
        Delays {
            backoff: *self,
            rng: Rng::new(seed),
            retry: 0,
            previous: None,
        }
    }

    /// The checks the retry builder runs; `Err` names the field and the rule.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max < self.base {
            return Err((
                "backoff.max",
                format!(
                    "must be at least the base delay ({:?}), got {:?}",
                    self.base, self.max
                ),
            ));
        }
        if let Schedule::Exponential { multiplier } = self.schedule
            && !(multiplier.is_finite() && multiplier >= 1.0)
        {
            return Err((
                "backoff.multiplier",
                format!("must be a finite number of at least 1, got {multiplier}"),
            ));
        }
        if let Jitter::Proportional(p) = self.jitter
            && !(0.0..=1.0).contains(&p)
        {
            return Err((
                "backoff.jitter",
                format!("a proportional jitter must be in [0, 1], got {p}"),
            ));
        }
        Ok(())
    }

    /// The scheduled delay before retry `retry` (1 for the first), capped,
    /// before jitter.
    pub(crate) fn scheduled(&self, retry: u32) -> Duration {
        let retry = retry.max(1);
        let grown = match self.schedule {
            Schedule::Constant => Some(self.base),
            Schedule::Linear => self.base.checked_mul(retry),
            Schedule::Exponential { multiplier } => {
                if multiplier == 1.0 || retry == 1 {
                    Some(self.base)
                } else {
                    let exponent = (retry - 1).min(4096) as i32;
                    Duration::try_from_secs_f64(self.base.as_secs_f64() * multiplier.powi(exponent))
                        .ok()
                }
            }
        };
        grown.map_or(self.max, |d| d.min(self.max))
    }

    /// The longest delay jitter can draw before retry `retry`: the client
    /// preset checks that the worst case of all its retries' delays fits in
    /// its total timeout.
    #[cfg_attr(
        not(all(
            feature = "timeout",
            feature = "throttle",
            feature = "circuit-breaker",
            feature = "bulkhead"
        )),
        allow(dead_code)
    )]
    pub(crate) fn longest(&self, retry: u32) -> Duration {
        let d = self.scheduled(retry);
        let longest = match self.jitter {
            Jitter::None | Jitter::Full | Jitter::Equal => d,
            Jitter::Proportional(p) => scale(d, 1.0 + p),
            // Each delay is drawn below three times the one before it, the
            // first below three times the base.
            Jitter::Decorrelated => {
                let exponent = retry.clamp(1, 4096) as i32;
                Duration::try_from_secs_f64(self.base.as_secs_f64() * 3f64.powi(exponent))
                    .unwrap_or(Duration::MAX)
            }
        };
        longest.min(self.max)
    }

    /// The delay before retry `retry`, jittered with `rng`; `previous` is
    /// the delay before the retry before it (decorrelated jitter grows from
    /// it).
    pub(crate) fn delay(&self, retry: u32, previous: Option<Duration>, rng: &mut Rng) -> Duration {
        let d = self.scheduled(retry);
        let jittered = match self.jitter {
            Jitter::None => d,
            Jitter::Full => scale(d, rng.unit_inclusive()),
            Jitter::Equal => d / 2 + scale(d / 2, rng.unit_inclusive()),
            Jitter::Proportional(p) => scale(d, 1.0 - p + 2.0 * p * rng.unit_inclusive()),
            Jitter::Decorrelated => {
                let low = self.base;
                let high = previous.unwrap_or(self.base).saturating_mul(3).max(low);
                low + scale(high - low, rng.unit_inclusive())
            }
        };
        jittered.min(self.max)
    }
}

#[cfg(feature = "serde")]
mod spec {
    //! The file form of a [`Backoff`].

    use std::time::Duration;

    use super::{Backoff, Jitter};

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        Constant,
        Linear,
        Exponential,
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct BackoffSpec {
        kind: Kind,
        #[serde(with = "crate::serde_duration")]
        base: Duration,
        #[serde(default)]
        multiplier: Option<f64>,
        #[serde(default, with = "crate::serde_duration::option")]
        max: Option<Duration>,
        #[serde(default)]
        jitter: Option<Jitter>,
    }

    impl TryFrom<BackoffSpec> for Backoff {
        type Error = String;

        // Only the shape is checked here; the values are checked when the
        // layer is built, into a `ConfigError`.
        fn try_from(spec: BackoffSpec) -> Result<Self, String> {
            let mut backoff = match (spec.kind, spec.multiplier) {
                (Kind::Constant, None) => Backoff::constant(spec.base),
                (Kind::Linear, None) => Backoff::linear(spec.base),
                (Kind::Exponential, m) => {
                    Backoff::exponential(spec.base).multiplier(m.unwrap_or(2.0))
                }
                (_, Some(_)) => {
                    return Err("`multiplier` is only for an exponential backoff".into());
                }
            };
            if let Some(max) = spec.max {
                backoff = backoff.max(max);
            }
            if let Some(jitter) = spec.jitter {
                backoff = backoff.jitter(jitter);
            }
            Ok(backoff)
        }
    }
}

/// The delays of a [`Backoff`], one per retry: made by [`Backoff::delays`].
#[derive(Clone, Debug)]
pub struct Delays {
    backoff: Backoff,
    rng: Rng,
    retry: u32,
    previous: Option<Duration>,
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.retry = self.retry.saturating_add(1);
        let delay = self.backoff.delay(self.retry, self.previous, &mut self.rng);
        self.previous = Some(delay);
        Some(delay)
    }
}

/// `d × factor`, saturating at `Duration::MAX` instead of panicking.
/// A negative factor (a proportional jitter over 1, which the retry
/// builder refuses but `Backoff::delays` does not check) gives zero.
fn scale(d: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * factor.max(0.0)).unwrap_or(Duration::MAX)
}

impl Rng {
    /// Uniform in [0, 1]: the jitter bands are closed.
    pub(crate) fn unit_inclusive(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / ((1u64 << 53) - 1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn schedule(backoff: Backoff, n: u32) -> Vec<u128> {
        (1..=n).map(|r| backoff.scheduled(r).as_millis()).collect()
    }

    #[test]
    fn delays_follow_the_schedule_and_a_seed_repeats_them() {
        let plain = Backoff::linear(ms(10)).max(ms(35));
        let delays: Vec<u128> = plain.delays().take(5).map(|d| d.as_millis()).collect();
        assert_eq!(delays, [10, 20, 30, 35, 35]);

        let full = Backoff::exponential(ms(100)).jitter(Jitter::Full);
        let a: Vec<Duration> = full.delays_seeded(7).take(20).collect();
        let b: Vec<Duration> = full.delays_seeded(7).take(20).collect();
        let c: Vec<Duration> = full.delays_seeded(8).take(20).collect();
        assert_eq!(a, b, "the same seed, the same delays");
        assert_ne!(a, c);
        for (retry, delay) in (1..).zip(&a) {
            assert!(*delay <= full.scheduled(retry), "retry {retry}: {delay:?}");
        }
    }

    #[test]
    fn an_unchecked_proportional_jitter_over_one_never_gives_an_endless_delay() {
        let wild = Backoff::constant(ms(100)).jitter(Jitter::Proportional(3.0));
        for delay in wild.delays_seeded(11).take(1_000) {
            assert!(delay <= ms(400), "{delay:?}");
        }
    }

    #[test]
    fn decorrelated_delays_grow_from_the_one_before() {
        let backoff = Backoff::exponential(ms(10))
            .max(Duration::from_secs(60))
            .jitter(Jitter::Decorrelated);
        let delays: Vec<Duration> = backoff.delays_seeded(3).take(200).collect();
        for pair in delays.windows(2) {
            assert!(pair[1] >= ms(10) && pair[1] <= pair[0] * 3 + ms(10));
        }
        assert!(delays.iter().any(|d| *d > ms(100)), "it grows: {delays:?}");
    }

    #[test]
    fn the_three_schedules() {
        // scenario BO-1
        let s = Duration::from_secs(1);
        assert_eq!(schedule(Backoff::constant(s), 3), [1_000, 1_000, 1_000]);
        assert_eq!(schedule(Backoff::linear(s), 3), [1_000, 2_000, 3_000]);
        assert_eq!(schedule(Backoff::exponential(s), 3), [1_000, 2_000, 4_000]);
        let r4j = Backoff::exponential(ms(500)).multiplier(2.0);
        assert_eq!(schedule(r4j, 2), [500, 1_000]);
        let slow = Backoff::exponential(ms(100)).multiplier(1.5);
        let grown: Vec<Duration> = (1..=49).map(|r| slow.scheduled(r)).collect();
        assert!(grown.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
    }

    #[test]
    fn a_capped_exponential_reaches_the_cap_and_stays() {
        // scenario BO-2
        let b = Backoff::exponential(ms(100)).max(ms(100_000));
        let delays = schedule(b, 13);
        assert!(delays[..11].windows(2).all(|w| w[0] < w[1]));
        assert_eq!(delays[10], 100_000, "102 400 is capped already");
        assert_eq!(&delays[11..], [100_000, 100_000]);
        assert_eq!(b.scheduled(u32::MAX), ms(100_000), "no overflow");
        assert_eq!(
            Backoff::linear(ms(100)).max(ms(250)).scheduled(u32::MAX),
            ms(250)
        );
        // Uncapped, an absurd retry number saturates instead of panicking.
        assert_eq!(
            Backoff::exponential(ms(1)).scheduled(u32::MAX),
            Duration::MAX
        );
    }

    #[test]
    fn a_zero_base_is_zero_whatever_the_jitter() {
        let mut rng = Rng::new(1);
        for jitter in [
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
            Jitter::Proportional(0.5),
        ] {
            for b in [
                Backoff::constant(Duration::ZERO),
                Backoff::linear(Duration::ZERO),
                Backoff::exponential(Duration::ZERO),
            ] {
                assert_eq!(b.jitter(jitter).delay(3, None, &mut rng), Duration::ZERO);
            }
        }
    }

    /// Every delay of `n` retries of `backoff`, each within `band(d)`, where
    /// `d` is the scheduled delay.
    fn within(backoff: Backoff, n: u32, band: impl Fn(Duration) -> (Duration, Duration)) {
        let mut rng = Rng::new(99);
        for retry in 1..=n {
            let (low, high) = band(backoff.scheduled(retry));
            for _ in 0..200 {
                let d = backoff.delay(retry, None, &mut rng);
                assert!(
                    low <= d && d <= high,
                    "retry {retry}: {d:?} outside {low:?}..={high:?}"
                );
            }
        }
    }

    #[test]
    fn full_and_equal_jitter_stay_in_their_bands() {
        let b = Backoff::exponential(ms(100)).max(ms(3_000));
        within(b.jitter(Jitter::Full), 8, |d| (Duration::ZERO, d));
        within(b.jitter(Jitter::Equal), 8, |d| (d / 2, d));
    }

    #[test]
    fn proportional_jitter_is_exact_for_a_draw_and_stays_in_its_band() {
        // scenario BO-5: d × (0.75 + 0.5 r)
        let b = Backoff::linear(Duration::from_secs(1)).jitter(Jitter::Proportional(0.25));
        let d = b.scheduled(3);
        let jitter = |r: f64| scale(d, 1.0 - 0.25 + 0.5 * r).as_millis();
        assert_eq!(
            [0.0, 0.4, 0.5, 0.6, 1.0].map(jitter),
            [2_250, 2_850, 3_000, 3_150, 3_750]
        );
        within(b, 20, |d| (d.mul_f64(0.75), d.mul_f64(1.25)));
        // scenario BO-3: ±50 % around a constant 100 ms.
        let c = Backoff::constant(ms(100)).jitter(Jitter::Proportional(0.5));
        within(c, 49, |_| (ms(50), ms(150)));
    }

    /// The worst case the client preset checks against its total timeout
    /// bounds every delay drawn, and is reached.
    #[test]
    fn no_delay_exceeds_the_longest_and_the_longest_is_drawn() {
        let b = Backoff::exponential(ms(100)).max(ms(5_000));
        for jitter in [
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Proportional(0.25),
            Jitter::Decorrelated,
        ] {
            let b = b.jitter(jitter);
            let mut most = [Duration::ZERO; 6];
            for seed in 0..2_000 {
                for (retry, delay) in (1..).zip(b.delays_seeded(seed).take(6)) {
                    let longest = b.longest(retry);
                    assert!(delay <= longest, "{jitter:?} retry {retry}: {delay:?}");
                    most[retry as usize - 1] = most[retry as usize - 1].max(delay);
                }
            }
            for (retry, most) in (1..).zip(most) {
                let longest = b.longest(retry);
                assert!(
                    most >= longest.mul_f64(0.9),
                    "{jitter:?} retry {retry}: drew at most {most:?} of {longest:?}"
                );
            }
        }
        let capped = Backoff::constant(ms(100)).max(ms(100));
        assert_eq!(capped.jitter(Jitter::Proportional(0.5)).longest(1), ms(100));
    }

    #[test]
    fn the_cap_holds_after_jitter() {
        let b = Backoff::constant(ms(1_000))
            .max(ms(1_000))
            .jitter(Jitter::Proportional(1.0));
        within(b, 5, |_| (Duration::ZERO, ms(1_000)));
    }

    #[test]
    fn decorrelated_jitter_grows_from_the_previous_delay_under_the_cap() {
        // BO-7's properties for decorrelated jitter, min(max, uniform(base,
        // 3 × previous)): positive, capped, within [base, 3 × previous].
        let b = Backoff::exponential(ms(100))
            .max(ms(5_000))
            .jitter(Jitter::Decorrelated);
        let mut rng = Rng::new(5);
        let mut previous = None;
        let mut reached_the_cap = false;
        for retry in 1..=60 {
            let d = b.delay(retry, previous, &mut rng);
            let high = previous.unwrap_or(ms(100)).saturating_mul(3).min(ms(5_000));
            assert!(ms(100) <= d && d <= high, "retry {retry}: {d:?}");
            reached_the_cap |= d > ms(4_000);
            previous = Some(d);
        }
        assert!(reached_the_cap, "it grows");
    }

    #[test]
    fn two_generators_give_two_sequences() {
        let b = Backoff::exponential(ms(100)).jitter(Jitter::Full);
        let sequence = |seed| {
            let mut rng = Rng::new(seed);
            (1..=10)
                .map(|r| b.delay(r, None, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(sequence(3), sequence(3), "seeded: reproducible");
        assert_ne!(sequence(3), sequence(4));
    }

    #[test]
    fn bad_settings_name_their_field() {
        let field = |b: Backoff| b.check().unwrap_err().0;
        assert_eq!(field(Backoff::constant(ms(10)).max(ms(9))), "backoff.max");
        assert_eq!(
            field(Backoff::exponential(ms(10)).multiplier(0.5)),
            "backoff.multiplier"
        );
        assert_eq!(
            field(Backoff::exponential(ms(10)).multiplier(f64::NAN)),
            "backoff.multiplier"
        );
        for p in [-0.0001, 1.0001] {
            assert_eq!(
                field(Backoff::constant(ms(10)).jitter(Jitter::Proportional(p))),
                "backoff.jitter"
            );
        }
        // scenario BO-8: what is accepted
        for base in [10, 99, 981] {
            for b in [
                Backoff::constant(ms(base)),
                Backoff::linear(ms(base)),
                Backoff::exponential(ms(base)).multiplier(1.0001),
            ] {
                assert!(b.max(ms(base)).check().is_ok());
            }
        }
        for p in [0.0, 0.1, 0.25, 0.5, 0.75, 1.0] {
            assert!(
                Backoff::constant(ms(10))
                    .jitter(Jitter::Proportional(p))
                    .check()
                    .is_ok()
            );
        }
    }
}
