//! What every SMTP connection shares (the `net::Service` that `net::accept_loop` hands
//! connections to is implemented for it in `conn.rs`).

use crate::auth::Authenticator;
use crate::config::live_config::LiveConfig;
use crate::config::{Domains, Settings};
use crate::dns::Dns;
use crate::mailauth::srs::Srs;
use crate::proto::reply::Reply;
use crate::queue::runner::Deliveries;
use crate::queue::store::Queue;
use std::sync::Arc;
use std::time::Duration;

/// How long a client may take, from our last reply, for its next command and for a whole
/// message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    pub command: Duration,
    pub data: Duration,
}

impl Default for ClientLimits {
    /// SPEC §7: idle clients are dropped after 5 minutes; RFC 5321 §4.5.3.2.7 gives the
    /// server 5 minutes for a command. The whole message, from our 354 to the final dot: RFC
    /// 5321 §4.5.3.2.5 wants 3 minutes per data block, and a byte a second must not hold a
    /// session open forever either: 20 minutes.
    fn default() -> ClientLimits {
        ClientLimits {
            command: Duration::from_secs(300),
            data: Duration::from_secs(20 * 60),
        }
    }
}

/// What every SMTP connection shares.
pub struct Server {
    /// Settings, domains, certificates, access rules: what a reload swaps.
    pub config: Arc<LiveConfig>,
    pub queue: Queue,
    pub deliveries: Deliveries,
    /// Reverses SRS addresses at RCPT (bounces to forwarded mail).
    pub srs: Arc<Srs>,
    /// The process's one resolver, for SPF / DKIM / DMARC on port 25.
    pub dns: Arc<Dns>,
    /// Logins (AUTH), with their failure delay and limits.
    pub auth: Arc<Authenticator>,
    pub limits: ClientLimits,
    /// The post-data hook's time limit.
    pub hook_limit: Duration,
}

impl Server {
    pub fn settings(&self) -> &Settings {
        &self.config.settings
    }

    /// The current domains (a snapshot: a reload does not change it under a transaction).
    pub fn domains(&self) -> Arc<Domains> {
        self.config.domains()
    }
}

/// What a client over a connection cap is told.
pub fn refusal_reply() -> Reply {
    Reply::new(421, "4.7.0", "Too many connections, try again later")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_is_421_4_7_0() {
        let bytes = refusal_reply().to_bytes();
        assert!(
            bytes.starts_with(b"421 4.7.0 "),
            "{:?}",
            String::from_utf8_lossy(&bytes)
        );
        assert!(bytes.ends_with(b"\r\n"));
    }
}
