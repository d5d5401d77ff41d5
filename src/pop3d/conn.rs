//! The I/O driver of one POP3 connection: stream ↔ framer ↔ session, STLS, logins through
//! the shared `auth` module, the maildrop (INBOX) opened at login, messages streamed from
//! their files, the removals of the UPDATE state, and the time limits.

use crate::auth::Login;
use crate::mailbox::{Folder, FolderName, StoreError};
use crate::net::stream::{deadline_passed, log_connection_failed, with_timeout};
use crate::net::{Accepted, Protocol, Service, Stream};
use crate::pop3d::framer::Framer;
use crate::pop3d::maildrop::Maildrop;
use crate::pop3d::message::Encoder;
use crate::pop3d::server::{MaildropLock, Server};
use crate::pop3d::session::{Action, LoginOutcome, Session};
use smol::io::AsyncReadExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest line: a command is at most 255 octets (RFC 2449 §4), but an AUTH PLAIN
/// response of a long address and password is longer.
const LINE: usize = 8 * 1024;
/// One read from the client at most.
const READ_CHUNK: usize = 16 * 1024;
/// One read from a message file.
const FILE_CHUNK: usize = 64 * 1024;
/// How long our own writes may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Flush the output once it is this large (a message is sent as it is read).
const FLUSH_AT: usize = 256 * 1024;

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
    let Some(stream) = Stream::open(tcp, kind.implicit_tls(), tls, limit, peer, "pop3: ").await
    else {
        return;
    };
    let mut conn = Conn {
        session: Session::new(stream.is_tls()),
        server,
        peer,
        stream,
        framer: Framer::new(LINE),
        started: Instant::now(),
        open: None,
        closing: false,
    };
    if let Err(e) = conn.run().await {
        log_connection_failed("pop3", peer, &e);
    }
    // A session that did not reach UPDATE removes nothing (RFC 1939 §6): `open` is dropped
    // with its marks, and the lock with it.
}

/// The maildrop of a logged-in session.
struct Open {
    user: String,
    folder: Folder,
    _lock: MaildropLock,
}

struct Conn {
    server: Arc<Server>,
    peer: SocketAddr,
    stream: Stream,
    framer: Framer,
    session: Session,
    started: Instant,
    open: Option<Open>,
    closing: bool,
}

impl Conn {
    async fn run(&mut self) -> std::io::Result<()> {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut answered_at = Instant::now();
        loop {
            self.flush().await?;
            if self.closing {
                self.stream.linger(Duration::from_secs(1)).await;
                return Ok(());
            }
            let limit = self.read_limit(answered_at);
            let n = match with_timeout(limit, self.stream.read(&mut buf)).await {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if deadline_passed(&e) => {
                    self.session
                        .out
                        .extend_from_slice(b"-ERR Autologout; idle for too long\r\n");
                    self.flush().await?;
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            self.framer.feed(&buf[..n]);
            // RFC 2449 §6.6 PIPELINING: every whole line is answered in turn, the replies
            // written together.
            while let Some(line) = self.framer.next_line() {
                let action = self.session.line(line);
                if self.act(action).await? {
                    break;
                }
                if self.session.out.len() >= FLUSH_AT {
                    self.flush().await?;
                }
            }
            answered_at = Instant::now();
        }
    }

    /// Carries out an action; true when no more input is to be taken now (closing, or TLS
    /// started and what was pipelined behind STLS dropped).
    async fn act(&mut self, action: Action) -> std::io::Result<bool> {
        match action {
            Action::Continue => Ok(false),
            Action::Close => {
                self.closing = true;
                Ok(true)
            }
            Action::StartTls => {
                self.flush().await?;
                // RFC 2595 §4: nothing sent before the handshake is a command after it.
                self.framer.discard_input();
                let tls = self.server.config.tls();
                if let Err(why) = self.stream.start_tls(&tls, self.server.limits.login).await {
                    log::info!("pop3: TLS handshake with {} failed: {why}", self.peer);
                    return Err(why);
                }
                self.session.tls_started();
                Ok(true)
            }
            Action::Login { user, password } => {
                let outcome = self.login(user, password).await;
                self.session.logged_in(outcome);
                Ok(false)
            }
            Action::Send { uid, body_lines } => {
                self.send(uid, body_lines).await?;
                Ok(false)
            }
            Action::Update { remove } => {
                let removed = self.update(remove).await;
                self.session.updated(removed);
                self.closing = true;
                Ok(true)
            }
        }
    }

    /// How long the client may take for its next bytes.
    fn read_limit(&self, answered_at: Instant) -> Duration {
        let limits = self.server.limits;
        match self.open {
            None => limits.login.saturating_sub(self.started.elapsed()),
            Some(_) => limits.autologout.saturating_sub(answered_at.elapsed()),
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.session.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.session.out);
        with_timeout(WRITE_TIMEOUT, self.stream.write_all(&out)).await?;
        self.session.out = out;
        self.session.out.clear();
        if self.session.out.capacity() > 4 * FLUSH_AT {
            self.session.out.shrink_to(FLUSH_AT);
        }
        Ok(())
    }

    /// Checks the credentials, locks and opens the maildrop.
    async fn login(&mut self, login: String, password: String) -> LoginOutcome {
        let ip = self.peer.ip();
        let auth = self.server.auth.clone();
        let user = match auth.login(Protocol::Pop3, ip, &login, password).await {
            Login::Ok(user) => user,
            Login::Failed => {
                crate::maillog::login_failed("pop3", ip, &login);
                return LoginOutcome::Failed;
            }
            Login::Blocked => {
                crate::maillog::login_failed("pop3", ip, &login);
                return LoginOutcome::Blocked;
            }
        };
        let Some(lock) = self.server.maildrops.lock(&user) else {
            log::info!("pop3: maildrop of {user} in use; refused {ip}");
            return LoginOutcome::InUse;
        };
        let (store, who) = (self.server.store.clone(), user.clone());
        let opened = smol::unblock(move || open_maildrop(&store, &who)).await;
        match opened {
            Ok((folder, drop)) => {
                crate::maillog::login("pop3", ip, &user, self.stream.is_tls());
                self.open = Some(Open {
                    user,
                    folder,
                    _lock: lock,
                });
                LoginOutcome::Ok(drop)
            }
            Err(e) => {
                log::error!("pop3: cannot open the maildrop of {user}: {e}");
                LoginOutcome::Trouble
            }
        }
    }

    /// RETR / TOP: the file read in chunks, each encoded and sent as it comes.
    async fn send(&mut self, uid: u32, body_lines: Option<u64>) -> std::io::Result<()> {
        let Some(open) = self.open.take() else {
            self.session.sending(false);
            return Ok(());
        };
        let (open, file) = smol::unblock(move || {
            let file = match open.folder.index_of_uid(uid) {
                Some(i) => open.folder.open_file(i),
                None => Err(StoreError::Expunged),
            };
            (open, file)
        })
        .await;
        let user = open.user.clone();
        self.open = Some(open);
        let file = match file {
            Ok(file) => file,
            Err(e) => {
                if !matches!(e, StoreError::Expunged) {
                    log::error!("pop3: {user}: message {uid}: {e}");
                }
                self.session.sending(false);
                return Ok(());
            }
        };
        self.session.sending(true);
        let mut reader = smol::Unblock::with_capacity(FILE_CHUNK, file);
        let mut chunk = vec![0u8; FILE_CHUNK];
        let mut encoder = Encoder::new(body_lines);
        loop {
            // The +OK line is out: a file that cannot be read now ends the connection.
            let n = reader.read(&mut chunk).await?;
            if n == 0 || !encoder.encode(&chunk[..n], &mut self.session.out) {
                break;
            }
            if self.session.out.len() >= FLUSH_AT {
                self.flush().await?;
            }
        }
        encoder.finish(&mut self.session.out);
        Ok(())
    }

    /// The UPDATE state (RFC 1939 §6): the messages marked deleted are removed.
    async fn update(&mut self, remove: Vec<u32>) -> Result<usize, ()> {
        let Some(mut open) = self.open.take() else {
            return Ok(0);
        };
        if remove.is_empty() {
            return Ok(0);
        }
        let (open, removed) = smol::unblock(move || {
            let removed = open.folder.remove(&remove);
            (open, removed)
        })
        .await;
        match removed {
            Ok(gone) => {
                log::info!("pop3: {} removed {} message(s)", open.user, gone.len());
                Ok(gone.len())
            }
            Err(e) => {
                log::error!("pop3: {}: removing messages: {e}", open.user);
                Err(())
            }
        }
    }
}

/// INBOX of `user` (`local@domain`), opened read-write (files in `new/` move to `cur/`, as
/// Dovecot's POP3 does), and its maildrop.
fn open_maildrop(
    store: &crate::mailbox::Store,
    user: &str,
) -> Result<(Folder, Maildrop), StoreError> {
    let (local, domain) = user
        .rsplit_once('@')
        .ok_or_else(|| StoreError::BadName(user.to_string()))?;
    let inbox = FolderName::parse("INBOX")?;
    let folder = store.user(domain, local)?.open(&inbox, false)?;
    let fields = folder.pop3_fields()?;
    let messages = folder.messages().iter().map(|m| (m.uid, m.size));
    let drop = Maildrop::build(messages, folder.uidvalidity, &fields);
    Ok((folder, drop))
}
