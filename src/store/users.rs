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
    // One statement: the insert returns the new users, the select the existing ones (it
    // runs on the statement's snapshot, so it cannot see the rows inserted beside it).
    let mut found: Vec<(String, i64)> = sqlx::query!(
        r#"
        with wanted as (select distinct o from unnest($2::text[]) as o),
        created as (
            insert into users (appid, openid)
            select $1, o from wanted
            on conflict (appid, openid) do nothing
            returning openid, id
        )
        select openid as "openid!", id as "id!" from created
        union all
        select u.openid, u.id from users u join wanted w on u.openid = w.o where u.appid = $1
        "#,
        appid,
        openids
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.openid, r.id))
    .collect();
    // A concurrent call may have created some after our snapshot: read those now.
    let known: std::collections::HashSet<&str> =
        found.iter().map(|(openid, _)| openid.as_str()).collect();
    let mut missing: Vec<&str> = openids
        .iter()
        .map(String::as_str)
        .filter(|o| !known.contains(o))
        .collect();
    if !missing.is_empty() {
        missing.sort_unstable();
        missing.dedup();
        let late = sqlx::query!(
            "select openid, id from users where appid = $1 and openid = any($2::text[])",
            appid,
            &missing as &[&str]
        )
        .fetch_all(pool)
        .await?;
        found.extend(late.into_iter().map(|r| (r.openid, r.id)));
    }
    Ok(found)
}

/// Up to `limit` users of `appid` with ids above `after`, in id order: (id, openid).
pub async fn page(
    pool: &PgPool,
    appid: &str,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<(i64, String)>> {
    let rows = sqlx::query!(
        "select id, openid from users where appid = $1 and id > $2 order by id limit $3",
        appid,
        after,
        limit
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.openid)).collect())
}
