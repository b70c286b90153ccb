//! The scheduler: a one-second tick on tokio-cron-scheduler that starts due runs, resumes
//! quota-paused campaigns and makes sure every app with work has a sender; plus the daily
//! clean-up of dead formIds and the daily sync of subscribe templates.
//!
//! tokio-cron-scheduler does not coordinate instances: every instance fires every job. So
//! the tick only does things that are safe to race: run rows are unique per firing, and
//! an app is sent for by whichever instance holds its lease (`app_leases`).

pub mod pipeline;
pub mod rules;
pub mod templates;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store;
use pipeline::Pipeline;
use templates::TemplateSync;

/// Every second, seconds field first: a due run starts within 2 s of its time.
pub const TICK_SCHEDULE: &str = "*/1 * * * * *";
/// Daily at 20:00 UTC = 04:00 Asia/Shanghai, when mini-program users are asleep.
pub const CLEANUP_SCHEDULE: &str = "0 0 20 * * *";
/// Daily at 19:30 UTC = 03:30 Asia/Shanghai: templates changed in the WeChat console are
/// known before the morning's campaigns.
pub const TEMPLATE_SYNC_SCHEDULE: &str = "0 30 19 * * *";

#[derive(Clone)]
pub struct Scheduler {
    pool: PgPool,
    pipeline: Pipeline,
    templates: TemplateSync,
    instance: Uuid,
    workers: Arc<Mutex<HashMap<String, tokio::task::JoinHandle<()>>>>,
    tick_guard: Arc<tokio::sync::Mutex<()>>,
    shutdown: CancellationToken,
}

impl Scheduler {
    pub fn new(
        pool: PgPool,
        pipeline: Pipeline,
        templates: TemplateSync,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            pool,
            pipeline,
            templates,
            instance: Uuid::new_v4(),
            workers: Default::default(),
            tick_guard: Default::default(),
            shutdown,
        }
    }

    /// Registers the jobs and starts them.
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
        let pool = self.pool.clone();
        jobs.add(Job::new_async(CLEANUP_SCHEDULE, move |_, _| {
            let pool = pool.clone();
            Box::pin(async move {
                match store::credits::purge_dead(&pool).await {
                    Ok(n) => tracing::info!(deleted = n, "purged expired and consumed formIds"),
                    Err(e) => tracing::warn!(error = ?e, "formId clean-up failed"),
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
        for appid in store::runs::apps_with_active_runs(&self.pool).await? {
            self.ensure_worker(appid).await?;
        }
        Ok(())
    }

    /// One step driven by hand (tests, tools; `FORMPUSH_SCHEDULER=manual`): does what a
    /// tick at `now` does, then sends for every app with work in this task, until nothing
    /// is left to send now (deliveries waiting for a retry are waited for; a campaign
    /// paused for quota or stopped by an error ends the step). Returns the runs started.
    pub async fn run_until_idle(&self, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let _guard = self.tick_guard.lock().await;
        let started = self.start_due(now).await?;
        for appid in store::runs::apps_with_active_runs(&self.pool).await? {
            let lease = self.pipeline.app_lease().as_secs_f64();
            if store::leases::acquire_app_lease(&self.pool, &appid, self.instance, lease).await? {
                self.pipeline
                    .work_app(&appid, self.instance, self.shutdown.clone())
                    .await?;
            }
        }
        Ok(started)
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
        for (run, due) in store::runs::start_due_runs(&self.pool, now).await? {
            let lag = (Utc::now() - due).num_milliseconds().max(0) as f64 / 1000.0;
            crate::metrics::metrics().scheduler_lag.observe(lag);
            tracing::info!(run_id = %run, lag_secs = lag, "run started");
            started += 1;
        }
        Ok(started)
    }

    async fn ensure_worker(&self, appid: String) -> anyhow::Result<()> {
        if self.shutdown.is_cancelled() {
            return Ok(());
        }
        {
            let workers = self.workers.lock().expect("workers lock");
            if workers.get(&appid).is_some_and(|h| !h.is_finished()) {
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
        let key = appid.clone();
        let handle = tokio::spawn(async move {
            if let Err(e) = pipeline.work_app(&appid, instance, shutdown).await {
                tracing::error!(%appid, error = ?e, "sender stopped");
            }
        });
        self.workers
            .lock()
            .expect("workers lock")
            .insert(key, handle);
        Ok(())
    }

    /// Waits for every sender to hand back its work (after `shutdown` was cancelled).
    pub async fn drain(&self) {
        // A tick in progress may still start a sender: let it finish first.
        let _no_more_ticks = self.tick_guard.lock().await;
        let handles: Vec<_> = self
            .workers
            .lock()
            .expect("workers lock")
            .drain()
            .map(|(_, h)| h)
            .collect();
        for h in handles {
            let _ = h.await;
        }
    }
}
