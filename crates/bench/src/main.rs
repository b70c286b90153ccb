//! `formpush-bench`: the benchmark harness (run it with `scripts/bench`, see BENCHMARKS.md).
//!
//! Measures, in one run on the local machine:
//! - (e) this machine's Postgres limit: `pgbench` running a single-row formId INSERT and a
//!   single-user claim UPDATE against the real schema (migrated from `migrations/`);
//! - (c) claim-and-consume: the production claim SQL
//!   (`store::deliveries::claim_template_batch`) from N concurrent tasks over a run of
//!   `--users` users holding 5 formIds each;
//! - (a) client formId ingestion through the release `formpush serve` binary: 64 concurrent
//!   keep-alive connections, one formId per request;
//! - (b) admin bulk import, 10,000 items per request;
//! - (d) end-to-end template campaigns to `--users` users against the in-process WeChat
//!   sandbox answering after 0 ms and after 50 ms;
//! - (soak, only with `--phases soak`) ten minutes of paced ingestion and a campaign every
//!   30 s at half those rates, with the service's memory, file descriptors, Postgres
//!   connections and ingestion latency sampled every 10 s: flat or growing;
//!
//! and samples the service's resident memory (VmRSS / VmHWM) throughout. It prints a table
//! with ratios to pgbench and PASS/MISS per target; a miss never fails the process (this is a
//! measurement). The process fails only when the harness itself cannot run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use formpush_sandbox::{Sandbox, SandboxConfig};
use futures::StreamExt;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

const SECRET: &str = "bench-secret";
const APP_INGEST: &str = "wxbenchingest";
const APP_IMPORT: &str = "wxbenchimport";
const APP_CLAIM: &str = "wxbenchclaim";
const APP_PGBENCH: &str = "wxbenchpg";
const APP_PGBENCH_CLAIM: &str = "wxbenchpgclaim";
const TEMPLATE: &str = "TPL_BENCH";

/// Benchmark formpush on this machine and compare it with pgbench (see BENCHMARKS.md).
#[derive(Parser, Debug, Clone)]
#[command(name = "formpush-bench")]
struct Args {
    /// Tiny sizes and short durations, no meaningful numbers (for CI).
    #[arg(long)]
    quick: bool,
    /// Users in the claim benchmark and in each campaign [default: 100000; quick: 1000].
    #[arg(long)]
    users: Option<usize>,
    /// Also write the results as a markdown section to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The formpush binary to benchmark.
    #[arg(long, default_value = "target/release/formpush")]
    formpush_bin: PathBuf,
    /// Postgres server (no database name); the databases formpush_bench* are dropped and
    /// recreated on it.
    #[arg(long, env = "PG_URL_BASE")]
    pg_url_base: String,
    /// Phases to run, comma-separated: pgbench, claim, ingest, import, campaign, soak (the
    /// soak is never in the default list: `--phases soak`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "pgbench,claim,ingest,import,campaign"
    )]
    phases: Vec<String>,
    /// Measured seconds of formId ingestion (after a warm-up) [default: 20; quick: 2].
    #[arg(long)]
    ingest_secs: Option<u64>,
    /// Concurrent keep-alive connections posting formIds.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Logged-in users the ingestion connections post for (at least one per connection).
    #[arg(long, default_value_t = 256)]
    ingest_users: usize,
    /// Import requests [default: 20; quick: 2].
    #[arg(long)]
    import_batches: Option<usize>,
    /// Items per import request (the API's maximum is 10,000).
    #[arg(long, default_value_t = 10_000)]
    import_batch_size: usize,
    /// Import requests in flight at once (2: one per core, as an admin backend importing in
    /// parallel would).
    #[arg(long, default_value_t = 2)]
    import_concurrency: usize,
    /// Senders claiming at once in (c): each is one app's sender (the service runs one
    /// per app) claiming its own campaign run over an equal share of the users; 1 = one
    /// app's campaign to every user.
    #[arg(long, default_value_t = 4)]
    claim_tasks: usize,
    /// Deliveries per claim_template_batch call (the service claims FORMPUSH_SEND_CONCURRENCY,
    /// default 256).
    #[arg(long, default_value_t = 256)]
    claim_batch: i64,
    /// Seconds of each pgbench run [default: 20; quick: 2].
    #[arg(long)]
    pgbench_secs: Option<u64>,
    /// pgbench clients for the single-row INSERT (64, as the ingestion connections).
    #[arg(long, default_value_t = 64)]
    pgbench_insert_clients: u32,
    /// pgbench clients for the single claim UPDATE (64 gave this machine's highest commit
    /// rate: group commit).
    #[arg(long, default_value_t = 64)]
    pgbench_claim_clients: u32,
    /// Sandbox (fake WeChat) latencies for the campaign runs, in milliseconds.
    #[arg(long, value_delimiter = ',', default_value = "0,50")]
    latencies_ms: Vec<u64>,
    /// Give up waiting for one campaign after this many seconds [default: 300; quick: 60].
    #[arg(long)]
    campaign_timeout_secs: Option<u64>,
    /// Extra environment for the service, e.g. `--service-env FORMPUSH_SEND_CONCURRENCY=1024`
    /// (repeatable); the benchmark's own settings (database, bind, WeChat) win.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_env_pair)]
    service_env: Vec<(String, String)>,
    /// Keep the benchmark databases afterwards (for inspection).
    #[arg(long)]
    keep_db: bool,
    /// Soak (phase `soak`, never in the default list): seconds of mixed load
    /// [default: 600; quick: 20].
    #[arg(long)]
    soak_secs: Option<u64>,
    /// Soak: client formIds per second, paced (open loop) over --soak-connections; half the
    /// ingestion result when the soak was written (10,059/s, see BENCHMARKS.md).
    #[arg(long, default_value_t = 5_000.0)]
    soak_ingest_rate: f64,
    /// Soak: keep-alive connections carrying the paced ingestion.
    #[arg(long, default_value_t = 32)]
    soak_connections: usize,
    /// Soak: the campaign app's send_rate_per_sec; half the campaign rate at 50 ms when the
    /// soak was written (2,023/s, see BENCHMARKS.md).
    #[arg(long, default_value_t = 1_000)]
    soak_send_rate: u32,
    /// Soak: a campaign starts every this many seconds [default: 30; quick: 5].
    #[arg(long)]
    soak_campaign_every_secs: Option<u64>,
    /// Soak: users per campaign (a rotating slice of 5 x this many users) [default: 10000;
    /// quick: 500].
    #[arg(long)]
    soak_campaign_users: Option<usize>,
    /// Soak: fake WeChat latency in milliseconds.
    #[arg(long, default_value_t = 50)]
    soak_latency_ms: u64,
    /// Soak: seconds per sample window [default: 10; quick: 2].
    #[arg(long)]
    soak_window_secs: Option<u64>,
    /// Soak: seconds left out before the "first minute" of the flatness check [default: 30;
    /// quick: 4].
    #[arg(long)]
    soak_warmup_secs: Option<u64>,
}

fn parse_env_pair(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {raw:?}")),
    }
}

/// Sizes after applying `--quick` and the explicit flags.
#[derive(Debug, Clone)]
struct Plan {
    users: usize,
    ingest_secs: u64,
    ingest_warmup: Duration,
    import_batches: usize,
    pgbench_secs: u64,
    campaign_timeout: Duration,
    soak_secs: u64,
    soak_window_secs: u64,
    soak_warmup_secs: u64,
    soak_campaign_every_secs: u64,
    soak_campaign_users: usize,
}

impl Plan {
    fn from(args: &Args) -> Self {
        let q = args.quick;
        Plan {
            users: args.users.unwrap_or(if q { 1_000 } else { 100_000 }).max(1),
            ingest_secs: args.ingest_secs.unwrap_or(if q { 2 } else { 20 }).max(1),
            ingest_warmup: Duration::from_millis(if q { 300 } else { 2_000 }),
            import_batches: args.import_batches.unwrap_or(if q { 2 } else { 20 }).max(1),
            pgbench_secs: args.pgbench_secs.unwrap_or(if q { 2 } else { 20 }).max(1),
            campaign_timeout: Duration::from_secs(args.campaign_timeout_secs.unwrap_or(if q {
                60
            } else {
                300
            })),
            soak_secs: args.soak_secs.unwrap_or(if q { 20 } else { 600 }).max(1),
            soak_window_secs: args
                .soak_window_secs
                .unwrap_or(if q { 2 } else { 10 })
                .max(1),
            soak_warmup_secs: args.soak_warmup_secs.unwrap_or(if q { 4 } else { 30 }),
            soak_campaign_every_secs: args
                .soak_campaign_every_secs
                .unwrap_or(if q { 5 } else { 30 })
                .max(1),
            soak_campaign_users: args
                .soak_campaign_users
                .unwrap_or(if q { 500 } else { 10_000 })
                .max(1),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Results

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Miss,
    Info,
    Error,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Miss => "MISS",
            Verdict::Info => "",
            Verdict::Error => "ERROR",
        }
    }
}

#[derive(Debug, Clone)]
struct Row {
    id: &'static str,
    what: String,
    value: String,
    baseline: String,
    ratio: String,
    target: String,
    verdict: Verdict,
}

impl Row {
    fn info(id: &'static str, what: impl Into<String>, value: impl Into<String>) -> Self {
        Row {
            id,
            what: what.into(),
            value: value.into(),
            baseline: String::new(),
            ratio: String::new(),
            target: String::new(),
            verdict: Verdict::Info,
        }
    }

    fn error(id: &'static str, what: impl Into<String>, err: &anyhow::Error) -> Self {
        let mut r = Row::info(id, what, format!("error: {err:#}"));
        r.verdict = Verdict::Error;
        r
    }

    /// A value checked against a minimum.
    fn at_least(
        id: &'static str,
        what: impl Into<String>,
        value: f64,
        unit: &str,
        min: f64,
        quick: bool,
    ) -> Self {
        Row {
            id,
            what: what.into(),
            value: format!("{} {unit}", fmt_num(value)),
            baseline: String::new(),
            ratio: String::new(),
            target: format!("≥ {} {unit}", fmt_num(min)),
            verdict: judge(value >= min, quick),
        }
    }
}

fn judge(ok: bool, quick: bool) -> Verdict {
    if quick {
        Verdict::Info
    } else if ok {
        Verdict::Pass
    } else {
        Verdict::Miss
    }
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    /// pgbench transactions/s by script name ("insert", "claim").
    pgbench: BTreeMap<&'static str, f64>,
    /// Further markdown sections for --out (the soak's windows).
    sections: Vec<String>,
}

impl Report {
    fn push(&mut self, row: Row) {
        println!(
            "  -> {} {}: {} {} {}",
            row.id,
            row.what,
            row.value,
            row.ratio,
            row.verdict.as_str()
        );
        self.rows.push(row);
    }

    fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        println!("  note: {note}");
        self.notes.push(note);
    }

    fn markdown(&self, machine: &Machine, command: &str) -> String {
        let mut s = String::new();
        s.push_str(&format!("### Run of {}\n\n", machine.date));
        s.push_str(&format!("Command: `{command}`\n\n"));
        s.push_str(&format!(
            "Machine: {} cores ({}), {} RAM, {}; git {}\n\n",
            machine.nproc, machine.cpu, machine.memory, machine.postgres, machine.git
        ));
        s.push_str("| | measurement | result | pgbench | ratio | target | verdict |\n");
        s.push_str("|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                r.id,
                r.what,
                r.value.replace('|', "/"),
                r.baseline,
                r.ratio,
                r.target,
                r.verdict.as_str()
            ));
        }
        if !self.notes.is_empty() {
            s.push('\n');
            for n in &self.notes {
                s.push_str(&format!("- {n}\n"));
            }
        }
        for section in &self.sections {
            s.push('\n');
            s.push_str(section);
        }
        s
    }

    fn print_table(&self) {
        let headers = [
            "",
            "measurement",
            "result",
            "pgbench",
            "ratio",
            "target",
            "verdict",
        ];
        let cells: Vec<[String; 7]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.id.to_string(),
                    r.what.clone(),
                    r.value.clone(),
                    r.baseline.clone(),
                    r.ratio.clone(),
                    r.target.clone(),
                    r.verdict.as_str().to_string(),
                ]
            })
            .collect();
        let mut widths = headers.map(|h| h.chars().count());
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row.iter()) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cols: Vec<&str>| {
            let parts: Vec<String> = cols
                .iter()
                .zip(widths.iter())
                .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
                .collect();
            println!("{}", parts.join(" | ").trim_end());
        };
        println!();
        line(headers.to_vec());
        println!(
            "{}",
            widths
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .join("-+-")
        );
        for row in &cells {
            line(row.iter().map(String::as_str).collect());
        }
        for n in &self.notes {
            println!("note: {n}");
        }
    }
}

fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    if v.abs() >= 100.0 {
        let n = v.round() as i64;
        let digits = n.abs().to_string();
        let mut out = String::new();
        for (i, ch) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(ch);
        }
        if n < 0 {
            format!("-{out}")
        } else {
            out
        }
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

// ---------------------------------------------------------------------------------------
// Machine

struct Machine {
    nproc: usize,
    cpu: String,
    memory: String,
    postgres: String,
    date: String,
    git: String,
}

async fn machine(pg_url_base: &str) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let postgres = match PgConnection::connect(&format!("{pg_url_base}/postgres")).await {
        Ok(mut c) => {
            let v: Result<String, _> = sqlx::query_scalar("show server_version")
                .fetch_one(&mut c)
                .await;
            let sync: Result<String, _> = sqlx::query_scalar("show synchronous_commit")
                .fetch_one(&mut c)
                .await;
            let _ = c.close().await;
            format!(
                "PostgreSQL {} (synchronous_commit={})",
                v.unwrap_or_else(|_| "?".into()),
                sync.unwrap_or_else(|_| "?".into())
            )
        }
        Err(_) => "PostgreSQL ?".into(),
    };
    let git = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into());
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    Machine {
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu,
        memory,
        postgres,
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        git: if dirty {
            format!("{git} + local changes")
        } else {
            git
        },
    }
}

// ---------------------------------------------------------------------------------------
// Databases

fn db_url(base: &str, name: &str) -> String {
    format!("{}/{name}", base.trim_end_matches('/'))
}

async fn recreate_db(base: &str, name: &str) -> anyhow::Result<String> {
    drop_db(base, name).await?;
    let mut c = PgConnection::connect(&db_url(base, "postgres"))
        .await
        .context("connecting to Postgres (PG_URL_BASE)")?;
    sqlx::raw_sql(&format!("create database {name}"))
        .execute(&mut c)
        .await
        .with_context(|| format!("creating database {name}"))?;
    let _ = c.close().await;
    Ok(db_url(base, name))
}

async fn drop_db(base: &str, name: &str) -> anyhow::Result<()> {
    let mut c = PgConnection::connect(&db_url(base, "postgres"))
        .await
        .context("connecting to Postgres (PG_URL_BASE)")?;
    sqlx::raw_sql(&format!("drop database if exists {name} with (force)"))
        .execute(&mut c)
        .await
        .with_context(|| format!("dropping database {name}"))?;
    let _ = c.close().await;
    Ok(())
}

/// A freshly created and migrated database with a small pool.
async fn fresh_migrated(base: &str, name: &str, connections: u32) -> anyhow::Result<PgPool> {
    let url = recreate_db(base, name).await?;
    formpush::db::prepare(&url, connections).await
}

// ---------------------------------------------------------------------------------------
// (e) pgbench

fn find_pgbench() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("pgbench");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let p = e.path().join("bin/pgbench");
            p.is_file().then_some((v, p))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

const PGBENCH_INSERT: &str = r#"\set u random(:umin, :umax)
insert into formids (appid, user_id, form_id, kind, uses_left, created_at, expires_at)
values (:appid, :u, md5(random()::text), 'formid', 1, now(), now() + interval '7 days')
on conflict (user_id, form_id) do nothing
returning form_id;
"#;

// Each client walks the users in a shared pseudo-random order (`permute`; `n` counts the
// client's own transactions, so clients never pick the same user in one round): every
// transaction claims a formId until each user has been claimed five times. A random user
// (with repeats) left users without formIds within 20 s on a fast disk, and those
// transactions commit nothing, which inflated the baseline.
const PGBENCH_CLAIM: &str = r#"\set n :n + 1
\set u :umin + permute((:n * :clients + :client_id) % :users, :users)
update formids set uses_left = uses_left - 1, last_used_at = now()
where id = (select id from formids
            where user_id = :u and uses_left > 0 and not invalid
              and expires_at > now() + interval '1 minute'
            order by created_at desc
            limit 1
            for update skip locked);
"#;

struct PgbenchResult {
    tps: f64,
    latency_ms: Option<f64>,
}

async fn run_pgbench(
    pgbench: &Path,
    script: &Path,
    url: &str,
    clients: u32,
    secs: u64,
    vars: &[(&str, String)],
) -> anyhow::Result<PgbenchResult> {
    let mut cmd = tokio::process::Command::new(pgbench);
    cmd.arg("-n")
        .arg("-M")
        .arg("prepared")
        .arg("-c")
        .arg(clients.to_string())
        .arg("-j")
        .arg("2")
        .arg("-T")
        .arg(secs.to_string())
        .arg("-f")
        .arg(script);
    for (k, v) in vars {
        cmd.arg("-D").arg(format!("{k}={v}"));
    }
    cmd.arg(url).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(secs + 120), cmd.output())
        .await
        .context("pgbench did not finish")?
        .context("running pgbench")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "pgbench failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let tps = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| anyhow!("no tps in pgbench output:\n{stdout}"))?;
    let latency_ms = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("latency average = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok());
    Ok(PgbenchResult { tps, latency_ms })
}

/// Seeds `users` users of `appid` with `per_user` usable formIds each (created a minute
/// apart, freshest last), in set-based multi-row inserts. Returns the users' id range.
async fn seed_users_and_formids(
    pool: &PgPool,
    appid: &str,
    prefix: &str,
    users: usize,
    per_user: i32,
) -> anyhow::Result<(i64, i64)> {
    sqlx::query(
        "insert into apps (appid, secret, send_rate_per_sec) values ($1, $2, 100000)
         on conflict (appid) do nothing",
    )
    .bind(appid)
    .bind(SECRET)
    .execute(pool)
    .await?;
    // Chunks keep each statement's transaction short.
    let chunk = 50_000usize;
    let mut start = 0usize;
    while start < users {
        let end = (start + chunk).min(users);
        sqlx::query(
            "insert into users (appid, openid)
             select $1, $2 || g from generate_series($3::bigint, $4::bigint) g",
        )
        .bind(appid)
        .bind(prefix)
        .bind(start as i64)
        .bind(end as i64 - 1)
        .execute(pool)
        .await?;
        start = end;
    }
    let (min, max): (i64, i64) =
        sqlx::query_as("select min(id), max(id) from users where appid = $1")
            .bind(appid)
            .fetch_one(pool)
            .await?;
    if per_user > 0 {
        let mut lo = min;
        while lo <= max {
            let hi = (lo + chunk as i64 - 1).min(max);
            sqlx::query(
                "insert into formids (appid, user_id, form_id, kind, uses_left, created_at, expires_at)
                 select $1, u.id, md5(u.id::text || '-' || k), 'formid', 1,
                        now() - make_interval(mins => $2::int - k),
                        now() - make_interval(mins => $2::int - k) + interval '7 days'
                 from users u cross join generate_series(1, $2::int) k
                 where u.appid = $1 and u.id between $3 and $4",
            )
            .bind(appid)
            .bind(per_user)
            .bind(lo)
            .bind(hi)
            .execute(pool)
            .await?;
            lo = hi + 1;
        }
    }
    sqlx::raw_sql("vacuum analyze").execute(pool).await?;
    Ok((min, max))
}

async fn phase_pgbench(args: &Args, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let Some(pgbench) = find_pgbench() else {
        report.note("pgbench not found (PATH, /usr/lib/postgresql/*/bin): (e) skipped, no ratios");
        return Ok(());
    };
    let dir = std::env::temp_dir().join(format!("formpush-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let insert_script = dir.join("insert.sql");
    let claim_script = dir.join("claim.sql");
    std::fs::write(&insert_script, PGBENCH_INSERT)?;
    std::fs::write(&claim_script, PGBENCH_CLAIM)?;

    let name = "formpush_bench_pg";
    let pool = fresh_migrated(&args.pg_url_base, name, 2).await?;
    let url = db_url(&args.pg_url_base, name);

    // Single-row INSERT into the real formids table (all its indexes, the FK to users).
    let (umin, umax) = seed_users_and_formids(&pool, APP_PGBENCH, "pgi-", 1_000, 0).await?;
    let secs = plan.pgbench_secs;
    println!(
        "(e) pgbench single-row INSERT: -c {} -j 2 -T {secs}",
        args.pgbench_insert_clients
    );
    let insert = run_pgbench(
        &pgbench,
        &insert_script,
        &url,
        args.pgbench_insert_clients,
        secs,
        &[
            ("appid", APP_PGBENCH.to_string()),
            ("umin", umin.to_string()),
            ("umax", umax.to_string()),
        ],
    )
    .await;
    match insert {
        Ok(r) => {
            report.pgbench.insert("insert", r.tps);
            let mut row = Row::info(
                "e",
                format!(
                    "pgbench single-row formId INSERT (-c {})",
                    args.pgbench_insert_clients
                ),
                format!("{} tps", fmt_num(r.tps)),
            );
            if let Some(l) = r.latency_ms {
                row.value.push_str(&format!(", avg {l:.2} ms"));
            }
            report.push(row);
        }
        Err(e) => report.push(Row::error("e", "pgbench single-row INSERT", &e)),
    }

    // Single claim UPDATE over users × 5 formIds, as in (c).
    let claim_users = plan.users;
    let (cmin, cmax) =
        seed_users_and_formids(&pool, APP_PGBENCH_CLAIM, "pgc-", claim_users, 5).await?;
    println!(
        "(e) pgbench single claim UPDATE over {claim_users} users x 5 formIds: -c {} -j 2 -T {secs}",
        args.pgbench_claim_clients
    );
    let claim = run_pgbench(
        &pgbench,
        &claim_script,
        &url,
        args.pgbench_claim_clients,
        secs,
        &[
            ("umin", cmin.to_string()),
            ("users", (cmax - cmin + 1).to_string()),
            ("clients", args.pgbench_claim_clients.to_string()),
            ("n", "0".to_string()),
        ],
    )
    .await;
    match claim {
        Ok(r) => {
            report.pgbench.insert("claim", r.tps);
            let mut row = Row::info(
                "e",
                format!(
                    "pgbench single claim UPDATE (-c {})",
                    args.pgbench_claim_clients
                ),
                format!("{} tps", fmt_num(r.tps)),
            );
            if let Some(l) = r.latency_ms {
                row.value.push_str(&format!(", avg {l:.2} ms"));
            }
            report.push(row);
        }
        Err(e) => report.push(Row::error("e", "pgbench single claim UPDATE", &e)),
    }
    // Users left without a usable formId make later claims no-ops (no commit to wait for),
    // which would inflate the baseline.
    let emptied: i64 = sqlx::query_scalar(
        "select count(*) from users u where u.appid = $1 and not exists
           (select 1 from formids f where f.user_id = u.id and f.uses_left > 0)",
    )
    .bind(APP_PGBENCH_CLAIM)
    .fetch_one(&pool)
    .await?;
    if emptied * 20 > claim_users as i64 {
        report.note(format!(
            "(e) {emptied} of {claim_users} users ran out of formIds during the pgbench claim: \
             part of its transactions claimed nothing, so its rate is inflated (use more --users)"
        ));
    }
    pool.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    if !args.keep_db {
        drop_db(&args.pg_url_base, name).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// (c) claim-and-consume with the production SQL

async fn phase_claim(args: &Args, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let name = "formpush_bench_claim";
    // One sender per app claims at a time (the app lease), so concurrent claims in the
    // service are those of different apps: each task is one app's sender, with its own
    // campaign run over its share of the users, claiming with a cursor as the service does.
    let users = plan.users;
    // Every app needs at least one user (an empty one would have nothing to claim).
    let senders = args.claim_tasks.clamp(1, users.max(1));
    let pool = fresh_migrated(&args.pg_url_base, name, senders as u32 + 1).await?;
    println!("(c) seeding {users} users x 5 formIds over {senders} apps, a run per app and its deliveries");
    let seed_started = Instant::now();
    let appids: Vec<String> = (0..senders).map(|k| format!("{APP_CLAIM}{k}")).collect();
    let mut runs = Vec::with_capacity(senders);
    for (k, appid) in appids.iter().enumerate() {
        let share = users / senders + usize::from(k < users % senders);
        seed_users_and_formids(&pool, appid, &format!("c{k}-"), share, 5).await?;
        runs.push(seed_running_run(&pool, appid).await?);
    }
    sqlx::raw_sql("vacuum analyze").execute(&pool).await?;
    println!(
        "(c) seeded in {:.1} s; claiming with {senders} senders x {} per call",
        seed_started.elapsed().as_secs_f64(),
        args.claim_batch
    );

    let max_calls = users as i64 / args.claim_batch.max(1) + 1_000;
    let started = Instant::now();
    let mut handles = Vec::new();
    for run_id in runs {
        let pool = pool.clone();
        let limit = args.claim_batch.max(1);
        handles.push(tokio::spawn(async move {
            let mut claimed = 0u64;
            let mut other = 0u64;
            let mut calls = 0u64;
            // Like the service's sender: a cursor over delivery ids (see Pipeline::work_app).
            let mut after = 0i64;
            for _ in 0..max_calls {
                let batch = formpush::store::deliveries::claim_template_batch(
                    &pool, run_id, limit, formpush::domain::campaign::FormidPick::Freshest, 120.0, after,
                )
                .await?;
                calls += 1;
                if batch.is_empty() {
                    break;
                }
                after = batch.iter().map(|d| d.id).max().unwrap_or(after);
                for d in &batch {
                    if d.status == formpush::domain::delivery::DeliveryStatus::Sending {
                        claimed += 1;
                    } else {
                        other += 1;
                    }
                }
            }
            Ok::<_, sqlx::Error>((claimed, other, calls))
        }));
    }
    let mut claimed = 0u64;
    let mut other = 0u64;
    let mut calls = 0u64;
    for h in handles {
        let (c, o, n) = h.await??;
        claimed += c;
        other += o;
        calls += n;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let consumed: i64 = sqlx::query_scalar(
        "select count(*) from formids f join users u on u.id = f.user_id
         where u.appid = any($1) and f.uses_left = 0",
    )
    .bind(&appids)
    .fetch_one(&pool)
    .await?;
    let rate = claimed as f64 / elapsed;
    let mut row = Row::info(
        "c",
        format!(
            "claim-and-consume, claim_template_batch ({senders} senders x {})",
            args.claim_batch
        ),
        format!(
            "{} claims/s ({} in {:.2} s, {calls} calls)",
            fmt_num(rate),
            fmt_num(claimed as f64),
            elapsed
        ),
    );
    ratio_to(
        &mut row,
        rate,
        report.pgbench.get("claim").copied(),
        5.0,
        args.quick,
    );
    report.push(row);
    if claimed != users as u64 || other != 0 || consumed != users as i64 {
        report.note(format!(
            "(c) expected {users} claims: got {claimed} sending, {other} without a formId, {consumed} formIds consumed"
        ));
    }
    pool.close().await;
    if !args.keep_db {
        drop_db(&args.pg_url_base, name).await?;
    }
    Ok(())
}

/// A running template campaign to every user of `appid`, with one pending delivery each;
/// no scheduler runs on the benchmark database, so only the benchmark claims them.
async fn seed_running_run(pool: &PgPool, appid: &str) -> anyhow::Result<Uuid> {
    let campaign_id = Uuid::new_v4();
    let run_id = Uuid::new_v4();
    sqlx::query(
        "insert into campaigns (id, appid, name, kind, template_id, data, audience_type,
                                schedule, timezone, status)
         values ($1, $2, 'claim bench', 'template', $3, '{}'::jsonb, 'all',
                 '{\"type\":\"now\"}'::jsonb, 'Asia/Shanghai', 'running')",
    )
    .bind(campaign_id)
    .bind(appid)
    .bind(TEMPLATE)
    .execute(pool)
    .await?;
    sqlx::query(
        "insert into campaign_runs (id, campaign_id, appid, scheduled_for, status)
         values ($1, $2, $3, now(), 'running')",
    )
    .bind(run_id)
    .bind(campaign_id)
    .bind(appid)
    .execute(pool)
    .await?;
    sqlx::query(
        "insert into deliveries (run_id, campaign_id, user_id, openid)
         select $1, $2, id, openid from users where appid = $3",
    )
    .bind(run_id)
    .bind(campaign_id)
    .bind(appid)
    .execute(pool)
    .await?;
    Ok(run_id)
}

fn ratio_to(row: &mut Row, value: f64, baseline: Option<f64>, min_ratio: f64, quick: bool) {
    row.target = format!("≥ {min_ratio:.1}× pgbench");
    match baseline {
        Some(b) if b > 0.0 => {
            let ratio = value / b;
            row.baseline = format!("{} tps", fmt_num(b));
            row.ratio = format!("{ratio:.2}×");
            row.verdict = judge(ratio >= min_ratio, quick);
        }
        _ => {
            row.baseline = "n/a".into();
            row.ratio = "n/a".into();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The service under test

/// Watches the service's resident memory: `VmRSS` sampled every 100 ms, `VmHWM` at stop.
#[derive(Clone, Default)]
struct MemWatch {
    pid: Arc<AtomicU32>,
    max_rss_kb: Arc<AtomicU64>,
    max_hwm_kb: Arc<AtomicU64>,
}

fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

impl MemWatch {
    fn start(&self, stop: tokio_util::sync::CancellationToken) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !stop.is_cancelled() {
                tick.tick().await;
                me.sample();
            }
        });
    }

    fn sample(&self) {
        let pid = self.pid.load(Ordering::SeqCst);
        if pid == 0 {
            return;
        }
        if let Some(kb) = proc_status_kb(pid, "VmRSS:") {
            self.max_rss_kb.fetch_max(kb, Ordering::SeqCst);
        }
        if let Some(kb) = proc_status_kb(pid, "VmHWM:") {
            self.max_hwm_kb.fetch_max(kb, Ordering::SeqCst);
        }
    }

    fn max_mib(&self) -> f64 {
        let kb = self
            .max_rss_kb
            .load(Ordering::SeqCst)
            .max(self.max_hwm_kb.load(Ordering::SeqCst));
        kb as f64 / 1024.0
    }
}

struct Service {
    child: tokio::process::Child,
    base: String,
    admin_token: String,
    log: PathBuf,
    mem: MemWatch,
    http: reqwest::Client,
}

impl Service {
    async fn start(
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

    fn pid(&self) -> u32 {
        self.mem.pid.load(Ordering::SeqCst)
    }

    async fn stop(mut self) -> anyhow::Result<()> {
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

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.admin_token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("{path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn put_app(&self, appid: &str) -> anyhow::Result<()> {
        self.admin(
            reqwest::Method::PUT,
            &format!("/v1/apps/{appid}"),
            Some(&json!({"secret": SECRET, "send_rate_per_sec": 100000})),
        )
        .await?;
        Ok(())
    }

    /// Posts one import request (a prepared JSON body); returns the accepted count.
    async fn import(&self, appid: &str, body: Vec<u8>) -> anyhow::Result<u64> {
        let resp = self
            .http
            .post(format!("{}/v1/apps/{appid}/formids:import", self.base))
            .bearer_auth(&self.admin_token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("import: {status}: {text}");
        }
        let v: Value = serde_json::from_str(&text)?;
        Ok(v["accepted"].as_u64().unwrap_or(0))
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// An in-process fake WeChat answering after `latency_ms`.
struct FakeWeChat {
    sandbox: Sandbox,
    server: formpush_sandbox::SandboxServer,
}

impl FakeWeChat {
    fn start(latency_ms: u64, apps: &[&str]) -> anyhow::Result<Self> {
        let sandbox = Sandbox::new(SandboxConfig {
            latency: Duration::from_millis(latency_ms),
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

// ---------------------------------------------------------------------------------------
// (a) client ingestion over raw keep-alive HTTP/1.1

/// One keep-alive HTTP/1.1 connection with just enough of a client for this benchmark:
/// one request in flight, `Content-Length` bodies (what actix answers with).
struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

fn find_subslice(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl RawConn {
    async fn connect(addr: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(RawConn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends one request, returns the status and the body.
    async fn roundtrip(&mut self, request: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        let mut header_end = None;
        let mut total = usize::MAX;
        // Bounded: a response larger than 1 MiB is an error.
        while self.buf.len() < total {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed by the server");
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if self.buf.len() > 1 << 20 {
                bail!("response too large");
            }
            if header_end.is_none() {
                if let Some(end) = find_subslice(&self.buf, b"\r\n\r\n") {
                    let head = std::str::from_utf8(&self.buf[..end])?;
                    let len = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.trim()
                                .eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .ok_or_else(|| anyhow!("response without Content-Length: {head}"))?;
                    header_end = Some(end);
                    total = end + 4 + len;
                }
            }
        }
        let end = header_end.ok_or_else(|| anyhow!("no response header"))?;
        let status_line = std::str::from_utf8(&self.buf[..end])?
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
        Ok((status, self.buf[end + 4..total].to_vec()))
    }
}

#[derive(Default)]
struct IngestTally {
    accepted: u64,
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    latencies_us: Vec<u32>,
}

async fn login_users(
    svc: &Service,
    wechat: &FakeWeChat,
    appid: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let mut tokens = Vec::with_capacity(count);
    let mut pending = futures::stream::FuturesOrdered::new();
    for i in 0..count {
        let code = wechat.sandbox.login_code(appid, &format!("ingest-{i}"));
        let http = svc.http.clone();
        let url = format!("{}/v1/apps/{appid}/sessions", svc.base);
        pending.push_back(async move {
            let resp = http.post(url).json(&json!({"code": code})).send().await?;
            let status = resp.status();
            let v: Value = resp.json().await?;
            if !status.is_success() {
                bail!("login: {status}: {v}");
            }
            v["token"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("login answer without token: {v}"))
        });
        if pending.len() >= 16 {
            if let Some(t) = pending.next().await {
                tokens.push(t?);
            }
        }
    }
    while let Some(t) = pending.next().await {
        tokens.push(t?);
    }
    Ok(tokens)
}

async fn phase_ingest(
    args: &Args,
    plan: &Plan,
    svc: &Service,
    wechat: &FakeWeChat,
    report: &mut Report,
) -> anyhow::Result<()> {
    let conns = args.connections.max(1);
    let users = args.ingest_users.max(conns);
    svc.put_app(APP_INGEST).await?;
    println!("(a) logging in {users} users through the sandbox");
    let tokens = login_users(svc, wechat, APP_INGEST, users).await?;
    let addr = svc.base.trim_start_matches("http://").to_string();
    let warmup = plan.ingest_warmup;
    let measure = Duration::from_secs(plan.ingest_secs);
    println!(
        "(a) {conns} keep-alive connections, one formId per request, {:.1} s warm-up + {} s",
        warmup.as_secs_f64(),
        plan.ingest_secs
    );
    let nonce: u32 = rand::random();
    let started = Instant::now();
    let measure_from = started + warmup;
    let deadline = measure_from + measure;
    let mut handles = Vec::new();
    for c in 0..conns {
        let my_tokens: Vec<String> = tokens.iter().skip(c).step_by(conns).cloned().collect();
        let addr = addr.clone();
        handles.push(tokio::spawn(async move {
            let mut tally = IngestTally {
                latencies_us: Vec::with_capacity(65_536),
                ..IngestTally::default()
            };
            let mut conn = RawConn::connect(&addr).await?;
            let mut counter: u64 = 0;
            // Bounded by the deadline; the iteration cap is a safety net.
            while Instant::now() < deadline && counter < 100_000_000 {
                counter += 1;
                let token = &my_tokens[(counter as usize) % my_tokens.len()];
                let form_id = format!("{nonce:08x}{:08x}{counter:016x}", c as u32);
                let body = format!("{{\"form_id\":\"{form_id}\"}}");
                let request = format!(
                    "POST /v1/apps/{APP_INGEST}/formids HTTP/1.1\r\nHost: {addr}\r\n\
                     Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let t0 = Instant::now();
                let result = tokio::time::timeout(
                    Duration::from_secs(30),
                    conn.roundtrip(request.as_bytes()),
                )
                .await
                .map_err(|_| anyhow!("request timed out"))
                .and_then(|r| r);
                let counted = t0 >= measure_from;
                match result {
                    Ok((200, body)) => {
                        if counted {
                            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            tally.accepted += v["accepted"].as_u64().unwrap_or(0);
                            tally.requests += 1;
                            let us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
                            tally.latencies_us.push(us);
                        }
                    }
                    Ok((status, body)) => {
                        tally.errors += 1;
                        tally.first_error.get_or_insert_with(|| {
                            format!("{status}: {}", String::from_utf8_lossy(&body))
                        });
                    }
                    Err(e) => {
                        tally.errors += 1;
                        tally.first_error.get_or_insert_with(|| e.to_string());
                        conn = RawConn::connect(&addr).await?;
                    }
                }
            }
            Ok::<_, anyhow::Error>(tally)
        }));
    }
    let mut total = IngestTally::default();
    for h in handles {
        let t = h.await??;
        total.accepted += t.accepted;
        total.requests += t.requests;
        total.errors += t.errors;
        if total.first_error.is_none() {
            total.first_error = t.first_error;
        }
        total.latencies_us.extend(t.latencies_us);
    }
    let elapsed = measure_from.elapsed().as_secs_f64();
    total.latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if total.latencies_us.is_empty() {
            return f64::NAN;
        }
        let idx = ((total.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        total.latencies_us[idx] as f64 / 1000.0
    };
    let rate = total.accepted as f64 / elapsed;
    let mut row = Row::info(
        "a",
        format!("client formId ingestion ({conns} connections, 1 formId/request)"),
        format!("{} accepted/s", fmt_num(rate)),
    );
    ratio_to(
        &mut row,
        rate,
        report.pgbench.get("insert").copied(),
        1.0,
        args.quick,
    );
    report.push(row);
    report.push(Row::info(
        "a",
        "ingestion latency p50 / p99 / max",
        format!("{:.2} / {:.2} / {:.2} ms", pct(0.50), pct(0.99), pct(1.0)),
    ));
    if total.errors > 0 || total.accepted != total.requests {
        report.note(format!(
            "(a) {} requests counted, {} accepted, {} errors (first: {})",
            total.requests,
            total.accepted,
            total.errors,
            total.first_error.unwrap_or_default()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// (b) admin bulk import

fn import_body(items: impl Iterator<Item = (String, String)>) -> Vec<u8> {
    let items: Vec<Value> = items
        .map(|(openid, form_id)| json!({"openid": openid, "form_id": form_id}))
        .collect();
    serde_json::to_vec(&json!({ "items": items })).expect("JSON encoding")
}

async fn phase_import(
    args: &Args,
    plan: &Plan,
    svc: &Service,
    report: &mut Report,
) -> anyhow::Result<()> {
    svc.put_app(APP_IMPORT).await?;
    let size = args.import_batch_size.clamp(1, 10_000);
    let batches = plan.import_batches;
    let nonce: u32 = rand::random();
    // Each batch: size formIds for size/5 users (new users: the import upserts them).
    let bodies: Vec<Vec<u8>> = (0..batches)
        .map(|b| {
            import_body((0..size).map(move |i| {
                let n = (b * size + i) as u64;
                (
                    format!("imp-{}", n / 5),
                    format!("{nonce:08x}{:08x}{n:016x}", 0xffff_fff0u32),
                )
            }))
        })
        .collect();
    println!(
        "(b) importing {batches} x {size} items ({} KiB per body), {} in flight",
        bodies[0].len() / 1024,
        args.import_concurrency.max(1)
    );
    let started = Instant::now();
    let results: Vec<anyhow::Result<u64>> = futures::stream::iter(bodies)
        .map(|body| svc.import(APP_IMPORT, body))
        .buffer_unordered(args.import_concurrency.max(1))
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut accepted = 0u64;
    for r in results {
        accepted += r?;
    }
    let rate = accepted as f64 / elapsed;
    let mut row = Row::at_least(
        "b",
        format!(
            "admin bulk import ({size} items/request, {} in flight)",
            args.import_concurrency.max(1)
        ),
        rate,
        "rows/s",
        100_000.0,
        args.quick,
    );
    row.value = format!(
        "{} rows/s ({} rows in {:.2} s)",
        fmt_num(rate),
        fmt_num(accepted as f64),
        elapsed
    );
    report.push(row);
    let expected = (batches * size) as u64;
    if accepted != expected {
        report.note(format!(
            "(b) {accepted} of {expected} imported formIds accepted"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// (d) end-to-end campaign

async fn phase_campaign(
    args: &Args,
    plan: &Plan,
    svc: &Service,
    wechat: &FakeWeChat,
    latency_ms: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let appid = format!("wxbenchcamp{latency_ms}");
    svc.put_app(&appid).await?;
    let users = plan.users;
    println!("(d{latency_ms}) seeding {users} users with a sandbox-issued formId each");
    let seed_started = Instant::now();
    let mut items = Vec::with_capacity(users);
    for i in 0..users {
        let openid = format!("camp{latency_ms}-{i}");
        wechat.sandbox.add_user(&appid, &openid);
        let form_id = wechat.sandbox.form_id(&appid, &openid);
        items.push((openid, form_id));
    }
    let mut accepted = 0;
    for chunk in items.chunks(10_000) {
        accepted += svc
            .import(&appid, import_body(chunk.iter().cloned()))
            .await?;
    }
    drop(items);
    println!(
        "(d{latency_ms}) seeded in {:.1} s ({accepted} formIds accepted)",
        seed_started.elapsed().as_secs_f64()
    );
    let campaign = json!({
        "appid": appid,
        "name": format!("bench {latency_ms} ms"),
        "kind": "template",
        "template_id": TEMPLATE,
        "page": "pages/index/index",
        "data": {"keyword1": {"value": "{{openid}}"}, "keyword2": {"value": "{{datetime}}"}},
        "audience": {"type": "all"},
        "schedule": {"type": "now"}
    });
    let started = Instant::now();
    let created = svc
        .admin(reqwest::Method::POST, "/v1/campaigns", Some(&campaign))
        .await?;
    let id = created["id"]
        .as_str()
        .ok_or_else(|| anyhow!("campaign answer without id: {created}"))?
        .to_string();
    println!("(d{latency_ms}) campaign {id} created; polling");
    let mut last = Value::Null;
    let mut done = false;
    let mut next_print = Instant::now() + Duration::from_secs(10);
    while started.elapsed() < plan.campaign_timeout {
        tokio::time::sleep(Duration::from_millis(250)).await;
        last = svc
            .admin(reqwest::Method::GET, &format!("/v1/campaigns/{id}"), None)
            .await?;
        let status = last["status"].as_str().unwrap_or_default();
        if matches!(status, "completed" | "failed" | "cancelled") {
            done = true;
            break;
        }
        if Instant::now() >= next_print {
            println!(
                "(d{latency_ms}) {:.0} s: {status}, totals {}",
                started.elapsed().as_secs_f64(),
                last["totals"]
            );
            next_print += Duration::from_secs(10);
        }
    }
    let total_secs = started.elapsed().as_secs_f64();
    let status = last["status"].as_str().unwrap_or("?").to_string();
    let sent = last["totals"]["sent"].as_u64().unwrap_or(0);
    let rate = sent as f64 / total_secs;
    let quick = args.quick;
    let what = format!("campaign to {users} users, fake WeChat latency {latency_ms} ms");
    let value = format!(
        "{} sends/s ({} sent in {:.1} s{})",
        fmt_num(rate),
        fmt_num(sent as f64),
        total_secs,
        if done {
            String::new()
        } else {
            format!(", gave up: {status}")
        }
    );
    if latency_ms == 50 {
        let mut row = Row::at_least("d", what, rate, "sends/s", 2_000.0, quick);
        row.value = value;
        row.verdict = judge(done && status == "completed" && rate >= 2_000.0, quick);
        report.push(row);
        let mut row = Row::info(
            "d",
            format!("campaign total time, {latency_ms} ms"),
            format!("{total_secs:.1} s"),
        );
        row.target = format!("< 60 s for {} users", fmt_num(100_000.0));
        row.verdict = judge(
            done && status == "completed" && users >= 100_000 && total_secs < 60.0,
            quick || users < 100_000,
        );
        report.push(row);
    } else {
        report.push(Row::info("d", what, value));
    }
    if status != "completed" || sent != users as u64 {
        report.note(format!(
            "(d{latency_ms}) campaign ended {status}: totals {}, last_error {}; sandbox accepted {} of {} send attempts",
            last["totals"],
            last["last_error"],
            wechat.sandbox.message_count(),
            wechat.sandbox.send_attempts()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// soak: paced ingestion and periodic campaigns for minutes, watching for growth

const APP_SOAK: &str = "wxbenchsoak";
const SOAK_DB: &str = "formpush_bench_soak";
/// The campaigns rotate over this many slices of --soak-campaign-users users.
const SOAK_SLICES: usize = 5;
/// "flat": the last minute's average is at most this much above the first minute's...
const SOAK_TOLERANCE: f64 = 0.20;
/// ...and, for resident memory, at most this many MiB above it.
const SOAK_RSS_TOLERANCE_MIB: f64 = 20.0;

/// What the paced ingestion connections share with the sampler.
#[derive(Default)]
struct SoakIngest {
    accepted: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    /// Scheduled requests dropped because their connection had fallen more than 1 s behind.
    skipped: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
    /// Latencies (µs) of the responses received in the current window.
    window_us: std::sync::Mutex<Vec<u32>>,
}

impl SoakIngest {
    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(e);
    }
}

/// One sample window of the soak.
#[derive(Debug, Clone)]
struct SoakWindow {
    /// Seconds since the soak started, at the end of the window.
    end_secs: f64,
    /// Service VmRSS at the end of the window.
    rss_mib: f64,
    /// Entries of /proc/PID/fd at the end of the window.
    fds: f64,
    /// Connections to the soak database in pg_stat_activity at the end of the window.
    pg_conns: f64,
    accepted_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    sends_per_sec: f64,
    errors: u64,
    campaigns_done: usize,
}

#[derive(Debug, Clone, Default)]
struct SoakCampaign {
    n: usize,
    slice: usize,
    /// Seconds since the soak started when it was due, and how late it started.
    due_secs: f64,
    late_secs: f64,
    /// Import of the fresh formIds.
    import_secs: f64,
    /// From the POST to a final status.
    secs: f64,
    status: String,
    targeted: u64,
    sent: u64,
    failed: u64,
    no_formid: u64,
    error: Option<String>,
}

impl SoakCampaign {
    fn ok(&self, users: usize) -> bool {
        self.error.is_none()
            && self.status == "completed"
            && self.targeted == users as u64
            && self.sent == self.targeted
    }
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    sorted_us[idx] as f64 / 1000.0
}

fn count_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// One keep-alive connection posting one formId per request on a fixed schedule (open
/// loop): request k is due at `first + k * interval`. A request's latency counts from its
/// due time when the connection was still busy then (so a stall counts fully, as it would
/// for the clients that arrive during it), else from when it was sent.
#[allow(clippy::too_many_arguments)]
async fn soak_ingest_conn(
    addr: String,
    tokens: Vec<String>,
    conn_index: u32,
    nonce: u32,
    first: Instant,
    interval: Duration,
    deadline: Instant,
    shared: Arc<SoakIngest>,
) {
    let mut conn = match RawConn::connect(&addr).await {
        Ok(c) => Some(c),
        Err(e) => {
            shared.error(format!("connect: {e:#}"));
            None
        }
    };
    let max_requests = (deadline.saturating_duration_since(first).as_secs_f64()
        / interval.as_secs_f64().max(1e-6)) as u64
        + 2;
    let mut next = first;
    let mut counter: u64 = 0;
    while next < deadline && counter < max_requests {
        counter += 1;
        let origin = if Instant::now() >= next {
            next
        } else {
            tokio::time::sleep_until(next.into()).await;
            Instant::now()
        };
        next += interval;
        let Some(c) = conn.as_mut() else {
            // Reconnect on the next due time, not in a tight loop.
            conn = match RawConn::connect(&addr).await {
                Ok(c) => Some(c),
                Err(e) => {
                    shared.error(format!("connect: {e:#}"));
                    None
                }
            };
            continue;
        };
        let token = &tokens[(counter as usize) % tokens.len()];
        let form_id = format!("{nonce:08x}{conn_index:08x}{counter:016x}");
        let body = format!("{{\"form_id\":\"{form_id}\"}}");
        let request = format!(
            "POST /v1/apps/{APP_INGEST}/formids HTTP/1.1\r\nHost: {addr}\r\n\
             Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let result = tokio::time::timeout(Duration::from_secs(30), c.roundtrip(request.as_bytes()))
            .await
            .map_err(|_| anyhow!("request timed out"))
            .and_then(|r| r);
        let done = Instant::now();
        shared.requests.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok((200, body)) => {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                shared
                    .accepted
                    .fetch_add(v["accepted"].as_u64().unwrap_or(0), Ordering::Relaxed);
                let us = (done - origin).as_micros().min(u32::MAX as u128) as u32;
                shared
                    .window_us
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(us);
            }
            Ok((status, body)) => {
                shared.error(format!("{status}: {}", String::from_utf8_lossy(&body)));
            }
            Err(e) => {
                shared.error(format!("{e:#}"));
                conn = None;
            }
        }
        // More than a second behind: drop the missed due times (counted) rather than
        // bursting them.
        if done > next + Duration::from_secs(1) {
            let behind = (done - next).as_secs_f64();
            let missed = (behind / interval.as_secs_f64()).floor() as u64;
            next += interval.mul_f64(missed as f64);
            counter += missed;
            shared.skipped.fetch_add(missed, Ordering::Relaxed);
        }
    }
}

/// Imports a fresh sandbox-issued formId for every user of the slice, creates a template
/// campaign to exactly them and polls it until it ends.
async fn soak_one_campaign(
    svc: &Service,
    sandbox: &Sandbox,
    c: &mut SoakCampaign,
    users: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let openids: Vec<String> = (0..users).map(|i| format!("soak{}-{i}", c.slice)).collect();
    let items: Vec<(String, String)> = openids
        .iter()
        .map(|o| (o.clone(), sandbox.form_id(APP_SOAK, o)))
        .collect();
    let import_started = Instant::now();
    let mut accepted = 0;
    for chunk in items.chunks(10_000) {
        accepted += svc
            .import(APP_SOAK, import_body(chunk.iter().cloned()))
            .await?;
    }
    c.import_secs = import_started.elapsed().as_secs_f64();
    if accepted != users as u64 {
        bail!("import accepted {accepted} of {users} fresh formIds");
    }
    let campaign = json!({
        "appid": APP_SOAK,
        "name": format!("soak #{} (slice {})", c.n, c.slice),
        "kind": "template",
        "template_id": TEMPLATE,
        "page": "pages/index/index",
        "data": {"keyword1": {"value": "{{openid}}"}, "keyword2": {"value": "{{datetime}}"}},
        "audience": {"type": "openids", "openids": openids},
        "schedule": {"type": "now"}
    });
    let started = Instant::now();
    let created = svc
        .admin(reqwest::Method::POST, "/v1/campaigns", Some(&campaign))
        .await?;
    let id = created["id"]
        .as_str()
        .ok_or_else(|| anyhow!("campaign answer without id: {created}"))?
        .to_string();
    let mut last = Value::Null;
    while started.elapsed() < timeout {
        tokio::time::sleep(Duration::from_millis(500)).await;
        last = svc
            .admin(reqwest::Method::GET, &format!("/v1/campaigns/{id}"), None)
            .await?;
        let status = last["status"].as_str().unwrap_or_default();
        if matches!(status, "completed" | "failed" | "cancelled") {
            break;
        }
    }
    c.secs = started.elapsed().as_secs_f64();
    c.status = last["status"].as_str().unwrap_or("?").to_string();
    let t = &last["totals"];
    c.targeted = t["targeted"].as_u64().unwrap_or(0);
    c.sent = t["sent"].as_u64().unwrap_or(0);
    c.failed = t["failed"].as_u64().unwrap_or(0);
    c.no_formid = t["no_formid"].as_u64().unwrap_or(0);
    if !matches!(c.status.as_str(), "completed" | "failed" | "cancelled") {
        c.error = Some(format!(
            "still {} after {:.0} s (totals {t})",
            c.status,
            timeout.as_secs_f64()
        ));
    } else if c.status != "completed" {
        c.error = Some(format!(
            "ended {}: last_error {}",
            c.status, last["last_error"]
        ));
    }
    Ok(())
}

/// Starts a campaign every `every` from `start` until `end` (one at a time: a campaign that
/// is still running delays the next one), each to the next slice of users.
#[allow(clippy::too_many_arguments)]
async fn soak_campaigns(
    svc: &Service,
    sandbox: &Sandbox,
    start: Instant,
    end: Instant,
    every: Duration,
    users: usize,
    timeout: Duration,
    done: &std::sync::atomic::AtomicUsize,
) -> Vec<SoakCampaign> {
    let mut out = Vec::new();
    // Bounded by `end`; the cap is a safety net.
    for n in 0..100_000usize {
        let due = start + every.mul_f64(n as f64);
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let mut c = SoakCampaign {
            n,
            slice: n % SOAK_SLICES,
            due_secs: (due - start).as_secs_f64(),
            late_secs: due.elapsed().as_secs_f64(),
            ..SoakCampaign::default()
        };
        if let Err(e) = soak_one_campaign(svc, sandbox, &mut c, users, timeout).await {
            c.error = Some(format!("{e:#}"));
        }
        if !c.ok(users) {
            println!(
                "  soak campaign #{n}: {} targeted {} sent {} failed {} no_formid {}{}",
                c.status,
                c.targeted,
                c.sent,
                c.failed,
                c.no_formid,
                c.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
        }
        done.fetch_add(1, Ordering::SeqCst);
        out.push(c);
    }
    out
}

const SOAK_HEADER: [&str; 10] = [
    "t (s)",
    "RSS MiB",
    "fds",
    "PG conns",
    "accepted/s",
    "p50 ms",
    "p99 ms",
    "sends/s",
    "errors",
    "campaigns done",
];

fn soak_cells(w: &SoakWindow) -> [String; 10] {
    [
        format!("{:.0}", w.end_secs),
        format!("{:.1}", w.rss_mib),
        format!("{:.0}", w.fds),
        format!("{:.0}", w.pg_conns),
        fmt_num(w.accepted_per_sec),
        format!("{:.2}", w.p50_ms),
        format!("{:.2}", w.p99_ms),
        fmt_num(w.sends_per_sec),
        w.errors.to_string(),
        w.campaigns_done.to_string(),
    ]
}

fn soak_print_line(cells: &[String]) {
    let widths = [6, 8, 5, 8, 10, 7, 7, 8, 6, 14];
    let parts: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(c, w)| format!("{c:>w$}"))
        .collect();
    println!("  {}", parts.join(" "));
}

/// Every `window` from `start` for `windows` windows: the service's RSS, fds, Postgres
/// connections, and the ingestion and send rates of the window.
#[allow(clippy::too_many_arguments)]
async fn soak_sampler(
    pg_url_base: &str,
    pid: u32,
    sandbox: &Sandbox,
    shared: &SoakIngest,
    campaigns_done: &std::sync::atomic::AtomicUsize,
    start: Instant,
    window: Duration,
    windows: u64,
) -> Vec<SoakWindow> {
    // Connected to the `postgres` database, so this connection is not counted.
    let mut pg: Option<PgConnection> = None;
    let mut out = Vec::new();
    let mut prev_at = start;
    let mut prev_accepted = 0u64;
    let mut prev_errors = 0u64;
    let mut prev_sends = sandbox.message_count() as u64;
    soak_print_line(&SOAK_HEADER.map(String::from));
    for k in 1..=windows {
        tokio::time::sleep_until((start + window.mul_f64(k as f64)).into()).await;
        let now = Instant::now();
        let mut lat =
            std::mem::take(&mut *shared.window_us.lock().unwrap_or_else(|e| e.into_inner()));
        let accepted = shared.accepted.load(Ordering::Relaxed);
        let errors = shared.errors.load(Ordering::Relaxed);
        let sends = sandbox.message_count() as u64;
        let rss_kb = proc_status_kb(pid, "VmRSS:");
        let fds = count_fds(pid);
        if pg.is_none() {
            pg = PgConnection::connect(&db_url(pg_url_base, "postgres"))
                .await
                .ok();
        }
        let mut pg_conns = f64::NAN;
        if let Some(c) = pg.as_mut() {
            match sqlx::query_scalar::<_, i64>(
                "select count(*) from pg_stat_activity where datname = $1",
            )
            .bind(SOAK_DB)
            .fetch_one(&mut *c)
            .await
            {
                Ok(n) => pg_conns = n as f64,
                Err(_) => pg = None,
            }
        }
        lat.sort_unstable();
        let secs = (now - prev_at).as_secs_f64().max(1e-3);
        let w = SoakWindow {
            end_secs: (now - start).as_secs_f64(),
            rss_mib: rss_kb.map_or(f64::NAN, |kb| kb as f64 / 1024.0),
            fds: fds.map_or(f64::NAN, |n| n as f64),
            pg_conns,
            accepted_per_sec: (accepted - prev_accepted) as f64 / secs,
            p50_ms: percentile_ms(&lat, 0.50),
            p99_ms: percentile_ms(&lat, 0.99),
            sends_per_sec: sends.saturating_sub(prev_sends) as f64 / secs,
            errors: errors - prev_errors,
            campaigns_done: campaigns_done.load(Ordering::SeqCst),
        };
        soak_print_line(&soak_cells(&w));
        out.push(w);
        prev_at = now;
        prev_accepted = accepted;
        prev_errors = errors;
        prev_sends = sends;
    }
    if let Some(c) = pg {
        let _ = c.close().await;
    }
    out
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Least-squares slope of `value` over time, per minute.
fn slope_per_min(points: &[(f64, f64)]) -> f64 {
    let pts: Vec<&(f64, f64)> = points.iter().filter(|(_, y)| y.is_finite()).collect();
    if pts.len() < 2 {
        return f64::NAN;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 {
        f64::NAN
    } else {
        sxy / sxx * 60.0
    }
}

/// One line of the soak summary: first span vs last span (see `SpanValue`) and the verdict.
struct SoakTrend {
    what: &'static str,
    unit: &'static str,
    first: f64,
    last: f64,
    slope: f64,
    flat: bool,
    rule: String,
}

/// How a span's windows are summed up for the first-vs-last comparison.
#[derive(Clone, Copy)]
enum SpanValue {
    Mean,
    /// The fewest: for a quantity that bursts with the work in flight (open descriptors
    /// rise with every campaign's WeChat connections and fall back after it), a leak shows
    /// as a rising floor, while the mean moves with where the bursts fall in the span.
    Floor,
}

fn span_value(windows: &[&SoakWindow], get: fn(&SoakWindow) -> f64, how: SpanValue) -> f64 {
    match how {
        SpanValue::Mean => mean(windows.iter().map(|w| get(w))),
        SpanValue::Floor => windows
            .iter()
            .map(|w| get(w))
            .filter(|v| v.is_finite())
            .fold(f64::NAN, f64::min),
    }
}

/// The soak's windows the summary compares: the first span after the warm-up, the last
/// span, and every window after the warm-up (for the trend).
struct SoakSpans<'a> {
    first: Vec<&'a SoakWindow>,
    last: Vec<&'a SoakWindow>,
    after_warmup: Vec<&'a SoakWindow>,
}

impl SoakSpans<'_> {
    fn trend(
        &self,
        what: &'static str,
        unit: &'static str,
        get: fn(&SoakWindow) -> f64,
        how: SpanValue,
        abs_tolerance: Option<f64>,
    ) -> SoakTrend {
        let f = span_value(&self.first, get, how);
        let l = span_value(&self.last, get, how);
        let points: Vec<(f64, f64)> = self
            .after_warmup
            .iter()
            .map(|w| (w.end_secs, get(w)))
            .collect();
        let (limit, rule) = match abs_tolerance {
            Some(abs) => (f + abs, format!("last ≤ first + {abs:.0} {unit}")),
            None => (
                f * (1.0 + SOAK_TOLERANCE),
                format!("last ≤ first + {:.0} %", SOAK_TOLERANCE * 100.0),
            ),
        };
        SoakTrend {
            what,
            unit,
            first: f,
            last: l,
            slope: slope_per_min(&points),
            flat: f.is_finite() && l.is_finite() && l <= limit,
            rule,
        }
    }
}

fn fmt_trend_value(v: f64, unit: &str) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if unit == "MiB" || unit == "ms" {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

async fn phase_soak(args: &Args, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let window = Duration::from_secs(plan.soak_window_secs);
    let windows = plan.soak_secs.div_ceil(plan.soak_window_secs).max(1);
    let total = window.mul_f64(windows as f64);
    let every = Duration::from_secs(plan.soak_campaign_every_secs);
    let users = plan.soak_campaign_users.min(100_000);
    let conns = args.soak_connections.max(1);
    let rate = args.soak_ingest_rate.max(0.1);
    let send_rate = args.soak_send_rate.clamp(1, 100_000);
    let latency_ms = args.soak_latency_ms;

    let workdir = std::env::temp_dir().join(format!("formpush-bench-soak-{}", std::process::id()));
    std::fs::create_dir_all(&workdir)?;
    let database_url = recreate_db(&args.pg_url_base, SOAK_DB).await?;
    let mem = MemWatch::default();
    let wechat = FakeWeChat::start(latency_ms, &[APP_INGEST, APP_SOAK])?;
    let svc = Service::start(
        &args.formpush_bin,
        &args.service_env,
        &database_url,
        &wechat.server.base_url,
        &workdir,
        &mem,
        "soak",
    )
    .await?;
    println!(
        "(soak) service pid {} on {} with fake WeChat at {} ({latency_ms} ms)",
        svc.pid(),
        svc.base,
        wechat.server.base_url
    );
    let outcome = soak_measure(
        args, plan, &svc, &wechat, report, window, windows, total, every, users, conns, rate,
        send_rate,
    )
    .await;
    let log = svc.log.clone();
    svc.stop().await?;
    wechat.server.stop().await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("panicked"))
        .collect();
    let keep_logs = !errors.is_empty();
    if keep_logs {
        report.note(format!(
            "(soak) service log {} has {} ERROR lines, e.g. `{}`",
            log.display(),
            errors.len(),
            errors[0].trim()
        ));
    }
    if !args.keep_db {
        drop_db(&args.pg_url_base, SOAK_DB).await?;
    }
    if !keep_logs {
        let _ = std::fs::remove_dir_all(&workdir);
    }
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn soak_measure(
    args: &Args,
    plan: &Plan,
    svc: &Service,
    wechat: &FakeWeChat,
    report: &mut Report,
    window: Duration,
    windows: u64,
    total: Duration,
    every: Duration,
    users: usize,
    conns: usize,
    rate: f64,
    send_rate: u32,
) -> anyhow::Result<()> {
    svc.put_app(APP_INGEST).await?;
    svc.admin(
        reqwest::Method::PUT,
        &format!("/v1/apps/{APP_SOAK}"),
        Some(&json!({"secret": SECRET, "send_rate_per_sec": send_rate})),
    )
    .await?;
    let n_logins = args.ingest_users.max(conns);
    println!("(soak) logging in {n_logins} users through the sandbox");
    let tokens = login_users(svc, wechat, APP_INGEST, n_logins).await?;
    println!(
        "(soak) {:.0} s in {}-s windows: {} formIds/s paced over {conns} connections; \
         every {} s a template campaign to {users} users (slice of {}, fresh formIds \
         imported first), send_rate_per_sec {send_rate}; fake WeChat {} ms",
        total.as_secs_f64(),
        window.as_secs(),
        fmt_num(rate),
        every.as_secs(),
        users * SOAK_SLICES,
        args.soak_latency_ms
    );

    let shared = Arc::new(SoakIngest::default());
    let campaigns_done = std::sync::atomic::AtomicUsize::new(0);
    let addr = svc.base.trim_start_matches("http://").to_string();
    let nonce: u32 = rand::random();
    let interval = Duration::from_secs_f64(conns as f64 / rate);
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + total;
    let mut handles = Vec::new();
    for c in 0..conns {
        let my_tokens: Vec<String> = tokens.iter().skip(c).step_by(conns).cloned().collect();
        // Spread the connections' due times evenly over one interval.
        let first = start + interval.mul_f64(c as f64 / conns as f64);
        handles.push(tokio::spawn(soak_ingest_conn(
            addr.clone(),
            my_tokens,
            c as u32,
            nonce,
            first,
            interval,
            end,
            shared.clone(),
        )));
    }
    let (samples, campaigns) = tokio::join!(
        soak_sampler(
            &args.pg_url_base,
            svc.pid(),
            &wechat.sandbox,
            &shared,
            &campaigns_done,
            start,
            window,
            windows,
        ),
        soak_campaigns(
            svc,
            &wechat.sandbox,
            start,
            end,
            every,
            users,
            plan.campaign_timeout,
            &campaigns_done,
        )
    );
    for h in handles {
        h.await?;
    }
    let hwm_mib = proc_status_kb(svc.pid(), "VmHWM:").map_or(f64::NAN, |kb| kb as f64 / 1024.0);

    // Summary: the first span after the warm-up against the last span.
    let span = (60.0_f64)
        .min((total.as_secs_f64() - plan.soak_warmup_secs as f64) / 3.0)
        .max(window.as_secs_f64());
    let warm = plan.soak_warmup_secs as f64;
    let wsecs = window.as_secs_f64();
    let starts = |w: &SoakWindow| w.end_secs - wsecs;
    let after_warmup: Vec<&SoakWindow> =
        samples.iter().filter(|w| starts(w) + 0.5 >= warm).collect();
    let first: Vec<&SoakWindow> = after_warmup
        .iter()
        .copied()
        .filter(|w| starts(w) + 0.5 < warm + span)
        .collect();
    let last_from = total.as_secs_f64() - span;
    let last: Vec<&SoakWindow> = samples
        .iter()
        .filter(|w| starts(w) + 0.5 >= last_from)
        .collect();
    let spans = SoakSpans {
        first,
        last,
        after_warmup,
    };
    let trends = [
        spans.trend(
            "service VmRSS",
            "MiB",
            |w| w.rss_mib,
            SpanValue::Mean,
            Some(SOAK_RSS_TOLERANCE_MIB),
        ),
        spans.trend(
            "service open fds (fewest in the span)",
            "fds",
            |w| w.fds,
            SpanValue::Floor,
            None,
        ),
        spans.trend(
            "Postgres connections",
            "conns",
            |w| w.pg_conns,
            SpanValue::Mean,
            None,
        ),
        spans.trend(
            "ingestion p99 latency",
            "ms",
            |w| w.p99_ms,
            SpanValue::Mean,
            None,
        ),
    ];
    let span_label = |ws: &[&SoakWindow]| match (ws.first(), ws.last()) {
        (Some(a), Some(b)) => format!("{:.0}–{:.0} s", a.end_secs - wsecs, b.end_secs),
        _ => "none".to_string(),
    };
    let first_label = span_label(&spans.first);
    let last_label = span_label(&spans.last);

    let total_secs = samples.last().map_or(total.as_secs_f64(), |w| w.end_secs);
    let accepted = shared.accepted.load(Ordering::Relaxed);
    let requests = shared.requests.load(Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed);
    let skipped = shared.skipped.load(Ordering::Relaxed);
    let p50s = mean(samples.iter().map(|w| w.p50_ms));
    let p99_max = samples
        .iter()
        .map(|w| w.p99_ms)
        .filter(|v| v.is_finite())
        .fold(f64::NAN, f64::max);
    let ok_campaigns = campaigns.iter().filter(|c| c.ok(users)).count();
    let sent_total: u64 = campaigns.iter().map(|c| c.sent).sum();
    let done_campaigns: Vec<&SoakCampaign> = campaigns
        .iter()
        .filter(|c| c.status == "completed")
        .collect();
    let avg_campaign_secs = mean(done_campaigns.iter().map(|c| c.secs));
    let max_campaign_secs = done_campaigns
        .iter()
        .map(|c| c.secs)
        .fold(f64::NAN, f64::max);
    let avg_import_secs = mean(campaigns.iter().map(|c| c.import_secs));
    let max_late = campaigns.iter().map(|c| c.late_secs).fold(0.0, f64::max);

    println!();
    println!(
        "(soak) summary: first span {first_label} (after a {warm:.0} s warm-up) vs last span {last_label}"
    );
    let mut summary_md = String::new();
    summary_md.push_str(&format!(
        "| | first span ({first_label}) | last span ({last_label}) | change | trend after warm-up | rule | verdict |\n|---|---|---|---|---|---|---|\n"
    ));
    for t in &trends {
        let change = t.last - t.first;
        let pct = if t.first.abs() > 0.0 {
            change / t.first * 100.0
        } else {
            f64::NAN
        };
        let verdict = if t.flat { "flat" } else { "GROWING" };
        let line = format!(
            "{} ({}): {} → {} ({:+.2}, {:+.1} %), trend {:+.2} {}/min; {} → {verdict}",
            t.what,
            t.unit,
            fmt_trend_value(t.first, t.unit),
            fmt_trend_value(t.last, t.unit),
            change,
            pct,
            t.slope,
            t.unit,
            t.rule
        );
        println!("  {line}");
        summary_md.push_str(&format!(
            "| {} ({}) | {} | {} | {:+.2} ({:+.1} %) | {:+.2} {}/min | {} | {verdict} |\n",
            t.what,
            t.unit,
            fmt_trend_value(t.first, t.unit),
            fmt_trend_value(t.last, t.unit),
            change,
            pct,
            t.slope,
            t.unit,
            t.rule
        ));
        report.push(Row::info(
            "soak",
            format!("{} ({}), first vs last span", t.what, t.unit),
            format!(
                "{} → {} ({:+.1} %): {verdict}",
                fmt_trend_value(t.first, t.unit),
                fmt_trend_value(t.last, t.unit),
                pct
            ),
        ));
    }
    report.push(Row::info(
        "soak",
        format!(
            "paced ingestion, target {} formIds/s over {conns} connections, {:.0} s",
            fmt_num(rate),
            total_secs
        ),
        format!(
            "{} accepted/s ({} requests, {} errors, {} dropped behind schedule); p50 {:.2} ms (mean of windows), worst window p99 {:.2} ms",
            fmt_num(accepted as f64 / total_secs),
            fmt_num(requests as f64),
            errors,
            skipped,
            p50s,
            p99_max
        ),
    ));
    report.push(Row::info(
        "soak",
        format!(
            "campaigns every {} s to {users} users, send_rate_per_sec {send_rate}, WeChat {} ms",
            every.as_secs(),
            args.soak_latency_ms
        ),
        format!(
            "{ok_campaigns} of {} completed with sent = targeted ({} sent); {:.1} s average, {:.1} s max from POST to completed; import {:.2} s average; started up to {:.1} s late",
            campaigns.len(),
            fmt_num(sent_total as f64),
            avg_campaign_secs,
            max_campaign_secs,
            avg_import_secs,
            max_late
        ),
    ));
    report.push(Row::info(
        "soak",
        "service VmHWM at the end",
        format!("{hwm_mib:.1} MiB"),
    ));
    for c in campaigns.iter().filter(|c| !c.ok(users)) {
        report.note(format!(
            "(soak) campaign #{} (due at {:.0} s, slice {}) did not complete with sent = targeted: {} targeted {} sent {} failed {} no_formid {}{}",
            c.n,
            c.due_secs,
            c.slice,
            c.status,
            c.targeted,
            c.sent,
            c.failed,
            c.no_formid,
            c.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
        ));
    }
    if errors > 0 || accepted != requests {
        let first_error = shared
            .first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default();
        report.note(format!(
            "(soak) ingestion: {requests} requests, {accepted} accepted, {errors} errors (first: {first_error})"
        ));
    }
    if skipped > 0 {
        report.note(format!(
            "(soak) ingestion fell more than 1 s behind its schedule: {skipped} due requests dropped"
        ));
    }

    // Markdown for --out: the summary, every window, every campaign.
    let mut md = String::new();
    md.push_str(&format!(
        "### Soak\n\n{:.0} s; {} formIds/s paced over {conns} connections; every {} s a template campaign to {users} users (send_rate_per_sec {send_rate}); fake WeChat {} ms. Windows of {} s; latency from each request's due time.\n\n",
        total_secs,
        fmt_num(rate),
        every.as_secs(),
        args.soak_latency_ms,
        window.as_secs()
    ));
    md.push_str(&summary_md);
    md.push_str(&format!(
        "\n| {} |\n|{}\n",
        SOAK_HEADER.join(" | "),
        "---|".repeat(SOAK_HEADER.len())
    ));
    for w in &samples {
        md.push_str(&format!("| {} |\n", soak_cells(w).join(" | ")));
    }
    md.push_str("\n| campaign | due (s) | late (s) | slice | import (s) | POST → end (s) | status | targeted | sent | failed | no_formid |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for c in &campaigns {
        md.push_str(&format!(
            "| #{} | {:.0} | {:.1} | {} | {:.2} | {:.1} | {} | {} | {} | {} | {} |\n",
            c.n,
            c.due_secs,
            c.late_secs,
            c.slice,
            c.import_secs,
            c.secs,
            if c.status.is_empty() {
                "error"
            } else {
                &c.status
            },
            c.targeted,
            c.sent,
            c.failed,
            c.no_formid
        ));
    }
    report.sections.push(md);
    Ok(())
}

// ---------------------------------------------------------------------------------------

async fn run(args: Args, report: &mut Report) -> anyhow::Result<()> {
    let plan = Plan::from(&args);
    let phase = |p: &str| args.phases.iter().any(|x| x == p);
    println!(
        "formpush-bench{}: {plan:?}",
        if args.quick { " (quick)" } else { "" }
    );

    if phase("pgbench") {
        if let Err(e) = phase_pgbench(&args, &plan, report).await {
            report.push(Row::error("e", "pgbench", &e));
        }
    }
    if phase("claim") {
        if let Err(e) = phase_claim(&args, &plan, report).await {
            report.push(Row::error("c", "claim-and-consume", &e));
        }
    }

    let service_phases = ["ingest", "import", "campaign"];
    if service_phases.iter().any(|p| phase(p)) {
        run_service_phases(&args, &plan, report).await?;
    }
    // Never in the default list: minutes long.
    if phase("soak") {
        if let Err(e) = phase_soak(&args, &plan, report).await {
            report.push(Row::error("soak", "soak", &e));
        }
    }
    Ok(())
}

/// Phases (a), (b) and (d) against the release service (one service per sandbox latency).
async fn run_service_phases(args: &Args, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let phase = |p: &str| args.phases.iter().any(|x| x == p);
    let workdir = std::env::temp_dir().join(format!("formpush-bench-svc-{}", std::process::id()));
    std::fs::create_dir_all(&workdir)?;
    let db_name = "formpush_bench";
    let database_url = recreate_db(&args.pg_url_base, db_name).await?;
    let mem = MemWatch::default();
    let stop_watch = tokio_util::sync::CancellationToken::new();
    mem.start(stop_watch.clone());

    let mut latencies = args.latencies_ms.clone();
    if latencies.is_empty() || !phase("campaign") {
        latencies = vec![0];
    }
    let apps_for = |l: u64| {
        vec![
            APP_INGEST.to_string(),
            APP_IMPORT.to_string(),
            format!("wxbenchcamp{l}"),
        ]
    };
    let mut keep_logs = false;
    for (i, latency) in latencies.iter().copied().enumerate() {
        let apps = apps_for(latency);
        let app_refs: Vec<&str> = apps.iter().map(String::as_str).collect();
        let wechat = FakeWeChat::start(latency, &app_refs)?;
        // WeChat access tokens cached by the previous service belong to the previous sandbox.
        if i > 0 {
            let mut c = PgConnection::connect(&database_url).await?;
            sqlx::query("delete from access_tokens")
                .execute(&mut c)
                .await?;
            let _ = c.close().await;
        }
        let svc = Service::start(
            &args.formpush_bin,
            &args.service_env,
            &database_url,
            &wechat.server.base_url,
            &workdir,
            &mem,
            &format!("{latency}ms"),
        )
        .await?;
        println!(
            "service pid {} on {} with fake WeChat at {} ({latency} ms)",
            svc.pid(),
            svc.base,
            wechat.server.base_url
        );
        if i == 0 {
            if phase("ingest") {
                if let Err(e) = phase_ingest(args, plan, &svc, &wechat, report).await {
                    report.push(Row::error("a", "client formId ingestion", &e));
                }
            }
            if phase("import") {
                if let Err(e) = phase_import(args, plan, &svc, report).await {
                    report.push(Row::error("b", "admin bulk import", &e));
                }
            }
        }
        if phase("campaign") {
            if let Err(e) = phase_campaign(args, plan, &svc, &wechat, latency, report).await {
                report.push(Row::error("d", format!("campaign, {latency} ms"), &e));
            }
        }
        let log = svc.log.clone();
        svc.stop().await?;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let errors: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("panicked"))
            .collect();
        if !errors.is_empty() {
            keep_logs = true;
            report.note(format!(
                "service log {} has {} ERROR lines, e.g. `{}`",
                log.display(),
                errors.len(),
                errors[0].trim()
            ));
        }
        wechat.server.stop().await;
    }
    stop_watch.cancel();
    let mib = mem.max_mib();
    let mut row = Row::info(
        "mem",
        "service resident memory, max over the run (VmRSS sampled every 100 ms, VmHWM)",
        format!("{mib:.1} MiB"),
    );
    row.target = "< 200 MiB".into();
    row.verdict = judge(mib > 0.0 && mib < 200.0, args.quick);
    report.push(row);
    if !args.keep_db {
        drop_db(&args.pg_url_base, db_name).await?;
    }
    if !keep_logs {
        let _ = std::fs::remove_dir_all(&workdir);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let command = std::env::args()
        .skip(1)
        .fold("scripts/bench".to_string(), |acc, a| {
            if a.starts_with("--pg-url-base") {
                acc
            } else {
                format!("{acc} {a}")
            }
        });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let started = Instant::now();
        let machine = machine(&args.pg_url_base).await;
        println!(
            "machine: {} cores, {}, {} RAM, {}",
            machine.nproc, machine.cpu, machine.memory, machine.postgres
        );
        let mut report = Report::default();
        let outcome = run(args.clone(), &mut report).await;
        if let Err(e) = &outcome {
            report.push(Row::error("-", "harness", e));
        }
        report.note(format!(
            "whole run took {:.0} s",
            started.elapsed().as_secs_f64()
        ));
        report.print_table();
        if let Some(out) = &args.out {
            std::fs::write(out, report.markdown(&machine, &command))
                .with_context(|| format!("writing {}", out.display()))?;
            println!("results written to {}", out.display());
        }
        if report.rows.iter().any(|r| r.verdict == Verdict::Error) {
            bail!("the benchmark harness hit errors (see the table); misses alone never fail");
        }
        Ok::<(), anyhow::Error>(())
    })
}
