//! The one classification of WeChat's errcodes into what the pipeline does about them.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    Success,
    /// The access_token is stale: refresh it and retry once.
    CredentialExpired,
    /// WeChat is busy or unreachable: back off and retry.
    Transient,
    /// This formId is unusable (wrong, expired or used): try the user's next one.
    BadFormId,
    /// This user cannot be reached (bad openid, no subscription): fail the delivery.
    BadUser,
    /// The campaign itself is wrong (template, page, data, API switched off): stop it.
    CampaignConfig,
    /// The app's daily quota is used up: pause until it resets.
    QuotaReached,
    /// Anything undocumented: fail this delivery and keep the errmsg.
    Unknown,
}

pub const SYSTEM_BUSY: i64 = -1;
pub const INVALID_CREDENTIAL: i64 = 40001;
pub const INVALID_OPENID: i64 = 40003;
pub const INVALID_ACCESS_TOKEN: i64 = 40014;
pub const INVALID_CODE: i64 = 40029;
pub const INVALID_TEMPLATE_ID: i64 = 40037;
pub const CODE_BEEN_USED: i64 = 40163;
pub const FORM_ID_INVALID: i64 = 41028;
pub const FORM_ID_USED: i64 = 41029;
pub const INVALID_PAGE: i64 = 41030;
pub const ACCESS_TOKEN_EXPIRED: i64 = 42001;
pub const USER_NOT_SUBSCRIBED: i64 = 43101;
pub const DAILY_QUOTA_REACHED: i64 = 45009;
pub const API_UNSUPPORTED: i64 = 45103;
pub const INVALID_DATA_JSON: i64 = 47001;
pub const INVALID_TEMPLATE_PARAMS: i64 = 47003;

pub fn classify(errcode: i64) -> ErrorClass {
    match errcode {
        0 => ErrorClass::Success,
        INVALID_CREDENTIAL | ACCESS_TOKEN_EXPIRED | INVALID_ACCESS_TOKEN => {
            ErrorClass::CredentialExpired
        }
        SYSTEM_BUSY => ErrorClass::Transient,
        FORM_ID_INVALID | FORM_ID_USED => ErrorClass::BadFormId,
        INVALID_OPENID | USER_NOT_SUBSCRIBED => ErrorClass::BadUser,
        DAILY_QUOTA_REACHED => ErrorClass::QuotaReached,
        INVALID_TEMPLATE_ID | INVALID_PAGE | INVALID_TEMPLATE_PARAMS | INVALID_DATA_JSON
        | API_UNSUPPORTED
        // 40013 bad appid, 40125 bad secret, 40164 IP not whitelisted, 48001 API not
        // authorised, 45109 uniform_send withdrawn: nothing per user can fix these.
        | 40013 | 40125 | 40164 | 48001 | 45109 => ErrorClass::CampaignConfig,
        _ => ErrorClass::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_code_has_its_class() {
        let table = [
            (0, ErrorClass::Success),
            (40001, ErrorClass::CredentialExpired),
            (42001, ErrorClass::CredentialExpired),
            (40014, ErrorClass::CredentialExpired),
            (-1, ErrorClass::Transient),
            (41028, ErrorClass::BadFormId),
            (41029, ErrorClass::BadFormId),
            (40003, ErrorClass::BadUser),
            (43101, ErrorClass::BadUser),
            (40037, ErrorClass::CampaignConfig),
            (41030, ErrorClass::CampaignConfig),
            (47003, ErrorClass::CampaignConfig),
            (47001, ErrorClass::CampaignConfig),
            (45103, ErrorClass::CampaignConfig),
            (45009, ErrorClass::QuotaReached),
            (99999, ErrorClass::Unknown),
        ];
        for (code, class) in table {
            assert_eq!(classify(code), class, "{code}");
        }
    }
}
