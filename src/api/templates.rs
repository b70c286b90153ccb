//! An app's subscribe templates: synced from WeChat on request, and listed.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::auth::{Admin, AppAccess, NeedRead};
use super::state::AppState;
use crate::domain::template_rules::Rule;
use crate::error::{ApiError, ErrorBody};
use crate::scheduler::templates::SyncError;
use crate::store::{self, templates::SyncedTemplate};

/// `GET /v1/apps/{appid}/templates` and the answer of a sync.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TemplateList {
    items: Vec<TemplateView>,
}

/// A subscribe template as last synced from WeChat.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TemplateView {
    /// WeChat's `priTmplId`: the `template_id` of campaigns
    template_id: String,
    title: String,
    /// 2: one-time subscription, 3: long-term
    #[serde(rename = "type")]
    kind: i32,
    /// WeChat's example message, one `label:value` line per keyword
    example: String,
    /// in the template's order
    keywords: Vec<KeywordView>,
    synced_at: DateTime<Utc>,
}

/// One keyword: the key `data` uses, its label in the message, and its value rule.
#[derive(Serialize, utoipa::ToSchema)]
pub struct KeywordView {
    #[schema(example = "thing1")]
    key: String,
    #[schema(example = "会议地点")]
    label: String,
    /// thing, number, letter, symbol, character_string, time, date, amount, phone_number,
    /// car_number, name, phrase or enum (another name for a rule WeChat added later)
    #[schema(example = "thing")]
    rule: String,
    /// enum keywords only: the values WeChat accepts
    #[serde(skip_serializing_if = "Option::is_none")]
    values: Option<Vec<String>>,
}

impl From<SyncedTemplate> for TemplateView {
    fn from(s: SyncedTemplate) -> Self {
        let t = s.template;
        Self {
            template_id: t.template_id,
            title: t.title,
            kind: t.kind,
            example: t.example,
            keywords: t
                .keywords
                .into_iter()
                .map(|k| KeywordView {
                    rule: k.rule.name().to_string(),
                    values: (k.rule == Rule::Enum).then_some(k.values),
                    key: k.key,
                    label: k.label,
                })
                .collect(),
            synced_at: s.synced_at,
        }
    }
}

fn list_of(templates: Vec<SyncedTemplate>) -> TemplateList {
    TemplateList {
        items: templates.into_iter().map(TemplateView::from).collect(),
    }
}

/// Reads the app's subscribe templates from WeChat (`gettemplate`) and stores exactly
/// those: templates deleted in the WeChat console are forgotten.
#[utoipa::path(post, path = "/v1/apps/{appid}/templates:sync", operation_id = "syncTemplates", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = TemplateList),
              (status = 401, description = "missing or wrong admin token", body = ErrorBody),
              (status = 404, body = ErrorBody),
              (status = 502, description = "WeChat refused or did not answer (wechat_failed)", body = ErrorBody)))]
pub async fn sync(
    _: Admin,
    state: web::Data<AppState>,
    appid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let templates = state
        .template_sync
        .sync_app(&appid)
        .await
        .map_err(|e| match e {
            SyncError::UnknownApp(appid) => ApiError::unknown_app(&appid),
            SyncError::WeChat(e) => ApiError::BadGateway {
                code: "wechat_failed",
                message: format!("reading the templates from WeChat failed: {e}"),
            },
            SyncError::Db(e) => e.into(),
        })?;
    Ok(HttpResponse::Ok().json(list_of(templates)))
}

/// The app's subscribe templates as last synced, by title.
#[utoipa::path(get, path = "/v1/apps/{appid}/templates", operation_id = "listTemplates", tag = "admin", security(("admin" = []), ("api_key" = ["read"])),
    responses((status = 200, body = TemplateList),
              (status = 401, description = "missing or wrong credentials", body = ErrorBody),
              (status = 403, description = "an API key of another app or without the read scope", body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn list(
    _: AppAccess<NeedRead>,
    state: web::Data<AppState>,
    appid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !store::apps::exists(&state.pool, &appid).await? {
        return Err(ApiError::unknown_app(&appid));
    }
    let templates = store::templates::list(&state.pool, &appid).await?;
    Ok(HttpResponse::Ok().json(list_of(templates)))
}
