//! A registered mini-program: its WeChat credentials and how formpush talks to WeChat for it.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::domain::hygiene::{FrequencyCap, QuietHours};

/// Which WeChat API issues the app's access_token.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum TokenApi {
    /// `cgi-bin/stable_token`: the same token for every caller while valid, so other
    /// services may share the appid (the default).
    Stable,
    /// `cgi-bin/token`: each call replaces the previous token.
    Classic,
}

impl TokenApi {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stable" => Some(Self::Stable),
            "classic" => Some(Self::Classic),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stable => "stable",
            Self::Classic => "classic",
        }
    }
}

/// An app as stored. Debug is hand-written so the secret can never be logged.
#[derive(Clone)]
pub struct App {
    pub appid: String,
    pub secret: SecretString,
    pub push_token: Option<SecretString>,
    pub encoding_aes_key: Option<SecretString>,
    pub send_rate_per_sec: i32,
    pub token_api: TokenApi,
    /// Where result events are POSTed, if anywhere.
    pub webhook_url: Option<String>,
    /// The HMAC key of the webhook signatures.
    pub webhook_secret: Option<SecretString>,
    /// At most so many campaign messages per user and window (none: no cap).
    pub frequency_cap: Option<FrequencyCap>,
    /// When no campaign message is sent (none: any time).
    pub quiet_hours: Option<QuietHours>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("appid", &self.appid)
            .field("send_rate_per_sec", &self.send_rate_per_sec)
            .field("token_api", &self.token_api)
            .field("webhook_url", &self.webhook_url)
            .field("frequency_cap", &self.frequency_cap)
            .field("quiet_hours", &self.quiet_hours)
            .finish_non_exhaustive()
    }
}
