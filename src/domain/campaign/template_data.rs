//! A campaign's `data` with `{{placeholders}}`: which placeholders it uses, and the values
//! one user receives.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};

/// Built-in placeholders, resolvable for every user.
pub const BUILTIN_PLACEHOLDERS: [&str; 3] = ["openid", "date", "datetime"];

/// The `{{name}}` placeholders used anywhere in data values.
pub fn placeholders(data: &Map<String, Value>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for entry in data.values() {
        if let Some(Value::String(s)) = entry.get("value") {
            let mut rest = s.as_str();
            while let Some(start) = rest.find("{{") {
                let after = &rest[start + 2..];
                let Some(end) = after.find("}}") else { break };
                found.insert(after[..end].trim().to_string());
                rest = &after[end + 2..];
            }
        }
    }
    found
}

/// Whether a value holds a `{{placeholder}}`, so differs per user or per send.
pub fn has_placeholder(value: &str) -> bool {
    value
        .find("{{")
        .is_some_and(|start| value[start + 2..].contains("}}"))
}

/// Fills placeholders for one user. Unresolvable ones (not possible after `parse`) stay as written.
pub fn render_data(
    data: &Map<String, Value>,
    openid: &str,
    vars: &Map<String, Value>,
    now: DateTime<Utc>,
    timezone: Tz,
) -> Map<String, Value> {
    let local = now.with_timezone(&timezone);
    let lookup = |name: &str| -> Option<String> {
        match name {
            "openid" => Some(openid.to_string()),
            "date" => Some(local.format("%Y-%m-%d").to_string()),
            "datetime" => Some(local.format("%Y-%m-%d %H:%M:%S").to_string()),
            _ => vars.get(name).map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
        }
    };
    data.iter()
        .map(|(key, entry)| {
            let mut entry = entry.clone();
            if let Some(Value::String(template)) = entry.get("value") {
                let rendered = render_text(template, &lookup);
                entry["value"] = Value::String(rendered);
            }
            (key.clone(), entry)
        })
        .collect()
}

fn render_text(template: &str, lookup: &impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        match lookup(after[..end].trim()) {
            Some(value) => out.push_str(&value),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn rendering_fills_vars_and_builtins_in_the_schedule_timezone() {
        let data = json!({"a": {"value": "hi {{nickname}} ({{openid}})"}, "b": {"value": "{{date}} {{datetime}}", "color": "#f00"}});
        let vars = json!({"nickname": "Tom"});
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 17, 0, 5).unwrap();
        let out = render_data(
            data.as_object().unwrap(),
            "o1",
            vars.as_object().unwrap(),
            now,
            chrono_tz::Asia::Shanghai,
        );
        assert_eq!(out["a"]["value"], "hi Tom (o1)");
        assert_eq!(out["b"]["value"], "2026-11-26 2026-11-26 01:00:05");
        assert_eq!(out["b"]["color"], "#f00");
    }
}
