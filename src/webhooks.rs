//! The webhook dispatcher: sends the outbox's due events to each app's receiver, signed.
//!
//! Events are written by the transactions that change a message's or a campaign's status,
//! so they survive a restart. Every instance with the scheduler on runs a dispatcher; each
//! claims due events with `skip locked` and holds them for `HOLD` (longer than an attempt
//! can take), so that instances share the work and a dying instance only delays its
//! events. A `2xx` answer within `ATTEMPT_TIMEOUT` delivers an event; anything else is
//! retried after 15 s, 30 s, 1 min, ... (at most an hour apart) until 24 hours have passed.
//! Delivery is at least once: a receiver dedupes on the event's `id`.
//!
//! The `data` of an event is the message or campaign object exactly as the API serves it,
//! rendered by the API layer (`RenderEvent`) when the event is first sent; retries send the
//! same body.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::StreamExt;
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::domain::webhook::{self, WebhookEvent, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::store::webhook_events::{self as store, Attempted, DueEvent};

/// A receiver has this long to answer one attempt.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// After the first failed attempt, the next comes this much later; the gap then doubles.
pub const FIRST_RETRY: Duration = Duration::from_secs(15);
/// Retries are at most this far apart.
pub const MAX_RETRY_GAP: Duration = Duration::from_secs(3600);
/// An event not delivered this long after it happened is given up (`expired`).
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// A claimed event is not due again for this long: more than an attempt can take.
const HOLD: Duration = Duration::from_secs(60);
/// Events claimed per round, and attempts in flight at once.
const BATCH: usize = 32;
/// How often an idle dispatcher looks for due events.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// Renders the `data` of an event: the object the event is about, as the API shows it
/// (`None` when it no longer exists). The API layer, which owns those shapes, provides it.
pub trait RenderEvent: Send + Sync {
    fn render<'a>(&'a self, event: &'a DueEvent) -> BoxFuture<'a, anyhow::Result<Option<Value>>>;
}

#[derive(Clone)]
pub struct Dispatcher {
    pool: PgPool,
    http: reqwest::Client,
    render: Arc<dyn RenderEvent>,
}

/// The delay before the attempt after the `attempts`-th.
pub fn retry_delay(attempts: i32) -> Duration {
    let doublings = attempts.clamp(1, 20) as u32 - 1;
    FIRST_RETRY
        .saturating_mul(1 << doublings.min(12))
        .min(MAX_RETRY_GAP)
}

impl Dispatcher {
    pub fn new(pool: PgPool, render: Arc<dyn RenderEvent>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            // A redirect is not a 2xx: the receiver's URL is the one configured.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("formpush-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { pool, http, render })
    }

    /// Sends until `shutdown`: a round whenever events are due, a look every `IDLE_POLL`.
    /// A round cut short by shutdown leaves its events claimed: they are due again after
    /// `HOLD`, on any instance.
    pub async fn run(self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let round = tokio::select! {
                round = self.step(Utc::now()) => round,
                _ = shutdown.cancelled() => return,
            };
            let idle = match round {
                Ok(attempted) => attempted == 0,
                Err(e) => {
                    tracing::warn!(error = ?e, "webhook round failed");
                    true
                }
            };
            if idle {
                tokio::select! {
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
        }
    }

    /// Rounds until no event is due at `now` (tests and tools step the clock this way).
    /// Returns the attempts made.
    pub async fn run_until_idle(&self, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let mut attempted = 0;
        loop {
            let n = self.step(now).await?;
            if n == 0 {
                return Ok(attempted);
            }
            attempted += n;
        }
    }

    /// One round: claims the events due at `now`, attempts each once, records the results.
    /// Returns how many it attempted.
    pub async fn step(&self, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let due = store::claim_due(&self.pool, now, BATCH as i64, HOLD.as_secs_f64()).await?;
        let attempted = due.len();
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(due)
            .map(|event| self.attempt(event, now))
            .buffer_unordered(BATCH)
            .collect()
            .await;
        for result in results {
            result?;
        }
        Ok(attempted)
    }

    async fn attempt(&self, event: DueEvent, now: DateTime<Utc>) -> anyhow::Result<()> {
        let counter = |outcome: &str| {
            crate::metrics::metrics()
                .webhook_attempts
                .with_label_values(&[outcome])
                .inc()
        };
        let (Some(url), Some(secret)) = (&event.url, &event.secret) else {
            counter("dropped");
            return Ok(
                store::record_attempt(&self.pool, event.id, None, Attempted::Dropped).await?,
            );
        };
        let payload = match &event.payload {
            Some(payload) => payload.clone(),
            None => match self.render.render(&event).await? {
                Some(data) => serde_json::to_value(WebhookEvent {
                    id: event.id,
                    event_type: event.event_type,
                    created_at: event.created_at,
                    data,
                })?,
                None => {
                    counter("dropped");
                    return Ok(store::record_attempt(
                        &self.pool,
                        event.id,
                        None,
                        Attempted::Dropped,
                    )
                    .await?);
                }
            },
        };
        let body = serde_json::to_vec(&payload)?;
        let timestamp = Utc::now().timestamp();
        let sent = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(
                SIGNATURE_HEADER,
                webhook::signature(secret, timestamp, &body),
            )
            .body(body)
            .send()
            .await;
        let error = match sent {
            Ok(resp) if resp.status().is_success() => None,
            Ok(resp) => Some(format!(
                "the receiver answered HTTP {}",
                resp.status().as_u16()
            )),
            // Without the URL: it may carry a token of the receiver's.
            Err(e) => Some(format!(
                "the receiver could not be reached: {}",
                e.without_url()
            )),
        };
        let attempted = match &error {
            None => {
                counter("delivered");
                Attempted::Delivered
            }
            Some(error) => {
                let retry_at = now + retry_delay(event.attempts);
                let give_up_at = event.created_at + GIVE_UP_AFTER;
                let retry_at = (retry_at <= give_up_at).then_some(retry_at);
                counter(if retry_at.is_some() {
                    "failed"
                } else {
                    "expired"
                });
                tracing::warn!(
                    appid = %event.appid, event_id = %event.id, attempts = event.attempts,
                    error = %error, "webhook attempt failed"
                );
                Attempted::Failed {
                    error: error.as_str(),
                    retry_at,
                }
            }
        };
        store::record_attempt(&self.pool, event.id, Some(&payload), attempted).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_start_within_30_seconds_and_back_off_to_an_hour() {
        assert_eq!(retry_delay(1), Duration::from_secs(15));
        assert_eq!(retry_delay(2), Duration::from_secs(30));
        assert_eq!(retry_delay(3), Duration::from_secs(60));
        assert_eq!(retry_delay(9), Duration::from_secs(3600));
        assert_eq!(retry_delay(500), Duration::from_secs(3600));
        // About 30 attempts fit in the 24 hours.
        let mut at = Duration::ZERO;
        let mut attempts = 1;
        while at + retry_delay(attempts) <= GIVE_UP_AFTER {
            at += retry_delay(attempts);
            attempts += 1;
        }
        assert!((25..40).contains(&attempts), "{attempts}");
    }
}
