//! Reading the `Retry-After` header (RFC 9110, section 10.2.3).

use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderValue, RETRY_AFTER};

/// How long a response's `Retry-After` header asks the client to wait.
///
/// `None` when the header is absent, malformed, zero or a date already past:
/// there is nothing to wait for then, and a bad value never becomes an
/// error. See [`parse_retry_after`] for the forms read. An HTTP-date is
/// compared with the system clock ([`SystemTime::now`]): it is a wall-clock
/// time, so tokio's paused clock does not apply to it.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after(headers.get(RETRY_AFTER)?, SystemTime::now())
}

/// Reads a `Retry-After` value at `now`: delay-seconds (`120`), or an
/// HTTP-date in any of the three formats RFC 9110 requires a recipient to
/// accept (`Sun, 06 Nov 1994 08:49:37 GMT`, the obsolete RFC 850
/// `Sunday, 06-Nov-94 08:49:37 GMT`, and asctime `Sun Nov  6 08:49:37 1994`).
///
/// `None` for anything else (a sign, a fraction, a number that does not fit
/// in 64 bits, an impossible date), and for a zero wait or a date at or
/// before `now`. A large but well-formed value is returned as it is: retry
/// gives up rather than wait longer than its backoff's maximum, and a
/// breaker caps what it honours (`open_on_retry_after`).
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use http::HeaderValue;
/// use palisade::http::parse_retry_after;
///
/// let now = UNIX_EPOCH + Duration::from_secs(784_111_747); // 1994-11-06 08:49:07 GMT
/// let date = HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT");
/// assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(30)));
/// assert_eq!(parse_retry_after(&HeaderValue::from_static("120"), now), Some(Duration::from_secs(120)));
/// assert_eq!(parse_retry_after(&HeaderValue::from_static("soon"), now), None);
/// ```
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.as_bytes().trim_ascii();
    let wait = if text.first().is_some_and(u8::is_ascii_digit) {
        Duration::from_secs(delay_seconds(text)?)
    } else {
        let date = httpdate::parse_http_date(std::str::from_utf8(text).ok()?).ok()?;
        date.duration_since(now).ok()?
    };
    (!wait.is_zero()).then_some(wait)
}

/// `1*DIGIT`, without overflow.
fn delay_seconds(text: &[u8]) -> Option<u64> {
    text.iter().try_fold(0u64, |n, &b| {
        let digit = b.is_ascii_digit().then(|| u64::from(b - b'0'))?;
        n.checked_mul(10)?.checked_add(digit)
    })
}
