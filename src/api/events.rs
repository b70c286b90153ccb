//! The `data` of webhook events: the message or campaign object exactly as the API serves
//! it (`MessageView`, `CampaignView`), rendered here for the dispatcher (`webhooks`),
//! which knows nothing of the API's shapes.

use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::PgPool;

use super::campaigns::CampaignView;
use super::messages::MessageView;
use crate::store::{self, webhook_events::DueEvent};
use crate::webhooks::RenderEvent;

pub struct EventData {
    pool: PgPool,
}

impl EventData {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl RenderEvent for EventData {
    fn render<'a>(&'a self, event: &'a DueEvent) -> BoxFuture<'a, anyhow::Result<Option<Value>>> {
        Box::pin(async move {
            if event.event_type.is_about_a_message() {
                let Some(row) =
                    store::messages::find(&self.pool, &event.appid, event.subject_id).await?
                else {
                    return Ok(None);
                };
                return Ok(Some(serde_json::to_value(MessageView::from(row))?));
            }
            let Some(row) = store::campaigns::find(&self.pool, event.subject_id).await? else {
                return Ok(None);
            };
            let totals = store::campaigns::totals(&self.pool, row.id).await?;
            // Completed or failed: nothing holds any more.
            Ok(Some(serde_json::to_value(CampaignView::new(
                row, totals, None,
            )?)?))
        })
    }
}
