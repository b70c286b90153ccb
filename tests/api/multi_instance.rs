//! Several instances on one database, each on its own clock: no user receives a run twice,
//! no formId is sent twice, and a dead instance's work is taken over.

use std::time::Duration;

use formpush_sandbox::SandboxConfig;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::process::Serve;
use crate::common::{
    assert_each_user_reached_once, eventually, spawn_app_with, start_instance, template_campaign,
    NO_SCHEDULER, REAL_CLOCK,
};

/// `instances` formpush instances on one database, all with the scheduler on its own
/// clock, and one campaign to 300 users with two formIds each.
async fn race(db: PgConnectOptions, instances: usize) {
    let config = SandboxConfig {
        latency: Duration::from_millis(5),
        ..Default::default()
    };
    let extra = [REAL_CLOCK, ("FORMPUSH_SEND_CONCURRENCY", "16")];
    let app = spawn_app_with(db.clone(), config, &extra).await;
    app.import_users((0..300).map(|i| format!("m-{i}")), 2)
        .await;
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
    assert_each_user_reached_once(&app.wechat, 300);
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
    let app = spawn_app_with(db.clone(), config, &[NO_SCHEDULER]).await;
    app.import_users((0..400).map(|i| format!("m-{i}")), 2)
        .await;
    let leases = [
        ("FORMPUSH_SEND_LEASE_SECS", "3"),
        ("FORMPUSH_APP_LEASE_SECS", "3"),
    ];
    let sandbox_url = app.sandbox_url();
    let mut child = Serve::start(
        &db,
        &[
            REAL_CLOCK,
            ("WECHAT_API_BASE", &sandbox_url),
            ("FORMPUSH_SEND_CONCURRENCY", "8"),
            leases[0],
            leases[1],
        ],
    );
    let id = app
        .start_campaign(template_campaign(json!({"type": "all"})))
        .await;
    // Kill it once it is well into the run.
    eventually(Duration::from_secs(20), "the child sending", async || {
        (app.wechat.message_count() >= 60).then_some(())
    })
    .await;
    child.kill();
    let sent_before = app.wechat.message_count();
    assert!(sent_before < 400, "killed mid-run");
    // A new instance takes the app over once the dead one's lease runs out.
    let survivor = start_instance(&db, &sandbox_url, &[REAL_CLOCK, leases[0], leases[1]]).await;
    let done = app.wait_for_status(&id, "completed").await;
    assert_eq!(done["totals"]["sent"], 400, "{done}");
    assert_each_user_reached_once(&app.wechat, 400);
    survivor.stop().await;
}

#[sqlx::test]
async fn sigterm_stops_the_process_cleanly_within_ten_seconds(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let mut server = Serve::start(&db, &[REAL_CLOCK]);
    server.wait_healthy().await;
    server.terminate();
    let status = server.exit_status(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");
}
