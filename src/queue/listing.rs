//! What is in the queue, as people see it: one summary per message (id, age, sender,
//! recipients with their state and last error), shared by `tambo util queue` (text) and the
//! monitoring endpoint's `/queue` (JSON) so both always say the same thing. Read-only.

use crate::aliases::Recipient;
use crate::message::{RcptState, StoredMessage};
use crate::queue::store::Queue;
use std::fmt::Write;

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    pub id: String,
    /// Seconds since it was received (0 for a clock that went backwards).
    pub age_secs: u64,
    /// Seconds since the epoch.
    pub received_at: u64,
    /// Reverse-path; empty for `<>`.
    pub from: String,
    pub recipients: Vec<ListedRcpt>,
}

/// One recipient of a queued message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListedRcpt {
    /// Where it goes: the address (with its `via` hosts), or the pipe's command line.
    pub to: String,
    /// The address the client gave at RCPT.
    pub original: String,
    /// `"state": "pending" | "delivered" | "failed"`, plus `"reason"` when failed.
    #[serde(flatten)]
    pub state: RcptState,
    /// The last temporary error, if an attempt failed.
    pub last_error: Option<String>,
}

/// Every complete message in `queue`, oldest first, with ages measured at `now` (seconds
/// since the epoch).
pub fn list(queue: &Queue, now: u64) -> std::io::Result<Vec<Listed>> {
    Ok(queue.list()?.iter().map(|item| listed(item, now)).collect())
}

fn listed(item: &StoredMessage, now: u64) -> Listed {
    let env = &item.envelope;
    Listed {
        id: item.id.to_string(),
        age_secs: now.saturating_sub(env.received_at),
        received_at: env.received_at,
        from: env.from.clone(),
        recipients: env
            .rcpts
            .iter()
            .map(|r| ListedRcpt {
                to: target_text(&r.target),
                original: r.original.clone(),
                state: r.state.clone(),
                last_error: r.last_error.clone(),
            })
            .collect(),
    }
}

/// The target as `util queue` has always shown it (`aliases-resolve`'s description without
/// its kind word).
fn target_text(target: &Recipient) -> String {
    match target {
        Recipient::Mailbox { address } => address.clone(),
        Recipient::Forward { address, via } if via.is_empty() => address.clone(),
        Recipient::Forward { address, via } => format!("{address} via {}", via.join("/")),
        Recipient::Pipe { argv, .. } => argv.join(" "),
    }
}

/// The `util queue` text: one message a line (`id= age= from= nrcpt=`), then one indented
/// line per recipient (`to= state= [last_error=]`), in the mail log's `key=value` style.
pub fn text(messages: &[Listed]) -> String {
    if messages.is_empty() {
        return "queue is empty\n".to_string();
    }
    let mut out = String::new();
    for m in messages {
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "id={} age={}s from=<{}> nrcpt={}",
            m.id,
            m.age_secs,
            m.from,
            m.recipients.len()
        );
        for r in &m.recipients {
            let state = match &r.state {
                RcptState::Pending => "pending".to_string(),
                RcptState::Delivered => "delivered".to_string(),
                RcptState::Failed { reason } => format!("failed reason={reason:?}"),
            };
            let last = r
                .last_error
                .as_deref()
                .map(|e| format!(" last_error={e:?}"))
                .unwrap_or_default();
            let _ = writeln!(out, "  to=<{}> state={state}{last}", r.to);
        }
    }
    out
}

/// How many messages are queued and the age of the oldest (0 when empty).
pub fn summary(messages: &[Listed]) -> (usize, u64) {
    let oldest = messages.iter().map(|m| m.age_secs).max().unwrap_or(0);
    (messages.len(), oldest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rcpt(to: &str, state: RcptState, last_error: Option<&str>) -> ListedRcpt {
        ListedRcpt {
            to: to.into(),
            original: to.into(),
            state,
            last_error: last_error.map(str::to_string),
        }
    }

    fn message(id: &str, age: u64, recipients: Vec<ListedRcpt>) -> Listed {
        Listed {
            id: id.into(),
            age_secs: age,
            received_at: 1_000_000 - age,
            from: "bob@sender.example".into(),
            recipients,
        }
    }

    #[test]
    fn target_text_matches_the_old_listing() {
        let cases = [
            (
                Recipient::Mailbox {
                    address: "a@x.test".into(),
                },
                "a@x.test",
            ),
            (
                Recipient::Forward {
                    address: "b@y.test".into(),
                    via: vec![],
                },
                "b@y.test",
            ),
            (
                Recipient::Forward {
                    address: "b@y.test".into(),
                    via: vec!["mx1".into(), "mx2".into()],
                },
                "b@y.test via mx1/mx2",
            ),
            (
                Recipient::Pipe {
                    argv: vec!["/bin/cat".into(), "-u".into()],
                    alias: "p".into(),
                },
                "/bin/cat -u",
            ),
        ];
        for (target, want) in cases {
            assert_eq!(target_text(&target), want, "{target:?}");
        }
    }

    #[test]
    fn text_lists_messages_and_recipients() {
        assert_eq!(text(&[]), "queue is empty\n");
        let m = message(
            "0193ab0000000001",
            42,
            vec![
                rcpt("a@x.test", RcptState::Pending, Some("451 \"busy\"")),
                rcpt("b@x.test", RcptState::Delivered, None),
                rcpt(
                    "c@x.test",
                    RcptState::Failed {
                        reason: "550 no".into(),
                    },
                    None,
                ),
            ],
        );
        assert_eq!(
            text(&[m]),
            "id=0193ab0000000001 age=42s from=<bob@sender.example> nrcpt=3\n\
             \x20 to=<a@x.test> state=pending last_error=\"451 \\\"busy\\\"\"\n\
             \x20 to=<b@x.test> state=delivered\n\
             \x20 to=<c@x.test> state=failed reason=\"550 no\"\n"
        );
    }

    #[test]
    fn json_has_state_reason_and_last_error() {
        let m = message(
            "0193ab0000000001",
            5,
            vec![
                rcpt("a@x.test", RcptState::Pending, Some("busy")),
                rcpt(
                    "c@x.test",
                    RcptState::Failed {
                        reason: "550 no".into(),
                    },
                    None,
                ),
            ],
        );
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["id"], "0193ab0000000001");
        assert_eq!(json["age_secs"], 5);
        assert_eq!(json["from"], "bob@sender.example");
        let r = &json["recipients"];
        assert_eq!(r[0]["state"], "pending");
        assert_eq!(r[0]["last_error"], "busy");
        assert!(r[0].get("reason").is_none());
        assert_eq!(r[1]["state"], "failed");
        assert_eq!(r[1]["reason"], "550 no");
        assert_eq!(r[1]["last_error"], serde_json::Value::Null);
    }

    #[test]
    fn summary_counts_and_finds_the_oldest() {
        assert_eq!(summary(&[]), (0, 0));
        let ms = [
            message("a", 3, vec![]),
            message("b", 90, vec![]),
            message("c", 7, vec![]),
        ];
        assert_eq!(summary(&ms), (3, 90));
    }
}
