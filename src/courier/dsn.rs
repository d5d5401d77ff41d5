//! Delivery status notifications (RFC 3464) for permanent failures.
//!
//! A bounce is `multipart/report; report-type=delivery-status` (RFC 6522) with three parts: a
//! human explanation, the `message/delivery-status` fields, and the original message's header
//! section as `text/rfc822-headers` (never its body: it may be large, and it is the sender's
//! own anyway). It is sent with the null reverse-path by the caller, and never in reply to a
//! message whose reverse-path is null ([`should_bounce`]).
//!
//! Written by hand rather than with mail-builder: mail-builder chooses transfer encodings
//! itself (quoted-printable or base64 unless every part carries a raw
//! `Content-Transfer-Encoding`), wants every part in memory as one value, and picks its own
//! boundary, so we could not check the boundary against the copied headers. What remains to
//! write is a dozen fixed lines.
//!
//! Every value that comes from outside (addresses, reasons with remote replies, host names) is
//! made one line before it is written: control characters, CR and LF included, become
//! spaces, so nothing can start a header of its own.

use crate::message::StoredMessage;
use crate::message::date::rfc5322_date;
use std::io::{self, BufRead, BufReader, Read, Write};
use time::OffsetDateTime;

/// Most of the original header section copied into the report (as chasquid's cap on the
/// original message).
const MAX_ORIGINAL_HEADERS: u64 = 256 * 1024;
/// Longest value written on one line; RFC 5322 §2.1.1 allows 998 octets per line.
const MAX_VALUE: usize = 900;

/// One recipient that will not get the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// Where delivery was attempted (after aliases).
    pub recipient: String,
    /// The address the client gave at RCPT.
    pub original: String,
    /// Why; includes the remote reply when there was one (`550 5.1.1 no such user`).
    pub reason: String,
}

/// RFC 5321 §6.1 / RFC 3464 §1: never bounce a bounce, i.e. a message with a null
/// reverse-path. chasquid checks only that (`item.From != "<>"`); so does tambo, so a
/// sender like `MAILER-DAEMON@` or `postmaster@`, which is a real mailbox, still hears of
/// its failures.
pub fn should_bounce(sender: &str) -> bool {
    !(sender.is_empty() || sender == "<>")
}

/// The whole DSN for `failed` recipients of `original`, with a random boundary.
pub fn build(
    reporting_mta: &str,
    original: &StoredMessage,
    failed: &[Failed],
    now: OffsetDateTime,
) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    write(
        &mut out,
        reporting_mta,
        original,
        failed,
        now,
        rand::random(),
    )?;
    Ok(out)
}

/// Writes the DSN to `w`. `boundary_seed` makes the boundary and Message-ID (tests pass a
/// fixed one). Reads only the original's header section from the queue file.
pub fn write(
    w: &mut impl Write,
    reporting_mta: &str,
    original: &StoredMessage,
    failed: &[Failed],
    now: OffsetDateTime,
    boundary_seed: u64,
) -> io::Result<()> {
    if !should_bounce(&original.envelope.from) {
        let msg = "no DSN for a message with a null sender";
        return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
    }
    let host = one_line(reporting_mta).replace(' ', "");
    let headers = original_headers(original)?;
    let human = explanation(&host, failed);
    let status = delivery_status(&host, original, failed);
    let boundary = pick_boundary(
        boundary_seed,
        &[&headers, human.as_bytes(), status.as_bytes()],
    );
    let eight_bit = !(headers.is_ascii() && human.is_ascii() && status.is_ascii());
    let top = top_headers(&host, original, now, boundary_seed, &boundary, eight_bit);
    w.write_all(top.as_bytes())?;
    write_part(w, &boundary, &text_part_headers(&human), human.as_bytes())?;
    write_part(
        w,
        &boundary,
        &content_type("message/delivery-status", &status),
        status.as_bytes(),
    )?;
    write_part(
        w,
        &boundary,
        &content_type("text/rfc822-headers", &headers),
        &headers,
    )?;
    write!(w, "--{boundary}--\r\n")
}

/// Removes line breaks and other control characters and bounds the length: safe inside a
/// header field or a line of text.
fn one_line(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > MAX_VALUE {
        let mut end = MAX_VALUE;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out.trim().to_string()
}

fn top_headers(
    host: &str,
    original: &StoredMessage,
    now: OffsetDateTime,
    seed: u64,
    boundary: &str,
    eight_bit: bool,
) -> String {
    let sender = one_line(&original.envelope.from);
    let id = original.id.as_str();
    let mut h = String::new();
    h.push_str(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n"
    ));
    h.push_str(&format!("To: <{sender}>\r\n"));
    h.push_str("Subject: Undelivered Mail Returned to Sender\r\n");
    h.push_str(&format!("Date: {}\r\n", rfc5322_date(now)));
    h.push_str(&format!("Message-ID: <dsn.{id}.{seed:016x}@{host}>\r\n"));
    // RFC 3834 §5: a reply generated automatically; auto-responders must not answer it.
    h.push_str("Auto-Submitted: auto-replied\r\n");
    h.push_str("MIME-Version: 1.0\r\n");
    // RFC 6522 §3: multipart/report; RFC 3464 §2: report-type=delivery-status.
    h.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n"
    ));
    if eight_bit {
        h.push_str("Content-Transfer-Encoding: 8bit\r\n");
    }
    h.push_str("\r\nThis is a MIME-encapsulated delivery status notification.\r\n\r\n");
    h
}

fn write_part(w: &mut impl Write, boundary: &str, headers: &str, body: &[u8]) -> io::Result<()> {
    write!(w, "--{boundary}\r\n{headers}\r\n")?;
    w.write_all(body)?;
    // The CRLF before the next delimiter belongs to the delimiter (RFC 2046 §5.1.1).
    w.write_all(b"\r\n")
}

fn text_part_headers(text: &str) -> String {
    let mut h = String::from("Content-Type: text/plain; charset=utf-8\r\n");
    h.push_str("Content-Description: Notification\r\n");
    h.push_str(&transfer_encoding(text.as_bytes()));
    h
}

fn content_type(ctype: &str, body: impl AsRef<[u8]>) -> String {
    format!(
        "Content-Type: {ctype}\r\n{}",
        transfer_encoding(body.as_ref())
    )
}

/// Nothing is encoded: 7bit when it is ASCII, else 8bit (RFC 2045 §6.2: identity encodings).
fn transfer_encoding(body: &[u8]) -> String {
    let cte = if body.is_ascii() { "7bit" } else { "8bit" };
    format!("Content-Transfer-Encoding: {cte}\r\n")
}

/// A boundary that occurs in none of the parts (RFC 2046 §5.1.1). `=_` cannot appear in
/// quoted-printable text, and the seed is random, so the first try nearly always fits.
fn pick_boundary(seed: u64, parts: &[&[u8]]) -> String {
    (0u32..)
        .map(|n| format!("=_tambo_{seed:016x}_{n}"))
        .find(|b| !parts.iter().any(|p| contains(p, b.as_bytes())))
        // The range is endless and each part finite: some boundary is always free.
        .unwrap_or_default()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn explanation(host: &str, failed: &[Failed]) -> String {
    let mut t = format!("This is the mail delivery system at {host}.\r\n\r\n");
    t.push_str("Your message could not be delivered to the following recipients.\r\n");
    t.push_str("This is a permanent error; delivery will not be attempted again.\r\n\r\n");
    for f in failed {
        t.push_str(&format!(
            "<{}>:\r\n    {}\r\n\r\n",
            one_line(&f.recipient),
            one_line(&f.reason)
        ));
    }
    t.push_str("The delivery report and the headers of your message are attached.\r\n");
    t
}

/// The `message/delivery-status` body (RFC 3464 §2.2, §2.3): per-message fields, then one
/// block per recipient, blocks separated by a blank line.
fn delivery_status(host: &str, original: &StoredMessage, failed: &[Failed]) -> String {
    let arrival = OffsetDateTime::from_unix_timestamp(original.envelope.received_at as i64)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let mut s = format!("Reporting-MTA: dns; {host}\r\n");
    // Extension field (RFC 3464 §2.4), as Postfix's X-Postfix-Queue-ID: ties it to our log.
    s.push_str(&format!("X-Tambo-Queue-ID: {}\r\n", original.id));
    s.push_str(&format!("Arrival-Date: {}\r\n", rfc5322_date(arrival)));
    for f in failed {
        s.push_str("\r\n");
        s.push_str(&recipient_fields(f));
    }
    s
}

/// RFC 3464 §2.3, fields in the order of its grammar.
fn recipient_fields(f: &Failed) -> String {
    let original = one_line(&f.original);
    // A pipe alias is no address: the recipient the sender knows is the original one.
    let recipient = match one_line(&f.recipient) {
        r if r.contains('@') && !r.starts_with('|') => r,
        _ => original.clone(),
    };
    let reply = SmtpReply::find(&f.reason);
    let mut s = String::new();
    if !original.is_empty() && !original.eq_ignore_ascii_case(&recipient) {
        s.push_str(&format!("Original-Recipient: rfc822; {original}\r\n"));
    }
    s.push_str(&format!("Final-Recipient: rfc822; {recipient}\r\n"));
    s.push_str("Action: failed\r\n");
    s.push_str(&format!("Status: {}\r\n", status_code(reply.as_ref())));
    if let Some(remote) = reply.as_ref().and_then(|r| r.remote) {
        s.push_str(&format!("Remote-MTA: dns; {}\r\n", one_line(remote)));
    }
    if let Some(reply) = &reply {
        let text = one_line(reply.text);
        s.push_str(&format!("Diagnostic-Code: smtp; {text}\r\n"));
    }
    s
}

/// RFC 3464 §2.3.4: the enhanced code (RFC 3463) of the reply, in class 5 since the action is
/// "failed" (a message that expired after 4xx replies failed permanently; the subject and
/// detail keep their meaning across classes, RFC 3463 §3); 5.0.0 when there is none.
fn status_code(reply: Option<&SmtpReply<'_>>) -> String {
    match reply.and_then(|r| r.enhanced) {
        Some((_, subject, detail)) => format!("5.{subject}.{detail}"),
        None => "5.0.0".to_string(),
    }
}

/// An SMTP reply quoted inside a reason. Reasons from the SMTP client read
/// `mx.example[192.0.2.1]: 550 5.1.1 no such user (at RCPT TO)`, maybe after
/// `gave up after …: `; others may hold a bare reply.
#[derive(Debug, PartialEq, Eq)]
struct SmtpReply<'a> {
    /// From the reply code to the end, without the client's `(at STAGE)` note.
    text: &'a str,
    enhanced: Option<(u16, u16, u16)>,
    /// The host name just before the reply (`mx.example` of `mx.example[192.0.2.1]: `).
    remote: Option<&'a str>,
}

impl<'a> SmtpReply<'a> {
    /// The first `[45]xy` code standing alone (not inside a number or a word) followed by a
    /// space, `-` or the end (RFC 5321 §4.2).
    fn find(reason: &'a str) -> Option<SmtpReply<'a>> {
        let bytes = reason.as_bytes();
        let at = (0..bytes.len()).find(|&i| {
            let before_ok =
                i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'.');
            let code_ok = bytes.get(i..i + 3).is_some_and(|code| {
                matches!(code[0], b'4' | b'5') && code[1..].iter().all(u8::is_ascii_digit)
            });
            let after_ok = matches!(bytes.get(i + 3), None | Some(b' ' | b'-'));
            before_ok && code_ok && after_ok
        })?;
        let text = &reason[at..];
        Some(SmtpReply {
            text: strip_stage_note(text),
            enhanced: text.get(4..).and_then(enhanced_code),
            remote: remote_host(&reason[..at]),
        })
    }
}

/// Drops the ` (at RCPT TO)` the SMTP client appends: it is ours, not the server's text.
fn strip_stage_note(text: &str) -> &str {
    match text.rfind(" (at ") {
        Some(i) if text.ends_with(')') => &text[..i],
        _ => text,
    }
}

/// `…: mx.example[192.0.2.1]: ` → `mx.example`: the last word before the reply, when it
/// looks like a host name (has a dot or an address in brackets).
fn remote_host(before: &str) -> Option<&str> {
    let word = before.strip_suffix(": ")?.rsplit(' ').next()?;
    let (name, bracketed) = match word.split_once('[') {
        Some((name, addr)) => (name, addr.ends_with(']')),
        None => (word, false),
    };
    let hostlike = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    (hostlike && (bracketed || name.contains('.'))).then_some(name)
}

/// RFC 3463 §2: `class.subject.detail` at the start of `s`, class 2, 4 or 5, subject up to 3
/// digits, detail up to 3 digits, then a space or the end.
fn enhanced_code(s: &str) -> Option<(u16, u16, u16)> {
    let token = s.split(' ').next()?;
    let mut fields = token.split('.');
    let mut next = |max: usize| -> Option<u16> {
        let f = fields.next()?;
        let ok = !f.is_empty() && f.len() <= max && f.bytes().all(|b| b.is_ascii_digit());
        ok.then(|| f.parse().ok()).flatten()
    };
    let code = (next(1)?, next(3)?, next(3)?);
    (fields.next().is_none() && matches!(code.0, 2 | 4 | 5)).then_some(code)
}

/// The original header section (up to the first empty line, at most
/// [`MAX_ORIGINAL_HEADERS`]), with CRLF line ends; a line the cap cuts is left out.
fn original_headers(item: &StoredMessage) -> io::Result<Vec<u8>> {
    let data = item.open_data()?.take(MAX_ORIGINAL_HEADERS);
    let mut reader = BufReader::new(data);
    let mut out = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let complete = line.ends_with(b"\n");
        let content = strip_line_end(&line);
        let capped = reader.get_ref().limit() == 0;
        if content.is_empty() || (!complete && capped) {
            break;
        }
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
    }
    Ok(out)
}

fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::courier::command::tests::{envelope, item_with_envelope};
    use mail_parser::{MessageParser, MimeHeaders};
    use time::macros::datetime;

    const ORIGINAL: &[u8] = b"From: Alice <alice@example.com>\r\nTo: bob@remote.example\r\n\
Subject: Hello there\r\nMessage-ID: <orig@example.com>\r\n\r\nSECRET BODY TEXT\r\n";
    const NOW: OffsetDateTime = datetime!(2024-03-05 10:20:30 UTC);
    const SEED: u64 = 0x0123_4567_89ab_cdef;

    fn item(data: &[u8], from: &str) -> (tempfile::TempDir, StoredMessage) {
        item_with_envelope(data, envelope(from, Vec::new()))
    }

    fn failed(recipient: &str, original: &str, reason: &str) -> Failed {
        Failed {
            recipient: recipient.into(),
            original: original.into(),
            reason: reason.into(),
        }
    }

    fn two_failures() -> Vec<Failed> {
        vec![
            failed(
                "bob@remote.example",
                "bob@remote.example",
                "mx.remote.example[192.0.2.7]: 550 5.1.1 <bob@remote.example>: no such user (at RCPT TO)",
            ),
            failed(
                "carol@elsewhere.example",
                "info@example.com",
                "gave up after 72000s: connection refused",
            ),
        ]
    }

    fn dsn(data: &[u8], failures: &[Failed]) -> Vec<u8> {
        let (_tmp, item) = item(data, "alice@example.com");
        let mut out = Vec::new();
        write(&mut out, "mx.example.com", &item, failures, NOW, SEED).unwrap();
        out
    }

    #[test]
    fn top_headers_are_as_specified() {
        let out = String::from_utf8(dsn(ORIGINAL, &two_failures())).unwrap();
        let (head, _) = out.split_once("\r\n\r\n").unwrap();
        let lines: Vec<&str> = head.split("\r\n").collect();
        assert_eq!(
            lines[0],
            "From: Mail Delivery System <MAILER-DAEMON@mx.example.com>"
        );
        assert_eq!(lines[1], "To: <alice@example.com>");
        assert_eq!(lines[2], "Subject: Undelivered Mail Returned to Sender");
        assert_eq!(lines[3], "Date: Tue, 5 Mar 2024 10:20:30 +0000");
        assert!(lines[4].starts_with("Message-ID: <dsn."), "{}", lines[4]);
        assert!(
            lines[4].ends_with(".0123456789abcdef@mx.example.com>"),
            "{}",
            lines[4]
        );
        assert_eq!(lines[5], "Auto-Submitted: auto-replied");
        assert_eq!(lines[6], "MIME-Version: 1.0");
        assert_eq!(
            lines[7..].join("\r\n"),
            "Content-Type: multipart/report; report-type=delivery-status;\r\n\
             \tboundary=\"=_tambo_0123456789abcdef_0\""
        );
        assert!(out.ends_with("--=_tambo_0123456789abcdef_0--\r\n"));
        assert!(!out.replace("\r\n", "").contains('\n'), "bare LF");
    }

    #[test]
    fn structure_parses_back() {
        let out = dsn(ORIGINAL, &two_failures());
        let msg = MessageParser::default().parse(&out).unwrap();
        let ct = msg.content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        let ids = msg.parts[0].sub_parts().unwrap();
        let parts: Vec<_> = ids.iter().map(|&i| &msg.parts[i as usize]).collect();
        let types: Vec<String> = parts
            .iter()
            .map(|p| {
                let ct = p.content_type().unwrap();
                format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
            })
            .collect();
        assert_eq!(
            types,
            [
                "text/plain",
                "message/delivery-status",
                "text/rfc822-headers"
            ]
        );

        let human = parts[0].text_contents().unwrap();
        assert!(human.contains("<bob@remote.example>:\r\n    mx.remote.example[192.0.2.7]: 550"));
        assert!(human.contains("<carol@elsewhere.example>:\r\n    gave up after"));

        let status = String::from_utf8_lossy(parts[1].contents());
        let want = "Reporting-MTA: dns; mx.example.com\r\n\
            X-Tambo-Queue-ID: {id}\r\nArrival-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n\r\n\
            Final-Recipient: rfc822; bob@remote.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\
            Remote-MTA: dns; mx.remote.example\r\n\
            Diagnostic-Code: smtp; 550 5.1.1 <bob@remote.example>: no such user\r\n\r\n\
            Original-Recipient: rfc822; info@example.com\r\n\
            Final-Recipient: rfc822; carol@elsewhere.example\r\nAction: failed\r\nStatus: 5.0.0\r\n";
        let (head, tail) = want.split_once("{id}").unwrap();
        assert!(status.starts_with(head), "{status}");
        assert!(status.trim_end().ends_with(tail.trim_end()), "{status}");

        let headers = parts[2].text_contents().unwrap();
        assert!(headers.contains("Subject: Hello there\r\n"), "{headers}");
        assert!(
            headers.contains("Message-ID: <orig@example.com>"),
            "{headers}"
        );
        assert!(!String::from_utf8_lossy(&out).contains("SECRET BODY"));
    }

    #[test]
    fn no_header_injection() {
        let evil = "550 5.7.1 bad\r\nBcc: victim@example.net\r\n\r\n--=_tambo_0123456789abcdef_0--";
        let failures = [failed(
            "x@remote.example\r\nBcc: v@example.net",
            "o\nX-Evil: 1",
            evil,
        )];
        let (_tmp, item) = item(ORIGINAL, "alice@example.com\r\nBcc: v2@example.net");
        let mut out = Vec::new();
        write(
            &mut out,
            "mx.example.com\r\nX-Host: 1",
            &item,
            &failures,
            NOW,
            SEED,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        for line in text.split("\r\n") {
            for bad in ["Bcc:", "X-Evil:", "X-Host:"] {
                assert!(!line.starts_with(bad), "injected line {line:?}");
            }
        }
        // The reason quoted the first boundary: another one was chosen, and the message has
        // exactly one closing delimiter.
        assert!(text.contains("boundary=\"=_tambo_0123456789abcdef_1\""));
        assert_eq!(
            text.matches("\r\n--=_tambo_0123456789abcdef_1--\r\n")
                .count(),
            1
        );
    }

    #[test]
    fn boundary_avoids_text_of_the_original() {
        let data = b"Subject: x\r\nX-Trap: --=_tambo_0123456789abcdef_0\r\n\r\nbody\r\n";
        let out = String::from_utf8(dsn(data, &two_failures())).unwrap();
        assert!(out.contains("boundary=\"=_tambo_0123456789abcdef_1\""));
    }

    #[test]
    fn null_sender_gets_no_dsn() {
        let (_tmp, item) = item(ORIGINAL, "");
        let err = build("mx.example.com", &item, &two_failures(), NOW).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn build_uses_a_random_boundary() {
        let (_tmp, item) = item(ORIGINAL, "alice@example.com");
        let a = build("mx.example.com", &item, &two_failures(), NOW).unwrap();
        let b = build("mx.example.com", &item, &two_failures(), NOW).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn pipe_recipient_is_reported_by_its_original_address() {
        let f = failed(
            "|/usr/bin/ticket",
            "tickets@example.com",
            "ticket exited with status 1",
        );
        let fields = recipient_fields(&f);
        assert_eq!(
            fields,
            "Final-Recipient: rfc822; tickets@example.com\r\nAction: failed\r\nStatus: 5.0.0\r\n"
        );
    }

    #[test]
    fn should_bounce_table() {
        let cases = [
            ("", false),
            ("<>", false),
            ("alice@example.com", true),
            ("MAILER-DAEMON@example.com", true),
            ("postmaster@example.com", true),
        ];
        for (sender, want) in cases {
            assert_eq!(should_bounce(sender), want, "{sender:?}");
        }
    }

    #[test]
    fn smtp_reply_in_reasons() {
        // (reason, reply text, status)
        let cases: &[(&str, Option<&str>, &str)] = &[
            (
                "550 5.1.1 no such user",
                Some("550 5.1.1 no such user"),
                "5.1.1",
            ),
            ("mx: 554-5.7.1 spam", Some("554-5.7.1 spam"), "5.7.1"),
            ("host said: 552 too big", Some("552 too big"), "5.0.0"),
            (
                "gave up after 3600s: 421 4.4.2 timeout",
                Some("421 4.4.2 timeout"),
                "5.4.2",
            ),
            (
                "450 4.2.2 mailbox full",
                Some("450 4.2.2 mailbox full"),
                "5.2.2",
            ),
            ("550", Some("550"), "5.0.0"),
            ("550 5.1.1.1 odd", Some("550 5.1.1.1 odd"), "5.0.0"),
            ("550 6.1.1 odd", Some("550 6.1.1 odd"), "5.0.0"),
            ("exited with status 75", None, "5.0.0"),
            ("gave up after 4500s: connection refused", None, "5.0.0"),
            ("10.0.0.550 down", None, "5.0.0"),
            ("port 4550 closed", None, "5.0.0"),
            ("a550 x", None, "5.0.0"),
            ("", None, "5.0.0"),
        ];
        for (reason, text, status) in cases {
            let reply = SmtpReply::find(reason);
            assert_eq!(reply.as_ref().map(|r| r.text), *text, "{reason}");
            assert_eq!(status_code(reply.as_ref()), *status, "{reason}");
        }
    }

    #[test]
    fn remote_host_and_stage_note() {
        // (reason, remote, text)
        let cases: &[(&str, Option<&str>, &str)] = &[
            (
                "mx.ex.org[192.0.2.1]: 550 no (at RCPT TO)",
                Some("mx.ex.org"),
                "550 no",
            ),
            (
                "gave up after 9s: mx[2001:db8::1]: 421 busy (at DATA)",
                Some("mx"),
                "421 busy",
            ),
            (
                "mx.ex.org: 554 5.7.1 (spam)",
                Some("mx.ex.org"),
                "554 5.7.1 (spam)",
            ),
            ("host said: 550 no", None, "550 no"),
            ("550 no", None, "550 no"),
            ("a b: [x]: 550 no", None, "550 no"),
        ];
        for (reason, remote, text) in cases {
            let reply = SmtpReply::find(reason).unwrap();
            assert_eq!((reply.remote, reply.text), (*remote, *text), "{reason}");
        }
    }

    #[test]
    fn original_headers_are_cut_normalised_and_capped() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"A: 1\r\nB: 2\r\n\r\nbody\r\n", b"A: 1\r\nB: 2\r\n"),
            (b"A: 1\nB: 2\n\nbody\n", b"A: 1\r\nB: 2\r\n"),
            (b"A: 1\r\n folded\r\n\r\n", b"A: 1\r\n folded\r\n"),
            (b"A: no end", b"A: no end\r\n"),
            (b"\r\nbody only", b""),
            (b"", b""),
        ];
        for (data, want) in cases {
            let (_tmp, item) = item(data, "a@example.com");
            assert_eq!(original_headers(&item).unwrap(), *want, "{data:?}");
        }
        let line = format!("X-Long: {}\r\n", "a".repeat(1000));
        let huge = line.repeat(300);
        let (_tmp, item) = item(huge.as_bytes(), "a@example.com");
        let got = original_headers(&item).unwrap();
        assert!(got.len() as u64 <= MAX_ORIGINAL_HEADERS);
        assert!(got.len() > 250 * 1024);
        assert!(got.ends_with(line.as_bytes()), "a cut line was kept");
    }

    #[test]
    fn one_line_strips_and_bounds() {
        assert_eq!(one_line(" a\r\nb\tc\0 "), "a  b c");
        let long = "é".repeat(1000);
        let got = one_line(&long);
        assert!(got.len() <= MAX_VALUE && got.chars().all(|c| c == 'é'));
    }

    #[test]
    fn eight_bit_content_is_declared() {
        let data = "Subject: café\r\n\r\nx\r\n".as_bytes();
        let out = String::from_utf8(dsn(data, &two_failures())).unwrap();
        let (head, _) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("Content-Transfer-Encoding: 8bit"));
        let ascii = String::from_utf8(dsn(ORIGINAL, &two_failures())).unwrap();
        assert!(!ascii.contains("8bit"));
    }

    /// Python's `email` package, an independent parser, reads the same structure; it parses
    /// message/delivery-status into one header block per group of fields.
    #[test]
    fn python_email_parses_it() {
        let python = std::path::Path::new(crate::testsupport::PYTHON3.program);
        if !crate::testsupport::PYTHON3.available() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("dsn.eml");
        std::fs::write(&file, dsn(ORIGINAL, &two_failures())).unwrap();
        let script = r#"
import email, json, sys
msg = email.message_from_binary_file(open(sys.argv[1], 'rb'))
parts = msg.get_payload()
status = parts[1].get_payload()
print(json.dumps({
    'type': msg.get_content_type(),
    'report_type': msg.get_param('report-type'),
    'defects': [str(d) for d in msg.defects] + [str(d) for p in parts for d in p.defects],
    'parts': [p.get_content_type() for p in parts],
    'blocks': [dict(b.items()) for b in status],
    'headers': parts[2].get_payload(),
}))
"#;
        let out = std::process::Command::new(python)
            .args(["-c", script, file.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(got["type"], "multipart/report");
        assert_eq!(got["report_type"], "delivery-status");
        assert_eq!(got["defects"], serde_json::json!([]));
        assert_eq!(
            got["parts"],
            serde_json::json!([
                "text/plain",
                "message/delivery-status",
                "text/rfc822-headers"
            ])
        );
        let blocks = got["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 3, "{blocks:?}");
        assert_eq!(blocks[0]["Reporting-MTA"], "dns; mx.example.com");
        assert_eq!(blocks[1]["Final-Recipient"], "rfc822; bob@remote.example");
        assert_eq!(blocks[1]["Status"], "5.1.1");
        assert_eq!(blocks[1]["Action"], "failed");
        assert_eq!(blocks[1]["Remote-MTA"], "dns; mx.remote.example");
        assert_eq!(blocks[2]["Original-Recipient"], "rfc822; info@example.com");
        let headers = got["headers"].as_str().unwrap();
        assert!(headers.contains("Subject: Hello there"), "{headers}");
    }
}
