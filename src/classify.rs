//! The outcome classifier shared by every layer.
//!
//! The circuit breaker, retry and later outlier logic all ask one question of
//! a finished call: was it a [`Success`](Outcome::Success), a
//! [`Failure`](Outcome::Failure), or should it be
//! [`Ignored`](Outcome::Ignored) (counted neither way)? A [`Classify`]
//! implementation answers it from `&Result<Response, Error>`, so a response can
//! be a failure (an HTTP 503) and an error can be ignored (a cancelled call).
//!
//! Any `Fn(&Result<Res, Err>) -> Outcome` closure is a classifier:
//!
//! ```
//! use palisade::classify::{Classify, Outcome};
//!
//! // A status code below 500 is fine; errors are failures.
//! let by_status = |result: &Result<u16, std::io::Error>| match result {
//!     Ok(status) if *status >= 500 => Outcome::Failure,
//!     Ok(_) => Outcome::Success,
//!     Err(_) => Outcome::Failure,
//! };
//! assert_eq!(by_status.classify(&Ok(503)), Outcome::Failure);
//! assert_eq!(by_status.classify(&Ok(200)), Outcome::Success);
//! ```
//!
//! [`DefaultClassifier`] is what layers use unless told otherwise.

use std::any::Any;

use crate::error::{BoxError, ErrorKind};

/// How a finished call counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call worked.
    Success,
    /// The call failed in a way that says something about the service's
    /// health: it counts toward opening a breaker and may be retried.
    Failure,
    /// The call says nothing about the service's health; it counts neither
    /// way (a breaker's half-open probe slot is given back).
    Ignored,
}

/// Decides the [`Outcome`] of a finished call.
///
/// Implemented for [`DefaultClassifier`] and for every
/// `Fn(&Result<Res, Err>) -> Outcome`. Classifiers run on every call, so they
/// should be cheap and must not allocate.
pub trait Classify<Res, Err> {
    /// Classifies one call's result.
    fn classify(&self, result: &Result<Res, Err>) -> Outcome;
}

impl<F, Res, Err> Classify<Res, Err> for F
where
    F: Fn(&Result<Res, Err>) -> Outcome,
{
    fn classify(&self, result: &Result<Res, Err>) -> Outcome {
        self(result)
    }
}

/// The classifier every layer uses unless given another.
///
/// - `Ok(_)` is a [`Success`](Outcome::Success).
/// - A call that a palisade layer below shed on purpose (an open circuit, a
///   rate limit, a full bulkhead) is [`Ignored`](Outcome::Ignored): the
///   upstream never saw the call, so it says nothing about the upstream's
///   health, and a breaker above a bulkhead must not open because the
///   bulkhead shed load.
/// - Any other error is a [`Failure`](Outcome::Failure). That includes both
///   kinds of [`Elapsed`](crate::error::Elapsed): a service that does not
///   become ready in time (it cannot connect, say) is as unhealthy as one that
///   answers too slowly.
///
/// Errors are recognised through [`ErrorKind::of`] when the error type is
/// [`BoxError`] (as it is for every palisade layer); any other error type is
/// always a failure.
///
/// resilience4j and Polly count an error their rules do not name as a
/// success; palisade counts it as a failure, because a layer that does not
/// know an error is harmless should not assume it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultClassifier;

impl<Res, Err: 'static> Classify<Res, Err> for DefaultClassifier {
    fn classify(&self, result: &Result<Res, Err>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(err) => match (err as &dyn Any).downcast_ref::<BoxError>() {
                Some(err) => match ErrorKind::of(err) {
                    ErrorKind::CircuitOpen(_)
                    | ErrorKind::RateLimited(_)
                    | ErrorKind::BulkheadFull(_) => Outcome::Ignored,
                    _ => Outcome::Failure,
                },
                None => Outcome::Failure,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{BulkheadFull, Elapsed};
    use crate::name::Name;
    use std::time::Duration;

    #[test]
    fn default_counts_errors_as_failures_and_shed_calls_as_ignored() {
        let c = DefaultClassifier;
        assert_eq!(
            c.classify(&Ok::<_, BoxError>(())),
            Outcome::Success,
            "Ok is a success"
        );
        let inner: Result<(), BoxError> = Err("refused".into());
        assert_eq!(c.classify(&inner), Outcome::Failure);
        let full: Result<(), BoxError> = Err(Box::new(BulkheadFull::new(
            Name::Static("b"),
            1,
            Duration::ZERO,
        )));
        assert_eq!(c.classify(&full), Outcome::Ignored);
        let slow: Result<(), BoxError> = Err(Box::new(Elapsed::new(
            Name::Static("t"),
            Duration::from_secs(1),
            false,
        )));
        assert_eq!(c.classify(&slow), Outcome::Failure);
        let never_ready: Result<(), BoxError> = Err(Box::new(Elapsed::new(
            Name::Static("t"),
            Duration::from_secs(1),
            true,
        )));
        assert_eq!(c.classify(&never_ready), Outcome::Failure);
        let io: Result<(), std::io::Error> = Err(std::io::ErrorKind::Other.into());
        assert_eq!(c.classify(&io), Outcome::Failure);
    }
}
