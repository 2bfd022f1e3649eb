//! Durations in configuration files: `"250ms"`, `"1.5s"`, `"2m"`, `"1h"`, or
//! a bare number of seconds.

use std::fmt;
use std::time::Duration;

use serde::Deserializer;
use serde::de::{self, Visitor};

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

pub(crate) mod option {
    use super::*;

    #[cfg_attr(
        not(any(feature = "timeout", feature = "circuit-breaker", feature = "retry")),
        allow(dead_code)
    )]
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::deserialize(deserializer).map(Some)
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a duration such as "250ms", "1.5s", "2m" or a number of seconds"#)
    }

    fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(secs))
    }

    fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Duration, E> {
        u64::try_from(secs)
            .map(Duration::from_secs)
            .map_err(|_| E::custom(format!("a duration cannot be negative, got {secs}")))
    }

    fn visit_f64<E: de::Error>(self, secs: f64) -> Result<Duration, E> {
        Duration::try_from_secs_f64(secs)
            .map_err(|_| E::custom(format!("{secs} is not a valid number of seconds")))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        parse(text).ok_or_else(|| {
            E::custom(format!(
                r#"{text:?} is not a duration; write e.g. "250ms", "1.5s", "2m" or "1h""#
            ))
        })
    }
}

/// Parses a number followed by an optional unit (seconds when absent).
fn parse(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let unit_secs = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "" | "s" | "sec" | "secs" => 1.0,
        "m" | "min" | "mins" => 60.0,
        "h" | "hr" | "hrs" => 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(number * unit_secs).ok()
}

#[cfg(test)]
mod tests {
    use super::parse;
    use std::time::Duration;

    #[test]
    fn parses_the_usual_spellings() {
        assert_eq!(parse("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse(" 2m "), Some(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("10us"), Some(Duration::from_micros(10)));
        assert_eq!(parse("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse("0s"), Some(Duration::ZERO));
    }

    #[test]
    fn refuses_nonsense() {
        for bad in ["", "ms", "5 parsecs", "-1s", "1.2.3s", "NaNs", "1e999s"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
