//! The IPNS `Validity` timestamp: RFC 3339 text with up to nanosecond precision.
//!
//! Written by hand (rather than with `chrono` or `time`) so that what is accepted and what is
//! produced match Go's `time.Parse`/`Format` with `time.RFC3339Nano`, which is what Kubo/boxo use
//! (`util.ParseRFC3339` / `util.FormatRFC3339`):
//!
//! * parsing: `YYYY-MM-DDTHH:MM:SS`, an optional `.` with one or more digits (digits after the
//!   ninth are ignored), then `Z` or `±HH:MM`. Upper-case `T` and `Z` only, no leap second (`:60`),
//!   days checked against the month (and leap years), offsets below 24 h;
//! * formatting: always UTC with `Z`, the fraction without trailing zeros, none when it is zero
//!   (`2123-08-14T12:17:03.694052Z`, `2024-01-01T00:00:00Z`), like Go's `RFC3339Nano`.
//!   js-ipns (Helia) writes all nine digits; both forms parse here and in Go.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (may be negative) and nanoseconds (0..1e9) of a parsed timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Instant {
    pub secs: i64,
    pub nanos: u32,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn digits(s: &[u8], at: usize, n: usize) -> Result<i64, &'static str> {
    let part = s.get(at..at + n).ok_or("too short")?;
    let mut v = 0i64;
    for &c in part {
        if !c.is_ascii_digit() {
            return Err("expected a digit");
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Ok(v)
}

fn expect(s: &[u8], at: usize, c: u8) -> Result<(), &'static str> {
    match s.get(at) {
        Some(&x) if x == c => Ok(()),
        _ => Err("unexpected character"),
    }
}

/// Parses an RFC 3339 timestamp the way Go's `time.Parse(time.RFC3339Nano, s)` does.
pub(crate) fn parse(s: &[u8]) -> Result<Instant, &'static str> {
    let year = digits(s, 0, 4)?;
    expect(s, 4, b'-')?;
    let month = digits(s, 5, 2)?;
    expect(s, 7, b'-')?;
    let day = digits(s, 8, 2)?;
    expect(s, 10, b'T')?;
    let hour = digits(s, 11, 2)?;
    expect(s, 13, b':')?;
    let minute = digits(s, 14, 2)?;
    expect(s, 16, b':')?;
    let second = digits(s, 17, 2)?;
    if !(1..=12).contains(&month) {
        return Err("month out of range");
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err("day out of range");
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err("time of day out of range");
    }
    let mut rest = &s[19..];
    let mut nanos = 0u32;
    if rest.first() == Some(&b'.') && rest.get(1).is_some_and(u8::is_ascii_digit) {
        let frac: Vec<u8> = rest[1..]
            .iter()
            .copied()
            .take_while(u8::is_ascii_digit)
            .collect();
        // Nine digits of nanoseconds: shorter fractions are padded, longer ones truncated.
        for i in 0..9 {
            nanos = nanos * 10 + frac.get(i).map_or(0, |c| u32::from(c - b'0'));
        }
        rest = &rest[1 + frac.len()..];
    }
    let offset = match rest {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), ..] if rest.len() == 6 => {
            let oh = digits(rest, 1, 2)?;
            expect(rest, 3, b':')?;
            let om = digits(rest, 4, 2)?;
            if oh > 23 || om > 59 {
                return Err("offset out of range");
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return Err("expected Z or a ±HH:MM offset"),
    };
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Ok(Instant { secs, nanos })
}

/// Formats as Go's `t.UTC().Format(time.RFC3339Nano)`; `None` outside years 0000..=9999 (which
/// RFC 3339 cannot represent).
pub(crate) fn format(t: Instant) -> Option<String> {
    let days = t.secs.div_euclid(86_400);
    let sod = t.secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) || t.nanos >= 1_000_000_000 {
        return None;
    }
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
    if t.nanos != 0 {
        let frac = format!("{:09}", t.nanos);
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    Some(out)
}

pub(crate) fn to_system_time(t: Instant) -> Option<SystemTime> {
    if t.secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(t.secs as u64, t.nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(t.secs.unsigned_abs()))?
            .checked_add(Duration::from_nanos(u64::from(t.nanos)))
    }
}

pub(crate) fn from_system_time(t: SystemTime) -> Option<Instant> {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Some(Instant {
            secs: i64::try_from(d.as_secs()).ok()?,
            nanos: d.subsec_nanos(),
        }),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).ok()?;
            Some(if d.subsec_nanos() == 0 {
                Instant {
                    secs: -secs,
                    nanos: 0,
                }
            } else {
                Instant {
                    secs: -secs - 1,
                    nanos: 1_000_000_000 - d.subsec_nanos(),
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Instant, &'static str> {
        parse(s.as_bytes())
    }

    #[test]
    fn parses_go_and_js_forms() {
        assert_eq!(p("1970-01-01T00:00:00Z"), Ok(Instant { secs: 0, nanos: 0 }));
        assert_eq!(
            p("1970-01-01T00:00:00.000000001Z"),
            Ok(Instant { secs: 0, nanos: 1 })
        );
        assert_eq!(
            p("1970-01-01T00:00:00.5Z"),
            Ok(Instant {
                secs: 0,
                nanos: 500_000_000
            })
        );
        // More than nine digits: the rest is ignored, as Go does.
        assert_eq!(
            p("1970-01-01T00:00:00.1234567899Z"),
            Ok(Instant {
                secs: 0,
                nanos: 123_456_789
            })
        );
        assert_eq!(
            p("1970-01-01T01:00:00+01:00"),
            Ok(Instant { secs: 0, nanos: 0 })
        );
        assert_eq!(
            p("1969-12-31T23:00:00-01:00"),
            Ok(Instant { secs: 0, nanos: 0 })
        );
        assert_eq!(
            p("1969-12-31T23:59:59.999999999Z"),
            Ok(Instant {
                secs: -1,
                nanos: 999_999_999
            })
        );
        assert_eq!(p("2000-02-29T00:00:00Z").unwrap().secs, 951_782_400);
        assert_eq!(
            p("2123-08-14T12:17:03.694052Z"),
            Ok(Instant {
                secs: 4_847_689_023,
                nanos: 694_052_000
            })
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "2023-01-01",
            "2023-01-01T00:00:00",
            "2023-01-01t00:00:00Z",
            "2023-01-01T00:00:00z",
            "2023-01-01 00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-00-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2023-04-31T00:00:00Z",
            "2023-01-01T24:00:00Z",
            "2023-01-01T00:60:00Z",
            "2016-12-31T23:59:60Z",
            "2023-01-01T00:00:00.Z",
            "2023-01-01T00:00:00+24:00",
            "2023-01-01T00:00:00+0100",
            "2023-01-01T00:00:00Z ",
            "+2023-01-01T00:00:00Z",
            "2023-1-01T00:00:00Z",
            "２０23-01-01T00:00:00Z",
        ] {
            assert!(p(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formats_like_go_rfc3339nano() {
        let f = |secs, nanos| format(Instant { secs, nanos }).unwrap();
        assert_eq!(f(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(f(0, 1), "1970-01-01T00:00:00.000000001Z");
        assert_eq!(f(0, 500_000_000), "1970-01-01T00:00:00.5Z");
        assert_eq!(f(-1, 999_999_999), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(f(4_847_689_023, 694_052_000), "2123-08-14T12:17:03.694052Z");
        assert_eq!(
            format(Instant {
                secs: 253_402_300_800,
                nanos: 0
            }),
            None
        ); // year 10000
        assert_eq!(f(-62_167_219_200, 0), "0000-01-01T00:00:00Z");
        assert_eq!(
            format(Instant {
                secs: -62_167_219_201,
                nanos: 0
            }),
            None
        );
    }

    #[test]
    fn system_time_round_trip() {
        for (secs, nanos) in [
            (0, 0),
            (1, 5),
            (-1, 0),
            (-1, 999_999_999),
            (-62_167_219_200, 1),
            (253_402_300_799, 999_999_999),
        ] {
            let i = Instant { secs, nanos };
            assert_eq!(from_system_time(to_system_time(i).unwrap()), Some(i));
        }
    }
}
