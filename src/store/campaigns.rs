//! Campaigns: creation with their audience, lookups, totals, and the state transitions
//! admins and the sender make. Runs are in `runs`, the per-app sender lease in `leases`.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::campaign::{
    Audience, AudienceType, CampaignKind, CampaignSpec, CampaignStatus, DataPolicy, FormidPick,
    PauseReason, Schedule, ScheduleSpec, Totals,
};

use super::users;
use crate::domain::webhook::EventType;

#[derive(Debug, Clone)]
pub struct CampaignRow {
    pub id: Uuid,
    pub appid: String,
    pub name: String,
    pub kind: CampaignKind,
    pub template_id: String,
    pub page: Option<String>,
    pub data: Value,
    pub emphasis_keyword: Option<String>,
    pub miniprogram_state: Option<String>,
    pub lang: Option<String>,
    pub formid_pick: FormidPick,
    pub data_policy: DataPolicy,
    pub audience_type: AudienceType,
    pub schedule: Value,
    pub timezone: String,
    pub status: CampaignStatus,
    pub pause_reason: Option<PauseReason>,
    pub resume_at: Option<DateTime<Utc>>,
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_error: Option<Value>,
    /// Sends even inside the app's quiet hours.
    pub ignore_quiet_hours: bool,
    /// A cron firing that fell inside the app's quiet hours waits until then.
    pub held_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub enum CreateError {
    UnknownApp,
    Db(sqlx::Error),
}

impl From<sqlx::Error> for CreateError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(e)
    }
}

/// Stores a campaign and, for listed audiences, its members (creating unknown users).
pub async fn create(
    pool: &PgPool,
    spec: &CampaignSpec,
    now: DateTime<Utc>,
) -> Result<CampaignRow, CreateError> {
    if !super::apps::exists(pool, &spec.appid).await? {
        return Err(CreateError::UnknownApp);
    }
    let id = Uuid::new_v4();
    let members: Vec<(String, Value)> = match &spec.audience {
        Audience::All => vec![],
        Audience::Openids { openids } => openids
            .iter()
            .map(|o| (o.clone(), Value::Object(Default::default())))
            .collect(),
        Audience::Users { users } => users
            .iter()
            .map(|u| (u.openid.clone(), Value::Object(u.vars.clone())))
            .collect(),
    };
    let openids: Vec<String> = members.iter().map(|(o, _)| o.clone()).collect();
    // Users first (own statements): unknown openids become users even if this fails later.
    let ids = if openids.is_empty() {
        vec![]
    } else {
        users::upsert_many(pool, &spec.appid, &openids).await?
    };
    let id_of: std::collections::HashMap<String, i64> = ids.into_iter().collect();
    let mut user_ids = Vec::with_capacity(members.len());
    let mut vars = Vec::with_capacity(members.len());
    for (openid, v) in &members {
        if let Some(uid) = id_of.get(openid) {
            user_ids.push(*uid);
            vars.push(v.clone());
        }
    }
    let schedule_json = serde_json::to_value(&spec.schedule.spec)
        .map_err(|e| CreateError::Db(sqlx::Error::Protocol(format!("schedule encoding: {e}"))))?;
    let mut tx = pool.begin().await?;
    sqlx::query!(
        r#"
        insert into campaigns (id, appid, name, kind, template_id, page, data, emphasis_keyword,
            miniprogram_state, lang, formid_pick, data_policy, audience_type, schedule, timezone,
            status, next_run_at, ignore_quiet_hours)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 'scheduled', $16,
                $17)
        "#,
        id,
        spec.appid,
        spec.name,
        spec.kind as CampaignKind,
        spec.template_id,
        spec.page,
        Value::Object(spec.data.clone()),
        spec.emphasis_keyword,
        spec.miniprogram_state,
        spec.lang,
        spec.formid_pick as FormidPick,
        spec.data_policy as DataPolicy,
        spec.audience.audience_type() as AudienceType,
        schedule_json,
        spec.schedule.timezone.name(),
        spec.schedule.first_run(now),
        spec.ignore_quiet_hours,
    )
    .execute(&mut *tx)
    .await?;
    if !user_ids.is_empty() {
        sqlx::query!(
            r#"
            insert into campaign_audience (campaign_id, user_id, vars)
            select $1, u, v from unnest($2::bigint[], $3::jsonb[]) as t(u, v)
            "#,
            id,
            &user_ids,
            &vars
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(find(pool, id).await?.expect("campaign was just inserted"))
}

pub async fn find(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<CampaignRow>> {
    sqlx::query_as!(
        CampaignRow,
        r#"
        select id, appid, name, kind as "kind: CampaignKind", template_id, page, data,
               emphasis_keyword, miniprogram_state, lang, formid_pick as "formid_pick: FormidPick",
               data_policy as "data_policy: DataPolicy",
               audience_type as "audience_type: AudienceType", schedule, timezone,
               status as "status: CampaignStatus", pause_reason as "pause_reason: PauseReason",
               resume_at, next_run_at, last_error, ignore_quiet_hours, held_until, created_at,
               updated_at
        from campaigns
        where id = $1
        "#,
        id
    )
    .fetch_optional(pool)
    .await
}

pub async fn list(
    pool: &PgPool,
    appid: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<CampaignRow>> {
    if !appid.is_none_or(super::storable) {
        return Ok(vec![]);
    }
    sqlx::query_as!(
        CampaignRow,
        r#"
        select id, appid, name, kind as "kind: CampaignKind", template_id, page, data,
               emphasis_keyword, miniprogram_state, lang, formid_pick as "formid_pick: FormidPick",
               data_policy as "data_policy: DataPolicy",
               audience_type as "audience_type: AudienceType", schedule, timezone,
               status as "status: CampaignStatus", pause_reason as "pause_reason: PauseReason",
               resume_at, next_run_at, last_error, ignore_quiet_hours, held_until, created_at,
               updated_at
        from campaigns
        where ($1::text is null or appid = $1)
        order by created_at desc limit $2
        "#,
        appid,
        limit
    )
    .fetch_all(pool)
    .await
}

pub async fn totals(pool: &PgPool, campaign_id: Uuid) -> sqlx::Result<Totals> {
    Ok(totals_of(pool, &[campaign_id])
        .await?
        .remove(&campaign_id)
        .unwrap_or_default())
}

/// Totals of many campaigns in one grouped query (a list page must not query per item);
/// a campaign without runs is absent from the map. Each run counts its deliveries, or, once
/// the retention archived it, the totals kept on the run alone (`archived_totals`): the
/// same before, while and after its deliveries are deleted.
pub async fn totals_of(
    pool: &PgPool,
    campaign_ids: &[Uuid],
) -> sqlx::Result<std::collections::HashMap<Uuid, Totals>> {
    let rows = sqlx::query!(
        r#"
        with live as (
            select run_id,
                   count(*) as targeted,
                   count(*) filter (where status = 'sent') as sent,
                   count(*) filter (where status = 'failed') as failed,
                   count(*) filter (where status = 'no_formid') as no_formid,
                   count(*) filter (where status = 'no_quota') as no_quota,
                   count(*) filter (where status = 'capped') as capped,
                   count(*) filter (where status in ('pending', 'sending')) as pending
            from deliveries where campaign_id = any($1)
            group by run_id
        ),
        per_run as (
            select r.campaign_id,
                   coalesce((r.archived_totals->>'targeted')::bigint, l.targeted, 0) as targeted,
                   coalesce((r.archived_totals->>'sent')::bigint, l.sent, 0) as sent,
                   coalesce((r.archived_totals->>'failed')::bigint, l.failed, 0) as failed,
                   coalesce((r.archived_totals->>'no_formid')::bigint, l.no_formid, 0)
                       as no_formid,
                   coalesce((r.archived_totals->>'no_quota')::bigint, l.no_quota, 0) as no_quota,
                   coalesce((r.archived_totals->>'capped')::bigint, l.capped, 0) as capped,
                   coalesce((r.archived_totals->>'pending')::bigint, l.pending, 0) as pending
            from campaign_runs r left join live l on l.run_id = r.id
            where r.campaign_id = any($1)
        )
        select campaign_id,
               sum(targeted)::bigint as "targeted!",
               sum(sent)::bigint as "sent!",
               sum(failed)::bigint as "failed!",
               sum(no_formid)::bigint as "no_formid!",
               sum(no_quota)::bigint as "no_quota!",
               sum(capped)::bigint as "capped!",
               sum(pending)::bigint as "pending!"
        from per_run
        group by campaign_id
        "#,
        campaign_ids
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let totals = Totals {
                targeted: r.targeted,
                sent: r.sent,
                failed: r.failed,
                no_formid: r.no_formid,
                no_quota: r.no_quota,
                capped: r.capped,
                pending: r.pending,
            };
            (r.campaign_id, totals)
        })
        .collect())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Pause,
    Resume,
    Cancel,
}

/// The placeholder values of those of `openids` that are in the campaign's listed
/// audience (an `all` audience has none).
pub async fn audience_vars(
    pool: &PgPool,
    campaign: &CampaignRow,
    openids: &[String],
) -> sqlx::Result<std::collections::HashMap<String, Value>> {
    let storable: Vec<&str> = openids
        .iter()
        .map(String::as_str)
        .filter(|o| super::storable(o))
        .collect();
    let rows = sqlx::query!(
        r#"
        select u.openid, a.vars
        from users u join campaign_audience a on a.user_id = u.id and a.campaign_id = $1
        where u.appid = $3 and u.openid = any($2::text[])
        "#,
        campaign.id,
        &storable as &[&str],
        campaign.appid
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.openid, r.vars)).collect())
}

/// When the running runs of each of `campaign_ids` that hold for their app's quiet hours
/// resume (the earliest per campaign; campaigns without such a run are absent).
pub async fn run_holds_of(
    pool: &PgPool,
    campaign_ids: &[Uuid],
) -> sqlx::Result<std::collections::HashMap<Uuid, DateTime<Utc>>> {
    let rows = sqlx::query!(
        r#"
        select campaign_id, min(held_until) as "held_until!"
        from campaign_runs
        where campaign_id = any($1) and status = 'running' and held_until is not null
        group by campaign_id
        "#,
        campaign_ids
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.campaign_id, r.held_until))
        .collect())
}

/// Applies an admin transition. `Ok(None)`: no such campaign; `Err(status)`: the transition
/// makes no sense from `status`.
pub async fn transition(
    pool: &PgPool,
    id: Uuid,
    transition: Transition,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<Result<CampaignRow, CampaignStatus>>> {
    let mut tx = pool.begin().await?;
    let Some(current) = sqlx::query_as!(
        CampaignRow,
        r#"
        select id, appid, name, kind as "kind: CampaignKind", template_id, page, data,
               emphasis_keyword, miniprogram_state, lang, formid_pick as "formid_pick: FormidPick",
               data_policy as "data_policy: DataPolicy",
               audience_type as "audience_type: AudienceType", schedule, timezone,
               status as "status: CampaignStatus", pause_reason as "pause_reason: PauseReason",
               resume_at, next_run_at, last_error, ignore_quiet_hours, held_until, created_at,
               updated_at
        from campaigns
        where id = $1
        for update
        "#,
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(None);
    };
    use CampaignStatus::{Paused, Running, Scheduled};
    match (transition, current.status) {
        (Transition::Pause, Scheduled | Running) => {
            sqlx::query!(
                r#"update campaigns set status = 'paused', pause_reason = 'admin', resume_at = null,
                   updated_at = now() where id = $1"#,
                id
            )
            .execute(&mut *tx)
            .await?;
        }
        (Transition::Resume, Paused) => {
            // Cron firings missed while paused are skipped, not replayed; a one-off
            // (now / at) that fell due while paused runs at once.
            let next_run_at = match current.next_run_at {
                Some(at) if at < now => match stored_schedule(&current) {
                    Ok(schedule) if schedule.is_recurring() => schedule.next_after(now),
                    _ => Some(at),
                },
                other => other,
            };
            sqlx::query!(
                r#"
                update campaigns set
                    status = case when exists (select 1 from campaign_runs r
                                               where r.campaign_id = $1 and r.status = 'running')
                                  then 'running' else 'scheduled' end,
                    pause_reason = null, resume_at = null, next_run_at = $2, held_until = null,
                    updated_at = now()
                where id = $1
                "#,
                id,
                next_run_at
            )
            .execute(&mut *tx)
            .await?;
        }
        (Transition::Cancel, Scheduled | Running | Paused) => {
            sqlx::query!(
                r#"update campaigns set status = 'cancelled', next_run_at = null, updated_at = now()
                   where id = $1"#,
                id
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query!(
                r#"update campaign_runs set status = 'cancelled', finished_at = now()
                   where campaign_id = $1 and status = 'running'"#,
                id
            )
            .execute(&mut *tx)
            .await?;
        }
        _ => return Ok(Some(Err(current.status))),
    }
    tx.commit().await?;
    Ok(find(pool, id).await?.map(Ok))
}

pub fn stored_schedule(row: &CampaignRow) -> anyhow::Result<Schedule> {
    let spec: ScheduleSpec = serde_json::from_value(row.schedule.clone())?;
    Schedule::parse(spec).map_err(|e| anyhow::anyhow!(e.message))
}

/// Quota-paused campaigns whose quota has reset go back to work.
pub async fn resume_quota_paused(pool: &PgPool, now: DateTime<Utc>) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        r#"
        update campaigns c set
            status = case when exists (select 1 from campaign_runs r
                                       where r.campaign_id = c.id and r.status = 'running')
                          then 'running' else 'scheduled' end,
            pause_reason = null, resume_at = null, updated_at = now()
        where c.status = 'paused' and c.pause_reason = 'quota' and c.resume_at <= $1
        "#,
        now
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// A campaign-level error: the campaign stops `failed` and its runs with it.
pub async fn fail(pool: &PgPool, campaign_id: Uuid, last_error: &Value) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    let before = sqlx::query_scalar!(
        r#"
        with before as (select status from campaigns where id = $1 for update)
        update campaigns c set status = 'failed', last_error = $2, next_run_at = null,
            updated_at = now()
        from before b
        where c.id = $1 and c.status not in ('cancelled', 'completed')
        returning b.status as "status: CampaignStatus"
        "#,
        campaign_id,
        last_error
    )
    .fetch_optional(&mut *tx)
    .await?;
    // One event per failure, though a later batch may record the failure again.
    if before.is_some_and(|status| status != CampaignStatus::Failed) {
        super::webhook_events::enqueue_campaign_event(
            &mut tx,
            campaign_id,
            EventType::CampaignFailed,
        )
        .await?;
    }
    sqlx::query!(
        r#"update campaign_runs set status = 'failed', finished_at = now()
           where campaign_id = $1 and status = 'running'"#,
        campaign_id
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// 45009: pause until the daily quota resets.
pub async fn pause_for_quota(
    pool: &PgPool,
    campaign_id: Uuid,
    resume_at: DateTime<Utc>,
    last_error: &Value,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"update campaigns set status = 'paused', pause_reason = 'quota', resume_at = $2,
               last_error = $3, updated_at = now()
           where id = $1 and status = 'running'"#,
        campaign_id,
        resume_at,
        last_error
    )
    .execute(pool)
    .await?;
    Ok(())
}
