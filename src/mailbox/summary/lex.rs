//! The RFC 5322 §3.2 lexical tokens (comments, atoms, quoted strings, phrases, domains) and
//! the RFC 2045 §5.1 MIME tokens, read the way Dovecot's `rfc822-parser.c` reads them, so
//! that ENVELOPE and BODYSTRUCTURE come out as Dovecot's do for the same message, broken
//! ones included (obsolete syntax, missing quotes, folded lines, NULs).
//!
//! Every reader returns a [`Step`]: [`Step::Bad`] for a syntax error, [`Step::End`] when the
//! input is used up, [`Step::More`] when something follows. Readers skip the whitespace and
//! comments after their token.

/// What a reader left: an error, the end of the input, or more input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Bad,
    End,
    More,
}

/// What a NUL inside a comment, quoted string or domain literal becomes.
const NUL_REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// RFC 5322 §3.2.3 `atext`, with 8-bit octets counted in (as Dovecot does for UTF-8 and
/// other raw 8-bit names).
pub fn is_atext(c: u8) -> bool {
    c >= 0x80
        || c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'/'
                | b'='
                | b'?'
                | b'^'
                | b'_'
                | b'`'
                | b'{'
                | b'|'
                | b'}'
                | b'~'
        )
}

/// RFC 2045 §5.1 `token` characters other than `.`: `atext` without the `tspecials`
/// `/`, `=` and `?`.
fn is_mime_token(c: u8) -> bool {
    is_atext(c) && !matches!(c, b'/' | b'=' | b'?')
}

/// A cursor over one header value.
pub struct Lexer<'a> {
    data: &'a [u8],
    pub pos: usize,
    /// The text of the last comment skipped, kept only when `Some` (the address parser
    /// takes a trailing comment as the display name: `user@host (Name)`).
    pub last_comment: Option<Vec<u8>>,
}

impl<'a> Lexer<'a> {
    pub fn new(data: &'a [u8]) -> Lexer<'a> {
        Lexer {
            data,
            pos: 0,
            last_comment: None,
        }
    }

    /// The octet under the cursor, if any.
    pub fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn rest_step(&self) -> Step {
        if self.at_end() { Step::End } else { Step::More }
    }

    /// Skips a comment (the cursor is on its `(`), nested ones included.
    pub fn skip_comment(&mut self) -> Step {
        if let Some(comment) = self.last_comment.as_mut() {
            comment.clear();
        }
        self.pos += 1;
        let mut start = self.pos;
        let mut level = 1;
        while self.pos < self.data.len() {
            match self.data[self.pos] {
                0 => {
                    let (pos, data) = (self.pos, self.data);
                    if let Some(comment) = self.last_comment.as_mut() {
                        comment.extend_from_slice(&data[start..pos]);
                        comment.extend_from_slice(NUL_REPLACEMENT);
                        start = pos + 1;
                    }
                }
                b'(' => level += 1,
                b')' => {
                    level -= 1;
                    if level == 0 {
                        let (pos, data) = (self.pos, self.data);
                        if let Some(comment) = self.last_comment.as_mut() {
                            comment.extend_from_slice(&data[start..pos]);
                        }
                        self.pos += 1;
                        return self.rest_step();
                    }
                }
                b'\n' => {
                    // Folding whitespace: the line end goes, the indentation stays.
                    let (pos, data) = (self.pos, self.data);
                    if let Some(comment) = self.last_comment.as_mut() {
                        comment.extend_from_slice(strip_cr(&data[start..pos]));
                        start = pos + 1;
                    }
                }
                b'\\' => {
                    self.pos += 1;
                    let Some(c) = self.peek() else {
                        return Step::Bad;
                    };
                    if matches!(c, b'\r' | b'\n' | 0) {
                        // Not a quoted pair (obs-qp): look at that octet again.
                        self.pos -= 1;
                    } else {
                        let (pos, data) = (self.pos, self.data);
                        if let Some(comment) = self.last_comment.as_mut() {
                            comment.extend_from_slice(&data[start..pos - 1]);
                        }
                        start = pos;
                    }
                }
                _ => {}
            }
            self.pos += 1;
        }
        // No closing parenthesis.
        Step::Bad
    }

    /// Skips whitespace, line ends and comments.
    pub fn skip_lwsp(&mut self) -> Step {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\r' | b'\n' => self.pos += 1,
                b'(' => {
                    if self.skip_comment() == Step::Bad {
                        return Step::Bad;
                    }
                }
                _ => break,
            }
        }
        self.rest_step()
    }

    /// Reads octets while `keep` holds, then skips whitespace.
    fn run(&mut self, out: &mut Vec<u8>, keep: impl Fn(u8) -> bool) -> Step {
        let start = self.pos;
        while self.peek().is_some_and(&keep) {
            self.pos += 1;
        }
        out.extend_from_slice(&self.data[start..self.pos]);
        if self.at_end() {
            return Step::End;
        }
        self.skip_lwsp()
    }

    /// RFC 5322 `atom`.
    pub fn atom(&mut self, out: &mut Vec<u8>) -> Step {
        if !self.peek().is_some_and(is_atext) {
            return Step::Bad;
        }
        self.run(out, is_atext)
    }

    /// RFC 5322 `dot-atom`, with whitespace allowed around the dots (RFC 822).
    pub fn dot_atom(&mut self, out: &mut Vec<u8>) -> Step {
        loop {
            if !self.peek().is_some_and(is_atext) {
                return Step::Bad;
            }
            let r = self.run(out, is_atext);
            if r != Step::More {
                return r;
            }
            if self.peek() != Some(b'.') {
                return Step::More;
            }
            self.pos += 1;
            out.push(b'.');
            if self.skip_lwsp() != Step::More {
                return Step::Bad;
            }
        }
    }

    /// RFC 2045 `token`, dots allowed (possibly empty).
    pub fn mime_token(&mut self, out: &mut Vec<u8>) -> Step {
        self.run(out, |c| is_mime_token(c) || c == b'.')
    }

    /// RFC 5322 `quoted-string` (the cursor is on its `"`): the content, unescaped, with
    /// folding line ends taken out.
    pub fn quoted_string(&mut self, out: &mut Vec<u8>) -> Step {
        self.pos += 1;
        let mut start = self.pos;
        while let Some(c) = self.peek() {
            match c {
                0 => {
                    out.extend_from_slice(&self.data[start..self.pos]);
                    out.extend_from_slice(NUL_REPLACEMENT);
                    start = self.pos + 1;
                }
                b'"' => {
                    out.extend_from_slice(&self.data[start..self.pos]);
                    self.pos += 1;
                    return self.skip_lwsp();
                }
                b'\n' => {
                    out.extend_from_slice(strip_cr(&self.data[start..self.pos]));
                    start = self.pos + 1;
                }
                b'\\' => {
                    self.pos += 1;
                    let Some(c) = self.peek() else {
                        return Step::Bad;
                    };
                    if matches!(c, b'\r' | b'\n' | 0) {
                        self.pos -= 1;
                    } else {
                        out.extend_from_slice(&self.data[start..self.pos - 1]);
                        start = self.pos;
                    }
                }
                _ => {}
            }
            self.pos += 1;
        }
        // No closing quote.
        Step::Bad
    }

    /// RFC 5322 `phrase` with `obs-phrase` (dots between words): words joined by one space.
    pub fn phrase(&mut self, out: &mut Vec<u8>) -> Step {
        match self.peek() {
            None => return Step::End,
            Some(b'.') => return Step::Bad,
            Some(_) => {}
        }
        loop {
            let r = if self.peek() == Some(b'"') {
                self.quoted_string(out)
            } else {
                self.run(out, |c| is_atext(c) || c == b'.')
            };
            if r != Step::More {
                return r;
            }
            match self.peek() {
                Some(c) if is_atext(c) || c == b'"' || c == b'.' => out.push(b' '),
                _ => break,
            }
        }
        self.skip_lwsp()
    }

    /// RFC 5322 `domain-literal` (the cursor is on its `[`), kept with its brackets and its
    /// backslashes.
    fn domain_literal(&mut self, out: &mut Vec<u8>) -> Step {
        let mut start = self.pos;
        self.pos += 1;
        while let Some(c) = self.peek() {
            match c {
                0 => {
                    out.extend_from_slice(&self.data[start..self.pos]);
                    out.extend_from_slice(NUL_REPLACEMENT);
                    start = self.pos + 1;
                }
                b'[' => return Step::Bad,
                b']' => {
                    out.extend_from_slice(&self.data[start..=self.pos]);
                    self.pos += 1;
                    return self.skip_lwsp();
                }
                b'\n' => {
                    out.extend_from_slice(strip_cr(&self.data[start..self.pos]));
                    start = self.pos + 1;
                }
                b'\\' => {
                    self.pos += 1;
                    let Some(c) = self.peek() else {
                        return Step::Bad;
                    };
                    if matches!(c, b'\r' | b'\n' | 0) {
                        out.extend_from_slice(&self.data[start..self.pos]);
                        start = self.pos;
                        self.pos -= 1;
                    }
                }
                _ => {}
            }
            self.pos += 1;
        }
        Step::Bad
    }

    /// RFC 5322 `domain` after its `@` (the cursor is on the `@`).
    pub fn domain(&mut self, out: &mut Vec<u8>) -> Step {
        self.pos += 1;
        if self.skip_lwsp() != Step::More {
            return Step::Bad;
        }
        if self.peek() == Some(b'[') {
            self.domain_literal(out)
        } else {
            self.dot_atom(out)
        }
    }

    /// RFC 2045 §5.1 `type "/" subtype`, written to `out` as `type/subtype`. Anything but
    /// `;` or the end after the subtype makes the field invalid.
    pub fn content_type(&mut self, out: &mut Vec<u8>) -> Step {
        let start = out.len();
        if self.skip_lwsp() != Step::More
            || self.mime_token(out) != Step::More
            || out.len() == start
            || self.peek() != Some(b'/')
        {
            out.truncate(start);
            return Step::Bad;
        }
        self.pos += 1;
        if self.skip_lwsp() != Step::More {
            out.truncate(start);
            return Step::Bad;
        }
        out.push(b'/');
        let sub = out.len();
        let r = self.mime_token(out);
        if r == Step::Bad || out.len() == sub || !matches!(self.peek(), None | Some(b';')) {
            out.truncate(start);
            return Step::Bad;
        }
        r
    }

    /// One RFC 2045 `";" parameter` into `key` and `value` (both cleared first).
    pub fn content_param(&mut self, key: &mut Vec<u8>, value: &mut Vec<u8>) -> Step {
        key.clear();
        value.clear();
        match self.peek() {
            None => return Step::End,
            Some(b';') => self.pos += 1,
            Some(_) => return Step::Bad,
        }
        if self.skip_lwsp() != Step::More
            || self.mime_token(key) != Step::More
            || self.peek() != Some(b'=')
        {
            return Step::Bad;
        }
        self.pos += 1;
        let mut r = self.skip_lwsp();
        if r == Step::More {
            r = match self.peek() {
                Some(b'"') => self.quoted_string(value),
                // Broken senders write `name==?utf-8?b?...?=` unquoted: up to the next
                // separator.
                Some(b'=') => {
                    while let Some(c) = self.peek() {
                        if matches!(c, b';' | b' ' | b'\t' | b'\r' | b'\n') {
                            break;
                        }
                        value.push(c);
                        self.pos += 1;
                    }
                    Step::More
                }
                _ => self.mime_token(value),
            };
        }
        if r == Step::Bad {
            Step::Bad
        } else {
            Step::More
        }
    }
}

/// `line` without one CR at its end.
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Reader = fn(&mut Lexer<'static>, &mut Vec<u8>) -> Step;

    #[test]
    fn readers() {
        let cases: &[(&str, Reader, &str, Step, usize)] = &[
            // input, reader, output, step, cursor after
            ("atom rest", Lexer::atom, "atom", Step::More, 5),
            ("atom", Lexer::atom, "atom", Step::End, 4),
            ("(c) atom", Lexer::atom, "", Step::Bad, 0),
            ("a.b . c@d", Lexer::dot_atom, "a.b.c", Step::More, 7),
            ("a..b", Lexer::dot_atom, "a.", Step::Bad, 2),
            (
                "\"q \\\" x\" y",
                Lexer::quoted_string,
                "q \" x",
                Step::More,
                9,
            ),
            (
                "\"fold\r\n ed\"",
                Lexer::quoted_string,
                "fold ed",
                Step::End,
                11,
            ),
            ("\"open", Lexer::quoted_string, "", Step::Bad, 5),
            ("\"a\0b\"", Lexer::quoted_string, "a\u{FFFD}b", Step::End, 5),
            (
                "John  Q. \"Public\" <",
                Lexer::phrase,
                "John Q. Public",
                Step::More,
                18,
            ),
            (
                "=?utf-8?q?x?= <",
                Lexer::phrase,
                "=?utf-8?q?x?=",
                Step::More,
                14,
            ),
            (".lead", Lexer::phrase, "", Step::Bad, 0),
            (
                "@ host . example",
                Lexer::domain,
                "host.example",
                Step::End,
                16,
            ),
            ("@[1.2.3.4] x", Lexer::domain, "[1.2.3.4]", Step::More, 11),
            ("@[a\\]b]", Lexer::domain, "[a\\]b]", Step::End, 7),
            (
                "text/plain; a=b",
                Lexer::content_type,
                "text/plain",
                Step::More,
                10,
            ),
            (
                "Text / HTML",
                Lexer::content_type,
                "Text/HTML",
                Step::End,
                11,
            ),
            (
                "text/html charset=x",
                Lexer::content_type,
                "",
                Step::Bad,
                10,
            ),
            ("text", Lexer::content_type, "", Step::Bad, 4),
            ("/plain", Lexer::content_type, "", Step::Bad, 0),
        ];
        for &(input, read, want, step, pos) in cases {
            let mut lexer = Lexer::new(input.as_bytes());
            let mut out = Vec::new();
            let got = read(&mut lexer, &mut out);
            assert_eq!(
                (String::from_utf8_lossy(&out).as_ref(), got, lexer.pos),
                (want, step, pos),
                "{input:?}"
            );
        }
    }

    #[test]
    fn comments() {
        let cases: &[(&str, &str, Step)] = &[
            ("(a (nested) b) x", "a (nested) b", Step::More),
            ("(esc \\) aped)", "esc ) aped", Step::End),
            ("(fold\r\n ed)", "fold ed", Step::End),
            ("(open", "", Step::Bad),
        ];
        for &(input, want, step) in cases {
            let mut lexer = Lexer::new(input.as_bytes());
            lexer.last_comment = Some(Vec::new());
            let got = lexer.skip_lwsp();
            let comment = lexer.last_comment.unwrap_or_default();
            assert_eq!(
                (String::from_utf8_lossy(&comment).as_ref(), got),
                (want, step),
                "{input:?}"
            );
        }
    }

    #[test]
    fn params() {
        let cases: &[(&str, Step, &str, &str)] = &[
            ("; charset=utf-8", Step::More, "charset", "utf-8"),
            (";name=\"a b\"", Step::More, "name", "a b"),
            (
                "; name==?utf-8?b?eA==?= ;",
                Step::More,
                "name",
                "=?utf-8?b?eA==?=",
            ),
            ("; novalue", Step::Bad, "novalue", ""),
            ("garbage", Step::Bad, "", ""),
            ("", Step::End, "", ""),
        ];
        for &(input, step, key, value) in cases {
            let mut lexer = Lexer::new(input.as_bytes());
            let (mut k, mut v) = (Vec::new(), Vec::new());
            let got = lexer.content_param(&mut k, &mut v);
            assert_eq!(got, step, "{input:?}");
            if step == Step::More {
                assert_eq!(
                    (k.as_slice(), v.as_slice()),
                    (key.as_bytes(), value.as_bytes())
                );
            }
        }
    }
}
