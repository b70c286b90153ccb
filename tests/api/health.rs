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

#[sqlx::test]
async fn openapi_describes_every_endpoint_and_has_a_docs_page(
    _: sqlx::postgres::PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let spec: serde_json::Value = app
        .http
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let paths = spec["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/apps/{appid}/sessions", "post"),
        ("/v1/apps/{appid}/formids", "post"),
        ("/v1/apps/{appid}/subscriptions", "post"),
        ("/wechat/{appid}", "get"),
        ("/wechat/{appid}", "post"),
        ("/v1/apps/{appid}", "put"),
        ("/v1/apps/{appid}", "get"),
        ("/v1/apps", "get"),
        ("/v1/apps/{appid}/formids:import", "post"),
        ("/v1/apps/{appid}/stats", "get"),
        ("/v1/campaigns", "post"),
        ("/v1/campaigns", "get"),
        ("/v1/campaigns/{id}", "get"),
        ("/v1/campaigns/{id}/pause", "post"),
        ("/v1/campaigns/{id}/resume", "post"),
        ("/v1/campaigns/{id}/cancel", "post"),
        ("/v1/campaigns/{id}/runs", "get"),
        ("/v1/campaigns/{id}/deliveries", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    assert!(spec["components"]["schemas"]["ErrorBody"].is_object());
    assert!(!spec.to_string().contains(crate::helpers::SECRET));
    let docs = app
        .http
        .get(format!("{}/docs", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("openapi"));
}

#[sqlx::test]
async fn json_logs_carry_the_request_id_and_no_secret(
    _: sqlx::postgres::PgPoolOptions,
    db: PgConnectOptions,
) {
    use std::io::{BufRead, BufReader};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = crate::helpers::database_url(&db);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_formpush"))
        .env("DATABASE_URL", url)
        .env("FORMPUSH_BIND", format!("127.0.0.1:{port}"))
        .env("FORMPUSH_ADMIN_TOKEN", "log-test-admin-token")
        .env("FORMPUSH_SCHEDULER", "off")
        .env("FORMPUSH_LOG_FORMAT", "json")
        .env("WECHAT_APPID", "wxlogs")
        .env("WECHAT_SECRET", "log-test-app-secret")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("formpush listening"));
    assert!(listening);
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("http://127.0.0.1:{port}/v1/apps/wxlogs"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let request_id = tokio::task::spawn_blocking(move || {
        let line = lines
            .map_while(Result::ok)
            .find(|l| l.contains("invalid_admin_token"))
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
        assert!(!line.contains("log-test-app-secret") && !line.contains("log-test-admin-token"));
        event["span"]["request_id"].as_str().map(str::to_string)
    })
    .await
    .unwrap();
    assert!(
        request_id.is_some_and(|id| id.len() == 36),
        "every request line names its request id"
    );
}
