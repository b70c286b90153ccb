//! Phase `pool` (never in the default list: `--phases pool`): client formId ingestion
//! against a big pool. Ingestion (as in (a)) is measured on the empty `formids` table,
//! again once `--pool-rows` formIds (default 10,000,000; quick: 20,000) are in it, a tenth
//! of them expired the day before, and a third time while the daily purge
//! (`formpush::store::credits::purge_dead`, what the clean-up job runs) deletes the expired
//! ones. Targets: the rate at the full pool ≥ 0.9× the empty one's, and ingestion p99 under
//! the purge < 100 ms (the purge must not block ingestion).

use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::api::login_users;
use crate::phases::ingest::{self, APP_INGEST};
use crate::procfs::MemWatch;
use crate::report::{fmt_num, Report, Row};
use crate::service::{Scratch, Stack};
use crate::{Args, Plan, SECRET};

const DB: &str = "formpush_bench_pool";
/// The app whose users hold the seeded pool (not the one ingestion posts to).
const APP_POOL: &str = "wxbenchpool";
const FORMIDS_PER_USER: i64 = 4;
const MIN_RATIO: f64 = 0.9;
const MAX_P99_MS: f64 = 100.0;

pub async fn run(args: &Args, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let mut scratch = Scratch::create(&args.pg_url_base, "pool", DB).await?;
    let mem = MemWatch::default();
    let stop_watch = tokio_util::sync::CancellationToken::new();
    mem.start(stop_watch.clone());
    let stack = scratch
        .start_stack(args, &mem, 0, &[APP_INGEST, APP_POOL], "pool")
        .await?;
    println!("(pool) {}", stack.describe());
    let outcome = measure(args, plan, &stack, &scratch.database_url, report).await;
    scratch.stop_stack(stack, report, "(pool) ").await?;
    stop_watch.cancel();
    scratch.finish(&args.pg_url_base, args.keep_db).await?;
    outcome
}

async fn measure(
    args: &Args,
    plan: &Plan,
    stack: &Stack,
    database_url: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let svc = &stack.svc;
    let conns = args.connections.max(1);
    svc.put_app(APP_INGEST, 100_000).await?;
    let tokens = login_users(svc, &stack.wechat, APP_INGEST, args.ingest_users.max(conns)).await?;
    let warmup = plan.ingest_warmup;
    let secs = Duration::from_secs(plan.ingest_secs);
    let quick = args.quick;
    let rows = plan.pool_rows;

    let empty = ingest::measure(svc, APP_INGEST, &tokens, conns, warmup, secs).await?;
    println!("(pool) empty table: {} accepted/s", fmt_num(empty.rate()));

    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(database_url)
        .await?;
    let seeding = Instant::now();
    let expired = seed_pool(&pool, rows).await?;
    println!(
        "(pool) seeded {} formIds ({} expired) in {:.0} s",
        fmt_num(rows as f64),
        fmt_num(expired as f64),
        seeding.elapsed().as_secs_f64()
    );
    let full = ingest::measure(svc, APP_INGEST, &tokens, conns, warmup, secs).await?;

    // Ingestion again while the purge runs: measured over the purge's own duration (at
    // least the usual seconds), from a warm-up's end.
    let purge_pool = pool.clone();
    let purge = tokio::spawn(async move {
        tokio::time::sleep(warmup).await;
        let started = Instant::now();
        let deleted = formpush::store::credits::purge_dead(&purge_pool).await?;
        Ok::<_, anyhow::Error>((deleted, started.elapsed()))
    });
    let during = ingest::measure(svc, APP_INGEST, &tokens, conns, warmup, secs).await?;
    let (deleted, purge_took) = purge.await??;
    pool.close().await;

    let describe = |t: &ingest::Tally| {
        format!(
            "{} accepted/s, p50 / p99 / max {:.2} / {:.2} / {:.2} ms",
            fmt_num(t.rate()),
            t.percentile_ms(0.5),
            t.percentile_ms(0.99),
            t.percentile_ms(1.0)
        )
    };
    let what = |s: &str| format!("client formId ingestion ({conns} connections), {s}");
    report.push(Row::info(
        "pool",
        what("empty formids table"),
        describe(&empty),
    ));
    let ratio = full.rate() / empty.rate();
    let mut row = Row::info(
        "pool",
        what(&format!("{} formIds in the table", fmt_num(rows as f64))),
        describe(&full),
    );
    row.ratio = format!("{ratio:.2}×");
    report.push(row.judged(format!("≥ {MIN_RATIO}× empty"), ratio >= MIN_RATIO, quick));
    let p99 = during.percentile_ms(0.99);
    report.push(
        Row::info(
            "pool",
            what(&format!(
                "while the purge deletes {} expired formIds (took {:.1} s)",
                fmt_num(deleted as f64),
                purge_took.as_secs_f64()
            )),
            describe(&during),
        )
        .judged(format!("p99 < {MAX_P99_MS:.0} ms"), p99 < MAX_P99_MS, quick),
    );
    if purge_took > secs + warmup {
        report.note(format!(
            "(pool) the purge outlasted the measurement ({:.1} s against {} s)",
            purge_took.as_secs_f64(),
            plan.ingest_secs
        ));
    }
    for t in [&empty, &full, &during] {
        if t.errors > 0 {
            report.note(format!(
                "(pool) {} ingestion errors (first: {})",
                t.errors,
                t.first_error.clone().unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// `rows` formIds of `APP_POOL`'s users (`FORMIDS_PER_USER` each), a tenth of them expired
/// a day ago, the rest valid for days; returns how many are expired.
async fn seed_pool(pool: &PgPool, rows: usize) -> anyhow::Result<i64> {
    sqlx::query(
        "insert into apps (appid, secret, send_rate_per_sec) values ($1, $2, 100000)
         on conflict (appid) do nothing",
    )
    .bind(APP_POOL)
    .bind(SECRET)
    .execute(pool)
    .await?;
    let users = (rows as i64 / FORMIDS_PER_USER).max(1);
    // Chunks keep each statement's transaction short.
    let chunk = 50_000i64;
    let mut lo = 0i64;
    while lo < users {
        let hi = (lo + chunk).min(users) - 1;
        sqlx::query(
            "with u as (
                 insert into users (appid, openid)
                 select $1, 'pool' || g from generate_series($2::bigint, $3::bigint) g
                 returning id
             )
             insert into formids (appid, user_id, form_id, kind, uses_left, received_at,
                                  created_at, expires_at)
             select $1, u.id, md5(u.id::text || '-' || k), 'formid', 1, t.at, t.at,
                    t.at + interval '7 days'
             from u cross join generate_series(1, $4::int) k
             -- every tenth user's formIds were received 8 days ago: expired since yesterday
             cross join lateral (select case when u.id % 10 = 0
                                     then now() - interval '8 days' - make_interval(mins => k)
                                     else now() - make_interval(mins => k) end as at) t",
        )
        .bind(APP_POOL)
        .bind(lo)
        .bind(hi)
        .bind(FORMIDS_PER_USER as i32)
        .execute(pool)
        .await?;
        lo = hi + 1;
    }
    // One statement each: VACUUM refuses to run in the implicit transaction of several.
    for statement in ["vacuum analyze formids", "analyze users"] {
        sqlx::raw_sql(statement).execute(pool).await?;
    }
    let expired: i64 = sqlx::query_scalar("select count(*) from formids where expires_at < now()")
        .fetch_one(pool)
        .await?;
    Ok(expired)
}
