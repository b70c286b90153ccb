//! The delivery rules: what each WeChat answer to one send means for the delivery, its
//! credit and its campaign, as a pure decision (`decide`) the sender applies. The rules
//! are documented in `docs/delivery.md`.

use chrono::{DateTime, Days, NaiveTime, TimeZone, Utc};
use serde_json::{json, Value};

use crate::domain::campaign::CampaignKind;
use crate::domain::delivery::DeliveryStatus;
use crate::domain::message::MessageStatus;
use crate::store::deliveries::{Claimed, Outcome};
use crate::store::messages::MessageOutcome;
use crate::wechat::{
    client::{SendReceipt, WeChatError},
    errcode::{self, ErrorClass},
};

/// Transient failures (-1, 5xx, timeouts) are tried this often with the same credit.
pub const MAX_SEND_ATTEMPTS: i16 = 3;
/// A user's formIds tried per run when WeChat calls them invalid or used (41028 / 41029).
pub const MAX_FORMIDS_PER_USER_PER_RUN: i16 = 3;
/// When WeChat cannot be reached at all (no connection), nothing was sent: the delivery
/// waits this long and is tried again, however long the outage lasts.
pub const UNREACHABLE_RETRY_SECS: f64 = 10.0;

/// Why a campaign must stop, found while sending.
#[derive(Debug, Clone, PartialEq)]
pub enum CampaignStop {
    Failed(Value),
    QuotaReached(Value),
}

/// One delivery's result: its record, its credit effect, maybe a campaign stop.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    pub outcome: Outcome,
    pub effect: Effect,
    pub stop: Option<CampaignStop>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    None,
    InvalidateFormid(i64),
    ReturnFormid(i64),
    ReturnGrant(i64),
    ZeroGrant(i64),
}

/// What the pipeline does next after one send attempt.
#[derive(Debug, PartialEq)]
pub enum Next {
    Done(Delivered),
    RefreshTokenAndRetry,
    RetryAfterBackoff,
}

/// State of one delivery across its attempts.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub kind: CampaignKind,
    pub delivery: Claimed,
    pub attempts: i16,
    pub outcome_unknown: bool,
    pub token_refreshed: bool,
}

fn last_error(e: &WeChatError) -> Value {
    match e {
        WeChatError::Api { errcode, errmsg } => {
            let hint = (*errcode == errcode::API_UNSUPPORTED).then_some(
                "WeChat switched the template-message API off for this account (45103): use a subscribe campaign",
            );
            json!({"errcode": errcode, "errmsg": hint.map(str::to_string).unwrap_or_else(|| errmsg.clone())})
        }
        other => json!({"errcode": other.code_for_record(), "errmsg": other.to_string()}),
    }
}

/// The delivery rules (`docs/delivery.md`), as a pure decision over one send result.
pub fn decide(a: &Attempt, result: &Result<SendReceipt, WeChatError>, max_attempts: i16) -> Next {
    let d = &a.delivery;
    let template_kind = a.kind == CampaignKind::Template;
    let outcome = |status: DeliveryStatus, e: Option<&WeChatError>, drop_formid: bool| Outcome {
        id: d.id,
        status,
        errcode: e.map(WeChatError::code_for_record),
        errmsg: e.map(|e| match e {
            WeChatError::Api { errmsg, .. } => errmsg.clone(),
            other => other.to_string(),
        }),
        attempts: a.attempts,
        msg_id: None,
        outcome_unknown: a.outcome_unknown,
        drop_formid,
        retry_in_secs: 0.0,
    };
    let give_back = || match (template_kind, d.formid_id) {
        (true, Some(f)) => Effect::ReturnFormid(f),
        (false, _) => Effect::ReturnGrant(d.user_id),
        _ => Effect::None,
    };
    let e = match result {
        Ok(receipt) => {
            let mut o = outcome(DeliveryStatus::Sent, None, false);
            o.msg_id = receipt.msg_id.clone();
            o.errcode = Some("0".into());
            o.errmsg = Some("ok".into());
            return Next::Done(Delivered {
                outcome: o,
                effect: Effect::None,
                stop: None,
            });
        }
        Err(e) => e,
    };
    let done = |outcome, effect, stop| {
        Next::Done(Delivered {
            outcome,
            effect,
            stop,
        })
    };
    match e.class() {
        ErrorClass::Success => unreachable!("errcode 0 is never an error"),
        ErrorClass::CredentialExpired if !a.token_refreshed => Next::RefreshTokenAndRetry,
        ErrorClass::Transient => {
            // For subscribe messages only a clean refusal (-1, or never connected) is
            // retried: after a timeout or 5xx the user may have the message already.
            if !template_kind && e.outcome_unknown() {
                let mut o = outcome(DeliveryStatus::Failed, Some(e), false);
                o.errcode = Some("unknown_outcome".into());
                o.outcome_unknown = true;
                return done(o, Effect::None, None);
            }
            if a.attempts < max_attempts {
                Next::RetryAfterBackoff
            } else if matches!(e, WeChatError::Unreachable(_)) {
                // Never reached WeChat: wait for it rather than fail the user. A template
                // delivery keeps its formId; a subscribe grant goes back (it is claimed anew).
                let mut o = outcome(DeliveryStatus::Pending, Some(e), !template_kind);
                o.retry_in_secs = UNREACHABLE_RETRY_SECS;
                let effect = if template_kind {
                    Effect::None
                } else {
                    Effect::ReturnGrant(d.user_id)
                };
                done(o, effect, None)
            } else {
                done(
                    outcome(DeliveryStatus::Failed, Some(e), false),
                    Effect::None,
                    None,
                )
            }
        }
        ErrorClass::BadFormId => {
            let formid = d.formid_id.unwrap_or_default();
            // 41029 after a send whose outcome we never saw: that send got through.
            if e.errcode() == Some(errcode::FORM_ID_USED) && a.outcome_unknown {
                let mut o = outcome(DeliveryStatus::Sent, None, false);
                o.errcode = Some("0".into());
                o.errmsg = Some("ok (confirmed by 41029 after an unknown outcome)".into());
                return done(o, Effect::None, None);
            }
            if d.formids_tried < MAX_FORMIDS_PER_USER_PER_RUN {
                let mut o = outcome(DeliveryStatus::Pending, Some(e), true);
                o.outcome_unknown = false;
                done(o, Effect::InvalidateFormid(formid), None)
            } else {
                done(
                    outcome(DeliveryStatus::Failed, Some(e), false),
                    Effect::InvalidateFormid(formid),
                    None,
                )
            }
        }
        ErrorClass::BadUser => {
            let effect = if e.errcode() == Some(errcode::USER_NOT_SUBSCRIBED) {
                Effect::ZeroGrant(d.user_id)
            } else {
                Effect::None
            };
            done(
                outcome(DeliveryStatus::Failed, Some(e), false),
                effect,
                None,
            )
        }
        ErrorClass::CampaignConfig => done(
            outcome(DeliveryStatus::Pending, Some(e), true),
            give_back(),
            Some(CampaignStop::Failed(last_error(e))),
        ),
        ErrorClass::QuotaReached => done(
            outcome(DeliveryStatus::Pending, Some(e), true),
            give_back(),
            Some(CampaignStop::QuotaReached(last_error(e))),
        ),
        ErrorClass::CredentialExpired | ErrorClass::Unknown => done(
            outcome(DeliveryStatus::Failed, Some(e), false),
            Effect::None,
            None,
        ),
    }
}

/// The delivery rules applied to a triggered message (`decide` judged it as a delivery,
/// with the message's `seq` as its id). A message has no campaign to stop: an error that
/// would stop one fails only this message, its credit still given back; 45009 puts it back
/// to `scheduled` until the quota resets. A message put back to claim a credit anew (next
/// formId, a subscribe send that never reached WeChat) is `scheduled`; one that keeps its
/// formId for a later try is `queued`.
pub fn message_outcome(d: &Delivered, now: DateTime<Utc>) -> MessageOutcome {
    let o = &d.outcome;
    let mut errmsg = o.errmsg.clone();
    let (status, due_in_secs) = match &d.stop {
        Some(CampaignStop::Failed(err)) => {
            // The campaign's wording (45103 points to subscribe messages).
            if let Some(text) = err.get("errmsg").and_then(Value::as_str) {
                errmsg = Some(text.to_string());
            }
            (MessageStatus::Failed, 0.0)
        }
        Some(CampaignStop::QuotaReached(_)) => {
            let wait = next_quota_reset(now) - now;
            (
                MessageStatus::Scheduled,
                wait.num_milliseconds() as f64 / 1000.0,
            )
        }
        None => match o.status {
            DeliveryStatus::Sent => (MessageStatus::Sent, 0.0),
            DeliveryStatus::Pending if o.drop_formid => (MessageStatus::Scheduled, o.retry_in_secs),
            DeliveryStatus::Pending => (MessageStatus::Queued, o.retry_in_secs),
            // decide() ends a delivery only sent, failed or pending.
            _ => (MessageStatus::Failed, 0.0),
        },
    };
    MessageOutcome {
        seq: o.id,
        status,
        errcode: o.errcode.clone(),
        errmsg,
        attempts: o.attempts,
        msg_id: o.msg_id.clone(),
        outcome_unknown: o.outcome_unknown,
        drop_formid: o.drop_formid,
        due_in_secs,
    }
}

/// Whether a send keeps its slot in the user's frequency-cap window once its outcome is
/// recorded. The slot follows the credit: it stays while the send may have reached the
/// user (sent, or an unknown outcome) or keeps its credit for a later try (WeChat
/// unreachable, template); it goes back with the credit (campaign stopped, quota, a
/// subscribe send that never reached WeChat) and when WeChat refused the send (the user
/// received nothing; a next formId claims a new slot).
pub fn keeps_slot(d: &Delivered) -> bool {
    if matches!(d.effect, Effect::ReturnFormid(_) | Effect::ReturnGrant(_)) {
        return false;
    }
    match d.outcome.status {
        DeliveryStatus::Sent => true,
        DeliveryStatus::Failed => d.outcome.outcome_unknown,
        DeliveryStatus::Pending | DeliveryStatus::Sending => !d.outcome.drop_formid,
        DeliveryStatus::NoFormid | DeliveryStatus::NoQuota | DeliveryStatus::Capped => false,
    }
}

/// The next 00:00 in Asia/Shanghai, when WeChat's daily quotas reset.
pub fn next_quota_reset(now: DateTime<Utc>) -> DateTime<Utc> {
    let tz = chrono_tz::Asia::Shanghai;
    let tomorrow = now.with_timezone(&tz).date_naive() + Days::new(1);
    tz.from_local_datetime(&tomorrow.and_time(NaiveTime::MIN))
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now + chrono::Duration::days(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(template_kind: bool) -> Attempt {
        Attempt {
            kind: if template_kind {
                CampaignKind::Template
            } else {
                CampaignKind::Subscribe
            },
            delivery: Claimed {
                id: 1,
                user_id: 7,
                openid: "o1".into(),
                status: DeliveryStatus::Sending,
                formid_id: Some(99),
                form_id: Some("1700000000000".into()),
                formids_tried: 1,
                attempts: 0,
                outcome_unknown: false,
                slot_at: None,
                errcode: None,
                vars: None,
            },
            attempts: 1,
            outcome_unknown: false,
            token_refreshed: false,
        }
    }

    fn api(code: i64) -> Result<SendReceipt, WeChatError> {
        Err(WeChatError::Api {
            errcode: code,
            errmsg: format!("err {code}"),
        })
    }

    fn done(next: Next) -> Delivered {
        match next {
            Next::Done(d) => d,
            other => panic!("expected a final decision, got {other:?}"),
        }
    }

    #[test]
    fn success_is_sent() {
        let d = done(decide(&attempt(true), &Ok(SendReceipt::default()), 3));
        assert_eq!(d.outcome.status, DeliveryStatus::Sent);
        assert_eq!(d.effect, Effect::None);
    }

    #[test]
    fn bad_formid_invalidates_it_and_tries_the_next() {
        for code in [41028, 41029] {
            let d = done(decide(&attempt(true), &api(code), 3));
            assert_eq!(d.outcome.status, DeliveryStatus::Pending, "{code}");
            assert!(d.outcome.drop_formid);
            assert_eq!(d.effect, Effect::InvalidateFormid(99));
        }
        let mut third = attempt(true);
        third.delivery.formids_tried = 3;
        assert_eq!(
            done(decide(&third, &api(41028), 3)).outcome.status,
            DeliveryStatus::Failed
        );
    }

    #[test]
    fn used_formid_after_an_unknown_outcome_means_sent() {
        let mut a = attempt(true);
        a.outcome_unknown = true;
        let d = done(decide(&a, &api(41029), 3));
        assert_eq!(d.outcome.status, DeliveryStatus::Sent);
        assert_eq!(d.effect, Effect::None);
    }

    #[test]
    fn stale_token_is_refreshed_once() {
        for code in [40001, 42001, 40014] {
            assert_eq!(
                decide(&attempt(true), &api(code), 3),
                Next::RefreshTokenAndRetry
            );
            let mut again = attempt(true);
            again.token_refreshed = true;
            assert_eq!(
                done(decide(&again, &api(code), 3)).outcome.status,
                DeliveryStatus::Failed
            );
        }
    }

    #[test]
    fn transient_errors_retry_until_the_attempt_limit() {
        for e in [
            api(-1),
            Err(WeChatError::Timeout),
            Err(WeChatError::Http { status: 502 }),
        ] {
            assert_eq!(decide(&attempt(true), &e, 3), Next::RetryAfterBackoff);
            let mut last = attempt(true);
            last.attempts = 3;
            assert_eq!(
                done(decide(&last, &e, 3)).outcome.status,
                DeliveryStatus::Failed
            );
        }
    }

    #[test]
    fn an_unreachable_wechat_requeues_the_delivery_instead_of_failing_it() {
        let unreachable = Err(WeChatError::Unreachable("connection refused".into()));
        let mut a = attempt(true);
        a.attempts = 3;
        let d = done(decide(&a, &unreachable, 3));
        assert_eq!(d.outcome.status, DeliveryStatus::Pending);
        assert!(!d.outcome.drop_formid, "the formId stays with the delivery");
        assert_eq!(d.outcome.retry_in_secs, UNREACHABLE_RETRY_SECS);
        let mut s = attempt(false);
        s.attempts = 3;
        let d = done(decide(&s, &unreachable, 3));
        assert_eq!(d.outcome.status, DeliveryStatus::Pending);
        assert_eq!(d.effect, Effect::ReturnGrant(7));
    }

    #[test]
    fn subscribe_never_retries_an_unknown_outcome() {
        for e in [
            Err(WeChatError::Timeout),
            Err(WeChatError::Http { status: 500 }),
        ] {
            let d = done(decide(&attempt(false), &e, 3));
            assert_eq!(d.outcome.status, DeliveryStatus::Failed);
            assert_eq!(d.outcome.errcode.as_deref(), Some("unknown_outcome"));
        }
        assert_eq!(
            decide(&attempt(false), &api(-1), 3),
            Next::RetryAfterBackoff
        );
    }

    #[test]
    fn campaign_errors_stop_the_campaign_and_give_the_credit_back() {
        for code in [40037, 41030, 47003, 45103] {
            let d = done(decide(&attempt(true), &api(code), 3));
            assert_eq!(d.outcome.status, DeliveryStatus::Pending);
            assert_eq!(d.effect, Effect::ReturnFormid(99));
            assert!(matches!(d.stop, Some(CampaignStop::Failed(_))), "{code}");
        }
        let d = done(decide(&attempt(false), &api(40037), 3));
        assert_eq!(d.effect, Effect::ReturnGrant(7));
        let d = done(decide(&attempt(true), &api(45009), 3));
        assert!(matches!(d.stop, Some(CampaignStop::QuotaReached(_))));
        assert_eq!(d.effect, Effect::ReturnFormid(99));
    }

    #[test]
    fn template_api_switched_off_points_to_subscribe_campaigns() {
        let d = done(decide(&attempt(true), &api(45103), 3));
        let Some(CampaignStop::Failed(err)) = d.stop else {
            panic!("45103 must fail the campaign")
        };
        assert!(err["errmsg"]
            .as_str()
            .unwrap()
            .contains("subscribe campaign"));
    }

    #[test]
    fn bad_users_fail_and_43101_zeroes_the_grants() {
        assert_eq!(
            done(decide(&attempt(true), &api(40003), 3)).effect,
            Effect::None
        );
        let d = done(decide(&attempt(false), &api(43101), 3));
        assert_eq!(d.outcome.status, DeliveryStatus::Failed);
        assert_eq!(d.effect, Effect::ZeroGrant(7));
    }

    #[test]
    fn unknown_errcodes_fail_the_delivery_keeping_the_errmsg() {
        let d = done(decide(&attempt(true), &api(61234), 3));
        assert_eq!(d.outcome.status, DeliveryStatus::Failed);
        assert_eq!(d.outcome.errcode.as_deref(), Some("61234"));
        assert_eq!(d.outcome.errmsg.as_deref(), Some("err 61234"));
        assert_eq!(d.stop, None);
    }

    #[test]
    fn an_error_that_would_stop_a_campaign_fails_only_the_message_and_returns_its_credit() {
        let now = Utc::now();
        for code in [40037, 41030, 47003, 45103] {
            let d = done(decide(&attempt(false), &api(code), 3));
            let m = message_outcome(&d, now);
            assert_eq!(m.status, MessageStatus::Failed, "{code}");
            assert_eq!(m.errcode.as_deref(), Some(code.to_string().as_str()));
            assert_eq!(d.effect, Effect::ReturnGrant(7), "the grant goes back");
        }
        let d = done(decide(&attempt(true), &api(45103), 3));
        assert!(message_outcome(&d, now)
            .errmsg
            .unwrap()
            .contains("subscribe"));
    }

    #[test]
    fn quota_puts_the_message_back_until_midnight_in_shanghai() {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 15, 0, 0).unwrap(); // 23:00 there
        let d = done(decide(&attempt(true), &api(45009), 3));
        let m = message_outcome(&d, now);
        assert_eq!(m.status, MessageStatus::Scheduled);
        assert_eq!(m.due_in_secs, 3600.0);
        assert_eq!(d.effect, Effect::ReturnFormid(99));
    }

    #[test]
    fn a_message_waits_with_its_formid_or_claims_anew() {
        let now = Utc::now();
        let d = done(decide(&attempt(true), &api(41028), 3));
        assert_eq!(message_outcome(&d, now).status, MessageStatus::Scheduled);
        let mut a = attempt(true);
        a.attempts = 3;
        let unreachable = Err(WeChatError::Unreachable("refused".into()));
        let m = message_outcome(&done(decide(&a, &unreachable, 3)), now);
        assert_eq!(m.status, MessageStatus::Queued, "the formId stays with it");
        assert_eq!(m.due_in_secs, UNREACHABLE_RETRY_SECS);
        let d = done(decide(&attempt(false), &Ok(SendReceipt::default()), 3));
        assert_eq!(message_outcome(&d, now).status, MessageStatus::Sent);
    }

    #[test]
    fn a_slot_stays_with_a_send_that_may_have_arrived_or_keeps_its_credit() {
        let kept = |a: &Attempt, r| keeps_slot(&done(decide(a, &r, 3)));
        assert!(kept(&attempt(true), Ok(SendReceipt::default())));
        // Refused by WeChat: the user received nothing.
        assert!(!kept(&attempt(true), api(40003)));
        assert!(!kept(&attempt(false), api(43101)));
        assert!(
            !kept(&attempt(true), api(41028)),
            "the next formId claims anew"
        );
        // The credit goes back: so does the slot.
        assert!(!kept(&attempt(true), api(40037)));
        assert!(!kept(&attempt(false), api(45009)));
        // It may have arrived.
        assert!(kept(&attempt(false), Err(WeChatError::Timeout)));
        let mut last = attempt(true);
        last.attempts = 3;
        last.outcome_unknown = true;
        assert!(kept(&last, Err(WeChatError::Timeout)));
        // Waiting for WeChat with its formId (template) or without its grant (subscribe).
        let unreachable = || Err(WeChatError::Unreachable("refused".into()));
        let mut t = attempt(true);
        t.attempts = 3;
        assert!(kept(&t, unreachable()));
        let mut s = attempt(false);
        s.attempts = 3;
        assert!(!kept(&s, unreachable()));
    }

    #[test]
    fn quota_resets_at_midnight_in_shanghai() {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 17, 0, 0).unwrap(); // 01:00 on the 26th there
        assert_eq!(
            next_quota_reset(now),
            Utc.with_ymd_and_hms(2026, 11, 26, 16, 0, 0).unwrap()
        );
    }
}
