//! The send pipeline for one app: claim a batch (credits consumed in the same
//! statement, committed), send outside any transaction with bounded concurrency under the
//! app's rate limit, then record every outcome and its credit side effects in one
//! transaction. What each WeChat answer means is decided by `rules::decide`, a pure
//! function.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use chrono_tz::Tz;
use futures::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::rules::{
    decide, next_quota_reset, Attempt, CampaignStop, Delivered, Effect, Next, MAX_SEND_ATTEMPTS,
};
use crate::config::Settings;
use crate::domain::app::App;
use crate::domain::campaign::{render_data, CampaignKind};
use crate::domain::delivery::DeliveryStatus;
use crate::store::{
    self,
    deliveries::{Claimed, CreditEffects, Outcome},
    runs::ActiveRun,
};
use crate::wechat::{
    client::{SubscribeMessage, TemplateMessage, WeChatClient, WeChatError},
    token::{TokenError, TokenManager},
};

/// How a sender paces and protects its work (from `Settings`).
#[derive(Clone, Copy, Debug)]
pub struct SendSettings {
    /// Sends in flight per app, and deliveries claimed per batch.
    pub concurrency: usize,
    /// First retry delay after a transient failure; doubles per attempt.
    pub retry_backoff: Duration,
    /// An app's sender lease (renewed every third of it).
    pub app_lease: Duration,
    /// How long a claimed delivery belongs to its sender before recovery takes it back.
    pub send_lease: Duration,
}

impl From<&Settings> for SendSettings {
    fn from(s: &Settings) -> Self {
        Self {
            concurrency: s.send_concurrency.max(1),
            retry_backoff: s.retry_backoff,
            app_lease: s.app_lease,
            send_lease: s.send_lease,
        }
    }
}

/// What every delivery of one claimed batch shares.
struct Batch<'a> {
    app: &'a App,
    run: &'a ActiveRun,
    /// The campaign's `data`, rendered per user.
    data: Map<String, Value>,
    timezone: Tz,
    limiter: &'a DefaultDirectRateLimiter,
}

#[derive(Clone)]
pub struct Pipeline {
    pool: PgPool,
    wechat: WeChatClient,
    tokens: TokenManager,
    settings: SendSettings,
}

impl Pipeline {
    pub fn new(
        pool: PgPool,
        wechat: WeChatClient,
        tokens: TokenManager,
        settings: SendSettings,
    ) -> Self {
        Self {
            pool,
            wechat,
            tokens,
            settings,
        }
    }

    pub fn app_lease(&self) -> Duration {
        self.settings.app_lease
    }

    /// Sends for one app while this instance holds its lease and it has running runs.
    pub async fn work_app(
        &self,
        appid: &str,
        owner: Uuid,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut app = store::apps::find(&self.pool, appid)
            .await?
            .ok_or_else(|| anyhow::anyhow!("app {appid} disappeared"))?;
        let mut limiter = Arc::new(rate_limiter(app.send_rate_per_sec));
        let mut renewed = Instant::now();
        // Per run: the highest delivery id claimed in the current pass.
        let mut cursors: std::collections::HashMap<Uuid, i64> = Default::default();
        store::deliveries::recover_stale(&self.pool, appid).await?;
        tracing::info!(%appid, "sender started");
        while !shutdown.is_cancelled() {
            if renewed.elapsed() >= self.settings.app_lease / 3 {
                if !store::leases::acquire_app_lease(
                    &self.pool,
                    appid,
                    owner,
                    self.settings.app_lease.as_secs_f64(),
                )
                .await?
                {
                    tracing::warn!(%appid, "lost the app lease; another instance sends now");
                    return Ok(());
                }
                renewed = Instant::now();
                store::deliveries::recover_stale(&self.pool, appid).await?;
                let fresh = store::apps::find(&self.pool, appid).await?;
                if let Some(fresh) = fresh {
                    if fresh.send_rate_per_sec != app.send_rate_per_sec {
                        limiter = Arc::new(rate_limiter(fresh.send_rate_per_sec));
                    }
                    app = fresh;
                }
            }
            let runs = store::runs::active_runs(&self.pool, appid).await?;
            if runs.is_empty() {
                break;
            }
            let mut claimed_any = false;
            for run in &runs {
                let after = cursors.get(&run.run_id).copied().unwrap_or(0);
                let (claimed, last_id) = self.step(&app, run, &limiter, after).await?;
                if claimed > 0 {
                    cursors.insert(run.run_id, last_id);
                    claimed_any = true;
                } else if after > 0 {
                    // The pass is done; deliveries put back behind the cursor (next formId,
                    // WeChat unreachable) are found by a pass from the start.
                    cursors.insert(run.run_id, 0);
                    claimed_any = true;
                } else {
                    store::runs::finish_run_if_done(&self.pool, run.run_id).await?;
                }
            }
            if !claimed_any {
                // Only deliveries in flight elsewhere remain; look again shortly.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
        }
        store::leases::release_app_lease(&self.pool, appid, owner).await?;
        tracing::info!(%appid, "sender stopped");
        Ok(())
    }

    /// Claims (ids above `after`), sends and records one batch of a run. Returns how many
    /// deliveries it claimed and the highest id among them.
    pub async fn step(
        &self,
        app: &App,
        run: &ActiveRun,
        limiter: &Arc<DefaultDirectRateLimiter>,
        after: i64,
    ) -> anyhow::Result<(usize, i64)> {
        let limit = self.settings.concurrency as i64;
        let lease_secs = self.settings.send_lease.as_secs_f64();
        let claimed_at = Instant::now();
        let claimed = match run.kind {
            CampaignKind::Template => {
                store::deliveries::claim_template_batch(
                    &self.pool,
                    run.run_id,
                    limit,
                    run.formid_pick,
                    lease_secs,
                    after,
                )
                .await?
            }
            CampaignKind::Subscribe => {
                store::deliveries::claim_subscribe_batch(
                    &self.pool,
                    run.run_id,
                    limit,
                    &run.template_id,
                    lease_secs,
                    after,
                )
                .await?
            }
        };
        let count = claimed.len();
        let last_id = claimed.iter().map(|d| d.id).max().unwrap_or(after);
        let to_send: Vec<Claimed> = claimed
            .into_iter()
            .filter(|d| d.status == DeliveryStatus::Sending)
            .collect();
        if to_send.is_empty() {
            return Ok((count, last_id));
        }
        let batch = Batch {
            app,
            run,
            data: match &run.data {
                Value::Object(m) => m.clone(),
                _ => Map::new(),
            },
            timezone: run.timezone.parse().unwrap_or(chrono_tz::Asia::Shanghai),
            limiter,
        };
        let results: Vec<Delivered> = futures::stream::iter(to_send)
            .map(|d| self.deliver(&batch, d))
            .buffer_unordered(self.settings.concurrency)
            .collect()
            .await;
        let mut effects = CreditEffects::default();
        let mut stop = None;
        let mut outcomes = Vec::with_capacity(results.len());
        let metrics = crate::metrics::metrics();
        let (sends, send_errors) = (&metrics.sends, &metrics.send_errors);
        for r in results {
            if r.outcome.status != DeliveryStatus::Pending {
                let (kind, outcome) = (run.kind.as_str(), r.outcome.status.as_str());
                sends.with_label_values(&[&app.appid, kind, outcome]).inc();
                if r.outcome.status == DeliveryStatus::Failed {
                    let errcode = r.outcome.errcode.as_deref().unwrap_or("unknown");
                    send_errors
                        .with_label_values(&[&app.appid, kind, errcode])
                        .inc();
                }
            }
            match r.effect {
                Effect::None => {}
                Effect::InvalidateFormid(f) => effects.invalidate_formids.push(f),
                Effect::ReturnFormid(f) => effects.return_formids.push(f),
                Effect::ReturnGrant(u) => effects.return_grants.push(u),
                Effect::ZeroGrant(u) => effects.zero_grants.push(u),
            }
            if r.stop.is_some() && stop.is_none() {
                stop = r.stop;
            }
            outcomes.push(r.outcome);
        }
        self.record(&outcomes, &effects, &run.template_id, claimed_at)
            .await?;
        match stop {
            Some(CampaignStop::Failed(err)) => {
                tracing::warn!(campaign_id = %run.campaign_id, error = %err, "campaign failed");
                store::campaigns::fail(&self.pool, run.campaign_id, &err).await?;
            }
            Some(CampaignStop::QuotaReached(err)) => {
                let resume_at = next_quota_reset(Utc::now());
                tracing::warn!(campaign_id = %run.campaign_id, %resume_at, "daily quota reached; paused");
                store::campaigns::pause_for_quota(&self.pool, run.campaign_id, resume_at, &err)
                    .await?;
            }
            None => {}
        }
        Ok((count, last_id))
    }

    /// Sends one claimed delivery (with its retries) and decides its outcome.
    async fn deliver(&self, batch: &Batch<'_>, delivery: Claimed) -> Delivered {
        let Batch { app, run, .. } = *batch;
        let empty = Map::new();
        let vars = match &delivery.vars {
            Some(Value::Object(m)) => m,
            _ => &empty,
        };
        let rendered = render_data(
            &batch.data,
            &delivery.openid,
            vars,
            Utc::now(),
            batch.timezone,
        );
        let mut attempt = Attempt {
            kind: run.kind,
            outcome_unknown: delivery.outcome_unknown,
            attempts: delivery.attempts,
            token_refreshed: false,
            delivery,
        };
        let mut rejected_token: Option<String> = None;
        loop {
            let token = match &rejected_token {
                Some(bad) => self.tokens.replace_rejected(app, bad).await,
                None => self.tokens.token(app).await,
            };
            let token = match token {
                Ok(t) => t,
                Err(TokenError::WeChat(e)) => {
                    // No token: judge it like a send failure, minus the formId effects.
                    attempt.attempts += 1;
                    match decide(&attempt, &Err(e), MAX_SEND_ATTEMPTS) {
                        Next::RetryAfterBackoff => {
                            self.backoff(attempt.attempts).await;
                            continue;
                        }
                        // The token call itself was refused as a stale credential: one
                        // more try, then it is final (it must not loop while the lease lasts).
                        Next::RefreshTokenAndRetry => {
                            attempt.token_refreshed = true;
                            self.backoff(attempt.attempts).await;
                            continue;
                        }
                        Next::Done(d) => return d,
                    }
                }
                Err(TokenError::Db(e)) => {
                    tracing::warn!(error = %e, "token cache unavailable");
                    attempt.attempts += 1;
                    if attempt.attempts < MAX_SEND_ATTEMPTS {
                        self.backoff(attempt.attempts).await;
                        continue;
                    }
                    let err = WeChatError::Unreachable(format!("token cache: {e}"));
                    if let Next::Done(d) = decide(&attempt, &Err(err), 0) {
                        return d;
                    }
                    unreachable!("a transient error past the attempt limit is final");
                }
            };
            batch.limiter.until_ready().await;
            attempt.attempts += 1;
            let result = if run.kind == CampaignKind::Template {
                let form_id = attempt.delivery.form_id.as_deref().unwrap_or_default();
                self.wechat
                    .send_template(
                        token.expose_secret(),
                        &TemplateMessage {
                            touser: &attempt.delivery.openid,
                            template_id: &run.template_id,
                            page: run.page.as_deref(),
                            form_id,
                            data: &rendered,
                            emphasis_keyword: run.emphasis_keyword.as_deref(),
                        },
                    )
                    .await
            } else {
                self.wechat
                    .send_subscribe(
                        token.expose_secret(),
                        &SubscribeMessage {
                            touser: &attempt.delivery.openid,
                            template_id: &run.template_id,
                            page: run.page.as_deref(),
                            miniprogram_state: run.miniprogram_state.as_deref(),
                            lang: run.lang.as_deref(),
                            data: &rendered,
                        },
                    )
                    .await
            };
            if let Err(e) = &result {
                if e.outcome_unknown() {
                    attempt.outcome_unknown = true;
                }
            }
            match decide(&attempt, &result, MAX_SEND_ATTEMPTS) {
                Next::Done(d) => return d,
                Next::RefreshTokenAndRetry => {
                    attempt.token_refreshed = true;
                    rejected_token = Some(token.expose_secret().to_string());
                }
                Next::RetryAfterBackoff => self.backoff(attempt.attempts).await,
            }
        }
    }

    /// Records a sent batch. WeChat has acted on it already, so a database outage must not
    /// lose the outcomes (a subscribe send would end `unknown_outcome` although it was
    /// sent, a template send would be repeated for its 41029): retried while the batch's
    /// send lease lasts (past it the deliveries belong to `recover_stale`), but only when no
    /// connection could be had at all. Nothing was written then; after any other error the
    /// transaction may have committed, and its credit effects must not apply twice.
    async fn record(
        &self,
        outcomes: &[Outcome],
        effects: &CreditEffects,
        template_id: &str,
        claimed_at: Instant,
    ) -> sqlx::Result<()> {
        let mut delay = Duration::from_millis(200);
        loop {
            match store::deliveries::record(&self.pool, outcomes, effects, template_id).await {
                Err(sqlx::Error::PoolTimedOut)
                    if claimed_at.elapsed() + delay < self.settings.send_lease =>
                {
                    tracing::warn!("no database connection to record sent messages; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                done => return done,
            }
        }
    }

    async fn backoff(&self, attempts: i16) {
        let factor = 1u32 << (attempts.clamp(1, 6) - 1);
        tokio::time::sleep(self.settings.retry_backoff * factor).await;
    }
}

fn rate_limiter(per_sec: i32) -> DefaultDirectRateLimiter {
    let rate = NonZeroU32::new(per_sec.max(1) as u32).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_second(rate))
}
