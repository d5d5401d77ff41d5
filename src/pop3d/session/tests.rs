//! The session fed lines as a client sends them: every command, in every state, with bad
//! arguments, pipelined, and the dialogs of real clients.

use super::*;
use crate::pop3d::maildrop::Entry;

/// A session after TLS, logged in, over three messages.
fn logged_in() -> Session {
    let mut s = Session::new(true);
    s.out.clear();
    assert!(matches!(
        s.line(l("USER alice@example.test")),
        Action::Continue
    ));
    let a = s.line(l("PASS secret"));
    assert_eq!(
        a,
        Action::Login {
            user: "alice@example.test".into(),
            password: "secret".into()
        }
    );
    s.logged_in(LoginOutcome::Ok(drop3()));
    s.out.clear();
    s
}

fn drop3() -> Maildrop {
    Maildrop::new(vec![
        entry(11, 100, "u11"),
        entry(12, 200, "u12"),
        entry(15, 300, "u15"),
    ])
}

fn entry(uid: u32, size: u64, uidl: &str) -> Entry {
    Entry {
        uid,
        size,
        uidl: uidl.into(),
    }
}

fn l(text: &str) -> Line {
    Line::Complete(text.as_bytes().to_vec())
}

/// Feeds a line; returns the action and the replies it made.
fn say(s: &mut Session, line: &str) -> (Action, String) {
    let a = s.line(l(line));
    let out = String::from_utf8(std::mem::take(&mut s.out)).unwrap();
    (a, out)
}

fn reply(s: &mut Session, line: &str) -> String {
    let (a, out) = say(s, line);
    assert_eq!(a, Action::Continue, "{line}");
    out
}

#[test]
fn greeting() {
    let s = Session::new(false);
    assert_eq!(s.out, b"+OK tambo POP3 ready\r\n");
}

#[test]
fn capa_before_and_after_tls_and_login() {
    let mut s = Session::new(false);
    s.out.clear();
    let before = reply(&mut s, "CAPA");
    assert_eq!(
        before,
        "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n\
         PIPELINING\r\nSTLS\r\nIMPLEMENTATION tambo\r\n.\r\n"
    );
    assert_eq!(say(&mut s, "STLS").0, Action::StartTls);
    s.tls_started();
    s.out.clear();
    let after = reply(&mut s, "CAPA");
    assert_eq!(
        after,
        "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n\
         PIPELINING\r\nUSER\r\nSASL PLAIN\r\nIMPLEMENTATION tambo\r\n.\r\n"
    );
    let mut s = logged_in();
    let logged = reply(&mut s, "CAPA");
    assert!(!logged.contains("USER") && !logged.contains("SASL") && !logged.contains("STLS"));
    assert!(
        logged.contains("\r\nUIDL\r\n") && logged.ends_with(".\r\n"),
        "{logged}"
    );
}

#[test]
fn no_login_in_the_clear() {
    let mut s = Session::new(false);
    s.out.clear();
    let refused = "-ERR [AUTH] Plaintext authentication disallowed on non-secure connections\r\n";
    assert_eq!(reply(&mut s, "USER alice@example.test"), refused);
    assert_eq!(reply(&mut s, "PASS secret"), refused);
    assert_eq!(reply(&mut s, "AUTH PLAIN AGEAYg=="), refused);
    assert_eq!(reply(&mut s, "AUTH"), "+OK Mechanisms follow\r\n.\r\n");
}

#[test]
fn stls_only_once_and_before_login() {
    let mut s = Session::new(true);
    s.out.clear();
    assert_eq!(reply(&mut s, "STLS"), "-ERR TLS is already active\r\n");
    let mut s = Session::new(false);
    s.out.clear();
    assert_eq!(
        say(&mut s, "STLS"),
        (Action::StartTls, "+OK Begin TLS negotiation now\r\n".into())
    );
    s.tls_started();
    assert_eq!(reply(&mut s, "STLS"), "-ERR TLS is already active\r\n");
}

#[test]
fn user_pass() {
    let mut s = Session::new(true);
    s.out.clear();
    assert_eq!(reply(&mut s, "PASS secret"), "-ERR USER first\r\n");
    assert_eq!(
        reply(&mut s, "USER alice@example.test"),
        "+OK Send your password\r\n"
    );
    let (a, out) = say(&mut s, "PASS two words");
    assert_eq!(
        a,
        Action::Login {
            user: "alice@example.test".into(),
            password: "two words".into()
        }
    );
    assert_eq!(out, "", "the driver checks first");
    s.logged_in(LoginOutcome::Failed);
    assert_eq!(s.out, b"-ERR [AUTH] Authentication failed\r\n");
    s.out.clear();
    // The USER is forgotten after a failure.
    assert_eq!(reply(&mut s, "PASS again"), "-ERR USER first\r\n");
}

#[test]
fn login_outcomes() {
    type Case = (fn() -> LoginOutcome, &'static str);
    let cases: &[Case] = &[
        (
            || LoginOutcome::Ok(Maildrop::default()),
            "+OK Logged in\r\n",
        ),
        (
            || LoginOutcome::Failed,
            "-ERR [AUTH] Authentication failed\r\n",
        ),
        (
            || LoginOutcome::Blocked,
            "-ERR [SYS/TEMP] Too many failed logins, try again later\r\n",
        ),
        (
            || LoginOutcome::InUse,
            "-ERR [IN-USE] Mailbox is locked by another POP3 session\r\n",
        ),
        (
            || LoginOutcome::Trouble,
            "-ERR [SYS/TEMP] Cannot open your mailbox, try again later\r\n",
        ),
    ];
    for (outcome, want) in cases {
        let mut s = Session::new(true);
        s.out.clear();
        reply(&mut s, "USER a@b.test");
        say(&mut s, "PASS x");
        s.logged_in(outcome());
        assert_eq!(String::from_utf8_lossy(&s.out), *want);
        s.out.clear();
        let stat = reply(&mut s, "STAT");
        assert_eq!(stat.starts_with("+OK"), want.starts_with("+OK"), "{stat}");
    }
}

#[test]
fn auth_plain_with_and_without_initial_response() {
    let login = Action::Login {
        user: "alice@example.test".into(),
        password: "pw".into(),
    };
    // "\0alice@example.test\0pw"
    let b64 = "AGFsaWNlQGV4YW1wbGUudGVzdABwdw==";
    let mut s = Session::new(true);
    s.out.clear();
    assert_eq!(
        say(&mut s, &format!("AUTH PLAIN {b64}")),
        (login.clone(), String::new())
    );

    // Thunderbird: no initial response, "+ ", then the response.
    let mut s = Session::new(true);
    s.out.clear();
    assert_eq!(reply(&mut s, "AUTH PLAIN"), "+ \r\n");
    assert_eq!(say(&mut s, b64), (login.clone(), String::new()));

    // The response line is not a command, even if it looks like one; `*` cancels.
    let mut s = Session::new(true);
    s.out.clear();
    reply(&mut s, "AUTH plain");
    assert_eq!(reply(&mut s, "*"), "-ERR Authentication cancelled\r\n");
    reply(&mut s, "AUTH PLAIN");
    assert_eq!(reply(&mut s, "LIST 1"), "-ERR Invalid base64 data\r\n");
    reply(&mut s, "AUTH PLAIN");
    assert_eq!(
        reply(&mut s, "QUIT"),
        "-ERR Invalid PLAIN response\r\n",
        "base64 of junk"
    );
    reply(&mut s, "AUTH PLAIN");
    let long = s.line(Line::TooLong);
    assert_eq!(long, Action::Continue);
    assert_eq!(
        std::mem::take(&mut s.out),
        b"-ERR Authentication line too long\r\n"
    );
    // Back in AUTHORIZATION after each.
    assert_eq!(say(&mut s, &format!("AUTH PLAIN {b64}")).0, login);
}

#[test]
fn auth_plain_bad_responses() {
    use base64::Engine as _;
    let enc = |raw: &[u8]| base64::engine::general_purpose::STANDARD.encode(raw);
    let cases: &[(String, &str)] = &[
        (
            "AUTH LOGIN".into(),
            "-ERR Unsupported authentication mechanism\r\n",
        ),
        ("AUTH PLAIN !!!".into(), "-ERR Invalid base64 data\r\n"),
        ("AUTH PLAIN =".into(), "-ERR Invalid PLAIN response\r\n"),
        (
            format!("AUTH PLAIN {}", enc(b"a\0b")),
            "-ERR Invalid PLAIN response\r\n",
        ),
        (
            format!("AUTH PLAIN {}", enc(b"a\0b\0c\0d")),
            "-ERR Invalid PLAIN response\r\n",
        ),
        (
            format!("AUTH PLAIN {}", enc(b"bob@x.test\0alice@x.test\0pw")),
            "-ERR [AUTH] Authorization identity not allowed\r\n",
        ),
    ];
    for (line, want) in cases {
        let mut s = Session::new(true);
        s.out.clear();
        assert_eq!(reply(&mut s, line), *want, "{line}");
    }
    // An authzid equal to the user is fine.
    let mut s = Session::new(true);
    s.out.clear();
    let a = say(
        &mut s,
        &format!("AUTH PLAIN {}", enc(b"a@x.test\0a@x.test\0pw")),
    )
    .0;
    assert!(matches!(a, Action::Login { .. }));
}

#[test]
fn transaction_commands() {
    let mut s = logged_in();
    let cases: &[(&str, &str)] = &[
        ("STAT", "+OK 3 600\r\n"),
        (
            "LIST",
            "+OK 3 messages (600 octets)\r\n1 100\r\n2 200\r\n3 300\r\n.\r\n",
        ),
        ("LIST 2", "+OK 2 200\r\n"),
        ("LIST 4", "-ERR No such message\r\n"),
        ("UIDL", "+OK\r\n1 u11\r\n2 u12\r\n3 u15\r\n.\r\n"),
        ("UIDL 3", "+OK 3 u15\r\n"),
        ("UIDL 9999999999999", "-ERR No such message\r\n"),
        ("NOOP", "+OK\r\n"),
        ("DELE 2", "+OK Marked to be deleted\r\n"),
        ("DELE 2", "-ERR Message is deleted\r\n"),
        ("LIST 2", "-ERR Message is deleted\r\n"),
        ("UIDL 2", "-ERR Message is deleted\r\n"),
        ("STAT", "+OK 2 400\r\n"),
        (
            "LIST",
            "+OK 2 messages (400 octets)\r\n1 100\r\n3 300\r\n.\r\n",
        ),
        ("UIDL", "+OK\r\n1 u11\r\n3 u15\r\n.\r\n"),
        ("RSET", "+OK 3 messages (600 octets)\r\n"),
        ("STAT", "+OK 3 600\r\n"),
        ("LIST x", "-ERR Invalid message number\r\n"),
        ("DELE", "-ERR Invalid arguments\r\n"),
        ("TOP 1", "-ERR Invalid arguments\r\n"),
        ("USER a@b.test", "-ERR Command not valid in this state\r\n"),
        ("PASS x", "-ERR Command not valid in this state\r\n"),
        ("AUTH PLAIN", "-ERR Command not valid in this state\r\n"),
        ("STLS", "-ERR TLS is already active\r\n"),
        ("XTND XMIT", "-ERR Unknown command\r\n"),
    ];
    for (line, want) in cases {
        assert_eq!(reply(&mut s, line), *want, "{line}");
    }
}

#[test]
fn retr_and_top_ask_for_the_file_first() {
    let mut s = logged_in();
    assert_eq!(
        say(&mut s, "RETR 2"),
        (
            Action::Send {
                uid: 12,
                body_lines: None
            },
            String::new()
        )
    );
    s.sending(true);
    assert_eq!(std::mem::take(&mut s.out), b"+OK 200 octets\r\n");
    assert_eq!(
        say(&mut s, "TOP 3 99999999").0,
        Action::Send {
            uid: 15,
            body_lines: Some(99_999_999)
        }
    );
    s.sending(true);
    assert_eq!(
        std::mem::take(&mut s.out),
        b"+OK Top of message follows\r\n"
    );
    assert_eq!(
        say(&mut s, "RETR 1").0,
        Action::Send {
            uid: 11,
            body_lines: None
        }
    );
    s.sending(false);
    assert_eq!(
        std::mem::take(&mut s.out),
        b"-ERR Message was removed meanwhile\r\n"
    );
    reply(&mut s, "DELE 1");
    assert_eq!(reply(&mut s, "RETR 1"), "-ERR Message is deleted\r\n");
    assert_eq!(reply(&mut s, "TOP 1 0"), "-ERR Message is deleted\r\n");
    assert_eq!(reply(&mut s, "RETR 4"), "-ERR No such message\r\n");
}

#[test]
fn transaction_commands_before_login() {
    for state_tls in [false, true] {
        let mut s = Session::new(state_tls);
        s.out.clear();
        for line in [
            "STAT", "LIST", "LIST 1", "UIDL", "RETR 1", "TOP 1 1", "DELE 1", "RSET", "NOOP",
        ] {
            assert_eq!(
                reply(&mut s, line),
                "-ERR Command not valid in this state\r\n",
                "{line}"
            );
        }
    }
}

#[test]
fn quit_in_each_state() {
    let mut s = Session::new(false);
    s.out.clear();
    assert_eq!(
        say(&mut s, "QUIT"),
        (Action::Close, "+OK Logging out\r\n".into())
    );

    // Nothing deleted: UPDATE removes nothing.
    let mut s = logged_in();
    assert_eq!(
        say(&mut s, "QUIT"),
        (Action::Update { remove: vec![] }, String::new())
    );
    s.updated(Ok(0));
    assert_eq!(s.out, b"+OK Logging out\r\n");

    let mut s = logged_in();
    reply(&mut s, "DELE 3");
    reply(&mut s, "DELE 1");
    assert_eq!(
        say(&mut s, "QUIT").0,
        Action::Update {
            remove: vec![11, 15]
        }
    );
    s.updated(Ok(2));
    assert_eq!(s.out, b"+OK Logging out, 2 messages deleted\r\n");

    let mut s = logged_in();
    reply(&mut s, "DELE 1");
    reply(&mut s, "RSET");
    assert_eq!(say(&mut s, "QUIT").0, Action::Update { remove: vec![] });

    let mut s = logged_in();
    reply(&mut s, "DELE 2");
    say(&mut s, "QUIT");
    s.updated(Err(()));
    assert_eq!(
        s.out,
        b"-ERR [SYS/TEMP] Some deleted messages were not removed\r\n"
    );
}

#[test]
fn bad_commands_end_the_session() {
    let mut s = Session::new(false);
    s.out.clear();
    for _ in 1..MAX_BAD_COMMANDS {
        assert_eq!(reply(&mut s, "HELO x"), "-ERR Unknown command\r\n");
    }
    assert_eq!(s.line(Line::TooLong), Action::Close);
    assert!(s.out.ends_with(b"-ERR Too many bad commands\r\n"));
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    // A client that sends everything at once (RFC 2449 §6.6): the framer cuts the lines,
    // the session answers each in turn.
    let mut framer = crate::pop3d::framer::Framer::new(1024);
    framer.feed(b"STAT\r\nLIST 1\r\nDELE 1\r\nUIDL\r\nRETR 2\r\nNOOP\r\n");
    let mut s = logged_in();
    let mut actions = Vec::new();
    while let Some(line) = framer.next_line() {
        let a = s.line(line);
        if matches!(a, Action::Send { .. }) {
            s.sending(true);
            s.out.extend_from_slice(b"<message>\r\n.\r\n");
        }
        actions.push(a);
    }
    assert_eq!(
        String::from_utf8(s.out).unwrap(),
        "+OK 3 600\r\n+OK 1 100\r\n+OK Marked to be deleted\r\n\
         +OK\r\n2 u12\r\n3 u15\r\n.\r\n+OK 200 octets\r\n<message>\r\n.\r\n+OK\r\n"
    );
    assert_eq!(
        actions[4],
        Action::Send {
            uid: 12,
            body_lines: None
        }
    );
}

#[test]
fn thunderbird_dialog() {
    // CAPA, AUTH PLAIN without an initial response, then STAT, LIST, UIDL, TOP, RETR,
    // DELE, QUIT (MAILBOX.md).
    let mut s = Session::new(true);
    s.out.clear();
    assert!(reply(&mut s, "CAPA").contains("\r\nSASL PLAIN\r\n"));
    assert_eq!(reply(&mut s, "AUTH PLAIN"), "+ \r\n");
    let (a, _) = say(&mut s, "AGFAYi50ZXN0AHB3");
    assert!(matches!(a, Action::Login { .. }));
    s.logged_in(LoginOutcome::Ok(drop3()));
    assert_eq!(std::mem::take(&mut s.out), b"+OK Logged in\r\n");
    assert_eq!(reply(&mut s, "STAT"), "+OK 3 600\r\n");
    assert!(reply(&mut s, "LIST").ends_with("3 300\r\n.\r\n"));
    assert!(reply(&mut s, "UIDL").ends_with("3 u15\r\n.\r\n"));
    assert!(matches!(
        say(&mut s, "TOP 1 0").0,
        Action::Send {
            uid: 11,
            body_lines: Some(0)
        }
    ));
    s.sending(true);
    s.out.clear();
    assert!(matches!(
        say(&mut s, "RETR 1").0,
        Action::Send {
            uid: 11,
            body_lines: None
        }
    ));
    s.sending(true);
    s.out.clear();
    assert_eq!(reply(&mut s, "DELE 1"), "+OK Marked to be deleted\r\n");
    assert_eq!(say(&mut s, "QUIT").0, Action::Update { remove: vec![11] });
}
