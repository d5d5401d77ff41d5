//! A message file as RETR and TOP send it (RFC 1939 §3, §7), sans-I/O and in pieces: bare
//! LF line ends become CRLF, a line starting with `.` gets another one (byte-stuffing), and
//! TOP stops after the header section and the wanted number of body lines. The file is read
//! in chunks and each is encoded as it comes: a message is never held whole.

/// The encoder of one message's lines.
#[derive(Debug)]
pub struct Encoder {
    /// Nothing of the current line has been written yet.
    line_start: bool,
    /// The last octet written of the current line is a CR (a LF after it needs none).
    prev_cr: bool,
    /// Octets of the current line so far (capped: only 0, 1 and more matter).
    line_len: u8,
    /// Still in the header section (before its empty line).
    header: bool,
    /// TOP: body lines still to send; `None` for RETR (all).
    body_lines: Option<u64>,
    done: bool,
}

impl Encoder {
    /// RETR with `None`, TOP with `Some(lines)`.
    pub fn new(body_lines: Option<u64>) -> Encoder {
        Encoder {
            line_start: true,
            prev_cr: false,
            line_len: 0,
            header: true,
            body_lines,
            done: false,
        }
    }

    /// Encodes the next chunk of the file into `out`. False once nothing more is wanted
    /// (TOP has its lines): the caller may stop reading.
    pub fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> bool {
        let mut rest = chunk;
        while !self.done && !rest.is_empty() {
            if self.line_start && !self.header && self.body_lines == Some(0) {
                self.done = true;
                break;
            }
            match memchr::memchr(b'\n', rest) {
                Some(lf) => {
                    self.put(&rest[..lf], out);
                    self.end_line(out);
                    rest = &rest[lf + 1..];
                }
                None => {
                    self.put(rest, out);
                    rest = &[];
                }
            }
        }
        !self.done
    }

    /// The end of the response: a CRLF when the file did not end with a line end, then the
    /// terminating `.` line.
    pub fn finish(self, out: &mut Vec<u8>) {
        if !self.line_start {
            out.extend_from_slice(if self.prev_cr { b"\n" } else { b"\r\n" });
        }
        out.extend_from_slice(b".\r\n");
    }

    fn put(&mut self, part: &[u8], out: &mut Vec<u8>) {
        let Some(&last) = part.last() else {
            return;
        };
        // RFC 1939 §3: byte-stuffing of lines that start with the termination octet.
        if self.line_start && part[0] == b'.' {
            out.push(b'.');
        }
        out.extend_from_slice(part);
        self.line_start = false;
        self.prev_cr = last == b'\r';
        self.line_len = self.line_len.saturating_add(part.len().min(2) as u8);
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        let empty = self.line_len == 0 || (self.line_len == 1 && self.prev_cr);
        if !self.prev_cr {
            out.push(b'\r');
        }
        out.push(b'\n');
        if self.header {
            self.header = !empty;
        } else if let Some(n) = &mut self.body_lines {
            *n = n.saturating_sub(1);
        }
        (self.line_start, self.prev_cr, self.line_len) = (true, false, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole message at once, the obvious way, for comparison.
    fn reference(data: &[u8], top: Option<u64>) -> Vec<u8> {
        let text = data.to_vec();
        let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
        let ended = text.ends_with(b"\n");
        if ended || text.is_empty() {
            lines.pop();
        }
        let mut out = Vec::new();
        let mut header = true;
        let mut body = 0u64;
        for line in lines {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !header && top.is_some_and(|t| body >= t) {
                break;
            }
            if line.starts_with(b".") {
                out.push(b'.');
            }
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
            if header && line.is_empty() {
                header = false;
            } else if !header {
                body += 1;
            }
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    fn encoded(data: &[u8], top: Option<u64>, chunk: usize) -> Vec<u8> {
        let mut e = Encoder::new(top);
        let mut out = Vec::new();
        for piece in data.chunks(chunk.max(1)) {
            if !e.encode(piece, &mut out) {
                break;
            }
        }
        e.finish(&mut out);
        out
    }

    const MESSAGES: &[&[u8]] = &[
        b"Subject: a\n\nbody\n",
        b"Subject: a\r\n\r\nbody\r\n.\r\n..two\r\nlast",
        b"Subject: b\nX: y\n\n.\n.hidden\nline 3\nline 4\n",
        b"Subject: no body\n",
        b"Subject: no end",
        b"",
        b"\n\n\n",
        b".starts with a dot\n\nx\n",
        b"A: b\r\n\r\n\r\n\r\nx\r",
    ];

    #[test]
    fn retr_and_top_in_any_pieces_match_the_whole() {
        for data in MESSAGES {
            for top in [None, Some(0), Some(1), Some(2), Some(99_999_999)] {
                let want = reference(data, top);
                for chunk in [1, 2, 3, 7, 4096] {
                    let got = encoded(data, top, chunk);
                    assert_eq!(
                        String::from_utf8_lossy(&got),
                        String::from_utf8_lossy(&want),
                        "{:?} top {top:?} chunk {chunk}",
                        String::from_utf8_lossy(data)
                    );
                }
            }
        }
    }

    #[test]
    fn examples() {
        let cases: &[(&[u8], Option<u64>, &[u8])] = &[
            (b"A: b\n\n.\n", None, b"A: b\r\n\r\n..\r\n.\r\n"),
            (
                b"A: b\r\n\r\nx\r\ny\r\n",
                Some(1),
                b"A: b\r\n\r\nx\r\n.\r\n",
            ),
            (b"A: b\n\nx\n", Some(0), b"A: b\r\n\r\n.\r\n"),
            (b"A: b\n\nx", None, b"A: b\r\n\r\nx\r\n.\r\n"),
            (b"A: \rb\n", None, b"A: \rb\r\n.\r\n"),
        ];
        for (data, top, want) in cases {
            assert_eq!(encoded(data, *top, 4096), *want, "{data:?}");
        }
    }

    #[test]
    fn retr_sends_the_crlf_size_plus_stuffing() {
        let data = b"Subject: x\n\nline\r\n.dot\nend\n";
        let out = encoded(data, None, 5);
        let size = crate::mailbox::summary::crlf_size(data) as usize;
        // One stuffed dot, and the ".\r\n" terminator.
        assert_eq!(out.len(), size + 1 + 3);
    }
}
