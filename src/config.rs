//! Configuration from the environment (and `.env`); every variable and its default is
//! listed in `docs/configuration.md`.

use std::time::Duration;

use anyhow::{bail, Context};
use secrecy::SecretString;

/// An app registered (upserted) at start, for the single-app case.
#[derive(Clone, Debug)]
pub struct BootstrapApp {
    pub appid: String,
    pub secret: SecretString,
    pub push_token: Option<String>,
    pub encoding_aes_key: Option<SecretString>,
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub database_url: String,
    pub bind: String,
    pub admin_token: SecretString,
    /// True when no admin token was configured and one was generated for this process.
    pub admin_token_generated: bool,
    pub wechat_api_base: String,
    pub wechat_timeout: Duration,
    pub scheduler: SchedulerMode,
    pub bootstrap_app: Option<BootstrapApp>,
    /// Pushes whose timestamp is further than this from now are refused; `None` = no check.
    pub push_max_age: Option<Duration>,
    pub db_max_connections: u32,
    pub log_format: LogFormat,
    /// Sends in flight per app (and deliveries claimed per batch).
    pub send_concurrency: usize,
    /// Batches of a run in flight at once per app (each claims, sends and records on its
    /// own, so one's claim and record overlap another's sends).
    pub send_batches: usize,
    /// Deliveries a run is given per statement while it fills (its first chunk with the
    /// run, the rest while it sends).
    pub run_fill_chunk: i64,
    /// First retry delay after a transient WeChat failure; doubles per attempt.
    pub retry_backoff: Duration,
    /// An app's sender lease: another instance takes the app over this long after its
    /// sender stopped renewing (renewed every third of it).
    pub app_lease: Duration,
    /// How long a delivery may stay in flight before it counts as abandoned by a dead
    /// sender (longer than any send with its retries).
    pub send_lease: Duration,
    /// Logins (`POST /v1/apps/{appid}/sessions`) allowed per client address per minute.
    pub session_rate_per_min: u32,
    /// Where `/metrics` is served instead of `bind` (so it need not be public); `None`:
    /// on `bind` with the API.
    pub metrics_bind: Option<String>,
    /// Days a finished run's deliveries and a finished triggered message are kept before
    /// the daily clean-up deletes them (1 to `MAX_RETENTION_DAYS`).
    pub retention_days: u32,
}

/// Whether this instance runs campaigns, and who drives its clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedulerMode {
    /// The one-second tick and the daily clean-up run on their own (the default).
    On,
    /// This instance only serves HTTP; other instances send.
    Off,
    /// Built but never ticked by a clock: tests and tools call
    /// `Scheduler::run_until_idle` to step it.
    Manual,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/formpush";
/// `FORMPUSH_RETENTION_DAYS` when unset.
pub const DEFAULT_RETENTION_DAYS: u32 = 90;
/// The longest retention accepted: 100 years, past which a cutoff is meaningless.
pub const MAX_RETENTION_DAYS: u32 = 36_500;

impl Settings {
    /// Reads the process environment (after loading `.env` if present).
    pub fn from_env() -> anyhow::Result<Self> {
        // A missing .env is normal; a malformed one is worth failing on.
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => return Err(e).context("reading .env"),
        }
        Self::from_lookup(|key| std::env::var(key).ok().filter(|v| !v.is_empty()))
    }

    /// Builds settings from any key lookup; tests use this to avoid touching the process env.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let (admin_token, admin_token_generated) = match get("FORMPUSH_ADMIN_TOKEN") {
            Some(token) => (token, false),
            None => (crate::domain::session::random_token(32), true),
        };
        let scheduler = match get("FORMPUSH_SCHEDULER").as_deref() {
            None | Some("on") | Some("true") | Some("1") => SchedulerMode::On,
            Some("off") | Some("false") | Some("0") => SchedulerMode::Off,
            Some("manual") => SchedulerMode::Manual,
            Some(other) => bail!("FORMPUSH_SCHEDULER must be on, off or manual, not {other:?}"),
        };
        let push_max_age_secs: u64 = parse_or(&get, "FORMPUSH_PUSH_MAX_AGE_SECS", 300)?;
        let bootstrap_app = match (get("WECHAT_APPID"), get("WECHAT_SECRET")) {
            (Some(appid), Some(secret)) => Some(BootstrapApp {
                appid,
                secret: secret.into(),
                push_token: get("WECHAT_TOKEN"),
                encoding_aes_key: get("WECHAT_ENCODING_AES_KEY").map(Into::into),
            }),
            (None, None) => None,
            _ => bail!("WECHAT_APPID and WECHAT_SECRET must be set together"),
        };
        let log_format = match get("FORMPUSH_LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => bail!("FORMPUSH_LOG_FORMAT must be text or json, not {other:?}"),
        };
        let retention_days = retention_days(get("FORMPUSH_RETENTION_DAYS").as_deref())?;
        Ok(Self {
            database_url: get("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.into()),
            bind: get("FORMPUSH_BIND").unwrap_or_else(|| "127.0.0.1:8080".into()),
            admin_token: admin_token.into(),
            admin_token_generated,
            wechat_api_base: get("WECHAT_API_BASE")
                .unwrap_or_else(|| "https://api.weixin.qq.com".into())
                .trim_end_matches('/')
                .to_string(),
            wechat_timeout: Duration::from_millis(parse_or(&get, "WECHAT_TIMEOUT_MS", 5_000)?),
            scheduler,
            bootstrap_app,
            push_max_age: (push_max_age_secs > 0).then(|| Duration::from_secs(push_max_age_secs)),
            db_max_connections: parse_or(&get, "FORMPUSH_DB_MAX_CONNECTIONS", 20)?,
            log_format,
            send_concurrency: parse_or(&get, "FORMPUSH_SEND_CONCURRENCY", 256)?,
            send_batches: parse_or(&get, "FORMPUSH_SEND_BATCHES", 2usize)?.clamp(1, 8),
            run_fill_chunk: parse_or(&get, "FORMPUSH_RUN_FILL_CHUNK", 10_000i64)?.max(1),
            retry_backoff: Duration::from_millis(parse_or(
                &get,
                "FORMPUSH_RETRY_BACKOFF_MS",
                1_000,
            )?),
            app_lease: Duration::from_secs(parse_or(&get, "FORMPUSH_APP_LEASE_SECS", 15)?.max(1)),
            session_rate_per_min: parse_or(&get, "FORMPUSH_SESSION_RATE_PER_MIN", 60)?.max(1),
            metrics_bind: get("FORMPUSH_METRICS_BIND"),
            send_lease: Duration::from_secs(
                parse_or(&get, "FORMPUSH_SEND_LEASE_SECS", 120)?.max(1),
            ),
            retention_days,
        })
    }

    /// How long finished deliveries and messages are kept (`retention_days`).
    pub fn retention(&self) -> chrono::Duration {
        chrono::Duration::days(self.retention_days.into())
    }
}

/// `FORMPUSH_RETENTION_DAYS`: a whole number of days, 1 to `MAX_RETENTION_DAYS`.
fn retention_days(raw: Option<&str>) -> anyhow::Result<u32> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_RETENTION_DAYS);
    };
    match raw.trim().parse::<u32>() {
        Ok(days) if (1..=MAX_RETENTION_DAYS).contains(&days) => Ok(days),
        _ => bail!(
            "FORMPUSH_RETENTION_DAYS must be a whole number of days from 1 to \
             {MAX_RETENTION_DAYS} (default {DEFAULT_RETENTION_DAYS}), not {raw:?}"
        ),
    }
}

fn parse_or<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    key: &str,
    default: T,
) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match get(key) {
        None => Ok(default),
        Some(raw) => raw
            .parse()
            .map_err(|e| anyhow::anyhow!("{key}={raw:?} is not valid: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_contract() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(s.bind, "127.0.0.1:8080");
        assert_eq!(s.wechat_api_base, "https://api.weixin.qq.com");
        assert_eq!(s.scheduler, SchedulerMode::On);
        assert_eq!(s.push_max_age, Some(Duration::from_secs(300)));
        assert!(s.admin_token_generated);
        assert!(s.admin_token.expose_secret().len() >= 32);
        assert!(s.bootstrap_app.is_none());
        assert_eq!(s.retention_days, 90);
        assert_eq!(s.retention(), chrono::Duration::days(90));
    }

    #[test]
    fn retention_is_a_positive_whole_number_of_days() {
        let days = |raw: &str| settings(&[("FORMPUSH_RETENTION_DAYS", raw)]);
        assert_eq!(days("7").unwrap().retention_days, 7);
        assert_eq!(days("1").unwrap().retention(), chrono::Duration::days(1));
        assert_eq!(days("36500").unwrap().retention_days, 36_500);
        for bad in [
            "0",
            "",
            "-5",
            "1.5",
            "90d",
            "ninety",
            "36501",
            "99999999999",
        ] {
            let err = days(bad).expect_err(bad).to_string();
            assert!(
                err.contains("FORMPUSH_RETENTION_DAYS") && err.contains("from 1 to 36500"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn explicit_values_win_and_zero_max_age_disables_the_check() {
        let s = settings(&[
            ("FORMPUSH_ADMIN_TOKEN", "admin"),
            ("FORMPUSH_SCHEDULER", "off"),
            ("FORMPUSH_PUSH_MAX_AGE_SECS", "0"),
            ("WECHAT_APPID", "wx1"),
            ("WECHAT_SECRET", "s"),
        ])
        .unwrap();
        assert!(!s.admin_token_generated);
        assert_eq!(s.admin_token.expose_secret(), "admin");
        assert_eq!(s.scheduler, SchedulerMode::Off);
        assert_eq!(s.push_max_age, None);
        assert_eq!(s.bootstrap_app.unwrap().appid, "wx1");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(settings(&[("FORMPUSH_SCHEDULER", "maybe")]).is_err());
        assert!(settings(&[("FORMPUSH_PUSH_MAX_AGE_SECS", "-1")]).is_err());
        assert!(settings(&[("WECHAT_APPID", "wx1")]).is_err());
    }
}
