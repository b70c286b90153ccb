use reqwest::Method;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{spawn_app, template_campaign, ADMIN_TOKEN, APPID};

#[sqlx::test]
async fn put_creates_then_updates_and_get_never_shows_secrets(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    let resp = app
        .put_app(
            "wxnew",
            &json!({"secret": "s3cret-value", "token": "tok123", "encoding_aes_key": key}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let resp = app
        .put_app(
            "wxnew",
            &json!({"secret": "s3cret-other", "send_rate_per_sec": 50}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let resp = app
        .admin(Method::GET, "/v1/apps/wxnew")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    for secret in ["s3cret", "tok123", key] {
        assert!(!text.contains(secret), "{secret} leaked in {text}");
    }
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["send_rate_per_sec"], 50);
    assert_eq!(body["has_token"], true);
    assert_eq!(body["has_encoding_aes_key"], true);
    assert_eq!(body["token_api"], "stable");
    let list: Value = app
        .admin(Method::GET, "/v1/apps")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["appid"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["wxnew", crate::common::APPID]);
}

#[sqlx::test]
async fn admin_endpoints_need_the_admin_token(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let url = format!("{}/v1/apps/wxnew", app.address);
    let resp = app.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "missing_credentials");
    let resp = app
        .http
        .get(&url)
        .bearer_auth(format!("{ADMIN_TOKEN}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = app
        .admin(Method::GET, "/v1/apps/wxunknown")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[sqlx::test]
async fn invalid_app_values_are_refused_and_nothing_is_stored(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let cases = [
        (json!({"secret": ""}), 422),
        (json!({"secret": "s", "token": "x"}), 422),
        (json!({"secret": "s", "encoding_aes_key": "short"}), 422),
        (json!({"secret": "s", "send_rate_per_sec": 0}), 422),
        (json!({"secret": "s", "token_api": "fancy"}), 422),
        (json!({"secret": 5}), 422),
        (json!({"nosecret": "s"}), 422),
    ];
    for (body, status) in cases {
        let resp = app.put_app("wxbad", &body).await;
        assert_eq!(resp.status(), status, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert!(
            err["error"].is_string() && err["message"].is_string(),
            "{err}"
        );
    }
    let resp = app
        .admin(Method::PUT, "/v1/apps/wxbad")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = app
        .admin(Method::GET, "/v1/apps/wxbad")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "a refused PUT stored nothing");
}

#[sqlx::test]
async fn an_update_may_leave_the_secret_out_and_keeps_the_stored_one(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    // Registering still needs the secret.
    for body in [json!({"send_rate_per_sec": 5}), json!({"secret": null})] {
        let resp = app.put_app("wxnosecret", &body).await;
        assert_eq!(resp.status(), 422, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"], "invalid_secret", "{err}");
    }
    let resp = app
        .admin(Method::GET, "/v1/apps/wxnosecret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "a refused PUT stored nothing");

    // An update without it changes what it names and keeps the secret: WeChat still hands
    // the app a token, so its campaign is sent.
    let resp = app
        .put_app(
            APPID,
            &json!({"frequency_cap": {"max": 2, "per_secs": 60}, "send_rate_per_sec": 40}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let view: Value = resp.json().await.unwrap();
    assert_eq!(view["frequency_cap"], json!({"max": 2, "per_secs": 60}));
    assert_eq!(view["send_rate_per_sec"], 40);
    app.user_with_formids("o-kept", 1).await;
    let (_, done) = app
        .run_campaign(template_campaign(json!({"type": "all"})), "completed")
        .await;
    assert_eq!(done["totals"]["sent"], 1, "{done}");
}
