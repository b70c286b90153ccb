//! Integration tests: the real app on a random port, a fresh Postgres database per test
//! (`#[sqlx::test]`), and the sandbox (formpush's WeChat fake) as WeChat. Campaigns are
//! sent by stepping the scheduler (`TestApp::run_scheduler`); the tests of the clock and of
//! instances racing each other run it on its own clock (`REAL_CLOCK`).

#[path = "../common/mod.rs"]
mod common;

mod apps;
mod campaigns;
mod delivery;
mod formids;
mod health;
mod hostile;
mod hygiene;
mod keys;
mod messages;
mod multi_instance;
mod push;
mod retention;
mod sessions;
mod stats;
mod subscriptions;
mod templates;
mod tokens;
mod webhooks;
