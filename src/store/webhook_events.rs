//! The webhook outbox. Events are written by the transactions that change a message's or a
//! campaign's status (see `messages`, `runs`, `campaigns`); the dispatcher claims due ones
//! with `skip locked`, so that any number of instances share the sending.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::domain::webhook::EventType;

/// Adds a campaign's event, if its app has a webhook, inside the caller's transaction.
pub async fn enqueue_campaign_event(
    tx: &mut Transaction<'_, Postgres>,
    campaign_id: Uuid,
    event: EventType,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        insert into webhook_events (id, appid, type, subject_id)
        select gen_random_uuid(), c.appid, $2, c.id
        from campaigns c join apps a on a.appid = c.appid
        where c.id = $1 and a.webhook_url is not null
        "#,
        campaign_id,
        event as EventType
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// An event handed to one dispatcher for one attempt.
#[derive(Debug, Clone)]
pub struct DueEvent {
    pub id: Uuid,
    pub appid: String,
    pub event_type: EventType,
    pub subject_id: Uuid,
    /// The body as first sent (`None` before the first attempt).
    pub payload: Option<Value>,
    /// Attempts so far, this one included.
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    /// The app's receiver now (`None`: the webhook was removed).
    pub url: Option<String>,
    pub secret: Option<String>,
}

/// Claims up to `limit` events due at `now`. A claimed event is not due again until
/// `hold_secs` have passed, so that an instance dying mid-attempt only delays it.
pub async fn claim_due(
    pool: &PgPool,
    now: DateTime<Utc>,
    limit: i64,
    hold_secs: f64,
) -> sqlx::Result<Vec<DueEvent>> {
    sqlx::query_as!(
        DueEvent,
        r#"
        with due as (
            select id from webhook_events
            where status = 'pending' and next_attempt_at <= $1
            order by next_attempt_at
            limit $2
            for update skip locked
        )
        update webhook_events e set
            attempts = e.attempts + 1,
            next_attempt_at = $1 + make_interval(secs => $3)
        from due, apps a
        where e.id = due.id and a.appid = e.appid
        returning e.id, e.appid, e.type as "event_type: EventType", e.subject_id, e.payload,
                  e.attempts, e.created_at, a.webhook_url as url, a.webhook_secret as secret
        "#,
        now,
        limit,
        hold_secs
    )
    .fetch_all(pool)
    .await
}

/// How one attempt ended.
pub enum Attempted<'a> {
    /// A 2xx answer.
    Delivered,
    /// Anything else: due again at `retry_at`, or given up (`None`: 24 hours are over).
    Failed {
        error: &'a str,
        retry_at: Option<DateTime<Utc>>,
    },
    /// The app no longer has a webhook.
    Dropped,
}

/// Records an attempt, keeping the body first sent so that retries repeat it.
pub async fn record_attempt(
    pool: &PgPool,
    id: Uuid,
    payload: Option<&Value>,
    attempted: Attempted<'_>,
) -> sqlx::Result<()> {
    let (status, error, retry_at) = match attempted {
        Attempted::Delivered => ("delivered", None, None),
        Attempted::Failed {
            error,
            retry_at: Some(at),
        } => ("pending", Some(error), Some(at)),
        Attempted::Failed {
            error,
            retry_at: None,
        } => ("expired", Some(error), None),
        Attempted::Dropped => ("dropped", None, None),
    };
    sqlx::query!(
        r#"
        update webhook_events set
            status = $2,
            payload = coalesce(payload, $3),
            last_error = $4,
            next_attempt_at = coalesce($5, next_attempt_at),
            finished_at = case when $2 = 'pending' then null else now() end
        where id = $1
        "#,
        id,
        status,
        payload,
        error,
        retry_at
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Daily clean-up: finished events are kept a week.
pub async fn purge_finished(pool: &PgPool) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        r#"delete from webhook_events
           where status <> 'pending' and finished_at < now() - interval '7 days'"#
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Events not delivered yet, per app (apps with none are absent): the webhook backlog.
pub async fn pending_per_app(pool: &PgPool) -> sqlx::Result<Vec<(String, i64)>> {
    let rows = sqlx::query!(
        r#"
        select appid, count(*) as "pending!" from webhook_events
        where status = 'pending' group by appid
        "#
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.appid, r.pending)).collect())
}
