//! formpush: collects WeChat mini-program formIds and subscribe grants ("credits") and
//! spends them on scheduled campaigns.
//!
//! Layout follows the data: `api` (HTTP: parse, call, answer) → `domain` (types that
//! cannot be invalid, delivery decisions) → `store` (SQL), `wechat` (client, token cache,
//! push crypto), `scheduler` (runs, the send pipeline) and `webhooks` (the outbox
//! dispatcher).

pub mod api;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod metrics;
pub mod scheduler;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod webhooks;
pub mod wechat;
