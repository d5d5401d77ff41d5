//! A client connection's byte stream, plain or TLS, and its upgrade by STARTTLS (or STLS):
//! what every protocol driver reads and writes through, with a deadline on each wait.

use futures_rustls::TlsAcceptor;
use futures_rustls::server::TlsStream;
use smol::Async;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

pub enum Stream {
    Plain(Async<TcpStream>),
    Tls(Box<TlsStream<Async<TcpStream>>>),
    /// The TCP stream is inside the TLS acceptor (during STARTTLS).
    Upgrading,
}

fn upgrading() -> io::Error {
    io::Error::other("stream is being upgraded to TLS")
}

impl Stream {
    /// Implicit TLS (465, 993, 995): the handshake before anything else, within `limit`.
    /// Counted in the TLS metrics; a failure says why in words.
    pub async fn accept_tls(
        tcp: Async<TcpStream>,
        acceptor: &TlsAcceptor,
        limit: Duration,
    ) -> io::Result<Stream> {
        crate::metrics::tls_handshake_started();
        match with_timeout(limit, acceptor.accept(tcp)).await {
            Ok(tls) => Ok(Stream::Tls(Box::new(tls))),
            Err(e) => {
                crate::metrics::tls_handshake_failed();
                Err(io::Error::new(e.kind(), crate::tls::handshake_failure(&e)))
            }
        }
    }

    /// A freshly accepted connection's stream: on an implicit-TLS listener (RFC 8314 §3.3)
    /// the handshake first, within `limit`, with the acceptor `tls` gives (asked only then);
    /// else the plain stream. A failed handshake is logged at info, after `log_prefix`, and
    /// gives None: the connection is over.
    pub async fn open(
        tcp: Async<TcpStream>,
        implicit_tls: bool,
        tls: impl FnOnce() -> Arc<TlsAcceptor>,
        limit: Duration,
        peer: SocketAddr,
        log_prefix: &str,
    ) -> Option<Stream> {
        if !implicit_tls {
            return Some(Stream::Plain(tcp));
        }
        match Stream::accept_tls(tcp, &tls(), limit).await {
            Ok(stream) => Some(stream),
            Err(why) => {
                log::info!("{log_prefix}TLS handshake with {peer} failed: {why}");
                None
            }
        }
    }

    /// STARTTLS (RFC 3207) / STLS (RFC 2595): the plain stream becomes a TLS one. Whatever
    /// the client sent after its command is discarded with the plain stream's buffers (the
    /// caller drops its own), as the RFCs require. An error leaves the stream unusable.
    pub async fn start_tls(&mut self, acceptor: &TlsAcceptor, limit: Duration) -> io::Result<()> {
        let Stream::Plain(tcp) = std::mem::replace(self, Stream::Upgrading) else {
            return Err(io::Error::other("STARTTLS on a TLS stream"));
        };
        *self = Stream::accept_tls(tcp, acceptor, limit).await?;
        Ok(())
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Waits until the socket has something to read, without holding a buffer (a plain
    /// connection only: a TLS stream may hold decrypted bytes already, so it is just read).
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.readable().await,
            _ => Ok(()),
        }
    }

    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
            Stream::Upgrading => Err(upgrading()),
        }
    }

    /// Writes all of `bytes` (and flushes TLS, so they leave now).
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(bytes).await,
            Stream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Stream::Upgrading => Err(upgrading()),
        }
    }

    /// Half-closes: the client sees the end of our output (TLS: a close_notify first).
    pub async fn shutdown_write(&mut self) {
        let _ = match self {
            Stream::Plain(s) => s.get_ref().shutdown(std::net::Shutdown::Write),
            Stream::Tls(s) => s.close().await,
            Stream::Upgrading => Ok(()),
        };
    }

    /// Half-closes and drains what the client still sends, for at most `limit`, so that our
    /// last words reach it instead of being destroyed by a TCP reset.
    pub async fn linger(&mut self, limit: Duration) {
        self.shutdown_write().await;
        let mut sink = [0u8; 4096];
        let drain = async { while self.read(&mut sink).await.unwrap_or(0) > 0 {} };
        smol::future::or(drain, async {
            smol::Timer::after(limit).await;
        })
        .await;
    }
}

/// `fut`, or a `TimedOut` error once `limit` has passed, which [`deadline_passed`] knows.
pub async fn with_timeout<T>(
    limit: Duration,
    fut: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    smol::future::or(fut, async {
        smol::Timer::after(limit).await;
        Err(io::Error::new(io::ErrorKind::TimedOut, DeadlinePassed))
    })
    .await
}

/// [`with_timeout`]'s own error: our limit passed, while the peer may well be there.
#[derive(Debug)]
struct DeadlinePassed;

impl std::fmt::Display for DeadlinePassed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline passed")
    }
}

impl std::error::Error for DeadlinePassed {}

/// Whether `e` is [`with_timeout`]'s: the client was slow or idle, and is told so.
pub fn deadline_passed(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<DeadlinePassed>())
}

/// Logs why a mailbox session's connection failed. When TCP keepalive or TCP_USER_TIMEOUT
/// (`net::accept`) gives up on a silent peer, the read fails with the kernel's ETIMEDOUT (the
/// same `TimedOut` kind as our deadlines), or with the ICMP error the probes met on the way
/// (EHOSTUNREACH, ENETUNREACH). The session held a POP3 lock or a place among the user's IMAP
/// sessions until then, so the log says so; a reset or a broken pipe is what clients do every
/// day, and stays at debug.
pub fn log_connection_failed(protocol: &str, peer: SocketAddr, e: &io::Error) {
    if peer_stopped_answering(e) {
        log::info!("{protocol}: {peer} stopped answering, session ended: {e}");
    } else {
        log::debug!("{protocol}: connection from {peer} ended: {e}");
    }
}

fn peer_stopped_answering(e: &io::Error) -> bool {
    match e.kind() {
        io::ErrorKind::TimedOut => !deadline_passed(e),
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_deadline_is_told_from_the_kernels_timeout() {
        let ours = smol::block_on(with_timeout(
            Duration::from_millis(1),
            smol::future::pending::<io::Result<()>>(),
        ))
        .expect_err("pending never ends");
        assert_eq!(ours.kind(), io::ErrorKind::TimedOut);
        assert!(deadline_passed(&ours));
        assert!(!peer_stopped_answering(&ours));
        let kernels = io::Error::from_raw_os_error(libc::ETIMEDOUT);
        assert_eq!(kernels.kind(), io::ErrorKind::TimedOut);
        assert!(!deadline_passed(&kernels));
        assert!(peer_stopped_answering(&kernels));
    }

    #[test]
    fn a_probe_that_met_an_icmp_error_is_a_peer_gone_too() {
        for errno in [libc::EHOSTUNREACH, libc::ENETUNREACH] {
            assert!(peer_stopped_answering(&io::Error::from_raw_os_error(errno)));
        }
        for errno in [libc::ECONNRESET, libc::EPIPE] {
            assert!(!peer_stopped_answering(&io::Error::from_raw_os_error(
                errno
            )));
        }
    }
}
