//! The soak's campaigns: one due every `--soak-campaign-every-secs`, each first importing a
//! fresh sandbox-issued formId for every user of the next slice, then a template campaign
//! to exactly those users, polled until it ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use super::{SoakPlan, APP_SOAK, SLICES};
use crate::api::{import_formids, run_campaign, template_campaign};
use crate::service::{Service, Stack};

/// One soak campaign and how it went.
#[derive(Debug, Clone, Default)]
pub struct Campaign {
    pub n: usize,
    pub slice: usize,
    /// Seconds since the soak started when it was due, and how late it started.
    pub due_secs: f64,
    pub late_secs: f64,
    /// Import of the fresh formIds.
    pub import_secs: f64,
    /// From the POST to a final status.
    pub secs: f64,
    pub status: String,
    pub targeted: u64,
    pub sent: u64,
    pub failed: u64,
    pub no_formid: u64,
    pub error: Option<String>,
}

impl Campaign {
    /// Completed, sent to every user of its slice.
    pub fn ok(&self, users: usize) -> bool {
        self.error.is_none()
            && self.status == "completed"
            && self.targeted == users as u64
            && self.sent == self.targeted
    }

    /// "status targeted N sent N failed N no_formid N (error)", for a campaign not ok.
    pub fn outcome(&self) -> String {
        format!(
            "{} targeted {} sent {} failed {} no_formid {}{}",
            self.status,
            self.targeted,
            self.sent,
            self.failed,
            self.no_formid,
            self.error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )
    }
}

/// Starts a campaign every `soak.every` from `start` until the soak ends (one at a time: a
/// campaign that is still running delays the next one), each to the next slice of users.
pub async fn run(
    stack: &Stack,
    soak: &SoakPlan,
    start: Instant,
    done: &AtomicUsize,
) -> Vec<Campaign> {
    let end = start + soak.total;
    let mut out = Vec::new();
    // Bounded by `end`; the cap is a safety net.
    for n in 0..100_000usize {
        let due = start + soak.every.mul_f64(n as f64);
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let mut c = Campaign {
            n,
            slice: n % SLICES,
            due_secs: (due - start).as_secs_f64(),
            late_secs: due.elapsed().as_secs_f64(),
            ..Campaign::default()
        };
        if let Err(e) = one(
            stack,
            &mut c,
            soak.users,
            soak.import_chunk,
            soak.campaign_timeout,
        )
        .await
        {
            c.error = Some(format!("{e:#}"));
        }
        if !c.ok(soak.users) {
            println!("  soak campaign #{n}: {}", c.outcome());
        }
        done.fetch_add(1, Ordering::SeqCst);
        out.push(c);
    }
    out
}

/// Imports a fresh sandbox-issued formId for every user of the slice (`import_chunk` per
/// request, one after the other), creates a template
/// campaign to exactly them and polls it until it ends.
async fn one(
    stack: &Stack,
    c: &mut Campaign,
    users: usize,
    import_chunk: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let svc: &Service = &stack.svc;
    let openids: Vec<String> = (0..users).map(|i| format!("soak{}-{i}", c.slice)).collect();
    let items: Vec<(String, String)> = openids
        .iter()
        .map(|o| (o.clone(), stack.wechat.sandbox.form_id(APP_SOAK, o)))
        .collect();
    let import_started = Instant::now();
    let mut accepted = 0;
    for chunk in items.chunks(import_chunk.max(1)) {
        accepted += import_formids(svc, APP_SOAK, chunk).await?;
    }
    c.import_secs = import_started.elapsed().as_secs_f64();
    if accepted != users as u64 {
        bail!("import accepted {accepted} of {users} fresh formIds");
    }
    let campaign = template_campaign(
        APP_SOAK,
        &format!("soak #{} (slice {})", c.n, c.slice),
        json!({"type": "openids", "openids": openids}),
    );
    let end = run_campaign(svc, &campaign, Duration::from_millis(500), timeout, None).await?;
    c.secs = end.secs;
    c.status = end.status;
    let t = &end.last["totals"];
    c.targeted = t["targeted"].as_u64().unwrap_or(0);
    c.sent = t["sent"].as_u64().unwrap_or(0);
    c.failed = t["failed"].as_u64().unwrap_or(0);
    c.no_formid = t["no_formid"].as_u64().unwrap_or(0);
    if !end.done {
        c.error = Some(format!(
            "still {} after {:.0} s (totals {t})",
            c.status,
            timeout.as_secs_f64()
        ));
    } else if c.status != "completed" {
        c.error = Some(format!(
            "ended {}: last_error {}",
            c.status, end.last["last_error"]
        ));
    }
    Ok(())
}
