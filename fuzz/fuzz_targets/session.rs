//! The SMTP server session (`proto::session::Session`) as a whole, sans-I/O: a client's
//! byte stream in fuzzer-chosen segments, with the outputs drained after each one the way
//! the I/O driver (and the session's own test harness) does.
//!
//! Byte 0 picks the listener and whether TLS is on; the rest is a split plan and the stream
//! (src/lib.rs). Checks: every reply is well-formed on the wire, message bytes handed out
//! for one message never exceed the size cap, nothing comes out after `Close`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tambo::proto::command::{ForwardPath, ReversePath};
use tambo::proto::reply::Reply;
use tambo::proto::session::{SmtpPort, Output, PeerInfo, Policy, Session, SessionConfig};
use tambo_fuzz::{chunks, split_plan};

const MAX_SIZE: u64 = 200;

/// The session tests' policy: example.test is local, everything else is relay.
struct FuzzPolicy;

impl Policy for FuzzPolicy {
    type Rcpt = String;
    fn check_sender(&self, peer: &PeerInfo, from: &ReversePath) -> Result<(), Reply> {
        match (peer.auth_user.as_deref(), from) {
            (Some(user), ReversePath::Addr(a)) if a.to_string() != user => {
                Err(Reply::new(553, "5.7.1", "Sender not allowed"))
            }
            _ => Ok(()),
        }
    }
    fn check_recipient(
        &self,
        _peer: &PeerInfo,
        _from: &ReversePath,
        to: &ForwardPath,
    ) -> Result<String, Reply> {
        match to {
            ForwardPath::Postmaster => Ok("postmaster".into()),
            ForwardPath::Addr(a) if a.domain().as_str() == "example.test" => Ok(a.to_string()),
            ForwardPath::Addr(_) => Err(Reply::new(554, "5.7.1", "Relay access denied")),
        }
    }
}

struct Driver {
    session: Session<String>,
    closed: bool,
    /// Message bytes handed out since the last DataStart.
    message: u64,
    in_message: bool,
}

impl Driver {
    fn drain(&mut self) {
        while let Some(out) = self.session.poll(&FuzzPolicy) {
            assert!(!self.closed, "output after Close: {out:?}");
            match out {
                Output::Reply(r) => check_reply(&r),
                Output::Refusal { reply, .. } => {
                    assert!(reply.is_error(), "a refusal with {reply:?}");
                    check_reply(&reply);
                }
                Output::StartTls => self.session.tls_established(),
                Output::Authenticate { user, password } => {
                    let ok = user == "alice@example.test" && password == "secret";
                    self.session.auth_result(ok.then_some(user));
                }
                Output::DataStart => {
                    assert!(!self.in_message, "DataStart twice");
                    self.in_message = true;
                    self.message = 0;
                }
                Output::DataChunk(c) => {
                    assert!(self.in_message, "DataChunk outside a message");
                    self.message += c.len() as u64;
                    assert!(
                        self.message <= MAX_SIZE,
                        "{} bytes over the cap",
                        self.message
                    );
                }
                Output::DataEnd(summary) => {
                    assert!(self.in_message, "DataEnd outside a message");
                    assert_eq!(summary.size, self.message);
                    self.in_message = false;
                    self.session.data_result(Ok("Q1".into()));
                }
                Output::DataAbort => {
                    assert!(self.in_message, "DataAbort outside a message");
                    self.in_message = false;
                }
                Output::Close => self.closed = true,
            }
        }
        if self.closed {
            assert!(self.session.is_closed());
        }
    }
}

/// RFC 5321 §4.2: every line is a 3-digit code, `-` or space, text, CRLF; no CR or LF
/// inside (a client's text echoed in a reply must not inject lines).
fn check_reply(reply: &Reply) {
    assert!((200..600).contains(&reply.code), "{reply:?}");
    let wire = reply.to_bytes();
    assert!(wire.ends_with(b"\r\n"), "{reply:?}");
    for line in wire[..wire.len() - 2].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(!line.contains(&b'\r'), "bare CR in {reply:?}");
        assert!(line.len() >= 4, "{reply:?}");
        assert!(line[..3].iter().all(u8::is_ascii_digit), "{reply:?}");
        assert!(matches!(line[3], b' ' | b'-'), "{reply:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let kind = match mode % 3 {
        0 => SmtpPort::Mx,
        1 => SmtpPort::Submission,
        _ => SmtpPort::SubmissionTls,
    };
    let config = SessionConfig {
        hostname: "mx.example.test".into(),
        kind,
        max_message_size: MAX_SIZE,
        max_recipients: 3,
        tls_available: mode & 0x10 != 0,
    };
    let tls = kind == SmtpPort::SubmissionTls || mode & 0x20 != 0;
    let mut driver = Driver {
        session: Session::new(config, tls),
        closed: false,
        message: 0,
        in_message: false,
    };
    driver.drain();
    let (plan, stream) = split_plan(rest);
    for piece in chunks(plan, stream) {
        driver.session.feed(piece);
        driver.drain();
        driver.session.release_buffers();
    }
    // The driver stops at Close; an idle limit only ends a live session.
    if !driver.closed {
        driver.session.timed_out();
        driver.drain();
    }
});
