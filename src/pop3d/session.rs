//! The POP3 session (RFC 1939 §4-§6, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH), sans-I/O:
//! lines in, reply bytes and [`Action`]s out. What needs I/O (a password check, opening the
//! maildrop, a message file, the removals of UPDATE) is an action the driver carries out
//! and reports back; the session decides every reply.

use crate::pop3d::command::{self, Command};
use crate::pop3d::framer::Line;
use crate::pop3d::maildrop::{Maildrop, Missing};
use base64::Engine as _;

/// Bad commands after which the connection is closed.
pub const MAX_BAD_COMMANDS: u32 = 20;

/// What the driver does after a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing but the replies.
    Continue,
    /// STLS was accepted: send the replies, drop pipelined input, start TLS, then call
    /// [`Session::tls_started`].
    StartTls,
    /// Check these credentials and open the maildrop, then call [`Session::logged_in`].
    Login { user: String, password: String },
    /// Open the file of the message with this UID and call [`Session::sending`]; when it
    /// opened, send it encoded with `body_lines` (TOP) or whole (RETR), then the `.` line.
    Send { uid: u32, body_lines: Option<u64> },
    /// QUIT in the TRANSACTION state: remove these UIDs (maybe none), then call
    /// [`Session::updated`] and close.
    Update { remove: Vec<u32> },
    /// Send the replies and close.
    Close,
}

/// What became of a login the driver checked.
#[derive(Debug)]
pub enum LoginOutcome {
    Ok(Maildrop),
    /// Wrong user or password.
    Failed,
    /// Too many failures from the client's address.
    Blocked,
    /// Another POP3 session holds the maildrop.
    InUse,
    /// Our trouble (the maildrop could not be opened).
    Trouble,
}

enum State {
    /// RFC 1939 §4; the name of USER, once given.
    Authorization {
        user: Option<String>,
    },
    /// AUTH PLAIN without an initial response: the next line is the response (RFC 5034 §4).
    AuthResponse,
    /// A login or an update is with the driver.
    Waiting,
    Transaction(Maildrop),
    Closed,
}

pub struct Session {
    state: State,
    tls: bool,
    bad: u32,
    /// The `+OK` line of the RETR or TOP being sent, once its file is open.
    sending: Option<String>,
    /// Replies not yet sent.
    pub out: Vec<u8>,
}

impl Session {
    /// A session over a connection that is TLS already (995) or not (110); the greeting is
    /// in `out`.
    pub fn new(tls: bool) -> Session {
        let mut s = Session {
            state: State::Authorization { user: None },
            tls,
            bad: 0,
            sending: None,
            out: Vec::new(),
        };
        s.ok("tambo POP3 ready");
        s
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    pub fn logged_in_user(&self) -> bool {
        matches!(self.state, State::Transaction(_))
    }

    /// One line from the client.
    pub fn line(&mut self, line: Line) -> Action {
        if matches!(self.state, State::AuthResponse) {
            self.state = State::Authorization { user: None };
            return match line {
                Line::Complete(bytes) => self.auth_response(&bytes),
                Line::TooLong => self.err("Authentication line too long"),
            };
        }
        let parsed = match line {
            Line::Complete(bytes) => command::parse(&bytes).map_err(|e| e.to_string()),
            Line::TooLong => Err("Line too long".to_string()),
        };
        match parsed {
            Ok(command) => self.command(command),
            Err(why) => self.bad_command(&why),
        }
    }

    fn command(&mut self, command: Command) -> Action {
        match command {
            Command::Capa => self.capa(),
            Command::Quit => self.quit(),
            Command::Stls => self.stls(),
            Command::User(name) => self.user(name),
            Command::Pass(password) => self.pass(password),
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial),
            other => self.transaction(other),
        }
    }

    fn bad_command(&mut self, why: &str) -> Action {
        self.bad += 1;
        if self.bad >= MAX_BAD_COMMANDS {
            self.state = State::Closed;
            self.err("Too many bad commands");
            return Action::Close;
        }
        self.err(why)
    }

    /// RFC 2449 §5: what we offer now; only what works.
    fn capa(&mut self) -> Action {
        self.ok("Capability list follows");
        let mut caps = vec!["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"];
        if matches!(self.state, State::Authorization { .. }) {
            if self.tls {
                caps.extend(["USER", "SASL PLAIN"]);
            } else {
                // RFC 2595 §4: no password in the clear, so no way to send one is offered.
                caps.push("STLS");
            }
        }
        caps.push("IMPLEMENTATION tambo");
        for cap in caps {
            self.line_out(cap);
        }
        self.line_out(".");
        Action::Continue
    }

    fn quit(&mut self) -> Action {
        match std::mem::replace(&mut self.state, State::Waiting) {
            // RFC 1939 §6: the UPDATE state.
            State::Transaction(drop) => Action::Update {
                remove: drop.deleted_uids(),
            },
            _ => {
                self.state = State::Closed;
                self.ok("Logging out");
                Action::Close
            }
        }
    }

    fn stls(&mut self) -> Action {
        if self.tls {
            return self.err("TLS is already active");
        }
        if !matches!(self.state, State::Authorization { .. }) {
            return self.err("Command not valid in this state");
        }
        self.ok("Begin TLS negotiation now");
        Action::StartTls
    }

    /// TLS is up (STLS): the session starts over (RFC 2595 §4).
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.state = State::Authorization { user: None };
    }

    fn authorization(&mut self) -> Result<(), Action> {
        if !matches!(self.state, State::Authorization { .. }) {
            return Err(self.err("Command not valid in this state"));
        }
        if !self.tls {
            // RFC 2595 §4, in Dovecot's words.
            return Err(self.err_code(
                "AUTH",
                "Plaintext authentication disallowed on non-secure connections",
            ));
        }
        Ok(())
    }

    fn user(&mut self, name: String) -> Action {
        if let Err(a) = self.authorization() {
            return a;
        }
        self.state = State::Authorization { user: Some(name) };
        self.ok("Send your password")
    }

    fn pass(&mut self, password: String) -> Action {
        if let Err(a) = self.authorization() {
            return a;
        }
        match std::mem::replace(&mut self.state, State::Waiting) {
            State::Authorization { user: Some(user) } => Action::Login { user, password },
            other => {
                self.state = other;
                self.err("USER first")
            }
        }
    }

    fn auth(&mut self, mechanism: Option<String>, initial: Option<String>) -> Action {
        let Some(mechanism) = mechanism else {
            // The mechanism list some clients ask for before CAPA existed.
            self.ok("Mechanisms follow");
            if self.tls {
                self.line_out("PLAIN");
            }
            self.line_out(".");
            return Action::Continue;
        };
        if let Err(a) = self.authorization() {
            return a;
        }
        if mechanism != "PLAIN" {
            return self.err("Unsupported authentication mechanism");
        }
        match initial {
            // RFC 5034 §4: "=" is an empty initial response.
            Some(response) if response == "=" => self.plain(b""),
            Some(response) => self.auth_response(response.as_bytes()),
            None => {
                self.state = State::AuthResponse;
                self.out.extend_from_slice(b"+ \r\n");
                Action::Continue
            }
        }
    }

    /// The client's base64 PLAIN response, or `*` to cancel (RFC 5034 §4).
    fn auth_response(&mut self, line: &[u8]) -> Action {
        if line == b"*" {
            return self.err("Authentication cancelled");
        }
        match base64::engine::general_purpose::STANDARD.decode(line) {
            Ok(response) => self.plain(&response),
            Err(_) => self.err("Invalid base64 data"),
        }
    }

    /// RFC 4616: `authzid NUL authcid NUL passwd`; an authzid other than the user is refused.
    fn plain(&mut self, response: &[u8]) -> Action {
        let mut parts = response.split(|&b| b == 0);
        let (Some(authz), Some(user), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return self.err("Invalid PLAIN response");
        };
        if !authz.is_empty() && authz != user {
            return self.err_code("AUTH", "Authorization identity not allowed");
        }
        self.state = State::Waiting;
        Action::Login {
            user: String::from_utf8_lossy(user).into_owned(),
            password: String::from_utf8_lossy(password).into_owned(),
        }
    }

    /// The driver's answer to [`Action::Login`].
    pub fn logged_in(&mut self, outcome: LoginOutcome) {
        self.state = State::Authorization { user: None };
        match outcome {
            LoginOutcome::Ok(drop) => {
                self.state = State::Transaction(drop);
                self.ok("Logged in");
            }
            // RFC 3206 §4: [AUTH] is the credentials' fault, [SYS/TEMP] a passing one.
            LoginOutcome::Failed => {
                self.err_code("AUTH", "Authentication failed");
            }
            LoginOutcome::Blocked => {
                self.err_code("SYS/TEMP", "Too many failed logins, try again later");
            }
            // RFC 2449 §8.1.2.
            LoginOutcome::InUse => {
                self.err_code("IN-USE", "Mailbox is locked by another POP3 session");
            }
            LoginOutcome::Trouble => {
                self.err_code("SYS/TEMP", "Cannot open your mailbox, try again later");
            }
        }
    }

    /// The driver's answer to [`Action::Update`]: the removals were done (or not).
    pub fn updated(&mut self, removed: Result<usize, ()>) {
        self.state = State::Closed;
        match removed {
            Ok(0) => self.ok("Logging out"),
            Ok(n) => self.ok(&format!("Logging out, {n} messages deleted")),
            // RFC 1939 §6: an -ERR when some deleted messages could not be removed.
            Err(()) => self.err_code("SYS/TEMP", "Some deleted messages were not removed"),
        };
    }

    /// The commands of the TRANSACTION state (RFC 1939 §5).
    fn transaction(&mut self, command: Command) -> Action {
        let State::Transaction(drop) = &mut self.state else {
            return self.err("Command not valid in this state");
        };
        // The text of the +OK line, and the lines of a multi-line reply.
        let reply: Result<(String, Option<String>), Missing> = match command {
            Command::Stat => {
                let (n, size) = drop.stat();
                Ok((format!("{n} {size}"), None))
            }
            Command::List(None) => {
                let (n, size) = drop.stat();
                let lines = drop.live().map(|(i, e)| format!("{i} {}\r\n", e.size));
                Ok((
                    format!("{n} messages ({size} octets)"),
                    Some(lines.collect()),
                ))
            }
            Command::List(Some(n)) => drop.get(n).map(|e| (format!("{n} {}", e.size), None)),
            Command::Uidl(None) => {
                let lines = drop.live().map(|(i, e)| format!("{i} {}\r\n", e.uidl));
                Ok((String::new(), Some(lines.collect())))
            }
            Command::Uidl(Some(n)) => drop.get(n).map(|e| (format!("{n} {}", e.uidl), None)),
            Command::Retr(n) => drop.get(n).map(|e| (format!("{} octets", e.size), None)),
            Command::Top(n, _) => drop.get(n).map(|_| ("Top of message follows".into(), None)),
            Command::Dele(n) => drop
                .delete(n)
                .map(|()| ("Marked to be deleted".into(), None)),
            Command::Rset => {
                drop.reset();
                let (n, size) = drop.stat();
                Ok((format!("{n} messages ({size} octets)"), None))
            }
            Command::Noop => Ok((String::new(), None)),
            _ => return self.err("Command not valid in this state"),
        };
        let send = match command {
            Command::Retr(n) => drop.get(n).ok().map(|e| (e.uid, None)),
            Command::Top(n, lines) => drop.get(n).ok().map(|e| (e.uid, Some(lines))),
            _ => None,
        };
        let (text, lines) = match reply {
            Ok(reply) => reply,
            Err(m) => return self.missing(m),
        };
        if let Some((uid, body_lines)) = send {
            self.sending = Some(text);
            return Action::Send { uid, body_lines };
        }
        self.ok(&text);
        if let Some(lines) = lines {
            self.out.extend_from_slice(lines.as_bytes());
            self.line_out(".");
        }
        Action::Continue
    }

    /// The driver's answer to [`Action::Send`]: whether the message's file could be opened
    /// (another program may have removed it since the login).
    pub fn sending(&mut self, opened: bool) {
        let text = self.sending.take().unwrap_or_default();
        if opened {
            self.ok(&text);
        } else {
            self.err("Message was removed meanwhile");
        }
    }

    fn missing(&mut self, m: Missing) -> Action {
        match m {
            Missing::NoSuchMessage => self.err("No such message"),
            Missing::Deleted => self.err("Message is deleted"),
        }
    }

    fn ok(&mut self, text: &str) -> Action {
        self.out
            .extend_from_slice(if text.is_empty() { b"+OK" } else { b"+OK " });
        self.line_out(text);
        Action::Continue
    }

    fn err(&mut self, text: &str) -> Action {
        self.out.extend_from_slice(b"-ERR ");
        self.line_out(text);
        Action::Continue
    }

    /// An error with an RFC 2449 §8 response code.
    fn err_code(&mut self, code: &str, text: &str) -> Action {
        self.out.extend_from_slice(b"-ERR [");
        self.out.extend_from_slice(code.as_bytes());
        self.out.extend_from_slice(b"] ");
        self.line_out(text);
        Action::Continue
    }

    fn line_out(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests;
