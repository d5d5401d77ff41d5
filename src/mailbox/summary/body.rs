//! BODY and BODYSTRUCTURE (RFC 3501 §7.4.2, `body` in §9), written as Dovecot writes them
//! (`imap-bodystructure.c`): type and subtype as the sender wrote them, text parts with a
//! charset (us-ascii when none was given), sizes in CRLF octets, line counts for text and
//! message/rfc822 parts, and in BODYSTRUCTURE the extension data: MD5, disposition, language
//! and location (and the parameters of multiparts).

use super::crlf::{crlf_size, line_count};
use super::encode;
use super::envelope::Envelope;
use super::mime::{Kind, Part};
use super::params::{MimeFields, Params};

/// What a multipart without parts shows in their place (RFC 3501 needs one).
const EMPTY_BODY: &[u8] = b"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0";
const EMPTY_EXTENSION: &[u8] = b" NIL NIL NIL NIL";

/// Appends `part` parenthesised, as it follows `BODY` (`extended` false) or `BODYSTRUCTURE`
/// (`extended` true) in a FETCH response.
pub fn write(out: &mut Vec<u8>, message: &[u8], part: &Part, extended: bool) {
    out.push(b'(');
    if part.kind == Kind::Multipart {
        multipart(out, message, part, extended);
    } else {
        single(out, message, part, extended);
    }
    out.push(b')');
}

fn multipart(out: &mut Vec<u8>, message: &[u8], part: &Part, extended: bool) {
    if part.children.is_empty() {
        out.extend_from_slice(EMPTY_BODY);
        if extended {
            out.extend_from_slice(EMPTY_EXTENSION);
        }
        out.push(b')');
    }
    for child in &part.children {
        write(out, message, child, extended);
    }
    out.push(b' ');
    let subtype = part.mime.media_type().map_or(&b"mixed"[..], |(_, s)| s);
    encode::string(out, subtype);
    if extended {
        out.push(b' ');
        params(out, &part.mime.params, false);
        common_extension(out, &part.mime);
    }
}

fn single(out: &mut Vec<u8>, message: &[u8], part: &Part, extended: bool) {
    let mime = &part.mime;
    let text = part.kind == Kind::Text;
    match (part.kind, mime.media_type()) {
        (Kind::Message, _) => out.extend_from_slice(b"\"message\" \"rfc822\""),
        (Kind::Opaque, _) => out.extend_from_slice(b"\"application\" \"octet-stream\""),
        (_, Some((t, sub))) => {
            encode::string(out, t);
            out.push(b' ');
            encode::string(out, sub);
        }
        (_, None) => out.extend_from_slice(b"\"text\" \"plain\""),
    }
    out.push(b' ');
    params(out, &mime.params, text);
    out.push(b' ');
    encode::nstring_nolf(out, mime.id.as_deref());
    out.push(b' ');
    encode::nstring_nolf(out, mime.description.as_deref());
    out.push(b' ');
    match &mime.encoding {
        Some(encoding) => encode::string(out, encoding),
        None => out.extend_from_slice(b"\"7bit\""),
    }
    let body = &message[part.body.clone()];
    out.extend_from_slice(format!(" {}", crlf_size(body)).as_bytes());
    if text {
        out.extend_from_slice(format!(" {}", line_count(body)).as_bytes());
    } else if let (Kind::Message, Some(inner)) = (part.kind, part.children.first()) {
        // The message inside: its envelope, its body, and the lines of the whole part.
        out.push(b' ');
        let mut envelope = Envelope::default();
        for field in inner.fields(message) {
            envelope.add(&field);
        }
        envelope.write(out);
        out.push(b' ');
        write(out, message, inner, extended);
        out.extend_from_slice(format!(" {}", line_count(body)).as_bytes());
    }
    if extended {
        out.push(b' ');
        encode::nstring_nolf(out, mime.md5.as_deref());
        common_extension(out, mime);
    }
}

/// `body-fld-param`: `NIL` or `("name" "value" ...)`; text parts always have a charset.
fn params(out: &mut Vec<u8>, params: &Params, default_charset: bool) {
    if params.is_empty() && !default_charset {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (name, value)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        encode::string(out, name);
        out.push(b' ');
        encode::string(out, value);
    }
    let has_charset = params
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case(b"charset"));
    if default_charset && !has_charset {
        if !params.is_empty() {
            out.push(b' ');
        }
        out.extend_from_slice(b"\"charset\" \"us-ascii\"");
    }
    out.push(b')');
}

/// Disposition, language and location (RFC 3501 `body-ext-1part` after the MD5, and
/// `body-ext-mpart` after the parameters).
fn common_extension(out: &mut Vec<u8>, mime: &MimeFields) {
    out.push(b' ');
    match &mime.disposition {
        None => out.extend_from_slice(b"NIL"),
        Some((disposition, disposition_params)) => {
            out.push(b'(');
            encode::string(out, disposition);
            out.push(b' ');
            params(out, disposition_params, false);
            out.push(b')');
        }
    }
    out.push(b' ');
    if mime.language.is_empty() {
        out.extend_from_slice(b"NIL");
    } else {
        out.push(b'(');
        for (i, tag) in mime.language.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            encode::string(out, tag);
        }
        out.push(b')');
    }
    out.push(b' ');
    encode::nstring_nolf(out, mime.location.as_deref());
}
