//! The retention (`FORMPUSH_RETENTION_DAYS`), applied by the daily clean-up: the deliveries
//! of runs that finished before a cutoff, and triggered messages whose final state is
//! older than it.
//!
//! Everything is deleted in batches of at most `BATCH` rows, each batch one statement in
//! its own transaction, so that a live service is never held up for long. A run's totals
//! are first kept on its row (`campaign_runs.archived_totals`): from then on its totals,
//! and its campaign's, are read from there only (`runs::runs`, `campaigns::totals_of`),
//! so they do not change while its deliveries go, nor if the clean-up stops halfway (the
//! next one finishes the run: it is not `purged_at` yet).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// Rows deleted per statement.
pub const BATCH: i64 = 10_000;
/// Runs looked up at once.
const RUNS_AT_ONCE: i64 = 100;

/// What one pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Runs whose deliveries are now all gone.
    pub runs: u64,
    pub deliveries: u64,
    pub messages: u64,
}

/// Deletes what finished before `cutoff`: the deliveries of runs that ended (completed,
/// failed or cancelled) before it, their totals kept on the run first; and triggered
/// messages in a final state (sent, failed, no_formid, no_quota, cancelled) last changed
/// before it. Runs still going (a paused campaign's included) and messages not final are
/// never touched.
pub async fn purge_before(pool: &PgPool, cutoff: DateTime<Utc>) -> sqlx::Result<Purged> {
    let mut purged = Purged::default();
    loop {
        let runs = finished_runs_before(pool, cutoff, RUNS_AT_ONCE).await?;
        for &run_id in &runs {
            // Every run found is finished, so it is archived and then marked purged: the
            // next lookup moves on.
            let Some(deleted) = purge_run(pool, run_id, BATCH).await? else {
                return Err(sqlx::Error::Protocol(format!(
                    "run {run_id} was found finished but could not be archived"
                )));
            };
            purged.deliveries += deleted;
            purged.runs += 1;
        }
        if (runs.len() as i64) < RUNS_AT_ONCE {
            break;
        }
    }
    loop {
        let deleted = delete_messages_batch(pool, cutoff, BATCH).await?;
        purged.messages += deleted;
        if (deleted as i64) < BATCH {
            break;
        }
    }
    Ok(purged)
}

/// Up to `limit` runs that finished before `cutoff` and still have deliveries (or may:
/// not `purged_at`), oldest first. Through `campaign_runs_unpurged`.
async fn finished_runs_before(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"
        select id from campaign_runs
        where purged_at is null and finished_at < $1
          and status in ('completed', 'failed', 'cancelled')
        order by finished_at
        limit $2
        "#,
        cutoff,
        limit
    )
    .fetch_all(pool)
    .await
}

/// Keeps the run's totals on its row (unless an earlier clean-up already did), deletes its
/// deliveries `batch` at a time, and marks it purged. Returns the deliveries deleted, or
/// `None` for a run not finished (left alone).
pub async fn purge_run(pool: &PgPool, run_id: Uuid, batch: i64) -> sqlx::Result<Option<u64>> {
    if !archive_totals(pool, run_id).await? {
        return Ok(None);
    }
    let mut deleted = 0;
    // Walks the run's deliveries in user order (`deliveries_run_id_user_id_key`), from
    // where the last batch ended, so no batch reads the index entries of the rows deleted
    // before it.
    let mut after_user = 0i64;
    loop {
        let gone = sqlx::query!(
            r#"
            with gone as (
                delete from deliveries
                where id = any(array(select id from deliveries
                                     where run_id = $1 and user_id > $2
                                     order by user_id
                                     limit $3))
                returning user_id
            )
            select count(*) as "deleted!", max(user_id) as last_user from gone
            "#,
            run_id,
            after_user,
            batch
        )
        .fetch_one(pool)
        .await?;
        deleted += gone.deleted as u64;
        // Until a batch finds nothing: a short batch may only mean that another clean-up
        // deleted some of its rows first.
        match gone.last_user {
            Some(last) => after_user = last,
            None => break,
        }
    }
    sqlx::query!(
        "update campaign_runs set purged_at = now() where id = $1 and purged_at is null",
        run_id
    )
    .execute(pool)
    .await?;
    Ok(Some(deleted))
}

/// Counts the run's deliveries into `archived_totals`, in the statement that marks the run
/// archived; a run archived before keeps the totals it had then (some of its deliveries
/// may be gone). Only a finished run is archived. Returns whether the run is archived.
pub async fn archive_totals(pool: &PgPool, run_id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"
        with archived as (
            update campaign_runs r set archived_totals = (
                select jsonb_build_object(
                    'targeted', count(*),
                    'sent', count(*) filter (where d.status = 'sent'),
                    'failed', count(*) filter (where d.status = 'failed'),
                    'no_formid', count(*) filter (where d.status = 'no_formid'),
                    'no_quota', count(*) filter (where d.status = 'no_quota'),
                    'capped', count(*) filter (where d.status = 'capped'),
                    'pending', count(*) filter (where d.status in ('pending', 'sending')))
                from deliveries d where d.run_id = r.id)
            where r.id = $1 and r.archived_totals is null
              and r.status in ('completed', 'failed', 'cancelled')
            returning r.id
        )
        select exists (select 1 from archived)
               or exists (select 1 from campaign_runs
                          where id = $1 and archived_totals is not null) as "archived!"
        "#,
        run_id
    )
    .fetch_one(pool)
    .await
}

/// Deletes up to `limit` triggered messages in a final state last changed before `cutoff`,
/// through `messages_final`. Their idempotency keys went long before (24 hours, and the
/// retention is at least a day).
async fn delete_messages_batch(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        r#"
        delete from messages
        where id = any(array(select id from messages
                             where status in ('sent', 'failed', 'no_formid', 'no_quota',
                                              'cancelled')
                               and updated_at < $1
                             order by updated_at
                             limit $2))
        "#,
        cutoff,
        limit
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
