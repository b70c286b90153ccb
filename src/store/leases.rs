//! Which instance sends for an app: one sender per app keeps its rate limit exact, and a
//! dead owner's lease runs out so another instance takes over. And which instance runs a
//! daily job on a given day.

use sqlx::PgPool;
use uuid::Uuid;

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

/// Whether this caller runs the daily `job` for `day`: true for the first caller of that
/// day only, whatever the number of instances.
pub async fn claim_daily_job(
    pool: &PgPool,
    job: &str,
    day: chrono::NaiveDate,
) -> sqlx::Result<bool> {
    let claimed = sqlx::query_scalar!(
        r#"
        insert into daily_jobs (job, ran_on) values ($1, $2)
        on conflict (job) do update set ran_on = excluded.ran_on
            where daily_jobs.ran_on < excluded.ran_on
        returning job
        "#,
        job,
        day
    )
    .fetch_optional(pool)
    .await?;
    Ok(claimed.is_some())
}
