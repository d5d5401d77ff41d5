//! `conf/tambo.json` (SPEC §3): every key parsed, defaulted and validated.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A config error, already formatted as the one line the user sees:
/// `<file>:<line>: <problem>` (or `<file>: <problem>` when no line applies).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalDelivery {
    Maildir,
    /// argv with `%from%`, `%to%`, `%to_user%`, `%to_domain%`.
    Mda(Vec<String>),
    /// `unix:/path` or `host:port`.
    Lmtp(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyAction {
    Reject,
    Tag,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundPolicy {
    pub spf_fail: PolicyAction,
    pub dmarc_reject: PolicyAction,
}

/// A CIDR network (`192.0.2.0/24`, `2001:db8::/32`, or a bare address = /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Result<IpNet, String> {
        todo!("{s}")
    }
    /// IPv4-mapped IPv6 client addresses match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        todo!("{ip}")
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Absolute path of the config folder.
    pub config_dir: PathBuf,
    pub hostname: String,
    pub smtp_listen: Vec<SocketAddr>,
    pub submission_listen: Vec<SocketAddr>,
    pub submission_tls_listen: Vec<SocketAddr>,
    pub imap_listen: Vec<SocketAddr>,
    pub imaps_listen: Vec<SocketAddr>,
    pub pop3_listen: Vec<SocketAddr>,
    pub pop3s_listen: Vec<SocketAddr>,
    pub monitoring_listen: Option<SocketAddr>,
    /// Absolute (relative values are joined to `config_dir`).
    pub data_dir: PathBuf,
    pub max_message_size_mb: u64,
    pub max_recipients: usize,
    pub suffix_separators: String,
    pub drop_characters: String,
    pub local_delivery: LocalDelivery,
    pub give_up_after: Duration,
    pub dns_servers: Vec<SocketAddr>,
    pub outbound_smtp_port: u16,
    pub inbound_policy: InboundPolicy,
    pub srs_secret: Option<String>,
    pub haproxy_incoming: bool,
    pub relay_networks: Vec<IpNet>,
    pub outbound_bind: Option<IpAddr>,
    pub arc_seal: bool,
    pub mailbox_quota_mb: u64,
}

impl Settings {
    /// Reads `<config_dir>/conf/tambo.json`; a missing file means all defaults.
    pub fn load(config_dir: &Path) -> Result<Settings, ConfigError> {
        todo!("{config_dir:?}")
    }
    /// `max_message_size_mb` in bytes.
    pub fn max_message_size(&self) -> u64 {
        self.max_message_size_mb * 1024 * 1024
    }
    /// The effective settings as JSON, defaults filled in (`util print-config`).
    pub fn to_json(&self) -> serde_json::Value {
        todo!()
    }
}
