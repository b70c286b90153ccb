//! Phase `soak` (never in the default list: minutes long): paced client ingestion and a
//! template campaign every few seconds, at about half the rates the other phases reach,
//! with the service's memory, open descriptors, Postgres connections and ingestion latency
//! sampled per window; the first span after a warm-up against the last says flat or
//! GROWING.

mod campaigns;
mod load;
mod sampler;
mod summary;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::login_users;
use crate::phases::ingest::APP_INGEST;
use crate::procfs::{proc_status_mib, MemWatch};
use crate::report::{fmt_num, Report};
use crate::service::{Scratch, Stack};
use crate::{Args, Plan};

const APP_SOAK: &str = "wxbenchsoak";
const SOAK_DB: &str = "formpush_bench_soak";
/// The campaigns rotate over this many slices of --soak-campaign-users users.
const SLICES: usize = 5;

/// The soak's shape, from the `--soak-*` flags and the plan.
struct SoakPlan {
    /// Sample window, and how many make up the soak.
    window: Duration,
    windows: u64,
    /// `windows` × `window`.
    total: Duration,
    /// Seconds after the start left out of the "first span" of the flatness check.
    warmup_secs: u64,
    /// Ingestion: formIds per second in all, over this many connections, for the
    /// tokens of this many logged-in users.
    rate: f64,
    conns: usize,
    login_users: usize,
    /// Campaigns: one due every `every`, to `users` users, the app sending at most
    /// `send_rate` per second to a fake WeChat answering after `latency_ms`.
    every: Duration,
    users: usize,
    send_rate: u32,
    latency_ms: u64,
    campaign_timeout: Duration,
}

impl SoakPlan {
    fn new(args: &Args, plan: &Plan) -> Self {
        let window = Duration::from_secs(plan.soak_window_secs);
        let windows = plan.soak_secs.div_ceil(plan.soak_window_secs).max(1);
        let conns = args.soak_connections.max(1);
        SoakPlan {
            window,
            windows,
            total: window.mul_f64(windows as f64),
            warmup_secs: plan.soak_warmup_secs,
            rate: args.soak_ingest_rate.max(0.1),
            conns,
            login_users: args.ingest_users.max(conns),
            every: Duration::from_secs(plan.soak_campaign_every_secs),
            users: plan.soak_campaign_users.min(100_000),
            send_rate: args.soak_send_rate.clamp(1, 100_000),
            latency_ms: args.soak_latency_ms,
            campaign_timeout: plan.campaign_timeout,
        }
    }
}

pub async fn run(args: &Args, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let soak = SoakPlan::new(args, plan);
    let mut scratch = Scratch::create(&args.pg_url_base, "soak", SOAK_DB).await?;
    // Read directly from /proc by the sampler (not sampled every 100 ms as in the phases).
    let mem = MemWatch::default();
    let stack = scratch
        .start_stack(args, &mem, soak.latency_ms, &[APP_INGEST, APP_SOAK], "soak")
        .await?;
    println!("(soak) {}", stack.describe());
    // The service is stopped (and its log read) whether or not the soak went through.
    let outcome = measure(&args.pg_url_base, &soak, &stack, report).await;
    scratch.stop_stack(stack, report, "(soak) ").await?;
    scratch.finish(&args.pg_url_base, args.keep_db).await?;
    outcome
}

async fn measure(
    pg_url_base: &str,
    soak: &SoakPlan,
    stack: &Stack,
    report: &mut Report,
) -> anyhow::Result<()> {
    let svc = &stack.svc;
    svc.put_app(APP_INGEST, 100_000).await?;
    svc.put_app(APP_SOAK, soak.send_rate).await?;
    println!(
        "(soak) logging in {} users through the sandbox",
        soak.login_users
    );
    let tokens = login_users(svc, &stack.wechat, APP_INGEST, soak.login_users).await?;
    println!(
        "(soak) {:.0} s in {}-s windows: {} formIds/s paced over {} connections; \
         every {} s a template campaign to {} users (slice of {}, fresh formIds \
         imported first), send_rate_per_sec {}; fake WeChat {} ms",
        soak.total.as_secs_f64(),
        soak.window.as_secs(),
        fmt_num(soak.rate),
        soak.conns,
        soak.every.as_secs(),
        soak.users,
        soak.users * SLICES,
        soak.send_rate,
        soak.latency_ms
    );

    let ingest = Arc::new(load::Counters::default());
    let campaigns_done = AtomicUsize::new(0);
    // A moment for the connections to be spawned before the first due time.
    let start = Instant::now() + Duration::from_millis(200);
    let connections = load::spawn(svc, &tokens, soak, start, &ingest);
    let (samples, campaigns) = tokio::join!(
        sampler::run(pg_url_base, stack, &ingest, &campaigns_done, start, soak),
        campaigns::run(stack, soak, start, &campaigns_done),
    );
    for h in connections {
        h.await?;
    }
    let hwm_mib = proc_status_mib(svc.pid(), "VmHWM:");
    summary::record(report, soak, &samples, &campaigns, &ingest, hwm_mib);
    Ok(())
}
