//! Deliveries. [`maildir`]: the built-in local delivery.

pub mod maildir;

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
