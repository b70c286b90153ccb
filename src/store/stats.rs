//! The counts behind the console's charts: when an app's credits expire, when they came in,
//! and when a campaign's deliveries reached their outcome.
//!
//! Each query groups rows into the buckets whose bounds the caller computed
//! (`domain::stats`): `width_bucket(t, bounds)` is the slot of `t` in the sorted array (0
//! before the first bound, `len` from the last on), so a query returns one row per slot
//! that has rows, never a row per credit. What each costs on a large pool is in
//! docs/api.md ("Charts").

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// How many rows fell into one slot.
pub struct SlotCount {
    pub slot: i32,
    pub count: i64,
}

/// Usable credits (formIds and prepay_ids with a use left, not refused by WeChat) expiring
/// after `from`, per slot of `bounds`.
///
/// Walks the app's users (`users (appid, openid)`) and, per user, the claim index
/// `formids_by_user_freshest` and the credits' rows (the index also holds spent credits
/// until the daily clean-up: spending one writes no index). Cost: the app's users plus
/// their stored credits.
pub async fn expiring(
    pool: &PgPool,
    appid: &str,
    from: DateTime<Utc>,
    bounds: &[DateTime<Utc>],
) -> sqlx::Result<Vec<SlotCount>> {
    sqlx::query_as!(
        SlotCount,
        r#"
        select width_bucket(f.expires_at, $3::timestamptz[]) as "slot!", count(*) as "count!"
        from users u join formids f on f.user_id = u.id
        where u.appid = $1 and f.uses_left > 0 and not f.invalid and f.expires_at > $2
        group by 1
        "#,
        appid,
        from,
        bounds
    )
    .fetch_all(pool)
    .await
}

/// The app's remaining subscription grants (they do not expire). Cost: the app's users and
/// their grant rows (primary key `(user_id, template_id)`).
pub async fn grants(pool: &PgPool, appid: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"
        select coalesce(sum(g.remaining), 0)::bigint as "grants!"
        from users u join subscription_grants g on g.user_id = u.id
        where u.appid = $1
        "#,
        appid
    )
    .fetch_one(pool)
    .await
}

/// Credits stored (received) since `from`, per slot of `bounds`: every row still in the
/// table, whatever became of it since (used, refused, still usable).
///
/// No index holds `received_at` (every formId insert would pay for one), so this reads the
/// app's credit rows through the app's users and the per-user unique index
/// `(user_id, form_id)`, and filters on `received_at`: the same walk as `GET .../stats`.
/// Cost: the app's users plus every credit row of the app still stored (usable ones, and
/// used or refused ones until the daily clean-up deletes them).
pub async fn ingested(
    pool: &PgPool,
    appid: &str,
    from: DateTime<Utc>,
    bounds: &[DateTime<Utc>],
) -> sqlx::Result<Vec<SlotCount>> {
    sqlx::query_as!(
        SlotCount,
        r#"
        select width_bucket(f.received_at, $3::timestamptz[]) as "slot!", count(*) as "count!"
        from users u join formids f on f.user_id = u.id
        where u.appid = $1 and f.received_at >= $2
        group by 1
        "#,
        appid,
        from,
        bounds
    )
    .fetch_all(pool)
    .await
}

/// When a campaign's runs started (the first) and finished (the last; `now` for a run still
/// going). `None` before its first run. Reads the campaign's few runs.
pub async fn run_span(
    pool: &PgPool,
    campaign_id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<(DateTime<Utc>, DateTime<Utc>)>> {
    let r = sqlx::query!(
        r#"
        select min(started_at) as first_start, max(coalesce(finished_at, $2)) as last_end
        from campaign_runs where campaign_id = $1
        "#,
        campaign_id,
        now
    )
    .fetch_one(pool)
    .await?;
    Ok(r.first_start.zip(r.last_end))
}

/// A campaign's deliveries that reached an outcome, per slot of `bounds` of the time they
/// reached it (`updated_at`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcomes {
    pub sent: i64,
    pub failed: i64,
    pub no_formid: i64,
    pub no_quota: i64,
    /// Held back by the app's frequency cap: the `capped` status of issue #15. Counted
    /// here by its stored name so that the timeline shows it once deliveries carry it.
    pub capped: i64,
}

impl std::ops::AddAssign for Outcomes {
    fn add_assign(&mut self, o: Self) {
        self.sent += o.sent;
        self.failed += o.failed;
        self.no_formid += o.no_formid;
        self.no_quota += o.no_quota;
        self.capped += o.capped;
    }
}

/// Through `deliveries_by_campaign (campaign_id, status, id)`, one range per outcome, and
/// the heap for `updated_at`. Cost: the campaign's deliveries that have an outcome (about
/// what `GET /v1/campaigns/{id}` costs for its totals, plus the heap reads).
pub async fn timeline(
    pool: &PgPool,
    campaign_id: Uuid,
    bounds: &[DateTime<Utc>],
) -> sqlx::Result<Vec<(i32, Outcomes)>> {
    let rows = sqlx::query!(
        r#"
        select width_bucket(updated_at, $2::timestamptz[]) as "slot!",
               count(*) filter (where status = 'sent') as "sent!",
               count(*) filter (where status = 'failed') as "failed!",
               count(*) filter (where status = 'no_formid') as "no_formid!",
               count(*) filter (where status = 'no_quota') as "no_quota!",
               count(*) filter (where status = 'capped') as "capped!"
        from deliveries
        where campaign_id = $1
          and status in ('sent', 'failed', 'no_formid', 'no_quota', 'capped')
        group by 1
        "#,
        campaign_id,
        bounds
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let outcomes = Outcomes {
                sent: r.sent,
                failed: r.failed,
                no_formid: r.no_formid,
                no_quota: r.no_quota,
                capped: r.capped,
            };
            (r.slot, outcomes)
        })
        .collect())
}

/// The errcodes of a campaign's failed deliveries, most frequent first, at most `limit`
/// (a delivery without one counts under `None`). Through `deliveries_by_campaign`: the
/// campaign's failed deliveries only.
pub async fn failed_errcodes(
    pool: &PgPool,
    campaign_id: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<(Option<String>, i64)>> {
    let rows = sqlx::query!(
        r#"
        select errcode, count(*) as "count!"
        from deliveries
        where campaign_id = $1 and status = 'failed'
        group by errcode
        order by count(*) desc, errcode
        limit $2
        "#,
        campaign_id,
        limit
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.errcode, r.count)).collect())
}
