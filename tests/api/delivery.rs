//! The delivery rules of API.md, each proven against the sandbox.

use std::time::Duration;

use chrono::{DateTime, Utc};
use formpush_sandbox::{Api, Fault, SandboxConfig};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{
    assert_each_user_reached_once, eventually, spawn_app, spawn_app_with, start_instance,
    subscribe_campaign, template_campaign, ADMIN_TOKEN, APPID, NO_SCHEDULER, PUSH_TOKEN,
    REAL_CLOCK, SECRET,
};

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
    let (_, done) = app.run_campaign(body, "completed").await;
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
    app.run_campaign(body, "completed").await;
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
    let (_, done) = app
        .run_campaign(template_campaign(json!({"type": "all"})), "completed")
        .await;
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
    let (id, done) = app
        .run_campaign(template_campaign(json!({"type": "all"})), "completed")
        .await;
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
    app.run_scheduler().await;
    app.campaign_in(&first, "completed").await;
    let calls = app.wechat.token_calls(APPID);
    app.wechat.expire_tokens(APPID);
    let second = app
        .start_campaign(template_campaign(
            json!({"type": "openids", "openids": ["o-u"]}),
        ))
        .await;
    app.run_scheduler().await;
    let done = app.campaign_in(&second, "completed").await;
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
    let (id, done) = app
        .run_campaign(template_campaign(json!({"type": "all"})), "completed")
        .await;
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
    let (_, done) = app
        .run_campaign(template_campaign(json!({"type": "all"})), "completed")
        .await;
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
    let (_, failed) = app
        .run_campaign(template_campaign(json!({"type": "all"})), "failed")
        .await;
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
    let (_, failed) = app
        .run_campaign(template_campaign(json!({"type": "all"})), "failed")
        .await;
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
    let (id, paused) = app.run_campaign(body, "paused").await;
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
    app.run_scheduler().await;
    let done = app.campaign_in(&id, "completed").await;
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
    let (id, done) = app
        .run_campaign(
            template_campaign(json!({"type": "openids", "openids": ["o-gone"]})),
            "completed",
        )
        .await;
    assert_eq!(done["totals"]["failed"], 1);
    let d = app.deliveries(&id, "status=failed").await;
    assert_eq!(d["items"][0]["errcode"], 40003);
    assert_eq!(d["items"][0]["attempts"], 1);
}

#[sqlx::test]
async fn subscribe_campaigns_spend_one_grant_per_user(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    for (openid, grants) in [("s-1", 2), ("s-2", 1), ("s-3", 0)] {
        let token = app.login(openid).await;
        for _ in 0..grants {
            app.wechat.grant_subscription(APPID, openid, "TPL_SUB", 1);
            let resp = app
                .post_subscriptions(&token, &json!({"TPL_SUB": "accept"}))
                .await;
            assert_eq!(resp.status(), 200);
        }
    }
    let (_, done) = app
        .run_campaign(subscribe_campaign("TPL_SUB"), "completed")
        .await;
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
        // One send at a time, in delivery order: the delay below is t-1's.
        &[
            ("FORMPUSH_SEND_CONCURRENCY", "1"),
            ("FORMPUSH_SEND_BATCHES", "1"),
        ],
    )
    .await;
    for openid in ["t-1", "t-2"] {
        let token = app.login(openid).await;
        let resp = app
            .post_subscriptions(&token, &json!({"TPL_T": "accept"}))
            .await;
        assert_eq!(resp.status(), 200);
    }
    // t-1: WeChat delivers but answers after our timeout. t-2: WeChat has no grant (43101).
    app.wechat.grant_subscription(APPID, "t-1", "TPL_T", 1);
    app.wechat.fail_next(
        Api::SubscribeSend,
        Fault::Delay(Duration::from_millis(1500)),
        1,
    );
    let (id, done) = app
        .run_campaign(subscribe_campaign("TPL_T"), "completed")
        .await;
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

/// A time as the API stores it (whole seconds: no rounding between here and Postgres).
fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap()
}

fn time_field(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("a time: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

#[sqlx::test]
async fn a_scheduled_at_campaign_waits_for_its_time(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    app.user_with_formids("o-at", 1).await;
    let at = whole_seconds(Utc::now() + chrono::Duration::hours(1));
    let mut body = template_campaign(json!({"type": "all"}));
    body["schedule"] = json!({"type": "at", "at": at.to_rfc3339()});
    let id = app.start_campaign(body).await;
    assert_eq!(app.run_scheduler().await, 0, "not due now");
    let second_before = at - chrono::Duration::seconds(1);
    assert_eq!(
        app.run_scheduler_at(second_before).await,
        0,
        "not due a second before"
    );
    app.campaign_in(&id, "scheduled").await;
    assert_eq!(app.wechat.message_count(), 0);
    assert_eq!(app.run_scheduler_at(at).await, 1, "due at its time");
    let done = app.campaign_in(&id, "completed").await;
    assert_eq!(done["totals"]["sent"], 1, "{done}");
    assert_eq!(
        done["next_run_at"],
        Value::Null,
        "an `at` campaign runs once"
    );
    assert_eq!(
        time_field(&app.runs(&id).await["items"][0]["scheduled_for"]),
        at
    );
    assert_eq!(app.wechat.messages_to(APPID, "o-at").len(), 1);
}

/// The one campaign on the scheduler's own clock: nobody steps it, the one-second tick
/// starts the run within 2 s of its time and the campaign completes.
#[sqlx::test]
async fn on_its_own_clock_the_scheduler_starts_a_run_within_two_seconds_of_its_time(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app_with(db, SandboxConfig::default(), &[REAL_CLOCK]).await;
    app.user_with_formids("o-clock", 1).await;
    let at = Utc::now() + chrono::Duration::seconds(2);
    let mut body = template_campaign(json!({"type": "all"}));
    body["schedule"] = json!({"type": "at", "at": at.to_rfc3339()});
    let id = app.start_campaign(body).await;
    assert_eq!(app.campaign(&id).await["status"], "scheduled");
    let done = app.wait_for_status(&id, "completed").await;
    assert_eq!(done["totals"]["sent"], 1, "{done}");
    let sent_at = app.wechat.messages_to(APPID, "o-clock")[0].at;
    assert!(
        sent_at >= at && sent_at - at < chrono::Duration::seconds(2),
        "started within 2 s: {sent_at} vs {at}"
    );
}

#[sqlx::test]
async fn each_cron_firing_is_a_new_run_until_cancelled(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    app.user_with_formids("o-cron", 3).await;
    let mut body = template_campaign(json!({"type": "all"}));
    body["schedule"] = json!({"type": "cron", "cron": "0 30 9 * * *", "timezone": "Asia/Shanghai"});
    let id = app.start_campaign(body).await;
    // Two mornings in Shanghai, each a firing of its own.
    let mut firings = Vec::new();
    for _ in 0..2 {
        let next = time_field(&app.campaign(&id).await["next_run_at"]);
        assert_eq!(
            app.run_scheduler_at(next).await,
            1,
            "one run for the firing at {next}"
        );
        firings.push(next);
    }
    assert_eq!(firings[1] - firings[0], chrono::Duration::days(1));
    let between = app.campaign_in(&id, "scheduled").await;
    assert_eq!(
        time_field(&between["next_run_at"]),
        firings[1] + chrono::Duration::days(1)
    );
    let runs = app.runs(&id).await;
    let runs = runs["items"].as_array().unwrap();
    let mut scheduled: Vec<_> = runs
        .iter()
        .map(|r| time_field(&r["scheduled_for"]))
        .collect();
    scheduled.sort();
    assert_eq!(scheduled, firings);
    for run in runs {
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(
            run["totals"]["targeted"], 1,
            "one delivery per user per run: {run}"
        );
        assert_eq!(run["totals"]["sent"], 1, "{run}");
    }
    assert_eq!(app.wechat.messages_to(APPID, "o-cron").len(), 2);
    // Cancelled, it fires no more.
    assert_eq!(app.campaign_action(&id, "cancel").await.status(), 200);
    let third = firings[1] + chrono::Duration::days(1);
    assert_eq!(app.run_scheduler_at(third).await, 0);
    assert_eq!(app.wechat.messages_to(APPID, "o-cron").len(), 2);
}

#[sqlx::test]
async fn the_per_app_send_rate_is_never_exceeded(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let resp = app
        .put_app(APPID, &json!({"secret": SECRET, "send_rate_per_sec": 10}))
        .await;
    assert_eq!(resp.status(), 200);
    app.import_users((0..30).map(|i| format!("r-{i}")), 1).await;
    app.run_campaign(template_campaign(json!({"type": "all"})), "completed")
        .await;
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
    let resp = app
        .post_subscriptions(&token, &json!({"TPL_EV": "accept"}))
        .await;
    assert_eq!(resp.status(), 200);
    let (id, _) = app
        .run_campaign(subscribe_campaign("TPL_EV"), "completed")
        .await;
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
    let signature = formpush::wechat::crypto::signature(&[PUSH_TOKEN, &now, "n"]);
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
    let (id, paused) = app
        .run_campaign(template_campaign(json!({"type": "all"})), "paused")
        .await;
    let resume_at = time_field(&paused["resume_at"]);
    app.run_scheduler_at(resume_at - chrono::Duration::seconds(1))
        .await;
    app.campaign_in(&id, "paused").await;
    // Midnight in Shanghai: WeChat's daily counters reset, and the campaign goes on.
    let until_reset = resume_at - Utc::now() + chrono::Duration::seconds(1);
    app.wechat.advance_clock(until_reset.to_std().unwrap());
    app.run_scheduler_at(resume_at).await;
    let done = app.campaign_in(&id, "completed").await;
    assert_eq!(done["totals"]["sent"], 2, "{done}");
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
    // The test's own instance only serves HTTP; `first` sends on its own clock.
    let app = spawn_app_with(db.clone(), config, &[NO_SCHEDULER]).await;
    app.import_users((0..200).map(|i| format!("g-{i}")), 1)
        .await;
    let extra = [
        ("FORMPUSH_SEND_CONCURRENCY", "4"),
        ("FORMPUSH_APP_LEASE_SECS", "3"),
    ];
    let first = start_instance(&db, &app.sandbox_url(), &[REAL_CLOCK, extra[0], extra[1]]).await;
    let id = app
        .start_campaign(template_campaign(json!({"type": "all"})))
        .await;
    // Requests to the stopping instance: its pool now holds connections its HTTP workers
    // opened. Those die with the workers, so the senders must be done before they stop.
    let reads = (0..24).map(|_| {
        app.http
            .get(format!("{}/v1/campaigns/{id}", first.address))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    });
    for read in futures::future::join_all(reads).await {
        assert_eq!(read.unwrap().status(), 200);
    }
    eventually(
        Duration::from_secs(20),
        "the first instance sending",
        async || (app.wechat.message_count() >= 20).then_some(()),
    )
    .await;
    let stopping = tokio::time::Instant::now();
    first.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        stopping.elapsed()
    );
    let in_flight = app
        .count("select count(*) from deliveries where status = 'sending'")
        .await;
    assert_eq!(in_flight, 0, "the batch in hand was finished and recorded");
    let leases = app.count("select count(*) from app_leases").await;
    assert_eq!(leases, 0, "the app lease was handed back");
    assert!(
        app.campaign(&id).await["totals"]["sent"].as_i64().unwrap() < 200,
        "stopped mid-run"
    );
    // No lease to wait out: the next instance takes the app over at its first step.
    let second = start_instance(&db, &app.sandbox_url(), &extra).await;
    second.run_scheduler().await;
    let done = app.campaign_in(&id, "completed").await;
    assert_eq!(done["totals"]["sent"], 200);
    assert_eq!(app.wechat.message_count(), 200, "nobody was messaged twice");
    second.stop().await;
}

#[sqlx::test]
async fn an_unreachable_wechat_delays_the_campaign_until_it_is_back(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    for i in 0..5 {
        app.user_with_formids(&format!("o-down{i}"), 1).await;
    }
    app.stop_wechat().await;
    let id = app
        .start_campaign(template_campaign(json!({"type": "all"})))
        .await;
    // The step sends until the campaign is done, which takes WeChat being back.
    let outage = async {
        // Every delivery meets a refused connection and is put back, none fails.
        eventually(Duration::from_secs(20), "deliveries waiting for WeChat", async || {
            let waiting = app
                .count("select count(*) from deliveries where status = 'pending' and errcode = 'unreachable'")
                .await;
            (waiting == 5).then_some(())
        })
        .await;
        assert_eq!(app.campaign(&id).await["totals"]["failed"], 0);
        app.restart_wechat().await;
    };
    tokio::join!(app.run_scheduler(), outage);
    let done = app.campaign_in(&id, "completed").await;
    assert_eq!(done["totals"]["sent"], 5, "{done}");
    assert_eq!(app.wechat.message_count(), 5);
}

#[sqlx::test]
async fn a_token_call_refused_as_a_stale_credential_fails_the_delivery_instead_of_looping(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.user_with_formids("o-tokenless", 1).await;
    // WeChat's token API itself answers 40001 (stale credential), again and again.
    app.wechat
        .fail_next(Api::StableToken, Fault::Errcode(40001), 100);
    let id = app
        .start_campaign(template_campaign(json!({"type": "all"})))
        .await;
    tokio::time::timeout(Duration::from_secs(30), app.run_scheduler())
        .await
        .expect("the sender gave up on the token instead of retrying it forever");
    let done = app.campaign_in(&id, "completed").await;
    assert_eq!(done["totals"]["failed"], 1, "{done}");
    let d = app.deliveries(&id, "").await;
    assert_eq!(d["items"][0]["errcode"], 40001, "{d}");
    assert!(app.wechat.messages_to(APPID, "o-tokenless").is_empty());
}

#[sqlx::test]
async fn a_run_gets_its_audience_in_chunks_and_keeps_the_users_it_started_with(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app_with(
        db,
        SandboxConfig::default(),
        &[
            ("FORMPUSH_RUN_FILL_CHUNK", "3"),
            ("FORMPUSH_SEND_CONCURRENCY", "2"),
        ],
    )
    .await;
    app.import_users((0..10).map(|i| format!("o-{i}")), 1).await;
    let at = Utc::now() + chrono::Duration::hours(1);
    let mut body = template_campaign(json!({"type": "all"}));
    body["schedule"] = json!({"type": "at", "at": at.to_rfc3339()});
    let id = app.start_campaign(body).await;

    // The run starts with its first chunk of deliveries only...
    let started = formpush::store::runs::start_due_runs(&app.pool, at, 3)
        .await
        .unwrap();
    assert_eq!(started.len(), 1);
    assert_eq!(app.count("select count(*) from deliveries").await, 3);
    let runs = app.runs(&id).await;
    assert_eq!(runs["items"][0]["filling"], true, "{runs}");
    // ...and a user who arrives now is not part of it.
    app.import_users(["o-late".to_string()], 1).await;

    // The sender adds the rest a chunk at a time while it sends.
    app.run_scheduler_at(at).await;
    let done = app.campaign_in(&id, "completed").await;
    assert_eq!(done["totals"]["targeted"], 10, "{done}");
    assert_eq!(done["totals"]["sent"], 10, "{done}");
    assert!(app.wechat.messages_to(APPID, "o-late").is_empty());
    assert_each_user_reached_once(&app.wechat, 10);
    let runs = app.runs(&id).await;
    assert_eq!(runs["items"][0]["filling"], false, "{runs}");
}

#[sqlx::test]
async fn a_listed_audience_is_filled_in_chunks_with_each_users_vars(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app_with(
        db,
        SandboxConfig::default(),
        &[
            ("FORMPUSH_RUN_FILL_CHUNK", "3"),
            ("FORMPUSH_SEND_CONCURRENCY", "2"),
        ],
    )
    .await;
    let openids: Vec<String> = (0..7).map(|i| format!("o-{i}")).collect();
    app.import_users(openids.iter().cloned(), 1).await;
    // One user outside the list holds a formId too: the list is the audience.
    app.import_users(["o-other".to_string()], 1).await;
    let users: Vec<Value> = openids
        .iter()
        .map(|o| json!({"openid": o, "vars": {"nickname": format!("N{o}")}}))
        .collect();
    let mut body = template_campaign(json!({"type": "users", "users": users}));
    body["data"] = json!({"keyword1": {"value": "Hi {{nickname}}"}});
    let (_, done) = app.run_campaign(body, "completed").await;
    assert_eq!(done["totals"]["targeted"], 7, "{done}");
    assert_eq!(done["totals"]["sent"], 7, "{done}");
    assert_each_user_reached_once(&app.wechat, 7);
    for openid in &openids {
        let to = app.wechat.messages_to(APPID, openid);
        assert_eq!(to[0].data["keyword1"]["value"], format!("Hi N{openid}"));
    }
}

#[sqlx::test]
async fn batches_sent_side_by_side_reach_each_user_once(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(
        db,
        SandboxConfig::default(),
        &[
            ("FORMPUSH_SEND_BATCHES", "3"),
            ("FORMPUSH_SEND_CONCURRENCY", "2"),
            ("FORMPUSH_RUN_FILL_CHUNK", "5"),
        ],
    )
    .await;
    app.import_users((0..23).map(|i| format!("o-{i}")), 2).await;
    let (_, done) = app
        .run_campaign(template_campaign(json!({"type": "all"})), "completed")
        .await;
    assert_eq!(done["totals"]["sent"], 23, "{done}");
    assert_each_user_reached_once(&app.wechat, 23);
    let stats = app.stats().await;
    assert_eq!(stats["consumed"], 23, "one formId each: {stats}");
    assert_eq!(stats["valid_formids"], 23, "{stats}");
}
