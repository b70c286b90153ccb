//! SQL shared by the HTTP API and the scheduler. Each function is one statement or one
//! short transaction; none is ever held open across a WeChat call.

pub mod apps;
pub mod batcher;
pub mod campaigns;
pub mod credits;
pub mod deliveries;
pub mod keys;
pub mod users;
