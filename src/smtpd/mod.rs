//! The SMTP server (SPEC §7): the per-connection I/O driver over the shared server layer
//! (`net`), and the policy that answers the session's questions from the configuration.
//!
//! - [`server`]: what every connection shares; the `net::Service` of SMTP.
//! - [`conn`]: drives one `proto::session::Session` over a stream (plain or TLS).
//! - [`policy`]: relay rule, sender restriction, recipient resolution (SPEC §6, §7).
//! - [`received`]: the Received trace header (RFC 5321 §4.4).

pub mod conn;
pub mod policy;
pub mod received;
pub mod server;

pub use server::Server;
