//! What a retry layer reports of each attempt: one `tracing` event with the
//! attempt's number, whether the layer handled its outcome (judged it a
//! failure worth retrying) and how long it took; the same duration in the
//! histogram `palisade_retry_attempt_duration_seconds` (feature `metrics`);
//! and the spans a request and its attempts run in.
//!
//! The severity follows what the attempt means to the caller: an attempt
//! whose outcome was not handled (a success, or a failure no retry could
//! help) is informational, at DEBUG, so that a service logging at INFO does
//! not write a line per request; a handled failure that will be retried is
//! a WARN; a handled failure that ends the request (no attempt or budget
//! left, or the deadline near) is an ERROR.

use std::time::Duration;

use tracing::Span;

use crate::classify::kind_of;
use crate::error::ErrorKind;
use crate::name::Name;

/// Attempts numbered from this one on share its histogram label, `15+`, so
/// a layer allowing many attempts still has a bounded set of series.
#[cfg(feature = "metrics")]
const LAST_ATTEMPT_LABEL: u32 = 15;

/// The `error` label's values, in the order of the histogram cells; index 0
/// is "no error label" (the outcome was a response).
const ERRORS: [Option<&str>; 8] = [
    None,
    Some("circuit_open"),
    Some("rate_limited"),
    Some("bulkhead_full"),
    Some("throttled"),
    Some("timeout"),
    Some("not_ready"),
    Some("other"),
];

/// What kind of result an attempt had, for the `error` label: its index in
/// [`ERRORS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ResultKind(usize);

impl ResultKind {
    /// The kind of `result`: a response, or an error named by its palisade
    /// kind (`other` for the inner service's own errors).
    pub(crate) fn of<T, E: 'static>(result: &Result<T, E>) -> Self {
        let Err(err) = result else {
            return ResultKind(0);
        };
        ResultKind(match kind_of(err) {
            Some(ErrorKind::CircuitOpen(_)) => 1,
            Some(ErrorKind::RateLimited(_)) => 2,
            Some(ErrorKind::BulkheadFull(_)) => 3,
            Some(ErrorKind::Throttled(_)) => 4,
            Some(ErrorKind::Elapsed(_)) => 5,
            Some(ErrorKind::NotReady(_)) => 6,
            Some(ErrorKind::Inner(_)) | None => 7,
        })
    }

    /// The `error` label, `None` for a response.
    fn error(self) -> Option<&'static str> {
        ERRORS[self.0]
    }
}

/// One finished attempt, as reported.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Attempt {
    /// 0 for the first attempt.
    pub(crate) number: u32,
    /// The layer judged the outcome a failure worth retrying.
    pub(crate) handled: bool,
    /// Another attempt follows.
    pub(crate) retrying: bool,
    pub(crate) result: ResultKind,
    /// How long it took, when someone listens (see
    /// [`AttemptReports::times_attempts`]).
    pub(crate) took: Option<Duration>,
}

/// The attempt reports of one layer: its name and, with the feature
/// `metrics`, the histogram's series: the first attempt's success made at
/// build time, each other one the first time an attempt needs it (a
/// registration per series, never per call).
pub(crate) struct AttemptReports {
    name: Name,
    #[cfg(feature = "metrics")]
    histograms: Box<[std::sync::OnceLock<metrics::Histogram>]>,
}

impl AttemptReports {
    pub(crate) fn new(name: Name, max_attempts: u32) -> Self {
        #[cfg(feature = "metrics")]
        let histograms = {
            let numbers = max_attempts.min(LAST_ATTEMPT_LABEL + 1) as usize;
            let cells: Box<[std::sync::OnceLock<metrics::Histogram>]> =
                (0..numbers * 2 * ERRORS.len())
                    .map(|_| std::sync::OnceLock::new())
                    .collect();
            // A first attempt that succeeds, the common case, has its series
            // from the start, made now like every other layer's.
            let _ = cells[0].set(register(&name, 0, false, None));
            cells
        };
        #[cfg(not(feature = "metrics"))]
        let _ = max_attempts;
        AttemptReports {
            name,
            #[cfg(feature = "metrics")]
            histograms,
        }
    }

    /// Whether attempts are timed: when the histogram is compiled in, or a
    /// `tracing` subscriber takes this layer's attempt events. With neither,
    /// no clock is read for them.
    #[inline]
    pub(crate) fn times_attempts(&self) -> bool {
        cfg!(feature = "metrics")
            || tracing::enabled!(target: "palisade::retry", tracing::Level::ERROR)
    }

    /// Reports a finished attempt: its event, and its duration in the
    /// histogram.
    pub(crate) fn finished(&self, attempt: &Attempt) {
        #[cfg(feature = "metrics")]
        if let Some(took) = attempt.took {
            self.histogram(attempt).record(took.as_secs_f64());
        }
        self.trace(attempt);
    }

    /// Reports a retry that was decided (its attempt reported as
    /// retrying) but never sent: the service failed while getting ready,
    /// or the deadline passed first. An ERROR, as the attempt before it
    /// ends the request after all.
    #[cold]
    pub(crate) fn abandoned(&self, retry: u32, why: &'static str) {
        tracing::error!(
            target: "palisade::retry",
            name = self.name.as_str(),
            attempt = retry,
            why,
            "retry abandoned; no attempt follows"
        );
    }

    fn trace(&self, a: &Attempt) {
        let name = self.name.as_str();
        let error = a.result.error();
        match (a.handled, a.retrying) {
            (false, _) => tracing::debug!(
                target: "palisade::retry",
                name, attempt = a.number, handled = false, took = ?a.took, error,
                "attempt finished"
            ),
            (true, true) => tracing::warn!(
                target: "palisade::retry",
                name, attempt = a.number, handled = true, took = ?a.took, error,
                "attempt failed; retrying"
            ),
            (true, false) => tracing::error!(
                target: "palisade::retry",
                name, attempt = a.number, handled = true, took = ?a.took, error,
                "attempt failed; no retry follows"
            ),
        }
    }

    /// The series `{name, attempt, handled[, error]}` of `attempt`.
    #[cfg(feature = "metrics")]
    fn histogram(&self, attempt: &Attempt) -> &metrics::Histogram {
        let numbers = self.histograms.len() / (2 * ERRORS.len());
        let number = (attempt.number as usize).min(numbers - 1);
        let error = attempt.result.error();
        let cell = (number * 2 + usize::from(attempt.handled)) * ERRORS.len() + attempt.result.0;
        self.histograms[cell]
            .get_or_init(|| register(&self.name, attempt.number, attempt.handled, error))
    }
}

/// Registers the series of attempt `number` with the recorder installed
/// now.
#[cfg(feature = "metrics")]
fn register(
    name: &Name,
    number: u32,
    handled: bool,
    error: Option<&'static str>,
) -> metrics::Histogram {
    let label = if number >= LAST_ATTEMPT_LABEL {
        format!("{LAST_ATTEMPT_LABEL}+")
    } else {
        number.to_string()
    };
    let handled = if handled { "true" } else { "false" };
    let name = name.as_str().to_owned();
    match error {
        None => metrics::histogram!(
            "palisade_retry_attempt_duration_seconds",
            "name" => name, "attempt" => label, "handled" => handled
        ),
        Some(error) => metrics::histogram!(
            "palisade_retry_attempt_duration_seconds",
            "name" => name, "attempt" => label, "handled" => handled, "error" => error
        ),
    }
}

/// The span a request runs in, from its first attempt to its result:
/// `retry{name, attempts, outcome}`, at DEBUG. `attempts` and `outcome` are
/// recorded when the result is final.
pub(crate) fn request_span(name: &Name) -> Span {
    tracing::debug_span!(
        target: "palisade::retry",
        "retry",
        name = name.as_str(),
        attempts = tracing::field::Empty,
        outcome = tracing::field::Empty,
    )
}

/// The span one attempt runs in, inside its request's: `attempt{number}`,
/// at DEBUG; the inner service's call and its future run in it.
pub(crate) fn attempt_span(request: &Span, number: u32) -> Span {
    if request.is_disabled() {
        return Span::none();
    }
    tracing::debug_span!(target: "palisade::retry", parent: request, "attempt", number)
}

impl std::fmt::Debug for AttemptReports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptReports")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
