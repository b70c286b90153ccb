//! The OpenAPI 3 description, generated from the handlers' annotations, served at
//! `/openapi.json`, with an interactive page at `/docs`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use uuid::Uuid;

use crate::store::campaigns::{RunRow, Totals};

/// A campaign as the admin API shows it (built in `api::campaigns::render`).
#[derive(Serialize, ToSchema)]
pub struct CampaignView {
    pub id: Uuid,
    pub appid: String,
    pub name: String,
    #[schema(example = "template")]
    pub kind: String,
    pub template_id: String,
    pub page: Option<String>,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub emphasis_keyword: Option<String>,
    pub miniprogram_state: Option<String>,
    pub lang: Option<String>,
    pub formid_pick: Option<String>,
    /// `{"type": "all" | "openids" | "users"}`
    #[schema(value_type = Object)]
    pub audience: serde_json::Value,
    /// scheduled, running, paused, completed, failed or cancelled
    pub status: String,
    /// admin or quota (45009)
    pub pause_reason: Option<String>,
    pub resume_at: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub schedule: serde_json::Value,
    pub timezone: String,
    pub next_run_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub totals: Totals,
    /// `{"errcode": 40037, "errmsg": "..."}` of the error that stopped or paused it
    #[schema(value_type = Option<Object>)]
    pub last_error: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub struct CampaignList {
    pub items: Vec<CampaignView>,
}

#[derive(Serialize, ToSchema)]
pub struct RunList {
    pub items: Vec<RunRow>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    pub run_id: Uuid,
    pub openid: String,
    /// sent, failed, no_formid, no_quota or pending
    pub status: String,
    pub form_id: Option<String>,
    /// WeChat's errcode, or a word: unknown_outcome, timeout, http_502, unreachable
    #[schema(value_type = Option<Object>)]
    pub errcode: Option<serde_json::Value>,
    pub errmsg: Option<String>,
    pub attempts: i16,
    pub msg_id: Option<String>,
    /// from subscribe_msg_sent_event
    pub push_status: Option<String>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<DeliveryView>,
    /// pass as `after` for the next page; null on the last
    pub next: Option<String>,
}

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
        super::formids::import,
        super::campaigns::create,
        super::campaigns::list,
        super::campaigns::get,
        super::campaigns::pause,
        super::campaigns::resume,
        super::campaigns::cancel,
        super::campaigns::runs,
        super::campaigns::deliveries,
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&BearerSchemes),
    tags(
        (name = "client", description = "called by the mini-program"),
        (name = "wechat", description = "called by WeChat's servers"),
        (name = "admin", description = "apps and the credit pool"),
        (name = "campaigns", description = "scheduling and delivery"),
        (name = "operations", description = "health and metrics"),
    )
)]
pub struct ApiDoc;

pub async fn openapi_json() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok().json(ApiDoc::openapi())
}
