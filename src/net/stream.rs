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

/// `fut`, or a `TimedOut` error once `limit` has passed.
pub async fn with_timeout<T>(
    limit: Duration,
    fut: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    smol::future::or(fut, async {
        smol::Timer::after(limit).await;
        Err(io::ErrorKind::TimedOut.into())
    })
    .await
}
