use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sqlx::PgPool;

use crate::wechat::client::TokenApi;

/// An app as stored. Debug is hand-written so the secret can never be logged.
#[derive(Clone)]
pub struct AppRecord {
    pub appid: String,
    pub secret: SecretString,
    pub push_token: Option<SecretString>,
    pub encoding_aes_key: Option<SecretString>,
    pub send_rate_per_sec: i32,
    pub token_api: TokenApi,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for AppRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppRecord")
            .field("appid", &self.appid)
            .field("send_rate_per_sec", &self.send_rate_per_sec)
            .finish_non_exhaustive()
    }
}

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
        app.token_api.map(TokenApi::as_str),
    )
    .fetch_one(pool)
    .await?;
    Ok(row.created)
}

pub async fn find(pool: &PgPool, appid: &str) -> sqlx::Result<Option<AppRecord>> {
    if !super::storable(appid) {
        return Ok(None);
    }
    let row = sqlx::query!(
        r#"
        select appid, secret, push_token, encoding_aes_key, send_rate_per_sec, token_api,
               created_at, updated_at
        from apps where appid = $1
        "#,
        appid
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| AppRecord {
        appid: r.appid,
        secret: r.secret.into(),
        push_token: r.push_token.map(Into::into),
        encoding_aes_key: r.encoding_aes_key.map(Into::into),
        send_rate_per_sec: r.send_rate_per_sec,
        token_api: TokenApi::parse(&r.token_api).unwrap_or(TokenApi::Stable),
        created_at: r.created_at,
        updated_at: r.updated_at,
    }))
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

/// Every app's id, in order.
pub async fn list_ids(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!("select appid from apps order by appid")
        .fetch_all(pool)
        .await
}
