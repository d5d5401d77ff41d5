//! IMAP strings in responses (RFC 3501 §4.3, §9 `nstring`): quoted when the value allows it,
//! a literal otherwise; and the whitespace clean-up Dovecot applies to the fields meant for
//! people (subjects and display names).

use std::io::Write as _;

/// Appends `value` as an IMAP `nstring`: `NIL` for none.
pub fn nstring(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.extend_from_slice(b"NIL"),
        Some(v) => string(out, v),
    }
}

/// Appends `value` as an IMAP `string`. RFC 3501 §9: a quoted string holds 7-bit characters
/// other than CR, LF and NUL, with `"` and `\` escaped; anything else goes in a literal
/// (`{n}` CRLF, then the octets). NUL is allowed in neither: it becomes U+FFFD, as Dovecot
/// does with NULs in header values.
pub fn string(out: &mut Vec<u8>, value: &[u8]) {
    let quotable = value
        .iter()
        .all(|&c| c != 0 && c != b'\r' && c != b'\n' && c < 0x80);
    if quotable {
        out.push(b'"');
        for &c in value {
            if c == b'"' || c == b'\\' {
                out.push(b'\\');
            }
            out.push(c);
        }
        out.push(b'"');
        return;
    }
    let nuls = value.iter().filter(|&&c| c == 0).count();
    // U+FFFD is three octets where the NUL was one.
    let len = value.len() + 2 * nuls;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{{{len}}}\r\n");
    if nuls == 0 {
        out.extend_from_slice(value);
        return;
    }
    for &c in value {
        match c {
            0 => out.extend_from_slice("\u{FFFD}".as_bytes()),
            c => out.push(c),
        }
    }
}

/// Appends a value shown to people (a subject, a display name), as Dovecot's
/// `imap_append_string_for_humans` shapes it: every run of spaces, tabs, CRs and LFs becomes
/// one space, and leading and trailing ones go. The octets are otherwise kept: encoded words
/// (RFC 2047) stay encoded, 8-bit text stays as it came (in a literal).
pub fn human_string(out: &mut Vec<u8>, value: &[u8]) {
    let lwsp = |c: &u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    let tidy = !value.iter().any(|c| matches!(c, b'\t' | b'\r' | b'\n'))
        && !value.starts_with(b" ")
        && !value.ends_with(b" ")
        && !value.windows(2).any(|w| w == b"  ");
    if tidy {
        string(out, value);
        return;
    }
    let mut clean = Vec::with_capacity(value.len());
    for word in value.split(lwsp).filter(|w| !w.is_empty()) {
        if !clean.is_empty() {
            clean.push(b' ');
        }
        clean.extend_from_slice(word);
    }
    string(out, &clean);
}

/// Appends `value` with its line ends taken out, as Dovecot's `imap_append_nstring_nolf`
/// does for the Date, Message-ID and Content-* values: a CR or LF is dropped when
/// whitespace (or nothing) follows it, and becomes a space otherwise.
pub fn nstring_nolf(out: &mut Vec<u8>, value: Option<&[u8]>) {
    let Some(value) = value else {
        out.extend_from_slice(b"NIL");
        return;
    };
    if !value.iter().any(|&c| c == b'\r' || c == b'\n') {
        string(out, value);
        return;
    }
    let mut clean = Vec::with_capacity(value.len());
    for (i, &c) in value.iter().enumerate() {
        if c != b'\r' && c != b'\n' {
            clean.push(c);
        } else if !matches!(value.get(i + 1), None | Some(b' ' | b'\t' | b'\r' | b'\n')) {
            clean.push(b' ');
        }
    }
    string(out, &clean);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: fn(&mut Vec<u8>, &[u8]), value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        f(&mut out, value);
        out
    }

    #[test]
    fn strings() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b"\"\""),
            (b"plain text", b"\"plain text\""),
            (b"a \"quoted\" \\ back", b"\"a \\\"quoted\\\" \\\\ back\""),
            (b"tab\tstays quoted", b"\"tab\tstays quoted\""),
            (b"caf\xc3\xa9", b"{5}\r\ncaf\xc3\xa9"),
            (b"two\r\nlines", b"{10}\r\ntwo\r\nlines"),
            (b"bare\nlf", b"{7}\r\nbare\nlf"),
            (b"a\0b", b"{5}\r\na\xef\xbf\xbdb"),
        ];
        for (value, want) in cases {
            assert_eq!(
                run(string, value),
                *want,
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn human_strings() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b"\"\""),
            (b"hello world", b"\"hello world\""),
            (b"  lots   of \t space  ", b"\"lots of space\""),
            (b"folded\r\n line", b"\"folded line\""),
            (b" \t ", b"\"\""),
            (b"J\xc3\xb6rg  B", b"{7}\r\nJ\xc3\xb6rg B"),
            (b"=?utf-8?q?J=C3=B6rg?=", b"\"=?utf-8?q?J=C3=B6rg?=\""),
        ];
        for (value, want) in cases {
            assert_eq!(
                run(human_string, value),
                *want,
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn nolf_strings() {
        let nolf = |out: &mut Vec<u8>, v: &[u8]| nstring_nolf(out, Some(v));
        let cases: &[(&[u8], &[u8])] = &[
            (b"Mon, 7 Dec 2026", b"\"Mon, 7 Dec 2026\""),
            (b"Mon,\n 7 Dec", b"\"Mon, 7 Dec\""),
            (b"<a@b>\n<c@d>", b"\"<a@b> <c@d>\""),
            (b"end\n", b"\"end\""),
            (b"cr\r\n\tlf", b"\"cr\tlf\""),
        ];
        for (value, want) in cases {
            assert_eq!(
                run(nolf, value),
                *want,
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
        let mut out = Vec::new();
        nstring_nolf(&mut out, None);
        nstring(&mut out, None);
        assert_eq!(out, b"NILNIL");
    }
}
