//! `tambo serve`: load everything (any config error exits 2 before a port is opened), bind the
//! listeners, reload the queue, and run until SIGTERM/SIGINT.

use crate::auth::Authenticator;
use crate::cli::CliError;
use crate::config::Settings;
use crate::config::live_config::LiveConfig;
use crate::config::settings::LocalDelivery;
use crate::courier::domaininfo::DomainInfo;
use crate::courier::mta_sts::MtaSts;
use crate::courier::remote::RemoteCourier;
use crate::courier::smtp_client::Deadlines;
use crate::courier::{COMMAND_LIMIT, Couriers};
use crate::dns::Dns;
use crate::mailauth::srs::Srs;
use crate::mailbox::Store;
use crate::net::caps::{Caps, Connections};
use crate::net::{Admission, DeadPeerTimers, ListenerKind, Protocol, accept_loop};
use crate::queue::direct::DirectMaildir;
use crate::queue::runner::{self, Runner};
use crate::queue::store::Queue;
use crate::smtpd::server::{ClientLimits, Server};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The listeners this build serves: all of them.
const SERVED: [ListenerKind; 7] = ListenerKind::ALL;

/// Overrides the post-data hook's time limit; meant for tests.
const HOOK_LIMIT_ENV: &str = "TAMBO_HOOK_TIMEOUT_SECS";

pub fn run(config_dir: &Path) -> Result<(), CliError> {
    // First, so every thread started from here on inherits it.
    batch_scheduling();
    super::existing_config_dir(config_dir)?;
    let settings =
        Arc::new(Settings::load(config_dir).map_err(|e| CliError::usage(e.to_string()))?);
    let config =
        Arc::new(LiveConfig::load(settings.clone()).map_err(|e| CliError::usage(e.to_string()))?);
    if config.domains().is_empty() {
        log::warn!(
            "no domain to serve: {} has no domain folder, so every recipient will be refused",
            settings.config_dir.join("domains").display()
        );
    }
    let data_dir = &settings.data_dir;
    crate::fsutil::create_private_dir_all(data_dir)
        .map_err(|e| CliError::failure(format!("{}: {e}", data_dir.display())))?;
    let queue = Queue::open(data_dir)
        .map_err(|e| CliError::failure(format!("{}/queue: {e}", data_dir.display())))?;
    let srs = Arc::new(Srs::new(&srs_secret(&settings)?));
    let couriers = couriers(&settings)?;
    let couriers_dns = couriers.remote.dns.clone();
    let store = couriers.store.clone();
    // Before any connection: the queue's pool of recycled files holds descriptors too.
    crate::net::caps::raise_fd_limit(
        settings.max_connections,
        crate::queue::store::FREE_POOL as u64,
    );
    let listeners = crate::net::listener::bind_all(&settings, &SERVED).map_err(|e| {
        if e.is_config_error() {
            CliError::usage(e.to_string())
        } else {
            CliError::failure(e.to_string())
        }
    })?;

    let ex = Arc::new(smol::Executor::new());
    let direct = matches!(couriers.local, LocalDelivery::Maildir).then(|| DirectMaildir {
        store: couriers.store.clone(),
    });
    let (deliveries, to_deliver) = runner::channel(direct);
    let runner = Arc::new(Runner {
        queue: queue.clone(),
        couriers,
        config: config.clone(),
        srs: srs.clone(),
        hostname: settings.hostname.clone(),
        give_up_after: settings.give_up_after,
        arc_seal: settings.arc_seal,
        from_rewrite: settings.forward_from_rewrite,
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
    // One authenticator: failed logins count per address over every protocol.
    let auth = Arc::new(Authenticator::new(config.clone()));
    let server = Arc::new(Server {
        config: config.clone(),
        queue,
        deliveries,
        srs,
        dns: couriers_dns,
        auth: auth.clone(),
        limits: client_limits(),
        hook_limit: hook_limit(),
    });
    let imap = Arc::new(crate::imapd::Server {
        config: config.clone(),
        auth: auth.clone(),
        store: store.clone(),
        limits: Default::default(),
        sessions: Default::default(),
        max_message_size: settings.max_message_size(),
    });
    // The same store as IMAP's: an expunge at a POP3 QUIT reaches IMAP sessions in IDLE.
    let pop3 = Arc::new(crate::pop3d::Server {
        config: config.clone(),
        auth,
        store,
        limits: Default::default(),
        maildrops: Default::default(),
    });
    crate::monitoring::start(&settings, server.queue.clone(), &ex)
        .map_err(|e| CliError::failure(format!("monitoring_listen: {e}")))?;
    crate::web::start(&config, &ex).map_err(CliError::failure)?;
    crate::acme::start(&config, server.dns.clone(), &ex);
    super::doctor::start(&config, server.dns.clone(), &ex);
    let admission = Arc::new(Admission {
        connections: Arc::new(Connections::default()),
        caps: Caps::from_settings(&settings),
        // SPEC §3 `haproxy_incoming`: a PROXY header names the client on the MX port.
        proxied: if settings.haproxy_incoming {
            vec![ListenerKind::Smtp]
        } else {
            Vec::new()
        },
        dead_peer: dead_peer_timers(),
    });
    let mut accepting = Vec::new();
    for (listener, kind) in listeners {
        let addr = crate::net::listener::listener_addr(listener.get_ref());
        log::info!("listening on {addr} ({kind})");
        let admission = admission.clone();
        let task = match kind.protocol() {
            Protocol::Smtp => ex.spawn(accept_loop(
                listener,
                kind,
                admission,
                server.clone(),
                ex.clone(),
            )),
            Protocol::Imap => ex.spawn(accept_loop(
                listener,
                kind,
                admission,
                imap.clone(),
                ex.clone(),
            )),
            Protocol::Pop3 => ex.spawn(accept_loop(
                listener,
                kind,
                admission,
                pop3.clone(),
                ex.clone(),
            )),
        };
        accepting.push(task);
    }
    // Detached: it only reads files and swaps configurations, so it may stop anywhere.
    ex.spawn(config.clone().watch_domains()).detach();
    run_executor(ex, config, admission, accepting)
}

/// SPEC §7's limits on slow clients; `TAMBO_SMTPD_TIMEOUT_SECS` (read here, once) replaces
/// both, so that the end-to-end tests can watch a slow client being dropped without waiting
/// 5 minutes.
fn client_limits() -> ClientLimits {
    let secs = std::env::var("TAMBO_SMTPD_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&s| s > 0);
    match secs {
        Some(s) => ClientLimits {
            command: Duration::from_secs(s),
            data: Duration::from_secs(s),
        },
        None => ClientLimits::default(),
    }
}

/// When a silent IMAP or POP3 client is given up on; `TAMBO_KEEPALIVE_SECS` (whole seconds,
/// at least 6, so that a probe interval of a sixth is a whole second) replaces the 2 minutes
/// of quiet before the probes, so that the end-to-end tests can watch a vanished client's
/// session end.
fn dead_peer_timers() -> DeadPeerTimers {
    std::env::var("TAMBO_KEEPALIVE_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&s| s >= 6)
        .map(|s| DeadPeerTimers {
            idle: Duration::from_secs(s),
        })
        .unwrap_or_default()
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
        // A seam for the end-to-end tests, read here once: they cannot wait a minute for a
        // peer that stopped answering.
        deadlines: Deadlines::parse(std::env::var("TAMBO_SMTP_TIMEOUT_SECS").ok().as_deref()),
        spam: Default::default(),
    };
    Ok(Couriers {
        local: settings.local_delivery.clone(),
        store: mail_store(settings),
        hostname: settings.hostname.clone(),
        remote,
        command_limit: COMMAND_LIMIT,
    })
}

/// The mailbox store under `data_dir/mail`, with `mailbox_quota_mb` (0: no quota) and new
/// files named after the configured host name.
fn mail_store(settings: &Settings) -> Store {
    let quota = (settings.mailbox_quota_mb > 0)
        .then(|| settings.mailbox_quota_mb.saturating_mul(1024 * 1024));
    Store::new(settings.data_dir.join("mail"), quota)
        .with_hostname(&settings.hostname)
        .with_detail_separators(&settings.suffix_separators)
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
    config: Arc<LiveConfig>,
    admission: Arc<Admission>,
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
        wait_for_stop(signals, config).await;
        // SPEC §11: stop accepting (the listeners close with their tasks), let open sessions
        // finish for a few seconds. Nothing acknowledged can be lost whenever we stop: a 250
        // is only sent once the message is on disk.
        for task in accepting {
            task.cancel().await;
        }
        drain(&admission.connections).await;
    });
    smol::block_on(ex.run(stopping));
    drop(stop_tx);
    Ok(())
}

/// Waits until no connection is open, or the grace period is over.
async fn drain(connections: &Connections) {
    let deadline = std::time::Instant::now() + SHUTDOWN_GRACE;
    loop {
        let open = connections.open();
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
async fn wait_for_stop(mut signals: async_signal::Signals, config: Arc<LiveConfig>) {
    use smol::stream::StreamExt;
    while let Some(signal) = signals.next().await {
        match signal {
            Ok(async_signal::Signal::Hup) => {
                let reloading = config.clone();
                match smol::unblock(move || reloading.reload()).await {
                    Ok(()) => {
                        log::info!(
                            "SIGHUP: reloaded users, aliases, DKIM keys, certificates, access rules"
                        )
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
