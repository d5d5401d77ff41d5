//! The monitoring endpoint (SPEC §3 `monitoring_listen`): `/metrics` in the Prometheus text
//! format, `/healthz`, `/queue` as JSON, served with hyper (HTTP/1.1) on our smol executor.
//!
//! - [`crate::metrics`] holds the process-wide counters and their text rendering.
//! - [`http`]: routing and responses.
//!
//! It is meant for a scraper on a private address; still, each connection is bounded in time
//! and their number is capped, so an exposed port cannot pile up tasks.

pub mod http;

use crate::config::Settings;
use crate::net::http::Slots;
use crate::queue::store::Queue;
use smol::Async;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Connections served at once; more are closed as soon as accepted.
const MAX_CONNECTIONS: usize = 32;

/// Binds `monitoring_listen` (when set) and serves it on `ex` until the process ends.
pub fn start(
    settings: &Settings,
    queue: Queue,
    ex: &Arc<smol::Executor<'static>>,
) -> std::io::Result<()> {
    let Some(addr) = settings.monitoring_listen else {
        return Ok(());
    };
    let listener = Async::<TcpListener>::bind(addr)?;
    log::info!("monitoring on http://{addr}/metrics");
    ex.spawn(accept_loop(listener, queue, ex.clone())).detach();
    Ok(())
}

/// Accepts connections forever, each served on its own task.
async fn accept_loop(listener: Async<TcpListener>, queue: Queue, ex: Arc<smol::Executor<'static>>) {
    let slots = Slots::new(MAX_CONNECTIONS);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Some(slot) = slots.take() else {
                    log::warn!("monitoring: too many connections, closing {peer}");
                    continue;
                };
                let queue = queue.clone();
                ex.spawn(async move {
                    serve(stream, peer, queue).await;
                    drop(slot);
                })
                .detach();
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::error!("monitoring: accept: {e}");
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One HTTP/1.1 connection, bounded as [`crate::net::http::serve`] says.
async fn serve(stream: Async<TcpStream>, peer: SocketAddr, queue: Queue) {
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let queue = queue.clone();
        async move {
            let response = http::respond(req.method(), req.uri().path(), &queue).await;
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    if let Err(e) = crate::net::http::serve(stream, service).await {
        log::debug!("monitoring: connection from {peer}: {e}");
    }
}
