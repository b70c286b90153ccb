//! The campaign admin API: create (and preview), list, read, pause / resume / cancel, test
//! sends, runs, deliveries.

pub mod hygiene;
pub mod timeline;
mod views;

pub use hygiene::{
    preview, test_send, Preview, PreviewProblem, PreviewSample, TestSendAnswer, TestSendRequest,
    TestSendResult, TestSendStatus,
};
pub use views::{
    AudienceView, CampaignList, CampaignView, DeliveryPage, DeliveryView, ErrCode, RunList, RunView,
};

use actix_web::{web, HttpResponse};
use chrono::Utc;
use serde::Deserialize;
use uuid::Uuid;

use crate::api::auth::{Admin, Caller};
use crate::api::state::AppState;
use crate::domain::api_key::Scope;
use crate::domain::campaign::{CampaignKind, CampaignRequest, CampaignSpec};
use crate::domain::delivery::ShownDeliveryStatus;
use crate::domain::template::DataRules;
use crate::error::{ApiError, ErrorBody};
use crate::store::campaigns::{self as store, CampaignRow, CreateError, Transition};
use crate::store::{deliveries, runs, templates};

/// One campaign with its totals.
async fn render_one(state: &AppState, row: CampaignRow) -> Result<CampaignView, ApiError> {
    let totals = store::totals(&state.pool, row.id).await?;
    let hold = store::run_holds_of(&state.pool, &[row.id])
        .await?
        .remove(&row.id);
    Ok(CampaignView::new(row, totals, hold)?)
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found("campaign_not_found", format!("no campaign {raw:?}")))
}

/// The campaign, if the caller may read it (an API key: of its app, with `read`).
async fn load(state: &AppState, caller: &Caller, raw_id: &str) -> Result<CampaignRow, ApiError> {
    let id = parse_id(raw_id)?;
    let row = store::find(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found("campaign_not_found", format!("no campaign {id}")))?;
    caller.allow(&row.appid, &[Scope::Read])?;
    Ok(row)
}

/// Creates a campaign; it runs when its schedule says.
#[utoipa::path(post, path = "/v1/campaigns", operation_id = "createCampaign", tag = "campaigns", security(("admin" = [])),
    request_body = CampaignRequest,
    responses((status = 201, body = CampaignView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, description = "an API key: keys never create campaigns", body = ErrorBody),
              (status = 404, description = "unknown app", body = ErrorBody),
              (status = 413, body = ErrorBody),
              (status = 422, description = "an invalid field, named in error and message; invalid_data when data breaks the synced template's keywords", body = ErrorBody)))]
pub async fn create(
    _: Admin,
    state: web::Data<AppState>,
    body: crate::api::json::Body<CampaignRequest>,
) -> Result<HttpResponse, ApiError> {
    let spec =
        CampaignSpec::parse(body.into_inner()).map_err(|e| ApiError::invalid(e.code, e.message))?;
    checked_rules(&state, &spec).await?;
    let row = match store::create(&state.pool, &spec, Utc::now()).await {
        Ok(row) => row,
        Err(CreateError::UnknownApp) => return Err(ApiError::unknown_app(&spec.appid)),
        Err(CreateError::Db(e)) => return Err(e.into()),
    };
    Ok(HttpResponse::Created().json(render_one(&state, row).await?))
}

/// A subscribe campaign on a synced template: its data checked against the template's
/// keywords and rules (`422 invalid_data`), and the rules each user's rendered data will be
/// held to. A template never synced is not checked.
async fn checked_rules(
    state: &AppState,
    spec: &CampaignSpec,
) -> Result<Option<DataRules>, ApiError> {
    if spec.kind != CampaignKind::Subscribe {
        return Ok(None);
    }
    let Some(template) = templates::find(&state.pool, &spec.appid, &spec.template_id).await? else {
        return Ok(None);
    };
    template
        .check_data(&spec.data, spec.data_policy)
        .map_err(|e| ApiError::invalid(e.code, e.message))?;
    Ok(Some(DataRules::new(
        &template,
        &spec.data,
        spec.data_policy,
    )))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// only this app's campaigns
    appid: Option<String>,
    /// 1 to 1000, default 100
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Campaigns, newest first. An API key (with `read`) sees its own app's only.
#[utoipa::path(get, path = "/v1/campaigns", operation_id = "listCampaigns", tag = "campaigns", security(("admin" = []), ("api_key" = ["read"])),
    params(ListQuery),
    responses((status = 200, body = CampaignList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, description = "an API key without read, or naming another app", body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn list(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let appid = match (caller.key_app(), query.appid.as_deref()) {
        (None, appid) => appid,
        (Some(own), appid) => {
            let appid = appid.unwrap_or(own);
            caller.allow(appid, &[Scope::Read])?;
            Some(appid)
        }
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(
            "invalid_limit",
            "limit must be 1 to 1000",
        ));
    }
    let rows = store::list(&state.pool, appid, limit).await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut totals = store::totals_of(&state.pool, &ids).await?;
    let mut holds = store::run_holds_of(&state.pool, &ids).await?;
    let items = rows
        .into_iter()
        .map(|row| {
            let row_totals = totals.remove(&row.id).unwrap_or_default();
            let hold = holds.remove(&row.id);
            CampaignView::new(row, row_totals, hold)
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(HttpResponse::Ok().json(CampaignList { items }))
}

/// A campaign with its totals over all runs.
#[utoipa::path(get, path = "/v1/campaigns/{id}", operation_id = "getCampaign", tag = "campaigns", security(("admin" = []), ("api_key" = ["read"])),
    params(("id" = Uuid, Path, description = "the campaign's id")),
    responses((status = 200, body = CampaignView), (status = 401, body = ErrorBody),
              (status = 403, description = "an API key of another app or without read", body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let row = load(&state, &caller, &id).await?;
    Ok(HttpResponse::Ok().json(render_one(&state, row).await?))
}

async fn apply(
    state: &AppState,
    raw_id: &str,
    transition: Transition,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(raw_id)?;
    match store::transition(&state.pool, id, transition, Utc::now()).await? {
        None => Err(ApiError::not_found(
            "campaign_not_found",
            format!("no campaign {id}"),
        )),
        Some(Err(status)) => Err(ApiError::conflict(
            "invalid_transition",
            format!("a {} campaign cannot be {transition:?}d", status.as_str()).to_lowercase(),
        )),
        Some(Ok(row)) => Ok(HttpResponse::Ok().json(render_one(state, row).await?)),
    }
}

/// Pauses a scheduled or running campaign.
#[utoipa::path(post, path = "/v1/campaigns/{id}/pause", operation_id = "pauseCampaign", tag = "campaigns", security(("admin" = [])),
    params(("id" = Uuid, Path, description = "the campaign's id")),
    responses((status = 200, body = CampaignView), (status = 401, body = ErrorBody),
              (status = 403, description = "an API key: keys never change campaigns", body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "the transition makes no sense now", body = ErrorBody)))]
pub async fn pause(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    apply(&state, &id, Transition::Pause).await
}

/// Resumes a paused campaign.
#[utoipa::path(post, path = "/v1/campaigns/{id}/resume", operation_id = "resumeCampaign", tag = "campaigns", security(("admin" = [])),
    params(("id" = Uuid, Path, description = "the campaign's id")),
    responses((status = 200, body = CampaignView), (status = 401, body = ErrorBody),
              (status = 403, description = "an API key: keys never change campaigns", body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "the transition makes no sense now", body = ErrorBody)))]
pub async fn resume(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    apply(&state, &id, Transition::Resume).await
}

/// Cancels a campaign that has not ended.
#[utoipa::path(post, path = "/v1/campaigns/{id}/cancel", operation_id = "cancelCampaign", tag = "campaigns", security(("admin" = [])),
    params(("id" = Uuid, Path, description = "the campaign's id")),
    responses((status = 200, body = CampaignView), (status = 401, body = ErrorBody),
              (status = 403, description = "an API key: keys never change campaigns", body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "the transition makes no sense now", body = ErrorBody)))]
pub async fn cancel(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    apply(&state, &id, Transition::Cancel).await
}

/// The campaign's runs (one per firing), newest first, with totals.
#[utoipa::path(get, path = "/v1/campaigns/{id}/runs", operation_id = "listCampaignRuns", tag = "campaigns", security(("admin" = []), ("api_key" = ["read"])),
    params(("id" = Uuid, Path, description = "the campaign's id")),
    responses((status = 200, body = RunList), (status = 401, body = ErrorBody),
              (status = 403, description = "an API key of another app or without read", body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn runs(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let row = load(&state, &caller, &id).await?;
    let items = runs::runs(&state.pool, row.id).await?;
    Ok(HttpResponse::Ok().json(RunList {
        items: items.into_iter().map(RunView::from).collect(),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// only deliveries in this state
    #[param(value_type = Option<ShownDeliveryStatus>)]
    status: Option<String>,
    /// 1 to 1000, default 100
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// the `next` cursor of the previous page
    #[param(pattern = "^[0-9]{0,18}$")]
    after: Option<String>,
}

/// The campaign's deliveries, one page at a time.
#[utoipa::path(get, path = "/v1/campaigns/{id}/deliveries", operation_id = "listCampaignDeliveries", tag = "campaigns", security(("admin" = []), ("api_key" = ["read"])),
    params(("id" = Uuid, Path, description = "the campaign's id"), DeliveriesQuery),
    responses((status = 200, body = DeliveryPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, description = "an API key of another app or without read", body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn deliveries(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<DeliveriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let row = load(&state, &caller, &id).await?;
    let q = query.into_inner();
    let status = match q.status.as_deref() {
        None => None,
        Some(word) => Some(ShownDeliveryStatus::parse(word).ok_or_else(|| {
            ApiError::invalid(
                "invalid_status",
                "status must be sent, failed, no_formid, no_quota, capped or pending",
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
    let after = match q.after.as_deref() {
        None | Some("") => 0,
        Some(cursor) => cursor
            .parse::<i64>()
            .ok()
            .filter(|c| *c >= 0)
            .ok_or_else(|| {
                ApiError::invalid("invalid_cursor", "after must be a cursor from next")
            })?,
    };
    let page = deliveries::page(&state.pool, row.id, status, after, limit).await?;
    let next = (page.len() as i64 == limit)
        .then(|| page.last().map(|d| d.id.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(DeliveryPage {
        items: page.into_iter().map(DeliveryView::from).collect(),
        next,
    }))
}
