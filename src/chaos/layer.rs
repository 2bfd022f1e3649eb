//! [`ChaosLayer`] and its builder.

use std::borrow::Cow;
use std::sync::Arc;

use tower_layer::Layer;

use super::handle::{Handle, Shared};
use super::{Chaos, InjectError};
use crate::rng::Rng;

const DEFAULT_NAME: &str = "chaos";

/// Applies [`Chaos`] to a service. Every service one layer value builds, and
/// their clones, share its faults and its random sequence.
#[derive(Clone, Debug)]
pub struct ChaosLayer<I = InjectError> {
    shared: Arc<Shared>,
    inject: I,
}

impl ChaosLayer {
    /// A layer that injects nothing until its [`Handle`] says so, failing
    /// calls with [`InjectedFault`](super::InjectedFault).
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder: a name, a seed, what a failed call returns.
    pub fn builder() -> ChaosBuilder {
        ChaosBuilder {
            name: None,
            seed: None,
            inject: InjectError,
        }
    }
}

impl Default for ChaosLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<I> ChaosLayer<I> {
    /// A handle to turn faults up and down while the service runs.
    pub fn handle(&self) -> Handle {
        Handle::new(self.shared.clone())
    }
}

impl<S, I: Clone> Layer<S> for ChaosLayer<I> {
    type Service = Chaos<S, I>;

    fn layer(&self, inner: S) -> Self::Service {
        Chaos::new(inner, self.shared.clone(), self.inject.clone())
    }
}

/// Builds a [`ChaosLayer`]; every setting is valid, so `build` cannot fail.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ChaosBuilder<I = InjectError> {
    name: Option<Cow<'static, str>>,
    seed: Option<u64>,
    inject: I,
}

impl<I> ChaosBuilder<I> {
    /// The name in the injected errors and the handle (default `"chaos"`).
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Seeds the random draws: the same seed and the same calls, in the
    /// same order, meet the same faults (by default each layer draws a
    /// random seed).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// What a failed call returns instead of reaching the service: an error
    /// of your own, or a response (an HTTP 500, say). See [`Inject`](super::Inject).
    pub fn inject<I2>(self, inject: I2) -> ChaosBuilder<I2> {
        ChaosBuilder {
            name: self.name,
            seed: self.seed,
            inject,
        }
    }

    /// Builds the layer, with no fault set.
    pub fn build(self) -> ChaosLayer<I> {
        let name = self.name.unwrap_or(Cow::Borrowed(DEFAULT_NAME)).into();
        let seed = self.seed.unwrap_or_else(|| Rng::random_seed(0xC4A05));
        ChaosLayer {
            shared: Arc::new(Shared::new(name, seed)),
            inject: self.inject,
        }
    }
}
