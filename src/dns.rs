//! The one DNS resolver of the process (SPEC §3 `dns_servers`): hickory, inside mail-auth's
//! `MessageAuthenticator`, so delivery (MX, A/AAAA) and message authentication (SPF, DKIM,
//! DMARC, MTA-STS TXT) share one cache. hickory needs a tokio reactor: every call runs
//! inside `async_compat::Compat` (STACK.md), so callers just await it under smol.

use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// NXDOMAIN: the name does not exist (permanent).
    #[error("{0}: no such domain")]
    NotFound(String),
    /// RFC 7505 null MX (`0 .`): the domain accepts no mail (permanent).
    #[error("{0}: domain accepts no mail (null MX)")]
    NullMx(String),
    /// Timeouts, SERVFAIL, network errors (temporary).
    #[error("{0}: DNS error: {1}")]
    Temporary(String, String),
}

impl DnsError {
    pub fn is_permanent(&self) -> bool {
        !matches!(self, DnsError::Temporary(..))
    }
}

pub struct Dns {
    auth: mail_auth::MessageAuthenticator,
}

impl Dns {
    /// `servers` empty: the system configuration (`/etc/resolv.conf`).
    pub fn new(servers: &[SocketAddr]) -> Result<Dns, DnsError> {
        todo!("{servers:?}")
    }
    /// For SPF / DKIM / DMARC / ARC (their calls must also run inside `Compat`).
    pub fn authenticator(&self) -> &mail_auth::MessageAuthenticator {
        &self.auth
    }
    /// MX host names in preference order (equal preferences in random order), without the
    /// trailing dot. `Ok(vec![])` when the domain exists but has no MX (the caller then uses
    /// the domain itself, RFC 5321 §5.1).
    pub async fn mx(&self, domain: &str) -> Result<Vec<String>, DnsError> {
        todo!("{domain}")
    }
    /// A and AAAA addresses of a host (IPv6 first when both, as RFC 6724 prefers).
    pub async fn ips(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        todo!("{host}")
    }
    /// TXT strings of a name, each record's strings joined.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        todo!("{name}")
    }
}
