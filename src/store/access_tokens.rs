//! The access_token cache every instance shares: one row per app, refreshed under a
//! per-app advisory lock so that only one instance calls WeChat at a time.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::{PgPool, Postgres, Transaction};

/// A token as stored.
pub struct StoredToken {
    pub token: SecretString,
    pub expires_at: DateTime<Utc>,
    pub refreshed_at: DateTime<Utc>,
}

/// Holds the app's refresh lock (a transaction-scoped advisory lock) until it is dropped,
/// released or used to save a new token.
pub struct RefreshLock {
    tx: Transaction<'static, Postgres>,
    appid: String,
}

/// Waits for the app's refresh lock: other instances refreshing the same app finish first.
pub async fn lock_for_refresh(pool: &PgPool, appid: &str) -> sqlx::Result<RefreshLock> {
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "select pg_advisory_xact_lock(hashtextextended('formpush.access_token:' || $1, 0))",
        appid
    )
    .execute(&mut *tx)
    .await?;
    Ok(RefreshLock {
        tx,
        appid: appid.to_string(),
    })
}

impl RefreshLock {
    /// The token stored for the app, as seen under the lock.
    pub async fn stored(&mut self) -> sqlx::Result<Option<StoredToken>> {
        let row = sqlx::query!(
            "select access_token, expires_at, refreshed_at from access_tokens where appid = $1",
            self.appid
        )
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(row.map(|r| StoredToken {
            token: r.access_token.into(),
            expires_at: r.expires_at,
            refreshed_at: r.refreshed_at,
        }))
    }

    /// Stores a freshly issued token and releases the lock.
    pub async fn save(mut self, fresh: &StoredToken) -> sqlx::Result<()> {
        sqlx::query!(
            r#"
            insert into access_tokens (appid, access_token, expires_at, refreshed_at)
            values ($1, $2, $3, $4)
            on conflict (appid) do update set access_token = excluded.access_token,
                expires_at = excluded.expires_at, refreshed_at = excluded.refreshed_at
            "#,
            self.appid,
            fresh.token.expose_secret(),
            fresh.expires_at,
            fresh.refreshed_at
        )
        .execute(&mut *self.tx)
        .await?;
        self.tx.commit().await
    }

    /// Releases the lock without a change.
    pub async fn release(self) -> sqlx::Result<()> {
        self.tx.commit().await
    }
}
