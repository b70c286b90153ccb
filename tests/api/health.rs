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

#[sqlx::test]
async fn metrics_count_ingestion_sends_and_pool_sizes(
    _: sqlx::postgres::PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let (token, _) = app.user_with_formids("o-metrics", 2).await;
    app.post_formids(
        &token,
        &serde_json::json!({"form_id": "the formId is a mock one"}),
    )
    .await;
    let id = app
        .start_campaign(crate::helpers::template_campaign(
            serde_json::json!({"type": "all"}),
        ))
        .await;
    app.wait_for_status(&id, "completed").await;
    let text = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let appid = crate::helpers::APPID;
    for needle in [
        format!("formpush_valid_formids{{appid=\"{appid}\"}} 1"),
        format!("formpush_formids_rejected_total{{appid=\"{appid}\",reason=\"mock\"}}"),
        format!("formpush_formids_ingested_total{{appid=\"{appid}\"}}"),
        format!("formpush_sends_total{{appid=\"{appid}\",errcode=\"0\",kind=\"template\",outcome=\"sent\"}}"),
        "formpush_wechat_request_seconds_bucket{api=\"template\"".to_string(),
        format!("formpush_token_refreshes_total{{appid=\"{appid}\"}}"),
        "formpush_scheduler_lag_seconds_count".to_string(),
        "formpush_active_runs".to_string(),
    ] {
        assert!(text.contains(&needle), "missing {needle} in\n{text}");
    }
}
