//! The shared access_token: one WeChat call however many callers and instances.

use std::time::Duration;

use formpush::store;
use formpush::wechat::{client::WeChatClient, token::TokenManager};
use secrecy::ExposeSecret;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{pool, spawn_app, APPID};

#[sqlx::test]
async fn fifty_concurrent_callers_on_two_instances_cause_one_token_call(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db.clone()).await;
    let record = store::apps::find(&app.pool, APPID).await.unwrap().unwrap();
    let client = WeChatClient::new(&app.sandbox_url(), Duration::from_secs(2)).unwrap();
    let one = TokenManager::new(pool(&db).await, client.clone());
    let two = TokenManager::new(pool(&db).await, client);
    let calls = (0..50).map(|i| {
        let manager = if i % 2 == 0 { one.clone() } else { two.clone() };
        let record = record.clone();
        tokio::spawn(async move {
            manager
                .token(&record)
                .await
                .unwrap()
                .expose_secret()
                .to_string()
        })
    });
    let tokens: Vec<String> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(tokens.iter().all(|t| t == &tokens[0]));
    assert_eq!(app.wechat.token_calls(APPID), 1);
    // A rejected token is replaced once, even when several callers report it.
    let bad = tokens[0].clone();
    let (a, b) = tokio::join!(
        one.replace_rejected(&record, &bad),
        two.replace_rejected(&record, &bad)
    );
    assert_eq!(a.unwrap().expose_secret(), b.unwrap().expose_secret());
    assert_eq!(app.wechat.token_calls(APPID), 2);
}

#[sqlx::test]
async fn the_classic_token_api_can_be_chosen_per_app(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    app.put_app(
        APPID,
        &json!({"secret": crate::common::SECRET, "token_api": "classic"}),
    )
    .await;
    let record = store::apps::find(&app.pool, APPID).await.unwrap().unwrap();
    let client = WeChatClient::new(&app.sandbox_url(), Duration::from_secs(2)).unwrap();
    let manager = TokenManager::new(app.pool.clone(), client);
    let first = manager.token(&record).await.unwrap();
    assert_eq!(
        manager.token(&record).await.unwrap().expose_secret(),
        first.expose_secret()
    );
    assert_eq!(app.wechat.token_calls(APPID), 1);
    // A wrong secret is WeChat's 40125, reported, not retried forever.
    app.put_app(APPID, &json!({"secret": "wrong"})).await;
    let record = store::apps::find(&app.pool, APPID).await.unwrap().unwrap();
    let err = manager
        .replace_rejected(&record, first.expose_secret())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("40125"), "{err}");
}
