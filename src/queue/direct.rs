//! Mail for local users delivered before the 250, without a trip through the queue.
//!
//! When every recipient of a message is a mailbox served by the built-in Maildir delivery,
//! the Maildir file itself is the durable copy: it is fsync'd (file and `new/`) before the
//! 250, which is all SPEC §7 asks of a 250. Queueing first would write and fsync the message
//! twice and hand it between threads three more times, for no gain in safety. This is what
//! Dovecot's LMTP does too: deliver, then answer.
//!
//! A recipient whose delivery fails is not lost: the message is then committed to the queue
//! as usual, with the recipients already delivered marked so (they are never delivered
//! twice), and the runner retries or bounces the rest.

use crate::aliases::Recipient;
use crate::courier::{DeliveryError, maildir};
use crate::mailbox::Store;
use crate::message::{Envelope, QueuedRcpt, RcptState, StoredMessage};
use crate::queue::store::Incoming;
use std::io;

/// Where the built-in Maildir delivery writes; present only when it is the local delivery.
#[derive(Debug, Clone)]
pub struct DirectMaildir {
    /// The mailbox store (`data_dir/mail`).
    pub store: Store,
}

/// What became of a message handed to [`DirectMaildir::deliver`].
#[derive(Debug)]
pub struct Outcome {
    /// The message as delivered (its file is gone once this returns: id, envelope, size only).
    pub message: StoredMessage,
    /// Per recipient (envelope order): the delivery's result.
    pub results: Vec<Result<(), DeliveryError>>,
    /// The queued message, when a delivery failed and the runner must finish it.
    pub queued: Option<StoredMessage>,
}

impl DirectMaildir {
    /// Whether a message for these recipients goes straight to the Maildirs: all of them
    /// local mailboxes (a forward or a pipe needs the queue anyway).
    pub fn applies(envelope: &Envelope) -> bool {
        !envelope.rcpts.is_empty()
            && envelope
                .rcpts
                .iter()
                .all(|r| matches!(r.target, Recipient::Mailbox { .. }))
    }

    /// Delivers to every recipient's Maildir (blocking: call it off the executor). Ok means
    /// the message is durable, delivered or queued, and may be acknowledged.
    pub fn deliver(&self, mut incoming: Incoming, mut envelope: Envelope) -> io::Result<Outcome> {
        let message = incoming.view(&envelope)?;
        let results: Vec<Result<(), DeliveryError>> = envelope
            .rcpts
            .iter()
            .enumerate()
            .map(|(i, rcpt)| self.deliver_one(&message, rcpt, i))
            .collect();
        if results.iter().all(Result::is_ok) {
            incoming.recycle();
            return Ok(Outcome {
                message,
                results,
                queued: None,
            });
        }
        for (rcpt, result) in envelope.rcpts.iter_mut().zip(&results) {
            if result.is_ok() {
                rcpt.state = RcptState::Delivered;
            }
        }
        let queued = incoming.commit(envelope)?;
        Ok(Outcome {
            message,
            results,
            queued: Some(queued),
        })
    }

    /// One recipient, under the same delivery key the runner would use (`<id>_<index>`), so
    /// a retry by the runner finds a delivery made here and does not make it twice.
    fn deliver_one(
        &self,
        message: &StoredMessage,
        rcpt: &QueuedRcpt,
        index: usize,
    ) -> Result<(), DeliveryError> {
        let Recipient::Mailbox { address } = &rcpt.target else {
            return Err(DeliveryError::temporary("not a mailbox"));
        };
        let mailbox = crate::addr::Address::parse(address)
            .map_err(|e| DeliveryError::permanent(format!("bad mailbox {address:?}: {e}")))?;
        maildir::deliver(
            &self.store,
            mailbox.domain().as_str(),
            mailbox.local().as_str(),
            &rcpt.original,
            message,
            &format!("{}_{index}", message.id),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::QueuedRcpt;
    use crate::queue::store::Queue;

    fn rcpt(address: &str) -> QueuedRcpt {
        QueuedRcpt {
            original: address.to_string(),
            target: Recipient::Mailbox {
                address: address.to_string(),
            },
            state: RcptState::Pending,
            last_error: None,
        }
    }

    /// A full mailbox does not refuse the message: it is queued for the runner, marked
    /// delivered for the recipients that got it, with the failure a temporary one.
    #[test]
    fn over_quota_is_queued_not_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let queue = Queue::open(tmp.path()).unwrap();
        // Room for one copy of the message, not two.
        let store = Store::new(tmp.path().join("mail"), Some(400));
        let direct = DirectMaildir { store };
        let body = format!("Subject: q\r\n\r\n{}\r\n", "x".repeat(200));
        let to_bob = Envelope {
            from: "a@example.com".into(),
            rcpts: vec![rcpt("bob@example.org")],
            ..Default::default()
        };
        let mut first = queue.incoming().unwrap();
        first.write(body.as_bytes()).unwrap();
        let outcome = direct.deliver(first, to_bob).unwrap();
        assert!(outcome.results.iter().all(Result::is_ok));
        assert!(outcome.queued.is_none());

        // Bob's mailbox is now too full for another copy; Carol's is not.
        let envelope = Envelope {
            from: "a@example.com".into(),
            rcpts: vec![rcpt("bob@example.org"), rcpt("carol@example.org")],
            ..Default::default()
        };
        let mut second = queue.incoming().unwrap();
        second.write(body.as_bytes()).unwrap();
        let outcome = direct.deliver(second, envelope).unwrap();
        let err = outcome.results[0].as_ref().unwrap_err();
        assert!(
            !err.permanent && err.reason.contains("452 4.2.2"),
            "{err:?}"
        );
        assert!(outcome.results[1].is_ok());
        let queued = outcome.queued.expect("queued for the runner");
        assert_eq!(queued.envelope.rcpts[0].state, RcptState::Pending);
        assert_eq!(queued.envelope.rcpts[1].state, RcptState::Delivered);
        assert!(queue.dir().join(queued.id.as_str()).is_file());
    }
}
