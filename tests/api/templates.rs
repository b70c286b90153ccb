//! Subscribe templates: synced from WeChat, listed, and their keyword rules applied to
//! campaign data at creation and to each user's rendered data before a grant is spent.
//! The scheduler is stepped by hand (`FORMPUSH_SCHEDULER=manual`).

use formpush_sandbox::{Api, Fault, MessageKind, SandboxConfig, SubscribeTemplate};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{spawn_app, spawn_app_with, start_instance, TestApp, APPID};

/// The meeting template of WeChat's documentation, with an enum keyword.
const MEETING: &str = "TPL_MEETING_0000000000000000000000000000000";
const WASHER: &str = "TPL_WASHER_00000000000000000000000000000000";

/// What these tests ask of formpush beyond `TestApp`'s own calls.
trait Templates {
    async fn sync(&self) -> (u16, Value);
    async fn templates(&self) -> Value;
    async fn create(&self, body: &Value) -> (u16, Value);
    async fn send_campaign(&self, body: &Value) -> Value;
    async fn grants(&self, openid: &str, template: &str) -> i32;
}

impl Templates for TestApp {
    async fn sync(&self) -> (u16, Value) {
        let resp = self
            .admin(
                reqwest::Method::POST,
                &format!("/v1/apps/{APPID}/templates:sync"),
            )
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    async fn templates(&self) -> Value {
        self.admin_get(&format!("/v1/apps/{APPID}/templates")).await
    }

    async fn create(&self, body: &Value) -> (u16, Value) {
        let resp = self.create_campaign(body).await;
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    /// Creates a campaign to send now, sends it to the end, and returns it.
    async fn send_campaign(&self, body: &Value) -> Value {
        let id = self.start_campaign(body.clone()).await;
        self.run_scheduler().await;
        self.campaign(&id).await
    }

    /// formpush's count of the user's grants for the template.
    async fn grants(&self, openid: &str, template: &str) -> i32 {
        sqlx::query_scalar(
            "select g.remaining from subscription_grants g join users u on u.id = g.user_id
             where u.appid = $1 and u.openid = $2 and g.template_id = $3",
        )
        .bind(APPID)
        .bind(openid)
        .bind(template)
        .fetch_optional(&self.pool)
        .await
        .unwrap()
        .unwrap_or(0)
    }
}

fn meeting() -> SubscribeTemplate {
    serde_json::from_value(json!({
        "priTmplId": MEETING, "title": "会议提醒", "type": 2,
        "content": "会议地点:{{thing1.DATA}}\n会议时间:{{time2.DATA}}\n房间类型:{{enum_string3.DATA}}\n",
        "example": "会议地点:TIT会议室\n会议时间:15:01\n房间类型:大会议室\n",
        "keywordEnumValueList": [{"keywordCode": "enum_string3.DATA", "enumValueList": ["大会议室", "小会议室"]}]
    }))
    .unwrap()
}

fn washer() -> SubscribeTemplate {
    serde_json::from_value(json!({
        "priTmplId": WASHER, "title": "洗衣机故障提醒", "type": 3,
        "content": "完成时间:{{time1.DATA}}\n所在位置:{{phrase2.DATA}}\n",
        "example": "完成时间:15:01\n所在位置:客厅\n"
    }))
    .unwrap()
}

/// A subscribe campaign on the meeting template to these users (each with a `room` var).
fn meeting_campaign(users: &[(&str, &str)]) -> Value {
    let users: Vec<Value> = users
        .iter()
        .map(|(openid, room)| json!({"openid": openid, "vars": {"room": room}}))
        .collect();
    json!({
        "appid": APPID, "name": "meeting", "kind": "subscribe", "template_id": MEETING,
        "data": {"thing1": {"value": "{{room}}"}, "time2": {"value": "{{datetime}}"},
                 "enum_string3": {"value": "大会议室"}},
        "audience": {"type": "users", "users": users}, "schedule": {"type": "now"}
    })
}

#[sqlx::test]
async fn a_sync_stores_what_wechat_lists_and_forgets_deleted_templates(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    assert_eq!(app.templates().await["items"], json!([]), "never synced");
    app.wechat.add_template(APPID, meeting());
    app.wechat.add_template(APPID, washer());

    let (status, synced) = app.sync().await;
    assert_eq!(status, 200, "{synced}");
    let items = synced["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    // By title: 会议提醒 sorts before 洗衣机故障提醒.
    assert_eq!(items[0]["template_id"], MEETING);
    assert_eq!(items[0]["title"], "会议提醒");
    assert_eq!(items[0]["type"], 2);
    assert_eq!(
        items[0]["example"],
        "会议地点:TIT会议室\n会议时间:15:01\n房间类型:大会议室\n"
    );
    assert_eq!(
        items[0]["keywords"],
        json!([
            {"key": "thing1", "label": "会议地点", "rule": "thing"},
            {"key": "time2", "label": "会议时间", "rule": "time"},
            {"key": "enum_string3", "label": "房间类型", "rule": "enum", "values": ["大会议室", "小会议室"]}
        ])
    );
    assert_eq!(items[1]["type"], 3);
    assert!(items[0]["synced_at"].is_string());
    assert_eq!(app.templates().await, synced);

    // Deleted in the WeChat console: gone at the next sync.
    assert!(app.wechat.remove_template(APPID, WASHER));
    let (status, synced) = app.sync().await;
    assert_eq!(status, 200);
    assert_eq!(synced["items"].as_array().unwrap().len(), 1);
    assert_eq!(app.templates().await["items"][0]["template_id"], MEETING);

    let unknown = app
        .admin(reqwest::Method::POST, "/v1/apps/wxnobody/templates:sync")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let unknown = app
        .admin(reqwest::Method::GET, "/v1/apps/wxnobody/templates")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[sqlx::test]
async fn a_sync_replaces_a_stale_token_and_reports_wechat_refusals(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.wechat.add_template(APPID, meeting());
    assert_eq!(app.sync().await.0, 200);
    let calls = app.wechat.token_calls(APPID);
    // WeChat expires the token formpush has cached: 42001, a new token, the same sync.
    app.wechat.expire_tokens(APPID);
    let (status, synced) = app.sync().await;
    assert_eq!(status, 200, "{synced}");
    assert_eq!(synced["items"].as_array().unwrap().len(), 1);
    assert_eq!(app.wechat.token_calls(APPID), calls + 1);

    // Busy once: tried again. Not authorised (48001): 502, and the stored list stays.
    app.wechat
        .fail_next(Api::GetTemplate, Fault::Errcode(-1), 1);
    assert_eq!(app.sync().await.0, 200);
    app.wechat
        .fail_next(Api::GetTemplate, Fault::Errcode(48001), 1);
    let (status, body) = app.sync().await;
    assert_eq!(status, 502);
    assert_eq!(body["error"], "wechat_failed");
    assert!(
        body["message"].as_str().unwrap().contains("48001"),
        "{body}"
    );
    assert_eq!(app.templates().await["items"][0]["template_id"], MEETING);
}

#[sqlx::test]
async fn the_daily_sync_refreshes_synced_apps_on_one_instance(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db.clone()).await;
    let second = start_instance(&db, &app.sandbox_url(), &[]).await;
    // Not synced yet: the daily job leaves the app alone.
    assert_eq!(app.scheduler().sync_templates().await.unwrap(), 0);
    app.wechat.add_template(APPID, meeting());
    assert_eq!(app.sync().await.0, 200);

    // A day later the washer template was added and the meeting one deleted.
    app.wechat.add_template(APPID, washer());
    app.wechat.remove_template(APPID, MEETING);
    sqlx::query("update template_syncs set claimed_at = now() - interval '1 day'")
        .execute(&app.pool)
        .await
        .unwrap();
    // Both instances fire the job; one of them syncs the app.
    let (a, b) = tokio::join!(
        app.scheduler().sync_templates(),
        second.scheduler().sync_templates()
    );
    assert_eq!(a.unwrap() + b.unwrap(), 1);
    let items = app.templates().await["items"].clone();
    assert_eq!(items.as_array().unwrap().len(), 1, "{items}");
    assert_eq!(items[0]["template_id"], WASHER);
}

#[sqlx::test]
async fn data_breaking_a_synced_template_is_refused_at_creation(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.wechat.add_template(APPID, meeting());
    assert_eq!(app.sync().await.0, 200);
    let with_data = |data: Value| {
        let mut body = meeting_campaign(&[("o1", "三楼")]);
        body["data"] = data;
        body
    };
    let cases = [
        (
            json!({"thing1": {"value": "三楼"}, "time2": {"value": "15:01"}}),
            "data.enum_string3 is missing",
        ),
        (
            json!({"thing1": {"value": "三楼"}, "time2": {"value": "15:01"},
                   "enum_string3": {"value": "大会议室"}, "keyword1": {"value": "x"}}),
            "no keyword keyword1",
        ),
        (
            json!({"thing1": {"value": "一二三四五六七八九十一二三四五六七八九十一"},
                   "time2": {"value": "15:01"}, "enum_string3": {"value": "大会议室"}}),
            "data.thing1 breaks rule thing: at most 20 characters, got 21",
        ),
        (
            json!({"thing1": {"value": "三楼"}, "time2": {"value": "3pm"},
                   "enum_string3": {"value": "大会议室"}}),
            "data.time2 breaks rule time",
        ),
        (
            json!({"thing1": {"value": "三楼"}, "time2": {"value": "15:01"},
                   "enum_string3": {"value": "礼堂"}}),
            "data.enum_string3 breaks rule enum: one of 大会议室, 小会议室",
        ),
        (
            json!({"thing1": {"value": "two\nlines"}, "time2": {"value": "15:01"},
                   "enum_string3": {"value": "大会议室"}}),
            "data.thing1 breaks rule thing: must not contain control characters",
        ),
    ];
    for (data, says) in cases {
        let (status, body) = app.create(&with_data(data.clone())).await;
        assert_eq!(status, 422, "{data} → {body}");
        assert_eq!(body["error"], "invalid_data");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(says), "{data}: {message}");
    }

    // Under truncate an over-long thing is fine (it is cut when sent); a bad time is not.
    let mut truncating = with_data(json!({"thing1": {"value": "x".repeat(30)},
        "time2": {"value": "15:01"}, "enum_string3": {"value": "大会议室"}}));
    truncating["data_policy"] = json!("truncate");
    let (status, created) = app.create(&truncating).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["data_policy"], "truncate");
    truncating["data"]["time2"] = json!({"value": "3pm"});
    assert_eq!(app.create(&truncating).await.0, 422);

    // Placeholders are checked per user later; a template never synced is not checked.
    assert_eq!(app.create(&meeting_campaign(&[("o1", "x")])).await.0, 201);
    let mut unsynced = with_data(json!({"thing1": {"value": "x".repeat(30)}}));
    unsynced["template_id"] = json!("TPL_NEVER_SYNCED");
    let (status, created) = app.create(&unsynced).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["data_policy"], "reject");

    let mut template_kind = with_data(json!({"keyword1": {"value": "x"}}));
    template_kind["kind"] = json!("template");
    template_kind["data_policy"] = json!("truncate");
    let (status, body) = app.create(&template_kind).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("invalid_field"))
    );
}

#[sqlx::test]
async fn a_user_whose_rendered_data_breaks_a_rule_fails_invalid_data_and_keeps_the_grant(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // Batches of 2, so checked and unchecked users share batches and the cursor moves.
    let app = spawn_app_with(
        db,
        SandboxConfig::default(),
        &[("FORMPUSH_SEND_CONCURRENCY", "2")],
    )
    .await;
    app.wechat.add_template(APPID, meeting());
    assert_eq!(app.sync().await.0, 200);
    let long_room = "一二三四五六七八九十一二三四五六七八九十一二三";
    let users = [
        ("m-1", "三楼大会议室"),
        ("m-2", long_room),
        ("m-3", "B2 (north)"),
        ("m-4", "room\nwith a break"),
        ("m-5", "五楼"),
    ];
    for (openid, _) in &users {
        app.grant(openid, MEETING, 1).await;
    }
    let done = app.send_campaign(&meeting_campaign(&users)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["totals"]["sent"], 3, "{done}");
    assert_eq!(done["totals"]["failed"], 2, "{done}");

    let id = done["id"].as_str().unwrap();
    let failed = app.deliveries(id, "status=failed").await;
    let mut failed: Vec<(&str, &str, &str)> = failed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["openid"].as_str().unwrap(),
                d["errcode"].as_str().unwrap(),
                d["errmsg"].as_str().unwrap(),
            )
        })
        .collect();
    failed.sort();
    assert_eq!(failed.len(), 2);
    assert_eq!(
        failed[0],
        (
            "m-2",
            "invalid_data",
            "data.thing1 breaks rule thing: at most 20 characters, got 23"
        )
    );
    assert_eq!(failed[1].0, "m-4");
    assert!(
        failed[1].2.contains("control characters"),
        "{}",
        failed[1].2
    );

    // Their grants were never spent, in formpush or at WeChat, and nothing reached them.
    for openid in ["m-2", "m-4"] {
        assert_eq!(app.grants(openid, MEETING).await, 1, "{openid}");
        assert_eq!(app.wechat.subscription_grants(APPID, openid, MEETING), 1);
        assert!(app.wechat.messages_to(APPID, openid).is_empty());
    }
    assert_eq!(app.grants("m-1", MEETING).await, 0);
    let sent = app.wechat.messages_to(APPID, "m-3");
    assert_eq!(sent[0].data["thing1"]["value"], "B2 (north)");
    assert_eq!(sent[0].data["enum_string3"]["value"], "大会议室");
    // The sandbox applies the same rules: it accepted every message formpush let through.
    assert_eq!(
        app.wechat
            .send_outcomes(MessageKind::Subscribe)
            .get("47003"),
        None
    );
}

#[sqlx::test]
async fn truncate_cuts_over_long_values_to_their_limit(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    app.wechat.add_template(APPID, meeting());
    assert_eq!(app.sync().await.0, 200);
    let long_room = "一二三四五六七八九十一二三四五六七八九十一二三";
    app.grant("t-1", MEETING, 1).await;
    app.grant("t-2", MEETING, 1).await;
    let mut body = meeting_campaign(&[("t-1", long_room), ("t-2", "break\nhere")]);
    body["data_policy"] = json!("truncate");
    let done = app.send_campaign(&body).await;
    assert_eq!(done["totals"]["sent"], 1, "{done}");
    // Cutting fixes a length, not a line break.
    assert_eq!(done["totals"]["failed"], 1, "{done}");
    let sent = app.wechat.messages_to(APPID, "t-1");
    assert_eq!(
        sent[0].data["thing1"]["value"],
        "一二三四五六七八九十".repeat(2)
    );
    assert_eq!(app.grants("t-2", MEETING).await, 1);

    // Literal values are cut too: they were accepted at creation for that.
    app.grant("t-3", MEETING, 1).await;
    let mut literal = meeting_campaign(&[("t-3", "unused")]);
    literal["data_policy"] = json!("truncate");
    literal["data"]["thing1"] = json!({"value": "x".repeat(30)});
    let done = app.send_campaign(&literal).await;
    assert_eq!(done["totals"]["sent"], 1, "{done}");
    assert_eq!(
        app.wechat.messages_to(APPID, "t-3")[0].data["thing1"]["value"],
        "x".repeat(20)
    );
}

#[sqlx::test]
async fn without_a_sync_wechat_refuses_broken_data_with_47003_and_the_campaign_stops(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    // WeChat has the template, formpush never synced it: nothing is checked before sending.
    app.wechat.add_template(APPID, meeting());
    app.grant("w-1", MEETING, 1).await;
    let long_room = "一二三四五六七八九十一二三四五六七八九十一二三";
    let done = app
        .send_campaign(&meeting_campaign(&[("w-1", long_room)]))
        .await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["last_error"]["errcode"], 47003, "{done}");
    assert_eq!(done["totals"]["sent"], 0);
    // The refused send's grant is given back.
    assert_eq!(app.grants("w-1", MEETING).await, 1);
    assert_eq!(app.wechat.subscription_grants(APPID, "w-1", MEETING), 1);

    // An enum value off the template's list is refused by WeChat too.
    app.grant("w-2", MEETING, 1).await;
    let mut off_list = meeting_campaign(&[("w-2", "三楼")]);
    off_list["data"]["enum_string3"] = json!({"value": "礼堂"});
    let done = app.send_campaign(&off_list).await;
    assert_eq!(done["last_error"]["errcode"], 47003, "{done}");
    let outcomes = app.wechat.send_outcomes(MessageKind::Subscribe);
    assert_eq!(outcomes.get("47003"), Some(&2), "{outcomes:?}");
}

#[sqlx::test]
async fn the_template_endpoints_and_data_policy_are_described_in_openapi(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let spec: Value = app
        .http
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = &spec["paths"];
    assert!(paths["/v1/apps/{appid}/templates:sync"]["post"]["responses"]["502"].is_object());
    assert!(paths["/v1/apps/{appid}/templates"]["get"].is_object());
    let schemas = &spec["components"]["schemas"];
    assert!(schemas["TemplateList"].is_object());
    assert!(schemas["KeywordView"]["properties"]["rule"].is_object());
    assert_eq!(
        schemas["DataPolicy"]["enum"],
        json!(["reject", "truncate"]),
        "{}",
        schemas["DataPolicy"]
    );
    assert!(schemas["CampaignRequest"]["properties"]["data_policy"].is_object());
    assert!(schemas["CampaignView"]["properties"]["data_policy"].is_object());
}

#[sqlx::test]
async fn triggered_messages_are_checked_like_campaigns_and_keys_with_read_list_templates(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.wechat.add_template(APPID, meeting());
    assert_eq!(app.sync().await.0, 200);
    let message = |thing: &str| {
        json!({"openid": "o-backend", "kind": "subscribe", "template_id": MEETING,
               "data": {"thing1": {"value": thing}, "time2": {"value": "15:01"},
                        "enum_string3": {"value": "大会议室"}}})
    };
    let send = |body: Value| {
        app.admin(reqwest::Method::POST, &format!("/v1/apps/{APPID}/messages"))
            .json(&body)
            .send()
    };
    // A value that breaks its keyword's rule is refused before any credit is looked at.
    let refused = send(message(&"一".repeat(21))).await.unwrap();
    assert_eq!(refused.status(), 422);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "invalid_data", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("data.thing1"),
        "{body}"
    );
    // Valid data gets past the check; this user holds no grant.
    let no_credit = send(message("三楼")).await.unwrap();
    assert_eq!(no_credit.status(), 409);
    let listed = app.admin_get(&format!("/v1/apps/{APPID}/messages")).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 0, "{listed}");

    // The template list is a `read` operation: a key with read sees it, one without not.
    for (scopes, status) in [(json!(["read"]), 200), (json!(["send"]), 403)] {
        let created: Value = app
            .admin(reqwest::Method::POST, &format!("/v1/apps/{APPID}/keys"))
            .json(&json!({"name": "backend", "scopes": scopes}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let listed = app
            .http
            .get(format!("{}/v1/apps/{APPID}/templates", app.address))
            .bearer_auth(created["key"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(listed.status(), status, "{scopes}");
    }
}
