//! Phase `soak` (never in the default list: minutes to an hour long): paced client
//! ingestion from a realistic population (a million users by default, each posting a
//! formId now and then, holding a few) and a template campaign every few seconds, at about
//! half the rates the other phases reach, on one or more instances, with the services'
//! memory, open descriptors, Postgres connections, ingestion latency and Postgres'
//! background work sampled per window; the first span after a warm-up against the last
//! says flat or GROWING, and every minute's ingestion p99 is held to 100 ms.

mod campaigns;
mod load;
mod sampler;
mod summary;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::SignedTokens;
use crate::phases::ingest::APP_INGEST;
use crate::procfs::{proc_status_mib, MemWatch};
use crate::report::{fmt_num, Report};
use crate::seed::seed_users_and_formids;
use crate::service::{Scratch, Service, Stack};
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
    /// Ingestion: formIds per second in all, over this many connections (spread over the
    /// instances), for a population of this many users, each holding this many formIds
    /// at the start.
    rate: f64,
    conns: usize,
    population: usize,
    formids_per_user: i32,
    /// formpush instances on the one database.
    instances: usize,
    /// Campaigns: one due every `every`, to `users` users, the app sending at most
    /// `send_rate` per second to a fake WeChat answering after `latency_ms`.
    every: Duration,
    users: usize,
    /// Items per import request of a campaign's fresh formIds.
    import_chunk: usize,
    send_rate: u32,
    latency_ms: u64,
    campaign_timeout: Duration,
    /// `--quick`: the figures are shown, not judged.
    quick: bool,
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
            population: plan.soak_users,
            formids_per_user: args.soak_formids_per_user.clamp(0, 1_000),
            instances: args.soak_instances.max(1),
            every: Duration::from_secs(plan.soak_campaign_every_secs),
            users: plan.soak_campaign_users.min(100_000),
            import_chunk: args
                .soak_import_chunk
                .clamp(1, crate::api::IMPORT_MAX_ITEMS),
            send_rate: args.soak_send_rate.clamp(1, 100_000),
            latency_ms: args.soak_latency_ms,
            campaign_timeout: plan.campaign_timeout,
            quick: args.quick,
        }
    }
}

pub async fn run(args: &Args, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let soak = SoakPlan::new(args, plan);
    let mut scratch = Scratch::create(&args.pg_url_base, "soak", SOAK_DB).await?;
    // An hour of campaigns sends ~1.2M messages for one app: past WeChat's daily quota of
    // 1,000,000, which the fake enforces (45009: formpush pauses the campaign until the
    // quota's next day, as it should). The soak measures steady load, not the quota.
    scratch.wechat_daily_quota = u64::MAX / 2;
    // Read directly from /proc by the sampler (not sampled every 100 ms as in the phases).
    let mems: Vec<MemWatch> = (0..soak.instances).map(|_| MemWatch::default()).collect();
    let stack = scratch
        .start_stack(
            args,
            &mems[0],
            soak.latency_ms,
            &[APP_INGEST, APP_SOAK],
            "soak",
        )
        .await?;
    let mut others = Vec::new();
    for (i, mem) in mems.iter().enumerate().skip(1) {
        let svc = scratch
            .start_service(
                args,
                mem,
                &stack.wechat.server.base_url,
                &format!("soak-{i}"),
            )
            .await;
        match svc {
            Ok(svc) => others.push(svc),
            Err(e) => {
                for svc in others {
                    svc.stop().await?;
                }
                scratch.stop_stack(stack, report, "(soak) ").await?;
                scratch.finish(&args.pg_url_base, args.keep_db).await?;
                return Err(e);
            }
        }
    }
    println!(
        "(soak) {} + {} more instance(s)",
        stack.describe(),
        others.len()
    );
    // The services are stopped (and their logs read) whether or not the soak went through.
    let outcome = measure(&scratch.database_url, &soak, &stack, &others, report).await;
    for svc in others {
        svc.stop().await?;
    }
    scratch.stop_stack(stack, report, "(soak) ").await?;
    scratch.finish(&args.pg_url_base, args.keep_db).await?;
    outcome
}

async fn measure(
    database_url: &str,
    soak: &SoakPlan,
    stack: &Stack,
    others: &[Service],
    report: &mut Report,
) -> anyhow::Result<()> {
    let svc = &stack.svc;
    let svcs: Vec<&Service> = std::iter::once(svc).chain(others).collect();
    svc.put_app(APP_INGEST, 100_000).await?;
    svc.put_app(APP_SOAK, soak.send_rate).await?;
    println!(
        "(soak) seeding {} users of {APP_INGEST} with {} formIds each",
        fmt_num(soak.population as f64),
        soak.formids_per_user
    );
    let seeded = Instant::now();
    let pool = sqlx::PgPool::connect(database_url).await?;
    let (first_user, last_user) = seed_users_and_formids(
        &pool,
        APP_INGEST,
        "soak-user-",
        soak.population,
        soak.formids_per_user,
    )
    .await?;
    let tokens = Arc::new(SignedTokens::load(&pool, APP_INGEST, first_user, last_user).await?);
    pool.close().await;
    println!("(soak) seeded in {:.1} s", seeded.elapsed().as_secs_f64());
    println!(
        "(soak) {:.0} s in {}-s windows on {} instance(s): {} formIds/s paced over {} \
         connections from {} users in a scattered order; every {} s a template campaign to \
         {} users (slice of {}, fresh formIds imported first), send_rate_per_sec {}; fake \
         WeChat {} ms",
        soak.total.as_secs_f64(),
        soak.window.as_secs(),
        svcs.len(),
        fmt_num(soak.rate),
        soak.conns,
        fmt_num(soak.population as f64),
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
    let connections = load::spawn(&svcs, &tokens, soak, start, &ingest);
    let probe = load::spawn_lag_probe(start + soak.total, &ingest);
    let ((samples, minutes), campaigns) = tokio::join!(
        sampler::run(
            database_url,
            &svcs,
            &stack.wechat.sandbox,
            &ingest,
            &campaigns_done,
            start,
            soak
        ),
        campaigns::run(stack, soak, start, &campaigns_done),
    );
    for h in connections {
        h.await?;
    }
    probe.await?;
    let hwm_mib: Vec<f64> = svcs
        .iter()
        .map(|s| proc_status_mib(s.pid(), "VmHWM:"))
        .collect();
    summary::record(
        report, soak, &samples, &minutes, &campaigns, &ingest, &hwm_mib,
    );
    Ok(())
}
