//! The credit pool: formIds / prepay_ids (template messages) and subscription grants
//! (subscribe messages), and each user's frequency-cap window.
//!
//! Every credit formpush spends is claimed by the database function `claim_credits` (see
//! the migration `send_hygiene`), called from the statement that moves a delivery or a
//! message to `sending` (`store::deliveries`, `store::messages`) and by test sends (here).
//! It also takes the send's slot in the user's window when the app has a frequency cap.
//! What happens to credits and slots afterwards (given back, invalidated, zeroed) is
//! `apply_effects`, shared the same way.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::domain::campaign::{CampaignKind, FormidPick};
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

/// Side effects on the credit pool of recorded sends (campaign deliveries, triggered
/// messages and test sends alike).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CreditEffects {
    /// formIds WeChat called wrong or used (41028 / 41029).
    pub invalidate_formids: Vec<i64>,
    /// formIds claimed but not spent (campaign-level error, quota): one use back.
    pub return_formids: Vec<i64>,
    /// (user, template) grants claimed but not spent: one back each.
    pub return_grants: Vec<(i64, String)>,
    /// (user, template) of users WeChat says hold no grant (43101): our count was wrong.
    pub zero_grants: Vec<(i64, String)>,
    /// (user, slot) of sends that did not reach their user: the slot leaves the user's
    /// frequency-cap window.
    pub forget_slots: Vec<(i64, DateTime<Utc>)>,
}

/// Applies `effects` in the caller's transaction: credits first, then windows in user
/// order (the order every claim locks them in, so the two cannot deadlock).
pub async fn apply_effects(db: &mut PgConnection, effects: &CreditEffects) -> sqlx::Result<()> {
    if !effects.invalidate_formids.is_empty() {
        sqlx::query!(
            "update formids set invalid = true where id = any($1)",
            &effects.invalidate_formids
        )
        .execute(&mut *db)
        .await?;
    }
    if !effects.return_formids.is_empty() {
        sqlx::query!(
            "update formids set uses_left = uses_left + 1 where id = any($1)",
            &effects.return_formids
        )
        .execute(&mut *db)
        .await?;
    }
    for (grants, zero) in [
        (&effects.return_grants, false),
        (&effects.zero_grants, true),
    ] {
        if grants.is_empty() {
            continue;
        }
        let (users, templates): (Vec<i64>, Vec<String>) = grants.iter().cloned().unzip();
        sqlx::query!(
            r#"
            update subscription_grants g set
                remaining = case when $3 then 0 else g.remaining + t.n end, updated_at = now()
            from (select u, tpl, count(*)::int as n
                  from unnest($1::bigint[], $2::text[]) as x(u, tpl) group by u, tpl) t
            where g.user_id = t.u and g.template_id = t.tpl
            "#,
            &users,
            &templates,
            zero
        )
        .execute(&mut *db)
        .await?;
    }
    if !effects.forget_slots.is_empty() {
        let (users, slots): (Vec<i64>, Vec<DateTime<Utc>>) =
            effects.forget_slots.iter().cloned().unzip();
        sqlx::query!(
            r#"
            with gone as (
                select u, array_agg(t) as slots
                from unnest($1::bigint[], $2::timestamptz[]) as x(u, t) group by u
            ),
            locked as materialized (
                select s.user_id from user_sends s join gone g on g.u = s.user_id
                order by s.user_id
                for update of s
            )
            update user_sends s set recent = forget_sends(s.recent, g.slots)
            from gone g
            where s.user_id = g.u and s.user_id in (select user_id from locked)
            "#,
            &users,
            &slots as &[DateTime<Utc>]
        )
        .execute(&mut *db)
        .await?;
    }
    Ok(())
}

/// One test send's credit, as `claim_for_test` claimed it.
#[derive(Debug, Clone)]
pub struct TestClaim {
    pub openid: String,
    /// `None`: formpush does not know this user.
    pub user_id: Option<i64>,
    pub formid_id: Option<i64>,
    pub form_id: Option<String>,
    pub granted: bool,
    pub slot_at: Option<DateTime<Utc>>,
}

/// Claims a credit of the campaign's kind for each of `openids` (distinct users of
/// `appid`), as a triggered message does: never capped, but a slot in the user's window
/// when the app has a cap.
pub async fn claim_for_test(
    pool: &PgPool,
    appid: &str,
    openids: &[String],
    kind: CampaignKind,
    template_id: &str,
    formid_pick: FormidPick,
) -> sqlx::Result<Vec<TestClaim>> {
    sqlx::query_as!(
        TestClaim,
        r#"
        with asked as (
            select o.openid, o.n, u.id as user_id
            from unnest($2::text[]) with ordinality as o(openid, n)
            left join users u on u.appid = $1 and u.openid = o.openid
        ),
        credit as (
            select * from claim_credits(
                $1,
                array(select n from asked order by n),
                array(select user_id from asked order by n),
                array(select $3::text from asked),
                array(select $4::text from asked),
                array(select $5::text from asked),
                false)
        )
        select a.openid as "openid!", a.user_id as "user_id?", c.formid_id, c.form_id,
               coalesce(c.granted, false) as "granted!", c.slot_at
        from asked a left join credit c on c.key = a.n
        order by a.n
        "#,
        appid,
        openids,
        kind.as_str(),
        template_id,
        formid_pick.as_str(),
    )
    .fetch_all(pool)
    .await
}

/// Records what test sends did to the credit pool (they leave no other record).
pub async fn settle_test(pool: &PgPool, effects: &CreditEffects) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    apply_effects(&mut tx, effects).await?;
    tx.commit().await
}

/// What a campaign would find at `at` among its audience, for a preview.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// Users in the audience (a listed audience counts openids formpush does not know).
    pub audience: i64,
    /// Audience users holding a credit that will still be usable at `at`.
    pub reachable: i64,
    /// Of `reachable`, those whose frequency-cap window will be full at `at`.
    pub capped: i64,
}

/// Counts the audience of a campaign of `appid` (every user when `openids` is `None`)
/// that would hold a credit at `at`: a formId with a use left, not invalid and not expiring
/// within a minute of `at` (the claim's rule), or a grant of `template_id`. With a cap, the
/// users among them whose window already holds `max` sends after `at - per_secs`.
pub async fn reach(
    pool: &PgPool,
    appid: &str,
    openids: Option<&[String]>,
    kind: CampaignKind,
    template_id: &str,
    at: DateTime<Utc>,
    cap: Option<crate::domain::hygiene::FrequencyCap>,
) -> sqlx::Result<Reach> {
    let r = sqlx::query!(
        r#"
        with audience as (
            select u.id from users u where $2::text[] is null and u.appid = $1
            union all
            select u.id from unnest($2::text[]) as o(openid)
            left join users u on u.appid = $1 and u.openid = o.openid
            where $2::text[] is not null
        ),
        reachable as (
            select a.id from audience a
            where case when $3 = 'template' then exists (
                      select 1 from formids f
                      where f.user_id = a.id and f.uses_left > 0 and not f.invalid
                        and f.expires_at > $5::timestamptz + interval '1 minute')
                  else exists (
                      select 1 from subscription_grants g
                      where g.user_id = a.id and g.template_id = $4 and g.remaining > 0)
                  end
        )
        select (select count(*) from audience) as "audience!",
               (select count(*) from reachable) as "reachable!",
               (select count(*) from reachable r join user_sends s on s.user_id = r.id
                where $6::integer is not null
                  and sends_since(s.recent, $5::timestamptz - make_interval(secs => $7::integer)) >= $6)
                   as "capped!"
        "#,
        appid,
        openids as Option<&[String]>,
        kind.as_str(),
        template_id,
        at,
        cap.map(|c| c.max),
        cap.map(|c| c.per_secs),
    )
    .fetch_one(pool)
    .await?;
    Ok(Reach {
        audience: r.audience,
        reachable: r.reachable,
        capped: r.capped,
    })
}

/// Daily clean-up: frequency-cap windows whose every send is older than the longest window
/// an app may set (30 days) can never hold a user back again.
pub async fn purge_old_windows(pool: &PgPool) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        r#"
        delete from user_sends
        where sends_since(recent, now() - make_interval(secs => $1)) = 0
        "#,
        f64::from(crate::domain::hygiene::MAX_CAP_SECS)
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
