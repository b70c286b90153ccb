//! The phases against the release service, (a) `ingest`, (b) `import` and (d) `campaign`,
//! and the memory row they add up to: one service per fake WeChat latency on one database,
//! (a) and (b) on the first, (d) on each; the service's VmRSS is sampled every 100 ms over
//! all of them.

use sqlx::{Connection, PgConnection};

use crate::phases::campaign;
use crate::phases::import::APP_IMPORT;
use crate::phases::ingest::APP_INGEST;
use crate::phases::{import, ingest};
use crate::procfs::MemWatch;
use crate::report::{Report, Row};
use crate::service::Scratch;
use crate::{Args, Plan};

/// The `--phases` names that need the service.
pub const PHASES: [&str; 3] = ["ingest", "import", "campaign"];
const DB: &str = "formpush_bench";
const MAX_MEMORY_MIB: f64 = 200.0;

pub async fn run(args: &Args, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let mut scratch = Scratch::create(&args.pg_url_base, "svc", DB).await?;
    let mem = MemWatch::default();
    let stop_watch = tokio_util::sync::CancellationToken::new();
    mem.start(stop_watch.clone());

    let mut latencies = args.latencies_ms.clone();
    if latencies.is_empty() || !args.runs("campaign") {
        latencies = vec![0];
    }
    for (i, latency) in latencies.iter().copied().enumerate() {
        // WeChat access tokens cached by the previous service belong to the previous sandbox.
        if i > 0 {
            let mut c = PgConnection::connect(&scratch.database_url).await?;
            sqlx::query("delete from access_tokens")
                .execute(&mut c)
                .await?;
            let _ = c.close().await;
        }
        let campaign_app = campaign::appid(latency);
        let apps = [APP_INGEST, APP_IMPORT, campaign_app.as_str()];
        let stack = scratch
            .start_stack(args, &mem, latency, &apps, &format!("{latency}ms"))
            .await?;
        println!("{}", stack.describe());
        // A phase that fails becomes an ERROR row; the others still run.
        if i == 0 {
            if args.runs("ingest") {
                let outcome = ingest::run(args, plan, &stack, report).await;
                report.error_if_failed("a", "client formId ingestion", outcome);
            }
            if args.runs("import") {
                let outcome = import::run(args, plan, &stack.svc, report).await;
                report.error_if_failed("b", "admin bulk import", outcome);
            }
        }
        if args.runs("campaign") {
            let outcome = campaign::run(args, plan, &stack, latency, report).await;
            report.error_if_failed("d", format!("campaign, {latency} ms"), outcome);
        }
        scratch.stop_stack(stack, report, "").await?;
    }
    stop_watch.cancel();
    let mib = mem.max_mib();
    report.push(
        Row::info(
            "mem",
            "service resident memory, max over the run (VmRSS sampled every 100 ms, VmHWM)",
            format!("{mib:.1} MiB"),
        )
        .judged(
            format!("< {MAX_MEMORY_MIB:.0} MiB"),
            mib > 0.0 && mib < MAX_MEMORY_MIB,
            args.quick,
        ),
    );
    scratch.finish(&args.pg_url_base, args.keep_db).await
}
