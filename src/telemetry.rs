//! Tracing set up once: text or JSON lines, `RUST_LOG` filtering (`DEFAULT_FILTER` when
//! unset).

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// formpush's own events at INFO; the crates under it only when something is wrong (their
/// INFO lines, such as the cron scheduler's start-up chatter, say nothing an operator needs).
pub const DEFAULT_FILTER: &str =
    "info,sqlx=warn,actix_server=warn,tokio_cron_scheduler=warn,actix_web=warn";

pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = fmt().with_env_filter(filter).with_target(false);
    // try_init: tests and embedded uses may have installed a subscriber already.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
