use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::{auth, state::AppState};
use crate::domain::subscription;
use crate::error::{ApiError, ErrorBody};
use crate::store;

/// More templates than WeChat ever offers in one `wx.requestSubscribeMessage` call.
const MAX_TEMPLATES_PER_CALL: usize = 20;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionBody {
    /// the `wx.requestSubscribeMessage` result: template id → accept, reject, ban, filter, acceptWithAudio
    #[schema(value_type = Object)]
    results: BTreeMap<String, serde_json::Value>,
}

/// What a report of subscribe results added.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Granted {
    /// templates accepted: one more send each
    granted: usize,
}

/// `POST /v1/apps/{appid}/subscriptions`: the client's `wx.requestSubscribeMessage` result.
#[utoipa::path(post, path = "/v1/apps/{appid}/subscriptions", operation_id = "reportSubscriptions", tag = "client", security(("session" = [])),
    request_body = SubscriptionBody,
    responses((status = 200, body = Granted),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn record(
    req: HttpRequest,
    state: web::Data<AppState>,
    appid: web::Path<String>,
    body: crate::api::json::Body<SubscriptionBody>,
) -> Result<HttpResponse, ApiError> {
    let session = auth::client_session(&req, &state, &appid)?;
    let results = body.into_inner().results;
    if results.len() > MAX_TEMPLATES_PER_CALL {
        return Err(ApiError::invalid(
            "too_many_templates",
            format!("at most {MAX_TEMPLATES_PER_CALL} templates per call"),
        ));
    }
    let mut accepted = Vec::new();
    for (template_id, status) in results {
        // The client result also carries errMsg ("requestSubscribeMessage:ok"): not a template.
        if template_id == "errMsg" {
            continue;
        }
        let Some(status) = status.as_str() else {
            return Err(ApiError::invalid(
                "invalid_result",
                format!("results.{template_id} must be a string such as \"accept\""),
            ));
        };
        if template_id.is_empty() || template_id.len() > 128 || template_id.contains('\0') {
            return Err(ApiError::invalid(
                "invalid_template_id",
                "template ids must be 1 to 128 characters, none of them NUL",
            ));
        }
        if subscription::grants_send(status) {
            accepted.push(template_id);
        }
    }
    if !accepted.is_empty() {
        store::credits::grant_subscriptions(&state.pool, session.user_id, &accepted).await?;
    }
    Ok(HttpResponse::Ok().json(Granted {
        granted: accepted.len(),
    }))
}
