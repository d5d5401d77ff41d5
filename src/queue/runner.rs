//! The delivery loop: one task per queued message. Each attempt tries every pending
//! recipient, records each outcome durably in the queue file before moving on (so a restart
//! never delivers a recipient twice), then sleeps per [`retry::next_delay`] until all are done
//! or `give_up_after` has passed. The file goes only when every recipient is done.

use crate::addr::Address;
use crate::aliases::Recipient;
use crate::courier::{DeliveryError, maildir};
use crate::maillog;
use crate::queue::retry;
use crate::queue::store::{Item, Queue, RcptState, now_secs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where new messages are handed to the runner.
#[derive(Clone)]
pub struct Deliveries {
    tx: smol::channel::Sender<Item>,
}

impl Deliveries {
    /// Schedules a committed message for delivery now.
    pub fn submit(&self, item: Item) {
        // Unbounded: cannot be full; closed only at shutdown, when the queue file remains
        // and the next start picks it up.
        let _ = self.tx.try_send(item);
    }
}

pub struct Runner {
    pub queue: Queue,
    /// `data_dir/mail`.
    pub mail_root: PathBuf,
    pub hostname: String,
    pub give_up_after: Duration,
}

/// Starts the dispatcher on `ex`; returns the handle sessions submit to.
pub fn start(runner: Arc<Runner>, ex: Arc<smol::Executor<'static>>) -> Deliveries {
    let (tx, rx) = smol::channel::unbounded::<Item>();
    let spawner = ex.clone();
    ex.spawn(async move {
        while let Ok(item) = rx.recv().await {
            spawner.spawn(runner.clone().deliver_item(item)).detach();
        }
    })
    .detach();
    Deliveries { tx }
}

impl Runner {
    async fn deliver_item(self: Arc<Self>, mut item: Item) {
        loop {
            let age = Duration::from_secs(now_secs().saturating_sub(item.envelope.received_at));
            let delay = retry::next_delay(age, rand::random::<f64>());
            self.attempt(&mut item, delay).await;
            if !item
                .envelope
                .rcpts
                .iter()
                .any(|r| r.state == RcptState::Pending)
            {
                return self.finish(&item).await;
            }
            if age >= self.give_up_after {
                self.give_up(&mut item).await;
                return self.finish(&item).await;
            }
            smol::Timer::after(delay).await;
        }
    }

    async fn attempt(&self, item: &mut Item, next_delay: Duration) {
        for i in 0..item.envelope.rcpts.len() {
            let rcpt = &item.envelope.rcpts[i];
            if rcpt.state != RcptState::Pending {
                continue;
            }
            let target = rcpt.target.clone();
            let (state, last_error) = match self.deliver_one(item, &target).await {
                Ok(via) => {
                    maillog::delivered(item.id.as_str(), &target_text(&target), via);
                    (RcptState::Delivered, None)
                }
                Err(e) if e.permanent => {
                    maillog::failed(item.id.as_str(), &target_text(&target), &e.reason);
                    (RcptState::Failed { reason: e.reason }, None)
                }
                Err(e) => {
                    maillog::deferred(
                        item.id.as_str(),
                        &target_text(&target),
                        &e.reason,
                        next_delay,
                    );
                    (RcptState::Pending, Some(e.reason))
                }
            };
            self.record(item, i, state, last_error).await;
        }
    }

    /// Durably records one recipient's outcome, then updates the in-memory copy.
    async fn record(
        &self,
        item: &mut Item,
        i: usize,
        state: RcptState,
        last_error: Option<String>,
    ) {
        let queue = self.queue.clone();
        let snapshot = item.clone();
        let (st, le) = (state.clone(), last_error.clone());
        let written = smol::unblock(move || queue.record(&snapshot, i, &st, le.as_deref())).await;
        if let Err(e) = written {
            log::error!("queue {}: cannot record recipient {i}: {e}", item.id);
        }
        let rcpt = &mut item.envelope.rcpts[i];
        rcpt.state = state;
        rcpt.last_error = last_error;
    }

    async fn deliver_one(
        &self,
        item: &Item,
        target: &Recipient,
    ) -> Result<&'static str, DeliveryError> {
        match target {
            Recipient::Mailbox { address } => {
                let addr = Address::parse(address).map_err(|e| {
                    DeliveryError::permanent(format!("bad mailbox {address:?}: {e}"))
                })?;
                let (root, host, snapshot) =
                    (self.mail_root.clone(), self.hostname.clone(), item.clone());
                smol::unblock(move || {
                    maildir::deliver(
                        &root,
                        &host,
                        addr.domain().as_str(),
                        addr.local().as_str(),
                        &snapshot,
                    )
                })
                .await?;
                Ok("maildir")
            }
            // Remote SMTP and pipes arrive with the courier of the next milestone; until
            // then these recipients wait in the queue (and are retried) rather than bounce.
            Recipient::Forward { .. } => Err(DeliveryError::temporary(
                "remote delivery is not available yet",
            )),
            Recipient::Pipe { .. } => Err(DeliveryError::temporary(
                "pipe delivery is not available yet",
            )),
        }
    }

    async fn give_up(&self, item: &mut Item) {
        for i in 0..item.envelope.rcpts.len() {
            let rcpt = &item.envelope.rcpts[i];
            if rcpt.state != RcptState::Pending {
                continue;
            }
            let reason = format!(
                "gave up after {}s: {}",
                self.give_up_after.as_secs(),
                rcpt.last_error.as_deref().unwrap_or("no attempt succeeded")
            );
            maillog::failed(item.id.as_str(), &target_text(&rcpt.target), &reason);
            self.record(item, i, RcptState::Failed { reason }, None)
                .await;
        }
    }

    async fn finish(&self, item: &Item) {
        let queue = self.queue.clone();
        let snapshot = item.clone();
        match smol::unblock(move || queue.remove(&snapshot)).await {
            Ok(()) => maillog::removed(item.id.as_str()),
            Err(e) => log::error!("queue {}: cannot remove finished message: {e}", item.id),
        }
    }
}

fn target_text(target: &Recipient) -> String {
    match target {
        Recipient::Mailbox { address } | Recipient::Forward { address, .. } => address.clone(),
        Recipient::Pipe { argv, .. } => format!("|{}", argv.join(" ")),
    }
}
