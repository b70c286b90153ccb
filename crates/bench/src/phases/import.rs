//! (b) phase `import`: admin bulk import. `--import-batches` requests of
//! `--import-batch-size` items (5 formIds for each of size/5 new users),
//! `--import-concurrency` in flight; rows/s = accepted rows ÷ wall time.

use std::time::Instant;

use futures::StreamExt;

use crate::api::{form_id, import_body, IMPORT_MAX_ITEMS};
use crate::report::{fmt_num, Report, Row};
use crate::service::Service;
use crate::{Args, Plan};

pub const APP_IMPORT: &str = "wxbenchimport";
/// The formId stream of the import (the ingestion connections are streams 0, 1, ...).
const IMPORT_STREAM: u32 = 0xffff_fff0;

pub async fn run(
    args: &Args,
    plan: &Plan,
    svc: &Service,
    report: &mut Report,
) -> anyhow::Result<()> {
    svc.put_app(APP_IMPORT, 100_000).await?;
    let size = args.import_batch_size.clamp(1, IMPORT_MAX_ITEMS);
    let batches = plan.import_batches;
    let in_flight = args.import_concurrency.max(1);
    let nonce: u32 = rand::random();
    // The bodies are encoded before the clock starts: only the service's work is timed.
    // Each batch: size formIds for size/5 users (new users: the import upserts them).
    let bodies: Vec<Vec<u8>> = (0..batches)
        .map(|b| {
            import_body((0..size).map(move |i| {
                let n = (b * size + i) as u64;
                (format!("imp-{}", n / 5), form_id(nonce, IMPORT_STREAM, n))
            }))
        })
        .collect();
    println!(
        "(b) importing {batches} x {size} items ({} KiB per body), {in_flight} in flight",
        bodies[0].len() / 1024,
    );
    let started = Instant::now();
    let results: Vec<anyhow::Result<u64>> = futures::stream::iter(bodies)
        .map(|body| svc.import(APP_IMPORT, body))
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut accepted = 0u64;
    for r in results {
        accepted += r?;
    }
    let rate = accepted as f64 / elapsed;
    report.push(
        Row::info(
            "b",
            format!("admin bulk import ({size} items/request, {in_flight} in flight)"),
            format!(
                "{} rows/s ({} rows in {:.2} s)",
                fmt_num(rate),
                fmt_num(accepted as f64),
                elapsed
            ),
        )
        .at_least(rate, "rows/s", 100_000.0, args.quick),
    );
    let expected = (batches * size) as u64;
    if accepted != expected {
        report.note(format!(
            "(b) {accepted} of {expected} imported formIds accepted"
        ));
    }
    Ok(())
}
