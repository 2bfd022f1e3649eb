//! The time left, written as gRPC's `grpc-timeout` header writes it: at
//! most eight ASCII digits and one unit letter (`H` hours, `M` minutes,
//! `S` seconds, `m` milliseconds, `u` microseconds, `n` nanoseconds).

use std::time::Duration;

use http::HeaderValue;

/// Nanoseconds per unit, finest first.
const UNITS: [(u128, u8); 6] = [
    (1, b'n'),
    (1_000, b'u'),
    (1_000_000, b'm'),
    (1_000_000_000, b'S'),
    (60_000_000_000, b'M'),
    (3_600_000_000_000, b'H'),
];

/// The largest number the header may carry: eight digits.
const MAX_DIGITS: u128 = 99_999_999;

/// `left` in the finest unit that fits in eight digits, rounded up in that
/// unit (so the receiver never gets less time than there is); `None` for
/// zero, which must never be written (a receiver reads it as expired).
/// Beyond 99 999 999 hours it is capped there.
pub(crate) fn encode(left: Duration) -> Option<HeaderValue> {
    let nanos = left.as_nanos();
    if nanos == 0 {
        return None;
    }
    let (count, unit) = UNITS
        .iter()
        .map(|&(per, unit)| (nanos.div_ceil(per), unit))
        .find(|&(count, _)| count <= MAX_DIGITS)
        .unwrap_or((MAX_DIGITS, b'H'));
    let mut text = count.to_string();
    text.push(char::from(unit));
    HeaderValue::from_str(&text).ok()
}

/// What an inbound value says: `Some(time left)` (zero means already
/// expired), or `None` when it is not of the form above (one to eight
/// digits, leading zeros allowed, then one unit letter, case included).
pub(crate) fn parse(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let count = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    let per = UNITS.iter().find(|&&(_, u)| u == unit)?.0;
    let nanos = u128::from(count) * per;
    // Eight digits of hours is under 2^69 ns, well within a Duration.
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(left: Duration) -> Option<String> {
        encode(left).map(|v| v.to_str().unwrap().to_owned())
    }

    /// Scenario DL-2: the finest unit that fits in eight digits, rounded
    /// up in that unit; never zero.
    #[test]
    fn writes_the_finest_unit_that_fits_in_eight_digits_rounding_up() {
        let ns = Duration::from_nanos;
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        assert_eq!(written(ns(12_345_678)).as_deref(), Some("12345678n"));
        assert_eq!(written(ns(123_456_789)).as_deref(), Some("123457u"));
        assert_eq!(written(ms(123_456_789)).as_deref(), Some("123457S"));
        assert_eq!(written(s(123_456_789)).as_deref(), Some("2057614M"));
        assert_eq!(written(s(123_456_789 * 60)).as_deref(), Some("2057614H"));
        assert_eq!(written(ms(100)).as_deref(), Some("100000u"));
        assert_eq!(written(ns(1)).as_deref(), Some("1n"));
        assert_eq!(written(Duration::MAX).as_deref(), Some("99999999H"));
        assert_eq!(written(Duration::ZERO), None);
    }

    /// Scenario DL-3: the valid forms, leading zeros included, and zero.
    #[test]
    fn reads_every_valid_form() {
        let cases = [
            ("00000001n", Duration::from_nanos(1)),
            ("10u", Duration::from_micros(10)),
            ("00000010m", Duration::from_millis(10)),
            ("1234S", Duration::from_secs(1234)),
            ("00000001M", Duration::from_secs(60)),
            ("99999999S", Duration::from_secs(99_999_999)),
            ("99999999H", Duration::from_secs(99_999_999 * 3600)),
            ("0S", Duration::ZERO),
            ("00000000S", Duration::ZERO),
        ];
        for (value, expected) in cases {
            assert_eq!(parse(value.as_bytes()), Some(expected), "{value}");
        }
    }

    /// Scenario DL-3: malformed values are not read at all (never as
    /// zero).
    #[test]
    fn refuses_malformed_values() {
        for value in [
            "-1S",
            "1234x",
            "1234s",
            "1234",
            "1",
            "",
            "9a1S",
            "000000001S",
            "S",
            " 1S",
            "1S ",
            "+1S",
        ] {
            assert_eq!(parse(value.as_bytes()), None, "{value:?}");
        }
    }

    #[test]
    fn what_is_written_reads_back_at_least_as_long() {
        for nanos in [1u64, 999, 1_000_001, 123_456_789_012, u64::MAX] {
            let left = Duration::from_nanos(nanos);
            let value = encode(left).unwrap();
            assert!(parse(value.as_bytes()).unwrap() >= left, "{nanos}");
        }
    }
}
