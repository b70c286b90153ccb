//! (c) phase `claim`: claim-and-consume with the production SQL. `--users` users × 5
//! formIds seeded in SQL over `--claim-tasks` apps, each with a running campaign run and a
//! pending delivery per user; then one task per app loops
//! `formpush::store::deliveries::claim_batch` with a cursor until nothing is left.
//! claims/s = deliveries moved to `sending` with a consumed formId ÷ wall time.

use std::time::Instant;

use formpush::domain::campaign::{CampaignKind, FormidPick};
use formpush::domain::delivery::DeliveryStatus;
use formpush::store::deliveries::{claim_batch, RunClaim};
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{drop_unless_kept, fresh_migrated};
use crate::report::{fmt_num, Report, Row};
use crate::seed::{seed_running_run, seed_users_and_formids};
use crate::{Args, Plan};

const DB: &str = "formpush_bench_claim";
/// Apps are this prefix and the sender's number.
const APP_CLAIM: &str = "wxbenchclaim";

/// What one sender claimed.
#[derive(Default)]
struct Claimed {
    /// Deliveries moved to `sending` (a formId consumed).
    sending: u64,
    /// Deliveries claimed in another state (no usable formId): none expected.
    other: u64,
    calls: u64,
}

pub async fn run(args: &Args, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    // One sender per app claims at a time (the app lease), so concurrent claims in the
    // service are those of different apps: each task is one app's sender, with its own
    // campaign run over its share of the users, claiming with a cursor as the service does.
    let users = plan.users;
    // Every app needs at least one user (an empty one would have nothing to claim).
    let senders = args.claim_tasks.clamp(1, users.max(1));
    let pool = fresh_migrated(&args.pg_url_base, DB, senders as u32 + 1).await?;
    println!("(c) seeding {users} users x 5 formIds over {senders} apps, a run per app and its deliveries");
    let seed_started = Instant::now();
    let appids: Vec<String> = (0..senders).map(|k| format!("{APP_CLAIM}{k}")).collect();
    let mut runs = Vec::with_capacity(senders);
    for (k, appid) in appids.iter().enumerate() {
        let share = users / senders + usize::from(k < users % senders);
        seed_users_and_formids(&pool, appid, &format!("c{k}-"), share, 5).await?;
        runs.push(seed_running_run(&pool, appid).await?);
    }
    sqlx::raw_sql("vacuum analyze").execute(&pool).await?;
    println!(
        "(c) seeded in {:.1} s; claiming with {senders} senders x {} per call",
        seed_started.elapsed().as_secs_f64(),
        args.claim_batch
    );

    let limit = args.claim_batch.max(1);
    let max_calls = users as i64 / limit + 1_000;
    let started = Instant::now();
    let handles: Vec<_> = runs
        .into_iter()
        .zip(appids.clone())
        .map(|(run_id, appid)| tokio::spawn(sender(pool.clone(), appid, run_id, limit, max_calls)))
        .collect();
    let mut total = Claimed::default();
    for h in handles {
        let c = h.await??;
        total.sending += c.sending;
        total.other += c.other;
        total.calls += c.calls;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let Claimed {
        sending: claimed,
        other,
        calls,
    } = total;
    let consumed: i64 = sqlx::query_scalar(
        "select count(*) from formids f join users u on u.id = f.user_id
         where u.appid = any($1) and f.uses_left = 0",
    )
    .bind(&appids)
    .fetch_one(&pool)
    .await?;
    let rate = claimed as f64 / elapsed;
    report.push(
        Row::info(
            "c",
            format!(
                "claim-and-consume, claim_batch ({senders} senders x {})",
                args.claim_batch
            ),
            format!(
                "{} claims/s ({} in {:.2} s, {calls} calls)",
                fmt_num(rate),
                fmt_num(claimed as f64),
                elapsed
            ),
        )
        .ratio_to_pgbench(rate, report.pgbench.claim, 5.0, args.quick),
    );
    if claimed != users as u64 || other != 0 || consumed != users as i64 {
        report.note(format!(
            "(c) expected {users} claims: got {claimed} sending, {other} without a formId, {consumed} formIds consumed"
        ));
    }
    pool.close().await;
    drop_unless_kept(&args.pg_url_base, DB, args.keep_db).await
}

/// One app's sender: claims `limit` deliveries of its run at a time until none is left.
async fn sender(
    pool: PgPool,
    appid: String,
    run_id: Uuid,
    limit: i64,
    max_calls: i64,
) -> Result<Claimed, sqlx::Error> {
    let claim = RunClaim {
        appid: &appid,
        run_id,
        kind: CampaignKind::Template,
        template_id: crate::TEMPLATE,
        formid_pick: FormidPick::Freshest,
        lease_secs: 120.0,
    };
    let mut claimed = Claimed::default();
    // Like the service's sender: a cursor over delivery ids (see Pipeline::work_app).
    let mut after = 0i64;
    for _ in 0..max_calls {
        let batch = claim_batch(&pool, &claim, limit, after).await?;
        claimed.calls += 1;
        if batch.is_empty() {
            break;
        }
        after = batch.iter().map(|d| d.id).max().unwrap_or(after);
        for d in &batch {
            if d.status == DeliveryStatus::Sending {
                claimed.sending += 1;
            } else {
                claimed.other += 1;
            }
        }
    }
    Ok(claimed)
}
