//! The scheduler: a one-second tick on tokio-cron-scheduler that starts due runs, resumes
//! quota-paused campaigns and makes sure every app with work has a sender; plus the daily
//! clean-up (dead formIds, and what is past the retention) and the daily sync of subscribe
//! templates.
//!
//! tokio-cron-scheduler does not coordinate instances: every instance fires every job. So
//! the tick only does things that are safe to race: run rows are unique per firing, and
//! an app is sent for by whichever instance holds its lease (`app_leases`).
//!
//! Triggered messages must reach WeChat within a second, so they do not wait for the tick:
//! the API wakes the app's sender on its instance (`SenderWaker`), starting one if no
//! instance holds the app's lease; a live sender polls for messages queued through other
//! instances; and every `WATCH_INTERVAL` each instance starts a sender for any app with a
//! message due and no sender anywhere (queued through an instance without a scheduler, or a
//! `send_at` that has come).

pub mod gate;
pub mod pipeline;
pub mod rules;
pub mod templates;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::{mpsc, Notify};
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store;
use pipeline::{Pace, Pipeline};
use templates::TemplateSync;

/// Every second, seconds field first: a due run starts within 2 s of its time.
pub const TICK_SCHEDULE: &str = "*/1 * * * * *";
/// Daily at 20:00 UTC = 04:00 Asia/Shanghai, when mini-program users are asleep.
pub const CLEANUP_SCHEDULE: &str = "0 0 20 * * *";
/// How often an instance looks for apps with a message due and no sender.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(200);
/// A wake for an app whose lease another instance holds tries for the lease at most this
/// often (that instance's sender polls for the message anyway).
const LEASE_RETRY: Duration = Duration::from_millis(250);

/// An app's sender on this instance.
struct Worker {
    handle: tokio::task::JoinHandle<()>,
    wake: Arc<Notify>,
}
/// Daily at 19:30 UTC = 03:30 Asia/Shanghai: templates changed in the WeChat console are
/// known before the morning's campaigns.
pub const TEMPLATE_SYNC_SCHEDULE: &str = "0 30 19 * * *";

#[derive(Clone)]
pub struct Scheduler {
    pool: PgPool,
    pipeline: Pipeline,
    templates: TemplateSync,
    /// How long finished deliveries and messages are kept (`FORMPUSH_RETENTION_DAYS`).
    retention: chrono::Duration,
    instance: Uuid,
    workers: Arc<Mutex<HashMap<String, Worker>>>,
    tick_guard: Arc<tokio::sync::Mutex<()>>,
    /// Held while a sender is started, so that `drain` sees every sender.
    spawn_guard: Arc<tokio::sync::Mutex<()>>,
    /// When a wake last tried for each app's lease.
    lease_tries: Arc<Mutex<HashMap<String, Instant>>>,
    wakes: mpsc::Sender<String>,
    wake_queue: Arc<Mutex<Option<mpsc::Receiver<String>>>>,
    shutdown: CancellationToken,
}

/// Wakes the sender of an app that has a message to send now. Cheap and never blocks: the
/// scheduler's watch task does the work.
#[derive(Clone)]
pub struct SenderWaker {
    wakes: mpsc::Sender<String>,
}

impl SenderWaker {
    pub fn wake(&self, appid: &str) {
        // A full queue already holds wakes to act on; the watch catches anything dropped.
        let _ = self.wakes.try_send(appid.to_string());
    }
}

impl Scheduler {
    pub fn new(
        pool: PgPool,
        pipeline: Pipeline,
        templates: TemplateSync,
        retention: chrono::Duration,
        shutdown: CancellationToken,
    ) -> Self {
        let (wakes, queue) = mpsc::channel(4096);
        Self {
            pool,
            pipeline,
            templates,
            retention,
            instance: Uuid::new_v4(),
            workers: Default::default(),
            tick_guard: Default::default(),
            spawn_guard: Default::default(),
            lease_tries: Default::default(),
            wakes,
            wake_queue: Arc::new(Mutex::new(Some(queue))),
            shutdown,
        }
    }

    /// For the API: wakes senders of this scheduler (effective once `start` ran).
    pub fn waker(&self) -> SenderWaker {
        SenderWaker {
            wakes: self.wakes.clone(),
        }
    }

    /// Registers the jobs and starts them, and the watch for triggered messages.
    pub async fn start(&self) -> anyhow::Result<JobScheduler> {
        let jobs = JobScheduler::new().await?;
        let me = self.clone();
        jobs.add(Job::new_async(TICK_SCHEDULE, move |_, _| {
            let me = me.clone();
            Box::pin(async move {
                if let Err(e) = me.tick().await {
                    tracing::warn!(error = ?e, "scheduler tick failed");
                }
            })
        })?)
        .await?;
        let me = self.clone();
        jobs.add(Job::new_async(CLEANUP_SCHEDULE, move |_, _| {
            let me = me.clone();
            Box::pin(async move {
                if let Err(e) = me.clean_up(Utc::now()).await {
                    tracing::warn!(error = ?e, "daily clean-up failed");
                }
            })
        })?)
        .await?;
        let me = self.clone();
        jobs.add(Job::new_async(TEMPLATE_SYNC_SCHEDULE, move |_, _| {
            let me = me.clone();
            Box::pin(async move {
                if let Err(e) = me.sync_templates().await {
                    tracing::warn!(error = ?e, "daily template sync failed");
                }
            })
        })?)
        .await?;
        jobs.start().await?;
        if let Some(queue) = self.wake_queue.lock().expect("wake queue lock").take() {
            let me = self.clone();
            tokio::spawn(async move { me.watch(queue).await });
        }
        tracing::info!(instance = %self.instance, "scheduler started");
        Ok(jobs)
    }

    /// One pass: resume, start due runs, staff apps that have work.
    pub async fn tick(&self) -> anyhow::Result<()> {
        if self.shutdown.is_cancelled() {
            return Ok(());
        }
        // A slow tick must not overlap the next one.
        let Ok(_guard) = self.tick_guard.try_lock() else {
            return Ok(());
        };
        let now = Utc::now();
        self.start_due(now).await?;
        for appid in self.apps_with_work(None).await? {
            self.ensure_worker(appid).await?;
        }
        Ok(())
    }

    /// One step driven by hand (tests, tools; `FORMPUSH_SCHEDULER=manual`): does what a
    /// tick at `now` does, then sends for every app with work in this task, until nothing
    /// is left to send now (deliveries waiting for a retry are waited for; a campaign
    /// paused for quota or stopped by an error ends the step; triggered messages due by
    /// `now` are sent). Returns the runs started.
    pub async fn run_until_idle(&self, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let _guard = self.tick_guard.lock().await;
        let started = self.start_due(now).await?;
        for appid in self.apps_with_work(Some(now)).await? {
            let lease = self.pipeline.app_lease().as_secs_f64();
            if store::leases::acquire_app_lease(&self.pool, &appid, self.instance, lease).await? {
                self.pipeline
                    .work_app(
                        &appid,
                        self.instance,
                        self.shutdown.clone(),
                        Pace::Until(now),
                    )
                    .await?;
            }
        }
        Ok(started)
    }

    /// Apps with a running run, or a message due by `now` (the database's clock: `None`).
    async fn apps_with_work(&self, now: Option<DateTime<Utc>>) -> anyhow::Result<Vec<String>> {
        let mut apps = store::runs::apps_with_active_runs(&self.pool).await?;
        for appid in store::messages::apps_with_due_messages(&self.pool, now, false).await? {
            if !apps.contains(&appid) {
                apps.push(appid);
            }
        }
        Ok(apps)
    }

    /// The daily clean-up of `now`'s day (also stepped by hand in tests): dead formIds,
    /// finished webhook events, expired idempotency keys, old frequency-cap windows, and
    /// past the retention (`now` minus `FORMPUSH_RETENTION_DAYS`) the deliveries of runs
    /// that finished before it (their totals kept) and triggered messages final before it.
    /// Run by the first instance to claim the day; false when another already did.
    pub async fn clean_up(&self, now: DateTime<Utc>) -> anyhow::Result<bool> {
        if !store::leases::claim_daily_job(&self.pool, "clean_up", now.date_naive()).await? {
            tracing::info!("daily clean-up already done by another instance");
            return Ok(false);
        }
        match store::credits::purge_dead(&self.pool).await {
            Ok(n) => tracing::info!(deleted = n, "purged expired and consumed formIds"),
            Err(e) => tracing::warn!(error = ?e, "formId clean-up failed"),
        }
        let events = store::webhook_events::purge_finished(&self.pool).await?;
        let keys = store::messages::purge_expired_keys(&self.pool).await?;
        let windows = store::credits::purge_old_windows(&self.pool).await?;
        tracing::info!(
            events,
            keys,
            windows,
            "purged finished webhook events, expired idempotency keys and old frequency-cap windows"
        );
        let cutoff = now - self.retention;
        let purged = store::retention::purge_before(&self.pool, cutoff).await?;
        tracing::info!(
            %cutoff,
            runs = purged.runs,
            deliveries = purged.deliveries,
            messages = purged.messages,
            "purged the deliveries of runs and the triggered messages finished before the retention"
        );
        Ok(true)
    }

    /// The daily template sync (also stepped by hand in tests): re-syncs every app synced
    /// before, each by one instance. Returns how many apps this instance synced.
    pub async fn sync_templates(&self) -> anyhow::Result<usize> {
        self.templates.sync_all().await
    }

    /// Resumes quota-paused campaigns and starts the runs due at `now`.
    async fn start_due(&self, now: DateTime<Utc>) -> anyhow::Result<usize> {
        store::campaigns::resume_quota_paused(&self.pool, now).await?;
        let mut started = 0;
        for (run, due) in
            store::runs::start_due_runs(&self.pool, now, self.pipeline.run_fill_chunk()).await?
        {
            let lag = (Utc::now() - due).num_milliseconds().max(0) as f64 / 1000.0;
            crate::metrics::metrics().scheduler_lag.observe(lag);
            tracing::info!(run_id = %run, lag_secs = lag, "run started");
            started += 1;
        }
        Ok(started)
    }

    /// Acts on the API's wakes, and every `WATCH_INTERVAL` starts senders for apps with a
    /// message due that no instance sends for.
    async fn watch(&self, mut wakes: mpsc::Receiver<String>) {
        let mut every = tokio::time::interval(WATCH_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                Some(appid) = wakes.recv() => self.wake(appid).await,
                _ = every.tick() => {
                    match store::messages::apps_with_due_messages(&self.pool, None, true).await {
                        Ok(apps) => {
                            for appid in apps {
                                if let Err(e) = self.ensure_worker(appid).await {
                                    tracing::warn!(error = ?e, "could not start a sender");
                                }
                            }
                        }
                        Err(e) => tracing::warn!(error = ?e, "looking for due messages failed"),
                    }
                }
            }
        }
    }

    /// A message was queued for `appid` through this instance: tell its sender here, or
    /// become its sender if no instance is.
    async fn wake(&self, appid: String) {
        {
            let workers = self.workers.lock().expect("workers lock");
            if let Some(worker) = workers.get(&appid).filter(|w| !w.handle.is_finished()) {
                worker.wake.notify_one();
                return;
            }
        }
        {
            let mut tries = self.lease_tries.lock().expect("lease tries lock");
            let now = Instant::now();
            if tries
                .get(&appid)
                .is_some_and(|at| now.duration_since(*at) < LEASE_RETRY)
            {
                return;
            }
            tries.retain(|_, at| now.duration_since(*at) < LEASE_RETRY);
            tries.insert(appid.clone(), now);
        }
        if let Err(e) = self.ensure_worker(appid).await {
            tracing::warn!(error = ?e, "could not start a sender");
        }
    }

    async fn ensure_worker(&self, appid: String) -> anyhow::Result<()> {
        let _spawning = self.spawn_guard.lock().await;
        if self.shutdown.is_cancelled() {
            return Ok(());
        }
        {
            let workers = self.workers.lock().expect("workers lock");
            if workers.get(&appid).is_some_and(|w| !w.handle.is_finished()) {
                return Ok(());
            }
        }
        if !store::leases::acquire_app_lease(
            &self.pool,
            &appid,
            self.instance,
            self.pipeline.app_lease().as_secs_f64(),
        )
        .await?
        {
            return Ok(()); // another instance sends for this app
        }
        let pipeline = self.pipeline.clone();
        let instance = self.instance;
        let shutdown = self.shutdown.clone();
        let wake = Arc::new(Notify::new());
        let pace = Pace::Live { wake: wake.clone() };
        let key = appid.clone();
        let handle = tokio::spawn(async move {
            if let Err(e) = pipeline.work_app(&appid, instance, shutdown, pace).await {
                tracing::error!(%appid, error = ?e, "sender stopped");
            }
        });
        self.workers
            .lock()
            .expect("workers lock")
            .insert(key, Worker { handle, wake });
        Ok(())
    }

    /// Waits for every sender to hand back its work (after `shutdown` was cancelled).
    pub async fn drain(&self) {
        // A tick in progress may still start a sender: let it finish first.
        let _no_more_ticks = self.tick_guard.lock().await;
        let _no_more_senders = self.spawn_guard.lock().await;
        let handles: Vec<_> = self
            .workers
            .lock()
            .expect("workers lock")
            .drain()
            .map(|(_, w)| w.handle)
            .collect();
        for h in handles {
            let _ = h.await;
        }
    }
}
