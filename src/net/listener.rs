//! Listening sockets for each [`ListenerKind`]: binding the
//! configured addresses (IPv6 ones IPv6 only), or taking the sockets systemd passed.

use crate::config::Settings;
pub use crate::net::kind::{ListenerKind, Protocol};
use crate::net::listenfds::{self, ListenFdsError};
use smol::Async;
use std::net::{SocketAddr, TcpListener};

/// A listener that could not be set up; the message names the address or the socket.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The sockets systemd passed could not be taken.
    #[error(transparent)]
    Passed(ListenFdsError),
    /// A passed socket is for no listener served: a configuration mistake.
    #[error(transparent)]
    Unassigned(ListenFdsError),
    #[error("systemd socket {addr}: {source}")]
    Adopt {
        addr: String,
        source: std::io::Error,
    },
}

impl ListenError {
    /// The configuration is wrong (rather than the machine: a port taken, a bad socket).
    pub fn is_config_error(&self) -> bool {
        matches!(self, ListenError::Unassigned(_))
    }
}

/// The listeners of `kinds`: every address the settings give them, or, under systemd socket
/// activation (`LISTEN_FDS`), the sockets systemd passed, which then replace every configured
/// address (a kind with no socket is not served, as the socket units, not tambo.json, say
/// where to listen). Call before other threads start (it reads and unsets `LISTEN_*`).
pub fn bind_all(
    settings: &Settings,
    kinds: &[ListenerKind],
) -> Result<Vec<(Async<TcpListener>, ListenerKind)>, ListenError> {
    let groups: Vec<(&[SocketAddr], ListenerKind)> =
        kinds.iter().map(|k| (k.configured(settings), *k)).collect();
    if let Some(passed) = listenfds::take().map_err(ListenError::Passed)? {
        return activated(passed, &groups);
    }
    let mut listeners = Vec::new();
    for (addrs, kind) in groups {
        for addr in addrs {
            let bound = listen(*addr).and_then(Async::new);
            let listener = bound.map_err(|source| ListenError::Bind {
                addr: *addr,
                source,
            })?;
            listeners.push((listener, kind));
        }
    }
    Ok(listeners)
}

/// Socket activation: the passed sockets, each assigned to a kind.
fn activated(
    passed: Vec<listenfds::Passed>,
    groups: &[(&[SocketAddr], ListenerKind)],
) -> Result<Vec<(Async<TcpListener>, ListenerKind)>, ListenError> {
    let assigned = listenfds::assign(passed, groups).map_err(ListenError::Unassigned)?;
    for (_, kind) in groups {
        if !assigned.iter().any(|(_, k)| k == kind) {
            log::info!("systemd passed no socket for {kind}: not listening for it");
        }
    }
    assigned
        .into_iter()
        .map(|(listener, kind)| {
            let addr = listener_addr(&listener);
            log::info!("using the socket systemd passed for {kind} ({addr})");
            Async::new(listener)
                .map(|l| (l, kind))
                .map_err(|source| ListenError::Adopt { addr, source })
        })
        .collect()
}

/// A listening TCP socket on `addr`. An IPv6 socket is IPv6 only (`IPV6_V6ONLY`, as Postfix
/// and Dovecot set it): with Linux's default `net.ipv6.bindv6only=0`, `[::]:25` would also
/// take IPv4 and collide with `0.0.0.0:25`, and SPEC §3's default listeners are that pair.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // As std's TcpListener::bind: a restart must not wait for old connections in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// The accept queue: as long as the kernel allows (it clamps the value to
/// `net.core.somaxconn`), so that a burst of connections waits to be answered by the caps
/// instead of being dropped by the kernel.
const LISTEN_BACKLOG: i32 = i32::MAX;

/// A listener's address for the log (`127.0.0.1:25`), or why it is unknown.
pub fn listener_addr(listener: &TcpListener) -> String {
    match listener.local_addr() {
        Ok(addr) => addr.to_string(),
        Err(e) => format!("an unknown address ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_listeners_are_ipv6_only() {
        // On loopback: the wildcard pair itself is tested end to end, in a network namespace
        // of its own (tests/e2e/test_first_hour.py).
        let v6 = listen("[::1]:0".parse().unwrap()).unwrap();
        assert!(socket2::SockRef::from(&v6).only_v6().unwrap());
    }
}
