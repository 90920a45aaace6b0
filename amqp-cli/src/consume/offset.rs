//! `consume --offset`: where a stream consumer starts, as RabbitMQ's `x-stream-offset` takes it.
//!
//! | written | sent as |
//! |---|---|
//! | `first`, `last`, `next` | that string |
//! | `N` (digits) | the offset, a long integer |
//! | `@SECONDS` | a timestamp, POSIX seconds |
//! | `YYYY-MM-DDTHH:MM:SSZ` | a timestamp (UTC) |
//! | `N` with `Y` `M` `D` `h` `m` `s` (`7D`, `30m`) | that string: messages younger than it |

use amqp_client::FieldValue;

/// The consumer argument `--offset` sets.
pub const STREAM_OFFSET: &str = "x-stream-offset";

/// Why an `--offset` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a stream offset: expected first, last, next, an offset N, @POSIX_SECONDS, \
     YYYY-MM-DDTHH:MM:SSZ, or an age such as 7D, 12h or 30m"
)]
pub struct OffsetError(String);

/// Parses an `--offset` into the value of `x-stream-offset`.
///
/// # Errors
/// [`OffsetError`] for anything not in the table above.
pub fn parse(text: &str) -> Result<FieldValue, OffsetError> {
    let bad = || OffsetError(text.to_owned());
    if matches!(text, "first" | "last" | "next") {
        return Ok(FieldValue::from(text));
    }
    if let Some(seconds) = text.strip_prefix('@') {
        return digits(seconds).map(FieldValue::Timestamp).ok_or_else(bad);
    }
    if let Some(n) = digits(text) {
        return i64::try_from(n).map(FieldValue::I64).map_err(|_| bad());
    }
    if let Some(number) = text.strip_suffix(['Y', 'M', 'D', 'h', 'm', 's']) {
        return digits(number)
            .map(|_| FieldValue::from(text))
            .ok_or_else(bad);
    }
    utc_seconds(text).map(FieldValue::Timestamp).ok_or_else(bad)
}

/// A non-empty run of ASCII digits as a number.
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `YYYY-MM-DDTHH:MM:SSZ` as POSIX seconds (years 1970 to 9999).
fn utc_seconds(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 20
        || (b[4], b[7], b[10], b[13], b[16], b[19]) != (b'-', b'-', b'T', b':', b':', b'Z')
    {
        return None;
    }
    let field = |from: usize, to: usize| digits(&text[from..to]);
    let (year, month, day) = (field(0, 4)?, field(5, 7)?, field(8, 10)?);
    let (hour, minute, second) = (field(11, 13)?, field(14, 16)?, field(17, 19)?);
    if year < 1970 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_since_epoch(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (year ≥ 1970), by
/// counting from March so that the leap day ends the year.
fn days_since_epoch(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let year_of_era = y % 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719_468 days from 0000-03-01 to 1970-01-01.
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_becomes_what_rabbitmq_takes() {
        assert_eq!(parse("first"), Ok(FieldValue::from("first")));
        assert_eq!(parse("next"), Ok(FieldValue::from("next")));
        assert_eq!(parse("42"), Ok(FieldValue::I64(42)));
        assert_eq!(
            parse("@1700000000"),
            Ok(FieldValue::Timestamp(1_700_000_000))
        );
        assert_eq!(parse("7D"), Ok(FieldValue::from("7D")));
        assert_eq!(parse("30m"), Ok(FieldValue::from("30m")));
        assert_eq!(parse("1970-01-01T00:00:00Z"), Ok(FieldValue::Timestamp(0)));
        // `date -u -d 2023-11-14T22:13:20Z +%s`
        assert_eq!(
            parse("2023-11-14T22:13:20Z"),
            Ok(FieldValue::Timestamp(1_700_000_000))
        );
        assert_eq!(
            parse("2024-02-29T12:00:00Z"),
            Ok(FieldValue::Timestamp(1_709_208_000))
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "First",
            "-1",
            "@",
            "@-5",
            "D",
            "7d",
            "99999999999999999999",
            "2024-13-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2024-01-01 00:00:00Z",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
