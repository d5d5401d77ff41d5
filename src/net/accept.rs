//! The accept loop every protocol shares: a connection is counted within the caps (overall
//! and per client address), its PROXY header read when the listener is behind a proxy, and
//! then handed to the protocol's [`Service`] on a task of its own. A refusal is a value
//! ([`Refused`]) that the service turns into its own words.

use crate::net::Protocol;
use crate::net::caps::{Admitted, Caps, Connections, Refused};
use crate::net::listener::{ListenerKind, listener_addr};
use crate::net::proxy::{self, ProxyStatus};
use crate::net::stream::with_timeout;
use smol::Async;
use smol::io::AsyncReadExt;
use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// How long a proxy may take to send its header.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(300);
/// How a silent IMAP or POP3 peer is found: TCP keepalive probes after `idle` of quiet, one
/// every `idle / 6`, the connection given up on after three unanswered; and TCP_USER_TIMEOUT
/// (RFC 5482) at the same total, so data sent and not acknowledged closes it as soon, rather
/// than after the kernel's 15 minutes of retransmissions. Linux lets the user timeout decide
/// when keepalive gives up too (`tcp_keepalive_timer`), which is why the two are one figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeadPeerTimers {
    pub idle: Duration,
}

impl DeadPeerTimers {
    const PROBES: u32 = 3;

    fn interval(self) -> Duration {
        self.idle / 6
    }

    /// From the peer's last word to the connection's end.
    fn give_up_after(self) -> Duration {
        self.idle + self.interval() * Self::PROBES
    }
}

impl Default for DeadPeerTimers {
    /// Probes after 2 minutes, given up on after 3.
    fn default() -> Self {
        DeadPeerTimers {
            idle: Duration::from_secs(120),
        }
    }
}

/// A protocol served on some listeners.
pub trait Service: Send + Sync + 'static {
    /// Serves one connection, admitted within the caps, until it ends.
    fn serve(self: Arc<Self>, conn: Accepted) -> impl Future<Output = ()> + Send;

    /// What a client refused by a cap is told before it is closed; `None` closes it without
    /// a word (on an implicit-TLS port the client expects a TLS record, and a handshake per
    /// refusal would cost more than the cap saves).
    fn refusal(&self, kind: ListenerKind, why: Refused) -> Option<Vec<u8>>;
}

/// A connection handed to a [`Service`].
pub struct Accepted {
    pub tcp: Async<TcpStream>,
    /// The client: the socket's peer, or the one a PROXY header named.
    pub peer: SocketAddr,
    pub kind: ListenerKind,
    /// What the client sent after its PROXY header: the start of its stream, to read first.
    pub early: Vec<u8>,
}

/// How connections are admitted: the counters shared by every listener, the caps, whether a
/// listener's clients are named by a PROXY header (SPEC §3 `haproxy_incoming`), and when a
/// silent mailbox client is given up on.
pub struct Admission {
    pub connections: Arc<Connections>,
    pub caps: Caps,
    /// Listeners behind a proxy: their client address is counted only once the PROXY header
    /// names it.
    pub proxied: Vec<ListenerKind>,
    /// When an IMAP or POP3 client that went silent is given up on.
    pub dead_peer: DeadPeerTimers,
}

impl Admission {
    fn behind_proxy(&self, kind: ListenerKind) -> bool {
        self.proxied.contains(&kind)
    }
}

/// Accepts connections on `listener` forever, each served by `service` on its own task.
pub async fn accept_loop<S: Service>(
    listener: Async<TcpListener>,
    kind: ListenerKind,
    admission: Arc<Admission>,
    service: Arc<S>,
    ex: Arc<smol::Executor<'static>>,
) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let counts_address = !admission.behind_proxy(kind);
                let admitted = match Admitted::new(
                    &admission.connections,
                    &admission.caps,
                    peer.ip(),
                    counts_address,
                ) {
                    Ok(admitted) => admitted,
                    Err(why) => {
                        // Answered and closed here, without a task or a wait: a flood costs
                        // one write per connection.
                        refuse(&*service, &tcp, peer, kind, why);
                        continue;
                    }
                };
                let (admission, service) = (admission.clone(), service.clone());
                ex.spawn(connection(tcp, peer, kind, admitted, admission, service))
                    .detach();
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                let addr = listener_addr(listener.get_ref());
                log::error!("accept on {addr}: {e}");
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One connection's task: the PROXY header when there is one, then the service.
async fn connection<S: Service>(
    tcp: Async<TcpStream>,
    socket_peer: SocketAddr,
    kind: ListenerKind,
    mut admitted: Admitted,
    admission: Arc<Admission>,
    service: Arc<S>,
) {
    let _ = tcp.get_ref().set_nodelay(true);
    if kind.protocol() != Protocol::Smtp
        && let Err(e) = detect_dead_peers(tcp.get_ref(), admission.dead_peer)
    {
        log::warn!("keepalive on the connection from {socket_peer}: {e}");
    }
    let _open = crate::metrics::connection_opened(kind.name());
    let (peer, early) = if admission.behind_proxy(kind) {
        match read_proxy_header(&tcp).await {
            Ok(found) => found.unwrap_or((socket_peer, Vec::new())),
            Err(e) => {
                log::info!("PROXY header from {socket_peer} refused: {e}");
                return;
            }
        }
    } else {
        (socket_peer, Vec::new())
    };
    // The per-address cap counts the client the PROXY header named (the accept loop could
    // only see the proxy).
    if let Err(why) = admitted.count_address(&admission.caps, peer.ip()) {
        refuse(&*service, &tcp, peer, kind, why);
        return;
    }
    let accepted = Accepted {
        tcp,
        peer,
        kind,
        early,
    };
    service.serve(accepted).await;
    drop(admitted);
}

/// IMAP and POP3 sessions last long and hold things: a POP3 maildrop lock, a place among a
/// user's IMAP sessions. A client whose network went away (a phone changing networks) says
/// nothing; without this its session would hold them until the autologout (10 minutes for
/// POP3, 30 for IMAP). With it, a silent peer is found within about three minutes of its
/// last word, and the session's read or write fails. SMTP sessions are short and keep their
/// command timeouts alone.
fn detect_dead_peers(tcp: &TcpStream, timers: DeadPeerTimers) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(tcp);
    socket.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(timers.idle)
            .with_interval(timers.interval())
            .with_retries(DeadPeerTimers::PROBES),
    )?;
    socket.set_tcp_user_timeout(Some(timers.give_up_after()))
}

/// Tells a refused client why, in its protocol's words, and lets the caller close. The write
/// is non-blocking (`Async` sockets are O_NONBLOCK): a fresh socket's send buffer takes a
/// short reply at once, and a client that has filled it does not deserve a wait.
fn refuse<S: Service>(
    service: &S,
    tcp: &Async<TcpStream>,
    client: SocketAddr,
    kind: ListenerKind,
    why: Refused,
) {
    use std::io::Write;
    if let Some(words) = service.refusal(kind, why) {
        let _ = tcp.get_ref().write(&words);
    }
    log::info!("refusing connection from {} ({kind}): {why}", client.ip());
}

/// Reads the PROXY protocol header (v1 or v2) that must open the connection. Returns the
/// client it names (None for a LOCAL header: the proxy's own health check) and the bytes
/// read after it.
async fn read_proxy_header(
    tcp: &Async<TcpStream>,
) -> std::io::Result<Option<(SocketAddr, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let n = with_timeout(PROXY_HEADER_TIMEOUT, (&*tcp).read(&mut chunk)).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        match proxy::parse(&buf) {
            ProxyStatus::NeedMore => continue,
            ProxyStatus::Invalid(why) => return Err(std::io::Error::other(why)),
            ProxyStatus::Done { header_len, source } => {
                let rest = buf.split_off(header_len);
                return Ok(source.map(|s| (s, rest)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_peer_is_probed_and_given_up_on() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let _client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        let before = socket2::SockRef::from(&server);
        assert!(!before.keepalive().expect("SO_KEEPALIVE"));
        detect_dead_peers(&server, DeadPeerTimers::default()).expect("set");
        let socket = socket2::SockRef::from(&server);
        assert!(socket.keepalive().expect("SO_KEEPALIVE"));
        let secs = Duration::from_secs;
        assert_eq!(socket.tcp_keepalive_time().expect("idle"), secs(120));
        assert_eq!(socket.tcp_keepalive_interval().expect("interval"), secs(20));
        assert_eq!(socket.tcp_keepalive_retries().expect("probes"), 3);
        assert_eq!(
            socket.tcp_user_timeout().expect("user timeout"),
            Some(secs(180))
        );
    }
}
