//! Times as people write them (`90d`, `2027-01-31`) and as the store keeps them (Unix
//! seconds, UTC).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, UTC.
pub type Timestamp = i64;

/// Now, in Unix seconds.
pub fn now() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A time that could not be understood; the text says what is accepted.
#[derive(Debug, PartialEq, Eq)]
pub struct TimeError(String);

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TimeError {}

/// Parses a duration: a whole number followed by `s`, `m`, `h`, `d` or `w`.
pub fn parse_duration(text: &str) -> Result<i64, TimeError> {
    let bad = || {
        TimeError(format!(
            "bad duration {text:?}: expected a number and a unit, like 30s, 15m, 12h, 90d or 2w"
        ))
    };
    let unit = text.chars().last().ok_or_else(bad)?;
    let number: i64 = text[..text.len() - unit.len_utf8()]
        .parse()
        .map_err(|_| bad())?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        'w' => 7 * 86400,
        _ => return Err(bad()),
    };
    if number <= 0 {
        return Err(TimeError(format!(
            "bad duration {text:?}: must be positive"
        )));
    }
    number.checked_mul(scale).ok_or_else(bad)
}

/// Formats seconds the way [`parse_duration`] reads them, in the largest exact unit.
pub fn format_duration(secs: i64) -> String {
    match secs {
        s if s % 86400 == 0 => format!("{}d", s / 86400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Parses an expiry given as a duration from `now` or as an ISO 8601 date or date-time.
/// A date alone means midnight UTC at the start of that day; a date-time without an offset
/// is UTC.
pub fn parse_expiry(text: &str, now: Timestamp) -> Result<Timestamp, TimeError> {
    if text.len() >= 10 && text.as_bytes()[4] == b'-' {
        return parse_iso8601(text);
    }
    parse_duration(text)?
        .checked_add(now)
        .ok_or_else(|| TimeError(format!("duration {text:?} is too long")))
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS]` with an optional `Z` or `+HH:MM`/`-HH:MM`.
pub fn parse_iso8601(text: &str) -> Result<Timestamp, TimeError> {
    let bad = || {
        TimeError(format!(
            "bad date {text:?}: expected ISO 8601, like 2027-01-31 or 2027-01-31T18:00:00Z"
        ))
    };
    let num = |s: &str| -> Result<i64, TimeError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    // Byte 10 may fall inside a multi-byte character ("2027-01-0é"): not a date, and
    // split_at would panic there (found by tests/properties.rs).
    let cut = text.len().min(10);
    if !text.is_char_boundary(cut) {
        return Err(bad());
    }
    let (date, rest) = text.split_at(cut);
    let d: Vec<&str> = date.split('-').collect();
    if d.len() != 3 || d[0].len() != 4 || d[1].len() != 2 || d[2].len() != 2 {
        return Err(bad());
    }
    let (y, mo, da) = (num(d[0])?, num(d[1])?, num(d[2])?);
    if !(1..=12).contains(&mo) || da < 1 || da > days_in_month(y, mo) {
        return Err(bad());
    }
    let mut secs = days_from_civil(y, mo, da) * 86400;
    if rest.is_empty() {
        return Ok(secs);
    }
    let rest = rest.strip_prefix(['T', ' ']).ok_or_else(bad)?;
    let (clock, offset) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let c: Vec<&str> = clock.split(':').collect();
    if !(2..=3).contains(&c.len()) || c.iter().any(|p| p.len() != 2) {
        return Err(bad());
    }
    let (h, mi) = (num(c[0])?, num(c[1])?);
    let s = if c.len() == 3 { num(c[2])? } else { 0 };
    if h > 23 || mi > 59 || s > 59 {
        return Err(bad());
    }
    secs += h * 3600 + mi * 60 + s;
    match offset {
        "" | "Z" | "z" => Ok(secs),
        _ => {
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let o: Vec<&str> = offset[1..].split(':').collect();
            if o.len() != 2 || o[0].len() != 2 || o[1].len() != 2 {
                return Err(bad());
            }
            let (oh, om) = (num(o[0])?, num(o[1])?);
            if oh > 23 || om > 59 {
                return Err(bad());
            }
            Ok(secs - sign * (oh * 3600 + om * 60))
        }
    }
}

/// Formats a timestamp as ISO 8601 UTC: `2027-01-31T18:00:00Z`.
pub fn format_iso8601(t: Timestamp) -> String {
    let (days, secs) = (t.div_euclid(86400), t.rem_euclid(86400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's algorithms (public domain): proleptic Gregorian calendar <-> days since
// 1970-01-01, exact for every year.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(30));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("12h"), Ok(43200));
        assert_eq!(parse_duration("90d"), Ok(90 * 86400));
        assert_eq!(parse_duration("2w"), Ok(14 * 86400));
        for bad in [
            "",
            "d",
            "12",
            "-3d",
            "0s",
            "1.5h",
            "3y",
            "99999999999999999999d",
            "ß",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_round_trip() {
        for text in ["30s", "15m", "12h", "90d", "365d"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
        assert_eq!(format_duration(14 * 86400), "14d");
    }

    #[test]
    fn dates() {
        assert_eq!(parse_iso8601("1970-01-01"), Ok(0));
        assert_eq!(parse_iso8601("2000-03-01T00:00:00Z"), Ok(951868800));
        assert_eq!(parse_iso8601("2027-01-31T18:00:00Z"), Ok(1801418400));
        assert_eq!(parse_iso8601("2027-01-31T18:00"), Ok(1801418400));
        assert_eq!(parse_iso8601("2027-01-31T20:00:00+02:00"), Ok(1801418400));
        assert_eq!(parse_iso8601("2027-01-31T16:30:00-01:30"), Ok(1801418400));
        assert_eq!(parse_iso8601("2024-02-29"), Ok(1709164800));
        for bad in [
            "2023-02-29",
            "2027-13-01",
            "2027-1-01",
            "2027-01-31T25:00",
            "2027-01-31X",
            "2027-01-31T18",
            "2027-01-31T18:00:00+2",
            "abcd-ef-gh",
            "2027-01-32",
        ] {
            assert!(parse_iso8601(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn format_round_trips() {
        for t in [0, 951868800, 1801418400, 1709164800 + 86399, 253402300799] {
            assert_eq!(parse_iso8601(&format_iso8601(t)), Ok(t), "{t}");
        }
        assert_eq!(format_iso8601(1801418400), "2027-01-31T18:00:00Z");
    }

    #[test]
    fn expiry_takes_either_form() {
        assert_eq!(parse_expiry("1h", 1000), Ok(4600));
        assert_eq!(parse_expiry("2027-01-31", 0), Ok(1801353600));
        assert!(parse_expiry("soon", 0).is_err());
    }
}
