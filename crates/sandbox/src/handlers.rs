//! HTTP layer: WeChat's endpoints (fault injection and latency wrapped around the logic in
//! `state.rs`) and the `/sandbox/` control endpoints.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::rules::{self, WxErr};
use super::state::{CodeRequest, TokenRequest};
use super::{
    lock, Api, Fault, KeywordEnumValues, MessageKind, ReceivedWebhook, Sandbox, SubscribeTemplate,
};

/// Bodies up to 1 MiB (actix's default is 256 KiB).
const BODY_LIMIT: usize = 1 << 20;
/// Most formIds one control call may create.
const MAX_BATCH: u32 = 10_000;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(BODY_LIMIT))
        .route("/cgi-bin/token", web::get().to(token))
        .route("/cgi-bin/stable_token", web::post().to(stable_token))
        .route("/sns/jscode2session", web::get().to(jscode2session))
        .route(
            "/cgi-bin/message/wxopen/template/send",
            web::post().to(template_send),
        )
        .route(
            "/cgi-bin/message/subscribe/send",
            web::post().to(subscribe_send),
        )
        .route("/wxaapi/newtmpl/gettemplate", web::get().to(get_template))
        .route("/sandbox/apps", web::post().to(ctl_apps))
        .route("/sandbox/templates", web::post().to(ctl_add_template))
        .route("/sandbox/templates", web::delete().to(ctl_remove_template))
        .route("/sandbox/users", web::post().to(ctl_users))
        .route("/sandbox/login_codes", web::post().to(ctl_login_codes))
        .route("/sandbox/formids", web::post().to(ctl_formids))
        .route("/sandbox/subscriptions", web::post().to(ctl_subscriptions))
        .route("/sandbox/faults", web::post().to(ctl_faults))
        .route("/sandbox/expire_tokens", web::post().to(ctl_expire_tokens))
        .route("/sandbox/reset_daily", web::post().to(ctl_reset_daily))
        .route("/sandbox/messages", web::get().to(ctl_messages))
        .route("/sandbox/webhooks", web::post().to(ctl_receive_webhook))
        .route("/sandbox/webhooks", web::get().to(ctl_webhooks))
        .route("/sandbox/stats", web::get().to(ctl_stats))
        .default_service(web::to(not_found));
}

fn query(req: &HttpRequest) -> HashMap<String, String> {
    web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default()
}

/// WeChat answers errors with HTTP 200 and an errcode.
fn wx_error(e: &WxErr) -> HttpResponse {
    HttpResponse::Ok().json(json!({"errcode": e.code, "errmsg": rules::with_rid(&e.msg)}))
}

/// What to do around a call, decided by the fault queue.
#[derive(Default)]
struct Plan {
    delay: Option<Duration>,
    drop_connection: bool,
}

enum Gate {
    Go(Plan),
    /// Answer without applying the call; the string is the outcome for the stats.
    Answer(HttpResponse, String),
}

fn gate(sb: &Sandbox, api: Api) -> Gate {
    match sb.take_fault(api) {
        None => Gate::Go(Plan::default()),
        Some(Fault::Errcode(code)) => Gate::Answer(wx_error(&WxErr::new(code)), code.to_string()),
        Some(Fault::HttpStatus(status)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let resp = HttpResponse::build(status)
                .content_type("text/plain; charset=utf-8")
                .body(format!("sandbox: injected HTTP {status}"));
            Gate::Answer(resp, format!("http_{}", status.as_u16()))
        }
        Some(Fault::Delay(delay)) => Gate::Go(Plan {
            delay: Some(delay),
            drop_connection: false,
        }),
        Some(Fault::DropAfterApply) => Gate::Go(Plan {
            delay: None,
            drop_connection: true,
        }),
    }
}

async fn finish(plan: Plan, resp: HttpResponse) -> HttpResponse {
    if let Some(delay) = plan.delay {
        tokio::time::sleep(delay).await;
    }
    if plan.drop_connection {
        return HttpResponse::Ok()
            .content_type("application/json")
            .body(BrokenBody);
    }
    resp
}

async fn latency(sb: &Sandbox) {
    let latency = sb.inner.config.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
}

/// A body that fails on first read: actix closes the connection mid-response, so the
/// client gets a transport error after the call was applied.
struct BrokenBody;

impl MessageBody for BrokenBody {
    type Error = std::io::Error;

    fn size(&self) -> BodySize {
        BodySize::Sized(64)
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "sandbox: connection dropped after apply",
        ))))
    }
}

async fn token(sb: Data<Sandbox>, req: HttpRequest) -> HttpResponse {
    let q = query(&req);
    let get = |k: &str| q.get(k).map(String::as_str);
    sb.count_token_call(get("appid"), false);
    let plan = match gate(&sb, Api::Token) {
        Gate::Go(plan) => plan,
        Gate::Answer(resp, _) => return resp,
    };
    let result = sb.issue_token(&TokenRequest {
        grant_type: get("grant_type"),
        appid: get("appid"),
        secret: get("secret"),
        force_refresh: false,
    });
    let resp = match result {
        Ok((token, expires_in)) => {
            HttpResponse::Ok().json(json!({"access_token": token, "expires_in": expires_in}))
        }
        Err(e) => wx_error(&e),
    };
    finish(plan, resp).await
}

async fn stable_token(sb: Data<Sandbox>, body: Bytes) -> HttpResponse {
    let parsed = serde_json::from_slice::<Value>(&body)
        .ok()
        .filter(Value::is_object);
    let get = |k: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
    };
    sb.count_token_call(get("appid"), true);
    let plan = match gate(&sb, Api::StableToken) {
        Gate::Go(plan) => plan,
        Gate::Answer(resp, _) => return resp,
    };
    let force_refresh = parsed.as_ref().and_then(|v| v.get("force_refresh"));
    let resp = match (&parsed, force_refresh) {
        (None, _) => wx_error(&WxErr::new(rules::DATA_FORMAT_ERROR)),
        (Some(_), Some(f)) if !f.is_boolean() && !f.is_null() => wx_error(&WxErr::detail(
            rules::DATA_FORMAT_ERROR,
            "force_refresh must be a boolean",
        )),
        (Some(_), force) => {
            let result = sb.issue_stable_token(&TokenRequest {
                grant_type: get("grant_type"),
                appid: get("appid"),
                secret: get("secret"),
                force_refresh: force.and_then(Value::as_bool).unwrap_or(false),
            });
            match result {
                Ok((token, expires_in)) => HttpResponse::Ok()
                    .json(json!({"access_token": token, "expires_in": expires_in})),
                Err(e) => wx_error(&e),
            }
        }
    };
    finish(plan, resp).await
}

async fn jscode2session(sb: Data<Sandbox>, req: HttpRequest) -> HttpResponse {
    latency(&sb).await;
    let plan = match gate(&sb, Api::JsCode2Session) {
        Gate::Go(plan) => plan,
        Gate::Answer(resp, _) => return resp,
    };
    let q = query(&req);
    let get = |k: &str| q.get(k).map(String::as_str);
    let result = sb.code_to_session(&CodeRequest {
        appid: get("appid"),
        secret: get("secret"),
        js_code: get("js_code"),
        grant_type: get("grant_type"),
    });
    let resp = match result {
        Ok(openid) => HttpResponse::Ok()
            .json(json!({"openid": openid, "session_key": rules::new_session_key()})),
        Err(e) => wx_error(&e),
    };
    finish(plan, resp).await
}

async fn template_send(sb: Data<Sandbox>, req: HttpRequest, body: Bytes) -> HttpResponse {
    sb.inner.send_attempts.fetch_add(1, Ordering::SeqCst);
    // The latency is the network's and WeChat's: faulted answers take it too.
    latency(&sb).await;
    let plan = match gate(&sb, Api::TemplateSend) {
        Gate::Go(plan) => plan,
        Gate::Answer(resp, outcome) => {
            sb.count_outcome(MessageKind::Template, outcome);
            return resp;
        }
    };
    let q = query(&req);
    let resp = match sb.template_send(q.get("access_token").map(String::as_str), &body) {
        Ok(()) => {
            sb.count_outcome(MessageKind::Template, "ok".to_string());
            HttpResponse::Ok().json(json!({"errcode": 0, "errmsg": "ok"}))
        }
        Err(e) => {
            sb.count_outcome(MessageKind::Template, e.code.to_string());
            wx_error(&e)
        }
    };
    finish(plan, resp).await
}

async fn subscribe_send(sb: Data<Sandbox>, req: HttpRequest, body: Bytes) -> HttpResponse {
    sb.inner.send_attempts.fetch_add(1, Ordering::SeqCst);
    // The latency is the network's and WeChat's: faulted answers take it too.
    latency(&sb).await;
    let plan = match gate(&sb, Api::SubscribeSend) {
        Gate::Go(plan) => plan,
        Gate::Answer(resp, outcome) => {
            sb.count_outcome(MessageKind::Subscribe, outcome);
            return resp;
        }
    };
    let q = query(&req);
    let resp = match sb.subscribe_send(q.get("access_token").map(String::as_str), &body) {
        Ok(msgid) => {
            sb.count_outcome(MessageKind::Subscribe, "ok".to_string());
            HttpResponse::Ok().json(json!({"errcode": 0, "errmsg": "ok", "msgid": msgid}))
        }
        Err(e) => {
            sb.count_outcome(MessageKind::Subscribe, e.code.to_string());
            wx_error(&e)
        }
    };
    finish(plan, resp).await
}

async fn get_template(sb: Data<Sandbox>, req: HttpRequest) -> HttpResponse {
    let plan = match gate(&sb, Api::GetTemplate) {
        Gate::Go(plan) => plan,
        Gate::Answer(resp, _) => return resp,
    };
    let q = query(&req);
    let resp = match sb.get_templates(q.get("access_token").map(String::as_str)) {
        Ok(templates) => {
            HttpResponse::Ok().json(json!({"errcode": 0, "errmsg": "ok", "data": templates}))
        }
        Err(e) => wx_error(&e),
    };
    finish(plan, resp).await
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({"errcode": rules::INVALID_URL, "errmsg": "invalid url"}))
}

// ---- control endpoints -------------------------------------------------------------

/// A refused control call: an HTTP status with a WeChat-style JSON body.
#[derive(Debug)]
struct CtlErr {
    status: StatusCode,
    code: i64,
    msg: String,
}

impl CtlErr {
    fn new(status: StatusCode, code: i64, msg: impl Into<String>) -> Self {
        CtlErr {
            status,
            code,
            msg: msg.into(),
        }
    }
}

impl std::fmt::Display for CtlErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.msg, self.code)
    }
}

impl actix_web::ResponseError for CtlErr {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(json!({"errcode": self.code, "errmsg": self.msg}))
    }
}

type CtlResult = Result<HttpResponse, CtlErr>;

fn ok() -> CtlResult {
    Ok(HttpResponse::Ok().json(json!({"errcode": 0, "errmsg": "ok"})))
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, CtlErr> {
    serde_json::from_slice(body).map_err(|e| {
        CtlErr::new(
            StatusCode::BAD_REQUEST,
            rules::DATA_FORMAT_ERROR,
            format!("data format error: {e}"),
        )
    })
}

/// Control calls that hand out codes, formIds or grants need a registered app: a typo in
/// the appid would otherwise only show up later as 40013.
fn require_app(sb: &Sandbox, appid: &str) -> Result<(), CtlErr> {
    let registered = lock(&sb.inner.state)
        .apps
        .get(appid)
        .is_some_and(|a| a.secret.is_some());
    if registered {
        Ok(())
    } else {
        Err(CtlErr::new(
            StatusCode::NOT_FOUND,
            rules::INVALID_APPID,
            format!("unknown appid {appid}: POST /sandbox/apps first"),
        ))
    }
}

fn count_of(count: Option<u32>) -> Result<u32, CtlErr> {
    match count.unwrap_or(1) {
        n @ 1..=MAX_BATCH => Ok(n),
        _ => Err(CtlErr::new(
            StatusCode::BAD_REQUEST,
            rules::ARGUMENT_INVALID,
            format!("count must be between 1 and {MAX_BATCH}"),
        )),
    }
}

#[derive(Deserialize)]
struct AppBody {
    appid: String,
    secret: String,
    templates: Option<Vec<String>>,
    pages: Option<Vec<String>>,
}

async fn ctl_apps(sb: Data<Sandbox>, body: Bytes) -> CtlResult {
    let b: AppBody = parse(&body)?;
    if b.appid.is_empty() || b.secret.is_empty() {
        return Err(CtlErr::new(
            StatusCode::BAD_REQUEST,
            rules::ARGUMENT_INVALID,
            "appid and secret must not be empty",
        ));
    }
    sb.add_app(&b.appid, &b.secret);
    if let Some(t) = &b.templates {
        sb.set_templates(&b.appid, &t.iter().map(String::as_str).collect::<Vec<_>>());
    }
    if let Some(p) = &b.pages {
        sb.set_pages(&b.appid, &p.iter().map(String::as_str).collect::<Vec<_>>());
    }
    Ok(HttpResponse::Ok().json(json!({
        "errcode": 0, "errmsg": "ok", "appid": b.appid,
        "templates": b.templates, "pages": b.pages,
    })))
}

/// `{"appid", "title", "content": "会议时间:{{date2.DATA}}\n...", "example", "type": 2,
/// "enum_values": {"enum_string2": ["客厅", "卧室"]}, "template_id": "<optional>"}`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateBody {
    appid: String,
    template_id: Option<String>,
    title: String,
    content: String,
    #[serde(default)]
    example: String,
    #[serde(rename = "type", default = "one_time")]
    kind: i64,
    #[serde(default)]
    enum_values: std::collections::BTreeMap<String, Vec<String>>,
}

fn one_time() -> i64 {
    2
}

async fn ctl_add_template(sb: Data<Sandbox>, body: Bytes) -> CtlResult {
    let b: TemplateBody = parse(&body)?;
    require_app(&sb, &b.appid)?;
    let template = SubscribeTemplate {
        // WeChat's priTmplIds are 43 characters of [A-Za-z0-9_-].
        template_id: b.template_id.unwrap_or_else(|| rules::random_alnum(43)),
        title: b.title,
        content: b.content,
        example: b.example,
        kind: b.kind,
        keyword_enum_values: b
            .enum_values
            .into_iter()
            .map(|(key, values)| KeywordEnumValues {
                keyword_code: format!("{}.DATA", key.trim_end_matches(".DATA")),
                enum_value_list: values,
            })
            .collect(),
    };
    if template.template_id.is_empty() || template.keyword_keys().next().is_none() {
        return Err(CtlErr::new(
            StatusCode::BAD_REQUEST,
            rules::ARGUMENT_INVALID,
            "template_id must not be empty and content must hold at least one {{key.DATA}}",
        ));
    }
    let template_id = template.template_id.clone();
    sb.add_template(&b.appid, template);
    Ok(HttpResponse::Ok().json(json!({"errcode": 0, "errmsg": "ok", "template_id": template_id})))
}

#[derive(Deserialize)]
struct RemoveTemplateBody {
    appid: String,
    template_id: String,
}

async fn ctl_remove_template(sb: Data<Sandbox>, body: Bytes) -> CtlResult {
    let b: RemoveTemplateBody = parse(&body)?;
    if sb.remove_template(&b.appid, &b.template_id) {
        ok()
    } else {
        Err(CtlErr::new(
            StatusCode::NOT_FOUND,
            rules::INVALID_TEMPLATE_ID,
            format!("app {} has no template {}", b.appid, b.template_id),
        ))
    }
}

#[derive(Deserialize)]
struct UserBody {
    appid: String,
    openid: String,
}

async fn ctl_users(sb: Data<Sandbox>, body: Bytes) -> CtlResult {
    let b: UserBody = parse(&body)?;
    require_app(&sb, &b.appid)?;
    sb.add_user(&b.appid, &b.openid);
    ok()
}

async fn ctl_login_codes(sb: Data<Sandbox>, body: Bytes) -> CtlResult {
    let b: UserBody = parse(&body)?;
    require_app(&sb, &b.appid)?;
    Ok(HttpResponse::Ok().json(json!({"code": sb.login_code(&b.appid, &b.openid)})))
}

#[derive(Deserialize)]
struct FormIdsBody {
    appid: String,
    openid: String,
    count: Option<u32>,
    /// `android` (default), `ios`, or `prepay` (a prepay_id with 3 uses).
    platform: Option<String>,
}

async fn ctl_formids(sb: Data<Sandbox>, body: Bytes) -> CtlResult {
    let b: FormIdsBody = parse(&body)?;
    require_app(&sb, &b.appid)?;
    let count = count_of(b.count)?;
    let make: fn(&Sandbox, &str, &str) -> String = match b.platform.as_deref() {
        None | Some("android") => Sandbox::form_id,
        Some("ios") => Sandbox::ios_form_id,
        Some("prepay") => Sandbox::prepay_id,
        Some(other) => {
            return Err(CtlErr::new(
                StatusCode::BAD_REQUEST,
                rules::ARGUMENT_INVALID,
                format!("platform {other:?}: use android, ios or prepay"),
            ))
        }
    };
    let ids: Vec<String> = (0..count).map(|_| make(&sb, &b.appid, &b.openid)).collect();
    Ok(HttpResponse::Ok().json(json!({"form_ids": ids})))
}

#[derive(Deserialize)]
struct SubscriptionBody {
    appid: String,
    openid: String,
    template_id: String,
    count: Option<u32>,
}

async fn ctl_subscriptions(sb: Data<Sandbox>, body: Bytes) -> CtlResult {
    let b: SubscriptionBody = parse(&body)?;
    require_app(&sb, &b.appid)?;
    let count = count_of(b.count)?;
    sb.grant_subscription(&b.appid, &b.openid, &b.template_id, count);
    let grants = sb.subscription_grants(&b.appid, &b.openid, &b.template_id);
    Ok(HttpResponse::Ok().json(json!({"grants": grants})))
}

/// `{"api": "template_send", "errcode": -1 | "http_status": 503 | "delay_ms": 3000 |
/// "drop_after_apply": true, "times": 1}`
#[derive(Deserialize)]
struct FaultBody {
    api: Api,
    errcode: Option<i64>,
    http_status: Option<u16>,
    delay_ms: Option<u64>,
    #[serde(default)]
    drop_after_apply: bool,
    times: Option<u32>,
}

async fn ctl_faults(sb: Data<Sandbox>, body: Bytes) -> CtlResult {
    let b: FaultBody = parse(&body)?;
    let fault = match (b.errcode, b.http_status, b.delay_ms, b.drop_after_apply) {
        (Some(code), None, None, false) => Fault::Errcode(code),
        (None, Some(status), None, false) => Fault::HttpStatus(status),
        (None, None, Some(ms), false) => Fault::Delay(Duration::from_millis(ms)),
        (None, None, None, true) => Fault::DropAfterApply,
        _ => {
            return Err(CtlErr::new(
                StatusCode::BAD_REQUEST,
                rules::ARGUMENT_INVALID,
                "give exactly one of errcode, http_status, delay_ms, drop_after_apply",
            ))
        }
    };
    sb.fail_next(b.api, fault, b.times.unwrap_or(1));
    ok()
}

#[derive(Deserialize)]
struct AppIdBody {
    appid: String,
}

async fn ctl_expire_tokens(sb: Data<Sandbox>, body: Bytes) -> CtlResult {
    let b: AppIdBody = parse(&body)?;
    sb.expire_tokens(&b.appid);
    ok()
}

async fn ctl_reset_daily(sb: Data<Sandbox>) -> CtlResult {
    sb.reset_daily_counts();
    ok()
}

/// `?appid=&openid=&limit=` (limit default 100): the latest matching messages, oldest first.
async fn ctl_messages(sb: Data<Sandbox>, req: HttpRequest) -> CtlResult {
    let q = query(&req);
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100);
    let appid = q.get("appid");
    let openid = q.get("openid");
    let (total, mut latest) = {
        let messages = lock(&sb.inner.messages);
        let mut total = 0usize;
        let mut latest = Vec::new();
        for m in messages.iter().rev() {
            if appid.is_some_and(|a| *a != m.appid) || openid.is_some_and(|o| *o != m.touser) {
                continue;
            }
            total += 1;
            if latest.len() < limit {
                latest.push(m.clone());
            }
        }
        (total, latest)
    };
    latest.reverse();
    Ok(HttpResponse::Ok().json(json!({"total": total, "messages": latest})))
}

/// A webhook receiver for trying formpush locally: keeps the call (headers and raw body)
/// and answers 200. Point an app's `webhook_url` at `<sandbox>/sandbox/webhooks`.
async fn ctl_receive_webhook(sb: Data<Sandbox>, req: HttpRequest, body: Bytes) -> CtlResult {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    sb.record_webhook(ReceivedWebhook {
        at: sb.now(),
        timestamp: header("x-formpush-timestamp"),
        signature: header("x-formpush-signature"),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    Ok(HttpResponse::Ok().json(json!({"received": true})))
}

/// `?limit=` (default 100): the latest webhook calls received, oldest first.
async fn ctl_webhooks(sb: Data<Sandbox>, req: HttpRequest) -> CtlResult {
    let limit = query(&req)
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100);
    let all = sb.webhooks();
    let latest = all[all.len().saturating_sub(limit)..].to_vec();
    Ok(HttpResponse::Ok().json(json!({"total": all.len(), "webhooks": latest})))
}

async fn ctl_stats(sb: Data<Sandbox>) -> CtlResult {
    let apps: serde_json::Map<String, Value> = {
        let st = lock(&sb.inner.state);
        st.apps
            .iter()
            .map(|(appid, a)| {
                let grants: u64 = a
                    .grants
                    .values()
                    .flat_map(|g| g.values())
                    .map(|n| u64::from(*n))
                    .sum();
                let v = json!({
                    "registered": a.secret.is_some(),
                    "users": a.users.len(),
                    "form_ids": a.form_ids.len(),
                    "subscription_grants": grants,
                    "token_calls": a.token_calls,
                    "stable_token_calls": a.stable_token_calls,
                    "template_sent_today": a.daily.template_sent,
                    "subscribe_sent_today": a.daily.subscribe_sent,
                    "template_api_disabled": a.template_api_disabled,
                });
                (appid.clone(), v)
            })
            .collect()
    };
    Ok(HttpResponse::Ok().json(json!({
        "apps": apps,
        "send_attempts": sb.send_attempts(),
        "messages": sb.message_count(),
        "outcomes": {
            "template": sb.send_outcomes(MessageKind::Template),
            "subscribe": sb.send_outcomes(MessageKind::Subscribe),
        },
    })))
}
