//! `Stepped`: formpush with `FORMPUSH_SCHEDULER=manual`, whose sender and webhook
//! dispatcher the test steps by hand, with the sandbox as WeChat; and `Receiver`, a webhook
//! receiver that records what it gets and answers as scripted.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use chrono::{DateTime, Utc};
use formpush::scheduler::Scheduler;
use formpush::startup::Application;
use formpush::webhooks::Dispatcher;
use formpush_sandbox::{Sandbox, SandboxConfig, SandboxServer};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::common::{pool, settings, ADMIN_TOKEN, APPID, SECRET};

/// Who calls: the admin token or an API key.
#[derive(Clone, Debug)]
pub enum As {
    Admin,
    Key(String),
}

/// One formpush instance stepped by hand.
pub struct Node {
    pub address: String,
    pub scheduler: Scheduler,
    pub webhooks: Dispatcher,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Node {
    pub async fn start(db: &PgConnectOptions, wechat_base: &str) -> Self {
        let app = Application::build_with_pool(
            settings(wechat_base, &[("FORMPUSH_SCHEDULER", "manual")]),
            pool(db).await,
        )
        .await
        .expect("build app");
        Self {
            address: format!("http://127.0.0.1:{}", app.port()),
            scheduler: app.scheduler().expect("a manual scheduler"),
            webhooks: app.webhooks().expect("a webhook dispatcher"),
            shutdown: app.shutdown_token(),
            task: tokio::spawn(app.run_until_stopped()),
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

pub struct Stepped {
    pub node: Node,
    pub http: reqwest::Client,
    pub wechat: Sandbox,
    pub pool: PgPool,
    pub db: PgConnectOptions,
    pub wechat_url: String,
    _sandbox: SandboxServer,
}

impl Stepped {
    pub async fn spawn(db: PgConnectOptions) -> Self {
        let wechat = Sandbox::new(SandboxConfig::default());
        wechat.add_app(APPID, SECRET);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sandbox = wechat.serve(listener).expect("sandbox");
        let node = Node::start(&db, &sandbox.base_url).await;
        let app = Self {
            node,
            http: reqwest::Client::new(),
            wechat,
            pool: pool(&db).await,
            db,
            wechat_url: sandbox.base_url.clone(),
            _sandbox: sandbox,
        };
        let resp = app
            .call(
                &As::Admin,
                Method::PUT,
                &format!("/v1/apps/{APPID}"),
                Some(&json!({"secret": SECRET, "send_rate_per_sec": 5000})),
            )
            .await;
        assert!(resp.status().is_success(), "registering the test app");
        app
    }

    /// Another instance on the same database and WeChat.
    pub async fn another_node(&self) -> Node {
        Node::start(&self.db, &self.wechat_url).await
    }

    /// Stops this instance and starts a fresh one in its place (same database).
    pub async fn restart(&mut self) {
        let fresh = self.another_node().await;
        std::mem::replace(&mut self.node, fresh).stop().await;
    }

    pub async fn call_at(
        &self,
        address: &str,
        who: &As,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut req = self.http.request(method, format!("{address}{path}"));
        req = match who {
            As::Admin => req.bearer_auth(ADMIN_TOKEN),
            As::Key(key) => req.bearer_auth(key),
        };
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send().await.unwrap()
    }

    pub async fn call(
        &self,
        who: &As,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        self.call_at(&self.node.address, who, method, path, body)
            .await
    }

    /// A new key of the test app with these scopes.
    pub async fn key(&self, scopes: &[&str]) -> As {
        key_of(&self.http, &self.node.address, APPID, scopes).await
    }

    pub async fn post_message(&self, who: &As, body: &Value) -> reqwest::Response {
        self.call(
            who,
            Method::POST,
            &format!("/v1/apps/{APPID}/messages"),
            Some(body),
        )
        .await
    }

    /// Posts a message that must be accepted; returns it.
    pub async fn accepted(&self, who: &As, body: &Value) -> Value {
        let resp = self.post_message(who, body).await;
        let status = resp.status();
        let message: Value = resp.json().await.unwrap();
        assert_eq!(status, 202, "{message}");
        message
    }

    pub async fn message(&self, id: &str) -> Value {
        let resp = self
            .call(
                &As::Admin,
                Method::GET,
                &format!("/v1/apps/{APPID}/messages/{id}"),
                None,
            )
            .await;
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    pub async fn stats(&self) -> Value {
        let resp = self
            .call(
                &As::Admin,
                Method::GET,
                &format!("/v1/apps/{APPID}/stats"),
                None,
            )
            .await;
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    /// The user logs in and accepts `template` `times` times (WeChat knows the grants too).
    pub async fn grant(&self, openid: &str, template: &str, times: u32) {
        self.wechat
            .grant_subscription(APPID, openid, template, times);
        let code = self.wechat.login_code(APPID, openid);
        let session: Value = self
            .http
            .post(format!("{}/v1/apps/{APPID}/sessions", self.node.address))
            .json(&json!({ "code": code }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = session["token"].as_str().expect("a session").to_string();
        for _ in 0..times {
            let resp = self
                .http
                .post(format!(
                    "{}/v1/apps/{APPID}/subscriptions",
                    self.node.address
                ))
                .bearer_auth(&token)
                .json(&json!({"results": {template: "accept"}}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        }
    }

    /// Imports `n` fresh formIds the sandbox issued to the user; returns them, oldest first.
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
        let resp = self
            .call(
                &As::Admin,
                Method::POST,
                &format!("/v1/apps/{APPID}/formids:import"),
                Some(&json!({ "items": items })),
            )
            .await;
        assert_eq!(resp.status(), 200);
        ids
    }

    /// Sends what is due now (or at `at`), as the scheduler would.
    pub async fn step(&self) {
        self.step_at(Utc::now()).await;
    }

    pub async fn step_at(&self, at: DateTime<Utc>) {
        self.node.scheduler.run_until_idle(at).await.expect("step");
    }

    /// Attempts every webhook event due at `at`; returns the attempts made.
    pub async fn dispatch_at(&self, at: DateTime<Utc>) -> usize {
        self.node
            .webhooks
            .run_until_idle(at)
            .await
            .expect("dispatch")
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }
}

/// Makes a key of `appid` with `scopes` through the admin API.
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

/// One request as the receiver got it.
#[derive(Clone, Debug)]
pub struct Received {
    pub timestamp: Option<String>,
    pub signature: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A webhook receiver on a random port: answers each request with the next scripted
/// status (200 once the script is used up) and keeps what it got.
pub struct Receiver {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    _server: actix_web::dev::ServerHandle,
}

struct ReceiverState {
    script: Mutex<VecDeque<u16>>,
    received: Arc<Mutex<Vec<Received>>>,
}

async fn receive(
    state: web::Data<ReceiverState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    state.received.lock().unwrap().push(Received {
        timestamp: header("x-formpush-timestamp"),
        signature: header("x-formpush-signature"),
        content_type: header("content-type"),
        body: body.to_vec(),
    });
    let status = state.script.lock().unwrap().pop_front().unwrap_or(200);
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
}

impl Receiver {
    pub fn start(script: &[u16]) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = web::Data::new(ReceiverState {
            script: Mutex::new(script.iter().copied().collect()),
            received: received.clone(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks/formpush", listener.local_addr().unwrap());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/hooks/formpush", web::post().to(receive))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url,
            received,
            _server: handle,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}
