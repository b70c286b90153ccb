//! Applying what WeChat pushes, once: WeChat retries a push it saw no answer to, and a
//! retry carries the same (user, CreateTime, Event).

use sqlx::PgPool;

use super::{credits, deliveries, messages, users};
use crate::domain::subscription::PushedChange;

/// The identity of one pushed event.
pub struct PushKey<'a> {
    pub appid: &'a str,
    pub openid: &'a str,
    pub create_time: i64,
    pub event: &'a str,
}

/// Applies `change` unless this event was applied before. True when applied now.
pub async fn apply_once(
    pool: &PgPool,
    key: PushKey<'_>,
    change: &PushedChange,
) -> sqlx::Result<bool> {
    let first_time = sqlx::query!(
        r#"
        insert into push_events_seen (appid, openid, create_time, event) values ($1, $2, $3, $4)
        on conflict do nothing
        "#,
        key.appid,
        key.openid,
        key.create_time,
        key.event
    )
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    if !first_time {
        return Ok(false);
    }
    match change {
        // A user is created only for an event that changes their grants.
        PushedChange::Grant {
            openid,
            template_ids,
        } if !template_ids.is_empty() => {
            let user = users::upsert(pool, key.appid, openid).await?;
            credits::grant_subscriptions(pool, user, template_ids).await?;
        }
        PushedChange::Revoke {
            openid,
            template_ids,
        } if !template_ids.is_empty() => {
            let user = users::upsert(pool, key.appid, openid).await?;
            credits::revoke_subscriptions(pool, user, template_ids).await?;
        }
        PushedChange::SendResults(results) => {
            // A msgid belongs to a campaign delivery or to a triggered message.
            for (msg_id, status) in results {
                if deliveries::record_push_status(pool, msg_id, status).await? == 0 {
                    messages::record_push_status(pool, msg_id, status).await?;
                }
            }
        }
        PushedChange::Grant { .. } | PushedChange::Revoke { .. } => {}
    }
    Ok(true)
}
