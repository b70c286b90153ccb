//! Campaigns as admins describe them: kind, template data with `{{placeholders}}`,
//! audience and schedule. `CampaignSpec::parse` turns a request into a value that is
//! known to be sendable; every refusal names the field.

mod schedule;
mod state;
mod template_data;

pub use schedule::{parse_cron, parse_timezone, Schedule, ScheduleSpec, DEFAULT_TIMEZONE};
pub use state::{
    AudienceType, CampaignKind, CampaignStatus, DataPolicy, FormidPick, PauseReason, RunStatus,
    Totals,
};
pub use template_data::{has_placeholder, placeholders, render_data, BUILTIN_PLACEHOLDERS};

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::FieldError;

/// Limits that keep one campaign row reasonable (the body limit caps them further).
pub const MAX_AUDIENCE: usize = 100_000;
const MAX_NAME: usize = 200;
const MAX_TEMPLATE_ID: usize = 128;
const MAX_PAGE: usize = 1024;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Audience {
    /// every user of the app when a run starts
    #[schema(title = "AudienceAll")]
    All,
    #[schema(title = "AudienceOpenids")]
    Openids {
        #[schema(min_items = 1, max_items = 100_000)]
        openids: Vec<String>,
    },
    #[schema(title = "AudienceUsers")]
    Users {
        #[schema(min_items = 1, max_items = 100_000)]
        users: Vec<AudienceUser>,
    },
}

impl Audience {
    pub fn audience_type(&self) -> AudienceType {
        match self {
            Self::All => AudienceType::All,
            Self::Openids { .. } => AudienceType::Openids,
            Self::Users { .. } => AudienceType::Users,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AudienceUser {
    #[schema(min_length = 1, max_length = 128)]
    pub openid: String,
    /// values of this user's `{{placeholders}}`
    #[serde(default)]
    #[schema(value_type = Object)]
    pub vars: Map<String, Value>,
}

/// One entry of a campaign's `data`, as WeChat takes it.
#[derive(utoipa::ToSchema)]
pub struct DataEntry {
    /// may hold `{{placeholders}}`
    pub value: String,
    pub color: Option<String>,
}

/// `POST /v1/campaigns` as received.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignRequest {
    #[schema(min_length = 1, max_length = 64)]
    pub appid: String,
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// `template` (formId + template/send) or `subscribe` (grant + subscribe/send)
    #[schema(value_type = CampaignKind, example = "subscribe")]
    pub kind: String,
    #[schema(min_length = 1, max_length = 128)]
    pub template_id: String,
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub page: Option<String>,
    /// `{"keyword1": {"value": "Hi {{nickname}}"}}`; built-ins `{{openid}}`, `{{date}}`, `{{datetime}}`
    #[schema(value_type = HashMap<String, DataEntry>, example = json!({"keyword1": {"value": "Hi {{openid}}"}}))]
    pub data: Value,
    /// template campaigns only
    #[serde(default)]
    pub emphasis_keyword: Option<String>,
    /// subscribe campaigns only: developer, trial or formal
    #[serde(default)]
    #[schema(pattern = "^(developer|trial|formal)$")]
    pub miniprogram_state: Option<String>,
    /// subscribe campaigns only: zh_CN, en_US, zh_HK or zh_TW
    #[serde(default)]
    #[schema(pattern = "^(zh_CN|en_US|zh_HK|zh_TW)$")]
    pub lang: Option<String>,
    /// template campaigns only: freshest (default) or expiring_first
    #[serde(default)]
    #[schema(value_type = Option<FormidPick>)]
    pub formid_pick: Option<String>,
    /// subscribe campaigns on a synced template: reject (default) or truncate (cut
    /// over-long thing, name, character_string, letter and number values to their limit)
    #[serde(default)]
    #[schema(value_type = Option<DataPolicy>)]
    pub data_policy: Option<String>,
    /// `{"type":"all"}`, `{"type":"openids","openids":[...]}` or `{"type":"users","users":[{"openid","vars"}]}`
    #[schema(value_type = Audience)]
    pub audience: Value,
    /// `{"type":"now"}`, `{"type":"at","at":RFC 3339}` or `{"type":"cron","cron":"0 30 9 * * *","timezone":"Asia/Shanghai"}`
    #[schema(value_type = ScheduleSpec)]
    pub schedule: Value,
    /// send even inside the app's quiet hours (default false)
    #[serde(default)]
    pub ignore_quiet_hours: Option<bool>,
}

/// A campaign that can be stored and sent.
#[derive(Clone, Debug)]
pub struct CampaignSpec {
    pub appid: String,
    pub name: String,
    pub kind: CampaignKind,
    pub template_id: String,
    pub page: Option<String>,
    pub data: Map<String, Value>,
    pub emphasis_keyword: Option<String>,
    pub miniprogram_state: Option<String>,
    pub lang: Option<String>,
    pub formid_pick: FormidPick,
    pub data_policy: DataPolicy,
    pub audience: Audience,
    pub schedule: Schedule,
    pub ignore_quiet_hours: bool,
}

/// What a message says and how it is sent: the part a campaign and a triggered message
/// share, parsed by the same rules for both.
#[derive(Clone, Debug)]
pub struct Content {
    pub kind: CampaignKind,
    pub template_id: String,
    pub page: Option<String>,
    pub data: Map<String, Value>,
    pub emphasis_keyword: Option<String>,
    pub miniprogram_state: Option<String>,
    pub lang: Option<String>,
    pub formid_pick: FormidPick,
}

/// The content fields of a request, as received (after `kind`, parsed first).
pub struct ContentFields {
    pub template_id: String,
    pub page: Option<String>,
    pub data: Value,
    pub emphasis_keyword: Option<String>,
    pub miniprogram_state: Option<String>,
    pub lang: Option<String>,
    pub formid_pick: Option<String>,
}

pub fn parse_kind(kind: &str) -> Result<CampaignKind, FieldError> {
    CampaignKind::parse(kind).ok_or_else(|| {
        FieldError::new(
            "invalid_kind",
            format!("kind {kind:?} must be template or subscribe"),
        )
    })
}

impl Content {
    /// Checks the template, page, data and the fields only one kind takes.
    pub fn parse(kind: CampaignKind, f: ContentFields) -> Result<Self, FieldError> {
        if f.template_id.is_empty() || f.template_id.len() > MAX_TEMPLATE_ID {
            return Err(FieldError::new(
                "invalid_template_id",
                format!("template_id must be 1 to {MAX_TEMPLATE_ID} characters"),
            ));
        }
        if let Some(page) = &f.page {
            if page.len() > MAX_PAGE {
                return Err(FieldError::new(
                    "invalid_page",
                    format!("page must be at most {MAX_PAGE} characters"),
                ));
            }
        }
        let data = parse_data(f.data)?;
        match kind {
            CampaignKind::Template => {
                if f.miniprogram_state.is_some() || f.lang.is_some() {
                    return Err(FieldError::new(
                        "invalid_field",
                        "miniprogram_state and lang are for subscribe messages only",
                    ));
                }
            }
            CampaignKind::Subscribe => {
                if f.emphasis_keyword.is_some() {
                    return Err(FieldError::new(
                        "invalid_field",
                        "emphasis_keyword is for template messages only",
                    ));
                }
                if f.formid_pick.is_some() {
                    return Err(FieldError::new(
                        "invalid_field",
                        "formid_pick is for template messages only",
                    ));
                }
                check_one_of(
                    "miniprogram_state",
                    &f.miniprogram_state,
                    &["developer", "trial", "formal"],
                )?;
                check_one_of("lang", &f.lang, &["zh_CN", "en_US", "zh_HK", "zh_TW"])?;
            }
        }
        let formid_pick = match f.formid_pick.as_deref() {
            None | Some("freshest") => FormidPick::Freshest,
            Some("expiring_first") => FormidPick::ExpiringFirst,
            Some(other) => {
                return Err(FieldError::new(
                    "invalid_formid_pick",
                    format!("formid_pick {other:?} must be freshest or expiring_first"),
                ))
            }
        };
        Ok(Self {
            kind,
            template_id: f.template_id,
            page: f.page.filter(|p| !p.is_empty()),
            data,
            emphasis_keyword: f.emphasis_keyword.filter(|k| !k.is_empty()),
            miniprogram_state: f.miniprogram_state,
            lang: f.lang,
            formid_pick,
        })
    }
}

impl CampaignSpec {
    pub fn parse(req: CampaignRequest) -> Result<Self, FieldError> {
        check_no_nul(
            &[
                ("name", Some(&req.name)),
                ("template_id", Some(&req.template_id)),
                ("page", req.page.as_ref()),
                ("emphasis_keyword", req.emphasis_keyword.as_ref()),
            ],
            &[
                ("data", &req.data),
                ("audience", &req.audience),
                ("schedule", &req.schedule),
            ],
        )?;
        let kind = parse_kind(&req.kind)?;
        if req.appid.is_empty() {
            return Err(FieldError::new("invalid_appid", "appid must not be empty"));
        }
        let name = crate::domain::parse_name(&req.name, MAX_NAME)?;
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
        if req.data_policy.is_some() && content.kind == CampaignKind::Template {
            return Err(FieldError::new(
                "invalid_field",
                "data_policy is for subscribe campaigns only",
            ));
        }
        let data_policy = match req.data_policy.as_deref() {
            None => DataPolicy::default(),
            Some(word) => DataPolicy::parse(word).ok_or_else(|| {
                FieldError::new(
                    "invalid_data_policy",
                    format!("data_policy {word:?} must be reject or truncate"),
                )
            })?,
        };
        let audience: Audience = serde_json::from_value(req.audience).map_err(|e| {
            FieldError::new(
                "invalid_audience",
                format!("audience is not valid ({e}); use {{\"type\":\"all\"}}, {{\"type\":\"openids\",\"openids\":[...]}} or {{\"type\":\"users\",\"users\":[{{\"openid\":...,\"vars\":{{...}}}}]}}"),
            )
        })?;
        check_audience(&audience)?;
        let schedule: ScheduleSpec = serde_json::from_value(req.schedule).map_err(|e| {
            FieldError::new(
                "invalid_schedule",
                format!("schedule is not valid ({e}); use now, at or cron"),
            )
        })?;
        let schedule = Schedule::parse(schedule)?;
        check_placeholders(&content.data, &audience)?;
        Ok(Self {
            appid: req.appid,
            name,
            kind: content.kind,
            template_id: content.template_id,
            page: content.page,
            data: content.data,
            emphasis_keyword: content.emphasis_keyword,
            miniprogram_state: content.miniprogram_state,
            lang: content.lang,
            formid_pick: content.formid_pick,
            data_policy,
            audience,
            schedule,
            ignore_quiet_hours: req.ignore_quiet_hours.unwrap_or(false),
        })
    }
}

/// Postgres text and jsonb cannot hold NUL (U+0000): refused before anything (such as a
/// campaign audience's users) is stored, naming the first field that holds one.
pub fn check_no_nul(
    texts: &[(&str, Option<&String>)],
    documents: &[(&str, &Value)],
) -> Result<(), FieldError> {
    let field = texts
        .iter()
        .find(|(_, text)| text.is_some_and(|t| t.contains('\0')))
        .map(|(field, _)| *field)
        .or_else(|| {
            documents
                .iter()
                .find(|(_, value)| json_has_nul(value))
                .map(|(field, _)| *field)
        });
    match field {
        Some(field) => Err(FieldError::new(
            "invalid_text",
            format!("{field} must not contain NUL (\\u0000) characters"),
        )),
        None => Ok(()),
    }
}

fn json_has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(json_has_nul),
        Value::Object(map) => map
            .iter()
            .any(|(key, value)| key.contains('\0') || json_has_nul(value)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

fn check_one_of(field: &str, value: &Option<String>, allowed: &[&str]) -> Result<(), FieldError> {
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => Err(FieldError::new(
            "invalid_field",
            format!("{field} {v:?} must be one of {}", allowed.join(", ")),
        )),
        _ => Ok(()),
    }
}

/// `data` must be `{"key": {"value": "..."}, ...}` (optionally with `color`).
fn parse_data(data: Value) -> Result<Map<String, Value>, FieldError> {
    let bad = |m: String| FieldError::new("invalid_data", m);
    let Value::Object(map) = data else {
        return Err(bad(
            "data must be an object like {\"keyword1\": {\"value\": \"...\"}}".into(),
        ));
    };
    if map.is_empty() {
        return Err(bad("data must name at least one keyword".into()));
    }
    for (key, entry) in &map {
        match entry.get("value") {
            Some(Value::String(_)) => {}
            _ => {
                return Err(bad(format!(
                    "data.{key} must be an object with a string \"value\""
                )))
            }
        }
    }
    Ok(map)
}

fn check_audience(audience: &Audience) -> Result<(), FieldError> {
    let bad = |m: String| FieldError::new("invalid_audience", m);
    let openids: Vec<&str> = match audience {
        Audience::All => return Ok(()),
        Audience::Openids { openids } => openids.iter().map(String::as_str).collect(),
        Audience::Users { users } => users.iter().map(|u| u.openid.as_str()).collect(),
    };
    if openids.is_empty() {
        return Err(bad("audience must name at least one user".into()));
    }
    if openids.len() > MAX_AUDIENCE {
        return Err(bad(format!(
            "audience may name at most {MAX_AUDIENCE} users; use type all for more"
        )));
    }
    if let Some(bad_id) = openids.iter().find(|o| o.is_empty() || o.len() > 128) {
        return Err(bad(format!("openid {bad_id:?} is not valid")));
    }
    let distinct: BTreeSet<&str> = openids.iter().copied().collect();
    if distinct.len() != openids.len() {
        return Err(bad("audience names the same openid twice".into()));
    }
    Ok(())
}

/// Every placeholder must resolve for every user: built-ins always do, others only
/// from per-user `vars`.
fn check_placeholders(data: &Map<String, Value>, audience: &Audience) -> Result<(), FieldError> {
    for name in placeholders(data) {
        if BUILTIN_PLACEHOLDERS.contains(&name.as_str()) {
            continue;
        }
        let resolvable = match audience {
            Audience::Users { users } => users.iter().all(|u| u.vars.contains_key(&name)),
            _ => false,
        };
        if !resolvable {
            return Err(FieldError::new(
                "unknown_placeholder",
                format!(
                    "placeholder {{{{{name}}}}} is neither built in ({}) nor in every user's vars",
                    BUILTIN_PLACEHOLDERS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Data without per-user `vars` (a triggered message): only the built-ins resolve.
pub fn check_builtin_placeholders(data: &Map<String, Value>) -> Result<(), FieldError> {
    match placeholders(data)
        .into_iter()
        .find(|name| !BUILTIN_PLACEHOLDERS.contains(&name.as_str()))
    {
        Some(name) => Err(FieldError::new(
            "unknown_placeholder",
            format!(
                "placeholder {{{{{name}}}}} is not built in; a message may use only {}",
                BUILTIN_PLACEHOLDERS.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    fn request(overrides: Value) -> CampaignRequest {
        let mut base = json!({
            "appid": "wxapp", "name": "digest", "kind": "template", "template_id": "T",
            "data": {"keyword1": {"value": "{{nickname}}"}, "keyword2": {"value": "{{datetime}}"}},
            "audience": {"type": "users", "users": [{"openid": "o1", "vars": {"nickname": "Tom"}}]},
            "schedule": {"type": "now"}
        });
        for (k, v) in overrides.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn a_complete_request_parses() {
        let spec = CampaignSpec::parse(request(json!({}))).unwrap();
        assert_eq!(spec.kind, CampaignKind::Template);
        assert_eq!(spec.formid_pick, FormidPick::Freshest);
        assert_eq!(spec.schedule.timezone, chrono_tz::Asia::Shanghai);
    }

    #[test]
    fn each_invalid_field_is_named() {
        let cases = [
            (json!({"kind": "sms"}), "invalid_kind"),
            (json!({"name": " "}), "invalid_name"),
            (json!({"template_id": ""}), "invalid_template_id"),
            (json!({"data": []}), "invalid_data"),
            (json!({"data": {"k": {"value": 3}}}), "invalid_data"),
            (
                json!({"audience": {"type": "everyone"}}),
                "invalid_audience",
            ),
            (
                json!({"audience": {"type": "openids", "openids": []}}),
                "invalid_audience",
            ),
            (
                json!({"audience": {"type": "openids", "openids": ["a", "a"]}}),
                "invalid_audience",
            ),
            (json!({"audience": {"type": "all"}}), "unknown_placeholder"),
            (
                json!({"schedule": {"type": "cron", "cron": "0 * * * *"}}),
                "invalid_cron",
            ),
            (
                json!({"schedule": {"type": "cron", "cron": "0 0 61 * * *"}}),
                "invalid_cron",
            ),
            (
                json!({"schedule": {"type": "cron", "cron": "0 0 9 * * *", "timezone": "Mars/Base"}}),
                "invalid_timezone",
            ),
            (
                json!({"schedule": {"type": "at", "at": "tomorrow"}}),
                "invalid_schedule",
            ),
            (json!({"schedule": {"type": "weekly"}}), "invalid_schedule"),
            (json!({"formid_pick": "random"}), "invalid_formid_pick"),
            (json!({"data_policy": "truncate"}), "invalid_field"),
            (
                json!({"kind": "subscribe", "data_policy": "cut"}),
                "invalid_data_policy",
            ),
            (json!({"lang": "en_US"}), "invalid_field"),
            (
                json!({"kind": "subscribe", "emphasis_keyword": "keyword1.DATA"}),
                "invalid_field",
            ),
            (
                json!({"kind": "subscribe", "lang": "fr_FR"}),
                "invalid_field",
            ),
        ];
        for (overrides, code) in cases {
            let err = CampaignSpec::parse(request(overrides.clone())).unwrap_err();
            assert_eq!(err.code, code, "{overrides} → {}", err.message);
        }
    }

    #[test]
    fn nul_characters_are_refused_in_every_stored_text() {
        let cases = [
            json!({"name": "a\u{0}b"}),
            json!({"template_id": "T\u{0}"}),
            json!({"page": "pages/\u{0}"}),
            json!({"emphasis_keyword": "\u{0}"}),
            json!({"data": {"keyword1": {"value": "hi\u{0}"}}}),
            json!({"data": {"key\u{0}": {"value": "hi"}}}),
            json!({"audience": {"type": "openids", "openids": ["o\u{0}"]}}),
            json!({"audience": {"type": "users", "users": [{"openid": "o1", "vars": {"nickname": "\u{0}"}}]}}),
            json!({"schedule": {"type": "cron", "cron": "0 0 9 * * *\u{0}"}}),
        ];
        for overrides in cases {
            let err = CampaignSpec::parse(request(overrides.clone())).unwrap_err();
            assert_eq!(err.code, "invalid_text", "{overrides} → {}", err.message);
        }
    }

    #[test]
    fn a_placeholder_missing_from_one_user_is_refused() {
        let err = CampaignSpec::parse(request(json!({"audience": {"type": "users", "users": [
            {"openid": "o1", "vars": {"nickname": "Tom"}}, {"openid": "o2"}
        ]}})))
        .unwrap_err();
        assert_eq!(err.code, "unknown_placeholder");
    }

    #[test]
    fn cron_firings_fall_on_whole_seconds() {
        let spec = CampaignSpec::parse(request(json!({"schedule":
            {"type": "cron", "cron": "0 0 3 * * *", "timezone": "Asia/Shanghai"}})))
        .unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap()
            + chrono::Duration::milliseconds(975);
        assert_eq!(
            spec.schedule.first_run(now),
            Some(Utc.with_ymd_and_hms(2026, 11, 25, 19, 0, 0).unwrap())
        );
        // A firing itself is not its own next one.
        let firing = Utc.with_ymd_and_hms(2026, 11, 25, 19, 0, 0).unwrap();
        assert_eq!(
            spec.schedule
                .next_after(firing + chrono::Duration::milliseconds(400)),
            Some(firing + chrono::Duration::days(1))
        );
    }

    #[test]
    fn cron_fires_in_its_timezone() {
        let spec = CampaignSpec::parse(request(json!({"schedule":
            {"type": "cron", "cron": "0 30 9 * * *", "timezone": "Asia/Shanghai"}})))
        .unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap();
        // 09:30 in Shanghai is 01:30 UTC.
        assert_eq!(
            spec.schedule.first_run(now),
            Some(Utc.with_ymd_and_hms(2026, 11, 25, 1, 30, 0).unwrap())
        );
        assert_eq!(
            spec.schedule
                .next_after(Utc.with_ymd_and_hms(2026, 11, 25, 1, 30, 0).unwrap()),
            Some(Utc.with_ymd_and_hms(2026, 11, 26, 1, 30, 0).unwrap())
        );
    }
}
