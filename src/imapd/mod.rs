//! The IMAP4rev1 server (RFC 3501, SPEC §10) over the mailbox store.
//!
//! - [`framer`]: commands cut from the byte stream (lines and literals), sans-I/O.
//! - [`wire`]: how responses are written: strings, dates, status lines.
//! - [`server`]: what sessions share, the cap on sessions per user and address.
//! - [`conn`]: the I/O driver of a connection: STARTTLS, login, IDLE, autologout.
//! - [`commands`]: the commands of the authenticated and selected states.

pub mod commands;
pub mod conn;
pub mod framer;
pub mod server;
pub mod wire;

pub use server::Server;
