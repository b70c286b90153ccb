//! Phase `cap`: what a frequency cap costs a campaign. Two apps, `--users` users each
//! holding one grant of the same subscribe template (seeded in SQL, and in the fake WeChat);
//! the second app has a frequency cap of 2 messages a day and every one of its users already
//! received one message an hour ago (seeded in the cap's memory, `user_sends`), so its
//! claim checks a non-empty window and takes a slot for each user, but holds no one back:
//! both campaigns send to every user. The same subscribe campaign (audience `all`, now)
//! runs on the app without a cap, then on the capped one, against a fake WeChat answering
//! after `--cap-latency-ms` (0: the sends are CPU-bound, so the cap's cost shows); sends/s
//! of each and their ratio.

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::postgres::PgPoolOptions;

use crate::api::{run_campaign, CampaignEnd};
use crate::report::{fmt_num, Report, Row};
use crate::seed::seed_users_with_grants;
use crate::service::{PhaseStack, Stack};
use crate::{Args, Plan, SECRET};

const DB: &str = "formpush_bench_cap";
const APP_PLAIN: &str = "wxbenchcapnone";
const APP_CAPPED: &str = "wxbenchcapped";
const TPL: &str = "TPL_BENCH_CAP";
/// The target: a capped campaign sends at least this share of the uncapped rate.
const MIN_RATIO: f64 = 0.85;

pub async fn run(args: &Args, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let phase = PhaseStack::start(
        args,
        "cap",
        DB,
        args.cap_latency_ms,
        &[APP_PLAIN, APP_CAPPED],
    )
    .await?;
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
    let users = plan.users;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(database_url)
        .await?;
    let seed_started = Instant::now();
    for (appid, prefix) in [(APP_PLAIN, "cn"), (APP_CAPPED, "cc")] {
        svc.put_app(appid, 100_000).await?;
        let openids = seed_users_with_grants(&pool, appid, prefix, users, &[(TPL, 1)]).await?;
        for openid in &openids {
            sandbox.grant_subscription(appid, openid, TPL, 1);
        }
    }
    svc.admin(
        reqwest::Method::PUT,
        &format!("/v1/apps/{APP_CAPPED}"),
        Some(&json!({"secret": SECRET, "frequency_cap": {"max": 2, "per_secs": 86_400}})),
    )
    .await?;
    // One message an hour ago for each capped user: the window the claim reads is not empty.
    sqlx::query(
        "insert into user_sends (user_id, recent)
         select id, array[now() - interval '1 hour'] from users where appid = $1",
    )
    .bind(APP_CAPPED)
    .execute(&pool)
    .await?;
    sqlx::raw_sql("analyze user_sends").execute(&pool).await?;
    pool.close().await;
    println!(
        "(cap) seeded 2 apps x {users} users with a grant in {:.1} s",
        seed_started.elapsed().as_secs_f64()
    );

    let plain = campaign(plan, stack, APP_PLAIN, plan.campaign_timeout, report).await?;
    // Given up on once clearly below the target (4x the uncapped time, at least 30 s).
    let bound = Duration::from_secs_f64((plain.end.secs * 4.0).max(30.0));
    let capped = campaign(
        plan,
        stack,
        APP_CAPPED,
        bound.min(plan.campaign_timeout),
        report,
    )
    .await?;
    let what = |how: &str| {
        format!(
            "subscribe campaign to {} users, {how}, fake WeChat {} ms",
            fmt_num(users as f64),
            args.cap_latency_ms
        )
    };
    report.push(Row::info("cap", what("no frequency cap"), describe(&plain)));
    report.push(Row::info(
        "cap",
        what("frequency cap 2/day, every user 1 message in the window"),
        describe(&capped),
    ));
    let ratio = if plain.rate > 0.0 {
        capped.rate / plain.rate
    } else {
        f64::NAN
    };
    println!("(cap) capped ÷ uncapped sends/s: {ratio:.2}×");
    let both_done = plain.complete(users) && capped.complete(users);
    report.push(
        Row::info(
            "cap",
            "capped ÷ uncapped campaign sends/s",
            format!("{ratio:.2}×"),
        )
        .judged(
            format!("≥ {MIN_RATIO:.2}×"),
            both_done && ratio >= MIN_RATIO,
            args.quick,
        ),
    );
    Ok(())
}

/// One campaign's outcome.
struct Outcome {
    end: CampaignEnd,
    sent: u64,
    rate: f64,
}

impl Outcome {
    fn complete(&self, users: usize) -> bool {
        self.end.status == "completed" && self.sent == users as u64
    }
}

fn describe(o: &Outcome) -> String {
    format!(
        "{} sends/s ({} sent in {:.1} s{})",
        fmt_num(o.rate),
        fmt_num(o.sent as f64),
        o.end.secs,
        if o.end.done {
            String::new()
        } else {
            format!(", gave up: {}", o.end.status)
        }
    )
}

async fn campaign(
    plan: &Plan,
    stack: &Stack,
    appid: &str,
    timeout: Duration,
    report: &mut Report,
) -> anyhow::Result<Outcome> {
    let body = json!({
        "appid": appid,
        "name": format!("bench cap {appid}"),
        "kind": "subscribe",
        "template_id": TPL,
        "page": "pages/index/index",
        "data": {"thing1": {"value": "{{openid}}"}, "time2": {"value": "{{datetime}}"}},
        "audience": {"type": "all"},
        "schedule": {"type": "now"}
    });
    let label = format!("(cap {appid})");
    let end = run_campaign(
        &stack.svc,
        &body,
        Duration::from_millis(250),
        timeout,
        Some(&label),
    )
    .await?;
    let sent = end.last["totals"]["sent"].as_u64().unwrap_or(0);
    let rate = sent as f64 / end.secs;
    let outcome = Outcome { end, sent, rate };
    if !outcome.complete(plan.users) {
        report.note(format!(
            "{label} campaign ended {}: totals {}, last_error {}; fake WeChat outcomes {:?}",
            outcome.end.status,
            outcome.end.last["totals"],
            outcome.end.last["last_error"],
            stack
                .wechat
                .sandbox
                .send_outcomes(formpush_sandbox::MessageKind::Subscribe)
        ));
    }
    Ok(outcome)
}
