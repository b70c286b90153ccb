use sqlx::PgPool;

/// The user's id, creating the user on first sight.
pub async fn upsert(pool: &PgPool, appid: &str, openid: &str) -> sqlx::Result<i64> {
    // `do update` (a no-op write) so that `returning` also yields existing rows.
    let row = sqlx::query!(
        r#"
        insert into users (appid, openid) values ($1, $2)
        on conflict (appid, openid) do update set openid = excluded.openid
        returning id
        "#,
        appid,
        openid
    )
    .fetch_one(pool)
    .await?;
    Ok(row.id)
}

/// Ids for many openids at once, creating the unknown ones. Returned in no set order.
pub async fn upsert_many(
    pool: &PgPool,
    appid: &str,
    openids: &[String],
) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query!(
        r#"
        insert into users (appid, openid)
        select $1, o from unnest($2::text[]) as o
        on conflict (appid, openid) do nothing
        "#,
        appid,
        openids
    )
    .execute(pool)
    .await?;
    let rows = sqlx::query!(
        "select openid, id from users where appid = $1 and openid = any($2::text[])",
        appid,
        openids
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.openid, r.id)).collect())
}
