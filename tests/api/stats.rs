//! The console's charts: credits by the day they expire, credits received per hour, and a
//! campaign's outcomes over time, each counted through the public API.

use chrono::{DateTime, Duration, Utc};
use formpush_sandbox::{Api, Fault};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{error_of, spawn_app, template_campaign, TestApp, APPID};

fn at(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

/// A zone with a whole-hour offset in which it is about noon now, so that "today" has hours
/// left on both sides whenever the test runs. (Etc/GMT-N is UTC+N.)
fn zone_at_noon() -> String {
    let hour = i64::from(chrono::Timelike::hour(&Utc::now()));
    match 12 - hour {
        0 => "Etc/GMT".to_string(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    }
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    let resp = app.admin(reqwest::Method::GET, path).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Imports one sandbox-issued formId for `openid` that expires at `expires` (Android
/// formIds are valid 7 days from the time they embed).
async fn import_expiring(app: &TestApp, openid: &str, expires: DateTime<Utc>) -> String {
    let form_id = app
        .wechat
        .form_id_created_at(APPID, openid, expires - Duration::days(7));
    let resp = app
        .import(&json!({"items": [{"openid": openid, "form_id": form_id}]}))
        .await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["accepted"], 1, "{body}");
    form_id
}

#[sqlx::test]
async fn credits_are_counted_on_the_local_day_they_expire(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let zone = zone_at_noon();
    let path = format!("/v1/apps/{APPID}/stats/expiring?timezone={zone}");
    let (status, empty) = get(&app, &path).await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(empty["timezone"], zone.as_str());
    let days = empty["days"].as_array().unwrap().clone();
    assert_eq!(days.len(), 8, "today and the 7 days after it");
    assert!(days.iter().all(|d| d["formids"] == 0));
    assert_eq!(empty["later"], 0);
    // Day i (i >= 1) is a local calendar day; noon of it is 12 hours after its start.
    let noon = |i: usize| at(&days[i]["start"]) + Duration::hours(12);
    for pair in days.windows(2) {
        assert_eq!(pair[0]["end"], pair[1]["start"]);
    }

    let now = Utc::now();
    // alice: two expiring in an hour (today), one on day 2, the freshest: a campaign spends it.
    import_expiring(&app, "alice", now + Duration::hours(1)).await;
    import_expiring(
        &app,
        "alice",
        now + Duration::hours(1) + Duration::seconds(1),
    )
    .await;
    import_expiring(&app, "alice", noon(2)).await;
    // bob: one on day 1, three on day 3.
    import_expiring(&app, "bob", noon(1)).await;
    for s in 0..3 {
        import_expiring(&app, "bob", noon(3) + Duration::seconds(s)).await;
    }
    // carol: one on day 5, and a prepay_id (7 days from receipt: day 7, at about noon).
    import_expiring(&app, "carol", noon(5)).await;
    let prepay = app.wechat.prepay_id(APPID, "carol");
    let resp = app
        .import(&json!({"items": [{"openid": "carol", "prepay_id": prepay}]}))
        .await;
    assert_eq!(resp.status(), 200);
    // dave holds two grants: they never expire.
    app.grant("dave", "TPL_SUB", 2).await;
    app.run_campaign(
        template_campaign(json!({"type": "openids", "openids": ["alice"]})),
        "completed",
    )
    .await;

    let (_, chart) = get(&app, &path).await;
    let counts: Vec<i64> = chart["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["formids"].as_i64().unwrap())
        .collect();
    assert_eq!(counts, vec![2, 1, 0, 3, 0, 1, 0, 1], "{chart}");
    assert_eq!(chart["later"], 0);
    assert_eq!(chart["grants"], 2);
    assert_eq!(
        counts.iter().sum::<i64>(),
        app.stats().await["valid_formids"].as_i64().unwrap(),
        "the chart holds every usable credit"
    );
    // The dates are the zone's calendar days, today first.
    let today = Utc::now()
        .with_timezone(&zone.parse::<chrono_tz::Tz>().unwrap())
        .date_naive();
    assert_eq!(chart["days"][0]["date"], today.to_string());
    assert_eq!(
        chart["days"][7]["date"],
        (today + Duration::days(7)).to_string()
    );

    // Three days: what expires after them is `later`.
    let (_, short) = get(&app, &format!("{path}&days=3")).await;
    let counts: Vec<i64> = short["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["formids"].as_i64().unwrap())
        .collect();
    assert_eq!(counts, vec![2, 1, 0]);
    assert_eq!(short["later"], 5);

    // Without a zone the days are Asia/Shanghai's: each starts at 00:00 +08:00 (16:00 UTC).
    let (_, default) = get(&app, &format!("/v1/apps/{APPID}/stats/expiring")).await;
    assert_eq!(default["timezone"], "Asia/Shanghai");
    assert_eq!(default["days"].as_array().unwrap().len(), 8);
    let start = at(&default["days"][1]["start"]);
    assert_eq!(start.format("%H:%M:%S").to_string(), "16:00:00");
}

#[sqlx::test]
async fn ingestion_counts_credits_received_per_local_hour(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    app.user_with_formids("alice", 3).await;
    let (_, earlier) = app.user_with_formids("bob", 2).await;
    let (_, old) = app.user_with_formids("carol", 1).await;
    // What came earlier is dated back in the database (the API stores the time of receipt).
    for (ids, hours) in [(&earlier, 5), (&old, 80)] {
        sqlx::query(
            "update formids set received_at = now() - make_interval(hours => $2) \
             where form_id = any($1)",
        )
        .bind(ids)
        .bind(hours)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    let received_at: DateTime<Utc> =
        sqlx::query_scalar("select received_at from formids where form_id = $1")
            .bind(&earlier[0])
            .fetch_one(&app.pool)
            .await
            .unwrap();
    // Another app's credits are not this app's.
    let resp = app
        .put_app("wxotherapp0000001", &json!({"secret": "other"}))
        .await;
    assert!(resp.status().is_success());
    let other = app.wechat.form_id("wxotherapp0000001", "zed");
    let resp = app
        .admin(
            reqwest::Method::POST,
            "/v1/apps/wxotherapp0000001/formids:import",
        )
        .json(&json!({"items": [{"openid": "zed", "form_id": other}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // India is UTC+05:30: its hours start at half past the UTC hour.
    let (status, chart) = get(
        &app,
        &format!("/v1/apps/{APPID}/stats/ingestion?timezone=Asia/Kolkata"),
    )
    .await;
    assert_eq!(status, 200, "{chart}");
    assert_eq!(chart["timezone"], "Asia/Kolkata");
    let hours = chart["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 72, "72 hours by default");
    for h in hours {
        assert_eq!(at(&h["start"]).format("%M:%S").to_string(), "30:00");
        assert_eq!(at(&h["end"]) - at(&h["start"]), Duration::hours(1));
    }
    assert!(
        at(&hours[71]["end"]) > Utc::now(),
        "the last hour is the current one"
    );
    assert_eq!(
        chart["total"], 5,
        "3 now and 2 five hours ago; not the one 80 hours ago"
    );
    let holding = |t: DateTime<Utc>| {
        hours
            .iter()
            .find(|h| at(&h["start"]) <= t && t < at(&h["end"]))
            .map(|h| h["formids"].as_i64().unwrap())
    };
    assert_eq!(holding(received_at), Some(2));
    assert_eq!(
        holding(Utc::now()).unwrap() + hours[70]["formids"].as_i64().unwrap(),
        3,
        "this hour (or the one before, if it just turned)"
    );

    // A week back reaches the old one.
    let (_, week) = get(&app, &format!("/v1/apps/{APPID}/stats/ingestion?hours=168")).await;
    assert_eq!(week["hours"].as_array().unwrap().len(), 168);
    assert_eq!(week["total"], 6);
    assert_eq!(week["timezone"], "Asia/Shanghai");
}

#[sqlx::test]
async fn a_campaign_timeline_shows_when_deliveries_ended_and_why(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    for openid in ["alice", "bob", "carol", "erin"] {
        app.user_with_formids(openid, 1).await;
    }
    app.login("dave").await; // no formId
                             // The first send WeChat sees fails 40003 (whichever user it is for).
    app.wechat
        .fail_next(Api::TemplateSend, Fault::Errcode(40003), 1);
    let (id, done) = app
        .run_campaign(
            template_campaign(json!({"type": "openids",
                "openids": ["alice", "bob", "carol", "dave", "erin"]})),
            "completed",
        )
        .await;
    assert_eq!(done["totals"]["sent"], 3);

    let path = format!("/v1/campaigns/{id}/timeline");
    let (status, t) = get(&app, &path).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(
        t["timezone"], "Asia/Shanghai",
        "the campaign's zone by default"
    );
    assert_eq!(
        t["outcomes"],
        json!({"sent": 3, "failed": 1, "no_formid": 1, "no_quota": 0, "capped": 0})
    );
    assert_eq!(
        t["failed_by_errcode"],
        json!([{"errcode": 40003, "count": 1}])
    );
    assert_eq!(t["failed_other"], 0);
    // A run of a moment: one or two buckets of 10 seconds holding everything.
    assert_eq!(t["bucket_secs"], 10);
    let buckets = t["buckets"].as_array().unwrap();
    assert!((1..=2).contains(&buckets.len()), "{t}");
    let sum = |k: &str| buckets.iter().map(|b| b[k].as_i64().unwrap()).sum::<i64>();
    assert_eq!((sum("sent"), sum("failed"), sum("no_formid")), (3, 1, 1));

    // Say the run started 30 minutes ago and two sends ended 20 minutes ago: minute buckets.
    sqlx::query("update campaign_runs set started_at = now() - interval '30 minutes' where campaign_id = $1")
        .bind(uuid::Uuid::parse_str(&id).unwrap())
        .execute(&app.pool)
        .await
        .unwrap();
    let moved: DateTime<Utc> = sqlx::query_scalar(
        "update deliveries set updated_at = date_trunc('minute', now()) - interval '20 minutes' \
         where id in (select id from deliveries where campaign_id = $1 and status = 'sent' limit 2) \
         returning updated_at",
    )
    .bind(uuid::Uuid::parse_str(&id).unwrap())
    .fetch_all(&app.pool)
    .await
    .unwrap()[0];
    let (_, t) = get(&app, &format!("{path}?timezone=Asia/Kolkata")).await;
    assert_eq!(t["timezone"], "Asia/Kolkata");
    assert_eq!(t["bucket_secs"], 60);
    let buckets = t["buckets"].as_array().unwrap();
    assert!((31..=32).contains(&buckets.len()), "{}", buckets.len());
    let bucket = buckets
        .iter()
        .find(|b| at(&b["start"]) <= moved && moved < at(&b["end"]))
        .unwrap();
    assert_eq!(bucket["sent"], 2);
    assert_eq!(
        t["outcomes"]["sent"], 3,
        "every outcome is still counted once"
    );

    // Before its first run a campaign has no buckets.
    let scheduled = app
        .start_campaign(json!({
            "appid": APPID, "name": "later", "kind": "template", "template_id": "TPL",
            "data": {"keyword1": {"value": "x"}}, "audience": {"type": "all"},
            "schedule": {"type": "at", "at": "2099-01-01T00:00:00Z"}
        }))
        .await;
    let (_, empty) = get(&app, &format!("/v1/campaigns/{scheduled}/timeline")).await;
    assert_eq!(empty["bucket_secs"], Value::Null);
    assert_eq!(empty["buckets"], json!([]));
    assert_eq!(empty["outcomes"]["sent"], 0);
}

#[sqlx::test]
async fn chart_parameters_are_checked_and_keys_need_read(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let (id, _) = app
        .run_campaign(
            template_campaign(json!({"type": "openids", "openids": ["nobody"]})),
            "completed",
        )
        .await;
    let expiring = format!("/v1/apps/{APPID}/stats/expiring");
    let ingestion = format!("/v1/apps/{APPID}/stats/ingestion");
    let timeline = format!("/v1/campaigns/{id}/timeline");
    for (path, status, code) in [
        (format!("{expiring}?days=0"), 422, "invalid_days"),
        (format!("{expiring}?days=9"), 422, "invalid_days"),
        (format!("{expiring}?days=two"), 400, "bad_query"),
        (
            format!("{expiring}?timezone=Mars/Olympus"),
            422,
            "invalid_timezone",
        ),
        (format!("{expiring}?week=1"), 400, "bad_query"),
        (format!("{ingestion}?hours=0"), 422, "invalid_hours"),
        (format!("{ingestion}?hours=169"), 422, "invalid_hours"),
        (
            format!("{ingestion}?timezone=asia/shanghai"),
            422,
            "invalid_timezone",
        ),
        (
            format!("{timeline}?timezone=%2B08:00"),
            422,
            "invalid_timezone",
        ),
        (format!("{timeline}?bucket=60"), 400, "bad_query"),
        (
            "/v1/apps/wxnosuchapp/stats/expiring".to_string(),
            404,
            "app_not_found",
        ),
        (
            "/v1/apps/wxnosuchapp/stats/ingestion".to_string(),
            404,
            "app_not_found",
        ),
        (
            "/v1/campaigns/8d0c1f6e-0000-4000-8000-000000000000/timeline".to_string(),
            404,
            "campaign_not_found",
        ),
        (
            "/v1/campaigns/not-a-uuid/timeline".to_string(),
            404,
            "campaign_not_found",
        ),
    ] {
        let resp = app.admin(reqwest::Method::GET, &path).send().await.unwrap();
        assert_eq!(error_of(resp).await, (status, code.to_string()), "{path}");
    }
    for (path, bound) in [
        (format!("{expiring}?days=1"), "days"),
        (format!("{expiring}?days=8&timezone=UTC"), "days"),
        (format!("{ingestion}?hours=1"), "hours"),
        (
            format!("{ingestion}?hours=168&timezone=Pacific/Chatham"),
            "hours",
        ),
    ] {
        let (status, body) = get(&app, &path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let n = if bound == "days" {
            body["days"].as_array()
        } else {
            body["hours"].as_array()
        };
        assert!(!n.unwrap().is_empty());
    }

    // A key with read opens them; one without it, or no credentials, does not.
    let read = app.key(&["read"]).await;
    let send = app.key(&["send"]).await;
    for path in [&expiring, &ingestion, &timeline] {
        let ok = app.call(&read, reqwest::Method::GET, path, None).await;
        assert_eq!(ok.status(), 200, "{path}");
        let refused = app.call(&send, reqwest::Method::GET, path, None).await;
        assert_eq!(error_of(refused).await, (403, "forbidden".into()), "{path}");
        let anonymous = app
            .http
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 401, "{path}");
    }
}

#[sqlx::test]
async fn the_chart_endpoints_are_described_in_openapi_with_their_bounds(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let spec: Value = app
        .http
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let param = |path: &str, name: &str| -> Value {
        spec["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{path} has no parameters"))
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{path} has no {name}"))
    };
    let days = param("/v1/apps/{appid}/stats/expiring", "days");
    assert_eq!(
        (
            days["schema"]["minimum"].as_i64(),
            days["schema"]["maximum"].as_i64()
        ),
        (Some(1), Some(8))
    );
    let hours = param("/v1/apps/{appid}/stats/ingestion", "hours");
    assert_eq!(
        (
            hours["schema"]["minimum"].as_i64(),
            hours["schema"]["maximum"].as_i64()
        ),
        (Some(1), Some(168))
    );
    for path in [
        "/v1/apps/{appid}/stats/expiring",
        "/v1/apps/{appid}/stats/ingestion",
        "/v1/campaigns/{id}/timeline",
    ] {
        let tz = param(path, "timezone");
        assert_eq!(tz["required"], false);
        assert!(
            tz["schema"].to_string().contains("TimeZoneName"),
            "{path}: {tz}"
        );
        let responses = &spec["paths"][path]["get"]["responses"];
        for status in ["200", "400", "401", "403", "404", "422"] {
            assert!(responses[status].is_object(), "{path} {status}");
        }
    }
    // Every zone formpush knows fits the schema's bounds (its pattern: a letter, then
    // letters, digits, _ + / -).
    let zone = &spec["components"]["schemas"]["TimeZoneName"];
    assert_eq!(zone["pattern"], "^[A-Za-z][A-Za-z0-9_+/-]*$", "{zone}");
    let max = zone["maxLength"].as_u64().unwrap() as usize;
    for tz in chrono_tz::TZ_VARIANTS {
        let name = tz.name();
        assert!(
            name.len() <= max
                && name.starts_with(|c: char| c.is_ascii_alphabetic())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_+/-".contains(c)),
            "{name}"
        );
    }
    let timeline = &spec["components"]["schemas"]["CampaignTimeline"]["properties"];
    assert!(timeline["outcomes"].is_object() && timeline["failed_by_errcode"].is_object());
    let outcome = &spec["components"]["schemas"]["OutcomeCounts"]["properties"];
    for k in ["sent", "failed", "no_formid", "no_quota", "capped"] {
        assert!(outcome[k].is_object(), "{k}");
    }
}
