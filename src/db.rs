//! Connecting to Postgres: create the database if missing, apply the embedded migrations.

use std::time::Duration;

use anyhow::Context;
use sqlx::{
    migrate::MigrateDatabase,
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool, Postgres,
};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Creates the database named in `url` if it does not exist yet.
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    if !Postgres::database_exists(url)
        .await
        .context("connecting to Postgres")?
    {
        match Postgres::create_database(url).await {
            Ok(()) => tracing::info!("created the database"),
            // Another instance created it between our check and our create.
            Err(e) if Postgres::database_exists(url).await.unwrap_or(false) => {
                tracing::debug!(error = %e, "database appeared concurrently")
            }
            Err(e) => return Err(e).context("creating the database"),
        }
    }
    Ok(())
}

pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url.parse().context("DATABASE_URL is not a valid URL")?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .context("connecting to the database")
}

/// `formpush migrate` and the start of `serve`.
pub async fn prepare(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    ensure_database(url).await?;
    let pool = connect(url, max_connections).await?;
    MIGRATOR.run(&pool).await.context("applying migrations")?;
    Ok(pool)
}
