//! App API keys (admin only): make one (shown once), list them, revoke one.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::Serialize;
use uuid::Uuid;

use super::auth::Admin;
use super::state::AppState;
use crate::domain::api_key::{IssuedKey, KeyRequest, KeySpec, Scope};
use crate::error::{ApiError, ErrorBody};
use crate::store::{self, api_keys::KeyRow};

/// A key just made: the only answer that shows the key itself.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    id: Uuid,
    name: String,
    scopes: Vec<Scope>,
    /// `fpk_` and 40 url-safe characters; shown this once, stored only as a hash
    #[schema(example = "fpk_4Jd9...")]
    key: String,
    created_at: DateTime<Utc>,
}

/// A key as listed: never the key, only its first characters.
#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyView {
    id: Uuid,
    name: String,
    scopes: Vec<Scope>,
    /// the key's first 8 characters
    #[schema(example = "fpk_4Jd9")]
    prefix: String,
    created_at: DateTime<Utc>,
    /// within a minute
    last_used_at: Option<DateTime<Utc>>,
}

impl From<KeyRow> for KeyView {
    fn from(k: KeyRow) -> Self {
        Self {
            id: k.id,
            name: k.name,
            scopes: k.scopes,
            prefix: k.prefix,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyList {
    items: Vec<KeyView>,
}

/// Makes an API key for the app's backend; the answer is the only time the key is shown.
#[utoipa::path(post, path = "/v1/apps/{appid}/keys", operation_id = "createApiKey", tag = "keys", security(("admin" = [])),
    request_body = KeyRequest,
    responses((status = 201, body = CreatedKey), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, description = "an API key: keys never make keys", body = ErrorBody),
              (status = 404, description = "unknown app", body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 422, description = "invalid_name, invalid_scope, invalid_body", body = ErrorBody)))]
pub async fn create(
    _: Admin,
    state: web::Data<AppState>,
    appid: web::Path<String>,
    body: crate::api::json::Body<KeyRequest>,
) -> Result<HttpResponse, ApiError> {
    let spec =
        KeySpec::parse(body.into_inner()).map_err(|e| ApiError::invalid(e.code, e.message))?;
    let issued = IssuedKey::generate();
    let row = store::api_keys::create(&state.pool, &appid, &spec, &issued)
        .await?
        .ok_or_else(|| ApiError::unknown_app(&appid))?;
    Ok(HttpResponse::Created().json(CreatedKey {
        id: row.id,
        name: row.name,
        scopes: row.scopes,
        key: issued.key.expose_secret().to_string(),
        created_at: row.created_at,
    }))
}

/// The app's keys, oldest first.
#[utoipa::path(get, path = "/v1/apps/{appid}/keys", operation_id = "listApiKeys", tag = "keys", security(("admin" = [])),
    responses((status = 200, body = KeyList), (status = 401, body = ErrorBody),
              (status = 403, description = "an API key", body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list(
    _: Admin,
    state: web::Data<AppState>,
    appid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !store::apps::exists(&state.pool, &appid).await? {
        return Err(ApiError::unknown_app(&appid));
    }
    let items = store::api_keys::list(&state.pool, &appid).await?;
    Ok(HttpResponse::Ok().json(KeyList {
        items: items.into_iter().map(KeyView::from).collect(),
    }))
}

/// Revokes a key: from now on it gets `401` on every instance.
#[utoipa::path(delete, path = "/v1/apps/{appid}/keys/{id}", operation_id = "revokeApiKey", tag = "keys", security(("admin" = [])),
    responses((status = 204, description = "revoked"), (status = 401, body = ErrorBody),
              (status = 403, description = "an API key", body = ErrorBody),
              (status = 404, description = "no such key for this app", body = ErrorBody)))]
pub async fn revoke(
    _: Admin,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (appid, raw_id) = path.into_inner();
    let not_found = || {
        ApiError::not_found(
            "key_not_found",
            format!("app {appid:?} has no key {raw_id:?}"),
        )
    };
    let id: Uuid = raw_id.parse().map_err(|_| not_found())?;
    if !store::api_keys::delete(&state.pool, &appid, id).await? {
        return Err(not_found());
    }
    Ok(HttpResponse::NoContent().finish())
}
