//! The service's readings from `/proc`: its resident memory (`VmRSS` sampled every 100 ms
//! and `VmHWM`, the mem row's maximum over the run) and its open descriptors (the soak).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Watches the service's resident memory: `VmRSS` sampled every 100 ms, `VmHWM` at stop.
#[derive(Clone, Default)]
pub struct MemWatch {
    /// The process watched; 0 between services.
    pub pid: Arc<AtomicU32>,
    max_rss_kb: Arc<AtomicU64>,
    max_hwm_kb: Arc<AtomicU64>,
}

fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

impl MemWatch {
    pub fn start(&self, stop: tokio_util::sync::CancellationToken) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !stop.is_cancelled() {
                tick.tick().await;
                me.sample();
            }
        });
    }

    pub fn sample(&self) {
        let pid = self.pid.load(Ordering::SeqCst);
        if pid == 0 {
            return;
        }
        if let Some(kb) = proc_status_kb(pid, "VmRSS:") {
            self.max_rss_kb.fetch_max(kb, Ordering::SeqCst);
        }
        if let Some(kb) = proc_status_kb(pid, "VmHWM:") {
            self.max_hwm_kb.fetch_max(kb, Ordering::SeqCst);
        }
    }

    pub fn max_mib(&self) -> f64 {
        let kb = self
            .max_rss_kb
            .load(Ordering::SeqCst)
            .max(self.max_hwm_kb.load(Ordering::SeqCst));
        kb as f64 / 1024.0
    }
}

/// `proc_status_kb` in MiB; NaN when the process is gone.
pub fn proc_status_mib(pid: u32, key: &str) -> f64 {
    proc_status_kb(pid, key).map_or(f64::NAN, |kb| kb as f64 / 1024.0)
}

/// Entries of /proc/PID/fd: the descriptors the process holds open.
pub fn count_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// The machine's CPU time so far from /proc/stat, as (busy, total) in clock ticks: the
/// busy share of a span is the difference of two readings.
pub fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: idle and iowait are not busy.
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}
