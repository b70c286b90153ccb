//! Registered apps: their credentials and send settings.

use chrono::{DateTime, NaiveTime, Utc};
use sqlx::PgPool;

use crate::domain::app::{App, TokenApi};
use crate::domain::hygiene::{FrequencyCap, QuietHours};

pub struct AppUpsert<'a> {
    pub appid: &'a str,
    /// `None`: keep the stored one (an update only; a new app without one is refused by
    /// the database).
    pub secret: Option<&'a str>,
    pub push_token: Option<&'a str>,
    pub encoding_aes_key: Option<&'a str>,
    pub send_rate_per_sec: Option<i32>,
    pub token_api: Option<TokenApi>,
    pub webhook: WebhookChange<'a>,
    pub frequency_cap: Change<FrequencyCap>,
    pub quiet_hours: Change<QuietHours>,
}

/// What a PUT does to an optional setting: a field left out keeps it, `null` removes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change<T> {
    Keep,
    Remove,
    Set(T),
}

impl<T> Change<T> {
    /// Whether the setting changes, and its new value.
    fn parts(&self) -> (bool, Option<&T>) {
        match self {
            Self::Keep => (false, None),
            Self::Remove => (true, None),
            Self::Set(value) => (true, Some(value)),
        }
    }
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

/// Creates or updates an app; fields left out keep their stored value. Changed quiet hours
/// release the app's cron campaigns that waited for the old ones (the next tick looks at
/// them again under the new ones).
pub async fn upsert(pool: &PgPool, app: AppUpsert<'_>) -> sqlx::Result<Upserted> {
    let (change_webhook, url, fresh_secret) = match app.webhook {
        WebhookChange::Keep => (false, None, None),
        WebhookChange::Remove => (true, None, None),
        WebhookChange::Set { url, fresh_secret } => (true, Some(url), Some(fresh_secret)),
    };
    let (change_cap, cap) = app.frequency_cap.parts();
    let (change_quiet, quiet) = app.quiet_hours.parts();
    let mut tx = pool.begin().await?;
    let row = sqlx::query!(
        r#"
        insert into apps (appid, secret, push_token, encoding_aes_key, send_rate_per_sec, token_api,
                          webhook_url, webhook_secret, cap_max, cap_per_secs, quiet_start,
                          quiet_end, quiet_timezone)
        -- without a secret, the row as proposed holds the stored one (the NOT NULL check
        -- comes before the conflict); the update below keeps the row's own, as locked
        values ($1, coalesce($2, (select a.secret from apps a where a.appid = $1)), $3, $4,
                coalesce($5, 200), coalesce($6, 'stable'), $8, $9, $11, $12,
                $14, $15, $16)
        on conflict (appid) do update set
            secret = coalesce($2, apps.secret),
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
            cap_max = case when $10 then $11 else apps.cap_max end,
            cap_per_secs = case when $10 then $12 else apps.cap_per_secs end,
            quiet_start = case when $13 then $14 else apps.quiet_start end,
            quiet_end = case when $13 then $15 else apps.quiet_end end,
            quiet_timezone = case when $13 then $16 else apps.quiet_timezone end,
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
        change_cap,
        cap.map(|c| c.max),
        cap.map(|c| c.per_secs),
        change_quiet,
        quiet.map(|q| q.start),
        quiet.map(|q| q.end),
        quiet.map(|q| q.timezone.name()),
    )
    .fetch_one(&mut *tx)
    .await?;
    if change_quiet {
        sqlx::query!(
            "update campaigns set held_until = null where appid = $1 and held_until is not null",
            app.appid
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
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
    cap_max: Option<i32>,
    cap_per_secs: Option<i32>,
    quiet_start: Option<NaiveTime>,
    quiet_end: Option<NaiveTime>,
    quiet_timezone: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<AppRow> for App {
    fn from(r: AppRow) -> Self {
        let frequency_cap = match (r.cap_max, r.cap_per_secs) {
            (Some(max), Some(per_secs)) => Some(FrequencyCap { max, per_secs }),
            _ => None,
        };
        let quiet_hours = match (r.quiet_start, r.quiet_end, &r.quiet_timezone) {
            (Some(start), Some(end), Some(zone)) => match zone.parse() {
                Ok(timezone) => Some(QuietHours {
                    start,
                    end,
                    timezone,
                }),
                Err(_) => {
                    // Checked when set; only a time zone database that dropped the name
                    // gets here.
                    tracing::warn!(appid = %r.appid, zone, "quiet hours in an unknown time zone are ignored");
                    None
                }
            },
            _ => None,
        };
        App {
            frequency_cap,
            quiet_hours,
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
               token_api as "token_api: TokenApi", webhook_url, webhook_secret, cap_max,
               cap_per_secs, quiet_start, quiet_end, quiet_timezone, created_at, updated_at
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
               token_api as "token_api: TokenApi", webhook_url, webhook_secret, cap_max,
               cap_per_secs, quiet_start, quiet_end, quiet_timezone, created_at, updated_at
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
