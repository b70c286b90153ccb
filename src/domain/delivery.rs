//! Where one message to one user stands.

use serde::{Deserialize, Serialize};

/// A delivery's stored status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting to be claimed (first time, or again after a retryable failure).
    Pending,
    /// Claimed with its credit by a sender that holds its lease; being sent.
    Sending,
    Sent,
    Failed,
    /// Template campaigns: the user held no usable formId when claimed.
    NoFormid,
    /// Subscribe campaigns: the user held no grant for the template when claimed.
    NoQuota,
    /// The user had already received the app's frequency cap of messages in its window:
    /// nothing sent, no credit spent.
    Capped,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::NoFormid => "no_formid",
            Self::NoQuota => "no_quota",
            Self::Capped => "capped",
        }
    }

    /// As the API shows it: a message in flight is still pending to the caller.
    pub fn shown(self) -> ShownDeliveryStatus {
        match self {
            Self::Pending | Self::Sending => ShownDeliveryStatus::Pending,
            Self::Sent => ShownDeliveryStatus::Sent,
            Self::Failed => ShownDeliveryStatus::Failed,
            Self::NoFormid => ShownDeliveryStatus::NoFormid,
            Self::NoQuota => ShownDeliveryStatus::NoQuota,
            Self::Capped => ShownDeliveryStatus::Capped,
        }
    }
}

/// A delivery's status as the API shows and filters it (`sending` shows as `pending`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ShownDeliveryStatus {
    Pending,
    Sent,
    Failed,
    NoFormid,
    NoQuota,
    Capped,
}

impl ShownDeliveryStatus {
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "pending" => Some(Self::Pending),
            "sent" => Some(Self::Sent),
            "failed" => Some(Self::Failed),
            "no_formid" => Some(Self::NoFormid),
            "no_quota" => Some(Self::NoQuota),
            "capped" => Some(Self::Capped),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_in_flight_shows_as_pending() {
        assert_eq!(
            DeliveryStatus::Sending.shown(),
            ShownDeliveryStatus::Pending
        );
        assert_eq!(
            DeliveryStatus::NoQuota.shown(),
            ShownDeliveryStatus::NoQuota
        );
        assert_eq!(DeliveryStatus::NoFormid.as_str(), "no_formid");
    }
}
