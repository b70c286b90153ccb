//! Every route, registered in one place. Each path is one resource: a method it does not
//! serve gets `405` with `Allow`, a path that does not exist `404`.

use actix_web::{web, Resource};

use super::{
    apps, campaigns, console, docs, formids, health, keys, messages, openapi, sessions, stats,
    subscriptions, templates, wechat_push,
};
use crate::error::ApiError;

/// A resource whose other methods answer 405 naming `allow`.
fn resource(path: &str, allow: &'static str) -> Resource {
    web::resource(path).default_service(web::route().to(move || async move {
        Err::<actix_web::HttpResponse, _>(ApiError::MethodNotAllowed { allow })
    }))
}

/// `/metrics`, on the API's address or on its own (`FORMPUSH_METRICS_BIND`).
pub fn metrics_route(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/metrics", "GET").route(web::get().to(health::metrics)));
}

/// Everything but `/metrics`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz", "GET").route(web::get().to(health::healthz)))
        .service(resource("/readyz", "GET").route(web::get().to(health::readyz)))
        .service(resource("/openapi.json", "GET").route(web::get().to(openapi::openapi_json)))
        .service(resource("/docs", "GET").route(web::get().to(docs::page)))
        .service(resource("/docs/", "GET").route(web::get().to(docs::page)))
        .service(resource("/docs/init.js", "GET").route(web::get().to(docs::init_script)))
        .service(resource("/docs/swagger-ui-bundle.js", "GET").route(web::get().to(docs::bundle)))
        .service(resource("/docs/swagger-ui.css", "GET").route(web::get().to(docs::style)))
        .service(
            resource("/wechat/{appid}", "GET, POST")
                .route(web::get().to(wechat_push::verify_url))
                .route(web::post().to(wechat_push::receive)),
        )
        .service(resource("/admin", "GET").route(web::get().to(console::page)))
        .service(resource("/admin/", "GET").route(web::get().to(console::page)))
        .service(resource("/admin/admin.js", "GET").route(web::get().to(console::script)))
        .service(resource("/admin/i18n.js", "GET").route(web::get().to(console::catalogues)))
        .service(resource("/admin/charts.js", "GET").route(web::get().to(console::charts)))
        .service(resource("/admin/admin.css", "GET").route(web::get().to(console::style)))
        .service(
            web::scope("/v1")
                .service(resource("/apps", "GET").route(web::get().to(apps::list_apps)))
                .service(
                    resource("/apps/{appid}", "GET, PUT")
                        .route(web::put().to(apps::put_app))
                        .route(web::get().to(apps::get_app)),
                )
                .service(resource("/apps/{appid}/stats", "GET").route(web::get().to(apps::stats)))
                .service(
                    resource("/apps/{appid}/stats/expiring", "GET")
                        .route(web::get().to(stats::expiring)),
                )
                .service(
                    resource("/apps/{appid}/stats/ingestion", "GET")
                        .route(web::get().to(stats::ingestion)),
                )
                .service(
                    resource("/apps/{appid}/sessions", "POST")
                        .route(web::post().to(sessions::create)),
                )
                .service(
                    resource("/apps/{appid}/formids", "POST")
                        .route(web::post().to(formids::collect)),
                )
                .service(
                    resource("/apps/{appid}/formids:import", "POST")
                        .route(web::post().to(formids::import)),
                )
                .service(
                    resource("/apps/{appid}/subscriptions", "POST")
                        .route(web::post().to(subscriptions::record)),
                )
                .service(
                    resource("/apps/{appid}/keys", "GET, POST")
                        .route(web::post().to(keys::create))
                        .route(web::get().to(keys::list)),
                )
                .service(
                    resource("/apps/{appid}/keys/{id}", "DELETE")
                        .route(web::delete().to(keys::revoke)),
                )
                .service(
                    resource("/apps/{appid}/messages", "GET, POST")
                        .route(web::post().to(messages::create))
                        .route(web::get().to(messages::list)),
                )
                .service(
                    resource("/apps/{appid}/messages/{id}", "DELETE, GET")
                        .route(web::get().to(messages::get))
                        .route(web::delete().to(messages::cancel)),
                )
                .service(
                    resource("/apps/{appid}/templates", "GET")
                        .route(web::get().to(templates::list)),
                )
                .service(
                    resource("/apps/{appid}/templates:sync", "POST")
                        .route(web::post().to(templates::sync)),
                )
                .service(
                    resource("/campaigns", "GET, POST")
                        .route(web::post().to(campaigns::create))
                        .route(web::get().to(campaigns::list)),
                )
                .service(
                    resource("/campaigns:preview", "POST")
                        .route(web::post().to(campaigns::preview)),
                )
                .service(resource("/campaigns/{id}", "GET").route(web::get().to(campaigns::get)))
                .service(
                    resource("/campaigns/{id}/test", "POST")
                        .route(web::post().to(campaigns::test_send)),
                )
                .service(
                    resource("/campaigns/{id}/pause", "POST")
                        .route(web::post().to(campaigns::pause)),
                )
                .service(
                    resource("/campaigns/{id}/resume", "POST")
                        .route(web::post().to(campaigns::resume)),
                )
                .service(
                    resource("/campaigns/{id}/cancel", "POST")
                        .route(web::post().to(campaigns::cancel)),
                )
                .service(
                    resource("/campaigns/{id}/runs", "GET").route(web::get().to(campaigns::runs)),
                )
                .service(
                    resource("/campaigns/{id}/deliveries", "GET")
                        .route(web::get().to(campaigns::deliveries)),
                )
                .service(
                    resource("/campaigns/{id}/timeline", "GET")
                        .route(web::get().to(campaigns::timeline::timeline)),
                ),
        );
}
