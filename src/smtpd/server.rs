//! Shared server state and the accept loops (one per listener).

use crate::config::{Domains, Settings};
use crate::proto::session::ListenerKind;
use crate::queue::runner::Deliveries;
use crate::queue::store::Queue;
use smol::net::TcpListener;
use std::sync::{Arc, RwLock};

/// What every connection shares. `domains` sits behind a lock so a reload can swap it.
pub struct Server {
    pub settings: Settings,
    domains: RwLock<Arc<Domains>>,
    pub tls: futures_rustls::TlsAcceptor,
    pub queue: Queue,
    pub deliveries: Deliveries,
}

impl Server {
    pub fn new(
        settings: Settings,
        domains: Domains,
        tls: Arc<rustls::ServerConfig>,
        queue: Queue,
        deliveries: Deliveries,
    ) -> Server {
        Server {
            settings,
            domains: RwLock::new(Arc::new(domains)),
            tls: futures_rustls::TlsAcceptor::from(tls),
            queue,
            deliveries,
        }
    }

    /// The current domains (a snapshot: a reload does not change it under a transaction).
    pub fn domains(&self) -> Arc<Domains> {
        match self.domains.read() {
            Ok(guard) => guard.clone(),
            // A panic while holding the lock cannot leave the Arc half-written.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Accepts connections forever, each served on its own task.
pub async fn accept_loop(
    server: Arc<Server>,
    listener: TcpListener,
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
                log::error!("accept on {:?}: {e}", listener.local_addr().ok());
                smol::Timer::after(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
