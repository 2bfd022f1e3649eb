//! A small, fast pseudo-random generator for jitter: xorshift64*, seeded
//! through splitmix64 so that nearby seeds give unrelated sequences.
//!
//! Jitter needs spread, not cryptographic strength, and must cost a few
//! instructions: a draw is made per retry and per breaker opening.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// xorshift64* state; never zero. Drawn from by retry's and the breaker's
/// jitter; the other layers only take a seed from it.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(
    not(any(feature = "retry", feature = "circuit-breaker")),
    allow(dead_code)
)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator for `seed`: the same seed, the same sequence.
    #[cfg_attr(
        not(any(feature = "retry", feature = "circuit-breaker")),
        allow(dead_code)
    )]
    pub(crate) fn new(seed: u64) -> Self {
        Rng(splitmix64(seed) | 1)
    }

    /// A seed from std's per-process random keys, mixed with `salt`.
    pub(crate) fn random_seed(salt: u64) -> u64 {
        RandomState::new().hash_one(salt)
    }

    #[cfg_attr(
        not(any(feature = "retry", feature = "circuit-breaker")),
        allow(dead_code)
    )]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    #[cfg_attr(not(feature = "circuit-breaker"), allow(dead_code))]
    pub(crate) fn unit(&mut self) -> f64 {
        unit_of(self.next_u64())
    }
}

/// Uniform in [0, 1), from the top 53 bits of `x`.
#[cfg_attr(
    not(any(feature = "circuit-breaker", feature = "throttle")),
    allow(dead_code)
)]
fn unit_of(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// The splitmix64 sequence shared between threads: each draw advances one
/// atomic counter, so clones of a service draw from one sequence without a
/// lock, and a seed fixes it (in draw order).
#[cfg(feature = "throttle")]
#[derive(Debug)]
pub(crate) struct SharedRng(crate::sync::AtomicU64);

#[cfg(feature = "throttle")]
impl SharedRng {
    pub(crate) fn new(seed: u64) -> Self {
        SharedRng(crate::sync::AtomicU64::new(seed))
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&self) -> f64 {
        // splitmix64 adds its constant, then mixes: the counter holds the
        // state before the addition, so the draws are exactly its sequence.
        let state = self.0.fetch_add(GAMMA, crate::sync::Ordering::Relaxed);
        unit_of(splitmix64(state))
    }
}

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// One step of splitmix64: a bijection that scatters consecutive inputs.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_uniform_enough_and_in_range() {
        let mut rng = Rng::new(42);
        let draws: Vec<f64> = (0..10_000).map(|_| rng.unit()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let low = draws.iter().filter(|d| **d < 0.5).count();
        assert!((4_500..5_500).contains(&low), "{low} of 10000 below 0.5");
    }

    #[test]
    fn a_seed_fixes_the_sequence_and_neighbours_differ() {
        let (mut a, mut b, mut c) = (Rng::new(7), Rng::new(7), Rng::new(8));
        let (a, b, c): (Vec<u64>, Vec<u64>, Vec<u64>) = (
            (0..8).map(|_| a.next_u64()).collect(),
            (0..8).map(|_| b.next_u64()).collect(),
            (0..8).map(|_| c.next_u64()).collect(),
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
