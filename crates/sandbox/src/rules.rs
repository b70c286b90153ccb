//! WeChat's documented rules as pure functions: errcodes and their messages, the shape of
//! tokens and ids, and the typed value limits of subscribe-message data.

use rand::distributions::Alphanumeric;
use rand::Rng;
use serde_json::Value;

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
/// `{"value": "<string>"}` and the value obeys the limits of its key's type (the key
/// without its trailing digits: `thing1` → `thing`). Failures are 47003 naming the field.
pub(super) fn check_subscribe_data(data: Option<&Value>) -> Result<(), WxErr> {
    let Some(obj) = data.and_then(Value::as_object) else {
        return Err(WxErr::detail(ARGUMENT_INVALID, "data invalid"));
    };
    if obj.is_empty() {
        return Err(WxErr::detail(ARGUMENT_INVALID, "data is empty"));
    }
    for (key, entry) in obj {
        let ok = entry
            .get("value")
            .and_then(Value::as_str)
            .is_some_and(|v| subscribe_value_ok(key, v));
        if !ok {
            return Err(WxErr::detail(
                ARGUMENT_INVALID,
                format!("data.{key}.value invalid"),
            ));
        }
    }
    Ok(())
}

/// The per-type limits from WeChat's subscribe-message documentation. Types whose format
/// is loose there (time, date, amount) are only checked for a digit and a sane length.
pub(super) fn subscribe_value_ok(key: &str, value: &str) -> bool {
    let kind = key.trim_end_matches(|c: char| c.is_ascii_digit());
    let n = value.chars().count();
    if n == 0 {
        return false;
    }
    match kind {
        "thing" => n <= 20,
        "number" => n <= 32 && is_decimal(value),
        "letter" => n <= 32 && value.chars().all(|c| c.is_ascii_alphabetic()),
        "symbol" => n <= 5 && value.chars().all(|c| !c.is_alphanumeric()),
        "character_string" => n <= 32 && value.chars().all(|c| c.is_ascii_graphic()),
        "phone_number" => {
            n <= 17
                && value
                    .chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | ' ' | '(' | ')'))
        }
        "car_number" => n <= 8,
        // 10 Chinese characters, or 20 letters/symbols.
        "name" => n <= 20 && (value.is_ascii() || n <= 10),
        "phrase" => n <= 5,
        "time" | "date" | "amount" => n <= 32 && value.chars().any(|c| c.is_ascii_digit()),
        _ => n <= 20,
    }
}

/// Digits with at most one inner decimal point ("number: 32 digits, may have decimals").
fn is_decimal(v: &str) -> bool {
    let mut parts = v.split('.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    if parts.next().is_some() || int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn value_limits_follow_the_key_type() {
        assert!(subscribe_value_ok("thing1", "Your order shipped"));
        assert!(subscribe_value_ok("thing1", &"字".repeat(20)));
        assert!(!subscribe_value_ok("thing1", &"x".repeat(21)));
        assert!(subscribe_value_ok("number2", "12345.67"));
        assert!(!subscribe_value_ok("number2", "12a"));
        assert!(!subscribe_value_ok("number2", &"1".repeat(33)));
        assert!(subscribe_value_ok("phrase3", "已发货"));
        assert!(!subscribe_value_ok("phrase3", "shipped"));
        assert!(subscribe_value_ok("time4", "2026-11-24 10:00"));
        assert!(subscribe_value_ok("character_string5", "ORDER-2026-0001"));
        assert!(!subscribe_value_ok("letter6", "abc1"));
        assert!(!subscribe_value_ok("thing1", ""));
        assert!(subscribe_value_ok("whatever", "short"));
    }

    #[test]
    fn data_must_be_value_objects() {
        assert!(check_subscribe_data(Some(&json!({"thing1": {"value": "hi"}}))).is_ok());
        let err = check_subscribe_data(Some(&json!({"thing1": {"value": 3}}))).unwrap_err();
        assert_eq!(err.code, ARGUMENT_INVALID);
        assert!(err.msg.contains("data.thing1.value"));
        assert!(check_subscribe_data(Some(&json!({}))).is_err());
        assert!(check_subscribe_data(Some(&json!("x"))).is_err());
        assert!(check_subscribe_data(None).is_err());
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
