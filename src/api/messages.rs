//! Triggered messages: one user, now or at a time, created by the admin or by a team
//! backend's API key (`send`); read back with `send` or `read`; cancelled while scheduled.
//!
//! Send-now is the hot path: one statement claims the user's credit and stores the message
//! (a transaction of three when an idempotency key comes with it), then the app's sender is
//! woken; the request never waits for WeChat.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::auth::{AppAccess, NeedSend, NeedSendOrRead};
use super::campaigns::ErrCode;
use super::state::AppState;
use crate::domain::campaign::{CampaignKind, DataPolicy};
use crate::domain::message::{
    body_hash, MessageRequest, MessageSpec, MessageStatus, ShownMessageStatus,
};
use crate::error::{ApiError, ErrorBody};
use crate::store::{self, messages::Created, messages::MessageRow};

/// A triggered message as the API shows it (and as webhook events carry it).
#[derive(Serialize, utoipa::ToSchema)]
pub struct MessageView {
    pub id: Uuid,
    pub appid: String,
    pub openid: String,
    pub kind: CampaignKind,
    pub template_id: String,
    pub status: ShownMessageStatus,
    pub idempotency_key: Option<String>,
    /// as requested; null for a message sent at once
    pub send_at: Option<DateTime<Utc>>,
    /// `0` when sent; WeChat's errcode, or a word where WeChat gave none (`unknown_outcome`,
    /// `timeout`, `http_502`, ...); null before a send and for `no_formid` / `no_quota`
    pub errcode: Option<ErrCode>,
    pub errmsg: Option<String>,
    /// subscribe messages: WeChat's `msgid`
    pub msg_id: Option<String>,
    /// subscribe messages: what WeChat pushed later in `subscribe_msg_sent_event`
    pub push_status: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<MessageRow> for MessageView {
    fn from(m: MessageRow) -> Self {
        let sent = m.status == MessageStatus::Sent;
        let errcode = match m.errcode.as_deref() {
            Some(code) => Some(ErrCode::from_record(code)),
            None if sent => Some(ErrCode::WeChat(0)),
            None => None,
        };
        Self {
            errmsg: m.errmsg.or_else(|| sent.then(|| "ok".into())),
            errcode,
            id: m.id,
            appid: m.appid,
            openid: m.openid,
            kind: m.kind,
            template_id: m.template_id,
            status: m.status.shown(),
            idempotency_key: m.idempotency_key,
            send_at: m.send_at,
            msg_id: m.msg_id,
            push_status: m.push_status,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MessagePage {
    pub items: Vec<MessageView>,
    /// pass as `after` for the next (older) page; null on the last
    pub next: Option<String>,
}

fn message_not_found(raw: &str) -> ApiError {
    ApiError::not_found("message_not_found", format!("no message {raw:?}"))
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse().map_err(|_| message_not_found(raw))
}

/// Sends a message to one user now (its credit claimed in this request) or at `send_at`.
#[utoipa::path(post, path = "/v1/apps/{appid}/messages", operation_id = "sendMessage", tag = "messages",
    security(("admin" = []), ("api_key" = ["send"])),
    request_body = MessageRequest,
    responses((status = 202, description = "accepted: `sending` (credit claimed) or `scheduled`", body = MessageView),
              (status = 200, description = "a repeat of an earlier request with the same idempotency key and body: nothing new is sent", body = MessageView),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, description = "an API key of another app or without send", body = ErrorBody),
              (status = 404, description = "unknown app", body = ErrorBody),
              (status = 409, description = "no_credit: send-now to a user without a usable credit (nothing stored); idempotency_conflict: the key was used with another body", body = ErrorBody),
              (status = 413, body = ErrorBody),
              (status = 422, description = "an invalid field, named in error and message", body = ErrorBody)))]
pub async fn create(
    access: AppAccess<NeedSend>,
    state: web::Data<AppState>,
    appid: web::Path<String>,
    body: crate::api::json::Body<Value>,
) -> Result<HttpResponse, ApiError> {
    let appid = appid.into_inner();
    let body = body.into_inner();
    let hash = body_hash(&body);
    let request: MessageRequest = serde_json::from_value(body)
        .map_err(|e| ApiError::invalid("invalid_body", format!("the body is not valid: {e}")))?;
    let spec = MessageSpec::parse(request).map_err(|e| ApiError::invalid(e.code, e.message))?;
    // A key's app exists (keys go with their app); only the admin can name any app.
    if access.caller.key_app().is_none() && !store::apps::exists(&state.pool, &appid).await? {
        return Err(ApiError::unknown_app(&appid));
    }
    // As for campaigns: a synced template's keywords and rules are checked before any credit
    // is claimed (a template never synced is not checked).
    if spec.content.kind == CampaignKind::Subscribe {
        let template = store::templates::find(&state.pool, &appid, &spec.content.template_id);
        if let Some(template) = template.await? {
            template
                .check_data(&spec.content.data, DataPolicy::Reject)
                .map_err(|e| ApiError::invalid(e.code, e.message))?;
        }
    }
    match store::messages::create(&state.pool, &appid, &spec, &hash, Utc::now()).await? {
        Created::New(row) => {
            if row.status == MessageStatus::Queued {
                if let Some(senders) = &state.senders {
                    senders.wake(&appid);
                }
            }
            Ok(HttpResponse::Accepted().json(MessageView::from(row)))
        }
        Created::Repeat(row) => Ok(HttpResponse::Ok().json(MessageView::from(row))),
        Created::KeyConflict => Err(ApiError::conflict(
            "idempotency_conflict",
            "this idempotency_key was used in the last 24 hours with a different body",
        )),
        Created::NoCredit => Err(ApiError::conflict(
            "no_credit",
            match spec.content.kind {
                CampaignKind::Template => {
                    "the user is unknown or holds no usable formId; nothing was stored"
                }
                CampaignKind::Subscribe => {
                    "the user is unknown or holds no grant of this template; nothing was stored"
                }
            },
        )),
    }
}

/// One message.
#[utoipa::path(get, path = "/v1/apps/{appid}/messages/{id}", operation_id = "getMessage", tag = "messages",
    security(("admin" = []), ("api_key" = ["send", "read"])),
    responses((status = 200, body = MessageView), (status = 401, body = ErrorBody),
              (status = 403, description = "an API key of another app or without send or read", body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn get(
    _: AppAccess<NeedSendOrRead>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (appid, raw_id) = path.into_inner();
    let row = store::messages::find(&state.pool, &appid, parse_id(&raw_id)?)
        .await?
        .ok_or_else(|| message_not_found(&raw_id))?;
    Ok(HttpResponse::Ok().json(MessageView::from(row)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// only messages in this state
    #[param(value_type = Option<ShownMessageStatus>)]
    status: Option<String>,
    /// only messages to this user
    openid: Option<String>,
    /// 1 to 1000, default 100
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// the `next` cursor of the previous page
    #[param(pattern = "^[0-9]{0,18}$")]
    after: Option<String>,
}

/// The app's messages, newest first, one page at a time.
#[utoipa::path(get, path = "/v1/apps/{appid}/messages", operation_id = "listMessages", tag = "messages",
    security(("admin" = []), ("api_key" = ["send", "read"])),
    params(ListQuery),
    responses((status = 200, body = MessagePage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, description = "an API key of another app or without send or read", body = ErrorBody),
              (status = 404, description = "unknown app", body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list(
    access: AppAccess<NeedSendOrRead>,
    state: web::Data<AppState>,
    appid: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    if access.caller.key_app().is_none() && !store::apps::exists(&state.pool, &appid).await? {
        return Err(ApiError::unknown_app(&appid));
    }
    let q = query.into_inner();
    let status = match q.status.as_deref() {
        None => None,
        Some(word) => Some(ShownMessageStatus::parse(word).ok_or_else(|| {
            ApiError::invalid(
                "invalid_status",
                "status must be scheduled, sending, sent, failed, no_formid, no_quota or cancelled",
            )
        })?),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(
            "invalid_limit",
            "limit must be 1 to 1000",
        ));
    }
    let before =
        match q.after.as_deref() {
            None | Some("") => None,
            Some(cursor) => Some(cursor.parse::<i64>().ok().filter(|c| *c > 0).ok_or_else(
                || ApiError::invalid("invalid_cursor", "after must be a cursor from next"),
            )?),
        };
    let page = store::messages::page(
        &state.pool,
        &appid,
        status,
        q.openid.as_deref(),
        before,
        limit,
    )
    .await?;
    let next = (page.len() as i64 == limit)
        .then(|| page.last().map(|m| m.seq.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(MessagePage {
        items: page.into_iter().map(MessageView::from).collect(),
        next,
    }))
}

/// Cancels a scheduled message; no credit is spent.
#[utoipa::path(delete, path = "/v1/apps/{appid}/messages/{id}", operation_id = "cancelMessage", tag = "messages",
    security(("admin" = []), ("api_key" = ["send"])),
    responses((status = 200, description = "cancelled", body = MessageView), (status = 401, body = ErrorBody),
              (status = 403, description = "an API key of another app or without send", body = ErrorBody),
              (status = 404, body = ErrorBody),
              (status = 409, description = "already sending or final", body = ErrorBody)))]
pub async fn cancel(
    _: AppAccess<NeedSend>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (appid, raw_id) = path.into_inner();
    match store::messages::cancel(&state.pool, &appid, parse_id(&raw_id)?).await? {
        None => Err(message_not_found(&raw_id)),
        Some(Err(status)) => Err(ApiError::conflict(
            "invalid_transition",
            format!(
                "only a scheduled message can be cancelled; this one is {}",
                status.shown().as_str()
            ),
        )),
        Some(Ok(row)) => Ok(HttpResponse::Ok().json(MessageView::from(row))),
    }
}
