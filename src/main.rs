use clap::{Parser, Subcommand};
use formpush::{config::Settings, startup, telemetry};

/// formpush: collect WeChat mini-program formIds and subscribe grants, push campaigns.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Create/migrate the database, serve the HTTP API and run the scheduler (the default).
    Serve,
    /// Create the database if missing, apply migrations, exit.
    Migrate,
    /// Run a local fake of WeChat's server APIs (token, jscode2session, template and
    /// subscribe send) that follows WeChat's documented rules, to try formpush end to end.
    Sandbox(formpush_sandbox::SandboxArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Sandbox(args)) = cli.command {
        telemetry::init(formpush::config::LogFormat::Text);
        return formpush_sandbox::run(args).await;
    }
    let settings = Settings::from_env()?;
    telemetry::init(settings.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Sandbox(_) => unreachable!("handled above"),
        Command::Serve => {
            let app = startup::Application::build(settings).await?;
            startup::cancel_on_signal(app.shutdown_token());
            app.run_until_stopped().await
        }
        Command::Migrate => {
            formpush::db::prepare(&settings.database_url, 2).await?;
            tracing::info!("database is up to date");
            Ok(())
        }
    }
}
