//! An app's guards on campaign sends: a frequency cap per user, and quiet hours in which
//! no campaign message leaves. What they mean is documented in `docs/delivery.md`.

use chrono::{DateTime, Days, LocalResult, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::domain::FieldError;

/// The largest `max` of a cap (a user's window remembers this many sends at least).
pub const MAX_CAP: i32 = 100;
/// The longest cap window: 30 days.
pub const MAX_CAP_SECS: i32 = 2_592_000;

/// At most `max` messages to a user within any `per_secs` seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrequencyCap {
    pub max: i32,
    pub per_secs: i32,
}

impl FrequencyCap {
    pub fn parse(max: i64, per_secs: i64) -> Result<Self, FieldError> {
        if !(1..=i64::from(MAX_CAP)).contains(&max) {
            return Err(FieldError::new(
                "invalid_frequency_cap",
                format!("frequency_cap.max must be 1 to {MAX_CAP}"),
            ));
        }
        if !(1..=i64::from(MAX_CAP_SECS)).contains(&per_secs) {
            return Err(FieldError::new(
                "invalid_frequency_cap",
                format!("frequency_cap.per_secs must be 1 to {MAX_CAP_SECS} (30 days)"),
            ));
        }
        Ok(Self {
            max: max as i32,
            per_secs: per_secs as i32,
        })
    }
}

/// Local times, in `timezone`, between which no campaign message is sent. The window
/// includes `start` and excludes `end`; it crosses midnight when `end` is before `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
    pub timezone: Tz,
}

/// A DST gap is at most this long anywhere (Lord Howe's is 30 minutes, most are 1 hour).
const LONGEST_GAP_MINUTES: u32 = 180;

impl QuietHours {
    /// `start` and `end` as `HH:MM` (00:00 to 23:59), `timezone` an IANA name.
    pub fn parse(start: &str, end: &str, timezone: &str) -> Result<Self, FieldError> {
        let start = parse_clock("start", start)?;
        let end = parse_clock("end", end)?;
        if start == end {
            return Err(FieldError::new(
                "invalid_quiet_hours",
                "quiet_hours.start and quiet_hours.end must differ",
            ));
        }
        let timezone = timezone.parse::<Tz>().map_err(|_| {
            FieldError::new(
                "invalid_quiet_hours",
                format!("quiet_hours.timezone {timezone:?} is not an IANA time zone"),
            )
        })?;
        Ok(Self {
            start,
            end,
            timezone,
        })
    }

    /// `None` when `now` is outside the window; inside it, when the window ends (the next
    /// `end` on the local clock, or the first instant after it that exists on a day whose
    /// clock skips it).
    pub fn holds_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.timezone).naive_local();
        let time = local.time();
        let inside = if self.start < self.end {
            self.start <= time && time < self.end
        } else {
            self.start <= time || time < self.end
        };
        if !inside {
            return None;
        }
        let day = if time < self.end {
            local.date()
        } else {
            local.date() + Days::new(1)
        };
        Some(self.first_instant_from(day.and_time(self.end)))
    }

    fn first_instant_from(&self, wall: NaiveDateTime) -> DateTime<Utc> {
        for minutes in 0..=LONGEST_GAP_MINUTES {
            let candidate = wall + chrono::Duration::minutes(i64::from(minutes));
            match self.timezone.from_local_datetime(&candidate) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                    return t.with_timezone(&Utc)
                }
                LocalResult::None => {}
            }
        }
        // No zone skips three hours; read the wall time as UTC rather than never end.
        Utc.from_utc_datetime(&wall)
    }

    /// `start` and `end` as the API shows them.
    pub fn start_text(&self) -> String {
        self.start.format("%H:%M").to_string()
    }

    pub fn end_text(&self) -> String {
        self.end.format("%H:%M").to_string()
    }
}

/// `HH:MM`, two digits each.
fn parse_clock(field: &str, text: &str) -> Result<NaiveTime, FieldError> {
    let bad = || {
        FieldError::new(
            "invalid_quiet_hours",
            format!("quiet_hours.{field} {text:?} must be HH:MM, 00:00 to 23:59"),
        )
    };
    let bytes = text.as_bytes();
    if bytes.len() != 5 || bytes[2] != b':' {
        return Err(bad());
    }
    let digits = |s: &str| -> Option<u32> {
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    let (Some(h), Some(m)) = (digits(&text[..2]), digits(&text[3..])) else {
        return Err(bad());
    };
    NaiveTime::from_hms_opt(h, m, 0).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shanghai(start: &str, end: &str) -> QuietHours {
        QuietHours::parse(start, end, "Asia/Shanghai").unwrap()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn an_overnight_window_holds_from_start_to_the_next_end() {
        let q = shanghai("22:00", "08:00");
        // 21:59 in Shanghai (UTC+8) is outside, 22:00 inside until 08:00 the next day.
        assert_eq!(q.holds_until(utc(2026, 12, 1, 13, 59)), None);
        assert_eq!(
            q.holds_until(utc(2026, 12, 1, 14, 0)),
            Some(utc(2026, 12, 2, 0, 0))
        );
        // 03:00 after midnight: the same morning's 08:00.
        assert_eq!(
            q.holds_until(utc(2026, 12, 1, 19, 0)),
            Some(utc(2026, 12, 2, 0, 0))
        );
        // The end itself is outside.
        assert_eq!(q.holds_until(utc(2026, 12, 2, 0, 0)), None);
    }

    #[test]
    fn a_daytime_window_holds_within_the_day() {
        let q = shanghai("12:00", "14:00");
        assert_eq!(q.holds_until(utc(2026, 12, 1, 3, 59)), None);
        assert_eq!(
            q.holds_until(utc(2026, 12, 1, 4, 30)),
            Some(utc(2026, 12, 1, 6, 0))
        );
        assert_eq!(q.holds_until(utc(2026, 12, 1, 6, 0)), None);
        assert_eq!(q.holds_until(utc(2026, 12, 1, 15, 0)), None);
    }

    #[test]
    fn an_end_the_clock_skips_ends_at_the_first_instant_after_it() {
        // New York springs forward at 02:00 on 2026-03-08: 02:30 does not exist that day.
        let q = QuietHours::parse("22:00", "02:30", "America/New_York").unwrap();
        let night = Utc.with_ymd_and_hms(2026, 3, 8, 5, 0, 0).unwrap(); // 00:00 EST
                                                                        // 03:00 EDT = 07:00 UTC is the first instant at or after 02:30 on the wall.
        assert_eq!(
            q.holds_until(night),
            Some(Utc.with_ymd_and_hms(2026, 3, 8, 7, 0, 0).unwrap())
        );
    }

    #[test]
    fn times_and_zones_are_checked() {
        for (start, end, tz) in [
            ("24:00", "08:00", "Asia/Shanghai"),
            ("7:00", "08:00", "Asia/Shanghai"),
            ("07:60", "08:00", "Asia/Shanghai"),
            ("+7:00", "08:00", "Asia/Shanghai"),
            ("08:00", "08:00", "Asia/Shanghai"),
            ("22:00", "08:00", "Mars/Base"),
        ] {
            let err = QuietHours::parse(start, end, tz).unwrap_err();
            assert_eq!(err.code, "invalid_quiet_hours", "{start} {end} {tz}");
        }
        let q = shanghai("23:59", "00:00");
        assert_eq!(
            (q.start_text(), q.end_text()),
            ("23:59".into(), "00:00".into())
        );
    }

    #[test]
    fn a_cap_is_bounded() {
        assert!(FrequencyCap::parse(1, 86_400).is_ok());
        assert!(FrequencyCap::parse(0, 86_400).is_err());
        assert!(FrequencyCap::parse(101, 86_400).is_err());
        assert!(FrequencyCap::parse(2, 0).is_err());
        assert!(FrequencyCap::parse(2, 2_592_001).is_err());
    }
}
