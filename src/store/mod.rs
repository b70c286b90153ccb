//! All of formpush's SQL, shared by the HTTP API and the scheduler. Each function is one
//! statement or one short transaction; the only one held open across a WeChat call is the
//! access_token refresh lock (`access_tokens`), on purpose.

pub mod access_tokens;
pub mod api_keys;
pub mod apps;
pub mod batcher;
pub mod campaigns;
pub mod credits;
pub mod deliveries;
pub mod keys;
pub mod leases;
pub mod messages;
pub mod push_events;
pub mod retention;
pub mod runs;
pub mod stats;
pub mod templates;
pub mod users;
pub mod webhook_events;

/// Postgres text cannot hold NUL (U+0000), so no stored value contains one. A lookup by such
/// a value finds nothing, and is answered without SQL (where the value would be an error).
pub(crate) fn storable(text: &str) -> bool {
    !text.contains('\0')
}

/// Whether the database answers a trivial query.
pub async fn ping(pool: &sqlx::PgPool) -> sqlx::Result<()> {
    sqlx::query("select 1").execute(pool).await.map(drop)
}
