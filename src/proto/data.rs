//! Incremental DATA reader (RFC 5321 §4.1.1.4, §4.5.2): dot-unstuffing, end at CRLF.CRLF,
//! bare CR / bare LF refused (SMTP smuggling), size cap without holding the message,
//! Received headers counted (loop detection, §6.3).
//!
//! A byte-level state machine: it keeps a few bytes of state and no line buffer, so input can
//! be split anywhere and memory stays bounded whatever the client sends.

/// What `DataReader::feed` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataStatus {
    /// All input consumed; the end has not been seen yet.
    NeedMore,
    /// The terminating CRLF.CRLF was consumed.
    Done(DataSummary),
    /// A CR not followed by LF, or an LF not preceded by CR.
    BareLineEnding,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSummary {
    /// Size of the unstuffed message (all of it, even past the cap).
    pub size: u64,
    /// `size` went over the cap: `out` stopped receiving bytes at that point.
    pub too_big: bool,
    /// Header lines named `Received` in the header section.
    pub received_headers: u32,
}

/// Where the reader stands in the line structure of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// After a CRLF (or right after the DATA command, whose CRLF counts as the one before).
    LineStart,
    /// A `.` at the start of a line: the end marker or a stuffed dot, decided by the next byte.
    Dot,
    /// `.` CR at the start of a line: only LF may follow (it ends the message).
    DotCr,
    /// Inside a line.
    Mid,
    /// A CR inside the message: only LF may follow.
    Cr,
    /// The end marker was consumed.
    Done,
    /// A bare CR or LF was seen; nothing more is read.
    Bare,
}

#[derive(Debug, Clone)]
pub struct DataReader {
    state: State,
    max_size: u64,
    size: u64,
    headers: HeaderCounter,
}

impl DataReader {
    pub fn new(max_size: u64) -> DataReader {
        DataReader {
            state: State::LineStart,
            max_size,
            size: 0,
            headers: HeaderCounter::default(),
        }
    }

    /// Consumes a prefix of `input`, appending the unstuffed message bytes (CRLF line endings,
    /// the final CRLF before the dot included, the dot line excluded) to `out` while under the
    /// cap. Returns how many bytes were consumed and the status; bytes after the terminating
    /// CRLF.CRLF are not consumed (they are the next pipelined command).
    ///
    /// On `BareLineEnding` the count includes the byte that revealed it. Once the reader has
    /// finished (either way), further calls consume nothing and repeat the final status.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, DataStatus) {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done | State::Bare => break,
                State::Mid => i += self.scan_line(&input[i..], out),
                _ => i += self.step(input[i], out),
            }
        }
        (i, self.status())
    }

    fn status(&self) -> DataStatus {
        match self.state {
            State::Done => DataStatus::Done(DataSummary {
                size: self.size,
                too_big: self.size > self.max_size,
                received_headers: self.headers.count,
            }),
            State::Bare => DataStatus::BareLineEnding,
            _ => DataStatus::NeedMore,
        }
    }

    /// Copies ordinary line bytes in one slice, up to and including a CR (which is kept
    /// pending) or an LF (which is bare). Returns how many bytes were consumed.
    fn scan_line(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let end = memchr::memchr2(b'\r', b'\n', input);
        let Some(end) = end else {
            self.emit(input, out);
            return input.len();
        };
        self.emit(&input[..end], out);
        // RFC 5321 §2.3.8: lines end with CRLF only; a lone LF is the smuggling vector.
        self.state = if input[end] == b'\r' {
            State::Cr
        } else {
            State::Bare
        };
        end + 1
    }

    /// Looks at one byte in a line-boundary state; returns 1 if it consumed it, 0 if it only
    /// moved to `Mid` (the byte then starts a run copied by `scan_line`).
    fn step(&mut self, b: u8, out: &mut Vec<u8>) -> usize {
        let (next, consumed) = match (self.state, b) {
            (State::LineStart, b'.') => (State::Dot, 1),
            (State::LineStart, b'\r') => (State::Cr, 1),
            (State::LineStart, b'\n') => (State::Bare, 1),
            // RFC 5321 §4.1.1.4: CRLF "." CRLF ends the message.
            (State::Dot, b'\r') => (State::DotCr, 1),
            (State::Dot, b'\n') => (State::Bare, 1),
            // RFC 5321 §4.5.2: the first dot of a line is removed; what follows it is data
            // (a second dot included).
            (State::LineStart | State::Dot, _) => (State::Mid, 0),
            (State::DotCr, b'\n') => (State::Done, 1),
            (State::Cr, b'\n') => {
                self.emit(b"\r\n", out);
                (State::LineStart, 1)
            }
            (State::DotCr | State::Cr, _) => (State::Bare, 1),
            // `feed` never calls this in these states.
            (s @ (State::Mid | State::Done | State::Bare), _) => (s, 0),
        };
        self.state = next;
        consumed
    }

    /// Appends unstuffed message bytes, counting all of them but storing only up to the cap.
    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        let room = self.max_size.saturating_sub(self.size);
        let keep = usize::try_from(room).map_or(bytes.len(), |r| r.min(bytes.len()));
        out.extend_from_slice(&bytes[..keep]);
        self.size = self.size.saturating_add(bytes.len() as u64);
        self.headers.feed(bytes);
    }
}

/// Counts `Received:` header lines in the header section (RFC 5322 §2.2: a header field is
/// `name ":"`; §3.6.7 allows whitespace before the colon in the obsolete syntax), fed with the
/// unstuffed message bytes. The reader guarantees CR is always followed by LF.
#[derive(Debug, Clone, Copy, Default)]
struct HeaderCounter {
    state: HeaderState,
    count: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum HeaderState {
    #[default]
    LineStart,
    /// This many bytes of `received` matched at the start of the line.
    Name(usize),
    /// `received` followed by blanks: a colon makes it a Received header.
    Blanks,
    /// The rest of a line that is not (or no longer) interesting.
    Rest,
    /// After the empty line: the body is not looked at.
    Body,
}

const RECEIVED: &[u8] = b"received";

impl HeaderCounter {
    fn feed(&mut self, mut bytes: &[u8]) {
        while let Some((&b, rest)) = bytes.split_first() {
            match self.state {
                HeaderState::Body => return,
                HeaderState::Rest => match memchr::memchr(b'\n', bytes) {
                    // Skip the uninteresting rest of the line in one go.
                    Some(n) => {
                        self.state = HeaderState::LineStart;
                        bytes = &bytes[n + 1..];
                    }
                    None => return,
                },
                _ => {
                    self.step(b);
                    bytes = rest;
                }
            }
        }
    }

    fn step(&mut self, b: u8) {
        self.state = match (self.state, b.to_ascii_lowercase()) {
            // The empty line (CRLF at a line start) ends the header section.
            (HeaderState::Body, _) => HeaderState::Body,
            (HeaderState::LineStart, b'\r') => HeaderState::Body,
            (HeaderState::LineStart, b'r') => HeaderState::Name(1),
            (HeaderState::Name(n), c) if n < RECEIVED.len() && c == RECEIVED[n] => {
                HeaderState::Name(n + 1)
            }
            (HeaderState::Name(n), b' ' | b'\t') if n == RECEIVED.len() => HeaderState::Blanks,
            (HeaderState::Blanks, b' ' | b'\t') => HeaderState::Blanks,
            (HeaderState::Name(n), b':') if n == RECEIVED.len() => self.counted(),
            (HeaderState::Blanks, b':') => self.counted(),
            (_, b'\n') => HeaderState::LineStart,
            // Anything else, including a continuation line (starting with a blank).
            _ => HeaderState::Rest,
        };
    }

    fn counted(&mut self) -> HeaderState {
        self.count = self.count.saturating_add(1);
        HeaderState::Rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `chunks` in order; returns the total consumed, the last status and the output.
    fn run_chunks(max: u64, chunks: &[&[u8]]) -> (usize, DataStatus, Vec<u8>) {
        let mut r = DataReader::new(max);
        let mut out = Vec::new();
        let mut total = 0;
        let mut status = DataStatus::NeedMore;
        for chunk in chunks {
            let (n, s) = r.feed(chunk, &mut out);
            assert!(n <= chunk.len());
            total += n;
            status = s;
            if status != DataStatus::NeedMore {
                break;
            }
            assert_eq!(n, chunk.len(), "NeedMore must consume everything");
        }
        (total, status, out)
    }

    fn run(max: u64, input: &[u8]) -> (usize, DataStatus, Vec<u8>) {
        run_chunks(max, &[input])
    }

    fn done(size: u64, received_headers: u32) -> DataStatus {
        DataStatus::Done(DataSummary {
            size,
            too_big: false,
            received_headers,
        })
    }

    /// (input, expected output, expected status, expected consumed).
    type Case = (&'static [u8], &'static [u8], DataStatus, usize);

    fn cases() -> Vec<Case> {
        use DataStatus::{BareLineEnding as Bare, NeedMore};
        vec![
            (b".\r\n", b"", done(0, 0), 3),
            (b"a\r\n.\r\n", b"a\r\n", done(3, 0), 6),
            (b"a\r\nb\r\n.\r\n", b"a\r\nb\r\n", done(6, 0), 9),
            (b"\r\n.\r\n", b"\r\n", done(2, 0), 5),
            (b"..\r\n.\r\n", b".\r\n", done(3, 0), 7),
            (b"...\r\n.\r\n", b"..\r\n", done(4, 0), 8),
            (b".a\r\n.\r\n", b"a\r\n", done(3, 0), 7),
            (b"a.\r\n.b\r\n.\r\n", b"a.\r\nb\r\n", done(7, 0), 11),
            (b"a\r\n.\r\nMAIL FROM:<>\r\n", b"a\r\n", done(3, 0), 6),
            (b"a\r\n.\r\n.\r\n", b"a\r\n", done(3, 0), 6),
            (b"a", b"a", NeedMore, 1),
            (b"a\r", b"a", NeedMore, 2),
            (b"a\r\n.", b"a\r\n", NeedMore, 4),
            (b"a\r\n.\r", b"a\r\n", NeedMore, 5),
            (b"a\r\n..", b"a\r\n.", NeedMore, 5),
            (b"", b"", NeedMore, 0),
            // The message does not end at a dot inside a line or without its CRLF.
            (b"a.\r\n", b"a.\r\n", NeedMore, 4),
            (b". \r\n", b" \r\n", NeedMore, 4),
            // SMTP smuggling (bare line endings around a dot).
            (b"a\n.\nb", b"a", Bare, 2),
            (b"a\r.\rb", b"a", Bare, 3),
            (b"a\n.\r\nb", b"a", Bare, 2),
            (b"a\r\n.\nb", b"a\r\n", Bare, 5),
            (b"a\r\n.\r.\r\n", b"a\r\n", Bare, 6),
            (b"\n", b"", Bare, 1),
            (b"\r\r\n", b"", Bare, 2),
            (b"a\rb\r\n.\r\n", b"a", Bare, 3),
            (b"a\nb\r\n.\r\n", b"a", Bare, 2),
            (b".\n", b"", Bare, 2),
            (b"..\n", b".", Bare, 3),
            (b".\r\r\n", b"", Bare, 3),
            (b"\r\n\n", b"\r\n", Bare, 3),
        ]
    }

    #[test]
    fn table() {
        for (input, want_out, want_status, want_n) in cases() {
            let (n, status, out) = run(1 << 20, input);
            let name = String::from_utf8_lossy(input);
            assert_eq!(status, want_status, "{name:?}");
            assert_eq!(out, want_out, "{name:?}");
            assert_eq!(n, want_n, "{name:?}");
        }
    }

    /// Every way of cutting each case in two, three pieces, and byte by byte, gives the same
    /// result as one feed.
    #[test]
    fn split_invariance() {
        for (input, _, _, _) in cases() {
            let whole = run(1 << 20, input);
            let name = String::from_utf8_lossy(input);
            for i in 0..=input.len() {
                for j in i..=input.len() {
                    let pieces = [&input[..i], &input[i..j], &input[j..]];
                    assert_eq!(run_chunks(1 << 20, &pieces), whole, "{name:?} at {i},{j}");
                }
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(run_chunks(1 << 20, &bytes), whole, "{name:?} byte by byte");
        }
    }

    #[test]
    fn finished_reader_consumes_nothing() {
        let mut r = DataReader::new(100);
        let mut out = Vec::new();
        assert_eq!(r.feed(b".\r\nQUIT\r\n", &mut out), (3, done(0, 0)));
        assert_eq!(r.feed(b"QUIT\r\n", &mut out), (0, done(0, 0)));
        let mut r = DataReader::new(100);
        assert_eq!(r.feed(b"\n", &mut out).1, DataStatus::BareLineEnding);
        assert_eq!(r.feed(b".\r\n", &mut out), (0, DataStatus::BareLineEnding));
        assert!(out.is_empty());
    }

    #[test]
    fn size_cap() {
        let msg = b"0123456789\r\n..x\r\n.\r\n";
        // Unstuffed: "0123456789\r\n.x\r\n" = 16 bytes.
        let cases: &[(u64, bool)] = &[(0, true), (5, true), (12, true), (15, true), (16, false)];
        for &(max, too_big) in cases {
            let (n, status, out) = run(max, msg);
            let want = DataStatus::Done(DataSummary {
                size: 16,
                too_big,
                received_headers: 0,
            });
            assert_eq!((n, status), (msg.len(), want), "max {max}");
            assert_eq!(out, &b"0123456789\r\n.x\r\n"[..max as usize], "max {max}");
        }
    }

    #[test]
    fn size_cap_applies_across_feeds() {
        let mut r = DataReader::new(4);
        let mut out = Vec::new();
        assert_eq!(r.feed(b"abc", &mut out), (3, DataStatus::NeedMore));
        out.clear(); // the caller may write bytes away between feeds
        assert_eq!(r.feed(b"defgh\r\n", &mut out), (7, DataStatus::NeedMore));
        assert_eq!(out, b"d");
        let (_, status) = r.feed(b".\r\n", &mut out);
        assert_eq!(
            status,
            DataStatus::Done(DataSummary {
                size: 10,
                too_big: true,
                received_headers: 0
            })
        );
    }

    #[test]
    fn received_headers() {
        let cases: &[(&[u8], u32)] = &[
            (b"Received: a\r\nReceived: b\r\n\r\nbody\r\n", 2),
            (b"received:a\r\nRECEIVED :b\r\nReceived\t \t: c\r\n", 3),
            (
                b"Received: a\r\n\tReceived: folded\r\n Received: folded\r\n",
                1,
            ),
            (b"Received: a\r\n\r\nReceived: in body\r\n", 1),
            (b"\r\nReceived: in body\r\n", 0),
            (
                b"Received-SPF: pass\r\nX-Received: x\r\nReceivedx: y\r\n",
                0,
            ),
            (b"Received x: a\r\nReceived\r\nRe: Received:\r\n", 0),
            (b"Subject: Received: x\r\nReceived: y\r\n", 1),
            // Dot-unstuffing happens first: `.Received:` is a stuffed `Received:`.
            (b".Received: a\r\n", 1),
        ];
        for &(headers, want) in cases {
            let mut input = headers.to_vec();
            input.extend_from_slice(b".\r\n");
            let (_, status, _) = run(1 << 20, &input);
            let name = String::from_utf8_lossy(headers);
            match status {
                DataStatus::Done(s) => assert_eq!(s.received_headers, want, "{name:?}"),
                other => panic!("{name:?}: {other:?}"),
            }
            // Split anywhere, the count is the same.
            for i in 0..=input.len() {
                let (_, split, _) = run_chunks(1 << 20, &[&input[..i], &input[i..]]);
                assert_eq!(split, run(1 << 20, &input).1, "{name:?} at {i}");
            }
        }
    }

    #[test]
    fn big_runs_are_copied_whole() {
        let line = vec![b'x'; 100_000];
        let mut input = line.clone();
        input.extend_from_slice(b"\r\n.\r\n");
        let (n, status, out) = run(1 << 20, &input);
        assert_eq!(n, input.len());
        assert_eq!(status, done(100_002, 0));
        assert_eq!(&out[..100_000], &line[..]);
    }

    /// The straightforward line-by-line implementation: (status, output, consumed).
    fn reference(input: &[u8]) -> (DataStatus, Vec<u8>, usize) {
        let mut out = Vec::new();
        let mut p = 0;
        loop {
            let rest = &input[p..];
            let end = rest.iter().position(|&b| b == b'\r' || b == b'\n');
            let line = &rest[..end.unwrap_or(rest.len())];
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
            let Some(end) = end else {
                return (DataStatus::NeedMore, out, input.len());
            };
            match (rest[end], rest.get(end + 1)) {
                (b'\r', None) => return (DataStatus::NeedMore, out, input.len()),
                (b'\r', Some(b'\n')) if line == b"." => {
                    let summary = DataSummary {
                        size: out.len() as u64,
                        too_big: false,
                        received_headers: reference_received(&out),
                    };
                    return (DataStatus::Done(summary), out, p + end + 2);
                }
                (b'\r', Some(b'\n')) => out.extend_from_slice(b"\r\n"),
                _ => return (DataStatus::BareLineEnding, out, 0),
            }
            p += end + 2;
        }
    }

    fn reference_received(msg: &[u8]) -> u32 {
        let text = String::from_utf8_lossy(msg);
        let headers = text.split("\r\n").take_while(|l| !l.is_empty());
        let is_received = |l: &&str| {
            l.get(..8)
                .is_some_and(|n| n.eq_ignore_ascii_case("received"))
                && l[8..].trim_start_matches([' ', '\t']).starts_with(':')
        };
        headers.filter(is_received).count() as u32
    }

    fn tokens() -> impl Strategy<Value = Vec<u8>> {
        let token = prop::sample::select(vec![
            &b"\r"[..],
            b"\n",
            b".",
            b"a",
            b"\r\n",
            b"\r\n.",
            b"\r\n.\r\n",
            b"Received:",
            b"received \t",
            b" ",
            b":",
        ]);
        prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
    }

    proptest! {
        #[test]
        fn matches_reference(
            input in tokens(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            cap in 0u64..64,
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for c in cuts.into_iter().chain([input.len()]) {
                pieces.push(&input[last..c]);
                last = c;
            }
            let (want_status, want_out, want_n) = reference(&input);
            let (n, status, out) = run_chunks(u64::MAX, &pieces);
            prop_assert_eq!(&status, &want_status);
            prop_assert_eq!(&out, &want_out);
            if status != DataStatus::BareLineEnding {
                prop_assert_eq!(n, want_n);
            }
            // With a cap: same size, truncated output.
            let (_, capped, capped_out) = run_chunks(cap, &pieces);
            let keep = want_out.len().min(cap as usize);
            prop_assert_eq!(&capped_out[..], &want_out[..keep]);
            if let (DataStatus::Done(c), DataStatus::Done(w)) = (capped, want_status) {
                prop_assert_eq!(c.size, w.size);
                prop_assert_eq!(c.too_big, w.size > cap);
                prop_assert_eq!(c.received_headers, w.received_headers);
            }
        }

        #[test]
        fn never_panics(input in prop::collection::vec(any::<u8>(), 0..300), cap in 0u64..400) {
            let mut r = DataReader::new(cap);
            let mut out = Vec::new();
            let (n, _) = r.feed(&input, &mut out);
            prop_assert!(n <= input.len());
            prop_assert!(out.len() as u64 <= cap);
        }
    }
}
