//! Phase `trigger`: triggered messages (`POST /v1/apps/{appid}/messages`, send now, one
//! subscribe message per request, authorized by an API key with scope `send`), against a
//! fake WeChat answering after `--trigger-latency-ms` (50).
//!
//! - throughput: `--trigger-connections` keep-alive connections post one message each per
//!   request, the next as soon as the answer is in, for `--trigger-secs` after a warm-up;
//!   every user holds subscribe grants (seeded in SQL, and in the fake WeChat); accepted/s
//!   counts `202` answers; latencies are every measured request's; shown next to the
//!   pgbench single claim (phase `pgbench`) as a ratio;
//! - delivery time: `--trigger-samples` messages, one every `--trigger-sample-every-ms`,
//!   each timed from just before its POST to the fake WeChat's acceptance of it
//!   (`SentMessage::at`, stamped after the fake's answer delay, so the 50 ms are
//!   included); once on the idle app, once while a campaign of the same app to `--users`
//!   users is sending (only samples posted before the campaign's last send count).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;

use crate::api::{run_campaign, trigger_request, POST_TIMEOUT};
use crate::raw_http::RawConn;
use crate::report::{fmt_num, Report, Row};
use crate::seed::seed_users_with_grants;
use crate::service::{PhaseStack, Stack};
use crate::stats::{micros, percentile_ms};
use crate::{Args, Plan};

const DB: &str = "formpush_bench_trigger";
const APP_TRIGGER: &str = "wxbenchtrigger";
/// The template of the triggered messages.
const TPL_TRIGGER: &str = "TPL_BENCH_TRIGGER";
/// The template of the campaign sending meanwhile (its own grants).
const TPL_CAMPAIGN: &str = "TPL_BENCH_TRIGGER_CAMPAIGN";
const MIN_ACCEPTED_PER_SEC: f64 = 2_000.0;
const MAX_P99_MS: f64 = 50.0;
const MAX_DELIVERY_P99_MS: f64 = 1_000.0;
/// The campaign size the "while a campaign is sending" target is set for.
const TARGET_CAMPAIGN_USERS: usize = 100_000;
/// An upper bound of the accepted rate, to give every user enough grants.
const MAX_EXPECTED_RATE: f64 = 20_000.0;

pub async fn run(args: &Args, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let phase =
        PhaseStack::start(args, "trigger", DB, args.trigger_latency_ms, &[APP_TRIGGER]).await?;
    let outcome = measure(
        args,
        plan,
        &phase.stack,
        &phase.scratch.database_url,
        report,
    )
    .await;
    phase.finish(args, report).await?;
    outcome
}

async fn measure(
    args: &Args,
    plan: &Plan,
    stack: &Stack,
    database_url: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (svc, sandbox) = (&stack.svc, &stack.wechat.sandbox);
    let quick = args.quick;
    let conns = args.trigger_connections.max(1);
    let users = plan.users.max(conns);
    svc.put_app(APP_TRIGGER, 100_000).await?;
    let key = svc.create_key(APP_TRIGGER, &["send"]).await?;

    // Grants enough for the fastest expected run, spread over all users, plus the samples.
    let measured_secs = plan.trigger_warmup.as_secs_f64() + plan.trigger_secs as f64;
    let per_user = (MAX_EXPECTED_RATE * measured_secs / users as f64).ceil() as i32 + 3;
    println!(
        "(trigger) seeding {users} users with {per_user} grants of {TPL_TRIGGER} and 1 of {TPL_CAMPAIGN}"
    );
    let seed_started = Instant::now();
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(database_url)
        .await?;
    let openids = seed_users_with_grants(
        &pool,
        APP_TRIGGER,
        "tr",
        users,
        &[(TPL_TRIGGER, per_user), (TPL_CAMPAIGN, 1)],
    )
    .await?;
    pool.close().await;
    for openid in &openids {
        sandbox.grant_subscription(APP_TRIGGER, openid, TPL_TRIGGER, per_user as u32);
        sandbox.grant_subscription(APP_TRIGGER, openid, TPL_CAMPAIGN, 1);
    }
    println!(
        "(trigger) seeded in {:.1} s",
        seed_started.elapsed().as_secs_f64()
    );

    // 1. Throughput of send-now triggers.
    let addr = svc.base.trim_start_matches("http://").to_string();
    let warmup = plan.trigger_warmup;
    println!(
        "(trigger) {conns} keep-alive connections, one message per request, {:.1} s warm-up + {} s, fake WeChat {} ms",
        warmup.as_secs_f64(),
        plan.trigger_secs,
        args.trigger_latency_ms
    );
    let started = Instant::now();
    let measure_from = started + warmup;
    let deadline = measure_from + Duration::from_secs(plan.trigger_secs);
    let handles: Vec<_> = (0..conns)
        .map(|c| {
            // Connection c posts for users c, c + conns, ...: no two connections share one.
            let mine: Vec<String> = openids.iter().skip(c).step_by(conns).cloned().collect();
            let (addr, key) = (addr.clone(), key.clone());
            tokio::spawn(post_until(addr, key, mine, measure_from, deadline))
        })
        .collect();
    let mut total = Tally::default();
    for h in handles {
        total.add(h.await??);
    }
    let elapsed = (deadline.max(Instant::now()) - measure_from).as_secs_f64();
    total.latencies_us.sort_unstable();
    let pct = |p: f64| percentile_ms(&total.latencies_us, p);
    let rate = total.accepted as f64 / elapsed;
    let mut row = Row::info(
        "trigger",
        format!("triggered send-now messages ({conns} connections, 1 message/request)"),
        format!("{} accepted/s", fmt_num(rate)),
    )
    .at_least(rate, "accepted/s", MIN_ACCEPTED_PER_SEC, quick);
    // Side by side with the pgbench single claim (no target on the ratio).
    if let Some(b) = report.pgbench.claim.filter(|b| *b > 0.0) {
        row.baseline = format!("{} tps", fmt_num(b));
        row.ratio = format!("{:.2}×", rate / b);
    } else {
        row.baseline = "n/a".into();
        row.ratio = "n/a".into();
    }
    report.push(row);
    let p99 = pct(0.99);
    report.push(
        Row::info(
            "trigger",
            "trigger request latency p50 / p99 / max",
            format!("{:.2} / {:.2} / {:.2} ms", pct(0.50), p99, pct(1.0)),
        )
        .judged(
            format!("p99 < {MAX_P99_MS:.0} ms"),
            !total.latencies_us.is_empty() && p99 < MAX_P99_MS,
            quick,
        ),
    );
    if total.errors > 0 || total.requests != total.accepted {
        report.note(format!(
            "(trigger) {} requests counted, {} accepted, {} errors (first: {})",
            total.requests,
            total.accepted,
            total.errors,
            total.first_error.as_deref().unwrap_or_default()
        ));
    }
    // Every accepted message (warm-up included) reaches the fake WeChat before the next
    // measurement, so the app is idle then.
    let expected = total.accepted_all as usize;
    let drained = wait_for_count(sandbox, expected, Duration::from_secs(120)).await;
    if !drained {
        report.note(format!(
            "(trigger) after 120 s the fake WeChat had {} of the {expected} accepted messages",
            sandbox.message_count()
        ));
    }

    // 2. Delivery time on the idle app. Samples use the users from the end of the list,
    //    least used by the throughput run's connections.
    let samples = plan.trigger_samples;
    let every = Duration::from_millis(args.trigger_sample_every_ms.max(1));
    let sample_users: Vec<&str> = openids.iter().rev().map(String::as_str).collect();
    println!(
        "(trigger) idle app: {samples} messages, one every {} ms",
        every.as_millis()
    );
    let base = sandbox.message_count();
    let idle = post_samples(&addr, &key, &sample_users, "idle", samples, every, || false).await?;
    wait_for_count(sandbox, base + idle.len(), Duration::from_secs(60)).await;
    let received = sandbox.messages();
    let (idle_ms, idle_posted) = delivery_ms(&idle, &received, None);
    report.push(delivery_row(
        format!(
            "POST to fake WeChat acceptance, idle app ({} ms answer delay included)",
            args.trigger_latency_ms
        ),
        &idle_ms,
        idle_posted,
        quick,
    ));
    drop(received);

    // 3. Delivery time while a campaign of the same app to every user is sending.
    let campaign = json!({
        "appid": APP_TRIGGER,
        "name": "bench trigger background",
        "kind": "subscribe",
        "template_id": TPL_CAMPAIGN,
        "data": {"thing1": {"value": "{{openid}}"}, "time2": {"value": "{{datetime}}"}},
        "audience": {"type": "all"},
        "schedule": {"type": "now"}
    });
    let base = sandbox.message_count();
    println!("(trigger) campaign to {users} users; samples while it sends");
    let sampler = async {
        // Wait until the campaign is sending (its first messages are in), at most the
        // campaign timeout.
        let wait_until = Instant::now() + plan.campaign_timeout;
        while sandbox.message_count() < base + (users / 100).max(1) {
            if Instant::now() > wait_until {
                bail!("the campaign sent nothing within the timeout");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Stop once the campaign has (nearly) sent everything.
        let done = || sandbox.message_count() >= base + users;
        post_samples(
            &addr,
            &key,
            &sample_users[samples.min(sample_users.len())..],
            "busy",
            samples,
            every,
            done,
        )
        .await
    };
    let (end, busy) = tokio::join!(
        run_campaign(
            svc,
            &campaign,
            Duration::from_millis(250),
            plan.campaign_timeout,
            Some("(trigger)"),
        ),
        sampler
    );
    let (end, busy) = (end?, busy?);
    let sent = end.last["totals"]["sent"].as_u64().unwrap_or(0);
    wait_for_count(
        sandbox,
        base + sent as usize + busy.len(),
        Duration::from_secs(60),
    )
    .await;
    let received = sandbox.messages();
    let campaign_last = received
        .iter()
        .filter(|m| m.appid == APP_TRIGGER && m.template_id == TPL_CAMPAIGN)
        .map(|m| m.at)
        .max();
    let (busy_ms, busy_posted) = delivery_ms(&busy, &received, campaign_last);
    drop(received);
    report.push(Row::info(
        "trigger",
        format!(
            "background campaign to {} users, fake WeChat {} ms",
            fmt_num(users as f64),
            args.trigger_latency_ms
        ),
        format!(
            "{} sends/s ({} sent in {:.1} s, {})",
            fmt_num(sent as f64 / end.secs),
            fmt_num(sent as f64),
            end.secs,
            end.status
        ),
    ));
    if busy_ms.is_empty() {
        report.push(Row::error(
            "trigger",
            "POST to fake WeChat acceptance during a campaign",
            &anyhow!(
                "no sample was posted while the campaign was sending ({} posted)",
                busy.len()
            ),
        ));
    } else {
        let mut row = delivery_row(
            format!(
                "POST to fake WeChat acceptance, while the campaign to {} users sends",
                fmt_num(users as f64)
            ),
            &busy_ms,
            busy_posted,
            quick || users < TARGET_CAMPAIGN_USERS,
        );
        if users < TARGET_CAMPAIGN_USERS {
            row.target = format!(
                "p99 < {MAX_DELIVERY_P99_MS:.0} ms (for {} users)",
                fmt_num(TARGET_CAMPAIGN_USERS as f64)
            );
        }
        report.push(row);
    }
    if end.status != "completed" || sent != users as u64 {
        report.note(format!(
            "(trigger) background campaign ended {}: totals {}, last_error {}",
            end.status, end.last["totals"], end.last["last_error"]
        ));
    }
    Ok(())
}

/// What one connection (then all of them) saw.
#[derive(Default)]
struct Tally {
    /// 202 answers in the measured time.
    accepted: u64,
    /// 202 answers in the warm-up too (all of them reach the fake WeChat).
    accepted_all: u64,
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    latencies_us: Vec<u32>,
}

impl Tally {
    fn add(&mut self, t: Tally) {
        self.accepted += t.accepted;
        self.accepted_all += t.accepted_all;
        self.requests += t.requests;
        self.errors += t.errors;
        if self.first_error.is_none() {
            self.first_error = t.first_error;
        }
        self.latencies_us.extend(t.latencies_us);
    }
}

/// One connection, closed loop over its own users in turn, until `deadline`; requests sent
/// before `measure_from` (the warm-up) are not counted.
async fn post_until(
    addr: String,
    key: String,
    openids: Vec<String>,
    measure_from: Instant,
    deadline: Instant,
) -> anyhow::Result<Tally> {
    let mut tally = Tally {
        latencies_us: Vec::with_capacity(65_536),
        ..Tally::default()
    };
    if openids.is_empty() {
        return Ok(tally);
    }
    let mut conn = RawConn::connect(&addr).await?;
    let mut n: usize = 0;
    while Instant::now() < deadline && n < 100_000_000 {
        let openid = &openids[n % openids.len()];
        n += 1;
        let request = trigger_request(&addr, APP_TRIGGER, &key, openid, TPL_TRIGGER, "bench");
        let t0 = Instant::now();
        let result = conn
            .roundtrip_within(request.as_bytes(), POST_TIMEOUT)
            .await;
        let counted = t0 >= measure_from;
        match result {
            Ok((202, _)) => {
                tally.accepted_all += 1;
                if counted {
                    tally.accepted += 1;
                    tally.requests += 1;
                    tally.latencies_us.push(micros(t0.elapsed()));
                }
            }
            Ok((status, body)) => {
                if counted {
                    tally.requests += 1;
                }
                tally.errors += 1;
                tally
                    .first_error
                    .get_or_insert_with(|| format!("{status}: {}", String::from_utf8_lossy(&body)));
            }
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert_with(|| e.to_string());
                conn = RawConn::connect(&addr).await?;
            }
        }
    }
    Ok(tally)
}

/// A sample message: its marker (the `thing1` value) and when it was posted.
struct Sample {
    marker: String,
    posted: DateTime<Utc>,
}

/// Posts up to `count` messages on one connection, one every `every` (to different users
/// in turn), until `stop()`; returns the accepted ones. A refused one fails the phase.
async fn post_samples(
    addr: &str,
    key: &str,
    users: &[&str],
    tag: &str,
    count: usize,
    every: Duration,
    stop: impl Fn() -> bool,
) -> anyhow::Result<Vec<Sample>> {
    if users.is_empty() {
        bail!("no users to send samples to");
    }
    let mut conn = RawConn::connect(addr).await?;
    let mut samples = Vec::with_capacity(count);
    let mut next = Instant::now();
    for i in 0..count {
        if stop() {
            break;
        }
        tokio::time::sleep_until(next.into()).await;
        next += every;
        let marker = format!("{tag}{i}");
        let request = trigger_request(
            addr,
            APP_TRIGGER,
            key,
            users[i % users.len()],
            TPL_TRIGGER,
            &marker,
        );
        let posted = Utc::now();
        match conn
            .roundtrip_within(request.as_bytes(), POST_TIMEOUT)
            .await?
        {
            (202, _) => samples.push(Sample { marker, posted }),
            (status, body) => bail!(
                "sample message {marker}: {status}: {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }
    Ok(samples)
}

/// Each sample's time from its POST to the fake WeChat's acceptance, in microseconds,
/// sorted, and how many samples were eligible: with `until`, only samples posted before
/// it. Samples not received are left out (the row says how many were received).
fn delivery_ms(
    samples: &[Sample],
    received: &[formpush_sandbox::SentMessage],
    until: Option<DateTime<Utc>>,
) -> (Vec<u32>, usize) {
    let at: std::collections::HashMap<&str, DateTime<Utc>> = received
        .iter()
        .filter(|m| m.appid == APP_TRIGGER && m.template_id == TPL_TRIGGER)
        .filter_map(|m| Some((m.data["thing1"]["value"].as_str()?, m.at)))
        .collect();
    let eligible: Vec<&Sample> = samples
        .iter()
        .filter(|s| until.is_none_or(|u| s.posted < u))
        .collect();
    let mut out: Vec<u32> = eligible
        .iter()
        .filter_map(|s| {
            let got = at.get(s.marker.as_str())?;
            let us = (*got - s.posted).num_microseconds()?.max(0);
            Some(us.min(u32::MAX as i64) as u32)
        })
        .collect();
    out.sort_unstable();
    (out, eligible.len())
}

fn delivery_row(what: String, sorted_us: &[u32], posted: usize, no_verdict: bool) -> Row {
    let p99 = percentile_ms(sorted_us, 0.99);
    Row::info(
        "trigger",
        what,
        format!(
            "p50 {:.1} / p99 {:.1} / max {:.1} ms ({} of {posted} received)",
            percentile_ms(sorted_us, 0.50),
            p99,
            percentile_ms(sorted_us, 1.0),
            sorted_us.len()
        ),
    )
    .judged(
        format!("p99 < {MAX_DELIVERY_P99_MS:.0} ms"),
        !sorted_us.is_empty() && sorted_us.len() == posted && p99 < MAX_DELIVERY_P99_MS,
        no_verdict,
    )
}

/// Waits until the fake WeChat has accepted `count` messages in all; false on timeout.
async fn wait_for_count(
    sandbox: &formpush_sandbox::Sandbox,
    count: usize,
    timeout: Duration,
) -> bool {
    let until = Instant::now() + timeout;
    while sandbox.message_count() < count {
        if Instant::now() > until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}
