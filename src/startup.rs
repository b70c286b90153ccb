//! Builds the application: database, bootstrap app, HTTP server and scheduler, and runs
//! them until a shutdown signal.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{dev::Server, web, App, HttpServer};
use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing_actix_web::TracingLogger;

use crate::api::{self, AppState};
use crate::config::{SchedulerMode, Settings};
use crate::domain::session::SessionSigner;
use crate::error::{self, ApiError};
use crate::scheduler::{
    pipeline::{Pipeline, SendSettings},
    templates::TemplateSync,
    Scheduler,
};
use crate::store::{
    self,
    apps::{AppUpsert, Change, WebhookChange},
};
use crate::webhooks::Dispatcher;
use crate::wechat::{client::WeChatClient, token::TokenManager};

/// How long a graceful shutdown may take before in-flight work is abandoned (it is then
/// recovered by the next owner of each app's lease).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(9);

pub struct Application {
    port: u16,
    server: Server,
    /// `/metrics` on its own address, when `FORMPUSH_METRICS_BIND` asks for it.
    metrics_server: Option<(Server, u16)>,
    scheduler: Option<Scheduler>,
    /// The clock driving `scheduler` (absent when it is off or stepped by hand).
    jobs: Option<tokio_cron_scheduler::JobScheduler>,
    /// Sends webhook events (absent when the scheduler is off).
    webhooks: Option<Dispatcher>,
    /// The dispatcher's loop (absent unless the scheduler is on).
    dispatching: Option<tokio::task::JoinHandle<()>>,
    shutdown: CancellationToken,
    pub state: AppState,
}

impl Application {
    /// Creates the database if missing, migrates, and builds everything.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = crate::db::prepare(&settings.database_url, settings.db_max_connections).await?;
        Self::build_with_pool(settings, pool).await
    }

    /// Builds on an existing pool (tests hand in a fresh database per test).
    pub async fn build_with_pool(settings: Settings, pool: PgPool) -> anyhow::Result<Self> {
        crate::db::MIGRATOR
            .run(&pool)
            .await
            .context("applying migrations")?;
        if settings.admin_token_generated {
            // Logged once so the operator can use it; set FORMPUSH_ADMIN_TOKEN to choose one.
            tracing::warn!(
                admin_token = settings.admin_token.expose_secret(),
                "FORMPUSH_ADMIN_TOKEN is not set; generated an admin token for this process"
            );
        }
        if let Some(app) = &settings.bootstrap_app {
            store::apps::upsert(
                &pool,
                AppUpsert {
                    appid: &app.appid,
                    secret: Some(app.secret.expose_secret()),
                    push_token: app.push_token.as_deref(),
                    encoding_aes_key: app.encoding_aes_key.as_ref().map(|k| k.expose_secret()),
                    send_rate_per_sec: None,
                    token_api: None,
                    webhook: WebhookChange::Keep,
                    frequency_cap: Change::Keep,
                    quiet_hours: Change::Keep,
                },
            )
            .await
            .context("registering WECHAT_APPID")?;
            tracing::info!(appid = %app.appid, "registered the app from WECHAT_APPID");
        }
        let signer = SessionSigner::new(store::keys::session_signing_key(&pool).await?);
        let wechat = WeChatClient::new(&settings.wechat_api_base, settings.wechat_timeout)?;
        let tokens = TokenManager::new(pool.clone(), wechat.clone());
        let settings = Arc::new(settings);
        let template_sync = TemplateSync::new(
            pool.clone(),
            wechat.clone(),
            tokens.clone(),
            settings.retry_backoff,
        );
        let shutdown = CancellationToken::new();
        // Shared by the scheduler and the API's test sends (one set of claim connections).
        let pipeline = Pipeline::new(
            pool.clone(),
            wechat.clone(),
            tokens.clone(),
            SendSettings::from(settings.as_ref()),
        );
        let scheduler = (settings.scheduler != SchedulerMode::Off).then(|| {
            Scheduler::new(
                pool.clone(),
                pipeline.clone(),
                template_sync.clone(),
                settings.retention(),
                shutdown.clone(),
            )
        });
        let webhooks = match settings.scheduler {
            SchedulerMode::Off => None,
            SchedulerMode::On | SchedulerMode::Manual => Some(Dispatcher::new(
                pool.clone(),
                Arc::new(api::events::EventData::new(pool.clone())),
            )?),
        };
        let state = AppState {
            pool: pool.clone(),
            settings: settings.clone(),
            signer,
            wechat: wechat.clone(),
            tokens: tokens.clone(),
            template_sync: template_sync.clone(),
            pipeline,
            credit_writer: crate::store::batcher::CreditWriter::start(pool.clone()),
            login_limiter: Arc::new(governor::RateLimiter::keyed(governor::Quota::per_minute(
                std::num::NonZeroU32::new(settings.session_rate_per_min)
                    .unwrap_or(std::num::NonZeroU32::MIN),
            ))),
            senders: match (&scheduler, settings.scheduler) {
                (Some(scheduler), SchedulerMode::On) => Some(scheduler.waker()),
                _ => None,
            },
        };
        // The limiter keeps a cell per client address: forget the idle ones every minute so
        // many distinct addresses cannot grow it without bound.
        let limiter = Arc::downgrade(&state.login_limiter);
        tokio::spawn(async move {
            let mut every_minute = tokio::time::interval(Duration::from_secs(60));
            loop {
                every_minute.tick().await;
                let Some(limiter) = limiter.upgrade() else {
                    return;
                };
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        });

        let listener = TcpListener::bind(&settings.bind)
            .with_context(|| format!("binding {}", settings.bind))?;
        let port = listener.local_addr()?.port();
        let data = web::Data::new(state.clone());
        let metrics_apart = settings.metrics_bind.is_some();
        let metrics_server = match &settings.metrics_bind {
            None => None,
            Some(bind) => {
                let listener = TcpListener::bind(bind)
                    .with_context(|| format!("binding FORMPUSH_METRICS_BIND {bind}"))?;
                let metrics_port = listener.local_addr()?.port();
                let data = data.clone();
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .configure(api::metrics_route)
                        .default_service(web::to(|| async {
                            Err::<actix_web::HttpResponse, _>(ApiError::not_found(
                                "not_found",
                                "this address serves /metrics only",
                            ))
                        }))
                })
                .workers(1)
                .listen(listener)?
                .disable_signals()
                .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
                .run();
                tracing::info!(port = metrics_port, "metrics listening");
                Some((server, metrics_port))
            }
        };
        let server = HttpServer::new(move || {
            App::new()
                .wrap(TracingLogger::default())
                .app_data(data.clone())
                .app_data(error::json_config())
                .app_data(web::PayloadConfig::new(error::BODY_LIMIT))
                .app_data(error::query_config())
                .app_data(error::path_config())
                .configure(api::routes)
                .configure(|cfg| {
                    if !metrics_apart {
                        api::metrics_route(cfg)
                    }
                })
                .default_service(web::to(|| async {
                    Err::<actix_web::HttpResponse, _>(ApiError::not_found(
                        "not_found",
                        "no such endpoint",
                    ))
                }))
        })
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
        .run();

        let jobs = match (&scheduler, settings.scheduler) {
            (Some(scheduler), SchedulerMode::On) => Some(scheduler.start().await?),
            _ => None,
        };
        let dispatching = match (&webhooks, settings.scheduler) {
            (Some(webhooks), SchedulerMode::On) => {
                Some(tokio::spawn(webhooks.clone().run(shutdown.clone())))
            }
            _ => None,
        };
        tracing::info!(port, scheduler = ?settings.scheduler, "formpush listening");
        Ok(Self {
            port,
            server,
            metrics_server,
            scheduler,
            jobs,
            webhooks,
            dispatching,
            shutdown,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of `/metrics` when it has its own address (`FORMPUSH_METRICS_BIND`).
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_server.as_ref().map(|(_, port)| *port)
    }

    /// The scheduler, to step it by hand (`FORMPUSH_SCHEDULER=manual`); `None` when off.
    pub fn scheduler(&self) -> Option<Scheduler> {
        self.scheduler.clone()
    }

    /// The webhook dispatcher, to step it by hand (`FORMPUSH_SCHEDULER=manual`); `None`
    /// when the scheduler is off.
    pub fn webhooks(&self) -> Option<Dispatcher> {
        self.webhooks.clone()
    }

    /// A token that stops the application when cancelled (tests use it; `serve` ties it
    /// to SIGTERM / Ctrl-C).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then stops taking connections, lets
    /// the senders finish or hand back their batches, lets requests in flight finish, and
    /// returns, all within `SHUTDOWN_GRACE`.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let server = tokio::spawn(self.server);
        let metrics = self.metrics_server.map(|(server, _)| {
            let handle = server.handle();
            (handle, tokio::spawn(server))
        });
        self.shutdown.cancelled().await;
        tracing::info!("shutting down");
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        // Pause (stop accepting) rather than stop: each HTTP worker runs its own runtime,
        // and the pooled database connections a worker opened live on it. The senders may
        // still use such connections while they drain, so the workers stop after them.
        handle.pause().await;
        if let Some(mut jobs) = self.jobs {
            let _ = jobs.shutdown().await;
        }
        if let Some(scheduler) = self.scheduler {
            if tokio::time::timeout_at(deadline, scheduler.drain())
                .await
                .is_err()
            {
                tracing::warn!(
                    "senders did not finish in time; their leases will hand the work on"
                );
            }
        }
        if let Some(dispatching) = self.dispatching {
            let _ = tokio::time::timeout_at(deadline, dispatching).await;
        }
        let stop_http = async {
            handle.stop(true).await;
            let _ = server.await;
            if let Some((handle, server)) = metrics {
                handle.stop(true).await;
                let _ = server.await;
            }
        };
        if tokio::time::timeout_at(deadline, stop_http).await.is_err() {
            tracing::warn!("requests still in flight at the deadline were cut off");
        }
        Ok(())
    }
}

/// Cancels `token` on SIGTERM or Ctrl-C.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        token.cancel();
    });
}
