//! The SEARCH keys that look into a message (RFC 3501 §6.4.4): BCC, CC, FROM, TO, SUBJECT,
//! HEADER, BODY, TEXT, SENTBEFORE, SENTON, SENTSINCE. Strings match as substrings, without
//! case, in decoded text: encoded words (RFC 2047) in headers, quoted-printable and base64
//! bodies, charsets converted to UTF-8 (mail-parser's decoders). As in Dovecot:
//!
//! - an address key compares with the header's addresses written back as `Name <a@b>`;
//! - an empty string matches every message that has the field;
//! - BODY looks into the text/* and message/* parts, TEXT into those and every header;
//! - a SENT* key takes the last Date: field, the date as written there (its own time zone);
//!   a message without one (or with one that does not parse) was sent on 1970-01-01.
//!
//! The keys on the fields a client searches most (SUBJECT, FROM, TO, CC, BCC, and HEADER
//! with those names) can be answered without the message: [`header_texts`] writes, once,
//! every such field's text as those keys compare it (decoded, lowercased), the store keeps
//! that beside the message's summary in `tambo-cache`, and [`matches_texts`] answers from
//! it. Both sides use [`field_text`], so the answers are the same by construction (and a
//! test compares them on every fixture).

use std::borrow::Cow;

use imap_codec::imap_types::core::AString;
use imap_codec::imap_types::datetime::NaiveDate;
use imap_codec::imap_types::search::SearchKey;
use mail_parser::HeaderValue;
use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;
use mail_parser::parsers::MessageStream;

use super::address;
use super::header::{self, Field};
use super::mime::{self, Kind, Part};
use super::params::MimeFields;

/// Whether `message` matches `key`: `Some` for the keys that look into the message, `None`
/// for the others (flags, sizes, sequence sets, UIDs, INTERNALDATE, and AND/OR/NOT, which
/// the caller combines). The string of a key is UTF-8 (CHARSET UTF-8) or US-ASCII.
pub fn matches(message: &[u8], key: &SearchKey<'_>) -> Option<bool> {
    let found = match key {
        SearchKey::Bcc(s) => header_has(message, "Bcc", s),
        SearchKey::Cc(s) => header_has(message, "Cc", s),
        SearchKey::From(s) => header_has(message, "From", s),
        SearchKey::To(s) => header_has(message, "To", s),
        SearchKey::Subject(s) => header_has(message, "Subject", s),
        SearchKey::Header(name, s) => {
            header_has(message, &String::from_utf8_lossy(name.as_ref()), s)
        }
        SearchKey::Body(s) => text_has(message, s, false),
        SearchKey::Text(s) => text_has(message, s, true),
        SearchKey::SentBefore(d) => sent(message) < epoch_day(d),
        SearchKey::SentOn(d) => sent(message) == epoch_day(d),
        SearchKey::SentSince(d) => sent(message) >= epoch_day(d),
        _ => return None,
    };
    Some(found)
}

/// The search string, folded for a comparison without case.
fn needle(s: &AString<'_>) -> String {
    String::from_utf8_lossy(s.as_ref()).to_lowercase()
}

fn header_of(message: &[u8]) -> &[u8] {
    &message[..mime::header_end(message, 0)]
}

/// A field called `name` whose decoded value holds `s` (any such field, for an empty `s`).
fn header_has(message: &[u8], name: &str, s: &AString<'_>) -> bool {
    let needle = needle(s);
    header::fields(header_of(message))
        .filter(|f| f.is(name))
        .any(|f| needle.is_empty() || field_text(&f).contains(&needle))
}

/// A field's value as a header key compares it: encoded words decoded, lowercased; an
/// address field's addresses written back as `Name <a@b>` first.
fn field_text(f: &Field<'_>) -> String {
    let is_address = ["From", "Sender", "Reply-To", "To", "Cc", "Bcc"]
        .iter()
        .any(|a| f.is(a));
    let value = match is_address {
        true => Cow::Owned(address::write(&address::parse(&f.value()))),
        false => f.value(),
    };
    decode_words(&value).to_lowercase()
}

/// The fields [`header_texts`] keeps, and the letter each is kept under.
const KEPT: [(&str, u8); 5] = [
    ("Subject", b'S'),
    ("From", b'F'),
    ("To", b'T'),
    ("Cc", b'C'),
    ("Bcc", b'B'),
];

/// The texts of every Subject, From, To, Cc and Bcc field of `message`, as the header keys
/// compare them, in order: per field its letter, the text's length in octets, a space, the
/// text, and a LF.
pub fn header_texts(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in header::fields(header_of(message)) {
        let Some(&(_, letter)) = KEPT.iter().find(|(name, _)| f.is(name)) else {
            continue;
        };
        let text = field_text(&f);
        out.push(letter);
        out.extend_from_slice(format!("{} ", text.len()).as_bytes());
        out.extend_from_slice(text.as_bytes());
        out.push(b'\n');
    }
    out
}

/// What [`matches`] answers for `key`, from the message's [`header_texts`]: `None` for
/// a key that needs the message (or texts that do not read back).
pub fn matches_texts(texts: &[u8], key: &SearchKey<'_>) -> Option<bool> {
    let (name, s): (&[u8], _) = match key {
        SearchKey::Bcc(s) => (b"Bcc", s),
        SearchKey::Cc(s) => (b"Cc", s),
        SearchKey::From(s) => (b"From", s),
        SearchKey::To(s) => (b"To", s),
        SearchKey::Subject(s) => (b"Subject", s),
        SearchKey::Header(name, s) => (name.as_ref(), s),
        _ => return None,
    };
    let &(_, letter) = KEPT
        .iter()
        .find(|(kept, _)| kept.as_bytes().eq_ignore_ascii_case(name))?;
    let needle = needle(s);
    let mut found = false;
    let mut rest = texts;
    while let Some((&tag, after)) = rest.split_first() {
        let space = memchr::memchr(b' ', after)?;
        let len: usize = std::str::from_utf8(&after[..space]).ok()?.parse().ok()?;
        let text = after.get(space + 1..space + 1 + len)?;
        if after.get(space + 1 + len) != Some(&b'\n') {
            return None;
        }
        rest = &after[space + 2 + len..];
        if tag == letter && !found {
            found = needle.is_empty() || std::str::from_utf8(text).ok()?.contains(&needle);
        }
    }
    Some(found)
}

/// `value` with its encoded words (RFC 2047) decoded and its whitespace runs made one space.
pub(super) fn decode_words(value: &[u8]) -> String {
    // mail-parser's reader wants the line end that ends a field.
    let mut line = Vec::with_capacity(value.len() + 1);
    line.extend_from_slice(value);
    line.push(b'\n');
    match MessageStream::new(&line).parse_unstructured() {
        HeaderValue::Text(text) => text.into_owned(),
        _ => String::new(),
    }
}

/// BODY (`headers` false) or TEXT (true), in the parts [`mime::parse`] finds (the parts
/// BODYSTRUCTURE shows).
fn text_has(message: &[u8], s: &AString<'_>, headers: bool) -> bool {
    let needle = needle(s);
    needle.is_empty() || part_has(message, &mime::parse(message), &needle, headers)
}

fn part_has(message: &[u8], part: &Part, needle: &str, headers: bool) -> bool {
    if headers && fields_have(&message[part.header.clone()], needle) {
        return true;
    }
    let is_message = part
        .mime
        .media_type()
        .is_some_and(|(t, _)| t.eq_ignore_ascii_case(b"message"));
    match part.kind {
        Kind::Multipart | Kind::Message => part
            .children
            .iter()
            .any(|c| part_has(message, c, needle, headers)),
        // Like Dovecot, text/* and message/* bodies only: a binary attachment could match
        // anything once decoded.
        Kind::Basic | Kind::Opaque if !is_message => false,
        Kind::Text | Kind::Basic | Kind::Opaque => {
            decoded_text(message, part).to_lowercase().contains(needle)
        }
    }
}

/// The body of a leaf part, its transfer encoding undone (RFC 2045 §6) and its charset
/// converted (UTF-8 when it has none, or one mail-parser does not know). A body that does
/// not decode is taken as it is. Like Dovecot's decoder, this reads Content-Type and
/// Content-Transfer-Encoding even without MIME-Version (BODYSTRUCTURE does not).
fn decoded_text(message: &[u8], part: &Part) -> String {
    let body = &message[part.body.clone()];
    let mut fields = MimeFields::default();
    for field in part.fields(message) {
        fields.add(&field);
    }
    let encoding = fields.encoding.as_deref().unwrap_or_default();
    let decoded = if encoding.eq_ignore_ascii_case(b"quoted-printable") {
        quoted_printable_decode(body)
    } else if encoding.eq_ignore_ascii_case(b"base64") {
        base64_decode(body)
    } else {
        None
    };
    let octets = decoded.as_deref().unwrap_or(body);
    match fields.param("charset").and_then(charset_decoder) {
        Some(decode) => decode(octets),
        None => String::from_utf8_lossy(octets).into_owned(),
    }
}

/// Whether a field of `header`, as `Name: decoded value`, holds `needle`.
fn fields_have(header: &[u8], needle: &str) -> bool {
    header::fields(header).any(|f: Field<'_>| {
        let text = format!(
            "{}: {}",
            String::from_utf8_lossy(f.name),
            decode_words(&f.value())
        );
        text.to_lowercase().contains(needle)
    })
}

/// The day of the last Date: field, as written there (its own time zone), in days since
/// 1970-01-01; as in Dovecot, day 0 when there is none or it does not parse.
fn sent(message: &[u8]) -> i64 {
    let Some(date) = header::fields(header_of(message))
        .filter(|f| f.is("Date"))
        .last()
    else {
        return 0;
    };
    let mut line = date.value().into_owned();
    line.push(b'\n');
    match MessageStream::new(&line).parse_date() {
        HeaderValue::DateTime(dt) if dt.is_valid() => {
            days_from_civil(i64::from(dt.year), i64::from(dt.month), i64::from(dt.day))
        }
        _ => 0,
    }
}

fn epoch_day(date: &NaiveDate) -> i64 {
    i64::from(date.as_ref().to_epoch_days())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        let cases = [
            ((1970, 1, 1), 0),
            ((1969, 12, 31), -1),
            ((2000, 3, 1), 11_017),
            ((2026, 12, 7), 20_794),
        ];
        for ((y, m, d), want) in cases {
            assert_eq!(days_from_civil(y, m, d), want, "{y}-{m}-{d}");
        }
    }
}
