//! DMARC-safe forwarding (SPEC §8 `forward_from_rewrite`): the header section of a forwarded
//! copy with its From: replaced by the forwarding address, as hosted forwarders and mailing
//! lists do (RFC 7960 §4.1.3.1: "From: header rewriting").
//!
//! - `From:` becomes `"<original display name, or address> via <domain>" <forwarder>`,
//!   written by mail-builder (RFC 2047 encoded words for a non-ASCII name, folded);
//! - `Reply-To:` gets the original From: value, unless the message has a Reply-To: already
//!   (replies still reach the author);
//! - `X-Original-From:` keeps the original value for the reader and for filters.
//!
//! Every other field stays as it was, in its place and byte for byte; the body is not
//! touched. Pure: no I/O.

use mail_builder::headers::Header;
use mail_builder::headers::address::Address;

/// The header section (up to and including its empty line) with From: rewritten to
/// `forwarder` of `domain`; `None` when it has no From: field, or several (RFC 7489 §6.6.1:
/// DMARC then did not apply, and there is nothing to make safe).
pub fn rewrite(header: &[u8], forwarder: &str, domain: &str) -> Option<Vec<u8>> {
    let fields = fields(header);
    let mut froms = fields.iter().filter(|f| named(f, b"from"));
    let from = *froms.next()?;
    if froms.next().is_some() {
        return None;
    }
    let has_reply_to = fields.iter().any(|f| named(f, b"reply-to"));
    let value = field_value(from);
    let display =
        display_name(from).unwrap_or_else(|| String::from_utf8_lossy(value).trim().to_string());
    let mut out = Vec::with_capacity(header.len() + 2 * value.len() + 128);
    for field in &fields {
        if !std::ptr::eq(*field, from) {
            out.extend_from_slice(field);
            continue;
        }
        out.extend_from_slice(b"From: ");
        Address::new_address(Some(format!("{display} via {domain}")), forwarder)
            .write_header(&mut out, "From: ".len());
        if !has_reply_to {
            out.extend_from_slice(b"Reply-To:");
            out.extend_from_slice(value);
            end_line(&mut out);
        }
        out.extend_from_slice(b"X-Original-From:");
        out.extend_from_slice(value);
        end_line(&mut out);
    }
    out.extend_from_slice(&header[fields.iter().map(|f| f.len()).sum::<usize>()..]);
    Some(out)
}

/// The header fields, each with its continuation lines and line ends; what follows them
/// (the empty line) is left out.
fn fields(header: &[u8]) -> Vec<&[u8]> {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    while pos < header.len() {
        let end = header[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(header.len(), |i| pos + i + 1);
        let line = &header[pos..end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        let continues = matches!(line.first(), Some(b' ' | b'\t'));
        if !continues && pos > start {
            fields.push(&header[start..pos]);
            start = pos;
        }
        pos = end;
    }
    if pos > start {
        fields.push(&header[start..pos]);
    }
    fields
}

fn named(field: &[u8], name: &[u8]) -> bool {
    field
        .iter()
        .position(|&b| b == b':')
        .is_some_and(|colon| field[..colon].trim_ascii_end().eq_ignore_ascii_case(name))
}

/// The raw value after the colon, folding kept, without its final line end.
fn field_value(field: &[u8]) -> &[u8] {
    let colon = field.iter().position(|&b| b == b':').unwrap_or(field.len());
    let value = &field[(colon + 1).min(field.len())..];
    value
        .strip_suffix(b"\r\n")
        .or_else(|| value.strip_suffix(b"\n"))
        .unwrap_or(value)
}

/// The display name of the (first) mailbox of a From: field, decoded (RFC 2047); its
/// address when it has none.
fn display_name(field: &[u8]) -> Option<String> {
    let mut message = field.to_vec();
    message.extend_from_slice(b"\r\n");
    let parsed = mail_parser::MessageParser::new().parse_headers(&message)?;
    let addr = parsed.from()?.first()?;
    let name = addr.name().map(str::trim).filter(|n| !n.is_empty());
    name.or(addr.address()).map(str::to_string)
}

fn end_line(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(header: &str) -> String {
        let out = rewrite(header.as_bytes(), "fwd@example.test", "example.test").unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn from_becomes_the_forwarders_and_the_author_stays_reachable() {
        let got = run(
            "Received: from x\r\n\tby y\r\nFrom: Bob Smith <bob@sender.test>\r\n\
                       Subject: hi\r\n\r\n",
        );
        assert_eq!(
            got,
            "Received: from x\r\n\tby y\r\n\
             From: \"Bob Smith via example.test\" <fwd@example.test>\r\n\
             Reply-To: Bob Smith <bob@sender.test>\r\n\
             X-Original-From: Bob Smith <bob@sender.test>\r\n\
             Subject: hi\r\n\r\n"
        );
    }

    #[test]
    fn an_existing_reply_to_is_kept_and_a_bare_address_is_the_name() {
        let got = run("reply-to: list@sender.test\r\nFROM:bob@sender.test\r\n\r\n");
        assert_eq!(
            got,
            "reply-to: list@sender.test\r\n\
             From: \"bob@sender.test via example.test\" <fwd@example.test>\r\n\
             X-Original-From:bob@sender.test\r\n\r\n"
        );
    }

    #[test]
    fn encoded_and_folded_names() {
        let got = run("From: =?utf-8?q?Jos=C3=A9?=\r\n <jose@sender.test>\r\nTo: x@y.test\r\n\r\n");
        let from = got.lines().next().unwrap();
        assert!(from.starts_with("From: =?utf-8?"), "{got}");
        let parsed = mail_parser::MessageParser::new()
            .parse_headers(got.as_bytes())
            .unwrap();
        let addr = parsed.from().unwrap().first().unwrap();
        assert_eq!(addr.name(), Some("José via example.test"));
        assert_eq!(addr.address(), Some("fwd@example.test"));
        assert!(got.contains("X-Original-From: =?utf-8?q?Jos=C3=A9?=\r\n <jose@sender.test>\r\n"));
        assert!(got.ends_with("To: x@y.test\r\n\r\n"));
        // A quote or backslash in the name stays inside the quoted string.
        let got = run("From: \"Evil\\\" <x@evil.test>\" <bob@sender.test>\r\n\r\n");
        let parsed = mail_parser::MessageParser::new()
            .parse_headers(got.as_bytes())
            .unwrap();
        let addr = parsed.from().unwrap().first().unwrap();
        assert_eq!(addr.address(), Some("fwd@example.test"), "{got}");
    }

    #[test]
    fn no_or_several_from_fields_are_left_alone() {
        let header = b"Subject: x\r\n\r\n";
        assert_eq!(rewrite(header, "f@e.test", "e.test"), None);
        let header = b"From: a@b.test\r\nFrom: c@d.test\r\n\r\n";
        assert_eq!(rewrite(header, "f@e.test", "e.test"), None);
    }
}
