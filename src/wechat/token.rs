//! The access_token manager: one token per app, shared by every instance through
//! Postgres, refreshed ahead of expiry.
//!
//! WeChat allows 2,000 classic token calls a day per app, and a new classic token
//! invalidates the old one (after ~5 minutes), so instances must not each fetch their own.
//! Within a process a per-app mutex lets one caller refresh while the others wait; across
//! processes a Postgres advisory lock does the same, and whoever gets it second finds the
//! fresh token in the table and makes no call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;

use super::client::{WeChatClient, WeChatError};
use crate::domain::app::{App, TokenApi};
use crate::store::access_tokens::{self, StoredToken};

/// Refresh this long before WeChat's expiry (the stable API renews 5 minutes ahead too).
pub const REFRESH_AHEAD: Duration = Duration::minutes(5);

#[derive(Clone)]
struct Cached {
    token: SecretString,
    expires_at: DateTime<Utc>,
    refreshed_at: DateTime<Utc>,
}

impl Cached {
    /// Usable without a refresh. A token fetched in the last minute counts as fresh even
    /// inside the refresh window, so a short-lived answer cannot cause a refresh storm.
    fn is_fresh(&self, now: DateTime<Utc>) -> bool {
        self.expires_at > now
            && (self.expires_at - now > REFRESH_AHEAD
                || now - self.refreshed_at < Duration::minutes(1))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    WeChat(#[from] WeChatError),
    #[error("token cache: {0}")]
    Db(#[from] sqlx::Error),
}

#[derive(Clone)]
pub struct TokenManager {
    pool: PgPool,
    client: WeChatClient,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
    refresh_locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl TokenManager {
    pub fn new(pool: PgPool, client: WeChatClient) -> Self {
        Self {
            pool,
            client,
            cache: Default::default(),
            refresh_locks: Default::default(),
        }
    }

    fn cached(&self, appid: &str) -> Option<Cached> {
        self.cache
            .lock()
            .expect("token cache lock")
            .get(appid)
            .cloned()
    }

    /// A valid token for the app.
    pub async fn token(&self, app: &App) -> Result<SecretString, TokenError> {
        if let Some(c) = self.cached(&app.appid).filter(|c| c.is_fresh(Utc::now())) {
            return Ok(c.token);
        }
        self.refresh(app, None).await
    }

    /// WeChat refused `rejected` (40001 / 42001 / 40014): get a new one unless another
    /// caller already did.
    pub async fn replace_rejected(
        &self,
        app: &App,
        rejected: &str,
    ) -> Result<SecretString, TokenError> {
        self.refresh(app, Some(rejected)).await
    }

    async fn refresh(&self, app: &App, rejected: Option<&str>) -> Result<SecretString, TokenError> {
        let lock = {
            let mut locks = self.refresh_locks.lock().expect("refresh locks");
            locks.entry(app.appid.clone()).or_default().clone()
        };
        let _in_process = lock.lock().await;
        let usable = |c: &Cached| {
            c.is_fresh(Utc::now()) && rejected.is_none_or(|bad| c.token.expose_secret() != bad)
        };
        // Someone in this process may have refreshed while we waited.
        if let Some(c) = self.cached(&app.appid).filter(usable) {
            return Ok(c.token);
        }
        let mut lock = access_tokens::lock_for_refresh(&self.pool, &app.appid).await?;
        let stored = lock.stored().await?.map(|r| Cached {
            token: r.token,
            expires_at: r.expires_at,
            refreshed_at: r.refreshed_at,
        });
        if let Some(c) = stored.filter(usable) {
            self.remember(&app.appid, c.clone());
            lock.release().await?;
            return Ok(c.token);
        }
        crate::metrics::metrics()
            .token_refreshes
            .with_label_values(&[&app.appid])
            .inc();
        // The lock stays held across this one call on purpose: other instances must wait
        // for its result rather than call too.
        let issued = match app.token_api {
            // 42001 (expired) is cured by a normal call; a token WeChat calls invalid while
            // unexpired needs force_refresh (limited to 20 a day, so only then).
            TokenApi::Stable => {
                let force = rejected.is_some()
                    && self
                        .cached(&app.appid)
                        .is_some_and(|c| c.expires_at > Utc::now());
                self.client
                    .stable_token(&app.appid, &app.secret, force)
                    .await?
            }
            TokenApi::Classic => self.client.classic_token(&app.appid, &app.secret).await?,
        };
        let now = Utc::now();
        let fresh = Cached {
            token: issued.access_token,
            expires_at: now + Duration::seconds(issued.expires_in),
            refreshed_at: now,
        };
        lock.save(&StoredToken {
            token: fresh.token.clone(),
            expires_at: fresh.expires_at,
            refreshed_at: fresh.refreshed_at,
        })
        .await?;
        tracing::info!(appid = %app.appid, api = app.token_api.as_str(), "access_token refreshed");
        self.remember(&app.appid, fresh.clone());
        Ok(fresh.token)
    }

    fn remember(&self, appid: &str, cached: Cached) {
        self.cache
            .lock()
            .expect("token cache lock")
            .insert(appid.to_string(), cached);
    }
}
