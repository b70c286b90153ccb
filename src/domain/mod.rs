//! Types that cannot be invalid once built, and the decisions that need no I/O.
//!
//! The states and kinds stored in text columns are enums here that the database maps
//! (`sqlx::Type`): a typo in a state does not compile.

pub mod api_key;
pub mod app;
pub mod campaign;
pub mod delivery;
pub mod formid;
pub mod hygiene;
pub mod message;
pub mod session;
pub mod stats;
pub mod subscription;
pub mod template;
pub mod template_rules;
pub mod webhook;

/// A display name as sent: at most `max` characters counted before trimming (so the bound
/// is the one the schema states), stored trimmed, never blank, never holding NUL.
pub fn parse_name(raw: &str, max: usize) -> Result<String, FieldError> {
    let name = raw.trim();
    if name.is_empty() || raw.chars().count() > max || raw.contains('\0') {
        return Err(FieldError::new(
            "invalid_name",
            format!("name must be 1 to {max} characters, not all blank, none of them NUL"),
        ));
    }
    Ok(name.to_string())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_bounded_as_sent_and_stored_trimmed() {
        assert_eq!(parse_name("  order-service ", 20).unwrap(), "order-service");
        assert_eq!(parse_name(&"é".repeat(5), 5).unwrap(), "ééééé");
        // Trimming does not bring an over-long name under the bound.
        assert!(parse_name(&format!(" {}", "a".repeat(5)), 5).is_err());
        assert!(parse_name(" \t ", 5).is_err());
        assert!(parse_name("a\0b", 5).is_err());
    }
}
