//! Pure functions over one message's bytes, for IMAP (RFC 3501); no I/O.
//!
//! A message comes as stored in the Maildir: LF line ends (sometimes CRLF). Everything IMAP
//! sees is in CRLF octets: sizes, section contents, partial offsets.
//!
//! - [`summarize`]: ENVELOPE, BODY and BODYSTRUCTURE as encoded IMAP (the summary the store
//!   caches at delivery), [`envelope_only`] from a header section alone;
//! - [`crlf_size`]: RFC822.SIZE;
//! - [`section`]: the octets of `BODY[section]<partial>` (RFC 3501 §6.4.5);
//! - [`matches`]: the SEARCH keys that look into a message (RFC 3501 §6.4.4).
//!
//! The structures follow Dovecot's (its parsers were the reference, and a unit test compares
//! with Dovecot's own output when it is installed), so that a Maildir shared with Dovecot, or
//! moved from it, shows clients the same parts, sizes and addresses. The differences are
//! listed in the README of the mailbox module.
//!
//! Modules: [`mod@crlf`] (CRLF sizes and windows), [`mod@encode`] (IMAP strings), [`lex`]
//! (RFC 5322 tokens), [`header`] (header fields), [`address`] (address lists), [`params`]
//! (Content-* fields, RFC 2231), [`envelope`], [`mime`] (the part tree), [`body`]
//! (BODYSTRUCTURE), [`mod@section`], [`search`].

mod address;
mod body;
mod crlf;
mod encode;
mod envelope;
mod header;
mod lex;
mod mime;
mod params;

pub use crlf::crlf_size;

/// A message's IMAP summary: each field is the encoded IMAP value (RFC 3501 §7.4.2) exactly
/// as it follows its item name in a FETCH response (`ENVELOPE (...)`), literals included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub envelope: Vec<u8>,
    /// BODY: the structure without extension data.
    pub body: Vec<u8>,
    /// BODYSTRUCTURE: with extension data (MD5, disposition, language, location).
    pub bodystructure: Vec<u8>,
}

/// The summary of `message` (LF or CRLF line ends). Never fails: a malformed message gets
/// the structure a MIME reader makes of it. Reads the message in place (no copy), once for
/// its structure and once per part for sizes.
pub fn summarize(message: &[u8]) -> Summary {
    let root = mime::parse(message);
    let mut envelope = Vec::new();
    envelope_of(message, &root).write(&mut envelope);
    let mut body = Vec::new();
    body::write(&mut body, message, &root, false);
    let mut bodystructure = Vec::new();
    body::write(&mut bodystructure, message, &root, true);
    Summary {
        envelope,
        body,
        bodystructure,
    }
}

/// The ENVELOPE of a message from its header section alone (the octets up to the empty
/// line; more is fine, it is not read).
pub fn envelope_only(header: &[u8]) -> Vec<u8> {
    let end = mime::header_end(header, 0);
    let mut e = envelope::Envelope::default();
    for field in header::fields(&header[..end]) {
        e.add(&field);
    }
    let mut out = Vec::new();
    e.write(&mut out);
    out
}

fn envelope_of<'a>(message: &'a [u8], part: &mime::Part) -> envelope::Envelope<'a> {
    let mut e = envelope::Envelope::default();
    for field in part.fields(message) {
        e.add(&field);
    }
    e
}
