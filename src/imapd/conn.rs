//! The I/O driver of one IMAP connection: stream ↔ framer ↔ commands, STARTTLS, login
//! through the shared `auth` module, APPEND literals spooled to disk, IDLE, and the
//! autologout. The commands themselves are in `commands.rs` and the modules it names.

use crate::auth::Login;
use crate::imapd::commands::{self, Selected};
use crate::imapd::framer::{Event, Framer, Limits};
use crate::imapd::server::{Server, SessionSlot};
use crate::imapd::wire::{self, Status};
use crate::mailbox::UserStore;
use crate::net::stream::{deadline_passed, log_connection_failed, with_timeout};
use crate::net::{Accepted, Protocol, Service, Stream};
use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::{Command, CommandBody};
use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Before login a command holds at most this much (a LOGIN with a long password fits); the
/// byte budget of a stranger.
const PRE_AUTH_COMMAND: usize = 8 * 1024;
/// After login: a long SEARCH or a STORE of many keywords fits (Dovecot's limit too).
const COMMAND: usize = 64 * 1024;
/// One read from the client at most.
const READ_CHUNK: usize = 16 * 1024;
/// How long our own writes may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Flush the output once it is this large, even in the middle of a command (a FETCH of many
/// messages is sent as it is made, not held whole).
pub const FLUSH_AT: usize = 256 * 1024;

impl Service for Server {
    async fn serve(self: Arc<Self>, conn: Accepted) {
        serve(self, conn).await;
    }

    fn refusal(
        &self,
        kind: crate::net::ListenerKind,
        why: crate::net::caps::Refused,
    ) -> Option<Vec<u8>> {
        Server::refusal(kind, why)
    }
}

/// One connection, from accept to close.
pub async fn serve(server: Arc<Server>, conn: Accepted) {
    let Accepted {
        tcp, peer, kind, ..
    } = conn;
    let tls = || server.config.tls();
    let limit = server.limits.login;
    let Some(stream) = Stream::open(tcp, kind.implicit_tls(), tls, limit, peer, "imap: ").await
    else {
        return;
    };
    let mut conn = Conn {
        server: server.clone(),
        peer,
        stream,
        framer: Framer::new(Limits {
            command: PRE_AUTH_COMMAND,
            spooled: 0,
        }),
        out: Vec::new(),
        state: State::NotAuthenticated,
        started: Instant::now(),
        spool: None,
        slot: None,
    };
    conn.greet();
    if let Err(e) = conn.run().await {
        log_connection_failed("imap", peer, &e);
    }
}

/// The session's state (RFC 3501 §3).
pub enum State {
    NotAuthenticated,
    Authenticated(Session),
    Selected(Session, Box<Selected>),
    Logout,
}

/// A logged-in user.
pub struct Session {
    /// `user@domain`.
    pub user: String,
    pub store: UserStore,
    /// CONDSTORE is on (RFC 7162 §3.1: ENABLE, or a command that uses it): MODSEQ in
    /// FETCH responses with FLAGS, HIGHESTMODSEQ at SELECT.
    pub condstore: bool,
    /// ENABLE QRESYNC was given (RFC 7162 §3.2.3): expunges are told as VANISHED.
    pub qresync: bool,
}

/// What to do after a command.
pub enum Next {
    Continue,
    /// STARTTLS was answered: upgrade before reading anything more.
    StartTls,
    /// IDLE was accepted.
    Idle(String),
    /// AUTHENTICATE PLAIN without an initial response: the next line is the response.
    AuthData(String),
    Close,
}

pub struct Conn {
    pub server: Arc<Server>,
    pub peer: SocketAddr,
    stream: Stream,
    framer: Framer,
    /// Responses not yet written.
    pub out: Vec<u8>,
    pub state: State,
    started: Instant,
    /// The spool of the APPEND literal being received.
    spool: Option<File>,
    /// Counts this session against the cap per user and address, once logged in.
    slot: Option<SessionSlot>,
}

impl Conn {
    fn greet(&mut self) {
        let caps = self.capabilities();
        wire::status(
            &mut self.out,
            None,
            Status::Ok,
            Some(&caps),
            "tambo IMAP ready",
        );
    }

    /// RFC 3501 §7.2.1: what we offer in this state. Only what works.
    pub fn capabilities(&self) -> String {
        let mut caps =
            String::from("CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE NAMESPACE");
        match &self.state {
            State::NotAuthenticated => {
                if self.stream.is_tls() {
                    caps.push_str(" AUTH=PLAIN");
                } else {
                    // RFC 3501 §6.2.3: no LOGIN (nor AUTHENTICATE) before TLS.
                    caps.push_str(" STARTTLS LOGINDISABLED");
                }
            }
            _ => caps.push_str(concat!(
                " UIDPLUS MOVE SPECIAL-USE CHILDREN UNSELECT QUOTA QUOTA=RES-STORAGE",
                " CONDSTORE QRESYNC SORT THREAD=REFERENCES THREAD=ORDEREDSUBJECT"
            )),
        }
        caps
    }

    async fn run(&mut self) -> std::io::Result<()> {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut answered_at = Instant::now();
        loop {
            self.flush().await?;
            if matches!(self.state, State::Logout) {
                self.stream.linger(Duration::from_secs(1)).await;
                return Ok(());
            }
            let limit = self.read_limit(answered_at);
            let n = match with_timeout(limit, self.stream.read(&mut buf)).await {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if deadline_passed(&e) => {
                    wire::untagged(&mut self.out, "BYE Autologout; idle for too long");
                    self.flush().await?;
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            self.framer.feed(&buf[..n]);
            while let Some(event) = self.framer.next_event() {
                match self.event(event).await? {
                    Next::Continue => {}
                    Next::Close => {
                        self.state = State::Logout;
                        break;
                    }
                    Next::StartTls => {
                        self.flush().await?;
                        self.framer.discard_input();
                        let tls = self.server.config.tls();
                        let upgraded = self.stream.start_tls(&tls, self.server.limits.login).await;
                        if let Err(why) = upgraded {
                            log::info!("imap: TLS handshake with {} failed: {why}", self.peer);
                            return Ok(());
                        }
                        break;
                    }
                    Next::Idle(tag) => {
                        self.idle(&tag, &mut buf).await?;
                    }
                    Next::AuthData(tag) => {
                        self.flush().await?;
                        let line = self.read_line(&mut buf).await?;
                        self.authenticate_response(&tag, line.as_deref()).await;
                    }
                }
                if self.out.len() >= FLUSH_AT {
                    self.flush().await?;
                }
            }
            answered_at = Instant::now();
        }
    }

    /// How long the client may take for its next bytes.
    fn read_limit(&self, answered_at: Instant) -> Duration {
        match self.state {
            State::NotAuthenticated => self
                .server
                .limits
                .login
                .saturating_sub(self.started.elapsed()),
            _ => self
                .server
                .limits
                .autologout
                .saturating_sub(answered_at.elapsed()),
        }
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        with_timeout(WRITE_TIMEOUT, self.stream.write_all(&out)).await?;
        self.out = out;
        self.out.clear();
        if self.out.capacity() > 4 * FLUSH_AT {
            self.out.shrink_to(FLUSH_AT);
        }
        Ok(())
    }

    async fn event(&mut self, event: Event) -> std::io::Result<Next> {
        match event {
            Event::Continue => {
                wire::untagged_continue(&mut self.out);
                // The client waits for it before it sends the literal.
                self.flush().await?;
                Ok(Next::Continue)
            }
            Event::TooLong { tag } => {
                wire::status(
                    &mut self.out,
                    tag.as_deref(),
                    Status::Bad,
                    None,
                    "Command too long",
                );
                Ok(Next::Continue)
            }
            Event::SpoolStart { len } => {
                self.spool = commands::append::spool_file(&self.server, len).await.ok();
                Ok(Next::Continue)
            }
            Event::SpoolChunk(chunk) => {
                if let Some(mut file) = self.spool.take() {
                    // A failed write is noticed at the APPEND (the spool is then missing).
                    let written =
                        smol::unblock(move || file.write_all(&chunk).map(|()| file)).await;
                    self.spool = written.ok();
                }
                Ok(Next::Continue)
            }
            Event::Command { bytes, spooled } => {
                let spool = if spooled.is_some() {
                    self.spool.take()
                } else {
                    None
                };
                self.command(&bytes, spooled, spool).await
            }
        }
    }

    /// One whole command: parsed, then carried out in the current state.
    async fn command(
        &mut self,
        bytes: &[u8],
        spooled: Option<u64>,
        spool: Option<File>,
    ) -> std::io::Result<Next> {
        let command = match CommandCodec::default().decode(bytes) {
            Ok((_, command)) => command,
            Err(_) => {
                let tag = tag_of(bytes);
                wire::status(
                    &mut self.out,
                    tag.as_deref(),
                    Status::Bad,
                    None,
                    "Syntax error",
                );
                return Ok(Next::Continue);
            }
        };
        let tag = command.tag.inner().to_string();
        let next = self.dispatch(&tag, command, spooled.and(spool)).await;
        Ok(next)
    }

    async fn dispatch(&mut self, tag: &str, command: Command<'_>, spool: Option<File>) -> Next {
        match command.body {
            CommandBody::Capability => {
                let caps = self.capabilities();
                wire::untagged(&mut self.out, &caps);
                self.ok(tag, "CAPABILITY completed");
            }
            CommandBody::Noop | CommandBody::Check => {
                commands::report_changes(self, true).await;
                self.ok(tag, "NOOP completed");
            }
            CommandBody::Logout => {
                wire::untagged(&mut self.out, "BYE Logging out");
                self.ok(tag, "LOGOUT completed");
                return Next::Close;
            }
            CommandBody::Id { .. } => {
                wire::untagged(&mut self.out, "ID (\"name\" \"tambo\")");
                self.ok(tag, "ID completed");
            }
            CommandBody::StartTLS => return self.starttls(tag),
            CommandBody::Login { username, password } => {
                let user = String::from_utf8_lossy(username.as_ref()).into_owned();
                let password = String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
                self.login(tag, &user, password).await;
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } => {
                let initial = initial_response.map(|r| r.declassify().to_vec());
                return self.authenticate(tag, mechanism.as_ref(), initial).await;
            }
            body => return commands::dispatch(self, tag, body, spool).await,
        }
        Next::Continue
    }

    pub fn ok(&mut self, tag: &str, text: &str) {
        wire::status(&mut self.out, Some(tag), Status::Ok, None, text);
    }

    pub fn no(&mut self, tag: &str, code: Option<&str>, text: &str) {
        wire::status(&mut self.out, Some(tag), Status::No, code, text);
    }

    pub fn bad(&mut self, tag: &str, text: &str) {
        wire::status(&mut self.out, Some(tag), Status::Bad, None, text);
    }

    fn starttls(&mut self, tag: &str) -> Next {
        if self.stream.is_tls() || !matches!(self.state, State::NotAuthenticated) {
            self.bad(tag, "TLS is already on, or not available now");
            return Next::Continue;
        }
        self.ok(tag, "Begin TLS negotiation now");
        Next::StartTls
    }

    /// LOGIN (RFC 3501 §6.2.3): only over TLS.
    async fn login(&mut self, tag: &str, user: &str, password: String) {
        if !matches!(self.state, State::NotAuthenticated) {
            return self.bad(tag, "Already logged in");
        }
        if !self.stream.is_tls() {
            // RFC 3501 §6.2.3 LOGINDISABLED; Dovecot's words.
            return self.no(
                tag,
                Some("PRIVACYREQUIRED"),
                "Plaintext authentication disallowed on non-secure connections",
            );
        }
        self.check_login(tag, user, password).await;
    }

    /// AUTHENTICATE PLAIN (RFC 4959 SASL-IR, RFC 4616), only over TLS.
    async fn authenticate(&mut self, tag: &str, mechanism: &str, initial: Option<Vec<u8>>) -> Next {
        if !matches!(self.state, State::NotAuthenticated) {
            self.bad(tag, "Already logged in");
            return Next::Continue;
        }
        if !self.stream.is_tls() {
            self.no(
                tag,
                Some("PRIVACYREQUIRED"),
                "Plaintext authentication disallowed on non-secure connections",
            );
            return Next::Continue;
        }
        if !mechanism.eq_ignore_ascii_case("PLAIN") {
            self.no(tag, None, "Unsupported authentication mechanism");
            return Next::Continue;
        }
        match initial {
            Some(response) => {
                self.plain(tag, &response).await;
                Next::Continue
            }
            None => {
                self.out.extend_from_slice(b"+ \r\n");
                Next::AuthData(tag.to_string())
            }
        }
    }

    /// The client's line after `+ `: base64 of the PLAIN response, or `*` to cancel.
    async fn authenticate_response(&mut self, tag: &str, line: Option<&[u8]>) {
        let Some(line) = line else {
            return self.bad(tag, "Authentication line too long");
        };
        let line = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"))
            .unwrap_or(line);
        if line == b"*" {
            return self.bad(tag, "Authentication cancelled");
        }
        use base64::Engine as _;
        match base64::engine::general_purpose::STANDARD.decode(line) {
            Ok(response) => self.plain(tag, &response).await,
            Err(_) => self.bad(tag, "Invalid base64"),
        }
    }

    /// RFC 4616: `authzid NUL authcid NUL passwd`; an authzid other than the user is refused.
    async fn plain(&mut self, tag: &str, response: &[u8]) {
        let mut parts = response.split(|&b| b == 0);
        let (Some(authz), Some(user), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return self.bad(tag, "Invalid PLAIN response");
        };
        let user = String::from_utf8_lossy(user).into_owned();
        if !authz.is_empty() && authz != user.as_bytes() {
            return self.no(
                tag,
                Some("AUTHORIZATIONFAILED"),
                "Authorization identity not allowed",
            );
        }
        let password = String::from_utf8_lossy(password).into_owned();
        self.check_login(tag, &user, password).await;
    }

    async fn check_login(&mut self, tag: &str, login: &str, password: String) {
        let auth = self.server.auth.clone();
        let ip = self.peer.ip();
        let user = match auth.login(Protocol::Imap, ip, login, password).await {
            Login::Ok(user) => user,
            Login::Failed => {
                crate::maillog::login_failed("imap", ip, login);
                return self.no(tag, Some("AUTHENTICATIONFAILED"), "Authentication failed");
            }
            Login::Blocked => {
                crate::maillog::login_failed("imap", ip, login);
                return self.no(
                    tag,
                    Some("UNAVAILABLE"),
                    "Too many failed logins, try again later",
                );
            }
        };
        let Some(slot) = self.server.sessions.open(&user, ip) else {
            return self.no(
                tag,
                Some("LIMIT"),
                "Too many sessions for this user from this address",
            );
        };
        let Some((local, domain)) = user.rsplit_once('@') else {
            return self.no(tag, Some("SERVERBUG"), "Bad user name");
        };
        let (store, local, domain) = (
            self.server.store.clone(),
            local.to_string(),
            domain.to_string(),
        );
        let opened = smol::unblock(move || store.user(&domain, &local)).await;
        let store = match opened {
            Ok(store) => store,
            Err(e) => {
                log::error!("imap: cannot open the mailbox of {user}: {e}");
                return self.no(tag, Some("SERVERBUG"), "Cannot open your mailbox");
            }
        };
        crate::maillog::login("imap", ip, &user, self.stream.is_tls());
        self.slot = Some(slot);
        self.state = State::Authenticated(Session {
            user,
            store,
            condstore: false,
            qresync: false,
        });
        self.framer.set_limits(Limits {
            command: COMMAND,
            spooled: self.server.max_message_size,
        });
        let caps = self.capabilities();
        wire::status(
            &mut self.out,
            Some(tag),
            Status::Ok,
            Some(&caps),
            "Logged in",
        );
    }

    /// One line from the client, outside the framer (the AUTHENTICATE exchange), within the
    /// login time; None when it is too long.
    async fn read_line(&mut self, buf: &mut [u8]) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(Event::Command { bytes, .. }) = self.framer.next_event() {
                return Ok(Some(bytes));
            }
            let limit = self
                .server
                .limits
                .login
                .saturating_sub(self.started.elapsed());
            let n = with_timeout(limit, self.stream.read(buf)).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.framer.feed(&buf[..n]);
            if let Some(event) = self.framer.next_event() {
                return Ok(match event {
                    Event::Command { bytes, .. } => Some(bytes),
                    _ => None,
                });
            }
        }
    }

    /// IDLE (RFC 2177): changes are told as they happen, until the client says DONE.
    async fn idle(&mut self, tag: &str, buf: &mut [u8]) -> std::io::Result<()> {
        self.out.extend_from_slice(b"+ idling\r\n");
        self.flush().await?;
        let limits = self.server.limits;
        let started = Instant::now();
        let mut last_keepalive = Instant::now();
        loop {
            let listener = self.notifier_listener();
            let wake = async {
                match listener {
                    Some(l) => {
                        let poll = async {
                            smol::Timer::after(limits.idle_poll).await;
                        };
                        smol::future::or(l, poll).await;
                    }
                    None => {
                        smol::Timer::after(limits.idle_poll).await;
                    }
                }
                Ok::<Option<usize>, std::io::Error>(None)
            };
            let read = async { self_read(&mut self.stream, buf).await.map(Some) };
            let got = smol::future::or(read, wake).await?;
            match got {
                Some(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Some(n) => {
                    self.framer.feed(&buf[..n]);
                    match self.framer.next_event() {
                        Some(Event::Command { bytes, .. }) => {
                            if bytes.trim_ascii().eq_ignore_ascii_case(b"DONE") {
                                self.ok(tag, "IDLE terminated");
                            } else {
                                self.bad(tag, "Expected DONE");
                            }
                            return Ok(());
                        }
                        Some(Event::TooLong { .. }) => {
                            self.bad(tag, "Expected DONE");
                            return Ok(());
                        }
                        _ => {}
                    }
                }
                None => {
                    commands::report_changes(self, true).await;
                    if last_keepalive.elapsed() >= limits.idle_keepalive {
                        wire::untagged(&mut self.out, "OK Still here");
                        last_keepalive = Instant::now();
                    }
                    self.flush().await?;
                }
            }
            if started.elapsed() >= limits.autologout {
                wire::untagged(&mut self.out, "BYE Autologout; idle for too long");
                self.flush().await?;
                self.state = State::Logout;
                return Ok(());
            }
        }
    }

    /// A future that completes when something of this user changes (deliveries, other
    /// sessions), if logged in.
    fn notifier_listener(&self) -> Option<event_listener::EventListener> {
        let store = match &self.state {
            State::Authenticated(s) | State::Selected(s, _) => &s.store,
            _ => return None,
        };
        Some(
            self.server
                .store
                .notifier()
                .listen(store.domain(), store.user()),
        )
    }
}

async fn self_read(stream: &mut Stream, buf: &mut [u8]) -> std::io::Result<usize> {
    stream.read(buf).await
}

/// The tag at the start of a command that did not parse, when it looks like one.
fn tag_of(bytes: &[u8]) -> Option<String> {
    let end = bytes
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')?;
    let tag = &bytes[..end];
    let valid = !tag.is_empty()
        && tag.len() <= 64
        && tag
            .iter()
            .all(|&b| b.is_ascii_graphic() && !b"(){%*\"\\+".contains(&b));
    valid.then(|| String::from_utf8_lossy(tag).into_owned())
}
