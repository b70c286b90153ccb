//! The delivery rules of API.md, each proven against the sandbox.

use std::time::Duration;

use chrono::Utc;
use formpush_sandbox::{Api, Fault, SandboxConfig};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{spawn_app, spawn_app_with, template_campaign, APPID};

#[sqlx::test]
async fn each_user_gets_one_message_with_their_freshest_formid_and_vars(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let old = app
        .wechat
        .form_id_created_at(APPID, "o-a", Utc::now() - chrono::Duration::days(2));
    let token = app.login("o-a").await;
    let fresh = app.wechat.form_id(APPID, "o-a");
    app.post_formids(&token, &json!({"form_ids": [old, fresh]}))
        .await;
    app.user_with_formids("o-b", 1).await;
    let mut body = template_campaign(json!({"type": "users", "users": [
        {"openid": "o-a", "vars": {"nickname": "Ann"}}, {"openid": "o-b", "vars": {"nickname": "Bo"}}
    ]}));
    body["data"] = json!({"keyword1": {"value": "Hi {{nickname}}"}});
    let id = app.start_campaign(body).await;
    let done = app.wait_for_status(&id, "completed").await;
    assert_eq!(done["totals"]["sent"], 2);
    let to_a = app.wechat.messages_to(APPID, "o-a");
    assert_eq!(to_a.len(), 1);
    assert_eq!(
        to_a[0].form_id.as_deref(),
        Some(fresh.as_str()),
        "freshest first"
    );
    assert_eq!(to_a[0].data["keyword1"]["value"], "Hi Ann");
    assert_eq!(
        app.wechat.messages_to(APPID, "o-b")[0].data["keyword1"]["value"],
        "Hi Bo"
    );
    let stats = app.stats().await;
    assert_eq!(stats["valid_formids"], 1, "o-a keeps the older one");
    assert_eq!(stats["consumed"], 2);
}

#[sqlx::test]
async fn expiring_first_spends_the_formid_closest_to_expiry(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let token = app.login("o-e").await;
    let old = app
        .wechat
        .form_id_created_at(APPID, "o-e", Utc::now() - chrono::Duration::days(5));
    let fresh = app.wechat.form_id(APPID, "o-e");
    app.post_formids(&token, &json!({"form_ids": [fresh, old]}))
        .await;
    let mut body = template_campaign(json!({"type": "all"}));
    body["formid_pick"] = json!("expiring_first");
    let id = app.start_campaign(body).await;
    app.wait_for_status(&id, "completed").await;
    assert_eq!(
        app.wechat.messages_to(APPID, "o-e")[0].form_id.as_deref(),
        Some(old.as_str())
    );
}

#[sqlx::test]
async fn a_bad_formid_is_marked_invalid_and_the_next_one_is_tried(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let token = app.login("o-n").await;
    let good = app
        .wechat
        .form_id_created_at(APPID, "o-n", Utc::now() - chrono::Duration::hours(1));
    // Two formIds WeChat never issued to this user: 41028 each.
    let foreign1 = app.wechat.form_id(APPID, "someone-else");
    let foreign2 = app.wechat.ios_form_id(APPID, "someone-else");
    app.post_formids(&token, &json!({"form_ids": [good, foreign1, foreign2]}))
        .await;
    let id = app
        .start_campaign(template_campaign(json!({"type": "all"})))
        .await;
    let done = app.wait_for_status(&id, "completed").await;
    assert_eq!(done["totals"]["sent"], 1, "{done}");
    assert_eq!(
        app.wechat.messages_to(APPID, "o-n")[0].form_id.as_deref(),
        Some(good.as_str())
    );
    assert_eq!(app.stats().await["invalid"], 2);
}

#[sqlx::test]
async fn three_bad_formids_fail_the_delivery(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let token = app.login("o-f").await;
    let ids: Vec<String> = (0..4)
        .map(|_| app.wechat.form_id(APPID, "not-o-f"))
        .collect();
    app.post_formids(&token, &json!({ "form_ids": ids })).await;
    let id = app
        .start_campaign(template_campaign(json!({"type": "all"})))
        .await;
    let done = app.wait_for_status(&id, "completed").await;
    assert_eq!(done["totals"]["failed"], 1);
    let d = app.deliveries(&id, "").await;
    assert_eq!(d["items"][0]["errcode"], 41028);
    assert_eq!(
        app.stats().await["invalid"],
        3,
        "up to 3 formIds per user per run"
    );
    assert_eq!(app.stats().await["valid_formids"], 1);
}

#[sqlx::test]
async fn an_expired_token_is_refreshed_and_the_send_retried(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.user_with_formids("o-t", 1).await;
    app.user_with_formids("o-u", 1).await;
    let first = app
        .start_campaign(template_campaign(
            json!({"type": "openids", "openids": ["o-t"]}),
        ))
        .await;
    app.wait_for_status(&first, "completed").await;
    let calls = app.wechat.token_calls(APPID);
    app.wechat.expire_tokens(APPID);
    let second = app
        .start_campaign(template_campaign(
            json!({"type": "openids", "openids": ["o-u"]}),
        ))
        .await;
    let done = app.wait_for_status(&second, "completed").await;
    assert_eq!(done["totals"]["sent"], 1, "{done}");
    assert_eq!(app.wechat.token_calls(APPID), calls + 1);
}

#[sqlx::test]
async fn transient_errors_are_retried_with_the_same_formid(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let (_, ids) = app.user_with_formids("o-busy", 2).await;
    app.wechat
        .fail_next(Api::TemplateSend, Fault::Errcode(-1), 1);
    app.wechat
        .fail_next(Api::TemplateSend, Fault::HttpStatus(502), 1);
    let id = app
        .start_campaign(template_campaign(json!({"type": "all"})))
        .await;
    let done = app.wait_for_status(&id, "completed").await;
    assert_eq!(done["totals"]["sent"], 1);
    let d = app.deliveries(&id, "").await;
    assert_eq!(d["items"][0]["attempts"], 3);
    assert_eq!(
        d["items"][0]["form_id"],
        ids[1].as_str(),
        "freshest, kept across retries"
    );
    assert_eq!(app.wechat.messages_to(APPID, "o-busy").len(), 1);
}

#[sqlx::test]
async fn a_timeout_whose_send_got_through_counts_as_sent_once(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // WeChat takes longer than our 1 s timeout but delivers; the retry with the same
    // formId gets 41029, which proves the first attempt arrived.
    let app = spawn_app(db).await;
    app.user_with_formids("o-slow", 2).await;
    app.wechat.fail_next(
        Api::TemplateSend,
        Fault::Delay(Duration::from_millis(1500)),
        1,
    );
    let id = app
        .start_campaign(template_campaign(json!({"type": "all"})))
        .await;
    let done = app.wait_for_status(&id, "completed").await;
    assert_eq!(done["totals"]["sent"], 1, "{done}");
    assert_eq!(
        app.wechat.messages_to(APPID, "o-slow").len(),
        1,
        "reached exactly once"
    );
    assert_eq!(
        app.stats().await["valid_formids"],
        1,
        "the second formId is untouched"
    );
}

#[sqlx::test]
async fn a_campaign_level_error_fails_the_campaign_and_returns_the_formid(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.wechat.set_templates(APPID, &["OTHER_TEMPLATE"]);
    for i in 0..3 {
        app.user_with_formids(&format!("o-c{i}"), 1).await;
    }
    let id = app
        .start_campaign(template_campaign(json!({"type": "all"})))
        .await;
    let failed = app.wait_for_status(&id, "failed").await;
    assert_eq!(failed["last_error"]["errcode"], 40037);
    assert_eq!(app.stats().await["valid_formids"], 3, "no formId was spent");
    assert_eq!(failed["totals"]["sent"], 0);
}

#[sqlx::test]
async fn the_template_api_switched_off_fails_pointing_to_subscribe_campaigns(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.wechat.disable_template_api(APPID);
    app.user_with_formids("o-off", 1).await;
    let id = app
        .start_campaign(template_campaign(json!({"type": "all"})))
        .await;
    let failed = app.wait_for_status(&id, "failed").await;
    assert_eq!(failed["last_error"]["errcode"], 45103);
    assert!(failed["last_error"]["errmsg"]
        .as_str()
        .unwrap()
        .contains("subscribe"));
}

#[sqlx::test]
async fn the_daily_quota_pauses_until_reset_or_resume(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    app.wechat.set_daily_quota(APPID, 1);
    for i in 0..3 {
        app.user_with_formids(&format!("o-q{i}"), 1).await;
    }
    let mut body = template_campaign(json!({"type": "all"}));
    body["name"] = json!("quota");
    let id = app.start_campaign(body).await;
    let paused = app.wait_for_status(&id, "paused").await;
    assert_eq!(paused["last_error"]["errcode"], 45009);
    assert_eq!(paused["pause_reason"], "quota");
    assert!(paused["resume_at"].is_string());
    assert_eq!(paused["totals"]["sent"], 1);
    assert_eq!(
        app.stats().await["valid_formids"],
        2,
        "the refused formId was returned"
    );
    app.wechat.reset_daily_counts();
    app.wechat.set_daily_quota(APPID, 100);
    let resumed = app.campaign_action(&id, "resume").await;
    assert_eq!(resumed.status(), 200);
    let done = app.wait_for_status(&id, "completed").await;
    assert_eq!(done["totals"]["sent"], 3);
}

#[sqlx::test]
async fn bad_openids_fail_without_retry(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    app.user_with_formids("o-ok", 1).await;
    let form_id = app.wechat.form_id(APPID, "o-gone");
    app.import(&json!({"items": [{"openid": "o-gone", "form_id": form_id}]}))
        .await;
    app.wechat
        .fail_next(Api::TemplateSend, Fault::Errcode(40003), 1);
    let id = app
        .start_campaign(template_campaign(
            json!({"type": "openids", "openids": ["o-gone"]}),
        ))
        .await;
    let done = app.wait_for_status(&id, "completed").await;
    assert_eq!(done["totals"]["failed"], 1);
    let d = app.deliveries(&id, "status=failed").await;
    assert_eq!(d["items"][0]["errcode"], 40003);
    assert_eq!(d["items"][0]["attempts"], 1);
}

fn subscribe_campaign(template: &str) -> Value {
    json!({
        "appid": APPID, "name": "sub", "kind": "subscribe", "template_id": template,
        "page": "pages/index/index", "miniprogram_state": "formal", "lang": "zh_CN",
        "data": {"thing1": {"value": "Order {{openid}}"}},
        "audience": {"type": "all"}, "schedule": {"type": "now"}
    })
}

#[sqlx::test]
async fn subscribe_campaigns_spend_one_grant_per_user(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    for (openid, grants) in [("s-1", 2), ("s-2", 1), ("s-3", 0)] {
        let token = app.login(openid).await;
        for _ in 0..grants {
            app.wechat.grant_subscription(APPID, openid, "TPL_SUB", 1);
            app.http
                .post(format!("{}/v1/apps/{APPID}/subscriptions", app.address))
                .bearer_auth(&token)
                .json(&json!({"results": {"TPL_SUB": "accept"}}))
                .send()
                .await
                .unwrap();
        }
    }
    let id = app.start_campaign(subscribe_campaign("TPL_SUB")).await;
    let done = app.wait_for_status(&id, "completed").await;
    assert_eq!(done["totals"]["sent"], 2, "{done}");
    assert_eq!(done["totals"]["no_quota"], 1);
    assert_eq!(app.wechat.subscription_grants(APPID, "s-1", "TPL_SUB"), 1);
    assert_eq!(app.stats().await["subscription_grants"], 1);
}

#[sqlx::test]
async fn subscribe_timeouts_are_not_retried_and_43101_zeroes_grants(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app_with(
        db,
        SandboxConfig::default(),
        &[("FORMPUSH_SEND_CONCURRENCY", "1")],
    )
    .await;
    for openid in ["t-1", "t-2"] {
        let token = app.login(openid).await;
        app.http
            .post(format!("{}/v1/apps/{APPID}/subscriptions", app.address))
            .bearer_auth(&token)
            .json(&json!({"results": {"TPL_T": "accept"}}))
            .send()
            .await
            .unwrap();
    }
    // t-1: WeChat delivers but answers after our timeout. t-2: WeChat has no grant (43101).
    app.wechat.grant_subscription(APPID, "t-1", "TPL_T", 1);
    app.wechat.fail_next(
        Api::SubscribeSend,
        Fault::Delay(Duration::from_millis(1500)),
        1,
    );
    let id = app.start_campaign(subscribe_campaign("TPL_T")).await;
    let done = app.wait_for_status(&id, "completed").await;
    assert_eq!(done["totals"]["failed"], 2, "{done}");
    let failed = app.deliveries(&id, "status=failed").await;
    let codes: Vec<Value> = failed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["errcode"].clone())
        .collect();
    assert!(codes.contains(&json!("unknown_outcome")), "{codes:?}");
    assert!(codes.contains(&json!(43101)), "{codes:?}");
    assert_eq!(
        app.wechat.messages_to(APPID, "t-1").len(),
        1,
        "sent once, never twice"
    );
    assert_eq!(app.stats().await["subscription_grants"], 0);
}

#[sqlx::test]
async fn a_scheduled_at_campaign_waits_for_its_time(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    app.user_with_formids("o-at", 1).await;
    let at = Utc::now() + chrono::Duration::seconds(2);
    let mut body = template_campaign(json!({"type": "all"}));
    body["schedule"] = json!({"type": "at", "at": at.to_rfc3339()});
    let id = app.start_campaign(body).await;
    assert_eq!(app.campaign(&id).await["status"], "scheduled");
    app.wait_for_status(&id, "completed").await;
    let sent_at = app.wechat.messages_to(APPID, "o-at")[0].at;
    assert!(
        sent_at >= at && sent_at - at < chrono::Duration::seconds(2),
        "started within 2 s: {sent_at} vs {at}"
    );
}

#[sqlx::test]
async fn each_cron_firing_is_a_new_run(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    app.user_with_formids("o-cron", 3).await;
    let mut body = template_campaign(json!({"type": "all"}));
    body["schedule"] = json!({"type": "cron", "cron": "* * * * * *", "timezone": "UTC"});
    let id = app.start_campaign(body).await;
    // Wait for two firings to have each sent their message.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while app.campaign(&id).await["totals"]["sent"].as_i64().unwrap() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no second firing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.campaign_action(&id, "cancel").await;
    let runs = app.runs(&id).await;
    let runs = runs["items"].as_array().unwrap();
    assert!(runs.len() >= 2);
    assert!(
        runs.iter().all(|r| r["totals"]["targeted"] == 1),
        "one delivery per user per run"
    );
    assert!(app.wechat.messages_to(APPID, "o-cron").len() >= 2);
}

#[sqlx::test]
async fn the_per_app_send_rate_is_never_exceeded(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    app.put_app(
        APPID,
        &json!({"secret": crate::helpers::SECRET, "send_rate_per_sec": 10}),
    )
    .await;
    let items: Vec<Value> = (0..30)
        .map(|i| {
            let openid = format!("r-{i}");
            json!({"openid": openid, "form_id": app.wechat.form_id(APPID, &openid)})
        })
        .collect();
    app.import(&json!({ "items": items })).await;
    let id = app
        .start_campaign(template_campaign(json!({"type": "all"})))
        .await;
    app.wait_for_status(&id, "completed").await;
    let mut times: Vec<_> = app.wechat.messages().iter().map(|m| m.at).collect();
    times.sort();
    assert_eq!(times.len(), 30);
    // In any window of one second at most 10 sends, plus the limiter's initial burst of 10.
    for (i, t) in times.iter().enumerate() {
        let within = times[i..]
            .iter()
            .take_while(|u| **u - *t < chrono::Duration::seconds(1))
            .count();
        assert!(within <= 20, "{within} sends within 1 s of {t}");
    }
    assert!(
        times[29] - times[0] >= chrono::Duration::milliseconds(1800),
        "30 sends at 10/s take about 2 s"
    );
}

#[sqlx::test]
async fn subscribe_sent_events_are_recorded_against_the_delivery(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let token = app.login("s-ev").await;
    app.wechat.grant_subscription(APPID, "s-ev", "TPL_EV", 1);
    app.http
        .post(format!("{}/v1/apps/{APPID}/subscriptions", app.address))
        .bearer_auth(&token)
        .json(&json!({"results": {"TPL_EV": "accept"}}))
        .send()
        .await
        .unwrap();
    let id = app.start_campaign(subscribe_campaign("TPL_EV")).await;
    app.wait_for_status(&id, "completed").await;
    let delivery = &app.deliveries(&id, "status=sent").await["items"][0];
    let msg_id = delivery["msg_id"]
        .as_str()
        .expect("WeChat's msgid is kept")
        .to_string();
    let now = Utc::now().timestamp().to_string();
    let event = json!({
        "ToUserName": "gh_1", "FromUserName": "s-ev", "CreateTime": now.parse::<i64>().unwrap(),
        "MsgType": "event", "Event": "subscribe_msg_sent_event",
        "List": {"TemplateId": "TPL_EV", "MsgID": msg_id, "ErrorCode": "0", "ErrorStatus": "success"}
    });
    let signature = formpush::wechat::crypto::signature(&[crate::helpers::PUSH_TOKEN, &now, "n"]);
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
    let delivery = &app.deliveries(&id, "status=sent").await["items"][0];
    assert_eq!(delivery["push_status"], "success");
}

#[sqlx::test]
async fn a_quota_paused_campaign_resumes_by_itself_when_the_quota_resets(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.wechat.set_daily_quota(APPID, 1);
    for i in 0..2 {
        app.user_with_formids(&format!("o-r{i}"), 1).await;
    }
    let id = app
        .start_campaign(template_campaign(json!({"type": "all"})))
        .await;
    app.wait_for_status(&id, "paused").await;
    // Midnight in Shanghai comes early: WeChat's counters reset and resume_at passes.
    app.wechat.reset_daily_counts();
    sqlx::query("update campaigns set resume_at = now() - interval '1 second' where id = $1::uuid")
        .bind(&id)
        .execute(&app.pool)
        .await
        .unwrap();
    let done = app.wait_for_status(&id, "completed").await;
    assert_eq!(done["totals"]["sent"], 2);
}

#[sqlx::test]
async fn sigterm_style_shutdown_hands_back_work_that_another_instance_finishes(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let config = SandboxConfig {
        latency: Duration::from_millis(30),
        ..Default::default()
    };
    let app = spawn_app_with(db.clone(), config, &[("FORMPUSH_SCHEDULER", "off")]).await;
    let items: Vec<Value> = (0..200)
        .map(|i| {
            let openid = format!("g-{i}");
            json!({"openid": openid, "form_id": app.wechat.form_id(APPID, &openid)})
        })
        .collect();
    app.import(&json!({ "items": items })).await;
    let extra = [
        ("FORMPUSH_SEND_CONCURRENCY", "4"),
        ("FORMPUSH_APP_LEASE_SECS", "3"),
    ];
    let first = crate::helpers::start_instance(&db, &app.sandbox_url(), &extra).await;
    let id = app
        .start_campaign(template_campaign(json!({"type": "all"})))
        .await;
    // Requests to the stopping instance: its pool now holds connections its HTTP workers
    // opened. Those die with the workers, so the senders must be done before they stop.
    let reads = (0..24).map(|_| {
        app.http
            .get(format!("{}/v1/campaigns/{id}", first.address))
            .bearer_auth(crate::helpers::ADMIN_TOKEN)
            .send()
    });
    for read in futures::future::join_all(reads).await {
        assert_eq!(read.unwrap().status(), 200);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while app.wechat.messages().len() < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never started sending"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopping = tokio::time::Instant::now();
    first.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        stopping.elapsed()
    );
    let in_flight: i64 =
        sqlx::query_scalar("select count(*) from deliveries where status = 'sending'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(in_flight, 0, "the batch in hand was finished and recorded");
    let leases: i64 = sqlx::query_scalar("select count(*) from app_leases")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(leases, 0, "the app lease was handed back");
    assert!(
        app.campaign(&id).await["totals"]["sent"].as_i64().unwrap() < 200,
        "stopped mid-run"
    );
    let second = crate::helpers::start_instance(&db, &app.sandbox_url(), &extra).await;
    let done = app.wait_for_status(&id, "completed").await;
    assert_eq!(done["totals"]["sent"], 200);
    assert_eq!(
        app.wechat.messages().len(),
        200,
        "nobody was messaged twice"
    );
    second.stop().await;
}

#[sqlx::test]
async fn an_unreachable_wechat_delays_the_campaign_until_it_is_back(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let mut app = spawn_app(db).await;
    for i in 0..5 {
        app.user_with_formids(&format!("o-down{i}"), 1).await;
    }
    app.stop_wechat().await;
    let id = app
        .start_campaign(template_campaign(json!({"type": "all"})))
        .await;
    // Every delivery meets a refused connection and is put back, none fails.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "select count(*) from deliveries where status = 'pending' and errcode = 'unreachable'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if waiting == 5 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries never waited for WeChat"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.campaign(&id).await["totals"]["failed"], 0);
    app.restart_wechat();
    let done = app.wait_for_status(&id, "completed").await;
    assert_eq!(done["totals"]["sent"], 5, "{done}");
    assert_eq!(app.wechat.messages().len(), 5);
}
