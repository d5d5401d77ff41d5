//! The message as IMAP sees it: stored with LF line ends (sometimes CRLF), sent with CRLF
//! (RFC 3501 §2.3.1.1 counts sizes in those octets). Sizes are counted and windows of the
//! converted bytes cut without converting the whole message.

/// The size of `data` once every LF without a CR before it has one (RFC822.SIZE, the
/// sizes in BODYSTRUCTURE, the offsets of a partial FETCH).
pub fn crlf_size(data: &[u8]) -> u64 {
    let bare = memchr::memchr_iter(b'\n', data)
        .filter(|&i| i == 0 || data[i - 1] != b'\r')
        .count();
    (data.len() + bare) as u64
}

/// The number of lines (LFs) in `data`, as BODYSTRUCTURE counts them.
pub fn line_count(data: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', data).count() as u64
}

/// Appends the octets `start..start + len` of `data` converted to CRLF (all of it with
/// `len` = `u64::MAX`). NULs become 0x80, as Dovecot sends them: a literal may not hold a
/// NUL (RFC 3501 §4.3).
pub fn append_window(out: &mut Vec<u8>, data: &[u8], start: u64, len: u64) {
    let from = out.len();
    let mut w = Window {
        out,
        pos: 0,
        start,
        end: start.saturating_add(len),
    };
    let mut last = 0;
    for i in memchr::memchr_iter(b'\n', data) {
        if w.pos >= w.end {
            break;
        }
        w.put(&data[last..i]);
        if i == 0 || data[i - 1] != b'\r' {
            w.put(b"\r");
        }
        w.put(b"\n");
        last = i + 1;
    }
    w.put(&data[last..]);
    for c in &mut out[from..] {
        if *c == 0 {
            *c = 0x80;
        }
    }
}

/// A writer that keeps only the octets at positions `start..end` of what goes through it.
struct Window<'o> {
    out: &'o mut Vec<u8>,
    pos: u64,
    start: u64,
    end: u64,
}

impl Window<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let (a, b) = (self.pos, self.pos + bytes.len() as u64);
        self.pos = b;
        if b <= self.start || a >= self.end {
            return;
        }
        // Both bounds lie inside `bytes`, whose length is a usize.
        let from = (self.start.saturating_sub(a)) as usize;
        let to = (self.end.min(b) - a) as usize;
        self.out.extend_from_slice(&bytes[from..to]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let cases: &[(&[u8], u64, u64)] = &[
            (b"", 0, 0),
            (b"a\nb\n", 6, 2),
            (b"a\r\nb\r\n", 6, 2),
            (b"\n\n", 4, 2),
            (b"mixed\r\nends\nhere", 17, 2),
            (b"no end", 6, 0),
            (b"lone\rcr\n", 9, 1),
        ];
        for &(data, size, lines) in cases {
            assert_eq!(
                (crlf_size(data), line_count(data)),
                (size, lines),
                "{data:?}"
            );
        }
    }

    #[test]
    fn windows() {
        let data = b"ab\ncd\r\nef\n\0";
        let cases: &[(u64, u64, &[u8])] = &[
            (0, u64::MAX, b"ab\r\ncd\r\nef\r\n\x80"),
            (0, 3, b"ab\r"),
            (3, 2, b"\nc"),
            (2, 1, b"\r"),
            (10, 100, b"\r\n\x80"),
            (13, 5, b""),
            (100, 5, b""),
            (0, 0, b""),
        ];
        for &(start, len, want) in cases {
            let mut out = b"keep".to_vec();
            append_window(&mut out, data, start, len);
            assert_eq!(&out[4..], want, "<{start}.{len}>");
            assert_eq!(&out[..4], b"keep");
        }
        let whole = {
            let mut out = Vec::new();
            append_window(&mut out, data, 0, u64::MAX);
            out
        };
        assert_eq!(whole.len() as u64, crlf_size(data));
    }
}
