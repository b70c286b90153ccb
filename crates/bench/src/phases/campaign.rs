//! (d) phase `campaign`: an end-to-end template campaign to `--users` users, each holding a
//! formId issued by the fake WeChat (so WeChat accepts it), imported through the admin API.
//! Timed from the POST to `completed` (the scheduler tick and creating the deliveries
//! included); run once per `--latencies-ms`, the target applying at 50 ms.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::api::{import_formids, run_campaign, template_campaign};
use crate::report::{fmt_num, Report, Row};
use crate::service::Stack;
use crate::{Args, Plan};

/// The fake WeChat latency the targets are set for.
const TARGET_LATENCY_MS: u64 = 50;
const MIN_SENDS_PER_SEC: f64 = 2_000.0;
/// The total time target holds for this many users (fewer say nothing about it).
const TARGET_USERS: usize = 100_000;
const MAX_TOTAL_SECS: f64 = 60.0;

/// The campaign app of one latency (each latency its own users and formIds).
pub fn appid(latency_ms: u64) -> String {
    format!("wxbenchcamp{latency_ms}")
}

pub async fn run(
    args: &Args,
    plan: &Plan,
    stack: &Stack,
    latency_ms: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (svc, sandbox) = (&stack.svc, &stack.wechat.sandbox);
    let appid = appid(latency_ms);
    svc.put_app(&appid, 100_000).await?;
    let users = plan.users;
    println!("(d{latency_ms}) seeding {users} users with a sandbox-issued formId each");
    let seed_started = Instant::now();
    let mut items = Vec::with_capacity(users);
    for i in 0..users {
        let openid = format!("camp{latency_ms}-{i}");
        sandbox.add_user(&appid, &openid);
        let form_id = sandbox.form_id(&appid, &openid);
        items.push((openid, form_id));
    }
    let accepted = import_formids(svc, &appid, &items).await?;
    drop(items);
    println!(
        "(d{latency_ms}) seeded in {:.1} s ({accepted} formIds accepted)",
        seed_started.elapsed().as_secs_f64()
    );
    let campaign = template_campaign(
        &appid,
        &format!("bench {latency_ms} ms"),
        json!({"type": "all"}),
    );
    let label = format!("(d{latency_ms})");
    let end = run_campaign(
        svc,
        &campaign,
        Duration::from_millis(250),
        plan.campaign_timeout,
        Some(&label),
    )
    .await?;
    let (status, total_secs) = (end.status.as_str(), end.secs);
    let completed = end.done && status == "completed";
    let sent = end.last["totals"]["sent"].as_u64().unwrap_or(0);
    let rate = sent as f64 / total_secs;
    let quick = args.quick;
    let what = format!("campaign to {users} users, fake WeChat latency {latency_ms} ms");
    let value = format!(
        "{} sends/s ({} sent in {:.1} s{})",
        fmt_num(rate),
        fmt_num(sent as f64),
        total_secs,
        if end.done {
            String::new()
        } else {
            format!(", gave up: {status}")
        }
    );
    if latency_ms == TARGET_LATENCY_MS {
        report.push(Row::info("d", what, value).judged(
            format!("≥ {} sends/s", fmt_num(MIN_SENDS_PER_SEC)),
            completed && rate >= MIN_SENDS_PER_SEC,
            quick,
        ));
        report.push(
            Row::info(
                "d",
                format!("campaign total time, {latency_ms} ms"),
                format!("{total_secs:.1} s"),
            )
            .judged(
                format!(
                    "< {MAX_TOTAL_SECS:.0} s for {} users",
                    fmt_num(TARGET_USERS as f64)
                ),
                completed && users >= TARGET_USERS && total_secs < MAX_TOTAL_SECS,
                quick || users < TARGET_USERS,
            ),
        );
    } else {
        report.push(Row::info("d", what, value));
    }
    if status != "completed" || sent != users as u64 {
        report.note(format!(
            "(d{latency_ms}) campaign ended {status}: totals {}, last_error {}; sandbox accepted {} of {} send attempts",
            end.last["totals"],
            end.last["last_error"],
            sandbox.message_count(),
            sandbox.send_attempts()
        ));
    }
    Ok(())
}
