//! Pure functions over one message's bytes, for IMAP (RFC 3501); no I/O.
//!
//! A message comes as stored in the Maildir: LF line ends (sometimes CRLF). Everything IMAP
//! sees is in CRLF octets: sizes, section contents, partial offsets.
//!
//! - [`summarize`] makes ENVELOPE, BODY and BODYSTRUCTURE as encoded IMAP (the summary the
//!   store caches at delivery), [`envelope_only`] the ENVELOPE from a header section alone;
//! - [`crlf_size`] gives RFC822.SIZE;
//! - [`section`] gives the octets of `BODY[section]<partial>` (RFC 3501 §6.4.5);
//! - [`matches`] answers the SEARCH keys that look into a message (RFC 3501 §6.4.4), and
//!   [`matches_texts`] those on the most searched fields from what [`header_texts`] kept.
//!
//! The structures follow Dovecot 2.3's (its parsers were the reference), so that a Maildir
//! shared with Dovecot, or moved from it, shows clients the same parts, sizes, addresses and
//! search results. A unit test (`dovecot.rs`) runs Dovecot's IMAP server on the fixtures of
//! `testdata/` when it is installed and compares every value. What differs, on purpose:
//!
//! - strings are quoted whenever RFC 3501 allows it, literals only for 8-bit, CR or LF
//!   (Dovecot also uses literals for a subject or name it had to tidy, or with more than four
//!   `"` and `\`): the values are the same, their encoding not always;
//! - a Content-Type field that does not parse makes a part text/plain; charset=us-ascii
//!   (RFC 2045 §5.2), where Dovecot shows `("" "" NIL ...)` or `("text" "" ...)`;
//! - `HEADER.FIELDS` of a message inside a message/rfc822 part whose header a boundary line
//!   cut short stops at that line (Dovecot reads on to the next empty line);
//! - SEARCH folds case with Unicode lowercase, not Dovecot's i;unicode-casemap, and writes
//!   display names back unquoted before an address key compares.
//!
//! Modules: `crlf` (CRLF sizes and windows), `encode` (IMAP strings), `lex` (RFC 5322
//! tokens), `header` (header fields), `address` (address lists), `params` (Content-*
//! fields, RFC 2231), `envelope`, `mime` (the part tree), `body` (BODYSTRUCTURE),
//! `section`, `search`, `sortkeys` (SORT and THREAD keys, RFC 5256).

mod address;
mod body;
mod crlf;
mod encode;
mod envelope;
mod header;
mod lex;
mod mime;
mod params;
mod search;
mod section;
mod sortkeys;

#[cfg(test)]
mod dovecot;
#[cfg(test)]
mod tests;

pub use crlf::crlf_size;
pub use search::{header_texts, matches, matches_texts};
pub use section::section;
pub use sortkeys::{SortKeys, base_subject, read as read_sort_keys, sort_texts};

/// A message's IMAP summary: each field is the encoded IMAP value (RFC 3501 §7.4.2) exactly
/// as it follows its item name in a FETCH response (`ENVELOPE (...)`), literals included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub envelope: Vec<u8>,
    /// BODY: the structure without extension data.
    pub body: Vec<u8>,
    /// BODYSTRUCTURE: with extension data (MD5, disposition, language, location).
    pub bodystructure: Vec<u8>,
    /// Not IMAP: the header fields SEARCH compares most, as [`header_texts`] writes them,
    /// then what SORT and THREAD compare, as [`sort_texts`] writes it.
    pub search: Vec<u8>,
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
        search: {
            let mut texts = header_texts(message);
            texts.extend_from_slice(&sort_texts(message));
            texts
        },
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
