//! Dialog tests of the session state machine: bytes in, replies out, no sockets.

use super::*;
use crate::addr::Address;

/// Accepts recipients in example.test; everything else is a relay attempt.
struct TestPolicy;

impl Policy for TestPolicy {
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

fn config(kind: SmtpPort) -> SessionConfig {
    SessionConfig {
        hostname: "mx.example.test".into(),
        kind,
        max_message_size: 1000,
        max_recipients: 3,
        tls_available: true,
    }
}

/// Drives a session like the driver does, answering Authenticate with alice/secret and
/// DataEnd with queue id "Q1". Returns the wire text and the non-reply outputs seen.
struct Harness {
    session: Session<String>,
    wire: String,
    events: Vec<String>,
    message: Vec<u8>,
    /// What each `Refusal` was about, in order.
    refused: Vec<Subject>,
}

impl Harness {
    fn new(kind: SmtpPort, tls: bool) -> Harness {
        let mut h = Harness {
            session: Session::new(config(kind), tls),
            wire: String::new(),
            events: Vec::new(),
            message: Vec::new(),
            refused: Vec::new(),
        };
        h.drain();
        h
    }

    fn send(&mut self, bytes: &[u8]) -> String {
        let before = self.wire.len();
        self.session.feed(bytes);
        self.drain();
        self.wire[before..].to_string()
    }

    fn drain(&mut self) {
        while let Some(out) = self.session.poll(&TestPolicy) {
            match out {
                Output::Reply(r) => self.wire.push_str(&String::from_utf8_lossy(&r.to_bytes())),
                Output::Refusal { reply, subject } => {
                    assert!(reply.is_error(), "a refusal with {reply:?}");
                    self.wire
                        .push_str(&String::from_utf8_lossy(&reply.to_bytes()));
                    self.refused.push(subject);
                }
                Output::StartTls => {
                    self.events.push("starttls".into());
                    self.session.tls_established();
                }
                Output::Authenticate { user, password } => {
                    self.events.push(format!("auth {user}"));
                    let ok = user == "alice@example.test" && password == "secret";
                    self.session.auth_result(ok.then_some(user));
                }
                Output::DataStart => self.events.push("data-start".into()),
                Output::DataChunk(c) => self.message.extend_from_slice(&c),
                Output::DataEnd(_) => {
                    self.events.push("data-end".into());
                    self.session.data_result(Ok("Q1".into()));
                }
                Output::DataAbort => self.events.push("data-abort".into()),
                Output::Close => self.events.push("close".into()),
            }
        }
    }

    fn codes(&self) -> Vec<u16> {
        self.wire
            .lines()
            .filter(|l| l.as_bytes().get(3) == Some(&b' '))
            .filter_map(|l| l[..3].parse().ok())
            .collect()
    }
}

#[test]
fn greeting_names_the_host() {
    let h = Harness::new(SmtpPort::Mx, false);
    assert_eq!(h.wire, "220 mx.example.test ESMTP tambo\r\n");
}

#[test]
fn ehlo_lists_extensions_without_auth_on_port_25() {
    let mut h = Harness::new(SmtpPort::Mx, false);
    let r = h.send(b"EHLO client.example\r\n");
    for ext in [
        "PIPELINING",
        "8BITMIME",
        "SMTPUTF8",
        "SIZE 1000",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
    ] {
        assert!(r.contains(ext), "{ext} missing in {r}");
    }
    assert!(!r.contains("AUTH"));
}

#[test]
fn auth_offered_on_submission_only_after_tls() {
    let mut h = Harness::new(SmtpPort::Submission, false);
    assert!(!h.send(b"EHLO c\r\n").contains("AUTH"));
    assert!(
        h.send(b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=\r\n")
            .starts_with("538 5.7.11")
    );
    h.send(b"STARTTLS\r\n");
    let r = h.send(b"EHLO c\r\n");
    assert!(
        r.contains("AUTH PLAIN LOGIN") && !r.contains("STARTTLS"),
        "{r}"
    );
}

#[test]
fn whole_transaction_pipelined_in_one_packet() {
    let mut h = Harness::new(SmtpPort::Mx, false);
    h.send(b"EHLO c\r\n");
    let r = h.send(
        b"MAIL FROM:<x@remote.example>\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(
        r,
        "250 2.1.0 OK\r\n250 2.1.5 OK\r\n250 2.1.5 OK\r\n354 Go ahead, end with <CRLF>.<CRLF>\r\n\
         250 2.0.0 OK: queued as Q1\r\n221 2.0.0 Bye\r\n"
    );
    assert_eq!(h.message, b"Subject: hi\r\n\r\nbody\r\n");
    assert_eq!(h.events, ["data-start", "data-end", "close"]);
}

#[test]
fn commands_pipelined_behind_starttls_are_discarded() {
    let mut h = Harness::new(SmtpPort::Mx, false);
    h.send(b"EHLO c\r\n");
    let r = h.send(b"STARTTLS\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<a@example.test>\r\n");
    assert_eq!(r, "220 2.0.0 Ready to start TLS\r\n");
    // After the handshake the session starts over: MAIL needs a new EHLO.
    assert!(
        h.send(b"MAIL FROM:<x@y.example>\r\n")
            .starts_with("503 5.5.1")
    );
    assert_eq!(h.events, ["starttls"]);
}

#[test]
fn relay_denied_and_unknown_verbs() {
    let mut h = Harness::new(SmtpPort::Mx, false);
    h.send(b"EHLO c\r\nMAIL FROM:<x@remote.example>\r\n");
    assert!(
        h.send(b"RCPT TO:<y@elsewhere.example>\r\n")
            .starts_with("554 5.7.1")
    );
    assert!(h.send(b"FOO\r\n").starts_with("500 5.5.1"));
}

#[test]
fn three_errors_close_with_421() {
    let mut h = Harness::new(SmtpPort::Mx, false);
    h.send(b"EHLO c\r\n");
    let r = h.send(b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n");
    assert!(r.ends_with("421 4.5.0 Too many errors, bye\r\n"), "{r}");
    assert!(
        !r.contains("250 2.0.0"),
        "NOOP after the close must not be answered: {r}"
    );
    assert_eq!(h.events, ["close"]);
}

#[test]
fn http_verbs_get_502_and_close() {
    for verb in [
        "GET / HTTP/1.1",
        "POST /x HTTP/1.0",
        "CONNECT host:25 HTTP/1.1",
    ] {
        let mut h = Harness::new(SmtpPort::Mx, false);
        let r = h.send(format!("{verb}\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(r, "502 5.7.0 This is an SMTP server\r\n", "{verb}");
        assert_eq!(h.events, ["close"]);
    }
}

#[test]
fn long_line_gets_500_and_the_session_goes_on() {
    let mut h = Harness::new(SmtpPort::Mx, false);
    h.send(b"EHLO c\r\n");
    let mut long = b"NOOP ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 3000));
    // Arrives in pieces, as over TCP; memory must not hold it whole.
    for piece in long.chunks(700) {
        h.send(piece);
        assert!(h.session.input.len() <= MAX_COMMAND_LINE + 700);
    }
    assert!(h.send(b"\r\n").starts_with("500 5.5.2"));
    assert_eq!(h.send(b"NOOP\r\n"), "250 2.0.0 OK\r\n");
}

#[test]
fn too_many_recipients() {
    let mut h = Harness::new(SmtpPort::Mx, false);
    h.send(b"EHLO c\r\nMAIL FROM:<>\r\n");
    h.send(b"RCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<c@example.test>\r\n");
    assert!(
        h.send(b"RCPT TO:<d@example.test>\r\n")
            .starts_with("452 4.5.3")
    );
}

#[test]
fn declared_size_over_limit_refused_at_mail() {
    let mut h = Harness::new(SmtpPort::Mx, false);
    h.send(b"EHLO c\r\n");
    assert!(
        h.send(b"MAIL FROM:<x@r.example> SIZE=1001\r\n")
            .starts_with("552 5.3.4")
    );
    assert!(
        h.send(b"MAIL FROM:<x@r.example> SIZE=1000\r\n")
            .starts_with("250")
    );
}

#[test]
fn oversize_message_refused_after_data_and_session_goes_on() {
    let mut h = Harness::new(SmtpPort::Mx, false);
    h.send(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.test>\r\nDATA\r\n");
    for _ in 0..50 {
        h.send(&[b'x'; 100]);
        h.send(b"\r\n");
    }
    let r = h.send(b".\r\n");
    assert!(r.starts_with("552 5.3.4"), "{r}");
    assert!(h.message.len() <= 1000, "kept {} bytes", h.message.len());
    assert_eq!(h.events, ["data-start", "data-abort"]);
    assert!(h.send(b"MAIL FROM:<>\r\n").starts_with("250"));
}

#[test]
fn smuggling_variants_are_refused_and_close() {
    let variants: [&[u8]; 4] = [
        b"a\r\n\n.\nMAIL FROM:<e@x.example>\r\n.\r\n",
        b"a\r\n\r.\rMAIL FROM:<e@x.example>\r\n.\r\n",
        b"a\r\n\n.\r\nMAIL FROM:<e@x.example>\r\n.\r\n",
        b"a\r\n.\nMAIL FROM:<e@x.example>\r\n.\r\n",
    ];
    for v in variants {
        let mut h = Harness::new(SmtpPort::Mx, false);
        h.send(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.test>\r\nDATA\r\n");
        let r = h.send(v);
        assert!(
            r.starts_with("521 5.5.2"),
            "{:?}: {r}",
            String::from_utf8_lossy(v)
        );
        assert_eq!(h.events, ["data-start", "data-abort", "close"]);
        assert_eq!(h.codes().iter().filter(|&&c| c == 250).count(), 3); // EHLO, MAIL, RCPT only
    }
}

#[test]
fn mail_loop_detected() {
    let mut h = Harness::new(SmtpPort::Mx, false);
    h.send(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.test>\r\nDATA\r\n");
    let mut msg = String::new();
    for i in 0..51 {
        msg.push_str(&format!("Received: {i}\r\n"));
    }
    msg.push_str("\r\nbody\r\n.\r\n");
    assert!(h.send(msg.as_bytes()).starts_with("554 5.4.6"));
}

#[test]
fn auth_plain_and_sender_check() {
    let mut h = Harness::new(SmtpPort::SubmissionTls, true);
    h.send(b"EHLO c\r\n");
    assert!(
        h.send(b"MAIL FROM:<alice@example.test>\r\n")
            .starts_with("530 5.7.0")
    );
    // \0alice@example.test\0secret
    assert!(
        h.send(b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=\r\n")
            .starts_with("235 2.7.0")
    );
    assert!(
        h.send(b"MAIL FROM:<bob@example.test>\r\n")
            .starts_with("553 5.7.1")
    );
    assert!(
        h.send(b"MAIL FROM:<alice@example.test>\r\n")
            .starts_with("250")
    );
}

#[test]
fn auth_login_exchange_and_wrong_password() {
    let mut h = Harness::new(SmtpPort::SubmissionTls, true);
    h.send(b"EHLO c\r\n");
    assert_eq!(h.send(b"AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(
        h.send(b"YWxpY2VAZXhhbXBsZS50ZXN0\r\n"),
        "334 UGFzc3dvcmQ6\r\n"
    );
    assert!(h.send(b"d3Jvbmc=\r\n").starts_with("535 5.7.8")); // "wrong"
    assert_eq!(h.session.auth_user(), None);
    assert!(h.send(b"AUTH PLAIN\r\n").starts_with("334"));
    assert!(h.send(b"*\r\n").starts_with("501"));
}

#[test]
fn auth_refused_on_port_25_even_with_tls() {
    let mut h = Harness::new(SmtpPort::Mx, true);
    h.send(b"EHLO c\r\n");
    assert!(
        h.send(b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=\r\n")
            .starts_with("503 5.5.1")
    );
    assert_eq!(h.events, Vec::<String>::new());
}

#[test]
fn sequencing_errors() {
    let mut h = Harness::new(SmtpPort::Mx, false);
    assert!(h.send(b"MAIL FROM:<>\r\n").starts_with("503 5.5.1"));
    h.send(b"EHLO c\r\n");
    assert!(h.send(b"DATA\r\n").starts_with("503 5.5.1"));
}

#[test]
fn empty_message_and_dot_unstuffing() {
    let mut h = Harness::new(SmtpPort::Mx, false);
    h.send(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.test>\r\nDATA\r\n");
    h.send(b"..leading dot\r\n.\r\n");
    assert_eq!(h.message, b".leading dot\r\n");
    let _ = Address::parse("a@example.test");
}

#[test]
fn idle_timeout_says_421_once() {
    let mut h = Harness::new(SmtpPort::Mx, false);
    h.session.timed_out();
    h.drain();
    assert!(
        h.wire.ends_with("421 4.4.2 Idle timeout, bye\r\n"),
        "{}",
        h.wire
    );
    let before = h.wire.len();
    h.session.timed_out();
    h.drain();
    assert_eq!(h.wire.len(), before, "nothing more after the close");
}

fn recipient(addr: &str) -> Subject {
    Subject::Recipient(ForwardPath::Addr(Address::parse(addr).unwrap()))
}

#[test]
fn refused_rcpts_name_their_recipient() {
    let mut h = Harness::new(SmtpPort::Mx, false);
    h.send(b"EHLO c\r\n");
    assert!(
        h.send(b"RCPT TO:<Early@Example.test>\r\n")
            .starts_with("503")
    );
    h.send(b"MAIL FROM:<x@remote.example>\r\n");
    assert!(h.send(b"RCPT TO:<a@example.test>\r\n").starts_with("250"));
    assert!(
        h.send(b"RCPT TO:<y@elsewhere.example>\r\n")
            .starts_with("554")
    );
    assert_eq!(
        h.refused,
        [
            recipient("Early@example.test"),
            recipient("y@elsewhere.example")
        ]
    );

    let mut h = Harness::new(SmtpPort::Mx, false);
    h.send(b"EHLO c\r\nMAIL FROM:<x@remote.example>\r\n");
    let r = h.send(b"RCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<c@example.test>\r\nRCPT TO:<d@example.test>\r\n");
    assert!(r.ends_with("452 4.5.3 Too many recipients\r\n"), "{r}");
    assert_eq!(h.refused, [recipient("d@example.test")]);
    // Errors that are about no recipient or login stay plain replies.
    h.send(b"FOO\r\n");
    assert_eq!(h.refused.len(), 1);
}

#[test]
fn refused_logins_name_the_user_never_the_password() {
    let mut h = Harness::new(SmtpPort::SubmissionTls, true);
    h.send(b"EHLO c\r\n");
    // \0alice@example.test\0wrong
    let r = h.send(b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdAB3cm9uZw==\r\n");
    assert!(r.starts_with("535 5.7.8"), "{r}");
    h.send(b"AUTH LOGIN\r\nYm9iQGV4YW1wbGUudGVzdA==\r\n"); // bob@example.test
    assert!(h.send(b"*\r\n").starts_with("501 5.0.0"));
    assert_eq!(
        h.refused,
        [
            Subject::Login("alice@example.test".into()),
            Subject::Login("bob@example.test".into())
        ]
    );
    assert!(!format!("{:?}", h.refused).contains("wrong"));

    // An authorization identity that is not the user: refused without a check.
    let mut h = Harness::new(SmtpPort::SubmissionTls, true);
    h.send(b"EHLO c\r\n");
    // other@example.test\0alice@example.test\0secret
    let r = h.send(b"AUTH PLAIN b3RoZXJAZXhhbXBsZS50ZXN0AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=\r\n");
    assert!(r.starts_with("535 5.7.8"), "{r}");
    assert_eq!(h.refused, [Subject::Login("alice@example.test".into())]);
    assert!(h.events.is_empty(), "no password check: {:?}", h.events);
}

#[test]
fn auth_refused_by_the_driver_names_the_login() {
    let mut s: Session<String> = Session::new(config(SmtpPort::SubmissionTls), true);
    // \0carol@example.test\0pw
    s.feed(b"EHLO c\r\nAUTH PLAIN AGNhcm9sQGV4YW1wbGUudGVzdABwdw==\r\n");
    loop {
        match s.poll(&TestPolicy) {
            Some(Output::Authenticate { user, .. }) => {
                assert_eq!(user, "carol@example.test");
                break;
            }
            Some(_) => continue,
            None => panic!("no Authenticate output"),
        }
    }
    s.auth_refused(Reply::new(454, "4.7.0", "Too many failed logins"));
    match s.poll(&TestPolicy) {
        Some(Output::Refusal { reply, subject }) => {
            assert_eq!(reply.code, 454);
            assert_eq!(subject, Subject::Login("carol@example.test".into()));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Answered once: a second answer from the driver is ignored.
    s.auth_result(None);
    assert!(s.poll(&TestPolicy).is_none());
}
