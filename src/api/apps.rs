use actix_web::{web, HttpResponse};
use secrecy::ExposeSecret;
use serde::{Deserialize, Deserializer, Serialize};

use super::auth::{Admin, AppAccess, NeedRead};
use super::state::AppState;
use crate::domain::app::{App, TokenApi};
use crate::domain::hygiene::{FrequencyCap, QuietHours};
use crate::domain::webhook;
use crate::error::{ApiError, ErrorBody};
use crate::store::{
    self,
    apps::{AppUpsert, Change, WebhookChange},
};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutApp {
    /// the AppSecret: required to register an app; left out (or null) on an update, the
    /// stored one is kept
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, pattern = "^[^\\u0000]*$")]
    secret: Option<String>,
    /// the push token, as in the WeChat console
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9]{3,32}$")]
    token: Option<String>,
    /// the 43-character EncodingAESKey from the WeChat console
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9+/]{43}$")]
    encoding_aes_key: Option<String>,
    /// messages per second this app may send (WeChat's limit is the account's)
    #[serde(default, deserialize_with = "super::json::optional_whole_i32")]
    #[schema(minimum = 1, maximum = 100_000)]
    send_rate_per_sec: Option<i32>,
    /// stable (default) or classic
    #[serde(default)]
    #[schema(value_type = Option<TokenApi>)]
    token_api: Option<String>,
    /// where result events are POSTed (http or https); null removes the webhook, absent
    /// keeps it
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable, max_length = 2048,
        pattern = "^[hH][tT][tT][pP][sS]?://[A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]{1,4})?(/[A-Za-z0-9._~/-]*)?$")]
    webhook_url: Option<Option<String>>,
    /// at most so many campaign messages per user within a rolling window (triggered
    /// messages count but are never held back); null removes the cap, absent keeps it
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<FrequencyCapSetting>, nullable)]
    frequency_cap: Option<Option<FrequencyCapSetting>>,
    /// local hours in which no campaign message is sent; null removes them, absent keeps
    /// them
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<QuietHoursSetting>, nullable)]
    quiet_hours: Option<Option<QuietHoursSetting>>,
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (`None`, by default).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// An app's frequency cap: a campaign delivery to a user who already received `max`
/// messages (campaign or triggered) within the last `per_secs` seconds ends `capped`.
#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCapSetting {
    #[serde(deserialize_with = "super::json::whole_i32")]
    #[schema(minimum = 1, maximum = 100, example = 2)]
    max: i32,
    /// the window, in seconds (at most 30 days)
    #[serde(deserialize_with = "super::json::whole_i32")]
    #[schema(minimum = 1, maximum = 2_592_000, example = 86_400)]
    per_secs: i32,
}

/// An app's quiet hours: no campaign message is sent from `start` (included) to `end`
/// (excluded), local time in `timezone`; the window crosses midnight when `end` is earlier
/// than `start`. `start` and `end` must differ.
#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHoursSetting {
    /// HH:MM, 24-hour clock
    #[schema(pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$", example = "22:00")]
    start: String,
    /// HH:MM, 24-hour clock
    #[schema(pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$", example = "08:00")]
    end: String,
    /// an IANA time zone name
    #[schema(min_length = 1, max_length = 64, example = "Asia/Shanghai")]
    timezone: String,
}

impl From<FrequencyCap> for FrequencyCapSetting {
    fn from(c: FrequencyCap) -> Self {
        Self {
            max: c.max,
            per_secs: c.per_secs,
        }
    }
}

impl From<QuietHours> for QuietHoursSetting {
    fn from(q: QuietHours) -> Self {
        Self {
            start: q.start_text(),
            end: q.end_text(),
            timezone: q.timezone.name().to_string(),
        }
    }
}

/// What `GET /v1/apps/{appid}` shows: never the secret, the push token or the AES key.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AppView {
    appid: String,
    send_rate_per_sec: i32,
    token_api: TokenApi,
    has_token: bool,
    has_encoding_aes_key: bool,
    webhook_url: Option<String>,
    has_webhook_secret: bool,
    /// null: no cap
    frequency_cap: Option<FrequencyCapSetting>,
    /// null: campaigns send at any hour
    quiet_hours: Option<QuietHoursSetting>,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

/// The answer to `PUT /v1/apps/{appid}`: the app, and the webhook's signing secret when
/// this PUT set a new one (shown this once).
#[derive(Serialize, utoipa::ToSchema)]
pub struct PutAppAnswer {
    #[serde(flatten)]
    app: AppView,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_secret: Option<String>,
}

pub fn validate_appid(appid: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&appid.len())
        && appid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "invalid_appid",
            "appid must be 1 to 64 characters of [A-Za-z0-9_-]",
        ))
    }
}

/// Registers or updates a mini-program (fields left out keep their value).
#[utoipa::path(put, path = "/v1/apps/{appid}", operation_id = "registerApp", tag = "admin", security(("admin" = [])),
    params(("appid" = String, Path, description = "the mini-program's AppID", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    request_body = PutApp,
    responses((status = 201, description = "created", body = PutAppAnswer),
              (status = 200, description = "updated", body = PutAppAnswer),
              (status = 400, body = ErrorBody), (status = 401, description = "missing or wrong admin token", body = ErrorBody),
              (status = 403, description = "an API key: keys never change apps", body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_app(
    _: Admin,
    state: web::Data<AppState>,
    appid: web::Path<String>,
    body: crate::api::json::Body<PutApp>,
) -> Result<HttpResponse, ApiError> {
    let appid = appid.into_inner();
    validate_appid(&appid)?;
    let body = body.into_inner();
    // An update may leave the secret out (the console changes settings without knowing
    // it): the stored one is written back.
    let stored: App;
    let secret = match &body.secret {
        Some(secret) => secret.as_str(),
        None => {
            stored = store::apps::find(&state.pool, &appid)
                .await?
                .ok_or_else(|| {
                    ApiError::invalid(
                        "invalid_secret",
                        "secret is required to register an app (only an update may leave it out)",
                    )
                })?;
            stored.secret.expose_secret()
        }
    };
    if secret.is_empty() || secret.chars().count() > 128 || secret.contains('\0') {
        return Err(ApiError::invalid(
            "invalid_secret",
            "secret must be 1 to 128 characters, none of them NUL",
        ));
    }
    if let Some(token) = &body.token {
        if !(3..=32).contains(&token.len()) || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ApiError::invalid(
                "invalid_token",
                "token must be 3 to 32 letters or digits, as in the WeChat console",
            ));
        }
    }
    if let Some(key) = &body.encoding_aes_key {
        crate::wechat::crypto::MessageCrypto::new(key, &appid).map_err(|_| {
            ApiError::invalid(
                "invalid_encoding_aes_key",
                "encoding_aes_key must be the 43-character EncodingAESKey from the WeChat console",
            )
        })?;
    }
    if let Some(rate) = body.send_rate_per_sec {
        if !(1..=100_000).contains(&rate) {
            return Err(ApiError::invalid(
                "invalid_send_rate",
                "send_rate_per_sec must be between 1 and 100000",
            ));
        }
    }
    let token_api = match body.token_api.as_deref() {
        None => None,
        Some(s) => Some(TokenApi::parse(s).ok_or_else(|| {
            ApiError::invalid("invalid_token_api", "token_api must be stable or classic")
        })?),
    };
    let webhook_url = match &body.webhook_url {
        Some(Some(url)) => {
            Some(webhook::parse_url(url).map_err(|e| ApiError::invalid(e.code, e.message))?)
        }
        _ => None,
    };
    let frequency_cap = match body.frequency_cap {
        None => Change::Keep,
        Some(None) => Change::Remove,
        Some(Some(cap)) => Change::Set(
            FrequencyCap::parse(cap.max.into(), cap.per_secs.into())
                .map_err(|e| ApiError::invalid(e.code, e.message))?,
        ),
    };
    let quiet_hours = match &body.quiet_hours {
        None => Change::Keep,
        Some(None) => Change::Remove,
        Some(Some(q)) => Change::Set(
            QuietHours::parse(&q.start, &q.end, &q.timezone)
                .map_err(|e| ApiError::invalid(e.code, e.message))?,
        ),
    };
    let fresh_secret = webhook::new_secret();
    let change = match (&body.webhook_url, &webhook_url) {
        (_, Some(url)) => WebhookChange::Set {
            url,
            fresh_secret: fresh_secret.expose_secret(),
        },
        (Some(_), None) => WebhookChange::Remove,
        (None, None) => WebhookChange::Keep,
    };
    let upserted = store::apps::upsert(
        &state.pool,
        AppUpsert {
            appid: &appid,
            secret,
            push_token: body.token.as_deref(),
            encoding_aes_key: body.encoding_aes_key.as_deref(),
            send_rate_per_sec: body.send_rate_per_sec,
            token_api,
            webhook: change,
            frequency_cap,
            quiet_hours,
        },
    )
    .await?;
    let answer = PutAppAnswer {
        app: view(&state, &appid).await?,
        webhook_secret: upserted
            .secret_replaced
            .then(|| fresh_secret.expose_secret().to_string()),
    };
    Ok(if upserted.created {
        HttpResponse::Created().json(answer)
    } else {
        HttpResponse::Ok().json(answer)
    })
}

impl From<App> for AppView {
    fn from(app: App) -> Self {
        Self {
            appid: app.appid,
            send_rate_per_sec: app.send_rate_per_sec,
            token_api: app.token_api,
            has_token: app.push_token.is_some(),
            has_encoding_aes_key: app.encoding_aes_key.is_some(),
            has_webhook_secret: app.webhook_secret.is_some(),
            webhook_url: app.webhook_url,
            frequency_cap: app.frequency_cap.map(Into::into),
            quiet_hours: app.quiet_hours.map(Into::into),
            created_at: app.created_at,
            updated_at: app.updated_at,
        }
    }
}

/// `GET /v1/apps`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AppList {
    items: Vec<AppView>,
}

async fn view(state: &AppState, appid: &str) -> Result<AppView, ApiError> {
    let app = store::apps::find(&state.pool, appid)
        .await?
        .ok_or_else(|| ApiError::unknown_app(appid))?;
    Ok(app.into())
}

/// `GET /v1/apps`: every registered app, as `GET /v1/apps/{appid}` shows it.
#[utoipa::path(get, path = "/v1/apps", operation_id = "listApps", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = AppList), (status = 401, description = "missing or wrong admin token", body = ErrorBody),
              (status = 403, description = "an API key", body = ErrorBody)))]
pub async fn list_apps(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let items = store::apps::list(&state.pool).await?;
    Ok(HttpResponse::Ok().json(AppList {
        items: items.into_iter().map(AppView::from).collect(),
    }))
}

/// An app, never with its secret, push token or AES key.
#[utoipa::path(get, path = "/v1/apps/{appid}", operation_id = "getApp", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = AppView), (status = 401, description = "missing or wrong admin token", body = ErrorBody),
              (status = 403, description = "an API key", body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_app(
    _: Admin,
    state: web::Data<AppState>,
    appid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(view(&state, &appid).await?))
}

/// The app's credit pool.
#[utoipa::path(get, path = "/v1/apps/{appid}/stats", operation_id = "getPoolStats", tag = "admin", security(("admin" = []), ("api_key" = ["read"])),
    responses((status = 200, body = crate::store::credits::PoolStats), (status = 401, description = "missing or wrong credentials", body = ErrorBody),
              (status = 403, description = "an API key of another app or without the read scope", body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn stats(
    _: AppAccess<NeedRead>,
    state: web::Data<AppState>,
    appid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !store::apps::exists(&state.pool, &appid).await? {
        return Err(ApiError::unknown_app(&appid));
    }
    Ok(HttpResponse::Ok().json(store::credits::stats(&state.pool, &appid).await?))
}
