//! App API keys: made, listed, revoked, and looked up for every request that carries one
//! (no cache, so a revocation holds at once on every instance).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::api_key::{IssuedKey, KeySpec, Scope};

#[derive(Debug, Clone)]
pub struct KeyRow {
    pub id: Uuid,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// What a valid key grants.
#[derive(Debug, Clone)]
pub struct KeyGrant {
    pub id: Uuid,
    pub appid: String,
    pub scopes: Vec<Scope>,
    pub key_hash: Vec<u8>,
}

/// Stores a new key of an existing app (`None` when the app is unknown).
pub async fn create(
    pool: &PgPool,
    appid: &str,
    spec: &KeySpec,
    issued: &IssuedKey,
) -> sqlx::Result<Option<KeyRow>> {
    if !super::storable(appid) {
        return Ok(None);
    }
    let scopes: Vec<&str> = spec.scopes.iter().map(|s| s.as_str()).collect();
    sqlx::query_as!(
        KeyRow,
        r#"
        insert into api_keys (id, appid, name, scopes, key_hash, prefix)
        select $1, appid, $3, $4, $5, $6 from apps where appid = $2
        returning id, name, scopes as "scopes: Vec<Scope>", prefix, created_at, last_used_at
        "#,
        Uuid::new_v4(),
        appid,
        spec.name,
        &scopes as &[&str],
        &issued.hash[..],
        issued.prefix,
    )
    .fetch_optional(pool)
    .await
}

/// The app's keys, oldest first.
pub async fn list(pool: &PgPool, appid: &str) -> sqlx::Result<Vec<KeyRow>> {
    sqlx::query_as!(
        KeyRow,
        r#"
        select id, name, scopes as "scopes: Vec<Scope>", prefix, created_at, last_used_at
        from api_keys where appid = $1
        order by created_at, id
        "#,
        appid
    )
    .fetch_all(pool)
    .await
}

/// Revokes a key of the app. False when the app has no such key.
pub async fn delete(pool: &PgPool, appid: &str, id: Uuid) -> sqlx::Result<bool> {
    if !super::storable(appid) {
        return Ok(false);
    }
    let done = sqlx::query!(
        "delete from api_keys where appid = $1 and id = $2",
        appid,
        id
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The key with this hash, if it exists. Marks it used, at most once a minute per key so
/// that busy keys do not write on every request; same statement, no extra round trip.
pub async fn authenticate(pool: &PgPool, key_hash: &[u8; 32]) -> sqlx::Result<Option<KeyGrant>> {
    sqlx::query_as!(
        KeyGrant,
        r#"
        with found as (
            select id, appid, scopes, key_hash, last_used_at from api_keys where key_hash = $1
        ),
        touched as (
            update api_keys k set last_used_at = now()
            from found f
            where k.id = f.id
              and (f.last_used_at is null or f.last_used_at < now() - interval '1 minute')
        )
        select id as "id!", appid as "appid!", scopes as "scopes!: Vec<Scope>",
               key_hash as "key_hash!"
        from found
        "#,
        &key_hash[..]
    )
    .fetch_optional(pool)
    .await
}
