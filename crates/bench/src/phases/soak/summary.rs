//! The soak's verdict and report: the first span after the warm-up against the last span
//! (flat or GROWING per quantity), every minute's ingestion p99 against 100 ms, campaigns
//! that stalled, the ingestion and campaign totals as rows, and the markdown section with
//! every minute, window and campaign.

use std::sync::atomic::Ordering;

use super::campaigns::Campaign;
use super::load::Counters;
use super::sampler::{self, Minute, Window, HEADER};
use super::SoakPlan;
use crate::report::{fmt_num, Report, Row};
use crate::stats::{max_finite, mean, slope_per_min};

/// "flat": the last span's value is at most this much above the first span's...
const TOLERANCE: f64 = 0.20;
/// ...and, for resident memory, at most this many MiB above it.
const RSS_TOLERANCE_MIB: f64 = 20.0;
/// The longest span compared (shorter when the soak is short: a third of it).
const MAX_SPAN_SECS: f64 = 60.0;
/// Every minute's ingestion p99 must stay under this.
const MINUTE_P99_MS: f64 = 100.0;
/// A campaign stalled when it took this many times the median campaign (or did not end
/// with every user reached).
const STALL_FACTOR: f64 = 2.0;

/// How a span's windows are summed up for the first-vs-last comparison.
#[derive(Clone, Copy)]
enum SpanValue {
    Mean,
    /// The fewest: for a quantity that bursts with the work in flight (open descriptors
    /// rise with every campaign's WeChat connections and fall back after it), a leak shows
    /// as a rising floor, while the mean moves with where the bursts fall in the span.
    Floor,
}

fn span_value(windows: &[&Window], get: fn(&Window) -> f64, how: SpanValue) -> f64 {
    match how {
        SpanValue::Mean => mean(windows.iter().map(|w| get(w))),
        SpanValue::Floor => windows
            .iter()
            .map(|w| get(w))
            .filter(|v| v.is_finite())
            .fold(f64::NAN, f64::min),
    }
}

/// One line of the soak summary: first span vs last span (see `SpanValue`) and the verdict.
struct Trend {
    what: &'static str,
    unit: &'static str,
    first: f64,
    last: f64,
    slope: f64,
    flat: bool,
    rule: String,
}

impl Trend {
    fn change(&self) -> f64 {
        self.last - self.first
    }

    fn change_pct(&self) -> f64 {
        if self.first.abs() > 0.0 {
            self.change() / self.first * 100.0
        } else {
            f64::NAN
        }
    }

    fn verdict(&self) -> &'static str {
        if self.flat {
            "flat"
        } else {
            "GROWING"
        }
    }
}

fn fmt_trend_value(v: f64, unit: &str) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if unit == "MiB" || unit == "ms" {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

/// The soak's windows the summary compares: the first span after the warm-up, the last
/// span, and every window after the warm-up (for the trend).
struct Spans<'a> {
    first: Vec<&'a Window>,
    last: Vec<&'a Window>,
    after_warmup: Vec<&'a Window>,
    window_secs: f64,
}

impl<'a> Spans<'a> {
    fn of(samples: &'a [Window], soak: &SoakPlan) -> Self {
        let total = soak.total.as_secs_f64();
        let warm = soak.warmup_secs as f64;
        let wsecs = soak.window.as_secs_f64();
        let span = MAX_SPAN_SECS.min((total - warm) / 3.0).max(wsecs);
        // A window belongs to the span it starts in (the half second absorbs timer jitter).
        let starts = |w: &Window| w.end_secs - wsecs;
        let after_warmup: Vec<&Window> =
            samples.iter().filter(|w| starts(w) + 0.5 >= warm).collect();
        let first: Vec<&Window> = after_warmup
            .iter()
            .copied()
            .filter(|w| starts(w) + 0.5 < warm + span)
            .collect();
        let last_from = total - span;
        let last: Vec<&Window> = samples
            .iter()
            .filter(|w| starts(w) + 0.5 >= last_from)
            .collect();
        Spans {
            first,
            last,
            after_warmup,
            window_secs: wsecs,
        }
    }

    fn trend(
        &self,
        what: &'static str,
        unit: &'static str,
        get: fn(&Window) -> f64,
        how: SpanValue,
        abs_tolerance: Option<f64>,
    ) -> Trend {
        let f = span_value(&self.first, get, how);
        let l = span_value(&self.last, get, how);
        let points: Vec<(f64, f64)> = self
            .after_warmup
            .iter()
            .map(|w| (w.end_secs, get(w)))
            .collect();
        let (limit, rule) = match abs_tolerance {
            Some(abs) => (f + abs, format!("last ≤ first + {abs:.0} {unit}")),
            None => (
                f * (1.0 + TOLERANCE),
                format!("last ≤ first + {:.0} %", TOLERANCE * 100.0),
            ),
        };
        Trend {
            what,
            unit,
            first: f,
            last: l,
            slope: slope_per_min(&points),
            flat: f.is_finite() && l.is_finite() && l <= limit,
            rule,
        }
    }

    /// The quantities that must stay flat.
    fn trends(&self) -> [Trend; 4] {
        [
            self.trend(
                "service VmRSS",
                "MiB",
                |w| w.rss_mib,
                SpanValue::Mean,
                Some(RSS_TOLERANCE_MIB),
            ),
            self.trend(
                "service open fds (fewest in the span)",
                "fds",
                |w| w.fds,
                SpanValue::Floor,
                None,
            ),
            self.trend(
                "Postgres connections",
                "conns",
                |w| w.pg_conns,
                SpanValue::Mean,
                None,
            ),
            self.trend(
                "ingestion p99 latency",
                "ms",
                |w| w.p99_ms,
                SpanValue::Mean,
                None,
            ),
        ]
    }

    /// "from–to s" of a span's windows.
    fn label(&self, ws: &[&Window]) -> String {
        match (ws.first(), ws.last()) {
            (Some(a), Some(b)) => {
                format!("{:.0}–{:.0} s", a.end_secs - self.window_secs, b.end_secs)
            }
            _ => "none".to_string(),
        }
    }
}

/// The soak's summary: printed, as rows and notes, and as a markdown section for --out.
pub fn record(
    report: &mut Report,
    soak: &SoakPlan,
    samples: &[Window],
    minutes: &[Minute],
    campaigns: &[Campaign],
    ingest: &Counters,
    hwm_mib: &[f64],
) {
    let spans = Spans::of(samples, soak);
    let first_label = spans.label(&spans.first);
    let last_label = spans.label(&spans.last);
    println!();
    println!(
        "(soak) summary: first span {first_label} (after a {:.0} s warm-up) vs last span {last_label}",
        soak.warmup_secs as f64
    );
    let mut trends_md = format!(
        "| | first span ({first_label}) | last span ({last_label}) | change | trend after warm-up | rule | verdict |\n|---|---|---|---|---|---|---|\n"
    );
    for t in &spans.trends() {
        let (first, last) = (
            fmt_trend_value(t.first, t.unit),
            fmt_trend_value(t.last, t.unit),
        );
        let (change, pct, verdict) = (t.change(), t.change_pct(), t.verdict());
        println!(
            "  {} ({}): {first} → {last} ({change:+.2}, {pct:+.1} %), trend {:+.2} {}/min; {} → {verdict}",
            t.what, t.unit, t.slope, t.unit, t.rule
        );
        trends_md.push_str(&format!(
            "| {} ({}) | {first} | {last} | {change:+.2} ({pct:+.1} %) | {:+.2} {}/min | {} | {verdict} |\n",
            t.what, t.unit, t.slope, t.unit, t.rule
        ));
        report.push(Row::info(
            "soak",
            format!("{} ({}), first vs last span", t.what, t.unit),
            format!("{first} → {last} ({pct:+.1} %): {verdict}"),
        ));
    }

    let total_secs = samples
        .last()
        .map_or(soak.total.as_secs_f64(), |w| w.end_secs);
    let accepted = ingest.accepted.load(Ordering::Relaxed);
    let requests = ingest.requests.load(Ordering::Relaxed);
    let errors = ingest.errors.load(Ordering::Relaxed);
    let skipped = ingest.skipped.load(Ordering::Relaxed);
    report.push(Row::info(
        "soak",
        format!(
            "paced ingestion, target {} formIds/s over {} connections, {:.0} s",
            fmt_num(soak.rate),
            soak.conns,
            total_secs
        ),
        format!(
            "{} accepted/s ({} requests, {} errors, {} dropped behind schedule); p50 {:.2} ms (mean of windows), worst window p99 {:.2} ms",
            fmt_num(accepted as f64 / total_secs),
            fmt_num(requests as f64),
            errors,
            skipped,
            mean(samples.iter().map(|w| w.p50_ms)),
            max_finite(samples.iter().map(|w| w.p99_ms)),
        ),
    ));

    let worst = minutes
        .iter()
        .filter(|m| m.p99_ms.is_finite())
        .max_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms));
    let over: Vec<&Minute> = minutes
        .iter()
        .filter(|m| m.p99_ms.is_nan() || m.p99_ms >= MINUTE_P99_MS)
        .collect();
    report.push(
        Row::info(
            "soak",
            "ingestion p99 of every minute (all its requests)",
            format!(
                "worst {} ms (minute {}); {} of {} minutes at or over {MINUTE_P99_MS:.0} ms{}",
                worst.map_or("n/a".into(), |m| format!("{:.1}", m.p99_ms)),
                worst.map_or(0, |m| m.n),
                over.len(),
                minutes.len(),
                if over.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (minutes {})",
                        over.iter()
                            .map(|m| m.n.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ),
        )
        .judged(
            format!("< {MINUTE_P99_MS:.0} ms in every minute"),
            over.is_empty() && !minutes.is_empty(),
            soak.quick,
        ),
    );

    let users = soak.users;
    let mut durations: Vec<f64> = campaigns
        .iter()
        .filter(|c| c.ok(users))
        .map(|c| c.secs)
        .collect();
    durations.sort_by(f64::total_cmp);
    let median = durations
        .get(durations.len() / 2)
        .copied()
        .unwrap_or(f64::NAN);
    let stalled: Vec<&Campaign> = campaigns
        .iter()
        .filter(|c| !c.ok(users) || c.secs > median * STALL_FACTOR)
        .collect();
    report.push(
        Row::info(
            "soak",
            "campaign stalls (not complete, or over 2× the median campaign)",
            format!(
                "{} of {} (median {median:.1} s, longest {:.1} s)",
                stalled.len(),
                campaigns.len(),
                durations.last().copied().unwrap_or(f64::NAN)
            ),
        )
        .judged(
            "none",
            stalled.is_empty() && !campaigns.is_empty(),
            soak.quick,
        ),
    );

    let completed: Vec<&Campaign> = campaigns
        .iter()
        .filter(|c| c.status == "completed")
        .collect();
    report.push(Row::info(
        "soak",
        format!(
            "campaigns every {} s to {users} users, send_rate_per_sec {}, WeChat {} ms",
            soak.every.as_secs(),
            soak.send_rate,
            soak.latency_ms
        ),
        format!(
            "{} of {} completed with sent = targeted ({} sent); {:.1} s average, {:.1} s max from POST to completed; import {:.2} s average; started up to {:.1} s late",
            campaigns.iter().filter(|c| c.ok(users)).count(),
            campaigns.len(),
            fmt_num(campaigns.iter().map(|c| c.sent).sum::<u64>() as f64),
            mean(completed.iter().map(|c| c.secs)),
            max_finite(completed.iter().map(|c| c.secs)),
            mean(campaigns.iter().map(|c| c.import_secs)),
            campaigns.iter().map(|c| c.late_secs).fold(0.0, f64::max)
        ),
    ));
    report.push(Row::info(
        "soak",
        "service VmHWM at the end, per instance",
        hwm_mib
            .iter()
            .map(|m| format!("{m:.1} MiB"))
            .collect::<Vec<_>>()
            .join(", "),
    ));

    for c in campaigns.iter().filter(|c| !c.ok(users)) {
        report.note(format!(
            "(soak) campaign #{} (due at {:.0} s, slice {}) did not complete with sent = targeted: {}",
            c.n,
            c.due_secs,
            c.slice,
            c.outcome()
        ));
    }
    if errors > 0 || accepted != requests {
        report.note(format!(
            "(soak) ingestion: {requests} requests, {accepted} accepted, {errors} errors (first: {})",
            ingest.first_error()
        ));
    }
    if skipped > 0 {
        report.note(format!(
            "(soak) ingestion fell more than 1 s behind its schedule: {skipped} due requests dropped"
        ));
    }
    report.sections.push(markdown(
        soak, total_secs, &trends_md, samples, minutes, campaigns,
    ));
}

/// The soak's section for --out: the summary, every window, every campaign.
fn markdown(
    soak: &SoakPlan,
    total_secs: f64,
    trends_md: &str,
    samples: &[Window],
    minutes: &[Minute],
    campaigns: &[Campaign],
) -> String {
    let mut md = String::new();
    md.push_str(&format!(
        "### Soak\n\n{:.0} s on {} instance(s); {} formIds/s paced over {} connections from {} users (each holding {} formIds at the start); every {} s a template campaign to {} users (send_rate_per_sec {}); fake WeChat {} ms. Windows of {} s; latency from each request's due time.\n\n",
        total_secs,
        soak.instances,
        fmt_num(soak.rate),
        soak.conns,
        fmt_num(soak.population as f64),
        soak.formids_per_user,
        soak.every.as_secs(),
        soak.users,
        soak.send_rate,
        soak.latency_ms,
        soak.window.as_secs()
    ));
    md.push_str(trends_md);
    md.push_str(&minutes_md(samples, minutes));
    md.push_str(&format!(
        "\n| {} |\n|{}\n",
        HEADER.join(" | "),
        "---|".repeat(HEADER.len())
    ));
    for w in samples {
        md.push_str(&format!("| {} |\n", sampler::cells(w).join(" | ")));
    }
    md.push_str("\n| campaign | due (s) | late (s) | slice | import (s) | POST → end (s) | status | targeted | sent | failed | no_formid |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for c in campaigns {
        md.push_str(&format!(
            "| #{} | {:.0} | {:.1} | {} | {:.2} | {:.1} | {} | {} | {} | {} | {} |\n",
            c.n,
            c.due_secs,
            c.late_secs,
            c.slice,
            c.import_secs,
            c.secs,
            if c.status.is_empty() {
                "error"
            } else {
                &c.status
            },
            c.targeted,
            c.sent,
            c.failed,
            c.no_formid
        ));
    }
    md
}

/// Per minute: the windows' averages (descriptors: the fewest), the minute's exact
/// ingestion latency, and what Postgres did in the background.
fn minutes_md(samples: &[Window], minutes: &[Minute]) -> String {
    let mut md = String::from(
        "\n| minute | RSS MiB | fds (fewest) | PG conns | accepted/s | sends/s | requests | p50 ms | p99 ms | max ms | autovacuum | checkpoints | WAL MiB | CPU % | harness lag ms (worst) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for m in minutes {
        let lo = (m.n - 1) as f64 * 60.0;
        let ws: Vec<&Window> = samples
            .iter()
            .filter(|w| w.end_secs > lo + 0.5 && w.end_secs <= lo + 60.5)
            .collect();
        let mut vacuumed: Vec<&str> = ws
            .iter()
            .flat_map(|w| w.vacuum.split(',').filter(|t| !t.is_empty()))
            .collect();
        vacuumed.sort_unstable();
        vacuumed.dedup();
        md.push_str(&format!(
            "| {} | {:.1} | {:.0} | {:.0} | {} | {} | {} | {:.2} | {:.1} | {:.1} | {} | {} | {:.0} | {:.0} | {:.0} |\n",
            m.n,
            mean(ws.iter().map(|w| w.rss_mib)),
            ws.iter().map(|w| w.fds).fold(f64::NAN, f64::min),
            mean(ws.iter().map(|w| w.pg_conns)),
            fmt_num(mean(ws.iter().map(|w| w.accepted_per_sec))),
            fmt_num(mean(ws.iter().map(|w| w.sends_per_sec))),
            m.requests,
            m.p50_ms,
            m.p99_ms,
            m.max_ms,
            if vacuumed.is_empty() {
                "-".to_string()
            } else {
                vacuumed.join(", ")
            },
            ws.iter().map(|w| w.checkpoints).sum::<i64>(),
            ws.iter().map(|w| w.wal_mib).filter(|v| v.is_finite()).sum::<f64>(),
            mean(ws.iter().map(|w| w.cpu_pct)),
            max_finite(ws.iter().map(|w| w.harness_lag_ms)),
        ));
    }
    md
}
