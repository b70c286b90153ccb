//! Registered apps: their credentials and send settings.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::domain::app::{App, TokenApi};

pub struct AppUpsert<'a> {
    pub appid: &'a str,
    pub secret: &'a str,
    pub push_token: Option<&'a str>,
    pub encoding_aes_key: Option<&'a str>,
    pub send_rate_per_sec: Option<i32>,
    pub token_api: Option<TokenApi>,
}

/// Creates or updates an app; fields left out keep their stored value. True when created.
pub async fn upsert(pool: &PgPool, app: AppUpsert<'_>) -> sqlx::Result<bool> {
    let row = sqlx::query!(
        r#"
        insert into apps (appid, secret, push_token, encoding_aes_key, send_rate_per_sec, token_api)
        values ($1, $2, $3, $4, coalesce($5, 200), coalesce($6, 'stable'))
        on conflict (appid) do update set
            secret = excluded.secret,
            push_token = coalesce($3, apps.push_token),
            encoding_aes_key = coalesce($4, apps.encoding_aes_key),
            send_rate_per_sec = coalesce($5, apps.send_rate_per_sec),
            token_api = coalesce($6, apps.token_api),
            updated_at = now()
        -- xmax is 0 only on a freshly inserted row version
        returning (xmax = 0) as "created!"
        "#,
        app.appid,
        app.secret,
        app.push_token,
        app.encoding_aes_key,
        app.send_rate_per_sec,
        app.token_api as Option<TokenApi>,
    )
    .fetch_one(pool)
    .await?;
    Ok(row.created)
}

/// A row of `apps`, before its secrets are wrapped.
struct AppRow {
    appid: String,
    secret: String,
    push_token: Option<String>,
    encoding_aes_key: Option<String>,
    send_rate_per_sec: i32,
    token_api: TokenApi,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<AppRow> for App {
    fn from(r: AppRow) -> Self {
        App {
            appid: r.appid,
            secret: r.secret.into(),
            push_token: r.push_token.map(Into::into),
            encoding_aes_key: r.encoding_aes_key.map(Into::into),
            send_rate_per_sec: r.send_rate_per_sec,
            token_api: r.token_api,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

pub async fn find(pool: &PgPool, appid: &str) -> sqlx::Result<Option<App>> {
    if !super::storable(appid) {
        return Ok(None);
    }
    let row = sqlx::query_as!(
        AppRow,
        r#"
        select appid, secret, push_token, encoding_aes_key, send_rate_per_sec,
               token_api as "token_api: TokenApi", created_at, updated_at
        from apps where appid = $1
        "#,
        appid
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(App::from))
}

/// Every app, in appid order.
pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<App>> {
    let rows = sqlx::query_as!(
        AppRow,
        r#"
        select appid, secret, push_token, encoding_aes_key, send_rate_per_sec,
               token_api as "token_api: TokenApi", created_at, updated_at
        from apps order by appid
        "#
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(App::from).collect())
}

pub async fn exists(pool: &PgPool, appid: &str) -> sqlx::Result<bool> {
    if !super::storable(appid) {
        return Ok(false);
    }
    let row = sqlx::query!(
        r#"select exists(select 1 from apps where appid = $1) as "exists!""#,
        appid
    )
    .fetch_one(pool)
    .await?;
    Ok(row.exists)
}
