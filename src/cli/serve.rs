//! `tambo serve`: load everything (any config error exits 2 before a port is opened), bind the
//! listeners, reload the queue, and run until SIGTERM/SIGINT.

use crate::cli::CliError;
use crate::config::settings::LocalDelivery;
use crate::config::{Domains, Live, Settings};
use crate::courier::domaininfo::DomainInfo;
use crate::courier::mta_sts::MtaSts;
use crate::courier::remote::RemoteCourier;
use crate::courier::{COMMAND_LIMIT, Couriers};
use crate::dns::Dns;
use crate::mailauth::srs::Srs;
use crate::proto::session::ListenerKind;
use crate::queue::direct::DirectMaildir;
use crate::queue::runner::{self, Runner};
use crate::queue::store::Queue;
use crate::smtpd::server::{Server, accept_loop};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// Overrides the post-data hook's time limit; meant for tests.
const HOOK_LIMIT_ENV: &str = "TAMBO_HOOK_TIMEOUT_SECS";

pub fn run(config_dir: &Path) -> Result<(), CliError> {
    // First, so every thread started from here on inherits it.
    batch_scheduling();
    super::existing_config_dir(config_dir)?;
    let settings =
        Arc::new(Settings::load(config_dir).map_err(|e| CliError::usage(e.to_string()))?);
    let domains = Domains::load(&settings.config_dir, settings.normalization())
        .map_err(|e| CliError::usage(e.to_string()))?;
    if domains.is_empty() {
        log::warn!(
            "no domain to serve: {} has no domain folder, so every recipient will be refused",
            settings.config_dir.join("domains").display()
        );
    }
    let data_dir = &settings.data_dir;
    crate::fsutil::create_private_dir_all(data_dir)
        .map_err(|e| CliError::failure(format!("{}: {e}", data_dir.display())))?;
    let tls = crate::tls::server_config(&settings.config_dir, data_dir, &settings.hostname)
        .map_err(|e| CliError::usage(e.to_string()))?;
    let queue = Queue::open(data_dir)
        .map_err(|e| CliError::failure(format!("{}/queue: {e}", data_dir.display())))?;
    let access = crate::smtpd::server::load_access(&settings.config_dir)
        .map_err(|e| CliError::usage(e.to_string()))?;
    let srs = Arc::new(Srs::new(&srs_secret(&settings)?));
    let couriers = couriers(&settings)?;
    let couriers_dns = couriers.remote.dns.clone();
    let listeners = bind_all(&settings)?;

    let ex = Arc::new(smol::Executor::new());
    let domains = Arc::new(Live::new(domains));
    let direct = matches!(couriers.local, LocalDelivery::Maildir).then(|| DirectMaildir {
        mail_root: couriers.mail_root.clone(),
        hostname: couriers.hostname.clone(),
    });
    let (deliveries, to_deliver) = runner::channel(direct);
    let runner = Arc::new(Runner {
        queue: queue.clone(),
        couriers,
        domains: domains.clone(),
        srs: srs.clone(),
        hostname: settings.hostname.clone(),
        give_up_after: settings.give_up_after,
        arc_seal: settings.arc_seal,
        deliveries: deliveries.clone(),
    });
    runner::start(runner, to_deliver, ex.clone());
    let pending = queue
        .load_all()
        .map_err(|e| CliError::failure(format!("loading {}: {e}", queue.dir().display())))?;
    log::info!(
        "queue: {} message(s) to finish from the last run",
        pending.len()
    );
    for item in pending {
        deliveries.submit(item);
    }
    let server = Arc::new(Server {
        settings: settings.clone(),
        domains_watch: crate::config::watch::DomainsWatch::new(
            &settings.config_dir,
            &domains.get(),
        ),
        domains,
        tls: Live::new(futures_rustls::TlsAcceptor::from(tls)),
        queue,
        deliveries,
        srs,
        dns: couriers_dns,
        access: Live::new(access),
        auth_limit: Default::default(),
        password_checks: Default::default(),
        connections: Default::default(),
        hook_limit: hook_limit(),
    });
    crate::monitoring::start(&settings, server.queue.clone(), &ex)
        .map_err(|e| CliError::failure(format!("monitoring_listen: {e}")))?;
    let unserved = settings.mailbox_listen_keys();
    if !unserved.is_empty() {
        log::warn!(
            "{} set in conf/tambo.json: not served, this build has no IMAP/POP3 (mailbox module) yet",
            unserved.join(", ")
        );
    }
    let mut accepting = Vec::new();
    for (listener, kind) in listeners {
        let addr = crate::smtpd::server::listener_addr(listener.get_ref());
        log::info!("listening on {addr} ({kind})");
        accepting.push(ex.spawn(accept_loop(server.clone(), listener, kind, ex.clone())));
    }
    // Detached: it only reads files and swaps configurations, so it may stop anywhere.
    ex.spawn(crate::smtpd::server::watch_domains(server.clone()))
        .detach();
    run_executor(ex, server, accepting)
}

/// The post-data hook's time limit: chasquid's 60 s, or `TAMBO_HOOK_TIMEOUT_SECS` (whole
/// seconds, > 0), which the end-to-end tests set to keep their time-outs short.
fn hook_limit() -> std::time::Duration {
    crate::hooks::parse_limit(std::env::var(HOOK_LIMIT_ENV).ok().as_deref())
}

/// The couriers, with the one DNS resolver of the process.
fn couriers(settings: &Settings) -> Result<Couriers, CliError> {
    let data_dir = &settings.data_dir;
    let dns = Arc::new(
        Dns::new(&settings.dns_servers).map_err(|e| CliError::usage(format!("DNS: {e}")))?,
    );
    let domaininfo = Arc::new(
        DomainInfo::open(data_dir)
            .map_err(|e| CliError::failure(format!("{}/domaininfo: {e}", data_dir.display())))?,
    );
    let mta_sts = Arc::new(
        MtaSts::new(data_dir, dns.clone(), None)
            .map_err(|e| CliError::failure(format!("{}/mta-sts: {e}", data_dir.display())))?,
    );
    let remote = RemoteCourier {
        dns,
        domaininfo,
        mta_sts,
        hostname: settings.hostname.clone(),
        port: settings.outbound_smtp_port,
        bind: settings.outbound_bind,
        own_listeners: settings.smtp_listen.clone(),
        test_roots: None,
        connections: Default::default(),
    };
    Ok(Couriers {
        local: settings.local_delivery.clone(),
        mail_root: data_dir.join("mail"),
        hostname: settings.hostname.clone(),
        remote,
        command_limit: COMMAND_LIMIT,
    })
}

/// `srs_secret` from the settings, else the one generated into `data_dir/srs_secret` (mode
/// 0600) on first start and kept from then on (SPEC §3).
fn srs_secret(settings: &Settings) -> Result<Vec<u8>, CliError> {
    if let Some(secret) = &settings.srs_secret {
        return Ok(secret.as_bytes().to_vec());
    }
    let path = settings.data_dir.join("srs_secret");
    let fail = |e: std::io::Error| CliError::failure(format!("{}: {e}", path.display()));
    match std::fs::read_to_string(&path) {
        Ok(secret) if !secret.trim().is_empty() => Ok(secret.trim().as_bytes().to_vec()),
        Ok(_) => Err(CliError::failure(format!(
            "{}: empty SRS secret",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use base64::Engine;
            let secret =
                base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
            crate::fsutil::write_atomic(&path, format!("{secret}\n").as_bytes(), 0o600)
                .map_err(fail)?;
            log::info!("generated a new SRS secret in {}", path.display());
            Ok(secret.into_bytes())
        }
        Err(e) => Err(fail(e)),
    }
}

/// Binds every configured listener, or takes the sockets systemd passed (`LISTEN_FDS`); any
/// failure names the address or the socket and stops the start. Runs before any connection,
/// so it also raises the file descriptor limit for them.
fn bind_all(
    settings: &Settings,
) -> Result<Vec<(smol::Async<std::net::TcpListener>, ListenerKind)>, CliError> {
    crate::smtpd::limits::raise_fd_limit(settings.max_connections);
    let groups = [
        (&settings.smtp_listen[..], ListenerKind::Mx),
        (&settings.submission_listen[..], ListenerKind::Submission),
        (
            &settings.submission_tls_listen[..],
            ListenerKind::SubmissionTls,
        ),
    ];
    let passed = crate::listenfds::take().map_err(|e| CliError::failure(e.to_string()))?;
    if let Some(passed) = passed {
        return activated(passed, &groups);
    }
    let mut listeners = Vec::new();
    for (addrs, kind) in groups {
        for addr in addrs {
            listeners.push((bind(*addr)?, kind));
        }
    }
    Ok(listeners)
}

/// Socket activation: the passed sockets replace every configured SMTP listener (a kind with
/// no socket is not served), as the socket units, not tambo.json, then say where to listen.
fn activated(
    passed: Vec<crate::listenfds::Passed>,
    groups: &[(&[SocketAddr], ListenerKind)],
) -> Result<Vec<(smol::Async<std::net::TcpListener>, ListenerKind)>, CliError> {
    let assigned =
        crate::listenfds::assign(passed, groups).map_err(|e| CliError::usage(e.to_string()))?;
    for (_, kind) in groups {
        if !assigned.iter().any(|(_, k)| k == kind) {
            log::info!("systemd passed no socket for {kind}: not listening for it");
        }
    }
    assigned
        .into_iter()
        .map(|(listener, kind)| {
            let addr = crate::smtpd::server::listener_addr(&listener);
            log::info!("using the socket systemd passed for {kind} ({addr})");
            smol::Async::new(listener)
                .map(|l| (l, kind))
                .map_err(|e| CliError::failure(format!("systemd socket {addr}: {e}")))
        })
        .collect()
}

fn bind(addr: SocketAddr) -> Result<smol::Async<std::net::TcpListener>, CliError> {
    let std_listener =
        listen(addr).map_err(|e| CliError::failure(format!("cannot listen on {addr}: {e}")))?;
    smol::Async::new(std_listener)
        .map_err(|e| CliError::failure(format!("cannot listen on {addr}: {e}")))
}

/// A listening TCP socket on `addr`. An IPv6 socket is IPv6 only (`IPV6_V6ONLY`, as Postfix
/// and Dovecot set it): with Linux's default `net.ipv6.bindv6only=0`, `[::]:25` would also
/// take IPv4 and collide with `0.0.0.0:25`, and SPEC §3's default listeners are that pair.
pub fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
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

/// How long open sessions may go on after SIGTERM (SPEC §11: "a few seconds").
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Threads that run the async executor: half the cores, at least one. The other half is
/// left to the blocking pool, where the file work of every message runs (fdatasync, renames,
/// Maildir writes), which is most of a mail server's CPU; more executor threads than that
/// only add wake-ups between them. Measured with benches/ on 2 cores: one executor thread
/// took 10–20% less CPU per message than two, at the same throughput.
/// Puts this thread, and so every thread and child process it starts later, under
/// `SCHED_BATCH` (sched(7)): a woken thread no longer preempts the one running. A mail server
/// is throughput work, not interactive; without this, every fsync finished on a blocking
/// thread and every reply a peer sends would preempt the executor thread mid-task. Measured
/// on the forwarding benchmark: about a fifth less CPU per message. Latency to a reply grows
/// by at most a scheduler slice (a few ms) on a busy CPU. Needs no privilege (nice is kept).
fn batch_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a valid sched_param for the calling thread (pid 0).
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        log::warn!(
            "cannot switch to SCHED_BATCH scheduling: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn executor_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 2).max(1)
}

/// Runs the executor on its threads until SIGTERM or SIGINT.
fn run_executor(
    ex: Arc<smol::Executor<'static>>,
    server: Arc<Server>,
    accepting: Vec<smol::Task<()>>,
) -> Result<(), CliError> {
    let threads = executor_threads();
    let (stop_tx, stop_rx) = smol::channel::unbounded::<()>();
    for _ in 1..threads {
        let (ex, stop) = (ex.clone(), stop_rx.clone());
        std::thread::spawn(move || smol::block_on(ex.run(stop.recv())));
    }
    let signals = async_signal::Signals::new([
        async_signal::Signal::Term,
        async_signal::Signal::Int,
        async_signal::Signal::Hup,
    ])
    .map_err(|e| CliError::failure(format!("cannot install signal handlers: {e}")))?;
    // A task of its own: the future given to `run` is polled on every wake-up of this
    // thread, and polling the signal stream there cost a recvfrom() each time; a task is only
    // polled when its signal socket is readable.
    let stopping = ex.spawn(async move {
        wait_for_stop(signals, server.clone()).await;
        // SPEC §11: stop accepting (the listeners close with their tasks), let open sessions
        // finish for a few seconds. Nothing acknowledged can be lost whenever we stop: a 250
        // is only sent once the message is on disk.
        for task in accepting {
            task.cancel().await;
        }
        drain(&server).await;
    });
    smol::block_on(ex.run(stopping));
    drop(stop_tx);
    Ok(())
}

/// Waits until no SMTP connection is open, or the grace period is over.
async fn drain(server: &Server) {
    let deadline = std::time::Instant::now() + SHUTDOWN_GRACE;
    loop {
        let open = server.connections.open();
        if open == 0 {
            return;
        }
        if std::time::Instant::now() >= deadline {
            log::info!("stopping with {open} connection(s) still open");
            return;
        }
        smol::Timer::after(std::time::Duration::from_millis(50)).await;
    }
}

/// Returns on SIGTERM or SIGINT; SIGHUP reloads the configuration (SPEC §11).
async fn wait_for_stop(mut signals: async_signal::Signals, server: Arc<Server>) {
    use smol::stream::StreamExt;
    while let Some(signal) = signals.next().await {
        match signal {
            Ok(async_signal::Signal::Hup) => {
                let reloading = server.clone();
                match smol::unblock(move || reloading.reload()).await {
                    Ok(()) => {
                        log::info!("SIGHUP: reloaded users, aliases, DKIM keys, certificates")
                    }
                    Err(e) => {
                        log::error!("SIGHUP: reload failed, keeping the old configuration: {e}")
                    }
                }
            }
            Ok(signal) => {
                let name = match signal {
                    async_signal::Signal::Term => "SIGTERM",
                    async_signal::Signal::Int => "SIGINT",
                    _ => "a stop signal",
                };
                log::info!("received {name}, stopping");
                return;
            }
            Err(e) => log::error!("signal handling: {e}"),
        }
    }
}
