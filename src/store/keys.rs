use rand::RngCore;
use sqlx::PgPool;

/// The session-token signing key, created once and then shared by every instance.
pub async fn session_signing_key(pool: &PgPool) -> sqlx::Result<Vec<u8>> {
    let mut fresh = vec![0u8; 32];
    rand::thread_rng().fill_bytes(&mut fresh);
    // Whoever inserts first wins; everyone then reads the winner's key.
    sqlx::query!(
        "insert into server_keys (name, key) values ('session', $1) on conflict (name) do nothing",
        fresh
    )
    .execute(pool)
    .await?;
    let row = sqlx::query!("select key from server_keys where name = 'session'")
        .fetch_one(pool)
        .await?;
    Ok(row.key)
}
