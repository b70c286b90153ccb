//! Webhooks: the events formpush pushes to a team's backend, the receiver URL rule and the
//! signature a receiver checks.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use uuid::Uuid;

use super::message::MessageStatus;
use super::FieldError;

/// Unix seconds of the attempt; part of what is signed, so a receiver can refuse replays.
pub const TIMESTAMP_HEADER: &str = "X-Formpush-Timestamp";
/// `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>`.
pub const SIGNATURE_HEADER: &str = "X-Formpush-Signature";
const MAX_URL: usize = 2048;

/// What happened. Each word is also in the `webhook_events.type` check constraint.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "text")]
pub enum EventType {
    #[serde(rename = "message.sent")]
    #[sqlx(rename = "message.sent")]
    MessageSent,
    #[serde(rename = "message.failed")]
    #[sqlx(rename = "message.failed")]
    MessageFailed,
    #[serde(rename = "message.no_formid")]
    #[sqlx(rename = "message.no_formid")]
    MessageNoFormid,
    #[serde(rename = "message.no_quota")]
    #[sqlx(rename = "message.no_quota")]
    MessageNoQuota,
    #[serde(rename = "campaign.completed")]
    #[sqlx(rename = "campaign.completed")]
    CampaignCompleted,
    #[serde(rename = "campaign.failed")]
    #[sqlx(rename = "campaign.failed")]
    CampaignFailed,
}

impl EventType {
    /// The event a message's final status raises (none for a status that is not final or
    /// for a cancellation, which the caller asked for).
    pub fn for_message(status: MessageStatus) -> Option<Self> {
        match status {
            MessageStatus::Sent => Some(Self::MessageSent),
            MessageStatus::Failed => Some(Self::MessageFailed),
            MessageStatus::NoFormid => Some(Self::MessageNoFormid),
            MessageStatus::NoQuota => Some(Self::MessageNoQuota),
            MessageStatus::Scheduled
            | MessageStatus::Queued
            | MessageStatus::Sending
            | MessageStatus::Cancelled => None,
        }
    }

    pub fn is_about_a_message(self) -> bool {
        matches!(
            self,
            Self::MessageSent | Self::MessageFailed | Self::MessageNoFormid | Self::MessageNoQuota
        )
    }
}

/// The body formpush POSTs to an app's `webhook_url`, with the headers
/// `X-Formpush-Timestamp` (unix seconds) and `X-Formpush-Signature`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookEvent {
    /// the event's id: delivery is at least once, so receivers dedupe on it
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub created_at: DateTime<Utc>,
    /// the message (`message.*`) or campaign (`campaign.*`) object, as the API shows it
    #[schema(value_type = Object)]
    pub data: Value,
}

/// A receiver URL: absolute `http` or `https` with a host (plain http is for receivers on
/// a private network).
pub fn parse_url(raw: &str) -> Result<String, FieldError> {
    let bad = |why: &str| {
        FieldError::new(
            "invalid_webhook_url",
            format!("webhook_url must be an http or https URL ({why})"),
        )
    };
    if raw.len() > MAX_URL {
        return Err(bad("at most 2048 characters"));
    }
    let url = reqwest::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("other schemes are refused"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("a host is needed"));
    }
    Ok(url.to_string())
}

/// A new signing secret for an app's webhook.
pub fn new_secret() -> SecretString {
    format!("whsec_{}", super::session::random_token(32)).into()
}

/// The `X-Formpush-Signature` value of one attempt.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_a_known_answer() {
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test
        assert_eq!(
            signature("whsec_test", 1_700_000_000, br#"{"a":1}"#),
            "sha256=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }

    #[test]
    fn only_http_and_https_urls_with_a_host_are_receivers() {
        assert!(parse_url("https://hooks.example.com/formpush").is_ok());
        assert!(parse_url("http://10.0.0.5:8080/hook").is_ok());
        for bad in [
            "ftp://example.com/x",
            "example.com/hook",
            "https://",
            "",
            "javascript:alert(1)",
        ] {
            assert_eq!(
                parse_url(bad).unwrap_err().code,
                "invalid_webhook_url",
                "{bad}"
            );
        }
    }

    #[test]
    fn final_message_statuses_raise_their_event() {
        assert_eq!(
            EventType::for_message(MessageStatus::NoQuota),
            Some(EventType::MessageNoQuota)
        );
        assert_eq!(EventType::for_message(MessageStatus::Cancelled), None);
        assert_eq!(
            serde_json::to_value(EventType::CampaignCompleted).unwrap(),
            "campaign.completed"
        );
    }
}
