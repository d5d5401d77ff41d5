//! `tambo serve`: load everything (any config error exits 2 before a port is opened), bind the
//! listeners, reload the queue, and run until SIGTERM/SIGINT.

use crate::cli::CliError;
use crate::config::{Domains, Settings, settings::LocalDelivery};
use crate::proto::session::ListenerKind;
use crate::queue::runner::{self, Runner};
use crate::queue::store::Queue;
use crate::smtpd::server::{Server, accept_loop};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

pub fn run(config_dir: &Path) -> Result<(), CliError> {
    let settings = Settings::load(config_dir).map_err(|e| CliError::usage(e.to_string()))?;
    let domains = Domains::load(
        &settings.config_dir,
        crate::cli::util::normalization(&settings),
    )
    .map_err(|e| CliError::usage(e.to_string()))?;
    if settings.local_delivery != LocalDelivery::Maildir {
        return Err(CliError::usage(format!(
            "{}: local_delivery: only \"maildir\" is implemented in this version",
            settings.config_dir.join("conf/tambo.json").display()
        )));
    }
    crate::fsutil::create_private_dir_all(&settings.data_dir)
        .map_err(|e| CliError::failure(format!("{}: {e}", settings.data_dir.display())))?;
    let tls =
        crate::tls::server_config(&settings.config_dir, &settings.data_dir, &settings.hostname)
            .map_err(|e| CliError::usage(e.to_string()))?;
    let queue = Queue::open(&settings.data_dir)
        .map_err(|e| CliError::failure(format!("{}/queue: {e}", settings.data_dir.display())))?;
    let listeners = bind_all(&settings)?;

    let ex = Arc::new(smol::Executor::new());
    let runner = Arc::new(Runner {
        queue: queue.clone(),
        mail_root: settings.data_dir.join("mail"),
        hostname: settings.hostname.clone(),
        give_up_after: settings.give_up_after,
    });
    let deliveries = runner::start(runner, ex.clone());
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
    let server = Arc::new(Server::new(settings, domains, tls, queue, deliveries));
    for (listener, kind) in listeners {
        log::info!("listening on {:?} ({kind:?})", listener.local_addr().ok());
        ex.spawn(accept_loop(server.clone(), listener, kind, ex.clone()))
            .detach();
    }
    run_executor(ex)
}

/// Binds every configured listener; any failure names the address and stops the start.
fn bind_all(settings: &Settings) -> Result<Vec<(smol::net::TcpListener, ListenerKind)>, CliError> {
    let groups = [
        (&settings.smtp_listen, ListenerKind::Mx),
        (&settings.submission_listen, ListenerKind::Submission),
        (&settings.submission_tls_listen, ListenerKind::SubmissionTls),
    ];
    let mut listeners = Vec::new();
    for (addrs, kind) in groups {
        for addr in addrs {
            listeners.push((bind(*addr)?, kind));
        }
    }
    Ok(listeners)
}

fn bind(addr: SocketAddr) -> Result<smol::net::TcpListener, CliError> {
    let std_listener = std::net::TcpListener::bind(addr)
        .map_err(|e| CliError::failure(format!("cannot listen on {addr}: {e}")))?;
    smol::net::TcpListener::try_from(std_listener)
        .map_err(|e| CliError::failure(format!("cannot listen on {addr}: {e}")))
}

/// Runs the executor on every core until SIGTERM or SIGINT.
fn run_executor(ex: Arc<smol::Executor<'static>>) -> Result<(), CliError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
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
    smol::block_on(ex.run(wait_for_stop(signals)));
    drop(stop_tx);
    Ok(())
}

/// Returns on SIGTERM or SIGINT. SIGHUP must not kill the server (its default action), so it
/// is caught; reloading on it comes with the operations milestone.
async fn wait_for_stop(mut signals: async_signal::Signals) {
    use smol::stream::StreamExt;
    while let Some(signal) = signals.next().await {
        match signal {
            Ok(async_signal::Signal::Hup) => {
                log::warn!("SIGHUP: reloading is not implemented yet; restart to apply changes");
            }
            Ok(signal) => {
                log::info!("received {signal:?}, stopping");
                return;
            }
            Err(e) => log::error!("signal handling: {e}"),
        }
    }
}
