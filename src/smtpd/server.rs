//! Shared server state and the accept loops (one per listener).

use crate::config::Settings;
use crate::config::watch::DomainsWatch;
use crate::config::{Domains, Live};
use crate::mailauth::srs::Srs;
use crate::proto::session::ListenerKind;
use crate::queue::runner::Deliveries;
use crate::queue::store::Queue;
use crate::smtpd::access::AccessRules;
use crate::smtpd::limits::{AddressKey, Caps, Connections, Refused};
use smol::Async;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

/// What every connection shares.
pub struct Server {
    pub settings: Arc<Settings>,
    pub domains: Arc<Live<Domains>>,
    /// What `domains` was loaded from: a change reloads it without a SIGHUP.
    pub domains_watch: DomainsWatch,
    /// Swapped by a reload (certificates); handshakes in progress keep theirs.
    pub tls: Live<futures_rustls::TlsAcceptor>,
    pub queue: Queue,
    pub deliveries: Deliveries,
    /// Reverses SRS addresses at RCPT (bounces to forwarded mail).
    pub srs: Arc<Srs>,
    /// The process's one resolver, for SPF / DKIM / DMARC on port 25.
    pub dns: Arc<crate::dns::Dns>,
    /// `conf/access` rules, swapped by a reload.
    pub access: Live<AccessRules>,
    /// Failed AUTH attempts per client address.
    pub auth_limit: crate::smtpd::auth_limit::AuthLimit,
    /// Bounds the password checks running at once (memory: 32 MiB each).
    pub password_checks: crate::smtpd::auth_limit::PasswordChecks,
    /// Open SMTP connections, in all and per client address: a shutdown waits for them,
    /// `max_connections` and `max_connections_per_address` cap them.
    pub connections: Connections,
    /// How long `hooks/post-data` may run (SPEC §9): chasquid's 60 s, or
    /// `TAMBO_HOOK_TIMEOUT_SECS`.
    pub hook_limit: std::time::Duration,
}

/// `<config_dir>/conf/access` (no file: no rules).
pub fn load_access(
    config_dir: &std::path::Path,
) -> Result<AccessRules, crate::smtpd::access::AccessError> {
    AccessRules::load(&config_dir.join("conf").join("access"))
}

/// Counts a connection (and its client address, when known) for as long as it lives.
pub struct ConnectionGuard {
    server: Arc<Server>,
    address: Option<AddressKey>,
}

impl ConnectionGuard {
    /// Counts a connection that no cap may refuse.
    pub fn new(server: Arc<Server>) -> ConnectionGuard {
        server.connections.add();
        ConnectionGuard {
            server,
            address: None,
        }
    }

    /// Counts a connection from `client` on a `kind` listener, within the caps. The address is
    /// left to [`admit_proxied`] when a PROXY header will name the real client.
    pub fn admit(
        server: &Arc<Server>,
        client: IpAddr,
        kind: ListenerKind,
    ) -> Result<ConnectionGuard, Refused> {
        let settings = &server.settings;
        let caps = Caps::from_settings(settings);
        server.connections.admit(caps.total)?;
        let mut guard = ConnectionGuard {
            server: server.clone(),
            address: None,
        };
        if !behind_proxy(settings, kind) && !crate::smtpd::limits::exempt(settings, client) {
            // On refusal the guard drops and gives the overall slot back.
            guard.address = Some(server.connections.admit_address(client, caps.per_address)?);
        }
        Ok(guard)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if let Some(key) = self.address.take() {
            self.server.connections.release_address(key);
        }
        self.server.connections.release();
    }
}

/// Whether the client address of a `kind` connection is only known from its PROXY header
/// (SPEC §3 `haproxy_incoming`: the MX port).
fn behind_proxy(settings: &Settings, kind: ListenerKind) -> bool {
    kind == ListenerKind::Mx && settings.haproxy_incoming
}

/// A client address counted after its PROXY header (nothing when the address was counted at
/// accept, or is exempt).
pub struct AddressGuard(Option<(Arc<Server>, AddressKey)>);

impl Drop for AddressGuard {
    fn drop(&mut self) {
        if let Some((server, key)) = self.0.take() {
            server.connections.release_address(key);
        }
    }
}

/// The per-address cap for a connection whose client a PROXY header named: `None` means it
/// was refused (the 421 is written) and must be closed. Called by the connection driver right
/// after the header, for every connection (it does nothing where [`ConnectionGuard::admit`]
/// already counted the address).
pub fn admit_proxied(
    server: &Arc<Server>,
    tcp: &Async<TcpStream>,
    client: SocketAddr,
    kind: ListenerKind,
) -> Option<AddressGuard> {
    let settings = &server.settings;
    if !behind_proxy(settings, kind) || crate::smtpd::limits::exempt(settings, client.ip()) {
        return Some(AddressGuard(None));
    }
    let cap = settings.max_connections_per_address;
    match server.connections.admit_address(client.ip(), cap) {
        Ok(key) => Some(AddressGuard(Some((server.clone(), key)))),
        Err(why) => {
            refuse(tcp, client, kind, why);
            None
        }
    }
}

/// Answers 421 and lets the caller close. The write is non-blocking (`Async` sockets are
/// O_NONBLOCK): a fresh socket's send buffer takes a short reply at once, and a client that
/// has filled it does not deserve a wait. On the implicit-TLS port the client expects a TLS
/// record, not a reply: it is closed without a word (a handshake per refusal would cost more
/// than the cap saves).
fn refuse(tcp: &Async<TcpStream>, client: SocketAddr, kind: ListenerKind, why: Refused) {
    use std::io::Write;
    if kind != ListenerKind::SubmissionTls {
        let _ = tcp.get_ref().write(&why.reply().to_bytes());
    }
    log::info!("refusing connection from {} ({kind}): {why}", client.ip());
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
        self.domains_watch.loaded(&domains);
        self.domains.replace(domains);
        self.access.replace(access);
        self.tls.replace(futures_rustls::TlsAcceptor::from(tls));
        Ok(())
    }
}

/// How often [`watch_domains`] looks at the users and aliases files.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

impl Server {
    /// At AUTH: when the users file of the login's domain changed since the domains were
    /// loaded (a user just added by `util user-add`), reloads them first, so that the new
    /// password works at once rather than at the watcher's next look. Blocking (a stat, and
    /// the load when something changed): call it off the executor, as the password check.
    pub fn refresh_users_for(&self, login: &str) {
        let Ok(address) = crate::addr::Address::parse(login) else {
            return;
        };
        if self.domains_watch.users_changed(address.domain()) {
            self.reload_changed_domains();
        }
    }

    /// Reloads users and aliases when one of their files changed, and logs it: which file,
    /// or why the reload failed (file, line, problem; the old configuration stays). Blocking.
    pub fn reload_changed_domains(&self) {
        let Some(reload) = self.domains_watch.reload_if_changed(&self.domains) else {
            return;
        };
        let file = reload.changed.display();
        match reload.result {
            Ok(()) => log::info!("{file} changed: reloaded users and aliases"),
            Err(e) => log::error!(
                "{file} changed, but the reload failed, keeping the old users and aliases: {e}"
            ),
        }
    }
}

/// Reloads users and aliases whenever their files change (SPEC §11's reload, without the
/// SIGHUP). Every 2 seconds it stats the files, right on the executor: a few cached stat
/// calls, nothing read unless one changed; the reload itself runs off the executor.
pub async fn watch_domains(server: Arc<Server>) {
    loop {
        smol::Timer::after(WATCH_INTERVAL).await;
        if server.domains_watch.changed().is_some() {
            let reloading = server.clone();
            smol::unblock(move || reloading.reload_changed_domains()).await;
        }
    }
}

/// A listener's address for the log (`127.0.0.1:25`), or why it is unknown.
pub fn listener_addr(listener: &std::net::TcpListener) -> String {
    match listener.local_addr() {
        Ok(addr) => addr.to_string(),
        Err(e) => format!("an unknown address ({e})"),
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
                let guard = match ConnectionGuard::admit(&server, peer.ip(), kind) {
                    Ok(guard) => guard,
                    Err(why) => {
                        // Answered and closed here, without a task or a wait: a flood costs
                        // one write per connection.
                        refuse(&stream, peer, kind, why);
                        continue;
                    }
                };
                let server = server.clone();
                ex.spawn(async move {
                    crate::smtpd::conn::serve(server, stream, peer, kind).await;
                    drop(guard);
                })
                .detach();
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                let addr = listener_addr(listener.get_ref());
                log::error!("accept on {addr}: {e}");
                smol::Timer::after(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
