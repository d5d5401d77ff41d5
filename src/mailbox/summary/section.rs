//! `BODY[section]<partial>` (RFC 3501 §6.4.5): the octets of a section of a message, in
//! CRLF, cut to the partial window. Part numbers follow Dovecot's reading of the RFC:
//!
//! - part `1` of a message that is not multipart is its body; a number past the parts, or
//!   a sub-part of a leaf, is a missing part and reads as empty;
//! - `HEADER`, `HEADER.FIELDS[.NOT]` and `TEXT` after a part number need a message/rfc822
//!   part (else empty); `MIME` is the part's own header (for a message/rfc822 part too);
//! - `HEADER` is the header section as stored (with its empty line when it has one); the
//!   `HEADER.FIELDS` subset of the message itself ends with a line end even when the header
//!   has no empty line, other subsets end as the header does;
//! - the partial window is counted in CRLF octets, after the subset is made.

use std::num::NonZeroU32;

use imap_codec::imap_types::core::{AString, Vec1};
use imap_codec::imap_types::fetch::{Part as PartNumber, Section};

use super::crlf::append_window;
use super::header;
use super::mime::{self, Kind, Part};

/// The octets to send for `BODY[section]<partial>` of `message` (`section` `None` for
/// `BODY[]`; `partial` as imap-codec parses `<start.length>`). A part that does not exist
/// reads as empty, as in Dovecot.
pub fn section(
    message: &[u8],
    section: Option<&Section<'_>>,
    partial: Option<(u32, NonZeroU32)>,
) -> Vec<u8> {
    let (start, len) = partial.map_or((0, u64::MAX), |(s, l)| (u64::from(s), u64::from(l.get())));
    let mut out = Vec::new();
    let Some(section) = section else {
        append_window(&mut out, message, start, len);
        return out;
    };
    let Some(text) = octets(message, section) else {
        return out;
    };
    match text {
        Octets::Slice(slice) => append_window(&mut out, slice, start, len),
        Octets::Owned(owned) => append_window(&mut out, &owned, start, len),
    }
    out
}

enum Octets<'a> {
    Slice(&'a [u8]),
    Owned(Vec<u8>),
}

/// The stored octets of `section`, `None` for a missing part.
fn octets<'a>(message: &'a [u8], section: &Section<'_>) -> Option<Octets<'a>> {
    // Sections of the message itself need only its header's end, not its MIME structure.
    let header_end = || mime::header_end(message, 0);
    let slice = |r: std::ops::Range<usize>| Some(Octets::Slice(&message[r]));
    match section {
        Section::Header(None) => slice(0..header_end()),
        Section::Text(None) => slice(header_end()..message.len()),
        Section::HeaderFields(None, names) => {
            let header = &message[..header_end()];
            Some(Octets::Owned(subset(header, names, true, Eoh::Always)))
        }
        Section::HeaderFieldsNot(None, names) => {
            let header = &message[..header_end()];
            Some(Octets::Owned(subset(header, names, false, Eoh::AsStored)))
        }
        Section::Part(number) => {
            let root = mime::parse(message);
            let body = find(&root, number)?.body.clone();
            slice(body)
        }
        Section::Mime(number) => {
            let root = mime::parse(message);
            let header = find(&root, number)?.header.clone();
            slice(header)
        }
        Section::Header(Some(number)) => {
            let root = mime::parse(message);
            slice(inner_message(&root, number)?.header.clone())
        }
        Section::Text(Some(number)) => {
            let root = mime::parse(message);
            slice(inner_message(&root, number)?.body.clone())
        }
        Section::HeaderFields(Some(number), names)
        | Section::HeaderFieldsNot(Some(number), names) => {
            let root = mime::parse(message);
            let inner = inner_message(&root, number)?;
            let include = matches!(section, Section::HeaderFields(..));
            Some(Octets::Owned(subset(
                &message[inner.header.clone()],
                names,
                include,
                Eoh::AsStored,
            )))
        }
    }
}

/// The part at `number` (RFC 3501 §6.4.5 part numbers).
fn find<'p>(root: &'p Part, number: &PartNumber) -> Option<&'p Part> {
    let path = number.0.as_ref();
    let mut part = root;
    for (i, n) in path.iter().enumerate() {
        let deeper = i + 1 < path.len();
        if part.kind == Kind::Multipart {
            part = part.children.get(n.get() as usize - 1)?;
        } else if n.get() != 1 || (deeper && part.kind != Kind::Message) {
            // A leaf has only part 1: itself.
            return None;
        }
        if deeper && part.kind == Kind::Message {
            part = part.children.first()?;
        }
    }
    Some(part)
}

/// The message inside the message/rfc822 part at `number`.
fn inner_message<'p>(root: &'p Part, number: &PartNumber) -> Option<&'p Part> {
    let part = find(root, number)?;
    match part.kind {
        Kind::Message => part.children.first(),
        _ => None,
    }
}

/// The fields of `header` whose name is (`include`) or is not in `names`, compared without
/// case, as stored; then, with `Eoh::Always`, a line end, else the header's empty line if it
/// has one. (Dovecot builds a message's HEADER.FIELDS from its cache and ends it with a
/// CRLF, and filters the stored header for the other subsets.)
fn subset(header: &[u8], names: &Vec1<AString<'_>>, include: bool, eoh: Eoh) -> Vec<u8> {
    let names: Vec<&[u8]> = names.as_ref().iter().map(|n| n.as_ref()).collect();
    let mut out = Vec::new();
    for field in header::fields(header) {
        let listed = names.iter().any(|n| field.name.eq_ignore_ascii_case(n));
        if listed == include {
            out.extend_from_slice(field.raw);
        }
    }
    match eoh {
        Eoh::Always => out.push(b'\n'),
        Eoh::AsStored => {
            let has_empty_line = header == b"\n"
                || header == b"\r\n"
                || header.ends_with(b"\n\n")
                || header.ends_with(b"\n\r\n");
            if has_empty_line {
                out.push(b'\n');
            }
        }
    }
    out
}

/// How a header subset ends.
#[derive(Clone, Copy)]
enum Eoh {
    Always,
    AsStored,
}
