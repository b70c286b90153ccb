//! The soak's sample windows: at the end of each, the services' RSS, open descriptors and
//! Postgres connections, the window's ingestion rate and latency, send rate and errors, and
//! what Postgres was doing in the background (autovacuum, checkpoints, WAL written), printed
//! as a line each and kept for the summary. Latencies are also kept per minute, so that each
//! minute's p99 is exact rather than an average of its windows'.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use sqlx::{Connection, PgConnection};

use super::load::Counters;
use super::SoakPlan;
use crate::procfs::{count_fds, cpu_ticks, proc_status_mib};
use crate::report::fmt_num;
use crate::service::Service;
use crate::stats::percentile_ms;

/// One sample window of the soak.
#[derive(Debug, Clone)]
pub struct Window {
    /// Seconds since the soak started, at the end of the window.
    pub end_secs: f64,
    /// VmRSS at the end of the window, summed over the instances.
    pub rss_mib: f64,
    /// Entries of /proc/PID/fd at the end of the window, summed over the instances.
    pub fds: f64,
    /// Connections to the soak database in pg_stat_activity at the end of the window (the
    /// sampler's own left out).
    pub pg_conns: f64,
    pub accepted_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub sends_per_sec: f64,
    pub errors: u64,
    pub campaigns_done: usize,
    /// Tables of the soak database autovacuum was working on at the end of the window.
    pub vacuum: String,
    /// Checkpoints that ended during the window (the server's, timed and requested).
    pub checkpoints: i64,
    /// WAL the server wrote during the window.
    pub wal_mib: f64,
    /// The machine's CPU busy during the window (all cores, 100 = all busy).
    pub cpu_pct: f64,
    /// How late the harness's own 10-ms timer fired at worst in the window.
    pub harness_lag_ms: f64,
}

/// One minute of the soak's ingestion, from every latency answered in it.
#[derive(Debug, Clone)]
pub struct Minute {
    /// 1 for the first minute.
    pub n: usize,
    pub requests: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub const HEADER: [&str; 15] = [
    "t (s)",
    "RSS MiB",
    "fds",
    "PG conns",
    "accepted/s",
    "p50 ms",
    "p99 ms",
    "sends/s",
    "errors",
    "campaigns done",
    "autovacuum",
    "ckpt",
    "WAL MiB",
    "CPU %",
    "harness lag ms",
];

/// A window as the cells of its line (the console's and the markdown's).
pub fn cells(w: &Window) -> [String; 15] {
    [
        format!("{:.0}", w.end_secs),
        format!("{:.1}", w.rss_mib),
        format!("{:.0}", w.fds),
        format!("{:.0}", w.pg_conns),
        fmt_num(w.accepted_per_sec),
        format!("{:.2}", w.p50_ms),
        format!("{:.2}", w.p99_ms),
        fmt_num(w.sends_per_sec),
        w.errors.to_string(),
        w.campaigns_done.to_string(),
        if w.vacuum.is_empty() {
            "-".to_string()
        } else {
            w.vacuum.clone()
        },
        w.checkpoints.to_string(),
        format!("{:.0}", w.wal_mib),
        format!("{:.0}", w.cpu_pct),
        format!("{:.0}", w.harness_lag_ms),
    ]
}

fn print_line(cells: &[String]) {
    let widths = [6, 8, 5, 8, 10, 7, 7, 8, 6, 14, 10, 4, 7, 5, 14];
    let parts: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(c, w)| format!("{c:>w$}"))
        .collect();
    println!("  {}", parts.join(" "));
}

/// The server-wide counters a window's background activity is the difference of.
#[derive(Default, Clone, Copy)]
struct ServerCounters {
    checkpoints: i64,
    wal_bytes: f64,
}

/// What Postgres reports for the soak database and the server, from a connection to the
/// soak database.
struct PgReading {
    conns: f64,
    vacuum: String,
    counters: ServerCounters,
}

async fn read_pg(c: &mut PgConnection) -> sqlx::Result<PgReading> {
    let (conns, vacuum, checkpoints, wal_bytes): (i64, String, i64, f64) = sqlx::query_as(
        "select
           (select count(*) from pg_stat_activity
            where datname = current_database() and pid <> pg_backend_pid()),
           (select coalesce(string_agg(distinct c.relname, ','), '')
            from pg_stat_progress_vacuum p join pg_class c on c.oid = p.relid
            where p.datname = current_database()),
           (select checkpoints_timed + checkpoints_req from pg_stat_bgwriter),
           pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8",
    )
    .fetch_one(c)
    .await?;
    Ok(PgReading {
        conns: conns as f64,
        vacuum,
        counters: ServerCounters {
            checkpoints,
            wal_bytes,
        },
    })
}

/// Every `soak.window` from `start` for `soak.windows` windows: the services' RSS and fds,
/// Postgres' connections and background work, and the ingestion and send rates of the
/// window; and the ingestion latency of every minute.
pub async fn run(
    database_url: &str,
    svcs: &[&Service],
    sandbox: &formpush_sandbox::Sandbox,
    ingest: &Counters,
    campaigns_done: &AtomicUsize,
    start: Instant,
    soak: &SoakPlan,
) -> (Vec<Window>, Vec<Minute>) {
    let pids: Vec<u32> = svcs.iter().map(|s| s.pid()).collect();
    let mut pg: Option<PgConnection> = PgConnection::connect(database_url).await.ok();
    let mut prev_counters = match pg.as_mut() {
        Some(c) => read_pg(c).await.map(|r| r.counters).unwrap_or_default(),
        None => ServerCounters::default(),
    };
    let mut out = Vec::new();
    let mut minutes = Vec::new();
    let mut minute_lat: Vec<u32> = Vec::new();
    let mut prev_at = start;
    let mut prev_accepted = 0u64;
    let mut prev_errors = 0u64;
    let mut prev_sends = sandbox.message_count() as u64;
    let mut prev_cpu = cpu_ticks();
    print_line(&HEADER.map(String::from));
    for k in 1..=soak.windows {
        tokio::time::sleep_until((start + soak.window.mul_f64(k as f64)).into()).await;
        let now = Instant::now();
        let mut lat = ingest.take_window();
        let accepted = ingest.accepted.load(Ordering::Relaxed);
        let errors = ingest.errors.load(Ordering::Relaxed);
        let sends = sandbox.message_count() as u64;
        let rss_mib: f64 = pids.iter().map(|p| proc_status_mib(*p, "VmRSS:")).sum();
        let fds: Option<usize> = pids.iter().map(|p| count_fds(*p)).sum();
        if pg.is_none() {
            pg = PgConnection::connect(database_url).await.ok();
        }
        let mut reading = None;
        if let Some(c) = pg.as_mut() {
            match read_pg(c).await {
                Ok(r) => reading = Some(r),
                // Reconnect at the next window.
                Err(_) => pg = None,
            }
        }
        let cpu = cpu_ticks();
        let cpu_pct = match (prev_cpu, cpu) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                (b1 - b0) as f64 / (t1 - t0) as f64 * 100.0
            }
            _ => f64::NAN,
        };
        prev_cpu = cpu;
        let harness_lag_ms = ingest.harness_lag_us.swap(0, Ordering::Relaxed) as f64 / 1000.0;
        lat.sort_unstable();
        let secs = (now - prev_at).as_secs_f64().max(1e-3);
        let (pg_conns, vacuum, checkpoints, wal_mib) = match reading {
            Some(r) => {
                let d = (
                    r.counters.checkpoints - prev_counters.checkpoints,
                    (r.counters.wal_bytes - prev_counters.wal_bytes) / (1024.0 * 1024.0),
                );
                prev_counters = r.counters;
                (r.conns, r.vacuum, d.0, d.1)
            }
            None => (f64::NAN, String::new(), 0, f64::NAN),
        };
        let w = Window {
            end_secs: (now - start).as_secs_f64(),
            rss_mib,
            fds: fds.map_or(f64::NAN, |n| n as f64),
            pg_conns,
            accepted_per_sec: (accepted - prev_accepted) as f64 / secs,
            p50_ms: percentile_ms(&lat, 0.50),
            p99_ms: percentile_ms(&lat, 0.99),
            sends_per_sec: sends.saturating_sub(prev_sends) as f64 / secs,
            errors: errors - prev_errors,
            campaigns_done: campaigns_done.load(Ordering::SeqCst),
            vacuum,
            checkpoints,
            wal_mib,
            cpu_pct,
            harness_lag_ms,
        };
        print_line(&cells(&w));
        minute_lat.extend_from_slice(&lat);
        // A minute ends with the window that reaches its end (or with the soak).
        let minute_ends = (w.end_secs + 0.5) as u64 / 60 > minutes.len() as u64;
        if minute_ends || k == soak.windows {
            minutes.push(minute_of(minutes.len() + 1, &mut minute_lat));
        }
        out.push(w);
        prev_at = now;
        prev_accepted = accepted;
        prev_errors = errors;
        prev_sends = sends;
    }
    if let Some(c) = pg {
        let _ = c.close().await;
    }
    (out, minutes)
}

/// Minute `n` from its latencies (emptied for the next).
fn minute_of(n: usize, lat: &mut Vec<u32>) -> Minute {
    lat.sort_unstable();
    let m = Minute {
        n,
        requests: lat.len(),
        p50_ms: percentile_ms(lat, 0.50),
        p99_ms: percentile_ms(lat, 0.99),
        max_ms: percentile_ms(lat, 1.0),
    };
    lat.clear();
    m
}
