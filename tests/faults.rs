//! Fault tests (run by `scripts/faults`, which adds a Postgres restart mid-campaign on a
//! private cluster):
//!
//! - a real `formpush serve` process killed with SIGKILL in the middle of ingestion: every
//!   acknowledged formId is stored exactly once, and re-posting after the restart counts
//!   duplicates instead of storing rows twice;
//! - WeChat unreachable for a minute in the middle of a campaign: nothing fails, the
//!   campaign completes once WeChat is back, every user is reached exactly once.
//!
//! Each test runs on its own `#[sqlx::test]` database with the sandbox as WeChat, and is
//! bounded in time (the outage test takes about 80 s by design).

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use formpush::config::Settings;
use formpush_sandbox::{Sandbox, SandboxConfig, SandboxServer};
use formpush::startup::Application;
use futures::StreamExt;
use rand::Rng;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::time::Instant;

const APPID: &str = "wxfaulttest000001";
const SECRET: &str = "fault-test-secret";
const ADMIN_TOKEN: &str = "fault-admin-token";

/// Kills the child process when the test ends, pass or fail.
struct KillOnDrop(Child);

impl KillOnDrop {
    /// SIGKILL, then reap.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback port outside Linux's ephemeral range (32768–60999), so that no outgoing
/// connection can take it while it is unbound (the outage test binds it twice).
fn free_port() -> u16 {
    let mut rng = rand::thread_rng();
    for _ in 0..1000 {
        let port = rng.gen_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}

fn database_url(db: &PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        db.get_username(),
        db.get_host(),
        db.get_port(),
        db.get_database().expect("sqlx::test names the database")
    )
}

async fn pool(db: &PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .connect_with(db.clone())
        .await
        .expect("test pool")
}

/// The fake WeChat with the test app, serving on `port`.
fn serve_sandbox(sandbox: &Sandbox, port: u16) -> SandboxServer {
    // The port may still be held a moment by the stopping server: try for a few seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => return sandbox.serve(listener).expect("sandbox"),
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("binding the sandbox port {port}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("cannot bind the sandbox port {port}: {e}"),
        }
    }
}

/// Starts the real `formpush serve` binary on `port`.
fn spawn_formpush(db_url: &str, port: u16, wechat_base: &str) -> KillOnDrop {
    let logs = || {
        if std::env::var_os("FAULTS_CHILD_LOGS").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        }
    };
    KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_formpush"))
            .arg("serve")
            .env("DATABASE_URL", db_url)
            .env("FORMPUSH_BIND", format!("127.0.0.1:{port}"))
            .env("FORMPUSH_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("WECHAT_API_BASE", wechat_base)
            .env("WECHAT_APPID", APPID)
            .env("WECHAT_SECRET", SECRET)
            .env("FORMPUSH_SCHEDULER", "off")
            .env("FORMPUSH_SESSION_RATE_PER_MIN", "100000")
            .env("RUST_LOG", "warn")
            .stdout(logs())
            .stderr(logs())
            .spawn()
            .expect("start formpush"),
    )
}

/// Waits until the child answers `/healthz` (it creates and migrates the database first).
async fn wait_healthy(http: &reqwest::Client, child: &mut KillOnDrop, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("formpush exited at start: {status} (FAULTS_CHILD_LOGS=1 shows its logs)");
        }
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "formpush never became healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One ingestion call: a client post of a user's formIds, or an admin import.
#[derive(Clone)]
enum Post {
    Client {
        token: String,
        openid: String,
        form_ids: Vec<String>,
    },
    Import {
        items: Vec<(String, String)>,
    },
}

impl Post {
    /// (openid, formId) of every formId in the call.
    fn credits(&self) -> Vec<(String, String)> {
        match self {
            Post::Client {
                openid, form_ids, ..
            } => form_ids
                .iter()
                .map(|f| (openid.clone(), f.clone()))
                .collect(),
            Post::Import { items } => items.clone(),
        }
    }
}

/// `Some((accepted, duplicates))` when the call was answered 200 with a readable body: the
/// service acknowledged it. `None` for anything else (refused connection, reset, 5xx).
async fn send(http: &reqwest::Client, base: &str, post: &Post) -> Option<(u64, u64)> {
    let req = match post {
        Post::Client {
            token, form_ids, ..
        } => http
            .post(format!("{base}/v1/apps/{APPID}/formids"))
            .bearer_auth(token)
            .json(&json!({ "form_ids": form_ids })),
        Post::Import { items } => {
            let items: Vec<Value> = items
                .iter()
                .map(|(o, f)| json!({"openid": o, "form_id": f}))
                .collect();
            http.post(format!("{base}/v1/apps/{APPID}/formids:import"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({ "items": items }))
        }
    };
    let resp = req.send().await.ok()?;
    if resp.status() != 200 {
        return None;
    }
    let body: Value = resp.json().await.ok()?;
    let rejected = body["rejected"].as_array().map_or(0, Vec::len);
    assert_eq!(rejected, 0, "sandbox formIds are valid: {body}");
    Some((body["accepted"].as_u64()?, body["duplicates"].as_u64()?))
}

/// Every stored formId of the app with its owner's openid, failing on a formId stored twice.
async fn stored_formids(pool: &PgPool) -> HashMap<String, String> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "select f.form_id, u.openid from formids f join users u on u.id = f.user_id
         where f.appid = $1",
    )
    .bind(APPID)
    .fetch_all(pool)
    .await
    .unwrap();
    let total = rows.len();
    let map: HashMap<String, String> = rows.into_iter().collect();
    assert_eq!(map.len(), total, "a formId is stored twice");
    map
}

#[sqlx::test]
async fn sigkill_mid_ingestion_loses_no_acknowledged_formid(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    const USERS: usize = 40;
    const POSTS_PER_USER: usize = 60;
    const IDS_PER_POST: usize = 3;
    const IMPORTS: usize = 60;
    const ITEMS_PER_IMPORT: usize = 100;
    const IN_FLIGHT: usize = 64;

    let wechat = Sandbox::new(SandboxConfig::default());
    wechat.add_app(APPID, SECRET);
    let sandbox = serve_sandbox(&wechat, free_port());
    let url = database_url(&db);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = spawn_formpush(&url, port, &sandbox.base_url);
    wait_healthy(&http, &mut child, &base).await;

    // Users log in (sessions survive the restart: the signing key is in the database).
    let mut tokens = Vec::new();
    for i in 0..USERS {
        let openid = format!("k-{i}");
        let code = wechat.login_code(APPID, &openid);
        let resp = http
            .post(format!("{base}/v1/apps/{APPID}/sessions"))
            .json(&json!({ "code": code }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "login of {openid}");
        let body: Value = resp.json().await.unwrap();
        tokens.push((openid, body["token"].as_str().unwrap().to_string()));
    }
    // Client posts of every user interleaved, with an admin import every so often.
    let mut posts = Vec::new();
    let mut imports = 0;
    for round in 0..POSTS_PER_USER {
        for (openid, token) in &tokens {
            let form_ids = (0..IDS_PER_POST)
                .map(|_| wechat.ios_form_id(APPID, openid))
                .collect();
            posts.push(Post::Client {
                token: token.clone(),
                openid: openid.clone(),
                form_ids,
            });
        }
        if imports < IMPORTS {
            let items = (0..ITEMS_PER_IMPORT)
                .map(|j| {
                    let openid = format!("imp-{round}-{}", j % 10);
                    let form_id = wechat.form_id(APPID, &openid);
                    (openid, form_id)
                })
                .collect();
            posts.push(Post::Import { items });
            imports += 1;
        }
    }
    let total_posts = posts.len();
    let all_credits: Vec<(String, String)> = posts.iter().flat_map(Post::credits).collect();

    // Fire them all, many at once, and SIGKILL the process once a quarter is acknowledged.
    let acked_count = Arc::new(AtomicUsize::new(0));
    let firing = {
        let (http, base, posts, acked_count) = (
            http.clone(),
            base.clone(),
            posts.clone(),
            acked_count.clone(),
        );
        tokio::spawn(async move {
            futures::stream::iter(posts.into_iter().enumerate())
                .map(|(i, post)| {
                    let (http, base, acked_count) = (&http, &base, &acked_count);
                    async move {
                        let answer = send(http, base, &post).await;
                        if answer.is_some() {
                            acked_count.fetch_add(1, Ordering::SeqCst);
                        }
                        (i, answer)
                    }
                })
                .buffer_unordered(IN_FLIGHT)
                .collect::<Vec<_>>()
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked_count.load(Ordering::SeqCst) < total_posts / 4 {
        assert!(Instant::now() < deadline, "ingestion never got going");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.kill();
    let answers = tokio::time::timeout(Duration::from_secs(60), firing)
        .await
        .expect("posts to a dead process end")
        .unwrap();
    let mut acked: Vec<Option<(u64, u64)>> = vec![None; total_posts];
    for (i, answer) in answers {
        acked[i] = answer;
    }
    let acked_posts = acked.iter().filter(|a| a.is_some()).count();
    assert!(
        acked_posts < total_posts,
        "the kill came after the last answer"
    );
    assert!(acked_posts >= total_posts / 4);
    for (post, answer) in posts.iter().zip(&acked) {
        if let Some((accepted, duplicates)) = answer {
            assert_eq!(
                (*accepted + *duplicates) as usize,
                post.credits().len(),
                "an answered call accounts for each of its formIds"
            );
            assert_eq!(*duplicates, 0, "every formId was posted for the first time");
        }
    }

    // Every acknowledged formId is in the database, once, with its user.
    let db_pool = pool(&db).await;
    let stored = stored_formids(&db_pool).await;
    let mut acked_ids = 0;
    for (post, answer) in posts.iter().zip(&acked) {
        if answer.is_some() {
            for (openid, form_id) in post.credits() {
                assert_eq!(
                    stored.get(&form_id),
                    Some(&openid),
                    "acknowledged formId {form_id} of {openid} was lost"
                );
                acked_ids += 1;
            }
        }
    }
    let unacked_but_stored = stored.len() - acked_ids;
    eprintln!(
        "killed with {acked_posts} of {total_posts} calls answered; {} formIds stored, \
         {unacked_but_stored} of them from calls that never got their answer",
        stored.len()
    );

    // Restart; the clients retry every call. Acknowledged ones are pure duplicates; the
    // unanswered ones store exactly what had not been stored yet.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = spawn_formpush(&url, port, &sandbox.base_url);
    wait_healthy(&http, &mut child, &base).await;
    let retried: Vec<Option<(u64, u64)>> = futures::stream::iter(posts.iter())
        .map(|post| send(&http, &base, post))
        .buffered(IN_FLIGHT)
        .collect()
        .await;
    for ((post, before), after) in posts.iter().zip(&acked).zip(&retried) {
        let (accepted, duplicates) = after.expect("every retry is answered after the restart");
        let credits = post.credits();
        let already = credits
            .iter()
            .filter(|(_, f)| stored.contains_key(f))
            .count() as u64;
        if before.is_some() {
            assert_eq!((accepted, duplicates), (0, credits.len() as u64));
        } else {
            assert_eq!(
                (accepted, duplicates),
                (credits.len() as u64 - already, already),
                "a retried call stores what was missing, counts the rest as duplicates"
            );
        }
    }
    let stored = stored_formids(&db_pool).await;
    assert_eq!(stored.len(), all_credits.len(), "every formId stored once");
    for (openid, form_id) in &all_credits {
        assert_eq!(stored.get(form_id), Some(openid));
    }
    child.kill();
    sandbox.stop().await;
}

/// Template campaign to every user of the app, now.
fn campaign_body() -> Value {
    json!({
        "appid": APPID,
        "name": "outage",
        "kind": "template",
        "template_id": "TPL_FAULT",
        "page": "pages/index/index",
        "data": {"keyword1": {"value": "hello {{openid}}"}},
        "audience": {"type": "all"},
        "schedule": {"type": "now"}
    })
}

async fn get_campaign(http: &reqwest::Client, base: &str, id: &str) -> Value {
    let resp = http
        .get(format!("{base}/v1/campaigns/{id}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[sqlx::test]
async fn a_minute_of_unreachable_wechat_mid_campaign_delays_it_without_double_sends(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    const USERS: usize = 200;
    const OUTAGE: Duration = Duration::from_secs(60);

    let wechat = Sandbox::new(SandboxConfig {
        latency: Duration::from_millis(20),
        ..Default::default()
    });
    wechat.add_app(APPID, SECRET);
    let wechat_port = free_port();
    let sandbox = serve_sandbox(&wechat, wechat_port);
    let wechat_base = sandbox.base_url.clone();

    let env: HashMap<String, String> = [
        ("FORMPUSH_BIND", "127.0.0.1:0"),
        ("FORMPUSH_ADMIN_TOKEN", ADMIN_TOKEN),
        ("WECHAT_API_BASE", wechat_base.as_str()),
        ("WECHAT_TIMEOUT_MS", "1000"),
        ("FORMPUSH_RETRY_BACKOFF_MS", "1000"),
        ("FORMPUSH_SEND_CONCURRENCY", "8"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let settings = Settings::from_lookup(|k| env.get(k).cloned()).unwrap();
    let db_pool = pool(&db).await;
    let app = Application::build_with_pool(settings, db_pool.clone())
        .await
        .expect("build app");
    let base = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown_token();
    let running = tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();
    let admin = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{base}{path}"))
            .bearer_auth(ADMIN_TOKEN)
    };

    // 40 sends a second: the campaign takes about 5 s without the outage.
    let resp = admin(reqwest::Method::PUT, &format!("/v1/apps/{APPID}"))
        .json(&json!({"secret": SECRET, "send_rate_per_sec": 40}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    // Two formIds per user: a user messaged twice would show up as two messages.
    let items: Vec<Value> = (0..USERS)
        .flat_map(|i| {
            let openid = format!("u-{i}");
            [0, 1].map(|_| json!({"openid": openid, "form_id": wechat.form_id(APPID, &openid)}))
        })
        .collect();
    let resp = admin(
        reqwest::Method::POST,
        &format!("/v1/apps/{APPID}/formids:import"),
    )
    .json(&json!({ "items": items }))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);

    let resp = admin(reqwest::Method::POST, "/v1/campaigns")
        .json(&campaign_body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // WeChat goes dark once the campaign is well under way.
    let deadline = Instant::now() + Duration::from_secs(30);
    while wechat.message_count() < 40 {
        assert!(
            Instant::now() < deadline,
            "the campaign never started sending"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sandbox.stop().await;
    let sent_before = wechat.message_count();
    assert!(sent_before < USERS, "stopped mid-campaign");

    // A minute without WeChat: deliveries wait (pending, `unreachable`), none fails.
    let outage_end = Instant::now() + OUTAGE;
    let mut saw_waiting = false;
    while Instant::now() < outage_end {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let c = get_campaign(&http, &base, &id).await;
        assert_eq!(c["status"], "running", "{c}");
        assert_eq!(
            c["totals"]["failed"], 0,
            "nothing fails while WeChat is away: {c}"
        );
        let waiting: i64 = sqlx::query_scalar(
            "select count(*) from deliveries where status = 'pending' and errcode = 'unreachable'",
        )
        .fetch_one(&db_pool)
        .await
        .unwrap();
        saw_waiting |= waiting > 0;
    }
    assert!(saw_waiting, "deliveries waited for WeChat");
    assert_eq!(wechat.message_count(), sent_before, "WeChat was away");

    // WeChat is back on the same address, with its state: the campaign completes.
    let sandbox = serve_sandbox(&wechat, wechat_port);
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let c = get_campaign(&http, &base, &id).await;
        if c["status"] != "running" {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "the campaign did not complete after WeChat came back: {c}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["totals"]["sent"], USERS, "{done}");
    assert_eq!(done["totals"]["failed"], 0, "{done}");

    // Each user exactly once, each message with a formId of its own user, none twice.
    let mut per_user: HashMap<String, usize> = HashMap::new();
    let mut form_ids = HashSet::new();
    for m in wechat.messages() {
        *per_user.entry(m.touser.clone()).or_default() += 1;
        let form_id = m.form_id.clone().expect("a template message has a formId");
        assert!(
            form_ids.insert(form_id.clone()),
            "formId sent twice: {form_id}"
        );
    }
    assert_eq!(per_user.len(), USERS, "every user was reached");
    assert!(
        per_user.values().all(|n| *n == 1),
        "a user got two messages: {:?}",
        per_user.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    let (consumed, valid): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where uses_left = 0), count(*) filter (where uses_left > 0)
         from formids where appid = $1",
    )
    .bind(APPID)
    .fetch_one(&db_pool)
    .await
    .unwrap();
    assert_eq!(
        (consumed, valid),
        (USERS as i64, USERS as i64),
        "one formId spent per user"
    );
    shutdown.cancel();
    let _ = running.await;
    sandbox.stop().await;
}

/// Regression: a sender whose batch WeChat accepted but whose database failed for a moment
/// when recording it kept nothing: the deliveries sat `sending` until their send lease ran
/// out, then a subscribe campaign counted them `failed` / `unknown_outcome` although every
/// message had gone out (seen with Postgres down 15 s in `scripts/faults`). The outcomes
/// are now retried within the send lease.
#[sqlx::test]
async fn sent_outcomes_survive_a_database_hiccup_while_recording(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    const USERS: usize = 4;
    let wechat = Sandbox::new(SandboxConfig::default());
    wechat.add_app(APPID, SECRET);
    let sandbox = serve_sandbox(&wechat, free_port());
    let env: HashMap<String, String> = [
        ("FORMPUSH_BIND", "127.0.0.1:0"),
        ("FORMPUSH_ADMIN_TOKEN", ADMIN_TOKEN),
        ("WECHAT_API_BASE", sandbox.base_url.as_str()),
        ("WECHAT_TIMEOUT_MS", "5000"),
        ("FORMPUSH_SEND_LEASE_SECS", "60"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    // A small pool that gives up quickly: holding its connections is a database outage.
    let db_pool = PgPoolOptions::new()
        .max_connections(3)
        .acquire_timeout(Duration::from_millis(500))
        .connect_with(db.clone())
        .await
        .unwrap();
    let app = Application::build_with_pool(
        Settings::from_lookup(|k| env.get(k).cloned()).unwrap(),
        db_pool.clone(),
    )
    .await
    .expect("build app");
    let base = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown_token();
    let running = tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();
    let resp = http
        .put(format!("{base}/v1/apps/{APPID}"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "secret": SECRET }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    for i in 0..USERS {
        let openid = format!("h-{i}");
        let code = wechat.login_code(APPID, &openid);
        let session: Value = http
            .post(format!("{base}/v1/apps/{APPID}/sessions"))
            .json(&json!({ "code": code }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        wechat.grant_subscription(APPID, &openid, "TPL_H", 1);
        let resp = http
            .post(format!("{base}/v1/apps/{APPID}/subscriptions"))
            .bearer_auth(session["token"].as_str().unwrap())
            .json(&json!({"results": {"TPL_H": "accept"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // WeChat delivers at once but answers 2 s later: time to take the database away.
    wechat.fail_next(
        formpush_sandbox::Api::SubscribeSend,
        formpush_sandbox::Fault::Delay(Duration::from_secs(2)),
        USERS as u32,
    );
    let resp = http
        .post(format!("{base}/v1/campaigns"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({
            "appid": APPID, "name": "hiccup", "kind": "subscribe", "template_id": "TPL_H",
            "data": {"thing1": {"value": "hi"}}, "audience": {"type": "all"},
            "schedule": {"type": "now"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while wechat.message_count() < USERS {
        assert!(Instant::now() < deadline, "the campaign never sent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The answers arrive while every connection is taken: recording them fails for ~2 s.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(db_pool.acquire().await.expect("take a connection"));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    drop(held);

    let deadline = Instant::now() + Duration::from_secs(15);
    let done = loop {
        let c = get_campaign(&http, &base, &id).await;
        if c["status"] != "running" {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "the sent batch was never recorded: {c}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["totals"]["sent"], USERS, "{done}");
    assert_eq!(done["totals"]["failed"], 0, "{done}");
    assert_eq!(wechat.message_count(), USERS, "each user messaged once");
    shutdown.cancel();
    let _ = running.await;
    sandbox.stop().await;
}
