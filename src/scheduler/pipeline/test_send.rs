//! Test sends (`POST /v1/campaigns/{id}/test`): a campaign's message to a few given users,
//! now, outside the campaign's runs and totals. Each user's credit is claimed as a
//! triggered message's is (`credits::claim_for_test`: never capped, but it takes a slot in
//! the user's frequency-cap window), sent under the same delivery rules, and its credit
//! effects are recorded; nothing else is stored. A test send does not wait for anything a
//! campaign would wait for (quota, an unreachable WeChat): it reports the failure and
//! gives the credit back. The whole call ends by a deadline, so the API answers in time.

use std::sync::Mutex;

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::{add_effect, Outgoing, Pipeline};
use crate::domain::app::App;
use crate::domain::campaign::{CampaignKind, FormidPick};
use crate::domain::delivery::DeliveryStatus;
use crate::scheduler::gate::{Priority, SendGate};
use crate::scheduler::rules::{keeps_slot, message_outcome, Effect};
use crate::store::{self, credits::CreditEffects, deliveries::Claimed};

/// What a test send says (a campaign's content).
#[derive(Clone, Debug)]
pub struct TestContent {
    pub kind: CampaignKind,
    pub template_id: String,
    pub page: Option<String>,
    pub emphasis_keyword: Option<String>,
    pub miniprogram_state: Option<String>,
    pub lang: Option<String>,
    pub formid_pick: FormidPick,
}

/// One user to test-send to, with the data rendered for them, or why it breaks the
/// synced template's rules (then nothing is claimed or sent).
#[derive(Clone, Debug)]
pub struct TestUser {
    pub openid: String,
    pub data: Result<Map<String, Value>, String>,
}

/// What became of one test send: `Sent`, `Failed`, `NoFormid` or `NoQuota`.
#[derive(Clone, Debug, PartialEq)]
pub struct TestResult {
    pub openid: String,
    pub status: DeliveryStatus,
    pub errcode: Option<String>,
    pub errmsg: Option<String>,
}

impl TestResult {
    fn new(
        openid: &str,
        status: DeliveryStatus,
        errcode: Option<String>,
        errmsg: Option<String>,
    ) -> Self {
        Self {
            openid: openid.to_string(),
            status,
            errcode,
            errmsg,
        }
    }
}

impl Pipeline {
    /// Sends `content` to each of `users` (distinct openids of `app`) now, all at once,
    /// paced by the app's `send_rate_per_sec`, and records what it did to their credits.
    /// A send still waiting for WeChat at `deadline` is reported `failed` (`timeout`):
    /// its credit counts as spent, since it may have arrived.
    pub async fn test_send(
        &self,
        app: &App,
        content: &TestContent,
        users: Vec<TestUser>,
        deadline: Instant,
    ) -> anyhow::Result<Vec<TestResult>> {
        let gate = SendGate::new(app.send_rate_per_sec);
        let effects = Mutex::new(CreditEffects::default());
        let sends = users.into_iter().map(|user| {
            let (gate, effects) = (&gate, &effects);
            async move {
                let openid = user.openid.clone();
                let one = self.test_one(app, gate, content, user, effects);
                match tokio::time::timeout_at(deadline, one).await {
                    Ok(result) => result,
                    Err(_) => Ok(TestResult::new(
                        &openid,
                        DeliveryStatus::Failed,
                        Some("timeout".into()),
                        Some("no answer from WeChat within the test send's time".into()),
                    )),
                }
            }
        });
        let results = futures::future::join_all(sends)
            .await
            .into_iter()
            .collect::<anyhow::Result<Vec<_>>>()?;
        let effects = effects.into_inner().unwrap_or_else(|e| e.into_inner());
        store::credits::settle_test(&self.pool, &effects).await?;
        Ok(results)
    }

    async fn test_one(
        &self,
        app: &App,
        gate: &SendGate,
        content: &TestContent,
        user: TestUser,
        effects: &Mutex<CreditEffects>,
    ) -> anyhow::Result<TestResult> {
        let openid = user.openid.as_str();
        let none = if content.kind == CampaignKind::Template {
            DeliveryStatus::NoFormid
        } else {
            DeliveryStatus::NoQuota
        };
        if !store::storable(openid) {
            // Postgres cannot hold it, so no user has it.
            return Ok(TestResult::new(openid, none, None, None));
        }
        let data = match user.data {
            Ok(data) => data,
            Err(problem) => {
                return Ok(TestResult::new(
                    openid,
                    DeliveryStatus::Failed,
                    Some("invalid_data".into()),
                    Some(problem),
                ))
            }
        };
        let outgoing = Outgoing {
            kind: content.kind,
            template_id: &content.template_id,
            page: content.page.as_deref(),
            emphasis_keyword: content.emphasis_keyword.as_deref(),
            miniprogram_state: content.miniprogram_state.as_deref(),
            lang: content.lang.as_deref(),
            data,
        };
        let mut formids_tried = 0;
        let mut attempts = 0;
        // WeChat's refusal of the user's previous formId (41028 / 41029), if any.
        let mut refused: Option<(Option<String>, Option<String>)> = None;
        loop {
            let claims = store::credits::claim_for_test(
                &self.pool,
                &app.appid,
                std::slice::from_ref(&user.openid),
                content.kind,
                &content.template_id,
                content.formid_pick,
            )
            .await?;
            let Some(claim) = claims.into_iter().next() else {
                anyhow::bail!("the test claim answered nothing for {openid}");
            };
            let (Some(user_id), true) = (claim.user_id, claim.formid_id.is_some() || claim.granted)
            else {
                // No credit left: as a delivery, `failed` after WeChat refused formIds.
                return Ok(match refused {
                    Some((errcode, errmsg)) => {
                        TestResult::new(openid, DeliveryStatus::Failed, errcode, errmsg)
                    }
                    None => TestResult::new(openid, none, None, None),
                });
            };
            if claim.formid_id.is_some() {
                formids_tried += 1;
            }
            let delivery = Claimed {
                id: 0,
                user_id,
                openid: openid.to_string(),
                status: DeliveryStatus::Sending,
                formid_id: claim.formid_id,
                form_id: claim.form_id.clone(),
                formids_tried,
                attempts,
                outcome_unknown: false,
                slot_at: claim.slot_at,
                errcode: None,
                vars: None,
            };
            let d = self
                .deliver(app, gate, Priority::Urgent, &outgoing, delivery)
                .await;
            attempts = d.outcome.attempts;
            let o = &d.outcome;
            let waits_with_formid = o.status == DeliveryStatus::Pending && !o.drop_formid;
            {
                let mut effects = effects.lock().unwrap_or_else(|e| e.into_inner());
                add_effect(&mut effects, d.effect, &content.template_id);
                if waits_with_formid {
                    // A campaign would try again later with this formId; a test send
                    // gives it back unsent.
                    effects.return_formids.extend(claim.formid_id);
                }
                if !keeps_slot(&d) || waits_with_formid {
                    if let Some(at) = claim.slot_at {
                        effects.forget_slots.push((user_id, at));
                    }
                }
            }
            match (o.status, d.effect) {
                (DeliveryStatus::Sent, _) => {
                    return Ok(TestResult::new(
                        openid,
                        DeliveryStatus::Sent,
                        Some("0".into()),
                        Some("ok".into()),
                    ))
                }
                (DeliveryStatus::Pending, Effect::InvalidateFormid(_)) => {
                    // The next formId, as for a delivery (at most 3: `decide` fails the third).
                    refused = Some((o.errcode.clone(), o.errmsg.clone()));
                }
                _ => {
                    // Failed, or what would make a campaign wait (quota, a stop, WeChat
                    // unreachable): reported with WeChat's wording, as for a message.
                    let shown = message_outcome(&d, chrono::Utc::now());
                    return Ok(TestResult::new(
                        openid,
                        DeliveryStatus::Failed,
                        shown.errcode,
                        shown.errmsg,
                    ));
                }
            }
        }
    }
}
