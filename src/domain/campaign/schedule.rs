//! When a campaign fires: now, at a time, or on a cron schedule in a time zone.

use chrono::{DateTime, FixedOffset, Timelike, Utc};
use chrono_tz::Tz;
use croner::{
    parser::{CronParser, Seconds, Year},
    Cron,
};
use serde::{Deserialize, Serialize};

use crate::domain::FieldError;

pub const DEFAULT_TIMEZONE: &str = "Asia/Shanghai";

/// The schedule as the API shows it. `timezone` defaults to Asia/Shanghai; `cron` has 6
/// fields, seconds first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleSpec {
    #[schema(title = "ScheduleNow")]
    Now {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timezone: Option<String>,
    },
    #[schema(title = "ScheduleAt")]
    At {
        at: DateTime<FixedOffset>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timezone: Option<String>,
    },
    #[schema(title = "ScheduleCron")]
    Cron {
        /// six fields, seconds first: `0 30 9 * * MON-FRI`
        #[schema(pattern = "^\\s*\\S+(\\s+\\S+){5}\\s*$", example = "0 30 9 * * *")]
        cron: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timezone: Option<String>,
    },
}

/// A parsed schedule: knows when it fires.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub spec: ScheduleSpec,
    pub timezone: Tz,
    cron: Option<Cron>,
}

impl Schedule {
    pub fn parse(spec: ScheduleSpec) -> Result<Self, FieldError> {
        let tz_name = match &spec {
            ScheduleSpec::Now { timezone }
            | ScheduleSpec::At { timezone, .. }
            | ScheduleSpec::Cron { timezone, .. } => timezone.as_deref(),
        };
        let timezone = parse_timezone(tz_name.unwrap_or(DEFAULT_TIMEZONE))?;
        let cron = match &spec {
            ScheduleSpec::Cron { cron, .. } => Some(parse_cron(cron)?),
            _ => None,
        };
        Ok(Self {
            spec,
            timezone,
            cron,
        })
    }

    pub fn is_recurring(&self) -> bool {
        self.cron.is_some()
    }

    /// When the first run is due, seen at `now`. A past `at` is due at once.
    pub fn first_run(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.spec {
            ScheduleSpec::Now { .. } => Some(now),
            ScheduleSpec::At { at, .. } => Some(at.with_timezone(&Utc)),
            ScheduleSpec::Cron { .. } => self.next_after(now),
        }
    }

    /// The next firing strictly after `after` (cron only), on a whole second.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let cron = self.cron.as_ref()?;
        // croner carries the fraction of a second it starts from into the firing it finds.
        let after = after.with_nanosecond(0).unwrap_or(after);
        cron.find_next_occurrence(&after.with_timezone(&self.timezone), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

pub fn parse_timezone(name: &str) -> Result<Tz, FieldError> {
    name.parse::<Tz>().map_err(|_| {
        FieldError::new(
            "invalid_timezone",
            format!("schedule.timezone {name:?} is not an IANA time zone"),
        )
    })
}

/// Six fields, seconds first (`0 30 9 * * MON-FRI`).
pub fn parse_cron(pattern: &str) -> Result<Cron, FieldError> {
    if pattern.split_whitespace().count() != 6 {
        return Err(FieldError::new(
            "invalid_cron",
            format!("schedule.cron {pattern:?} must have 6 fields, seconds first"),
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Disallowed)
        .build()
        .parse(pattern)
        .map_err(|e| {
            FieldError::new(
                "invalid_cron",
                format!("schedule.cron {pattern:?} is not valid: {e}"),
            )
        })
}
