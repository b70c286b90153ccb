//! SQL shared by the HTTP API and the scheduler. Each function is one statement or one
//! short transaction; none is ever held open across a WeChat call.

pub mod apps;
pub mod batcher;
pub mod campaigns;
pub mod credits;
pub mod deliveries;
pub mod keys;
pub mod users;

/// Postgres text cannot hold NUL (U+0000), so no stored value contains one. A lookup by such
/// a value finds nothing, and is answered without SQL (where the value would be an error).
pub(crate) fn storable(text: &str) -> bool {
    !text.contains('\0')
}
