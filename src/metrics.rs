//! Prometheus metrics, one registry per process. Counters are bumped where things happen;
//! figures the database knows (pool sizes, pending deliveries, active runs) are read by the
//! `/metrics` handler at scrape time and set here. Every series of a registered app exists
//! from the first scrape, at zero, so rates and alerts have something to work on at start.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::store::credits::PoolSize;

/// The WeChat APIs whose latency is observed (the `api` label).
pub const WECHAT_APIS: [&str; 5] = [
    "token",
    "stable_token",
    "jscode2session",
    "template",
    "subscribe",
];
/// Why a posted formId was not stored (the `reason` label).
pub const REJECT_REASONS: [&str; 4] = ["malformed", "mock", "expired", "duplicate"];
/// Campaign kinds (the `kind` label).
pub const KINDS: [&str; 2] = ["template", "subscribe"];
/// What became of a webhook POST (the `outcome` label of `formpush_webhook_attempts_total`).
pub const WEBHOOK_OUTCOMES: [&str; 4] = ["delivered", "failed", "expired", "dropped"];
/// Final delivery outcomes (the `outcome` label).
pub const OUTCOMES: [&str; 5] = ["sent", "failed", "no_formid", "no_quota", "capped"];

pub struct Metrics {
    registry: Registry,
    pub formids_ingested: IntCounterVec,
    pub formids_rejected: IntCounterVec,
    /// Deliveries finished, by outcome.
    pub sends: IntCounterVec,
    /// Failed deliveries, by errcode (a series appears with its first errcode).
    pub send_errors: IntCounterVec,
    pub wechat_latency: HistogramVec,
    pub token_refreshes: IntCounterVec,
    pub webhook_attempts: IntCounterVec,
    pub scheduler_lag: Histogram,
    usable_formids: IntGaugeVec,
    formids_expiring: IntGaugeVec,
    subscription_grants: IntGaugeVec,
    pending_deliveries: IntGaugeVec,
    webhook_backlog: IntGaugeVec,
    active_runs: IntGauge,
    db_connections: IntGaugeVec,
    db_connections_max: IntGauge,
}

/// What the database and the connection pool say at scrape time.
pub struct Snapshot {
    /// One entry per registered app.
    pub pools: Vec<PoolSize>,
    /// Pending deliveries per app (apps without any are absent).
    pub pending_deliveries: Vec<(String, i64)>,
    /// Webhook events not delivered yet, per app (apps without any are absent).
    pub webhook_backlog: Vec<(String, i64)>,
    pub active_runs: i64,
    pub db: DbPool,
}

/// The connection pool's state.
pub struct DbPool {
    pub open: u32,
    pub idle: u32,
    pub max: u32,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    // Resident memory, open descriptors, CPU seconds, start time (Linux only).
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("unique metric");
    let wechat_latency = register(
        &registry,
        HistogramVec::new(
            HistogramOpts::new(
                "formpush_wechat_request_seconds",
                "Latency of WeChat API calls",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["api"],
        )
        .expect("valid metric"),
    );
    for api in WECHAT_APIS {
        wechat_latency.with_label_values(&[api]);
    }
    let scheduler_lag = register(
        &registry,
        Histogram::with_opts(
            HistogramOpts::new(
                "formpush_scheduler_lag_seconds",
                "Delay from a run's due time to its start",
            )
            .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 60.0]),
        )
        .expect("valid metric"),
    );
    let active_runs = register(
        &registry,
        IntGauge::new("formpush_active_runs", "Runs being sent").expect("valid metric"),
    );
    let db_connections = gauge(
        &registry,
        "formpush_db_connections",
        "Database connections of this instance's pool, by state (idle, in_use)",
        &["state"],
    );
    let webhook_attempts = counter(
        &registry,
        "formpush_webhook_attempts_total",
        "Webhook POSTs, by outcome (delivered, failed, expired, dropped)",
        &["outcome"],
    );
    for outcome in WEBHOOK_OUTCOMES {
        webhook_attempts.with_label_values(&[outcome]);
    }
    let db_connections_max = register(
        &registry,
        IntGauge::new(
            "formpush_db_connections_max",
            "Most connections this instance's pool opens (FORMPUSH_DB_MAX_CONNECTIONS)",
        )
        .expect("valid metric"),
    );
    Metrics {
        formids_ingested: counter(
            &registry,
            "formpush_formids_ingested_total",
            "formIds and prepay_ids stored",
            &["appid"],
        ),
        formids_rejected: counter(
            &registry,
            "formpush_formids_rejected_total",
            "formIds not stored, by reason (malformed, mock, expired, duplicate)",
            &["appid", "reason"],
        ),
        sends: counter(
            &registry,
            "formpush_sends_total",
            "Deliveries finished, by kind and outcome (sent, failed, no_formid, no_quota, capped)",
            &["appid", "kind", "outcome"],
        ),
        send_errors: counter(
            &registry,
            "formpush_send_errors_total",
            "Failed deliveries, by kind and errcode (WeChat's number or a word such as timeout)",
            &["appid", "kind", "errcode"],
        ),
        token_refreshes: counter(
            &registry,
            "formpush_token_refreshes_total",
            "access_token calls to WeChat",
            &["appid"],
        ),
        webhook_attempts,
        usable_formids: gauge(
            &registry,
            "formpush_valid_formids",
            "Usable formIds in the pool",
            &["appid"],
        ),
        formids_expiring: gauge(
            &registry,
            "formpush_formids_expiring_24h",
            "Usable formIds that expire within 24 hours",
            &["appid"],
        ),
        subscription_grants: gauge(
            &registry,
            "formpush_subscription_grants",
            "Unspent subscription grants",
            &["appid"],
        ),
        pending_deliveries: gauge(
            &registry,
            "formpush_deliveries_pending",
            "Deliveries of running campaigns waiting to be sent",
            &["appid"],
        ),
        webhook_backlog: gauge(
            &registry,
            "formpush_webhook_backlog",
            "Webhook events not delivered yet (retrying or waiting)",
            &["appid"],
        ),
        wechat_latency,
        scheduler_lag,
        active_runs,
        db_connections,
        db_connections_max,
        registry,
    }
});

pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    /// Counts one finished delivery or triggered message (`outcome` as in `OUTCOMES`); a
    /// failure also by its errcode.
    pub fn count_send(&self, appid: &str, kind: &str, outcome: &str, errcode: Option<&str>) {
        self.sends.with_label_values(&[appid, kind, outcome]).inc();
        if outcome == "failed" {
            self.send_errors
                .with_label_values(&[appid, kind, errcode.unwrap_or("unknown")])
                .inc();
        }
    }

    /// Creates every series an app has, at zero, without touching existing values.
    fn zero_app(&self, appid: &str) {
        self.formids_ingested.with_label_values(&[appid]);
        self.token_refreshes.with_label_values(&[appid]);
        for reason in REJECT_REASONS {
            self.formids_rejected.with_label_values(&[appid, reason]);
        }
        for kind in KINDS {
            for outcome in OUTCOMES {
                self.sends.with_label_values(&[appid, kind, outcome]);
            }
        }
    }
}

/// The text exposition, with the scrape-time figures set first.
pub fn render(snapshot: &Snapshot) -> anyhow::Result<String> {
    let m = metrics();
    for p in &snapshot.pools {
        m.zero_app(&p.appid);
        m.usable_formids
            .with_label_values(&[&p.appid])
            .set(p.usable_formids);
        m.formids_expiring
            .with_label_values(&[&p.appid])
            .set(p.expiring_within_24h);
        m.subscription_grants
            .with_label_values(&[&p.appid])
            .set(p.grants);
        let of_app = |per_app: &[(String, i64)]| {
            per_app
                .iter()
                .find(|(appid, _)| appid == &p.appid)
                .map_or(0, |(_, n)| *n)
        };
        m.pending_deliveries
            .with_label_values(&[&p.appid])
            .set(of_app(&snapshot.pending_deliveries));
        m.webhook_backlog
            .with_label_values(&[&p.appid])
            .set(of_app(&snapshot.webhook_backlog));
    }
    m.active_runs.set(snapshot.active_runs);
    let db = &snapshot.db;
    let idle = i64::from(db.idle);
    m.db_connections.with_label_values(&["idle"]).set(idle);
    m.db_connections
        .with_label_values(&["in_use"])
        .set(i64::from(db.open) - idle);
    m.db_connections_max.set(i64::from(db.max));
    let mut out = Vec::new();
    TextEncoder::new().encode(&m.registry.gather(), &mut out)?;
    Ok(String::from_utf8(out)?)
}
