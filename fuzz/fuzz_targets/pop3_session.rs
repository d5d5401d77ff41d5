//! POP3 (`pop3d`): any bytes a client sends, in any pieces, through the framer and the
//! session, logged in over a small maildrop. Lines stay within the limit, every reply line
//! ends with CRLF, a message number the session hands out is one of the maildrop's, and
//! every RETR/TOP encoding of the same bytes ends with the terminating dot line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tambo::pop3d::framer::{Framer, Line};
use tambo::pop3d::maildrop::{Entry, Maildrop};
use tambo::pop3d::message::Encoder;
use tambo::pop3d::session::{Action, LoginOutcome, Session};

const LIMIT: usize = 512;

fuzz_target!(|input: (&[u8], u8, bool)| {
    let (bytes, step, tls) = input;
    let mut framer = Framer::new(LIMIT);
    let mut session = Session::new(tls);
    let entries: Vec<Entry> = (1..=3)
        .map(|uid| Entry {
            uid,
            size: u64::from(uid) * 10,
            uidl: format!("u{uid}"),
        })
        .collect();
    for piece in bytes.chunks(usize::from(step.max(1))) {
        framer.feed(piece);
        while let Some(line) = framer.next_line() {
            if let Line::Complete(l) = &line {
                assert!(l.len() <= LIMIT && !l.contains(&b'\n'));
            }
            match session.line(line) {
                Action::Login { .. } => {
                    session.logged_in(LoginOutcome::Ok(Maildrop::new(entries.clone())))
                }
                Action::Send { uid, body_lines } => {
                    assert!((1..=3).contains(&uid));
                    session.sending(true);
                    let mut e = Encoder::new(body_lines);
                    e.encode(bytes, &mut session.out);
                    e.finish(&mut session.out);
                    assert!(session.out.ends_with(b"\r\n.\r\n") || session.out == b".\r\n");
                }
                Action::Update { .. } => session.updated(Ok(0)),
                Action::StartTls => session.tls_started(),
                Action::Continue | Action::Close => {}
            }
            assert!(session.out.is_empty() || session.out.ends_with(b"\r\n"));
            session.out.clear();
        }
    }
});
