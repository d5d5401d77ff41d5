//! The mail log: one line per event (received, delivered, deferred, bounced, rejected), in the
//! spirit of Postfix's mail.log, with stable `key=value` fields so `grep` and log tools can use
//! it. Lines go through `log` with target `maillog` at info level:
//!
//! ```text
//! maillog: event=received id=0193ab... from=<a@b.example> nrcpt=2 size=1234 client=[192.0.2.1] helo=mx.b.example tls=yes auth=-
//! maillog: event=delivered id=0193ab... to=<alice@example.test> via=maildir
//! maillog: event=deferred id=0193ab... to=<x@remote.example> reason="..." retry_in=60s
//! maillog: event=bounced id=0193ab... to=<a@b.example> dsn_id=0193ac...
//! maillog: event=rejected client=[192.0.2.1] from=<a@b.example> to=<x@example.test> code=550 status=5.1.1 reply="No such user"
//! maillog: event=rejected client=[192.0.2.1] user="alice@example.test" code=535 status=5.7.8 reply="Authentication credentials invalid"
//! ```
//!
//! Values that may contain spaces are quoted with `{:?}`; addresses are in `<...>`. Each event
//! also bumps its counter in [`metrics`] (`tambo_messages_<event>_total`).

use crate::metrics;
use std::fmt::Write as _;
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

/// No DSN about message `id` goes to its sender `to`, who was not authenticated on arrival
/// (SPEC §8: a bounce to a forged sender is backscatter).
pub fn not_bounced(id: &str, to: &str) {
    metrics::dsn_suppressed();
    log::info!(
        target: TARGET,
        "event=not-bounced id={id} to=<{to}> reason=\"sender not authenticated on arrival \
         (no SPF pass, no aligned DKIM pass)\""
    );
}

/// An access rule (DISCARD) dropped an accepted message.
pub fn discarded(id: &str, client: std::net::IpAddr) {
    metrics::message_discarded();
    log::info!(target: TARGET, "event=discarded id={id} client=[{client}] reason=\"access rule\"");
}

/// A refused command or message, for its log line.
pub struct Rejected<'a> {
    pub client: std::net::IpAddr,
    /// The transaction's sender, when one was under way.
    pub from: Option<&'a str>,
    /// The recipient of a refused RCPT, as the client gave it.
    pub to: Option<&'a str>,
    /// The login name of a refused AUTH (never the password).
    pub user: Option<&'a str>,
    pub reply: &'a crate::proto::reply::Reply,
}

/// A command or a message was refused.
pub fn rejected(r: &Rejected<'_>) {
    log::info!(target: TARGET, "{}", rejected_line(r));
}

/// The login is whatever the client sent, so it is quoted like the other free-text values
/// (no line breaks or quotes of its own get into the log); addresses cannot hold those.
fn rejected_line(r: &Rejected<'_>) -> String {
    let mut line = format!("event=rejected client=[{}]", r.client);
    if let Some(from) = r.from {
        let _ = write!(line, " from=<{from}>");
    }
    if let Some(to) = r.to {
        let _ = write!(line, " to=<{to}>");
    }
    if let Some(user) = r.user {
        let _ = write!(line, " user={user:?}");
    }
    let _ = write!(
        line,
        " code={} status={} reply={:?}",
        r.reply.code,
        r.reply.enhanced,
        r.reply.text()
    );
    line
}

/// A login (IMAP, POP3) succeeded. The user is the normalised address.
pub fn login(protocol: &str, client: std::net::IpAddr, user: &str, tls: bool) {
    let tls = if tls { "yes" } else { "no" };
    log::info!(target: TARGET, "event=login protocol={protocol} client=[{client}] user={user:?} tls={tls}");
}

/// A login failed, or was refused for too many failures. The login is what the client sent
/// (quoted: it is free text); never the password.
pub fn login_failed(protocol: &str, client: std::net::IpAddr, login: &str) {
    log::info!(target: TARGET, "event=login_failed protocol={protocol} client=[{client}] user={login:?}");
}

/// Every recipient is done and the queue file is gone.
pub fn removed(id: &str) {
    log::info!(target: TARGET, "event=removed id={id}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::reply::Reply;

    #[test]
    fn rejected_lines() {
        let ip = "192.0.2.1".parse().unwrap();
        let no_user = Reply::new(550, "5.1.1", "No such user");
        let bad_login = Reply::new(535, "5.7.8", "Authentication credentials invalid");
        let base = Rejected {
            client: ip,
            from: None,
            to: None,
            user: None,
            reply: &no_user,
        };
        let cases = [
            (
                Rejected { ..base },
                r#"event=rejected client=[192.0.2.1] code=550 status=5.1.1 reply="No such user""#,
            ),
            (
                Rejected {
                    from: Some("a@b.example"),
                    to: Some("Bob@example.test"),
                    ..base
                },
                r#"event=rejected client=[192.0.2.1] from=<a@b.example> to=<Bob@example.test> code=550 status=5.1.1 reply="No such user""#,
            ),
            (
                Rejected {
                    from: Some(""),
                    to: Some("postmaster"),
                    ..base
                },
                r#"event=rejected client=[192.0.2.1] from=<> to=<postmaster> code=550 status=5.1.1 reply="No such user""#,
            ),
            (
                Rejected {
                    user: Some("alice@example.test"),
                    reply: &bad_login,
                    ..base
                },
                r#"event=rejected client=[192.0.2.1] user="alice@example.test" code=535 status=5.7.8 reply="Authentication credentials invalid""#,
            ),
            (
                Rejected {
                    user: Some("evil\n\"event=received"),
                    reply: &bad_login,
                    ..base
                },
                r#"event=rejected client=[192.0.2.1] user="evil\n\"event=received" code=535 status=5.7.8 reply="Authentication credentials invalid""#,
            ),
        ];
        for (rejected, want) in cases {
            assert_eq!(rejected_line(&rejected), want);
        }
    }
}
