//! What a campaign is and where it stands: its kind, how it picks formIds, what it does
//! with over-long template data, its audience's type, its status and its runs' status, and
//! the totals of its deliveries. Each word is stored in a text column whose check
//! constraint lists the same words.

use serde::{Deserialize, Serialize};

/// Which credit and which WeChat API a campaign spends.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum CampaignKind {
    /// A formId (or prepay_id) and `message/wxopen/template/send`.
    Template,
    /// A subscription grant and `message/subscribe/send`.
    Subscribe,
}

impl CampaignKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Template => "template",
            Self::Subscribe => "subscribe",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "template" => Some(Self::Template),
            "subscribe" => Some(Self::Subscribe),
            _ => None,
        }
    }
}

/// Which of a user's formIds a template campaign spends.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum FormidPick {
    /// The newest one: the most likely to be accepted.
    Freshest,
    /// The one closest to expiry: wastes fewest.
    ExpiringFirst,
}

impl FormidPick {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Freshest => "freshest",
            Self::ExpiringFirst => "expiring_first",
        }
    }
}

/// How a campaign's audience was given; listed audiences are stored in
/// `campaign_audience`, `all` is every user of the app when a run starts.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum AudienceType {
    All,
    Openids,
    Users,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum CampaignStatus {
    /// Waiting for its next run.
    Scheduled,
    /// A run is sending.
    Running,
    /// By an admin, or by WeChat's daily quota (45009) until it resets.
    Paused,
    /// Its last run finished and no other is scheduled.
    Completed,
    /// A campaign-level error (bad template, page, API switched off) stopped it.
    Failed,
    Cancelled,
}

impl CampaignStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Why a paused campaign is paused.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum PauseReason {
    /// `POST /v1/campaigns/{id}/pause`; only `/resume` ends it.
    Admin,
    /// WeChat's daily quota (45009); resumes by itself at `resume_at`.
    Quota,
}

/// One firing of a campaign's schedule.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Completed,
    Failed,
    Cancelled,
}

/// How a campaign's (or one run's) deliveries ended so far.
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq, utoipa::ToSchema)]
pub struct Totals {
    /// Deliveries created: one per audience member per run.
    pub targeted: i64,
    pub sent: i64,
    pub failed: i64,
    /// Template campaigns: the user held no usable formId.
    pub no_formid: i64,
    /// Subscribe campaigns: the user held no grant for the template.
    pub no_quota: i64,
    /// The app's frequency cap held the user back: nothing sent, no credit spent.
    pub capped: i64,
    /// Not final yet (waiting, in flight, or waiting for a retry).
    pub pending: i64,
}

/// What a subscribe campaign on a synced template does with a value longer than its
/// keyword's rule allows.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    sqlx::Type,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum DataPolicy {
    /// A value breaking its rule is refused: `422` at creation, `invalid_data` per user.
    #[default]
    Reject,
    /// Over-long `thing`, `name`, `character_string`, `letter` and `number` values are cut
    /// to their limit; other broken values are refused as with `reject`.
    Truncate,
}

impl DataPolicy {
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "reject" => Some(Self::Reject),
            "truncate" => Some(Self::Truncate),
            _ => None,
        }
    }
}
