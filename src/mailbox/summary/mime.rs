//! The MIME structure of a message (RFC 2045, RFC 2046 §5.1): where each part's header and
//! body lie in the stored bytes. Boundaries are found the way Dovecot's `message-parser.c`
//! finds them, so part numbers and sizes agree with Dovecot's on the same Maildir:
//!
//! - a boundary line is `--` and a boundary that is a prefix of the rest of the line (the
//!   longest of those open wins); the line end before it belongs to the boundary;
//! - a boundary line of an outer multipart ends the inner parts too; a header section ends
//!   at a boundary line even without its empty line (and an empty line right before a
//!   boundary line is that line's line end, not the header's end);
//! - `--boundary--` closes a multipart; what follows (the epilogue) is its body until an
//!   outer boundary;
//! - a part without Content-Type is text/plain, or message/rfc822 inside multipart/digest;
//!   Content-* fields count only in a MIME part (a MIME-Version or Content-Type field, or a
//!   part of a multipart);
//! - at most [`MAX_DEPTH`] levels and [`MAX_PARTS`] parts: deeper multiparts and messages
//!   become opaque parts, and past the part limit no boundary is looked for.
//!
//! No octet is copied: parts are ranges of the message.

use std::ops::Range;

use super::header;
use super::params::MimeFields;

/// Nesting limit, Dovecot's parser default counted as it counts: the message is level 0, and
/// a multipart or message/rfc822 part at level `MAX_DEPTH - 1` is opaque.
pub const MAX_DEPTH: usize = 100;
/// Part limit for a whole message (Dovecot's parser default), the message itself included.
pub const MAX_PARTS: usize = 10_000;
/// Longest boundary kept (RFC 2046 §5.1.1 allows 70; Dovecot keeps 80).
const BOUNDARY_MAX: usize = 80;
/// How much of a last line without LF is compared with boundaries.
const BOUNDARY_LINE_MAX: usize = BOUNDARY_MAX + 4;

/// What a part is, for BODYSTRUCTURE and for part numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// text/* (and the default): BODYSTRUCTURE counts its lines.
    Text,
    /// multipart/*: its parts are the children.
    Multipart,
    /// message/rfc822: its one child is the message inside.
    Message,
    /// Any other type.
    Basic,
    /// A multipart or message past the limits: shown as application/octet-stream.
    Opaque,
}

#[derive(Debug)]
pub struct Part {
    /// The header section, with the empty line that ends it when there is one.
    pub header: Range<usize>,
    pub body: Range<usize>,
    pub kind: Kind,
    /// The MIME fields (empty for a part that is not MIME).
    pub mime: MimeFields,
    pub children: Vec<Part>,
}

impl Part {
    /// The header section without its empty line.
    pub fn fields<'a>(&self, message: &'a [u8]) -> header::Fields<'a> {
        header::fields(&message[self.header.clone()])
    }
}

/// The MIME structure of `message`; never fails (anything unreadable is a text part).
pub fn parse(message: &[u8]) -> Part {
    let mut parser = Parser {
        msg: message,
        boundaries: Vec::new(),
        parts: 1,
    };
    parser.part(0, 0, Context::Root).0
}

/// Where the header section that starts at `start` ends (after its empty line) when no
/// boundary is open: the header and body of a message that is not looked into.
pub fn header_end(message: &[u8], start: usize) -> usize {
    let mut pos = start;
    while pos < message.len() {
        let end = memchr::memchr(b'\n', &message[pos..]).map_or(message.len(), |i| pos + i + 1);
        let line = &message[pos..end];
        pos = end;
        if line == b"\n" || line == b"\r\n" {
            break;
        }
    }
    pos
}

/// Where a part sits: what its defaults are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    Root,
    /// A part of a multipart: always MIME; message/rfc822 by default inside a digest.
    InMultipart {
        digest: bool,
    },
    /// The message inside a message/rfc822 part.
    InMessage,
}

/// Why a body ended.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Eof,
    Boundary {
        /// Which open boundary (index into `Parser::boundaries`).
        index: usize,
        /// Where the part before ends: at the line end before the boundary line.
        at: usize,
        /// Where the boundary line starts.
        line: usize,
        /// After the boundary line.
        next: usize,
        /// `--boundary--`.
        close: bool,
        /// The boundary line ended a header section. Its line end then belongs to the
        /// body of the parts that hold that header, up to the multipart of the boundary
        /// (Dovecot moves it to the parent's body): a message/rfc822 part whose message has
        /// no body ends after it.
        in_header: bool,
    },
}

impl Stop {
    fn in_header(mut self) -> Stop {
        if let Stop::Boundary { in_header, .. } = &mut self {
            *in_header = true;
        }
        self
    }

    /// Where a part that holds the part this stop ended ends.
    fn outer_end(self) -> Option<usize> {
        match self {
            Stop::Boundary {
                in_header: true,
                line,
                ..
            } => Some(line),
            _ => None,
        }
    }
}

struct Parser<'a> {
    msg: &'a [u8],
    /// Open boundaries, innermost last.
    boundaries: Vec<Vec<u8>>,
    /// Parts so far.
    parts: usize,
}

impl Parser<'_> {
    fn part(&mut self, start: usize, depth: usize, context: Context) -> (Part, Stop) {
        let (mut part, own, header_stop) = self.head(start, depth, context);
        let body_start = part.body.start;
        if let Some(stop) = header_stop {
            // A boundary line ended the header: the body is empty, and a message/rfc822
            // part holds an empty message.
            if part.kind == Kind::Message {
                part.children.push(empty_part(body_start));
            }
            return (part, stop);
        }
        let stop = match (part.kind, own) {
            (Kind::Multipart, Some(own)) => self.multipart(&mut part, own, depth),
            (Kind::Message, _) if depth + 1 >= MAX_DEPTH || self.parts >= MAX_PARTS => {
                part.kind = Kind::Opaque;
                self.leaf(&mut part)
            }
            (Kind::Message, _) => {
                self.parts += 1;
                let (child, stop) = self.part(body_start, depth + 1, Context::InMessage);
                part.body.end = stop.outer_end().unwrap_or(child.body.end);
                part.children.push(child);
                stop
            }
            _ => self.leaf(&mut part),
        };
        (part, stop)
    }

    /// A part as its header makes it (its body still empty), its boundary if it is a
    /// multipart, and the boundary line that ended its header early, if one did.
    fn head(
        &mut self,
        start: usize,
        depth: usize,
        context: Context,
    ) -> (Part, Option<Vec<u8>>, Option<Stop>) {
        let (mut header, empty_line, mut header_stop) = self.header(start);
        let mut mime = MimeFields::default();
        for field in header::fields(&self.msg[header.clone()]) {
            mime.add(&field);
        }
        let is_mime = matches!(context, Context::InMultipart { .. })
            || mime.mime_version
            || mime.content_type.is_some();
        if !is_mime {
            mime = MimeFields::default();
        }
        let mut kind = kind(&mime, context);
        if kind == Kind::Multipart && depth + 1 >= MAX_DEPTH {
            kind = Kind::Opaque;
        }
        let own = match kind {
            Kind::Multipart => mime
                .param("boundary")
                .map(|b| b[..b.len().min(BOUNDARY_MAX)].to_vec()),
            _ => None,
        };
        if empty_line > 0 && header_stop.is_none() {
            // An empty line right before a boundary line is that line's line end, not the
            // header's end (unless the boundary is the part's own, which Dovecot opens as
            // it reaches the empty line).
            header_stop = self.boundary_after_header(header.end, empty_line, own.as_deref());
            if header_stop.is_some() {
                header.end -= empty_line;
            }
        }
        let body = header.end..header.end;
        let part = Part {
            header,
            body,
            kind,
            mime,
            children: Vec::new(),
        };
        (part, own, header_stop)
    }

    /// Reads the header section at `start`: its range (with its empty line), the length of
    /// that empty line (0 without one), and the boundary line that ended it early, if one
    /// did.
    fn header(&self, start: usize) -> (Range<usize>, usize, Option<Stop>) {
        let mut pos = start;
        let mut last_newline = 0;
        while pos < self.msg.len() {
            if let Some(stop) = self.boundary_at(pos, pos - last_newline, start) {
                let end = pos - last_newline;
                return (start..end, 0, Some(stop.in_header()));
            }
            let rest = &self.msg[pos..];
            let (line_len, newline) = match memchr::memchr(b'\n', rest) {
                Some(i) if i > 0 && rest[i - 1] == b'\r' => (i + 1, 2),
                Some(i) => (i + 1, 1),
                None => (rest.len(), 0),
            };
            pos += line_len;
            if line_len == newline && line_len > 0 {
                return (start..pos, newline, None);
            }
            last_newline = newline;
        }
        (start..pos, 0, None)
    }

    /// The boundary line right after a header's empty line (which ends at `pos` and is
    /// `empty_line` long), unless it is the part's `own` boundary.
    fn boundary_after_header(
        &mut self,
        pos: usize,
        empty_line: usize,
        own: Option<&[u8]>,
    ) -> Option<Stop> {
        let own_index = own.map(|text| {
            self.boundaries.push(text.to_vec());
            self.boundaries.len() - 1
        });
        let stop = self.boundary_at(pos, pos - empty_line, pos - empty_line);
        if own_index.is_some() {
            self.boundaries.pop();
        }
        match stop {
            Some(Stop::Boundary { index, .. }) if Some(index) == own_index => None,
            stop => stop.map(Stop::in_header),
        }
    }

    /// A body without parts: up to the next boundary line.
    fn leaf(&mut self, part: &mut Part) -> Stop {
        let stop = self.scan(part.body.start);
        part.body.end = self.end_of(stop);
        stop
    }

    fn multipart(&mut self, part: &mut Part, boundary: Vec<u8>, depth: usize) -> Stop {
        let digest = part
            .mime
            .media_type()
            .is_some_and(|(_, sub)| sub.eq_ignore_ascii_case(b"digest"));
        let own = self.boundaries.len();
        self.boundaries.push(boundary);
        // The preamble.
        let mut stop = self.scan(part.body.start);
        loop {
            match stop {
                Stop::Boundary {
                    index,
                    next,
                    close: false,
                    ..
                } if index == own => {
                    self.parts += 1;
                    let context = Context::InMultipart { digest };
                    let (child, child_stop) = self.part(next, depth + 1, context);
                    part.children.push(child);
                    stop = child_stop;
                }
                Stop::Boundary {
                    index,
                    next,
                    close: true,
                    ..
                } if index == own => {
                    // The epilogue, up to an outer boundary.
                    self.boundaries.truncate(own);
                    stop = self.scan(next);
                    break;
                }
                // The end, or an outer multipart's boundary.
                _ => break,
            }
        }
        self.boundaries.truncate(own);
        part.body.end = stop.outer_end().unwrap_or_else(|| self.end_of(stop));
        stop
    }

    fn end_of(&self, stop: Stop) -> usize {
        match stop {
            Stop::Eof => self.msg.len(),
            Stop::Boundary { at, .. } => at,
        }
    }

    /// The first boundary line at or after `from` (a line start).
    fn scan(&self, from: usize) -> Stop {
        if self.boundaries.is_empty() || self.parts >= MAX_PARTS {
            return Stop::Eof;
        }
        if let Some(stop) = self.boundary_at(from, from, from) {
            return stop;
        }
        let rest = &self.msg[from..];
        for i in memchr::memmem::find_iter(rest, b"\n--") {
            let line = from + i + 1;
            let at = if i > 0 && rest[i - 1] == b'\r' {
                line - 2
            } else {
                line - 1
            };
            if let Some(stop) = self.boundary_at(line, at, from) {
                return stop;
            }
        }
        Stop::Eof
    }

    /// The boundary line at `pos`, if it is one; `at` is where the part before it ends (not
    /// before `floor`).
    fn boundary_at(&self, pos: usize, at: usize, floor: usize) -> Option<Stop> {
        let data = self.msg[pos..].strip_prefix(b"--")?;
        if self.boundaries.is_empty() || self.parts >= MAX_PARTS {
            return None;
        }
        let lf = memchr::memchr(b'\n', data);
        let (line, trailing_dashes) = match lf {
            Some(i) => {
                let line = data[..i].strip_suffix(b"\r").unwrap_or(&data[..i]);
                (line, line.len() > 2 && line.ends_with(b"--"))
            }
            None => (&data[..data.len().min(BOUNDARY_LINE_MAX)], false),
        };
        // The longest open boundary that starts the line, innermost first among equals.
        let mut best: Option<usize> = None;
        for (index, b) in self.boundaries.iter().enumerate().rev() {
            let len = b.len();
            if !line.starts_with(b) || best.is_some_and(|i| self.boundaries[i].len() >= len) {
                continue;
            }
            best = Some(index);
            if len == line.len() || (trailing_dashes && len == line.len() - 2) {
                break;
            }
        }
        let index = best?;
        let len = self.boundaries[index].len();
        Some(Stop::Boundary {
            index,
            at: at.max(floor),
            line: pos,
            next: lf.map_or(self.msg.len(), |i| pos + 2 + i + 1),
            close: data.get(len..len + 2) == Some(b"--"),
            in_header: false,
        })
    }
}

fn kind(mime: &MimeFields, context: Context) -> Kind {
    let Some((t, sub)) = mime.media_type() else {
        // No Content-Type, or one that does not parse: RFC 2045 §5.2's default, and
        // RFC 2046 §5.1.5's inside a digest.
        return match context {
            Context::InMultipart { digest: true } => Kind::Message,
            _ => Kind::Text,
        };
    };
    if t.eq_ignore_ascii_case(b"message") && sub.eq_ignore_ascii_case(b"rfc822") {
        Kind::Message
    } else if t.eq_ignore_ascii_case(b"text") {
        Kind::Text
    } else if t.eq_ignore_ascii_case(b"multipart") {
        Kind::Multipart
    } else {
        Kind::Basic
    }
}

fn empty_part(at: usize) -> Part {
    Part {
        header: at..at,
        body: at..at,
        kind: Kind::Text,
        mime: MimeFields::default(),
        children: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree as `kind[header_len+body_len](children)`.
    fn show(p: &Part) -> String {
        let k = match p.kind {
            Kind::Text => "T",
            Kind::Multipart => "M",
            Kind::Message => "R",
            Kind::Basic => "B",
            Kind::Opaque => "O",
        };
        let kids: Vec<String> = p.children.iter().map(show).collect();
        let kids = if kids.is_empty() {
            String::new()
        } else {
            format!("({})", kids.join(","))
        };
        format!("{k}[{}+{}]{kids}", p.header.len(), p.body.len())
    }

    #[test]
    fn structures() {
        let cases: &[(&str, &str)] = &[
            ("Subject: x\n\nbody\n", "T[12+5]"),
            ("Subject: x\n", "T[11+0]"),
            ("", "T[0+0]"),
            ("\nbody", "T[1+4]"),
            // Content-Type counts without MIME-Version (as in Dovecot).
            ("Content-Type: image/png\n\nx", "B[25+1]"),
            (
                "Content-Type: multipart/mixed; boundary=b\n\npre\n--b\n\none\n--b\nContent-Type: text/html\n\n<p>\n--b--\nepi\n",
                "M[43+56](T[1+3],T[25+3])",
            ),
            // CRLF: the CRLF before a boundary line belongs to it.
            (
                "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b--\r\n",
                "M[45+19](T[2+3])",
            ),
            // A header ended by a boundary line, and an empty body right before one.
            (
                "Content-Type: multipart/mixed; boundary=b\n\n--b\nX: y\n--b\n\n--b--\n",
                "M[43+20](T[4+0],T[0+0])",
            ),
            // Nested, with an outer boundary ending the inner multipart.
            (
                "Content-Type: multipart/mixed; boundary=out\n\n--out\nContent-Type: multipart/alternative; boundary=in\n\n--in\n\na\n--out\n\nb\n--out--\n",
                "M[45+81](M[50+7](T[1+1]),T[1+1])",
            ),
            // The longest boundary wins (a prefix of the other).
            (
                "Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Type: multipart/mixed; boundary=ab\n\n--ab\n\nx\n--a--\n",
                "M[43+62](M[44+7](T[1+1]))",
            ),
            // message/rfc822, and the default inside multipart/digest.
            (
                "Content-Type: message/rfc822\n\nSubject: in\n\nhi\n",
                "R[30+16](T[13+3])",
            ),
            (
                "Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: in\n\nhi\n--d--\n",
                "M[44+27](R[1+15](T[13+2]))",
            ),
            // multipart without a boundary, and a missing close.
            ("Content-Type: multipart/mixed\n\n--x\n", "M[31+4]"),
            (
                "Content-Type: multipart/mixed; boundary=b\n\n--b\n\nopen",
                "M[43+9](T[1+4])",
            ),
            // A Content-Type that does not parse: text/plain.
            (
                "Content-Type: multipart/mixed boundary=b\n\n--b\n",
                "T[42+4]",
            ),
        ];
        for (message, want) in cases {
            assert_eq!(show(&parse(message.as_bytes())), *want, "{message:?}");
        }
    }

    #[test]
    fn limits() {
        // Nested messages past MAX_DEPTH end as an opaque part.
        let deep = "Content-Type: message/rfc822\n\n".repeat(MAX_DEPTH + 5) + "x\n";
        let mut part = &parse(deep.as_bytes());
        let mut depth = 0;
        while let Some(child) = part.children.first() {
            part = child;
            depth += 1;
        }
        assert_eq!((depth, part.kind), (MAX_DEPTH - 1, Kind::Opaque));
        // Past MAX_PARTS parts no boundary is seen: the rest is in the last part.
        let mut many = String::from("Content-Type: multipart/mixed; boundary=b\n\n");
        for _ in 0..MAX_PARTS + 10 {
            many.push_str("--b\n\nx\n");
        }
        let root = parse(many.as_bytes());
        assert_eq!(root.children.len(), MAX_PARTS - 1);
    }
}
