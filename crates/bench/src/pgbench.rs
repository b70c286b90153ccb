//! Running Postgres' own `pgbench` (the baseline every ratio divides by): finding the
//! binary, running one custom script for a fixed time and reading its tps.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

/// PATH first (scripts/bench puts the server's pgbench there), else the newest Debian
/// server package's.
pub fn find_pgbench() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("pgbench");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let p = e.path().join("bin/pgbench");
            p.is_file().then_some((v, p))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

pub struct PgbenchResult {
    pub tps: f64,
    /// pgbench's "latency average", when it printed one.
    pub latency_ms: Option<f64>,
}

/// `pgbench -n -M prepared -c CLIENTS -j 2 -T SECS -f SCRIPT` with `vars` as `-D` variables.
pub async fn run_pgbench(
    pgbench: &Path,
    script: &Path,
    url: &str,
    clients: u32,
    secs: u64,
    vars: &[(&str, String)],
) -> anyhow::Result<PgbenchResult> {
    let mut cmd = tokio::process::Command::new(pgbench);
    cmd.arg("-n")
        .arg("-M")
        .arg("prepared")
        .arg("-c")
        .arg(clients.to_string())
        .arg("-j")
        .arg("2")
        .arg("-T")
        .arg(secs.to_string())
        .arg("-f")
        .arg(script);
    for (k, v) in vars {
        cmd.arg("-D").arg(format!("{k}={v}"));
    }
    cmd.arg(url).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(secs + 120), cmd.output())
        .await
        .context("pgbench did not finish")?
        .context("running pgbench")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "pgbench failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let tps = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| anyhow!("no tps in pgbench output:\n{stdout}"))?;
    let latency_ms = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("latency average = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok());
    Ok(PgbenchResult { tps, latency_ms })
}
