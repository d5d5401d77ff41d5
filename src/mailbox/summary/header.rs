//! Header fields of a header section (RFC 5322 §2.2), cut and unfolded the way Dovecot's
//! `message-header-parser.c` does it with the flags its mail storage uses (leading
//! whitespace of a value skipped, CRs of line ends dropped), so that values match Dovecot's.

use std::borrow::Cow;

/// Dovecot takes a line whose "name" is longer than this as a value without a name.
const NAME_MAX: usize = 1000;

/// One header field: its first line and the continuation lines after it.
#[derive(Clone, Copy, Debug)]
pub struct Field<'a> {
    /// The field name, whitespace before the colon left out; empty for a line without a
    /// colon.
    pub name: &'a [u8],
    /// All the field's lines, their line ends included, as stored.
    pub raw: &'a [u8],
    /// Where the value starts in `raw`: after the colon and the whitespace that follows it.
    value_at: usize,
}

impl<'a> Field<'a> {
    /// The value: continuation lines joined with a LF before each (their indentation kept),
    /// CRs before line ends and the final line end left out.
    pub fn value(&self) -> Cow<'a, [u8]> {
        let text = &self.raw[self.value_at..];
        let first_end = memchr::memchr(b'\n', text).unwrap_or(text.len());
        let rest = text.get(first_end + 1..).unwrap_or_default();
        if rest.is_empty() {
            return Cow::Borrowed(trim_line_end(&text[..first_end]));
        }
        let mut value = trim_line_end(&text[..first_end]).to_vec();
        for line in lines(rest) {
            value.push(b'\n');
            value.extend_from_slice(trim_line_end(line));
        }
        Cow::Owned(value)
    }

    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// The header fields of `header` (a header section without its empty line; one met on the
/// way ends the fields too).
pub fn fields(header: &[u8]) -> Fields<'_> {
    Fields { header, pos: 0 }
}

pub struct Fields<'a> {
    header: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        let rest = &self.header[self.pos..];
        if rest.is_empty() || rest.starts_with(b"\n") || rest.starts_with(b"\r\n") {
            return None;
        }
        // The first line, then every line that starts with whitespace.
        let mut end = line_end(rest, 0);
        while matches!(rest.get(end), Some(b' ' | b'\t')) {
            end = line_end(rest, end);
        }
        let raw = &rest[..end];
        self.pos += end;
        Some(split_field(raw))
    }
}

/// The offset after the line that starts at `from` (after its LF, or the end).
fn line_end(data: &[u8], from: usize) -> usize {
    match memchr::memchr(b'\n', &data[from..]) {
        Some(i) => from + i + 1,
        None => data.len(),
    }
}

fn split_field(raw: &[u8]) -> Field<'_> {
    let first = &raw[..line_end(raw, 0)];
    let Some(colon) = memchr::memchr(b':', first).filter(|&c| name_len(&raw[..c]) <= NAME_MAX)
    else {
        return Field {
            name: b"",
            raw,
            value_at: 0,
        };
    };
    let name = &raw[..name_len(&raw[..colon])];
    // All whitespace after the colon goes, unless the value is nothing else: then only one
    // space or tab (Dovecot's SKIP_INITIAL_LWSP).
    let line_value = trim_line_end(&first[colon + 1..]);
    let lead = line_value
        .iter()
        .take_while(|&&c| c == b' ' || c == b'\t')
        .count();
    let skip = if lead == line_value.len() {
        lead.min(1)
    } else {
        lead
    };
    Field {
        name,
        raw,
        value_at: colon + 1 + skip,
    }
}

fn name_len(before_colon: &[u8]) -> usize {
    before_colon.len()
        - before_colon
            .iter()
            .rev()
            .take_while(|&&c| c == b' ' || c == b'\t')
            .count()
}

/// `line` without its LF and one CR before it.
fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The lines of `data`, each with its line end.
pub fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (line, tail) = rest.split_at(line_end(rest, 0));
        rest = tail;
        Some(line)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_values() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("Subject: hi\n", &[("Subject", "hi")]),
            (
                "Subject:hi\r\nTo:  a@b  \r\n",
                &[("Subject", "hi"), ("To", "a@b  ")],
            ),
            (
                "Subject: one\n\ttwo\n  three\nX: y\n",
                &[("Subject", "one\n\ttwo\n  three"), ("X", "y")],
            ),
            ("Subject: one\r\n two\r\n", &[("Subject", "one\n two")]),
            ("Name \t: v\n", &[("Name", "v")]),
            ("Empty:\nBlank:   \n", &[("Empty", ""), ("Blank", "  ")]),
            ("no colon here\nA: b", &[("", "no colon here"), ("A", "b")]),
            (" lead: x\n", &[(" lead", "x")]),
            ("A: b\n\nC: d\n", &[("A", "b")]),
            ("A: b\rc\n", &[("A", "b\rc")]),
            ("", &[]),
        ];
        for (header, want) in cases {
            let got: Vec<(String, String)> = fields(header.as_bytes())
                .map(|f| {
                    let name = String::from_utf8_lossy(f.name).into_owned();
                    (name, String::from_utf8_lossy(&f.value()).into_owned())
                })
                .collect();
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            assert_eq!(got, want, "{header:?}");
        }
    }

    #[test]
    fn raw_keeps_the_lines() {
        let header = b"A: 1\r\n 2\nB: 3";
        let raws: Vec<&[u8]> = fields(header).map(|f| f.raw).collect();
        assert_eq!(raws, [&b"A: 1\r\n 2\n"[..], b"B: 3"]);
        let long = format!("{}: v\n", "n".repeat(NAME_MAX + 1));
        let field = fields(long.as_bytes()).next().unwrap();
        assert_eq!((field.name, field.value().len()), (&b""[..], NAME_MAX + 4));
    }
}
