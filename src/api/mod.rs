//! HTTP: parse the request, call the domain and store, answer. Every route is registered
//! in `routes`; handlers share `AppState`.

pub mod apps;
pub mod auth;
pub mod campaigns;
pub mod console;
pub mod docs;
pub mod events;
pub mod formids;
pub mod health;
mod json;
pub mod keys;
pub mod messages;
pub mod openapi;
mod routes;
pub mod sessions;
mod state;
pub mod stats;
pub mod subscriptions;
pub mod templates;
pub mod wechat_push;

pub use routes::{metrics_route, routes};
pub use state::AppState;
