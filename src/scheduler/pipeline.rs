//! The send pipeline for one app: claim a batch (credits consumed in the same
//! statement, committed), send outside any transaction with bounded concurrency under the
//! app's rate limit, then record every outcome and its credit side effects in one
//! transaction. What each WeChat answer means is decided in `decide`, a pure function.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Days, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use futures::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use secrecy::ExposeSecret;
use serde_json::{json, Map, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::campaign::render_data;
use crate::store::{
    self,
    apps::AppRecord,
    campaigns::ActiveRun,
    deliveries::{Claimed, CreditEffects, Outcome},
};
use crate::wechat::{
    client::{SendReceipt, SubscribeMessage, TemplateMessage, WeChatClient, WeChatError},
    errcode::{self, ErrorClass},
    token::{TokenError, TokenManager},
};

/// Transient failures (-1, 5xx, timeouts) are tried this often with the same credit.
pub const MAX_SEND_ATTEMPTS: i16 = 3;
/// A user's formIds tried per run when WeChat calls them invalid or used (41028 / 41029).
pub const MAX_FORMIDS_PER_USER_PER_RUN: i16 = 3;
/// When WeChat cannot be reached at all (no connection), nothing was sent: the delivery
/// waits this long and is tried again, however long the outage lasts.
pub const UNREACHABLE_RETRY_SECS: f64 = 10.0;

#[derive(Clone)]
pub struct Pipeline {
    pool: PgPool,
    wechat: WeChatClient,
    tokens: TokenManager,
    concurrency: usize,
    retry_backoff: Duration,
    app_lease: Duration,
    send_lease: Duration,
}

/// Why a campaign must stop, found while sending.
#[derive(Debug, Clone, PartialEq)]
pub enum CampaignStop {
    Failed(Value),
    QuotaReached(Value),
}

/// One delivery's result: its record, its credit effect, maybe a campaign stop.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    pub outcome: Outcome,
    pub effect: Effect,
    pub stop: Option<CampaignStop>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    None,
    InvalidateFormid(i64),
    ReturnFormid(i64),
    ReturnGrant(i64),
    ZeroGrant(i64),
}

/// What the pipeline does next after one send attempt.
#[derive(Debug, PartialEq)]
pub enum Next {
    Done(Delivered),
    RefreshTokenAndRetry,
    RetryAfterBackoff,
}

/// State of one delivery across its attempts.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub template_kind: bool,
    pub delivery: Claimed,
    pub attempts: i16,
    pub outcome_unknown: bool,
    pub token_refreshed: bool,
}

fn last_error(e: &WeChatError) -> Value {
    match e {
        WeChatError::Api { errcode, errmsg } => {
            let hint = (*errcode == errcode::API_UNSUPPORTED).then_some(
                "WeChat switched the template-message API off for this account (45103): use a subscribe campaign",
            );
            json!({"errcode": errcode, "errmsg": hint.map(str::to_string).unwrap_or_else(|| errmsg.clone())})
        }
        other => json!({"errcode": other.code_for_record(), "errmsg": other.to_string()}),
    }
}

/// The delivery rules of API.md, as a pure decision over one send result.
pub fn decide(a: &Attempt, result: &Result<SendReceipt, WeChatError>, max_attempts: i16) -> Next {
    let d = &a.delivery;
    let outcome = |status: &'static str, e: Option<&WeChatError>, drop_formid: bool| Outcome {
        id: d.id,
        status,
        errcode: e.map(WeChatError::code_for_record),
        errmsg: e.map(|e| match e {
            WeChatError::Api { errmsg, .. } => errmsg.clone(),
            other => other.to_string(),
        }),
        attempts: a.attempts,
        msg_id: None,
        outcome_unknown: a.outcome_unknown,
        drop_formid,
        retry_in_secs: 0.0,
    };
    let give_back = || match (a.template_kind, d.formid_id) {
        (true, Some(f)) => Effect::ReturnFormid(f),
        (false, _) => Effect::ReturnGrant(d.user_id),
        _ => Effect::None,
    };
    let e = match result {
        Ok(receipt) => {
            let mut o = outcome("sent", None, false);
            o.msg_id = receipt.msg_id.clone();
            o.errcode = Some("0".into());
            o.errmsg = Some("ok".into());
            return Next::Done(Delivered {
                outcome: o,
                effect: Effect::None,
                stop: None,
            });
        }
        Err(e) => e,
    };
    let done = |outcome, effect, stop| {
        Next::Done(Delivered {
            outcome,
            effect,
            stop,
        })
    };
    match e.class() {
        ErrorClass::Success => unreachable!("errcode 0 is never an error"),
        ErrorClass::CredentialExpired if !a.token_refreshed => Next::RefreshTokenAndRetry,
        ErrorClass::Transient => {
            // For subscribe messages only a clean refusal (-1, or never connected) is
            // retried: after a timeout or 5xx the user may have the message already.
            if !a.template_kind && e.outcome_unknown() {
                let mut o = outcome("failed", Some(e), false);
                o.errcode = Some("unknown_outcome".into());
                o.outcome_unknown = true;
                return done(o, Effect::None, None);
            }
            if a.attempts < max_attempts {
                Next::RetryAfterBackoff
            } else if matches!(e, WeChatError::Unreachable(_)) {
                // Never reached WeChat: wait for it rather than fail the user. A template
                // delivery keeps its formId; a subscribe grant goes back (it is claimed anew).
                let mut o = outcome("pending", Some(e), !a.template_kind);
                o.retry_in_secs = UNREACHABLE_RETRY_SECS;
                let effect = if a.template_kind {
                    Effect::None
                } else {
                    Effect::ReturnGrant(d.user_id)
                };
                done(o, effect, None)
            } else {
                done(outcome("failed", Some(e), false), Effect::None, None)
            }
        }
        ErrorClass::BadFormId => {
            let formid = d.formid_id.unwrap_or_default();
            // 41029 after a send whose outcome we never saw: that send got through.
            if e.errcode() == Some(errcode::FORM_ID_USED) && a.outcome_unknown {
                let mut o = outcome("sent", None, false);
                o.errcode = Some("0".into());
                o.errmsg = Some("ok (confirmed by 41029 after an unknown outcome)".into());
                return done(o, Effect::None, None);
            }
            if d.formids_tried < MAX_FORMIDS_PER_USER_PER_RUN {
                let mut o = outcome("pending", Some(e), true);
                o.outcome_unknown = false;
                done(o, Effect::InvalidateFormid(formid), None)
            } else {
                done(
                    outcome("failed", Some(e), false),
                    Effect::InvalidateFormid(formid),
                    None,
                )
            }
        }
        ErrorClass::BadUser => {
            let effect = if e.errcode() == Some(errcode::USER_NOT_SUBSCRIBED) {
                Effect::ZeroGrant(d.user_id)
            } else {
                Effect::None
            };
            done(outcome("failed", Some(e), false), effect, None)
        }
        ErrorClass::CampaignConfig => done(
            outcome("pending", Some(e), true),
            give_back(),
            Some(CampaignStop::Failed(last_error(e))),
        ),
        ErrorClass::QuotaReached => done(
            outcome("pending", Some(e), true),
            give_back(),
            Some(CampaignStop::QuotaReached(last_error(e))),
        ),
        ErrorClass::CredentialExpired | ErrorClass::Unknown => {
            done(outcome("failed", Some(e), false), Effect::None, None)
        }
    }
}

/// The next 00:00 in Asia/Shanghai, when WeChat's daily quotas reset.
pub fn next_quota_reset(now: DateTime<Utc>) -> DateTime<Utc> {
    let tz = chrono_tz::Asia::Shanghai;
    let tomorrow = now.with_timezone(&tz).date_naive() + Days::new(1);
    tz.from_local_datetime(&tomorrow.and_time(NaiveTime::MIN))
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now + chrono::Duration::days(1))
}

impl Pipeline {
    pub fn new(
        pool: PgPool,
        wechat: WeChatClient,
        tokens: TokenManager,
        concurrency: usize,
        retry_backoff: Duration,
        app_lease: Duration,
        send_lease: Duration,
    ) -> Self {
        Self {
            pool,
            wechat,
            tokens,
            concurrency: concurrency.max(1),
            retry_backoff,
            app_lease,
            send_lease,
        }
    }

    pub fn app_lease(&self) -> Duration {
        self.app_lease
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
            if renewed.elapsed() >= self.app_lease / 3 {
                if !store::campaigns::acquire_app_lease(
                    &self.pool,
                    appid,
                    owner,
                    self.app_lease.as_secs_f64(),
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
            let runs = store::campaigns::active_runs(&self.pool, appid).await?;
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
                    store::campaigns::finish_run_if_done(&self.pool, run.run_id).await?;
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
        store::campaigns::release_app_lease(&self.pool, appid, owner).await?;
        tracing::info!(%appid, "sender stopped");
        Ok(())
    }

    /// Claims (ids above `after`), sends and records one batch of a run. Returns how many
    /// deliveries it claimed and the highest id among them.
    pub async fn step(
        &self,
        app: &AppRecord,
        run: &ActiveRun,
        limiter: &Arc<DefaultDirectRateLimiter>,
        after: i64,
    ) -> anyhow::Result<(usize, i64)> {
        let template_kind = run.kind == "template";
        let limit = self.concurrency as i64;
        let claimed_at = Instant::now();
        let claimed = if template_kind {
            store::deliveries::claim_template_batch(
                &self.pool,
                run.run_id,
                limit,
                &run.formid_pick,
                self.send_lease.as_secs_f64(),
                after,
            )
            .await?
        } else {
            store::deliveries::claim_subscribe_batch(
                &self.pool,
                run.run_id,
                limit,
                &run.template_id,
                self.send_lease.as_secs_f64(),
                after,
            )
            .await?
        };
        let count = claimed.len();
        let last_id = claimed.iter().map(|d| d.id).max().unwrap_or(after);
        let to_send: Vec<Claimed> = claimed
            .into_iter()
            .filter(|d| d.status == "sending")
            .collect();
        if to_send.is_empty() {
            return Ok((count, last_id));
        }
        let tz: Tz = run.timezone.parse().unwrap_or(chrono_tz::Asia::Shanghai);
        let data = match &run.data {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        let results: Vec<Delivered> = futures::stream::iter(to_send)
            .map(|d| self.deliver(app, run, &data, tz, template_kind, d, limiter))
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut effects = CreditEffects::default();
        let mut stop = None;
        let mut outcomes = Vec::with_capacity(results.len());
        let sends = &crate::metrics::metrics().sends;
        for r in results {
            if r.outcome.status != "pending" {
                sends
                    .with_label_values(&[
                        &app.appid,
                        &run.kind,
                        r.outcome.status,
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

    #[allow(clippy::too_many_arguments)]
    async fn deliver(
        &self,
        app: &AppRecord,
        run: &ActiveRun,
        data: &Map<String, Value>,
        tz: Tz,
        template_kind: bool,
        delivery: Claimed,
        limiter: &DefaultDirectRateLimiter,
    ) -> Delivered {
        let empty = Map::new();
        let vars = match &delivery.vars {
            Some(Value::Object(m)) => m,
            _ => &empty,
        };
        let rendered = render_data(data, &delivery.openid, vars, Utc::now(), tz);
        let mut attempt = Attempt {
            template_kind,
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
            limiter.until_ready().await;
            attempt.attempts += 1;
            let result = if template_kind {
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
                    if claimed_at.elapsed() + delay < self.send_lease =>
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
        tokio::time::sleep(self.retry_backoff * factor).await;
    }
}

fn rate_limiter(per_sec: i32) -> DefaultDirectRateLimiter {
    let rate = NonZeroU32::new(per_sec.max(1) as u32).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_second(rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(template_kind: bool) -> Attempt {
        Attempt {
            template_kind,
            delivery: Claimed {
                id: 1,
                user_id: 7,
                openid: "o1".into(),
                status: "sending".into(),
                formid_id: Some(99),
                form_id: Some("1700000000000".into()),
                formids_tried: 1,
                attempts: 0,
                outcome_unknown: false,
                vars: None,
            },
            attempts: 1,
            outcome_unknown: false,
            token_refreshed: false,
        }
    }

    fn api(code: i64) -> Result<SendReceipt, WeChatError> {
        Err(WeChatError::Api {
            errcode: code,
            errmsg: format!("err {code}"),
        })
    }

    fn done(next: Next) -> Delivered {
        match next {
            Next::Done(d) => d,
            other => panic!("expected a final decision, got {other:?}"),
        }
    }

    #[test]
    fn success_is_sent() {
        let d = done(decide(&attempt(true), &Ok(SendReceipt::default()), 3));
        assert_eq!(d.outcome.status, "sent");
        assert_eq!(d.effect, Effect::None);
    }

    #[test]
    fn bad_formid_invalidates_it_and_tries_the_next() {
        for code in [41028, 41029] {
            let d = done(decide(&attempt(true), &api(code), 3));
            assert_eq!(d.outcome.status, "pending", "{code}");
            assert!(d.outcome.drop_formid);
            assert_eq!(d.effect, Effect::InvalidateFormid(99));
        }
        let mut third = attempt(true);
        third.delivery.formids_tried = 3;
        assert_eq!(
            done(decide(&third, &api(41028), 3)).outcome.status,
            "failed"
        );
    }

    #[test]
    fn used_formid_after_an_unknown_outcome_means_sent() {
        let mut a = attempt(true);
        a.outcome_unknown = true;
        let d = done(decide(&a, &api(41029), 3));
        assert_eq!(d.outcome.status, "sent");
        assert_eq!(d.effect, Effect::None);
    }

    #[test]
    fn stale_token_is_refreshed_once() {
        for code in [40001, 42001, 40014] {
            assert_eq!(
                decide(&attempt(true), &api(code), 3),
                Next::RefreshTokenAndRetry
            );
            let mut again = attempt(true);
            again.token_refreshed = true;
            assert_eq!(done(decide(&again, &api(code), 3)).outcome.status, "failed");
        }
    }

    #[test]
    fn transient_errors_retry_until_the_attempt_limit() {
        for e in [
            api(-1),
            Err(WeChatError::Timeout),
            Err(WeChatError::Http { status: 502 }),
        ] {
            assert_eq!(decide(&attempt(true), &e, 3), Next::RetryAfterBackoff);
            let mut last = attempt(true);
            last.attempts = 3;
            assert_eq!(done(decide(&last, &e, 3)).outcome.status, "failed");
        }
    }

    #[test]
    fn an_unreachable_wechat_requeues_the_delivery_instead_of_failing_it() {
        let unreachable = Err(WeChatError::Unreachable("connection refused".into()));
        let mut a = attempt(true);
        a.attempts = 3;
        let d = done(decide(&a, &unreachable, 3));
        assert_eq!(d.outcome.status, "pending");
        assert!(!d.outcome.drop_formid, "the formId stays with the delivery");
        assert_eq!(d.outcome.retry_in_secs, UNREACHABLE_RETRY_SECS);
        let mut s = attempt(false);
        s.attempts = 3;
        let d = done(decide(&s, &unreachable, 3));
        assert_eq!(d.outcome.status, "pending");
        assert_eq!(d.effect, Effect::ReturnGrant(7));
    }

    #[test]
    fn subscribe_never_retries_an_unknown_outcome() {
        for e in [
            Err(WeChatError::Timeout),
            Err(WeChatError::Http { status: 500 }),
        ] {
            let d = done(decide(&attempt(false), &e, 3));
            assert_eq!(d.outcome.status, "failed");
            assert_eq!(d.outcome.errcode.as_deref(), Some("unknown_outcome"));
        }
        assert_eq!(
            decide(&attempt(false), &api(-1), 3),
            Next::RetryAfterBackoff
        );
    }

    #[test]
    fn campaign_errors_stop_the_campaign_and_give_the_credit_back() {
        for code in [40037, 41030, 47003, 45103] {
            let d = done(decide(&attempt(true), &api(code), 3));
            assert_eq!(d.outcome.status, "pending");
            assert_eq!(d.effect, Effect::ReturnFormid(99));
            assert!(matches!(d.stop, Some(CampaignStop::Failed(_))), "{code}");
        }
        let d = done(decide(&attempt(false), &api(40037), 3));
        assert_eq!(d.effect, Effect::ReturnGrant(7));
        let d = done(decide(&attempt(true), &api(45009), 3));
        assert!(matches!(d.stop, Some(CampaignStop::QuotaReached(_))));
        assert_eq!(d.effect, Effect::ReturnFormid(99));
    }

    #[test]
    fn template_api_switched_off_points_to_subscribe_campaigns() {
        let d = done(decide(&attempt(true), &api(45103), 3));
        let Some(CampaignStop::Failed(err)) = d.stop else {
            panic!("45103 must fail the campaign")
        };
        assert!(err["errmsg"]
            .as_str()
            .unwrap()
            .contains("subscribe campaign"));
    }

    #[test]
    fn bad_users_fail_and_43101_zeroes_the_grants() {
        assert_eq!(
            done(decide(&attempt(true), &api(40003), 3)).effect,
            Effect::None
        );
        let d = done(decide(&attempt(false), &api(43101), 3));
        assert_eq!(d.outcome.status, "failed");
        assert_eq!(d.effect, Effect::ZeroGrant(7));
    }

    #[test]
    fn unknown_errcodes_fail_the_delivery_keeping_the_errmsg() {
        let d = done(decide(&attempt(true), &api(61234), 3));
        assert_eq!(d.outcome.status, "failed");
        assert_eq!(d.outcome.errcode.as_deref(), Some("61234"));
        assert_eq!(d.outcome.errmsg.as_deref(), Some("err 61234"));
        assert_eq!(d.stop, None);
    }

    #[test]
    fn quota_resets_at_midnight_in_shanghai() {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 17, 0, 0).unwrap(); // 01:00 on the 26th there
        assert_eq!(
            next_quota_reset(now),
            Utc.with_ymd_and_hms(2026, 11, 26, 16, 0, 0).unwrap()
        );
    }
}
