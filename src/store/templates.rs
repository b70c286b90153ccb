//! An app's subscribe templates as last synced from WeChat, and which apps sync them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;

use crate::domain::template::{Keyword, Template};
use crate::domain::template_rules::Rule;

/// A keyword as stored in `subscribe_templates.keywords` (the rule follows from the key).
#[derive(Serialize, Deserialize)]
struct StoredKeyword {
    key: String,
    label: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    values: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct SyncedTemplate {
    pub template: Template,
    pub synced_at: DateTime<Utc>,
}

fn keywords_json(template: &Template) -> Value {
    let keywords: Vec<StoredKeyword> = template
        .keywords
        .iter()
        .map(|k| StoredKeyword {
            key: k.key.clone(),
            label: k.label.clone(),
            values: k.values.clone(),
        })
        .collect();
    serde_json::to_value(keywords).unwrap_or_default()
}

fn template_from(
    template_id: String,
    title: String,
    kind: i32,
    example: String,
    keywords: Value,
) -> Template {
    let keywords: Vec<StoredKeyword> = serde_json::from_value(keywords).unwrap_or_default();
    Template {
        template_id,
        title,
        kind,
        example,
        keywords: keywords
            .into_iter()
            .map(|k| Keyword {
                rule: Rule::of_key(&k.key),
                key: k.key,
                label: k.label,
                values: k.values,
            })
            .collect(),
    }
}

/// Makes the stored templates of the app exactly `templates` (those gone from WeChat are
/// deleted) and marks the app as synced, in one transaction. Syncs of one app (an admin's
/// and the daily one, on any instance) take turns under an advisory lock; the later one
/// wins whole.
pub async fn replace_all(
    pool: &PgPool,
    appid: &str,
    templates: &[Template],
    synced_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    let ids: Vec<&str> = templates.iter().map(|t| t.template_id.as_str()).collect();
    let titles: Vec<&str> = templates.iter().map(|t| t.title.as_str()).collect();
    let kinds: Vec<i32> = templates.iter().map(|t| t.kind).collect();
    let examples: Vec<&str> = templates.iter().map(|t| t.example.as_str()).collect();
    let keywords: Vec<Value> = templates.iter().map(keywords_json).collect();
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "select pg_advisory_xact_lock(hashtextextended('formpush.templates:' || $1, 0))",
        appid
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "delete from subscribe_templates where appid = $1 and template_id <> all($2)",
        appid,
        &ids as &[&str]
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        r#"
        insert into subscribe_templates (appid, template_id, title, kind, example, keywords, synced_at)
        select $1, t.id, t.title, t.kind, t.example, t.keywords, $7
        from unnest($2::text[], $3::text[], $4::int[], $5::text[], $6::jsonb[])
             as t(id, title, kind, example, keywords)
        on conflict (appid, template_id) do update set
            title = excluded.title, kind = excluded.kind, example = excluded.example,
            keywords = excluded.keywords, synced_at = excluded.synced_at
        "#,
        appid,
        &ids as &[&str],
        &titles as &[&str],
        &kinds,
        &examples as &[&str],
        &keywords,
        synced_at
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        r#"
        insert into template_syncs (appid, synced_at) values ($1, $2)
        on conflict (appid) do update set synced_at = excluded.synced_at
        "#,
        appid,
        synced_at
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// The app's templates, by title.
pub async fn list(pool: &PgPool, appid: &str) -> sqlx::Result<Vec<SyncedTemplate>> {
    if !super::storable(appid) {
        return Ok(vec![]);
    }
    let rows = sqlx::query!(
        r#"
        select template_id, title, kind, example, keywords, synced_at
        from subscribe_templates where appid = $1
        order by title, template_id
        "#,
        appid
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| SyncedTemplate {
            template: template_from(r.template_id, r.title, r.kind, r.example, r.keywords),
            synced_at: r.synced_at,
        })
        .collect())
}

/// One synced template; `None` when it was never synced (its data is then not checked).
pub async fn find(pool: &PgPool, appid: &str, template_id: &str) -> sqlx::Result<Option<Template>> {
    if !super::storable(appid) || !super::storable(template_id) {
        return Ok(None);
    }
    let row = sqlx::query!(
        r#"
        select template_id, title, kind, example, keywords
        from subscribe_templates where appid = $1 and template_id = $2
        "#,
        appid,
        template_id
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| template_from(r.template_id, r.title, r.kind, r.example, r.keywords)))
}

/// Apps whose templates were synced at least once (the daily sync refreshes these).
pub async fn synced_apps(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!("select appid from template_syncs order by appid")
        .fetch_all(pool)
        .await
}

/// Takes the app's scheduled sync unless another instance took it within `min_gap_secs`:
/// every instance fires the daily job, one of them syncs each app.
pub async fn claim_scheduled_sync(
    pool: &PgPool,
    appid: &str,
    min_gap_secs: f64,
) -> sqlx::Result<bool> {
    let claimed = sqlx::query_scalar!(
        r#"
        update template_syncs set claimed_at = now()
        where appid = $1 and claimed_at < now() - make_interval(secs => $2)
        returning appid
        "#,
        appid,
        min_gap_secs
    )
    .fetch_optional(pool)
    .await?;
    Ok(claimed.is_some())
}
