//! The send pipeline for one app: claim a batch (credits consumed in the same
//! statement, committed), send outside any transaction with bounded concurrency under the
//! app's rate limit, then record every outcome and its credit side effects in one
//! transaction. What each WeChat answer means is decided by `rules::decide`, a pure
//! function.
//!
//! Triggered messages share the app's sender and pace, ahead of campaigns: everything due
//! is sent before each campaign batch, and while a batch is out a message lane watches for
//! new ones (woken by the API, or every `MESSAGE_POLL`) and sends them with priority on the
//! pace (`gate`). A sender with nothing left lingers a little, so a stream of messages does
//! not start a sender (and take the lease) for each one.
//!
//! A subscribe campaign on a synced template whose data has per-user placeholders is
//! claimed in two steps: the batch's pending deliveries are read and each user's data
//! rendered and checked against the template's rules (loaded once per run), then one
//! statement fails the broken ones (`invalid_data`) and spends grants for the rest only.
//!
//! Send hygiene: every claim checks the app's frequency cap in the database
//! (`claim_credits`), so a capped delivery ends at the claim; a send that did not reach its
//! user gives its slot in the window back with its outcome (`rules::keeps_slot`). Inside
//! the app's quiet hours a run is not claimed at all (it records when it resumes), unless
//! its campaign ignores them; triggered messages are sent whatever the hour.

mod test_send;

pub use test_send::{TestContent, TestResult, TestUser};

use std::collections::{hash_map::Entry, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use futures::StreamExt;
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::gate::{Priority, SendGate};
use super::rules::{
    decide, keeps_slot, message_outcome, next_quota_reset, Attempt, CampaignStop, Delivered,
    Effect, Next, MAX_SEND_ATTEMPTS,
};
use crate::config::Settings;
use crate::domain::app::App;
use crate::domain::campaign::{render_data, CampaignKind};
use crate::domain::delivery::DeliveryStatus;
use crate::domain::message::MessageStatus;
use crate::domain::template::DataRules;
use crate::store::{
    self,
    credits::CreditEffects,
    deliveries::{Claimed, Outcome, RunClaim},
    messages::{ClaimedMessage, MessageOutcome},
    runs::ActiveRun,
};
use crate::wechat::{
    client::{SubscribeMessage, TemplateMessage, WeChatClient, WeChatError},
    token::{TokenError, TokenManager},
};

/// How a sender paces and protects its work (from `Settings`).
#[derive(Clone, Copy, Debug)]
pub struct SendSettings {
    /// Sends in flight per batch, and deliveries claimed per batch.
    pub concurrency: usize,
    /// Batches of a run in flight at once.
    pub batches: usize,
    /// First retry delay after a transient failure; doubles per attempt.
    pub retry_backoff: Duration,
    /// An app's sender lease (renewed every third of it).
    pub app_lease: Duration,
    /// How long a claimed delivery belongs to its sender before recovery takes it back.
    pub send_lease: Duration,
    /// Deliveries a filling run is given per step (`store::runs::fill_next_chunk`).
    pub run_fill_chunk: i64,
}

impl From<&Settings> for SendSettings {
    fn from(s: &Settings) -> Self {
        Self {
            concurrency: s.send_concurrency.max(1),
            batches: s.send_batches.max(1),
            retry_backoff: s.retry_backoff,
            app_lease: s.app_lease,
            send_lease: s.send_lease,
            run_fill_chunk: s.run_fill_chunk,
        }
    }
}

/// How often a live sender looks for triggered messages queued through another instance
/// (the instance that took the request wakes its own sender at once).
pub const MESSAGE_POLL: Duration = Duration::from_millis(100);
/// How long a live sender with nothing to send waits for more before it stops.
pub const SENDER_LINGER: Duration = Duration::from_secs(3);
/// Batches each lane of a step takes before the sender looks at its other runs, its
/// triggered messages and its lease again (a step lasts about this many batch times).
const LANE_BATCHES: usize = 4;
/// How often a live sender whose every run holds for quiet hours looks again (triggered
/// messages still wake it at once).
pub const QUIET_POLL: Duration = Duration::from_secs(1);

/// What every delivery of one claimed batch shares.
struct Batch<'a> {
    app: &'a App,
    run: &'a ActiveRun,
    /// The campaign's `data`, rendered per user.
    data: Map<String, Value>,
    timezone: Tz,
    /// The synced template's rules for this run's data, if any.
    rules: Option<&'a DataRules>,
    gate: &'a SendGate,
}

/// What one send says, rendered for its user.
struct Outgoing<'a> {
    kind: CampaignKind,
    template_id: &'a str,
    page: Option<&'a str>,
    emphasis_keyword: Option<&'a str>,
    miniprogram_state: Option<&'a str>,
    lang: Option<&'a str>,
    data: Map<String, Value>,
}

/// How a sender is driven.
#[derive(Clone)]
pub enum Pace {
    /// By the clock: it waits for new work (woken through `wake`, or polling) and stops
    /// after `SENDER_LINGER` without any.
    Live { wake: Arc<Notify> },
    /// Stepped by hand (tests, tools): it sends what is due at this time and stops.
    Until(DateTime<Utc>),
}

impl Pace {
    /// The time messages must be due by; `None`: the database's clock.
    fn horizon(&self) -> Option<DateTime<Utc>> {
        match self {
            Self::Live { .. } => None,
            Self::Until(now) => Some(*now),
        }
    }
}

/// Why `work_while_busy` returned.
enum Stopped {
    Idle,
    LostLease,
    Shutdown,
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

/// Connections kept for claiming, besides the main pool: one per sender that claims at
/// the same moment; senders of more apps than this wait their turn for a few milliseconds.
const CLAIM_CONNECTIONS: u32 = 4;

/// What the lanes of a step share.
struct Lanes {
    /// The highest delivery id claimed (or read for a checked claim) so far.
    cursor: i64,
    /// A batch stopped the campaign: no lane claims again.
    stopped: bool,
}

/// What one batch did.
struct BatchDone {
    /// Deliveries claimed (those that ended at the claim included).
    claimed: usize,
    /// A WeChat answer stopped the campaign (failed, or paused for quota).
    stopped: bool,
}

impl BatchDone {
    /// Nothing claimed: another lane's batch stopped the campaign.
    const STOPPED: BatchDone = BatchDone {
        claimed: 0,
        stopped: true,
    };
}

#[derive(Clone)]
pub struct Pipeline {
    pool: PgPool,
    /// Where claims run: planned for their parameters every time (`db::claim_pool`).
    claims: PgPool,
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
            claims: crate::db::claim_pool(&pool, CLAIM_CONNECTIONS),
            pool,
            wechat,
            tokens,
            settings,
        }
    }

    pub fn app_lease(&self) -> Duration {
        self.settings.app_lease
    }

    /// Deliveries a run is given per statement while it fills.
    pub fn run_fill_chunk(&self) -> i64 {
        self.settings.run_fill_chunk
    }

    /// Sends for one app while this instance holds its lease and the app has work.
    pub async fn work_app(
        &self,
        appid: &str,
        owner: Uuid,
        shutdown: CancellationToken,
        pace: Pace,
    ) -> anyhow::Result<()> {
        tracing::info!(%appid, "sender started");
        loop {
            match self.work_while_busy(appid, owner, &shutdown, &pace).await? {
                Stopped::LostLease => {
                    tracing::warn!(%appid, "lost the app lease; another instance sends now");
                    return Ok(());
                }
                Stopped::Shutdown | Stopped::Idle => {}
            }
            store::leases::release_app_lease(&self.pool, appid, owner).await?;
            // A message queued while this sender was deciding to stop found the lease held
            // and started no sender: look once more now that the lease is free.
            if shutdown.is_cancelled()
                || !store::messages::has_due(&self.pool, appid, pace.horizon()).await?
                || !store::leases::acquire_app_lease(
                    &self.pool,
                    appid,
                    owner,
                    self.settings.app_lease.as_secs_f64(),
                )
                .await?
            {
                break;
            }
        }
        tracing::info!(%appid, "sender stopped");
        Ok(())
    }

    async fn work_while_busy(
        &self,
        appid: &str,
        owner: Uuid,
        shutdown: &CancellationToken,
        pace: &Pace,
    ) -> anyhow::Result<Stopped> {
        let mut app = store::apps::find(&self.pool, appid)
            .await?
            .ok_or_else(|| anyhow::anyhow!("app {appid} disappeared"))?;
        let mut gate = Arc::new(SendGate::new(app.send_rate_per_sec));
        let mut renewed = Instant::now();
        // Per run: the highest delivery id claimed in the current pass.
        let mut cursors: HashMap<Uuid, i64> = Default::default();
        let mut idle_since: Option<Instant> = None;
        // Per run: its synced template's rules, read once (not per batch or user).
        let mut rules: HashMap<Uuid, Option<DataRules>> = Default::default();
        store::deliveries::recover_stale(&self.pool, appid).await?;
        store::messages::recover_stale(&self.pool, appid).await?;
        // Fillers stop with this sender, whatever ends it.
        let filling_stop = shutdown.child_token();
        let _stop_fillers = filling_stop.clone().drop_guard();
        let mut fillers = Fillers::default();
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
                    return Ok(Stopped::LostLease);
                }
                renewed = Instant::now();
                store::deliveries::recover_stale(&self.pool, appid).await?;
                store::messages::recover_stale(&self.pool, appid).await?;
                let fresh = store::apps::find(&self.pool, appid).await?;
                if let Some(fresh) = fresh {
                    if fresh.send_rate_per_sec != app.send_rate_per_sec {
                        gate = Arc::new(SendGate::new(fresh.send_rate_per_sec));
                    }
                    app = fresh;
                }
            }
            // Triggered messages first: whatever is due leaves before the next campaign batch.
            if self.send_due_messages(&app, &gate, pace.horizon()).await? > 0 {
                idle_since = None;
                continue;
            }
            let runs = store::runs::active_runs(&self.pool, appid).await?;
            if runs.is_empty() {
                let Pace::Live { wake } = pace else {
                    return Ok(Stopped::Idle);
                };
                if idle_since.get_or_insert_with(Instant::now).elapsed() >= SENDER_LINGER {
                    return Ok(Stopped::Idle);
                }
                wait_for_work(wake, MESSAGE_POLL, shutdown).await;
                continue;
            }
            idle_since = None;
            rules.retain(|run_id, _| runs.iter().any(|r| r.run_id == *run_id));
            let mut claimed_any = false;
            let mut waiting_for_fill = false;
            let mut held = 0;
            let now = pace.horizon().unwrap_or_else(Utc::now);
            for run in &runs {
                // A run holding for quiet hours is still filled: its audience is the one
                // of its start.
                if run.filling {
                    fillers.ensure(self, run.run_id, &filling_stop);
                }
                if self.holds_for_quiet_hours(&app, run, now).await? {
                    held += 1;
                    continue;
                }
                if let Entry::Vacant(unseen) = rules.entry(run.run_id) {
                    unseen.insert(self.data_rules(appid, run).await?);
                }
                let run_rules = rules.get(&run.run_id).and_then(Option::as_ref);
                let after = cursors.get(&run.run_id).copied().unwrap_or(0);
                let (claimed, last_id) = self
                    .step_beside_messages(&app, run, run_rules, &gate, after, pace)
                    .await?;
                if claimed > 0 {
                    cursors.insert(run.run_id, last_id);
                    claimed_any = true;
                } else if after > 0 {
                    // The pass is done; deliveries put back behind the cursor (next formId,
                    // WeChat unreachable) are found by a pass from the start.
                    cursors.insert(run.run_id, 0);
                    claimed_any = true;
                } else if run.filling {
                    // Sending caught up with the filler: wait for its next chunk.
                    waiting_for_fill = true;
                } else {
                    store::runs::finish_run_if_done(&self.pool, run.run_id).await?;
                }
            }
            if !claimed_any && held == runs.len() {
                // Every run waits for the end of the app's quiet hours.
                match pace {
                    Pace::Live { wake } => wait_for_work(wake, QUIET_POLL, shutdown).await,
                    Pace::Until(_) => return Ok(Stopped::Idle),
                }
                continue;
            }
            if waiting_for_fill && !claimed_any {
                fillers.wait_for_chunk(FILL_POLL, shutdown).await;
                continue;
            }
            if !claimed_any {
                // Only deliveries in flight elsewhere or waiting for a retry remain.
                let poll = Duration::from_millis(250);
                match pace {
                    Pace::Live { wake } => wait_for_work(wake, poll, shutdown).await,
                    Pace::Until(_) => {
                        tokio::select! {
                            _ = tokio::time::sleep(poll) => {}
                            _ = shutdown.cancelled() => {}
                        }
                    }
                }
            }
        }
        Ok(Stopped::Shutdown)
    }

    /// Whether `run` must hold its deliveries at `now` for the app's quiet hours; records
    /// on the run when it holds until, or that it sends again.
    async fn holds_for_quiet_hours(
        &self,
        app: &App,
        run: &ActiveRun,
        now: DateTime<Utc>,
    ) -> sqlx::Result<bool> {
        let hold = quiet_hold(app, run, now);
        if hold != run.held_until {
            store::runs::set_hold(&self.pool, run.run_id, hold).await?;
            match hold {
                Some(until) => {
                    tracing::info!(run_id = %run.run_id, %until, "run holds for quiet hours")
                }
                None => tracing::info!(run_id = %run.run_id, "quiet hours over; run sends again"),
            }
        }
        Ok(hold.is_some())
    }

    /// One campaign batch; a live sender meanwhile sends triggered messages that come due.
    async fn step_beside_messages(
        &self,
        app: &App,
        run: &ActiveRun,
        rules: Option<&DataRules>,
        gate: &Arc<SendGate>,
        after: i64,
        pace: &Pace,
    ) -> anyhow::Result<(usize, i64)> {
        let Pace::Live { wake } = pace else {
            return self
                .step(app, run, rules, gate, after, pace.horizon())
                .await;
        };
        let batch_done = CancellationToken::new();
        let batch = async {
            let stepped = self.step(app, run, rules, gate, after, None).await;
            batch_done.cancel();
            stepped
        };
        let lane = async {
            loop {
                tokio::select! {
                    _ = batch_done.cancelled() => return Ok::<_, anyhow::Error>(()),
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(MESSAGE_POLL) => {}
                }
                while self.send_due_messages(app, gate, None).await? > 0 {}
            }
        };
        let (stepped, lane) = tokio::join!(batch, lane);
        lane?;
        stepped
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

    /// Works a run for a while: `batches` lanes, each claiming (ids above the shared
    /// cursor, from `after`), sending and recording up to `LANE_BATCHES` batches one after
    /// the other. The lanes overlap one's claim and record with another's sends, so that
    /// WeChat always has sends of the run in flight. A lane stops when a claim finds
    /// nothing, a batch stopped the campaign, or the campaign is no longer running (paused
    /// or cancelled meanwhile: no new batch starts), or the app's quiet hours began
    /// (judged at `horizon`, the clock when `None`). Returns how many deliveries were
    /// claimed and the highest id among them.
    pub async fn step(
        &self,
        app: &App,
        run: &ActiveRun,
        rules: Option<&DataRules>,
        gate: &SendGate,
        after: i64,
        horizon: Option<DateTime<Utc>>,
    ) -> anyhow::Result<(usize, i64)> {
        let lanes = tokio::sync::Mutex::new(Lanes {
            cursor: after,
            stopped: false,
        });
        let claimed = AtomicUsize::new(0);
        let done = AtomicBool::new(false);
        let lane = |first_lane: bool| {
            let (lanes, claimed, done) = (&lanes, &claimed, &done);
            async move {
                for n in 0..LANE_BATCHES {
                    if done.load(Ordering::SeqCst) {
                        break;
                    }
                    // The step's first batch was decided by the caller; later ones check
                    // that the campaign still sends.
                    if (n > 0 || !first_lane)
                        && (quiet_hold(app, run, horizon.unwrap_or_else(Utc::now)).is_some()
                            || !store::runs::still_sending(&self.pool, run.run_id).await?)
                    {
                        done.store(true, Ordering::SeqCst);
                        break;
                    }
                    let batch = self.batch(app, run, rules, gate, lanes).await?;
                    claimed.fetch_add(batch.claimed, Ordering::SeqCst);
                    if batch.claimed == 0 || batch.stopped {
                        done.store(true, Ordering::SeqCst);
                    }
                }
                Ok::<_, anyhow::Error>(())
            }
        };
        futures::future::try_join_all((0..self.settings.batches).map(|i| lane(i == 0))).await?;
        Ok((claimed.into_inner(), lanes.into_inner().cursor))
    }

    /// Claims (ids above the lanes' shared cursor, which it moves past them), sends and
    /// records one batch of a run; claims nothing once another lane's batch stopped the
    /// campaign.
    async fn batch(
        &self,
        app: &App,
        run: &ActiveRun,
        rules: Option<&DataRules>,
        gate: &SendGate,
        lanes: &tokio::sync::Mutex<Lanes>,
    ) -> anyhow::Result<BatchDone> {
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
            gate,
        };
        // Data checked before the claim, ready to send, by delivery id.
        let mut prepared: HashMap<i64, Map<String, Value>> = HashMap::new();
        let claim = RunClaim {
            appid: &app.appid,
            run_id: run.run_id,
            kind: run.kind,
            template_id: &run.template_id,
            formid_pick: run.formid_pick,
            lease_secs,
        };
        let claimed = match rules {
            Some(rules) if run.kind == CampaignKind::Subscribe && rules.checks_each_user() => {
                // Read and passed in one step: another lane reads the batch after this one,
                // not the same deliveries (this read locks nothing).
                let pending = {
                    let mut lanes = lanes.lock().await;
                    if lanes.stopped {
                        return Ok(BatchDone::STOPPED);
                    }
                    let pending = store::deliveries::pending_batch(
                        &self.claims,
                        run.run_id,
                        limit,
                        lanes.cursor,
                    )
                    .await?;
                    lanes.cursor = pending.iter().map(|p| p.id).fold(lanes.cursor, i64::max);
                    pending
                };
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
                    store::deliveries::claim_checked(&self.claims, &claim, &ids, &problems).await?
                }
            }
            _ => {
                // Under the lanes' lock: a claim either ends before a stopping batch puts
                // its deliveries back (so it cannot take them) or sees the stop.
                let mut lanes = lanes.lock().await;
                if lanes.stopped {
                    return Ok(BatchDone::STOPPED);
                }
                let claimed =
                    store::deliveries::claim_batch(&self.claims, &claim, limit, lanes.cursor)
                        .await?;
                lanes.cursor = claimed.iter().map(|d| d.id).fold(lanes.cursor, i64::max);
                claimed
            }
        };
        let count = claimed.len();
        let metrics = crate::metrics::metrics();
        let mut slots = HashMap::new();
        let mut to_send = Vec::with_capacity(claimed.len());
        for d in claimed {
            if d.status == DeliveryStatus::Sending {
                if let Some(at) = d.slot_at {
                    slots.insert(d.id, (d.user_id, at));
                }
                to_send.push(d);
            } else {
                // Final at the claim: no credit, capped, or data that breaks its rules.
                metrics.count_send(
                    &app.appid,
                    run.kind.as_str(),
                    d.status.as_str(),
                    d.errcode.as_deref(),
                );
            }
        }
        if to_send.is_empty() {
            return Ok(BatchDone {
                claimed: count,
                stopped: false,
            });
        }
        let results: Vec<Delivered> = futures::stream::iter(to_send)
            .map(|d| {
                let data = prepared.remove(&d.id);
                self.deliver_delivery(&batch, d, data)
            })
            .buffer_unordered(self.settings.concurrency)
            .collect()
            .await;
        let mut effects = CreditEffects::default();
        let mut stop = None;
        let mut outcomes = Vec::with_capacity(results.len());
        for r in results {
            if r.outcome.status != DeliveryStatus::Pending {
                metrics.count_send(
                    &app.appid,
                    run.kind.as_str(),
                    r.outcome.status.as_str(),
                    r.outcome.errcode.as_deref(),
                );
            }
            add_effect(&mut effects, r.effect, &run.template_id);
            if !keeps_slot(&r) {
                if let Some(slot) = slots.get(&r.outcome.id) {
                    effects.forget_slots.push(*slot);
                }
            }
            if r.stop.is_some() && stop.is_none() {
                stop = r.stop;
            }
            outcomes.push(r.outcome);
        }
        let stopped = stop.is_some();
        if stopped {
            // Before the record puts this batch's deliveries back: no lane claims again.
            lanes.lock().await.stopped = true;
        }
        self.record(&outcomes, &effects, claimed_at).await?;
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
        Ok(BatchDone {
            claimed: count,
            stopped,
        })
    }

    /// Sends one claimed campaign delivery. `prepared`: its data as rendered and checked
    /// before the claim; rendered now when absent.
    async fn deliver_delivery(
        &self,
        batch: &Batch<'_>,
        delivery: Claimed,
        prepared: Option<Map<String, Value>>,
    ) -> Delivered {
        let run = batch.run;
        let data =
            prepared.unwrap_or_else(|| batch.render(&delivery.openid, delivery.vars.as_ref()));
        let outgoing = Outgoing {
            kind: run.kind,
            template_id: &run.template_id,
            page: run.page.as_deref(),
            emphasis_keyword: run.emphasis_keyword.as_deref(),
            miniprogram_state: run.miniprogram_state.as_deref(),
            lang: run.lang.as_deref(),
            data,
        };
        self.deliver(
            batch.app,
            batch.gate,
            Priority::Routine,
            &outgoing,
            delivery,
        )
        .await
    }

    /// Sends one claimed message or delivery (with its retries) and decides its outcome.
    async fn deliver(
        &self,
        app: &App,
        gate: &SendGate,
        priority: Priority,
        outgoing: &Outgoing<'_>,
        delivery: Claimed,
    ) -> Delivered {
        let mut attempt = Attempt {
            kind: outgoing.kind,
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
            gate.ready(priority).await;
            attempt.attempts += 1;
            let result = if outgoing.kind == CampaignKind::Template {
                let form_id = attempt.delivery.form_id.as_deref().unwrap_or_default();
                self.wechat
                    .send_template(
                        token.expose_secret(),
                        &TemplateMessage {
                            touser: &attempt.delivery.openid,
                            template_id: outgoing.template_id,
                            page: outgoing.page,
                            form_id,
                            data: &outgoing.data,
                            emphasis_keyword: outgoing.emphasis_keyword,
                        },
                    )
                    .await
            } else {
                self.wechat
                    .send_subscribe(
                        token.expose_secret(),
                        &SubscribeMessage {
                            touser: &attempt.delivery.openid,
                            template_id: outgoing.template_id,
                            page: outgoing.page,
                            miniprogram_state: outgoing.miniprogram_state,
                            lang: outgoing.lang,
                            data: &outgoing.data,
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

    /// Claims the app's triggered messages due by `horizon` (now when `None`), sends them
    /// ahead of any campaign send, and records them. Returns how many it claimed (those
    /// that ended at once for want of a credit included).
    pub async fn send_due_messages(
        &self,
        app: &App,
        gate: &SendGate,
        horizon: Option<DateTime<Utc>>,
    ) -> anyhow::Result<usize> {
        let claimed = store::messages::claim_due(
            &self.claims,
            &app.appid,
            self.settings.concurrency as i64,
            self.settings.send_lease.as_secs_f64(),
            horizon,
        )
        .await?;
        let count = claimed.len();
        let to_send: Vec<ClaimedMessage> = claimed
            .into_iter()
            .filter(|m| m.status == MessageStatus::Sending)
            .collect();
        if to_send.is_empty() {
            return Ok(count);
        }
        let slots: HashMap<i64, (i64, DateTime<Utc>)> = to_send
            .iter()
            .filter_map(|m| Some((m.seq, (m.user_id?, m.slot_at?))))
            .collect();
        let claimed_at = Instant::now();
        let results: Vec<(CampaignKind, String, Delivered)> = futures::stream::iter(to_send)
            .map(|m| self.deliver_message(app, gate, m))
            .buffer_unordered(self.settings.concurrency)
            .collect()
            .await;
        let now = Utc::now();
        let mut effects = CreditEffects::default();
        let mut outcomes: Vec<MessageOutcome> = Vec::with_capacity(results.len());
        let metrics = crate::metrics::metrics();
        for (kind, template_id, d) in results {
            let outcome = message_outcome(&d, now);
            if outcome.status.is_final() {
                metrics.count_send(
                    &app.appid,
                    kind.as_str(),
                    outcome.status.as_str(),
                    outcome.errcode.as_deref(),
                );
            }
            add_effect(&mut effects, d.effect, &template_id);
            if !keeps_slot(&d) {
                if let Some(slot) = slots.get(&outcome.seq) {
                    effects.forget_slots.push(*slot);
                }
            }
            outcomes.push(outcome);
        }
        self.keep_trying_while_leased(claimed_at, || {
            store::messages::record(&self.pool, &app.appid, &outcomes, &effects)
        })
        .await?;
        Ok(count)
    }

    /// Sends one claimed triggered message (its built-in placeholders filled now).
    async fn deliver_message(
        &self,
        app: &App,
        gate: &SendGate,
        m: ClaimedMessage,
    ) -> (CampaignKind, String, Delivered) {
        // A message has no schedule: its {{date}} and {{datetime}} are in the default
        // timezone of schedules, Asia/Shanghai.
        let data = match &m.data {
            Value::Object(map) => render_data(
                map,
                &m.openid,
                &Map::new(),
                Utc::now(),
                chrono_tz::Asia::Shanghai,
            ),
            _ => Map::new(),
        };
        let outgoing = Outgoing {
            kind: m.kind,
            template_id: &m.template_id,
            page: m.page.as_deref(),
            emphasis_keyword: m.emphasis_keyword.as_deref(),
            miniprogram_state: m.miniprogram_state.as_deref(),
            lang: m.lang.as_deref(),
            data,
        };
        // The claim gave it a user: a message without one ended no_formid / no_quota.
        let claimed = Claimed {
            id: m.seq,
            user_id: m.user_id.unwrap_or_default(),
            openid: m.openid.clone(),
            status: DeliveryStatus::Sending,
            formid_id: m.formid_id,
            form_id: m.form_id.clone(),
            formids_tried: m.formids_tried,
            attempts: m.attempts,
            outcome_unknown: m.outcome_unknown,
            slot_at: m.slot_at,
            errcode: None,
            vars: None,
        };
        let delivered = self
            .deliver(app, gate, Priority::Urgent, &outgoing, claimed)
            .await;
        (m.kind, m.template_id, delivered)
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
        claimed_at: Instant,
    ) -> sqlx::Result<()> {
        self.keep_trying_while_leased(claimed_at, || {
            store::deliveries::record(&self.pool, outcomes, effects)
        })
        .await
    }

    /// Runs `write` until it gets a connection, while the batch claimed at `claimed_at` is
    /// still leased to this sender (see `record`).
    async fn keep_trying_while_leased<F, Fut>(
        &self,
        claimed_at: Instant,
        write: F,
    ) -> sqlx::Result<()>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = sqlx::Result<()>>,
    {
        let mut delay = Duration::from_millis(200);
        loop {
            match write().await {
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

/// When the app's quiet hours that hold `run` at `now` end (`None`: it may send).
fn quiet_hold(app: &App, run: &ActiveRun, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match app.quiet_hours {
        Some(quiet) if !run.ignore_quiet_hours => quiet.holds_until(now),
        _ => None,
    }
}

/// Adds one send's credit effect (grants are per template).
fn add_effect(effects: &mut CreditEffects, effect: Effect, template_id: &str) {
    match effect {
        Effect::None => {}
        Effect::InvalidateFormid(f) => effects.invalidate_formids.push(f),
        Effect::ReturnFormid(f) => effects.return_formids.push(f),
        Effect::ReturnGrant(u) => effects.return_grants.push((u, template_id.to_string())),
        Effect::ZeroGrant(u) => effects.zero_grants.push((u, template_id.to_string())),
    }
}

/// How long a sender that caught up with a run's filler waits for its next chunk at most
/// (the filler also wakes it).
const FILL_POLL: Duration = Duration::from_millis(50);

/// The tasks adding deliveries to this sender's filling runs, one per run: they go on
/// beside the batches, so that creating a big run never holds its sending up.
#[derive(Default)]
struct Fillers {
    tasks: HashMap<Uuid, tokio::task::JoinHandle<()>>,
    /// Notified after every chunk.
    chunk_added: Arc<Notify>,
}

impl Fillers {
    /// Starts the run's filler unless it runs already.
    fn ensure(&mut self, pipeline: &Pipeline, run_id: Uuid, stop: &CancellationToken) {
        self.tasks.retain(|_, task| !task.is_finished());
        if self.tasks.contains_key(&run_id) {
            return;
        }
        let (pool, chunk) = (pipeline.pool.clone(), pipeline.settings.run_fill_chunk);
        let (added, stop) = (self.chunk_added.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !stop.is_cancelled() {
                match store::runs::fill_next_chunk(&pool, run_id, chunk).await {
                    Ok(0) => break,
                    Ok(_) => added.notify_waiters(),
                    Err(e) => {
                        tracing::warn!(%run_id, error = ?e, "filling the run failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = stop.cancelled() => {}
                        }
                    }
                }
            }
            // The last call found nothing left and marked the run filled.
            added.notify_waiters();
        });
        self.tasks.insert(run_id, task);
    }

    async fn wait_for_chunk(&self, poll: Duration, shutdown: &CancellationToken) {
        tokio::select! {
            _ = self.chunk_added.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = shutdown.cancelled() => {}
        }
    }
}

/// Waits until the API wakes this sender, `poll` passes, or shutdown.
async fn wait_for_work(wake: &Notify, poll: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = wake.notified() => {}
        _ = tokio::time::sleep(poll) => {}
        _ = shutdown.cancelled() => {}
    }
}
