//! Regressions from fuzzing (scripts/fuzz): hostile input is refused with a 4xx, never a
//! 5xx or a panic, and a refused request stores nothing.

use reqwest::Method;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{error_of, spawn_app, APPID, PUSH_TOKEN};

/// Postgres refuses NUL in text: a lookup by an appid holding one found "a database error"
/// (500). No app can have such an id, so it is simply not found.
#[sqlx::test]
async fn a_nul_in_an_appid_to_look_up_is_not_found(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    for path in ["/v1/apps/wx%00", "/v1/apps/%00/stats"] {
        let resp = app.admin(Method::GET, path).send().await.unwrap();
        assert_eq!(
            error_of(resp).await,
            (404, "app_not_found".into()),
            "{path}"
        );
    }
    let resp = app.post_session("wx%00", &json!({"code": "c"})).await;
    assert_eq!(error_of(resp).await, (404, "app_not_found".into()));
    let resp = app
        .admin(Method::POST, "/v1/apps/wx%00/formids:import")
        .json(&json!({"items": [{"openid": "o1", "form_id": "1".repeat(13)}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(resp).await, (404, "app_not_found".into()));
    let resp = app
        .http
        .get(format!(
            "{}/wechat/wx%00?signature=s&timestamp=1&nonce=n",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(resp).await, (404, "app_not_found".into()));
    let resp = app
        .admin(Method::GET, "/v1/campaigns?appid=wx%00")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["items"], json!([]));
    let resp = app
        .create_campaign(&json!({
            "appid": "wx\u{0}", "name": "n", "kind": "subscribe", "template_id": "T",
            "data": {"thing1": {"value": "hi"}}, "audience": {"type": "all"},
            "schedule": {"type": "now"}
        }))
        .await;
    assert_eq!(error_of(resp).await, (404, "app_not_found".into()));
}

/// Text that Postgres cannot store is refused before SQL (it was a 500), and the refused
/// request leaves nothing behind.
#[sqlx::test]
async fn a_nul_in_text_to_store_is_refused_and_nothing_is_stored(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let resp = app.put_app("wxnul", &json!({"secret": "s\u{0}"})).await;
    assert_eq!(error_of(resp).await, (422, "invalid_secret".into()));
    let resp = app
        .admin(Method::GET, "/v1/apps/wxnul")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    let users = app.count("select count(*) from users").await;
    let resp = app
        .import(&json!({"items": [
            {"openid": "o-fine", "form_id": "0123456789abcdef0123456789abcdef"},
            {"openid": "o\u{0}", "form_id": "0123456789abcdef0123456789abcdee"}
        ]}))
        .await;
    assert_eq!(error_of(resp).await, (422, "invalid_openid".into()));
    assert_eq!(app.count("select count(*) from users").await, users);
    assert_eq!(app.count("select count(*) from formids").await, 0);

    let token = app.login("o-sub").await;
    let resp = app
        .http
        .post(format!("{}/v1/apps/{APPID}/subscriptions", app.address))
        .bearer_auth(&token)
        .json(&json!({"results": {"TPL_A": "accept", "TPL\u{0}": "accept"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(resp).await, (422, "invalid_template_id".into()));
    assert_eq!(
        app.count("select count(*) from subscription_grants").await,
        0
    );

    // The audience's users used to be stored before the campaign insert failed on the NUL.
    let users = app.count("select count(*) from users").await;
    for (field, value) in [
        ("data", json!({"thing1": {"value": "hi\u{0}"}})),
        ("name", json!("a\u{0}")),
        ("template_id", json!("T\u{0}")),
    ] {
        let mut body = json!({
            "appid": APPID, "name": "n", "kind": "subscribe", "template_id": "T",
            "data": {"thing1": {"value": "hi"}},
            "audience": {"type": "openids", "openids": ["o-new-1", "o-new-2"]},
            "schedule": {"type": "now"}
        });
        body[field] = value;
        let resp = app.create_campaign(&body).await;
        assert_eq!(
            error_of(resp).await,
            (422, "invalid_text".into()),
            "{field}"
        );
    }
    assert_eq!(app.count("select count(*) from users").await, users);
    assert_eq!(app.count("select count(*) from campaigns").await, 0);
}

/// A signed push whose text Postgres cannot store: 400, not 500, and nothing recorded.
#[sqlx::test]
async fn a_signed_push_with_a_nul_is_malformed_not_a_server_error(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let now = chrono::Utc::now().timestamp().to_string();
    let url = format!(
        "{}/wechat/{APPID}?signature={}&timestamp={now}&nonce=n",
        app.address,
        formpush::wechat::crypto::signature(&[PUSH_TOKEN, &now, "n"])
    );
    let push = json!({
        "ToUserName": "gh_1", "FromUserName": "o\u{0}", "CreateTime": 1_700_000_000,
        "MsgType": "event", "Event": "subscribe_msg_popup_event",
        "List": [{"TemplateId": "TPL", "SubscribeStatusString": "accept", "PopupScene": "0"}]
    });
    let resp = app
        .http
        .post(&url)
        .body(push.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(resp).await, (400, "invalid_text".into()));
    assert_eq!(app.count("select count(*) from push_events_seen").await, 0);
    assert_eq!(
        app.count("select count(*) from subscription_grants").await,
        0
    );
}

/// `now - timestamp` overflowed (a panic in debug builds) for a signed push dated near
/// i64::MIN; it is simply stale.
#[sqlx::test]
async fn an_absurd_push_timestamp_is_stale(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let ts = i64::MIN.to_string();
    let url = format!(
        "{}/wechat/{APPID}?signature={}&timestamp={ts}&nonce=n&echostr=e",
        app.address,
        formpush::wechat::crypto::signature(&[PUSH_TOKEN, &ts, "n"])
    );
    let resp = app.http.get(&url).send().await.unwrap();
    assert_eq!(error_of(resp).await, (403, "stale_timestamp".into()));
}

/// The URL check without `nonce` is a 400 (bad_query), which /openapi.json must document.
#[sqlx::test]
async fn a_url_check_missing_a_parameter_is_a_documented_400(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let resp = app
        .http
        .get(format!("{}/wechat/{APPID}?timestamp=1", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(resp).await, (400, "bad_query".into()));
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        doc["paths"]["/wechat/{appid}"]["get"]["responses"]["400"].is_object(),
        "400 is not documented"
    );
}

/// Postgres prints a jsonb number in full (f64::MAX as 309 digits): reading it back must
/// give the number, not a 500 on every later read of the campaign (found by scripts/fuzz).
#[sqlx::test]
async fn extreme_numbers_in_campaign_data_read_back(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let created = app
        .create_campaign(&json!({
            "appid": APPID, "name": "n", "kind": "subscribe", "template_id": "T",
            "data": {"thing1": {"value": "hi", "extra": -1.7976931348623157e308}},
            "audience": {"type": "openids", "openids": ["o-1"]},
            "schedule": {"type": "at", "at": "2099-01-01T00:00:00Z"}
        }))
        .await;
    assert_eq!(created.status(), 201);
    let resp = app
        .admin(reqwest::Method::GET, "/v1/campaigns")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let list: Value = resp.json().await.unwrap();
    assert_eq!(
        list["items"][0]["data"]["thing1"]["extra"],
        json!(-1.7976931348623157e308)
    );
}

#[sqlx::test]
async fn a_body_that_is_not_a_json_object_is_refused_and_stores_nothing(
    _: sqlx::postgres::PgPoolOptions,
    db: sqlx::postgres::PgConnectOptions,
) {
    let app = crate::common::spawn_app(db).await;
    let appid = crate::common::APPID;
    // serde would read `[[]]` as `{"items": []}`: formpush bodies are objects only.
    for (path, body) in [
        (format!("/v1/apps/{appid}/formids:import"), "[[]]"),
        ("/v1/campaigns".to_string(), "[]"),
        (
            format!("/v1/apps/{appid}/keys"),
            "[\"backend\", [\"send\"]]",
        ),
    ] {
        let resp = app
            .admin(reqwest::Method::POST, &path)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 422, "{path} {body}");
        let err: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(err["error"], "invalid_body", "{path}: {err}");
    }
    assert_eq!(app.count("select count(*) from api_keys").await, 0);
    assert_eq!(app.count("select count(*) from campaigns").await, 0);
}
