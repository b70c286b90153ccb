//! WeChat's documented rules as pure functions: errcodes and their messages, the shape of
//! tokens and ids, and the typed value limits of subscribe-message data.

use rand::distributions::Alphanumeric;
use rand::Rng;
use serde_json::Value;

use super::data_rules::subscribe_value_ok;
use super::SubscribeTemplate;

/// An answer WeChat gives as `{"errcode": code, "errmsg": msg}` (always HTTP 200).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WxErr {
    pub code: i64,
    pub msg: String,
}

impl WxErr {
    /// The errcode with WeChat's usual message.
    pub fn new(code: i64) -> Self {
        WxErr {
            code,
            msg: errmsg(code).to_string(),
        }
    }

    /// The errcode with WeChat's message followed by a detail, as WeChat does for 47003
    /// ("argument invalid! data.thing1.value invalid").
    pub fn detail(code: i64, detail: impl AsRef<str>) -> Self {
        WxErr {
            code,
            msg: format!("{} {}", errmsg(code), detail.as_ref()),
        }
    }
}

// Documented errcodes.
pub(super) const SYSTEM_BUSY: i64 = -1;
pub(super) const INVALID_CREDENTIAL: i64 = 40001;
pub(super) const INVALID_GRANT_TYPE: i64 = 40002;
pub(super) const INVALID_OPENID: i64 = 40003;
pub(super) const INVALID_APPID: i64 = 40013;
pub(super) const INVALID_ACCESS_TOKEN: i64 = 40014;
pub(super) const INVALID_CODE: i64 = 40029;
pub(super) const INVALID_TEMPLATE_ID: i64 = 40037;
pub(super) const INVALID_URL: i64 = 40066;
pub(super) const INVALID_SECRET: i64 = 40125;
pub(super) const CODE_USED: i64 = 40163;
pub(super) const ACCESS_TOKEN_MISSING: i64 = 41001;
pub(super) const APPID_MISSING: i64 = 41002;
pub(super) const SECRET_MISSING: i64 = 41004;
pub(super) const CODE_MISSING: i64 = 41008;
pub(super) const INVALID_FORM_ID: i64 = 41028;
pub(super) const FORM_ID_USED: i64 = 41029;
pub(super) const INVALID_PAGE: i64 = 41030;
pub(super) const ACCESS_TOKEN_EXPIRED: i64 = 42001;
pub(super) const USER_NOT_SUBSCRIBED: i64 = 43101;
pub(super) const DAILY_QUOTA: i64 = 45009;
pub(super) const API_UNSUPPORTED: i64 = 45103;
pub(super) const DATA_FORMAT_ERROR: i64 = 47001;
pub(super) const ARGUMENT_INVALID: i64 = 47003;

/// WeChat's English errmsg for an errcode (close to what api.weixin.qq.com answers).
pub(super) fn errmsg(code: i64) -> &'static str {
    match code {
        0 => "ok",
        SYSTEM_BUSY => "system error",
        INVALID_CREDENTIAL => "invalid credential, access_token is invalid or not latest",
        INVALID_GRANT_TYPE => "invalid grant_type",
        INVALID_OPENID => "invalid openid",
        INVALID_APPID => "invalid appid",
        INVALID_ACCESS_TOKEN => "invalid access_token",
        INVALID_CODE => "invalid code",
        INVALID_TEMPLATE_ID => "invalid template_id",
        INVALID_URL => "invalid url",
        INVALID_SECRET => "invalid appsecret",
        CODE_USED => "code been used",
        40164 => "invalid ip, not in whitelist",
        40226 => "high risk user",
        ACCESS_TOKEN_MISSING => "access_token missing",
        APPID_MISSING => "appid missing",
        SECRET_MISSING => "appsecret missing",
        CODE_MISSING => "missing code",
        INVALID_FORM_ID => "invalid form id",
        FORM_ID_USED => "form id used count reach limit",
        INVALID_PAGE => "invalid page",
        ACCESS_TOKEN_EXPIRED => "access_token expired",
        USER_NOT_SUBSCRIBED => "user refuse to accept the msg",
        DAILY_QUOTA => "reach max api daily quota limit",
        45011 => "api minute-quota reach limit  mustslower  retry next minute",
        API_UNSUPPORTED => "This API has been unsupported",
        45109 => "this api has been deprecated",
        DATA_FORMAT_ERROR => "data format error",
        ARGUMENT_INVALID => "argument invalid!",
        _ => "sandbox injected error",
    }
}

/// WeChat appends a request id to every errmsg; clients must not parse errmsg, and this
/// keeps tests from matching it exactly.
pub(super) fn with_rid(msg: &str) -> String {
    let mut rng = rand::thread_rng();
    format!(
        "{msg} rid: {:08x}-{:08x}-{:08x}",
        rng.gen::<u32>(),
        rng.gen::<u32>(),
        rng.gen::<u32>()
    )
}

pub(super) fn random_alnum(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub(super) fn random_hex(len: usize) -> String {
    const HEX: &[u8] = b"0123456789abcdef";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from(HEX[rng.gen_range(0..16)]))
        .collect()
}

/// Real access tokens are long strings of `[A-Za-z0-9_-]`; 96 alphanumerics look alike.
pub(super) fn new_access_token() -> String {
    random_alnum(96)
}

/// Whether a string could be an access token at all. Anything else (empty, a few
/// characters, spaces, quotes...) gets 40014 rather than 40001.
pub(super) fn token_syntax_ok(token: &str) -> bool {
    (16..=512).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `session_key` is 16 random bytes, base64: 24 characters ending in `==`.
pub(super) fn new_session_key() -> String {
    format!("{}==", random_alnum(22))
}

/// The page part of a `page` value: WeChat matches the path, the query may vary.
pub(super) fn page_path(page: &str) -> &str {
    let path = page.split('?').next().unwrap_or(page);
    path.trim_start_matches('/')
}

/// Valid `miniprogram_state` values (absent means `formal`).
pub(super) fn miniprogram_state_ok(state: &str) -> bool {
    matches!(state, "developer" | "trial" | "formal")
}

/// Valid `lang` values (absent means `zh_CN`).
pub(super) fn lang_ok(lang: &str) -> bool {
    matches!(lang, "zh_CN" | "en_US" | "zh_HK" | "zh_TW")
}

/// Checks subscribe-message `data` the way WeChat does: every entry is
/// `{"value": "<string>"}` obeying the rule of its key's type (`data_rules`). When the
/// app's template is known (`/sandbox/templates`), each of its keywords must be filled,
/// enum values must be on its list, and keys it lacks are ignored, as WeChat ignores
/// them. Failures are 47003 naming the field.
pub(super) fn check_subscribe_data(
    data: Option<&Value>,
    template: Option<&SubscribeTemplate>,
) -> Result<(), WxErr> {
    let Some(obj) = data.and_then(Value::as_object) else {
        return Err(WxErr::detail(ARGUMENT_INVALID, "data invalid"));
    };
    if obj.is_empty() {
        return Err(WxErr::detail(ARGUMENT_INVALID, "data is empty"));
    }
    if let Some(t) = template {
        if let Some(key) = t.keyword_keys().find(|k| !obj.contains_key(*k)) {
            return Err(WxErr::detail(
                ARGUMENT_INVALID,
                format!("data.{key}.value is empty"),
            ));
        }
    }
    for (key, entry) in obj {
        if template.is_some_and(|t| !t.keyword_keys().any(|k| k == key)) {
            continue;
        }
        let enum_values = template.and_then(|t| t.enum_values_of(key));
        let ok = entry
            .get("value")
            .and_then(Value::as_str)
            .is_some_and(|v| subscribe_value_ok(key, v, enum_values));
        if !ok {
            return Err(WxErr::detail(
                ARGUMENT_INVALID,
                format!("data.{key}.value invalid"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeywordEnumValues;
    use serde_json::json;

    #[test]
    fn data_must_be_value_objects() {
        assert!(check_subscribe_data(Some(&json!({"thing1": {"value": "hi"}})), None).is_ok());
        let err = check_subscribe_data(Some(&json!({"thing1": {"value": 3}})), None).unwrap_err();
        assert_eq!(err.code, ARGUMENT_INVALID);
        assert!(err.msg.contains("data.thing1.value"));
        assert!(check_subscribe_data(Some(&json!({})), None).is_err());
        assert!(check_subscribe_data(Some(&json!("x")), None).is_err());
        assert!(check_subscribe_data(None, None).is_err());
        let bad = check_subscribe_data(Some(&json!({"thing1": {"value": "x".repeat(21)}})), None);
        assert_eq!(bad.unwrap_err().code, ARGUMENT_INVALID);
    }

    #[test]
    fn a_known_template_needs_every_keyword_and_its_enum_values() {
        let t = SubscribeTemplate {
            template_id: "T".into(),
            title: "洗衣机故障提醒".into(),
            content: "完成时间:{{time1.DATA}}\n所在位置:{{enum_string2.DATA}}\n".into(),
            example: String::new(),
            kind: 2,
            keyword_enum_values: vec![KeywordEnumValues {
                keyword_code: "enum_string2.DATA".into(),
                enum_value_list: vec!["客厅".into(), "卧室".into()],
            }],
        };
        let check = |data: Value| check_subscribe_data(Some(&data), Some(&t));
        assert!(
            check(json!({"time1": {"value": "15:01"}, "enum_string2": {"value": "客厅"}})).is_ok()
        );
        let missing = check(json!({"time1": {"value": "15:01"}})).unwrap_err();
        assert!(
            missing.msg.contains("data.enum_string2.value is empty"),
            "{}",
            missing.msg
        );
        let off_list =
            check(json!({"time1": {"value": "15:01"}, "enum_string2": {"value": "厨房"}}));
        assert!(off_list
            .unwrap_err()
            .msg
            .contains("data.enum_string2.value invalid"));
        // A key the template lacks is ignored, whatever its value.
        assert!(check(
            json!({"time1": {"value": "15:01"}, "enum_string2": {"value": "卧室"},
                             "thing9": {"value": "x".repeat(40)}})
        )
        .is_ok());
    }

    #[test]
    fn token_syntax() {
        assert!(token_syntax_ok(&new_access_token()));
        assert!(!token_syntax_ok(""));
        assert!(!token_syntax_ok("abc"));
        assert!(!token_syntax_ok("has spaces in it, definitely not a token"));
    }

    #[test]
    fn page_path_ignores_query_and_leading_slash() {
        assert_eq!(page_path("/pages/index/index?x=1"), "pages/index/index");
        assert_eq!(page_path("pages/a"), "pages/a");
    }
}
