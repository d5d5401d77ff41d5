//! The SMTP server: listeners, the per-connection I/O driver, and the policy that answers the
//! session's questions from the configuration.
//!
//! - [`server`]: shared state and the accept loops.
//! - [`access`]: `conf/access` rules (Connect:/From:/To:; OK, RELAY, REJECT, DISCARD).
//! - [`auth_limit`]: failed AUTH attempts counted and limited per client address.
//! - [`limits`]: caps on concurrent connections, overall and per client address.
//! - [`conn`]: drives one `proto::session::Session` over a socket (plain or TLS).
//! - [`policy`]: relay rule, sender restriction, recipient resolution (SPEC §6, §7).
//! - [`received`]: the Received trace header (RFC 5321 §4.4).

pub mod access;
pub mod auth_limit;
pub mod conn;
pub mod limits;
pub mod policy;
pub mod received;
pub mod server;

pub use server::Server;
