//! WeChat's message-push URL: the URL check (GET) and pushed events (POST), plain or
//! safe mode. Handling is idempotent because WeChat retries a push it saw no answer to.

use actix_web::{web, HttpResponse};
use chrono::Utc;
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::state::AppState;
use crate::domain::app::App;
use crate::error::ApiError;
use crate::store::{self, push_events::PushKey};
use crate::wechat::crypto::{verify_signature, MessageCrypto};
use crate::wechat::push::{extract_encrypt, parse_message, PushMessage};

#[derive(Deserialize, utoipa::IntoParams)]
pub struct PushQuery {
    /// hex SHA-1 of the sorted push token, timestamp and nonce
    signature: Option<String>,
    timestamp: String,
    nonce: String,
    echostr: Option<String>,
    encrypt_type: Option<String>,
    msg_signature: Option<String>,
}

/// A pushed message as WeChat sends it: raw bytes (JSON or XML, plain or safe mode).
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct PushBody(pub Vec<u8>);

fn forbidden(message: &str) -> ApiError {
    ApiError::Forbidden {
        code: "bad_signature",
        message: message.into(),
    }
}

async fn push_app(state: &AppState, appid: &str) -> Result<(App, String), ApiError> {
    let app = store::apps::find(&state.pool, appid)
        .await?
        .ok_or_else(|| ApiError::unknown_app(appid))?;
    let token = app
        .push_token
        .as_ref()
        .map(|t| t.expose_secret().to_string())
        .ok_or_else(|| forbidden("this app has no push token: set it with PUT /v1/apps/{appid}"))?;
    Ok((app, token))
}

/// Refuses a push whose timestamp is too far from now (a replay).
fn check_fresh(state: &AppState, timestamp: &str) -> Result<(), ApiError> {
    let Some(max_age) = state.settings.push_max_age else {
        return Ok(());
    };
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| forbidden("timestamp is not a number"))?;
    // abs_diff: a timestamp near i64::MIN must not overflow the subtraction.
    let age = Utc::now().timestamp().abs_diff(ts);
    if age > max_age.as_secs() {
        return Err(ApiError::Forbidden {
            code: "stale_timestamp",
            message: format!(
                "the push timestamp is {age} s from now (limit {} s)",
                max_age.as_secs()
            ),
        });
    }
    Ok(())
}

/// `GET /wechat/{appid}`: answer `echostr` when the signature is right.
#[utoipa::path(get, path = "/wechat/{appid}", operation_id = "verifyPushUrl", tag = "wechat", params(PushQuery),
    responses((status = 200, description = "echostr as sent", body = String, content_type = "text/plain"),
              (status = 400, description = "a query parameter is missing", body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn verify_url(
    state: web::Data<AppState>,
    appid: web::Path<String>,
    query: web::Query<PushQuery>,
) -> Result<HttpResponse, ApiError> {
    let (_, token) = push_app(&state, &appid).await?;
    let q = query.into_inner();
    let signature = q.signature.as_deref().unwrap_or_default();
    if !verify_signature(signature, &[&token, &q.timestamp, &q.nonce]) {
        return Err(forbidden("signature does not match"));
    }
    check_fresh(&state, &q.timestamp)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(q.echostr.unwrap_or_default()))
}

/// `POST /wechat/{appid}`: a pushed message (JSON or XML, plain or safe mode).
#[utoipa::path(post, path = "/wechat/{appid}", operation_id = "receivePush", tag = "wechat", params(PushQuery),
    request_body(content = PushBody, description = "WeChat's push, JSON or XML, read as raw bytes whatever its Content-Type", content_type = "application/octet-stream",
        example = json!("<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName><FromUserName><![CDATA[o7esq5OI1Ls4Ph_bMrV7ChnpEBtk]]></FromUserName><CreateTime>1620963428</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_popup_event]]></Event><SubscribeMsgPopupEvent><List><TemplateId><![CDATA[hD-ixGOhYmUfjOnI8MCzQMPshzGVeux_2vBgHQQP7vs]]></TemplateId><SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>0</PopupScene></List></SubscribeMsgPopupEvent></xml>")),
    responses((status = 200, description = "`success`", body = String, content_type = "text/plain"),
              (status = 400, description = "malformed push", body = crate::error::ErrorBody),
              (status = 403, description = "bad signature or stale timestamp", body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn receive(
    state: web::Data<AppState>,
    appid: web::Path<String>,
    query: web::Query<PushQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (app, token) = push_app(&state, &appid).await?;
    let q = query.into_inner();
    let body = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("malformed_push", "the body is not UTF-8"))?;
    let message_text = if q.encrypt_type.as_deref() == Some("aes") {
        let encrypt = extract_encrypt(body)
            .map_err(|e| ApiError::bad_request("malformed_push", e.to_string()))?;
        let msg_signature = q.msg_signature.as_deref().unwrap_or_default();
        // Checked before decrypting, so unsigned input never reaches the decryptor.
        if !verify_signature(msg_signature, &[&token, &q.timestamp, &q.nonce, &encrypt]) {
            return Err(forbidden("msg_signature does not match"));
        }
        check_fresh(&state, &q.timestamp)?;
        let key = app
            .encoding_aes_key
            .as_ref()
            .ok_or_else(|| forbidden("safe-mode push, but this app has no encoding_aes_key"))?;
        let crypto = MessageCrypto::new(key.expose_secret(), &app.appid)
            .map_err(|e| anyhow::anyhow!("stored encoding_aes_key unusable: {e}"))?;
        crypto
            .decrypt(&encrypt)
            .map_err(|e| ApiError::bad_request("malformed_push", e.to_string()))?
    } else {
        let signature = q.signature.as_deref().unwrap_or_default();
        if !verify_signature(signature, &[&token, &q.timestamp, &q.nonce]) {
            return Err(forbidden("signature does not match"));
        }
        check_fresh(&state, &q.timestamp)?;
        body.to_string()
    };
    let message = parse_message(&message_text)
        .map_err(|e| ApiError::bad_request("malformed_push", e.to_string()))?;
    apply(&state, &app.appid, &message).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("success"))
}

async fn apply(state: &AppState, appid: &str, message: &PushMessage) -> Result<(), ApiError> {
    if let Some(change) = message.pushed_change() {
        let key = PushKey {
            appid,
            openid: &message.from_user_name,
            create_time: message.create_time,
            event: message.event.as_deref().unwrap_or_default(),
        };
        store::push_events::apply_once(&state.pool, key, &change).await?;
    }
    Ok(())
}
