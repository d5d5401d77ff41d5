//! The sans-I/O SMTP core: bytes in, replies and events out; no sockets, no files, no clock.
//!
//! - [`reply`]: `Reply { code, enhanced, text }` and the wire encoding.
//! - [`command`]: one command line → `Command`.
//! - [`data`]: the DATA reader (dot-unstuffing, smuggling refusal, size cap).
//! - [`session`]: the server session state machine that ties them together.
//! - [`client`]: the client side: reply parser, EHLO capabilities, dot-stuffing.

pub mod client;
pub mod command;
pub mod data;
pub mod reply;
pub mod session;
