//! The OpenAPI 3 description, generated from the handlers' annotations, served at
//! `/openapi.json`, with an interactive page at `/docs`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct BearerSchemes;

impl Modify for BearerSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |what: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(what.to_string()))
                    .build(),
            )
        };
        components.add_security_scheme("admin", bearer("FORMPUSH_ADMIN_TOKEN"));
        components.add_security_scheme(
            "api_key",
            bearer(
                "an app API key (fpk_...) from POST /v1/apps/{appid}/keys, with the scope named",
            ),
        );
        components.add_security_scheme(
            "session",
            bearer("a session token from POST /v1/apps/{appid}/sessions"),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "formpush",
        description = "Collects WeChat mini-program formIds and subscribe grants and spends them on scheduled campaigns. Every error is {\"error\", \"message\"}."
    ),
    paths(
        super::sessions::create,
        super::formids::collect,
        super::subscriptions::record,
        super::wechat_push::verify_url,
        super::wechat_push::receive,
        super::apps::put_app,
        super::apps::get_app,
        super::apps::list_apps,
        super::apps::stats,
        super::stats::expiring,
        super::stats::ingestion,
        super::templates::sync,
        super::templates::list,
        super::formids::import,
        super::keys::create,
        super::keys::list,
        super::keys::revoke,
        super::messages::create,
        super::messages::list,
        super::messages::get,
        super::messages::cancel,
        super::campaigns::create,
        super::campaigns::hygiene::preview,
        super::campaigns::list,
        super::campaigns::get,
        super::campaigns::pause,
        super::campaigns::resume,
        super::campaigns::cancel,
        super::campaigns::hygiene::test_send,
        super::campaigns::runs,
        super::campaigns::deliveries,
        super::campaigns::timeline::timeline,
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
    ),
    components(schemas(
        crate::error::ErrorBody,
        crate::domain::webhook::WebhookEvent,
        super::stats::TimeZoneName
    )),
    modifiers(&BearerSchemes),
    tags(
        (name = "client", description = "called by the mini-program"),
        (name = "wechat", description = "called by WeChat's servers"),
        (name = "admin", description = "apps and the credit pool"),
        (name = "campaigns", description = "scheduling and delivery"),
        (name = "keys", description = "API keys for a team's own backends"),
        (name = "messages", description = "triggered messages to one user"),
        (name = "operations", description = "health and metrics"),
    )
)]
pub struct ApiDoc;

pub async fn openapi_json() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok().json(ApiDoc::openapi())
}
