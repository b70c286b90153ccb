//! The soak's paced ingestion: keep-alive connections posting one formId per request on a
//! fixed schedule (open loop), so a slow service meets the same arrivals as a fast one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::SoakPlan;
use crate::api::{accepted_in, FormIdPosts, SignedTokens, POST_TIMEOUT};
use crate::phases::ingest::APP_INGEST;
use crate::raw_http::RawConn;
use crate::service::Service;
use crate::stats::micros;

/// What the paced ingestion connections share with the sampler.
#[derive(Default)]
pub struct Counters {
    pub accepted: AtomicU64,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    /// Scheduled requests dropped because their connection had fallen more than 1 s behind.
    pub skipped: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Latencies (µs) of the responses received in the current window.
    window_us: Mutex<Vec<u32>>,
    /// The harness's own lateness in the current window (µs): how late a 10-ms timer of
    /// the harness's runtime fired at worst. Latency counts from due times, so a harness
    /// that falls behind (CPU taken by others) shows as ingestion latency; this tells them
    /// apart.
    pub harness_lag_us: AtomicU64,
}

impl Counters {
    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(e);
    }

    pub fn first_error(&self) -> String {
        self.first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default()
    }

    /// The latencies of the window that ends now (the next window starts empty).
    pub fn take_window(&self) -> Vec<u32> {
        std::mem::take(&mut *self.window_us.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A connection, or `None` with the failure counted.
    async fn connect(&self, addr: &str) -> Option<RawConn> {
        match RawConn::connect(addr).await {
            Ok(c) => Some(c),
            Err(e) => {
                self.error(format!("connect: {e:#}"));
                None
            }
        }
    }
}

/// Until `deadline`, a 10-ms timer whose worst lateness per window goes into
/// `harness_lag_us`.
pub fn spawn_lag_probe(deadline: Instant, counters: &Arc<Counters>) -> JoinHandle<()> {
    let counters = counters.clone();
    tokio::spawn(async move {
        let period = Duration::from_millis(10);
        let mut next = Instant::now() + period;
        while next < deadline {
            tokio::time::sleep_until(next.into()).await;
            let late = micros(Instant::now().saturating_duration_since(next));
            counters
                .harness_lag_us
                .fetch_max(late as u64, Ordering::Relaxed);
            next = Instant::now().max(next) + period;
        }
    })
}

/// Spawns the soak's connections from `start` to the end of the soak, `soak.rate` formIds
/// per second in all, connection c to instance c mod their number, each posting for its
/// share of the population's requests.
pub fn spawn(
    svcs: &[&Service],
    tokens: &Arc<SignedTokens>,
    soak: &SoakPlan,
    start: Instant,
    counters: &Arc<Counters>,
) -> Vec<JoinHandle<()>> {
    let conns = soak.conns;
    let nonce: u32 = rand::random();
    let interval = Duration::from_secs_f64(conns as f64 / soak.rate);
    let deadline = start + soak.total;
    (0..conns)
        .map(|c| {
            let paced = PacedConn {
                posts: FormIdPosts::signed(
                    &svcs[c % svcs.len()].base,
                    APP_INGEST,
                    tokens.clone(),
                    c,
                    conns,
                    nonce,
                ),
                // Spread the connections' due times evenly over one interval.
                first: start + interval.mul_f64(c as f64 / conns as f64),
                interval,
                deadline,
            };
            tokio::spawn(paced.run(counters.clone()))
        })
        .collect()
}

/// One keep-alive connection posting one formId per request on a fixed schedule (open
/// loop): request k is due at `first + k * interval`. A request's latency counts from its
/// due time when the connection was still busy then (so a stall counts fully, as it would
/// for the clients that arrive during it), else from when it was sent.
struct PacedConn {
    posts: FormIdPosts,
    first: Instant,
    interval: Duration,
    deadline: Instant,
}

impl PacedConn {
    async fn run(self, shared: Arc<Counters>) {
        let PacedConn {
            posts,
            first,
            interval,
            deadline,
        } = self;
        let mut conn = shared.connect(&posts.addr).await;
        let max_requests = (deadline.saturating_duration_since(first).as_secs_f64()
            / interval.as_secs_f64().max(1e-6)) as u64
            + 2;
        let mut next = first;
        let mut counter: u64 = 0;
        while next < deadline && counter < max_requests {
            counter += 1;
            let origin = if Instant::now() >= next {
                next
            } else {
                tokio::time::sleep_until(next.into()).await;
                Instant::now()
            };
            next += interval;
            let Some(c) = conn.as_mut() else {
                // Reconnect on the next due time, not in a tight loop.
                conn = shared.connect(&posts.addr).await;
                continue;
            };
            let request = posts.request(counter);
            let result = c.roundtrip_within(request.as_bytes(), POST_TIMEOUT).await;
            let done = Instant::now();
            shared.requests.fetch_add(1, Ordering::Relaxed);
            match result {
                Ok((200, body)) => {
                    shared
                        .accepted
                        .fetch_add(accepted_in(&body), Ordering::Relaxed);
                    shared
                        .window_us
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(micros(done - origin));
                }
                Ok((status, body)) => {
                    shared.error(format!("{status}: {}", String::from_utf8_lossy(&body)));
                }
                Err(e) => {
                    shared.error(format!("{e:#}"));
                    conn = None;
                }
            }
            // More than a second behind: drop the missed due times (counted) rather than
            // bursting them.
            if done > next + Duration::from_secs(1) {
                let behind = (done - next).as_secs_f64();
                let missed = (behind / interval.as_secs_f64()).floor() as u64;
                next += interval.mul_f64(missed as f64);
                counter += missed;
                shared.skipped.fetch_add(missed, Ordering::Relaxed);
            }
        }
    }
}
