//! The I/O side of the SMTP/LMTP client: connect, greeting, EHLO/LHLO, STARTTLS, one
//! transaction with the data streamed from the queue file, every read under a deadline.
//!
//! The parsing lives in `proto::client`; this module only moves bytes, keeps time, and turns
//! what the server said into one outcome per recipient. A recipient is reported delivered
//! only after a 2xx to its RCPT and a 2xx to the data (LMTP: its own reply to the data).

use crate::courier::DeliveryError;
use crate::courier::domaininfo::TlsLevel;
use crate::message::StoredMessage;
use crate::proto::client::{Capabilities, DotStuffer, ReplyError, ReplyParser, ServerReply};
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

/// Per-read deadline by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The message is read from the queue file and written out in pieces of this size.
const CHUNK: usize = 64 * 1024;
/// One read of replies at most.
const REPLY_READ: usize = 4096;

/// How long any one step may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub connect: Duration,
    /// Each read of a reply, each write, the TLS handshake.
    pub io: Duration,
}

impl Deadlines {
    /// From a number of seconds (`TAMBO_SMTP_TIMEOUT_SECS`, which `serve` reads), else 60 s;
    /// the connect deadline is 30 s or that value if smaller.
    pub fn parse(value: Option<&str>) -> Deadlines {
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
            spam_refusal: match &self.kind {
                ErrorKind::Reply(r) => crate::courier::spam_throttle::refuses_as_spam(r),
                _ => false,
            },
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
    /// Where replies are read into; kept for the session's next reply.
    read_buf: Box<[u8]>,
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
            read_buf: vec![0u8; REPLY_READ].into_boxed_slice(),
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
        item: &StoredMessage,
        prepend: &[u8],
    ) -> Result<Vec<Result<(), DeliveryError>>, ClientError> {
        let size = item.message_len() + prepend.len() as u64;
        let mut results: Vec<Option<Result<(), DeliveryError>>> = vec![None; env.rcpts.len()];
        let outcome = if self.caps.pipelining {
            self.pipelined(env, size, item, prepend, &mut results)
                .await?
        } else {
            self.mail_from(env, size).await?;
            self.rcpts_and_data(env, item, prepend, &mut results).await
        };
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
        let line = self.mail_line(env, size)?;
        let reply = self.command(&line, Stage::MailFrom).await?;
        self.positive(reply, Stage::MailFrom).map(drop)
    }

    /// RFC 2920: MAIL, every RCPT and DATA in one write, then their replies in order, then
    /// the body once DATA got its 354. Saves two round trips (and their wake-ups) per
    /// message. The outer error is MAIL's (as [`Client::mail_from`]'s); the inner one ends
    /// the dialog later, as [`Client::rcpts_and_data`]'s does.
    async fn pipelined(
        &mut self,
        env: &OutboundEnvelope<'_>,
        size: u64,
        item: &StoredMessage,
        prepend: &[u8],
        results: &mut [Option<Result<(), DeliveryError>>],
    ) -> Result<Result<(), ClientError>, ClientError> {
        let mut batch = self.mail_line(env, size)?;
        batch.push_str("\r\n");
        let mut sent = Vec::new();
        for (i, rcpt) in env.rcpts.iter().enumerate() {
            match self.checked(rcpt, Stage::RcptTo) {
                Ok(rcpt) => {
                    batch.push_str(&format!("RCPT TO:<{rcpt}>\r\n"));
                    sent.push(i);
                }
                Err(e) => results[i] = Some(Err(e.to_delivery())),
            }
        }
        if sent.is_empty() {
            return Ok(Ok(()));
        }
        batch.push_str("DATA\r\n");
        log::trace!("{} <- {batch:?}", self.peer);
        self.write(batch.as_bytes(), Stage::MailFrom).await?;
        let mail = self.read_reply(Stage::MailFrom).await?;
        let mail = self.positive(mail, Stage::MailFrom);
        let mut accepted = Vec::new();
        for &i in &sent {
            let reply = match self.read_reply(Stage::RcptTo).await {
                Ok(reply) => reply,
                Err(e) => return mail.map(|_| Err(e)),
            };
            if mail.is_ok() {
                match self.positive(reply, Stage::RcptTo) {
                    Ok(_) => accepted.push(i),
                    Err(e) => results[i] = Some(Err(e.to_delivery())),
                }
            }
        }
        let data = match self.read_reply(Stage::Data).await {
            Ok(reply) => reply,
            Err(e) => return mail.map(|_| Err(e)),
        };
        if mail.is_err() || accepted.is_empty() {
            if data.code == 354 {
                // A server that takes DATA with no recipient (RFC 2920 §3.1 says it must
                // not): an empty message ends it, and its reply is of no use.
                if let Err(e) = self.write(b".\r\n", Stage::Body).await {
                    return mail.map(|_| Err(e));
                }
                let _ = self.read_reply(Stage::DataReply).await;
            }
            return mail.map(|_| Ok(()));
        }
        if data.code != 354 {
            return Ok(Err(self.error(Stage::Data, ErrorKind::Reply(data))));
        }
        Ok(self
            .body_and_replies(item, prepend, &accepted, results)
            .await)
    }

    /// The MAIL command line, with the parameters the server offered and the message needs.
    fn mail_line(&self, env: &OutboundEnvelope<'_>, size: u64) -> Result<String, ClientError> {
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
        Ok(line)
    }

    /// RCPT for each recipient, then DATA and the message when one was accepted. Decided
    /// outcomes go into `results`; an error leaves the undecided ones to the caller.
    async fn rcpts_and_data(
        &mut self,
        env: &OutboundEnvelope<'_>,
        item: &StoredMessage,
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
        self.body_and_replies(item, prepend, &accepted, results)
            .await
    }

    /// After DATA's 354: the message, then the replies to it (one; LMTP: one per accepted
    /// recipient), into `results`.
    async fn body_and_replies(
        &mut self,
        item: &StoredMessage,
        prepend: &[u8],
        accepted: &[usize],
        results: &mut [Option<Result<(), DeliveryError>>],
    ) -> Result<(), ClientError> {
        self.send_body(item, prepend).await?;
        match self.protocol {
            Protocol::Smtp => {
                let reply = self.read_reply(Stage::DataReply).await?;
                let outcome = self.positive(reply, Stage::DataReply).map(drop);
                for &i in accepted {
                    results[i] = Some(outcome.as_ref().map_err(ClientError::to_delivery).copied());
                }
            }
            // RFC 2033 §4.2: one reply per accepted recipient, in RCPT order.
            Protocol::Lmtp => {
                for &i in accepted {
                    let reply = self.read_reply(Stage::DataReply).await?;
                    let outcome = self.positive(reply, Stage::DataReply);
                    results[i] = Some(outcome.map(drop).map_err(|e| e.to_delivery()));
                }
            }
        }
        Ok(())
    }

    /// Streams `prepend` and the queued data through the dot-stuffer, then the terminator.
    async fn send_body(&mut self, item: &StoredMessage, prepend: &[u8]) -> Result<(), ClientError> {
        let file = item
            .open_data()
            .map_err(|e| self.error(Stage::Body, ErrorKind::Queue(e)))?;
        let mut stuffer = DotStuffer::new();
        // Buffers no larger than the message: a small one is then neither zeroed nor
        // allocated at full chunk size for every message.
        let chunk = usize::try_from(item.message_len()).map_or(CHUNK, |len| len.clamp(1, CHUNK));
        let mut out = Vec::with_capacity(prepend.len() + chunk + chunk / 4 + 8);
        stuffer.encode(prepend, &mut out);
        if item.message_len() <= INLINE_READ {
            // Just written to the queue, so in the page cache: reading it here costs less
            // than handing it to a blocking thread and back.
            let mut file = file;
            self.pump(&mut SyncSource(&mut file), chunk, &mut stuffer, &mut out)
                .await?;
        } else {
            // A large message is read on a blocking thread, so a slow disk never stalls the
            // executor.
            let mut file = smol::Unblock::with_capacity(CHUNK, file);
            self.pump(&mut file, CHUNK, &mut stuffer, &mut out).await?;
        }
        out.extend_from_slice(stuffer.finish());
        self.write(&out, Stage::Body).await
    }

    /// Copies `source` to the peer through the dot-stuffer, reading `chunk` bytes at a time
    /// and writing [`CHUNK`] at a time. What is left in `out` at the end goes out with the
    /// terminator, so a small message is one write, not one per read (our added headers and
    /// the data are two reads): on loopback each write is a segment the peer has to take in.
    async fn pump(
        &mut self,
        source: &mut (impl AsyncRead + Unpin),
        chunk: usize,
        stuffer: &mut DotStuffer,
        out: &mut Vec<u8>,
    ) -> Result<(), ClientError> {
        let mut buf = vec![0u8; chunk];
        loop {
            let n = match source.read(&mut buf).await {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.error(Stage::Body, ErrorKind::Queue(e))),
            };
            if n == 0 {
                return Ok(());
            }
            stuffer.encode(&buf[..n], out);
            if out.len() >= CHUNK {
                self.write(out, Stage::Body).await?;
                out.clear();
            }
        }
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
        loop {
            match self.parser.next_reply() {
                Ok(Some(reply)) => {
                    log::trace!("{} -> {reply}", self.peer);
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => return Err(self.error(stage, ErrorKind::Garbage(e))),
            }
            let n = with_deadline(self.deadlines.io, self.stream.read(&mut self.read_buf))
                .await
                .map_err(|e| io_error(self.peer.clone(), stage, e))?;
            if n == 0 {
                return Err(self.error(stage, ErrorKind::Closed));
            }
            self.parser.feed(&self.read_buf[..n]);
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
    item: &StoredMessage,
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
pub(crate) mod sink;

#[cfg(test)]
mod tests;

/// Messages up to this size are read from the queue file on the executor thread.
const INLINE_READ: u64 = 256 * 1024;

/// A `std::io::Read` as an `AsyncRead` that is always ready (a file in the page cache).
struct SyncSource<'a, R>(&'a mut R);

impl<R: std::io::Read + Unpin> AsyncRead for SyncSource<'_, R> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::task::Poll::Ready(self.get_mut().0.read(buf))
    }
}
