//! The campaign API's response bodies. Handlers answer with these very types and the
//! OpenAPI description is generated from them, so the schema cannot drift from what is
//! served.

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::campaign::{
    AudienceType, CampaignKind, CampaignStatus, DataEntry, DataPolicy, FormidPick, PauseReason,
    RunStatus, ScheduleSpec, Totals,
};
use crate::domain::delivery::ShownDeliveryStatus;
use crate::store::campaigns::CampaignRow;
use crate::store::deliveries::DeliveryRow;
use crate::store::runs::RunRow;

/// A campaign as the admin API shows it, with its totals over all runs.
#[derive(Serialize, ToSchema)]
pub struct CampaignView {
    pub id: Uuid,
    pub appid: String,
    pub name: String,
    pub kind: CampaignKind,
    pub template_id: String,
    pub page: Option<String>,
    /// the `data` as created, placeholders unrendered
    #[schema(value_type = HashMap<String, DataEntry>)]
    pub data: serde_json::Value,
    pub emphasis_keyword: Option<String>,
    pub miniprogram_state: Option<String>,
    pub lang: Option<String>,
    /// template campaigns only (null for subscribe campaigns)
    pub formid_pick: Option<FormidPick>,
    /// subscribe campaigns only (null for template campaigns): what happens to a value
    /// longer than its keyword's rule allows
    pub data_policy: Option<DataPolicy>,
    pub audience: AudienceView,
    pub status: CampaignStatus,
    /// why a paused campaign is paused
    pub pause_reason: Option<PauseReason>,
    /// when a campaign paused for quota resumes by itself
    pub resume_at: Option<DateTime<Utc>>,
    /// the schedule as created
    pub schedule: ScheduleSpec,
    pub timezone: String,
    pub next_run_at: Option<DateTime<Utc>>,
    /// sends even inside the app's quiet hours
    pub ignore_quiet_hours: bool,
    /// while a run holds its remaining deliveries for the app's quiet hours, or a cron
    /// firing waits for them to end: when sending resumes; null otherwise
    pub held_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub totals: Totals,
    /// the error that stopped or paused it
    pub last_error: Option<LastError>,
}

/// WeChat's answer that stopped or paused a campaign.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LastError {
    pub errcode: ErrCode,
    pub errmsg: String,
}

/// The audience's type (the members of a listed audience are not repeated here).
#[derive(Serialize, ToSchema)]
pub struct AudienceView {
    #[serde(rename = "type")]
    pub audience_type: AudienceType,
}

impl CampaignView {
    /// `run_hold`: when the earliest of its runs holding for quiet hours resumes. Fails
    /// only if a stored document (schedule, last error) is not what formpush writes.
    pub fn new(
        row: CampaignRow,
        totals: Totals,
        run_hold: Option<DateTime<Utc>>,
    ) -> anyhow::Result<Self> {
        let schedule = serde_json::from_value(row.schedule)
            .with_context(|| format!("campaign {}: stored schedule", row.id))?;
        let last_error = row
            .last_error
            .map(serde_json::from_value)
            .transpose()
            .with_context(|| format!("campaign {}: stored last_error", row.id))?;
        // A hold whose end has passed is over (the sender or the tick clears it shortly).
        let now = Utc::now();
        let held_until = match row.status {
            CampaignStatus::Running | CampaignStatus::Scheduled => [run_hold, row.held_until]
                .into_iter()
                .flatten()
                .filter(|until| *until > now)
                .min(),
            _ => None,
        };
        Ok(Self {
            held_until,
            ignore_quiet_hours: row.ignore_quiet_hours,
            formid_pick: (row.kind == CampaignKind::Template).then_some(row.formid_pick),
            data_policy: (row.kind == CampaignKind::Subscribe).then_some(row.data_policy),
            audience: AudienceView {
                audience_type: row.audience_type,
            },
            id: row.id,
            appid: row.appid,
            name: row.name,
            kind: row.kind,
            template_id: row.template_id,
            page: row.page,
            data: row.data,
            emphasis_keyword: row.emphasis_keyword,
            miniprogram_state: row.miniprogram_state,
            lang: row.lang,
            status: row.status,
            pause_reason: row.pause_reason,
            resume_at: row.resume_at,
            schedule,
            timezone: row.timezone,
            next_run_at: row.next_run_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
            totals,
            last_error,
        })
    }
}

#[derive(Serialize, ToSchema)]
pub struct CampaignList {
    pub items: Vec<CampaignView>,
}

/// One firing of a campaign's schedule, with the totals of its deliveries.
#[derive(Serialize, ToSchema)]
pub struct RunView {
    pub id: Uuid,
    pub scheduled_for: DateTime<Utc>,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// while the run holds its remaining deliveries for the app's quiet hours: when they
    /// end and it sends again; null otherwise
    pub held_until: Option<DateTime<Utc>>,
    /// Its deliveries are still being created, a chunk at a time while it sends:
    /// `totals.targeted` grows until this is `false`.
    pub filling: bool,
    /// When the retention (`FORMPUSH_RETENTION_DAYS` after the run finished) deleted the
    /// last of its deliveries; `totals` are kept. Null while its deliveries are kept.
    pub deliveries_purged_at: Option<DateTime<Utc>>,
    pub totals: Totals,
}

impl From<RunRow> for RunView {
    fn from(r: RunRow) -> Self {
        Self {
            held_until: r
                .held_until
                .filter(|until| r.status == RunStatus::Running && *until > Utc::now()),
            id: r.id,
            scheduled_for: r.scheduled_for,
            status: r.status,
            started_at: r.started_at,
            finished_at: r.finished_at,
            filling: r.filling,
            deliveries_purged_at: r.deliveries_purged_at,
            totals: r.totals,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct RunList {
    pub items: Vec<RunView>,
}

/// WeChat's errcode (a number, 0 when sent), or a word where WeChat gave none:
/// `unknown_outcome`, `timeout`, `http_502`, `unreachable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ErrCode {
    WeChat(i64),
    Word(String),
}

impl ErrCode {
    pub fn from_record(code: &str) -> Self {
        code.parse()
            .map(Self::WeChat)
            .unwrap_or_else(|_| Self::Word(code.to_string()))
    }
}

/// One user's message in one run.
#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    pub run_id: Uuid,
    pub openid: String,
    pub status: ShownDeliveryStatus,
    pub form_id: Option<String>,
    pub errcode: Option<ErrCode>,
    pub errmsg: Option<String>,
    pub attempts: i16,
    pub msg_id: Option<String>,
    /// from `subscribe_msg_sent_event`: `success` or `errcode:status`
    pub push_status: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl From<DeliveryRow> for DeliveryView {
    fn from(d: DeliveryRow) -> Self {
        let sent = d.status == ShownDeliveryStatus::Sent;
        let errcode = match d.errcode.as_deref() {
            Some(code) => Some(ErrCode::from_record(code)),
            None if sent => Some(ErrCode::WeChat(0)),
            None => None,
        };
        Self {
            errmsg: d.errmsg.or_else(|| sent.then(|| "ok".into())),
            errcode,
            run_id: d.run_id,
            openid: d.openid,
            status: d.status,
            form_id: d.form_id,
            attempts: d.attempts,
            msg_id: d.msg_id,
            push_status: d.push_status,
            updated_at: d.updated_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<DeliveryView>,
    /// pass as `after` for the next page; null on the last
    pub next: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errcodes_are_numbers_where_wechat_gave_one_and_words_elsewhere() {
        assert_eq!(ErrCode::from_record("40037"), ErrCode::WeChat(40037));
        assert_eq!(ErrCode::from_record("-1"), ErrCode::WeChat(-1));
        assert_eq!(
            ErrCode::from_record("unknown_outcome"),
            ErrCode::Word("unknown_outcome".into())
        );
        assert_eq!(
            serde_json::to_value(ErrCode::WeChat(0)).unwrap(),
            serde_json::json!(0)
        );
    }
}
