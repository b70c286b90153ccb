//! Credentials: the admin bearer token, app API keys, and client session tokens.
//!
//! The admin token opens everything. An API key (`fpk_...`) opens what its scopes allow
//! within its own app, and is looked up on every request: a revoked key is refused at once,
//! on every instance. Extractors say what a handler needs:
//! - `Admin`: the admin token only (a valid key gets `403 forbidden`);
//! - `AppAccess<N>`: the admin token, or a key of the path's `{appid}` with a scope of `N`;
//! - `Caller`: either; the handler checks the app with `Caller::allow` once it knows it.

use std::marker::PhantomData;

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use chrono::Utc;
use futures::future::LocalBoxFuture;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::state::AppState;
use crate::domain::api_key::{self, Scope};
use crate::domain::session::{SessionClaims, SessionError};
use crate::error::ApiError;
use crate::store;

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Constant-time equality that also hides the length (both sides are hashed first).
pub fn secure_eq(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes())
        .ct_eq(&Sha256::digest(b.as_bytes()))
        .into()
}

fn state(req: &HttpRequest) -> web::Data<AppState> {
    req.app_data::<web::Data<AppState>>()
        .expect("AppState is registered")
        .clone()
}

pub fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::Forbidden {
        code: "forbidden",
        message: message.into(),
    }
}

/// Who is calling: the admin, or a team backend with a key of one app.
#[derive(Debug, Clone)]
pub enum Caller {
    Admin,
    Key { appid: String, scopes: Vec<Scope> },
}

impl Caller {
    /// Whether the caller may act on `appid` with one of `scopes`.
    pub fn allow(&self, appid: &str, scopes: &[Scope]) -> Result<(), ApiError> {
        match self {
            Self::Admin => Ok(()),
            Self::Key { appid: own, .. } if own != appid => {
                Err(forbidden("this API key belongs to another app"))
            }
            Self::Key { scopes: held, .. } if !scopes.iter().any(|s| held.contains(s)) => {
                Err(forbidden(format!(
                    "this API key lacks the scope {}",
                    scopes
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(" or ")
                )))
            }
            Self::Key { .. } => Ok(()),
        }
    }

    /// The app a key is limited to (`None` for the admin).
    pub fn key_app(&self) -> Option<&str> {
        match self {
            Self::Admin => None,
            Self::Key { appid, .. } => Some(appid),
        }
    }

    async fn identify(state: &AppState, token: Option<&str>) -> Result<Self, ApiError> {
        let Some(token) = token else {
            return Err(ApiError::unauthorized(
                "missing_credentials",
                "send Authorization: Bearer <admin token or API key>",
            ));
        };
        if secure_eq(token, state.settings.admin_token.expose_secret()) {
            return Ok(Self::Admin);
        }
        if !api_key::is_api_key(token) {
            return Err(ApiError::unauthorized(
                "invalid_admin_token",
                "the admin token is wrong",
            ));
        }
        let hash = api_key::hash(token);
        // Found through the index on the hash: its timing can reveal no more than part of
        // a stored hash, which does not help to find a key. The final check is constant-time.
        match store::api_keys::authenticate(&state.pool, &hash).await? {
            Some(grant) if bool::from(grant.key_hash.ct_eq(&hash[..])) => Ok(Self::Key {
                appid: grant.appid,
                scopes: grant.scopes,
            }),
            _ => Err(ApiError::unauthorized(
                "invalid_api_key",
                "the API key is unknown or revoked",
            )),
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = state(req);
        let token = bearer(req).map(str::to_string);
        Box::pin(async move { Self::identify(&state, token.as_deref()).await })
    }
}

/// Present in a handler's arguments = the caller proved the admin token. A valid API key
/// is refused with `403 forbidden`: keys never open app settings, keys or campaign changes.
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = Caller::from_request(req, payload);
        Box::pin(async move {
            match caller.await? {
                Caller::Admin => Ok(Admin),
                Caller::Key { .. } => Err(forbidden("this endpoint needs the admin token")),
            }
        })
    }
}

/// The scopes an `AppAccess` accepts (any one of them).
pub trait Need {
    const ANY_OF: &'static [Scope];
}

/// Triggered messages: create and cancel.
pub struct NeedSend;
impl Need for NeedSend {
    const ANY_OF: &'static [Scope] = &[Scope::Send];
}

/// `formids:import`.
pub struct NeedImport;
impl Need for NeedImport {
    const ANY_OF: &'static [Scope] = &[Scope::Import];
}

/// Reading the app's stats and campaigns.
pub struct NeedRead;
impl Need for NeedRead {
    const ANY_OF: &'static [Scope] = &[Scope::Read];
}

/// Reading triggered messages: the sender may read back what it sent.
pub struct NeedSendOrRead;
impl Need for NeedSendOrRead {
    const ANY_OF: &'static [Scope] = &[Scope::Send, Scope::Read];
}

/// The admin token, or an API key of the path's `{appid}` holding a scope of `N`.
pub struct AppAccess<N: Need> {
    pub caller: Caller,
    need: PhantomData<N>,
}

impl<N: Need + 'static> FromRequest for AppAccess<N> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let appid = req.match_info().get("appid").map(str::to_string);
        let caller = Caller::from_request(req, payload);
        Box::pin(async move {
            let caller = caller.await?;
            let appid = appid.expect("AppAccess is used on routes with an {appid}");
            caller.allow(&appid, N::ANY_OF)?;
            Ok(Self {
                caller,
                need: PhantomData,
            })
        })
    }
}

/// The client session behind `Authorization: Bearer <session token>`, checked against
/// the app in the path.
pub fn client_session(
    req: &HttpRequest,
    state: &AppState,
    appid: &str,
) -> Result<SessionClaims, ApiError> {
    let token = bearer(req).ok_or_else(|| {
        ApiError::unauthorized(
            "missing_credentials",
            "send Authorization: Bearer <session token> from POST /v1/apps/{appid}/sessions",
        )
    })?;
    state
        .signer
        .verify(token, appid, Utc::now())
        .map_err(|e| match e {
            SessionError::Expired => ApiError::unauthorized("session_expired", e.to_string()),
            SessionError::Invalid | SessionError::WrongApp => {
                ApiError::unauthorized("invalid_session", e.to_string())
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_eq_compares_whole_values() {
        assert!(secure_eq("abc", "abc"));
        assert!(!secure_eq("abc", "abd"));
        assert!(!secure_eq("abc", "abcd"));
        assert!(!secure_eq("", "a"));
    }

    #[test]
    fn a_key_opens_only_its_app_and_scopes() {
        let key = Caller::Key {
            appid: "wx1".into(),
            scopes: vec![Scope::Send],
        };
        assert!(key.allow("wx1", &[Scope::Send]).is_ok());
        assert!(key.allow("wx1", &[Scope::Send, Scope::Read]).is_ok());
        assert!(key.allow("wx1", &[Scope::Read]).is_err());
        assert!(key.allow("wx2", &[Scope::Send]).is_err());
        assert!(Caller::Admin.allow("wx2", &[Scope::Import]).is_ok());
    }
}
