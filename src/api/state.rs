//! What every handler shares.

use std::sync::Arc;

use sqlx::PgPool;

use crate::config::Settings;
use crate::domain::session::SessionSigner;
use crate::scheduler::pipeline::Pipeline;
use crate::scheduler::templates::TemplateSync;
use crate::scheduler::SenderWaker;
use crate::wechat::{client::WeChatClient, token::TokenManager};

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub signer: SessionSigner,
    pub wechat: WeChatClient,
    pub tokens: TokenManager,
    /// Reads an app's subscribe templates from WeChat and stores them.
    pub template_sync: TemplateSync,
    /// Sends a campaign's test messages (`POST /v1/campaigns/{id}/test`).
    pub pipeline: Pipeline,
    pub credit_writer: crate::store::batcher::CreditWriter,
    /// Logins per client address: each one costs a jscode2session call to WeChat.
    pub login_limiter: Arc<governor::DefaultKeyedRateLimiter<std::net::IpAddr>>,
    /// Wakes the app's sender when a message is queued to send now (`None` when this
    /// instance's scheduler is off or stepped by hand: other instances poll).
    pub senders: Option<SenderWaker>,
}
