//! Deliveries: claiming a batch (with its credits, in one statement), recording outcomes
//! (with their credit side effects, in one transaction), recovery and listing. The claims
//! are meant for `db::claim_pool` connections, which plan them for their parameters.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::campaign::FormidPick;
use crate::domain::delivery::{DeliveryStatus, ShownDeliveryStatus};

#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub user_id: i64,
    pub openid: String,
    /// `Sending`, or already final: `NoFormid` / `NoQuota` / `Failed` (also for data
    /// that breaks its template's rules).
    pub status: DeliveryStatus,
    pub formid_id: Option<i64>,
    pub form_id: Option<String>,
    pub formids_tried: i16,
    pub attempts: i16,
    pub outcome_unknown: bool,
    pub vars: Option<Value>,
}

/// Claims up to `limit` pending deliveries of a template run with ids above `after_id`
/// (the sender's cursor), each with the user's best
/// usable formId (consumed in the same statement). A delivery that already holds a formId
/// (an unknown outcome being retried) keeps it. Users without one end `no_formid`.
pub async fn claim_template_batch(
    pool: &PgPool,
    run_id: Uuid,
    limit: i64,
    formid_pick: FormidPick,
    lease_secs: f64,
    after_id: i64,
) -> sqlx::Result<Vec<Claimed>> {
    sqlx::query_as!(
        Claimed,
        r#"
        with picked as (
            select d.id, d.user_id, d.formid_id, a.vars
            from deliveries d
            left join campaign_audience a on a.campaign_id = d.campaign_id and a.user_id = d.user_id
            where d.run_id = $1 and d.id > $5 and d.status = 'pending'
              and d.next_attempt_at <= now()
            order by d.id
            limit $2
            for update of d skip locked
        ),
        -- One row per picked delivery: its held formId, or the user's best usable one.
        credit as (
            select p.id as delivery_id, p.vars, f.id as formid_id, f.form_id
            from picked p
            left join lateral (
                select f.id, f.form_id from formids f
                where p.formid_id is null and f.user_id = p.user_id
                  and f.uses_left > 0 and not f.invalid
                  -- not one that may expire before WeChat sees it
                  and f.expires_at > now() + interval '1 minute'
                order by case when $3::text = 'expiring_first' then f.expires_at end asc,
                         f.created_at desc
                limit 1
                for update skip locked
            ) f on true
        ),
        consumed as (
            update formids f set uses_left = f.uses_left - 1, last_used_at = now()
            from credit c where f.id = c.formid_id
            returning f.id
        )
        update deliveries d set
            status = case
                when coalesce(d.formid_id, c.formid_id) is not null then 'sending'
                when d.formids_tried > 0 then 'failed'
                else 'no_formid' end,
            formid_id = coalesce(d.formid_id, c.formid_id),
            form_id = coalesce(c.form_id, d.form_id),
            formids_tried = d.formids_tried + (case when c.formid_id is null then 0 else 1 end),
            lease_until = now() + make_interval(secs => $4),
            updated_at = now()
        from credit c
        where d.id = c.delivery_id
        returning d.id, d.user_id, d.openid, d.status as "status: DeliveryStatus", d.formid_id,
                  d.form_id, d.formids_tried, d.attempts, d.outcome_unknown, c.vars as "vars?"
        "#,
        run_id,
        limit,
        formid_pick.as_str(),
        lease_secs,
        after_id
    )
    .fetch_all(pool)
    .await
}

/// Claims up to `limit` pending deliveries of a subscribe run with ids above `after_id`,
/// each spending one of the
/// user's grants for the template. Users without one end `no_quota`.
pub async fn claim_subscribe_batch(
    pool: &PgPool,
    run_id: Uuid,
    limit: i64,
    template_id: &str,
    lease_secs: f64,
    after_id: i64,
) -> sqlx::Result<Vec<Claimed>> {
    sqlx::query_as!(
        Claimed,
        r#"
        with picked as (
            select d.id, d.user_id, a.vars
            from deliveries d
            left join campaign_audience a on a.campaign_id = d.campaign_id and a.user_id = d.user_id
            where d.run_id = $1 and d.id > $5 and d.status = 'pending'
              and d.next_attempt_at <= now()
            order by d.id
            limit $2
            for update of d skip locked
        ),
        granted as (
            update subscription_grants g set remaining = g.remaining - 1, updated_at = now()
            from picked p
            where g.user_id = p.user_id and g.template_id = $3 and g.remaining > 0
            returning g.user_id
        )
        update deliveries d set
            status = case when gr.user_id is null then 'no_quota' else 'sending' end,
            lease_until = now() + make_interval(secs => $4),
            updated_at = now()
        from picked p left join granted gr on gr.user_id = p.user_id
        where d.id = p.id
        returning d.id, d.user_id, d.openid, d.status as "status: DeliveryStatus", d.formid_id,
                  d.form_id, d.formids_tried, d.attempts, d.outcome_unknown, p.vars as "vars?"
        "#,
        run_id,
        limit,
        template_id,
        lease_secs,
        after_id
    )
    .fetch_all(pool)
    .await
}

/// A pending delivery read before its claim, so that its data can be rendered and
/// checked first.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: i64,
    pub openid: String,
    pub vars: Option<Value>,
}

/// Up to `limit` pending deliveries of a run with ids above `after_id`, in claim order,
/// with their users' placeholder values. Nothing is locked: the claim re-checks each.
pub async fn pending_batch(
    pool: &PgPool,
    run_id: Uuid,
    limit: i64,
    after_id: i64,
) -> sqlx::Result<Vec<Pending>> {
    sqlx::query_as!(
        Pending,
        r#"
        select d.id, d.openid, a.vars as "vars?"
        from deliveries d
        left join campaign_audience a on a.campaign_id = d.campaign_id and a.user_id = d.user_id
        where d.run_id = $1 and d.id > $2 and d.status = 'pending'
          and d.next_attempt_at <= now()
        order by d.id
        limit $3
        "#,
        run_id,
        after_id,
        limit
    )
    .fetch_all(pool)
    .await
}

/// Claims the subscribe deliveries `ids` (read by `pending_batch`) whose rendered data
/// was checked: `problems[i]` is why the data of `ids[i]` breaks its template's rules, or
/// `None`. A delivery with a problem ends `failed` (`invalid_data`) and spends nothing;
/// the others spend one grant each, as `claim_subscribe_batch` does, in the same
/// statement. Deliveries another sender took meanwhile are skipped.
pub async fn claim_subscribe_checked(
    pool: &PgPool,
    run_id: Uuid,
    template_id: &str,
    lease_secs: f64,
    ids: &[i64],
    problems: &[Option<String>],
) -> sqlx::Result<Vec<Claimed>> {
    let (Some(&first), Some(&last)) = (ids.iter().min(), ids.iter().max()) else {
        return Ok(Vec::new());
    };
    sqlx::query_as!(
        Claimed,
        r#"
        with locked as (
            -- The id range lets the plan read only the batch's stretch of the run's
            -- pending deliveries, whatever the statistics say: joined to the ids alone, it
            -- read all of them for every batch (measured: 14 ms a batch at 30,000).
            select d.id, d.user_id
            from deliveries d
            where d.run_id = $3 and d.status = 'pending'
              and d.id between $6 and $7 and d.id = any($1::bigint[])
              and d.next_attempt_at <= now()
            for update of d skip locked
        ),
        picked as (
            select l.id, l.user_id, i.problem
            from locked l
            join unnest($1::bigint[], $2::text[]) as i(id, problem) on i.id = l.id
        ),
        granted as (
            update subscription_grants g set remaining = g.remaining - 1, updated_at = now()
            from picked p
            where p.problem is null
              and g.user_id = p.user_id and g.template_id = $4 and g.remaining > 0
            returning g.user_id
        )
        update deliveries d set
            status = case when p.problem is not null then 'failed'
                          when gr.user_id is null then 'no_quota'
                          else 'sending' end,
            errcode = case when p.problem is null then d.errcode else 'invalid_data' end,
            errmsg = coalesce(p.problem, d.errmsg),
            lease_until = now() + make_interval(secs => $5),
            updated_at = now()
        from picked p left join granted gr on gr.user_id = p.user_id
        where d.id = p.id
        returning d.id, d.user_id, d.openid, d.status as "status: DeliveryStatus", d.formid_id,
                  d.form_id, d.formids_tried, d.attempts, d.outcome_unknown,
                  null::jsonb as "vars?"
        "#,
        ids,
        problems as &[Option<String>],
        run_id,
        template_id,
        lease_secs,
        first,
        last
    )
    .fetch_all(pool)
    .await
}

/// The final word on one claimed delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub id: i64,
    /// `Sent`, `Failed`, or `Pending` (to be claimed again).
    pub status: DeliveryStatus,
    pub errcode: Option<String>,
    pub errmsg: Option<String>,
    pub attempts: i16,
    pub msg_id: Option<String>,
    pub outcome_unknown: bool,
    /// Forget the formId the delivery held (it was returned or marked invalid).
    pub drop_formid: bool,
    /// For `pending`: claimable again after this many seconds.
    pub retry_in_secs: f64,
}

/// Side effects on the credit pool that go with a batch of outcomes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CreditEffects {
    /// formIds WeChat called wrong or used (41028 / 41029).
    pub invalidate_formids: Vec<i64>,
    /// formIds claimed but not spent (campaign-level error, quota): one use back.
    pub return_formids: Vec<i64>,
    /// Users whose grant for the template was claimed but not spent.
    pub return_grants: Vec<i64>,
    /// Users WeChat says hold no grant (43101): our count was wrong.
    pub zero_grants: Vec<i64>,
}

pub async fn record(
    pool: &PgPool,
    outcomes: &[Outcome],
    effects: &CreditEffects,
    template_id: &str,
) -> sqlx::Result<()> {
    let mut ids = Vec::with_capacity(outcomes.len());
    let mut statuses = Vec::with_capacity(outcomes.len());
    let mut errcodes = Vec::with_capacity(outcomes.len());
    let mut errmsgs = Vec::with_capacity(outcomes.len());
    let mut attempts = Vec::with_capacity(outcomes.len());
    let mut msg_ids = Vec::with_capacity(outcomes.len());
    let mut unknown = Vec::with_capacity(outcomes.len());
    let mut drop_formid = Vec::with_capacity(outcomes.len());
    let mut retry_in = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        ids.push(o.id);
        statuses.push(o.status.as_str());
        errcodes.push(o.errcode.clone());
        errmsgs.push(o.errmsg.clone());
        attempts.push(o.attempts);
        msg_ids.push(o.msg_id.clone());
        unknown.push(o.outcome_unknown);
        drop_formid.push(o.drop_formid);
        retry_in.push(o.retry_in_secs);
    }
    let mut tx = pool.begin().await?;
    sqlx::query!(
        r#"
        update deliveries d set
            status = o.status, errcode = o.errcode, errmsg = o.errmsg, attempts = o.attempts,
            msg_id = o.msg_id, outcome_unknown = o.unknown,
            formid_id = case when o.drop_formid then null else d.formid_id end,
            form_id = case when o.drop_formid and o.status = 'pending' then null else d.form_id end,
            next_attempt_at = now() + make_interval(secs => o.retry_in),
            lease_until = null, updated_at = now()
        from unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::smallint[], $6::text[],
                    $7::bool[], $8::bool[], $9::float8[])
             as o(id, status, errcode, errmsg, attempts, msg_id, unknown, drop_formid, retry_in)
        where d.id = o.id and d.status = 'sending'
        "#,
        &ids,
        &statuses as &[&str],
        &errcodes as &[Option<String>],
        &errmsgs as &[Option<String>],
        &attempts,
        &msg_ids as &[Option<String>],
        &unknown,
        &drop_formid,
        &retry_in
    )
    .execute(&mut *tx)
    .await?;
    if !effects.invalidate_formids.is_empty() {
        sqlx::query!(
            "update formids set invalid = true where id = any($1)",
            &effects.invalidate_formids
        )
        .execute(&mut *tx)
        .await?;
    }
    if !effects.return_formids.is_empty() {
        sqlx::query!(
            "update formids set uses_left = uses_left + 1 where id = any($1)",
            &effects.return_formids
        )
        .execute(&mut *tx)
        .await?;
    }
    if !effects.return_grants.is_empty() {
        sqlx::query!(
            r#"update subscription_grants set remaining = remaining + 1, updated_at = now()
               where template_id = $1 and user_id = any($2)"#,
            template_id,
            &effects.return_grants
        )
        .execute(&mut *tx)
        .await?;
    }
    if !effects.zero_grants.is_empty() {
        sqlx::query!(
            r#"update subscription_grants set remaining = 0, updated_at = now()
               where template_id = $1 and user_id = any($2)"#,
            template_id,
            &effects.zero_grants
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Deliveries whose sender died while they were in flight. A template delivery goes back
/// to pending with the same formId (WeChat's 41029 will tell if it got through); a
/// subscribe delivery cannot be retried safely and fails `unknown_outcome`.
pub async fn recover_stale(pool: &PgPool, appid: &str) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        r#"
        update deliveries d set
            status = case when c.kind = 'template' then 'pending' else 'failed' end,
            outcome_unknown = true,
            errcode = case when c.kind = 'template' then d.errcode else 'unknown_outcome' end,
            errmsg = case when c.kind = 'template' then d.errmsg
                          else 'the sender stopped while this message was in flight' end,
            lease_until = null, updated_at = now()
        from campaigns c
        where c.id = d.campaign_id and c.appid = $1
          and d.status = 'sending' and d.lease_until < now()
        "#,
        appid
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Records WeChat's `subscribe_msg_sent_event` outcome on the delivery it belongs to.
pub async fn record_push_status(pool: &PgPool, msg_id: &str, status: &str) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        "update deliveries set push_status = $2, updated_at = now() where msg_id = $1",
        msg_id,
        status
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: i64,
    pub run_id: Uuid,
    pub openid: String,
    pub status: ShownDeliveryStatus,
    pub form_id: Option<String>,
    pub errcode: Option<String>,
    pub errmsg: Option<String>,
    pub attempts: i16,
    pub msg_id: Option<String>,
    pub push_status: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// One page of a campaign's deliveries, in id order after `after`.
pub async fn page(
    pool: &PgPool,
    campaign_id: Uuid,
    status: Option<ShownDeliveryStatus>,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<DeliveryRow>> {
    sqlx::query_as!(
        DeliveryRow,
        r#"
        select id, run_id, openid,
               case when status = 'sending' then 'pending' else status end
                   as "status!: ShownDeliveryStatus",
               form_id, errcode, errmsg, attempts, msg_id, push_status, updated_at
        from deliveries
        where campaign_id = $1 and id > $3
          and ($2::text is null or status = $2 or ($2 = 'pending' and status = 'sending'))
        order by id
        limit $4
        "#,
        campaign_id,
        status as Option<ShownDeliveryStatus>,
        after,
        limit
    )
    .fetch_all(pool)
    .await
}
