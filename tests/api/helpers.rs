//! `TestApp`: formpush on a random port, a fresh database, and the sandbox as WeChat.

use std::collections::HashMap;
use std::time::Duration;

use formpush::config::Settings;
use formpush_sandbox::{Sandbox, SandboxConfig, SandboxServer};
use formpush::startup::Application;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub const APPID: &str = "wxtestapp00000001";
pub const SECRET: &str = "test-app-secret";
pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const PUSH_TOKEN: &str = "pushtoken";

pub struct TestApp {
    pub address: String,
    pub http: reqwest::Client,
    pub wechat: Sandbox,
    pub pool: PgPool,
    wechat_url: String,
    sandbox_server: Option<SandboxServer>,
    // The app runs until the test's runtime ends.
    _task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub struct Instance {
    pub address: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Instance {
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

pub fn settings(wechat_base: &str, extra: &[(&str, &str)]) -> Settings {
    let mut env: HashMap<String, String> = [
        ("FORMPUSH_BIND", "127.0.0.1:0"),
        ("FORMPUSH_ADMIN_TOKEN", ADMIN_TOKEN),
        ("WECHAT_API_BASE", wechat_base),
        ("FORMPUSH_RETRY_BACKOFF_MS", "5"),
        ("WECHAT_TIMEOUT_MS", "1000"),
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

pub async fn spawn_app(db: PgConnectOptions) -> TestApp {
    spawn_app_with(db, SandboxConfig::default(), &[]).await
}

pub async fn spawn_app_with(
    db: PgConnectOptions,
    sandbox_config: SandboxConfig,
    extra: &[(&str, &str)],
) -> TestApp {
    // Logs only when asked for (RUST_LOG=...), to keep test output readable.
    if std::env::var_os("RUST_LOG").is_some() {
        formpush::telemetry::init(formpush::config::LogFormat::Text);
    }
    let wechat = Sandbox::new(sandbox_config);
    wechat.add_app(APPID, SECRET);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sandbox = wechat.serve(listener).expect("sandbox");
    let pool = pool(&db).await;
    let instance = start_instance(&db, &sandbox.base_url, extra).await;
    let app = TestApp {
        address: instance.address.clone(),
        http: reqwest::Client::new(),
        wechat,
        pool,
        wechat_url: sandbox.base_url.clone(),
        sandbox_server: Some(sandbox),
        _task: instance.task,
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

/// Starts one more formpush process-equivalent on the same database.
pub async fn start_instance(
    db: &PgConnectOptions,
    wechat_base: &str,
    extra: &[(&str, &str)],
) -> Instance {
    let pool = pool(db).await;
    let app = Application::build_with_pool(settings(wechat_base, extra), pool)
        .await
        .expect("build app");
    let address = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown_token();
    let task = tokio::spawn(app.run_until_stopped());
    Instance {
        address,
        shutdown,
        task,
    }
}

impl TestApp {
    pub fn sandbox_url(&self) -> String {
        self.wechat_url.clone()
    }

    /// WeChat goes dark: connections to it are refused.
    pub async fn stop_wechat(&mut self) {
        if let Some(server) = self.sandbox_server.take() {
            server.stop().await;
        }
    }

    /// WeChat is back on its old address, with its state.
    pub fn restart_wechat(&mut self) {
        let addr = self.wechat_url.trim_start_matches("http://");
        let listener = std::net::TcpListener::bind(addr).expect("rebind the sandbox port");
        self.sandbox_server = Some(self.wechat.serve(listener).unwrap());
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(ADMIN_TOKEN)
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

    pub async fn stats(&self) -> Value {
        let resp = self
            .admin(reqwest::Method::GET, &format!("/v1/apps/{APPID}/stats"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
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
        let resp = self
            .admin(reqwest::Method::GET, &format!("/v1/campaigns/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
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
        let resp = self
            .admin(
                reqwest::Method::GET,
                &format!("/v1/campaigns/{id}/deliveries?{query}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    pub async fn runs(&self, id: &str) -> Value {
        let resp = self
            .admin(reqwest::Method::GET, &format!("/v1/campaigns/{id}/runs"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    /// Creates a campaign and returns its id.
    pub async fn start_campaign(&self, body: Value) -> String {
        let resp = self.create_campaign(&body).await;
        let status = resp.status();
        let created: Value = resp.json().await.unwrap();
        assert_eq!(status, 201, "{created}");
        created["id"].as_str().unwrap().to_string()
    }

    /// Polls until the campaign reaches `status` (or fails the test after 20 s).
    pub async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let c = self.campaign(id).await;
            if c["status"] == status {
                return c;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "campaign never reached {status}: {c}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
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
