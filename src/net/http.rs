//! One HTTP/1.1 connection served with hyper on our executor, bounded for a stranger: headers
//! must arrive within [`HEADER_TIMEOUT`] and fit [`MAX_HEADER_BYTES`], the whole connection
//! lives at most [`CONNECTION_LIFETIME`], and [`Slots`] caps how many are open. Shared by the
//! monitoring endpoint and the web endpoints (`http_listen`, `https_listen`).

use smol::io::{AsyncRead, AsyncWrite};
use smol_hyper::rt::{FuturesIo, SmolTimer};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A whole connection's life (a client reconnects; long keep-alive is not needed).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Time to send a request's headers (slowloris).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// hyper's read buffer, so the request line and headers (hyper's minimum is 8 KiB).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Serves `io` with `service` until the client is done or [`CONNECTION_LIFETIME`] is over.
pub async fn serve<I, S, B>(io: I, service: S) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(SmolTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    let connection = builder.serve_connection(FuturesIo::new(io), service);
    let deadline = async {
        smol::Timer::after(CONNECTION_LIFETIME).await;
        Ok(())
    };
    smol::future::or(connection, deadline).await
}

/// Connections open at once, up to a cap.
#[derive(Debug)]
pub struct Slots {
    open: AtomicUsize,
    max: usize,
}

/// An open connection's place; freed when dropped.
pub struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Slots {
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// A place for one more connection, or None when `max` are open.
    pub fn take(self: &Arc<Self>) -> Option<Slot> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cap_and_free() {
        let slots = Slots::new(2);
        let a = slots.take();
        let b = slots.take();
        assert!(a.is_some() && b.is_some());
        assert!(slots.take().is_none());
        drop(a);
        assert!(slots.take().is_some());
    }
}
