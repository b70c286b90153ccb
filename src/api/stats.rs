//! The app charts of the admin console: when the app's credits expire, and how many came in
//! each hour. Counted per local day or hour of a time zone (`domain::stats`).

use actix_web::{web, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

use super::auth::{AppAccess, NeedRead};
use super::state::AppState;
use crate::domain::stats::{self as buckets, DEFAULT_TIMEZONE};
use crate::error::{ApiError, ErrorBody};
use crate::store;

/// An IANA time zone name, as in the tz database (`Asia/Shanghai`, `Europe/Berlin`, `UTC`).
pub struct TimeZoneName;

impl utoipa::PartialSchema for TimeZoneName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "an IANA time zone name, as in the tz database (case as written there)",
            ))
            .enum_values(Some(chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())))
            .into()
    }
}

impl utoipa::ToSchema for TimeZoneName {}

/// The zone a chart counts in: the one asked for, or `default`.
pub fn timezone(asked: Option<&str>, default: &str) -> Result<Tz, ApiError> {
    buckets::parse_timezone(asked.unwrap_or(default))
        .map_err(|e| ApiError::invalid(e.code, e.message))
}

async fn known_app(state: &AppState, appid: &str) -> Result<(), ApiError> {
    if store::apps::exists(&state.pool, appid).await? {
        Ok(())
    } else {
        Err(ApiError::unknown_app(appid))
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExpiringQuery {
    /// calendar days, today first: 1 to 8, default 8 (a credit received now expires on the
    /// 8th day counting today)
    #[param(minimum = 1, maximum = 8)]
    days: Option<i64>,
    /// whose calendar days: an IANA time zone name, default Asia/Shanghai
    #[param(value_type = Option<TimeZoneName>)]
    timezone: Option<String>,
}

/// The app's usable credits by the local day they expire on.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ExpiringCredits {
    appid: String,
    /// the time zone of the days
    #[schema(example = "Asia/Shanghai")]
    timezone: String,
    /// when this was counted
    counted_at: DateTime<Utc>,
    /// one entry per day, today first
    days: Vec<ExpiringDay>,
    /// usable credits expiring after the last day shown (0 with 8 days)
    later: i64,
    /// remaining subscription grants of the app's users: grants do not expire
    grants: i64,
}

/// One local day of the expiry chart.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ExpiringDay {
    /// the local date
    date: NaiveDate,
    /// from: the day's start, or the time of counting for today
    start: DateTime<Utc>,
    /// to (exclusive): the next day's start
    end: DateTime<Utc>,
    /// formIds and prepay_ids with a use left, not refused by WeChat, that expire in
    /// `start..end` (a prepay_id counts once, as in `GET .../stats`)
    formids: i64,
}

/// Usable credits by the day they expire: the operator's reason to send before they do.
#[utoipa::path(get, path = "/v1/apps/{appid}/stats/expiring", operation_id = "getExpiringCredits", tag = "admin",
    security(("admin" = []), ("api_key" = ["read"])),
    params(("appid" = String, Path, description = "the app"), ExpiringQuery),
    responses((status = 200, body = ExpiringCredits), (status = 400, body = ErrorBody),
              (status = 401, description = "missing or wrong credentials", body = ErrorBody),
              (status = 403, description = "an API key of another app or without the read scope", body = ErrorBody),
              (status = 404, body = ErrorBody),
              (status = 422, description = "invalid_days, invalid_timezone", body = ErrorBody)))]
pub async fn expiring(
    _: AppAccess<NeedRead>,
    state: web::Data<AppState>,
    appid: web::Path<String>,
    query: web::Query<ExpiringQuery>,
) -> Result<HttpResponse, ApiError> {
    known_app(&state, &appid).await?;
    let max = buckets::MAX_EXPIRY_DAYS;
    let days = query.days.unwrap_or(i64::from(max));
    let days = u32::try_from(days)
        .ok()
        .filter(|d| (1..=max).contains(d))
        .ok_or_else(|| ApiError::invalid("invalid_days", format!("days must be 1 to {max}")))?;
    let tz = timezone(query.timezone.as_deref(), DEFAULT_TIMEZONE)?;
    let now = Utc::now();
    let bounds = buckets::expiry_bounds(tz, now, days);
    let slots = store::stats::expiring(&state.pool, &appid, now, &bounds).await?;
    let grants = store::stats::grants(&state.pool, &appid).await?;
    let (counts, later) = buckets::spread(
        days as usize,
        slots.into_iter().map(|s| (s.slot, s.count)),
        false,
    );
    let days = bounds
        .windows(2)
        .zip(counts)
        .map(|(pair, formids)| ExpiringDay {
            date: buckets::local_date(tz, pair[0]),
            start: pair[0],
            end: pair[1],
            formids,
        })
        .collect();
    Ok(HttpResponse::Ok().json(ExpiringCredits {
        appid: appid.into_inner(),
        timezone: tz.name().to_string(),
        counted_at: now,
        days,
        later,
        grants,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IngestionQuery {
    /// hours, the current one last: 1 to 168, default 72
    #[param(minimum = 1, maximum = 168)]
    hours: Option<i64>,
    /// whose clock the hours follow: an IANA time zone name, default Asia/Shanghai
    #[param(value_type = Option<TimeZoneName>)]
    timezone: Option<String>,
}

/// Credits stored per local hour.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Ingestion {
    appid: String,
    /// the time zone of the hours
    #[schema(example = "Asia/Shanghai")]
    timezone: String,
    /// when this was counted
    counted_at: DateTime<Utc>,
    /// one entry per hour, oldest first; the last is the current hour
    hours: Vec<IngestionHour>,
    /// the hours summed
    total: i64,
}

/// One hour of the ingestion chart.
#[derive(Serialize, utoipa::ToSchema)]
pub struct IngestionHour {
    start: DateTime<Utc>,
    /// exclusive
    end: DateTime<Utc>,
    /// formIds and prepay_ids received in `start..end` and still stored (whether usable,
    /// used or refused since)
    formids: i64,
}

/// Credits received per hour: how the app's collection is going.
#[utoipa::path(get, path = "/v1/apps/{appid}/stats/ingestion", operation_id = "getIngestion", tag = "admin",
    security(("admin" = []), ("api_key" = ["read"])),
    params(("appid" = String, Path, description = "the app"), IngestionQuery),
    responses((status = 200, body = Ingestion), (status = 400, body = ErrorBody),
              (status = 401, description = "missing or wrong credentials", body = ErrorBody),
              (status = 403, description = "an API key of another app or without the read scope", body = ErrorBody),
              (status = 404, body = ErrorBody),
              (status = 422, description = "invalid_hours, invalid_timezone", body = ErrorBody)))]
pub async fn ingestion(
    _: AppAccess<NeedRead>,
    state: web::Data<AppState>,
    appid: web::Path<String>,
    query: web::Query<IngestionQuery>,
) -> Result<HttpResponse, ApiError> {
    known_app(&state, &appid).await?;
    let max = buckets::MAX_INGESTION_HOURS;
    let hours = query
        .hours
        .unwrap_or(i64::from(buckets::DEFAULT_INGESTION_HOURS));
    let hours = u32::try_from(hours)
        .ok()
        .filter(|h| (1..=max).contains(h))
        .ok_or_else(|| ApiError::invalid("invalid_hours", format!("hours must be 1 to {max}")))?;
    let tz = timezone(query.timezone.as_deref(), DEFAULT_TIMEZONE)?;
    let now = Utc::now();
    let bounds = buckets::hour_bounds(tz, now, hours);
    let slots = store::stats::ingested(&state.pool, &appid, bounds[0], &bounds).await?;
    // A clock of another instance a little ahead: its rows count in the current hour.
    let (counts, _) = buckets::spread(
        hours as usize,
        slots.into_iter().map(|s| (s.slot, s.count)),
        true,
    );
    let hours: Vec<IngestionHour> = bounds
        .windows(2)
        .zip(counts)
        .map(|(pair, formids)| IngestionHour {
            start: pair[0],
            end: pair[1],
            formids,
        })
        .collect();
    Ok(HttpResponse::Ok().json(Ingestion {
        appid: appid.into_inner(),
        timezone: tz.name().to_string(),
        counted_at: now,
        total: hours.iter().map(|h| h.formids).sum(),
        hours,
    }))
}
