//! The machine a run was measured on (cores, CPU, RAM, Postgres and its commit setting,
//! git revision), printed first and heading the markdown: runs compare only on one machine.

use sqlx::{Connection, PgConnection};

pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub memory: String,
    pub postgres: String,
    pub date: String,
    pub git: String,
}

impl Machine {
    pub async fn describe(pg_url_base: &str) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown CPU".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
            .unwrap_or_else(|| "unknown".into());
        let postgres = match PgConnection::connect(&format!("{pg_url_base}/postgres")).await {
            Ok(mut c) => {
                let v: Result<String, _> = sqlx::query_scalar("show server_version")
                    .fetch_one(&mut c)
                    .await;
                let sync: Result<String, _> = sqlx::query_scalar("show synchronous_commit")
                    .fetch_one(&mut c)
                    .await;
                let _ = c.close().await;
                format!(
                    "PostgreSQL {} (synchronous_commit={})",
                    v.unwrap_or_else(|_| "?".into()),
                    sync.unwrap_or_else(|_| "?".into())
                )
            }
            Err(_) => "PostgreSQL ?".into(),
        };
        let git = std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "?".into());
        let dirty = std::process::Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=no"])
            .output()
            .ok()
            .is_some_and(|o| !o.stdout.is_empty());
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            memory,
            postgres,
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            git: if dirty {
                format!("{git} + local changes")
            } else {
                git
            },
        }
    }
}
