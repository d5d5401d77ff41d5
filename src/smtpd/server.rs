//! Shared server state and the accept loops (one per listener).

use crate::config::Settings;
use crate::config::domains::{Domains, DomainsHandle};
use crate::mailauth::srs::Srs;
use crate::proto::session::ListenerKind;
use crate::queue::runner::Deliveries;
use crate::queue::store::Queue;
use smol::Async;
use std::net::TcpListener;
use std::sync::Arc;

/// What every connection shares.
pub struct Server {
    pub settings: Arc<Settings>,
    pub domains: Arc<DomainsHandle>,
    pub tls: futures_rustls::TlsAcceptor,
    pub queue: Queue,
    pub deliveries: Deliveries,
    /// Reverses SRS addresses at RCPT (bounces to forwarded mail).
    pub srs: Arc<Srs>,
}

impl Server {
    /// The current domains (a snapshot: a reload does not change it under a transaction).
    pub fn domains(&self) -> Arc<Domains> {
        self.domains.get()
    }
}

/// Accepts connections forever, each served on its own task.
pub async fn accept_loop(
    server: Arc<Server>,
    listener: Async<TcpListener>,
    kind: ListenerKind,
    ex: Arc<smol::Executor<'static>>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let server = server.clone();
                ex.spawn(async move {
                    crate::smtpd::conn::serve(server, stream, peer, kind).await;
                })
                .detach();
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::error!("accept on {:?}: {e}", listener.get_ref().local_addr().ok());
                smol::Timer::after(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
