use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{spawn_app, APPID};

#[sqlx::test]
async fn each_accept_grants_one_send(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let token = app.login("o-sub").await;
    let post = |body: Value| {
        app.http
            .post(format!("{}/v1/apps/{APPID}/subscriptions", app.address))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let resp = post(json!({"results": {"TPL_A": "accept", "TPL_B": "reject", "TPL_C": "acceptWithAudio", "errMsg": "requestSubscribeMessage:ok"}})).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["granted"], 2);
    let resp = post(json!({"results": {"TPL_A": "accept"}})).await.unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["granted"], 1);
    let remaining: i32 =
        sqlx::query_scalar("select remaining from subscription_grants where template_id = 'TPL_A'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(remaining, 2);
    assert_eq!(app.stats().await["subscription_grants"], 3);
    // Bad input changes nothing.
    assert_eq!(
        post(json!({"results": {"TPL_A": 1}}))
            .await
            .unwrap()
            .status(),
        422
    );
    assert_eq!(post(json!({"results": []})).await.unwrap().status(), 422);
    assert_eq!(app.stats().await["subscription_grants"], 3);
}
