//! Webhooks: the secret shown once, events signed with HMAC-SHA256 (checked here with the
//! `hmac` crate, not with formpush's code), retried with backoff, surviving a restart.

use chrono::Utc;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::receiver::{Received, Receiver};
use crate::common::{spawn_app, subscribe_message, As, TestApp, APPID, SECRET};

/// Points the test app's webhook at `url`; returns the answer to the PUT.
async fn set_webhook(app: &TestApp, url: Value) -> Value {
    let resp = app
        .call(
            &As::Admin,
            Method::PUT,
            &format!("/v1/apps/{APPID}"),
            Some(&json!({"secret": SECRET, "webhook_url": url})),
        )
        .await;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// Checks the signature the way a receiver would, with its own HMAC.
fn assert_signed(received: &Received, secret: &str) {
    let timestamp = received.timestamp.as_deref().expect("X-Formpush-Timestamp");
    let age = Utc::now().timestamp() - timestamp.parse::<i64>().expect("unix seconds");
    assert!((0..60).contains(&age), "a fresh timestamp: {timestamp}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&received.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(received.signature.as_deref(), Some(expected.as_str()));
    assert_eq!(received.content_type.as_deref(), Some("application/json"));
}

#[sqlx::test]
async fn the_webhook_secret_is_returned_once_by_the_put_that_sets_the_url(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let set = set_webhook(&app, json!("https://hooks.example.com/formpush")).await;
    let secret = set["webhook_secret"]
        .as_str()
        .expect("the new secret")
        .to_string();
    assert!(secret.len() >= 32);
    assert_eq!(set["webhook_url"], "https://hooks.example.com/formpush");
    assert_eq!(set["has_webhook_secret"], true);
    let get: Value = app
        .call(&As::Admin, Method::GET, &format!("/v1/apps/{APPID}"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(get["has_webhook_secret"], true);
    assert!(get.get("webhook_secret").is_none());
    assert!(!get.to_string().contains(&secret), "never shown again");
    // The same URL keeps its secret (and does not show it); a PUT without the field keeps both.
    let same = set_webhook(&app, json!("https://hooks.example.com/formpush")).await;
    assert!(same.get("webhook_secret").is_none());
    let untouched: Value = app
        .call(
            &As::Admin,
            Method::PUT,
            &format!("/v1/apps/{APPID}"),
            Some(&json!({"secret": SECRET})),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        untouched["webhook_url"],
        "https://hooks.example.com/formpush"
    );
    assert!(untouched.get("webhook_secret").is_none());
    // A new URL, a new secret.
    let moved = set_webhook(&app, json!("http://10.0.0.7:9000/hook")).await;
    let new_secret = moved["webhook_secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    // null removes it.
    let removed = set_webhook(&app, Value::Null).await;
    assert_eq!(removed["webhook_url"], Value::Null);
    assert_eq!(removed["has_webhook_secret"], false);
    for bad in ["ftp://example.com/hook", "hooks.example.com", "https://"] {
        let resp = app
            .call(
                &As::Admin,
                Method::PUT,
                &format!("/v1/apps/{APPID}"),
                Some(&json!({"secret": SECRET, "webhook_url": bad})),
            )
            .await;
        assert_eq!(resp.status(), 422, "{bad}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_webhook_url");
    }
}

#[sqlx::test]
async fn a_sent_message_is_pushed_signed_with_the_message_object(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let receiver = Receiver::start(&[]);
    let secret = set_webhook(&app, json!(receiver.url)).await["webhook_secret"]
        .as_str()
        .unwrap()
        .to_string();
    app.grant("o-hook", "TPL_M", 1).await;
    let message = app.accepted(&As::Admin, &subscribe_message("o-hook")).await;
    app.run_scheduler().await;
    assert_eq!(app.dispatch_webhooks_at(Utc::now()).await, 1);
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_signed(&received[0], &secret);
    let event = received[0].json();
    assert!(event["id"].as_str().unwrap().parse::<uuid::Uuid>().is_ok());
    assert_eq!(event["type"], "message.sent");
    assert!(event["created_at"].is_string());
    assert_eq!(event["data"]["id"], message["id"]);
    assert_eq!(event["data"]["status"], "sent");
    assert_eq!(event["data"]["openid"], "o-hook");
    assert_eq!(event["data"]["errcode"], 0);
    // Delivered: nothing more to send.
    assert_eq!(
        app.dispatch_webhooks_at(Utc::now() + chrono::Duration::hours(1))
            .await,
        0
    );
    assert_eq!(receiver.received().len(), 1);
}

#[sqlx::test]
async fn messages_without_a_credit_or_refused_by_wechat_raise_their_events(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let receiver = Receiver::start(&[]);
    set_webhook(&app, json!(receiver.url)).await;
    let at = Utc::now() + chrono::Duration::minutes(1);
    let mut no_quota = subscribe_message("o-nobody");
    no_quota["send_at"] = json!(at.to_rfc3339());
    let no_quota = app.accepted(&As::Admin, &no_quota).await;
    let no_formid = app
        .accepted(
            &As::Admin,
            &json!({"openid": "o-nobody", "kind": "template", "template_id": "TPL_T",
                    "data": {"keyword1": {"value": "x"}}, "send_at": at.to_rfc3339()}),
        )
        .await;
    app.grant("o-refused", "TPL_GONE", 1).await;
    app.wechat.set_templates(APPID, &["TPL_M"]);
    let mut refused = subscribe_message("o-refused");
    refused["template_id"] = json!("TPL_GONE");
    let refused = app.accepted(&As::Admin, &refused).await;
    app.run_scheduler_at(at).await;
    app.dispatch_webhooks_at(at).await;
    let mut events: Vec<(String, Value)> = receiver
        .received()
        .iter()
        .map(|r| {
            let e = r.json();
            (
                e["type"].as_str().unwrap().to_string(),
                e["data"]["id"].clone(),
            )
        })
        .collect();
    events.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        events,
        vec![
            ("message.failed".to_string(), refused["id"].clone()),
            ("message.no_formid".to_string(), no_formid["id"].clone()),
            ("message.no_quota".to_string(), no_quota["id"].clone()),
        ]
    );
    // A cancelled message raises nothing.
    let mut later = subscribe_message("o-nobody");
    later["send_at"] = json!((at + chrono::Duration::hours(1)).to_rfc3339());
    let later = app.accepted(&As::Admin, &later).await;
    app.call(
        &As::Admin,
        Method::DELETE,
        &format!(
            "/v1/apps/{APPID}/messages/{}",
            later["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(app.dispatch_webhooks_at(at).await, 0);
}

#[sqlx::test]
async fn a_refused_event_is_retried_with_backoff_until_the_receiver_takes_it(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let receiver = Receiver::start(&[500, 200]);
    let secret = set_webhook(&app, json!(receiver.url)).await["webhook_secret"]
        .as_str()
        .unwrap()
        .to_string();
    app.grant("o-retry", "TPL_M", 1).await;
    app.accepted(&As::Admin, &subscribe_message("o-retry"))
        .await;
    app.run_scheduler().await;
    let now = Utc::now();
    assert_eq!(app.dispatch_webhooks_at(now).await, 1, "first attempt: 500");
    assert_eq!(
        app.dispatch_webhooks_at(now).await,
        0,
        "not due again at once"
    );
    assert_eq!(
        app.dispatch_webhooks_at(now + chrono::Duration::seconds(30))
            .await,
        1,
        "retried within 30 s"
    );
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[0].body, received[1].body,
        "the same event, the same body"
    );
    assert_signed(&received[1], &secret);
    assert_eq!(
        app.count("select count(*) from webhook_events where status = 'delivered'")
            .await,
        1
    );
    assert_eq!(
        app.dispatch_webhooks_at(now + chrono::Duration::hours(2))
            .await,
        0
    );
}

#[sqlx::test]
async fn an_event_no_receiver_takes_within_24_hours_is_given_up(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let receiver = Receiver::start(&[500; 64]);
    set_webhook(&app, json!(receiver.url)).await;
    app.grant("o-down", "TPL_M", 1).await;
    app.accepted(&As::Admin, &subscribe_message("o-down")).await;
    app.run_scheduler().await;
    let start = Utc::now();
    let mut at = start;
    while at < start + chrono::Duration::hours(25) {
        app.dispatch_webhooks_at(at).await;
        at += chrono::Duration::minutes(10);
    }
    let attempts = receiver.received().len();
    assert!(
        (20..40).contains(&attempts),
        "{attempts} attempts in 24 hours"
    );
    assert_eq!(
        app.count("select count(*) from webhook_events where status = 'expired'")
            .await,
        1
    );
}

#[sqlx::test]
async fn events_are_stored_with_the_status_change_and_survive_a_restart(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let mut app = spawn_app(db).await;
    let receiver = Receiver::start(&[]);
    let secret = set_webhook(&app, json!(receiver.url)).await["webhook_secret"]
        .as_str()
        .unwrap()
        .to_string();
    app.grant("o-restart", "TPL_M", 1).await;
    let message = app
        .accepted(&As::Admin, &subscribe_message("o-restart"))
        .await;
    app.run_scheduler().await;
    assert_eq!(
        app.count("select count(*) from webhook_events where status = 'pending'")
            .await,
        1,
        "stored when the message was recorded sent"
    );
    app.restart().await;
    assert_eq!(app.dispatch_webhooks_at(Utc::now()).await, 1);
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_signed(&received[0], &secret);
    assert_eq!(received[0].json()["data"]["id"], message["id"]);
}

#[sqlx::test]
async fn campaigns_that_complete_or_fail_are_pushed_with_the_campaign_object(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let receiver = Receiver::start(&[]);
    set_webhook(&app, json!(receiver.url)).await;
    for openid in ["o-c1", "o-c2"] {
        app.grant(openid, "TPL_M", 1).await;
        app.grant(openid, "TPL_GONE", 1).await;
    }
    let campaign = |template: &str| {
        json!({"appid": APPID, "name": "digest", "kind": "subscribe", "template_id": template,
               "data": {"thing1": {"value": "Weekly digest"}},
               "audience": {"type": "openids", "openids": ["o-c1", "o-c2"]},
               "schedule": {"type": "now"}})
    };
    let create = |body: Value| {
        let app = &app;
        async move {
            let resp = app
                .call(&As::Admin, Method::POST, "/v1/campaigns", Some(&body))
                .await;
            assert_eq!(resp.status(), 201);
            resp.json::<Value>().await.unwrap()["id"].clone()
        }
    };
    let completed = create(campaign("TPL_M")).await;
    app.run_scheduler().await;
    app.wechat.set_templates(APPID, &["TPL_M"]);
    let failed = create(campaign("TPL_GONE")).await;
    app.run_scheduler().await;
    app.dispatch_webhooks_at(Utc::now()).await;
    let events: Vec<Value> = receiver.received().iter().map(Received::json).collect();
    assert_eq!(events.len(), 2, "{events:?}");
    let of = |kind: &str| events.iter().find(|e| e["type"] == kind).unwrap().clone();
    let done = of("campaign.completed");
    assert_eq!(done["data"]["id"], completed);
    assert_eq!(done["data"]["status"], "completed");
    assert_eq!(done["data"]["totals"]["sent"], 2);
    let stopped = of("campaign.failed");
    assert_eq!(stopped["data"]["id"], failed);
    assert_eq!(stopped["data"]["last_error"]["errcode"], 40037);
}

#[sqlx::test]
async fn an_app_without_a_webhook_stores_no_events(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    app.grant("o-quiet", "TPL_M", 1).await;
    app.accepted(&As::Admin, &subscribe_message("o-quiet"))
        .await;
    app.run_scheduler().await;
    assert_eq!(app.count("select count(*) from webhook_events").await, 0);
}

#[sqlx::test]
async fn the_sandbox_stands_in_for_the_team_s_receiver_on_a_laptop(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let url = format!("{}/sandbox/webhooks", app.sandbox_url());
    let secret = set_webhook(&app, json!(url)).await["webhook_secret"]
        .as_str()
        .unwrap()
        .to_string();
    app.grant("o-laptop", "TPL_M", 1).await;
    let key = app.key(&["send"]).await;
    let message = app.accepted(&key, &subscribe_message("o-laptop")).await;
    app.run_scheduler().await;
    app.dispatch_webhooks_at(Utc::now()).await;
    let kept = app.wechat.webhooks();
    assert_eq!(kept.len(), 1);
    let received = Received {
        timestamp: kept[0].timestamp.clone(),
        signature: kept[0].signature.clone(),
        content_type: Some("application/json".into()),
        body: kept[0].body.clone().into_bytes(),
    };
    assert_signed(&received, &secret);
    assert_eq!(received.json()["data"]["id"], message["id"]);
}
