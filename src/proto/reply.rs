//! SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 3463, RFC 2034).
//!
//! The peer sees the short `text`; reasons meant for the log travel separately, so a reply
//! never carries a path or a key.

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// `"5.7.1"`, or empty for replies that carry none (greeting, EHLO lines).
    pub enhanced: &'static str,
    /// One entry per line of a multi-line reply.
    pub lines: Vec<Cow<'static, str>>,
}

impl Reply {
    pub fn new(code: u16, enhanced: &'static str, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            enhanced,
            lines: vec![text.into()],
        }
    }

    pub fn multiline(code: u16, lines: Vec<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            enhanced: "",
            lines,
        }
    }

    /// 4xx and 5xx (they count towards the three-errors limit).
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The first line's text, for logs.
    pub fn text(&self) -> &str {
        self.lines.first().map(|l| l.as_ref()).unwrap_or("")
    }

    /// Appends the wire form: `250-line\r\n` ... `250 last\r\n` (RFC 5321 §4.2.1).
    /// CR and LF inside a text are replaced, so a reply is always exactly its lines.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        let code = self.code.to_string();
        let per_line = code.len() + self.enhanced.len() + 4;
        out.reserve(self.lines.iter().map(|l| l.len() + per_line).sum());
        for (i, line) in self.lines.iter().enumerate() {
            out.extend_from_slice(code.as_bytes());
            out.push(if i == last { b' ' } else { b'-' });
            if !self.enhanced.is_empty() {
                out.extend_from_slice(self.enhanced.as_bytes());
                out.push(b' ');
            }
            out.extend(
                line.bytes()
                    .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
            );
            out.extend_from_slice(b"\r\n");
        }
        if self.lines.is_empty() {
            out.extend_from_slice(format!("{} {}\r\n", self.code, self.enhanced).as_bytes());
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line() {
        let r = Reply::new(250, "2.1.0", "OK");
        assert_eq!(r.to_bytes(), b"250 2.1.0 OK\r\n");
    }

    #[test]
    fn multi_line_without_enhanced() {
        let r = Reply::multiline(250, vec!["mx.example".into(), "PIPELINING".into()]);
        assert_eq!(r.to_bytes(), b"250-mx.example\r\n250 PIPELINING\r\n");
    }

    #[test]
    fn crlf_in_text_cannot_inject_a_line() {
        let r = Reply::new(550, "5.1.1", "no\r\n250 ok");
        assert_eq!(r.to_bytes(), b"550 5.1.1 no  250 ok\r\n");
    }
}
