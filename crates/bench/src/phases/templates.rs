//! Phase `templates`: what checking subscribe data against a synced template costs a
//! campaign. Two apps with the same subscribe template in the fake WeChat
//! (`Sandbox::add_template`), `--users` users each holding one grant of it (seeded in SQL,
//! and in the fake WeChat); only the first app is synced (`POST .../templates:sync`), so
//! its campaign checks every user's rendered data (`{{openid}}` and `{{datetime}}`
//! placeholders) before the claim, the other's is not checked. The same subscribe
//! campaign (audience `all`, now) runs on the unchecked app, then on the checked one,
//! against a fake WeChat answering after `--templates-latency-ms` (0: the sends are
//! CPU-bound, so the check's cost shows); sends/s of each and their ratio.

use std::time::{Duration, Instant};

use anyhow::bail;
use formpush_sandbox::SubscribeTemplate;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;

use crate::api::{run_campaign, CampaignEnd};
use crate::report::{fmt_num, Report, Row};
use crate::seed::seed_users_with_grants;
use crate::service::{PhaseStack, Stack};
use crate::{Args, Plan};

const DB: &str = "formpush_bench_templates";
const APP_CHECKED: &str = "wxbenchtplchecked";
const APP_UNCHECKED: &str = "wxbenchtplplain";
const TPL: &str = "TPL_BENCH_SUBSCRIBE_000000000000000000000000";
const MIN_RATIO: f64 = 0.9;

fn template() -> anyhow::Result<SubscribeTemplate> {
    Ok(serde_json::from_value(json!({
        "priTmplId": TPL, "title": "订单提醒", "type": 2,
        "content": "用户:{{thing1.DATA}}\n时间:{{time2.DATA}}\n",
        "example": "用户:o123\n时间:2026-11-27 15:01:00\n"
    }))?)
}

pub async fn run(args: &Args, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let phase = PhaseStack::start(
        args,
        "templates",
        DB,
        args.templates_latency_ms,
        &[APP_CHECKED, APP_UNCHECKED],
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
    let latency = args.templates_latency_ms;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(database_url)
        .await?;
    let seed_started = Instant::now();
    for (appid, prefix) in [(APP_UNCHECKED, "tp"), (APP_CHECKED, "tc")] {
        svc.put_app(appid, 100_000).await?;
        sandbox.add_template(appid, template()?);
        let openids = seed_users_with_grants(&pool, appid, prefix, users, &[(TPL, 1)]).await?;
        for openid in &openids {
            sandbox.grant_subscription(appid, openid, TPL, 1);
        }
    }
    pool.close().await;
    println!(
        "(templates) seeded 2 apps x {users} users with a grant in {:.1} s",
        seed_started.elapsed().as_secs_f64()
    );
    let synced = svc.sync_templates(APP_CHECKED).await?;
    if synced != [TPL] {
        bail!("{APP_CHECKED} synced {synced:?}, expected [{TPL}]");
    }
    let unsynced = svc.templates(APP_UNCHECKED).await?;
    if !unsynced.is_empty() {
        bail!("{APP_UNCHECKED} has templates {unsynced:?} without a sync");
    }

    let unchecked = campaign(plan, stack, APP_UNCHECKED, plan.campaign_timeout, report).await?;
    // The checked campaign is given up on once it is clearly below the target (4x the
    // unchecked one's time, at least 30 s): the rate so far is the result, and a slow
    // check does not stretch the default run by minutes.
    let bound = Duration::from_secs_f64((unchecked.end.secs * 4.0).max(30.0));
    let checked = campaign(
        plan,
        stack,
        APP_CHECKED,
        bound.min(plan.campaign_timeout),
        report,
    )
    .await?;
    let quick = args.quick;
    let what = |how: &str| {
        format!(
            "subscribe campaign to {} users, {how}, fake WeChat {latency} ms",
            fmt_num(users as f64)
        )
    };
    report.push(Row::info(
        "templates",
        what("template not synced (no checks)"),
        describe(&unchecked),
    ));
    report.push(Row::info(
        "templates",
        what("synced template (every user's data checked)"),
        describe(&checked),
    ));
    let ratio = if unchecked.rate > 0.0 {
        checked.rate / unchecked.rate
    } else {
        f64::NAN
    };
    let both_done = unchecked.complete(users) && checked.complete(users);
    report.push(
        Row::info(
            "templates",
            "checked ÷ unchecked campaign sends/s",
            format!("{ratio:.2}×"),
        )
        .judged(
            format!("≥ {MIN_RATIO:.1}×"),
            both_done && ratio >= MIN_RATIO,
            quick,
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
        "name": format!("bench templates {appid}"),
        "kind": "subscribe",
        "template_id": TPL,
        "page": "pages/index/index",
        "data": {"thing1": {"value": "{{openid}}"}, "time2": {"value": "{{datetime}}"}},
        "audience": {"type": "all"},
        "schedule": {"type": "now"}
    });
    let label = format!("(templates {appid})");
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
