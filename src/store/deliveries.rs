//! Deliveries: claiming a batch (with its credits, in one statement), recording outcomes
//! (with their credit side effects, in one transaction), recovery and listing. The claims
//! are meant for `db::claim_pool` connections, which plan them for their parameters.
//!
//! Credits are claimed by the database function `claim_credits` (migrations), the one
//! claim of formIds, grants and frequency-cap slots that campaign deliveries, triggered
//! messages and test sends share; the statements here pick the deliveries around it.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::credits::CreditEffects;
use crate::domain::campaign::{CampaignKind, FormidPick};
use crate::domain::delivery::{DeliveryStatus, ShownDeliveryStatus};

#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub user_id: i64,
    pub openid: String,
    /// `Sending`, or already final: `NoFormid` / `NoQuota` / `Capped` / `Failed` (also for
    /// data that breaks its template's rules).
    pub status: DeliveryStatus,
    pub formid_id: Option<i64>,
    pub form_id: Option<String>,
    pub formids_tried: i16,
    pub attempts: i16,
    pub outcome_unknown: bool,
    /// Its slot in the user's frequency-cap window, if it holds one.
    pub slot_at: Option<DateTime<Utc>>,
    /// Why a delivery that ended `failed` at the claim failed (WeChat's errcode for the
    /// formIds it refused earlier, or `invalid_data`).
    pub errcode: Option<String>,
    pub vars: Option<Value>,
}

/// What every claim of one run's deliveries shares.
#[derive(Debug, Clone, Copy)]
pub struct RunClaim<'a> {
    pub appid: &'a str,
    pub run_id: Uuid,
    pub kind: CampaignKind,
    pub template_id: &'a str,
    pub formid_pick: FormidPick,
    /// How long the claimed deliveries belong to this sender.
    pub lease_secs: f64,
}

/// Claims up to `limit` pending deliveries of the run with ids above `after_id` (the
/// sender's cursor), each with its user's credit (`claim_credits`, in the same
/// statement): template runs the best usable formId by `formid_pick`, subscribe runs one
/// grant of the template. The app's frequency cap applies: a user whose window is full
/// ends `capped` and keeps the credit. A delivery that already holds a formId (an unknown
/// outcome being retried) keeps it and its slot. Users without a credit end `no_formid` /
/// `no_quota` (`failed` when WeChat refused formIds of theirs in this run).
pub async fn claim_batch(
    pool: &PgPool,
    claim: &RunClaim<'_>,
    limit: i64,
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
        fresh as (select id, user_id from picked where formid_id is null),
        credit as (
            select * from claim_credits(
                $6,
                array(select id from fresh order by id),
                array(select user_id from fresh order by id),
                array(select $7::text from fresh),
                array(select $8::text from fresh),
                array(select $3::text from fresh),
                true)
        )
        update deliveries d set
            status = case
                when d.formid_id is not null or c.formid_id is not null or c.granted
                    then 'sending'
                when c.capped then 'capped'
                when $7 = 'subscribe' then 'no_quota'
                when d.formids_tried > 0 then 'failed'
                else 'no_formid' end,
            formid_id = coalesce(d.formid_id, c.formid_id),
            form_id = coalesce(c.form_id, d.form_id),
            formids_tried = d.formids_tried + (case when c.formid_id is null then 0 else 1 end),
            slot_at = case when d.formid_id is not null then d.slot_at else c.slot_at end,
            lease_until = now() + make_interval(secs => $4),
            updated_at = now()
        from picked p left join credit c on c.key = p.id
        where d.id = p.id
        returning d.id, d.user_id, d.openid, d.status as "status: DeliveryStatus", d.formid_id,
                  d.form_id, d.formids_tried, d.attempts, d.outcome_unknown, d.slot_at,
                  d.errcode, p.vars as "vars?"
        "#,
        claim.run_id,
        limit,
        claim.formid_pick.as_str(),
        claim.lease_secs,
        after_id,
        claim.appid,
        claim.kind.as_str(),
        claim.template_id,
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

/// Claims the deliveries `ids` (read by `pending_batch`) of a subscribe run whose
/// rendered data was checked: `problems[i]` is why the data of `ids[i]` breaks its
/// template's rules, or `None`. A delivery with a problem ends `failed` (`invalid_data`)
/// and spends nothing; the others claim a grant as `claim_batch` does (the frequency cap
/// included), in the same statement. Deliveries another sender took meanwhile are skipped.
pub async fn claim_checked(
    pool: &PgPool,
    claim: &RunClaim<'_>,
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
        fresh as (select id, user_id from picked where problem is null),
        credit as (
            select * from claim_credits(
                $8,
                array(select id from fresh order by id),
                array(select user_id from fresh order by id),
                array(select 'subscribe'::text from fresh),
                array(select $4::text from fresh),
                array(select 'freshest'::text from fresh),
                true)
        )
        update deliveries d set
            status = case when p.problem is not null then 'failed'
                          when c.granted then 'sending'
                          when c.capped then 'capped'
                          else 'no_quota' end,
            errcode = case when p.problem is null then d.errcode else 'invalid_data' end,
            errmsg = coalesce(p.problem, d.errmsg),
            slot_at = c.slot_at,
            lease_until = now() + make_interval(secs => $5),
            updated_at = now()
        from picked p left join credit c on c.key = p.id
        where d.id = p.id
        returning d.id, d.user_id, d.openid, d.status as "status: DeliveryStatus", d.formid_id,
                  d.form_id, d.formids_tried, d.attempts, d.outcome_unknown, d.slot_at,
                  d.errcode, null::jsonb as "vars?"
        "#,
        ids,
        problems as &[Option<String>],
        claim.run_id,
        claim.template_id,
        claim.lease_secs,
        first,
        last,
        claim.appid,
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

/// Records a sent batch: its credit effects (`credits::apply_effects`), then every outcome,
/// in one transaction.
pub async fn record(
    pool: &PgPool,
    outcomes: &[Outcome],
    effects: &CreditEffects,
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
    super::credits::apply_effects(&mut tx, effects).await?;
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
