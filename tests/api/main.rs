//! Integration tests: the real app on a random port, a fresh Postgres database per test
//! (`#[sqlx::test]`), and the sandbox (formpush's WeChat fake) as WeChat.

mod apps;
mod campaigns;
mod delivery;
mod formids;
mod health;
mod helpers;
mod hostile;
mod multi_instance;
mod push;
mod sessions;
mod subscriptions;
mod templates;
mod tokens;
