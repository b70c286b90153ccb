//! Send hygiene before and beside a campaign: a preview of what creating it would do
//! (`POST /v1/campaigns:preview`, stores and sends nothing) and test sends of an existing
//! campaign's message to a few users (`POST /v1/campaigns/{id}/test`).

use std::collections::HashSet;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::views::ErrCode;
use crate::api::auth::Admin;
use crate::api::state::AppState;
use crate::domain::app::App;
use crate::domain::campaign::{
    render_data, Audience, CampaignKind, CampaignRequest, CampaignSpec, DataEntry,
};
use crate::domain::delivery::DeliveryStatus;
use crate::domain::template::DataRules;
use crate::error::{ApiError, ErrorBody};
use crate::scheduler::pipeline::{TestContent, TestUser};
use crate::store::{self, campaigns::CampaignRow};

/// Rendered messages a preview shows.
pub const MAX_SAMPLES: usize = 3;
/// Users whose data breaks a rule that a preview names.
pub const MAX_PROBLEMS: usize = 20;
/// Users a test send may name.
pub const MAX_TEST_USERS: usize = 10;
/// A test send answers within this (WeChat calls still out are reported `timeout`).
pub const TEST_SEND_DEADLINE: Duration = Duration::from_secs(14);
/// Users of an `all` audience read at a time while a preview renders their data.
const USER_PAGE: i64 = 10_000;

/// What creating the campaign would do, seen now.
#[derive(Serialize, ToSchema)]
pub struct Preview {
    /// users the first run would target: the app's users now (`all`), or the users listed
    /// (openids formpush does not know yet included)
    pub audience: i64,
    /// of them, those who will hold a usable credit at `first_run_at`: a formId or
    /// prepay_id with a use left that does not expire by then (template), or a grant of the
    /// template (subscribe)
    pub reachable: i64,
    /// `audience` − `reachable`: these would end `no_formid` / `no_quota`
    pub no_credit: i64,
    /// of `reachable`, those the app's frequency cap would hold back at `first_run_at`
    /// (counting the messages they received so far; 0 without a cap)
    pub capped: i64,
    /// when the first run would start sending: the schedule's first firing (now for
    /// `now` or a past `at`), moved to the end of the app's quiet hours if it falls inside
    /// them (unless `ignore_quiet_hours`); null for a cron schedule that never fires
    pub first_run_at: Option<DateTime<Utc>>,
    /// up to 3 messages as the first users of the audience would receive them
    #[schema(max_items = 3)]
    pub samples: Vec<PreviewSample>,
    /// up to 20 users whose rendered data breaks a rule of the synced subscribe template
    /// (their deliveries would fail `invalid_data`, spending nothing)
    #[schema(max_items = 20)]
    pub problems: Vec<PreviewProblem>,
}

/// One user's message as it would be sent.
#[derive(Serialize, ToSchema)]
pub struct PreviewSample {
    pub openid: String,
    /// `data` with the user's placeholders filled (`{{date}}`, `{{datetime}}` at
    /// `first_run_at`), over-long values cut under `data_policy: truncate`
    #[schema(value_type = HashMap<String, DataEntry>)]
    pub data: Value,
}

/// A user whose rendered data breaks a template rule.
#[derive(Serialize, ToSchema)]
pub struct PreviewProblem {
    pub openid: String,
    /// always `invalid_data`
    #[schema(example = "invalid_data")]
    pub error: &'static str,
    /// which key, which rule
    pub message: String,
}

/// What creating this campaign would do: who it reaches, what they read, whose data breaks
/// the template's rules. Stores nothing, sends nothing.
#[utoipa::path(post, path = "/v1/campaigns:preview", operation_id = "previewCampaign", tag = "campaigns", security(("admin" = [])),
    request_body = CampaignRequest,
    responses((status = 200, body = Preview), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, description = "an API key: keys never create campaigns", body = ErrorBody),
              (status = 404, description = "unknown app", body = ErrorBody),
              (status = 413, body = ErrorBody),
              (status = 422, description = "what POST /v1/campaigns would refuse, with the same error", body = ErrorBody)))]
pub async fn preview(
    _: Admin,
    state: web::Data<AppState>,
    body: crate::api::json::Body<CampaignRequest>,
) -> Result<HttpResponse, ApiError> {
    let spec =
        CampaignSpec::parse(body.into_inner()).map_err(|e| ApiError::invalid(e.code, e.message))?;
    let rules = super::checked_rules(&state, &spec).await?;
    let app = store::apps::find(&state.pool, &spec.appid)
        .await?
        .ok_or_else(|| ApiError::unknown_app(&spec.appid))?;
    let now = Utc::now();
    let first_run_at = spec
        .schedule
        .first_run(now)
        .map(|at| sends_from(&app, &spec, at.max(now)));
    let at = first_run_at.unwrap_or(now);
    let listed: Option<Vec<String>> = match &spec.audience {
        Audience::All => None,
        Audience::Openids { openids } => Some(openids.clone()),
        Audience::Users { users } => Some(users.iter().map(|u| u.openid.clone()).collect()),
    };
    let reach = store::credits::reach(
        &state.pool,
        &spec.appid,
        listed.as_deref(),
        spec.kind,
        &spec.template_id,
        at,
        app.frequency_cap,
    )
    .await?;
    let mut look = Look {
        spec: &spec,
        rules: rules.as_ref(),
        at,
        samples: Vec::new(),
        problems: Vec::new(),
    };
    let empty = Map::new();
    match &spec.audience {
        Audience::All => {
            let mut after = 0;
            while !look.done() {
                let page = store::users::page(&state.pool, &spec.appid, after, USER_PAGE).await?;
                let Some((last, _)) = page.last() else { break };
                after = *last;
                for (_, openid) in &page {
                    look.user(openid, &empty);
                    if look.done() {
                        break;
                    }
                }
            }
        }
        Audience::Openids { openids } => {
            for openid in openids {
                if look.done() {
                    break;
                }
                look.user(openid, &empty);
            }
        }
        Audience::Users { users } => {
            for user in users {
                if look.done() {
                    break;
                }
                look.user(&user.openid, &user.vars);
            }
        }
    }
    Ok(HttpResponse::Ok().json(Preview {
        audience: reach.audience,
        reachable: reach.reachable,
        no_credit: reach.audience - reach.reachable,
        capped: reach.capped,
        first_run_at,
        samples: look.samples,
        problems: look.problems,
    }))
}

/// When a run due at `due` starts sending: at the end of the app's quiet hours if `due`
/// falls inside them (and the campaign does not ignore them).
fn sends_from(app: &App, spec: &CampaignSpec, due: DateTime<Utc>) -> DateTime<Utc> {
    match app.quiet_hours {
        Some(quiet) if !spec.ignore_quiet_hours => quiet.holds_until(due).unwrap_or(due),
        _ => due,
    }
}

/// A preview's walk over the audience: renders each user's data until it has its samples
/// and (when data is checked per user) its problems.
struct Look<'a> {
    spec: &'a CampaignSpec,
    rules: Option<&'a DataRules>,
    at: DateTime<Utc>,
    samples: Vec<PreviewSample>,
    problems: Vec<PreviewProblem>,
}

impl Look<'_> {
    fn done(&self) -> bool {
        let checks = self.rules.is_some_and(DataRules::checks_each_user);
        self.samples.len() >= MAX_SAMPLES && (!checks || self.problems.len() >= MAX_PROBLEMS)
    }

    fn user(&mut self, openid: &str, vars: &Map<String, Value>) {
        match render(
            &self.spec.data,
            openid,
            vars,
            self.at,
            self.spec.schedule.timezone,
            self.rules,
        ) {
            Ok(data) if self.samples.len() < MAX_SAMPLES => self.samples.push(PreviewSample {
                openid: openid.to_string(),
                data: Value::Object(data),
            }),
            Ok(_) => {}
            Err(message) if self.problems.len() < MAX_PROBLEMS => {
                self.problems.push(PreviewProblem {
                    openid: openid.to_string(),
                    error: "invalid_data",
                    message,
                })
            }
            Err(_) => {}
        }
    }
}

/// One user's data as a run sends it at `at`: placeholders filled, cut and checked by the
/// synced template's rules (if any).
fn render(
    data: &Map<String, Value>,
    openid: &str,
    vars: &Map<String, Value>,
    at: DateTime<Utc>,
    timezone: Tz,
    rules: Option<&DataRules>,
) -> Result<Map<String, Value>, String> {
    let mut rendered = render_data(data, openid, vars, at, timezone);
    if let Some(rules) = rules {
        rules.apply(&mut rendered)?;
    }
    Ok(rendered)
}

/// `POST /v1/campaigns/{id}/test`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestSendRequest {
    /// 1 to 10 distinct users of the campaign's app
    #[schema(value_type = HashSet<String>, min_items = 1, max_items = 10)]
    pub openids: Vec<String>,
}

/// How one test send ended.
#[derive(Serialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TestSendStatus {
    Sent,
    Failed,
    /// template campaigns: the user holds no usable formId (or formpush does not know them)
    NoFormid,
    /// subscribe campaigns: the user holds no grant of the template (or is unknown)
    NoQuota,
}

#[derive(Serialize, ToSchema)]
pub struct TestSendResult {
    pub openid: String,
    pub status: TestSendStatus,
    /// `0` when sent; WeChat's errcode, or a word where WeChat gave none (`timeout`,
    /// `invalid_data`, `unknown_outcome`, ...); null for `no_formid` / `no_quota`
    pub errcode: Option<ErrCode>,
    pub errmsg: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TestSendAnswer {
    /// one per user asked for, in the order asked
    pub results: Vec<TestSendResult>,
}

/// Sends the campaign's message now to 1–10 given users of its app, spending their
/// credits, outside the campaign's runs and totals; answers within 15 seconds.
#[utoipa::path(post, path = "/v1/campaigns/{id}/test", operation_id = "testCampaign", tag = "campaigns", security(("admin" = [])),
    params(("id" = Uuid, Path, description = "the campaign's id")),
    request_body = TestSendRequest,
    responses((status = 200, body = TestSendAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, description = "an API key: keys never send campaigns", body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 422, description = "invalid_openids: not 1 to 10 distinct openids", body = ErrorBody)))]
pub async fn test_send(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: crate::api::json::Body<TestSendRequest>,
) -> Result<HttpResponse, ApiError> {
    let deadline = tokio::time::Instant::now() + TEST_SEND_DEADLINE;
    let openids = body.into_inner().openids;
    let distinct: HashSet<&str> = openids.iter().map(String::as_str).collect();
    if openids.is_empty() || openids.len() > MAX_TEST_USERS || distinct.len() != openids.len() {
        return Err(ApiError::invalid(
            "invalid_openids",
            format!("openids must name 1 to {MAX_TEST_USERS} distinct users"),
        ));
    }
    let id = super::parse_id(&id)?;
    let row = store::campaigns::find(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found("campaign_not_found", format!("no campaign {id}")))?;
    let app = store::apps::find(&state.pool, &row.appid)
        .await?
        .ok_or_else(|| ApiError::unknown_app(&row.appid))?;
    let users = rendered_for(&state, &row, &openids).await?;
    let content = TestContent {
        kind: row.kind,
        template_id: row.template_id.clone(),
        page: row.page.clone(),
        emphasis_keyword: row.emphasis_keyword.clone(),
        miniprogram_state: row.miniprogram_state.clone(),
        lang: row.lang.clone(),
        formid_pick: row.formid_pick,
    };
    let results = state
        .pipeline
        .test_send(&app, &content, users, deadline)
        .await?;
    let results = results
        .into_iter()
        .map(|r| TestSendResult {
            openid: r.openid,
            status: match r.status {
                DeliveryStatus::Sent => TestSendStatus::Sent,
                DeliveryStatus::NoFormid => TestSendStatus::NoFormid,
                DeliveryStatus::NoQuota => TestSendStatus::NoQuota,
                _ => TestSendStatus::Failed,
            },
            errcode: r.errcode.as_deref().map(ErrCode::from_record),
            errmsg: r.errmsg,
        })
        .collect();
    Ok(HttpResponse::Ok().json(TestSendAnswer { results }))
}

/// Each user's data as the campaign would send it now: their placeholder values when they
/// are in its listed audience (placeholders without a value stay as written), cut and
/// checked by the synced template's rules.
async fn rendered_for(
    state: &AppState,
    row: &CampaignRow,
    openids: &[String],
) -> Result<Vec<TestUser>, ApiError> {
    let vars = store::campaigns::audience_vars(&state.pool, row, openids).await?;
    let rules = match row.kind {
        CampaignKind::Template => None,
        CampaignKind::Subscribe => {
            store::templates::find(&state.pool, &row.appid, &row.template_id).await?
        }
    };
    let data = match &row.data {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let rules = rules.map(|t| DataRules::new(&t, &data, row.data_policy));
    let timezone: Tz = row.timezone.parse().unwrap_or(chrono_tz::Asia::Shanghai);
    let now = Utc::now();
    let empty = Map::new();
    Ok(openids
        .iter()
        .map(|openid| {
            let user_vars = match vars.get(openid) {
                Some(Value::Object(m)) => m,
                _ => &empty,
            };
            TestUser {
                openid: openid.clone(),
                data: render(&data, openid, user_vars, now, timezone, rules.as_ref()),
            }
        })
        .collect())
}
