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

/// Connections for the statements that claim credits. Each session plans every statement
/// for its parameters (`plan_cache_mode = force_custom_plan`, sent at connection start so
/// that it also beats a database- or role-level setting): a claim's generic plan reads a
/// run's deliveries without knowing the run or the cursor and walks the whole
/// `deliveries` primary key, slower with every batch (measured: 105 sends/s on a checked
/// 100,000-user campaign with the generic plan, 4,101 with custom plans). Planning each
/// claim costs well under a millisecond; the rest of formpush keeps its cached plans.
///
/// Connects lazily, up to `max` connections besides those of `pool`.
pub fn claim_pool(pool: &PgPool, max: u32) -> PgPool {
    let options = pool
        .connect_options()
        .as_ref()
        .clone()
        .options([("plan_cache_mode", "force_custom_plan")]);
    PgPoolOptions::new()
        .max_connections(max.max(1))
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(10))
        .idle_timeout(Duration::from_secs(60))
        .connect_lazy_with(options)
}

/// `formpush migrate` and the start of `serve`.
pub async fn prepare(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    ensure_database(url).await?;
    let pool = connect(url, max_connections).await?;
    MIGRATOR.run(&pool).await.context("applying migrations")?;
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan `next_batch` gets on a connection of `pool`: a generic plan names its
    /// parameters (`$1`), a custom one shows the values.
    async fn plan_on(pool: &PgPool) -> String {
        let mut conn = pool.acquire().await.unwrap();
        sqlx::raw_sql(
            "prepare next_batch(uuid, bigint, bigint) as
             select id from deliveries
             where run_id = $1 and id > $2 and status = 'pending' order by id limit $3",
        )
        .execute(&mut *conn)
        .await
        .unwrap();
        let plan: Vec<String> = sqlx::query_scalar(
            "explain execute next_batch('8d92813d-d8a9-477b-8f3f-94a33da056f3', 0, 100)",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        plan.join("\n")
    }

    #[sqlx::test]
    async fn claim_connections_plan_for_the_parameters_where_generic_plans_are_forced(
        pool: PgPool,
    ) {
        let db: String = sqlx::query_scalar("select current_database()")
            .fetch_one(&pool)
            .await
            .unwrap();
        sqlx::raw_sql(&format!(
            "alter database \"{db}\" set plan_cache_mode = force_generic_plan"
        ))
        .execute(&pool)
        .await
        .unwrap();
        // New sessions take the database's setting...
        let plain = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(pool.connect_options().as_ref().clone())
            .await
            .unwrap();
        let generic = plan_on(&plain).await;
        assert!(generic.contains("$1"), "a generic plan:\n{generic}");
        // ...but not those that claim.
        let claims = claim_pool(&pool, 1);
        let custom = plan_on(&claims).await;
        assert!(!custom.contains('$'), "a custom plan:\n{custom}");
        plain.close().await;
        claims.close().await;
    }
}
