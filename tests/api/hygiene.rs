//! Send hygiene: the campaign preview, test sends, the per-app frequency cap and quiet
//! hours. Scheduler steps at explicit times stand in for the clock where quiet hours are
//! concerned; the frequency cap's window is on the database's clock, so a test moves the
//! stored sends back in time instead of waiting.

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Asia::Shanghai;
use formpush_sandbox::{Api, Fault, SubscribeTemplate};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{
    assert_each_user_reached_once, spawn_app, spawn_app_with, start_instance, subscribe_message,
    template_campaign, TestApp, APPID, REAL_CLOCK, SECRET,
};

/// A synced subscribe template: a `thing` keyword (at most 20 characters) and a time.
const TPL: &str = "TPL_HYGIENE_000000000000000000000000000000";

/// What these tests ask of formpush beyond `TestApp`'s own calls.
trait Hygiene {
    async fn preview(&self, body: &Value) -> (u16, Value);
    async fn test_send(&self, campaign: &str, openids: Value) -> (u16, Value);
    async fn configure(&self, settings: Value);
    async fn delivered_to(&self, openid: &str) -> usize;
    async fn capped_in_metrics(&self) -> f64;
}

impl Hygiene for TestApp {
    async fn preview(&self, body: &Value) -> (u16, Value) {
        let resp = self
            .admin(reqwest::Method::POST, "/v1/campaigns:preview")
            .json(body)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    async fn test_send(&self, campaign: &str, openids: Value) -> (u16, Value) {
        let resp = self
            .admin(
                reqwest::Method::POST,
                &format!("/v1/campaigns/{campaign}/test"),
            )
            .json(&json!({ "openids": openids }))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    /// PUTs the test app with these settings besides its secret; must be accepted.
    async fn configure(&self, settings: Value) {
        let mut body = json!({ "secret": SECRET });
        for (k, v) in settings.as_object().unwrap() {
            body[k] = v.clone();
        }
        let resp = self.put_app(APPID, &body).await;
        let status = resp.status();
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(status, 200, "{answer}");
    }

    /// Messages WeChat accepted for this user of the test app.
    async fn delivered_to(&self, openid: &str) -> usize {
        self.wechat.messages_to(APPID, openid).len()
    }

    /// `formpush_sends_total` of the test app's capped template deliveries.
    async fn capped_in_metrics(&self) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let series = format!(
            "formpush_sends_total{{appid=\"{APPID}\",kind=\"template\",outcome=\"capped\"}} "
        );
        text.lines()
            .find_map(|line| line.strip_prefix(&series)?.parse().ok())
            .unwrap_or_else(|| panic!("{series} in\n{text}"))
    }
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("a time: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

/// `h:m` on `day` in Shanghai.
fn shanghai(day: NaiveDate, h: u32, m: u32) -> DateTime<Utc> {
    Shanghai
        .from_local_datetime(&day.and_time(NaiveTime::from_hms_opt(h, m, 0).unwrap()))
        .unwrap()
        .with_timezone(&Utc)
}

/// A day in Shanghai safely after today (every explicit time is in the future).
fn later_day() -> NaiveDate {
    Utc::now().with_timezone(&Shanghai).date_naive() + Days::new(2)
}

/// Nights in Shanghai: 22:00 to 08:00.
fn nights() -> Value {
    json!({"quiet_hours": {"start": "22:00", "end": "08:00", "timezone": "Asia/Shanghai"}})
}

fn template() -> SubscribeTemplate {
    serde_json::from_value(json!({
        "priTmplId": TPL, "title": "到店提醒", "type": 2,
        "content": "门店:{{thing1.DATA}}\n时间:{{time2.DATA}}\n",
        "example": "门店:TIT创意园\n时间:2026-11-27 15:01:00\n"
    }))
    .unwrap()
}

/// A template campaign to these users, each with a `nickname`.
fn greeting(users: &[(&str, &str)]) -> Value {
    let users: Vec<Value> = users
        .iter()
        .map(|(openid, nickname)| json!({"openid": openid, "vars": {"nickname": nickname}}))
        .collect();
    let mut body = template_campaign(json!({"type": "users", "users": users}));
    body["data"] =
        json!({"keyword1": {"value": "Hi {{nickname}}"}, "keyword2": {"value": "{{date}}"}});
    body
}

fn openids(list: &[&str]) -> Value {
    json!({"type": "openids", "openids": list})
}

// ---- preview ------------------------------------------------------------------------

#[sqlx::test]
async fn a_preview_counts_who_holds_a_credit_at_the_first_run_and_stores_nothing(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.user_with_formids("o-fresh", 1).await;
    // A formId issued 7 days less an hour ago: usable now, expired three hours from now.
    let soon = app.wechat.form_id_created_at(
        APPID,
        "o-soon",
        Utc::now() - chrono::Duration::days(7) + chrono::Duration::hours(1),
    );
    let resp = app
        .import(&json!({"items": [{"openid": "o-soon", "form_id": soon}]}))
        .await;
    assert_eq!(resp.status(), 200);
    app.login("o-none").await;
    let users_before = app.count("select count(*) from users").await;

    let at = (Utc::now() + chrono::Duration::hours(3))
        .with_nanosecond(0)
        .unwrap();
    let mut body = greeting(&[
        ("o-fresh", "Ann"),
        ("o-soon", "Bo"),
        ("o-none", "Cy"),
        ("o-ghost", "Di"),
    ]);
    body["schedule"] = json!({"type": "at", "at": at.to_rfc3339()});
    let (status, preview) = app.preview(&body).await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["audience"], 4, "{preview}");
    assert_eq!(
        preview["reachable"], 1,
        "o-soon's formId is gone by then: {preview}"
    );
    assert_eq!(preview["no_credit"], 3);
    assert_eq!(preview["capped"], 0);
    assert_eq!(time(&preview["first_run_at"]), at);
    let day = at.with_timezone(&Shanghai).format("%Y-%m-%d").to_string();
    assert_eq!(
        preview["samples"],
        json!([
            {"openid": "o-fresh", "data": {"keyword1": {"value": "Hi Ann"}, "keyword2": {"value": day}}},
            {"openid": "o-soon", "data": {"keyword1": {"value": "Hi Bo"}, "keyword2": {"value": day}}},
            {"openid": "o-none", "data": {"keyword1": {"value": "Hi Cy"}, "keyword2": {"value": day}}}
        ])
    );
    assert_eq!(preview["problems"], json!([]));

    // Sent now, the campaign would still reach o-soon.
    body["schedule"] = json!({"type": "now"});
    let (_, now) = app.preview(&body).await;
    assert_eq!(now["reachable"], 2, "{now}");

    // `all`: every user of the app.
    let (_, all) = app
        .preview(&template_campaign(json!({"type": "all"})))
        .await;
    assert_eq!(
        (all["audience"].clone(), all["reachable"].clone()),
        (json!(3), json!(2))
    );
    assert_eq!(all["samples"].as_array().unwrap().len(), 3);

    assert_eq!(app.count("select count(*) from campaigns").await, 0);
    assert_eq!(
        app.count("select count(*) from users").await,
        users_before,
        "o-ghost not created"
    );
    assert_eq!(app.stats().await["valid_formids"], 2, "nothing spent");
    assert_eq!(app.wechat.message_count(), 0);
}

#[sqlx::test]
async fn a_preview_names_the_users_whose_data_breaks_the_synced_template(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.wechat.add_template(APPID, template());
    let resp = app
        .admin(
            reqwest::Method::POST,
            &format!("/v1/apps/{APPID}/templates:sync"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    app.grant("o-ok", TPL, 1).await;
    app.grant("o-long", TPL, 1).await;
    let body = |users: Value| {
        json!({
            "appid": APPID, "name": "stores", "kind": "subscribe", "template_id": TPL,
            "data": {"thing1": {"value": "{{store}}"}, "time2": {"value": "{{datetime}}"}},
            "audience": {"type": "users", "users": users}, "schedule": {"type": "now"}
        })
    };
    let (status, preview) = app
        .preview(&body(json!([
            {"openid": "o-ok", "vars": {"store": "Riverside"}},
            {"openid": "o-long", "vars": {"store": "The Riverside Flagship Store"}}
        ])))
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(
        preview["reachable"], 2,
        "grants of the template count: {preview}"
    );
    let problems = preview["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{preview}");
    assert_eq!(problems[0]["openid"], "o-long");
    assert_eq!(problems[0]["error"], "invalid_data");
    assert!(
        problems[0]["message"].as_str().unwrap().contains("thing1"),
        "{preview}"
    );
    let samples = preview["samples"].as_array().unwrap();
    assert_eq!(
        samples.len(),
        1,
        "only sendable data is a sample: {preview}"
    );
    assert_eq!(samples[0]["data"]["thing1"]["value"], "Riverside");

    // Whatever creation refuses, the preview refuses the same way.
    let mut literal = body(json!([{"openid": "o-ok", "vars": {"store": "x"}}]));
    literal["data"]["thing1"]["value"] = json!("a literal value well over twenty characters");
    let (status, err) = app.preview(&literal).await;
    assert_eq!((status, err["error"].clone()), (422, json!("invalid_data")));
    let (status, created) = {
        let resp = app.create_campaign(&literal).await;
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    };
    assert_eq!(
        (status, created["error"].clone()),
        (422, json!("invalid_data"))
    );
    let mut cron = template_campaign(json!({"type": "all"}));
    cron["schedule"] = json!({"type": "cron", "cron": "0 * * * *"});
    let (status, err) = app.preview(&cron).await;
    assert_eq!((status, err["error"].clone()), (422, json!("invalid_cron")));
    let mut elsewhere = template_campaign(json!({"type": "all"}));
    elsewhere["appid"] = json!("wxnobodyhere");
    assert_eq!(app.preview(&elsewhere).await.0, 404);
    assert_eq!(app.count("select count(*) from campaigns").await, 0);
}

#[sqlx::test]
async fn a_preview_starts_after_quiet_hours_and_counts_users_the_cap_holds_back(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let now = Utc::now();
    let start = (now - chrono::Duration::hours(1))
        .format("%H:%M")
        .to_string();
    let end_at = (now + chrono::Duration::hours(1))
        .with_second(0)
        .unwrap()
        .with_nanosecond(0)
        .unwrap();
    app.configure(json!({
        "quiet_hours": {"start": start, "end": end_at.format("%H:%M").to_string(), "timezone": "Etc/UTC"},
        "frequency_cap": {"max": 1, "per_secs": 86_400}
    }))
    .await;
    app.user_with_formids("o-1", 2).await;
    app.user_with_formids("o-2", 1).await;
    // o-1 had a message today: the cap of 1 holds it back.
    app.accepted(
        &crate::common::As::Admin,
        &json!({"openid": "o-1", "kind": "template", "template_id": "TPL_ORDER",
                "data": {"keyword1": {"value": "order shipped"}}}),
    )
    .await;
    app.run_scheduler().await;
    assert_eq!(app.delivered_to("o-1").await, 1);
    let body = template_campaign(json!({"type": "all"}));
    let (_, preview) = app.preview(&body).await;
    assert_eq!(time(&preview["first_run_at"]), end_at, "{preview}");
    assert_eq!(
        (preview["reachable"].clone(), preview["capped"].clone()),
        (json!(2), json!(1)),
        "{preview}"
    );
    let mut ignoring = body.clone();
    ignoring["ignore_quiet_hours"] = json!(true);
    let (_, preview) = app.preview(&ignoring).await;
    assert!(time(&preview["first_run_at"]) < end_at - chrono::Duration::minutes(30));
}

// ---- test sends ---------------------------------------------------------------------

#[sqlx::test]
async fn a_test_send_reaches_the_named_users_outside_the_campaigns_runs_and_totals(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.user_with_formids("o-a", 1).await;
    app.user_with_formids("o-tester", 3).await;
    app.login("o-none").await;
    let mut body = greeting(&[("o-a", "Ann")]);
    // New Year's morning: no run for a long while.
    body["schedule"] = json!({"type": "cron", "cron": "0 0 9 1 1 *"});
    let id = app.start_campaign(body).await;

    let (status, answer) = app
        .test_send(&id, json!(["o-a", "o-tester", "o-none", "o-ghost"]))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["results"],
        json!([
            {"openid": "o-a", "status": "sent", "errcode": 0, "errmsg": "ok"},
            {"openid": "o-tester", "status": "sent", "errcode": 0, "errmsg": "ok"},
            {"openid": "o-none", "status": "no_formid", "errcode": null, "errmsg": null},
            {"openid": "o-ghost", "status": "no_formid", "errcode": null, "errmsg": null}
        ])
    );
    // Each as the campaign would send it: the audience's vars, placeholders without one kept.
    let to_a = app.wechat.messages_to(APPID, "o-a");
    assert_eq!(to_a[0].data["keyword1"]["value"], "Hi Ann");
    assert_eq!(to_a[0].template_id, "TPL_ORDER");
    let to_tester = app.wechat.messages_to(APPID, "o-tester");
    assert_eq!(to_tester[0].data["keyword1"]["value"], "Hi {{nickname}}");
    assert_eq!(app.stats().await["consumed"], 2, "their formIds are spent");

    // Outside the campaign: no run, no delivery, nothing in its totals.
    let campaign = app.campaign_in(&id, "scheduled").await;
    assert_eq!(campaign["totals"]["targeted"], 0, "{campaign}");
    assert_eq!(campaign["totals"]["sent"], 0);
    assert_eq!(app.runs(&id).await["items"], json!([]));
    assert_eq!(app.deliveries(&id, "").await["items"], json!([]));

    // WeChat refuses a formId: the next one is tried, as in a run.
    app.wechat
        .fail_next(Api::TemplateSend, Fault::Errcode(41028), 1);
    let (_, answer) = app.test_send(&id, json!(["o-tester"])).await;
    assert_eq!(answer["results"][0]["status"], "sent", "{answer}");
    assert_eq!(app.stats().await["invalid"], 1);
    assert_eq!(app.delivered_to("o-tester").await, 2);
    // A campaign-level refusal fails the test send and gives the formId back.
    app.user_with_formids("o-b", 1).await;
    app.wechat
        .fail_next(Api::TemplateSend, Fault::Errcode(40037), 1);
    let (_, answer) = app.test_send(&id, json!(["o-b"])).await;
    assert_eq!(
        (
            answer["results"][0]["status"].clone(),
            answer["results"][0]["errcode"].clone()
        ),
        (json!("failed"), json!(40037)),
        "{answer}"
    );
    assert_eq!(
        app.stats().await["valid_formids"],
        1,
        "o-b keeps its formId"
    );
    assert_eq!(
        app.campaign_in(&id, "scheduled").await["last_error"],
        Value::Null
    );
}

#[sqlx::test]
async fn a_test_send_takes_one_to_ten_distinct_users_of_an_existing_campaign(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let id = app
        .start_campaign(template_campaign(json!({"type": "all"})))
        .await;
    let eleven: Vec<String> = (0..11).map(|i| format!("o-{i}")).collect();
    for bad in [json!([]), json!(eleven), json!(["o-1", "o-1"])] {
        let (status, err) = app.test_send(&id, bad.clone()).await;
        assert_eq!(
            (status, err["error"].clone()),
            (422, json!("invalid_openids")),
            "{bad}"
        );
    }
    let (status, err) = app.test_send(&id, json!("o-1")).await;
    assert_eq!((status, err["error"].clone()), (422, json!("invalid_body")));
    let (status, _) = app
        .test_send("7a1c1f7e-2a43-4d1e-9a3c-1f0e7f0b6a11", json!(["o-1"]))
        .await;
    assert_eq!(status, 404);
    let key = app.key(&["send", "read"]).await;
    let resp = app
        .call(
            &key,
            reqwest::Method::POST,
            &format!("/v1/campaigns/{id}/test"),
            Some(&json!({"openids": ["o-1"]})),
        )
        .await;
    assert_eq!(resp.status(), 403);
}

// ---- frequency cap ------------------------------------------------------------------

#[sqlx::test]
async fn the_cap_counts_messages_across_campaigns_and_triggered_messages(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.configure(json!({"frequency_cap": {"max": 2, "per_secs": 86_400}}))
        .await;
    let view = app.admin_get(&format!("/v1/apps/{APPID}")).await;
    assert_eq!(view["frequency_cap"], json!({"max": 2, "per_secs": 86_400}));
    app.user_with_formids("o-1", 5).await;
    app.user_with_formids("o-2", 5).await;
    let order = json!({"openid": "o-1", "kind": "template", "template_id": "TPL_ORDER",
                       "data": {"keyword1": {"value": "order shipped"}}});
    let admin = crate::common::As::Admin;

    // o-1: a triggered message, then campaign A: 2 in the window.
    app.accepted(&admin, &order).await;
    app.run_scheduler().await;
    let (a, _) = app
        .run_campaign(template_campaign(openids(&["o-1", "o-2"])), "completed")
        .await;
    assert_eq!(app.campaign(&a).await["totals"]["sent"], 2);
    // Campaign B: o-1 is at the cap and ends capped, its formId unspent; o-2 has 1.
    let formids_before = app.stats().await["valid_formids"].clone();
    let (b, done) = app
        .run_campaign(template_campaign(openids(&["o-1", "o-2"])), "completed")
        .await;
    assert_eq!(
        (
            done["totals"]["sent"].clone(),
            done["totals"]["capped"].clone()
        ),
        (json!(1), json!(1)),
        "{done}"
    );
    assert_eq!(done["totals"]["targeted"], 2);
    assert_eq!(
        app.stats().await["valid_formids"],
        json!(formids_before.as_i64().unwrap() - 1),
        "only o-2's formId was spent"
    );
    let capped = app.deliveries(&b, "status=capped").await;
    assert_eq!(capped["items"].as_array().unwrap().len(), 1, "{capped}");
    assert_eq!(capped["items"][0]["openid"], "o-1");
    assert_eq!(capped["items"][0]["form_id"], Value::Null);
    assert_eq!(app.runs(&b).await["items"][0]["totals"]["capped"], 1);

    // A triggered message is never capped, but counts: o-1 now has 3, o-2 still 2.
    app.accepted(&admin, &order).await;
    app.run_scheduler().await;
    assert_eq!(app.delivered_to("o-1").await, 3);
    let (_, preview) = app
        .preview(&template_campaign(openids(&["o-1", "o-2"])))
        .await;
    assert_eq!(preview["capped"], 2, "{preview}");
    let (_, done) = app
        .run_campaign(template_campaign(openids(&["o-1", "o-2"])), "completed")
        .await;
    assert_eq!(done["totals"]["capped"], 2, "{done}");
    assert_eq!(app.delivered_to("o-1").await, 3);
    assert_eq!(app.delivered_to("o-2").await, 2);
    // Counted by the process every test of this binary shares: at least these three.
    assert!(
        app.capped_in_metrics().await >= 3.0,
        "formpush_sends_total outcome capped"
    );

    // Without a cap, campaigns go out again.
    app.configure(json!({"frequency_cap": null})).await;
    let view = app.admin_get(&format!("/v1/apps/{APPID}")).await;
    assert_eq!(view["frequency_cap"], Value::Null);
    let (_, done) = app
        .run_campaign(template_campaign(openids(&["o-1", "o-2"])), "completed")
        .await;
    assert_eq!(done["totals"]["sent"], 2, "{done}");
}

#[sqlx::test]
async fn the_window_rolls_and_sends_that_did_not_reach_the_user_do_not_count(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.configure(json!({"frequency_cap": {"max": 1, "per_secs": 3600}}))
        .await;
    app.user_with_formids("o-1", 4).await;
    // WeChat refuses the first send (bad openid): the user received nothing.
    app.wechat
        .fail_next(Api::TemplateSend, Fault::Errcode(40003), 1);
    let (_, done) = app
        .run_campaign(template_campaign(openids(&["o-1"])), "completed")
        .await;
    assert_eq!(done["totals"]["failed"], 1, "{done}");
    let (_, done) = app
        .run_campaign(template_campaign(openids(&["o-1"])), "completed")
        .await;
    assert_eq!(
        done["totals"]["sent"], 1,
        "the refused send did not count: {done}"
    );
    let (_, done) = app
        .run_campaign(template_campaign(openids(&["o-1"])), "completed")
        .await;
    assert_eq!(done["totals"]["capped"], 1, "{done}");
    // An hour and a minute later (the stored sends moved back instead of waiting), the
    // message has left the window.
    sqlx::query(
        "update user_sends set recent = array(select t - interval '61 minutes' from unnest(recent) t)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let (_, done) = app
        .run_campaign(template_campaign(openids(&["o-1"])), "completed")
        .await;
    assert_eq!(done["totals"]["sent"], 1, "{done}");
    assert_eq!(app.delivered_to("o-1").await, 2);
}

#[sqlx::test]
async fn two_instances_sending_two_campaigns_under_a_cap_of_one_reach_each_user_once(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let extra = [REAL_CLOCK, ("FORMPUSH_SEND_CONCURRENCY", "16")];
    let app = spawn_app_with(db.clone(), Default::default(), &extra).await;
    app.configure(json!({"frequency_cap": {"max": 1, "per_secs": 86_400}}))
        .await;
    app.import_users((0..200).map(|i| format!("m-{i}")), 2)
        .await;
    let other = start_instance(&db, &app.sandbox_url(), &extra).await;
    let first = app
        .start_campaign(template_campaign(json!({"type": "all"})))
        .await;
    let second = app
        .start_campaign(template_campaign(json!({"type": "all"})))
        .await;
    let a = app.wait_for_status(&first, "completed").await;
    let b = app.wait_for_status(&second, "completed").await;
    let sent = a["totals"]["sent"].as_i64().unwrap() + b["totals"]["sent"].as_i64().unwrap();
    let capped = a["totals"]["capped"].as_i64().unwrap() + b["totals"]["capped"].as_i64().unwrap();
    assert_eq!((sent, capped), (200, 200), "{a}\n{b}");
    assert_each_user_reached_once(&app.wechat, 200);
    other.stop().await;
}

#[sqlx::test]
async fn concurrent_claims_of_two_runs_never_exceed_a_cap_of_one(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    use formpush::domain::campaign::{CampaignKind, FormidPick};
    use formpush::store::deliveries::{claim_batch, RunClaim};

    // The claim statements themselves, racing: the app lease keeps one sender per app, so
    // the service alone rarely claims for one app twice at once.
    let app = spawn_app(db).await;
    app.configure(json!({"frequency_cap": {"max": 1, "per_secs": 86_400}}))
        .await;
    app.import_users((0..300).map(|i| format!("r-{i}")), 2)
        .await;
    for _ in 0..2 {
        app.start_campaign(template_campaign(json!({"type": "all"})))
            .await;
    }
    let started = formpush::store::runs::start_due_runs(&app.pool, Utc::now(), 10_000)
        .await
        .unwrap();
    assert_eq!(started.len(), 2);
    let claims = started.into_iter().map(|(run_id, _)| {
        let pool = app.pool.clone();
        tokio::spawn(async move {
            let claim = RunClaim {
                appid: APPID,
                run_id,
                kind: CampaignKind::Template,
                template_id: "TPL_ORDER",
                formid_pick: FormidPick::Freshest,
                lease_secs: 60.0,
            };
            let mut after = 0;
            let mut claimed = Vec::new();
            loop {
                let batch = claim_batch(&pool, &claim, 7, after).await.unwrap();
                let Some(last) = batch.iter().map(|d| d.id).max() else {
                    return claimed;
                };
                after = last;
                claimed.extend(batch);
            }
        })
    });
    let mut sending = std::collections::HashMap::<i64, usize>::new();
    let mut capped = 0;
    for claim in claims {
        for d in claim.await.unwrap() {
            match d.status.as_str() {
                "sending" => *sending.entry(d.user_id).or_default() += 1,
                "capped" => capped += 1,
                other => panic!("unexpected {other}"),
            }
        }
    }
    assert_eq!(sending.len(), 300, "every user claimed once");
    assert!(sending.values().all(|n| *n == 1), "a user claimed twice");
    assert_eq!(capped, 300);
    assert_eq!(
        app.stats().await["valid_formids"],
        300,
        "capped users keep their formIds"
    );
}

// ---- quiet hours --------------------------------------------------------------------

#[sqlx::test]
async fn a_run_with_deliveries_left_when_quiet_hours_begin_holds_them_until_the_end(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.configure(nights()).await;
    for i in 0..5 {
        app.user_with_formids(&format!("o-{i}"), 1).await;
    }
    // WeChat's daily quota stops the run after two messages in the evening.
    app.wechat.set_daily_quota(APPID, 2);
    let day = later_day();
    let id = app
        .start_campaign(template_campaign(json!({"type": "all"})))
        .await;
    app.run_scheduler_at(shanghai(day, 21, 0)).await;
    app.campaign_in(&id, "paused").await;
    assert_eq!(app.wechat.message_count(), 2);

    // After midnight the quota is back, but it is night: the run holds, the campaign runs.
    app.wechat.reset_daily_counts();
    app.wechat.set_daily_quota(APPID, 100);
    let next = day + Days::new(1);
    app.run_scheduler_at(shanghai(next, 0, 30)).await;
    let held = app.campaign_in(&id, "running").await;
    assert_eq!(app.wechat.message_count(), 2);
    assert_eq!(held["totals"]["pending"], 3, "{held}");
    let morning = shanghai(next, 8, 0);
    assert_eq!(time(&held["held_until"]), morning, "{held}");
    let run = &app.runs(&id).await["items"][0];
    assert_eq!(time(&run["held_until"]), morning, "{run}");
    assert_eq!(run["status"], "running");
    assert_eq!(
        app.deliveries(&id, "status=pending").await["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    app.run_scheduler_at(shanghai(next, 7, 59)).await;
    assert_eq!(app.wechat.message_count(), 2);

    // 08:00: the rest goes out.
    app.run_scheduler_at(morning).await;
    let done = app.campaign_in(&id, "completed").await;
    assert_eq!(done["totals"]["sent"], 5, "{done}");
    assert_eq!(done["held_until"], Value::Null);
    assert_eq!(app.runs(&id).await["items"][0]["held_until"], Value::Null);
}

#[sqlx::test]
async fn a_cron_firing_inside_quiet_hours_waits_for_their_end(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.configure(nights()).await;
    app.user_with_formids("o-1", 2).await;
    let mut body = template_campaign(json!({"type": "all"}));
    body["schedule"] = json!({"type": "cron", "cron": "0 0 3 * * *", "timezone": "Asia/Shanghai"});
    let id = app.start_campaign(body).await;
    let firing = time(&app.campaign(&id).await["next_run_at"]);
    let day = firing.with_timezone(&Shanghai).date_naive();
    let morning = shanghai(day, 8, 0);

    // 03:00: no run yet; it waits for 08:00.
    assert_eq!(app.run_scheduler_at(firing).await, 0);
    let waiting = app.campaign_in(&id, "scheduled").await;
    assert_eq!(time(&waiting["held_until"]), morning, "{waiting}");
    assert_eq!(app.runs(&id).await["items"], json!([]));
    assert_eq!(app.run_scheduler_at(shanghai(day, 7, 59)).await, 0);

    // 08:00: the firing's run starts and sends; the next firing is tomorrow's 03:00.
    assert_eq!(app.run_scheduler_at(morning).await, 1);
    let after = app.campaign_in(&id, "scheduled").await;
    assert_eq!(after["totals"]["sent"], 1, "{after}");
    assert_eq!(after["held_until"], Value::Null);
    assert_eq!(
        time(&after["next_run_at"]),
        firing + chrono::Duration::days(1)
    );

    // Quiet hours removed while a firing waits: it goes at once.
    let second = firing + chrono::Duration::days(1);
    assert_eq!(app.run_scheduler_at(second).await, 0);
    assert!(!app.campaign(&id).await["held_until"].is_null());
    app.configure(json!({"quiet_hours": null})).await;
    assert_eq!(app.run_scheduler_at(second).await, 1);
    assert_eq!(app.campaign(&id).await["totals"]["sent"], 2);
}

#[sqlx::test]
async fn a_campaign_that_ignores_quiet_hours_sends_inside_them(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.configure(nights()).await;
    app.user_with_formids("o-1", 1).await;
    app.user_with_formids("o-2", 1).await;
    let mut urgent = template_campaign(openids(&["o-1"]));
    urgent["ignore_quiet_hours"] = json!(true);
    let urgent = app.start_campaign(urgent).await;
    let routine = app
        .start_campaign(template_campaign(openids(&["o-2"])))
        .await;
    let night = shanghai(later_day(), 23, 0);
    app.run_scheduler_at(night).await;
    let done = app.campaign_in(&urgent, "completed").await;
    assert_eq!(done["ignore_quiet_hours"], true);
    assert_eq!(done["totals"]["sent"], 1);
    let held = app.campaign_in(&routine, "running").await;
    assert_eq!(held["ignore_quiet_hours"], false);
    assert_eq!(held["totals"]["pending"], 1, "{held}");
    assert_eq!(app.delivered_to("o-2").await, 0);
}

#[sqlx::test]
async fn triggered_messages_ignore_quiet_hours_and_the_cap_but_count_toward_it(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.configure(json!({
        "quiet_hours": {"start": "22:00", "end": "08:00", "timezone": "Asia/Shanghai"},
        "frequency_cap": {"max": 1, "per_secs": 86_400}
    }))
    .await;
    app.grant("o-1", "TPL_M", 2).await;
    app.user_with_formids("o-1", 1).await;
    let night = shanghai(later_day(), 23, 30);
    let admin = crate::common::As::Admin;
    for _ in 0..2 {
        app.accepted(&admin, &subscribe_message("o-1")).await;
        app.run_scheduler_at(night).await;
    }
    assert_eq!(
        app.delivered_to("o-1").await,
        2,
        "at night, and over the cap"
    );
    // A campaign that ignores quiet hours still meets the cap the messages filled.
    let mut body = template_campaign(openids(&["o-1"]));
    body["ignore_quiet_hours"] = json!(true);
    let id = app.start_campaign(body).await;
    app.run_scheduler_at(night).await;
    let done = app.campaign_in(&id, "completed").await;
    assert_eq!(done["totals"]["capped"], 1, "{done}");
    assert_eq!(app.delivered_to("o-1").await, 2);
}

// ---- settings -----------------------------------------------------------------------

#[sqlx::test]
async fn cap_and_quiet_hours_are_checked_shown_and_removed(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let put = |settings: Value| {
        let mut body = json!({ "secret": SECRET });
        for (k, v) in settings.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let refused = [
        (
            json!({"frequency_cap": {"max": 0, "per_secs": 60}}),
            "invalid_frequency_cap",
        ),
        (
            json!({"frequency_cap": {"max": 101, "per_secs": 60}}),
            "invalid_frequency_cap",
        ),
        (
            json!({"frequency_cap": {"max": 1, "per_secs": 2_592_001}}),
            "invalid_frequency_cap",
        ),
        (json!({"frequency_cap": {"max": 1}}), "invalid_body"),
        (
            json!({"frequency_cap": {"max": 1, "per_secs": 60, "burst": 2}}),
            "invalid_body",
        ),
        (
            json!({"quiet_hours": {"start": "22:00", "end": "22:00", "timezone": "Asia/Shanghai"}}),
            "invalid_quiet_hours",
        ),
        (
            json!({"quiet_hours": {"start": "25:00", "end": "08:00", "timezone": "Asia/Shanghai"}}),
            "invalid_quiet_hours",
        ),
        (
            json!({"quiet_hours": {"start": "9:00", "end": "08:00", "timezone": "Asia/Shanghai"}}),
            "invalid_quiet_hours",
        ),
        (
            json!({"quiet_hours": {"start": "22:00", "end": "08:00", "timezone": "Mars/Olympus"}}),
            "invalid_quiet_hours",
        ),
    ];
    for (settings, code) in refused {
        let resp = app.put_app(APPID, &put(settings.clone())).await;
        let status = resp.status().as_u16();
        let err: Value = resp.json().await.unwrap();
        assert_eq!(
            (status, err["error"].clone()),
            (422, json!(code)),
            "{settings}"
        );
    }
    let view = app.admin_get(&format!("/v1/apps/{APPID}")).await;
    assert_eq!(
        (view["frequency_cap"].clone(), view["quiet_hours"].clone()),
        (Value::Null, Value::Null)
    );

    app.configure(json!({
        "frequency_cap": {"max": 3.0, "per_secs": 604_800},
        "quiet_hours": {"start": "21:30", "end": "07:45", "timezone": "Europe/Berlin"}
    }))
    .await;
    // Left out: kept.
    app.configure(json!({"send_rate_per_sec": 100})).await;
    let view = app.admin_get(&format!("/v1/apps/{APPID}")).await;
    assert_eq!(
        view["frequency_cap"],
        json!({"max": 3, "per_secs": 604_800})
    );
    assert_eq!(
        view["quiet_hours"],
        json!({"start": "21:30", "end": "07:45", "timezone": "Europe/Berlin"})
    );
    let listed = app.admin_get("/v1/apps").await;
    assert_eq!(
        listed["items"][0]["quiet_hours"]["timezone"],
        "Europe/Berlin"
    );
    // null: removed.
    app.configure(json!({"frequency_cap": null, "quiet_hours": null}))
        .await;
    let view = app.admin_get(&format!("/v1/apps/{APPID}")).await;
    assert_eq!(
        (view["frequency_cap"].clone(), view["quiet_hours"].clone()),
        (Value::Null, Value::Null)
    );
}
