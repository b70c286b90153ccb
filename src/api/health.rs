use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::error::ApiError;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready when the database answers within a second.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let ping = sqlx::query("select 1").execute(&state.pool);
    match tokio::time::timeout(Duration::from_secs(1), ping).await {
        Ok(Ok(_)) => Ok(HttpResponse::Ok().json(json!({"status": "ready"}))),
        _ => Err(ApiError::Unavailable {
            message: "the database does not answer".into(),
        }),
    }
}
