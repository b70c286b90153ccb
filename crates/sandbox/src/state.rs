//! The sandbox's in-memory state and the WeChat API logic applied to it. Every operation
//! takes the state lock once, does map look-ups and updates only, and lets go.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::Value;

use super::rules::{self, WxErr};
use super::{lock, MessageKind, Sandbox, SentMessage, SubscribeTemplate};

/// The previous classic token stays usable this long after a new one is issued.
pub(super) const TOKEN_GRACE_SECS: i64 = 300;
/// A `wx.login` code is valid this long.
pub(super) const CODE_TTL_SECS: i64 = 300;
/// A formId (and a prepay_id) is valid this long.
pub(super) const FORM_ID_TTL_DAYS: i64 = 7;
/// A prepay_id can carry this many template messages.
pub(super) const PREPAY_USES: u8 = 3;
/// `/cgi-bin/token` calls per app per day.
pub(super) const TOKEN_DAILY_LIMIT: u64 = 2000;
/// `force_refresh` stable-token calls per app per day.
pub(super) const STABLE_FORCE_DAILY_LIMIT: u64 = 20;
/// The stable token is renewed when less than this is left (so `expires_in` ≥ 300).
pub(super) const STABLE_RENEW_BEFORE_SECS: i64 = 300;

#[derive(Default)]
pub(super) struct State {
    pub apps: HashMap<String, AppState>,
    pub tokens: HashMap<String, TokenRec>,
    pub codes: HashMap<String, CodeRec>,
}

/// One mini-program. Created lazily by any setup call; `secret` set means registered
/// (only registered apps can get tokens).
#[derive(Default)]
pub(super) struct AppState {
    pub secret: Option<String>,
    pub templates: Option<HashSet<String>>,
    /// Subscribe templates added to the account (`gettemplate`).
    pub subscribe_templates: Vec<SubscribeTemplate>,
    pub pages: Option<HashSet<String>>,
    pub template_api_disabled: bool,
    pub daily_quota: Option<u64>,
    pub users: HashSet<String>,
    pub form_ids: HashMap<String, FormIdRec>,
    /// openid → template_id → grants left.
    pub grants: HashMap<String, HashMap<String, u32>>,
    /// Last Android formId timestamp issued "now", so bulk issuing stays O(1) per id.
    pub last_android_ms: i64,
    pub classic_token: Option<String>,
    /// The replaced classic token in (or past) its grace period (at most one).
    pub replaced_tokens: Vec<String>,
    pub stable_token: Option<String>,
    /// Stable tokens renewed normally: valid until their own expiry.
    pub old_stable_tokens: Vec<String>,
    pub token_calls: u64,
    pub stable_token_calls: u64,
    pub daily: Daily,
}

/// Per-day counters, reset when the day changes in Asia/Shanghai (UTC+8, no DST).
#[derive(Default)]
pub(super) struct Daily {
    pub day: Option<NaiveDate>,
    pub template_sent: u64,
    pub subscribe_sent: u64,
    pub tokens_issued: u64,
    pub stable_forced: u64,
}

impl Daily {
    fn roll(&mut self, now: DateTime<Utc>) {
        let today = (now + Duration::hours(8)).date_naive();
        if self.day != Some(today) {
            *self = Daily {
                day: Some(today),
                ..Daily::default()
            };
        }
    }
}

pub(super) struct TokenRec {
    pub appid: String,
    pub expires_at: DateTime<Utc>,
    /// After this instant the token is unknown to WeChat (40001): end of grace.
    pub dead_at: Option<DateTime<Utc>>,
}

pub(super) struct CodeRec {
    pub appid: String,
    pub openid: String,
    pub issued_at: DateTime<Utc>,
    pub used: bool,
}

pub(super) struct FormIdRec {
    pub openid: String,
    pub created_at: DateTime<Utc>,
    pub uses_left: u8,
}

impl State {
    /// The app's state, created (unregistered) when missing.
    pub fn app_mut(&mut self, appid: &str) -> &mut AppState {
        self.apps.entry(appid.to_string()).or_default()
    }
}

impl AppState {
    /// Inserts an Android formId (13-digit ms timestamp), bumping by 1 ms until unused.
    pub fn insert_android_form_id(
        &mut self,
        openid: &str,
        at: DateTime<Utc>,
        from_now: bool,
    ) -> String {
        let mut ms = at.timestamp_millis();
        if from_now {
            ms = ms.max(self.last_android_ms + 1);
        }
        while self.form_ids.contains_key(&ms.to_string()) {
            ms += 1;
        }
        if from_now {
            self.last_android_ms = ms;
        }
        let id = ms.to_string();
        self.users.insert(openid.to_string());
        self.form_ids.insert(
            id.clone(),
            FormIdRec {
                openid: openid.to_string(),
                created_at: DateTime::from_timestamp_millis(ms).unwrap_or(at),
                uses_left: 1,
            },
        );
        id
    }
}

/// Query of `GET /cgi-bin/token` and body of `POST /cgi-bin/stable_token`.
pub(super) struct TokenRequest<'a> {
    pub grant_type: Option<&'a str>,
    pub appid: Option<&'a str>,
    pub secret: Option<&'a str>,
    pub force_refresh: bool,
}

/// Query of `GET /sns/jscode2session`.
pub(super) struct CodeRequest<'a> {
    pub appid: Option<&'a str>,
    pub secret: Option<&'a str>,
    pub js_code: Option<&'a str>,
    pub grant_type: Option<&'a str>,
}

/// Checks appid and secret in WeChat's order: missing 41002, unknown 40013, missing
/// secret 41004, wrong secret 40125.
fn authenticate<'s>(
    apps: &'s mut HashMap<String, AppState>,
    appid: Option<&str>,
    secret: Option<&str>,
) -> Result<&'s mut AppState, WxErr> {
    let appid = appid
        .filter(|a| !a.is_empty())
        .ok_or_else(|| WxErr::new(rules::APPID_MISSING))?;
    let app = apps
        .get_mut(appid)
        .filter(|a| a.secret.is_some())
        .ok_or_else(|| WxErr::new(rules::INVALID_APPID))?;
    let secret = secret
        .filter(|s| !s.is_empty())
        .ok_or_else(|| WxErr::new(rules::SECRET_MISSING))?;
    if app.secret.as_deref() != Some(secret) {
        return Err(WxErr::new(rules::INVALID_SECRET));
    }
    Ok(app)
}

/// The app a send call's access token belongs to: absent 41001, malformed 40014, unknown
/// or past its grace 40001, past its lifetime 42001.
fn check_token(
    tokens: &HashMap<String, TokenRec>,
    token: Option<&str>,
    now: DateTime<Utc>,
) -> Result<String, WxErr> {
    let token = token.ok_or_else(|| WxErr::new(rules::ACCESS_TOKEN_MISSING))?;
    if !rules::token_syntax_ok(token) {
        return Err(WxErr::new(rules::INVALID_ACCESS_TOKEN));
    }
    let rec = tokens
        .get(token)
        .ok_or_else(|| WxErr::new(rules::INVALID_CREDENTIAL))?;
    if rec.dead_at.is_some_and(|d| d <= now) {
        return Err(WxErr::new(rules::INVALID_CREDENTIAL));
    }
    if rec.expires_at <= now {
        return Err(WxErr::new(rules::ACCESS_TOKEN_EXPIRED));
    }
    Ok(rec.appid.clone())
}

/// The `page` field: absent or empty is allowed; anything else must be a string on the
/// app's page list when it has one.
fn check_page(app: &AppState, page: Option<&Value>) -> Result<Option<String>, WxErr> {
    match page {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(p)) if p.is_empty() => Ok(None),
        Some(Value::String(p)) => match &app.pages {
            Some(pages) if !pages.contains(rules::page_path(p)) => {
                Err(WxErr::new(rules::INVALID_PAGE))
            }
            _ => Ok(Some(p.clone())),
        },
        Some(_) => Err(WxErr::new(rules::INVALID_PAGE)),
    }
}

fn check_template(app: &AppState, template_id: Option<&str>) -> Result<String, WxErr> {
    let template_id = template_id
        .filter(|t| !t.is_empty())
        .ok_or_else(|| WxErr::new(rules::INVALID_TEMPLATE_ID))?;
    if app
        .templates
        .as_ref()
        .is_some_and(|set| !set.contains(template_id))
    {
        return Err(WxErr::new(rules::INVALID_TEMPLATE_ID));
    }
    Ok(template_id.to_string())
}

fn check_user(app: &AppState, touser: Option<&str>) -> Result<String, WxErr> {
    match touser {
        Some(u) if app.users.contains(u) => Ok(u.to_string()),
        _ => Err(WxErr::new(rules::INVALID_OPENID)),
    }
}

fn str_field<'v>(body: &'v Value, key: &str) -> Option<&'v str> {
    body.get(key).and_then(Value::as_str)
}

impl Sandbox {
    fn token_ttl(&self) -> Duration {
        Duration::from_std(self.inner.config.token_ttl).unwrap_or(Duration::hours(2))
    }

    fn quota(&self, app: &AppState) -> u64 {
        app.daily_quota.unwrap_or(self.inner.config.daily_quota)
    }

    /// Counts a token-API call against the app it names (if the app exists).
    pub(super) fn count_token_call(&self, appid: Option<&str>, stable: bool) {
        let Some(appid) = appid else { return };
        let mut st = lock(&self.inner.state);
        if let Some(app) = st.apps.get_mut(appid) {
            if stable {
                app.stable_token_calls += 1;
            } else {
                app.token_calls += 1;
            }
        }
    }

    /// `GET /cgi-bin/token`: always a new token; the previous one gets 5 minutes of grace,
    /// the one before it is invalid from now on.
    pub(super) fn issue_token(&self, req: &TokenRequest<'_>) -> Result<(String, i64), WxErr> {
        if req.grant_type != Some("client_credential") {
            return Err(WxErr::new(rules::INVALID_GRANT_TYPE));
        }
        let now = self.now();
        let ttl = self.token_ttl();
        let mut guard = lock(&self.inner.state);
        let State { apps, tokens, .. } = &mut *guard;
        let app = authenticate(apps, req.appid, req.secret)?;
        app.daily.roll(now);
        if app.daily.tokens_issued >= TOKEN_DAILY_LIMIT {
            return Err(WxErr::new(rules::DAILY_QUOTA));
        }
        app.daily.tokens_issued += 1;
        // WeChat keeps "the new and the old" token usable: only the immediate predecessor
        // gets the grace period, anything replaced before it dies now (40001).
        for old in app.replaced_tokens.drain(..) {
            tokens.remove(&old);
        }
        if let Some(prev) = app.classic_token.take() {
            if let Some(rec) = tokens.get_mut(&prev) {
                let grace_end = now + Duration::seconds(TOKEN_GRACE_SECS);
                rec.dead_at = Some(rec.dead_at.map_or(grace_end, |d| d.min(grace_end)));
            }
            app.replaced_tokens.push(prev);
        }
        let token = rules::new_access_token();
        let appid = req.appid.unwrap_or_default().to_string();
        tokens.insert(
            token.clone(),
            TokenRec {
                appid,
                expires_at: now + ttl,
                dead_at: None,
            },
        );
        app.classic_token = Some(token.clone());
        Ok((token, ttl.num_seconds()))
    }

    /// `POST /cgi-bin/stable_token`: the same token while it has more than 5 minutes left;
    /// `force_refresh` replaces it at once (the old one answers 40001 from then on).
    pub(super) fn issue_stable_token(
        &self,
        req: &TokenRequest<'_>,
    ) -> Result<(String, i64), WxErr> {
        if req.grant_type != Some("client_credential") {
            return Err(WxErr::new(rules::INVALID_GRANT_TYPE));
        }
        let now = self.now();
        let ttl = self.token_ttl();
        // With a short test TTL, renewing 5 minutes early would renew on every call.
        let renew_before = Duration::seconds(STABLE_RENEW_BEFORE_SECS).min(ttl / 2);
        let mut guard = lock(&self.inner.state);
        let State { apps, tokens, .. } = &mut *guard;
        let app = authenticate(apps, req.appid, req.secret)?;
        app.daily.roll(now);
        if !req.force_refresh {
            if let Some(rec) = app.stable_token.as_ref().and_then(|t| tokens.get(t)) {
                let left = rec.expires_at - now;
                if rec.dead_at.is_none() && left > renew_before {
                    let token = app.stable_token.clone().unwrap_or_default();
                    return Ok((token, left.num_seconds()));
                }
            }
        } else {
            if app.daily.stable_forced >= STABLE_FORCE_DAILY_LIMIT {
                return Err(WxErr::new(rules::DAILY_QUOTA));
            }
            app.daily.stable_forced += 1;
        }
        app.old_stable_tokens.retain(|t| {
            let keep = tokens
                .get(t)
                .is_some_and(|rec| rec.expires_at + Duration::days(1) > now);
            if !keep {
                tokens.remove(t);
            }
            keep
        });
        if let Some(prev) = app.stable_token.take() {
            if req.force_refresh {
                tokens.remove(&prev);
            } else {
                app.old_stable_tokens.push(prev);
            }
        }
        let token = rules::new_access_token();
        tokens.insert(
            token.clone(),
            TokenRec {
                appid: req.appid.unwrap_or_default().to_string(),
                expires_at: now + ttl,
                dead_at: None,
            },
        );
        app.stable_token = Some(token.clone());
        Ok((token, ttl.num_seconds()))
    }

    /// `GET /sns/jscode2session`: a code issued for this app, unused, under 5 minutes old.
    pub(super) fn code_to_session(&self, req: &CodeRequest<'_>) -> Result<String, WxErr> {
        let now = self.now();
        let mut guard = lock(&self.inner.state);
        let State { apps, codes, .. } = &mut *guard;
        authenticate(apps, req.appid, req.secret)?;
        if req.grant_type != Some("authorization_code") {
            return Err(WxErr::new(rules::INVALID_GRANT_TYPE));
        }
        let code = req
            .js_code
            .filter(|c| !c.is_empty())
            .ok_or_else(|| WxErr::new(rules::CODE_MISSING))?;
        let rec = codes
            .get_mut(code)
            .filter(|r| Some(r.appid.as_str()) == req.appid)
            .ok_or_else(|| WxErr::new(rules::INVALID_CODE))?;
        if rec.used {
            return Err(WxErr::new(rules::CODE_USED));
        }
        if now - rec.issued_at > Duration::seconds(CODE_TTL_SECS) {
            return Err(WxErr::new(rules::INVALID_CODE));
        }
        rec.used = true;
        Ok(rec.openid.clone())
    }

    /// `POST /cgi-bin/message/wxopen/template/send`. Checks, in order: token, 45103,
    /// JSON (47001), daily quota (45009), touser (40003), template (40037), page (41030),
    /// formId (41028 / 41029). On success spends one use of the formId and records.
    pub(super) fn template_send(&self, token: Option<&str>, body: &[u8]) -> Result<(), WxErr> {
        let parsed = serde_json::from_slice::<Value>(body)
            .ok()
            .filter(|v| v.get("data").is_some_and(Value::is_object));
        let now = self.now();
        let (appid, touser, template_id, page, form_id) = {
            let mut guard = lock(&self.inner.state);
            let State { apps, tokens, .. } = &mut *guard;
            let appid = check_token(tokens, token, now)?;
            let quota = apps.get(&appid).map_or(0, |a| self.quota(a));
            let app = apps
                .get_mut(&appid)
                .ok_or_else(|| WxErr::new(rules::INVALID_CREDENTIAL))?;
            if app.template_api_disabled {
                return Err(WxErr::new(rules::API_UNSUPPORTED));
            }
            let body = parsed
                .as_ref()
                .ok_or_else(|| WxErr::new(rules::DATA_FORMAT_ERROR))?;
            app.daily.roll(now);
            if app.daily.template_sent >= quota {
                return Err(WxErr::new(rules::DAILY_QUOTA));
            }
            let touser = check_user(app, str_field(body, "touser"))?;
            let template_id = check_template(app, str_field(body, "template_id"))?;
            let page = check_page(app, body.get("page"))?;
            let form_id = str_field(body, "form_id")
                .filter(|f| !f.is_empty())
                .ok_or_else(|| WxErr::new(rules::INVALID_FORM_ID))?;
            let rec = app
                .form_ids
                .get_mut(form_id)
                .filter(|r| r.openid == touser)
                .ok_or_else(|| WxErr::new(rules::INVALID_FORM_ID))?;
            if now - rec.created_at > Duration::days(FORM_ID_TTL_DAYS) {
                return Err(WxErr::new(rules::INVALID_FORM_ID));
            }
            if rec.uses_left == 0 {
                return Err(WxErr::new(rules::FORM_ID_USED));
            }
            rec.uses_left -= 1;
            app.daily.template_sent += 1;
            (appid, touser, template_id, page, form_id.to_string())
        };
        // Built outside the state lock: cloning `data` can be the costliest step.
        let mut body = parsed.unwrap_or_default();
        self.record_message(SentMessage {
            kind: MessageKind::Template,
            appid,
            touser,
            template_id,
            page,
            form_id: Some(form_id),
            data: body.get_mut("data").map(Value::take).unwrap_or_default(),
            msgid: None,
            miniprogram_state: None,
            lang: None,
            emphasis_keyword: str_field(&body, "emphasis_keyword").map(str::to_string),
            at: now,
        });
        Ok(())
    }

    /// `GET /wxaapi/newtmpl/gettemplate`: the app's subscribe templates.
    pub(super) fn get_templates(
        &self,
        token: Option<&str>,
    ) -> Result<Vec<SubscribeTemplate>, WxErr> {
        let now = self.now();
        let st = lock(&self.inner.state);
        let appid = check_token(&st.tokens, token, now)?;
        Ok(st
            .apps
            .get(&appid)
            .map(|a| a.subscribe_templates.clone())
            .unwrap_or_default())
    }

    /// `POST /cgi-bin/message/subscribe/send`. Checks, in order: token, JSON (47001),
    /// daily quota (45009), touser (40003), template (40037, also when the app has
    /// templates and this is none of them), page (41030), `miniprogram_state` / `lang` /
    /// data values (47003), a grant (43101). On success
    /// spends one grant, records, and returns the msgid.
    pub(super) fn subscribe_send(&self, token: Option<&str>, body: &[u8]) -> Result<u64, WxErr> {
        let parsed = serde_json::from_slice::<Value>(body)
            .ok()
            .filter(Value::is_object);
        // WeChat reports a bad miniprogram_state or lang as an invalid argument (47003),
        // like a bad data value; checked before the lock since they need no state.
        let shape = parsed.as_ref().map(|body| {
            let state = body.get("miniprogram_state");
            if !state.is_none_or(|s| s.as_str().is_some_and(rules::miniprogram_state_ok)) {
                return Err(WxErr::detail(
                    rules::ARGUMENT_INVALID,
                    "miniprogram_state invalid",
                ));
            }
            let lang = body.get("lang");
            if !lang.is_none_or(|l| l.as_str().is_some_and(rules::lang_ok)) {
                return Err(WxErr::detail(rules::ARGUMENT_INVALID, "lang invalid"));
            }
            Ok(())
        });
        let now = self.now();
        let (appid, touser, template_id, page) = {
            let mut guard = lock(&self.inner.state);
            let State { apps, tokens, .. } = &mut *guard;
            let appid = check_token(tokens, token, now)?;
            let quota = apps.get(&appid).map_or(0, |a| self.quota(a));
            let app = apps
                .get_mut(&appid)
                .ok_or_else(|| WxErr::new(rules::INVALID_CREDENTIAL))?;
            let (Some(body), Some(shape)) = (parsed.as_ref(), shape) else {
                return Err(WxErr::new(rules::DATA_FORMAT_ERROR));
            };
            app.daily.roll(now);
            if app.daily.subscribe_sent >= quota {
                return Err(WxErr::new(rules::DAILY_QUOTA));
            }
            let touser = check_user(app, str_field(body, "touser"))?;
            let template_id = check_template(app, str_field(body, "template_id"))?;
            // Once the account's templates are known, only those exist.
            let template = app
                .subscribe_templates
                .iter()
                .find(|t| t.template_id == template_id);
            if template.is_none() && !app.subscribe_templates.is_empty() {
                return Err(WxErr::new(rules::INVALID_TEMPLATE_ID));
            }
            let page = check_page(app, body.get("page"))?;
            shape?;
            rules::check_subscribe_data(body.get("data"), template)?;
            let grants = app
                .grants
                .get_mut(&touser)
                .and_then(|g| g.get_mut(&template_id))
                .filter(|n| **n > 0)
                .ok_or_else(|| WxErr::new(rules::USER_NOT_SUBSCRIBED))?;
            *grants -= 1;
            app.daily.subscribe_sent += 1;
            (appid, touser, template_id, page)
        };
        let msgid = self
            .inner
            .next_msgid
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut body = parsed.unwrap_or_default();
        self.record_message(SentMessage {
            kind: MessageKind::Subscribe,
            appid,
            touser,
            template_id,
            page,
            form_id: None,
            data: body.get_mut("data").map(Value::take).unwrap_or_default(),
            msgid: Some(msgid),
            miniprogram_state: str_field(&body, "miniprogram_state").map(str::to_string),
            lang: str_field(&body, "lang").map(str::to_string),
            emphasis_keyword: None,
            at: now,
        });
        Ok(msgid)
    }
}
