use sqlx::postgres::PgConnectOptions;

use crate::common::process::Serve;
use crate::common::{spawn_app, ADMIN_TOKEN, NO_SCHEDULER};

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
    app.run_campaign(
        crate::common::template_campaign(serde_json::json!({"type": "all"})),
        "completed",
    )
    .await;
    let text = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let appid = crate::common::APPID;
    // Gauges are figures of this app's database, set at the scrape.
    for (series, value) in [
        (format!("formpush_valid_formids{{appid=\"{appid}\"}}"), 1.0),
        (
            format!("formpush_formids_expiring_24h{{appid=\"{appid}\"}}"),
            0.0,
        ),
        (
            format!("formpush_deliveries_pending{{appid=\"{appid}\"}}"),
            0.0,
        ),
    ] {
        assert_eq!(sample(&text, &series), Some(value), "{series} in\n{text}");
    }
    // Counters belong to the process, which every test of this binary shares (all with the
    // same appid): at least what this test did.
    for (series, at_least) in [
        (
            format!("formpush_formids_ingested_total{{appid=\"{appid}\"}}"),
            2.0,
        ),
        (
            format!("formpush_formids_rejected_total{{appid=\"{appid}\",reason=\"mock\"}}"),
            1.0,
        ),
        (
            format!("formpush_sends_total{{appid=\"{appid}\",kind=\"template\",outcome=\"sent\"}}"),
            1.0,
        ),
        // Zeroed from the start: present even when no subscribe message was sent.
        (
            format!(
                "formpush_sends_total{{appid=\"{appid}\",kind=\"subscribe\",outcome=\"sent\"}}"
            ),
            0.0,
        ),
        (
            format!("formpush_token_refreshes_total{{appid=\"{appid}\"}}"),
            1.0,
        ),
    ] {
        let value = sample(&text, &series).unwrap_or_else(|| panic!("missing {series} in\n{text}"));
        assert!(
            value >= at_least,
            "{series} is {value}, at least {at_least} expected"
        );
    }
    for needle in [
        "formpush_db_connections{state=\"in_use\"}",
        "process_resident_memory_bytes",
        "process_open_fds",
        "formpush_wechat_request_seconds_bucket{api=\"template\"",
        "formpush_scheduler_lag_seconds_count",
        "formpush_active_runs",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

/// The value of one series (name and labels, as exported) in a Prometheus text scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
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
        ("/v1/campaigns:preview", "post"),
        ("/v1/campaigns/{id}/test", "post"),
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
    assert!(!spec.to_string().contains(crate::common::SECRET));
    let docs = app
        .http
        .get(format!("{}/docs", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    let page = docs.text().await.unwrap();
    // Every asset of the page comes from formpush itself (no CDN).
    for asset in [
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-ui.css",
        "/docs/init.js",
    ] {
        assert!(page.contains(asset), "{asset} not on the page");
        let served = app
            .http
            .get(format!("{}{asset}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(served.status(), 200, "{asset}");
    }
    assert!(
        !page.contains("https://"),
        "the page loads something from elsewhere"
    );
    // Generated clients name their methods after operationIds: each unique, each tagged.
    let mut ids = std::collections::BTreeSet::new();
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap_or_default();
            assert!(!id.is_empty(), "{method} {path} has no operationId");
            assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
            assert!(
                operation["tags"].as_array().is_some_and(|t| !t.is_empty()),
                "{method} {path} has no tag"
            );
        }
    }
}

#[sqlx::test]
async fn a_method_a_path_does_not_serve_is_405_naming_those_it_does(
    _: sqlx::postgres::PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let resp = app
        .admin(reqwest::Method::DELETE, "/v1/campaigns")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, POST");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed");
    let unknown = app
        .admin(reqwest::Method::GET, "/v1/no-such-thing")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[sqlx::test]
async fn json_logs_carry_the_request_id_and_no_secret(
    _: sqlx::postgres::PgPoolOptions,
    db: PgConnectOptions,
) {
    use std::io::{BufRead, BufReader};
    let mut server = Serve::start_with(
        &db,
        &[
            NO_SCHEDULER,
            ("FORMPUSH_LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
            ("WECHAT_APPID", "wxlogs"),
            ("WECHAT_SECRET", "log-test-app-secret"),
        ],
        |command| {
            command.stdout(std::process::Stdio::piped());
        },
    );
    let mut lines = BufReader::new(server.take_stdout()).lines();
    let listening = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("formpush listening"));
    assert!(listening);
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/apps/wxlogs", server.address))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let logged = tokio::task::spawn_blocking(move || {
        lines
            .map_while(Result::ok)
            .find(|l| l.contains("invalid_admin_token"))
    });
    let line = tokio::time::timeout(std::time::Duration::from_secs(10), logged)
        .await
        .expect("the refused request is logged at once")
        .unwrap()
        .expect("the refused request is logged");
    server.kill();
    let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert!(!line.contains("log-test-app-secret") && !line.contains(ADMIN_TOKEN));
    let request_id = event["span"]["request_id"].as_str().unwrap_or_default();
    assert_eq!(
        request_id.len(),
        36,
        "every request line names its request id: {line}"
    );
}

#[sqlx::test]
async fn metrics_can_have_an_address_of_their_own(
    _: sqlx::postgres::PgPoolOptions,
    db: PgConnectOptions,
) {
    let settings = crate::common::settings(
        "http://127.0.0.1:9",
        &[NO_SCHEDULER, ("FORMPUSH_METRICS_BIND", "127.0.0.1:0")],
    );
    let pool = crate::common::pool(&db).await;
    let app = formpush::startup::Application::build_with_pool(settings, pool.clone())
        .await
        .unwrap();
    let api = format!("http://127.0.0.1:{}", app.port());
    let metrics = format!(
        "http://127.0.0.1:{}",
        app.metrics_port().expect("a metrics port")
    );
    let shutdown = app.shutdown_token();
    let running = tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();
    let get = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.unwrap() }
    };
    assert_eq!(get(format!("{api}/metrics")).await.status(), 404);
    assert_eq!(get(format!("{api}/healthz")).await.status(), 200);
    let scraped = get(format!("{metrics}/metrics")).await;
    assert_eq!(scraped.status(), 200);
    assert!(scraped
        .text()
        .await
        .unwrap()
        .contains("formpush_active_runs"));
    // The metrics address serves nothing else.
    assert_eq!(get(format!("{metrics}/v1/apps")).await.status(), 404);
    shutdown.cancel();
    running.await.unwrap().unwrap();
    pool.close().await;
}
