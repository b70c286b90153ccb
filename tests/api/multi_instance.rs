//! Several instances on one database: no user receives a run twice, no formId is sent
//! twice, and a dead instance's work is taken over.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use formpush_sandbox::SandboxConfig;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{spawn_app_with, start_instance, template_campaign, ADMIN_TOKEN, APPID};

async fn seed(app: &crate::helpers::TestApp, users: usize) {
    let items: Vec<Value> = (0..users)
        .flat_map(|i| {
            let openid = format!("m-{i}");
            (0..2).map(move |_| openid.clone()).collect::<Vec<_>>()
        })
        .map(|openid| json!({"openid": openid, "form_id": app.wechat.form_id(APPID, &openid)}))
        .collect();
    let resp = app.import(&json!({ "items": items })).await;
    assert_eq!(resp.status(), 200);
}

/// Kills the child process when the test ends, pass or fail.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn assert_each_user_reached_once(app: &crate::helpers::TestApp, users: usize) {
    let mut per_user: HashMap<String, usize> = HashMap::new();
    let mut form_ids = std::collections::HashSet::new();
    for m in app.wechat.messages() {
        *per_user.entry(m.touser.clone()).or_default() += 1;
        assert!(
            form_ids.insert(m.form_id.clone()),
            "formId sent twice: {:?}",
            m.form_id
        );
    }
    assert_eq!(per_user.len(), users);
    assert!(
        per_user.values().all(|n| *n == 1),
        "a user got two messages"
    );
}

/// `instances` formpush instances (scheduler on in all) on one database and one campaign.
async fn race(db: PgConnectOptions, instances: usize) {
    let config = SandboxConfig {
        latency: Duration::from_millis(5),
        ..Default::default()
    };
    let extra = [("FORMPUSH_SEND_CONCURRENCY", "16")];
    let app = spawn_app_with(db.clone(), config, &extra).await;
    seed(&app, 300).await;
    let mut others = Vec::new();
    for _ in 1..instances {
        others.push(start_instance(&db, &app.sandbox_url(), &extra).await);
    }
    let id = app
        .start_campaign(template_campaign(json!({"type": "all"})))
        .await;
    let done = app.wait_for_status(&id, "completed").await;
    assert_eq!(done["totals"]["sent"], 300, "{done}");
    assert_eq!(
        app.runs(&id).await["items"].as_array().unwrap().len(),
        1,
        "one run"
    );
    assert_each_user_reached_once(&app, 300);
    for other in others {
        other.stop().await;
    }
}

#[sqlx::test]
async fn two_instances_racing_on_one_campaign_reach_each_user_once(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    race(db, 2).await;
}

#[sqlx::test]
async fn three_instances_racing_on_one_campaign_reach_each_user_once(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    race(db, 3).await;
}

#[sqlx::test]
async fn a_killed_instance_mid_campaign_is_taken_over_without_double_sends(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // The first sender is a real `formpush serve` process, killed with SIGKILL mid-run.
    let config = SandboxConfig {
        latency: Duration::from_millis(20),
        ..Default::default()
    };
    let app = spawn_app_with(db.clone(), config, &[("FORMPUSH_SCHEDULER", "off")]).await;
    seed(&app, 400).await;
    let url = crate::helpers::database_url(&db);
    let mut child = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_formpush"))
            .arg("serve")
            .env("DATABASE_URL", url)
            .env("FORMPUSH_BIND", "127.0.0.1:0")
            .env("FORMPUSH_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("WECHAT_API_BASE", app.sandbox_url())
            .env("FORMPUSH_SEND_CONCURRENCY", "8")
            .env("FORMPUSH_SEND_LEASE_SECS", "3")
            .env("FORMPUSH_APP_LEASE_SECS", "3")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start formpush"),
    );
    let id = app
        .start_campaign(template_campaign(json!({"type": "all"})))
        .await;
    // Kill it once it is well into the run.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while app.wechat.messages().len() < 60 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the child never sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.0.kill().expect("SIGKILL");
    child.0.wait().unwrap();
    let sent_before = app.wechat.messages().len();
    assert!(sent_before < 400, "killed mid-run");
    // A new instance takes the app over once the dead one's lease runs out.
    let survivor = start_instance(
        &db,
        &app.sandbox_url(),
        &[
            ("FORMPUSH_SEND_LEASE_SECS", "3"),
            ("FORMPUSH_APP_LEASE_SECS", "3"),
        ],
    )
    .await;
    let done = app.wait_for_status(&id, "completed").await;
    assert_eq!(done["totals"]["sent"], 400, "{done}");
    assert_each_user_reached_once(&app, 400);
    survivor.stop().await;
}

#[sqlx::test]
async fn sigterm_stops_the_process_cleanly_within_ten_seconds(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = crate::helpers::database_url(&db);
    let mut child = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_formpush"))
            .env("DATABASE_URL", url)
            .env("FORMPUSH_BIND", format!("127.0.0.1:{port}"))
            .env("FORMPUSH_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start formpush"),
    );
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while http
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < deadline, "never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let stopping = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
}
