//! The service's HTTP API as the harness calls it: admin requests, app set-up, user logins
//! through the fake WeChat, formId imports, template campaigns (created and polled until
//! they end), and the formIds and raw requests of client ingestion.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use chrono::{DateTime, Utc};
use formpush::domain::session::{SessionClaims, SessionSigner};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::service::{FakeWeChat, Service};
use crate::{SECRET, TEMPLATE};

/// The most items one import request may carry.
pub const IMPORT_MAX_ITEMS: usize = 10_000;

impl Service {
    /// An admin request; the answer's JSON (null when it has none).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.admin_token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("{path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates or updates `appid` with the benchmark secret.
    pub async fn put_app(&self, appid: &str, send_rate_per_sec: u32) -> anyhow::Result<()> {
        self.admin(
            reqwest::Method::PUT,
            &format!("/v1/apps/{appid}"),
            Some(&json!({"secret": SECRET, "send_rate_per_sec": send_rate_per_sec})),
        )
        .await?;
        Ok(())
    }

    /// Posts one import request (a prepared JSON body); returns the accepted count.
    pub async fn import(&self, appid: &str, body: Vec<u8>) -> anyhow::Result<u64> {
        let resp = self
            .http
            .post(format!("{}/v1/apps/{appid}/formids:import", self.base))
            .bearer_auth(&self.admin_token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("import: {status}: {text}");
        }
        let v: Value = serde_json::from_str(&text)?;
        Ok(v["accepted"].as_u64().unwrap_or(0))
    }
}

/// Logs in `count` users of `appid` through the fake WeChat (16 at a time); returns their
/// session tokens.
pub async fn login_users(
    svc: &Service,
    wechat: &FakeWeChat,
    appid: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let mut tokens = Vec::with_capacity(count);
    let mut pending = futures::stream::FuturesOrdered::new();
    for i in 0..count {
        let code = wechat.sandbox.login_code(appid, &format!("ingest-{i}"));
        let http = svc.http.clone();
        let url = format!("{}/v1/apps/{appid}/sessions", svc.base);
        pending.push_back(async move {
            let resp = http.post(url).json(&json!({"code": code})).send().await?;
            let status = resp.status();
            let v: Value = resp.json().await?;
            if !status.is_success() {
                bail!("login: {status}: {v}");
            }
            v["token"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("login answer without token: {v}"))
        });
        if pending.len() >= 16 {
            if let Some(t) = pending.next().await {
                tokens.push(t?);
            }
        }
    }
    while let Some(t) = pending.next().await {
        tokens.push(t?);
    }
    Ok(tokens)
}

/// An import request body: `{"items": [{"openid", "form_id"}, ...]}`.
pub fn import_body(items: impl Iterator<Item = (String, String)>) -> Vec<u8> {
    let items: Vec<Value> = items
        .map(|(openid, form_id)| json!({"openid": openid, "form_id": form_id}))
        .collect();
    serde_json::to_vec(&json!({ "items": items })).expect("JSON encoding")
}

/// Imports `items` (openid, formId) in requests of the most items each, one after another;
/// returns the accepted count.
pub async fn import_formids(
    svc: &Service,
    appid: &str,
    items: &[(String, String)],
) -> anyhow::Result<u64> {
    let mut accepted = 0;
    for chunk in items.chunks(IMPORT_MAX_ITEMS) {
        accepted += svc
            .import(appid, import_body(chunk.iter().cloned()))
            .await?;
    }
    Ok(accepted)
}

/// A formId no other in the run has: 32 hex digits from the run's `nonce`, the `stream`
/// that makes it (a connection, the import) and that stream's counter `n`.
pub fn form_id(nonce: u32, stream: u32, n: u64) -> String {
    format!("{nonce:08x}{stream:08x}{n:016x}")
}

/// How long the harness waits for one formId post's answer.
pub const POST_TIMEOUT: Duration = Duration::from_secs(30);

/// Session tokens the harness signs itself, for a population too large to log in through
/// the fake WeChat (the soak's million users): the key is the one every instance loads from
/// the database, so the service accepts them as its own.
pub struct SignedTokens {
    signer: SessionSigner,
    appid: String,
    first_user: i64,
    users: u64,
    expires_at: DateTime<Utc>,
}

/// Steps through the users in a scattered order (a prime, so every user comes once per
/// `users` requests whatever their number): consecutive requests are for unrelated users, as
/// a real population's are.
const USER_STRIDE: u64 = 2_654_435_761;

impl SignedTokens {
    /// Tokens of `appid` for the users with ids `first_user ..= last_user`, signed with the
    /// database's session key (created by the service at its start).
    pub async fn load(
        pool: &sqlx::PgPool,
        appid: &str,
        first_user: i64,
        last_user: i64,
    ) -> anyhow::Result<Self> {
        let key = formpush::store::keys::session_signing_key(pool).await?;
        Ok(SignedTokens {
            signer: SessionSigner::new(key),
            appid: appid.to_string(),
            first_user,
            users: (last_user - first_user + 1).max(1) as u64,
            expires_at: Utc::now() + formpush::domain::session::SESSION_VALIDITY,
        })
    }

    /// The token for the population's `n`-th request.
    fn token(&self, n: u64) -> String {
        let user = self.first_user + (n.wrapping_mul(USER_STRIDE) % self.users) as i64;
        self.signer.issue(&SessionClaims {
            appid: self.appid.clone(),
            user_id: user,
            expires_at: self.expires_at,
        })
    }
}

/// Whose tokens a connection's formId posts carry.
enum PostTokens {
    /// Its share of logged-in users' tokens, in turn.
    Listed(Vec<String>),
    /// Tokens signed per request, the population's users in a scattered order.
    Signed(Arc<SignedTokens>),
}

/// The formId posts of one client connection (for `raw_http::RawConn`): one formId per
/// request, unique to the connection, each for the next of its users.
pub struct FormIdPosts {
    pub addr: String,
    appid: &'static str,
    tokens: PostTokens,
    conn_index: u32,
    conns: u64,
    nonce: u32,
}

impl FormIdPosts {
    /// Connection `conn_index` of `conns` posts to `appid` at `base` for every `conns`-th
    /// of `tokens`, starting at its own index.
    pub fn new(
        base: &str,
        appid: &'static str,
        tokens: &[String],
        conn_index: usize,
        conns: usize,
        nonce: u32,
    ) -> Self {
        let listed = tokens
            .iter()
            .skip(conn_index)
            .step_by(conns)
            .cloned()
            .collect();
        Self::with(
            base,
            appid,
            PostTokens::Listed(listed),
            conn_index,
            conns,
            nonce,
        )
    }

    /// Connection `conn_index` of `conns` posts to `appid` at `base` for the signed
    /// population: its request k is the population's request `k * conns + conn_index`.
    pub fn signed(
        base: &str,
        appid: &'static str,
        tokens: Arc<SignedTokens>,
        conn_index: usize,
        conns: usize,
        nonce: u32,
    ) -> Self {
        Self::with(
            base,
            appid,
            PostTokens::Signed(tokens),
            conn_index,
            conns,
            nonce,
        )
    }

    fn with(
        base: &str,
        appid: &'static str,
        tokens: PostTokens,
        conn_index: usize,
        conns: usize,
        nonce: u32,
    ) -> Self {
        FormIdPosts {
            addr: base.trim_start_matches("http://").to_string(),
            appid,
            tokens,
            conn_index: conn_index as u32,
            conns: conns as u64,
            nonce,
        }
    }

    /// The connection's `n`-th request, raw HTTP/1.1.
    pub fn request(&self, n: u64) -> String {
        let token = match &self.tokens {
            PostTokens::Listed(tokens) => tokens[(n as usize) % tokens.len()].clone(),
            PostTokens::Signed(signed) => signed.token(n * self.conns + self.conn_index as u64),
        };
        let form_id = form_id(self.nonce, self.conn_index, n);
        let body = format!("{{\"form_id\":\"{form_id}\"}}");
        format!(
            "POST /v1/apps/{}/formids HTTP/1.1\r\nHost: {}\r\n\
             Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.appid,
            self.addr,
            body.len()
        )
    }
}

/// The `accepted` count of a formId report's answer (0 if unreadable).
pub fn accepted_in(body: &[u8]) -> u64 {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    v["accepted"].as_u64().unwrap_or(0)
}

/// A template campaign starting now, to `audience`.
pub fn template_campaign(appid: &str, name: &str, audience: Value) -> Value {
    json!({
        "appid": appid,
        "name": name,
        "kind": "template",
        "template_id": TEMPLATE,
        "page": "pages/index/index",
        "data": {"keyword1": {"value": "{{openid}}"}, "keyword2": {"value": "{{datetime}}"}},
        "audience": audience,
        "schedule": {"type": "now"}
    })
}

/// How a campaign's run through the service ended.
pub struct CampaignEnd {
    /// Whether it reached a final status (completed, failed, cancelled) before the timeout.
    pub done: bool,
    /// Its last status ("?" if never read).
    pub status: String,
    /// Seconds from the POST to the poll that saw it end (or to the timeout).
    pub secs: f64,
    /// The last `GET /v1/campaigns/{id}` answer (totals, last_error).
    pub last: Value,
}

/// Creates `campaign` and polls it every `poll` until it ends or `timeout` passes; with a
/// `progress` label, says it was created and prints its totals every 10 s.
pub async fn run_campaign(
    svc: &Service,
    campaign: &Value,
    poll: Duration,
    timeout: Duration,
    progress: Option<&str>,
) -> anyhow::Result<CampaignEnd> {
    // The clock starts before the POST: the total includes creating the deliveries.
    let started = Instant::now();
    let created = svc
        .admin(reqwest::Method::POST, "/v1/campaigns", Some(campaign))
        .await?;
    let id = created["id"]
        .as_str()
        .ok_or_else(|| anyhow!("campaign answer without id: {created}"))?
        .to_string();
    if let Some(label) = progress {
        println!("{label} campaign {id} created; polling");
    }
    let mut last = Value::Null;
    let mut done = false;
    let mut next_print = Instant::now() + Duration::from_secs(10);
    while started.elapsed() < timeout {
        tokio::time::sleep(poll).await;
        last = svc
            .admin(reqwest::Method::GET, &format!("/v1/campaigns/{id}"), None)
            .await?;
        let status = last["status"].as_str().unwrap_or_default();
        if matches!(status, "completed" | "failed" | "cancelled") {
            done = true;
            break;
        }
        if let Some(label) = progress {
            if Instant::now() >= next_print {
                println!(
                    "{label} {:.0} s: {status}, totals {}",
                    started.elapsed().as_secs_f64(),
                    last["totals"]
                );
                next_print += Duration::from_secs(10);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(CampaignEnd {
        done,
        status: last["status"].as_str().unwrap_or("?").to_string(),
        secs,
        last,
    })
}

impl Service {
    /// Creates an API key of `appid` with `scopes`; returns the key (shown once).
    pub async fn create_key(&self, appid: &str, scopes: &[&str]) -> anyhow::Result<String> {
        let v = self
            .admin(
                reqwest::Method::POST,
                &format!("/v1/apps/{appid}/keys"),
                Some(&json!({"name": "bench", "scopes": scopes})),
            )
            .await?;
        v["key"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("key answer without key: {v}"))
    }

    /// `POST /v1/apps/{appid}/templates:sync`; returns the synced templates' ids.
    pub async fn sync_templates(&self, appid: &str) -> anyhow::Result<Vec<String>> {
        let v = self
            .admin(
                reqwest::Method::POST,
                &format!("/v1/apps/{appid}/templates:sync"),
                None,
            )
            .await?;
        Ok(template_ids(&v))
    }

    /// `GET /v1/apps/{appid}/templates`: the ids of the stored templates.
    pub async fn templates(&self, appid: &str) -> anyhow::Result<Vec<String>> {
        let v = self
            .admin(
                reqwest::Method::GET,
                &format!("/v1/apps/{appid}/templates"),
                None,
            )
            .await?;
        Ok(template_ids(&v))
    }
}

fn template_ids(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|t| t["template_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A triggered subscribe message to send now (`POST /v1/apps/{appid}/messages`), raw
/// HTTP/1.1 for `raw_http::RawConn`, authorized by `key`; `marker` is its `thing1` value
/// (at most 20 ASCII characters), by which the fake WeChat's record of it is found.
pub fn trigger_request(
    addr: &str,
    appid: &str,
    key: &str,
    openid: &str,
    template_id: &str,
    marker: &str,
) -> String {
    let body = json!({
        "openid": openid,
        "kind": "subscribe",
        "template_id": template_id,
        "data": {"thing1": {"value": marker}, "time2": {"value": "{{datetime}}"}}
    })
    .to_string();
    format!(
        "POST /v1/apps/{appid}/messages HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {key}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}
