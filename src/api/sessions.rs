use actix_web::{web, HttpResponse};
use chrono::Utc;
use serde::Deserialize;

use super::state::AppState;
use crate::domain::session::{SessionClaims, SESSION_VALIDITY};
use crate::error::{ApiError, ErrorBody};
use crate::store;
use crate::wechat::client::WeChatError;
use crate::wechat::errcode;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// the code from `wx.login`
    #[schema(min_length = 1, max_length = 256)]
    code: String,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SessionView {
    /// send as `Authorization: Bearer <token>`; valid 7 days on every instance
    token: String,
    openid: String,
    expires_at: chrono::DateTime<Utc>,
}

/// `wx.login` code → WeChat `jscode2session` → openid → our session token.
#[utoipa::path(post, path = "/v1/apps/{appid}/sessions", operation_id = "createSession", tag = "client",
    request_body = LoginBody,
    responses((status = 200, body = SessionView),
              (status = 400, body = ErrorBody),
              (status = 401, description = "WeChat refused the code (invalid_code)", body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 429, description = "too many logins from this address", body = ErrorBody),
              (status = 502, body = ErrorBody)))]
pub async fn create(
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
    appid: web::Path<String>,
    body: crate::api::json::Body<LoginBody>,
) -> Result<HttpResponse, ApiError> {
    // The direct peer: behind a reverse proxy, all clients share its address (see README).
    if let Some(peer) = req.peer_addr() {
        if state.login_limiter.check_key(&peer.ip()).is_err() {
            return Err(ApiError::TooManyRequests {
                message: "too many logins from this address; retry in a minute".into(),
            });
        }
    }
    let code = body.into_inner().code;
    if code.is_empty() || code.len() > 256 {
        return Err(ApiError::invalid(
            "invalid_code",
            "code must be the 1 to 256 character code from wx.login",
        ));
    }
    let app = store::apps::find(&state.pool, &appid)
        .await?
        .ok_or_else(|| ApiError::unknown_app(&appid))?;
    let login = state
        .wechat
        .jscode2session(&app.appid, &app.secret, &code)
        .await
        .map_err(login_error)?;
    let user_id = store::users::upsert(&state.pool, &app.appid, &login.openid).await?;
    let claims = SessionClaims {
        appid: app.appid,
        user_id,
        expires_at: Utc::now() + SESSION_VALIDITY,
    };
    Ok(HttpResponse::Ok().json(SessionView {
        token: state.signer.issue(&claims),
        openid: login.openid,
        expires_at: claims.expires_at,
    }))
}

fn login_error(e: WeChatError) -> ApiError {
    match e.errcode() {
        // invalid code, code already used, high-risk user
        Some(errcode::INVALID_CODE | errcode::CODE_BEEN_USED | 40226) => {
            ApiError::unauthorized("invalid_code", format!("WeChat refused the code: {e}"))
        }
        Some(45011) => ApiError::TooManyRequests {
            message: "WeChat rate-limits logins for this user; retry in a minute".into(),
        },
        _ => ApiError::BadGateway {
            code: "wechat_failed",
            message: format!("WeChat login failed: {e}"),
        },
    }
}
