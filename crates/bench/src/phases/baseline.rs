//! (e) phase `pgbench`: this machine's Postgres limit, the baseline of the ratios. pgbench
//! runs a single-row formId INSERT (for (a)) and a single claim UPDATE (for (c)) against
//! the real schema, migrated from `migrations/` (the same indexes and constraints).

use crate::db::{db_url, drop_unless_kept, fresh_migrated};
use crate::pgbench::{find_pgbench, run_pgbench, PgbenchResult};
use crate::report::{fmt_num, Report, Row};
use crate::seed::seed_users_and_formids;
use crate::{Args, Plan};

const DB: &str = "formpush_bench_pg";
const APP_PGBENCH: &str = "wxbenchpg";
const APP_PGBENCH_CLAIM: &str = "wxbenchpgclaim";

const PGBENCH_INSERT: &str = r#"\set u random(:umin, :umax)
insert into formids (appid, user_id, form_id, kind, uses_left, created_at, expires_at)
values (:appid, :u, md5(random()::text), 'formid', 1, now(), now() + interval '7 days')
on conflict (user_id, form_id) do nothing
returning form_id;
"#;

// Each client walks the users in a shared pseudo-random order (`permute`; `n` counts the
// client's own transactions, so clients never pick the same user in one round): every
// transaction claims a formId until each user has been claimed five times. A random user
// (with repeats) left users without formIds within 20 s on a fast disk, and those
// transactions commit nothing, which inflated the baseline.
const PGBENCH_CLAIM: &str = r#"\set n :n + 1
\set u :umin + permute((:n * :clients + :client_id) % :users, :users)
update formids set uses_left = uses_left - 1, last_used_at = now()
where id = (select id from formids
            where user_id = :u and uses_left > 0 and not invalid
              and expires_at > now() + interval '1 minute'
            order by created_at desc
            limit 1
            for update skip locked);
"#;

pub async fn run(args: &Args, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let Some(pgbench) = find_pgbench() else {
        report.note("pgbench not found (PATH, /usr/lib/postgresql/*/bin): (e) skipped, no ratios");
        return Ok(());
    };
    let dir = std::env::temp_dir().join(format!("formpush-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let insert_script = dir.join("insert.sql");
    let claim_script = dir.join("claim.sql");
    std::fs::write(&insert_script, PGBENCH_INSERT)?;
    std::fs::write(&claim_script, PGBENCH_CLAIM)?;

    let pool = fresh_migrated(&args.pg_url_base, DB, 2).await?;
    let url = db_url(&args.pg_url_base, DB);

    // Single-row INSERT into the real formids table (all its indexes, the FK to users).
    let (umin, umax) = seed_users_and_formids(&pool, APP_PGBENCH, "pgi-", 1_000, 0).await?;
    let secs = plan.pgbench_secs;
    println!(
        "(e) pgbench single-row INSERT: -c {} -j 2 -T {secs}",
        args.pgbench_insert_clients
    );
    let insert = run_pgbench(
        &pgbench,
        &insert_script,
        &url,
        args.pgbench_insert_clients,
        secs,
        &[
            ("appid", APP_PGBENCH.to_string()),
            ("umin", umin.to_string()),
            ("umax", umax.to_string()),
        ],
    )
    .await;
    report.pgbench.insert = record(
        report,
        format!(
            "pgbench single-row formId INSERT (-c {})",
            args.pgbench_insert_clients
        ),
        "pgbench single-row INSERT",
        insert,
    );

    // Single claim UPDATE over users × 5 formIds, as in (c).
    let claim_users = plan.users;
    let (cmin, cmax) =
        seed_users_and_formids(&pool, APP_PGBENCH_CLAIM, "pgc-", claim_users, 5).await?;
    println!(
        "(e) pgbench single claim UPDATE over {claim_users} users x 5 formIds: -c {} -j 2 -T {secs}",
        args.pgbench_claim_clients
    );
    let claim = run_pgbench(
        &pgbench,
        &claim_script,
        &url,
        args.pgbench_claim_clients,
        secs,
        &[
            ("umin", cmin.to_string()),
            ("users", (cmax - cmin + 1).to_string()),
            ("clients", args.pgbench_claim_clients.to_string()),
            ("n", "0".to_string()),
        ],
    )
    .await;
    report.pgbench.claim = record(
        report,
        format!(
            "pgbench single claim UPDATE (-c {})",
            args.pgbench_claim_clients
        ),
        "pgbench single claim UPDATE",
        claim,
    );
    // Users left without a usable formId make later claims no-ops (no commit to wait for),
    // which would inflate the baseline.
    let emptied: i64 = sqlx::query_scalar(
        "select count(*) from users u where u.appid = $1 and not exists
           (select 1 from formids f where f.user_id = u.id and f.uses_left > 0)",
    )
    .bind(APP_PGBENCH_CLAIM)
    .fetch_one(&pool)
    .await?;
    if emptied * 20 > claim_users as i64 {
        report.note(format!(
            "(e) {emptied} of {claim_users} users ran out of formIds during the pgbench claim: \
             part of its transactions claimed nothing, so its rate is inflated (use more --users)"
        ));
    }
    pool.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    drop_unless_kept(&args.pg_url_base, DB, args.keep_db).await
}

/// One pgbench run as an (e) row (tps and average latency), or an ERROR row; returns its
/// tps, the baseline of the ratios.
fn record(
    report: &mut Report,
    what: String,
    what_failed: &str,
    result: anyhow::Result<PgbenchResult>,
) -> Option<f64> {
    match result {
        Ok(r) => {
            let mut row = Row::info("e", what, format!("{} tps", fmt_num(r.tps)));
            if let Some(l) = r.latency_ms {
                row.value.push_str(&format!(", avg {l:.2} ms"));
            }
            report.push(row);
            Some(r.tps)
        }
        Err(e) => {
            report.push(Row::error("e", what_failed, &e));
            None
        }
    }
}
