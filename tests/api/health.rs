use sqlx::postgres::PgConnectOptions;

use crate::helpers::spawn_app;

#[sqlx::test]
async fn healthz_and_readyz_answer_while_the_database_does(
    _: sqlx::postgres::PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    for path in ["/healthz", "/readyz"] {
        let resp = app
            .http
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    let resp = app
        .http
        .get(format!("{}/nope", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    assert!(body["message"].is_string());
}
