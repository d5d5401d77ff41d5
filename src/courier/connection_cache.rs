//! Idle SMTP sessions kept for reuse, as Postfix's connection cache (scache) does: a burst of
//! messages to one destination (a forwarder's daily life: everything goes to the same
//! mailbox provider) pays for TCP, the greeting, EHLO and the TLS handshake once.
//!
//! A session is kept only after a transaction whose data the peer accepted (so it is between
//! transactions, RFC 5321 §4.1.4), for at most [`MAX_IDLE`]; the sweeper QUITs the rest.

use crate::courier::smtp_client::Client;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an idle session is kept (Postfix: `smtp_connection_cache_time_limit` = 2s).
pub const MAX_IDLE: Duration = Duration::from_secs(2);
/// Idle sessions kept per destination address.
const MAX_PER_DESTINATION: usize = 16;

/// Host name and address: a session is only reused for the name it was opened (and its
/// certificate verified) for.
type Key = (String, SocketAddr);

#[derive(Default)]
pub struct ConnectionCache {
    idle: Mutex<HashMap<Key, Vec<Idle>>>,
}

struct Idle {
    client: Client,
    since: Instant,
}

impl ConnectionCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<Idle>>> {
        // A panic while holding the lock leaves at worst a session too many in the map.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle session to `host` at `addr`, if one is fresh enough.
    pub fn take(&self, host: &str, addr: SocketAddr) -> Option<Client> {
        let mut idle = self.lock();
        let sessions = idle.get_mut(&(host.to_string(), addr))?;
        let fresh = sessions
            .last()
            .is_some_and(|s| s.since.elapsed() < MAX_IDLE);
        let session = if fresh { sessions.pop() } else { None };
        if sessions.is_empty() {
            idle.remove(&(host.to_string(), addr));
        }
        session.map(|s| s.client)
    }

    /// Keeps a session between transactions. Gives it back when there is no room (the caller
    /// ends it).
    pub fn put(&self, host: &str, addr: SocketAddr, client: Client) -> Option<Client> {
        let mut idle = self.lock();
        let sessions = idle.entry((host.to_string(), addr)).or_default();
        if sessions.len() >= MAX_PER_DESTINATION {
            return Some(client);
        }
        sessions.push(Idle {
            client,
            since: Instant::now(),
        });
        None
    }

    /// Removes and returns the sessions idle for longer than [`MAX_IDLE`], to be QUIT.
    pub fn expired(&self) -> Vec<Client> {
        let mut idle = self.lock();
        let mut out = Vec::new();
        for sessions in idle.values_mut() {
            let (old, keep): (Vec<Idle>, Vec<Idle>) = std::mem::take(sessions)
                .into_iter()
                .partition(|s| s.since.elapsed() >= MAX_IDLE);
            *sessions = keep;
            out.extend(old.into_iter().map(|s| s.client));
        }
        idle.retain(|_, sessions| !sessions.is_empty());
        out
    }
}
