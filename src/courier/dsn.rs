//! Delivery status notifications (RFC 3464) for permanent failures.
