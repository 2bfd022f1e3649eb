//! Errors: palisade's rejections, the helper that tells them apart, and
//! [`ConfigError`].
//!
//! palisade follows tower's convention: a layer that adds a failure mode
//! returns [`BoxError`]. Its own rejections are small concrete types
//! ([`CircuitOpen`], [`RateLimited`], [`BulkheadFull`], [`Throttled`],
//! [`Elapsed`]) that carry
//! what a caller needs to act: the layer's name and, where it is known, how
//! long to wait before trying again. [`NotReady`] is not a rejection but a
//! caller's bug (a `call` without readiness), told apart the same way. An error from the inner service is passed
//! through as it is: a `BoxError` from below is not boxed a second time, so a
//! downcast to the inner service's own error type still works.
//!
//! [`ErrorKind::of`] tells which of these an error is, in one call:
//!
//! ```
//! use palisade::{BoxError, ErrorKind};
//!
//! fn describe(err: &BoxError) -> String {
//!     match ErrorKind::of(err) {
//!         ErrorKind::Elapsed(e) => format!("too slow: {e}"),
//!         ErrorKind::Inner(e) => format!("upstream failed: {e}"),
//!         // Open circuit, rate limited, bulkhead full, and kinds added later.
//!         refusal => format!("refused by `{}`", refusal.layer_name().unwrap_or("?")),
//!     }
//! }
//! # let err: BoxError = "connection reset".into();
//! # assert_eq!(describe(&err), "upstream failed: connection reset");
//! ```

use std::borrow::Cow;
use std::error::Error;
use std::fmt;
use std::time::Duration;

use crate::name::Name;

/// The error type of every palisade layer: tower's `BoxError`.
///
/// This is the same type as `tower::BoxError`; it is restated here so that
/// palisade does not need `tower` itself, only `tower-service` and
/// `tower-layer`.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// How deep [`ErrorKind::of`] follows [`Error::source`] looking for one of
/// palisade's rejections inside a wrapping error (tower's `Buffer` wraps a
/// failed service this way). Bounded so a cyclic chain cannot loop forever.
const MAX_SOURCE_DEPTH: usize = 8;

/// A call was refused because a circuit breaker is open.
///
/// The call never reached the inner service.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CircuitOpen {
    name: Name,
    retry_after: Option<Duration>,
}

impl CircuitOpen {
    #[cfg_attr(not(feature = "circuit-breaker"), allow(dead_code))]
    pub(crate) fn new(name: Name, retry_after: Option<Duration>) -> Self {
        CircuitOpen { name, retry_after }
    }

    /// The name of the circuit breaker that refused the call.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// How long until the breaker lets a probe call through, if that is known
    /// (it is not while the breaker is forced open or waiting on probes).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit breaker `{}` is open, so the call was not sent",
            self.name
        )?;
        match self.retry_after {
            Some(after) => write!(f, "; it lets a trial call through in {after:?}"),
            None => f.write_str("; it is held open or waiting on trial calls"),
        }
    }
}

impl Error for CircuitOpen {}

/// A call was refused by a rate limiter.
///
/// The call never reached the inner service.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RateLimited {
    name: Name,
    retry_after: Option<Duration>,
    limit: Option<u64>,
    store_unavailable: bool,
}

impl RateLimited {
    /// A refusal by the rate limiter `name`, which would admit the call
    /// after `retry_after`. Public so that a limiter of your own can refuse
    /// the way palisade's do, and retry and the http module treat it alike.
    pub fn new(name: impl Into<Cow<'static, str>>, retry_after: Option<Duration>) -> Self {
        RateLimited {
            name: name.into().into(),
            retry_after,
            limit: None,
            store_unavailable: false,
        }
    }

    /// The same refusal, reporting the limiter's limit (the most calls it
    /// admits at once: its limit per window, or a GCRA limiter's burst).
    pub fn with_limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// A refusal by a palisade limiter, whose name is already shared.
    #[cfg_attr(not(feature = "rate-limit"), allow(dead_code))]
    pub(crate) fn with_name(name: Name, retry_after: Option<Duration>) -> Self {
        RateLimited {
            name,
            retry_after,
            limit: None,
            store_unavailable: false,
        }
    }

    /// A refusal by a limiter whose shared store is unavailable, set to
    /// fail closed.
    #[cfg(feature = "redis")]
    pub(crate) fn store_unavailable(name: Name, retry_after: Option<Duration>) -> Self {
        RateLimited {
            store_unavailable: true,
            ..Self::with_name(name, retry_after)
        }
    }

    /// The name of the rate limiter that refused the call.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The exact time until the limiter would admit this call, if known.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The limiter's limit (its burst, for GCRA), if known: what a 429's
    /// `RateLimit-Limit` header reports. palisade's limiters always say.
    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// Whether the limiter refused because it could not reach the store it
    /// shares with other processes (Redis) and is set to fail closed,
    /// rather than because the limit was reached. `retry_after` is then
    /// when the limiter tries the store again, if known.
    pub fn is_store_unavailable(&self) -> bool {
        self.store_unavailable
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limiter `{}` refused the call", self.name)?;
        if self.store_unavailable {
            f.write_str(": its shared store is unavailable")?;
        }
        match self.retry_after {
            Some(after) => write!(f, "; a permit frees up in {after:?}"),
            None => Ok(()),
        }
    }
}

impl Error for RateLimited {}

/// A call was refused because a bulkhead, fixed or adaptive, had no free
/// slot.
///
/// The call never reached the inner service.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BulkheadFull {
    name: Name,
    max_concurrent: usize,
    waited: Duration,
}

impl BulkheadFull {
    #[cfg_attr(not(any(feature = "adaptive", feature = "bulkhead")), allow(dead_code))]
    pub(crate) fn new(name: Name, max_concurrent: usize, waited: Duration) -> Self {
        BulkheadFull {
            name,
            max_concurrent,
            waited,
        }
    }

    /// The name of the bulkhead that refused the call.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The bulkhead's limit on calls in flight; for an adaptive limit
    /// (`palisade::adaptive`), the limit in force when the call was refused.
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    /// How long the call waited for a slot before it was refused (zero for a
    /// fail-fast bulkhead).
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl fmt::Display for BulkheadFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bulkhead `{}` is full ({} calls in flight), so the call was not sent",
            self.name, self.max_concurrent
        )?;
        if !self.waited.is_zero() {
            write!(f, "; no slot freed up within {:?}", self.waited)?;
        }
        Ok(())
    }
}

impl Error for BulkheadFull {}

/// A call was refused by a client-side throttle: the upstream has lately
/// accepted too few calls, and the throttle refuses a share of them
/// locally, at random, so as not to pile more onto it.
///
/// The call never reached the inner service. The next call may well go
/// through: there is no time to wait for, only a probability.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Throttled {
    name: Name,
    probability: f64,
}

impl Throttled {
    #[cfg_attr(not(feature = "throttle"), allow(dead_code))]
    pub(crate) fn new(name: Name, probability: f64) -> Self {
        Throttled { name, probability }
    }

    /// The name of the throttle that refused the call.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The rejection probability the call was refused at, in (0, 1).
    pub fn probability(&self) -> f64 {
        self.probability
    }
}

impl fmt::Display for Throttled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "throttle `{}` refused the call locally, so it was not sent: the upstream has \
             lately accepted too few calls, and {:.1} % of calls are refused until it does",
            self.name,
            self.probability * 100.0
        )
    }
}

impl Error for Throttled {}

/// A layer's `call` was made without `poll_ready` returning `Ready(Ok(()))`
/// just before it: a bug in the caller, which broke the
/// [`Service`](tower_service::Service) contract.
///
/// The call was not sent, so it says nothing about the service below:
/// the [`DefaultClassifier`](crate::classify::DefaultClassifier) ignores
/// it (no breaker, throttle or retry budget counts it), retry never
/// retries it, and the `http` module's `ErrorResponseLayer` answers it
/// `500`. The fix is in the caller: drive the service to ready (tower's
/// `ServiceExt::ready`) before every call.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NotReady {
    layer: &'static str,
    name: Name,
}

impl NotReady {
    #[cfg_attr(
        not(any(
            feature = "bulkhead",
            feature = "circuit-breaker",
            feature = "rate-limit",
            feature = "throttle",
            feature = "chaos"
        )),
        allow(dead_code)
    )]
    pub(crate) fn new(layer: &'static str, name: Name) -> Self {
        NotReady { layer, name }
    }

    /// The kind of layer that was called, such as `"bulkhead"` (the same
    /// word as [`ConfigError::layer`]).
    pub fn layer(&self) -> &'static str {
        self.layer
    }

    /// The name of the layer that was called.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} `{}` was called without `poll_ready` returning `Ready(Ok(()))` just before, \
             so the call was not sent; this is a bug in the caller, not a failure of the service",
            self.layer, self.name
        )
    }
}

impl Error for NotReady {}

/// A call, or the wait for the inner service to become ready, took longer
/// than a timeout allowed, or ran into the request's
/// [`Deadline`](crate::deadline::Deadline).
///
/// When the call timed out, its future was dropped, which stops the work
/// here; whether the service below had already carried the request out is
/// not known. When the wait for readiness timed out, or the request's
/// deadline had passed before it was sent, the inner service was not
/// called.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Elapsed {
    name: Name,
    timeout: Duration,
    why: Why,
}

/// What ran out. Each is made by the layers named on it, and unused
/// without them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Why {
    /// The call ran past the layer's own timeout.
    #[cfg_attr(not(feature = "timeout"), allow(dead_code))]
    Timeout,
    /// The inner service was not ready within the readiness bound.
    #[cfg_attr(not(feature = "timeout"), allow(dead_code))]
    NotReady,
    /// The call ran into the request's deadline, which came before the
    /// layer's own timeout.
    #[cfg_attr(not(feature = "timeout"), allow(dead_code))]
    Deadline,
    /// The request's deadline had passed before the call was sent.
    #[cfg_attr(
        not(any(feature = "timeout", feature = "retry", feature = "http")),
        allow(dead_code)
    )]
    Expired,
    /// The request's deadline passed while the response body was still
    /// coming.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    Body,
}

impl Elapsed {
    #[cfg_attr(not(feature = "timeout"), allow(dead_code))]
    pub(crate) fn new(name: Name, timeout: Duration, waiting_for_readiness: bool) -> Self {
        let why = if waiting_for_readiness {
            Why::NotReady
        } else {
            Why::Timeout
        };
        Elapsed::because(name, timeout, why)
    }

    #[cfg_attr(
        not(any(feature = "timeout", feature = "retry", feature = "http")),
        allow(dead_code)
    )]
    pub(crate) fn because(name: Name, timeout: Duration, why: Why) -> Self {
        Elapsed { name, timeout, why }
    }

    /// The name of the layer that fired.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The limit that was exceeded: the layer's timeout, or, when the
    /// request's deadline came first, the time the call had until it (zero
    /// for a request that arrived with none left).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `true` when the inner service did not become ready in time (and so was
    /// never called); `false` when the call itself ran too long.
    pub fn waiting_for_readiness(&self) -> bool {
        self.why == Why::NotReady
    }

    /// `true` when the request's own deadline, set by its caller or a
    /// layer above, ended the call (or kept it from being sent) before this
    /// layer's timeout would have. Such a call was not given the time the
    /// layer allows, so it says nothing certain about the service's health:
    /// the [`DefaultClassifier`](crate::classify::DefaultClassifier) ignores
    /// it.
    pub fn by_deadline(&self) -> bool {
        matches!(self.why, Why::Deadline | Why::Expired | Why::Body)
    }

    /// `true` when the inner service was called; `false` when it was not
    /// (not ready in time, or the deadline had already passed), so that the
    /// request certainly had no effect.
    pub fn was_sent(&self) -> bool {
        matches!(self.why, Why::Timeout | Why::Deadline | Why::Body)
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, timeout) = (&self.name, self.timeout);
        match self.why {
            Why::NotReady => write!(
                f,
                "timeout `{name}`: the service was not ready within {timeout:?}, so the call was not sent"
            ),
            Why::Expired => write!(
                f,
                "timeout `{name}`: the request's deadline had passed, so the call was not sent"
            ),
            Why::Body => write!(
                f,
                "timeout `{name}`: the request's deadline passed while the response body was \
                 still coming; the rest of it was dropped"
            ),
            // Cancelled here, but the service may have acted on the request
            // already: say so, so that nobody reads this as "nothing
            // happened" and pays twice.
            Why::Timeout => write!(
                f,
                "timeout `{name}`: no answer within {timeout:?}; the call was abandoned, \
                 and whether the service carried it out is unknown"
            ),
            Why::Deadline => write!(
                f,
                "timeout `{name}`: the request's deadline passed after {timeout:?} with no answer; \
                 the call was abandoned, and whether the service carried it out is unknown"
            ),
        }
    }
}

impl Error for Elapsed {}

/// Which kind of error a [`BoxError`] from a palisade stack is.
///
/// Built by [`ErrorKind::of`]; each variant borrows the error it describes.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum ErrorKind<'a> {
    /// A circuit breaker refused the call.
    CircuitOpen(&'a CircuitOpen),
    /// A rate limiter refused the call.
    RateLimited(&'a RateLimited),
    /// A bulkhead refused the call.
    BulkheadFull(&'a BulkheadFull),
    /// A client-side throttle refused the call.
    Throttled(&'a Throttled),
    /// A timeout fired.
    Elapsed(&'a Elapsed),
    /// A layer was called without being driven to ready: a bug in the
    /// caller, not a refusal.
    NotReady(&'a NotReady),
    /// Not one of palisade's: the inner service's own error, unchanged.
    Inner(&'a (dyn Error + Send + Sync + 'static)),
}

impl<'a> ErrorKind<'a> {
    /// Tells which kind of error `err` is.
    ///
    /// Looks at `err` itself, then along its [`Error::source`] chain (a few
    /// levels deep), so a rejection wrapped by another layer (such as
    /// `tower::buffer`) is still recognised. Costs a handful of type-id
    /// comparisons and never allocates.
    pub fn of(err: &'a BoxError) -> Self {
        Self::of_dyn(&**err)
    }

    /// As [`ErrorKind::of`], for an error that is not boxed.
    pub fn of_dyn(err: &'a (dyn Error + Send + Sync + 'static)) -> Self {
        let mut current: Option<&'a (dyn Error + 'static)> = Some(err);
        for _ in 0..MAX_SOURCE_DEPTH {
            let Some(e) = current else { break };
            if let Some(kind) = Self::rejection(e) {
                return kind;
            }
            current = e.source();
        }
        ErrorKind::Inner(err)
    }

    fn rejection(e: &'a (dyn Error + 'static)) -> Option<Self> {
        if let Some(e) = e.downcast_ref::<Elapsed>() {
            Some(ErrorKind::Elapsed(e))
        } else if let Some(e) = e.downcast_ref::<BulkheadFull>() {
            Some(ErrorKind::BulkheadFull(e))
        } else if let Some(e) = e.downcast_ref::<CircuitOpen>() {
            Some(ErrorKind::CircuitOpen(e))
        } else if let Some(e) = e.downcast_ref::<Throttled>() {
            Some(ErrorKind::Throttled(e))
        } else if let Some(e) = e.downcast_ref::<NotReady>() {
            Some(ErrorKind::NotReady(e))
        } else {
            e.downcast_ref::<RateLimited>().map(ErrorKind::RateLimited)
        }
    }

    /// `true` when a palisade layer refused the call before it reached the
    /// service below it (open circuit, rate limited, bulkhead full,
    /// throttled, the service never became ready in time, or the request's
    /// deadline had passed), or, for [`NotReady`], was called without
    /// readiness. Such a call did no work, so it is always safe to send
    /// again.
    pub fn is_rejected_before_call(&self) -> bool {
        match self {
            ErrorKind::CircuitOpen(_)
            | ErrorKind::RateLimited(_)
            | ErrorKind::BulkheadFull(_)
            | ErrorKind::Throttled(_)
            | ErrorKind::NotReady(_) => true,
            ErrorKind::Elapsed(e) => !e.was_sent(),
            ErrorKind::Inner(_) => false,
        }
    }

    /// `true` for any of palisade's own errors, `false` for an inner error.
    pub fn is_palisade(&self) -> bool {
        !matches!(self, ErrorKind::Inner(_))
    }

    /// The name of the palisade layer that produced the error, if it is one.
    pub fn layer_name(&self) -> Option<&'a str> {
        match *self {
            ErrorKind::CircuitOpen(e) => Some(e.name()),
            ErrorKind::RateLimited(e) => Some(e.name()),
            ErrorKind::BulkheadFull(e) => Some(e.name()),
            ErrorKind::Throttled(e) => Some(e.name()),
            ErrorKind::Elapsed(e) => Some(e.name()),
            ErrorKind::NotReady(e) => Some(e.name()),
            ErrorKind::Inner(_) => None,
        }
    }

    /// How long to wait before trying again, when the rejecting layer knows.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ErrorKind::CircuitOpen(e) => e.retry_after(),
            ErrorKind::RateLimited(e) => e.retry_after(),
            _ => None,
        }
    }
}

/// A layer's configuration broke a rule; the layer was not built.
///
/// Names the layer, the field and the rule, for example
/// ``invalid bulkhead configuration: `max_concurrent` must be at least 1, got 0``.
/// Where a builder checks several rules across layers (the
/// [presets](crate::preset)), it reports every rule broken, not only the
/// first: [`violations`](Self::violations) lists them all, and
/// [`field`](Self::field) and [`rule`](Self::rule) are the first.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigError {
    layer: &'static str,
    field: &'static str,
    rule: Cow<'static, str>,
    /// Further rules broken in the same check, after the first.
    more: Vec<(&'static str, Cow<'static, str>)>,
}

impl ConfigError {
    // Every layer, and the http module, validates its configuration.
    #[cfg_attr(
        not(any(
            feature = "timeout",
            feature = "adaptive",
            feature = "bulkhead",
            feature = "circuit-breaker",
            feature = "retry",
            feature = "rate-limit",
            feature = "throttle",
            feature = "chaos",
            feature = "fallback",
            feature = "http"
        )),
        allow(dead_code)
    )]
    pub(crate) fn new(
        layer: &'static str,
        field: &'static str,
        rule: impl Into<Cow<'static, str>>,
    ) -> Self {
        ConfigError {
            layer,
            field,
            rule: rule.into(),
            more: Vec::new(),
        }
    }

    /// One error listing every violation in `errors`, which all name
    /// `layer`; `None` when there are none.
    #[cfg(all(
        feature = "timeout",
        feature = "bulkhead",
        feature = "circuit-breaker",
        feature = "retry",
        feature = "throttle"
    ))]
    pub(crate) fn all(errors: Vec<ConfigError>) -> Option<ConfigError> {
        let mut errors = errors.into_iter();
        let mut first = errors.next()?;
        for error in errors {
            debug_assert_eq!(error.layer, first.layer);
            first.more.push((error.field, error.rule));
            first.more.extend(error.more);
        }
        Some(first)
    }

    /// The kind of layer being configured, such as `"bulkhead"`.
    pub fn layer(&self) -> &'static str {
        self.layer
    }

    /// The configuration field at fault, such as `"max_concurrent"`.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The rule the field broke, such as `"must be at least 1, got 0"`.
    pub fn rule(&self) -> &str {
        &self.rule
    }

    /// Every field at fault with the rule it broke, the first one
    /// ([`field`](Self::field), [`rule`](Self::rule)) first.
    pub fn violations(&self) -> impl Iterator<Item = (&'static str, &str)> {
        std::iter::once((self.field, &*self.rule))
            .chain(self.more.iter().map(|(field, rule)| (*field, &**rule)))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} configuration: `{}` {}",
            self.layer, self.field, self.rule
        )?;
        for (field, rule) in &self.more {
            write!(f, "; `{field}` {rule}")?;
        }
        Ok(())
    }
}

impl Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn kind_of_each_rejection() {
        let name = || Name::Static("n");
        let errors: Vec<BoxError> = vec![
            Box::new(CircuitOpen::new(name(), Some(Duration::from_secs(3)))),
            Box::new(RateLimited::new("n", Some(Duration::from_millis(5)))),
            Box::new(BulkheadFull::new(name(), 4, Duration::ZERO)),
            Box::new(Elapsed::new(name(), Duration::from_secs(1), false)),
            "boom".into(),
            Box::new(Throttled::new(name(), 0.25)),
        ];
        let kinds: Vec<_> = errors.iter().map(ErrorKind::of).collect();
        assert!(matches!(kinds[0], ErrorKind::CircuitOpen(_)));
        assert_eq!(kinds[0].retry_after(), Some(Duration::from_secs(3)));
        assert!(matches!(kinds[1], ErrorKind::RateLimited(_)));
        assert_eq!(kinds[1].retry_after(), Some(Duration::from_millis(5)));
        assert!(matches!(kinds[2], ErrorKind::BulkheadFull(_)));
        assert!(matches!(kinds[3], ErrorKind::Elapsed(_)));
        assert!(!kinds[3].is_rejected_before_call());
        assert!(matches!(kinds[4], ErrorKind::Inner(_)));
        assert!(kinds[..3].iter().all(|k| k.is_rejected_before_call()));
        assert!(kinds[..4].iter().all(|k| k.layer_name() == Some("n")));
        assert_eq!(kinds[4].layer_name(), None);
        assert!(!kinds[4].is_palisade());
        let ErrorKind::Throttled(throttled) = kinds[5] else {
            panic!("expected Throttled, got {:?}", kinds[5]);
        };
        assert_eq!(throttled.probability(), 0.25);
        assert!(kinds[5].is_rejected_before_call());
        assert_eq!(kinds[5].layer_name(), Some("n"));
        assert_eq!(kinds[5].retry_after(), None, "a probability, not a wait");
    }

    #[test]
    fn kind_of_not_ready() {
        let err: BoxError = Box::new(NotReady::new("bulkhead", Name::Static("db")));
        let kind = ErrorKind::of(&err);
        let ErrorKind::NotReady(not_ready) = kind else {
            panic!("expected NotReady, got {kind:?}");
        };
        assert_eq!((not_ready.layer(), not_ready.name()), ("bulkhead", "db"));
        assert_eq!(kind.layer_name(), Some("db"));
        assert!(kind.is_palisade());
        assert!(kind.is_rejected_before_call(), "nothing was sent");
        assert_eq!(kind.retry_after(), None, "nothing to wait for");
    }

    #[test]
    fn kind_of_follows_the_source_chain() {
        let inner: BoxError = Box::new(BulkheadFull::new(Name::Static("b"), 1, Duration::ZERO));
        let wrapped: BoxError = Box::new(Wrapper(Box::new(Wrapper(inner))));
        match ErrorKind::of(&wrapped) {
            ErrorKind::BulkheadFull(e) => assert_eq!(e.name(), "b"),
            other => panic!("expected BulkheadFull, got {other:?}"),
        }
    }

    #[test]
    fn messages_say_what_happened_and_what_to_do() {
        let open = CircuitOpen::new(Name::Static("payments"), Some(Duration::from_secs(2)));
        assert_eq!(
            open.to_string(),
            "circuit breaker `payments` is open, so the call was not sent; it lets a trial call through in 2s"
        );
        let full = BulkheadFull::new(Name::Shared("db".into()), 8, Duration::from_millis(50));
        assert_eq!(
            full.to_string(),
            "bulkhead `db` is full (8 calls in flight), so the call was not sent; no slot freed up within 50ms"
        );
        let throttled = Throttled::new(Name::Static("products"), 0.396);
        assert_eq!(
            throttled.to_string(),
            "throttle `products` refused the call locally, so it was not sent: the upstream has \
             lately accepted too few calls, and 39.6 % of calls are refused until it does"
        );
        let not_ready = NotReady::new("circuit_breaker", Name::Static("payments"));
        assert_eq!(
            not_ready.to_string(),
            "circuit_breaker `payments` was called without `poll_ready` returning \
             `Ready(Ok(()))` just before, so the call was not sent; this is a bug in the \
             caller, not a failure of the service"
        );
        let ready = Elapsed::new(Name::Static("t"), Duration::from_millis(10), true);
        assert!(ready.to_string().contains("not ready within 10ms"));
        let cfg = ConfigError::new("bulkhead", "max_concurrent", "must be at least 1, got 0");
        assert_eq!(
            cfg.to_string(),
            "invalid bulkhead configuration: `max_concurrent` must be at least 1, got 0"
        );
        assert_eq!(cfg.field(), "max_concurrent");
    }
}
