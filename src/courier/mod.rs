//! Deliveries, one module per way out; each failure says whether it is permanent.
//!
//! - [`maildir`]: the built-in local delivery.
//! - [`mda`], [`lmtp`]: the other local deliveries; [`pipe`]: pipe aliases; [`command`]: how
//!   a delivery command is run.
//! - [`remote`]: SMTP to other domains, over [`smtp_client`], with [`domaininfo`] (TLS levels)
//!   and [`mta_sts`].
//! - [`dsn`]: bounces for permanent failures.

pub mod command;
pub mod domaininfo;
pub mod dsn;
pub mod lmtp;
pub mod maildir;
pub mod mda;
pub mod mta_sts;
pub mod pipe;
pub mod remote;
pub mod smtp_client;

/// A failed delivery attempt: temporary ones are retried, permanent ones bounce.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DeliveryError {
    pub permanent: bool,
    pub reason: String,
}

impl DeliveryError {
    pub fn temporary(reason: impl Into<String>) -> DeliveryError {
        DeliveryError {
            permanent: false,
            reason: reason.into(),
        }
    }
    pub fn permanent(reason: impl Into<String>) -> DeliveryError {
        DeliveryError {
            permanent: true,
            reason: reason.into(),
        }
    }
}
