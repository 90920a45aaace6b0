//! The one parser for every flag that takes a number of seconds (`--timeout`, `--duration`,
//! `perf --variable-rate RATE:SECONDS`, ...).
//!
//! `std::time::Duration::from_secs_f64` panics on a negative, NaN, infinite or overflowing
//! value, and a deadline far in the future overflows `Instant`. The parser refuses all of
//! those while the command line is parsed, so clap reports them as a usage error (exit
//! status 2) that says what is accepted.

use std::time::Duration;

/// The longest wait a flag accepts: a year. Longer is a typo, and `Instant + it` always fits.
pub const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// Why a number of seconds was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a decimal number.
    #[error("{0:?} is not a number of seconds (expected a decimal such as 5 or 0.25)")]
    NotANumber(String),
    /// Negative, NaN, infinite or longer than [`MAX_SECONDS`].
    #[error("{0:?} is out of range: expected seconds from 0 to {MAX_SECONDS} (a year)")]
    OutOfRange(String),
    /// Zero where a positive length is needed.
    #[error("{0:?} is out of range: expected seconds above 0, up to {MAX_SECONDS} (a year)")]
    NotPositive(String),
}

/// Parses seconds from 0 to [`MAX_SECONDS`], decimals allowed (`0`, `2.5`, `1e3`).
///
/// # Errors
/// [`DurationError`] for anything else: text, negative, NaN, infinite, absurdly long.
pub fn parse_seconds(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    let seconds: f64 = trimmed
        .parse()
        .map_err(|_| DurationError::NotANumber(text.to_owned()))?;
    // `!(0..=MAX).contains` is also true for NaN.
    if !(0.0..=MAX_SECONDS).contains(&seconds) {
        return Err(DurationError::OutOfRange(text.to_owned()));
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| DurationError::OutOfRange(text.to_owned()))
}

/// As [`parse_seconds`], but zero is refused too (the length of a run).
///
/// # Errors
/// [`DurationError`] as [`parse_seconds`], and [`DurationError::NotPositive`] for zero.
pub fn parse_positive_seconds(text: &str) -> Result<Duration, DurationError> {
    let duration = parse_seconds(text)?;
    if duration.is_zero() {
        return Err(DurationError::NotPositive(text.to_owned()));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_in_range_parse() {
        assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
        assert_eq!(parse_seconds("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_seconds("1e3"), Ok(Duration::from_secs(1000)));
        assert_eq!(
            parse_seconds("31536000"),
            Ok(Duration::from_secs(31_536_000))
        );
        assert_eq!(
            parse_positive_seconds("0.001"),
            Ok(Duration::from_millis(1))
        );
    }

    #[test]
    fn everything_else_is_refused_not_a_panic() {
        for bad in [
            "inf", "-inf", "NaN", "-1", "-0.5", "1e19", "31536001", "1e400",
        ] {
            assert!(
                matches!(parse_seconds(bad), Err(DurationError::OutOfRange(_))),
                "{bad}"
            );
        }
        for bad in ["", "ten", "5s", "1,5"] {
            assert!(
                matches!(parse_seconds(bad), Err(DurationError::NotANumber(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_positive_seconds("0"),
            Err(DurationError::NotPositive(_))
        ));
    }
}
