use chrono::{Duration, Utc};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{spawn_app, APPID};

#[sqlx::test]
async fn valid_formids_are_stored_once_and_bad_ones_rejected_with_reasons(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let token = app.login("o-1").await;
    let android = app.wechat.form_id(APPID, "o-1");
    let ios = app.wechat.ios_form_id(APPID, "o-1");
    let old = (Utc::now() - Duration::days(8))
        .timestamp_millis()
        .to_string();
    let body = json!({"form_ids": [
        android, ios, android,
        "01234567-89ab-cdef-0123-456789abcdef",
        "the formId is a mock one", "requestFormId:fail no permission",
        "12345", old
    ]});
    let resp = app.post_formids(&token, &body).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["accepted"], 3, "{answer}");
    assert_eq!(answer["duplicates"], 1);
    let reasons: Vec<(&str, &str)> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["form_id"].as_str().unwrap(),
                r["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("the formId is a mock one", "mock"),
            ("requestFormId:fail no permission", "mock"),
            ("12345", "malformed"),
            (old.as_str(), "expired"),
        ]
    );
    // Posting again: all duplicates.
    let again: Value = app
        .post_formids(&token, &json!({ "form_id": android }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["accepted"], 0);
    assert_eq!(again["duplicates"], 1);
    let stats = app.stats().await;
    assert_eq!(stats["valid_formids"], 3);
    assert_eq!(stats["users_with_valid_formid"], 1);
}

#[sqlx::test]
async fn expiry_is_seven_days_from_the_android_timestamp(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let token = app.login("o-2").await;
    let created = Utc::now() - Duration::days(6) - Duration::hours(12);
    let id = app.wechat.form_id_created_at(APPID, "o-2", created);
    let resp = app.post_formids(&token, &json!({ "form_id": id })).await;
    assert_eq!(resp.status(), 200);
    let stats = app.stats().await;
    assert_eq!(stats["valid_formids"], 1);
    assert_eq!(stats["expiring_within_24h"], 1, "{stats}");
    let expires: chrono::DateTime<Utc> =
        sqlx::query_scalar("select expires_at from formids where form_id = $1")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        expires.timestamp_millis(),
        (created + Duration::days(7)).timestamp_millis()
    );
}

#[sqlx::test]
async fn prepay_ids_enter_the_pool_with_three_uses(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let token = app.login("o-3").await;
    let prepay = app.wechat.prepay_id(APPID, "o-3");
    let answer: Value = app
        .post_formids(&token, &json!({ "prepay_id": prepay }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["accepted"], 1, "{answer}");
    let uses: i16 = sqlx::query_scalar("select uses_left from formids where form_id = $1")
        .bind(&prepay)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(uses, 3);
}

#[sqlx::test]
async fn refused_client_requests_store_nothing(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let token = app.login("o-4").await;
    let too_many: Vec<String> = (0..101)
        .map(|i| format!("{:013}", 1_700_000_000_000u64 + i))
        .collect();
    let cases = [
        (json!({ "form_ids": too_many }), 413),
        (json!({}), 422),
        (json!({ "form_ids": "nope" }), 422),
        (json!({ "form_id": "x", "extra": 1 }), 422),
    ];
    for (body, status) in cases {
        let resp = app.post_formids(&token, &body).await;
        assert_eq!(resp.status(), status, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert!(err["error"].is_string(), "{err}");
    }
    let resp = app
        .http
        .post(format!("{}/v1/apps/{APPID}/formids", app.address))
        .json(&json!({ "form_id": app.wechat.form_id(APPID, "o-4") }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "no session");
    let big = "x".repeat(1024 * 1024 + 10);
    let resp = app
        .http
        .post(format!("{}/v1/apps/{APPID}/formids", app.address))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(format!("{{\"form_id\":\"{big}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(app.stats().await["valid_formids"], 0);
}

#[sqlx::test]
async fn admin_import_creates_users_and_validates_like_the_client(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let a = app.wechat.form_id(APPID, "imp-a");
    let b = app.wechat.form_id(APPID, "imp-b");
    let resp = app
        .import(&json!({"items": [
            {"openid": "imp-a", "form_id": a},
            {"openid": "imp-b", "form_id": b},
            {"openid": "imp-b", "form_id": b},
            {"openid": "imp-c", "form_id": "the formId is a mock one"},
            {"openid": "imp-c", "prepay_id": "wx1234567890abcdef"}
        ]}))
        .await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["accepted"], 3, "{answer}");
    assert_eq!(answer["duplicates"], 1);
    assert_eq!(answer["rejected"][0]["reason"], "mock");
    let stats = app.stats().await;
    assert_eq!(stats["users"], 3);
    assert_eq!(stats["valid_formids"], 3);
}

#[sqlx::test]
async fn import_limits_and_bad_items_are_refused_whole(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let items: Vec<Value> = (0..10_001)
        .map(|i| json!({"openid": format!("u{i}"), "form_id": format!("{:013}", 1_700_000_000_000u64 + i)}))
        .collect();
    assert_eq!(app.import(&json!({ "items": items })).await.status(), 413);
    let resp = app
        .import(&json!({"items": [
            {"openid": "ok", "form_id": app.wechat.form_id(APPID, "ok")},
            {"openid": "", "form_id": "1700000000000"}
        ]}))
        .await;
    assert_eq!(resp.status(), 422);
    let resp = app
        .import(&json!({"items": [{"openid": "x", "form_id": "1", "prepay_id": "wx12345678"}]}))
        .await;
    assert_eq!(resp.status(), 422);
    let resp = app
        .admin(reqwest::Method::POST, "/v1/apps/wxnobody/formids:import")
        .json(&json!({"items": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let stats = app.stats().await;
    assert_eq!(stats["users"], 0);
    assert_eq!(stats["valid_formids"], 0);
}

#[sqlx::test]
async fn cleanup_deletes_expired_and_long_consumed_formids(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let (_, ids) = app.user_with_formids("o-5", 3).await;
    sqlx::query("update formids set expires_at = now() - interval '1 minute' where form_id = $1")
        .bind(&ids[0])
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("update formids set uses_left = 0, last_used_at = now() - interval '31 days' where form_id = $1")
        .bind(&ids[1])
        .execute(&app.pool)
        .await
        .unwrap();
    let deleted = formpush::store::credits::purge_dead(&app.pool)
        .await
        .unwrap();
    assert_eq!(deleted, 2);
    let left: Vec<String> = sqlx::query_scalar("select form_id from formids")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, vec![ids[2].clone()]);
}

#[sqlx::test]
async fn concurrent_posts_are_each_acknowledged_and_a_repeated_formid_counts_once(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let mut users = Vec::new();
    for i in 0..20 {
        let openid = format!("c-{i}");
        let token = app.login(&openid).await;
        let own = app.wechat.form_id(APPID, &openid);
        let repeated = app.wechat.form_id(APPID, &openid);
        users.push((token, own, repeated));
    }
    // Each user posts its own formId and, in two requests racing each other, one more:
    // the requests are coalesced into shared inserts, and the repeated one is stored once.
    let app = &app;
    let posts = users.iter().flat_map(|(token, own, repeated)| {
        [
            json!({ "form_ids": [own, repeated] }),
            json!({ "form_id": repeated }),
        ]
        .into_iter()
        .map(move |body| async move {
            app.post_formids(token, &body)
                .await
                .json::<Value>()
                .await
                .unwrap()
        })
    });
    let answers = futures::future::join_all(posts).await;
    let accepted: u64 = answers
        .iter()
        .map(|a| a["accepted"].as_u64().unwrap())
        .sum();
    let duplicates: u64 = answers
        .iter()
        .map(|a| a["duplicates"].as_u64().unwrap())
        .sum();
    assert_eq!(accepted, 40, "each user's two formIds, once each");
    assert_eq!(duplicates, 20, "one of each racing pair");
    assert_eq!(app.stats().await["valid_formids"], 40);
}

#[sqlx::test]
async fn a_formid_is_unique_per_user_not_per_app(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    // Android formIds are millisecond timestamps: two users' forms can yield the same one.
    let same = (Utc::now().timestamp_millis() - 5_000).to_string();
    let a = app.login("twin-a").await;
    let b = app.login("twin-b").await;
    for token in [&a, &b] {
        let answer: Value = app
            .post_formids(token, &json!({ "form_id": same }))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            (answer["accepted"].clone(), answer["duplicates"].clone()),
            (json!(1), json!(0))
        );
    }
    let again: Value = app
        .post_formids(&b, &json!({ "form_id": same }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        again["duplicates"], 1,
        "the same user posting it again: {again}"
    );
    // Imports follow the same rule.
    let imported: Value = app
        .import(&json!({"items": [
            {"openid": "twin-c", "form_id": same},
            {"openid": "twin-c", "form_id": same},
            {"openid": "twin-a", "form_id": same}
        ]}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(imported["accepted"], 1, "{imported}");
    assert_eq!(imported["duplicates"], 2);
    assert_eq!(app.stats().await["valid_formids"], 3);
}

#[sqlx::test]
async fn concurrent_imports_creating_the_same_users_each_store_everything(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let openids: Vec<String> = (0..200).map(|i| format!("race-{i}")).collect();
    // Eight imports race to create the same 200 users; each brings its own formIds.
    let bodies: Vec<Value> = (0..8)
        .map(|_| {
            let items: Vec<Value> = openids
                .iter()
                .map(|o| json!({"openid": o, "form_id": app.wechat.form_id(APPID, o)}))
                .collect();
            json!({ "items": items })
        })
        .collect();
    let app = &app;
    let answers = futures::future::join_all(bodies.iter().map(|body| async move {
        let resp = app.import(body).await;
        assert_eq!(resp.status(), 200);
        resp.json::<Value>().await.unwrap()
    }))
    .await;
    for answer in &answers {
        assert_eq!(answer["accepted"], 200, "{answer}");
    }
    let stats = app.stats().await;
    assert_eq!(stats["users"], 200);
    assert_eq!(stats["valid_formids"], 1600);
}

#[sqlx::test]
async fn the_daily_clean_up_runs_once_a_day_whatever_the_instances(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let other = app.another_instance().await;
    let (_, ids) = app.user_with_formids("o-6", 2).await;
    let expire = |form_id: String| {
        let pool = app.pool.clone();
        async move {
            sqlx::query(
                "update formids set expires_at = now() - interval '1 minute' where form_id = $1",
            )
            .bind(form_id)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    expire(ids[0].clone()).await;
    let today = Utc::now();
    assert!(app.scheduler().clean_up(today).await.unwrap());
    assert_eq!(app.count("select count(*) from formids").await, 1);
    // The other instance's clock fires the same job: the day is done.
    expire(ids[1].clone()).await;
    assert!(!other.scheduler().clean_up(today).await.unwrap());
    assert_eq!(app.count("select count(*) from formids").await, 1);
    // The next day goes to whichever instance claims it first.
    let tomorrow = today + Duration::days(1);
    assert!(other.scheduler().clean_up(tomorrow).await.unwrap());
    assert!(!app.scheduler().clean_up(tomorrow).await.unwrap());
    assert_eq!(app.count("select count(*) from formids").await, 0);
    other.stop().await;
}
