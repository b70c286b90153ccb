//! Time buckets for the charts of the admin console (`GET /v1/apps/{appid}/stats/expiring`,
//! `.../stats/ingestion`, `GET /v1/campaigns/{id}/timeline`).
//!
//! Buckets follow the wall clock of a time zone: a day starts at local midnight, an hour at
//! the local full hour (which is not the UTC full hour in India or Nepal). The boundaries
//! are computed here, with chrono-tz, and handed to SQL as one sorted array that Postgres'
//! `width_bucket` searches: the database needs no time zone rules of its own, and a day
//! that daylight saving time makes 23 or 25 hours long is still one bucket.

use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

use super::FieldError;

/// The zone of the app charts when the caller names none: formpush's default zone (that of
/// campaigns, and of WeChat's daily quota).
pub const DEFAULT_TIMEZONE: &str = super::campaign::DEFAULT_TIMEZONE;

/// Calendar days of the expiry chart at most (and by default). A credit is valid 7 days,
/// so one received now expires on the 8th calendar day counting today: 8 days show them all.
pub const MAX_EXPIRY_DAYS: u32 = 8;
/// Hours of the ingestion chart at most (7 days: formIds older than that have expired and
/// are deleted by the daily clean-up, so the table cannot tell when they came).
pub const MAX_INGESTION_HOURS: u32 = 168;
/// Hours of the ingestion chart by default.
pub const DEFAULT_INGESTION_HOURS: u32 = 72;
/// Buckets of a campaign timeline at most: readable as bars on a phone.
pub const MAX_TIMELINE_BUCKETS: i64 = 60;

/// Bucket widths of a campaign timeline below a day, smallest first; each divides a day, so
/// buckets start at the same local times every day.
const SUB_DAY_WIDTHS: [i64; 12] = [
    10, 30, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
];

/// A time zone named by a query parameter.
pub fn parse_timezone(name: &str) -> Result<Tz, FieldError> {
    name.parse::<Tz>().map_err(|_| {
        FieldError::new(
            "invalid_timezone",
            format!("timezone {name:?} is not an IANA time zone name such as Asia/Shanghai"),
        )
    })
}

/// The instant a local wall-clock time stands for: the earlier one when the clock is set
/// back (the time happens twice); in a gap when the clock is set forward (the time never
/// happens), the local time read with the offset in force before the gap, which is an
/// instant just after it.
pub fn instant(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    if let Some(t) = tz.from_local_datetime(&local).earliest() {
        return t.with_timezone(&Utc);
    }
    // Gaps are at most a few hours long: a day before, the old offset is in force.
    let before = tz
        .from_local_datetime(&(local - Duration::days(1)))
        .earliest()
        .map(|t| t.naive_utc() - t.naive_local())
        .unwrap_or_default();
    (local + before).and_utc()
}

/// The local date of an instant.
pub fn local_date(tz: Tz, at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&tz).date_naive()
}

/// The start of a local day.
pub fn day_start(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    instant(tz, date.and_time(NaiveTime::MIN))
}

/// Bounds of the expiry chart, `days + 1` instants: `now`, then the start of each following
/// local day. Bucket 0 is the rest of today, bucket `i` the local day `i` days later.
pub fn expiry_bounds(tz: Tz, now: DateTime<Utc>, days: u32) -> Vec<DateTime<Utc>> {
    let today = local_date(tz, now);
    let mut bounds = vec![now];
    bounds.extend((1..=i64::from(days)).map(|i| day_start(tz, today + Duration::days(i))));
    bounds
}

/// Bounds of the ingestion chart, `hours + 1` instants an hour apart: the start of the local
/// hour `hours - 1` hours before the one holding `now`, through the end of now's hour.
pub fn hour_bounds(tz: Tz, now: DateTime<Utc>, hours: u32) -> Vec<DateTime<Utc>> {
    let this_hour = floor_local(tz, now, 3600);
    (0..=i64::from(hours))
        .map(|i| this_hour + Duration::hours(i + 1 - i64::from(hours)))
        .collect()
}

/// The start of the local bucket of `width` seconds (a divisor of a day) holding `at`.
fn floor_local(tz: Tz, at: DateTime<Utc>, width: i64) -> DateTime<Utc> {
    let local = at.with_timezone(&tz).naive_local();
    let secs = i64::from(local.num_seconds_from_midnight());
    let floored = local.date().and_time(NaiveTime::MIN) + Duration::seconds(secs - secs % width);
    let start = instant(tz, floored);
    // In a clock change the local floor may read as an instant after `at`.
    if start > at {
        start - Duration::seconds(width)
    } else {
        start
    }
}

/// A campaign timeline's buckets: their nominal width in seconds and their bounds (one more
/// than the buckets), covering `start..=end` in at most `MAX_TIMELINE_BUCKETS` (+1 when
/// the first starts before a local boundary) buckets of the smallest width that fits.
/// Widths below a day are 10 s to 12 h, aligned to the local clock; then local days, weeks
/// (from Monday), and runs of whole weeks.
pub fn timeline_bounds(
    tz: Tz,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> (i64, Vec<DateTime<Utc>>) {
    let end = end.max(start);
    for width in SUB_DAY_WIDTHS {
        let first = floor_local(tz, start, width);
        let buckets = (end - first).num_seconds() / width + 1;
        if buckets <= MAX_TIMELINE_BUCKETS {
            let bounds = (0..=buckets)
                .map(|i| first + Duration::seconds(i * width))
                .collect();
            return (width, bounds);
        }
    }
    let (first_day, last_day) = (local_date(tz, start), local_date(tz, end));
    let days = (last_day - first_day).num_days() + 1;
    if days <= MAX_TIMELINE_BUCKETS {
        return (86_400, day_bounds(tz, first_day, 1, days));
    }
    // Weeks from the Monday on or before the first day.
    let monday = first_day - Duration::days(i64::from(first_day.weekday().num_days_from_monday()));
    let weeks = (last_day - monday).num_days() / 7 + 1;
    let per_bucket = (weeks + MAX_TIMELINE_BUCKETS - 1) / MAX_TIMELINE_BUCKETS;
    let buckets = (weeks + per_bucket - 1) / per_bucket;
    (
        7 * 86_400 * per_bucket,
        day_bounds(tz, monday, 7 * per_bucket, buckets),
    )
}

/// `buckets + 1` local day starts, `step` days apart, from `first`.
fn day_bounds(tz: Tz, first: NaiveDate, step: i64, buckets: i64) -> Vec<DateTime<Utc>> {
    (0..=buckets)
        .map(|i| day_start(tz, first + Duration::days(i * step)))
        .collect()
}

/// Counts per bucket from `width_bucket(t, bounds)` slots: slot `i` (1-based) is
/// `bounds[i-1] <= t < bounds[i]`, 0 before the first bound and `bounds.len()` from the last
/// one on. Returns one count per bucket and the count from the last bound on; rows before
/// the first bound are added to the first bucket when `clamp` (else dropped), and rows after
/// the last to the last bucket when `clamp` (else returned apart).
pub fn spread<T: Copy + Default + std::ops::AddAssign>(
    buckets: usize,
    slots: impl IntoIterator<Item = (i32, T)>,
    clamp: bool,
) -> (Vec<T>, T) {
    let mut counts = vec![T::default(); buckets];
    let mut after = T::default();
    for (slot, n) in slots {
        let slot = usize::try_from(slot).unwrap_or(0);
        if buckets == 0 {
            after += n;
        } else if slot == 0 {
            if clamp {
                counts[0] += n;
            }
        } else if slot > buckets {
            if clamp {
                counts[buckets - 1] += n;
            } else {
                after += n;
            }
        } else {
            counts[slot - 1] += n;
        }
    }
    (counts, after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America::New_York, Asia::Kolkata, Asia::Shanghai, Europe::Berlin};

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_expiry_chart_starts_now_and_then_follows_local_midnights() {
        // 10:00 in Shanghai on 2026-12-01.
        let now = utc("2026-12-01T02:00:00Z");
        let b = expiry_bounds(Shanghai, now, 8);
        assert_eq!(b.len(), 9);
        assert_eq!(b[0], now);
        assert_eq!(b[1], utc("2026-12-01T16:00:00Z")); // 2026-12-02 00:00 +08:00
        assert_eq!(b[8], utc("2026-12-08T16:00:00Z"));
        // A credit received now (valid 7 days) expires within the 8 days.
        assert!(now + Duration::days(7) < b[8]);
    }

    #[test]
    fn a_day_cut_short_by_daylight_saving_time_is_still_one_day() {
        // Berlin springs forward on 2027-03-28 at 02:00: that day has 23 hours.
        let now = utc("2027-03-27T12:00:00Z");
        let b = expiry_bounds(Berlin, now, 3);
        assert_eq!(b[1], utc("2027-03-27T23:00:00Z")); // 28th 00:00 +01:00
        assert_eq!(b[2], utc("2027-03-28T22:00:00Z")); // 29th 00:00 +02:00
        assert_eq!((b[2] - b[1]).num_hours(), 23);
    }

    #[test]
    fn hours_follow_the_local_clock_where_the_offset_is_not_whole_hours() {
        // 15:47 UTC is 21:17 in India (+05:30): its hour started at 15:30 UTC.
        let now = utc("2026-12-01T15:47:00Z");
        let b = hour_bounds(Kolkata, now, 3);
        assert_eq!(
            b,
            vec![
                utc("2026-12-01T13:30:00Z"),
                utc("2026-12-01T14:30:00Z"),
                utc("2026-12-01T15:30:00Z"),
                utc("2026-12-01T16:30:00Z")
            ]
        );
        let b = hour_bounds(Shanghai, now, 72);
        assert_eq!(b.len(), 73);
        assert_eq!(b[72], utc("2026-12-01T16:00:00Z"));
        assert_eq!(b[0], utc("2026-11-28T16:00:00Z"));
    }

    #[test]
    fn local_times_in_a_gap_or_an_overlap_map_to_one_instant() {
        // New York springs forward 2027-03-14 02:00 -> 03:00 (EST -05:00 -> EDT -04:00).
        let gap = NaiveDate::from_ymd_opt(2027, 3, 14)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap();
        assert_eq!(instant(New_York, gap), utc("2027-03-14T07:30:00Z"));
        // and falls back 2027-11-07 02:00 -> 01:00: 01:30 happens twice, the first is taken.
        let twice = NaiveDate::from_ymd_opt(2027, 11, 7)
            .unwrap()
            .and_hms_opt(1, 30, 0)
            .unwrap();
        assert_eq!(instant(New_York, twice), utc("2027-11-07T05:30:00Z"));
    }

    #[test]
    fn a_timeline_takes_the_smallest_width_that_fits() {
        let start = utc("2026-12-01T01:00:07Z");
        // Two seconds of sending: one bucket of 10 s.
        let (w, b) = timeline_bounds(Shanghai, start, start + Duration::seconds(2));
        assert_eq!(w, 10);
        assert_eq!(
            b,
            vec![utc("2026-12-01T01:00:00Z"), utc("2026-12-01T01:00:10Z")]
        );
        // Eighty minutes: 5-minute buckets (16 or 17 of them).
        let (w, b) = timeline_bounds(Shanghai, start, start + Duration::minutes(80));
        assert_eq!(w, 300);
        assert_eq!(b.len(), 18);
        assert!(b[0] <= start && *b.last().unwrap() > start + Duration::minutes(80));
        // Three weeks of daily runs: 12-hour buckets; six weeks: local days.
        let (w, _) = timeline_bounds(Shanghai, start, start + Duration::days(21));
        assert_eq!(w, 43_200);
        let (w, b) = timeline_bounds(Shanghai, start, start + Duration::days(45));
        assert_eq!(w, 86_400);
        assert_eq!(b[0], utc("2026-11-30T16:00:00Z"));
        assert_eq!(b.len(), 47);
        // Two years: runs of whole weeks from a Monday, at most 60 buckets.
        let (w, b) = timeline_bounds(Shanghai, start, start + Duration::days(730));
        assert_eq!(w % (7 * 86_400), 0);
        assert!(b.len() as i64 - 1 <= MAX_TIMELINE_BUCKETS);
        assert_eq!(b[0], utc("2026-11-29T16:00:00Z")); // Monday 2026-11-30 00:00 +08:00
        assert!(*b.last().unwrap() > start + Duration::days(730));
        for pair in b.windows(2) {
            assert!(pair[0] < pair[1]);
        }
    }

    #[test]
    fn every_timeline_width_keeps_within_the_bucket_limit() {
        let start = utc("2026-12-01T01:00:07Z");
        for secs in [
            0,
            9,
            599,
            601,
            3599,
            86_399,
            86_401,
            3 * 86_400,
            59 * 86_400,
            61 * 86_400,
        ] {
            let (_, b) = timeline_bounds(Berlin, start, start + Duration::seconds(secs));
            assert!(
                b.len() >= 2 && b.len() as i64 - 1 <= MAX_TIMELINE_BUCKETS + 1,
                "{secs}: {}",
                b.len()
            );
            assert!(b[0] <= start);
            assert!(*b.last().unwrap() > start + Duration::seconds(secs));
        }
    }

    #[test]
    fn slots_are_spread_over_buckets() {
        let slots = vec![(0, 5), (1, 1), (2, 2), (3, 7), (4, 9)];
        assert_eq!(spread(3, slots.clone(), false), (vec![1, 2, 7], 9));
        assert_eq!(spread(3, slots, true), (vec![6, 2, 16], 0));
        assert_eq!(spread::<i64>(0, vec![(1, 4)], true), (vec![], 4));
    }

    #[test]
    fn time_zones_are_iana_names() {
        assert_eq!(parse_timezone("Asia/Shanghai").unwrap(), Shanghai);
        assert_eq!(parse_timezone("UTC").unwrap(), chrono_tz::UTC);
        let e = parse_timezone("Mars/Olympus").unwrap_err();
        assert_eq!(e.code, "invalid_timezone");
        assert!(parse_timezone("asia/shanghai").is_err());
    }
}
