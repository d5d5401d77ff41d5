//! The mail log: one line per event (received, delivered, deferred, bounced, rejected), in the
//! spirit of Postfix's mail.log, with stable `key=value` fields so `grep` and log tools can use
//! it. Lines go through `log` with target `maillog` at info level:
//!
//! ```text
//! maillog: event=received id=0193ab... from=<a@b.example> nrcpt=2 size=1234 client=[192.0.2.1] helo=mx.b.example tls=yes auth=-
//! maillog: event=delivered id=0193ab... to=<alice@example.test> via=maildir
//! maillog: event=deferred id=0193ab... to=<x@remote.example> reason="..." retry_in=60s
//! maillog: event=bounced id=0193ab... to=<a@b.example> dsn_id=0193ac...
//! ```
//!
//! Values that may contain spaces are quoted with `{:?}`; addresses are in `<...>`. Each event
//! also bumps its counter in [`metrics`] (`tambo_messages_<event>_total`).

use crate::monitoring::metrics;
use std::time::Duration;

const TARGET: &str = "maillog";

/// A message was accepted and is durable in the queue.
pub fn received(id: &str, from: &str, nrcpt: usize, size: u64, client: &ClientDesc<'_>) {
    metrics::message_received();
    log::info!(
        target: TARGET,
        "event=received id={id} from=<{from}> nrcpt={nrcpt} size={size} client=[{}] helo={:?} tls={} auth={}",
        client.ip,
        client.helo,
        if client.tls { "yes" } else { "no" },
        client.auth.unwrap_or("-"),
    );
}

/// Who sent it: for the received line.
pub struct ClientDesc<'a> {
    pub ip: std::net::IpAddr,
    pub helo: &'a str,
    pub tls: bool,
    pub auth: Option<&'a str>,
}

pub fn delivered(id: &str, to: &str, via: &str) {
    metrics::message_delivered();
    log::info!(target: TARGET, "event=delivered id={id} to=<{to}> via={via}");
}

pub fn deferred(id: &str, to: &str, reason: &str, retry_in: Duration) {
    metrics::message_deferred();
    log::info!(
        target: TARGET,
        "event=deferred id={id} to=<{to}> reason={reason:?} retry_in={}s",
        retry_in.as_secs()
    );
}

pub fn failed(id: &str, to: &str, reason: &str) {
    metrics::message_failed();
    log::info!(target: TARGET, "event=failed id={id} to=<{to}> reason={reason:?}");
}

/// A DSN about message `id` was queued (as `dsn_id`) to its sender.
pub fn bounced(id: &str, to: &str, dsn_id: &str) {
    metrics::message_bounced();
    log::info!(target: TARGET, "event=bounced id={id} to=<{to}> dsn_id={dsn_id}");
}

/// An access rule (DISCARD) dropped an accepted message.
pub fn discarded(id: &str, client: std::net::IpAddr) {
    metrics::message_discarded();
    log::info!(target: TARGET, "event=discarded id={id} client=[{client}] reason=\"access rule\"");
}

/// A command or a message was refused with `reply`; `from` is the transaction's sender, when
/// one was under way.
pub fn rejected(client: std::net::IpAddr, from: Option<&str>, reply: &crate::proto::reply::Reply) {
    let from = from.map(|f| format!(" from=<{f}>")).unwrap_or_default();
    log::info!(
        target: TARGET,
        "event=rejected client=[{client}]{from} code={} status={} reply={:?}",
        reply.code,
        reply.enhanced,
        reply.text()
    );
}

/// Every recipient is done and the queue file is gone.
pub fn removed(id: &str) {
    log::info!(target: TARGET, "event=removed id={id}");
}
