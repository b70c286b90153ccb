//! What a formId (or prepay_id) is, and the one place its expiry is computed.
//!
//! The shapes come from device practice (WeChat never documented them): Android gives a
//! 13-digit millisecond timestamp, iOS 32 hex digits (some versions the 36-character
//! hyphenated form), the developer tools a fixed placeholder.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::Serialize;

/// How long WeChat honours a formId or prepay_id.
pub const CREDIT_VALIDITY: Duration = Duration::days(7);
/// A prepay_id from a WeChat Pay order may be used this many times.
pub const PREPAY_USES: i16 = 3;
/// The developer tools' placeholder, which WeChat never accepts.
pub const DEVTOOLS_MOCK: &str = "the formId is a mock one";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditKind {
    Formid,
    Prepay,
}

impl CreditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Formid => "formid",
            Self::Prepay => "prepay",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    Malformed,
    Mock,
    Expired,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Mock => "mock",
            Self::Expired => "expired",
        }
    }
}

/// A usable credit, ready to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credit {
    pub value: String,
    pub kind: CreditKind,
    pub uses: i16,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl Credit {
    /// Parses a formId as posted by a mini-program, received at `now`.
    pub fn parse_form_id(raw: &str, now: DateTime<Utc>) -> Result<Self, RejectReason> {
        if raw == DEVTOOLS_MOCK || raw.starts_with("requestFormId:fail") {
            return Err(RejectReason::Mock);
        }
        let created_at = if is_android(raw) {
            let millis: i64 = raw.parse().map_err(|_| RejectReason::Malformed)?;
            let stamped = Utc
                .timestamp_millis_opt(millis)
                .single()
                .ok_or(RejectReason::Malformed)?;
            // A timestamp in the future (a skewed phone clock) says nothing: count from receipt.
            let created = stamped.min(now);
            if now - created > CREDIT_VALIDITY {
                return Err(RejectReason::Expired);
            }
            created
        } else if is_ios(raw) {
            now
        } else {
            return Err(RejectReason::Malformed);
        };
        Ok(Self {
            value: raw.to_string(),
            kind: CreditKind::Formid,
            uses: 1,
            created_at,
            expires_at: created_at + CREDIT_VALIDITY,
        })
    }

    /// Parses a prepay_id from a WeChat Pay order: `wx` + more of `[0-9A-Za-z_-]`, 8–64 long.
    pub fn parse_prepay_id(raw: &str, now: DateTime<Utc>) -> Result<Self, RejectReason> {
        let well_formed = (8..=64).contains(&raw.len())
            && raw.starts_with("wx")
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !well_formed {
            return Err(RejectReason::Malformed);
        }
        Ok(Self {
            value: raw.to_string(),
            kind: CreditKind::Prepay,
            uses: PREPAY_USES,
            created_at: now,
            expires_at: now + CREDIT_VALIDITY,
        })
    }
}

fn is_android(raw: &str) -> bool {
    raw.len() == 13 && raw.bytes().all(|b| b.is_ascii_digit())
}

fn is_ios(raw: &str) -> bool {
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    match raw.len() {
        32 => hex(raw),
        36 => {
            let groups: Vec<&str> = raw.split('-').collect();
            groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]) && groups.iter().all(|g| hex(g))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    #[test]
    fn android_formid_expires_seven_days_after_its_timestamp() {
        let created = now() - Duration::hours(30);
        let raw = created.timestamp_millis().to_string();
        let credit = Credit::parse_form_id(&raw, now()).unwrap();
        assert_eq!(credit.created_at, created);
        assert_eq!(credit.expires_at, created + Duration::days(7));
        assert_eq!(credit.uses, 1);
    }

    #[test]
    fn android_formid_older_than_seven_days_is_expired() {
        let raw = (now() - Duration::days(7) - Duration::seconds(1))
            .timestamp_millis()
            .to_string();
        assert_eq!(
            Credit::parse_form_id(&raw, now()),
            Err(RejectReason::Expired)
        );
    }

    #[test]
    fn android_timestamp_in_the_future_counts_from_receipt() {
        let raw = (now() + Duration::days(3)).timestamp_millis().to_string();
        let credit = Credit::parse_form_id(&raw, now()).unwrap();
        assert_eq!(credit.expires_at, now() + Duration::days(7));
    }

    #[test]
    fn ios_formids_in_both_shapes_are_accepted_and_count_from_receipt() {
        for raw in [
            "0123456789abcdefABCDEF0123456789",
            "01234567-89ab-cdef-ABCD-EF0123456789",
        ] {
            let credit = Credit::parse_form_id(raw, now()).unwrap();
            assert_eq!(credit.created_at, now(), "{raw}");
            assert_eq!(credit.expires_at, now() + Duration::days(7));
        }
    }

    #[test]
    fn mocks_and_client_failures_are_refused_as_mock() {
        for raw in [DEVTOOLS_MOCK, "requestFormId:fail timeout"] {
            assert_eq!(
                Credit::parse_form_id(raw, now()),
                Err(RejectReason::Mock),
                "{raw}"
            );
        }
    }

    #[test]
    fn other_shapes_are_malformed() {
        for raw in [
            "",
            "123456789012",
            "12345678901234",
            "123456789012a",
            "0123456789abcdef0123456789abcdeg",
            "0123456789abcdef0123456789abcdef0",
            "01234567-89ab-cdef-abcd-ef012345678",
            "0123456789-ab-cdef-abcd-ef01234567",
            "undefined",
            "１２３４５６７８９０１２３",
        ] {
            assert_eq!(
                Credit::parse_form_id(raw, now()),
                Err(RejectReason::Malformed),
                "{raw:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics_and_accepts_only_the_known_shapes(raw in "\\PC{0,60}") {
            match Credit::parse_form_id(&raw, now()) {
                Ok(c) => {
                    proptest::prop_assert!(is_android(&raw) || is_ios(&raw));
                    proptest::prop_assert!(c.expires_at > now() && c.expires_at <= now() + CREDIT_VALIDITY);
                }
                Err(RejectReason::Mock) => proptest::prop_assert!(raw == DEVTOOLS_MOCK || raw.starts_with("requestFormId:fail")),
                Err(_) => {}
            }
            let _ = Credit::parse_prepay_id(&raw, now());
        }

        #[test]
        fn every_recent_android_timestamp_is_accepted(age_ms in 0i64..(7 * 24 * 3600 * 1000)) {
            let created = now() - Duration::milliseconds(age_ms);
            let credit = Credit::parse_form_id(&created.timestamp_millis().to_string(), now()).unwrap();
            proptest::prop_assert_eq!(credit.expires_at, created + CREDIT_VALIDITY);
        }
    }

    #[test]
    fn prepay_ids_have_three_uses() {
        let credit =
            Credit::parse_prepay_id("wx201410272009395522657a690389285100", now()).unwrap();
        assert_eq!(credit.kind, CreditKind::Prepay);
        assert_eq!(credit.uses, 3);
        assert_eq!(credit.expires_at, now() + Duration::days(7));
        for bad in [
            "wx12345",
            "ab12345678",
            "wx1234567!",
            &format!("wx{}", "a".repeat(63)),
        ] {
            assert_eq!(
                Credit::parse_prepay_id(bad, now()),
                Err(RejectReason::Malformed),
                "{bad}"
            );
        }
    }
}
