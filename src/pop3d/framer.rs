//! Lines cut from the client's byte stream, sans-I/O, with a bounded buffer: a line too
//! long is answered once and skipped up to its end, never held.

/// What the framer found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A whole line, without its CRLF (or bare LF).
    Complete(Vec<u8>),
    /// A line longer than the limit was skipped (its end has arrived).
    TooLong,
}

pub struct Framer {
    buf: Vec<u8>,
    /// Where the next line starts in `buf`.
    start: usize,
    limit: usize,
    /// Skipping the rest of a line that was too long.
    skipping: bool,
}

impl Framer {
    /// A framer whose lines hold at most `limit` octets.
    pub fn new(limit: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            start: 0,
            limit,
            skipping: false,
        }
    }

    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next line, if a whole one (or the end of a skipped one) has arrived.
    pub fn next_line(&mut self) -> Option<Line> {
        let pending = &self.buf[self.start..];
        let Some(lf) = memchr::memchr(b'\n', pending) else {
            if pending.len() > self.limit {
                // Bounded: what is past the limit is dropped as it comes.
                self.skipping = true;
                self.buf.clear();
                self.start = 0;
            }
            return None;
        };
        let line = &pending[..lf];
        self.start += lf + 1;
        if std::mem::take(&mut self.skipping) {
            return Some(Line::TooLong);
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > self.limit {
            return Some(Line::TooLong);
        }
        Some(Line::Complete(line.to_vec()))
    }

    /// Drops what was received and not yet taken (RFC 2595 §4: nothing the client sent
    /// after STLS is taken as a command once TLS is up).
    pub fn discard_input(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.skipping = false;
    }

    /// Octets received and not yet taken.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(framer: &mut Framer) -> Vec<Line> {
        std::iter::from_fn(|| framer.next_line()).collect()
    }

    #[test]
    fn cuts_lines_from_pieces() {
        let mut f = Framer::new(16);
        f.feed(b"STAT\r\nLI");
        assert_eq!(lines(&mut f), [Line::Complete(b"STAT".to_vec())]);
        f.feed(b"ST\r\nNOOP\nQUIT\r");
        assert_eq!(
            lines(&mut f),
            [
                Line::Complete(b"LIST".to_vec()),
                Line::Complete(b"NOOP".to_vec())
            ]
        );
        assert_eq!(f.pending(), 5);
        f.feed(b"\n");
        assert_eq!(lines(&mut f), [Line::Complete(b"QUIT".to_vec())]);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn long_lines_are_skipped_without_being_held() {
        let mut f = Framer::new(8);
        f.feed(b"USER 0123456789");
        assert_eq!(f.next_line(), None);
        assert_eq!(f.pending(), 0, "dropped as it came");
        f.feed(&[b'x'; 1000]);
        assert_eq!(f.next_line(), None);
        assert!(f.pending() <= 1000);
        f.feed(b"yy\r\nSTAT\r\n");
        assert_eq!(
            lines(&mut f),
            [Line::TooLong, Line::Complete(b"STAT".to_vec())]
        );
        f.feed(b"123456789\r\nNOOP\r\n");
        assert_eq!(
            lines(&mut f),
            [Line::TooLong, Line::Complete(b"NOOP".to_vec())]
        );
    }

    #[test]
    fn discard_drops_pipelined_input() {
        let mut f = Framer::new(64);
        f.feed(b"STLS\r\nUSER evil\r\n");
        assert_eq!(f.next_line(), Some(Line::Complete(b"STLS".to_vec())));
        f.discard_input();
        assert_eq!(f.next_line(), None);
    }
}
