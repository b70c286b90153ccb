//! The soak's sample windows: at the end of each, the service's RSS, open descriptors and
//! Postgres connections, and the window's ingestion rate and latency, send rate and errors
//! (printed as a line each, and kept for the summary).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use sqlx::{Connection, PgConnection};

use super::load::Counters;
use super::{SoakPlan, SOAK_DB};
use crate::db::db_url;
use crate::procfs::{count_fds, proc_status_mib};
use crate::report::fmt_num;
use crate::service::Stack;
use crate::stats::percentile_ms;

/// One sample window of the soak.
#[derive(Debug, Clone)]
pub struct Window {
    /// Seconds since the soak started, at the end of the window.
    pub end_secs: f64,
    /// Service VmRSS at the end of the window.
    pub rss_mib: f64,
    /// Entries of /proc/PID/fd at the end of the window.
    pub fds: f64,
    /// Connections to the soak database in pg_stat_activity at the end of the window.
    pub pg_conns: f64,
    pub accepted_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub sends_per_sec: f64,
    pub errors: u64,
    pub campaigns_done: usize,
}

pub const HEADER: [&str; 10] = [
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
];

/// A window as the cells of its line (the console's and the markdown's).
pub fn cells(w: &Window) -> [String; 10] {
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
    ]
}

fn print_line(cells: &[String]) {
    let widths = [6, 8, 5, 8, 10, 7, 7, 8, 6, 14];
    let parts: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(c, w)| format!("{c:>w$}"))
        .collect();
    println!("  {}", parts.join(" "));
}

/// Every `soak.window` from `start` for `soak.windows` windows: the service's RSS, fds,
/// Postgres connections, and the ingestion and send rates of the window.
pub async fn run(
    pg_url_base: &str,
    stack: &Stack,
    ingest: &Counters,
    campaigns_done: &AtomicUsize,
    start: Instant,
    soak: &SoakPlan,
) -> Vec<Window> {
    let pid = stack.svc.pid();
    let sandbox = &stack.wechat.sandbox;
    // Connected to the `postgres` database, so this connection is not counted.
    let mut pg: Option<PgConnection> = None;
    let mut out = Vec::new();
    let mut prev_at = start;
    let mut prev_accepted = 0u64;
    let mut prev_errors = 0u64;
    let mut prev_sends = sandbox.message_count() as u64;
    print_line(&HEADER.map(String::from));
    for k in 1..=soak.windows {
        tokio::time::sleep_until((start + soak.window.mul_f64(k as f64)).into()).await;
        let now = Instant::now();
        let mut lat = ingest.take_window();
        let accepted = ingest.accepted.load(Ordering::Relaxed);
        let errors = ingest.errors.load(Ordering::Relaxed);
        let sends = sandbox.message_count() as u64;
        let rss_mib = proc_status_mib(pid, "VmRSS:");
        let fds = count_fds(pid);
        if pg.is_none() {
            pg = PgConnection::connect(&db_url(pg_url_base, "postgres"))
                .await
                .ok();
        }
        let mut pg_conns = f64::NAN;
        if let Some(c) = pg.as_mut() {
            match sqlx::query_scalar::<_, i64>(
                "select count(*) from pg_stat_activity where datname = $1",
            )
            .bind(SOAK_DB)
            .fetch_one(&mut *c)
            .await
            {
                Ok(n) => pg_conns = n as f64,
                // Reconnect at the next window.
                Err(_) => pg = None,
            }
        }
        lat.sort_unstable();
        let secs = (now - prev_at).as_secs_f64().max(1e-3);
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
        };
        print_line(&cells(&w));
        out.push(w);
        prev_at = now;
        prev_accepted = accepted;
        prev_errors = errors;
        prev_sends = sends;
    }
    if let Some(c) = pg {
        let _ = c.close().await;
    }
    out
}
