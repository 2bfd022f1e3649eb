//! Inject faults on purpose, to see the other layers do their job: failed
//! calls, added latency, an outage.
//!
//! [`ChaosLayer`] wraps a service and, as its [`Handle`] says at the moment
//! of each call, lets the call through, delays it, or fails it without
//! reaching the service. Faults change at run time, so a test or an admin
//! endpoint can turn them up and down on a live service. With a
//! [seed](ChaosBuilder::seed) the same calls meet the same faults every
//! run. With no fault set a call costs one atomic load.
//!
//! ```
//! use std::time::Duration;
//! use palisade::chaos::ChaosLayer;
//! use palisade::BoxError;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let chaos = ChaosLayer::builder().name("inventory").seed(1).build();
//! let faults = chaos.handle();
//! let mut svc = ServiceBuilder::new()
//!     .layer(chaos)
//!     .service(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
//!
//! assert_eq!(svc.ready().await?.call(1).await?, 1);
//! faults.set_outage(true);
//! let err = svc.ready().await?.call(2).await.unwrap_err();
//! assert!(err.to_string().contains("injected"));
//! faults.clear();
//! assert_eq!(svc.ready().await?.call(3).await?, 3);
//! # Ok(())
//! # }
//! ```
//!
//! A failed call returns [`InjectedFault`] by default, an error like any
//! upstream's: the default classifier counts it as a failure, so a breaker
//! above opens and retry retries. [`ChaosBuilder::inject`] makes it return
//! something else, such as an HTTP 500 response.
//!
//! # The tower contract
//!
//! The fault is drawn in `poll_ready`, before the inner service's
//! readiness: a call that will fail does not touch the inner service at
//! all. A delayed call's inner future is created in `call` but not polled
//! until the delay is over (a lazy client sends nothing until then).

mod future;
mod handle;
mod layer;

pub use future::ResponseFuture;
pub use handle::{Faults, Handle};
pub use layer::{ChaosBuilder, ChaosLayer};

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::sleep;
use tower_service::Service;

use crate::error::{BoxError, NotReady};
use crate::name::Name;
use handle::{Fault, Shared};

/// What a call failed on purpose returns: implemented by [`InjectError`]
/// (the default) and by every `Fn() -> Result<Res, BoxError>`.
///
/// ```
/// use palisade::chaos::ChaosLayer;
/// use tower::{Layer, Service, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), palisade::BoxError> {
/// // An upstream that answers with a status code; made to answer 500.
/// let chaos = ChaosLayer::builder().inject(|| Ok::<u16, palisade::BoxError>(500)).build();
/// chaos.handle().set_error_rate(1.0)?;
/// let mut svc = chaos.layer(service_fn(|_: ()| async { Ok::<u16, palisade::BoxError>(200) }));
/// assert_eq!(svc.ready().await?.call(()).await?, 500);
/// # Ok(())
/// # }
/// ```
pub trait Inject<Res> {
    /// The outcome of one failed call.
    fn inject(&self, name: &str) -> Result<Res, BoxError>;
}

/// The default [`Inject`]: an [`InjectedFault`] error.
#[derive(Clone, Copy, Debug, Default)]
pub struct InjectError;

impl<Res> Inject<Res> for InjectError {
    fn inject(&self, name: &str) -> Result<Res, BoxError> {
        Err(Box::new(InjectedFault {
            name: Name::from(name.to_owned()),
        }))
    }
}

impl<Res, F> Inject<Res> for F
where
    F: Fn() -> Result<Res, BoxError>,
{
    fn inject(&self, _: &str) -> Result<Res, BoxError> {
        self()
    }
}

/// A failure a chaos layer made up. It is not one of palisade's rejections:
/// it stands for the upstream's own failure, so classifiers treat it as one.
#[derive(Clone, Debug)]
pub struct InjectedFault {
    name: Name,
}

impl InjectedFault {
    /// The chaos layer's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }
}

impl fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chaos `{}`: injected fault", self.name)
    }
}

impl std::error::Error for InjectedFault {}

/// A service that injects faults; built by [`ChaosLayer`].
pub struct Chaos<S, I = InjectError> {
    inner: S,
    shared: Arc<Shared>,
    inject: I,
    // Drawn in `poll_ready`, used by `call`; a clone starts with none.
    fault: Option<Fault>,
}

impl<S, I> Chaos<S, I> {
    fn new(inner: S, shared: Arc<Shared>, inject: I) -> Self {
        Chaos {
            inner,
            shared,
            inject,
            fault: None,
        }
    }

    /// A handle on the layer's faults.
    pub fn handle(&self) -> Handle {
        Handle::new(self.shared.clone())
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, I: Clone> Clone for Chaos<S, I> {
    fn clone(&self) -> Self {
        Chaos::new(self.inner.clone(), self.shared.clone(), self.inject.clone())
    }
}

impl<S, I, Request> Service<Request> for Chaos<S, I>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
    I: Inject<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S::Response>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let fault = *self.fault.get_or_insert_with(|| self.shared.draw());
        if fault == Fault::Fail {
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Request) -> Self::Future {
        match self.fault.take() {
            Some(Fault::None) => ResponseFuture::pass(self.inner.call(request)),
            Some(Fault::Delay(d)) => ResponseFuture::delayed(self.inner.call(request), sleep(d)),
            Some(Fault::Fail) => {
                ResponseFuture::failed(self.inject.inject(self.shared.name.as_str()))
            }
            None => {
                let name = self.shared.name.clone();
                ResponseFuture::failed(Err(Box::new(NotReady::new(handle::LAYER, name))))
            }
        }
    }
}

impl<S: fmt::Debug, I> fmt::Debug for Chaos<S, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chaos")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .field("fault", &self.fault)
            .finish()
    }
}
