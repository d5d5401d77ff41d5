//! The POP3 server (RFC 1939, RFC 2449, RFC 2595, RFC 5034; SPEC §10) over the INBOX of
//! the mailbox store.
//!
//! - [`command`]: commands parsed from a line, sans-I/O.
//! - [`framer`]: lines cut from the byte stream, bounded, sans-I/O.
//! - [`session`]: the session's states and replies, sans-I/O.
//! - [`maildrop`]: the messages of a session, their sizes, UIDLs and deletion marks.
//! - [`message`]: RETR and TOP output: CRLF, byte-stuffing, TOP's cut; in pieces.
//! - [`server`]: what sessions share: limits, the maildrop locks.
//! - [`conn`]: the I/O driver of a connection: STLS, login, streaming, UPDATE, autologout.

pub mod command;
pub mod conn;
pub mod framer;
pub mod maildrop;
pub mod message;
pub mod server;
pub mod session;

pub use server::Server;
