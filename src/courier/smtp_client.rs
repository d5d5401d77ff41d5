//! The I/O side of the SMTP/LMTP client: connect, greeting, EHLO/LHLO, STARTTLS, one
//! transaction with the data streamed from the queue file, every read under a deadline.
//!
//! The parsing lives in `proto::client`; this module only moves bytes, keeps time, and turns
//! what the server said into one outcome per recipient. A recipient is reported delivered
//! only after a 2xx to its RCPT and a 2xx to the data (LMTP: its own reply to the data).

use crate::courier::DeliveryError;
use crate::courier::domaininfo::TlsLevel;
use crate::proto::client::{Capabilities, DotStuffer, ReplyError, ReplyParser, ServerReply};
use crate::queue::store::Item;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Per-read deadline when `TAMBO_SMTP_TIMEOUT_SECS` is not set.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The message is read from the queue file and written out in pieces of this size.
const CHUNK: usize = 64 * 1024;

/// How long any one step may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub connect: Duration,
    /// Each read of a reply, each write, the TLS handshake.
    pub io: Duration,
}

impl Deadlines {
    /// From `TAMBO_SMTP_TIMEOUT_SECS` (read once per process), else 60 s; the connect
    /// deadline is 30 s or that value if smaller.
    pub fn from_env() -> Deadlines {
        static DEADLINES: OnceLock<Deadlines> = OnceLock::new();
        *DEADLINES.get_or_init(|| {
            Deadlines::parse(std::env::var("TAMBO_SMTP_TIMEOUT_SECS").ok().as_deref())
        })
    }

    fn parse(value: Option<&str>) -> Deadlines {
        let io = value
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&secs| secs > 0)
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
        Deadlines {
            connect: CONNECT_TIMEOUT.min(io),
            io,
        }
    }

    /// The same deadline for everything (tests).
    pub fn uniform(d: Duration) -> Deadlines {
        Deadlines { connect: d, io: d }
    }
}

/// SMTP (RFC 5321) or LMTP (RFC 2033).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Smtp,
    Lmtp,
}

/// Whether to use STARTTLS when the server offers it.
#[derive(Debug, Clone)]
pub enum TlsMode {
    Off,
    /// Use it when offered; the certificate is checked for `server_name` against
    /// `test_roots` when given, else the platform's roots, and the verdict becomes the
    /// achieved `TlsLevel` instead of a reason to fail.
    Opportunistic {
        server_name: String,
        test_roots: Option<Arc<RootCertStore>>,
    },
}

/// What to send in one transaction.
#[derive(Debug, Clone, Copy)]
pub struct OutboundEnvelope<'a> {
    /// Reverse-path; empty for `<>`.
    pub from: &'a str,
    pub rcpts: &'a [String],
    /// An address or the message needs SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// The body has 8-bit bytes: `BODY=8BITMIME` when offered (RFC 6152).
    pub body_8bit: bool,
}

/// Where in the dialog something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Greeting,
    Hello,
    StartTls,
    MailFrom,
    RcptTo,
    Data,
    Body,
    DataReply,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connect",
            Stage::Greeting => "greeting",
            Stage::Hello => "EHLO",
            Stage::StartTls => "STARTTLS",
            Stage::MailFrom => "MAIL FROM",
            Stage::RcptTo => "RCPT TO",
            Stage::Data => "DATA",
            Stage::Body => "sending the message",
            Stage::DataReply => "waiting for the reply to the message",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// The server answered, but not with what the dialog needed.
    #[error("{0}")]
    Reply(ServerReply),
    #[error("{0}")]
    Io(io::Error),
    #[error("timed out")]
    Timeout,
    #[error("connection closed by the server")]
    Closed,
    #[error("garbage from the server: {0}")]
    Garbage(ReplyError),
    #[error("TLS: {0}")]
    Tls(String),
    /// RFC 6531 §3.4: a message that needs SMTPUTF8 cannot go to a server without it.
    #[error("5.6.7 the message needs SMTPUTF8, which the server does not offer")]
    NoSmtpUtf8,
    #[error("5.1.3 address {0:?} cannot be sent in a command")]
    BadAddress(String),
    /// Our own queue file could not be read (the data was not terminated, so the server
    /// cannot have accepted a truncated message).
    #[error("reading the queued message: {0}")]
    Queue(io::Error),
}

/// A failure of the dialog with one server, with the server's name and address.
#[derive(Debug, thiserror::Error)]
pub struct ClientError {
    pub peer: String,
    pub stage: Stage,
    pub kind: ErrorKind,
}

/// `mx.example[192.0.2.1]: 550 5.1.1 no such user`, or
/// `mx.example[192.0.2.1]: timed out (at DATA)` for failures without a reply.
impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Reply(r) => write!(f, "{}: {r} (at {})", self.peer, self.stage),
            kind => write!(f, "{}: {kind} (at {})", self.peer, self.stage),
        }
    }
}

impl ClientError {
    /// 5xx replies and what can never work with this message; everything else is retried.
    pub fn is_permanent(&self) -> bool {
        match &self.kind {
            ErrorKind::Reply(r) => r.is_permanent(),
            ErrorKind::NoSmtpUtf8 | ErrorKind::BadAddress(_) => true,
            _ => false,
        }
    }

    pub fn to_delivery(&self) -> DeliveryError {
        DeliveryError {
            permanent: self.is_permanent(),
            reason: self.to_string(),
        }
    }
}

/// A byte stream to a server: TCP, Unix socket, or either inside TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Runs `fut` with a deadline; a timeout is an `io::ErrorKind::TimedOut` error.
async fn with_deadline<T>(d: Duration, fut: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    smol::future::or(fut, async {
        smol::Timer::after(d).await;
        Err(io::ErrorKind::TimedOut.into())
    })
    .await
}

/// One connection to a server.
pub struct Client {
    stream: Box<dyn Io>,
    parser: ReplyParser,
    peer: String,
    deadlines: Deadlines,
    protocol: Protocol,
    caps: Capabilities,
    tls: TlsLevel,
}

impl Client {
    /// Connects over TCP, from `bind` when given. `host` names the server in errors.
    pub async fn connect_tcp(
        host: &str,
        addr: SocketAddr,
        bind: Option<IpAddr>,
        deadlines: Deadlines,
    ) -> Result<Client, ClientError> {
        let peer = match addr.port() {
            25 => format!("{host}[{}]", addr.ip()),
            port => format!("{host}[{}]:{port}", addr.ip()),
        };
        let connect = async {
            match bind {
                Some(bind) => connect_from(bind, addr).await,
                None => smol::net::TcpStream::connect(addr).await,
            }
        };
        match with_deadline(deadlines.connect, connect).await {
            Ok(stream) => Ok(Client::new(Box::new(stream), peer, deadlines)),
            Err(e) => Err(io_error(peer, Stage::Connect, e)),
        }
    }

    /// Connects to a Unix socket (LMTP).
    pub async fn connect_unix(path: &str, deadlines: Deadlines) -> Result<Client, ClientError> {
        let peer = format!("unix:{path}");
        let connect = smol::net::unix::UnixStream::connect(path);
        match with_deadline(deadlines.connect, connect).await {
            Ok(stream) => Ok(Client::new(Box::new(stream), peer, deadlines)),
            Err(e) => Err(io_error(peer, Stage::Connect, e)),
        }
    }

    fn new(stream: Box<dyn Io>, peer: String, deadlines: Deadlines) -> Client {
        Client {
            stream,
            parser: ReplyParser::new(),
            peer,
            deadlines,
            protocol: Protocol::Smtp,
            caps: Capabilities::default(),
            tls: TlsLevel::Plain,
        }
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }
    pub fn tls_level(&self) -> TlsLevel {
        self.tls
    }
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn error(&self, stage: Stage, kind: ErrorKind) -> ClientError {
        ClientError {
            peer: self.peer.clone(),
            stage,
            kind,
        }
    }

    /// Greeting, EHLO (HELO when EHLO gets a 5xx) or LHLO, and STARTTLS when offered and
    /// `tls` allows it (never in LMTP). On a failed TLS handshake the connection is unusable:
    /// the caller may try again without TLS.
    pub async fn hello(
        &mut self,
        protocol: Protocol,
        name: &str,
        tls: &TlsMode,
    ) -> Result<(), ClientError> {
        self.protocol = protocol;
        let greeting = self.read_reply(Stage::Greeting).await?;
        // RFC 5321 §4.3.2: 220 is the only greeting to go on with (554 means go away).
        if greeting.code != 220 {
            return Err(self.error(Stage::Greeting, ErrorKind::Reply(greeting)));
        }
        self.ehlo(name).await?;
        if let TlsMode::Opportunistic {
            server_name,
            test_roots,
        } = tls
            && self.caps.starttls
            && protocol == Protocol::Smtp
            && self.starttls(server_name, test_roots.as_ref()).await?
        {
            // RFC 3207 §4.2: everything learnt before TLS is forgotten; ask again.
            self.ehlo(name).await?;
        }
        Ok(())
    }

    async fn ehlo(&mut self, name: &str) -> Result<(), ClientError> {
        let verb = match self.protocol {
            Protocol::Smtp => "EHLO",
            Protocol::Lmtp => "LHLO",
        };
        let reply = self
            .command(&format!("{verb} {name}"), Stage::Hello)
            .await?;
        if reply.is_positive() {
            self.caps = Capabilities::from_ehlo(&reply);
            return Ok(());
        }
        // RFC 5321 §3.2: a server that does not know EHLO gets HELO, without extensions.
        if reply.is_permanent() && self.protocol == Protocol::Smtp {
            let reply = self.command(&format!("HELO {name}"), Stage::Hello).await?;
            self.caps = Capabilities::default();
            return self.positive(reply, Stage::Hello).map(drop);
        }
        Err(self.error(Stage::Hello, ErrorKind::Reply(reply)))
    }

    /// RFC 3207. Returns whether TLS is now up; a refusal of STARTTLS leaves the session in
    /// plain text, a failed handshake is an error.
    async fn starttls(
        &mut self,
        server_name: &str,
        roots: Option<&Arc<RootCertStore>>,
    ) -> Result<bool, ClientError> {
        let reply = self.command("STARTTLS", Stage::StartTls).await?;
        if reply.code != 220 {
            log::info!("{}: STARTTLS refused: {reply}", self.peer);
            return Ok(false);
        }
        // Bytes sent after the 220 but before the handshake would be trusted as if they came
        // over TLS (the STARTTLS injection attack): refuse them.
        if self.parser.has_buffered() {
            let msg = "data after the STARTTLS reply".to_string();
            return Err(self.error(Stage::StartTls, ErrorKind::Tls(msg)));
        }
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| self.error(Stage::StartTls, ErrorKind::Tls(e.to_string())))?;
        let verifier = Arc::new(RecordingVerifier::new(roots));
        let config = client_config(verifier.clone())
            .map_err(|e| self.error(Stage::StartTls, ErrorKind::Tls(e.to_string())))?;
        let plain = std::mem::replace(
            &mut self.stream,
            Box::new(smol::io::Cursor::new(Vec::new())),
        );
        let connector = futures_rustls::TlsConnector::from(Arc::new(config));
        let handshake = with_deadline(self.deadlines.io, connector.connect(name, plain)).await;
        let tls = handshake.map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut => self.error(Stage::StartTls, ErrorKind::Timeout),
            _ => self.error(Stage::StartTls, ErrorKind::Tls(e.to_string())),
        })?;
        self.stream = Box::new(tls);
        self.parser = ReplyParser::new();
        self.tls = match verifier.verified.load(Ordering::Acquire) {
            true => TlsLevel::Verified,
            false => TlsLevel::Insecure,
        };
        Ok(true)
    }

    /// One transaction. `Err` means the server refused (or failed) before any recipient was
    /// tried, so another host may be tried; `Ok` holds one outcome per recipient.
    pub async fn send_mail(
        &mut self,
        env: &OutboundEnvelope<'_>,
        item: &Item,
        prepend: &[u8],
    ) -> Result<Vec<Result<(), DeliveryError>>, ClientError> {
        self.mail_from(env, item.data_len + prepend.len() as u64)
            .await?;
        let mut results: Vec<Option<Result<(), DeliveryError>>> = vec![None; env.rcpts.len()];
        let outcome = self.rcpts_and_data(env, item, prepend, &mut results).await;
        // Whatever is still undecided shares the fate of the failure that ended the dialog
        // (a network failure is temporary: never success without the server's 2xx).
        let undecided = match outcome {
            Ok(()) => DeliveryError::temporary(format!("{}: no reply", self.peer)),
            Err(e) => e.to_delivery(),
        };
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(undecided.clone())))
            .collect())
    }

    async fn mail_from(
        &mut self,
        env: &OutboundEnvelope<'_>,
        size: u64,
    ) -> Result<(), ClientError> {
        if env.smtputf8 && !self.caps.smtputf8 && self.protocol == Protocol::Smtp {
            return Err(self.error(Stage::MailFrom, ErrorKind::NoSmtpUtf8));
        }
        let mut line = format!("MAIL FROM:<{}>", self.checked(env.from, Stage::MailFrom)?);
        // RFC 1870 §6: our estimate of the size (dot-stuffing aside).
        if self.caps.size.is_some() {
            line.push_str(&format!(" SIZE={size}"));
        }
        if env.body_8bit && self.caps.eightbitmime {
            line.push_str(" BODY=8BITMIME");
        }
        if env.smtputf8 && self.caps.smtputf8 {
            line.push_str(" SMTPUTF8");
        }
        let reply = self.command(&line, Stage::MailFrom).await?;
        self.positive(reply, Stage::MailFrom).map(drop)
    }

    /// RCPT for each recipient, then DATA and the message when one was accepted. Decided
    /// outcomes go into `results`; an error leaves the undecided ones to the caller.
    async fn rcpts_and_data(
        &mut self,
        env: &OutboundEnvelope<'_>,
        item: &Item,
        prepend: &[u8],
        results: &mut [Option<Result<(), DeliveryError>>],
    ) -> Result<(), ClientError> {
        let mut accepted = Vec::new();
        for (i, rcpt) in env.rcpts.iter().enumerate() {
            let rcpt = match self.checked(rcpt, Stage::RcptTo) {
                Ok(rcpt) => rcpt,
                Err(e) => {
                    results[i] = Some(Err(e.to_delivery()));
                    continue;
                }
            };
            let line = format!("RCPT TO:<{rcpt}>");
            let reply = self.command(&line, Stage::RcptTo).await?;
            match self.positive(reply, Stage::RcptTo) {
                Ok(_) => accepted.push(i),
                Err(e) => results[i] = Some(Err(e.to_delivery())),
            }
        }
        if accepted.is_empty() {
            return Ok(());
        }
        let reply = self.command("DATA", Stage::Data).await?;
        if reply.code != 354 {
            return Err(self.error(Stage::Data, ErrorKind::Reply(reply)));
        }
        self.send_body(item, prepend).await?;
        match self.protocol {
            Protocol::Smtp => {
                let reply = self.read_reply(Stage::DataReply).await?;
                let outcome = self.positive(reply, Stage::DataReply).map(drop);
                for &i in &accepted {
                    results[i] = Some(outcome.as_ref().map_err(ClientError::to_delivery).copied());
                }
            }
            // RFC 2033 §4.2: one reply per accepted recipient, in RCPT order.
            Protocol::Lmtp => {
                for &i in &accepted {
                    let reply = self.read_reply(Stage::DataReply).await?;
                    let outcome = self.positive(reply, Stage::DataReply);
                    results[i] = Some(outcome.map(drop).map_err(|e| e.to_delivery()));
                }
            }
        }
        Ok(())
    }

    /// Streams `prepend` and the queued data through the dot-stuffer, then the terminator.
    async fn send_body(&mut self, item: &Item, prepend: &[u8]) -> Result<(), ClientError> {
        let file = item
            .open_data()
            .map_err(|e| self.error(Stage::Body, ErrorKind::Queue(e)))?;
        // The file is read on a blocking thread, so a slow disk never stalls the executor.
        let mut file = smol::Unblock::with_capacity(CHUNK, file);
        let mut stuffer = DotStuffer::new();
        let mut out = Vec::with_capacity(CHUNK + CHUNK / 4);
        let mut buf = vec![0u8; CHUNK];
        stuffer.encode(prepend, &mut out);
        loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.error(Stage::Body, ErrorKind::Queue(e))),
            };
            if n == 0 {
                break;
            }
            stuffer.encode(&buf[..n], &mut out);
            self.write(&out, Stage::Body).await?;
            out.clear();
        }
        out.extend_from_slice(stuffer.finish());
        self.write(&out, Stage::Body).await
    }

    /// Ends the session politely; failures do not matter any more.
    pub async fn quit(mut self) {
        if let Err(e) = self.command("QUIT", Stage::DataReply).await {
            log::debug!("{}: QUIT: {e}", self.peer);
        }
        let _ = self.stream.close().await;
    }

    /// Refuses addresses that could break the command line (they are checked on the way in;
    /// this is the last line of defence against command injection).
    fn checked<'a>(&self, addr: &'a str, stage: Stage) -> Result<&'a str, ClientError> {
        let bad = addr
            .bytes()
            .any(|b| b < 0x20 || b == 0x7f || b == b'<' || b == b'>');
        match bad {
            true => Err(self.error(stage, ErrorKind::BadAddress(addr.to_string()))),
            false => Ok(addr),
        }
    }

    fn positive(&self, reply: ServerReply, stage: Stage) -> Result<ServerReply, ClientError> {
        match reply.is_positive() {
            true => Ok(reply),
            false => Err(self.error(stage, ErrorKind::Reply(reply))),
        }
    }

    async fn command(&mut self, line: &str, stage: Stage) -> Result<ServerReply, ClientError> {
        log::trace!("{} <- {line}", self.peer);
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.write(&bytes, stage).await?;
        self.read_reply(stage).await
    }

    async fn write(&mut self, bytes: &[u8], stage: Stage) -> Result<(), ClientError> {
        let stream = &mut self.stream;
        let write = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        match with_deadline(self.deadlines.io, write).await {
            Ok(()) => Ok(()),
            Err(e) => Err(io_error(self.peer.clone(), stage, e)),
        }
    }

    async fn read_reply(&mut self, stage: Stage) -> Result<ServerReply, ClientError> {
        let mut buf = [0u8; 4096];
        loop {
            match self.parser.next_reply() {
                Ok(Some(reply)) => {
                    log::trace!("{} -> {reply}", self.peer);
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => return Err(self.error(stage, ErrorKind::Garbage(e))),
            }
            let n = with_deadline(self.deadlines.io, self.stream.read(&mut buf))
                .await
                .map_err(|e| io_error(self.peer.clone(), stage, e))?;
            if n == 0 {
                return Err(self.error(stage, ErrorKind::Closed));
            }
            self.parser.feed(&buf[..n]);
        }
    }
}

fn io_error(peer: String, stage: Stage, e: io::Error) -> ClientError {
    let kind = match e.kind() {
        io::ErrorKind::TimedOut => ErrorKind::Timeout,
        _ => ErrorKind::Io(e),
    };
    ClientError { peer, stage, kind }
}

/// Connects from a given source address. std cannot bind a socket before connecting it, so
/// the socket is made with libc (bound, then connected without blocking) and handed to smol,
/// which waits until it is writable, as `smol::net::TcpStream::connect` does inside.
async fn connect_from(bind: IpAddr, addr: SocketAddr) -> io::Result<smol::net::TcpStream> {
    let stream = smol::Async::new(start_connect(bind, addr)?)?;
    stream.writable().await?;
    if let Some(e) = stream.get_ref().take_error()? {
        return Err(e);
    }
    // ENOTCONN here means the connect failed without setting SO_ERROR.
    stream.get_ref().peer_addr()?;
    Ok(smol::net::TcpStream::from(stream))
}

fn start_connect(bind: IpAddr, addr: SocketAddr) -> io::Result<std::net::TcpStream> {
    let family = match (bind, addr) {
        (IpAddr::V4(_), SocketAddr::V4(_)) => libc::AF_INET,
        (IpAddr::V6(_), SocketAddr::V6(_)) => libc::AF_INET6,
        _ => {
            let msg = format!("outbound_bind {bind} cannot reach {}", addr.ip());
            return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        }
    };
    let flags = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket(2) takes no pointers; the result is checked before use.
    let fd = unsafe { libc::socket(family, flags, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor owned by nothing else; OwnedFd closes it on error.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (local, len) = sockaddr(SocketAddr::new(bind, 0));
    // SAFETY: `local` is a valid sockaddr of `len` bytes that outlives the call.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), (&raw const local).cast(), len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let (remote, len) = sockaddr(addr);
    // SAFETY: as for bind.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), (&raw const remote).cast(), len) };
    let in_progress =
        rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINPROGRESS);
    if rc < 0 && !in_progress {
        return Err(io::Error::last_os_error());
    }
    Ok(std::net::TcpStream::from(fd))
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for every sockaddr type.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    // The sizes above are a few dozen bytes: they always fit.
    (storage, len as libc::socklen_t)
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

fn client_config(verifier: Arc<RecordingVerifier>) -> Result<ClientConfig, rustls::Error> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The verifier that judges certificates: WebPKI over the test roots, else the platform's
/// verifier (built once: it loads the system roots). None when no roots are available.
fn judge(test_roots: Option<&Arc<RootCertStore>>) -> Option<Arc<dyn ServerCertVerifier>> {
    if let Some(roots) = test_roots {
        let built =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
                .build();
        return built.ok().map(|v| v as Arc<dyn ServerCertVerifier>);
    }
    static PLATFORM: OnceLock<Option<Arc<dyn ServerCertVerifier>>> = OnceLock::new();
    PLATFORM
        .get_or_init(
            || match rustls_platform_verifier::Verifier::new(provider()) {
                Ok(v) => Some(Arc::new(v)),
                Err(e) => {
                    log::warn!("no system CA roots, outgoing TLS can never be verified: {e}");
                    None
                }
            },
        )
        .clone()
}

/// Opportunistic TLS (RFC 7435): the handshake goes on whatever the certificate, since
/// encryption without authentication still beats plain text; the verdict is recorded and
/// becomes the TLS level, which domaininfo and MTA-STS then judge. Handshake signatures are
/// still checked with the provider's algorithms, so the peer must hold the certificate's key.
#[derive(Debug)]
struct RecordingVerifier {
    judge: Option<Arc<dyn ServerCertVerifier>>,
    provider: Arc<CryptoProvider>,
    verified: AtomicBool,
}

impl RecordingVerifier {
    fn new(test_roots: Option<&Arc<RootCertStore>>) -> RecordingVerifier {
        RecordingVerifier {
            judge: judge(test_roots),
            provider: provider(),
            verified: AtomicBool::new(false),
        }
    }
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = match &self.judge {
            Some(judge) => judge
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map(drop)
                .map_err(|e| e.to_string()),
            None => Err("no trusted roots".to_string()),
        };
        if let Err(e) = &verdict {
            log::debug!("certificate of {server_name:?} not verified: {e}");
        }
        self.verified.store(verdict.is_ok(), Ordering::Release);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Delivers one message on a connected client: hello, transaction, QUIT. Used by LMTP,
/// whose single server has no fallback; remote delivery drives the steps itself.
pub async fn deliver_on(
    mut client: Client,
    protocol: Protocol,
    name: &str,
    env: &OutboundEnvelope<'_>,
    item: &Item,
    prepend: &[u8],
) -> Vec<Result<(), DeliveryError>> {
    if let Err(e) = client.hello(protocol, name, &TlsMode::Off).await {
        // A local server that will not talk is a configuration or load problem: retry.
        return vec![Err(DeliveryError::temporary(e.to_string())); env.rcpts.len()];
    }
    match client.send_mail(env, item, prepend).await {
        Ok(results) => {
            client.quit().await;
            results
        }
        Err(e) => vec![Err(e.to_delivery()); env.rcpts.len()],
    }
}

/// A scripted SMTP/LMTP server on loopback for tests of this module, `remote` and `lmtp`.
#[cfg(test)]
pub(crate) mod sink {
    use super::Io;
    use crate::proto::data::{DataReader, DataStatus};
    use crate::queue::store::{Envelope, Item, QueueId};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::{RootCertStore, ServerConfig};
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    use std::net::{IpAddr, SocketAddr};
    use std::path::Path;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// Replies by command; each is the wire text without the final CRLF (`\r\n` inside for
    /// multi-line replies). `<close>` closes the connection, `<stall>` never answers.
    #[derive(Clone)]
    pub struct Script {
        pub greeting: String,
        /// EHLO/LHLO reply; `STARTTLS` is added as the last line when `tls` is set.
        pub ehlo: String,
        pub starttls: String,
        pub mail: String,
        /// One per RCPT; the last one repeats.
        pub rcpt: Vec<String>,
        pub data: String,
        /// After the end of the data (LMTP: one line per accepted recipient, `\r\n`-joined).
        pub after_data: String,
        /// Close the connection after this many bytes of data.
        pub cut_data_after: Option<usize>,
        pub tls: Option<Arc<ServerConfig>>,
        /// After the STARTTLS 220, answer the client's hello with plain text.
        pub broken_tls: bool,
    }

    impl Default for Script {
        fn default() -> Script {
            Script {
                greeting: "220 sink ESMTP".into(),
                ehlo: "250-sink\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n250 SMTPUTF8".into(),
                starttls: "220 2.0.0 go ahead".into(),
                mail: "250 2.1.0 ok".into(),
                rcpt: vec!["250 2.1.5 ok".into()],
                data: "354 go ahead".into(),
                after_data: "250 2.0.0 queued".into(),
                cut_data_after: None,
                tls: None,
                broken_tls: false,
            }
        }
    }

    /// What one connection saw.
    #[derive(Debug, Clone, Default)]
    pub struct Seen {
        pub peer: Option<SocketAddr>,
        pub commands: Vec<String>,
        /// The unstuffed message, when the terminator arrived.
        pub data: Option<Vec<u8>>,
        pub tls: bool,
    }

    pub struct Sink {
        pub addr: SocketAddr,
        seen: Arc<Mutex<Vec<Seen>>>,
        _task: smol::Task<()>,
    }

    impl Sink {
        pub fn start(script: Script) -> Sink {
            Sink::start_on("127.0.0.1".parse().unwrap(), script)
        }

        pub fn start_on(ip: IpAddr, script: Script) -> Sink {
            Sink::start_at(SocketAddr::new(ip, 0), script)
        }

        /// On a given address; retried for a while, as a sink just dropped may still hold it.
        pub fn start_at(addr: SocketAddr, script: Script) -> Sink {
            let mut tries = 0;
            let listener = loop {
                match smol::block_on(smol::net::TcpListener::bind(addr)) {
                    Ok(listener) => break listener,
                    Err(e) if tries < 50 => {
                        tries += 1;
                        eprintln!("sink: bind {addr}: {e}; retrying");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => panic!("sink: bind {addr}: {e}"),
                }
            };
            let addr = listener.local_addr().unwrap();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let record = seen.clone();
            let task = smol::spawn(async move {
                while let Ok((stream, peer)) = listener.accept().await {
                    let index = {
                        let mut all = record.lock().unwrap();
                        all.push(Seen {
                            peer: Some(peer),
                            ..Seen::default()
                        });
                        all.len() - 1
                    };
                    let conn = Conn {
                        stream: Box::new(stream),
                        buf: Vec::new(),
                        script: script.clone(),
                        seen: record.clone(),
                        index,
                    };
                    smol::spawn(conn.run()).detach();
                }
            });
            Sink {
                addr,
                seen,
                _task: task,
            }
        }

        pub fn sessions(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    /// A Unix-socket sink (LMTP).
    pub fn start_unix(path: &Path, script: Script) -> (Arc<Mutex<Vec<Seen>>>, smol::Task<()>) {
        let listener = smol::net::unix::UnixListener::bind(path).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = smol::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let index = {
                    let mut all = record.lock().unwrap();
                    all.push(Seen::default());
                    all.len() - 1
                };
                let conn = Conn {
                    stream: Box::new(stream),
                    buf: Vec::new(),
                    script: script.clone(),
                    seen: record.clone(),
                    index,
                };
                smol::spawn(conn.run()).detach();
            }
        });
        (seen, task)
    }

    struct Conn {
        stream: Box<dyn Io>,
        buf: Vec<u8>,
        script: Script,
        seen: Arc<Mutex<Vec<Seen>>>,
        index: usize,
    }

    impl Conn {
        fn record(&self, f: impl FnOnce(&mut Seen)) {
            f(&mut self.seen.lock().unwrap()[self.index]);
        }

        /// Sends a scripted reply; false when the script says to hang up.
        async fn reply(&mut self, text: &str) -> bool {
            match text {
                "<close>" => false,
                "<stall>" => {
                    smol::Timer::after(Duration::from_secs(3600)).await;
                    false
                }
                text => {
                    let wire = format!("{text}\r\n");
                    self.stream.write_all(wire.as_bytes()).await.is_ok()
                        && self.stream.flush().await.is_ok()
                }
            }
        }

        async fn read_line(&mut self) -> Option<String> {
            loop {
                if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = self.buf.drain(..=end).collect();
                    let line = String::from_utf8_lossy(&line);
                    return Some(line.trim_end_matches(['\r', '\n']).to_string());
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }

        async fn run(mut self) {
            let greeting = self.script.greeting.clone();
            if !self.reply(&greeting).await {
                return;
            }
            let mut rcpts = 0;
            while let Some(line) = self.read_line().await {
                self.record(|s| s.commands.push(line.clone()));
                let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
                let verb = verb.split(':').next().unwrap_or("");
                let text = match verb {
                    "EHLO" | "LHLO" => self.ehlo_reply(),
                    "HELO" => "250 sink".into(),
                    "STARTTLS" => {
                        if self.starttls().await {
                            continue;
                        }
                        return;
                    }
                    "MAIL" => self.script.mail.clone(),
                    "RCPT" => {
                        let r = &self.script.rcpt;
                        rcpts += 1;
                        r[(rcpts - 1).min(r.len() - 1)].clone()
                    }
                    "DATA" => {
                        let data = self.script.data.clone();
                        if !self.reply(&data).await {
                            return;
                        }
                        if !data.starts_with("354") {
                            continue;
                        }
                        if !self.read_data().await {
                            return;
                        }
                        self.script.after_data.clone()
                    }
                    "QUIT" => {
                        self.reply("221 2.0.0 bye").await;
                        return;
                    }
                    "RSET" | "NOOP" => "250 ok".into(),
                    _ => "500 what".into(),
                };
                if !self.reply(&text).await {
                    return;
                }
            }
        }

        fn ehlo_reply(&self) -> String {
            let mut text = self.script.ehlo.clone();
            let tls_done = self.seen.lock().unwrap()[self.index].tls;
            if self.script.tls.is_some() && !tls_done && text.starts_with("250") {
                text = text.replacen("250 ", "250-", usize::MAX) + "\r\n250 STARTTLS";
            }
            text
        }

        async fn starttls(&mut self) -> bool {
            let Some(config) = self.script.tls.clone() else {
                return self.reply("502 no").await;
            };
            let answer = self.script.starttls.clone();
            if !self.reply(&answer).await {
                return false;
            }
            if !answer.starts_with("220") {
                return true;
            }
            if self.script.broken_tls {
                self.reply("220 this is not TLS").await;
                return false;
            }
            let plain = std::mem::replace(
                &mut self.stream,
                Box::new(smol::io::Cursor::new(Vec::new())),
            );
            let acceptor = futures_rustls::TlsAcceptor::from(config);
            match acceptor.accept(plain).await {
                Ok(tls) => {
                    self.stream = Box::new(tls);
                    self.buf.clear();
                    self.record(|s| s.tls = true);
                    true
                }
                Err(_) => false,
            }
        }

        /// Reads the data; false when the connection ended (or was cut on purpose) first.
        async fn read_data(&mut self) -> bool {
            let mut reader = DataReader::new(u64::MAX);
            let mut out = Vec::new();
            let mut input = std::mem::take(&mut self.buf);
            let mut received = 0;
            loop {
                received += input.len();
                if self.script.cut_data_after.is_some_and(|n| received >= n) {
                    return false;
                }
                let (used, status) = reader.feed(&input, &mut out);
                match status {
                    DataStatus::Done(_) => {
                        self.buf = input[used..].to_vec();
                        self.record(|s| s.data = Some(out));
                        return true;
                    }
                    DataStatus::BareLineEnding => return false,
                    DataStatus::NeedMore => {}
                }
                let mut chunk = vec![0u8; 65536];
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => input = chunk[..n].to_vec(),
                }
            }
        }
    }

    /// A CA and a certificate it signed for `name`: the server's TLS configuration and the
    /// roots that make the client call it verified.
    pub fn pki(name: &str) -> (Arc<ServerConfig>, Arc<RootCertStore>) {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone(), ca.der().clone()];
        let config = ServerConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        (Arc::new(config), Arc::new(roots))
    }

    /// A queue item whose data is `data`, in a file under `dir`.
    pub fn item(dir: &Path, data: &[u8]) -> Item {
        let path = dir.join("message");
        std::fs::write(&path, data).unwrap();
        Item {
            id: QueueId::generate(),
            envelope: Envelope {
                from: "sender@example.org".into(),
                client: "test".into(),
                ..Envelope::default()
            },
            path,
            data_offset: 0,
            data_len: data.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sink::{Script, Sink, item, pki};
    use super::*;

    const SHORT: Duration = Duration::from_secs(2);

    fn rcpts(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn env(rcpts: &[String]) -> OutboundEnvelope<'_> {
        OutboundEnvelope {
            from: "sender@example.org",
            rcpts,
            smtputf8: false,
            body_8bit: false,
        }
    }

    /// Connects to the sink, says hello, sends one message; the client's TLS level too.
    fn send(
        sink: &Sink,
        tls: TlsMode,
        env: &OutboundEnvelope<'_>,
        data: &[u8],
        prepend: &[u8],
    ) -> (
        Result<Vec<Result<(), DeliveryError>>, ClientError>,
        TlsLevel,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let item = item(dir.path(), data);
        smol::block_on(async {
            let deadlines = Deadlines::uniform(SHORT);
            let mut client = Client::connect_tcp("mx.test", sink.addr, None, deadlines).await?;
            let level = async {
                client.hello(Protocol::Smtp, "tambo.test", &tls).await?;
                client.send_mail(env, &item, prepend).await
            };
            let result = level.await;
            let level = client.tls_level();
            client.quit().await;
            Ok::<_, ClientError>((result, level))
        })
        .unwrap()
    }

    fn summary(results: &[Result<(), DeliveryError>]) -> Vec<&'static str> {
        let one = |r: &Result<(), DeliveryError>| match r {
            Ok(()) => "ok",
            Err(e) if e.permanent => "perm",
            Err(_) => "temp",
        };
        results.iter().map(one).collect()
    }

    #[test]
    fn deadlines_from_env_value() {
        let cases: &[(Option<&str>, u64, u64)] = &[
            (None, 30, 60),
            (Some("3"), 3, 3),
            (Some(" 45 "), 30, 45),
            (Some("0"), 30, 60),
            (Some("x"), 30, 60),
            (Some("120"), 30, 120),
        ];
        for &(value, connect, io) in cases {
            let d = Deadlines::parse(value);
            assert_eq!(d.connect, Duration::from_secs(connect), "{value:?}");
            assert_eq!(d.io, Duration::from_secs(io), "{value:?}");
        }
    }

    /// (RCPT replies, DATA reply, final reply, expected outcomes, data was sent).
    type Case = (
        &'static [&'static str],
        &'static str,
        &'static str,
        &'static [&'static str],
        bool,
    );

    #[test]
    fn outcomes_table() {
        let cases: &[Case] = &[
            (&["250 ok"], "354 go", "250 ok", &["ok", "ok", "ok"], true),
            (
                &["250 ok", "450 busy", "550 no"],
                "354 go",
                "250 ok",
                &["ok", "temp", "perm"],
                true,
            ),
            (
                &["250 ok", "450 busy", "550 no"],
                "354 go",
                "451 later",
                &["temp", "temp", "perm"],
                true,
            ),
            (
                &["250 ok", "450 busy", "550 no"],
                "354 go",
                "554 spam",
                &["perm", "temp", "perm"],
                true,
            ),
            (
                &["250 ok"],
                "451 no data now",
                "",
                &["temp", "temp", "temp"],
                false,
            ),
            (
                &["250 ok"],
                "554 no data",
                "",
                &["perm", "perm", "perm"],
                false,
            ),
            (
                &["550 no"],
                "354 go",
                "250 ok",
                &["perm", "perm", "perm"],
                false,
            ),
            (
                &["250 ok", "<close>"],
                "354 go",
                "250 ok",
                &["temp", "temp", "temp"],
                false,
            ),
            (
                &["250 ok"],
                "354 go",
                "<close>",
                &["temp", "temp", "temp"],
                true,
            ),
            (
                &["250 ok"],
                "354 go",
                "this is garbage",
                &["temp", "temp", "temp"],
                true,
            ),
            (
                &["250 ok"],
                "354 go",
                "<stall>",
                &["temp", "temp", "temp"],
                true,
            ),
            (
                &["250 ok"],
                "250 what",
                "",
                &["temp", "temp", "temp"],
                false,
            ),
        ];
        let to = rcpts(&["a@x.test", "b@x.test", "c@x.test"]);
        for &(rcpt, data, after, want, data_sent) in cases {
            let sink = Sink::start(Script {
                rcpt: rcpt.iter().map(|s| s.to_string()).collect(),
                data: data.into(),
                after_data: after.into(),
                ..Script::default()
            });
            let (result, _) = send(
                &sink,
                TlsMode::Off,
                &env(&to),
                b"Subject: x\r\n\r\nhi\r\n",
                b"",
            );
            let results = result.unwrap();
            assert_eq!(summary(&results), want, "{rcpt:?} {data} {after}");
            let seen = &sink.sessions()[0];
            assert_eq!(seen.data.is_some(), data_sent, "{rcpt:?} {data} {after}");
        }
    }

    #[test]
    fn reasons_name_the_host_and_the_reply() {
        let sink = Sink::start(Script {
            rcpt: vec!["550 5.1.1 no such user".into()],
            ..Script::default()
        });
        let to = rcpts(&["a@x.test"]);
        let (result, _) = send(&sink, TlsMode::Off, &env(&to), b"hi\r\n", b"");
        let err = result.unwrap().remove(0).unwrap_err();
        let want = format!(
            "mx.test[127.0.0.1]:{}: 550 5.1.1 no such user",
            sink.addr.port()
        );
        assert!(err.reason.starts_with(&want), "{}", err.reason);
        assert!(err.permanent);
    }

    #[test]
    fn mail_from_errors_are_returned_whole() {
        let cases: &[(&str, bool)] = &[("451 4.3.0 try later", false), ("550 5.7.1 go away", true)];
        for &(reply, permanent) in cases {
            let sink = Sink::start(Script {
                mail: reply.into(),
                ..Script::default()
            });
            let to = rcpts(&["a@x.test"]);
            let (result, _) = send(&sink, TlsMode::Off, &env(&to), b"hi\r\n", b"");
            let err = result.unwrap_err();
            assert_eq!(err.stage, Stage::MailFrom);
            assert_eq!(err.is_permanent(), permanent, "{reply}");
            assert!(
                sink.sessions()[0]
                    .commands
                    .iter()
                    .all(|c| !c.starts_with("RCPT"))
            );
        }
    }

    #[test]
    fn message_on_the_wire() {
        let sink = Sink::start(Script::default());
        let to = rcpts(&["a@x.test", "b@x.test"]);
        let data = b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\nbare\nlf\r\n.\r\nend";
        let env = OutboundEnvelope {
            body_8bit: true,
            smtputf8: true,
            ..env(&to)
        };
        let (result, level) = send(&sink, TlsMode::Off, &env, data, b"DKIM-Signature: x\r\n");
        assert_eq!(summary(&result.unwrap()), ["ok", "ok"]);
        assert_eq!(level, TlsLevel::Plain);
        let seen = &sink.sessions()[0];
        let want = b"DKIM-Signature: x\r\nSubject: dots\r\n\r\n.leading dot\r\n..two\r\nbare\r\nlf\r\n.\r\nend\r\n";
        assert_eq!(seen.data.as_deref(), Some(&want[..]));
        let size = data.len() + 19;
        assert_eq!(
            seen.commands[..4],
            [
                "EHLO tambo.test".to_string(),
                format!("MAIL FROM:<sender@example.org> SIZE={size} BODY=8BITMIME SMTPUTF8"),
                "RCPT TO:<a@x.test>".into(),
                "RCPT TO:<b@x.test>".into(),
            ]
        );
        assert_eq!(seen.commands.last().map(String::as_str), Some("QUIT"));
    }

    #[test]
    fn big_message_is_streamed_whole() {
        let sink = Sink::start(Script::default());
        let to = rcpts(&["a@x.test"]);
        let line = b".0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n";
        let data = line.repeat(5000);
        let (result, _) = send(&sink, TlsMode::Off, &env(&to), &data, b"");
        assert_eq!(summary(&result.unwrap()), ["ok"]);
        assert_eq!(sink.sessions()[0].data.as_deref(), Some(&data[..]));
    }

    #[test]
    fn smtputf8_needed_but_not_offered_is_permanent() {
        let sink = Sink::start(Script {
            ehlo: "250-sink\r\n250 8BITMIME".into(),
            ..Script::default()
        });
        let to = rcpts(&["ü@x.test"]);
        let env = OutboundEnvelope {
            smtputf8: true,
            ..env(&to)
        };
        let (result, _) = send(&sink, TlsMode::Off, &env, b"hi\r\n", b"");
        let err = result.unwrap_err();
        assert!(err.is_permanent());
        assert!(err.to_string().contains("5.6.7"), "{err}");
    }

    #[test]
    fn no_extensions_means_no_parameters_and_helo_fallback() {
        let sink = Sink::start(Script {
            ehlo: "502 5.5.1 what is EHLO".into(),
            ..Script::default()
        });
        let to = rcpts(&["a@x.test"]);
        let env = OutboundEnvelope {
            body_8bit: true,
            ..env(&to)
        };
        let (result, _) = send(&sink, TlsMode::Off, &env, b"hi\r\n", b"");
        assert_eq!(summary(&result.unwrap()), ["ok"]);
        let commands = &sink.sessions()[0].commands;
        assert_eq!(
            commands[..3],
            [
                "EHLO tambo.test",
                "HELO tambo.test",
                "MAIL FROM:<sender@example.org>"
            ]
        );
    }

    #[test]
    fn bad_addresses_never_reach_the_wire() {
        let sink = Sink::start(Script::default());
        let to = rcpts(&["a@x.test\r\nRSET", "b@x.test"]);
        let (result, _) = send(&sink, TlsMode::Off, &env(&to), b"hi\r\n", b"");
        assert_eq!(summary(&result.unwrap()), ["perm", "ok"]);
        assert!(sink.sessions()[0].commands.iter().all(|c| c != "RSET"));
    }

    #[test]
    fn greeting_and_hello_failures() {
        let cases: &[(&str, &str, Stage, bool)] = &[
            ("554 go away", "250 sink", Stage::Greeting, true),
            ("421 busy", "250 sink", Stage::Greeting, false),
            ("<close>", "250 sink", Stage::Greeting, false),
            ("<stall>", "250 sink", Stage::Greeting, false),
            ("220 hi", "421 closing", Stage::Hello, false),
            ("220 hi", "not smtp", Stage::Hello, false),
        ];
        for &(greeting, ehlo, stage, permanent) in cases {
            let sink = Sink::start(Script {
                greeting: greeting.into(),
                ehlo: ehlo.into(),
                ..Script::default()
            });
            let err = smol::block_on(async {
                let d = Deadlines::uniform(Duration::from_millis(500));
                let mut client = Client::connect_tcp("mx.test", sink.addr, None, d).await?;
                client.hello(Protocol::Smtp, "me", &TlsMode::Off).await
            })
            .unwrap_err();
            assert_eq!(
                (err.stage, err.is_permanent()),
                (stage, permanent),
                "{greeting} {ehlo}"
            );
        }
    }

    #[test]
    fn starttls_levels() {
        let (config, roots) = pki("mx.test");
        let (_, other_roots) = pki("mx.test");
        let cases: &[(&str, Option<Arc<RootCertStore>>, TlsLevel)] = &[
            ("mx.test", None, TlsLevel::Insecure),
            ("mx.test", Some(roots.clone()), TlsLevel::Verified),
            ("other.test", Some(roots.clone()), TlsLevel::Insecure),
            ("mx.test", Some(other_roots), TlsLevel::Insecure),
        ];
        for (name, test_roots, want) in cases {
            let sink = Sink::start(Script {
                tls: Some(config.clone()),
                ..Script::default()
            });
            let tls = TlsMode::Opportunistic {
                server_name: name.to_string(),
                test_roots: test_roots.clone(),
            };
            let to = rcpts(&["a@x.test"]);
            let (result, level) = send(&sink, tls, &env(&to), b"hi\r\n", b"");
            assert_eq!(summary(&result.unwrap()), ["ok"]);
            assert_eq!(level, *want, "{name}");
            let seen = &sink.sessions()[0];
            assert!(seen.tls);
            assert_eq!(
                seen.commands[..3],
                ["EHLO tambo.test", "STARTTLS", "EHLO tambo.test"]
            );
        }
    }

    #[test]
    fn starttls_off_or_refused_stays_plain() {
        let (config, _) = pki("mx.test");
        let opportunistic = TlsMode::Opportunistic {
            server_name: "mx.test".into(),
            test_roots: None,
        };
        let cases = [
            (TlsMode::Off, "220 go", false),
            (opportunistic, "454 4.7.0 TLS not available", false),
        ];
        for (mode, answer, tls) in cases {
            let sink = Sink::start(Script {
                tls: Some(config.clone()),
                starttls: answer.into(),
                ..Script::default()
            });
            let to = rcpts(&["a@x.test"]);
            let (result, level) = send(&sink, mode, &env(&to), b"hi\r\n", b"");
            assert_eq!(summary(&result.unwrap()), ["ok"]);
            assert_eq!((level, sink.sessions()[0].tls), (TlsLevel::Plain, tls));
        }
    }

    #[test]
    fn broken_or_injected_handshake_is_an_error() {
        let (config, _) = pki("mx.test");
        let cases = [
            ("220 go", true, "TLS: "),
            ("220 go\r\n250 injected", false, "after the STARTTLS"),
        ];
        for (answer, broken_tls, want) in cases {
            let sink = Sink::start(Script {
                tls: Some(config.clone()),
                starttls: answer.into(),
                broken_tls,
                ..Script::default()
            });
            let err = smol::block_on(async {
                let d = Deadlines::uniform(SHORT);
                let mut client = Client::connect_tcp("mx.test", sink.addr, None, d).await?;
                let tls = TlsMode::Opportunistic {
                    server_name: "mx.test".into(),
                    test_roots: None,
                };
                client.hello(Protocol::Smtp, "me", &tls).await
            })
            .unwrap_err();
            assert_eq!(err.stage, Stage::StartTls, "{answer}");
            assert!(err.to_string().contains(want), "{err}");
            assert!(!err.is_permanent());
        }
    }

    #[test]
    fn lmtp_one_reply_per_accepted_recipient() {
        let cases: &[(&[&str], &str, &[&str])] = &[
            (&["250 ok"], "250 a\r\n250 b\r\n250 c", &["ok", "ok", "ok"]),
            (
                &["250 ok"],
                "250 a\r\n452 full\r\n550 gone",
                &["ok", "temp", "perm"],
            ),
            (
                &["250 ok", "550 no", "250 ok"],
                "250 a\r\n450 c",
                &["ok", "perm", "temp"],
            ),
            // The connection drops after the first reply: the first is delivered.
            (&["250 ok"], "250 a\r\n<close>", &["ok", "temp", "temp"]),
        ];
        let to = rcpts(&["a@x.test", "b@x.test", "c@x.test"]);
        for &(rcpt, after, want) in cases {
            let script = Script {
                rcpt: rcpt.iter().map(|s| s.to_string()).collect(),
                after_data: after.replace("\r\n<close>", ""),
                ..Script::default()
            };
            let sink = Sink::start(script);
            let dir = tempfile::tempdir().unwrap();
            let item = item(dir.path(), b"hi\r\n");
            let results = smol::block_on(async {
                let d = Deadlines::uniform(Duration::from_millis(500));
                let client = Client::connect_tcp("lmtp", sink.addr, None, d)
                    .await
                    .unwrap();
                deliver_on(client, Protocol::Lmtp, "me", &env(&to), &item, b"").await
            });
            assert_eq!(summary(&results), want, "{after}");
            assert_eq!(sink.sessions()[0].commands[0], "LHLO me");
        }
    }

    #[test]
    fn outbound_bind_sets_the_source_address() {
        let sink = Sink::start(Script::default());
        let bind: IpAddr = "127.0.0.2".parse().unwrap();
        let client = smol::block_on(Client::connect_tcp(
            "mx.test",
            sink.addr,
            Some(bind),
            Deadlines::uniform(SHORT),
        ));
        assert!(client.is_ok());
        smol::block_on(client.unwrap().quit());
        let peer = sink.sessions()[0].peer.unwrap();
        assert_eq!(peer.ip(), bind);
    }

    #[test]
    fn connect_failures() {
        // A port nobody listens on (bound, then closed).
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let binds: [Option<IpAddr>; 3] = [
            None,
            Some("127.0.0.1".parse().unwrap()),
            Some("::1".parse().unwrap()),
        ];
        for bind in binds {
            let d = Deadlines::uniform(SHORT);
            let err = smol::block_on(Client::connect_tcp("mx.test", addr, bind, d))
                .err()
                .unwrap();
            assert_eq!(err.stage, Stage::Connect, "{bind:?}");
            assert!(!err.is_permanent());
        }
    }
}
