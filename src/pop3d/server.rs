//! What every POP3 session shares: the configuration, the logins, the store, the time
//! limits, and the maildrop locks.

use crate::auth::Authenticator;
use crate::config::live_config::LiveConfig;
use crate::mailbox::Store;
use crate::net::ListenerKind;
use crate::net::caps::Refused;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a client may stay silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Before login: the whole time a client has to log in.
    pub login: Duration,
    /// After login: RFC 1939 §3, an autologout timer of at least 10 minutes. A session
    /// ended by it deletes nothing (it never reaches the UPDATE state).
    pub autologout: Duration,
}

impl Default for SessionLimits {
    fn default() -> SessionLimits {
        SessionLimits {
            login: Duration::from_secs(60),
            autologout: Duration::from_secs(10 * 60),
        }
    }
}

/// What every POP3 session shares.
pub struct Server {
    pub config: Arc<LiveConfig>,
    pub auth: Arc<Authenticator>,
    pub store: Store,
    pub limits: SessionLimits,
    pub maildrops: Arc<Maildrops>,
}

impl Server {
    /// What a client over a connection cap is told before it is closed (RFC 2449 §8.1.2's
    /// SYS/TEMP: try later); on 995 nothing (it expects a TLS record).
    pub fn refusal(kind: ListenerKind, _why: Refused) -> Option<Vec<u8>> {
        (!kind.implicit_tls())
            .then(|| b"-ERR [SYS/TEMP] Too many connections, try again later\r\n".to_vec())
    }
}

/// The maildrops held by a POP3 session (RFC 1939 §4: "an exclusive-access lock on the
/// maildrop"). In-process: tambo is the only POP3 server of its Maildirs. IMAP sessions
/// and deliveries do not take it: they go on beside a POP3 session.
#[derive(Default)]
pub struct Maildrops {
    held: Mutex<HashSet<String>>,
}

/// The lock of one user's maildrop, held until dropped.
pub struct MaildropLock {
    maildrops: Arc<Maildrops>,
    user: String,
}

impl Maildrops {
    /// Locks `user`'s maildrop, unless another session holds it.
    pub fn lock(self: &Arc<Self>, user: &str) -> Option<MaildropLock> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.insert(user.to_string()).then(|| MaildropLock {
            maildrops: self.clone(),
            user: user.to_string(),
        })
    }
}

impl Drop for MaildropLock {
    fn drop(&mut self) {
        let mut held = self
            .maildrops
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        held.remove(&self.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_session_per_maildrop() {
        let m = Arc::new(Maildrops::default());
        let a = m.lock("a@x.test").unwrap();
        assert!(m.lock("a@x.test").is_none());
        let b = m.lock("b@x.test");
        assert!(b.is_some(), "another user");
        drop(a);
        assert!(m.lock("a@x.test").is_some(), "released when dropped");
    }
}
