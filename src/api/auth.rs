//! Credentials: the admin bearer token and client session tokens.

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use chrono::Utc;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::state::AppState;
use crate::domain::session::{SessionClaims, SessionError};
use crate::error::ApiError;

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

/// Present in a handler's arguments = the caller proved the admin token.
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req
            .app_data::<web::Data<AppState>>()
            .expect("AppState is registered");
        let expected = state.settings.admin_token.expose_secret();
        std::future::ready(match bearer(req) {
            Some(given) if secure_eq(given, expected) => Ok(Admin),
            Some(_) => Err(ApiError::unauthorized(
                "invalid_admin_token",
                "the admin token is wrong",
            )),
            None => Err(ApiError::unauthorized(
                "missing_credentials",
                "send Authorization: Bearer <admin token>",
            )),
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
    use super::secure_eq;

    #[test]
    fn secure_eq_compares_whole_values() {
        assert!(secure_eq("abc", "abc"));
        assert!(!secure_eq("abc", "abd"));
        assert!(!secure_eq("abc", "abcd"));
        assert!(!secure_eq("", "a"));
    }
}
