//! Types that cannot be invalid once built, and the decisions that need no I/O.

pub mod campaign;
pub mod formid;
pub mod session;
