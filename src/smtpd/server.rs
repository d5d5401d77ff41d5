//! Shared server state and the accept loops (one per listener).

use crate::config::Settings;
use crate::config::{Domains, Live};
use crate::mailauth::srs::Srs;
use crate::proto::session::ListenerKind;
use crate::queue::runner::Deliveries;
use crate::queue::store::Queue;
use crate::smtpd::access::AccessRules;
use smol::Async;
use std::net::TcpListener;
use std::sync::Arc;

/// What every connection shares.
pub struct Server {
    pub settings: Arc<Settings>,
    pub domains: Arc<Live<Domains>>,
    /// Swapped by a reload (certificates); handshakes in progress keep theirs.
    pub tls: Live<futures_rustls::TlsAcceptor>,
    pub queue: Queue,
    pub deliveries: Deliveries,
    /// Reverses SRS addresses at RCPT (bounces to forwarded mail).
    pub srs: Arc<Srs>,
    /// `conf/access` rules, swapped by a reload.
    pub access: Live<AccessRules>,
    /// Failed AUTH attempts per client address.
    pub auth_limit: crate::smtpd::auth_limit::AuthLimit,
    /// Open SMTP connections (a shutdown waits for them).
    pub connections: std::sync::atomic::AtomicUsize,
}

/// `<config_dir>/conf/access` (no file: no rules).
pub fn load_access(
    config_dir: &std::path::Path,
) -> Result<AccessRules, crate::smtpd::access::AccessError> {
    AccessRules::load(&config_dir.join("conf").join("access"))
}

/// Counts a connection for as long as it lives.
pub struct ConnectionGuard(Arc<Server>);

impl ConnectionGuard {
    pub fn new(server: Arc<Server>) -> ConnectionGuard {
        server
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        ConnectionGuard(server)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Server {
    /// The current domains (a snapshot: a reload does not change it under a transaction).
    pub fn domains(&self) -> Arc<Domains> {
        self.domains.get()
    }

    /// The access rules in force (a snapshot).
    pub fn access(&self) -> Arc<AccessRules> {
        self.access.get()
    }

    /// The TLS acceptor in force.
    pub fn tls(&self) -> Arc<futures_rustls::TlsAcceptor> {
        self.tls.get()
    }

    /// SIGHUP (SPEC §11): reloads users, aliases, access rules, DKIM keys and certificates. Everything is
    /// loaded first and swapped in only when all of it is valid, so a broken file keeps the
    /// old configuration; the error names the file and the line. Open connections keep the
    /// snapshot they have.
    pub fn reload(&self) -> Result<(), String> {
        let settings = &self.settings;
        let domains = Domains::load(&settings.config_dir, settings.normalization())
            .map_err(|e| e.to_string())?;
        let tls =
            crate::tls::server_config(&settings.config_dir, &settings.data_dir, &settings.hostname)
                .map_err(|e| e.to_string())?;
        let access = load_access(&settings.config_dir).map_err(|e| e.to_string())?;
        self.domains.replace(domains);
        self.access.replace(access);
        self.tls.replace(futures_rustls::TlsAcceptor::from(tls));
        Ok(())
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
                let guard = ConnectionGuard::new(server.clone());
                let server = server.clone();
                ex.spawn(async move {
                    crate::smtpd::conn::serve(server, stream, peer, kind).await;
                    drop(guard);
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
