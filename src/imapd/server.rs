//! What every IMAP session shares, and the cap on sessions per user and client address.

use crate::auth::Authenticator;
use crate::config::live_config::LiveConfig;
use crate::mailbox::Store;
use crate::net::ListenerKind;
use crate::net::caps::Refused;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a client may stay silent, and how often an idling client hears from us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Before login: the whole time a client has to log in (a stranger cannot hold a
    /// connection open without credentials).
    pub login: Duration,
    /// After login: RFC 3501 §5.4, an autologout timer of at least 30 minutes.
    pub autologout: Duration,
    /// During IDLE: an untagged OK this often, so that NAT boxes keep the connection (RFC
    /// 2177 §3 asks clients to re-IDLE within 29 minutes; the keepalive is ours).
    pub idle_keepalive: Duration,
    /// How often a session in IDLE looks at its folder for changes made by other programs
    /// (tambo's own deliveries and sessions tell it at once).
    pub idle_poll: Duration,
}

impl Default for SessionLimits {
    fn default() -> SessionLimits {
        SessionLimits {
            login: Duration::from_secs(60),
            autologout: Duration::from_secs(30 * 60),
            idle_keepalive: Duration::from_secs(2 * 60),
            idle_poll: Duration::from_secs(5),
        }
    }
}

/// Sessions of one user from one address at most: Thunderbird keeps several per account and
/// FairEmail one per pushed folder (MAILBOX.md), so at least 20.
pub const SESSIONS_PER_USER_AND_ADDRESS: usize = 32;

/// What every IMAP session shares.
pub struct Server {
    pub config: Arc<LiveConfig>,
    pub auth: Arc<Authenticator>,
    pub store: Store,
    pub limits: SessionLimits,
    pub sessions: Arc<Sessions>,
    /// `max_message_size_mb`: the largest APPEND.
    pub max_message_size: u64,
}

impl Server {
    /// What a client over a connection cap is told (RFC 3501 §7.1.5: BYE), before it is
    /// closed; on 993 nothing (it expects a TLS record).
    pub fn refusal(kind: ListenerKind, _why: Refused) -> Option<Vec<u8>> {
        (!kind.implicit_tls()).then(|| b"* BYE Too many connections, try again later\r\n".to_vec())
    }
}

/// Logged-in sessions per user and client address (IPv6: per /64).
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<(String, IpAddr), usize>>,
}

/// One logged-in session, counted until dropped.
pub struct SessionSlot {
    sessions: Arc<Sessions>,
    key: (String, IpAddr),
}

impl Sessions {
    /// Counts a session of `user` from `client`, unless the cap is reached.
    pub fn open(self: &Arc<Self>, user: &str, client: IpAddr) -> Option<SessionSlot> {
        let key = (user.to_string(), address_key(client));
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= SESSIONS_PER_USER_AND_ADDRESS {
            return None;
        }
        *n += 1;
        Some(SessionSlot {
            sessions: self.clone(),
            key,
        })
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut open = self.sessions.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// An IPv4 address as it is, an IPv6 one cut to its /64 (IPv4-mapped counts as IPv4).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_capped_per_user_and_address() {
        let s = Arc::new(Sessions::default());
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let same64: IpAddr = "2001:db8::ffff".parse().unwrap();
        let slots: Vec<_> = (0..SESSIONS_PER_USER_AND_ADDRESS)
            .map(|_| s.open("a@x.test", ip).unwrap())
            .collect();
        assert!(s.open("a@x.test", same64).is_none());
        assert!(s.open("b@x.test", ip).is_some(), "another user");
        assert!(
            s.open("a@x.test", "2001:db8:0:1::1".parse().unwrap())
                .is_some()
        );
        drop(slots);
        assert!(s.open("a@x.test", ip).is_some());
        assert!(s.open.lock().unwrap().len() <= 1);
    }
}
