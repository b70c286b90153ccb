//! Prometheus metrics, one registry per process. Counters are bumped where things happen;
//! pool sizes and active runs are read from the database (by the `/metrics` handler) when
//! scraped.

use std::sync::LazyLock;

use crate::store::credits::PoolSize;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub formids_ingested: IntCounterVec,
    pub formids_rejected: IntCounterVec,
    pub sends: IntCounterVec,
    pub wechat_latency: HistogramVec,
    pub token_refreshes: IntCounterVec,
    pub webhook_attempts: IntCounterVec,
    pub scheduler_lag: Histogram,
    valid_formids: IntGaugeVec,
    subscription_grants: IntGaugeVec,
    active_runs: IntGauge,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    let wechat_latency = HistogramVec::new(
        HistogramOpts::new(
            "formpush_wechat_request_seconds",
            "Latency of WeChat API calls",
        )
        .buckets(vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]),
        &["api"],
    )
    .expect("valid metric");
    registry
        .register(Box::new(wechat_latency.clone()))
        .expect("unique metric");
    let scheduler_lag = Histogram::with_opts(
        HistogramOpts::new(
            "formpush_scheduler_lag_seconds",
            "Delay from a run's due time to its start",
        )
        .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 60.0]),
    )
    .expect("valid metric");
    registry
        .register(Box::new(scheduler_lag.clone()))
        .expect("unique metric");
    let active_runs = IntGauge::new("formpush_active_runs", "Runs being sent").expect("valid");
    registry
        .register(Box::new(active_runs.clone()))
        .expect("unique metric");
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
            "formIds refused, by reason (malformed, mock, expired, duplicate)",
            &["appid", "reason"],
        ),
        sends: counter(
            &registry,
            "formpush_sends_total",
            "Deliveries finished, by kind, outcome and errcode",
            &["appid", "kind", "outcome", "errcode"],
        ),
        token_refreshes: counter(
            &registry,
            "formpush_token_refreshes_total",
            "access_token calls to WeChat",
            &["appid"],
        ),
        webhook_attempts: counter(
            &registry,
            "formpush_webhook_attempts_total",
            "Webhook POSTs, by outcome (delivered, failed, expired, dropped)",
            &["outcome"],
        ),
        valid_formids: gauge(
            &registry,
            "formpush_valid_formids",
            "Usable formIds in the pool",
            &["appid"],
        ),
        subscription_grants: gauge(
            &registry,
            "formpush_subscription_grants",
            "Unspent subscription grants",
            &["appid"],
        ),
        wechat_latency,
        scheduler_lag,
        active_runs,
        registry,
    }
});

pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// The text exposition, with the gauges the database knows (read by the caller at scrape
/// time) set first.
pub fn render(pools: &[PoolSize], active_runs: i64) -> anyhow::Result<String> {
    let m = metrics();
    for p in pools {
        m.valid_formids
            .with_label_values(&[&p.appid])
            .set(p.usable_formids);
        m.subscription_grants
            .with_label_values(&[&p.appid])
            .set(p.grants);
    }
    m.active_runs.set(active_runs);
    let mut out = Vec::new();
    TextEncoder::new().encode(&m.registry.gather(), &mut out)?;
    Ok(String::from_utf8(out)?)
}
