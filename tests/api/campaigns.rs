//! The campaign admin API: creation and its 422s, listing, transitions, paging.

use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{spawn_app, template_campaign, APPID};

#[sqlx::test]
async fn invalid_campaigns_get_a_422_naming_the_field_and_store_nothing(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let base = template_campaign(json!({"type": "all"}));
    let cases = [
        ("kind", json!("sms"), "invalid_kind"),
        ("audience", json!({"type": "nobody"}), "invalid_audience"),
        (
            "schedule",
            json!({"type": "cron", "cron": "* * * *"}),
            "invalid_cron",
        ),
        (
            "schedule",
            json!({"type": "cron", "cron": "0 0 9 * * *", "timezone": "Nowhere/City"}),
            "invalid_timezone",
        ),
        (
            "schedule",
            json!({"type": "at", "at": "not a time"}),
            "invalid_schedule",
        ),
        (
            "data",
            json!({"keyword1": {"value": "{{nickname}}"}}),
            "unknown_placeholder",
        ),
        ("data", json!("text"), "invalid_data"),
        ("formid_pick", json!("oldest"), "invalid_formid_pick"),
    ];
    for (field, value, code) in cases {
        let mut body = base.clone();
        body[field] = value;
        let resp = app.create_campaign(&body).await;
        assert_eq!(resp.status(), 422, "{field}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"], code, "{err}");
    }
    let mut unknown_app = base.clone();
    unknown_app["appid"] = json!("wxnobody");
    assert_eq!(app.create_campaign(&unknown_app).await.status(), 404);
    let list: Value = app
        .admin(reqwest::Method::GET, "/v1/campaigns")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
}

#[sqlx::test]
async fn a_cron_campaign_shows_its_next_run_and_obeys_pause_resume_cancel(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let mut body = template_campaign(json!({"type": "all"}));
    body["schedule"] = json!({"type": "cron", "cron": "0 30 9 * * *", "timezone": "Asia/Shanghai"});
    let resp = app.create_campaign(&body).await;
    assert_eq!(resp.status(), 201);
    let c: Value = resp.json().await.unwrap();
    assert_eq!(c["status"], "scheduled");
    let next = chrono::DateTime::parse_from_rfc3339(c["next_run_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        next.with_timezone(&chrono_tz::Asia::Shanghai)
            .format("%H:%M:%S")
            .to_string(),
        "09:30:00"
    );
    assert_eq!(
        c["totals"],
        json!({"targeted": 0, "sent": 0, "failed": 0, "no_formid": 0, "no_quota": 0, "capped": 0, "pending": 0})
    );
    let id = c["id"].as_str().unwrap();
    assert_eq!(app.campaign_action(id, "resume").await.status(), 409);
    let paused: Value = app.campaign_action(id, "pause").await.json().await.unwrap();
    assert_eq!(paused["status"], "paused");
    let due = next.with_timezone(&chrono::Utc);
    assert_eq!(
        app.run_scheduler_at(due).await,
        0,
        "a paused campaign does not fire"
    );
    let resumed: Value = app
        .campaign_action(id, "resume")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(resumed["status"], "scheduled");
    let cancelled: Value = app
        .campaign_action(id, "cancel")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["next_run_at"], Value::Null);
    assert_eq!(app.campaign_action(id, "pause").await.status(), 409);
    let missing = app
        .campaign_action("00000000-0000-0000-0000-000000000000", "pause")
        .await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        app.campaign_action("not-a-uuid", "pause").await.status(),
        404
    );
}

#[sqlx::test]
async fn deliveries_page_with_a_cursor_and_filter_by_status(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let mut openids = Vec::new();
    for i in 0..5 {
        let openid = format!("page-{i}");
        app.user_with_formids(&openid, if i < 3 { 1 } else { 0 })
            .await;
        openids.push(openid);
    }
    let (id, done) = app
        .run_campaign(
            template_campaign(json!({"type": "openids", "openids": openids})),
            "completed",
        )
        .await;
    assert_eq!(done["totals"]["targeted"], 5);
    assert_eq!(done["totals"]["sent"], 3);
    assert_eq!(done["totals"]["no_formid"], 2);
    let first = app.deliveries(&id, "limit=2").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next"].as_str().unwrap().to_string();
    let second = app
        .deliveries(&id, &format!("limit=10&after={cursor}"))
        .await;
    assert_eq!(second["items"].as_array().unwrap().len(), 3);
    assert_eq!(second["next"], Value::Null);
    let sent = app.deliveries(&id, "status=sent").await;
    let items = sent["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(items
        .iter()
        .all(|d| d["errcode"] == 0 && d["attempts"] == 1 && d["form_id"].is_string()));
    let resp = app
        .admin(
            reqwest::Method::GET,
            &format!("/v1/campaigns/{id}/deliveries?status=lost"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let runs = app.runs(&id).await;
    assert_eq!(runs["items"][0]["status"], "completed");
    assert_eq!(runs["items"][0]["totals"]["sent"], 3);
    let listed: Value = app
        .admin(
            reqwest::Method::GET,
            &format!("/v1/campaigns?appid={APPID}"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["id"], id.as_str());
    assert_eq!(
        listed["items"][0]["totals"]["sent"], 3,
        "the list carries totals too"
    );
}

#[sqlx::test]
async fn a_one_off_campaign_paused_past_its_time_runs_when_resumed(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.user_with_formids("o-later", 1).await;
    // Due a minute ago (a past `at` is due at once), paused before any tick saw it: its
    // time is past when it is resumed.
    let at = chrono::Utc::now() - chrono::Duration::minutes(1);
    let mut body = template_campaign(json!({"type": "all"}));
    body["schedule"] = json!({"type": "at", "at": at.to_rfc3339()});
    let id = app.start_campaign(body).await;
    assert_eq!(app.campaign_action(&id, "pause").await.status(), 200);
    assert_eq!(app.run_scheduler().await, 0, "nothing runs while paused");
    let resumed: Value = app
        .campaign_action(&id, "resume")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(resumed["status"], "scheduled", "{resumed}");
    assert!(resumed["next_run_at"].is_string(), "due at once: {resumed}");
    assert_eq!(app.run_scheduler().await, 1);
    let done = app.campaign_in(&id, "completed").await;
    assert_eq!(done["totals"]["sent"], 1, "{done}");
}
