//! App API keys: per-app credentials for a team's own backends, each limited to scopes.
//! A key is shown once when it is made; formpush keeps only its SHA-256 (enough for a key
//! of 240 random bits, which no dictionary holds) and its first characters.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::FieldError;

/// Every key begins with this, so a bearer token can be told from the admin token.
pub const KEY_PREFIX: &str = "fpk_";
/// How many of a key's first characters are kept to tell keys apart in lists.
pub const SHOWN_PREFIX_LEN: usize = 8;
/// Random bytes per key: 40 url-safe characters after `fpk_`.
const KEY_BYTES: usize = 30;
const MAX_NAME: usize = 100;

/// What a key may do, always within its own app.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    sqlx::Type,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Scope {
    /// Triggered messages: create, read, cancel.
    Send,
    /// `POST /v1/apps/{appid}/formids:import`.
    Import,
    /// Reading the app's stats, campaigns, runs, deliveries and messages.
    Read,
}

impl Scope {
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "send" => Some(Self::Send),
            "import" => Some(Self::Import),
            "read" => Some(Self::Read),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Import => "import",
            Self::Read => "read",
        }
    }
}

/// `POST /v1/apps/{appid}/keys` as received.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// what the key is for, e.g. the service that holds it
    #[schema(min_length = 1, max_length = 100, example = "order-service")]
    pub name: String,
    /// one or more of send, import, read
    #[schema(value_type = Vec<Scope>, example = json!(["send"]))]
    pub scopes: Vec<String>,
}

/// A key to be made: its name and scopes (sorted, each once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpec {
    pub name: String,
    pub scopes: Vec<Scope>,
}

impl KeySpec {
    pub fn parse(req: KeyRequest) -> Result<Self, FieldError> {
        let name = super::parse_name(&req.name, MAX_NAME)?;
        let mut scopes = Vec::with_capacity(req.scopes.len());
        for word in &req.scopes {
            let scope = Scope::parse(word).ok_or_else(|| {
                FieldError::new(
                    "invalid_scope",
                    format!("scope {word:?} must be send, import or read"),
                )
            })?;
            scopes.push(scope);
        }
        scopes.sort();
        scopes.dedup();
        if scopes.is_empty() {
            return Err(FieldError::new(
                "invalid_scope",
                "scopes must name at least one of send, import, read",
            ));
        }
        Ok(Self { name, scopes })
    }
}

/// A freshly made key: the key itself (shown once), and what is stored of it.
pub struct IssuedKey {
    pub key: SecretString,
    pub hash: [u8; 32],
    pub prefix: String,
}

impl IssuedKey {
    pub fn generate() -> Self {
        use secrecy::ExposeSecret;
        let key: SecretString =
            format!("{KEY_PREFIX}{}", super::session::random_token(KEY_BYTES)).into();
        let exposed = key.expose_secret();
        Self {
            hash: hash(exposed),
            prefix: exposed[..SHOWN_PREFIX_LEN].to_string(),
            key,
        }
    }
}

/// The stored form of a key.
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Whether a bearer token is meant as an API key (and not as the admin token).
pub fn is_api_key(token: &str) -> bool {
    token.starts_with(KEY_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn keys_are_long_url_safe_and_stored_as_their_hash() {
        let a = IssuedKey::generate();
        let b = IssuedKey::generate();
        let key = a.key.expose_secret();
        assert!(key.starts_with("fpk_"));
        assert!(key.len() >= 4 + 32);
        assert!(key[4..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(a.prefix, key[..8]);
        assert_eq!(a.hash, hash(key));
        assert_ne!(a.hash, b.hash);
        assert!(is_api_key(key));
    }

    #[test]
    fn scopes_are_checked_sorted_and_deduplicated() {
        let spec = KeySpec::parse(KeyRequest {
            name: " order-service ".into(),
            scopes: vec!["read".into(), "send".into(), "read".into()],
        })
        .unwrap();
        assert_eq!(spec.name, "order-service");
        assert_eq!(spec.scopes, vec![Scope::Send, Scope::Read]);
        for (name, scopes, code) in [
            ("", vec!["send"], "invalid_name"),
            ("x", vec![], "invalid_scope"),
            ("x", vec!["admin"], "invalid_scope"),
        ] {
            let err = KeySpec::parse(KeyRequest {
                name: name.into(),
                scopes: scopes.into_iter().map(String::from).collect(),
            })
            .unwrap_err();
            assert_eq!(err.code, code);
        }
    }
}
