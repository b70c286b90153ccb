//! Campaign runs (one per firing of a schedule): starting the due ones with their
//! deliveries, finishing them, and what a sender needs to work one.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::campaigns::{stored_schedule, CampaignRow};
use crate::domain::campaign::{
    AudienceType, CampaignKind, CampaignStatus, DataPolicy, FormidPick, PauseReason, RunStatus,
    Totals,
};
use crate::domain::hygiene::QuietHours;
use crate::domain::webhook::EventType;

#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: Uuid,
    pub scheduled_for: DateTime<Utc>,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// While it holds its remaining deliveries for the app's quiet hours: when they end.
    pub held_until: Option<DateTime<Utc>>,
    pub filling: bool,
    /// When the retention deleted the last of its deliveries (its totals are kept).
    pub deliveries_purged_at: Option<DateTime<Utc>>,
    pub totals: Totals,
}

/// The campaign's runs, latest firing first, each with its totals: counted from its
/// deliveries, or for a run whose deliveries the retention deleted (or is deleting), the
/// totals kept on the run (`archived_totals`) alone.
pub async fn runs(pool: &PgPool, campaign_id: Uuid) -> sqlx::Result<Vec<RunRow>> {
    let rows = sqlx::query!(
        r#"
        select r.id, r.scheduled_for, r.status as "status: RunStatus", r.started_at, r.finished_at,
               r.held_until, r.filling, r.purged_at,
               coalesce((r.archived_totals->>'targeted')::bigint, count(d.id)) as "targeted!",
               coalesce((r.archived_totals->>'sent')::bigint,
                        count(d.id) filter (where d.status = 'sent')) as "sent!",
               coalesce((r.archived_totals->>'failed')::bigint,
                        count(d.id) filter (where d.status = 'failed')) as "failed!",
               coalesce((r.archived_totals->>'no_formid')::bigint,
                        count(d.id) filter (where d.status = 'no_formid')) as "no_formid!",
               coalesce((r.archived_totals->>'no_quota')::bigint,
                        count(d.id) filter (where d.status = 'no_quota')) as "no_quota!",
               coalesce((r.archived_totals->>'capped')::bigint,
                        count(d.id) filter (where d.status = 'capped')) as "capped!",
               coalesce((r.archived_totals->>'pending')::bigint,
                        count(d.id) filter (where d.status in ('pending', 'sending')))
                   as "pending!"
        from campaign_runs r
             left join deliveries d on d.run_id = r.id and r.archived_totals is null
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
            held_until: r.held_until,
            filling: r.filling,
            deliveries_purged_at: r.purged_at,
            totals: Totals {
                targeted: r.targeted,
                sent: r.sent,
                failed: r.failed,
                no_formid: r.no_formid,
                no_quota: r.no_quota,
                capped: r.capped,
                pending: r.pending,
            },
        })
        .collect())
}

/// Starts every run that is due: one run row per firing (unique per campaign and time, so
/// instances racing here create it once), and the first `fill_chunk` of its pending
/// deliveries (the sender adds the rest with `fill_next_chunk` while sending).
/// A cron firing whose app is in its quiet hours at `now` (and the campaign does not ignore
/// them) waits instead, `held_until` the window's end, when it starts. Returns the runs
/// started with the time each was due.
pub async fn start_due_runs(
    pool: &PgPool,
    now: DateTime<Utc>,
    fill_chunk: i64,
) -> anyhow::Result<Vec<(Uuid, DateTime<Utc>)>> {
    let mut tx = pool.begin().await?;
    let due = sqlx::query_as!(
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
        where status in ('scheduled', 'running') and next_run_at <= $1
          and (held_until is null or held_until <= $1)
        order by next_run_at
        limit 20
        for update skip locked
        "#,
        now
    )
    .fetch_all(&mut *tx)
    .await?;
    let quiet = if due.is_empty() {
        HashMap::new()
    } else {
        let appids: Vec<&str> = due.iter().map(|c| c.appid.as_str()).collect();
        quiet_hours_of(&mut tx, &appids).await?
    };
    let mut started = Vec::new();
    for campaign in due {
        let Some(scheduled_for) = campaign.next_run_at else {
            continue;
        };
        let schedule = stored_schedule(&campaign)?;
        if schedule.is_recurring() && !campaign.ignore_quiet_hours {
            let hold = quiet.get(&campaign.appid).and_then(|q| q.holds_until(now));
            if let Some(until) = hold {
                sqlx::query!(
                    "update campaigns set held_until = $2, updated_at = now() where id = $1",
                    campaign.id,
                    until
                )
                .execute(&mut *tx)
                .await?;
                continue;
            }
        }
        if let Some(run_id) = start_run(&mut tx, &campaign, scheduled_for, fill_chunk).await? {
            started.push((run_id, scheduled_for));
        }
        // Firings missed meanwhile (quiet hours, no instance up) collapse into this run.
        let next = schedule.next_after(scheduled_for.max(now));
        sqlx::query!(
            r#"update campaigns set status = 'running', next_run_at = $2, held_until = null,
                   updated_at = now()
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

/// The quiet hours of those of `appids` that have them.
async fn quiet_hours_of(
    tx: &mut Transaction<'_, Postgres>,
    appids: &[&str],
) -> sqlx::Result<HashMap<String, QuietHours>> {
    let rows = sqlx::query!(
        r#"
        select appid, quiet_start as "start!", quiet_end as "end!", quiet_timezone as "zone!"
        from apps where appid = any($1) and quiet_start is not null
        "#,
        appids as &[&str]
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let timezone = r.zone.parse().ok()?;
            let hours = QuietHours {
                start: r.start,
                end: r.end,
                timezone,
            };
            Some((r.appid, hours))
        })
        .collect())
}

async fn start_run(
    tx: &mut Transaction<'_, Postgres>,
    campaign: &CampaignRow,
    scheduled_for: DateTime<Utc>,
    fill_chunk: i64,
) -> sqlx::Result<Option<Uuid>> {
    // The audience's last user id now: users arriving while the run fills are not added.
    let fill_until = match campaign.audience_type {
        AudienceType::All => {
            sqlx::query_scalar!(
                r#"select coalesce(max(id), 0) as "last!" from users where appid = $1"#,
                campaign.appid
            )
            .fetch_one(&mut **tx)
            .await?
        }
        AudienceType::Openids | AudienceType::Users => {
            sqlx::query_scalar!(
                r#"select coalesce(max(user_id), 0) as "last!" from campaign_audience
               where campaign_id = $1"#,
                campaign.id
            )
            .fetch_one(&mut **tx)
            .await?
        }
    };
    let run_id = sqlx::query_scalar!(
        r#"
        insert into campaign_runs (id, campaign_id, appid, scheduled_for, status, filling,
                                   fill_until)
        values ($1, $2, $3, $4, 'running', true, $5)
        on conflict (campaign_id, scheduled_for) do nothing
        returning id
        "#,
        Uuid::new_v4(),
        campaign.id,
        campaign.appid,
        scheduled_for,
        fill_until
    )
    .fetch_optional(&mut **tx)
    .await?;
    let Some(run_id) = run_id else {
        return Ok(None);
    };
    // The first chunk goes with the run, so that its first sends can leave at once.
    fill_locked(tx, run_id, fill_chunk).await?;
    Ok(Some(run_id))
}

/// Adds the next `chunk` audience users of a filling run as pending deliveries; the last
/// chunk marks the run filled. Returns how many it added (0 also when the run is being
/// filled by someone else at this moment, or is not filling).
pub async fn fill_next_chunk(pool: &PgPool, run_id: Uuid, chunk: i64) -> sqlx::Result<u64> {
    let mut tx = pool.begin().await?;
    let locked = sqlx::query_scalar!(
        r#"select id from campaign_runs
           where id = $1 and filling and status = 'running'
           for update skip locked"#,
        run_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    if locked.is_none() {
        return Ok(0);
    }
    let added = fill_locked(&mut tx, run_id, chunk).await?;
    tx.commit().await?;
    Ok(added)
}

/// `fill_next_chunk` on a run whose row this transaction holds.
async fn fill_locked(
    tx: &mut Transaction<'_, Postgres>,
    run_id: Uuid,
    chunk: i64,
) -> sqlx::Result<u64> {
    let filled = sqlx::query!(
        r#"
        with run as (
            select r.id, r.campaign_id, r.appid, r.filled_through, r.fill_until,
                   c.audience_type
            from campaign_runs r join campaigns c on c.id = r.campaign_id
            where r.id = $1
        ),
        chunk as (
            (select u.id, u.openid from run, users u
             where run.audience_type = 'all' and u.appid = run.appid
               and u.id > run.filled_through and u.id <= run.fill_until
             order by u.id limit $2)
            union all
            (select u.id, u.openid from run, campaign_audience a join users u on u.id = a.user_id
             where run.audience_type <> 'all' and a.campaign_id = run.campaign_id
               and a.user_id > run.filled_through and a.user_id <= run.fill_until
             order by a.user_id limit $2)
        ),
        added as (
            insert into deliveries (run_id, campaign_id, user_id, openid)
            select run.id, run.campaign_id, chunk.id, chunk.openid from run, chunk
            order by chunk.id
            returning user_id
        )
        update campaign_runs r set
            filled_through = coalesce((select max(user_id) from added), r.filled_through),
            filling = (select count(*) from added) = $2
        where r.id = $1
        returning (select count(*) from added) as "added!"
        "#,
        run_id,
        chunk
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(filled.added as u64)
}

/// Whether the run and its campaign are both still `running` (not paused, cancelled,
/// failed or finished meanwhile).
pub async fn still_sending(pool: &PgPool, run_id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"select exists (select 1 from campaign_runs r join campaigns c on c.id = r.campaign_id
                          where r.id = $1 and r.status = 'running' and c.status = 'running')
           as "sending!""#,
        run_id
    )
    .fetch_one(pool)
    .await
}

/// Closes the run if every delivery is final, and the campaign if no run is left.
pub async fn finish_run_if_done(pool: &PgPool, run_id: Uuid) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let finished = sqlx::query_scalar!(
        r#"
        update campaign_runs r set status = 'completed', finished_at = now()
        where r.id = $1 and r.status = 'running' and not r.filling
          -- by campaign and status first: deliveries_by_campaign then holds just the
          -- unfinished ones, where (run_id, ...) would read every delivery of the run
          and not exists (select 1 from deliveries d
                          where d.campaign_id = r.campaign_id
                            and d.status in ('pending', 'sending') and d.run_id = r.id)
        returning r.campaign_id
        "#,
        run_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(campaign_id) = finished {
        let status = sqlx::query_scalar!(
            r#"
            update campaigns c set
                status = case when c.next_run_at is null then 'completed' else 'scheduled' end,
                updated_at = now()
            where c.id = $1 and c.status = 'running'
              and not exists (select 1 from campaign_runs r
                              where r.campaign_id = c.id and r.status = 'running')
            returning c.status as "status: CampaignStatus"
            "#,
            campaign_id
        )
        .fetch_optional(&mut *tx)
        .await?;
        if status == Some(CampaignStatus::Completed) {
            super::webhook_events::enqueue_campaign_event(
                &mut tx,
                campaign_id,
                EventType::CampaignCompleted,
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(finished.is_some())
}

/// What the sender needs to know about a run it works.
#[derive(Debug, Clone)]
pub struct ActiveRun {
    pub run_id: Uuid,
    pub campaign_id: Uuid,
    pub kind: CampaignKind,
    pub template_id: String,
    pub page: Option<String>,
    pub data: Value,
    pub emphasis_keyword: Option<String>,
    pub miniprogram_state: Option<String>,
    pub lang: Option<String>,
    pub formid_pick: FormidPick,
    pub data_policy: DataPolicy,
    pub timezone: String,
    pub ignore_quiet_hours: bool,
    /// Set while the sender holds the run for the app's quiet hours.
    pub held_until: Option<DateTime<Utc>>,
    /// Audience users are still being added (`fill_next_chunk`).
    pub filling: bool,
}

pub async fn active_runs(pool: &PgPool, appid: &str) -> sqlx::Result<Vec<ActiveRun>> {
    sqlx::query_as!(
        ActiveRun,
        r#"
        select r.id as run_id, r.campaign_id, c.kind as "kind: CampaignKind", c.template_id,
               c.page, c.data, c.emphasis_keyword, c.miniprogram_state, c.lang,
               c.formid_pick as "formid_pick: FormidPick",
               c.data_policy as "data_policy: DataPolicy", c.timezone, c.ignore_quiet_hours,
               r.held_until, r.filling
        from campaign_runs r join campaigns c on c.id = r.campaign_id
        where r.appid = $1 and r.status = 'running' and c.status = 'running'
        order by r.started_at, r.id
        "#,
        appid
    )
    .fetch_all(pool)
    .await
}

/// Marks the run as holding for the app's quiet hours until `until`, or (`None`) as
/// sending again.
pub async fn set_hold(
    pool: &PgPool,
    run_id: Uuid,
    until: Option<DateTime<Utc>>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "update campaign_runs set held_until = $2 where id = $1 and status = 'running'",
        run_id,
        until
    )
    .execute(pool)
    .await?;
    Ok(())
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

/// Runs sending now, across all apps.
pub async fn count_active_runs(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar!(r#"select count(*) as "n!" from campaign_runs where status = 'running'"#)
        .fetch_one(pool)
        .await
}

/// Deliveries waiting to be claimed, per app (apps with none are absent).
pub async fn pending_deliveries(pool: &PgPool) -> sqlx::Result<Vec<(String, i64)>> {
    let rows = sqlx::query!(
        r#"
        select r.appid, count(*) as "pending!"
        from deliveries d join campaign_runs r on r.id = d.run_id
        where d.status = 'pending' and r.status = 'running'
        group by r.appid
        "#
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.appid, r.pending)).collect())
}
