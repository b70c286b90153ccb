use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{spawn_app, start_instance, APPID, NO_SCHEDULER};

#[sqlx::test]
async fn a_wx_login_code_becomes_a_session_for_that_openid(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let code = app.wechat.login_code(APPID, "o-alice");
    let resp = app.post_session(APPID, &json!({ "code": code })).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["openid"], "o-alice");
    assert!(body["token"].as_str().unwrap().len() > 20);
    let expires =
        chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap()).unwrap();
    let days = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours();
    assert!((167..=168).contains(&days), "valid 7 days, got {days} h");
    assert!(!body.to_string().contains("session_key"));
    assert_eq!(app.stats().await["users"], 1);
}

#[sqlx::test]
async fn a_code_wechat_rejects_is_401_invalid_code(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let code = app.wechat.login_code(APPID, "o-bob");
    assert_eq!(
        app.post_session(APPID, &json!({ "code": code }))
            .await
            .status(),
        200
    );
    // Single use: WeChat answers 40163 the second time.
    let resp = app.post_session(APPID, &json!({ "code": code })).await;
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_code");
    // Never issued: 40029.
    let resp = app.post_session(APPID, &json!({ "code": "made-up" })).await;
    assert_eq!(resp.status(), 401);
}

#[sqlx::test]
async fn bad_session_requests_are_refused(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    assert_eq!(
        app.post_session("wxunknown", &json!({"code": "x"}))
            .await
            .status(),
        404
    );
    assert_eq!(
        app.post_session(APPID, &json!({"code": ""})).await.status(),
        422
    );
    assert_eq!(app.post_session(APPID, &json!({})).await.status(), 422);
    assert_eq!(app.stats().await["users"], 0);
}

#[sqlx::test]
async fn a_session_is_valid_on_another_instance_and_only_for_its_app(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db.clone()).await;
    let token = app.login("o-carol").await;
    let other = start_instance(&db, &app.sandbox_url(), &[NO_SCHEDULER]).await;
    let form_id = app.wechat.form_id(APPID, "o-carol");
    let resp = app
        .http
        .post(format!("{}/v1/apps/{APPID}/formids", other.address))
        .bearer_auth(&token)
        .json(&json!({ "form_id": form_id }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the token works on a second instance");
    app.put_app("wxother", &json!({"secret": "x"})).await;
    let resp = app
        .http
        .post(format!("{}/v1/apps/wxother/formids", app.address))
        .bearer_auth(&token)
        .json(&json!({ "form_id": app.wechat.form_id(APPID, "o-carol") }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "bound to its app");
    let resp = app
        .post_formids(&format!("{token}x"), &json!({"form_id": "1"}))
        .await;
    assert_eq!(resp.status(), 401, "tampered");
    other.stop().await;
}

#[sqlx::test]
async fn logins_are_rate_limited_per_client_address(_: PgPoolOptions, db: PgConnectOptions) {
    let app = crate::common::spawn_app_with(
        db,
        Default::default(),
        &[("FORMPUSH_SESSION_RATE_PER_MIN", "2")],
    )
    .await;
    for _ in 0..2 {
        let code = app.wechat.login_code(APPID, "o-many");
        assert_eq!(
            app.post_session(APPID, &json!({ "code": code }))
                .await
                .status(),
            200
        );
    }
    let code = app.wechat.login_code(APPID, "o-many");
    let resp = app.post_session(APPID, &json!({ "code": code })).await;
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
}
