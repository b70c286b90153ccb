//! Syncing an app's subscribe templates from WeChat (`gettemplate`): on an admin's
//! request, and daily for every app synced before. The answer replaces what is stored,
//! so a sync is idempotent and any number of instances may run one.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use secrecy::ExposeSecret;
use sqlx::PgPool;

use crate::domain::app::App;
use crate::domain::template::Template;
use crate::store::{self, templates::SyncedTemplate};
use crate::wechat::{
    client::{WeChatClient, WeChatError, WxTemplate},
    errcode::ErrorClass,
    token::{TokenError, TokenManager},
};

/// Calls of `gettemplate` per sync when WeChat is busy or slow (a read, safe to repeat).
const MAX_ATTEMPTS: u32 = 3;
/// An app's scheduled sync is taken by one instance per this many seconds: every
/// instance fires the daily job at the same minute.
const SCHEDULED_SYNC_GAP_SECS: f64 = 3600.0;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("no app {0:?} is registered")]
    UnknownApp(String),
    #[error(transparent)]
    WeChat(#[from] WeChatError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl From<TokenError> for SyncError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::WeChat(e) => Self::WeChat(e),
            TokenError::Db(e) => Self::Db(e),
        }
    }
}

#[derive(Clone)]
pub struct TemplateSync {
    pool: PgPool,
    wechat: WeChatClient,
    tokens: TokenManager,
    retry_backoff: Duration,
}

impl TemplateSync {
    pub fn new(
        pool: PgPool,
        wechat: WeChatClient,
        tokens: TokenManager,
        retry_backoff: Duration,
    ) -> Self {
        Self {
            pool,
            wechat,
            tokens,
            retry_backoff,
        }
    }

    /// Reads the app's templates from WeChat and stores exactly those; returns them.
    #[tracing::instrument(skip_all, fields(appid), err)]
    pub async fn sync_app(&self, appid: &str) -> Result<Vec<SyncedTemplate>, SyncError> {
        let app = store::apps::find(&self.pool, appid)
            .await?
            .ok_or_else(|| SyncError::UnknownApp(appid.to_string()))?;
        // One row per template id, whatever the answer repeats.
        let mut seen = HashSet::new();
        let templates: Vec<Template> = self
            .fetch(&app)
            .await?
            .into_iter()
            .filter(|t| seen.insert(t.template_id.clone()))
            .map(to_domain)
            .collect();
        store::templates::replace_all(&self.pool, appid, &templates, Utc::now()).await?;
        tracing::info!(%appid, templates = templates.len(), "subscribe templates synced");
        Ok(store::templates::list(&self.pool, appid).await?)
    }

    /// The daily job: syncs every app synced before, each on one instance only. A failing
    /// app is logged and the others go on. Returns how many apps this instance synced.
    pub async fn sync_all(&self) -> anyhow::Result<usize> {
        let mut synced = 0;
        for appid in store::templates::synced_apps(&self.pool).await? {
            if !store::templates::claim_scheduled_sync(&self.pool, &appid, SCHEDULED_SYNC_GAP_SECS)
                .await?
            {
                continue;
            }
            match self.sync_app(&appid).await {
                Ok(_) => synced += 1,
                Err(e) => tracing::warn!(%appid, error = %e, "scheduled template sync failed"),
            }
        }
        Ok(synced)
    }

    /// `gettemplate` with the app's shared token, handled like a send: a token WeChat
    /// calls stale is replaced once, busy and unanswered calls are tried again.
    async fn fetch(&self, app: &App) -> Result<Vec<WxTemplate>, SyncError> {
        let mut rejected: Option<String> = None;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let token = match &rejected {
                Some(bad) => self.tokens.replace_rejected(app, bad).await,
                None => self.tokens.token(app).await,
            };
            let result = match token {
                Ok(token) => self
                    .wechat
                    .get_templates(token.expose_secret())
                    .await
                    .map_err(|e| (e, Some(token))),
                Err(TokenError::WeChat(e)) => Err((e, None)),
                Err(TokenError::Db(e)) => return Err(e.into()),
            };
            let (e, token) = match result {
                Ok(templates) => return Ok(templates),
                Err(failure) => failure,
            };
            match (e.class(), token) {
                (ErrorClass::CredentialExpired, Some(token)) if rejected.is_none() => {
                    rejected = Some(token.expose_secret().to_string());
                }
                (ErrorClass::Transient, _) if attempts < MAX_ATTEMPTS => {
                    tokio::time::sleep(self.retry_backoff * 2u32.pow(attempts - 1)).await;
                }
                _ => return Err(e.into()),
            }
        }
    }
}

fn to_domain(t: WxTemplate) -> Template {
    let enum_values = t
        .keyword_enum_values
        .into_iter()
        .map(|e| (e.keyword_code, e.values))
        .collect();
    Template::from_content(
        t.template_id,
        t.title,
        t.kind,
        &t.content,
        t.example,
        &enum_values,
    )
}
