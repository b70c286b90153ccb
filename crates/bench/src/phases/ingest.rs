//! (a) phase `ingest`: client formId ingestion. `--ingest-users` users log in through the
//! fake WeChat; then `--connections` keep-alive connections each post one formId per
//! request, the next as soon as the answer is in, for `--ingest-secs` after a warm-up. Only
//! accepted formIds count; latencies are every measured request's.

use std::time::{Duration, Instant};

use crate::api::{accepted_in, login_users, FormIdPosts, POST_TIMEOUT};
use crate::raw_http::RawConn;
use crate::report::{fmt_num, Report, Row};
use crate::service::Stack;
use crate::stats::{micros, percentile_ms};
use crate::{Args, Plan};

/// The app the clients post formIds to (the soak's ingestion uses it too).
pub const APP_INGEST: &str = "wxbenchingest";

/// What one connection (then all of them) saw in the measured time.
#[derive(Default)]
pub struct Tally {
    pub accepted: u64,
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Every measured request's latency, sorted once all connections are in.
    latencies_us: Vec<u32>,
    /// Seconds measured (after the warm-up).
    pub secs: f64,
}

impl Tally {
    pub fn rate(&self) -> f64 {
        self.accepted as f64 / self.secs
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        percentile_ms(&self.latencies_us, p)
    }
}

/// `conns` keep-alive connections posting one formId per request for the users of
/// `tokens`, closed loop, for `warmup` then `measure_for` (only the latter counted).
pub async fn measure(
    svc: &crate::service::Service,
    appid: &'static str,
    tokens: &[String],
    conns: usize,
    warmup: Duration,
    measure_for: Duration,
) -> anyhow::Result<Tally> {
    let nonce: u32 = rand::random();
    let measure_from = Instant::now() + warmup;
    let deadline = measure_from + measure_for;
    let handles: Vec<_> = (0..conns)
        .map(|c| {
            let posts = FormIdPosts::new(&svc.base, appid, tokens, c, conns, nonce);
            tokio::spawn(post_until(posts, measure_from, deadline))
        })
        .collect();
    let mut total = Tally::default();
    for h in handles {
        let t = h.await??;
        total.accepted += t.accepted;
        total.requests += t.requests;
        total.errors += t.errors;
        if total.first_error.is_none() {
            total.first_error = t.first_error;
        }
        total.latencies_us.extend(t.latencies_us);
    }
    total.secs = measure_from.elapsed().as_secs_f64();
    total.latencies_us.sort_unstable();
    Ok(total)
}

pub async fn run(
    args: &Args,
    plan: &Plan,
    stack: &Stack,
    report: &mut Report,
) -> anyhow::Result<()> {
    let svc = &stack.svc;
    let conns = args.connections.max(1);
    let users = args.ingest_users.max(conns);
    svc.put_app(APP_INGEST, 100_000).await?;
    println!("(a) logging in {users} users through the sandbox");
    let tokens = login_users(svc, &stack.wechat, APP_INGEST, users).await?;
    let warmup = plan.ingest_warmup;
    let measure_for = Duration::from_secs(plan.ingest_secs);
    println!(
        "(a) {conns} keep-alive connections, one formId per request, {:.1} s warm-up + {} s",
        warmup.as_secs_f64(),
        plan.ingest_secs
    );
    let total = measure(svc, APP_INGEST, &tokens, conns, warmup, measure_for).await?;
    let rate = total.rate();
    let pct = |p: f64| total.percentile_ms(p);
    report.push(
        Row::info(
            "a",
            format!("client formId ingestion ({conns} connections, 1 formId/request)"),
            format!("{} accepted/s", fmt_num(rate)),
        )
        .ratio_to_pgbench(rate, report.pgbench.insert, 1.0, args.quick),
    );
    report.push(Row::info(
        "a",
        "ingestion latency p50 / p99 / max",
        format!("{:.2} / {:.2} / {:.2} ms", pct(0.50), pct(0.99), pct(1.0)),
    ));
    if total.errors > 0 || total.accepted != total.requests {
        report.note(format!(
            "(a) {} requests counted, {} accepted, {} errors (first: {})",
            total.requests,
            total.accepted,
            total.errors,
            total.first_error.unwrap_or_default()
        ));
    }
    Ok(())
}

/// One connection, closed loop: the next formId as soon as the previous answer is in, until
/// `deadline`; requests sent before `measure_from` (the warm-up) are not counted.
async fn post_until(
    posts: FormIdPosts,
    measure_from: Instant,
    deadline: Instant,
) -> anyhow::Result<Tally> {
    let mut tally = Tally {
        latencies_us: Vec::with_capacity(65_536),
        ..Tally::default()
    };
    let mut conn = RawConn::connect(&posts.addr).await?;
    let mut counter: u64 = 0;
    // Bounded by the deadline; the iteration cap is a safety net.
    while Instant::now() < deadline && counter < 100_000_000 {
        counter += 1;
        let request = posts.request(counter);
        let t0 = Instant::now();
        let result = conn
            .roundtrip_within(request.as_bytes(), POST_TIMEOUT)
            .await;
        let counted = t0 >= measure_from;
        match result {
            Ok((200, body)) => {
                if counted {
                    tally.accepted += accepted_in(&body);
                    tally.requests += 1;
                    tally.latencies_us.push(micros(t0.elapsed()));
                }
            }
            Ok((status, body)) => {
                tally.errors += 1;
                tally
                    .first_error
                    .get_or_insert_with(|| format!("{status}: {}", String::from_utf8_lossy(&body)));
            }
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert_with(|| e.to_string());
                conn = RawConn::connect(&posts.addr).await?;
            }
        }
    }
    Ok(tally)
}
