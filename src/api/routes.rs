//! Every route, registered in one place.

use actix_web::web;
use utoipa_scalar::Servable;

use super::{
    apps, campaigns, console, formids, health, openapi, sessions, subscriptions, templates,
    wechat_push,
};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .route("/openapi.json", web::get().to(openapi::openapi_json))
        .service(utoipa_scalar::Scalar::with_url("/docs", {
            use utoipa::OpenApi;
            openapi::ApiDoc::openapi()
        }))
        .route("/wechat/{appid}", web::get().to(wechat_push::verify_url))
        .route("/wechat/{appid}", web::post().to(wechat_push::receive))
        .route("/admin", web::get().to(console::page))
        .route("/admin/", web::get().to(console::page))
        .route("/admin/admin.js", web::get().to(console::script))
        .route("/admin/admin.css", web::get().to(console::style))
        .service(
            web::scope("/v1")
                .route("/apps", web::get().to(apps::list_apps))
                .route("/apps/{appid}", web::put().to(apps::put_app))
                .route("/apps/{appid}", web::get().to(apps::get_app))
                .route("/apps/{appid}/stats", web::get().to(apps::stats))
                .route("/apps/{appid}/sessions", web::post().to(sessions::create))
                .route("/apps/{appid}/formids", web::post().to(formids::collect))
                .route(
                    "/apps/{appid}/formids:import",
                    web::post().to(formids::import),
                )
                .route(
                    "/apps/{appid}/subscriptions",
                    web::post().to(subscriptions::record),
                )
                .route("/apps/{appid}/templates", web::get().to(templates::list))
                .route(
                    "/apps/{appid}/templates:sync",
                    web::post().to(templates::sync),
                )
                .route("/campaigns", web::post().to(campaigns::create))
                .route("/campaigns", web::get().to(campaigns::list))
                .route("/campaigns/{id}", web::get().to(campaigns::get))
                .route("/campaigns/{id}/pause", web::post().to(campaigns::pause))
                .route("/campaigns/{id}/resume", web::post().to(campaigns::resume))
                .route("/campaigns/{id}/cancel", web::post().to(campaigns::cancel))
                .route("/campaigns/{id}/runs", web::get().to(campaigns::runs))
                .route(
                    "/campaigns/{id}/deliveries",
                    web::get().to(campaigns::deliveries),
                ),
        );
}
