//! Seeding in bulk SQL: the users, formIds, campaigns and deliveries a phase needs but does
//! not measure (the pgbench baseline and the claim phase start from them).

use sqlx::PgPool;
use uuid::Uuid;

use crate::{SECRET, TEMPLATE};

/// Seeds `users` users of `appid` with `per_user` usable formIds each (created a minute
/// apart, freshest last), in set-based multi-row inserts. Returns the users' id range.
pub async fn seed_users_and_formids(
    pool: &PgPool,
    appid: &str,
    prefix: &str,
    users: usize,
    per_user: i32,
) -> anyhow::Result<(i64, i64)> {
    sqlx::query(
        "insert into apps (appid, secret, send_rate_per_sec) values ($1, $2, 100000)
         on conflict (appid) do nothing",
    )
    .bind(appid)
    .bind(SECRET)
    .execute(pool)
    .await?;
    // Chunks keep each statement's transaction short.
    let chunk = 50_000usize;
    let mut start = 0usize;
    while start < users {
        let end = (start + chunk).min(users);
        sqlx::query(
            "insert into users (appid, openid)
             select $1, $2 || g from generate_series($3::bigint, $4::bigint) g",
        )
        .bind(appid)
        .bind(prefix)
        .bind(start as i64)
        .bind(end as i64 - 1)
        .execute(pool)
        .await?;
        start = end;
    }
    let (min, max): (i64, i64) =
        sqlx::query_as("select min(id), max(id) from users where appid = $1")
            .bind(appid)
            .fetch_one(pool)
            .await?;
    if per_user > 0 {
        let mut lo = min;
        while lo <= max {
            let hi = (lo + chunk as i64 - 1).min(max);
            sqlx::query(
                "insert into formids (appid, user_id, form_id, kind, uses_left, created_at, expires_at)
                 select $1, u.id, md5(u.id::text || '-' || k), 'formid', 1,
                        now() - make_interval(mins => $2::int - k),
                        now() - make_interval(mins => $2::int - k) + interval '7 days'
                 from users u cross join generate_series(1, $2::int) k
                 where u.appid = $1 and u.id between $3 and $4",
            )
            .bind(appid)
            .bind(per_user)
            .bind(lo)
            .bind(hi)
            .execute(pool)
            .await?;
            lo = hi + 1;
        }
    }
    sqlx::raw_sql("vacuum analyze").execute(pool).await?;
    Ok((min, max))
}

/// A running template campaign to every user of `appid`, with one pending delivery each;
/// no scheduler runs on the benchmark database, so only the benchmark claims them.
pub async fn seed_running_run(pool: &PgPool, appid: &str) -> anyhow::Result<Uuid> {
    let campaign_id = Uuid::new_v4();
    let run_id = Uuid::new_v4();
    sqlx::query(
        "insert into campaigns (id, appid, name, kind, template_id, data, audience_type,
                                schedule, timezone, status)
         values ($1, $2, 'claim bench', 'template', $3, '{}'::jsonb, 'all',
                 '{\"type\":\"now\"}'::jsonb, 'Asia/Shanghai', 'running')",
    )
    .bind(campaign_id)
    .bind(appid)
    .bind(TEMPLATE)
    .execute(pool)
    .await?;
    sqlx::query(
        "insert into campaign_runs (id, campaign_id, appid, scheduled_for, status)
         values ($1, $2, $3, now(), 'running')",
    )
    .bind(run_id)
    .bind(campaign_id)
    .bind(appid)
    .execute(pool)
    .await?;
    sqlx::query(
        "insert into deliveries (run_id, campaign_id, user_id, openid)
         select $1, $2, id, openid from users where appid = $3",
    )
    .bind(run_id)
    .bind(campaign_id)
    .bind(appid)
    .execute(pool)
    .await?;
    Ok(run_id)
}

/// Seeds `users` users of the (already registered) `appid`, openids `{prefix}0` ..., each
/// holding `remaining` subscribe grants of every template in `grants`, in set-based
/// multi-row inserts; returns their openids in order. The fake WeChat must be told the
/// same grants (`Sandbox::grant_subscription`) for its sends to succeed.
pub async fn seed_users_with_grants(
    pool: &PgPool,
    appid: &str,
    prefix: &str,
    users: usize,
    grants: &[(&str, i32)],
) -> anyhow::Result<Vec<String>> {
    let chunk = 50_000usize;
    let mut start = 0usize;
    while start < users {
        let end = (start + chunk).min(users);
        sqlx::query(
            "insert into users (appid, openid)
             select $1, $2 || g from generate_series($3::bigint, $4::bigint) g",
        )
        .bind(appid)
        .bind(prefix)
        .bind(start as i64)
        .bind(end as i64 - 1)
        .execute(pool)
        .await?;
        start = end;
    }
    for (template_id, remaining) in grants {
        sqlx::query(
            "insert into subscription_grants (user_id, template_id, remaining)
             select id, $2, $3 from users where appid = $1",
        )
        .bind(appid)
        .bind(template_id)
        .bind(remaining)
        .execute(pool)
        .await?;
    }
    sqlx::raw_sql("analyze users; analyze subscription_grants")
        .execute(pool)
        .await?;
    Ok((0..users).map(|i| format!("{prefix}{i}")).collect())
}
