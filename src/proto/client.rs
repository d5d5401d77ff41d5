//! Sans-I/O pieces of the SMTP client: the reply parser, EHLO capabilities, dot-stuffing.
//!
//! The parser frames replies from the byte stream (bounded lines, bounded line count) before
//! it looks at them, so a hostile server costs bounded memory; the stuffer turns the queued
//! message into the DATA stream whatever the chunking.

use std::fmt;

/// RFC 5321 §4.5.3.1.5 allows 512 octets per reply line; real servers send longer ones, so
/// we accept up to this many and call anything longer a protocol error.
pub const MAX_LINE: usize = 4096;
/// Lines of one multi-line reply (EHLO answers have a few dozen at most).
pub const MAX_LINES: usize = 512;

/// An enhanced status code (RFC 3463 §2, RFC 2034 §4): `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnhancedStatus {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl EnhancedStatus {
    /// Parses the status at the start of `text`, if any; it must be followed by a space or
    /// the end of the text and its class must agree with the reply code (RFC 2034 §4).
    fn parse(code: u16, text: &str) -> Option<EnhancedStatus> {
        let word = text.split(' ').next()?;
        let mut parts = word.split('.');
        let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || class.len() != 1 {
            return None;
        }
        let number = |s: &str| {
            let ok = (1..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
            ok.then(|| s.parse::<u16>().ok()).flatten()
        };
        let status = EnhancedStatus {
            class: u8::try_from(number(class)?).ok()?,
            subject: number(subject)?,
            detail: number(detail)?,
        };
        (u16::from(status.class) == code / 100).then_some(status)
    }
}

/// A complete reply from the server (RFC 5321 §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReply {
    pub code: u16,
    /// The enhanced status code at the start of the first line, when present.
    pub enhanced: Option<EnhancedStatus>,
    /// The text of each line after the code and separator, verbatim (enhanced code included).
    pub lines: Vec<String>,
}

impl ServerReply {
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }
    pub fn is_temporary(&self) -> bool {
        (400..500).contains(&self.code)
    }
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
}

/// `550 5.1.1 no such user`; the lines of a multi-line reply joined with ` / `.
impl fmt::Display for ServerReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == 0 { " " } else { " / " };
            write!(f, "{sep}{line}")?;
        }
        Ok(())
    }
}

/// Why the byte stream is not a valid sequence of replies; the connection cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply line longer than {MAX_LINE} octets")]
    LineTooLong,
    #[error("reply longer than {MAX_LINES} lines")]
    TooManyLines,
    #[error("malformed reply line {0:?}")]
    Malformed(String),
    #[error("reply code changed within a multi-line reply ({0} then {1})")]
    InconsistentCode(u16, u16),
}

/// Cuts the byte stream into lines and lines into replies.
#[derive(Debug, Default)]
pub struct ReplyParser {
    buf: Vec<u8>,
    /// Lines of the multi-line reply seen so far, with their code.
    pending: Option<(u16, Vec<String>)>,
    failed: Option<ReplyError>,
}

impl ReplyParser {
    pub fn new() -> ReplyParser {
        ReplyParser::default()
    }

    /// Adds bytes read from the server. Memory stays bounded as long as the caller calls
    /// `next_reply` after each feed (it fails once a line grows past `MAX_LINE`).
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The next complete reply, `Ok(None)` when more bytes are needed. After an error every
    /// call returns the same error.
    pub fn next_reply(&mut self) -> Result<Option<ServerReply>, ReplyError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.parse_lines();
        if let Err(e) = &result {
            self.failed = Some(e.clone());
            self.buf = Vec::new();
        }
        result
    }

    /// Bytes received but not yet part of a returned reply (e.g. pipelined replies, or bytes
    /// a server sent after its STARTTLS 220, which must be discarded, RFC 3207 §4.2).
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty() || self.pending.is_some()
    }

    fn parse_lines(&mut self) -> Result<Option<ServerReply>, ReplyError> {
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            if end > MAX_LINE {
                return Err(ReplyError::LineTooLong);
            }
            let raw: Vec<u8> = self.buf.drain(..=end).collect();
            let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(reply) = self.add_line(line)? {
                return Ok(Some(reply));
            }
        }
        if self.buf.len() > MAX_LINE {
            return Err(ReplyError::LineTooLong);
        }
        Ok(None)
    }

    /// RFC 5321 §4.2.1: `code-text` lines continue the reply, `code text` (or a bare code)
    /// ends it, and every line carries the same code.
    fn add_line(&mut self, line: &[u8]) -> Result<Option<ServerReply>, ReplyError> {
        let (code, last, text) = split_line(line)?;
        let (pending_code, mut lines) = self.pending.take().unwrap_or((code, Vec::new()));
        if pending_code != code {
            return Err(ReplyError::InconsistentCode(pending_code, code));
        }
        if lines.len() >= MAX_LINES {
            return Err(ReplyError::TooManyLines);
        }
        lines.push(text);
        if !last {
            self.pending = Some((code, lines));
            return Ok(None);
        }
        let enhanced = lines.first().and_then(|l| EnhancedStatus::parse(code, l));
        Ok(Some(ServerReply {
            code,
            enhanced,
            lines,
        }))
    }
}

/// One reply line without its line ending → (code, is the last line, text).
fn split_line(line: &[u8]) -> Result<(u16, bool, String), ReplyError> {
    let malformed = || ReplyError::Malformed(String::from_utf8_lossy(line).into_owned());
    let digits = line.get(..3).ok_or_else(malformed)?;
    // RFC 5321 §4.2: the first digit is 2 to 5, the others 0 to 9 (§4.2.1 is laxer on the
    // second, which we accept).
    let valid = matches!(digits[0], b'2'..=b'5') && digits[1..].iter().all(u8::is_ascii_digit);
    if !valid {
        return Err(malformed());
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let (last, text) = match line.get(3) {
        None => (true, &b""[..]),
        Some(b' ') => (true, &line[4..]),
        Some(b'-') => (false, &line[4..]),
        Some(_) => return Err(malformed()),
    };
    Ok((code, last, String::from_utf8_lossy(text).into_owned()))
}

/// What the server offered in its EHLO (or LHLO) reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub starttls: bool,
    pub pipelining: bool,
    /// RFC 1870: `SIZE` was offered; the value is its limit (0: no fixed limit).
    pub size: Option<u64>,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub enhanced_status_codes: bool,
}

impl Capabilities {
    /// RFC 5321 §4.1.1.1: the first line is the server's name, each further line an
    /// extension keyword (case-insensitive) with optional parameters.
    pub fn from_ehlo(reply: &ServerReply) -> Capabilities {
        let mut caps = Capabilities::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "STARTTLS" => caps.starttls = true,
                "PIPELINING" => caps.pipelining = true,
                "8BITMIME" => caps.eightbitmime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                _ => {}
            }
        }
        caps
    }
}

/// Where the stuffer stands in the line structure of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StuffState {
    LineStart,
    Mid,
    /// A CR was the last input byte: a CRLF if LF follows, else a bare CR.
    Cr,
}

/// Streaming DATA encoder (RFC 5321 §4.5.2): doubles a leading `.` on every line and makes
/// every line ending CRLF (a bare CR or LF becomes CRLF, so nothing we send can be read as
/// SMTP smuggling, §2.3.8), wherever the input is cut.
#[derive(Debug, Clone)]
pub struct DotStuffer {
    state: StuffState,
}

impl Default for DotStuffer {
    fn default() -> DotStuffer {
        DotStuffer::new()
    }
}

impl DotStuffer {
    pub fn new() -> DotStuffer {
        // The CRLF of the DATA command counts as the end of the line before the message.
        DotStuffer {
            state: StuffState::LineStart,
        }
    }

    /// Appends the encoded form of `input` to `out`.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 64 + 2);
        let mut i = 0;
        while i < input.len() {
            if self.state == StuffState::Mid {
                i += self.copy_run(&input[i..], out);
            } else {
                self.step(input[i], out);
                i += 1;
            }
        }
    }

    /// Copies ordinary bytes up to a CR or LF, which is handled too; returns the count used.
    fn copy_run(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        match memchr::memchr2(b'\r', b'\n', input) {
            None => {
                out.extend_from_slice(input);
                input.len()
            }
            Some(end) => {
                out.extend_from_slice(&input[..end]);
                self.step(input[end], out);
                end + 1
            }
        }
    }

    fn step(&mut self, b: u8, out: &mut Vec<u8>) {
        if self.state == StuffState::Cr {
            out.extend_from_slice(b"\r\n");
            self.state = StuffState::LineStart;
            if b == b'\n' {
                return;
            }
        }
        self.state = match b {
            b'\r' => StuffState::Cr,
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                StuffState::LineStart
            }
            // RFC 5321 §4.5.2: a line starting with a dot gets one more.
            b'.' if self.state == StuffState::LineStart => {
                out.extend_from_slice(b"..");
                StuffState::Mid
            }
            _ => {
                out.push(b);
                StuffState::Mid
            }
        };
    }

    /// The end of the data: the pending line ending, if any, and `.` CRLF (RFC 5321
    /// §4.1.1.4); a message not ending in CRLF gets one first.
    pub fn finish(self) -> &'static [u8] {
        match self.state {
            StuffState::LineStart => b".\r\n",
            StuffState::Mid | StuffState::Cr => b"\r\n.\r\n",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::data::{DataReader, DataStatus};
    use proptest::prelude::*;

    fn parse_all(input: &[u8]) -> Result<Vec<ServerReply>, ReplyError> {
        let mut p = ReplyParser::new();
        p.feed(input);
        let mut out = Vec::new();
        while let Some(r) = p.next_reply()? {
            out.push(r);
        }
        Ok(out)
    }

    fn reply(code: u16, lines: &[&str]) -> ServerReply {
        let lines: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        let enhanced = lines.first().and_then(|l| EnhancedStatus::parse(code, l));
        ServerReply {
            code,
            enhanced,
            lines,
        }
    }

    #[test]
    fn replies_table() {
        let cases: Vec<(&[u8], Vec<ServerReply>)> = vec![
            (
                b"220 mx.example ESMTP\r\n",
                vec![reply(220, &["mx.example ESMTP"])],
            ),
            (b"250\r\n", vec![reply(250, &[""])]),
            (b"250 \r\n", vec![reply(250, &[""])]),
            (
                b"250-mx.example\r\n250-SIZE 100\r\n250 STARTTLS\r\n",
                vec![reply(250, &["mx.example", "SIZE 100", "STARTTLS"])],
            ),
            (b"250-a\n250 b\n", vec![reply(250, &["a", "b"])]),
            (
                b"250 ok\r\n550 5.1.1 no\r\n",
                vec![reply(250, &["ok"]), reply(550, &["5.1.1 no"])],
            ),
            (b"250-a\r\n", vec![]),
            (b"250 a", vec![]),
            (b"", vec![]),
        ];
        for (input, want) in cases {
            let name = String::from_utf8_lossy(input);
            assert_eq!(parse_all(input), Ok(want), "{name:?}");
        }
    }

    #[test]
    fn garbage_table() {
        let long = [b"250 ".as_slice(), &[b'x'; MAX_LINE + 1], b"\r\n"].concat();
        let unterminated = [b"250 ".as_slice(), &[b'x'; MAX_LINE + 1]].concat();
        let cases: Vec<(&[u8], ReplyError)> = vec![
            (b"hello\r\n", ReplyError::Malformed("hello".into())),
            (b"25\r\n", ReplyError::Malformed("25".into())),
            (b"2x0 ok\r\n", ReplyError::Malformed("2x0 ok".into())),
            (b"150 ok\r\n", ReplyError::Malformed("150 ok".into())),
            (b"650 ok\r\n", ReplyError::Malformed("650 ok".into())),
            (b"250_ok\r\n", ReplyError::Malformed("250_ok".into())),
            (b"2500 ok\r\n", ReplyError::Malformed("2500 ok".into())),
            (
                b"250-a\r\n251 b\r\n",
                ReplyError::InconsistentCode(250, 251),
            ),
            (&long, ReplyError::LineTooLong),
            (&unterminated, ReplyError::LineTooLong),
        ];
        for (input, want) in cases {
            let name = String::from_utf8_lossy(&input[..input.len().min(20)]);
            assert_eq!(parse_all(input), Err(want), "{name:?}");
        }
    }

    #[test]
    fn too_many_lines() {
        let input = b"250-x\r\n".repeat(MAX_LINES + 1);
        assert_eq!(parse_all(&input), Err(ReplyError::TooManyLines));
        let mut ok = b"250-x\r\n".repeat(MAX_LINES - 1);
        ok.extend_from_slice(b"250 x\r\n");
        assert_eq!(parse_all(&ok).map(|r| r[0].lines.len()), Ok(MAX_LINES));
    }

    #[test]
    fn error_is_sticky() {
        let mut p = ReplyParser::new();
        p.feed(b"xyz\r\n");
        assert!(p.next_reply().is_err());
        p.feed(b"250 ok\r\n");
        assert!(p.next_reply().is_err());
    }

    #[test]
    fn byte_by_byte() {
        let input = b"250-mx\r\n250 8BITMIME\r\n354 go\r\n";
        let mut p = ReplyParser::new();
        let mut got = Vec::new();
        for b in input {
            p.feed(&[*b]);
            while let Some(r) = p.next_reply().unwrap() {
                got.push(r);
            }
        }
        assert_eq!(
            got,
            vec![reply(250, &["mx", "8BITMIME"]), reply(354, &["go"])]
        );
        assert!(!p.has_buffered());
    }

    #[test]
    fn enhanced_status_table() {
        let st = |class, subject, detail| {
            Some(EnhancedStatus {
                class,
                subject,
                detail,
            })
        };
        let cases: &[(u16, &str, Option<EnhancedStatus>)] = &[
            (550, "5.1.1 no such user", st(5, 1, 1)),
            (250, "2.0.0", st(2, 0, 0)),
            (452, "4.5.3 too many", st(4, 5, 3)),
            (552, "5.3.4 big", st(5, 3, 4)),
            (250, "2.100.999 x", st(2, 100, 999)),
            (550, "4.1.1 class mismatch", None),
            (550, "5.1 short", None),
            (550, "5.1.1.1 long", None),
            (550, "5.1000.1 wide", None),
            (550, "no such user", None),
            (550, "5.1.1x", None),
            (550, "", None),
        ];
        for &(code, text, want) in cases {
            assert_eq!(EnhancedStatus::parse(code, text), want, "{code} {text}");
        }
        assert_eq!(st(5, 1, 1).map(|s| s.to_string()).as_deref(), Some("5.1.1"));
    }

    #[test]
    fn display() {
        assert_eq!(
            reply(550, &["5.1.1 no such user"]).to_string(),
            "550 5.1.1 no such user"
        );
        assert_eq!(reply(451, &["a", "b"]).to_string(), "451 a / b");
    }

    #[test]
    fn capabilities() {
        let caps = Capabilities::from_ehlo(&reply(
            250,
            &[
                "mx.example greets you",
                "pipelining",
                "SIZE 35882577",
                "8BitMIME",
                "SMTPUTF8",
                "EnhancedStatusCodes",
                "STARTTLS",
                "AUTH PLAIN",
            ],
        ));
        let want = Capabilities {
            starttls: true,
            pipelining: true,
            size: Some(35882577),
            eightbitmime: true,
            smtputf8: true,
            enhanced_status_codes: true,
        };
        assert_eq!(caps, want);
        // The greeting line is a name, never a keyword.
        assert_eq!(
            Capabilities::from_ehlo(&reply(250, &["STARTTLS"])),
            Capabilities::default()
        );
        let sizes: &[(&str, Option<u64>)] = &[
            ("SIZE", Some(0)),
            ("SIZE x", Some(0)),
            ("SIZE 10", Some(10)),
            ("SIZEX", None),
        ];
        for &(line, want) in sizes {
            assert_eq!(
                Capabilities::from_ehlo(&reply(250, &["mx", line])).size,
                want
            );
        }
    }

    fn stuff_chunks(chunks: &[&[u8]]) -> Vec<u8> {
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        for c in chunks {
            s.encode(c, &mut out);
        }
        out.extend_from_slice(s.finish());
        out
    }

    #[test]
    fn stuffing_table() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b"a\r\n.b\r\n..\r\n", b"a\r\n..b\r\n...\r\n.\r\n"),
            (b"a.b\r\n", b"a.b\r\n.\r\n"),
            (b".", b"..\r\n.\r\n"),
            // Bare line endings become CRLF.
            (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
            (b"a\rb", b"a\r\nb\r\n.\r\n"),
            (b"a\r", b"a\r\n.\r\n"),
            (b"\n.\n", b"\r\n..\r\n.\r\n"),
            (b"\r\r\n.", b"\r\n\r\n..\r\n.\r\n"),
            (b"a\n.\r\n", b"a\r\n..\r\n.\r\n"),
        ];
        for &(input, want) in cases {
            let name = String::from_utf8_lossy(input);
            assert_eq!(stuff_chunks(&[input]), want, "{name:?}");
            for i in 0..=input.len() {
                let split = stuff_chunks(&[&input[..i], &input[i..]]);
                assert_eq!(split, want, "{name:?} at {i}");
            }
        }
    }

    /// What the message looks like once its line endings are all CRLF.
    fn normalize(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < input.len() {
            match input[i] {
                b'\r' if input.get(i + 1) == Some(&b'\n') => {
                    out.extend_from_slice(b"\r\n");
                    i += 1;
                }
                b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
                b => out.push(b),
            }
            i += 1;
        }
        out
    }

    fn chunked(input: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut last = 0;
        for c in cuts.into_iter().chain([input.len()]) {
            pieces.push(input[last..c].to_vec());
            last = c;
        }
        pieces
    }

    fn message() -> impl Strategy<Value = Vec<u8>> {
        let token = prop::sample::select(vec![
            &b"\r\n"[..],
            b"\r",
            b"\n",
            b".",
            b"..",
            b"a",
            b"\r\n.\r\n",
            b"\r\n.",
            b" ",
            b"\xff",
        ]);
        prop::collection::vec(token, 0..50).prop_map(|t| t.concat())
    }

    proptest! {
        #[test]
        fn parser_never_panics(
            input in prop::collection::vec(any::<u8>(), 0..600),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
        ) {
            let mut p = ReplyParser::new();
            for piece in chunked(&input, &cuts) {
                p.feed(&piece);
                while let Ok(Some(_)) = p.next_reply() {}
            }
        }

        #[test]
        fn parser_split_invariance(
            lines in prop::collection::vec(("[2-5][0-9][0-9]", "[ -]", "[ -~]{0,20}"), 0..8),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
        ) {
            let input: Vec<u8> = lines
                .iter()
                .flat_map(|(c, s, t)| format!("{c}{s}{t}\r\n").into_bytes())
                .collect();
            let whole = parse_all(&input);
            let mut p = ReplyParser::new();
            let mut got = Vec::new();
            let mut err = None;
            for piece in chunked(&input, &cuts) {
                p.feed(&piece);
                loop {
                    match p.next_reply() {
                        Ok(Some(r)) => got.push(r),
                        Ok(None) => break,
                        Err(e) => { err = Some(e); break; }
                    }
                }
            }
            match whole {
                Ok(want) => { prop_assert_eq!(got, want); prop_assert_eq!(err, None); }
                Err(e) => prop_assert_eq!(err, Some(e)),
            }
        }

        /// Whatever the message and the chunking, the server-side reader gets back the
        /// message with CRLF line endings (plus the CRLF the terminator adds to an
        /// unterminated last line), and nothing after the end.
        #[test]
        fn stuffing_round_trips(
            msg in message(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let pieces = chunked(&msg, &cuts);
            let refs: Vec<&[u8]> = pieces.iter().map(|p| p.as_slice()).collect();
            let wire = stuff_chunks(&refs);
            let mut reader = DataReader::new(u64::MAX);
            let mut out = Vec::new();
            let (n, status) = reader.feed(&wire, &mut out);
            prop_assert!(matches!(status, DataStatus::Done(_)), "{:?}", status);
            prop_assert_eq!(n, wire.len());
            let mut want = normalize(&msg);
            if !want.is_empty() && !want.ends_with(b"\r\n") {
                want.extend_from_slice(b"\r\n");
            }
            prop_assert_eq!(out, want);
        }
    }
}
