//! Triggered messages (`/v1/apps/{appid}/messages`): each rule of the contract, against
//! the sandbox, with the sender stepped by hand (and one test on the live clock).

use std::time::Duration;

use chrono::Utc;
use formpush::scheduler::rules::next_quota_reset;
use formpush_sandbox::{Api, Fault, SandboxConfig};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{
    error_of, eventually, spawn_app, spawn_app_with, subscribe_message, template_campaign, As,
    APPID, PUSH_TOKEN, REAL_CLOCK, SECRET,
};

#[sqlx::test]
async fn send_now_claims_the_grant_in_the_request_and_the_sender_delivers_it(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.grant("o-now", "TPL_M", 1).await;
    let key = app.key(&["send"]).await;
    let message = app.accepted(&key, &subscribe_message("o-now")).await;
    assert_eq!(message["status"], "sending");
    assert_eq!(message["send_at"], Value::Null);
    assert_eq!(message["errcode"], Value::Null);
    assert_eq!(
        app.stats().await["subscription_grants"],
        0,
        "the grant is claimed inside the request"
    );
    assert!(
        app.wechat.messages().is_empty(),
        "nothing is sent in the request"
    );
    app.run_scheduler().await;
    let sent = app.wechat.messages_to(APPID, "o-now");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].template_id, "TPL_M");
    assert_eq!(sent[0].page.as_deref(), Some("pages/order/index?id=9"));
    assert_eq!(sent[0].lang.as_deref(), Some("zh_CN"));
    assert_eq!(sent[0].data["thing1"]["value"], "Order shipped");
    let datetime = sent[0].data["time2"]["value"].as_str().unwrap();
    assert!(
        chrono::NaiveDateTime::parse_from_str(datetime, "%Y-%m-%d %H:%M:%S").is_ok(),
        "{{{{datetime}}}} is filled in: {datetime}"
    );
    let id = message["id"].as_str().unwrap();
    let done = app.message(id).await;
    assert_eq!(done["status"], "sent");
    assert_eq!(done["errcode"], 0);
    assert_eq!(done["errmsg"], "ok");
    assert_eq!(done["msg_id"], sent[0].msgid.unwrap().to_string());
}

#[sqlx::test]
async fn a_template_message_spends_the_users_freshest_formid(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let ids = app.formids("o-tpl", 2).await;
    let message = app
        .accepted(
            &As::Admin,
            &json!({"openid": "o-tpl", "kind": "template", "template_id": "TPL_T",
                    "data": {"keyword1": {"value": "hi {{openid}}"}},
                    "emphasis_keyword": "keyword1.DATA"}),
        )
        .await;
    assert_eq!(message["status"], "sending");
    assert_eq!(app.stats().await["valid_formids"], 1);
    app.run_scheduler().await;
    let sent = app.wechat.messages_to(APPID, "o-tpl");
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].form_id.as_deref(),
        Some(ids[1].as_str()),
        "freshest first"
    );
    assert_eq!(sent[0].data["keyword1"]["value"], "hi o-tpl");
    assert_eq!(sent[0].emphasis_keyword.as_deref(), Some("keyword1.DATA"));
    assert_eq!(
        app.message(message["id"].as_str().unwrap()).await["status"],
        "sent"
    );
}

#[sqlx::test]
async fn a_user_without_a_credit_gets_409_no_credit_and_nothing_is_stored(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.grant("o-other-template", "TPL_OTHER", 1).await;
    app.formids("o-used", 1).await;
    let key = app.key(&["send"]).await;
    let mut unknown_user = subscribe_message("o-nobody");
    unknown_user["idempotency_key"] = json!("k-unknown");
    let mut template_without_formids = subscribe_message("o-other-template");
    template_without_formids["kind"] = json!("template");
    template_without_formids["template_id"] = json!("TPL_T");
    template_without_formids
        .as_object_mut()
        .unwrap()
        .retain(|k, _| !["miniprogram_state", "lang"].contains(&k.as_str()));
    for body in [
        unknown_user.clone(),
        subscribe_message("o-other-template"),
        template_without_formids,
    ] {
        let resp = app.post_message(&key, &body).await;
        assert_eq!(error_of(resp).await, (409, "no_credit".into()), "{body}");
    }
    assert_eq!(app.count("select count(*) from messages").await, 0);
    assert_eq!(app.count("select count(*) from message_keys").await, 0);
    assert_eq!(app.stats().await["subscription_grants"], 1, "nothing spent");
    // The caller fell back; once the user has a grant, the same key works.
    app.grant("o-nobody", "TPL_M", 1).await;
    assert_eq!(app.post_message(&key, &unknown_user).await.status(), 202);
}

#[sqlx::test]
async fn each_invalid_field_is_a_422_naming_it_and_nothing_is_stored(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.grant("o-bad", "TPL_M", 1).await;
    let cases = [
        ("openid", json!(""), "invalid_openid"),
        ("kind", json!("sms"), "invalid_kind"),
        ("template_id", json!(""), "invalid_template_id"),
        ("page", json!("p".repeat(1025)), "invalid_page"),
        ("data", json!({}), "invalid_data"),
        (
            "data",
            json!({"thing1": {"value": "{{nickname}}"}}),
            "unknown_placeholder",
        ),
        ("emphasis_keyword", json!("keyword1.DATA"), "invalid_field"),
        ("formid_pick", json!("freshest"), "invalid_field"),
        ("lang", json!("fr_FR"), "invalid_field"),
        ("miniprogram_state", json!("beta"), "invalid_field"),
        (
            "idempotency_key",
            json!("k".repeat(129)),
            "invalid_idempotency_key",
        ),
        ("send_at", json!("tomorrow"), "invalid_send_at"),
        ("audience", json!({"type": "all"}), "invalid_body"),
        ("openid", json!(7), "invalid_body"),
        ("template_id", json!("T\u{0}"), "invalid_text"),
    ];
    for (field, value, code) in cases {
        let mut body = subscribe_message("o-bad");
        body[field] = value.clone();
        let resp = app.post_message(&As::Admin, &body).await;
        assert_eq!(error_of(resp).await, (422, code.into()), "{field}: {value}");
    }
    let resp = app
        .post_message(
            &As::Admin,
            &json!({"openid": "o-bad", "kind": "template", "template_id": "T",
                    "data": {"k": {"value": "v"}}, "formid_pick": "oldest"}),
        )
        .await;
    assert_eq!(error_of(resp).await, (422, "invalid_formid_pick".into()));
    assert_eq!(app.count("select count(*) from messages").await, 0);
    assert_eq!(app.stats().await["subscription_grants"], 1);
    let unknown_app = app
        .call(
            &As::Admin,
            Method::POST,
            "/v1/apps/wxnosuchapp/messages",
            Some(&subscribe_message("o-bad")),
        )
        .await;
    assert_eq!(error_of(unknown_app).await, (404, "app_not_found".into()));
}

#[sqlx::test]
async fn a_repeat_with_the_same_idempotency_key_answers_the_message_and_sends_nothing_more(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.grant("o-idem", "TPL_M", 3).await;
    let key = app.key(&["send"]).await;
    let mut body = subscribe_message("o-idem");
    body["idempotency_key"] = json!("order-9-shipped");
    let first = app.accepted(&key, &body).await;
    assert_eq!(first["idempotency_key"], "order-9-shipped");
    // The same body, keys in another order: the same request.
    let reordered: Value = serde_json::from_str(&format!(
        "{{\"idempotency_key\": \"order-9-shipped\", {}",
        &subscribe_message("o-idem").to_string()[1..]
    ))
    .unwrap();
    for repeat in [&body, &reordered] {
        let resp = app.post_message(&key, repeat).await;
        assert_eq!(resp.status(), 200);
        let again: Value = resp.json().await.unwrap();
        assert_eq!(again["id"], first["id"]);
    }
    let mut changed = body.clone();
    changed["data"]["thing1"]["value"] = json!("Order delivered");
    let resp = app.post_message(&key, &changed).await;
    assert_eq!(error_of(resp).await, (409, "idempotency_conflict".into()));
    app.run_scheduler().await;
    assert_eq!(app.wechat.messages_to(APPID, "o-idem").len(), 1);
    assert_eq!(
        app.stats().await["subscription_grants"],
        2,
        "one grant spent"
    );
    // After the send, a repeat still finds the message, now sent.
    let resp = app.post_message(&key, &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["status"], "sent");
    // A key is unique for 24 hours: older, it is free for a new message.
    sqlx::query("update message_keys set created_at = now() - interval '25 hours'")
        .execute(&app.pool)
        .await
        .unwrap();
    let fresh = app.accepted(&key, &changed).await;
    assert_ne!(fresh["id"], first["id"]);
}

#[sqlx::test]
async fn idempotent_repeats_racing_on_two_instances_create_one_message_and_one_send(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let other = app.another_instance().await;
    app.grant("o-race", "TPL_M", 5).await;
    let key = app.key(&["send"]).await;
    let mut body = subscribe_message("o-race");
    body["idempotency_key"] = json!("race-1");
    let path = format!("/v1/apps/{APPID}/messages");
    let requests = (0..24).map(|i| {
        let address = if i % 2 == 0 {
            app.address.clone()
        } else {
            other.address.clone()
        };
        let (app, key, body, path) = (&app, key.clone(), body.clone(), path.clone());
        async move {
            let resp = app
                .call_at(&address, &key, Method::POST, &path, Some(&body))
                .await;
            let status = resp.status().as_u16();
            let message: Value = resp.json().await.unwrap();
            (status, message["id"].as_str().unwrap().to_string())
        }
    });
    let answers = futures::future::join_all(requests).await;
    let created = answers.iter().filter(|(s, _)| *s == 202).count();
    assert_eq!(created, 1, "{answers:?}");
    assert!(answers.iter().all(|(s, _)| *s == 202 || *s == 200));
    assert!(
        answers.iter().all(|(_, id)| *id == answers[0].1),
        "one message"
    );
    assert_eq!(app.count("select count(*) from messages").await, 1);
    app.run_scheduler().await;
    other.run_scheduler().await;
    assert_eq!(app.wechat.messages_to(APPID, "o-race").len(), 1, "one send");
    assert_eq!(app.stats().await["subscription_grants"], 4);
    other.stop().await;
}

#[sqlx::test]
async fn a_scheduled_message_claims_its_credit_at_send_time_and_can_be_cancelled_before(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.grant("o-later", "TPL_M", 1).await;
    let key = app.key(&["send"]).await;
    let at = Utc::now() + chrono::Duration::hours(1);
    let mut body = subscribe_message("o-later");
    body["send_at"] = json!(at.to_rfc3339());
    let cancelled = app.accepted(&key, &body).await;
    assert_eq!(cancelled["status"], "scheduled");
    let kept = app.accepted(&key, &body).await;
    assert_eq!(
        app.stats().await["subscription_grants"],
        1,
        "claimed at send time"
    );
    app.run_scheduler().await;
    assert!(app.wechat.messages().is_empty(), "not due yet");
    let path = |m: &Value| format!("/v1/apps/{APPID}/messages/{}", m["id"].as_str().unwrap());
    let resp = app
        .call(&key, Method::DELETE, &path(&cancelled), None)
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["status"], "cancelled");
    let again = app
        .call(&key, Method::DELETE, &path(&cancelled), None)
        .await;
    assert_eq!(error_of(again).await, (409, "invalid_transition".into()));
    // Its time comes: the other one takes the grant, and the cancelled one sends nothing.
    app.run_scheduler_at(at + chrono::Duration::seconds(1))
        .await;
    assert_eq!(app.wechat.messages_to(APPID, "o-later").len(), 1);
    assert_eq!(
        app.message(kept["id"].as_str().unwrap()).await["status"],
        "sent"
    );
    assert_eq!(app.stats().await["subscription_grants"], 0);
    let sent_one = app.call(&key, Method::DELETE, &path(&kept), None).await;
    assert_eq!(error_of(sent_one).await, (409, "invalid_transition".into()));
    let unknown = app
        .call(
            &key,
            Method::DELETE,
            &format!("/v1/apps/{APPID}/messages/4b1c5c2e-0000-4000-8000-000000000000"),
            None,
        )
        .await;
    assert_eq!(error_of(unknown).await, (404, "message_not_found".into()));
}

#[sqlx::test]
async fn a_scheduled_message_to_a_user_without_credit_ends_no_quota_or_no_formid(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let at = Utc::now() + chrono::Duration::minutes(5);
    let mut subscribe = subscribe_message("o-unknown-yet");
    subscribe["send_at"] = json!(at.to_rfc3339());
    let subscribe = app.accepted(&As::Admin, &subscribe).await;
    let template = app
        .accepted(
            &As::Admin,
            &json!({"openid": "o-no-formids", "kind": "template", "template_id": "TPL_T",
                    "data": {"keyword1": {"value": "x"}}, "send_at": at.to_rfc3339()}),
        )
        .await;
    app.run_scheduler_at(at).await;
    assert_eq!(
        app.message(subscribe["id"].as_str().unwrap()).await["status"],
        "no_quota"
    );
    assert_eq!(
        app.message(template["id"].as_str().unwrap()).await["status"],
        "no_formid"
    );
    assert!(app.wechat.messages().is_empty());
}

#[sqlx::test]
async fn an_error_that_would_stop_a_campaign_fails_only_the_message_and_returns_its_credit(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.grant("o-err", "TPL_M", 1).await;
    app.grant("o-err", "TPL_GONE", 1).await;
    // WeChat knows only TPL_M: TPL_GONE is answered 40037.
    app.wechat.set_templates(APPID, &["TPL_M"]);
    let mut bad = subscribe_message("o-err");
    bad["template_id"] = json!("TPL_GONE");
    let failed = app.accepted(&As::Admin, &bad).await;
    let fine = app.accepted(&As::Admin, &subscribe_message("o-err")).await;
    app.run_scheduler().await;
    let failed = app.message(failed["id"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["errcode"], 40037);
    assert_eq!(
        app.message(fine["id"].as_str().unwrap()).await["status"],
        "sent",
        "the next message is not held up"
    );
    assert_eq!(
        app.stats().await["subscription_grants"],
        1,
        "the TPL_GONE grant was given back"
    );
    // Template messages on an account whose template API is switched off (45103).
    app.formids("o-err", 1).await;
    app.wechat.disable_template_api(APPID);
    let off = app
        .accepted(
            &As::Admin,
            &json!({"openid": "o-err", "kind": "template", "template_id": "TPL_M",
                    "data": {"keyword1": {"value": "x"}}}),
        )
        .await;
    assert_eq!(app.stats().await["valid_formids"], 0);
    app.run_scheduler().await;
    let off = app.message(off["id"].as_str().unwrap()).await;
    assert_eq!(off["status"], "failed");
    assert_eq!(off["errcode"], 45103);
    assert!(
        off["errmsg"].as_str().unwrap().contains("subscribe"),
        "{off}"
    );
    assert_eq!(
        app.stats().await["valid_formids"],
        1,
        "the formId was given back"
    );
}

#[sqlx::test]
async fn the_daily_quota_leaves_the_message_scheduled_until_it_resets(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.grant("o-quota", "TPL_M", 1).await;
    app.wechat.set_daily_quota(APPID, 0);
    let message = app
        .accepted(&As::Admin, &subscribe_message("o-quota"))
        .await;
    let id = message["id"].as_str().unwrap();
    app.run_scheduler().await;
    let waiting = app.message(id).await;
    assert_eq!(waiting["status"], "scheduled");
    assert_eq!(waiting["errcode"], 45009);
    assert_eq!(
        app.stats().await["subscription_grants"],
        1,
        "grant given back"
    );
    // Midnight in Shanghai: WeChat's counters reset and the message goes out.
    app.wechat.set_daily_quota(APPID, 10);
    app.wechat.reset_daily_counts();
    app.run_scheduler_at(next_quota_reset(Utc::now()) + chrono::Duration::seconds(1))
        .await;
    assert_eq!(app.message(id).await["status"], "sent");
    assert_eq!(app.wechat.messages_to(APPID, "o-quota").len(), 1);
}

#[sqlx::test]
async fn transient_errors_are_retried_and_a_timeout_is_not_resent_for_subscribe(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.grant("o-busy", "TPL_M", 2).await;
    app.wechat
        .fail_next(Api::SubscribeSend, Fault::Errcode(-1), 1);
    let busy = app.accepted(&As::Admin, &subscribe_message("o-busy")).await;
    app.run_scheduler().await;
    assert_eq!(
        app.message(busy["id"].as_str().unwrap()).await["status"],
        "sent"
    );
    // WeChat got it but answered too late (the test timeout is 1 s): no second send.
    app.wechat.fail_next(
        Api::SubscribeSend,
        Fault::Delay(Duration::from_millis(1500)),
        1,
    );
    let slow = app.accepted(&As::Admin, &subscribe_message("o-busy")).await;
    app.run_scheduler().await;
    let slow = app.message(slow["id"].as_str().unwrap()).await;
    assert_eq!(slow["status"], "failed");
    assert_eq!(slow["errcode"], "unknown_outcome");
    assert_eq!(app.wechat.messages_to(APPID, "o-busy").len(), 2);
}

#[sqlx::test]
async fn triggered_messages_go_out_before_the_deliveries_of_a_campaign_of_the_app(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    for i in 0..30 {
        app.formids(&format!("o-c{i}"), 1).await;
    }
    for i in 0..3 {
        app.grant(&format!("o-m{i}"), "TPL_M", 1).await;
    }
    let resp = app
        .call(
            &As::Admin,
            Method::POST,
            "/v1/campaigns",
            Some(&template_campaign(json!({"type": "all"}))),
        )
        .await;
    assert_eq!(resp.status(), 201);
    for i in 0..3 {
        app.accepted(&As::Admin, &subscribe_message(&format!("o-m{i}")))
            .await;
    }
    app.run_scheduler().await;
    let sent = app.wechat.messages();
    assert_eq!(sent.len(), 30 + 3);
    assert!(
        sent[..3].iter().all(|m| m.template_id == "TPL_M"),
        "{:?}",
        sent.iter().map(|m| &m.template_id).collect::<Vec<_>>()
    );
}

#[sqlx::test]
async fn a_message_reaches_wechat_within_a_second_while_a_large_campaign_of_the_app_sends(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // The real clock and scheduler; the campaign sends 800 messages at 100 a second.
    let config = SandboxConfig {
        latency: Duration::from_millis(10),
        ..Default::default()
    };
    let app = spawn_app_with(db, config, &[REAL_CLOCK]).await;
    let resp = app
        .put_app(APPID, &json!({"secret": SECRET, "send_rate_per_sec": 100}))
        .await;
    assert_eq!(resp.status(), 200);
    app.import_users((0..800).map(|i| format!("o-big{i}")), 1)
        .await;
    app.grant("o-urgent", "TPL_M", 5).await;
    let key = app.key(&["send"]).await;
    let campaign = app
        .start_campaign(template_campaign(json!({"type": "all"})))
        .await;
    eventually(
        Duration::from_secs(20),
        "the campaign sending",
        async || (app.wechat.message_count() >= 100).then_some(()),
    )
    .await;
    for n in 1..=5 {
        let posted = app.post_message(&key, &subscribe_message("o-urgent")).await;
        assert_eq!(posted.status(), 202);
        eventually(
            Duration::from_secs(1),
            &format!("message {n} at WeChat"),
            async || (app.wechat.messages_to(APPID, "o-urgent").len() >= n).then_some(()),
        )
        .await;
    }
    assert_eq!(
        app.campaign(&campaign).await["status"],
        "running",
        "the campaign was still sending all along"
    );
}

#[sqlx::test]
async fn wechat_s_sent_event_reaches_the_message_as_its_push_status(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // The test app is registered with PUSH_TOKEN: WeChat's pushes are signed with it.
    let app = spawn_app(db).await;
    app.grant("o-push", "TPL_M", 1).await;
    let message = app.accepted(&As::Admin, &subscribe_message("o-push")).await;
    app.run_scheduler().await;
    let id = message["id"].as_str().unwrap();
    let msg_id = app.message(id).await["msg_id"]
        .as_str()
        .unwrap()
        .to_string();
    let now = Utc::now().timestamp();
    let event = json!({
        "ToUserName": "gh_1", "FromUserName": "o-push", "CreateTime": now,
        "MsgType": "event", "Event": "subscribe_msg_sent_event",
        "List": {"TemplateId": "TPL_M", "MsgID": msg_id, "ErrorCode": "0", "ErrorStatus": "success"}
    });
    let signature = formpush::wechat::crypto::signature(&[PUSH_TOKEN, &now.to_string(), "n"]);
    let resp = app
        .http
        .post(format!(
            "{}/wechat/{APPID}?signature={signature}&timestamp={now}&nonce=n",
            app.address
        ))
        .body(event.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(app.message(id).await["push_status"], "success");
}

#[sqlx::test]
async fn messages_are_listed_newest_first_by_page_status_and_user(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let later = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut body = subscribe_message(if i < 3 { "o-a" } else { "o-b" });
        body["send_at"] = json!(later);
        ids.push(app.accepted(&As::Admin, &body).await["id"].clone());
    }
    let reader = app.key(&["read"]).await;
    let list = |query: &str| {
        let path = format!("/v1/apps/{APPID}/messages?{query}");
        let (app, reader) = (&app, reader.clone());
        async move {
            let resp = app.call(&reader, Method::GET, &path, None).await;
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let (status, first) = list("limit=2").await;
    assert_eq!(status, 200);
    assert_eq!(first["items"][0]["id"], ids[4], "newest first");
    assert_eq!(first["items"][1]["id"], ids[3]);
    let next = first["next"].as_str().unwrap();
    let (_, second) = list(&format!("limit=2&after={next}")).await;
    assert_eq!(second["items"][0]["id"], ids[2]);
    let (_, by_user) = list("openid=o-b").await;
    assert_eq!(by_user["items"].as_array().unwrap().len(), 2);
    assert_eq!(by_user["next"], Value::Null);
    let (_, scheduled) = list("status=scheduled").await;
    assert_eq!(scheduled["items"].as_array().unwrap().len(), 5);
    let (_, sent) = list("status=sent").await;
    assert!(sent["items"].as_array().unwrap().is_empty());
    assert_eq!(list("status=lost").await.0, 422);
    assert_eq!(list("after=abc").await.0, 422);
    assert_eq!(list("limit=0").await.0, 422);
    assert_eq!(list("colour=red").await.0, 400);
    // A reader reads messages, but does not send them.
    let resp = app.post_message(&reader, &subscribe_message("o-a")).await;
    assert_eq!(error_of(resp).await, (403, "forbidden".into()));
}
