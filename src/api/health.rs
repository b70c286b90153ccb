use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::state::AppState;
use crate::error::ApiError;
use crate::metrics::{DbPool, Snapshot};
use crate::store;

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", operation_id = "getMetrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let snapshot = Snapshot {
        pools: store::credits::pool_sizes(&state.pool).await?,
        pending_deliveries: store::runs::pending_deliveries(&state.pool).await?,
        webhook_backlog: store::webhook_events::pending_per_app(&state.pool).await?,
        active_runs: store::runs::count_active_runs(&state.pool).await?,
        db: DbPool {
            open: state.pool.size(),
            idle: state.pool.num_idle() as u32,
            max: state.settings.db_max_connections,
        },
    };
    let body = crate::metrics::render(&snapshot)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body))
}

/// What `/healthz` and `/readyz` answer when all is well.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` (the process runs) or `ready` (and the database answers)
    #[schema(example = "ok")]
    status: &'static str,
}

/// 200 while the process runs.
#[utoipa::path(get, path = "/healthz", operation_id = "checkLiveness", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// Ready when the database answers within a second.
#[utoipa::path(get, path = "/readyz", operation_id = "checkReadiness", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = crate::error::ErrorBody)))]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let ping = store::ping(&state.pool);
    match tokio::time::timeout(Duration::from_secs(1), ping).await {
        Ok(Ok(_)) => Ok(HttpResponse::Ok().json(Health { status: "ready" })),
        _ => Err(ApiError::Unavailable {
            message: "the database does not answer".into(),
        }),
    }
}
