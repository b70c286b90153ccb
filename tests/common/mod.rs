//! What the test binaries share (tests/api/ and tests/faults.rs): formpush in this process
//! on a random port over the test's fresh `#[sqlx::test]` database, with the sandbox as
//! WeChat (`TestApp`); more instances on the same database (`Instance`); the real
//! `formpush` binary as a child process (`process`); and bounded polling (`eventually`).
//!
//! The scheduler is stepped by hand unless a test asks for the clock: formpush is built
//! with `FORMPUSH_SCHEDULER=manual`, and `TestApp::run_scheduler` does what one tick does
//! (start the runs due, resume campaigns whose quota reset) and then sends until nothing
//! is left to send, so a campaign test waits for nothing. `run_scheduler_at` steps to a
//! later time, which fires `at` and cron schedules at once. Tests of the clock itself and
//! of instances racing each other pass `REAL_CLOCK`.

// Each test binary uses a part of this module.
#![allow(dead_code)]

pub mod process;
pub mod receiver;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use formpush::config::Settings;
use formpush::scheduler::Scheduler;
use formpush::startup::Application;
use formpush::webhooks::Dispatcher;
use formpush_sandbox::{Sandbox, SandboxConfig, SandboxServer};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub const APPID: &str = "wxtestapp00000001";
pub const SECRET: &str = "test-app-secret";
pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const PUSH_TOKEN: &str = "pushtoken";

/// The scheduler on its own one-second clock, as in production.
pub const REAL_CLOCK: (&str, &str) = ("FORMPUSH_SCHEDULER", "on");
/// No scheduler at all: the instance only serves HTTP.
pub const NO_SCHEDULER: (&str, &str) = ("FORMPUSH_SCHEDULER", "off");

/// A scheduler step (`run_until_idle`) that takes longer than this is stuck: it fails the
/// test instead of hanging the suite.
const STEP_LIMIT: Duration = Duration::from_secs(60);

/// Settings of an in-process instance: the test admin token, WeChat at `wechat_base`, quick
/// retries, a 1 s WeChat timeout and a scheduler stepped by hand; `extra` on top.
pub fn settings(wechat_base: &str, extra: &[(&str, &str)]) -> Settings {
    let mut env: HashMap<String, String> = [
        ("FORMPUSH_BIND", "127.0.0.1:0"),
        ("FORMPUSH_ADMIN_TOKEN", ADMIN_TOKEN),
        ("WECHAT_API_BASE", wechat_base),
        ("FORMPUSH_RETRY_BACKOFF_MS", "5"),
        ("WECHAT_TIMEOUT_MS", "1000"),
        ("FORMPUSH_SCHEDULER", "manual"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    Settings::from_lookup(|k| env.get(k).cloned()).expect("test settings")
}

/// The test database as a URL, for a `formpush` child process.
pub fn database_url(db: &PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        db.get_username(),
        db.get_host(),
        db.get_port(),
        db.get_database().expect("sqlx::test names the database")
    )
}

pub async fn pool(db: &PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        .max_connections(12)
        .connect_with(db.clone())
        .await
        .expect("test pool")
}

/// Polls `check` every 20 ms until it yields a value, and fails the test, naming `what`,
/// when `within` passes first.
pub async fn eventually<T>(
    within: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback listener on a port outside Linux's ephemeral range (32768–60999): no
/// outgoing connection can take that port while it is unbound, so a server can be stopped
/// and started again on the same address.
pub fn listener_outside_ephemeral_range() -> std::net::TcpListener {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    for _ in 0..1000 {
        let port = rng.gen_range(20_000..32_000);
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener;
        }
    }
    panic!("no free port in 20000..32000");
}

/// A free port outside the ephemeral range, for a child process to bind.
pub fn free_port() -> u16 {
    listener_outside_ephemeral_range()
        .local_addr()
        .expect("bound")
        .port()
}

/// The sandbox serving again on `base_url` (it may take the old server a moment to let go).
async fn serve_again(wechat: &Sandbox, base_url: &str) -> SandboxServer {
    let addr = base_url.trim_start_matches("http://").to_string();
    let listener = eventually(
        Duration::from_secs(10),
        "rebinding the sandbox port",
        async || std::net::TcpListener::bind(&addr).ok(),
    )
    .await;
    wechat.serve(listener).expect("sandbox")
}

/// The sandbox as WeChat, with the test app, serving on a port outside the ephemeral range
/// (so that it can stop and start again on the same address).
pub fn start_wechat(config: SandboxConfig) -> (Sandbox, SandboxServer) {
    let wechat = Sandbox::new(config);
    wechat.add_app(APPID, SECRET);
    let server = wechat
        .serve(listener_outside_ephemeral_range())
        .expect("sandbox");
    (wechat, server)
}

/// One formpush instance in this process (what `formpush serve` runs), on a random port.
/// Dropped, it shuts down and lets go of the database.
pub struct Instance {
    pub address: String,
    scheduler: Option<Scheduler>,
    webhooks: Option<Dispatcher>,
    shutdown: CancellationToken,
    pool: PgPool,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Closes `pool` soon, on the test's runtime. `#[sqlx::test]` drops the test's database
/// once the test returns, and Postgres keeps a DROP DATABASE waiting (5 s, then refuses)
/// while any connection to it is open: every pool on it must be closed by then. Closing
/// is async and a drop cannot wait: the close runs while the DROP waits for it.
fn close_soon(pool: &PgPool) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let pool = pool.clone();
        runtime.spawn(async move { pool.close().await });
    }
}

/// Starts one more formpush instance on the database of `db`.
pub async fn start_instance(
    db: &PgConnectOptions,
    wechat_base: &str,
    extra: &[(&str, &str)],
) -> Instance {
    start_instance_on(pool(db).await, wechat_base, extra).await
}

/// Starts a formpush instance that uses `pool` (a test may want to starve it).
pub async fn start_instance_on(
    pool: PgPool,
    wechat_base: &str,
    extra: &[(&str, &str)],
) -> Instance {
    let app = Application::build_with_pool(settings(wechat_base, extra), pool.clone())
        .await
        .expect("build app");
    let address = format!("http://127.0.0.1:{}", app.port());
    let scheduler = app.scheduler();
    let webhooks = app.webhooks();
    let shutdown = app.shutdown_token();
    let task = tokio::spawn(app.run_until_stopped());
    Instance {
        address,
        scheduler,
        webhooks,
        shutdown,
        pool,
        task,
    }
}

impl Instance {
    /// One scheduler step at the current time: see `run_scheduler_at`.
    pub async fn run_scheduler(&self) -> usize {
        self.run_scheduler_at(Utc::now()).await
    }

    /// Does what a tick at `now` does (quota-paused campaigns whose reset passed resume, due
    /// runs start), then sends for every app with work until nothing is left to send.
    /// Returns the number of runs started.
    pub async fn run_scheduler_at(&self, now: DateTime<Utc>) -> usize {
        tokio::time::timeout(STEP_LIMIT, self.scheduler().run_until_idle(now))
            .await
            .expect("the scheduler step finishes")
            .expect("the scheduler step succeeds")
    }

    /// Attempts every webhook event due at `at`, as the dispatcher's loop would; returns the
    /// attempts made.
    pub async fn dispatch_webhooks_at(&self, at: DateTime<Utc>) -> usize {
        let webhooks = self
            .webhooks
            .as_ref()
            .expect("a webhook dispatcher (not with FORMPUSH_SCHEDULER=off)");
        tokio::time::timeout(STEP_LIMIT, webhooks.run_until_idle(at))
            .await
            .expect("the dispatch finishes")
            .expect("the dispatch succeeds")
    }

    pub fn scheduler(&self) -> &Scheduler {
        self.scheduler
            .as_ref()
            .expect("a scheduler (not with FORMPUSH_SCHEDULER=off)")
    }

    /// Graceful shutdown, as on SIGTERM; returns when the instance has stopped.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.shutdown.cancel();
        close_soon(&self.pool);
    }
}

/// formpush with the sandbox as WeChat and the test app registered in both.
pub struct TestApp {
    pub address: String,
    pub http: reqwest::Client,
    pub wechat: Sandbox,
    /// A pool of its own on the app's database, for the test's queries.
    pub pool: PgPool,
    /// The test's database.
    pub db: PgConnectOptions,
    wechat_url: String,
    sandbox_server: Mutex<Option<SandboxServer>>,
    instance: Instance,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        close_soon(&self.pool);
    }
}

pub async fn spawn_app(db: PgConnectOptions) -> TestApp {
    spawn_app_with(db, SandboxConfig::default(), &[]).await
}

pub async fn spawn_app_with(
    db: PgConnectOptions,
    sandbox_config: SandboxConfig,
    extra: &[(&str, &str)],
) -> TestApp {
    let app_pool = pool(&db).await;
    spawn_app_on(db, app_pool, sandbox_config, extra).await
}

/// `TestApp` on the database of `db` whose formpush uses `app_pool`.
pub async fn spawn_app_on(
    db: PgConnectOptions,
    app_pool: PgPool,
    sandbox_config: SandboxConfig,
    extra: &[(&str, &str)],
) -> TestApp {
    // Logs only when asked for (RUST_LOG=...), to keep test output readable.
    if std::env::var_os("RUST_LOG").is_some() {
        formpush::telemetry::init(formpush::config::LogFormat::Text);
    }
    let (wechat, sandbox) = start_wechat(sandbox_config);
    let instance = start_instance_on(app_pool, &sandbox.base_url, extra).await;
    let app = TestApp {
        address: instance.address.clone(),
        http: reqwest::Client::new(),
        wechat,
        pool: pool(&db).await,
        db,
        wechat_url: sandbox.base_url.clone(),
        sandbox_server: Mutex::new(Some(sandbox)),
        instance,
    };
    let resp = app
        .put_app(
            APPID,
            &json!({"secret": SECRET, "token": PUSH_TOKEN, "send_rate_per_sec": 5000}),
        )
        .await;
    assert!(resp.status().is_success(), "registering the test app");
    app
}

impl TestApp {
    pub fn sandbox_url(&self) -> String {
        self.wechat_url.clone()
    }

    /// See `Instance::run_scheduler_at`; at the current time.
    pub async fn run_scheduler(&self) -> usize {
        self.instance.run_scheduler().await
    }

    /// See `Instance::run_scheduler_at`.
    pub async fn run_scheduler_at(&self, now: DateTime<Utc>) -> usize {
        self.instance.run_scheduler_at(now).await
    }

    /// See `Instance::dispatch_webhooks_at`.
    pub async fn dispatch_webhooks_at(&self, at: DateTime<Utc>) -> usize {
        self.instance.dispatch_webhooks_at(at).await
    }

    pub fn scheduler(&self) -> &Scheduler {
        self.instance.scheduler()
    }

    /// One more instance on the same database and WeChat, its scheduler stepped by hand.
    pub async fn another_instance(&self) -> Instance {
        start_instance(&self.db, &self.wechat_url, &[]).await
    }

    /// Stops this instance (gracefully) and starts a fresh one in its place.
    pub async fn restart(&mut self) {
        let fresh = self.another_instance().await;
        self.address = fresh.address.clone();
        std::mem::replace(&mut self.instance, fresh).stop().await;
    }

    /// WeChat goes dark: connections to it are refused.
    pub async fn stop_wechat(&self) {
        let server = self.sandbox_server.lock().expect("sandbox lock").take();
        if let Some(server) = server {
            server.stop().await;
        }
    }

    /// WeChat is back on its old address, with its state.
    pub async fn restart_wechat(&self) {
        let server = serve_again(&self.wechat, &self.wechat_url).await;
        *self.sandbox_server.lock().expect("sandbox lock") = Some(server);
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// A call of `who` to `path` of this instance, with a JSON body if any.
    pub async fn call(
        &self,
        who: &As,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        self.call_at(&self.address, who, method, path, body).await
    }

    /// A call of `who` to `path` of the instance at `address`.
    pub async fn call_at(
        &self,
        address: &str,
        who: &As,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        call_as(&self.http, address, who, method, path, body).await
    }

    /// A new API key of the test app with these scopes.
    pub async fn key(&self, scopes: &[&str]) -> As {
        key_of(&self.http, &self.address, APPID, scopes).await
    }

    /// An admin GET answered 200, as JSON.
    pub async fn admin_get(&self, path: &str) -> Value {
        let resp = self.admin(reqwest::Method::GET, path).send().await.unwrap();
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.json().await.unwrap()
    }

    pub async fn put_app(&self, appid: &str, body: &Value) -> reqwest::Response {
        self.admin(reqwest::Method::PUT, &format!("/v1/apps/{appid}"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Logs `openid` in through the sandbox's jscode2session; returns the session token.
    pub async fn login(&self, openid: &str) -> String {
        let code = self.wechat.login_code(APPID, openid);
        let resp = self.post_session(APPID, &json!({ "code": code })).await;
        assert_eq!(resp.status(), 200, "login of {openid}");
        let body: Value = resp.json().await.unwrap();
        body["token"].as_str().unwrap().to_string()
    }

    pub async fn post_session(&self, appid: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/apps/{appid}/sessions", self.address))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_formids(&self, token: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/apps/{APPID}/formids", self.address))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// The user logs in and accepts `template` `times` times: WeChat and formpush both
    /// count the grants.
    pub async fn grant(&self, openid: &str, template: &str, times: u32) {
        self.wechat
            .grant_subscription(APPID, openid, template, times);
        let token = self.login(openid).await;
        for _ in 0..times {
            let resp = self
                .post_subscriptions(&token, &json!({ template: "accept" }))
                .await;
            assert_eq!(resp.status(), 200);
        }
    }

    /// The user with session `token` reports the answers of a subscribe prompt.
    pub async fn post_subscriptions(&self, token: &str, results: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/apps/{APPID}/subscriptions", self.address))
            .bearer_auth(token)
            .json(&json!({ "results": results }))
            .send()
            .await
            .unwrap()
    }

    pub async fn import(&self, body: &Value) -> reqwest::Response {
        self.admin(
            reqwest::Method::POST,
            &format!("/v1/apps/{APPID}/formids:import"),
        )
        .json(body)
        .send()
        .await
        .unwrap()
    }

    /// Imports `per_user` sandbox-issued formIds for each of `openids`.
    pub async fn import_users(&self, openids: impl IntoIterator<Item = String>, per_user: usize) {
        let items: Vec<Value> = openids
            .into_iter()
            .flat_map(|openid| {
                (0..per_user)
                    .map(|_| json!({"openid": openid, "form_id": self.wechat.form_id(APPID, &openid)}))
                    .collect::<Vec<_>>()
            })
            .collect();
        let resp = self.import(&json!({ "items": items })).await;
        assert_eq!(resp.status(), 200);
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["accepted"], items.len(), "{answer}");
    }

    /// Imports `n` formIds the sandbox issued to the user a minute apart; returns them,
    /// oldest first.
    pub async fn formids(&self, openid: &str, n: usize) -> Vec<String> {
        let ids: Vec<String> = (0..n)
            .map(|i| {
                let at = Utc::now() - chrono::Duration::minutes((n - i) as i64);
                self.wechat.form_id_created_at(APPID, openid, at)
            })
            .collect();
        let items: Vec<Value> = ids
            .iter()
            .map(|id| json!({"openid": openid, "form_id": id}))
            .collect();
        let resp = self.import(&json!({ "items": items })).await;
        assert_eq!(resp.status(), 200);
        ids
    }

    /// `who` asks for a message to be sent (`POST /v1/apps/{appid}/messages`).
    pub async fn post_message(&self, who: &As, body: &Value) -> reqwest::Response {
        let path = format!("/v1/apps/{APPID}/messages");
        self.call(who, Method::POST, &path, Some(body)).await
    }

    /// Posts a message that must be accepted (202); returns it.
    pub async fn accepted(&self, who: &As, body: &Value) -> Value {
        let resp = self.post_message(who, body).await;
        let status = resp.status();
        let message: Value = resp.json().await.unwrap();
        assert_eq!(status, 202, "{message}");
        message
    }

    pub async fn message(&self, id: &str) -> Value {
        self.admin_get(&format!("/v1/apps/{APPID}/messages/{id}"))
            .await
    }

    pub async fn stats(&self) -> Value {
        self.admin_get(&format!("/v1/apps/{APPID}/stats")).await
    }

    /// A user who logged in and posted `n` fresh formIds issued by the sandbox.
    pub async fn user_with_formids(&self, openid: &str, n: usize) -> (String, Vec<String>) {
        let token = self.login(openid).await;
        let ids: Vec<String> = (0..n).map(|_| self.wechat.form_id(APPID, openid)).collect();
        if n > 0 {
            let resp = self.post_formids(&token, &json!({ "form_ids": ids })).await;
            assert_eq!(resp.status(), 200);
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["accepted"], n, "{body}");
        }
        (token, ids)
    }

    pub async fn create_campaign(&self, body: &Value) -> reqwest::Response {
        self.admin(reqwest::Method::POST, "/v1/campaigns")
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn campaign(&self, id: &str) -> Value {
        self.admin_get(&format!("/v1/campaigns/{id}")).await
    }

    /// The campaign, which must be in `status` now.
    pub async fn campaign_in(&self, id: &str, status: &str) -> Value {
        let c = self.campaign(id).await;
        assert_eq!(c["status"], status, "{c}");
        c
    }

    pub async fn campaign_action(&self, id: &str, action: &str) -> reqwest::Response {
        self.admin(
            reqwest::Method::POST,
            &format!("/v1/campaigns/{id}/{action}"),
        )
        .send()
        .await
        .unwrap()
    }

    pub async fn deliveries(&self, id: &str, query: &str) -> Value {
        self.admin_get(&format!("/v1/campaigns/{id}/deliveries?{query}"))
            .await
    }

    pub async fn runs(&self, id: &str) -> Value {
        self.admin_get(&format!("/v1/campaigns/{id}/runs")).await
    }

    /// Creates a campaign and returns its id.
    pub async fn start_campaign(&self, body: Value) -> String {
        let resp = self.create_campaign(&body).await;
        let status = resp.status();
        let created: Value = resp.json().await.unwrap();
        assert_eq!(status, 201, "{created}");
        created["id"].as_str().unwrap().to_string()
    }

    /// Creates a campaign and steps the scheduler, which sends it; the campaign must end in
    /// `status` (`completed`, `failed`, `paused`...). Returns its id and the campaign.
    pub async fn run_campaign(&self, body: Value, status: &str) -> (String, Value) {
        let id = self.start_campaign(body).await;
        self.run_scheduler().await;
        let campaign = self.campaign_in(&id, status).await;
        (id, campaign)
    }

    /// For tests on the real clock: polls until the campaign reaches `status`, for at most
    /// a minute.
    pub async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        let mut last = Value::Null;
        let reached = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                last = self.campaign(id).await;
                if last["status"] == status {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(reached.is_ok(), "campaign never reached {status}: {last}");
        last
    }

    /// Counts the rows of a query (`select count(*) ...`).
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

/// `(status, error code)` of an error answer.
pub async fn error_of(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_string(),
    )
}

/// Who calls an API: the admin token or one of an app's API keys.
#[derive(Clone, Debug)]
pub enum As {
    Admin,
    Key(String),
}

/// A call of `who` to `path` of the instance at `address`, with a JSON body if any.
pub async fn call_as(
    http: &reqwest::Client,
    address: &str,
    who: &As,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut req = http.request(method, format!("{address}{path}"));
    req = match who {
        As::Admin => req.bearer_auth(ADMIN_TOKEN),
        As::Key(key) => req.bearer_auth(key),
    };
    if let Some(body) = body {
        req = req.json(body);
    }
    req.send().await.unwrap()
}

/// Makes a key of `appid` with `scopes` through the admin API of the instance at `address`.
pub async fn key_of(http: &reqwest::Client, address: &str, appid: &str, scopes: &[&str]) -> As {
    let resp = http
        .post(format!("{address}/v1/apps/{appid}/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "test backend", "scopes": scopes}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    As::Key(created["key"].as_str().unwrap().to_string())
}

/// A subscribe message to `openid` with template `TPL_M`, sent now.
pub fn subscribe_message(openid: &str) -> Value {
    json!({
        "openid": openid, "kind": "subscribe", "template_id": "TPL_M",
        "page": "pages/order/index?id=9",
        "data": {"thing1": {"value": "Order shipped"}, "time2": {"value": "{{datetime}}"}},
        "miniprogram_state": "formal", "lang": "zh_CN"
    })
}

/// A template campaign body to `now`, for the given audience.
pub fn template_campaign(audience: Value) -> Value {
    json!({
        "appid": APPID,
        "name": "test campaign",
        "kind": "template",
        "template_id": "TPL_ORDER",
        "page": "pages/index/index",
        "data": {"keyword1": {"value": "hello {{openid}}"}, "keyword2": {"value": "{{date}}"}},
        "audience": audience,
        "schedule": {"type": "now"}
    })
}

/// A subscribe campaign body to `now` for every user with a grant for `template`.
pub fn subscribe_campaign(template: &str) -> Value {
    json!({
        "appid": APPID, "name": "sub", "kind": "subscribe", "template_id": template,
        "page": "pages/index/index", "miniprogram_state": "formal", "lang": "zh_CN",
        "data": {"thing1": {"value": "Order {{openid}}"}},
        "audience": {"type": "all"}, "schedule": {"type": "now"}
    })
}

/// Every message WeChat accepted went to a different user, each with a formId of its own
/// (none twice), and `users` users were reached.
pub fn assert_each_user_reached_once(wechat: &Sandbox, users: usize) {
    let mut per_user: HashMap<String, usize> = HashMap::new();
    let mut form_ids = std::collections::HashSet::new();
    for m in wechat.messages() {
        *per_user.entry(m.touser.clone()).or_default() += 1;
        if let Some(form_id) = &m.form_id {
            assert!(
                form_ids.insert(form_id.clone()),
                "formId sent twice: {form_id}"
            );
        }
    }
    assert_eq!(per_user.len(), users, "every user was reached");
    let twice: Vec<_> = per_user.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "users messaged more than once: {twice:?}");
}
