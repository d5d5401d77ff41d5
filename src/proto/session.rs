//! The SMTP server session as a state machine (sans-I/O).
//!
//! The I/O driver feeds bytes with [`Session::feed`] and drains [`Output`]s with
//! [`Session::poll`] until it returns `None` (more input needed). Decisions that need the
//! configuration (may this sender be used, where does this recipient go) are asked of a
//! [`Policy`] passed to `poll`; slow work (password checks, the durable queue write) is
//! handed to the driver as an output, and its result comes back through
//! [`Session::auth_result`] / [`Session::data_result`].
//!
//! Rules implemented here: RFC 5321 command sequencing, RFC 2920 pipelining (replies are
//! produced in order; the driver flushes before it reads), RFC 3207 STARTTLS (unread input is
//! discarded at the upgrade, CVE-2011-0411), RFC 4954 AUTH PLAIN/LOGIN over TLS only on
//! submission, and SPEC §7's limits (three errors, HTTP verbs, line length, recipients, size,
//! smuggling, Received loop count).

use crate::proto::command::{self, Command, ForwardPath, MailParams, ReversePath};
use crate::proto::data::{DataReader, DataStatus, DataSummary};
use crate::proto::reply::Reply;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::borrow::Cow;

/// SPEC §7: command lines over 1000 octets (CRLF included) get 500 5.5.2.
pub const MAX_COMMAND_LINE: usize = 1000;
/// SPEC §7: three error replies end the connection.
const MAX_ERRORS: u32 = 3;
/// SPEC §7: more than 50 Received headers means a mail loop (RFC 5321 §6.3).
pub const MAX_RECEIVED_HEADERS: u32 = 50;

/// Which SMTP service the connection came in for (the driver knows the listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpPort {
    /// Port 25: mail for local domains, no AUTH.
    Mx,
    /// Port 587: STARTTLS, then AUTH, then mail from our users.
    Submission,
    /// Port 465: implicit TLS, then AUTH.
    SubmissionTls,
}

impl SmtpPort {
    pub fn is_submission(self) -> bool {
        self != SmtpPort::Mx
    }
}

/// Per-connection settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub hostname: String,
    pub kind: SmtpPort,
    pub max_message_size: u64,
    pub max_recipients: usize,
    /// A certificate is loaded, so STARTTLS can be offered.
    pub tls_available: bool,
}

/// What the policy may look at when deciding.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub kind: SmtpPort,
    pub tls: bool,
    /// The authenticated user (`user@domain`), on submission after AUTH.
    pub auth_user: Option<String>,
}

/// Decisions that need the configuration. `Rcpt` is whatever the host wants to keep per
/// accepted recipient (its resolved targets).
pub trait Policy {
    type Rcpt;
    /// May this reverse-path be used? Err carries the reply (553 5.7.1 ...).
    fn check_sender(&self, peer: &PeerInfo, from: &ReversePath) -> Result<(), Reply>;
    /// Where does this recipient go? Err carries the reply (554 5.7.1, 550 5.1.1, ...).
    fn check_recipient(
        &self,
        peer: &PeerInfo,
        from: &ReversePath,
        to: &ForwardPath,
    ) -> Result<Self::Rcpt, Reply>;
}

/// What the driver must do next.
#[derive(Debug)]
pub enum Output {
    /// Send this reply (the driver may batch replies until it needs to read).
    Reply(Reply),
    /// Send this error reply, which refuses `subject`: as `Reply`, and the driver's log of
    /// the refusal can name what was refused.
    Refusal { reply: Reply, subject: Subject },
    /// Send the pending replies, then do the TLS handshake and call
    /// [`Session::tls_established`]. Unread input has already been discarded.
    StartTls,
    /// Check these credentials (off the executor), then call [`Session::auth_result`].
    Authenticate { user: String, password: String },
    /// A message begins: open a queue file; [`Session::transaction`] has the envelope.
    DataStart,
    /// Message bytes (unstuffed, CRLF line endings) to append to the queue file.
    DataChunk(Vec<u8>),
    /// The message is complete: store it durably, then call [`Session::data_result`].
    DataEnd(DataSummary),
    /// The message was refused (size, loop, smuggling): drop the queue file.
    DataAbort,
    /// Send the pending replies and close the connection.
    Close,
}

/// What a refused command was about, as the client gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// RCPT: the recipient.
    Recipient(ForwardPath),
    /// AUTH: the login name tried (never the password).
    Login(String),
}

/// The envelope of the transaction in progress.
#[derive(Debug)]
pub struct Transaction<R> {
    pub from: ReversePath,
    pub params: MailParams,
    /// Accepted recipients, in RCPT order, with what the policy returned for each.
    pub rcpts: Vec<(ForwardPath, R)>,
}

#[derive(Debug)]
enum SaslState {
    PlainResponse,
    LoginUser,
    LoginPassword { user: String },
}

/// Where the session is. Each variant holds only what is valid there (STYLE habit 4).
#[derive(Debug)]
enum State<R> {
    /// Before HELO/EHLO.
    Connected,
    /// Greeted, no transaction.
    Ready,
    /// After MAIL, collecting recipients.
    Mail(Transaction<R>),
    /// Reading the message.
    Data(Transaction<R>, DataReader),
    /// Waiting for the driver's `data_result`.
    Storing(Transaction<R>),
    /// In the middle of an AUTH exchange.
    Sasl(SaslState),
    /// Waiting for the driver's `auth_result` about this login.
    Authenticating {
        login: String,
    },
    /// Waiting for the TLS handshake.
    TlsPending,
    Closed,
}

pub struct Session<R> {
    config: SessionConfig,
    state: State<R>,
    input: Vec<u8>,
    /// An over-long command line is being skipped up to its LF.
    discarding_line: bool,
    helo: Option<String>,
    esmtp: bool,
    tls: bool,
    auth_user: Option<String>,
    errors: u32,
    outputs: std::collections::VecDeque<Output>,
}

impl<R> Session<R> {
    /// A new session; its first output is the 220 greeting.
    pub fn new(config: SessionConfig, tls: bool) -> Session<R> {
        let greeting = Reply::new(220, "", format!("{} ESMTP tambo", config.hostname));
        let mut session = Session {
            config,
            state: State::Connected,
            input: Vec::new(),
            discarding_line: false,
            helo: None,
            esmtp: false,
            tls,
            auth_user: None,
            errors: 0,
            outputs: Default::default(),
        };
        session.outputs.push_back(Output::Reply(greeting));
        session
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        if !matches!(self.state, State::Closed) {
            self.input.extend_from_slice(bytes);
        }
    }

    /// Frees buffer space kept from earlier input once all of it is consumed (an idle
    /// connection should cost little memory).
    pub fn release_buffers(&mut self) {
        if self.input.is_empty() && self.input.capacity() > 0 {
            self.input = Vec::new();
        }
    }

    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }
    pub fn is_esmtp(&self) -> bool {
        self.esmtp
    }
    pub fn is_tls(&self) -> bool {
        self.tls
    }
    pub fn auth_user(&self) -> Option<&str> {
        self.auth_user.as_deref()
    }
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The transaction whose data is being read or stored.
    pub fn transaction(&self) -> Option<&Transaction<R>> {
        match &self.state {
            State::Mail(t) | State::Data(t, _) | State::Storing(t) => Some(t),
            _ => None,
        }
    }

    fn peer(&self) -> PeerInfo {
        PeerInfo {
            kind: self.config.kind,
            tls: self.tls,
            auth_user: self.auth_user.clone(),
        }
    }

    /// The next thing to do, or `None` when more input is needed (or the driver owes a
    /// result, or the session is closed).
    pub fn poll(&mut self, policy: &dyn Policy<Rcpt = R>) -> Option<Output> {
        loop {
            if let Some(out) = self.outputs.pop_front() {
                return Some(out);
            }
            match self.state {
                State::Closed
                | State::Storing(_)
                | State::Authenticating { .. }
                | State::TlsPending => {
                    return None;
                }
                State::Data(..) => {
                    if !self.step_data() {
                        return None;
                    }
                }
                _ => {
                    let line = self.next_line()?;
                    match line {
                        Ok(line) => self.handle_line(&line, policy),
                        Err(reply) => self.reply(reply),
                    }
                }
            }
        }
    }

    /// Cuts the next command line out of the input (RFC 5321 §2.3.8: lines end in CRLF; a
    /// bare LF is tolerated for commands, as Postfix does, since no data follows it).
    fn next_line(&mut self) -> Option<Result<Vec<u8>, Reply>> {
        match self.input.iter().position(|&b| b == b'\n') {
            Some(lf) => {
                let mut line: Vec<u8> = self.input.drain(..=lf).collect();
                let too_long = self.discarding_line || line.len() > MAX_COMMAND_LINE;
                self.discarding_line = false;
                if too_long {
                    return Some(Err(Reply::new(500, "5.5.2", "Line too long")));
                }
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Some(Ok(line))
            }
            None => {
                // Memory stays bounded: an over-long line is dropped as it arrives.
                if self.input.len() > MAX_COMMAND_LINE {
                    self.input.clear();
                    self.discarding_line = true;
                }
                None
            }
        }
    }

    /// Queues a reply; every error counts towards the limit (SPEC §7, as chasquid).
    fn reply(&mut self, reply: Reply) {
        self.answer(reply, None);
    }

    /// Queues a reply to a command about `subject`: an error goes out as a `Refusal`.
    fn refuse(&mut self, reply: Reply, subject: Subject) {
        self.answer(reply, Some(subject));
    }

    fn answer(&mut self, reply: Reply, subject: Option<Subject>) {
        let is_error = reply.is_error();
        self.outputs.push_back(match subject {
            Some(subject) if is_error => Output::Refusal { reply, subject },
            _ => Output::Reply(reply),
        });
        if is_error {
            self.errors += 1;
            if self.errors >= MAX_ERRORS {
                self.close_with(Reply::new(421, "4.5.0", "Too many errors, bye"));
            }
        }
    }

    fn close_with(&mut self, reply: Reply) {
        self.outputs.push_back(Output::Reply(reply));
        self.outputs.push_back(Output::Close);
        self.state = State::Closed;
        self.input.clear();
    }

    fn handle_line(&mut self, line: &[u8], policy: &dyn Policy<Rcpt = R>) {
        if let State::Sasl(_) = self.state {
            return self.sasl_step(line);
        }
        match command::parse(line) {
            Ok(cmd) => self.handle_command(cmd, policy),
            Err(reply) => self.reply(reply),
        }
    }

    fn handle_command(&mut self, cmd: Command, policy: &dyn Policy<Rcpt = R>) {
        match cmd {
            Command::Helo(name) => self.greet(name, false),
            Command::Ehlo(name) => self.greet(name, true),
            Command::Mail { from, params } => self.mail(from, params, policy),
            Command::Rcpt { to } => self.rcpt(to, policy),
            Command::Data => self.data(),
            Command::Rset => {
                self.reset_transaction();
                self.reply(Reply::new(250, "2.0.0", "OK"));
            }
            Command::Noop => self.reply(Reply::new(250, "2.0.0", "OK")),
            Command::Quit => self.close_with(Reply::new(221, "2.0.0", "Bye")),
            Command::Vrfy | Command::Expn => {
                self.reply(Reply::new(502, "5.5.1", "Command not available"))
            }
            Command::Help => self.reply(Reply::new(214, "2.0.0", "See RFC 5321")),
            Command::StartTls => self.starttls(),
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial),
            // SPEC §7: cross-protocol attacks; no error counting, just leave.
            Command::Http => self.close_with(Reply::new(502, "5.7.0", "This is an SMTP server")),
        }
    }

    fn reset_transaction(&mut self) {
        if matches!(self.state, State::Mail(_)) {
            self.state = State::Ready;
        }
    }

    /// RFC 5321 §4.1.1.1: HELO/EHLO resets the transaction.
    fn greet(&mut self, name: String, esmtp: bool) {
        let hostname = self.config.hostname.clone();
        self.helo = Some(name);
        self.esmtp = esmtp;
        self.state = State::Ready;
        if !esmtp {
            return self.reply(Reply::new(250, "", hostname));
        }
        let mut lines: Vec<Cow<'static, str>> = vec![
            hostname.into(),
            "PIPELINING".into(),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            format!("SIZE {}", self.config.max_message_size).into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if !self.tls && self.config.tls_available && self.config.kind != SmtpPort::SubmissionTls {
            lines.push("STARTTLS".into());
        }
        if self.config.kind.is_submission() && self.tls && self.auth_user.is_none() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        self.outputs
            .push_back(Output::Reply(Reply::multiline(250, lines)));
    }

    fn mail(&mut self, from: ReversePath, params: MailParams, policy: &dyn Policy<Rcpt = R>) {
        if self.helo.is_none() {
            return self.reply(Reply::new(503, "5.5.1", "Send HELO/EHLO first"));
        }
        if !matches!(self.state, State::Ready) {
            return self.reply(Reply::new(503, "5.5.1", "Nested MAIL command"));
        }
        if self.config.kind.is_submission() && self.auth_user.is_none() {
            return self.reply(Reply::new(530, "5.7.0", "Authentication required"));
        }
        // RFC 1870 §6.2: a declared size over the limit is refused at MAIL.
        if params
            .size
            .is_some_and(|s| s > self.config.max_message_size)
        {
            return self.reply(Reply::new(552, "5.3.4", "Message too big"));
        }
        if let Err(reply) = policy.check_sender(&self.peer(), &from) {
            return self.reply(reply);
        }
        self.state = State::Mail(Transaction {
            from,
            params,
            rcpts: Vec::new(),
        });
        self.reply(Reply::new(250, "2.1.0", "OK"));
    }

    fn rcpt(&mut self, to: ForwardPath, policy: &dyn Policy<Rcpt = R>) {
        let peer = self.peer();
        let State::Mail(txn) = &mut self.state else {
            let reply = Reply::new(503, "5.5.1", "Need MAIL first");
            return self.refuse(reply, Subject::Recipient(to));
        };
        if txn.rcpts.len() >= self.config.max_recipients {
            let reply = Reply::new(452, "4.5.3", "Too many recipients");
            return self.refuse(reply, Subject::Recipient(to));
        }
        match policy.check_recipient(&peer, &txn.from, &to) {
            Ok(r) => {
                txn.rcpts.push((to, r));
                self.reply(Reply::new(250, "2.1.5", "OK"));
            }
            Err(reply) => self.refuse(reply, Subject::Recipient(to)),
        }
    }

    fn data(&mut self) {
        let state = std::mem::replace(&mut self.state, State::Ready);
        match state {
            State::Mail(txn) if !txn.rcpts.is_empty() => {
                let reader = DataReader::new(self.config.max_message_size);
                self.state = State::Data(txn, reader);
                self.outputs.push_back(Output::Reply(Reply::new(
                    354,
                    "",
                    "Go ahead, end with <CRLF>.<CRLF>",
                )));
                self.outputs.push_back(Output::DataStart);
            }
            State::Mail(txn) => {
                self.state = State::Mail(txn);
                self.reply(Reply::new(554, "5.5.1", "No valid recipients"));
            }
            other => {
                self.state = other;
                self.reply(Reply::new(503, "5.5.1", "Need MAIL and RCPT first"));
            }
        }
    }

    /// Feeds buffered input to the DATA reader. Returns false when it needs more input.
    fn step_data(&mut self) -> bool {
        let State::Data(_, reader) = &mut self.state else {
            return false;
        };
        if self.input.is_empty() {
            return false;
        }
        let mut chunk = Vec::with_capacity(self.input.len());
        let (used, status) = reader.feed(&self.input, &mut chunk);
        self.input.drain(..used);
        if !chunk.is_empty() {
            self.outputs.push_back(Output::DataChunk(chunk));
        }
        match status {
            DataStatus::NeedMore => {}
            DataStatus::Done(summary) => self.data_done(summary),
            DataStatus::BareLineEnding => {
                // SPEC §7, SMTP smuggling: refuse and leave, as Postfix does; the rest of the
                // stream cannot be trusted to be framed the way the client meant.
                self.outputs.push_back(Output::DataAbort);
                self.close_with(Reply::new(
                    521,
                    "5.5.2",
                    "Bare CR or LF in message data (RFC 5321 2.3.8)",
                ));
            }
        }
        true
    }

    fn data_done(&mut self, summary: DataSummary) {
        let state = std::mem::replace(&mut self.state, State::Ready);
        let State::Data(txn, _) = state else {
            return;
        };
        if summary.too_big {
            self.outputs.push_back(Output::DataAbort);
            return self.reply(Reply::new(552, "5.3.4", "Message too big"));
        }
        if summary.received_headers > MAX_RECEIVED_HEADERS {
            self.outputs.push_back(Output::DataAbort);
            return self.reply(Reply::new(
                554,
                "5.4.6",
                "Too many Received headers: mail loop",
            ));
        }
        self.state = State::Storing(txn);
        self.outputs.push_back(Output::DataEnd(summary));
    }

    /// The driver's answer to `DataEnd`: the queue id, or the reply to send (451 ...).
    pub fn data_result(&mut self, result: Result<String, Reply>) {
        if !matches!(self.state, State::Storing(_)) {
            return;
        }
        self.state = State::Ready;
        match result {
            Ok(id) => self.reply(Reply::new(250, "2.0.0", format!("OK: queued as {id}"))),
            Err(reply) => self.reply(reply),
        }
    }

    /// RFC 3207 §4.2: the client must start over; §5 (and CVE-2011-0411): anything the
    /// client pipelined behind STARTTLS is discarded.
    fn starttls(&mut self) {
        if self.tls {
            return self.reply(Reply::new(503, "5.5.1", "Already using TLS"));
        }
        if !self.config.tls_available {
            return self.reply(Reply::new(454, "4.7.0", "TLS not available"));
        }
        self.input.clear();
        self.discarding_line = false;
        self.state = State::TlsPending;
        self.outputs.push_back(Output::Reply(Reply::new(
            220,
            "2.0.0",
            "Ready to start TLS",
        )));
        self.outputs.push_back(Output::StartTls);
    }

    /// The handshake succeeded: forget the greeting (RFC 3207 §4.2).
    pub fn tls_established(&mut self) {
        self.input.clear();
        self.tls = true;
        self.helo = None;
        self.esmtp = false;
        self.state = State::Connected;
    }

    fn auth(&mut self, mechanism: String, initial: Option<String>) {
        if !self.config.kind.is_submission() {
            return self.reply(Reply::new(503, "5.5.1", "AUTH not available on this port"));
        }
        if !self.tls {
            // RFC 4954 §6.
            return self.reply(Reply::new(538, "5.7.11", "Encryption required for AUTH"));
        }
        if self.helo.is_none() || self.auth_user.is_some() || !matches!(self.state, State::Ready) {
            return self.reply(Reply::new(503, "5.5.1", "AUTH not allowed now"));
        }
        match (mechanism.as_str(), initial) {
            ("PLAIN", None) => self.sasl_challenge(SaslState::PlainResponse, ""),
            ("PLAIN", Some(resp)) => self.sasl_plain(resp.as_bytes()),
            ("LOGIN", None) => self.sasl_challenge(SaslState::LoginUser, "VXNlcm5hbWU6"),
            ("LOGIN", Some(user)) => self.sasl_login_user(user.as_bytes()),
            _ => self.reply(Reply::new(
                504,
                "5.5.4",
                "Unrecognized authentication mechanism",
            )),
        }
    }

    fn sasl_challenge(&mut self, next: SaslState, challenge: &'static str) {
        self.state = State::Sasl(next);
        self.outputs
            .push_back(Output::Reply(Reply::new(334, "", challenge)));
    }

    fn sasl_step(&mut self, line: &[u8]) {
        let State::Sasl(step) = std::mem::replace(&mut self.state, State::Ready) else {
            return;
        };
        // RFC 4954 §4: "*" cancels the exchange.
        if line == b"*" {
            let reply = Reply::new(501, "5.0.0", "Authentication cancelled");
            return match step {
                SaslState::LoginPassword { user } => self.refuse(reply, Subject::Login(user)),
                _ => self.reply(reply),
            };
        }
        match step {
            SaslState::PlainResponse => self.sasl_plain(line),
            SaslState::LoginUser => self.sasl_login_user(line),
            SaslState::LoginPassword { user } => match decode_base64(line) {
                Some(password) => self.authenticate(user, password),
                None => self.refuse(bad_base64(), Subject::Login(user)),
            },
        }
    }

    /// RFC 4616: `[authzid] NUL authcid NUL passwd`; `=` is an empty initial response.
    fn sasl_plain(&mut self, b64: &[u8]) {
        let Some(decoded) = decode_base64(if b64 == b"=" { b"" } else { b64 }) else {
            return self.reply(bad_base64());
        };
        let mut parts = decoded.split('\0');
        let (Some(authzid), Some(user), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return self.reply(Reply::new(501, "5.5.2", "Malformed PLAIN response"));
        };
        if !authzid.is_empty() && authzid != user {
            return self.refuse(invalid_credentials(), Subject::Login(user.to_string()));
        }
        self.authenticate(user.to_string(), password.to_string());
    }

    fn sasl_login_user(&mut self, b64: &[u8]) {
        match decode_base64(b64) {
            Some(user) => self.sasl_challenge(SaslState::LoginPassword { user }, "UGFzc3dvcmQ6"),
            None => self.reply(bad_base64()),
        }
    }

    fn authenticate(&mut self, user: String, password: String) {
        self.state = State::Authenticating {
            login: user.clone(),
        };
        self.outputs
            .push_back(Output::Authenticate { user, password });
    }

    /// Leaves `Authenticating`; the login it was about.
    fn end_authenticating(&mut self) -> Option<String> {
        match std::mem::replace(&mut self.state, State::Ready) {
            State::Authenticating { login } => Some(login),
            other => {
                self.state = other;
                None
            }
        }
    }

    /// The driver's answer to `Authenticate`: the canonical user (`user@domain`) or None.
    pub fn auth_result(&mut self, user: Option<String>) {
        let Some(login) = self.end_authenticating() else {
            return;
        };
        match user {
            Some(user) => {
                self.auth_user = Some(user);
                self.reply(Reply::new(235, "2.7.0", "Authentication successful"));
            }
            None => self.refuse(invalid_credentials(), Subject::Login(login)),
        }
    }

    /// The driver's other answer to `Authenticate`: no check was made (the client is over its
    /// limit of failures); `reply` says so (454 4.7.0).
    pub fn auth_refused(&mut self, reply: Reply) {
        if let Some(login) = self.end_authenticating() {
            self.refuse(reply, Subject::Login(login));
        }
    }

    /// Receiving message data (after 354, before the final dot).
    pub fn in_data(&self) -> bool {
        matches!(self.state, State::Data(..))
    }

    /// The idle timeout fired (SPEC §7: 5 minutes).
    pub fn timed_out(&mut self) {
        if self.is_closed() {
            return;
        }
        self.outputs.clear();
        self.close_with(Reply::new(421, "4.4.2", "Idle timeout, bye"));
    }
}

fn decode_base64(b64: &[u8]) -> Option<String> {
    let bytes = BASE64.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

fn bad_base64() -> Reply {
    Reply::new(501, "5.5.2", "Invalid base64")
}

/// RFC 4954 §6: 535 5.7.8, whether the user exists or not.
fn invalid_credentials() -> Reply {
    Reply::new(535, "5.7.8", "Authentication credentials invalid")
}

#[cfg(test)]
mod tests;
