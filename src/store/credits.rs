//! The credit pool: formIds / prepay_ids (template messages) and subscription grants
//! (subscribe messages). Claiming lives with the deliveries (`store::deliveries`), where it
//! happens in the same statement that moves a delivery to `sending`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::domain::formid::Credit;

/// How long consumed formIds are kept (so a re-posted one still counts as a duplicate).
pub const CONSUMED_RETENTION_DAYS: i32 = 30;

pub struct NewCredit<'a> {
    pub appid: &'a str,
    pub user_id: i64,
    pub credit: &'a Credit,
}

/// Stores credits of any apps in one multi-row statement; returns the (user id, value)
/// pairs that were new (the rest were already stored). `rows` must not repeat a pair.
pub async fn insert(pool: &PgPool, rows: &[NewCredit<'_>]) -> sqlx::Result<Vec<(i64, String)>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut appids = Vec::with_capacity(rows.len());
    let mut user_ids = Vec::with_capacity(rows.len());
    let mut values = Vec::with_capacity(rows.len());
    let mut kinds = Vec::with_capacity(rows.len());
    let mut uses = Vec::with_capacity(rows.len());
    let mut created = Vec::with_capacity(rows.len());
    let mut expires = Vec::with_capacity(rows.len());
    for row in rows {
        appids.push(row.appid);
        user_ids.push(row.user_id);
        values.push(row.credit.value.as_str());
        kinds.push(row.credit.kind.as_str());
        uses.push(row.credit.uses);
        created.push(row.credit.created_at);
        expires.push(row.credit.expires_at);
    }
    // One array per column keeps one SQL text (one prepared statement) for any batch size.
    // A formId is unique per user (WeChat ties it to the user who submitted the form).
    let inserted = sqlx::query!(
        r#"
        insert into formids (appid, user_id, form_id, kind, uses_left, created_at, expires_at)
        select a, u, v, k, n, c, e
        from unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::smallint[],
                    $6::timestamptz[], $7::timestamptz[])
             as t(a, u, v, k, n, c, e)
        on conflict (user_id, form_id) do nothing
        returning user_id, form_id
        "#,
        &appids as &[&str],
        &user_ids,
        &values as &[&str],
        &kinds as &[&str],
        &uses,
        &created as &[DateTime<Utc>],
        &expires as &[DateTime<Utc>],
    )
    .fetch_all(pool)
    .await?;
    Ok(inserted
        .into_iter()
        .map(|r| (r.user_id, r.form_id))
        .collect())
}

/// Adds one send per accepted template to the user's grants.
pub async fn grant_subscriptions(
    pool: &PgPool,
    user_id: i64,
    template_ids: &[String],
) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        r#"
        insert into subscription_grants (user_id, template_id, remaining)
        select $1, t, count(*)::int from unnest($2::text[]) as t group by t
        on conflict (user_id, template_id) do update
            set remaining = subscription_grants.remaining + excluded.remaining, updated_at = now()
        "#,
        user_id,
        template_ids
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// The user switched these templates off: nothing left to send.
pub async fn revoke_subscriptions(
    pool: &PgPool,
    user_id: i64,
    template_ids: &[String],
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        update subscription_grants set remaining = 0, updated_at = now()
        where user_id = $1 and template_id = any($2::text[]) and remaining > 0
        "#,
        user_id,
        template_ids
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// One app's usable credits, for the `/metrics` gauges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSize {
    pub appid: String,
    pub usable_formids: i64,
    /// Usable formIds that expire within the next 24 hours: spend them or lose them.
    pub expiring_within_24h: i64,
    pub grants: i64,
}

/// Every app's usable credits in one grouped query (not one count per app).
pub async fn pool_sizes(pool: &PgPool) -> sqlx::Result<Vec<PoolSize>> {
    sqlx::query_as!(
        PoolSize,
        r#"
        select a.appid as "appid!", coalesce(v.valid, 0) as "usable_formids!",
               coalesce(v.expiring, 0) as "expiring_within_24h!",
               coalesce(g.grants, 0)::bigint as "grants!"
        from apps a
        left join (select u.appid, count(*) as valid,
                          count(*) filter (where f.expires_at <= now() + interval '24 hours')
                              as expiring
                   from formids f join users u on u.id = f.user_id
                   where f.uses_left > 0 and not f.invalid and f.expires_at > now()
                   group by u.appid) v on v.appid = a.appid
        left join (select u.appid, sum(g.remaining) as grants
                   from subscription_grants g join users u on u.id = g.user_id
                   group by u.appid) g on g.appid = a.appid
        "#
    )
    .fetch_all(pool)
    .await
}

#[derive(Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PoolStats {
    pub users: i64,
    pub users_with_valid_formid: i64,
    pub valid_formids: i64,
    pub expiring_within_24h: i64,
    pub consumed: i64,
    pub invalid: i64,
    pub subscription_grants: i64,
}

pub async fn stats(pool: &PgPool, appid: &str) -> sqlx::Result<PoolStats> {
    let r = sqlx::query!(
        r#"
        with f as (
            -- through the app's users: formIds are indexed by user
            select f.user_id, f.expires_at, f.uses_left, f.invalid,
                   (f.uses_left > 0 and not f.invalid and f.expires_at > now()) as valid
            from users u join formids f on f.user_id = u.id
            where u.appid = $1
        )
        select
            (select count(*) from users where appid = $1) as "users!",
            (select count(distinct user_id) from f where valid) as "users_with_valid_formid!",
            (select count(*) from f where valid) as "valid_formids!",
            (select count(*) from f where valid and expires_at < now() + interval '24 hours') as "expiring_within_24h!",
            (select count(*) from f where uses_left = 0 and not invalid) as "consumed!",
            (select count(*) from f where invalid) as "invalid!",
            (select coalesce(sum(g.remaining), 0)::bigint from subscription_grants g
               join users u on u.id = g.user_id where u.appid = $1) as "subscription_grants!"
        "#,
        appid
    )
    .fetch_one(pool)
    .await?;
    Ok(PoolStats {
        users: r.users,
        users_with_valid_formid: r.users_with_valid_formid,
        valid_formids: r.valid_formids,
        expiring_within_24h: r.expiring_within_24h,
        consumed: r.consumed,
        invalid: r.invalid,
        subscription_grants: r.subscription_grants,
    })
}

/// Deletes credits that can never be sent again, walking the table in primary-key ranges
/// so each statement is short (no long transaction holds back vacuum) and needs no index
/// beyond the key. Returns how many rows went.
pub async fn purge_dead(pool: &PgPool) -> sqlx::Result<u64> {
    const RANGE: i64 = 50_000;
    // From the oldest row left, not from id 0: the ranges already emptied on earlier days
    // would be walked again, more of them every day.
    let ids = sqlx::query!(
        r#"select coalesce(min(id), 1) - 1 as "low!", coalesce(max(id), 0) as "max!"
           from formids"#
    )
    .fetch_one(pool)
    .await?;
    let max_id = ids.max;
    let mut total = 0;
    let mut low = ids.low;
    while low <= max_id {
        total += sqlx::query!(
            r#"
            delete from formids
            where id > $1 and id <= $2
              and (expires_at < now()
                   or ((uses_left = 0 or invalid)
                       and coalesce(last_used_at, received_at) < now() - make_interval(days => $3)))
            "#,
            low,
            low + RANGE,
            CONSUMED_RETENTION_DAYS
        )
        .execute(pool)
        .await?
        .rows_affected();
        low += RANGE;
    }
    sqlx::query!("delete from push_events_seen where seen_at < now() - interval '1 day'")
        .execute(pool)
        .await?;
    Ok(total)
}
