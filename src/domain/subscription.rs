//! Subscribe grants: what a user's answer to `wx.requestSubscribeMessage` means for the
//! credit pool, whether the client reports it or WeChat pushes it.

/// Whether a `wx.requestSubscribeMessage` result value (or a pushed
/// `SubscribeStatusString`) grants one send of that template.
pub fn grants_send(status: &str) -> bool {
    matches!(status, "accept" | "acceptWithAudio")
}

/// Whether a pushed `subscribe_msg_change_event` status takes the user's grants away.
pub fn revokes_grants(status: &str) -> bool {
    status == "reject"
}

/// What one pushed event changes, applied once however often WeChat retries the push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushedChange {
    /// The user accepted these templates: one more send each.
    Grant {
        openid: String,
        template_ids: Vec<String>,
    },
    /// The user switched these templates off in the settings: no sends left.
    Revoke {
        openid: String,
        template_ids: Vec<String>,
    },
    /// WeChat's word on subscribe sends: (`msg_id`, `success` or `errcode:status`).
    SendResults(Vec<(String, String)>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_accepts_grant_and_only_rejects_revoke() {
        assert!(grants_send("accept") && grants_send("acceptWithAudio"));
        assert!(!grants_send("reject") && !grants_send("ban") && !grants_send("filter"));
        assert!(revokes_grants("reject"));
        assert!(!revokes_grants("accept"));
    }
}
