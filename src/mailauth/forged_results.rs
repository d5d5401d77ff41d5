//! Removes, while the message streams into the queue, the Authentication-Results headers that
//! claim to come from us: RFC 8601 §5 says a border MTA must delete such headers arriving from
//! outside, or a forger could hand our users a fake `dkim=pass`. Sans-I/O: bytes in, bytes out.

use crate::mailauth::inbound::strip_our_results;

/// A header field longer than this is not buffered whole: it is decided on its first bytes
/// (an Authentication-Results field is dropped, anything else passed on), so a client cannot
/// make us hold an unbounded header in memory.
const FIELD_CAP: usize = 64 * 1024;

const AR_NAME: &[u8] = b"authentication-results";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// In the header section, buffering the current field in `field`.
    Headers,
    /// In the header section, inside an over-long field already decided: pass or drop the
    /// rest of it (its continuation lines).
    LongField { keep: bool },
    /// After the blank line: everything passes.
    Body,
}

/// Streaming filter over message data (CRLF lines, dot-unstuffed).
#[derive(Debug)]
pub struct ForgedResultsFilter {
    hostname: String,
    mode: Mode,
    /// The current header field so far (its lines, folded, with their line ends).
    field: Vec<u8>,
    /// The current line so far, when a chunk ended inside it.
    line: Vec<u8>,
}

impl ForgedResultsFilter {
    pub fn new(hostname: &str) -> ForgedResultsFilter {
        ForgedResultsFilter {
            hostname: hostname.to_string(),
            mode: Mode::Headers,
            field: Vec::new(),
            line: Vec::new(),
        }
    }

    /// True once the header section has ended: the caller may then skip the filter.
    pub fn in_body(&self) -> bool {
        self.mode == Mode::Body
    }

    /// Filters `chunk`, appending what is kept to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<u8>) {
        while !chunk.is_empty() {
            if self.mode == Mode::Body {
                out.extend_from_slice(chunk);
                return;
            }
            let (line_part, complete) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..=i], true),
                None => (chunk, false),
            };
            chunk = &chunk[line_part.len()..];
            self.line.extend_from_slice(line_part);
            if complete {
                let line = std::mem::take(&mut self.line);
                self.on_line(line, out);
            } else if self.line.len() > FIELD_CAP {
                // A line without end in sight: treat what we have as a line of its own.
                let line = std::mem::take(&mut self.line);
                self.on_line(line, out);
            }
        }
    }

    /// The message ended: whatever is still buffered is decided and emitted.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.on_line(line, out);
        }
        self.end_field(out);
    }

    fn on_line(&mut self, line: Vec<u8>, out: &mut Vec<u8>) {
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if continuation {
            match self.mode {
                Mode::LongField { keep } => {
                    if keep {
                        out.extend_from_slice(&line);
                    }
                }
                _ => self.append_to_field(&line, out),
            }
            return;
        }
        self.end_field(out);
        if line == b"\r\n" || line == b"\n" {
            // RFC 5322 §2.1: the empty line ends the header section.
            out.extend_from_slice(&line);
            self.mode = Mode::Body;
            return;
        }
        self.append_to_field(&line, out);
    }

    fn append_to_field(&mut self, line: &[u8], out: &mut Vec<u8>) {
        self.field.extend_from_slice(line);
        if self.field.len() > FIELD_CAP {
            let keep = !is_results_field(&self.field);
            if keep {
                out.append(&mut self.field);
            }
            self.field.clear();
            self.mode = Mode::LongField { keep };
        }
    }

    /// Emits the buffered field unless it is one of our forged results.
    fn end_field(&mut self, out: &mut Vec<u8>) {
        if matches!(self.mode, Mode::LongField { .. }) {
            self.mode = Mode::Headers;
        }
        if self.field.is_empty() {
            return;
        }
        if strip_our_results(&self.field, &self.hostname) {
            log::info!("removed an Authentication-Results header forged with our name");
        } else {
            out.extend_from_slice(&self.field);
        }
        self.field.clear();
    }
}

fn is_results_field(field: &[u8]) -> bool {
    field.len() > AR_NAME.len()
        && field[..AR_NAME.len()].eq_ignore_ascii_case(AR_NAME)
        && field[AR_NAME.len()..]
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t'))
            .is_some_and(|&b| b == b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "mx.example.org";

    fn filter_in_chunks(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut f = ForgedResultsFilter::new(HOST);
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            f.feed(piece, &mut out);
        }
        f.finish(&mut out);
        out
    }

    #[test]
    fn strips_ours_keeps_others_at_any_chunking() {
        let input = b"Received: from a\r\n\tby b\r\n\
            Authentication-Results: mx.example.org;\r\n\tdkim=pass header.d=bank.example\r\n\
            Authentication-Results: other.example; spf=pass\r\n\
            ARC-Authentication-Results: i=1; mx.example.org; spf=pass\r\n\
            authentication-results : MX.Example.Org.; dmarc=pass\r\n\
            Subject: hi\r\n\
            \r\n\
            Authentication-Results: mx.example.org; in the body stays\r\n";
        let want = b"Received: from a\r\n\tby b\r\n\
            Authentication-Results: other.example; spf=pass\r\n\
            ARC-Authentication-Results: i=1; mx.example.org; spf=pass\r\n\
            Subject: hi\r\n\
            \r\n\
            Authentication-Results: mx.example.org; in the body stays\r\n";
        for chunk in [1, 2, 3, 7, 16, 1000] {
            assert_eq!(
                String::from_utf8_lossy(&filter_in_chunks(input, chunk)),
                String::from_utf8_lossy(want),
                "chunk size {chunk}"
            );
        }
    }

    #[test]
    fn message_without_body_or_final_newline_is_kept() {
        for input in [
            &b"Subject: x\r\nFrom: a@b"[..],
            b"Subject: x\r\n",
            b"",
            b"no header at all",
        ] {
            assert_eq!(filter_in_chunks(input, 3), input);
        }
        let forged = b"Subject: x\r\nAuthentication-Results: mx.example.org; spf=pass";
        assert_eq!(filter_in_chunks(forged, 5), b"Subject: x\r\n");
    }

    #[test]
    fn over_long_fields_are_decided_without_buffering_them() {
        let mut long_ours = b"Authentication-Results: mx.example.org;".to_vec();
        let mut long_other = b"X-Long: ".to_vec();
        for _ in 0..3000 {
            long_ours.extend_from_slice(b"\r\n\tdkim=pass header.d=bank.example extra");
            long_other.extend_from_slice(b"\r\n\tsome folded text of a long header");
        }
        long_ours.extend_from_slice(b"\r\n");
        long_other.extend_from_slice(b"\r\n");
        let mut input = long_ours.clone();
        input.extend_from_slice(&long_other);
        input.extend_from_slice(b"\r\nbody\r\n");
        let mut want = long_other.clone();
        want.extend_from_slice(b"\r\nbody\r\n");
        let out = filter_in_chunks(&input, 4096);
        assert_eq!(out.len(), want.len());
        assert_eq!(out, want);
    }

    #[test]
    fn reports_body_once_headers_end() {
        let mut f = ForgedResultsFilter::new(HOST);
        let mut out = Vec::new();
        f.feed(b"Subject: x\r\n", &mut out);
        assert!(!f.in_body());
        f.feed(b"\r\nbody", &mut out);
        assert!(f.in_body());
        assert_eq!(out, b"Subject: x\r\n\r\nbody");
    }
}
