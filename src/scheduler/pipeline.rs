//! The send pipeline for one app: claim a batch (credits consumed in the same
//! statement, committed), send outside any transaction with bounded concurrency under the
//! app's rate limit, then record every outcome and its credit side effects in one
//! transaction. What each WeChat answer means is decided by `rules::decide`, a pure
//! function.
//!
//! A subscribe campaign on a synced template whose data has per-user placeholders is
//! claimed in two steps: the batch's pending deliveries are read and each user's data
//! rendered and checked against the template's rules (loaded once per run), then one
//! statement fails the broken ones (`invalid_data`) and spends grants for the rest only.

use std::collections::{hash_map::Entry, HashMap};
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
use crate::domain::template::DataRules;
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
    /// The synced template's rules for this run's data, if any.
    rules: Option<&'a DataRules>,
    limiter: &'a DefaultDirectRateLimiter,
}

impl Batch<'_> {
    /// One user's data as sent: placeholders filled, over-long values cut under
    /// `data_policy: truncate`.
    fn render(&self, openid: &str, vars: Option<&Value>) -> Map<String, Value> {
        let empty = Map::new();
        let vars = match vars {
            Some(Value::Object(m)) => m,
            _ => &empty,
        };
        let mut rendered = render_data(&self.data, openid, vars, Utc::now(), self.timezone);
        if let Some(rules) = self.rules {
            rules.truncate(&mut rendered);
        }
        rendered
    }
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
        let mut cursors: HashMap<Uuid, i64> = Default::default();
        // Per run: its synced template's rules, read once (not per batch or user).
        let mut rules: HashMap<Uuid, Option<DataRules>> = Default::default();
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
            rules.retain(|run_id, _| runs.iter().any(|r| r.run_id == *run_id));
            let mut claimed_any = false;
            for run in &runs {
                if let Entry::Vacant(unseen) = rules.entry(run.run_id) {
                    unseen.insert(self.data_rules(appid, run).await?);
                }
                let run_rules = rules.get(&run.run_id).and_then(Option::as_ref);
                let after = cursors.get(&run.run_id).copied().unwrap_or(0);
                let (claimed, last_id) = self.step(&app, run, run_rules, &limiter, after).await?;
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

    /// The rules a subscribe run's data must follow, from its template as last synced;
    /// `None` for template runs and templates never synced (not checked).
    async fn data_rules(&self, appid: &str, run: &ActiveRun) -> sqlx::Result<Option<DataRules>> {
        if run.kind != CampaignKind::Subscribe {
            return Ok(None);
        }
        let Some(template) = store::templates::find(&self.pool, appid, &run.template_id).await?
        else {
            return Ok(None);
        };
        let data = match &run.data {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        Ok(Some(DataRules::new(&template, &data, run.data_policy)))
    }

    /// Claims (ids above `after`), sends and records one batch of a run. Returns how many
    /// deliveries it claimed and the highest id among them.
    pub async fn step(
        &self,
        app: &App,
        run: &ActiveRun,
        rules: Option<&DataRules>,
        limiter: &Arc<DefaultDirectRateLimiter>,
        after: i64,
    ) -> anyhow::Result<(usize, i64)> {
        let limit = self.settings.concurrency as i64;
        let lease_secs = self.settings.send_lease.as_secs_f64();
        let claimed_at = Instant::now();
        let batch = Batch {
            app,
            run,
            data: match &run.data {
                Value::Object(m) => m.clone(),
                _ => Map::new(),
            },
            timezone: run.timezone.parse().unwrap_or(chrono_tz::Asia::Shanghai),
            rules,
            limiter,
        };
        // Data checked before the claim, ready to send, by delivery id.
        let mut prepared: HashMap<i64, Map<String, Value>> = HashMap::new();
        let claimed = match (run.kind, rules) {
            (CampaignKind::Subscribe, Some(rules)) if rules.checks_each_user() => {
                let pending =
                    store::deliveries::pending_batch(&self.pool, run.run_id, limit, after).await?;
                let mut ids = Vec::with_capacity(pending.len());
                let mut problems = Vec::with_capacity(pending.len());
                for p in pending {
                    let mut data = batch.render(&p.openid, p.vars.as_ref());
                    ids.push(p.id);
                    match rules.apply(&mut data) {
                        Ok(()) => {
                            prepared.insert(p.id, data);
                            problems.push(None);
                        }
                        Err(problem) => problems.push(Some(problem)),
                    }
                }
                if ids.is_empty() {
                    Vec::new()
                } else {
                    store::deliveries::claim_subscribe_checked(
                        &self.pool,
                        run.run_id,
                        &run.template_id,
                        lease_secs,
                        &ids,
                        &problems,
                    )
                    .await?
                }
            }
            (CampaignKind::Template, _) => {
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
            (CampaignKind::Subscribe, _) => {
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
        let results: Vec<Delivered> = futures::stream::iter(to_send)
            .map(|d| {
                let data = prepared.remove(&d.id);
                self.deliver(&batch, d, data)
            })
            .buffer_unordered(self.settings.concurrency)
            .collect()
            .await;
        let mut effects = CreditEffects::default();
        let mut stop = None;
        let mut outcomes = Vec::with_capacity(results.len());
        let sends = &crate::metrics::metrics().sends;
        for r in results {
            if r.outcome.status != DeliveryStatus::Pending {
                sends
                    .with_label_values(&[
                        &app.appid,
                        run.kind.as_str(),
                        r.outcome.status.as_str(),
                        r.outcome.errcode.as_deref().unwrap_or("0"),
                    ])
                    .inc();
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

    /// Sends one claimed delivery (with its retries) and decides its outcome. `prepared`:
    /// its data as rendered and checked before the claim; rendered now when absent.
    async fn deliver(
        &self,
        batch: &Batch<'_>,
        delivery: Claimed,
        prepared: Option<Map<String, Value>>,
    ) -> Delivered {
        let Batch { app, run, .. } = *batch;
        let rendered =
            prepared.unwrap_or_else(|| batch.render(&delivery.openid, delivery.vars.as_ref()));
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
                        Next::RetryAfterBackoff | Next::RefreshTokenAndRetry => {
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
