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
    pub webhook: WebhookChange<'a>,
}

/// What a PUT does to the app's webhook.
pub enum WebhookChange<'a> {
    Keep,
    Remove,
    /// Point it at `url`. `fresh_secret` becomes the signing secret only when the URL
    /// differs from the stored one (or none was stored).
    Set {
        url: &'a str,
        fresh_secret: &'a str,
    },
}

pub struct Upserted {
    pub created: bool,
    /// The `fresh_secret` of a `WebhookChange::Set` is now the app's secret.
    pub secret_replaced: bool,
}

/// Creates or updates an app; fields left out keep their stored value.
pub async fn upsert(pool: &PgPool, app: AppUpsert<'_>) -> sqlx::Result<Upserted> {
    let (change_webhook, url, fresh_secret) = match app.webhook {
        WebhookChange::Keep => (false, None, None),
        WebhookChange::Remove => (true, None, None),
        WebhookChange::Set { url, fresh_secret } => (true, Some(url), Some(fresh_secret)),
    };
    let row = sqlx::query!(
        r#"
        insert into apps (appid, secret, push_token, encoding_aes_key, send_rate_per_sec, token_api,
                          webhook_url, webhook_secret)
        values ($1, $2, $3, $4, coalesce($5, 200), coalesce($6, 'stable'), $8, $9)
        on conflict (appid) do update set
            secret = excluded.secret,
            push_token = coalesce($3, apps.push_token),
            encoding_aes_key = coalesce($4, apps.encoding_aes_key),
            send_rate_per_sec = coalesce($5, apps.send_rate_per_sec),
            token_api = coalesce($6, apps.token_api),
            webhook_url = case when $7 then $8 else apps.webhook_url end,
            -- a new secret whenever the URL changes; the same URL keeps its secret
            webhook_secret = case when not $7 then apps.webhook_secret
                                  when $8::text is null then null
                                  when $8 is distinct from apps.webhook_url then $9
                                  else apps.webhook_secret end,
            updated_at = now()
        -- xmax is 0 only on a freshly inserted row version
        returning (xmax = 0) as "created!",
                  coalesce(webhook_secret = $9, false) as "secret_replaced!"
        "#,
        app.appid,
        app.secret,
        app.push_token,
        app.encoding_aes_key,
        app.send_rate_per_sec,
        app.token_api as Option<TokenApi>,
        change_webhook,
        url,
        fresh_secret,
    )
    .fetch_one(pool)
    .await?;
    Ok(Upserted {
        created: row.created,
        secret_replaced: row.secret_replaced,
    })
}

/// A row of `apps`, before its secrets are wrapped.
struct AppRow {
    appid: String,
    secret: String,
    push_token: Option<String>,
    encoding_aes_key: Option<String>,
    send_rate_per_sec: i32,
    token_api: TokenApi,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
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
            webhook_url: r.webhook_url,
            webhook_secret: r.webhook_secret.map(Into::into),
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
               token_api as "token_api: TokenApi", webhook_url, webhook_secret, created_at,
               updated_at
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
               token_api as "token_api: TokenApi", webhook_url, webhook_secret, created_at,
               updated_at
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
