//! Types that cannot be invalid once built, and the decisions that need no I/O.
//!
//! The states and kinds stored in text columns are enums here that the database maps
//! (`sqlx::Type`): a typo in a state does not compile.

pub mod api_key;
pub mod app;
pub mod campaign;
pub mod delivery;
pub mod formid;
pub mod message;
pub mod session;
pub mod subscription;
pub mod template;
pub mod template_rules;
pub mod webhook;

/// A 422 with the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub code: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}
