//! An app's subscribe templates as WeChat lists them (`gettemplate`), and what they mean
//! for a campaign's `data`: which keywords it must fill, and the rule each value obeys
//! (`template_rules`). Checked at creation for literal values, and per user after
//! rendering for values with placeholders (`DataRules`).

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::campaign::{has_placeholder, DataPolicy};
use super::template_rules::Rule;
use super::FieldError;

/// One `{{key.DATA}}` of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyword {
    /// The name used in `data`: `thing1`.
    pub key: String,
    /// The text before it on its line: `会议地点`.
    pub label: String,
    pub rule: Rule,
    /// For `enum` keywords: the values WeChat accepts.
    pub values: Vec<String>,
}

/// A subscribe template of an app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pub template_id: String,
    pub title: String,
    /// WeChat's `type`: 2 one-time, 3 long-term.
    pub kind: i32,
    pub example: String,
    pub keywords: Vec<Keyword>,
}

impl Template {
    /// Reads the keywords out of WeChat's `content` (`会议时间:{{date2.DATA}}\n...`), with the
    /// values of `keywordEnumValueList` (keyed `enum_string2.DATA`) for enum keywords.
    pub fn from_content(
        template_id: String,
        title: String,
        kind: i32,
        content: &str,
        example: String,
        enum_values: &HashMap<String, Vec<String>>,
    ) -> Self {
        let mut keywords: Vec<Keyword> = Vec::new();
        for line in content.lines() {
            let mut rest = line;
            while let Some(open) = rest.find("{{") {
                let after = &rest[open + 2..];
                let Some(close) = after.find("}}") else { break };
                let key = after[..close].trim().trim_end_matches(".DATA").to_string();
                let label = rest[..open]
                    .trim()
                    .trim_end_matches([':', '：'])
                    .trim()
                    .to_string();
                if !key.is_empty() && !keywords.iter().any(|k| k.key == key) {
                    let values = enum_values
                        .get(&format!("{key}.DATA"))
                        .or_else(|| enum_values.get(&key))
                        .cloned()
                        .unwrap_or_default();
                    keywords.push(Keyword {
                        rule: Rule::of_key(&key),
                        key,
                        label,
                        values,
                    });
                }
                rest = &after[close + 2..];
            }
        }
        Self {
            template_id,
            title,
            kind,
            example,
            keywords,
        }
    }

    fn keyword(&self, key: &str) -> Option<&Keyword> {
        self.keywords.iter().find(|k| k.key == key)
    }

    /// The creation check of a campaign's `data`: every keyword filled, no key the template
    /// lacks, and every value without placeholders within its rule (after cutting, under
    /// `truncate`). Values with placeholders are checked per user (`DataRules`).
    pub fn check_data(
        &self,
        data: &Map<String, Value>,
        policy: DataPolicy,
    ) -> Result<(), FieldError> {
        let bad = |m: String| FieldError::new("invalid_data", m);
        if let Some(key) = data.keys().find(|k| self.keyword(k).is_none()) {
            let known: Vec<&str> = self.keywords.iter().map(|k| k.key.as_str()).collect();
            return Err(bad(format!(
                "data.{key}: template {} has no keyword {key} (its keywords: {})",
                self.template_id,
                known.join(", ")
            )));
        }
        if let Some(k) = self.keywords.iter().find(|k| !data.contains_key(&k.key)) {
            return Err(bad(format!(
                "data.{} is missing: template {} needs it ({}, rule {})",
                k.key,
                self.template_id,
                k.label,
                k.rule.name()
            )));
        }
        for k in &self.keywords {
            let Some(value) = data
                .get(&k.key)
                .and_then(|e| e.get("value"))
                .and_then(Value::as_str)
            else {
                continue;
            };
            if has_placeholder(value) {
                continue;
            }
            check_value(k, value, policy).map_err(bad)?;
        }
        Ok(())
    }
}

/// One value against its keyword, cut first under `truncate`; the error names the key and
/// the rule.
fn check_value(k: &Keyword, value: &str, policy: DataPolicy) -> Result<(), String> {
    let value = match policy {
        DataPolicy::Truncate => k.rule.truncate(value),
        DataPolicy::Reject => value.into(),
    };
    k.rule
        .check(&value, &k.values)
        .map_err(|why| format!("data.{} breaks rule {}: {why}", k.key, k.rule.name()))
}

/// A run's view of its template, loaded once per run: cuts values under `truncate`, and
/// checks each user's rendered values that came from placeholders.
#[derive(Clone, Debug)]
pub struct DataRules {
    policy: DataPolicy,
    /// Every keyword the data fills (truncation applies to literal values too).
    keywords: Vec<Keyword>,
    /// Keys whose value holds a placeholder, so differs per user.
    per_user: Vec<String>,
}

impl DataRules {
    pub fn new(template: &Template, data: &Map<String, Value>, policy: DataPolicy) -> Self {
        let keywords: Vec<Keyword> = template
            .keywords
            .iter()
            .filter(|k| data.contains_key(&k.key))
            .cloned()
            .collect();
        let per_user = keywords
            .iter()
            .filter(|k| {
                data.get(&k.key)
                    .and_then(|e| e.get("value"))
                    .and_then(Value::as_str)
                    .is_some_and(has_placeholder)
            })
            .map(|k| k.key.clone())
            .collect();
        Self {
            policy,
            keywords,
            per_user,
        }
    }

    /// Whether users' rendered data must be checked before their credits are claimed.
    pub fn checks_each_user(&self) -> bool {
        !self.per_user.is_empty()
    }

    /// Cuts over-long values under `truncate` (literal values too: they were accepted at
    /// creation for being cut).
    pub fn truncate(&self, rendered: &mut Map<String, Value>) {
        if self.policy != DataPolicy::Truncate {
            return;
        }
        for k in &self.keywords {
            if let Some(Value::String(value)) =
                rendered.get_mut(&k.key).and_then(|e| e.get_mut("value"))
            {
                let cut = k.rule.truncate(value);
                if cut.len() != value.len() {
                    *value = cut.into_owned();
                }
            }
        }
    }

    /// Makes one user's rendered data ready to send: cuts it under `truncate`, then
    /// checks the values that came from placeholders.
    pub fn apply(&self, rendered: &mut Map<String, Value>) -> Result<(), String> {
        self.truncate(rendered);
        for k in self
            .keywords
            .iter()
            .filter(|k| self.per_user.contains(&k.key))
        {
            if let Some(value) = rendered
                .get(&k.key)
                .and_then(|e| e.get("value"))
                .and_then(Value::as_str)
            {
                k.rule.check(value, &k.values).map_err(|why| {
                    format!("data.{} breaks rule {}: {why}", k.key, k.rule.name())
                })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meeting() -> Template {
        let enums = HashMap::from([(
            "enum_string3.DATA".to_string(),
            vec!["客厅".to_string(), "卧室".to_string()],
        )]);
        Template::from_content(
            "TPL".into(),
            "报名结果通知".into(),
            2,
            "会议时间:{{date2.DATA}}\n会议地点：{{thing1.DATA}}\n所在位置:{{enum_string3.DATA}}\n",
            "会议时间:2016年8月8日\n会议地点:TIT会议室\n".into(),
            &enums,
        )
    }

    fn data(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn keywords_come_from_the_content_lines_with_their_labels() {
        let t = meeting();
        let keys: Vec<(&str, &str, &str)> = t
            .keywords
            .iter()
            .map(|k| (k.key.as_str(), k.label.as_str(), k.rule.name()))
            .collect();
        assert_eq!(
            keys,
            [
                ("date2", "会议时间", "date"),
                ("thing1", "会议地点", "thing"),
                ("enum_string3", "所在位置", "enum")
            ]
        );
        assert_eq!(t.keywords[2].values, ["客厅", "卧室"]);
        assert!(t.keywords[0].values.is_empty());
    }

    #[test]
    fn creation_refuses_missing_unknown_and_broken_literal_values() {
        let t = meeting();
        let ok = data(
            json!({"date2": {"value": "2026-12-01"}, "thing1": {"value": "三楼"},
                             "enum_string3": {"value": "卧室"}}),
        );
        assert!(t.check_data(&ok, DataPolicy::Reject).is_ok());

        let mut missing = ok.clone();
        missing.remove("thing1");
        let err = t.check_data(&missing, DataPolicy::Reject).unwrap_err();
        assert_eq!(err.code, "invalid_data");
        assert!(
            err.message.contains("data.thing1 is missing"),
            "{}",
            err.message
        );

        let mut unknown = ok.clone();
        unknown.insert("keyword1".into(), json!({"value": "x"}));
        let err = t.check_data(&unknown, DataPolicy::Reject).unwrap_err();
        assert!(
            err.message.contains("no keyword keyword1"),
            "{}",
            err.message
        );

        let mut long = ok.clone();
        long["thing1"] = json!({"value": "x".repeat(21)});
        let err = t.check_data(&long, DataPolicy::Reject).unwrap_err();
        assert_eq!(
            err.message,
            "data.thing1 breaks rule thing: at most 20 characters, got 21"
        );
        assert!(
            t.check_data(&long, DataPolicy::Truncate).is_ok(),
            "cut at send"
        );

        let mut bad_enum = ok.clone();
        bad_enum["enum_string3"] = json!({"value": "厨房"});
        let err = t.check_data(&bad_enum, DataPolicy::Truncate).unwrap_err();
        assert!(err.message.contains("rule enum"), "{}", err.message);

        let mut bad_date = ok;
        bad_date["date2"] = json!({"value": "tomorrow"});
        assert!(
            t.check_data(&bad_date, DataPolicy::Truncate).is_err(),
            "dates are never cut"
        );
    }

    #[test]
    fn values_with_placeholders_wait_for_each_user() {
        let t = meeting();
        let d = data(
            json!({"date2": {"value": "{{date}}"}, "thing1": {"value": "{{room}}"},
                            "enum_string3": {"value": "卧室"}}),
        );
        assert!(t.check_data(&d, DataPolicy::Reject).is_ok());
        let rules = DataRules::new(&t, &d, DataPolicy::Reject);
        assert!(rules.checks_each_user());

        let mut fine = data(
            json!({"date2": {"value": "2026-12-01"}, "thing1": {"value": "三楼"},
                                   "enum_string3": {"value": "卧室"}}),
        );
        assert!(rules.apply(&mut fine).is_ok());
        let mut long = fine.clone();
        long["thing1"] = json!({"value": "一".repeat(25)});
        assert_eq!(
            rules.apply(&mut long).unwrap_err(),
            "data.thing1 breaks rule thing: at most 20 characters, got 25"
        );

        let cutting = DataRules::new(&t, &d, DataPolicy::Truncate);
        assert!(cutting.apply(&mut long).is_ok());
        assert_eq!(long["thing1"]["value"], "一".repeat(20));
    }

    #[test]
    fn literal_data_needs_no_per_user_check_but_is_still_cut() {
        let t = meeting();
        let d = data(
            json!({"date2": {"value": "2026-12-01"}, "thing1": {"value": "x".repeat(30)},
                            "enum_string3": {"value": "卧室"}}),
        );
        let rules = DataRules::new(&t, &d, DataPolicy::Truncate);
        assert!(!rules.checks_each_user());
        let mut rendered = d.clone();
        rules.truncate(&mut rendered);
        assert_eq!(rendered["thing1"]["value"], "x".repeat(20));
    }
}
