//! The mailbox module's storage side.
//!
//! - [`summary`]: pure functions over one message's bytes for IMAP: ENVELOPE, BODY and
//!   BODYSTRUCTURE, `BODY[section]` contents, and the SEARCH keys that look into a message.

pub mod summary;
