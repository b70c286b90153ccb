//! The retention (`FORMPUSH_RETENTION_DAYS`, default 90): the daily clean-up deletes the
//! deliveries of runs finished before it, keeping their totals, and triggered messages
//! final before it; nothing of a run still going or of a message not final.

use chrono::{Duration, Utc};
use formpush::store::retention;
use formpush_sandbox::SandboxConfig;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

use crate::common::{
    error_of, spawn_app, spawn_app_with, subscribe_message, template_campaign, As, TestApp, APPID,
};

/// A campaign to `openids`: those given formIds by `with_formids` are sent to, the others
/// end `no_formid`.
fn campaign_to(name: &str, openids: &[&str]) -> Value {
    let mut body = template_campaign(json!({"type": "openids", "openids": openids}));
    body["name"] = json!(name);
    body
}

async fn with_formids(app: &TestApp, openids: &[&str]) {
    app.import_users(openids.iter().map(|o| o.to_string()), 1)
        .await;
}

/// The deliveries of the campaign as stored.
async fn stored_deliveries(app: &TestApp, campaign: &str) -> i64 {
    app.count(&format!(
        "select count(*) from deliveries where campaign_id = '{campaign}'"
    ))
    .await
}

/// The campaign's only run.
async fn only_run(app: &TestApp, campaign: &str) -> Value {
    let runs = app.runs(campaign).await;
    let items = runs["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{runs}");
    items[0].clone()
}

fn run_id(run: &Value) -> Uuid {
    run["id"].as_str().unwrap().parse().unwrap()
}

/// What the API says of a campaign's results: its totals, and each run's totals.
async fn results(app: &TestApp, campaign: &str) -> (Value, Vec<Value>) {
    let totals = app.campaign(campaign).await["totals"].clone();
    let runs = app.runs(campaign).await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!({"id": r["id"], "status": r["status"], "totals": r["totals"]}))
        .collect();
    (totals, runs)
}

#[sqlx::test]
async fn a_finished_runs_deliveries_go_after_90_days_and_every_total_stays(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    // A: three users reached, one without a formId.
    with_formids(&app, &["o-a1", "o-a2", "o-a3"]).await;
    let body = campaign_to("done", &["o-a1", "o-a2", "o-a3", "o-a4"]);
    let (done, _) = app.run_campaign(body, "completed").await;
    let done_before = results(&app, &done).await;
    assert_eq!(
        done_before.0,
        json!({"targeted": 4, "sent": 3, "failed": 0, "no_formid": 1, "no_quota": 0, "capped": 0, "pending": 0})
    );
    // B: WeChat's daily quota pauses it after one send; its run is still going.
    app.wechat.set_daily_quota(APPID, 4);
    with_formids(&app, &["o-b1", "o-b2", "o-b3"]).await;
    let body = campaign_to("paused", &["o-b1", "o-b2", "o-b3"]);
    let (paused, _) = app.run_campaign(body, "paused").await;
    let paused_before = results(&app, &paused).await;
    assert_eq!(paused_before.0["sent"], 1);
    assert_eq!(paused_before.0["pending"], 2);
    let listed_before = app.admin_get("/v1/campaigns").await;

    // Within the 90 days nothing goes.
    let now = Utc::now();
    assert!(app
        .scheduler()
        .clean_up(now + Duration::days(89))
        .await
        .unwrap());
    assert_eq!(stored_deliveries(&app, &done).await, 4);
    assert_eq!(stored_deliveries(&app, &paused).await, 3);
    assert_eq!(
        only_run(&app, &done).await["deliveries_purged_at"],
        Value::Null
    );

    // Past them, the finished run's deliveries go; the running one's stay.
    assert!(app
        .scheduler()
        .clean_up(now + Duration::days(91))
        .await
        .unwrap());
    assert_eq!(stored_deliveries(&app, &done).await, 0);
    let page = app.deliveries(&done, "").await;
    assert_eq!(page["items"], json!([]), "{page}");
    assert_eq!(results(&app, &done).await, done_before);
    let run = only_run(&app, &done).await;
    assert!(run["deliveries_purged_at"].is_string(), "{run}");
    assert_eq!(stored_deliveries(&app, &paused).await, 3);
    assert_eq!(
        app.deliveries(&paused, "").await["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(results(&app, &paused).await, paused_before);
    assert_eq!(
        only_run(&app, &paused).await["deliveries_purged_at"],
        Value::Null
    );
    // The list shows the same totals for both.
    assert_eq!(app.admin_get("/v1/campaigns").await, listed_before);
    // A run still going is never archived, even when asked directly.
    let running = run_id(&only_run(&app, &paused).await);
    assert!(!retention::archive_totals(&app.pool, running).await.unwrap());
    assert_eq!(
        retention::purge_run(&app.pool, running, 10).await.unwrap(),
        None
    );
    assert_eq!(stored_deliveries(&app, &paused).await, 3);

    // Once cancelled, B's run has finished: 90 days later its deliveries go too, its
    // totals (pending ones included) stay.
    let cancelled = app.campaign_action(&paused, "cancel").await;
    assert_eq!(cancelled.status(), 200);
    let cancelled_before = results(&app, &paused).await;
    assert_eq!(cancelled_before.0, paused_before.0);
    assert!(app
        .scheduler()
        .clean_up(now + Duration::days(92))
        .await
        .unwrap());
    assert_eq!(stored_deliveries(&app, &paused).await, 0);
    assert_eq!(results(&app, &paused).await, cancelled_before);
    assert_eq!(results(&app, &done).await, done_before);
}

#[sqlx::test]
async fn a_retention_of_7_days_is_honoured_and_runs_within_it_keep_their_deliveries(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app_with(
        db,
        SandboxConfig::default(),
        &[("FORMPUSH_RETENTION_DAYS", "7")],
    )
    .await;
    with_formids(&app, &["o-1", "o-2"]).await;
    let (older, _) = app
        .run_campaign(campaign_to("older", &["o-1"]), "completed")
        .await;
    let (newer, _) = app
        .run_campaign(campaign_to("newer", &["o-2", "o-3"]), "completed")
        .await;
    // The older campaign's run finished 3 days before the newer one's.
    sqlx::query(
        "update campaign_runs set finished_at = finished_at - interval '3 days'
         where campaign_id = $1::uuid",
    )
    .bind(&older)
    .execute(&app.pool)
    .await
    .unwrap();
    let older_before = results(&app, &older).await;
    let newer_before = results(&app, &newer).await;
    let now = Utc::now();
    // 5 days on: the older run finished 8 days before, past the 7; the newer one 5.
    assert!(app
        .scheduler()
        .clean_up(now + Duration::days(5))
        .await
        .unwrap());
    assert_eq!(stored_deliveries(&app, &older).await, 0);
    assert_eq!(stored_deliveries(&app, &newer).await, 2);
    assert_eq!(
        app.deliveries(&newer, "").await["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(results(&app, &older).await, older_before);
    assert_eq!(results(&app, &newer).await, newer_before);
    // 8 days on, the newer run is past the 7 days too.
    assert!(app
        .scheduler()
        .clean_up(now + Duration::days(8))
        .await
        .unwrap());
    assert_eq!(stored_deliveries(&app, &newer).await, 0);
    assert_eq!(results(&app, &newer).await, newer_before);
}

#[sqlx::test]
async fn totals_stay_right_when_a_clean_up_stopped_halfway_through_a_run(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let reached = ["o-1", "o-2", "o-3", "o-4"];
    with_formids(&app, &reached).await;
    let everyone = ["o-1", "o-2", "o-3", "o-4", "o-5"];
    let (id, _) = app
        .run_campaign(campaign_to("halfway", &everyone), "completed")
        .await;
    let before = results(&app, &id).await;
    assert_eq!(before.0["targeted"], 5);
    let run = run_id(&only_run(&app, &id).await);
    // A clean-up archived the run and deleted a first batch, then stopped.
    assert!(retention::archive_totals(&app.pool, run).await.unwrap());
    sqlx::query(
        "delete from deliveries where id in
           (select id from deliveries where run_id = $1 order by user_id limit 2)",
    )
    .bind(run)
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored_deliveries(&app, &id).await, 3);
    assert_eq!(results(&app, &id).await, before);
    assert_eq!(
        only_run(&app, &id).await["deliveries_purged_at"],
        Value::Null
    );
    // Archiving again keeps the totals of the first time.
    assert!(retention::archive_totals(&app.pool, run).await.unwrap());
    assert_eq!(results(&app, &id).await, before);
    // The next day's clean-up finishes the run.
    assert!(app
        .scheduler()
        .clean_up(Utc::now() + Duration::days(91))
        .await
        .unwrap());
    assert_eq!(stored_deliveries(&app, &id).await, 0);
    assert_eq!(results(&app, &id).await, before);
    assert!(only_run(&app, &id).await["deliveries_purged_at"].is_string());

    // A run deleted a few rows per statement ends the same.
    with_formids(&app, &reached).await;
    let (second, _) = app
        .run_campaign(campaign_to("batches", &everyone), "completed")
        .await;
    let second_before = results(&app, &second).await;
    assert_eq!(second_before.0["sent"], 4);
    let second_run = run_id(&only_run(&app, &second).await);
    assert_eq!(
        retention::purge_run(&app.pool, second_run, 2)
            .await
            .unwrap(),
        Some(5)
    );
    assert_eq!(stored_deliveries(&app, &second).await, 0);
    assert_eq!(results(&app, &second).await, second_before);
    assert!(only_run(&app, &second).await["deliveries_purged_at"].is_string());
}

#[sqlx::test]
async fn final_triggered_messages_go_after_the_retention_and_the_others_stay(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let key = app.key(&["send"]).await;
    // Final: one sent, one ended no_quota, one cancelled.
    app.grant("o-sent", "TPL_M", 1).await;
    let sent = app.accepted(&key, &subscribe_message("o-sent")).await;
    let mut later = subscribe_message("o-nobody");
    later["send_at"] = json!((Utc::now() + Duration::minutes(1)).to_rfc3339());
    let no_quota = app.accepted(&key, &later).await;
    let mut far = subscribe_message("o-sent");
    far["send_at"] = json!((Utc::now() + Duration::days(365)).to_rfc3339());
    let cancelled = app.accepted(&key, &far).await;
    let path = |m: &Value| format!("/v1/apps/{APPID}/messages/{}", m["id"].as_str().unwrap());
    let resp = app
        .call(&key, Method::DELETE, &path(&cancelled), None)
        .await;
    assert_eq!(resp.status(), 200);
    app.run_scheduler_at(Utc::now() + Duration::minutes(2))
        .await;
    assert_eq!(
        app.message(sent["id"].as_str().unwrap()).await["status"],
        "sent"
    );
    assert_eq!(
        app.message(no_quota["id"].as_str().unwrap()).await["status"],
        "no_quota"
    );
    // Not final: one scheduled a year ahead, one queued for the sender (not stepped).
    let scheduled = app.accepted(&key, &far).await;
    app.grant("o-queued", "TPL_M", 1).await;
    let queued = app.accepted(&key, &subscribe_message("o-queued")).await;
    let kept = [&scheduled, &queued];
    let gone = [&sent, &no_quota, &cancelled];

    let now = Utc::now();
    assert!(app
        .scheduler()
        .clean_up(now + Duration::days(89))
        .await
        .unwrap());
    for m in kept.iter().chain(gone.iter()) {
        let resp = app.call(&As::Admin, Method::GET, &path(m), None).await;
        assert_eq!(resp.status(), 200, "{m}: within the retention");
    }
    assert!(app
        .scheduler()
        .clean_up(now + Duration::days(91))
        .await
        .unwrap());
    for m in gone {
        let resp = app.call(&As::Admin, Method::GET, &path(m), None).await;
        assert_eq!(
            error_of(resp).await,
            (404, "message_not_found".into()),
            "{m}"
        );
    }
    for m in kept {
        let resp = app.call(&As::Admin, Method::GET, &path(m), None).await;
        assert_eq!(resp.status(), 200, "{m}: not final");
    }
    let listed = app.admin_get(&format!("/v1/apps/{APPID}/messages")).await;
    let mut ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut expected: Vec<&str> = kept.iter().map(|m| m["id"].as_str().unwrap()).collect();
    expected.sort();
    assert_eq!(ids, expected);
    // The queued one is still sent.
    app.run_scheduler().await;
    assert_eq!(
        app.message(queued["id"].as_str().unwrap()).await["status"],
        "sent"
    );
}
