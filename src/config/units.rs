//! Human-friendly units in the config file: durations (`300us`, `500ms`, `2s`, `1m`)
//! and byte sizes (`64KiB`, `8MiB`, `1GiB`).
//!
//! Both deserialize from strings so that a typo is reported by serde with the
//! key's path (`health.interval: invalid duration "2 seconds" ...`).

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// A duration written as an integer followed by a unit: `us`, `ms`, `s`, `m` or `h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

/// A size in bytes written as an integer with an optional unit:
/// `B`, `KiB`, `MiB`, `GiB` (powers of 1024) or `KB`, `MB`, `GB` (powers of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

/// Parses `300us`, `500ms`, `2s`, `1m`, `1h`. A bare number is refused: its unit would be a guess.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("invalid duration {text:?}: add a unit (ms, s, m or h)"))?;
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected a number then ms, s, m or h"))?;
    let micros = match unit.trim() {
        "us" | "µs" => Some(value),
        "ms" => value.checked_mul(1_000),
        "s" => value.checked_mul(1_000_000),
        "m" => value.checked_mul(60_000_000),
        "h" => value.checked_mul(3_600_000_000),
        _ => {
            return Err(format!(
                "invalid duration {text:?}: unit must be us, ms, s, m or h"
            ))
        }
    };
    micros
        .filter(|m| *m <= MAX_DURATION.as_micros() as u64)
        .map(Duration::from_micros)
        .ok_or_else(|| format!("invalid duration {text:?}: too large (at most 24h)"))
}

/// No hothot setting needs a longer duration, and a bound keeps every
/// `Instant + duration` far from overflowing.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Parses `1048576`, `512B`, `64KiB`, `8MiB`, `1GiB`, `10MB`.
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {text:?}: expected a number then B, KiB, MiB or GiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => {
            return Err(format!(
                "invalid size {text:?}: unit must be B, KiB, MiB or GiB"
            ))
        }
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("invalid size {text:?}: too large"))
}

struct UnitVisitor<T> {
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
}

impl<T> Visitor<'_> for UnitVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        (self.parse)(&v.to_string()).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor {
            expecting: "a duration such as 500ms, 2s or 1m",
            parse: |s| parse_duration(s).map(HumanDuration),
        })
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor {
            expecting: "a size such as 64KiB, 8MiB or 1GiB",
            parse: |s| parse_byte_size(s).map(ByteSize),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300us"), Ok(Duration::from_micros(300)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("2 seconds").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("25h").unwrap_err().contains("at most 24h"));
        assert!(parse_duration("99999999999h").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_byte_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_byte_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_byte_size("100"), Ok(100));
        assert_eq!(parse_byte_size("10MB"), Ok(10_000_000));
        assert!(parse_byte_size("8 megs").is_err());
        assert!(parse_byte_size("MiB").is_err());
    }
}
