//! A stored message read without holding it whole: its header section (RFC 5322 §2.1: the
//! lines up to the first empty one) in memory, at most [`MAX_HEADER_SECTION`] octets, and its
//! body as a reader, taken in chunks. Whatever a client sends, memory follows this bound and
//! not the size of the message.

use std::io::{self, Read};

/// The largest header section read into memory. Real ones are a few KiB (a long list of
/// Received and ARC headers stays under 100 KiB); a message whose header section is longer is
/// refused where its headers must be read (the checks of port 25), and sent unsigned
/// elsewhere.
pub const MAX_HEADER_SECTION: usize = 1024 * 1024;

/// Read size for the header section and for bodies streamed through a hash or a pipe.
pub const CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("the header section is longer than {} KiB", MAX_HEADER_SECTION / 1024)]
    TooLarge,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A message split at the end of its header section.
pub struct Split<R> {
    /// The header lines and the empty line that ends them (CRLF CRLF); the whole message when
    /// it has no body.
    pub header: Vec<u8>,
    /// What follows the empty line.
    pub body: io::Chain<io::Cursor<Vec<u8>>, R>,
}

/// Reads `message` up to the end of its header section, and leaves the rest to read from
/// [`Split::body`]. Reads at most [`MAX_HEADER_SECTION`] plus one chunk; a small message in
/// one read of `FIRST_READ`.
pub fn split<R: Read>(mut message: R) -> Result<Split<R>, HeaderError> {
    let mut header = Vec::new();
    let mut want = FIRST_READ;
    loop {
        let start = header.len();
        header.resize(start + want, 0);
        let n = read_some(&mut message, &mut header[start..])?;
        header.truncate(start + n);
        if n == 0 {
            // No body: the whole message is its header section.
            return Ok(Split {
                header,
                body: io::Cursor::new(Vec::new()).chain(message),
            });
        }
        // The empty line may straddle two reads: look from 3 octets back.
        if let Some(end) = header_end(&header, start.saturating_sub(3)) {
            let rest = header.split_off(end);
            return Ok(Split {
                header,
                body: io::Cursor::new(rest).chain(message),
            });
        }
        if header.len() > MAX_HEADER_SECTION {
            return Err(HeaderError::TooLarge);
        }
        want = CHUNK;
    }
}

/// The first read: most messages' header sections (and many whole messages) fit.
const FIRST_READ: usize = 8 * 1024;

/// Where the header section ends (just past its empty line), searching from `from`. A message
/// that starts with the empty line has no header lines at all (RFC 5322 §2.1).
fn header_end(data: &[u8], from: usize) -> Option<usize> {
    if data.starts_with(b"\r\n") {
        return Some(2);
    }
    memchr::memmem::find(&data[from..], b"\r\n\r\n").map(|i| from + i + 4)
}

/// `read`, retried on EINTR.
fn read_some(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match reader.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Calls `each` with consecutive chunks of `reader` (at most [`CHUNK`] octets) until its end.
pub fn for_each_chunk(mut reader: impl Read, mut each: impl FnMut(&[u8])) -> io::Result<()> {
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = read_some(&mut reader, &mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        each(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `step` octets per read, to split the empty line across
    /// reads at every position.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn split_all(message: &[u8], step: usize) -> (Vec<u8>, Vec<u8>) {
        let split = split(Trickle {
            data: message,
            step,
        })
        .unwrap();
        let mut body = Vec::new();
        let mut reader = split.body;
        reader.read_to_end(&mut body).unwrap();
        (split.header, body)
    }

    #[test]
    fn splits_at_the_first_empty_line() {
        let cases: [(&[u8], &[u8], &[u8]); 6] = [
            (
                b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore\r\n",
                b"A: 1\r\nB: 2\r\n\r\n",
                b"body\r\n\r\nmore\r\n",
            ),
            (b"A: 1\r\n\r\n", b"A: 1\r\n\r\n", b""),
            // No body at all: the whole message is header.
            (b"A: 1\r\nB: 2\r\n", b"A: 1\r\nB: 2\r\n", b""),
            // No header lines.
            (b"\r\nbody\r\n", b"\r\n", b"body\r\n"),
            (b"", b"", b""),
            // A bare LF pair is not the end (the DATA reader refuses bare LF anyway).
            (b"A: 1\n\nB\r\n\r\nx", b"A: 1\n\nB\r\n\r\n", b"x"),
        ];
        for (message, header, body) in cases {
            for step in [1, 2, 3, 4, 5, 7, 64 * 1024] {
                let (h, b) = split_all(message, step);
                assert_eq!(
                    h,
                    header,
                    "{:?} step {step}",
                    String::from_utf8_lossy(message)
                );
                assert_eq!(
                    b,
                    body,
                    "{:?} step {step}",
                    String::from_utf8_lossy(message)
                );
            }
        }
    }

    #[test]
    fn a_long_body_is_not_read_ahead() {
        let mut message = b"Subject: x\r\n\r\n".to_vec();
        message.extend(std::iter::repeat_n(b'y', 10 * CHUNK));
        let split = split(&message[..]).unwrap();
        assert_eq!(split.header, b"Subject: x\r\n\r\n");
        // What was read past the header is one chunk at most.
        assert!(split.body.get_ref().0.get_ref().len() < CHUNK);
    }

    #[test]
    fn an_endless_header_section_is_refused() {
        let mut message = Vec::new();
        while message.len() <= MAX_HEADER_SECTION + CHUNK {
            message.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
        }
        message.extend_from_slice(b"\r\nbody");
        assert!(matches!(split(&message[..]), Err(HeaderError::TooLarge)));
        // Just under the cap is fine.
        let mut message = Vec::new();
        while message.len() < MAX_HEADER_SECTION - 100 {
            message.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
        }
        message.extend_from_slice(b"\r\nbody");
        assert_eq!(split_all(&message, CHUNK).1, b"body");
    }

    #[test]
    fn chunks_cover_the_reader() {
        let data: Vec<u8> = (0..(3 * CHUNK + 17)).map(|i| i as u8).collect();
        let mut seen = Vec::new();
        for_each_chunk(&data[..], |c| {
            assert!(c.len() <= CHUNK);
            seen.extend_from_slice(c);
        })
        .unwrap();
        assert_eq!(seen, data);
    }
}
