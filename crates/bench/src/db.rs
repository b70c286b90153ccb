//! The benchmark databases (`formpush_bench*`): each phase recreates its own on the server
//! of `--pg-url-base`, so no run sees another's data, and drops it afterwards unless
//! `--keep-db`.

use anyhow::Context;
use sqlx::{Connection, PgConnection, PgPool};

pub fn db_url(base: &str, name: &str) -> String {
    format!("{}/{name}", base.trim_end_matches('/'))
}

/// Runs one statement on the server's `postgres` database (creating and dropping databases
/// cannot run inside the database itself).
async fn on_server(base: &str, sql: &str, what: &str) -> anyhow::Result<()> {
    let mut c = PgConnection::connect(&db_url(base, "postgres"))
        .await
        .context("connecting to Postgres (PG_URL_BASE)")?;
    sqlx::raw_sql(sql)
        .execute(&mut c)
        .await
        .with_context(|| what.to_string())?;
    let _ = c.close().await;
    Ok(())
}

/// Drops `name` if it exists and creates it empty; returns its URL.
pub async fn recreate_db(base: &str, name: &str) -> anyhow::Result<String> {
    drop_db(base, name).await?;
    on_server(
        base,
        &format!("create database {name}"),
        &format!("creating database {name}"),
    )
    .await?;
    Ok(db_url(base, name))
}

pub async fn drop_db(base: &str, name: &str) -> anyhow::Result<()> {
    on_server(
        base,
        &format!("drop database if exists {name} with (force)"),
        &format!("dropping database {name}"),
    )
    .await
}

/// The end of a phase's database: dropped, unless `--keep-db` asks to inspect it.
pub async fn drop_unless_kept(base: &str, name: &str, keep_db: bool) -> anyhow::Result<()> {
    if keep_db {
        return Ok(());
    }
    drop_db(base, name).await
}

/// A freshly created and migrated database with a small pool.
pub async fn fresh_migrated(base: &str, name: &str, connections: u32) -> anyhow::Result<PgPool> {
    let url = recreate_db(base, name).await?;
    formpush::db::prepare(&url, connections).await
}
