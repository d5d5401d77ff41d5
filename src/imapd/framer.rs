//! Cuts the bytes an IMAP client sends into commands (RFC 3501 §2.2, §4.3): lines, and the
//! literals announced at their ends (`{n}` synchronizing, `{n+}` non-synchronizing, RFC 7888),
//! before any grammar is parsed. Sans-I/O: bytes in, [`Event`]s out.
//!
//! Memory stays bounded whatever the client sends: a command may hold at most
//! `Limits::command` octets (lines and literals together); beyond that the command is read to
//! its end and discarded, and [`Event::TooLong`] says so, so the stream stays in step (a
//! literal is never taken for a command). The one exception is the message literal of
//! APPEND, which may be as large as a message: it is not held but handed out in pieces
//! ([`Event::SpoolStart`], [`Event::SpoolChunk`]) for the driver to write to disk, and the
//! command then carries an empty literal in its place.

use memchr::memchr;

/// How much a command may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Octets of one command held in memory: its lines and its literals.
    pub command: usize,
    /// An APPEND message literal larger than `inline` goes to the spool, up to `spooled`
    /// octets; 0 refuses spooling (before login).
    pub spooled: u64,
}

/// What a discarded command keeps of its start, to answer with its tag.
const TAG_ROOM: usize = 80;

/// An APPEND literal up to this size stays in the command; a larger one is spooled.
pub const INLINE_LITERAL: u64 = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A whole command, literals in place (a spooled one replaced by `{0}` and nothing), and
    /// the length of the spooled literal when there was one.
    Command {
        bytes: Vec<u8>,
        spooled: Option<u64>,
    },
    /// The client waits for a continuation before sending a literal it announced (`{n}`):
    /// the driver writes `+ ...` (RFC 3501 §7.5).
    Continue,
    /// An APPEND message literal of `len` octets starts: what follows goes to the spool.
    SpoolStart {
        len: u64,
    },
    SpoolChunk(Vec<u8>),
    /// A command longer than the limits (or a literal larger than allowed) was discarded; the
    /// driver answers BAD with `tag` (untagged without one). A synchronizing literal that was
    /// refused is not sent by the client, and the command ends there.
    TooLong {
        tag: Option<String>,
    },
}

#[derive(Debug)]
enum State {
    /// Reading a line of the command.
    Line,
    /// Taking `left` octets of a literal into the command (or discarding them).
    Literal { left: u64, keep: bool },
    /// Handing `left` octets of the APPEND literal out.
    Spool { left: u64 },
}

#[derive(Debug)]
pub struct Framer {
    input: Vec<u8>,
    /// Where in `input` the next unprocessed byte is.
    pos: usize,
    state: State,
    /// The command so far.
    command: Vec<u8>,
    /// The command passed a limit: read on to its end, then report it.
    discarding: bool,
    /// Length of the literal spooled in this command.
    spooled: Option<u64>,
    limits: Limits,
    pending: std::collections::VecDeque<Event>,
}

impl Framer {
    pub fn new(limits: Limits) -> Framer {
        Framer {
            input: Vec::new(),
            pos: 0,
            state: State::Line,
            command: Vec::new(),
            discarding: false,
            spooled: None,
            limits,
            pending: Default::default(),
        }
    }

    /// New limits, from the next command on (after login).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.input.len() {
            self.input.clear();
            self.pos = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// Forgets whatever was received and not yet framed: after STARTTLS, what the client sent
    /// behind the command must not be taken as sent over TLS (RFC 3501 §6.2.1, RFC 2595 §3.1).
    pub fn discard_input(&mut self) {
        self.input.clear();
        self.pos = 0;
    }

    /// Octets received and not yet framed (a client that pipelines ahead).
    pub fn buffered(&self) -> usize {
        self.input.len() - self.pos
    }

    /// The next event, or `None` when more input is needed.
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if !self.step() {
                self.compact();
                return None;
            }
        }
    }

    /// Makes progress on the input; false when it needs more.
    fn step(&mut self) -> bool {
        match self.state {
            State::Line => self.line(),
            State::Literal { left, keep } => self.literal(left, keep),
            State::Spool { left } => self.spool(left),
        }
    }

    fn line(&mut self) -> bool {
        let rest = &self.input[self.pos..];
        let Some(lf) = memchr(b'\n', rest) else {
            // A line without its end yet: keep it, unless it is already too long.
            if self.command.len() + rest.len() > self.limits.command {
                let rest = rest.to_vec();
                self.start_discarding(&rest);
                self.pos = self.input.len();
            }
            return false;
        };
        let line = rest[..=lf].to_vec();
        self.pos += lf + 1;
        if !self.discarding {
            if self.command.len() + line.len() > self.limits.command {
                self.start_discarding(&line);
            } else {
                self.command.extend_from_slice(&line);
            }
        }
        match literal_announced(&line) {
            Some((len, sync)) => self.literal_announced(len, sync),
            None => self.finish(),
        }
        true
    }

    /// The command passed its limit: from here on it is only read to its end. What it began
    /// with is kept (a little of it) for its tag.
    fn start_discarding(&mut self, line: &[u8]) {
        if !self.discarding && self.command.is_empty() {
            self.command
                .extend_from_slice(&line[..line.len().min(TAG_ROOM)]);
        }
        self.discarding = true;
    }

    /// The line just read ends with `{len}` or `{len+}`.
    fn literal_announced(&mut self, len: u64, sync: bool) {
        if !self.discarding && self.spool_this(len) {
            // The command carries an empty literal in its place: `{0}`.
            let mark = self.command.len() - marker_len(&self.command);
            self.command.truncate(mark);
            self.command.extend_from_slice(b"{0}\r\n");
            self.spooled = Some(len);
            if sync {
                self.pending.push_back(Event::Continue);
            }
            self.pending.push_back(Event::SpoolStart { len });
            self.state = State::Spool { left: len };
            return;
        }
        let fits = !self.discarding
            && (self.command.len() as u64).saturating_add(len) <= self.limits.command as u64;
        if sync && !fits {
            // RFC 3501 §7.5: without our "+", the client does not send the literal; what it
            // sends next is a new command.
            let tag = self.tag();
            self.reset();
            self.pending.push_back(Event::TooLong { tag });
            return;
        }
        if sync {
            self.pending.push_back(Event::Continue);
        }
        if !fits {
            // RFC 7888 §4: a non-synchronizing literal is on its way whatever we say: read it
            // and drop it.
            self.discarding = true;
        }
        self.state = State::Literal {
            left: len,
            keep: fits,
        };
    }

    /// An APPEND whose message literal is larger than what stays in memory.
    fn spool_this(&self, len: u64) -> bool {
        len > INLINE_LITERAL && len <= self.limits.spooled && self.spooled.is_none() && {
            let mut words = self.command.split(|&b| b == b' ');
            let _tag = words.next();
            words
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case(b"APPEND"))
        }
    }

    fn literal(&mut self, left: u64, keep: bool) -> bool {
        let available = (self.input.len() - self.pos) as u64;
        if available == 0 {
            return false;
        }
        let take = available.min(left) as usize;
        if keep {
            self.command
                .extend_from_slice(&self.input[self.pos..self.pos + take]);
        }
        self.pos += take;
        let left = left - take as u64;
        self.state = if left == 0 {
            State::Line
        } else {
            State::Literal { left, keep }
        };
        true
    }

    fn spool(&mut self, left: u64) -> bool {
        let available = (self.input.len() - self.pos) as u64;
        if available == 0 {
            return false;
        }
        let take = available.min(left) as usize;
        let chunk = self.input[self.pos..self.pos + take].to_vec();
        self.pos += take;
        self.pending.push_back(Event::SpoolChunk(chunk));
        let left = left - take as u64;
        self.state = if left == 0 {
            State::Line
        } else {
            State::Spool { left }
        };
        true
    }

    /// The command is complete.
    fn finish(&mut self) {
        let event = if self.discarding {
            Event::TooLong { tag: self.tag() }
        } else {
            Event::Command {
                bytes: std::mem::take(&mut self.command),
                spooled: self.spooled,
            }
        };
        self.reset();
        self.pending.push_back(event);
    }

    fn reset(&mut self) {
        self.command.clear();
        self.command.shrink_to(4096);
        self.discarding = false;
        self.spooled = None;
        self.state = State::Line;
    }

    /// The tag of the command being read, when it has a valid one (RFC 3501 §9: tag is
    /// 1*<any ASTRING-CHAR except "+">).
    fn tag(&self) -> Option<String> {
        let end = self.command.iter().position(|&b| b == b' ')?;
        let tag = &self.command[..end];
        let valid = !tag.is_empty()
            && tag.len() <= 64
            && tag
                .iter()
                .all(|&b| b.is_ascii_graphic() && !b"(){%*\"\\+".contains(&b));
        valid.then(|| String::from_utf8_lossy(tag).into_owned())
    }

    /// Drops what was framed from the input buffer, so it does not grow with the session.
    fn compact(&mut self) {
        if self.pos > 0 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        if self.input.capacity() > 64 * 1024 && self.input.len() < 4096 {
            self.input.shrink_to(4096);
        }
    }
}

/// `{n}` or `{n+}` at the end of a line (before CRLF): the literal's length and whether it
/// is synchronizing.
fn literal_announced(line: &[u8]) -> Option<(u64, bool)> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let mut digits = &inner[open + 1..];
    let sync = match digits.strip_suffix(b"+") {
        Some(d) => {
            digits = d;
            false
        }
        None => true,
    };
    // RFC 3501 §9: number = 1*DIGIT, at most 4294967295.
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (n <= u32::MAX as u64).then_some((n, sync))
}

/// Length of the `{n}` / `{n+}` marker and line end at the end of `command`.
fn marker_len(command: &[u8]) -> usize {
    let open = command
        .iter()
        .rposition(|&b| b == b'{')
        .unwrap_or(command.len());
    command.len() - open
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        command: 1000,
        spooled: 10_000_000,
    };

    /// Every event, feeding `input` in pieces of `step` octets.
    fn frame(limits: Limits, input: &[u8], step: usize) -> Vec<Event> {
        let mut f = Framer::new(limits);
        let mut events = Vec::new();
        for chunk in input.chunks(step.max(1)) {
            f.feed(chunk);
            while let Some(e) = f.next_event() {
                events.push(e);
            }
        }
        // Spool chunks come in pieces that depend on `step`: join them for comparison.
        let mut joined: Vec<Event> = Vec::new();
        for e in events {
            match (joined.last_mut(), e) {
                (Some(Event::SpoolChunk(prev)), Event::SpoolChunk(more)) => {
                    prev.extend_from_slice(&more)
                }
                (_, e) => joined.push(e),
            }
        }
        joined
    }

    fn cmd(bytes: &[u8]) -> Event {
        Event::Command {
            bytes: bytes.to_vec(),
            spooled: None,
        }
    }

    #[test]
    fn commands_and_literals_whatever_the_pieces() {
        let cases: Vec<(&[u8], Vec<Event>)> = vec![
            (b"a1 NOOP\r\n", vec![cmd(b"a1 NOOP\r\n")]),
            (
                b"a1 NOOP\r\na2 CAPABILITY\r\n",
                vec![cmd(b"a1 NOOP\r\n"), cmd(b"a2 CAPABILITY\r\n")],
            ),
            // A synchronizing literal: the client waits for "+".
            (
                b"a LOGIN {5}\r\nalice {3}\r\npwd\r\n",
                vec![
                    Event::Continue,
                    Event::Continue,
                    cmd(b"a LOGIN {5}\r\nalice {3}\r\npwd\r\n"),
                ],
            ),
            // LITERAL+: no continuation.
            (
                b"a LOGIN {5+}\r\nalice x\r\n",
                vec![cmd(b"a LOGIN {5+}\r\nalice x\r\n")],
            ),
            // A literal holding CRLF and "{9}" is data, not framing.
            (
                b"a X {7+}\r\n{9}\r\n\r\n y\r\n",
                vec![cmd(b"a X {7+}\r\n{9}\r\n\r\n y\r\n")],
            ),
            // Not literal markers.
            (b"a X {}\r\n", vec![cmd(b"a X {}\r\n")]),
            (b"a X {1x}\r\n", vec![cmd(b"a X {1x}\r\n")]),
            (
                b"a X {99999999999}\r\n",
                vec![cmd(b"a X {99999999999}\r\n")],
            ),
        ];
        for (input, want) in cases {
            for step in [1, 2, 3, 7, 1000] {
                assert_eq!(
                    frame(LIMITS, input, step),
                    want,
                    "{:?} step {step}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn too_long_lines_and_literals_are_discarded_on_the_right_boundary() {
        let long_line = [b"a1 NOOP ".as_slice(), &[b'x'; 2000], b"\r\na2 NOOP\r\n"].concat();
        let big_sync = b"a1 LOGIN {5000}\r\na2 NOOP\r\n".to_vec();
        let mut big_nonsync = b"a1 LOGIN {5000+}\r\n".to_vec();
        big_nonsync.extend(std::iter::repeat_n(b'y', 5000));
        big_nonsync.extend_from_slice(b" more\r\na2 NOOP\r\n");
        let tag = |t: &str| Event::TooLong {
            tag: Some(t.to_string()),
        };
        let cases: Vec<(Vec<u8>, Vec<Event>)> = vec![
            (long_line, vec![tag("a1"), cmd(b"a2 NOOP\r\n")]),
            // Refused before the client sends it: the next line is a new command.
            (big_sync, vec![tag("a1"), cmd(b"a2 NOOP\r\n")]),
            // Sent anyway (LITERAL+): read, dropped, and the command after it is intact.
            (big_nonsync, vec![tag("a1"), cmd(b"a2 NOOP\r\n")]),
            // No tag to answer with.
            (
                [&[b'x'; 2000][..], b"\r\n"].concat(),
                vec![Event::TooLong { tag: None }],
            ),
        ];
        for (input, want) in cases {
            for step in [1, 5, 4096] {
                assert_eq!(frame(LIMITS, &input, step), want, "step {step}");
            }
        }
    }

    #[test]
    fn a_large_append_literal_is_spooled_not_held() {
        let message = vec![b'm'; 100_000];
        let mut input = b"a1 APPEND INBOX (\\Seen) {100000}\r\n".to_vec();
        input.extend_from_slice(&message);
        input.extend_from_slice(b"\r\na2 NOOP\r\n");
        for step in [1000, 65536] {
            let events = frame(LIMITS, &input, step);
            assert_eq!(
                events,
                vec![
                    Event::Continue,
                    Event::SpoolStart { len: 100_000 },
                    Event::SpoolChunk(message.clone()),
                    Event::Command {
                        bytes: b"a1 APPEND INBOX (\\Seen) {0}\r\n\r\n".to_vec(),
                        spooled: Some(100_000),
                    },
                    cmd(b"a2 NOOP\r\n"),
                ]
            );
        }
        // A small one stays in the command; before login nothing is spooled.
        let small = b"a1 APPEND INBOX {3+}\r\nabc\r\n";
        assert_eq!(frame(LIMITS, small, 4), vec![cmd(small)]);
        let no_spool = Limits {
            command: 1000,
            spooled: 0,
        };
        assert_eq!(
            frame(no_spool, b"a1 APPEND INBOX {100000}\r\n", 9),
            vec![Event::TooLong {
                tag: Some("a1".into())
            }]
        );
    }

    #[test]
    fn memory_does_not_follow_what_is_sent() {
        let mut f = Framer::new(LIMITS);
        // A megabyte without a line end: dropped as it comes.
        for _ in 0..16 {
            f.feed(&[b'z'; 65536]);
            assert_eq!(f.next_event(), None);
            assert!(f.command.len() <= LIMITS.command);
            assert!(
                f.input.capacity() <= 2 * 65536 + 4096,
                "{}",
                f.input.capacity()
            );
        }
        f.feed(b"\r\n");
        assert_eq!(f.next_event(), Some(Event::TooLong { tag: None }));
    }
}
