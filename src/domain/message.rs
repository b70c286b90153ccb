//! Triggered messages: one user, sent now or at a time, on a team backend's request.
//! `MessageSpec::parse` applies the rules of a campaign of the same kind (through
//! `campaign::Content`), minus the audience and with the built-in placeholders only.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::campaign::{
    check_builtin_placeholders, check_no_nul, parse_kind, CampaignKind, Content, ContentFields,
    DataEntry, FormidPick,
};
use super::FieldError;

/// Idempotency keys are at most this long.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;
const MAX_OPENID: usize = 128;

/// A message's stored status. Each word is also in the column's check constraint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum MessageStatus {
    /// Waits for its time (`due_at`) and holds no credit yet.
    Scheduled,
    /// Holds its credit and waits for the app's sender (a send-now message).
    Queued,
    /// In a sender's hands.
    Sending,
    Sent,
    Failed,
    NoFormid,
    NoQuota,
    Cancelled,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::NoFormid => "no_formid",
            Self::NoQuota => "no_quota",
            Self::Cancelled => "cancelled",
        }
    }

    /// As the API shows it: a message holding its credit is `sending` to the caller.
    /// A delivery outcome (`sent`, `failed`, `no_formid`, `no_quota`): nothing more happens.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Sent | Self::Failed | Self::NoFormid | Self::NoQuota
        )
    }

    pub fn shown(self) -> ShownMessageStatus {
        match self {
            Self::Scheduled => ShownMessageStatus::Scheduled,
            Self::Queued | Self::Sending => ShownMessageStatus::Sending,
            Self::Sent => ShownMessageStatus::Sent,
            Self::Failed => ShownMessageStatus::Failed,
            Self::NoFormid => ShownMessageStatus::NoFormid,
            Self::NoQuota => ShownMessageStatus::NoQuota,
            Self::Cancelled => ShownMessageStatus::Cancelled,
        }
    }
}

/// A message's status as the API shows and filters it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ShownMessageStatus {
    /// Waits for `send_at` (or for WeChat's daily quota to reset); no credit spent yet.
    Scheduled,
    /// Its credit is claimed; it is being sent.
    Sending,
    Sent,
    Failed,
    /// Template: the user held no usable formId at send time.
    NoFormid,
    /// Subscribe: the user held no grant for the template at send time.
    NoQuota,
    /// Cancelled before it was sent; no credit spent.
    Cancelled,
}

impl ShownMessageStatus {
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "scheduled" => Some(Self::Scheduled),
            "sending" => Some(Self::Sending),
            "sent" => Some(Self::Sent),
            "failed" => Some(Self::Failed),
            "no_formid" => Some(Self::NoFormid),
            "no_quota" => Some(Self::NoQuota),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::NoFormid => "no_formid",
            Self::NoQuota => "no_quota",
            Self::Cancelled => "cancelled",
        }
    }
}

/// `POST /v1/apps/{appid}/messages` as received. Text fields stay text until parsed, so
/// that each refusal names its field.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    #[schema(min_length = 1, max_length = 128)]
    pub openid: String,
    /// `template` (spends a formId) or `subscribe` (spends a grant of the template)
    #[schema(value_type = CampaignKind, example = "subscribe")]
    pub kind: String,
    #[schema(min_length = 1, max_length = 128)]
    pub template_id: String,
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub page: Option<String>,
    /// `{"thing1": {"value": "Your order has shipped"}}`; only the built-ins `{{openid}}`,
    /// `{{date}}` and `{{datetime}}` (Asia/Shanghai) are filled in
    #[schema(value_type = HashMap<String, DataEntry>, example = json!({"thing1": {"value": "Your order has shipped"}}))]
    pub data: Value,
    /// template messages only
    #[serde(default)]
    pub emphasis_keyword: Option<String>,
    /// subscribe messages only: developer, trial or formal
    #[serde(default)]
    pub miniprogram_state: Option<String>,
    /// subscribe messages only: zh_CN, en_US, zh_HK or zh_TW
    #[serde(default)]
    pub lang: Option<String>,
    /// template messages only: freshest (default) or expiring_first
    #[serde(default)]
    #[schema(value_type = Option<FormidPick>)]
    pub formid_pick: Option<String>,
    /// a repeat with the same key within 24 hours creates nothing
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128)]
    pub idempotency_key: Option<String>,
    /// RFC 3339; a time in the future schedules the message, otherwise it is sent now
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub send_at: Option<String>,
}

/// A triggered message that can be stored and sent.
#[derive(Clone, Debug)]
pub struct MessageSpec {
    pub openid: String,
    pub content: Content,
    pub idempotency_key: Option<String>,
    /// As requested; the message waits for it only when it is in the future.
    pub send_at: Option<DateTime<Utc>>,
}

impl MessageSpec {
    pub fn parse(req: MessageRequest) -> Result<Self, FieldError> {
        check_no_nul(
            &[
                ("openid", Some(&req.openid)),
                ("template_id", Some(&req.template_id)),
                ("page", req.page.as_ref()),
                ("emphasis_keyword", req.emphasis_keyword.as_ref()),
                ("idempotency_key", req.idempotency_key.as_ref()),
            ],
            &[("data", &req.data)],
        )?;
        if req.openid.is_empty() || req.openid.len() > MAX_OPENID {
            return Err(FieldError::new(
                "invalid_openid",
                format!("openid must be 1 to {MAX_OPENID} characters"),
            ));
        }
        let kind = parse_kind(&req.kind)?;
        let content = Content::parse(
            kind,
            ContentFields {
                template_id: req.template_id,
                page: req.page,
                data: req.data,
                emphasis_keyword: req.emphasis_keyword,
                miniprogram_state: req.miniprogram_state,
                lang: req.lang,
                formid_pick: req.formid_pick,
            },
        )?;
        check_builtin_placeholders(&content.data)?;
        if let Some(key) = &req.idempotency_key {
            if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY {
                return Err(FieldError::new(
                    "invalid_idempotency_key",
                    format!("idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY} characters"),
                ));
            }
        }
        let send_at = match &req.send_at {
            None => None,
            Some(raw) => Some(
                DateTime::parse_from_rfc3339(raw)
                    .map_err(|e| {
                        FieldError::new(
                            "invalid_send_at",
                            format!("send_at {raw:?} is not an RFC 3339 time ({e})"),
                        )
                    })?
                    .with_timezone(&Utc),
            ),
        };
        Ok(Self {
            openid: req.openid,
            content,
            idempotency_key: req.idempotency_key,
            send_at,
        })
    }

    /// Sent now (its credit claimed in the request) unless `send_at` is in the future.
    pub fn sends_now(&self, now: DateTime<Utc>) -> bool {
        self.send_at.is_none_or(|at| at <= now)
    }
}

/// The SHA-256 of a JSON body with its object keys sorted at every level: two bodies that
/// differ only in key order or whitespace are the same request.
pub fn body_hash(body: &Value) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    fn write(value: &Value, out: &mut Vec<u8>) {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                out.push(b'{');
                for (i, (key, value)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(Value::String(key.clone()).to_string().as_bytes());
                    out.push(b':');
                    write(value, out);
                }
                out.push(b'}');
            }
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(item, out);
                }
                out.push(b']');
            }
            scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
        }
    }
    let mut canonical = Vec::new();
    write(body, &mut canonical);
    Sha256::digest(&canonical).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn request(overrides: Value) -> MessageRequest {
        let mut base = json!({
            "openid": "o1", "kind": "subscribe", "template_id": "TPL",
            "data": {"thing1": {"value": "shipped on {{date}}"}}
        });
        for (k, v) in overrides.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn a_subscribe_message_parses_and_sends_now_without_send_at() {
        let spec = MessageSpec::parse(request(json!({}))).unwrap();
        assert_eq!(spec.content.kind, CampaignKind::Subscribe);
        assert!(spec.sends_now(Utc::now()));
    }

    #[test]
    fn send_at_in_the_future_schedules_and_in_the_past_sends_now() {
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).unwrap();
        let later =
            MessageSpec::parse(request(json!({"send_at": "2026-11-27T17:00:00+08:00"}))).unwrap();
        assert_eq!(
            later.send_at,
            Some(Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap())
        );
        assert!(!later.sends_now(now));
        let past = MessageSpec::parse(request(json!({"send_at": "2026-11-27T07:00:00Z"}))).unwrap();
        assert!(past.sends_now(now));
    }

    #[test]
    fn each_invalid_field_is_named() {
        let cases = [
            (json!({"openid": ""}), "invalid_openid"),
            (json!({"openid": "o".repeat(129)}), "invalid_openid"),
            (json!({"kind": "sms"}), "invalid_kind"),
            (json!({"template_id": ""}), "invalid_template_id"),
            (json!({"page": "p".repeat(1025)}), "invalid_page"),
            (json!({"data": {}}), "invalid_data"),
            (json!({"data": {"thing1": {"value": 1}}}), "invalid_data"),
            (
                json!({"data": {"thing1": {"value": "{{nickname}}"}}}),
                "unknown_placeholder",
            ),
            (
                json!({"emphasis_keyword": "keyword1.DATA"}),
                "invalid_field",
            ),
            (json!({"formid_pick": "freshest"}), "invalid_field"),
            (json!({"lang": "fr_FR"}), "invalid_field"),
            (json!({"miniprogram_state": "beta"}), "invalid_field"),
            (
                json!({"kind": "template", "formid_pick": "random"}),
                "invalid_formid_pick",
            ),
            (
                json!({"kind": "template", "lang": "zh_CN"}),
                "invalid_field",
            ),
            (json!({"idempotency_key": ""}), "invalid_idempotency_key"),
            (
                json!({"idempotency_key": "k".repeat(129)}),
                "invalid_idempotency_key",
            ),
            (json!({"send_at": "tomorrow"}), "invalid_send_at"),
            (json!({"openid": "o\u{0}"}), "invalid_text"),
            (json!({"idempotency_key": "k\u{0}"}), "invalid_text"),
            (
                json!({"data": {"thing1": {"value": "\u{0}"}}}),
                "invalid_text",
            ),
        ];
        for (overrides, code) in cases {
            let err = MessageSpec::parse(request(overrides.clone())).unwrap_err();
            assert_eq!(err.code, code, "{overrides} → {}", err.message);
        }
    }

    #[test]
    fn bodies_differing_in_key_order_or_spacing_hash_the_same() {
        let a: Value =
            serde_json::from_str(r#"{"a": 1, "b": {"y": [1, "x"], "x": null}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b":{"x":null,"y":[1,"x"]},"a":1}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"b":{"x":null,"y":[1,"y"]},"a":1}"#).unwrap();
        assert_eq!(body_hash(&a), body_hash(&b));
        assert_ne!(body_hash(&a), body_hash(&c));
    }
}
