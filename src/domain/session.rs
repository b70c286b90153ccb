//! Session tokens for mini-program clients.
//!
//! A token is signed (HMAC-SHA256 with a key every instance loads from the database), so
//! checking one costs no database round trip on the hot formId path, survives restarts and
//! is valid on every instance. It names the app, the user and the expiry; nothing in it is
//! secret.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::{DateTime, Duration, TimeZone, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

pub const SESSION_VALIDITY: Duration = Duration::days(7);

/// A fresh random string of `bytes` random bytes, URL-safe base64.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionClaims {
    pub appid: String,
    pub user_id: i64,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("the session token is malformed or its signature is wrong")]
    Invalid,
    #[error("the session token belongs to another app")]
    WrongApp,
    #[error("the session token has expired")]
    Expired,
}

#[derive(Clone)]
pub struct SessionSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for SessionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSigner(..)")
    }
}

impl SessionSigner {
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length")
    }

    pub fn issue(&self, claims: &SessionClaims) -> String {
        let payload = format!(
            "{}.{}.{}",
            claims.user_id,
            claims.expires_at.timestamp(),
            claims.appid
        );
        let payload = URL_SAFE_NO_PAD.encode(payload);
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{payload}.{tag}")
    }

    /// Checks signature (in constant time), app binding and expiry.
    pub fn verify(
        &self,
        token: &str,
        appid: &str,
        now: DateTime<Utc>,
    ) -> Result<SessionClaims, SessionError> {
        let (payload, tag) = token.split_once('.').ok_or(SessionError::Invalid)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| SessionError::Invalid)?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&tag).map_err(|_| SessionError::Invalid)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| SessionError::Invalid)?;
        let payload = String::from_utf8(payload).map_err(|_| SessionError::Invalid)?;
        let mut parts = payload.splitn(3, '.');
        let user_id = parts.next().and_then(|p| p.parse().ok());
        let expires = parts.next().and_then(|p| p.parse().ok());
        let (Some(user_id), Some(expires), Some(token_app)) = (user_id, expires, parts.next())
        else {
            return Err(SessionError::Invalid);
        };
        if token_app != appid {
            return Err(SessionError::WrongApp);
        }
        let expires_at = Utc
            .timestamp_opt(expires, 0)
            .single()
            .ok_or(SessionError::Invalid)?;
        if expires_at <= now {
            return Err(SessionError::Expired);
        }
        Ok(SessionClaims {
            appid: token_app.to_string(),
            user_id,
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: DateTime<Utc>) -> SessionClaims {
        SessionClaims {
            appid: "wxapp".into(),
            user_id: 42,
            expires_at: now + SESSION_VALIDITY,
        }
    }

    #[test]
    fn issued_token_verifies_for_its_app_until_it_expires() {
        let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let signer = SessionSigner::new(b"key".to_vec());
        let token = signer.issue(&claims(now));
        assert_eq!(signer.verify(&token, "wxapp", now), Ok(claims(now)));
        assert_eq!(
            signer.verify(&token, "wxother", now),
            Err(SessionError::WrongApp)
        );
        assert_eq!(
            signer.verify(&token, "wxapp", now + SESSION_VALIDITY),
            Err(SessionError::Expired)
        );
    }

    #[test]
    fn tampered_or_foreign_tokens_are_invalid() {
        let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let signer = SessionSigner::new(b"key".to_vec());
        let token = signer.issue(&claims(now));
        let other = SessionSigner::new(b"other key".to_vec());
        assert_eq!(
            other.verify(&token, "wxapp", now),
            Err(SessionError::Invalid)
        );
        // Claim another user with the original signature.
        let (_, tag) = token.split_once('.').unwrap();
        let forged = format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode(format!("43.{}.wxapp", (now + SESSION_VALIDITY).timestamp()))
        );
        assert_eq!(
            signer.verify(&forged, "wxapp", now),
            Err(SessionError::Invalid)
        );
        for junk in ["", ".", "abc", "a.b", "a.b.c"] {
            assert_eq!(
                signer.verify(junk, "wxapp", now),
                Err(SessionError::Invalid),
                "{junk}"
            );
        }
    }
}
