//! Campaigns, their runs and their state transitions.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::domain::campaign::{Audience, CampaignSpec, Schedule, ScheduleSpec};

use super::users;

#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq, utoipa::ToSchema)]
pub struct Totals {
    pub targeted: i64,
    pub sent: i64,
    pub failed: i64,
    pub no_formid: i64,
    pub no_quota: i64,
    pub pending: i64,
}

#[derive(Debug, Clone)]
pub struct CampaignRow {
    pub id: Uuid,
    pub appid: String,
    pub name: String,
    pub kind: String,
    pub template_id: String,
    pub page: Option<String>,
    pub data: Value,
    pub emphasis_keyword: Option<String>,
    pub miniprogram_state: Option<String>,
    pub lang: Option<String>,
    pub formid_pick: String,
    pub audience_type: String,
    pub schedule: Value,
    pub timezone: String,
    pub status: String,
    pub pause_reason: Option<String>,
    pub resume_at: Option<DateTime<Utc>>,
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_error: Option<Value>,
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
            miniprogram_state, lang, formid_pick, audience_type, schedule, timezone, status, next_run_at)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'scheduled', $15)
        "#,
        id,
        spec.appid,
        spec.name,
        spec.kind.as_str(),
        spec.template_id,
        spec.page,
        Value::Object(spec.data.clone()),
        spec.emphasis_keyword,
        spec.miniprogram_state,
        spec.lang,
        spec.formid_pick.as_str(),
        spec.audience.type_name(),
        schedule_json,
        spec.schedule.timezone.name(),
        spec.schedule.first_run(now),
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
    sqlx::query_as!(CampaignRow, "select * from campaigns where id = $1", id)
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
        select * from campaigns where ($1::text is null or appid = $1)
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
/// a campaign without deliveries is absent from the map.
pub async fn totals_of(
    pool: &PgPool,
    campaign_ids: &[Uuid],
) -> sqlx::Result<std::collections::HashMap<Uuid, Totals>> {
    let rows = sqlx::query!(
        r#"
        select campaign_id,
               count(*) as "targeted!",
               count(*) filter (where status = 'sent') as "sent!",
               count(*) filter (where status = 'failed') as "failed!",
               count(*) filter (where status = 'no_formid') as "no_formid!",
               count(*) filter (where status = 'no_quota') as "no_quota!",
               count(*) filter (where status in ('pending', 'sending')) as "pending!"
        from deliveries where campaign_id = any($1)
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

/// Applies an admin transition. `Ok(None)`: no such campaign; `Err(status)`: the transition
/// makes no sense from `status`.
pub async fn transition(
    pool: &PgPool,
    id: Uuid,
    transition: Transition,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<Result<CampaignRow, String>>> {
    let mut tx = pool.begin().await?;
    let Some(current) = sqlx::query_as!(
        CampaignRow,
        "select * from campaigns where id = $1 for update",
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(None);
    };
    let status = current.status.as_str();
    match (transition, status) {
        (Transition::Pause, "scheduled" | "running") => {
            sqlx::query!(
                r#"update campaigns set status = 'paused', pause_reason = 'admin', resume_at = null,
                   updated_at = now() where id = $1"#,
                id
            )
            .execute(&mut *tx)
            .await?;
        }
        (Transition::Resume, "paused") => {
            // Cron firings missed while paused are skipped, not replayed.
            let next_run_at = match current.next_run_at {
                Some(at) if at < now => stored_schedule(&current)
                    .ok()
                    .and_then(|s| s.next_after(now)),
                other => other,
            };
            sqlx::query!(
                r#"
                update campaigns set
                    status = case when exists (select 1 from campaign_runs r
                                               where r.campaign_id = $1 and r.status = 'running')
                                  then 'running' else 'scheduled' end,
                    pause_reason = null, resume_at = null, next_run_at = $2, updated_at = now()
                where id = $1
                "#,
                id,
                next_run_at
            )
            .execute(&mut *tx)
            .await?;
        }
        (Transition::Cancel, "scheduled" | "running" | "paused") => {
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

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunRow {
    pub id: Uuid,
    pub scheduled_for: DateTime<Utc>,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub totals: Totals,
}

pub async fn runs(pool: &PgPool, campaign_id: Uuid) -> sqlx::Result<Vec<RunRow>> {
    let rows = sqlx::query!(
        r#"
        select r.id, r.scheduled_for, r.status, r.started_at, r.finished_at,
               count(d.id) as "targeted!",
               count(d.id) filter (where d.status = 'sent') as "sent!",
               count(d.id) filter (where d.status = 'failed') as "failed!",
               count(d.id) filter (where d.status = 'no_formid') as "no_formid!",
               count(d.id) filter (where d.status = 'no_quota') as "no_quota!",
               count(d.id) filter (where d.status in ('pending', 'sending')) as "pending!"
        from campaign_runs r left join deliveries d on d.run_id = r.id
        where r.campaign_id = $1
        group by r.id
        order by r.scheduled_for desc
        "#,
        campaign_id
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| RunRow {
            id: r.id,
            scheduled_for: r.scheduled_for,
            status: r.status,
            started_at: r.started_at,
            finished_at: r.finished_at,
            totals: Totals {
                targeted: r.targeted,
                sent: r.sent,
                failed: r.failed,
                no_formid: r.no_formid,
                no_quota: r.no_quota,
                pending: r.pending,
            },
        })
        .collect())
}

/// Starts every run that is due: one run row per firing (unique per campaign and time, so
/// instances racing here create it once), one pending delivery per audience member.
/// Returns the runs started with the time each was due.
pub async fn start_due_runs(
    pool: &PgPool,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<(Uuid, DateTime<Utc>)>> {
    let mut tx = pool.begin().await?;
    let due = sqlx::query_as!(
        CampaignRow,
        r#"
        select * from campaigns
        where status in ('scheduled', 'running') and next_run_at <= $1
        order by next_run_at
        limit 20
        for update skip locked
        "#,
        now
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut started = Vec::new();
    for campaign in due {
        let Some(scheduled_for) = campaign.next_run_at else {
            continue;
        };
        if let Some(run_id) = start_run(&mut tx, &campaign, scheduled_for).await? {
            started.push((run_id, scheduled_for));
        }
        let next = stored_schedule(&campaign)?.next_after(scheduled_for.max(now));
        sqlx::query!(
            r#"update campaigns set status = 'running', next_run_at = $2, updated_at = now()
               where id = $1"#,
            campaign.id,
            next
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(started)
}

async fn start_run(
    tx: &mut Transaction<'_, Postgres>,
    campaign: &CampaignRow,
    scheduled_for: DateTime<Utc>,
) -> sqlx::Result<Option<Uuid>> {
    let run_id = sqlx::query_scalar!(
        r#"
        insert into campaign_runs (id, campaign_id, appid, scheduled_for, status)
        values ($1, $2, $3, $4, 'running')
        on conflict (campaign_id, scheduled_for) do nothing
        returning id
        "#,
        Uuid::new_v4(),
        campaign.id,
        campaign.appid,
        scheduled_for
    )
    .fetch_optional(&mut **tx)
    .await?;
    let Some(run_id) = run_id else {
        return Ok(None);
    };
    if campaign.audience_type == "all" {
        sqlx::query!(
            r#"
            insert into deliveries (run_id, campaign_id, user_id, openid)
            select $1, $2, id, openid from users where appid = $3
            "#,
            run_id,
            campaign.id,
            campaign.appid
        )
        .execute(&mut **tx)
        .await?;
    } else {
        sqlx::query!(
            r#"
            insert into deliveries (run_id, campaign_id, user_id, openid)
            select $1, $2, u.id, u.openid
            from campaign_audience a join users u on u.id = a.user_id
            where a.campaign_id = $2
            "#,
            run_id,
            campaign.id
        )
        .execute(&mut **tx)
        .await?;
    }
    Ok(Some(run_id))
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

/// Closes the run if every delivery is final, and the campaign if no run is left.
pub async fn finish_run_if_done(pool: &PgPool, run_id: Uuid) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let finished = sqlx::query_scalar!(
        r#"
        update campaign_runs r set status = 'completed', finished_at = now()
        where r.id = $1 and r.status = 'running'
          and not exists (select 1 from deliveries d
                          where d.run_id = r.id and d.status in ('pending', 'sending'))
        returning r.campaign_id
        "#,
        run_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(campaign_id) = finished {
        sqlx::query!(
            r#"
            update campaigns c set
                status = case when c.next_run_at is null then 'completed' else 'scheduled' end,
                updated_at = now()
            where c.id = $1 and c.status = 'running'
              and not exists (select 1 from campaign_runs r
                              where r.campaign_id = c.id and r.status = 'running')
            "#,
            campaign_id
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(finished.is_some())
}

/// A campaign-level error: the campaign stops `failed` and its runs with it.
pub async fn fail(pool: &PgPool, campaign_id: Uuid, last_error: &Value) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query!(
        r#"update campaigns set status = 'failed', last_error = $2, next_run_at = null, updated_at = now()
           where id = $1 and status not in ('cancelled', 'completed')"#,
        campaign_id,
        last_error
    )
    .execute(&mut *tx)
    .await?;
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

/// What the sender needs to know about a run it works.
#[derive(Debug, Clone)]
pub struct ActiveRun {
    pub run_id: Uuid,
    pub campaign_id: Uuid,
    pub kind: String,
    pub template_id: String,
    pub page: Option<String>,
    pub data: Value,
    pub emphasis_keyword: Option<String>,
    pub miniprogram_state: Option<String>,
    pub lang: Option<String>,
    pub formid_pick: String,
    pub timezone: String,
}

pub async fn active_runs(pool: &PgPool, appid: &str) -> sqlx::Result<Vec<ActiveRun>> {
    sqlx::query_as!(
        ActiveRun,
        r#"
        select r.id as run_id, r.campaign_id, c.kind, c.template_id, c.page, c.data,
               c.emphasis_keyword, c.miniprogram_state, c.lang, c.formid_pick, c.timezone
        from campaign_runs r join campaigns c on c.id = r.campaign_id
        where r.appid = $1 and r.status = 'running' and c.status = 'running'
        order by r.started_at, r.id
        "#,
        appid
    )
    .fetch_all(pool)
    .await
}

/// Apps with work to do right now.
pub async fn apps_with_active_runs(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"
        select distinct r.appid from campaign_runs r join campaigns c on c.id = r.campaign_id
        where r.status = 'running' and c.status = 'running'
        "#
    )
    .fetch_all(pool)
    .await
}

/// Takes or renews the app's sender lease. True while this instance holds it.
pub async fn acquire_app_lease(
    pool: &PgPool,
    appid: &str,
    owner: Uuid,
    ttl_secs: f64,
) -> sqlx::Result<bool> {
    let held = sqlx::query_scalar!(
        r#"
        insert into app_leases (appid, owner, expires_at)
        values ($1, $2, now() + make_interval(secs => $3))
        on conflict (appid) do update set owner = excluded.owner, expires_at = excluded.expires_at
            where app_leases.owner = excluded.owner or app_leases.expires_at < now()
        returning owner
        "#,
        appid,
        owner,
        ttl_secs
    )
    .fetch_optional(pool)
    .await?;
    Ok(held == Some(owner))
}

pub async fn release_app_lease(pool: &PgPool, appid: &str, owner: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "delete from app_leases where appid = $1 and owner = $2",
        appid,
        owner
    )
    .execute(pool)
    .await?;
    Ok(())
}
