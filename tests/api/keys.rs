//! App API keys: shown once, stored as a hash, limited to their app and scopes, revoked
//! at once on every instance.

use reqwest::Method;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{
    call_as, key_of, spawn_app, start_instance, subscribe_message, template_campaign, As, APPID,
    SECRET,
};

/// `(status, answer)` of a call made as `who` (an answer that is not JSON is `null`).
async fn call(
    http: &reqwest::Client,
    address: &str,
    who: &As,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let resp = call_as(http, address, who, method, path, body.as_ref()).await;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[sqlx::test]
async fn a_key_is_shown_once_listed_by_its_prefix_and_stored_only_as_a_hash(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let (status, created) = call(
        &app.http,
        &app.address,
        &As::Admin,
        Method::POST,
        &format!("/v1/apps/{APPID}/keys"),
        Some(json!({"name": "order-service", "scopes": ["send", "read", "send"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap();
    assert!(key.starts_with("fpk_"));
    assert!(key.len() >= 4 + 32);
    assert!(key[4..]
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(created["name"], "order-service");
    assert_eq!(created["scopes"], json!(["send", "read"]));
    let (status, list) = call(
        &app.http,
        &app.address,
        &As::Admin,
        Method::GET,
        &format!("/v1/apps/{APPID}/keys"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let listed = &list["items"][0];
    assert_eq!(listed["id"], created["id"]);
    assert_eq!(listed["prefix"], &key[..8]);
    assert_eq!(listed["last_used_at"], Value::Null);
    assert!(
        !list.to_string().contains(key),
        "the list never shows the key"
    );
    // Stored as the SHA-256 of the key (computed here by Postgres), and nowhere in clear.
    let by_hash: i64 = sqlx::query_scalar(
        "select count(*) from api_keys where key_hash = sha256(convert_to($1, 'UTF8'))",
    )
    .bind(key)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(by_hash, 1);
    let in_clear: i64 =
        sqlx::query_scalar("select count(*) from api_keys k where position($1 in k::text) > 0")
            .bind(key)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(in_clear, 0);
    // Using it marks it used.
    let who = As::Key(key.to_string());
    let (status, _) = call(
        &app.http,
        &app.address,
        &who,
        Method::GET,
        &format!("/v1/apps/{APPID}/messages"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, list) = call(
        &app.http,
        &app.address,
        &As::Admin,
        Method::GET,
        &format!("/v1/apps/{APPID}/keys"),
        None,
    )
    .await;
    assert!(list["items"][0]["last_used_at"].is_string());
}

#[sqlx::test]
async fn a_key_works_like_the_admin_token_for_its_app_and_scopes_only(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.put_app("wxotherapp", &json!({"secret": "s"})).await;
    let (h, a) = (&app.http, app.address.as_str());
    let sender = key_of(h, a, APPID, &["send"]).await;
    let importer = key_of(h, a, APPID, &["import"]).await;
    let reader = key_of(h, a, APPID, &["read"]).await;
    let other_app = key_of(h, a, "wxotherapp", &["send", "import", "read"]).await;
    let form_id = app.wechat.form_id(APPID, "o-k");
    let import = json!({"items": [{"openid": "o-k", "form_id": form_id}]});
    let messages = format!("/v1/apps/{APPID}/messages");
    let stats = format!("/v1/apps/{APPID}/stats");
    let import_path = format!("/v1/apps/{APPID}/formids:import");
    let cases: Vec<(&As, Method, &str, Option<Value>, u16)> = vec![
        // send: messages of its app
        (
            &sender,
            Method::POST,
            &messages,
            Some(subscribe_message("o-k")),
            409,
        ),
        (&sender, Method::GET, &messages, None, 200),
        (&sender, Method::GET, &stats, None, 403),
        (
            &sender,
            Method::POST,
            &import_path,
            Some(import.clone()),
            403,
        ),
        // import: formids:import only
        (
            &importer,
            Method::POST,
            &import_path,
            Some(import.clone()),
            200,
        ),
        (&importer, Method::GET, &messages, None, 403),
        (
            &importer,
            Method::POST,
            &messages,
            Some(subscribe_message("o-k")),
            403,
        ),
        // read: stats and messages, never sending
        (&reader, Method::GET, &stats, None, 200),
        (&reader, Method::GET, &messages, None, 200),
        (
            &reader,
            Method::POST,
            &messages,
            Some(subscribe_message("o-k")),
            403,
        ),
        // a key of another app, whatever its scopes
        (&other_app, Method::GET, &stats, None, 403),
        (
            &other_app,
            Method::POST,
            &messages,
            Some(subscribe_message("o-k")),
            403,
        ),
        (
            &other_app,
            Method::POST,
            &import_path,
            Some(import.clone()),
            403,
        ),
        // the admin token opens everything
        (&As::Admin, Method::GET, &stats, None, 200),
        (&As::Admin, Method::GET, &messages, None, 200),
    ];
    for (who, method, path, body, expected) in cases {
        let (status, answer) = call(h, a, who, method.clone(), path, body).await;
        assert_eq!(status, expected, "{method} {path}: {answer}");
        if status == 403 {
            assert_eq!(answer["error"], "forbidden");
        }
    }
    let unknown = As::Key(format!("fpk_{}", "x".repeat(40)));
    let (status, answer) = call(h, a, &unknown, Method::GET, &stats, None).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let (status, answer) = call(h, a, &As::Key("nonsense".into()), Method::GET, &stats, None).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("invalid_admin_token"))
    );
    let anonymous = app.http.get(format!("{a}{stats}")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[sqlx::test]
async fn a_key_never_opens_app_settings_keys_or_campaign_changes(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    app.put_app("wxotherapp", &json!({"secret": "s"})).await;
    let (h, a) = (&app.http, app.address.as_str());
    let all = key_of(h, a, APPID, &["send", "import", "read"]).await;
    let campaign = app
        .start_campaign(template_campaign(
            json!({"type": "openids", "openids": ["o-x"]}),
        ))
        .await;
    let mut other = template_campaign(json!({"type": "openids", "openids": ["o-y"]}));
    other["appid"] = json!("wxotherapp");
    let other_campaign = app.start_campaign(other).await;
    let (_, keys) = call(
        h,
        a,
        &As::Admin,
        Method::GET,
        &format!("/v1/apps/{APPID}/keys"),
        None,
    )
    .await;
    let key_id = keys["items"][0]["id"].as_str().unwrap().to_string();
    let forbidden: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::PUT,
            format!("/v1/apps/{APPID}"),
            Some(json!({"secret": SECRET})),
        ),
        (Method::GET, format!("/v1/apps/{APPID}"), None),
        (Method::GET, "/v1/apps".into(), None),
        (
            Method::POST,
            format!("/v1/apps/{APPID}/keys"),
            Some(json!({"name": "x", "scopes": ["send"]})),
        ),
        (Method::GET, format!("/v1/apps/{APPID}/keys"), None),
        (
            Method::DELETE,
            format!("/v1/apps/{APPID}/keys/{key_id}"),
            None,
        ),
        (
            Method::POST,
            "/v1/campaigns".into(),
            Some(template_campaign(json!({"type": "all"}))),
        ),
        (
            Method::POST,
            format!("/v1/campaigns/{campaign}/pause"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/campaigns/{campaign}/resume"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/campaigns/{campaign}/cancel"),
            None,
        ),
        (Method::GET, format!("/v1/campaigns/{other_campaign}"), None),
        (
            Method::GET,
            format!("/v1/campaigns/{other_campaign}/deliveries"),
            None,
        ),
        (Method::GET, "/v1/campaigns?appid=wxotherapp".into(), None),
    ];
    for (method, path, body) in forbidden {
        let (status, answer) = call(h, a, &all, method.clone(), &path, body).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (403, Some("forbidden")),
            "{method} {path}"
        );
    }
    // Reading its own app's campaigns is what `read` is for; a list shows its app only.
    for path in [
        format!("/v1/campaigns/{campaign}"),
        format!("/v1/campaigns/{campaign}/runs"),
        format!("/v1/campaigns/{campaign}/deliveries"),
    ] {
        assert_eq!(
            call(h, a, &all, Method::GET, &path, None).await.0,
            200,
            "{path}"
        );
    }
    let (status, list) = call(h, a, &all, Method::GET, "/v1/campaigns", None).await;
    assert_eq!(status, 200);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], campaign.as_str());
    // The campaign was left alone, and the key still exists.
    assert_eq!(app.campaign(&campaign).await["status"], "scheduled");
    let (_, keys) = call(
        h,
        a,
        &As::Admin,
        Method::GET,
        &format!("/v1/apps/{APPID}/keys"),
        None,
    )
    .await;
    assert_eq!(keys["items"].as_array().unwrap().len(), 1);
}

#[sqlx::test]
async fn a_revoked_key_is_refused_at_once_on_every_instance(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db.clone()).await;
    let other = start_instance(&db, &app.sandbox_url(), &[]).await;
    let key = key_of(&app.http, &app.address, APPID, &["read"]).await;
    let stats = format!("/v1/apps/{APPID}/stats");
    for address in [&app.address, &other.address] {
        assert_eq!(
            call(&app.http, address, &key, Method::GET, &stats, None)
                .await
                .0,
            200
        );
    }
    let (_, keys) = call(
        &app.http,
        &app.address,
        &As::Admin,
        Method::GET,
        &format!("/v1/apps/{APPID}/keys"),
        None,
    )
    .await;
    let id = keys["items"][0]["id"].as_str().unwrap();
    let revoke = format!("/v1/apps/{APPID}/keys/{id}");
    let (status, _) = call(
        &app.http,
        &app.address,
        &As::Admin,
        Method::DELETE,
        &revoke,
        None,
    )
    .await;
    assert_eq!(status, 204);
    for address in [&other.address, &app.address] {
        let (status, answer) = call(&app.http, address, &key, Method::GET, &stats, None).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (401, Some("invalid_api_key"))
        );
    }
    let (status, answer) = call(
        &app.http,
        &other.address,
        &As::Admin,
        Method::DELETE,
        &revoke,
        None,
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("key_not_found"))
    );
    other.stop().await;
}

#[sqlx::test]
async fn invalid_key_requests_are_refused_naming_the_field(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let path = format!("/v1/apps/{APPID}/keys");
    let cases = [
        (
            json!({"name": "x", "scopes": ["admin"]}),
            422,
            "invalid_scope",
        ),
        (json!({"name": "x", "scopes": []}), 422, "invalid_scope"),
        (
            json!({"name": " ", "scopes": ["send"]}),
            422,
            "invalid_name",
        ),
        (
            json!({"name": "x".repeat(101), "scopes": ["send"]}),
            422,
            "invalid_name",
        ),
        // The bound is on the name as sent (the schema's maxLength), not after trimming.
        (
            json!({"name": format!("\u{a0}{}", "x".repeat(100)), "scopes": ["send"]}),
            422,
            "invalid_name",
        ),
        (json!({"name": "x"}), 422, "invalid_body"),
        (
            json!({"name": "x", "scopes": ["send"], "key": "mine"}),
            422,
            "invalid_body",
        ),
    ];
    for (body, status, code) in cases {
        let (got, answer) = call(
            &app.http,
            &app.address,
            &As::Admin,
            Method::POST,
            &path,
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (got, answer["error"].as_str()),
            (status, Some(code)),
            "{body}"
        );
    }
    let (status, answer) = call(
        &app.http,
        &app.address,
        &As::Admin,
        Method::POST,
        "/v1/apps/wxnosuchapp/keys",
        Some(json!({"name": "x", "scopes": ["send"]})),
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("app_not_found"))
    );
    let count: i64 = sqlx::query_scalar("select count(*) from api_keys")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}
