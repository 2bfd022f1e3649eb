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
//!
//! A classifier may also say how long a result asks the caller to stay away
//! ([`Classify::retry_after`]: an HTTP `Retry-After`, a ban with a length).
//! Retry waits at least that long, and a circuit breaker built with
//! `open_on_retry_after` opens for it. [`DefaultClassifier`] reports only
//! the hint a palisade rejection carries, and counts those rejections as
//! ignored, so a breaker that should open on an upstream's hint needs a
//! classifier that reads it, such as one built with [`with_retry_after`]. Attach one to a closure with
//! [`with_retry_after`].

use std::any::Any;
use std::time::Duration;

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

    /// How long the result asks the caller to wait before calling again, if
    /// it says (an HTTP `Retry-After`, the length of a ban). `None` by
    /// default. Asked only of results the layer can act on, so it may cost
    /// more than [`classify`](Self::classify).
    fn retry_after(&self, result: &Result<Res, Err>) -> Option<Duration> {
        let _ = result;
        None
    }
}

impl<F, Res, Err> Classify<Res, Err> for F
where
    F: Fn(&Result<Res, Err>) -> Outcome,
{
    fn classify(&self, result: &Result<Res, Err>) -> Outcome {
        self(result)
    }
}

/// A classifier with a [`retry_after`](Classify::retry_after) hint
/// attached: built by [`with_retry_after`].
#[derive(Clone, Copy, Debug)]
pub struct WithRetryAfter<C, F> {
    classifier: C,
    retry_after: F,
}

/// Attaches a [`retry_after`](Classify::retry_after) hint to `classifier`.
///
/// ```
/// use std::time::Duration;
/// use palisade::classify::{with_retry_after, Classify, DefaultClassifier};
///
/// // An upstream that bans a client answers `Err(seconds of the ban)`.
/// let classifier = with_retry_after(DefaultClassifier, |result: &Result<(), u64>| {
///     result.err().map(Duration::from_secs)
/// });
/// assert_eq!(classifier.retry_after(&Err(7200)), Some(Duration::from_secs(7200)));
/// assert_eq!(classifier.retry_after(&Ok(())), None);
/// ```
pub fn with_retry_after<C, F>(classifier: C, retry_after: F) -> WithRetryAfter<C, F> {
    WithRetryAfter {
        classifier,
        retry_after,
    }
}

impl<C, F, Res, Err> Classify<Res, Err> for WithRetryAfter<C, F>
where
    C: Classify<Res, Err>,
    F: Fn(&Result<Res, Err>) -> Option<Duration>,
{
    fn classify(&self, result: &Result<Res, Err>) -> Outcome {
        self.classifier.classify(result)
    }

    fn retry_after(&self, result: &Result<Res, Err>) -> Option<Duration> {
        (self.retry_after)(result)
    }
}

/// The classifier every layer uses unless given another.
///
/// - `Ok(_)` is a [`Success`](Outcome::Success).
/// - A call that a palisade layer below shed on purpose (an open circuit, a
///   rate limit, a full bulkhead, a throttle) is [`Ignored`](Outcome::Ignored): the
///   upstream never saw the call, so it says nothing about the upstream's
///   health, and a breaker above a bulkhead must not open because the
///   bulkhead shed load.
/// - A call a palisade layer got without readiness
///   ([`NotReady`](crate::error::NotReady)) is [`Ignored`](Outcome::Ignored)
///   too: it was not sent, and it is the caller's bug, not the upstream's
///   failure.
/// - Any other error is a [`Failure`](Outcome::Failure). That includes a
///   timeout's own [`Elapsed`](crate::error::Elapsed), of either kind: a
///   service that does not become ready in time (it cannot connect, say) is
///   as unhealthy as one that answers too slowly. A call that the request's
///   [`Deadline`](crate::deadline::Deadline) cut short before the timeout's
///   own limit is [`Ignored`](Outcome::Ignored), since the service was not
///   given its time.
///
/// Errors are recognised through [`ErrorKind::of`] when the error type is
/// [`BoxError`] (as it is for every palisade layer); any other error type is
/// always a failure.
///
/// resilience4j and Polly count an error their rules do not name as a
/// success; palisade counts it as a failure, because a layer that does not
/// know an error is harmless should not assume it is.
///
/// Its [`retry_after`](Classify::retry_after) is the one a palisade
/// rejection carries ([`ErrorKind::retry_after`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultClassifier;

/// Which palisade rejection `err` is, when its type is [`BoxError`]; `None`
/// for any other error type.
pub(crate) fn kind_of<Err: 'static>(err: &Err) -> Option<ErrorKind<'_>> {
    (err as &dyn Any)
        .downcast_ref::<BoxError>()
        .map(ErrorKind::of)
}

impl<Res, Err: 'static> Classify<Res, Err> for DefaultClassifier {
    fn classify(&self, result: &Result<Res, Err>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(err) => match kind_of(err) {
                Some(
                    ErrorKind::CircuitOpen(_)
                    | ErrorKind::RateLimited(_)
                    | ErrorKind::BulkheadFull(_)
                    | ErrorKind::Throttled(_)
                    | ErrorKind::NotReady(_),
                ) => Outcome::Ignored,
                Some(ErrorKind::Elapsed(e)) if e.by_deadline() => Outcome::Ignored,
                _ => Outcome::Failure,
            },
        }
    }

    fn retry_after(&self, result: &Result<Res, Err>) -> Option<Duration> {
        kind_of(result.as_ref().err()?)?.retry_after()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{BulkheadFull, Elapsed, Why};
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
        let throttled: Result<(), BoxError> = Err(Box::new(crate::error::Throttled::new(
            Name::Static("t"),
            0.5,
        )));
        assert_eq!(c.classify(&throttled), Outcome::Ignored);
        // A layer below called without readiness: the caller's bug, not
        // the upstream's failure.
        let not_ready: Result<(), BoxError> = Err(Box::new(crate::error::NotReady::new(
            "bulkhead",
            Name::Static("b"),
        )));
        assert_eq!(c.classify(&not_ready), Outcome::Ignored);
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
        // Cut short by the caller's deadline, or not sent for it: the
        // service's health is not in question.
        for why in [Why::Deadline, Why::Expired] {
            let hurried: Result<(), BoxError> = Err(Box::new(Elapsed::because(
                Name::Static("t"),
                Duration::from_millis(10),
                why,
            )));
            assert_eq!(c.classify(&hurried), Outcome::Ignored, "{why:?}");
        }
        let io: Result<(), std::io::Error> = Err(std::io::ErrorKind::Other.into());
        assert_eq!(c.classify(&io), Outcome::Failure);
    }

    #[test]
    fn default_retry_after_is_the_rejections_own() {
        let c = DefaultClassifier;
        let limited: Result<(), BoxError> = Err(Box::new(crate::error::RateLimited::new(
            "r",
            Some(Duration::from_millis(250)),
        )));
        assert_eq!(c.retry_after(&limited), Some(Duration::from_millis(250)));
        let inner: Result<(), BoxError> = Err("refused".into());
        assert_eq!(c.retry_after(&inner), None);
        assert_eq!(c.retry_after(&Ok::<_, BoxError>(())), None);
        let io: Result<(), std::io::Error> = Err(std::io::ErrorKind::Other.into());
        assert_eq!(c.retry_after(&io), None);
        // A closure classifier has no hint of its own.
        let closure = |_: &Result<(), BoxError>| Outcome::Failure;
        assert_eq!(closure.retry_after(&limited), None);
    }
}
