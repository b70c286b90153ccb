//! A fake WeChat API server that follows WeChat's documented rules.
//!
//! It serves the WeChat endpoints formpush calls (`/cgi-bin/token`, `/cgi-bin/stable_token`,
//! `/sns/jscode2session`, `/cgi-bin/message/wxopen/template/send`,
//! `/cgi-bin/message/subscribe/send`) with WeChat's paths, shapes and errcodes, plus control
//! endpoints under `/sandbox/` to set up apps, users, formIds and grants, and a webhook
//! receiver (`/sandbox/webhooks`) that keeps what formpush pushes. It is used as the
//! fake WeChat in integration tests, as the target of load benchmarks, and by people as
//! `formpush sandbox` to try campaigns on a laptop.
//!
//! Rules enforced (from WeChat's open documentation for mini-programs):
//! - access tokens: each `/cgi-bin/token` call issues a new token and leaves the previous
//!   one valid for 5 more minutes (then 40001; any older one at once); past its lifetime a
//!   token answers 42001; an absent token 41001, an empty or malformed one 40014. At most
//!   2,000 classic tokens per app per day (45009). The stable token is the same while valid
//!   (renewed in its last 5 minutes), `force_refresh` replaces it at once (at most 20 a day).
//! - login codes: issued here for an (app, openid), single use (40163), 5 minutes (40029).
//! - template messages: a formId belongs to the user it was issued for, lasts 7 days and is
//!   used once (a `prepay_id` three times): 41028 / 41029. Optional template and page
//!   whitelists (40037 / 41030), unknown users (40003), a daily quota of successful sends
//!   (45009, resets at 00:00 Asia/Shanghai), and a per-app switch answering 45103.
//! - subscribe messages: each send needs and spends one grant of that template for that
//!   user (43101); data values are checked against the rule of their key's type (47003,
//!   `data_rules`). Templates added with `/sandbox/templates` are listed by
//!   `/wxaapi/newtmpl/gettemplate`; once an app has some, a subscribe send must name one
//!   of them (40037) and fill each of its keywords, enum values from its list (47003).
//!
//! Everything lives in memory behind a few `std::sync::Mutex`es held for microseconds (no
//! I/O or await while locked), so the server keeps up with benchmark loads. A sandbox
//! clock ([`Sandbox::advance_clock`]) lets tests age tokens, codes and formIds instantly.

mod cli;
mod data_rules;
mod handlers;
mod rules;
mod state;
#[cfg(test)]
mod tests;

pub use cli::{run, AppCredential, SandboxArgs};
pub use data_rules::subscribe_value_ok;

use std::collections::{HashMap, VecDeque};
use std::net::TcpListener;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use state::{FormIdRec, State, PREPAY_USES};

/// Settings shared by every app of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    /// Added to every call of the two send APIs and of `jscode2session`.
    pub latency: Duration,
    /// Lifetime of an access token (WeChat: 7200 s).
    pub token_ttl: Duration,
    /// Successful sends per app per day and per message kind before 45009
    /// (WeChat: 1,000,000 template messages).
    pub daily_quota: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            latency: Duration::ZERO,
            token_ttl: Duration::from_secs(7200),
            daily_quota: 1_000_000,
        }
    }
}

/// The WeChat APIs faults can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Api {
    /// `GET /cgi-bin/token`
    #[serde(rename = "token")]
    Token,
    /// `POST /cgi-bin/stable_token`
    #[serde(rename = "stable_token")]
    StableToken,
    /// `GET /sns/jscode2session`
    #[serde(rename = "jscode2session")]
    JsCode2Session,
    /// `POST /cgi-bin/message/wxopen/template/send`
    #[serde(rename = "template_send")]
    TemplateSend,
    /// `POST /cgi-bin/message/subscribe/send`
    #[serde(rename = "subscribe_send")]
    SubscribeSend,
    /// `GET /wxaapi/newtmpl/gettemplate`
    #[serde(rename = "gettemplate")]
    GetTemplate,
}

/// A subscribe template of an app, as `gettemplate` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeTemplate {
    #[serde(rename = "priTmplId")]
    pub template_id: String,
    pub title: String,
    /// `会议时间:{{date2.DATA}}\n会议地点:{{thing1.DATA}}\n`: one keyword per `{{key.DATA}}`.
    pub content: String,
    pub example: String,
    /// 2: one-time subscription, 3: long-term.
    #[serde(rename = "type")]
    pub kind: i64,
    /// The values of `enum_string` keywords.
    #[serde(
        rename = "keywordEnumValueList",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub keyword_enum_values: Vec<KeywordEnumValues>,
}

/// One `keywordEnumValueList` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeywordEnumValues {
    /// `enum_string2.DATA`
    #[serde(rename = "keywordCode")]
    pub keyword_code: String,
    #[serde(rename = "enumValueList")]
    pub enum_value_list: Vec<String>,
}

impl SubscribeTemplate {
    /// The keys of its keywords, as `data` names them (`thing1`).
    pub fn keyword_keys(&self) -> impl Iterator<Item = &str> {
        self.content.split("{{").skip(1).filter_map(|part| {
            let (inner, _) = part.split_once("}}")?;
            Some(inner.trim().trim_end_matches(".DATA"))
        })
    }

    /// The listed values of an enum keyword.
    pub fn enum_values_of(&self, key: &str) -> Option<&[String]> {
        self.keyword_enum_values
            .iter()
            .find(|e| e.keyword_code.trim_end_matches(".DATA") == key)
            .map(|e| e.enum_value_list.as_slice())
    }
}

/// What happens to one call of an API instead of (or on top of) normal handling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this errcode with a plausible errmsg; the call is not applied.
    Errcode(i64),
    /// Answer this HTTP status with a plain-text body; the call is not applied.
    HttpStatus(u16),
    /// Apply the call at once, then hold the answer back this long: a client that times
    /// out meanwhile sees a timeout for a call that WAS applied (message delivered).
    Delay(Duration),
    /// Apply the call, then break the connection instead of answering.
    DropAfterApply,
}

/// Which send API a recorded message went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    /// A template message sent with a formId or prepay_id.
    Template,
    /// A subscribe message sent with a one-time grant.
    Subscribe,
}

impl MessageKind {
    fn as_str(self) -> &'static str {
        match self {
            MessageKind::Template => "template",
            MessageKind::Subscribe => "subscribe",
        }
    }
}

/// A message the sandbox accepted (errcode 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentMessage {
    /// Which send API accepted it.
    pub kind: MessageKind,
    /// The app whose access token was used.
    pub appid: String,
    /// The recipient's openid.
    pub touser: String,
    /// The template used.
    pub template_id: String,
    /// The `page` sent, if any (as sent, query included).
    pub page: Option<String>,
    /// The formId or prepay_id used (template messages).
    pub form_id: Option<String>,
    /// The `data` object as sent.
    pub data: serde_json::Value,
    /// The `msgid` answered (subscribe messages).
    pub msgid: Option<u64>,
    /// `miniprogram_state` as sent (subscribe messages).
    pub miniprogram_state: Option<String>,
    /// `lang` as sent (subscribe messages).
    pub lang: Option<String>,
    /// `emphasis_keyword` as sent (template messages).
    pub emphasis_keyword: Option<String>,
    /// When it was accepted, by the sandbox clock.
    pub at: DateTime<Utc>,
}

/// A webhook call the sandbox received on `POST /sandbox/webhooks` (a stand-in for a team's
/// backend when formpush is tried on a laptop).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceivedWebhook {
    /// When it arrived, by the sandbox clock.
    pub at: DateTime<Utc>,
    /// The `X-Formpush-Timestamp` header.
    pub timestamp: Option<String>,
    /// The `X-Formpush-Signature` header, to check with the app's webhook secret.
    pub signature: Option<String>,
    /// The raw body, exactly as received (what the signature covers).
    pub body: String,
}

/// Webhook calls kept; older ones are dropped.
const MAX_WEBHOOKS: usize = 10_000;

/// A fake WeChat. Cloning is cheap and clones share all state.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    config: SandboxConfig,
    state: Mutex<State>,
    messages: Mutex<Vec<SentMessage>>,
    webhooks: Mutex<VecDeque<ReceivedWebhook>>,
    faults: Mutex<HashMap<Api, VecDeque<Fault>>>,
    /// Lets the hot path skip the faults lock when none are queued.
    pending_faults: AtomicUsize,
    /// Counts per send kind and outcome ("ok", "41028", "http_503", ...).
    outcomes: Mutex<HashMap<&'static str, HashMap<String, u64>>>,
    send_attempts: AtomicU64,
    clock_offset_ms: AtomicI64,
    next_msgid: AtomicU64,
}

/// A running sandbox server.
pub struct SandboxServer {
    /// Like `http://127.0.0.1:PORT`: use it as `WECHAT_API_BASE`.
    pub base_url: String,
    handle: ServerHandle,
    stopped: bool,
}

impl SandboxServer {
    /// The actix handle, e.g. to pause the server.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Stops accepting connections and waits for the workers to finish.
    pub async fn stop(mut self) {
        self.stopped = true;
        self.handle.stop(true).await;
    }
}

impl Drop for SandboxServer {
    fn drop(&mut self) {
        if !self.stopped {
            // The command is sent when `stop` is called; the completion future is not needed.
            drop(self.handle.stop(false));
        }
    }
}

/// Locks a mutex even if a panicking thread poisoned it: the data stays consistent
/// because no code path panics half-way through an update.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sandbox {
    /// An empty sandbox: no apps until [`Sandbox::add_app`] or `POST /sandbox/apps`.
    pub fn new(config: SandboxConfig) -> Self {
        Sandbox {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(State::default()),
                messages: Mutex::new(Vec::new()),
                webhooks: Mutex::new(VecDeque::new()),
                faults: Mutex::new(HashMap::new()),
                pending_faults: AtomicUsize::new(0),
                outcomes: Mutex::new(HashMap::new()),
                send_attempts: AtomicU64::new(0),
                clock_offset_ms: AtomicI64::new(0),
                // WeChat msgids are large 64-bit numbers.
                next_msgid: AtomicU64::new(1_700_000_000_000_000_000),
            }),
        }
    }

    /// The settings it was created with.
    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    /// Serves on an already-bound listener, on the current tokio runtime, and returns the
    /// base URL. Fails when called outside a tokio runtime.
    pub fn serve(&self, listener: TcpListener) -> std::io::Result<SandboxServer> {
        let rt = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
        let addr = listener.local_addr()?;
        // An unspecified address (0.0.0.0) is reachable on loopback.
        let host = if addr.ip().is_unspecified() {
            match addr {
                std::net::SocketAddr::V4(_) => "127.0.0.1".to_string(),
                std::net::SocketAddr::V6(_) => "[::1]".to_string(),
            }
        } else {
            match addr {
                std::net::SocketAddr::V4(a) => a.ip().to_string(),
                std::net::SocketAddr::V6(a) => format!("[{}]", a.ip()),
            }
        };
        let base_url = format!("http://{host}:{}", addr.port());
        let data = web::Data::new(self.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .configure(handlers::configure)
        })
        // Embedded in tests and in the CLI: the owner decides when to stop.
        .disable_signals()
        .shutdown_timeout(1)
        .backlog(4096)
        .listen(listener)?
        .run();
        let handle = server.handle();
        rt.spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "sandbox server failed");
            }
        });
        Ok(SandboxServer {
            base_url,
            handle,
            stopped: false,
        })
    }

    /// Registers an app (or changes its secret), keeping any settings made before.
    pub fn add_app(&self, appid: &str, secret: &str) {
        lock(&self.inner.state).app_mut(appid).secret = Some(secret.to_string());
    }

    /// Restricts the app to these template ids (40037 otherwise). Empty: any template.
    pub fn set_templates(&self, appid: &str, template_ids: &[&str]) {
        let set = (!template_ids.is_empty())
            .then(|| template_ids.iter().map(|t| t.to_string()).collect());
        lock(&self.inner.state).app_mut(appid).templates = set;
    }

    /// Restricts the app to these pages (41030 otherwise; a query string after `?` and a
    /// leading `/` are ignored). Empty: any page.
    pub fn set_pages(&self, appid: &str, pages: &[&str]) {
        let set = (!pages.is_empty()).then(|| {
            pages
                .iter()
                .map(|p| rules::page_path(p).to_string())
                .collect()
        });
        lock(&self.inner.state).app_mut(appid).pages = set;
    }

    /// Adds a subscribe template to the app (replacing one with the same id): listed by
    /// `gettemplate`, and its keywords checked on every subscribe send naming it.
    pub fn add_template(&self, appid: &str, template: SubscribeTemplate) {
        let mut st = lock(&self.inner.state);
        let templates = &mut st.app_mut(appid).subscribe_templates;
        templates.retain(|t| t.template_id != template.template_id);
        templates.push(template);
    }

    /// Removes a subscribe template from the app (as deleting it in the WeChat console).
    pub fn remove_template(&self, appid: &str, template_id: &str) -> bool {
        let mut st = lock(&self.inner.state);
        let templates = &mut st.app_mut(appid).subscribe_templates;
        let before = templates.len();
        templates.retain(|t| t.template_id != template_id);
        templates.len() != before
    }

    /// The app's subscribe templates, in the order they were added.
    pub fn templates(&self, appid: &str) -> Vec<SubscribeTemplate> {
        lock(&self.inner.state)
            .apps
            .get(appid)
            .map(|a| a.subscribe_templates.clone())
            .unwrap_or_default()
    }

    /// A fresh `wx.login` code for this user (single use, 5 minutes); makes the user known.
    pub fn login_code(&self, appid: &str, openid: &str) -> String {
        let now = self.now();
        let code = rules::random_alnum(32);
        let mut st = lock(&self.inner.state);
        st.app_mut(appid).users.insert(openid.to_string());
        st.codes.insert(
            code.clone(),
            state::CodeRec {
                appid: appid.to_string(),
                openid: openid.to_string(),
                issued_at: now,
                used: false,
            },
        );
        code
    }

    /// An Android-style formId (13-digit millisecond timestamp of now), unique per app.
    pub fn form_id(&self, appid: &str, openid: &str) -> String {
        let now = self.now();
        lock(&self.inner.state)
            .app_mut(appid)
            .insert_android_form_id(openid, now, true)
    }

    /// An Android-style formId created at `created_at` (for expiry tests).
    pub fn form_id_created_at(
        &self,
        appid: &str,
        openid: &str,
        created_at: DateTime<Utc>,
    ) -> String {
        lock(&self.inner.state)
            .app_mut(appid)
            .insert_android_form_id(openid, created_at, false)
    }

    /// An iOS-style formId: 32 lowercase hex characters.
    pub fn ios_form_id(&self, appid: &str, openid: &str) -> String {
        self.insert_form_id(appid, openid, rules::random_hex(32), 1)
    }

    /// A WeChat Pay `prepay_id` ("wx" + 28 alphanumerics), usable three times.
    pub fn prepay_id(&self, appid: &str, openid: &str) -> String {
        let id = format!("wx{}", rules::random_alnum(28));
        self.insert_form_id(appid, openid, id, PREPAY_USES)
    }

    fn insert_form_id(&self, appid: &str, openid: &str, id: String, uses: u8) -> String {
        let now = self.now();
        let mut st = lock(&self.inner.state);
        let app = st.app_mut(appid);
        app.users.insert(openid.to_string());
        app.form_ids.insert(
            id.clone(),
            FormIdRec {
                openid: openid.to_string(),
                created_at: now,
                uses_left: uses,
            },
        );
        id
    }

    /// Makes `openid` a known user of the app (else sends to it answer 40003).
    pub fn add_user(&self, appid: &str, openid: &str) {
        lock(&self.inner.state)
            .app_mut(appid)
            .users
            .insert(openid.to_string());
    }

    /// Adds `count` one-time grants ("accept"s) of the template for this user.
    pub fn grant_subscription(&self, appid: &str, openid: &str, template_id: &str, count: u32) {
        let mut st = lock(&self.inner.state);
        let app = st.app_mut(appid);
        app.users.insert(openid.to_string());
        let n = app
            .grants
            .entry(openid.to_string())
            .or_default()
            .entry(template_id.to_string())
            .or_default();
        *n = n.saturating_add(count);
    }

    /// Grants left for this user and template.
    pub fn subscription_grants(&self, appid: &str, openid: &str, template_id: &str) -> u32 {
        let st = lock(&self.inner.state);
        st.apps
            .get(appid)
            .and_then(|a| a.grants.get(openid))
            .and_then(|g| g.get(template_id))
            .copied()
            .unwrap_or(0)
    }

    /// Applies `fault` to the next `times` calls of `api` (after faults already queued).
    pub fn fail_next(&self, api: Api, fault: Fault, times: u32) {
        if times == 0 {
            return;
        }
        let mut faults = lock(&self.inner.faults);
        let queue = faults.entry(api).or_default();
        for _ in 0..times {
            queue.push_back(fault.clone());
        }
        self.inner
            .pending_faults
            .fetch_add(times as usize, Ordering::SeqCst);
    }

    /// Removes all queued faults.
    pub fn clear_faults(&self) {
        let mut faults = lock(&self.inner.faults);
        faults.clear();
        self.inner.pending_faults.store(0, Ordering::SeqCst);
    }

    fn take_fault(&self, api: Api) -> Option<Fault> {
        if self.inner.pending_faults.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let mut faults = lock(&self.inner.faults);
        let fault = faults.get_mut(&api).and_then(VecDeque::pop_front);
        if fault.is_some() {
            self.inner.pending_faults.fetch_sub(1, Ordering::SeqCst);
        }
        fault
    }

    /// Every token of the app (classic, in grace, stable) is now expired: 42001.
    pub fn expire_tokens(&self, appid: &str) {
        let now = self.now();
        let mut st = lock(&self.inner.state);
        for rec in st.tokens.values_mut().filter(|t| t.appid == appid) {
            rec.expires_at = rec.expires_at.min(now);
        }
    }

    /// WeChat switched the template-message API off for this app: every call gets 45103.
    pub fn disable_template_api(&self, appid: &str) {
        lock(&self.inner.state).app_mut(appid).template_api_disabled = true;
    }

    /// Undoes [`Sandbox::disable_template_api`].
    pub fn enable_template_api(&self, appid: &str) {
        lock(&self.inner.state).app_mut(appid).template_api_disabled = false;
    }

    /// Successful sends per day and per kind for this app before 45009.
    pub fn set_daily_quota(&self, appid: &str, quota: u64) {
        lock(&self.inner.state).app_mut(appid).daily_quota = Some(quota);
    }

    /// As if the day had turned (00:00 Asia/Shanghai) for every app.
    pub fn reset_daily_counts(&self) {
        let mut st = lock(&self.inner.state);
        for app in st.apps.values_mut() {
            app.daily = state::Daily::default();
        }
    }

    /// Calls of `/cgi-bin/token` plus `/cgi-bin/stable_token` naming this app.
    pub fn token_calls(&self, appid: &str) -> u64 {
        let st = lock(&self.inner.state);
        st.apps
            .get(appid)
            .map_or(0, |a| a.token_calls + a.stable_token_calls)
    }

    /// Every message accepted so far, oldest first.
    pub fn messages(&self) -> Vec<SentMessage> {
        lock(&self.inner.messages).clone()
    }

    /// Messages accepted for one user of one app, oldest first.
    pub fn messages_to(&self, appid: &str, openid: &str) -> Vec<SentMessage> {
        lock(&self.inner.messages)
            .iter()
            .filter(|m| m.appid == appid && m.touser == openid)
            .cloned()
            .collect()
    }

    /// Webhook calls received on `POST /sandbox/webhooks`, oldest first.
    pub fn webhooks(&self) -> Vec<ReceivedWebhook> {
        lock(&self.inner.webhooks).iter().cloned().collect()
    }

    fn record_webhook(&self, webhook: ReceivedWebhook) {
        let mut kept = lock(&self.inner.webhooks);
        if kept.len() == MAX_WEBHOOKS {
            kept.pop_front();
        }
        kept.push_back(webhook);
    }

    /// Number of messages accepted so far.
    pub fn message_count(&self) -> usize {
        lock(&self.inner.messages).len()
    }

    /// All calls to the two send APIs, whatever their outcome (faults included).
    pub fn send_attempts(&self) -> u64 {
        self.inner.send_attempts.load(Ordering::SeqCst)
    }

    /// Calls of one send kind by outcome: "ok", an errcode ("41028"), "http_503", ...
    pub fn send_outcomes(&self, kind: MessageKind) -> HashMap<String, u64> {
        lock(&self.inner.outcomes)
            .get(kind.as_str())
            .cloned()
            .unwrap_or_default()
    }

    /// The sandbox's clock: real time plus whatever [`Sandbox::advance_clock`] added.
    pub fn now(&self) -> DateTime<Utc> {
        let offset = self.inner.clock_offset_ms.load(Ordering::SeqCst);
        Utc::now() + chrono::Duration::milliseconds(offset)
    }

    /// Moves the sandbox clock forward: tokens, login codes, formIds and daily quotas age
    /// as if that much time had passed.
    pub fn advance_clock(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX / 4);
        self.inner.clock_offset_ms.fetch_add(ms, Ordering::SeqCst);
    }

    fn record_message(&self, msg: SentMessage) {
        lock(&self.inner.messages).push(msg);
    }

    fn count_outcome(&self, kind: MessageKind, outcome: String) {
        let mut outcomes = lock(&self.inner.outcomes);
        *outcomes
            .entry(kind.as_str())
            .or_default()
            .entry(outcome)
            .or_default() += 1;
    }
}
