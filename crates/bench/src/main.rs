//! `formpush-bench`: the benchmark harness (run it with `scripts/bench`, see BENCHMARKS.md).
//!
//! Measures, in one run on the local machine:
//! - (e) this machine's Postgres limit: `pgbench` running a single-row formId INSERT and a
//!   single-user claim UPDATE against the real schema (migrated from `migrations/`);
//! - (c) claim-and-consume: the production claim SQL
//!   (`store::deliveries::claim_batch`) from N concurrent tasks over a run of
//!   `--users` users holding 5 formIds each;
//! - (a) client formId ingestion through the release `formpush serve` binary: 64 concurrent
//!   keep-alive connections, one formId per request;
//! - (b) admin bulk import, 10,000 items per request;
//! - (d) end-to-end template campaigns to `--users` users against the in-process WeChat
//!   sandbox answering after 0 ms and after 50 ms;
//! - (trigger) triggered messages: send-now requests per second over 64 keep-alive
//!   connections (next to the pgbench single claim), and the time from a POST to the fake
//!   WeChat accepting the message, on an idle app and while a `--users` campaign sends;
//! - (templates) a `--users` subscribe campaign on a synced template (every user's data
//!   checked) against the same campaign unchecked: sends/s and their ratio;
//! - (cap) a `--users` subscribe campaign on an app with a frequency cap (every user's
//!   window checked and a slot taken, no one held back) against the same campaign on an app
//!   without one: sends/s and their ratio;
//! - (soak, only with `--phases soak`) ten minutes of paced ingestion and a campaign every
//!   30 s at half those rates, with the service's memory, file descriptors, Postgres
//!   connections and ingestion latency sampled every 10 s: flat or growing;
//! - (million, only with `--phases million`) one campaign to a million users due a few
//!   seconds ahead, on one or more instances: the first message's delay after the due time,
//!   the sustained sends/s, peak memory, nobody messaged twice;
//! - (pool, only with `--phases pool`) ingestion on an empty `formids`, at 10,000,000 rows,
//!   and while the daily purge deletes a day's expired formIds;
//!
//! and samples the service's resident memory (VmRSS / VmHWM) throughout. It prints a table
//! with ratios to pgbench and PASS/MISS per target; a miss never fails the process (this is a
//! measurement). The process fails only when the harness itself cannot run.
//!
//! Where things are: this file holds the flags, their defaults ([`Plan`]) and which phases
//! run; each phase is one module under [`phases`]; what they share is in [`report`] (rows,
//! verdicts, the table and markdown), [`service`] (the `formpush serve` child and the fake
//! WeChat), [`procfs`] (its memory and descriptors), [`api`] (the service's HTTP API),
//! [`raw_http`] (the minimal keep-alive client), [`pgbench`], [`db`] and [`seed`]
//! (benchmark databases and their data), [`stats`] and [`machine`].

mod api;
mod db;
mod machine;
mod pgbench;
mod phases;
mod procfs;
mod raw_http;
mod report;
mod seed;
mod service;
mod stats;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

use report::{Report, Row, Verdict};

/// The secret of every benchmark app, in the database and in the fake WeChat alike.
const SECRET: &str = "bench-secret";
/// Every `--phases` name.
const KNOWN_PHASES: [&str; 11] = [
    "pgbench",
    "claim",
    "ingest",
    "import",
    "campaign",
    "trigger",
    "templates",
    "cap",
    "soak",
    "million",
    "pool",
];
/// The template every benchmark campaign sends.
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
    /// Phases to run, comma-separated: pgbench (the Postgres baseline, (e)), claim, ingest,
    /// import, campaign, trigger, templates, cap, soak, million, pool (the last three are
    /// minutes long and never in the default list: `--phases soak`, `--phases million,pool`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "pgbench,claim,ingest,import,campaign,trigger,templates,cap"
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
    /// Deliveries per claim_batch call (the service claims FORMPUSH_SEND_CONCURRENCY,
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
    /// Trigger: measured seconds of send-now triggers (after a warm-up) [default: 20;
    /// quick: 2].
    #[arg(long)]
    trigger_secs: Option<u64>,
    /// Trigger: concurrent keep-alive connections posting one message per request.
    #[arg(long, default_value_t = 64)]
    trigger_connections: usize,
    /// Trigger: fake WeChat latency in milliseconds (for every part of the phase).
    #[arg(long, default_value_t = 50)]
    trigger_latency_ms: u64,
    /// Trigger: messages timed from POST to the fake WeChat, on the idle app and again
    /// while the campaign sends [default: 200; quick: 20].
    #[arg(long)]
    trigger_samples: Option<usize>,
    /// Trigger: milliseconds between two timed messages (one connection, paced).
    #[arg(long, default_value_t = 50)]
    trigger_sample_every_ms: u64,
    /// Templates: fake WeChat latency in milliseconds for both campaigns (0: the sends are
    /// CPU-bound, so the cost of the checks shows).
    #[arg(long, default_value_t = 0)]
    templates_latency_ms: u64,
    /// Cap: fake WeChat latency in milliseconds for both campaigns (0: the sends are
    /// CPU-bound, so the cost of the cap shows).
    #[arg(long, default_value_t = 0)]
    cap_latency_ms: u64,
    /// Keep the benchmark databases and the service logs afterwards (for inspection).
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
    /// Soak: the users posting formIds, seeded in SQL with signed session tokens; each
    /// posts once per this many requests, so an hour at 5,000/s gives each of a million
    /// users about 18 [default: 1000000; quick: 2000].
    #[arg(long)]
    soak_users: Option<usize>,
    /// Soak: items per import request when a campaign's fresh formIds are imported (the
    /// requests one after the other).
    #[arg(long, default_value_t = 10_000)]
    soak_import_chunk: usize,
    /// Soak: formIds each of those users holds at the start.
    #[arg(long, default_value_t = 3)]
    soak_formids_per_user: i32,
    /// Soak: formpush instances on the one database; the ingestion connections are spread
    /// over them, the campaigns are created on the first (any instance may send them).
    #[arg(long, default_value_t = 1)]
    soak_instances: usize,
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
    /// Million (phase `million`, never in the default list): users of the one campaign
    /// [default: 1000000; quick: 2000].
    #[arg(long)]
    million_users: Option<usize>,
    /// Million: fake WeChat latency in milliseconds.
    #[arg(long, default_value_t = 50)]
    million_latency_ms: u64,
    /// Million: formpush instances on the one database (the campaign's app is sent for by
    /// one of them at a time).
    #[arg(long, default_value_t = 1)]
    million_instances: usize,
    /// Pool (phase `pool`, never in the default list): formIds in the table for the second
    /// and third ingestion measurements [default: 10000000; quick: 20000].
    #[arg(long)]
    pool_rows: Option<usize>,
}

fn parse_env_pair(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {raw:?}")),
    }
}

impl Args {
    /// Whether `--phases` names this phase.
    fn runs(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
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
    soak_users: usize,
    trigger_secs: u64,
    trigger_warmup: Duration,
    trigger_samples: usize,
    million_users: usize,
    pool_rows: usize,
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
            soak_users: args
                .soak_users
                .unwrap_or(if q { 2_000 } else { 1_000_000 })
                .max(1),
            trigger_secs: args.trigger_secs.unwrap_or(if q { 2 } else { 20 }).max(1),
            trigger_warmup: Duration::from_millis(if q { 300 } else { 2_000 }),
            trigger_samples: args
                .trigger_samples
                .unwrap_or(if q { 20 } else { 200 })
                .max(1),
            million_users: args
                .million_users
                .unwrap_or(if q { 2_000 } else { 1_000_000 })
                .max(1),
            pool_rows: args
                .pool_rows
                .unwrap_or(if q { 20_000 } else { 10_000_000 })
                .max(4),
        }
    }
}

async fn run(args: Args, report: &mut Report) -> anyhow::Result<()> {
    let plan = Plan::from(&args);
    println!(
        "formpush-bench{}: {plan:?}",
        if args.quick { " (quick)" } else { "" }
    );

    // A misspelt phase (e.g. `e` for `pgbench`) would silently measure nothing.
    if let Some(unknown) = args
        .phases
        .iter()
        .find(|p| !KNOWN_PHASES.contains(&p.as_str()))
    {
        bail!(
            "unknown phase {unknown:?}; the phases are {}",
            KNOWN_PHASES.join(", ")
        );
    }
    // A phase that fails becomes an ERROR row; the phases after it still run.
    if args.runs("pgbench") {
        let outcome = phases::baseline::run(&args, &plan, report).await;
        report.error_if_failed("e", "pgbench", outcome);
    }
    if args.runs("claim") {
        let outcome = phases::claim::run(&args, &plan, report).await;
        report.error_if_failed("c", "claim-and-consume", outcome);
    }
    if phases::served::PHASES.iter().any(|p| args.runs(p)) {
        phases::served::run(&args, &plan, report).await?;
    }
    if args.runs("trigger") {
        let outcome = phases::trigger::run(&args, &plan, report).await;
        report.error_if_failed("trigger", "triggered messages", outcome);
    }
    if args.runs("templates") {
        let outcome = phases::templates::run(&args, &plan, report).await;
        report.error_if_failed("templates", "subscribe template checks", outcome);
    }
    if args.runs("cap") {
        let outcome = phases::cap::run(&args, &plan, report).await;
        report.error_if_failed("cap", "frequency cap", outcome);
    }
    // Never in the default list: minutes long.
    if args.runs("soak") {
        let outcome = phases::soak::run(&args, &plan, report).await;
        report.error_if_failed("soak", "soak", outcome);
    }
    if args.runs("million") {
        let outcome = phases::million::run(&args, &plan, report).await;
        report.error_if_failed("million", "campaign to a million users", outcome);
    }
    if args.runs("pool") {
        let outcome = phases::pool::run(&args, &plan, report).await;
        report.error_if_failed("pool", "ingestion into a big pool", outcome);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The command line for the markdown, without the server's address.
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
        let machine = machine::Machine::describe(&args.pg_url_base).await;
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
        // Only the harness failing fails the process; a MISS is a result.
        if report.rows.iter().any(|r| r.verdict == Verdict::Error) {
            bail!("the benchmark harness hit errors (see the table); misses alone never fail");
        }
        Ok::<(), anyhow::Error>(())
    })
}
