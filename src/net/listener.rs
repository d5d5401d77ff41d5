//! Listening sockets: which protocol and port a listener serves ([`ListenerKind`]), binding the
//! configured addresses (IPv6 ones IPv6 only), or taking the sockets systemd passed.

use crate::config::Settings;
use crate::net::listenfds::{self, ListenFdsError};
use smol::Async;
use std::net::{SocketAddr, TcpListener};

/// What a listener serves: a protocol, and how its connections start (in the clear, or TLS
/// at once). The names are those of the `<name>_listen` settings, of the systemd sockets
/// (`FileDescriptorName=`) and of the metrics' `listener` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// SMTP on port 25: mail for local domains (MX), no AUTH.
    Smtp,
    /// Submission on 587: STARTTLS, then AUTH.
    Submission,
    /// Submission on 465: implicit TLS, then AUTH.
    SubmissionTls,
    /// IMAP on 143: STARTTLS before LOGIN.
    Imap,
    /// IMAP on 993: implicit TLS.
    Imaps,
    /// POP3 on 110: STLS before USER/PASS.
    Pop3,
    /// POP3 on 995: implicit TLS.
    Pop3s,
}

/// The protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Smtp,
    Imap,
    Pop3,
}

impl Protocol {
    /// The name logs and metrics use.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Smtp => "smtp",
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
        }
    }
}

impl ListenerKind {
    pub const ALL: [ListenerKind; 7] = [
        ListenerKind::Smtp,
        ListenerKind::Submission,
        ListenerKind::SubmissionTls,
        ListenerKind::Imap,
        ListenerKind::Imaps,
        ListenerKind::Pop3,
        ListenerKind::Pop3s,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::Smtp => "smtp",
            ListenerKind::Submission => "submission",
            ListenerKind::SubmissionTls => "submission_tls",
            ListenerKind::Imap => "imap",
            ListenerKind::Imaps => "imaps",
            ListenerKind::Pop3 => "pop3",
            ListenerKind::Pop3s => "pop3s",
        }
    }

    /// The kind named `name` (see [`ListenerKind::name`]).
    pub fn from_name(name: &str) -> Option<ListenerKind> {
        ListenerKind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn protocol(self) -> Protocol {
        match self {
            ListenerKind::Smtp | ListenerKind::Submission | ListenerKind::SubmissionTls => {
                Protocol::Smtp
            }
            ListenerKind::Imap | ListenerKind::Imaps => Protocol::Imap,
            ListenerKind::Pop3 | ListenerKind::Pop3s => Protocol::Pop3,
        }
    }

    /// TLS from the first byte (465, 993, 995), rather than in the clear with STARTTLS/STLS.
    pub fn implicit_tls(self) -> bool {
        matches!(
            self,
            ListenerKind::SubmissionTls | ListenerKind::Imaps | ListenerKind::Pop3s
        )
    }

    /// The addresses the settings give this kind.
    pub fn configured(self, settings: &Settings) -> &[SocketAddr] {
        match self {
            ListenerKind::Smtp => &settings.smtp_listen,
            ListenerKind::Submission => &settings.submission_listen,
            ListenerKind::SubmissionTls => &settings.submission_tls_listen,
            ListenerKind::Imap => &settings.imap_listen,
            ListenerKind::Imaps => &settings.imaps_listen,
            ListenerKind::Pop3 => &settings.pop3_listen,
            ListenerKind::Pop3s => &settings.pop3s_listen,
        }
    }
}

impl ListenError {
    /// The configuration is wrong (rather than the machine: a port taken, a bad socket).
    pub fn is_config_error(&self) -> bool {
        matches!(self, ListenError::Unassigned(_))
    }
}

impl std::fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

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
    fn names_round_trip_and_are_unique() {
        for kind in ListenerKind::ALL {
            assert_eq!(ListenerKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(ListenerKind::from_name("mx"), None);
    }

    #[test]
    fn ipv6_listeners_are_ipv6_only() {
        // On loopback: the wildcard pair itself is tested end to end, in a network namespace
        // of its own (tests/e2e/test_first_hour.py).
        let v6 = listen("[::1]:0".parse().unwrap()).unwrap();
        assert!(socket2::SockRef::from(&v6).only_v6().unwrap());
    }
}
