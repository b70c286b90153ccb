//! The service under test: the release `formpush serve` binary as a child process (its own
//! working directory, so no developer `.env` is read) next to an in-process fake WeChat, and
//! the scratch directory and database they run on.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use formpush_sandbox::{Sandbox, SandboxConfig};
use uuid::Uuid;

use crate::db::{drop_unless_kept, recreate_db};
use crate::procfs::MemWatch;
use crate::report::Report;
use crate::{Args, SECRET};

/// A running `formpush serve`; its HTTP API is in `api`.
pub struct Service {
    child: tokio::process::Child,
    pub base: String,
    pub admin_token: String,
    pub log: PathBuf,
    mem: MemWatch,
    pub http: reqwest::Client,
}

impl Service {
    /// Starts the binary on a free port and waits (up to 60 s) until `/readyz` answers.
    pub async fn start(
        bin: &Path,
        extra_env: &[(String, String)],
        database_url: &str,
        wechat_base: &str,
        workdir: &Path,
        mem: &MemWatch,
        tag: &str,
    ) -> anyhow::Result<Service> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let admin_token = format!("bench-admin-{}", Uuid::new_v4().simple());
        let log = workdir.join(format!("formpush-{tag}.log"));
        let log_file = std::fs::File::create(&log)?;
        let bin = std::fs::canonicalize(bin).with_context(|| {
            format!(
                "{} not found: build it with cargo build --release",
                bin.display()
            )
        })?;
        let mut child = tokio::process::Command::new(&bin)
            .envs(extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .arg("serve")
            // Its own directory, so no developer .env is read.
            .current_dir(workdir)
            .env("DATABASE_URL", database_url)
            .env("FORMPUSH_BIND", format!("127.0.0.1:{port}"))
            .env("FORMPUSH_ADMIN_TOKEN", &admin_token)
            .env("WECHAT_API_BASE", wechat_base)
            .env("FORMPUSH_SCHEDULER", "on")
            // Every benchmark login comes from 127.0.0.1.
            .env("FORMPUSH_SESSION_RATE_PER_MIN", "1000000")
            .env("NO_COLOR", "1")
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().unwrap_or(0);
        mem.pid.store(pid, Ordering::SeqCst);
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "formpush serve exited at start ({status}); log:\n{}",
                    tail(&log)
                );
            }
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("formpush serve not ready after 60 s; log:\n{}", tail(&log));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Service {
            child,
            base,
            admin_token,
            log,
            mem: mem.clone(),
            http,
        })
    }

    pub fn pid(&self) -> u32 {
        self.mem.pid.load(Ordering::SeqCst)
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.mem.sample();
        let pid = self.pid();
        self.mem.pid.store(0, Ordering::SeqCst);
        if pid != 0 {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                self.child.kill().await?;
            }
        }
        Ok(())
    }
}

/// A service log's ERROR and panic lines (the service runs with NO_COLOR, so plain text).
fn log_errors(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("ERROR") || l.contains("panicked"))
        .map(str::to_string)
        .collect()
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// An in-process fake WeChat answering after `latency_ms`.
pub struct FakeWeChat {
    pub sandbox: Sandbox,
    pub server: formpush_sandbox::SandboxServer,
}

impl FakeWeChat {
    /// A fake WeChat answering after `latency_ms`, allowing `daily_quota` sends per app
    /// and kind a day.
    pub fn start(latency_ms: u64, apps: &[&str], daily_quota: u64) -> anyhow::Result<Self> {
        let sandbox = Sandbox::new(SandboxConfig {
            latency: Duration::from_millis(latency_ms),
            daily_quota,
            ..SandboxConfig::default()
        });
        for app in apps {
            sandbox.add_app(app, SECRET);
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let server = sandbox.serve(listener)?;
        Ok(FakeWeChat { sandbox, server })
    }
}

/// A service with the fake WeChat it talks to.
pub struct Stack {
    pub svc: Service,
    pub wechat: FakeWeChat,
    latency_ms: u64,
}

impl Stack {
    /// One line saying where they run, printed when a phase starts them.
    pub fn describe(&self) -> String {
        format!(
            "service pid {} on {} with fake WeChat at {} ({} ms)",
            self.svc.pid(),
            self.svc.base,
            self.wechat.server.base_url,
            self.latency_ms
        )
    }
}

/// A working directory for service logs and a fresh database for the service phases: both
/// removed by `finish` unless kept (both with `--keep-db`; the logs also when one of them
/// has ERROR lines).
pub struct Scratch {
    dir: PathBuf,
    db_name: &'static str,
    pub database_url: String,
    keep_logs: bool,
    /// The fake WeChat's sends per app and kind a day (WeChat's 1,000,000 unless a phase
    /// sends more on purpose).
    pub wechat_daily_quota: u64,
}

impl Scratch {
    /// `tag` names the directory (`formpush-bench-{tag}-{pid}` in the temp directory).
    pub async fn create(
        pg_url_base: &str,
        tag: &str,
        db_name: &'static str,
    ) -> anyhow::Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("formpush-bench-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let database_url = recreate_db(pg_url_base, db_name).await?;
        Ok(Scratch {
            dir,
            db_name,
            database_url,
            keep_logs: false,
            wechat_daily_quota: SandboxConfig::default().daily_quota,
        })
    }

    /// A fake WeChat answering after `latency_ms` that knows `apps`, and a service using it
    /// and this database, logging to `formpush-{log_tag}.log`.
    pub async fn start_stack(
        &self,
        args: &Args,
        mem: &MemWatch,
        latency_ms: u64,
        apps: &[&str],
        log_tag: &str,
    ) -> anyhow::Result<Stack> {
        let wechat = FakeWeChat::start(latency_ms, apps, self.wechat_daily_quota)?;
        let svc = Service::start(
            &args.formpush_bin,
            &args.service_env,
            &self.database_url,
            &wechat.server.base_url,
            &self.dir,
            mem,
            log_tag,
        )
        .await?;
        Ok(Stack {
            svc,
            wechat,
            latency_ms,
        })
    }

    /// One more service on this database and the fake WeChat at `wechat_base` (a second
    /// instance beside a stack's), logging to `formpush-{log_tag}.log`.
    pub async fn start_service(
        &self,
        args: &Args,
        mem: &MemWatch,
        wechat_base: &str,
        log_tag: &str,
    ) -> anyhow::Result<Service> {
        Service::start(
            &args.formpush_bin,
            &args.service_env,
            &self.database_url,
            wechat_base,
            &self.dir,
            mem,
            log_tag,
        )
        .await
    }

    /// Stops both; ERROR lines in the service's log become a note (prefixed by
    /// `note_prefix`) and keep the logs for reading.
    pub async fn stop_stack(
        &mut self,
        stack: Stack,
        report: &mut Report,
        note_prefix: &str,
    ) -> anyhow::Result<()> {
        let Stack { svc, wechat, .. } = stack;
        let log = svc.log.clone();
        svc.stop().await?;
        wechat.server.stop().await;
        // Read after the stop: shutdown errors count too.
        let errors = log_errors(&log);
        if let Some(first) = errors.first() {
            self.keep_logs = true;
            report.note(format!(
                "{note_prefix}service log {} has {} ERROR lines, e.g. `{}`",
                log.display(),
                errors.len(),
                first.trim()
            ));
        }
        Ok(())
    }

    pub async fn finish(self, pg_url_base: &str, keep_db: bool) -> anyhow::Result<()> {
        drop_unless_kept(pg_url_base, self.db_name, keep_db).await?;
        if self.keep_logs || keep_db {
            println!("service logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        Ok(())
    }
}

/// What a phase that brings its own service needs: a scratch database, a fake WeChat and a
/// service on them, the service's memory watched; `finish` stops them and notes the memory.
pub struct PhaseStack {
    pub scratch: Scratch,
    pub stack: Stack,
    mem: MemWatch,
    stop_watch: tokio_util::sync::CancellationToken,
    tag: &'static str,
}

impl PhaseStack {
    /// Database `db`, a fake WeChat answering after `latency_ms` that knows `apps`, and a
    /// service logging to `formpush-{tag}-{latency_ms}ms.log`.
    pub async fn start(
        args: &Args,
        tag: &'static str,
        db: &'static str,
        latency_ms: u64,
        apps: &[&str],
    ) -> anyhow::Result<PhaseStack> {
        let scratch = Scratch::create(&args.pg_url_base, tag, db).await?;
        let mem = MemWatch::default();
        let stop_watch = tokio_util::sync::CancellationToken::new();
        mem.start(stop_watch.clone());
        let stack = scratch
            .start_stack(
                args,
                &mem,
                latency_ms,
                apps,
                &format!("{tag}-{latency_ms}ms"),
            )
            .await?;
        println!("({tag}) {}", stack.describe());
        Ok(PhaseStack {
            scratch,
            stack,
            mem,
            stop_watch,
            tag,
        })
    }

    pub async fn finish(self, args: &Args, report: &mut Report) -> anyhow::Result<()> {
        let PhaseStack {
            mut scratch,
            stack,
            mem,
            stop_watch,
            tag,
        } = self;
        scratch
            .stop_stack(stack, report, &format!("({tag}) "))
            .await?;
        stop_watch.cancel();
        report.note(format!(
            "({tag}) service resident memory, max over the phase: {:.1} MiB",
            mem.max_mib()
        ));
        scratch.finish(&args.pg_url_base, args.keep_db).await
    }
}
