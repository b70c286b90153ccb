//! WeChat's message-push endpoint, with the known answers from WeChat's documentation.

use formpush::wechat::crypto::MessageCrypto;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{spawn_app, spawn_app_with, APPID, PUSH_TOKEN};

/// hex(sha1(sorted([token, timestamp, nonce, ...]).join(""))) — computed independently
/// of the code under test only through the known-answer values below.
const DOC_TOKEN: &str = "AAAAA";

#[sqlx::test]
async fn url_check_echoes_with_the_documented_signature(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(
        db,
        Default::default(),
        &[("FORMPUSH_PUSH_MAX_AGE_SECS", "0")],
    )
    .await;
    app.put_app("wxdoc", &json!({"secret": "s", "token": DOC_TOKEN}))
        .await;
    let url = format!(
        "{}/wechat/wxdoc?signature=f464b24fc39322e44b38aa78f5edd27bd1441696&timestamp=1714036504&nonce=1514711492&echostr=4375120948345356249",
        app.address
    );
    let resp = app.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "4375120948345356249");
    let bad = url.replace("f464b24f", "0464b24f");
    assert_eq!(app.http.get(&bad).send().await.unwrap().status(), 403);
}

#[sqlx::test]
async fn the_official_safe_mode_json_push_is_accepted(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(
        db,
        Default::default(),
        &[("FORMPUSH_PUSH_MAX_AGE_SECS", "0")],
    )
    .await;
    app.put_app(
        "wxba5fad812f8e6fb9",
        &json!({"secret": "s", "token": DOC_TOKEN, "encoding_aes_key": "A".repeat(43)}),
    )
    .await;
    let query = "signature=6c5c811b55cc85e0e1b54100749188c20beb3f5d&timestamp=1714112445&nonce=415670741&openid=o9AgO5Kd5ggOC-bXrbNODIiE3bGY&encrypt_type=aes&msg_signature=046e02f8204d34f8ba5fa3b1db94908f3df2e9b3";
    let body = r#"{"ToUserName":"gh_97417a04a28d","Encrypt":"+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04="}"#;
    let url = format!("{}/wechat/wxba5fad812f8e6fb9?{query}", app.address);
    let resp = app.http.post(&url).body(body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "success");
    let tampered = url.replace("msg_signature=046e", "msg_signature=146e");
    assert_eq!(
        app.http
            .post(&tampered)
            .body(body)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
}

#[sqlx::test]
async fn the_documented_subscribe_event_vector_grants_quota(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app_with(
        db,
        Default::default(),
        &[("FORMPUSH_PUSH_MAX_AGE_SECS", "0")],
    )
    .await;
    app.put_app(
        "wxb11529c136998cb6",
        &json!({"secret": "s", "token": "pamtest", "encoding_aes_key": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"}),
    )
    .await;
    let encrypt = "jn1L23DB+6ELqJ+6bruv20wwA6zKDxnLqvqNVy9PfTIWWzpuDMvfkTCircw1URzVOqmEp7lYaMRL027JMOMcgaLjC26mHwl38l1+03MGAHbrKgXIEAm1qfzFH6+MU3avb+2YP08uPfdDLD6atii2HdhfR5xC6HLgRHyJagfLGBQLkHEQul8/OXaiuxK+bkTXnEVtGfnfm/CNxSe/GUq6BoDf2Z3/SBkLF8twq8oS2iC6d/ST8vO1MCJHWcZNtPbH8bgtiN0R6UuWkybLz9d+GZUF60X14M2DdFnK+6PYHzZzUxjtoXofuUTWsAnJJAAj+4kuZqtFIHhMPBCzpTHPf7tjgXNN5uyi35JS2LUVF8YNsbNq3xFoMEDYD2+kS8bHAocXa6G6YT5JaI4LnzGNa8nxjyuo7CWNU+2SMvOkDKw=";
    let url = format!(
        "{}/wechat/wxb11529c136998cb6?timestamp=1409304348&nonce=xxxxxx&encrypt_type=aes&msg_signature=97df77d4e50a4afaa634b2e8d8ca04a80c908a2b",
        app.address
    );
    let body = json!({"ToUserName": "gh_7f083739789a", "Encrypt": encrypt}).to_string();
    for _ in 0..2 {
        // WeChat retries: the second delivery of the same push must not grant twice.
        let resp = app.http.post(&url).body(body.clone()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    let remaining: i32 = sqlx::query_scalar(
        "select g.remaining from subscription_grants g join users u on u.id = g.user_id
         where u.openid = 'oia2TjjewbmiOUlr6X-1crbLOvLw' and g.template_id = 'hD-ixGOhYmUfjOnI8MCzQMPshzGVeux_2vBgHQQP7vs'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(remaining, 1);
}

fn sign(parts: &[&str]) -> String {
    formpush::wechat::crypto::signature(parts)
}

#[sqlx::test]
async fn plain_xml_change_event_removes_quota_and_replays_are_refused(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let token = app.login("o-xml").await;
    app.http
        .post(format!("{}/v1/apps/{APPID}/subscriptions", app.address))
        .bearer_auth(&token)
        .json(&json!({"results": {"TPL_X": "accept"}}))
        .send()
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp().to_string();
    let xml = format!(
        "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[o-xml]]></FromUserName><CreateTime>{now}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_change_event]]></Event><SubscribeMsgChangeEvent><List><TemplateId><![CDATA[TPL_X]]></TemplateId><SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString></List></SubscribeMsgChangeEvent></xml>"
    );
    let url = |ts: &str| {
        format!(
            "{}/wechat/{APPID}?signature={}&timestamp={ts}&nonce=n1",
            app.address,
            sign(&[PUSH_TOKEN, ts, "n1"])
        )
    };
    let old = (chrono::Utc::now().timestamp() - 3600).to_string();
    assert_eq!(
        app.http
            .post(url(&old))
            .body(xml.clone())
            .send()
            .await
            .unwrap()
            .status(),
        403,
        "replayed"
    );
    assert_eq!(app.stats().await["subscription_grants"], 1);
    let resp = app.http.post(url(&now)).body(xml).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(app.stats().await["subscription_grants"], 0);
}

#[sqlx::test]
async fn malformed_pushes_are_refused_without_harm(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    app.put_app(APPID, &json!({"secret": "s", "encoding_aes_key": key}))
        .await;
    let now = chrono::Utc::now().timestamp().to_string();
    let plain_url = format!(
        "{}/wechat/{APPID}?signature={}&timestamp={now}&nonce=n",
        app.address,
        sign(&[PUSH_TOKEN, &now, "n"])
    );
    for body in ["<xml><unclosed>", "{\"MsgType\": ", "", "\u{0}\u{1}"] {
        let resp = app.http.post(&plain_url).body(body).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{body:?}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"], "malformed_push");
    }
    let safe = |encrypt: &str| {
        let sig = sign(&[PUSH_TOKEN, &now, "n", encrypt]);
        (
            format!(
                "{}/wechat/{APPID}?timestamp={now}&nonce=n&encrypt_type=aes&msg_signature={sig}",
                app.address
            ),
            json!({"ToUserName": "gh", "Encrypt": encrypt}).to_string(),
        )
    };
    // Bad base64, then a ciphertext for another app, both correctly signed.
    let foreign = MessageCrypto::new(key, "wxsomeoneelse")
        .unwrap()
        .encrypt(r#"{"MsgType":"event"}"#);
    for encrypt in ["%%%not base64%%%", foreign.as_str()] {
        let (url, body) = safe(encrypt);
        let resp = app.http.post(&url).body(body).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{encrypt}");
    }
    // An unknown app.
    let resp = app
        .http
        .post(format!(
            "{}/wechat/wxnobody?signature=x&timestamp=1&nonce=n",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}
