//! How IMAP responses are written (RFC 3501 §7, §9): strings quoted or as literals, flag
//! lists, dates, and the status lines. The server side of the wire is simple enough to write
//! directly, and what is sent most (FETCH of cached ENVELOPE and BODYSTRUCTURE) is bytes
//! already encoded at delivery.

use std::fmt::Write as _;

/// A tagged or untagged status (RFC 3501 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::No => "NO",
            Status::Bad => "BAD",
        }
    }
}

/// `tag OK [CODE] text` (or `*` for an untagged status when `tag` is None).
pub fn status(
    out: &mut Vec<u8>,
    tag: Option<&str>,
    status: Status,
    code: Option<&str>,
    text: &str,
) {
    out.extend_from_slice(tag.unwrap_or("*").as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.word().as_bytes());
    out.push(b' ');
    if let Some(code) = code {
        out.push(b'[');
        out.extend_from_slice(code.as_bytes());
        out.extend_from_slice(b"] ");
    }
    out.extend_from_slice(text_safe(text).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// An untagged data line: `* <line>`.
pub fn untagged(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(b"* ");
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The continuation request that lets a client send its literal (RFC 3501 §7.5).
pub fn untagged_continue(out: &mut Vec<u8>) {
    out.extend_from_slice(b"+ Ready for literal data\r\n");
}

/// Response text (RFC 3501 §9 `text`): no CR or LF; never empty.
fn text_safe(text: &str) -> std::borrow::Cow<'_, str> {
    if text.is_empty() {
        return "done".into();
    }
    if text.bytes().any(|b| b == b'\r' || b == b'\n') {
        return text.replace(['\r', '\n'], " ").into();
    }
    text.into()
}

/// An IMAP `string` (RFC 3501 §4.3): quoted when every octet may be quoted (7-bit, no CR,
/// LF or NUL), else a literal.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    let quotable = s.len() < 1024
        && s.iter()
            .all(|&b| b != 0 && b != b'\r' && b != b'\n' && b < 0x80);
    if quotable {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        literal(out, s);
    }
}

/// `{n}` CRLF and the octets.
pub fn literal(out: &mut Vec<u8>, s: &[u8]) {
    let _ = write!(Lossless(out), "{{{}}}\r\n", s.len());
    out.extend_from_slice(s);
}

/// `NIL` or a string.
pub fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// INTERNALDATE's form (RFC 3501 §9 `date-time`), in UTC: `"07-Dec-2026 05:09:18 +0000"`.
pub fn date_time(secs: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let month = MONTHS[usize::from(u8::from(t.month())) - 1];
    format!(
        "\"{:02}-{month}-{:04} {:02}:{:02}:{:02} +0000\"",
        t.day(),
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `fmt::Write` into a byte vector (what is written is ASCII).
struct Lossless<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Lossless<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Appends formatted ASCII to `out`.
pub fn push_fmt(out: &mut Vec<u8>, args: std::fmt::Arguments<'_>) {
    let _ = Lossless(out).write_fmt(args);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_quoted_or_literal() {
        let cases: [(&[u8], &[u8]); 6] = [
            (b"INBOX", b"\"INBOX\""),
            (b"", b"\"\""),
            (b"a \"b\" \\c", b"\"a \\\"b\\\" \\\\c\""),
            (b"two\r\nlines", b"{10}\r\ntwo\r\nlines"),
            ("caf\u{e9}".as_bytes(), b"{5}\r\ncaf\xc3\xa9"),
            (b"nul\0", b"{4}\r\nnul\0"),
        ];
        for (s, want) in cases {
            let mut out = Vec::new();
            string(&mut out, s);
            assert_eq!(out, want, "{:?}", String::from_utf8_lossy(s));
        }
    }

    #[test]
    fn status_lines() {
        let mut out = Vec::new();
        status(
            &mut out,
            Some("a1"),
            Status::Ok,
            Some("READ-WRITE"),
            "SELECT completed",
        );
        status(&mut out, None, Status::Bad, None, "no\r\nbreak");
        assert_eq!(
            out,
            b"a1 OK [READ-WRITE] SELECT completed\r\n* BAD no  break\r\n".to_vec()
        );
    }

    #[test]
    fn internal_dates() {
        assert_eq!(date_time(0), "\"01-Jan-1970 00:00:00 +0000\"");
        assert_eq!(date_time(1_796_619_726), "\"07-Dec-2026 05:02:06 +0000\"");
    }
}
