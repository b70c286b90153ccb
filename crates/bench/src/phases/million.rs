//! Phase `million` (never in the default list: `--phases million`): one subscribe campaign
//! to `--million-users` users (default 1,000,000; quick: 2,000), each holding one grant
//! (seeded in SQL and in the fake WeChat), scheduled a few seconds ahead, against a fake
//! WeChat answering after `--million-latency-ms`, served by `--million-instances` formpush
//! instances on one database (the campaign's app is sent for by one of them at a time: the
//! app lease). Measured: how long after the due time the first message reaches the fake
//! WeChat, sends/s over the middle 80 % of the messages (ramp-up and tail left out), each
//! service's peak resident memory, and that no user got two messages.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;

use crate::procfs::MemWatch;
use crate::report::{fmt_num, Report, Row};
use crate::seed::seed_users_with_grants;
use crate::service::Scratch;
use crate::{Args, Plan};

const DB: &str = "formpush_bench_million";
const APP: &str = "wxbenchmillion";
const TPL: &str = "TPL_BENCH_MILLION_0000000000000000000000000000";
/// How far ahead of its creation the campaign is due: the run starts on a tick, not on the
/// POST, so the first-message time is measured from a due time the scheduler must meet.
const LEAD: chrono::TimeDelta = chrono::TimeDelta::seconds(5);
const MAX_FIRST_SECS: f64 = 2.0;
const MIN_SENDS_PER_SEC: f64 = 5_000.0;
const MAX_MIB: f64 = 200.0;

pub async fn run(args: &Args, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let mut scratch = Scratch::create(&args.pg_url_base, "million", DB).await?;
    let stop_watch = tokio_util::sync::CancellationToken::new();
    let mems: Vec<MemWatch> = (0..args.million_instances.max(1))
        .map(|_| MemWatch::default())
        .collect();
    for mem in &mems {
        mem.start(stop_watch.clone());
    }
    let latency = args.million_latency_ms;
    let stack = scratch
        .start_stack(
            args,
            &mems[0],
            latency,
            &[APP],
            &format!("million-{latency}ms"),
        )
        .await?;
    let mut others = Vec::new();
    for (i, mem) in mems.iter().enumerate().skip(1) {
        others.push(
            scratch
                .start_service(
                    args,
                    mem,
                    &stack.wechat.server.base_url,
                    &format!("million-{latency}ms-{i}"),
                )
                .await?,
        );
    }
    println!(
        "(million) {} + {} more instance(s)",
        stack.describe(),
        others.len()
    );
    let outcome = measure(args, plan, &stack, &scratch.database_url, report).await;
    for svc in others {
        svc.stop().await?;
    }
    scratch.stop_stack(stack, report, "(million) ").await?;
    stop_watch.cancel();
    let peaks: Vec<f64> = mems.iter().map(MemWatch::max_mib).collect();
    let worst = peaks.iter().cloned().fold(0.0, f64::max);
    report.push(
        Row::info(
            "million",
            format!(
                "service resident memory, max over the phase, per instance ({})",
                mems.len()
            ),
            peaks
                .iter()
                .map(|m| format!("{m:.1} MiB"))
                .collect::<Vec<_>>()
                .join(", "),
        )
        .judged(format!("< {MAX_MIB:.0} MiB"), worst < MAX_MIB, args.quick),
    );
    scratch.finish(&args.pg_url_base, args.keep_db).await?;
    outcome
}

async fn measure(
    args: &Args,
    plan: &Plan,
    stack: &crate::service::Stack,
    database_url: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (svc, sandbox) = (&stack.svc, &stack.wechat.sandbox);
    let users = plan.million_users;
    svc.put_app(APP, 100_000).await?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(database_url)
        .await?;
    let seeding = Instant::now();
    let openids = seed_users_with_grants(&pool, APP, "m", users, &[(TPL, 1)]).await?;
    pool.close().await;
    for openid in &openids {
        sandbox.grant_subscription(APP, openid, TPL, 1);
    }
    drop(openids);
    println!(
        "(million) seeded {} users with a grant in {:.1} s",
        fmt_num(users as f64),
        seeding.elapsed().as_secs_f64()
    );

    let due = Utc::now() + LEAD;
    let created = svc
        .admin(
            reqwest::Method::POST,
            "/v1/campaigns",
            Some(&json!({
                "appid": APP, "name": "bench million", "kind": "subscribe",
                "template_id": TPL, "page": "pages/index/index",
                "data": {"thing1": {"value": "{{openid}}"}},
                "audience": {"type": "all"},
                "schedule": {"type": "at", "at": due.to_rfc3339()}
            })),
        )
        .await?;
    let id = created["id"].as_str().unwrap_or_default().to_string();
    println!("(million) campaign {id} due at {due}");

    // The fake WeChat's count, sampled every 10 ms: when the first message arrived, and
    // the count over time for the sustained rate.
    // A million sends take minutes: at least a second per thousand users.
    let timeout = plan
        .campaign_timeout
        .max(Duration::from_secs(users as u64 / 1_000));
    let deadline = Instant::now() + timeout + LEAD.to_std()?;
    let mut first_after: Option<f64> = None;
    let mut samples: Vec<(Instant, usize)> = Vec::new();
    let mut next_print = Instant::now() + Duration::from_secs(10);
    let mut status = String::from("?");
    let mut last_poll = Instant::now();
    loop {
        let count = sandbox.message_count();
        let now = Instant::now();
        if count > 0 && first_after.is_none() {
            first_after = Some((Utc::now() - due).num_milliseconds() as f64 / 1000.0);
        }
        samples.push((now, count));
        if now >= next_print {
            println!("(million) {} messages received", fmt_num(count as f64));
            next_print = now + Duration::from_secs(10);
        }
        if now.duration_since(last_poll) >= Duration::from_millis(500) {
            last_poll = now;
            let c = svc
                .admin(reqwest::Method::GET, &format!("/v1/campaigns/{id}"), None)
                .await?;
            status = c["status"].as_str().unwrap_or("?").to_string();
            if matches!(status.as_str(), "completed" | "failed" | "cancelled") {
                break;
            }
        }
        if now > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let received = sandbox.message_count();
    let mut per_user: HashMap<String, u32> = HashMap::with_capacity(received);
    for m in sandbox.messages() {
        *per_user.entry(m.touser).or_default() += 1;
    }
    let twice = per_user.values().filter(|n| **n > 1).count();
    let reached = per_user.len();
    let rate = middle_rate(&samples, received);
    let quick = args.quick;
    let what = |s: &str| {
        format!(
            "campaign to {} users ({} instance(s)), fake WeChat {} ms: {s}",
            fmt_num(users as f64),
            args.million_instances.max(1),
            args.million_latency_ms
        )
    };
    let first = first_after.unwrap_or(f64::INFINITY);
    report.push(
        Row::info(
            "million",
            what("first message after the due time"),
            first_after.map_or("none arrived".into(), |s| format!("{s:.2} s")),
        )
        .judged(
            format!("≤ {MAX_FIRST_SECS:.0} s"),
            first <= MAX_FIRST_SECS,
            quick,
        ),
    );
    report.push(
        Row::info(
            "million",
            what("sends/s over the middle 80 % of the messages"),
            format!("{} sends/s", fmt_num(rate)),
        )
        .at_least(rate, "sends/s", MIN_SENDS_PER_SEC, quick),
    );
    report.push(
        Row::info(
            "million",
            what("users reached / messages / users reached twice"),
            format!(
                "{} / {} / {twice} (campaign {status})",
                fmt_num(reached as f64),
                fmt_num(received as f64)
            ),
        )
        .judged(
            "every user once",
            reached == users && received == users && twice == 0,
            quick,
        ),
    );
    Ok(())
}

/// Messages per second between the 10th and the 90th percentile of `total` messages.
fn middle_rate(samples: &[(Instant, usize)], total: usize) -> f64 {
    let at = |share: f64| {
        let n = (total as f64 * share) as usize;
        samples.iter().find(|(_, c)| *c >= n.max(1)).copied()
    };
    match (at(0.1), at(0.9)) {
        (Some((t0, c0)), Some((t1, c1))) if t1 > t0 => {
            (c1 - c0) as f64 / t1.duration_since(t0).as_secs_f64()
        }
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_middle_rate_leaves_out_the_ramp_and_the_tail() {
        let t = Instant::now();
        let s = |ms: u64, c: usize| (t + Duration::from_millis(ms), c);
        // 100 messages: 10 in the first second, then 80 in 2 s, then a slow tail.
        let samples = [s(0, 0), s(1000, 10), s(2000, 50), s(3000, 90), s(9000, 100)];
        assert_eq!(middle_rate(&samples, 100), 40.0);
        assert_eq!(middle_rate(&[s(0, 0)], 100), 0.0);
    }
}
