//! Deliveries, one module per way out; each failure says whether it is permanent.
//!
//! - [`maildir`]: the built-in local delivery.
//! - [`mda`], [`lmtp`]: the other local deliveries; [`pipe`]: pipe aliases; [`command`]: how
//!   a delivery command is run.
//! - [`remote`]: SMTP to other domains, over [`smtp_client`], with [`domaininfo`] (TLS levels)
//!   and [`mta_sts`].
//! - [`outbound`]: what a copy leaving for another domain looks like: SRS envelope sender,
//!   DKIM signatures, ARC set.
//! - [`dsn`]: bounces for permanent failures.

pub mod command;
pub mod connection_cache;
pub mod domaininfo;
pub mod dsn;
pub mod lmtp;
pub mod maildir;
pub mod mda;
pub mod mta_sts;
pub mod outbound;
pub mod pipe;
pub mod remote;
pub mod smtp_client;
pub mod spam_throttle;

/// A failed delivery attempt: temporary ones are retried, permanent ones bounce.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DeliveryError {
    pub permanent: bool,
    pub reason: String,
    /// The receiving server refused the mail as spam or for its rate
    /// ([`spam_throttle::refuses_as_spam`]).
    pub spam_refusal: bool,
}

impl DeliveryError {
    pub fn temporary(reason: impl Into<String>) -> DeliveryError {
        DeliveryError {
            permanent: false,
            reason: reason.into(),
            spam_refusal: false,
        }
    }
    pub fn permanent(reason: impl Into<String>) -> DeliveryError {
        DeliveryError {
            permanent: true,
            reason: reason.into(),
            spam_refusal: false,
        }
    }
}

use crate::addr::Address;
use crate::config::settings::LocalDelivery;
use crate::message::StoredMessage;
use std::time::Duration;

/// Time limit of an MDA or pipe command (chasquid uses 1 minute).
pub const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// Every way out tambo has, configured.
pub struct Couriers {
    pub local: LocalDelivery,
    /// The mailbox store (`data_dir/mail`), for the built-in Maildir delivery.
    pub store: crate::mailbox::Store,
    pub hostname: String,
    pub remote: remote::RemoteCourier,
    pub command_limit: Duration,
}

impl Couriers {
    /// Delivers to a local user's mailbox through the configured local delivery. Returns how
    /// (for the mail log). `key` names this delivery (queue id and recipient index): the
    /// built-in Maildir delivery uses it to never deliver the same recipient twice, and
    /// `original` (the recipient as the sender wrote it) to pick the folder.
    pub async fn mailbox(
        &self,
        item: &StoredMessage,
        mailbox: &Address,
        original: &str,
        key: &str,
    ) -> Result<String, DeliveryError> {
        match &self.local {
            LocalDelivery::Maildir => {
                let (store, item, mailbox, original, key) = (
                    self.store.clone(),
                    item.clone(),
                    mailbox.clone(),
                    original.to_string(),
                    key.to_string(),
                );
                smol::unblock(move || {
                    maildir::deliver(
                        &store,
                        mailbox.domain().as_str(),
                        mailbox.local().as_str(),
                        &original,
                        &item,
                        &key,
                    )
                })
                .await?;
                Ok("maildir".into())
            }
            LocalDelivery::Mda(argv) => {
                let from = item.envelope.from.clone();
                mda::deliver(argv, &from, mailbox, item, self.command_limit).await?;
                Ok("mda".into())
            }
            LocalDelivery::Lmtp(target) => {
                let from = item.envelope.from.clone();
                let rcpts = [mailbox.to_string()];
                let deadlines = self.remote.deadlines;
                let mut results =
                    lmtp::deliver(target, &self.hostname, &from, &rcpts, item, b"", deadlines)
                        .await;
                results
                    .pop()
                    .unwrap_or_else(|| Err(DeliveryError::temporary("LMTP gave no reply")))?;
                Ok(format!("lmtp[{target}]"))
            }
        }
    }

    /// Runs a pipe alias (`alias: | command args`).
    pub async fn pipe(
        &self,
        item: &StoredMessage,
        argv: &[String],
        alias: &str,
    ) -> Result<(), DeliveryError> {
        let from = item.envelope.from.clone();
        pipe::deliver(argv, alias, &from, item, self.command_limit).await
    }
}
