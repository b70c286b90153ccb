//! `GET /v1/campaigns/{id}/timeline`: when the campaign's deliveries reached their outcome,
//! in buckets of the local clock, and how its failures break down by errcode.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{load, ErrCode};
use crate::api::auth::Caller;
use crate::api::state::AppState;
use crate::api::stats::{timezone, TimeZoneName};
use crate::domain::stats as buckets;
use crate::error::{ApiError, ErrorBody};
use crate::store::stats::{self as store, Outcomes};

/// Errcodes listed at most; the rest of the failures are summed in `failed_other`.
pub const MAX_ERRCODES: i64 = 10;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TimelineQuery {
    /// whose clock the buckets follow: an IANA time zone name, default the campaign's
    #[param(value_type = Option<TimeZoneName>)]
    timezone: Option<String>,
}

/// A campaign's outcomes over time.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CampaignTimeline {
    campaign_id: Uuid,
    /// the time zone of the buckets
    #[schema(example = "Asia/Shanghai")]
    timezone: String,
    /// when this was counted
    counted_at: DateTime<Utc>,
    /// the buckets' width in seconds: 10 s to 12 h, a day (local days may be 23 or 25 hours
    /// long), or whole weeks; null before the first run
    #[schema(minimum = 10)]
    bucket_secs: Option<i64>,
    /// from the first run's start to the last run's end (now while one runs), oldest first;
    /// at most 61
    buckets: Vec<TimelineBucket>,
    /// the buckets summed: every delivery with an outcome
    outcomes: OutcomeCounts,
    /// failed deliveries per errcode, most frequent first, at most 10
    failed_by_errcode: Vec<ErrcodeCount>,
    /// failed deliveries whose errcode is not listed above
    failed_other: i64,
}

/// Deliveries that reached each outcome.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OutcomeCounts {
    sent: i64,
    failed: i64,
    /// template campaigns: the user held no usable formId
    no_formid: i64,
    /// subscribe campaigns: the user held no grant for the template
    no_quota: i64,
    /// held back by the app's frequency cap (a delivery status of the frequency-cap
    /// feature: 0 until it exists)
    capped: i64,
}

impl From<Outcomes> for OutcomeCounts {
    fn from(o: Outcomes) -> Self {
        Self {
            sent: o.sent,
            failed: o.failed,
            no_formid: o.no_formid,
            no_quota: o.no_quota,
            capped: o.capped,
        }
    }
}

/// One bucket: deliveries whose outcome came in `start..end`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TimelineBucket {
    start: DateTime<Utc>,
    /// exclusive
    end: DateTime<Utc>,
    sent: i64,
    failed: i64,
    no_formid: i64,
    no_quota: i64,
    capped: i64,
}

/// Failed deliveries with one errcode.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrcodeCount {
    /// as in the deliveries: WeChat's number, or formpush's word where WeChat gave none
    errcode: Option<ErrCode>,
    count: i64,
}

/// Sends over time and the outcome breakdown of a campaign.
#[utoipa::path(get, path = "/v1/campaigns/{id}/timeline", operation_id = "getCampaignTimeline", tag = "campaigns",
    security(("admin" = []), ("api_key" = ["read"])),
    params(("id" = Uuid, Path, description = "the campaign's id"), TimelineQuery),
    responses((status = 200, body = CampaignTimeline), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody),
              (status = 403, description = "an API key of another app or without read", body = ErrorBody),
              (status = 404, body = ErrorBody),
              (status = 422, description = "invalid_timezone", body = ErrorBody)))]
pub async fn timeline(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<TimelineQuery>,
) -> Result<HttpResponse, ApiError> {
    let row = load(&state, &caller, &id).await?;
    let tz = timezone(query.timezone.as_deref(), &row.timezone)?;
    let now = Utc::now();
    let (bucket_secs, bounds) = match store::run_span(&state.pool, row.id, now).await? {
        Some((start, end)) => {
            let (width, bounds) = buckets::timeline_bounds(tz, start, end);
            (Some(width), bounds)
        }
        None => (None, Vec::new()),
    };
    let slots = if bounds.is_empty() {
        Vec::new()
    } else {
        store::timeline(&state.pool, row.id, &bounds).await?
    };
    // A delivery recorded a moment outside its runs (a result WeChat pushed later) counts
    // in the nearest bucket.
    let (counts, _) = buckets::spread(bounds.len().saturating_sub(1), slots, true);
    let mut total = Outcomes::default();
    let buckets: Vec<TimelineBucket> = bounds
        .windows(2)
        .zip(counts)
        .map(|(pair, o)| {
            total += o;
            TimelineBucket {
                start: pair[0],
                end: pair[1],
                sent: o.sent,
                failed: o.failed,
                no_formid: o.no_formid,
                no_quota: o.no_quota,
                capped: o.capped,
            }
        })
        .collect();
    let errcodes = if total.failed > 0 {
        store::failed_errcodes(&state.pool, row.id, MAX_ERRCODES).await?
    } else {
        Vec::new()
    };
    let listed: i64 = errcodes.iter().map(|(_, n)| n).sum();
    Ok(HttpResponse::Ok().json(CampaignTimeline {
        campaign_id: row.id,
        timezone: tz.name().to_string(),
        counted_at: now,
        bucket_secs,
        buckets,
        failed_other: (total.failed - listed).max(0),
        outcomes: total.into(),
        failed_by_errcode: errcodes
            .into_iter()
            .map(|(code, count)| ErrcodeCount {
                errcode: code.as_deref().map(ErrCode::from_record),
                count,
            })
            .collect(),
    }))
}
