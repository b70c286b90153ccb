//! Triggered messages: creation (with the credit of a send-now message claimed in the same
//! statement, and the idempotency key in the same transaction), reads, cancellation, and
//! what the app's sender does with them: claim (credits in the same statement), record
//! (outcomes, credit effects and webhook events in one transaction), recover.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use super::credits::CreditEffects;
use crate::domain::campaign::{CampaignKind, FormidPick};
use crate::domain::message::{MessageSpec, MessageStatus, ShownMessageStatus};

/// A message as stored, minus the sender's bookkeeping.
#[derive(Debug, Clone)]
pub struct MessageRow {
    pub id: Uuid,
    pub seq: i64,
    pub appid: String,
    pub openid: String,
    pub kind: CampaignKind,
    pub template_id: String,
    pub page: Option<String>,
    pub data: Value,
    pub emphasis_keyword: Option<String>,
    pub miniprogram_state: Option<String>,
    pub lang: Option<String>,
    pub formid_pick: FormidPick,
    pub idempotency_key: Option<String>,
    pub send_at: Option<DateTime<Utc>>,
    pub status: MessageStatus,
    pub errcode: Option<String>,
    pub errmsg: Option<String>,
    pub msg_id: Option<String>,
    pub push_status: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What `create` did.
#[derive(Debug)]
pub enum Created {
    /// A new message: `queued` with its credit (send now) or `scheduled`.
    New(MessageRow),
    /// The idempotency key is taken by this message, created by the same body.
    Repeat(MessageRow),
    /// The idempotency key is taken by a message created by a different body.
    KeyConflict,
    /// Send now, but the user is unknown or holds no usable credit: nothing was stored.
    NoCredit,
}

/// Creates a message of an existing app. A send-now message claims the user's credit in
/// the statement that inserts it; with an idempotency key, the key is taken first in the
/// same transaction, so that concurrent repeats (on any instance) wait for each other and
/// only the first creates a message.
pub async fn create(
    pool: &PgPool,
    appid: &str,
    spec: &MessageSpec,
    body_hash: &[u8; 32],
    now: DateTime<Utc>,
) -> sqlx::Result<Created> {
    let Some(key) = &spec.idempotency_key else {
        return Ok(
            match insert(pool, appid, spec, Uuid::new_v4(), now).await? {
                Some(row) => Created::New(row),
                None => Created::NoCredit,
            },
        );
    };
    // A key whose message is found gone (a purge between two statements) is tried again.
    for _ in 0..3 {
        let id = Uuid::new_v4();
        let mut tx = pool.begin().await?;
        let taken = sqlx::query_scalar!(
            r#"
            insert into message_keys (appid, key, message_id, body_hash) values ($1, $2, $3, $4)
            on conflict (appid, key) do update
                set message_id = excluded.message_id, body_hash = excluded.body_hash,
                    created_at = now()
                -- unique for 24 hours: an older key is free again
                where message_keys.created_at < now() - interval '24 hours'
            returning message_id
            "#,
            appid,
            key,
            id,
            &body_hash[..]
        )
        .fetch_optional(&mut *tx)
        .await?;
        if taken.is_some() {
            return Ok(match insert(&mut *tx, appid, spec, id, now).await? {
                Some(row) => {
                    tx.commit().await?;
                    Created::New(row)
                }
                None => {
                    // Nothing is kept of a refused request, not even its key.
                    tx.rollback().await?;
                    Created::NoCredit
                }
            });
        }
        tx.rollback().await?;
        let existing = sqlx::query!(
            r#"select body_hash, message_id from message_keys where appid = $1 and key = $2"#,
            appid,
            key
        )
        .fetch_optional(pool)
        .await?;
        let Some(existing) = existing else { continue };
        if existing.body_hash != body_hash[..] {
            return Ok(Created::KeyConflict);
        }
        if let Some(row) = find(pool, appid, existing.message_id).await? {
            return Ok(Created::Repeat(row));
        }
    }
    Err(sqlx::Error::Protocol(
        "an idempotency key kept changing hands".into(),
    ))
}

/// Inserts the message; for send-now, only together with the user's credit (`None`: none).
async fn insert(
    db: impl PgExecutor<'_>,
    appid: &str,
    spec: &MessageSpec,
    id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<MessageRow>> {
    let c = &spec.content;
    let data = Value::Object(c.data.clone());
    if !spec.sends_now(now) {
        return sqlx::query_as!(
            MessageRow,
            r#"
            insert into messages (id, appid, openid, kind, template_id, page, data, emphasis_keyword,
                miniprogram_state, lang, formid_pick, idempotency_key, send_at, status, due_at)
            values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'scheduled', $13)
            returning id, seq, appid, openid, kind as "kind: CampaignKind", template_id, page, data,
                      emphasis_keyword, miniprogram_state, lang,
                      formid_pick as "formid_pick: FormidPick", idempotency_key, send_at,
                      status as "status: MessageStatus", errcode, errmsg, msg_id, push_status,
                      created_at, updated_at
            "#,
            id,
            appid,
            spec.openid,
            c.kind as CampaignKind,
            c.template_id,
            c.page,
            data,
            c.emphasis_keyword,
            c.miniprogram_state,
            c.lang,
            c.formid_pick as FormidPick,
            spec.idempotency_key,
            spec.send_at,
        )
        .fetch_optional(db)
        .await;
    }
    // Send now: stored only together with the user's credit (`claim_credits`, never
    // capped: a triggered message is not held back, but takes its slot in the user's window).
    sqlx::query_as!(
        MessageRow,
        r#"
        with known as (select id from users where appid = $2 and openid = $3),
        credit as (
            select k.id as user_id, c.*
            from known k,
                 claim_credits($2, array[0::bigint], array[k.id], array[$4::text],
                               array[$5::text], array[$11::text], false) c
            where c.formid_id is not null or c.granted
        )
        insert into messages (id, appid, openid, user_id, kind, template_id, page, data,
            emphasis_keyword, miniprogram_state, lang, formid_pick, idempotency_key, send_at,
            status, formid_id, form_id, formids_tried, slot_at)
        select $1, $2, $3, c.user_id, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
               'queued', c.formid_id, c.form_id,
               case when c.formid_id is null then 0 else 1 end, c.slot_at
        from credit c
        returning id, seq, appid, openid, kind as "kind: CampaignKind", template_id, page,
                  data, emphasis_keyword, miniprogram_state, lang,
                  formid_pick as "formid_pick: FormidPick", idempotency_key, send_at,
                  status as "status: MessageStatus", errcode, errmsg, msg_id, push_status,
                  created_at, updated_at
        "#,
        id,
        appid,
        spec.openid,
        c.kind as CampaignKind,
        c.template_id,
        c.page,
        data,
        c.emphasis_keyword,
        c.miniprogram_state,
        c.lang,
        c.formid_pick as FormidPick,
        spec.idempotency_key,
        spec.send_at,
    )
    .fetch_optional(db)
    .await
}

pub async fn find(pool: &PgPool, appid: &str, id: Uuid) -> sqlx::Result<Option<MessageRow>> {
    if !super::storable(appid) {
        return Ok(None);
    }
    sqlx::query_as!(
        MessageRow,
        r#"
        select id, seq, appid, openid, kind as "kind: CampaignKind", template_id, page, data,
               emphasis_keyword, miniprogram_state, lang, formid_pick as "formid_pick: FormidPick",
               idempotency_key, send_at, status as "status: MessageStatus", errcode, errmsg, msg_id,
               push_status, created_at, updated_at
        from messages where appid = $1 and id = $2
        "#,
        appid,
        id
    )
    .fetch_optional(pool)
    .await
}

/// One page of the app's messages, newest first, older than the cursor `before` (a `seq`).
pub async fn page(
    pool: &PgPool,
    appid: &str,
    status: Option<ShownMessageStatus>,
    openid: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<MessageRow>> {
    if !openid.is_none_or(super::storable) {
        return Ok(vec![]);
    }
    sqlx::query_as!(
        MessageRow,
        r#"
        select id, seq, appid, openid, kind as "kind: CampaignKind", template_id, page, data,
               emphasis_keyword, miniprogram_state, lang, formid_pick as "formid_pick: FormidPick",
               idempotency_key, send_at, status as "status: MessageStatus", errcode, errmsg, msg_id,
               push_status, created_at, updated_at
        from messages
        where appid = $1
          and ($2::text is null or openid = $2)
          and ($3::bigint is null or seq < $3)
          and ($4::text is null or status = $4
               or ($4 = 'sending' and status in ('queued', 'sending')))
        order by seq desc
        limit $5
        "#,
        appid,
        openid,
        before,
        status.map(ShownMessageStatus::as_str),
        limit
    )
    .fetch_all(pool)
    .await
}

/// Cancels a scheduled message. `Ok(None)`: no such message; `Err(status)`: it is past
/// cancelling.
pub async fn cancel(
    pool: &PgPool,
    appid: &str,
    id: Uuid,
) -> sqlx::Result<Option<Result<MessageRow, MessageStatus>>> {
    if !super::storable(appid) {
        return Ok(None);
    }
    // A message being claimed right now is locked by the claim; this waits for it and then
    // finds it no longer scheduled.
    let cancelled = sqlx::query_as!(
        MessageRow,
        r#"
        update messages set status = 'cancelled', updated_at = now()
        where appid = $1 and id = $2 and status = 'scheduled'
        returning id, seq, appid, openid, kind as "kind: CampaignKind", template_id, page, data,
                  emphasis_keyword, miniprogram_state, lang,
                  formid_pick as "formid_pick: FormidPick", idempotency_key, send_at,
                  status as "status: MessageStatus", errcode, errmsg, msg_id, push_status,
                  created_at, updated_at
        "#,
        appid,
        id
    )
    .fetch_optional(pool)
    .await?;
    if let Some(row) = cancelled {
        return Ok(Some(Ok(row)));
    }
    Ok(find(pool, appid, id).await?.map(|row| Err(row.status)))
}

/// A message in the sender's hands, with what it says.
#[derive(Debug, Clone)]
pub struct ClaimedMessage {
    pub id: Uuid,
    pub seq: i64,
    pub openid: String,
    pub user_id: Option<i64>,
    /// `Sending`, or final already (`NoFormid`, `NoQuota`, `Failed`).
    pub status: MessageStatus,
    pub kind: CampaignKind,
    pub template_id: String,
    pub page: Option<String>,
    pub data: Value,
    pub emphasis_keyword: Option<String>,
    pub miniprogram_state: Option<String>,
    pub lang: Option<String>,
    pub formid_id: Option<i64>,
    pub form_id: Option<String>,
    pub formids_tried: i16,
    pub attempts: i16,
    pub outcome_unknown: bool,
    /// Its slot in the user's frequency-cap window, if it holds one.
    pub slot_at: Option<DateTime<Utc>>,
}

/// Claims up to `limit` of the app's messages due at `now` (the database's clock when
/// `None`): queued ones hold their credit already; scheduled ones get the user's credit
/// here, in the same statement, or end `no_formid` / `no_quota` (`failed` after WeChat
/// refused formIds of theirs), with their webhook events. At most one scheduled message
/// per user (and template, for subscribe) claims a credit per call: the others stay
/// scheduled for the next call, so two of them cannot take the same credit.
pub async fn claim_due(
    pool: &PgPool,
    appid: &str,
    limit: i64,
    lease_secs: f64,
    now: Option<DateTime<Utc>>,
) -> sqlx::Result<Vec<ClaimedMessage>> {
    sqlx::query_as!(
        ClaimedMessage,
        r#"
        with picked as (
            select m.seq, m.status, m.kind, m.template_id, m.formid_pick, u.id as user_id
            from messages m
            left join users u on u.appid = m.appid and u.openid = m.openid
            where m.appid = $1 and m.status in ('scheduled', 'queued')
              and m.due_at <= coalesce($4, now())
            order by m.due_at, m.seq
            limit $2
            for update of m skip locked
        ),
        ranked as (
            select p.*,
                   row_number() over (
                       partition by p.status, p.user_id,
                                    case when p.kind = 'subscribe' then p.template_id end
                       order by p.seq) as turn
            from picked p
        ),
        -- the claims of this call: queued messages, unknown users, and each user's first
        claiming as (
            select * from ranked r
            where r.status = 'queued' or r.user_id is null or r.turn = 1
        ),
        -- scheduled messages claim their credit now (queued ones hold theirs)
        fresh as (
            select c.seq, c.user_id, c.kind, c.template_id, c.formid_pick from claiming c
            where c.status = 'scheduled' and c.user_id is not null
        ),
        credit as (
            select * from claim_credits(
                $1,
                array(select seq from fresh order by seq),
                array(select user_id from fresh order by seq),
                array(select kind from fresh order by seq),
                array(select template_id from fresh order by seq),
                array(select formid_pick from fresh order by seq),
                false)
        ),
        claimed as (
            update messages m set
                status = case
                    when c.status = 'queued' then 'sending'
                    when cr.formid_id is not null or cr.granted then 'sending'
                    when c.kind = 'template' and m.formids_tried > 0 then 'failed'
                    when c.kind = 'template' then 'no_formid'
                    else 'no_quota' end,
                user_id = coalesce(m.user_id, c.user_id),
                formid_id = coalesce(m.formid_id, cr.formid_id),
                form_id = coalesce(cr.form_id, m.form_id),
                formids_tried = m.formids_tried + (case when cr.formid_id is null then 0 else 1 end),
                slot_at = case when c.status = 'queued' then m.slot_at else cr.slot_at end,
                lease_until = now() + make_interval(secs => $3),
                updated_at = now()
            from claiming c
            left join credit cr on cr.key = c.seq
            where m.appid = $1 and m.seq = c.seq
            returning m.id, m.seq, m.openid, m.user_id, m.status, m.kind, m.template_id, m.page,
                      m.data, m.emphasis_keyword, m.miniprogram_state, m.lang, m.formid_id,
                      m.form_id, m.formids_tried, m.attempts, m.outcome_unknown, m.slot_at
        ),
        events as (
            insert into webhook_events (id, appid, type, subject_id)
            select gen_random_uuid(), $1, 'message.' || c.status, c.id
            from claimed c
            where c.status in ('failed', 'no_formid', 'no_quota')
              and exists (select 1 from apps a where a.appid = $1 and a.webhook_url is not null)
        )
        select id as "id!", seq as "seq!", openid as "openid!", user_id,
               status as "status!: MessageStatus", kind as "kind!: CampaignKind",
               template_id as "template_id!", page, data as "data!", emphasis_keyword,
               miniprogram_state, lang, formid_id, form_id, formids_tried as "formids_tried!",
               attempts as "attempts!", outcome_unknown as "outcome_unknown!", slot_at
        from claimed
        order by seq
        "#,
        appid,
        limit,
        lease_secs,
        now
    )
    .fetch_all(pool)
    .await
}

/// The final word on one claimed message (or where it goes back to).
#[derive(Debug, Clone, PartialEq)]
pub struct MessageOutcome {
    pub seq: i64,
    /// `Sent`, `Failed`, or back to `Scheduled` (no credit) / `Queued` (credit kept).
    pub status: MessageStatus,
    pub errcode: Option<String>,
    pub errmsg: Option<String>,
    pub attempts: i16,
    pub msg_id: Option<String>,
    pub outcome_unknown: bool,
    /// Forget the formId it held (given back or marked invalid).
    pub drop_formid: bool,
    /// For `Scheduled` / `Queued`: due again after this many seconds.
    pub due_in_secs: f64,
}

/// Records a sent batch: outcomes, credit effects and the webhook events of the messages
/// that reached a final status, in one transaction.
pub async fn record(
    pool: &PgPool,
    appid: &str,
    outcomes: &[MessageOutcome],
    effects: &CreditEffects,
) -> sqlx::Result<()> {
    let n = outcomes.len();
    let (mut seqs, mut statuses, mut errcodes, mut errmsgs) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut attempts, mut msg_ids, mut unknown, mut drop_formid, mut due_in) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for o in outcomes {
        seqs.push(o.seq);
        statuses.push(o.status.as_str());
        errcodes.push(o.errcode.clone());
        errmsgs.push(o.errmsg.clone());
        attempts.push(o.attempts);
        msg_ids.push(o.msg_id.clone());
        unknown.push(o.outcome_unknown);
        drop_formid.push(o.drop_formid);
        due_in.push(o.due_in_secs);
    }
    let mut tx = pool.begin().await?;
    super::credits::apply_effects(&mut tx, effects).await?;
    sqlx::query!(
        r#"
        with done as (
            update messages m set
                status = o.status, errcode = o.errcode, errmsg = o.errmsg, attempts = o.attempts,
                msg_id = o.msg_id, outcome_unknown = o.unknown,
                formid_id = case when o.drop_formid then null else m.formid_id end,
                -- kept on a final message: the formId tried last
                form_id = case when o.drop_formid and o.status = 'scheduled' then null
                               else m.form_id end,
                due_at = now() + make_interval(secs => o.due_in),
                lease_until = null, updated_at = now()
            from unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::smallint[],
                        $7::text[], $8::bool[], $9::bool[], $10::float8[])
                 as o(seq, status, errcode, errmsg, attempts, msg_id, unknown, drop_formid, due_in)
            where m.appid = $1 and m.seq = o.seq and m.status = 'sending'
            returning m.id, m.status
        )
        insert into webhook_events (id, appid, type, subject_id)
        select gen_random_uuid(), $1, 'message.' || d.status, d.id
        from done d
        where d.status in ('sent', 'failed', 'no_formid', 'no_quota')
          and exists (select 1 from apps a where a.appid = $1 and a.webhook_url is not null)
        "#,
        appid,
        &seqs,
        &statuses as &[&str],
        &errcodes as &[Option<String>],
        &errmsgs as &[Option<String>],
        &attempts,
        &msg_ids as &[Option<String>],
        &unknown,
        &drop_formid,
        &due_in
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Messages whose sender died while they were in flight: a template message goes back to
/// the queue with its formId (WeChat's 41029 will tell if it got through); a subscribe
/// message cannot be retried safely and fails `unknown_outcome` (with its event).
pub async fn recover_stale(pool: &PgPool, appid: &str) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        with recovered as (
            update messages set
                status = case when kind = 'template' then 'queued' else 'failed' end,
                outcome_unknown = true,
                errcode = case when kind = 'template' then errcode else 'unknown_outcome' end,
                errmsg = case when kind = 'template' then errmsg
                              else 'the sender stopped while this message was in flight' end,
                due_at = now(), lease_until = null, updated_at = now()
            where appid = $1 and status = 'sending' and lease_until < now()
            returning id, status
        )
        insert into webhook_events (id, appid, type, subject_id)
        select gen_random_uuid(), $1, 'message.failed', r.id
        from recovered r
        where r.status = 'failed'
          and exists (select 1 from apps a where a.appid = $1 and a.webhook_url is not null)
        "#,
        appid
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Records WeChat's `subscribe_msg_sent_event` outcome on the message it belongs to.
pub async fn record_push_status(pool: &PgPool, msg_id: &str, status: &str) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        "update messages set push_status = $2, updated_at = now() where msg_id = $1",
        msg_id,
        status
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Whether the app has a message due at `now` (the database's clock when `None`).
pub async fn has_due(pool: &PgPool, appid: &str, now: Option<DateTime<Utc>>) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"
        select exists (select 1 from messages
                       where appid = $1 and status in ('scheduled', 'queued')
                         and due_at <= coalesce($2, now())) as "due!"
        "#,
        appid,
        now
    )
    .fetch_one(pool)
    .await
}

/// Apps with a message due at `now` (the database's clock when `None`); with
/// `unattended`, only those whose sender lease nobody holds. One index probe per app.
pub async fn apps_with_due_messages(
    pool: &PgPool,
    now: Option<DateTime<Utc>>,
    unattended: bool,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"
        select a.appid from apps a
        where exists (select 1 from messages m
                      where m.appid = a.appid and m.status in ('scheduled', 'queued')
                        and m.due_at <= coalesce($1, now()))
          and (not $2 or not exists (select 1 from app_leases l
                                     where l.appid = a.appid and l.expires_at > now()))
        "#,
        now,
        unattended
    )
    .fetch_all(pool)
    .await
}

/// Daily clean-up: idempotency keys older than their 24 hours.
pub async fn purge_expired_keys(pool: &PgPool) -> sqlx::Result<u64> {
    let done =
        sqlx::query!("delete from message_keys where created_at < now() - interval '24 hours'")
            .execute(pool)
            .await?;
    Ok(done.rows_affected())
}
