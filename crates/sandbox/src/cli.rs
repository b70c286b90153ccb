//! `formpush sandbox`: run the fake WeChat on a laptop until Ctrl-C.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;

use super::{Sandbox, SandboxConfig};

/// The example app registered when no `--app` is given.
const DEFAULT_APP: &str = "wx0000000000000001:sandbox-secret";

/// An `APPID:SECRET` pair given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCredential {
    /// The mini-program's appid.
    pub appid: String,
    /// Its AppSecret.
    pub secret: String,
}

impl FromStr for AppCredential {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some((appid, secret)) if !appid.is_empty() && !secret.is_empty() => Ok(AppCredential {
                appid: appid.to_string(),
                secret: secret.to_string(),
            }),
            _ => Err(format!("expected APPID:SECRET, got {s:?}")),
        }
    }
}

/// Run a fake WeChat API server (in memory) to try campaigns without a WeChat account.
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub bind: String,
    /// A mini-program to register, as APPID:SECRET (repeatable).
    #[arg(long = "app", value_name = "APPID:SECRET", default_value = DEFAULT_APP)]
    pub apps: Vec<AppCredential>,
    /// Artificial latency added to each send and jscode2session call, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Lifetime of the access tokens handed out, in seconds.
    #[arg(long, default_value_t = 7200)]
    pub token_ttl_secs: u64,
    /// Successful sends per app, per day and per message kind before errcode 45009.
    #[arg(long, default_value_t = 1_000_000)]
    pub daily_quota: u64,
}

impl SandboxArgs {
    /// The sandbox settings these arguments ask for.
    pub fn config(&self) -> SandboxConfig {
        SandboxConfig {
            latency: Duration::from_millis(self.latency_ms),
            token_ttl: Duration::from_secs(self.token_ttl_secs),
            daily_quota: self.daily_quota,
        }
    }
}

/// Serves the sandbox until Ctrl-C.
pub async fn run(args: SandboxArgs) -> anyhow::Result<()> {
    let sandbox = Sandbox::new(args.config());
    for app in &args.apps {
        sandbox.add_app(&app.appid, &app.secret);
    }
    let listener = std::net::TcpListener::bind(&args.bind)
        .with_context(|| format!("cannot listen on {}", args.bind))?;
    let server = sandbox
        .serve(listener)
        .context("cannot start the sandbox server")?;
    let base = server.base_url.clone();
    tracing::info!(base_url = %base, "WeChat sandbox listening: set WECHAT_API_BASE={base}");
    for app in &args.apps {
        tracing::info!(appid = %app.appid, secret = %app.secret, "sandbox app");
    }
    if let Some(app) = args.apps.first() {
        let appid = &app.appid;
        tracing::info!(
            "try: curl -s -XPOST {base}/sandbox/login_codes -d '{{\"appid\":\"{appid}\",\"openid\":\"o-demo-1\"}}'"
        );
        tracing::info!(
            "     curl -s -XPOST {base}/sandbox/formids -d '{{\"appid\":\"{appid}\",\"openid\":\"o-demo-1\",\"count\":3}}'"
        );
        tracing::info!("     curl -s {base}/sandbox/messages   and   {base}/sandbox/stats");
        tracing::info!(
            "webhooks: set an app's webhook_url to {base}/sandbox/webhooks, then curl -s {base}/sandbox/webhooks"
        );
    }
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    tracing::info!("stopping the WeChat sandbox");
    server.stop().await;
    Ok(())
}
