//! The I/O driver of one SMTP connection: stream ↔ `Session`, TLS upgrade, logins through the
//! shared `auth` module, message data streamed into the queue, and the durable commit before
//! the 250.

use crate::aliases::Recipient;
use crate::auth::Login;
use crate::config::access::{AccessRules, Action};
use crate::dns::blocklist::{self, Listing};
use crate::hooks::{HookEnv, PostDataHook};
use crate::mailauth::forged_results::ForgedResultsFilter;
use crate::mailauth::inbound;
use crate::maillog;
use crate::message::{Envelope, QueuedRcpt, RcptState, StoredMessage, now_secs};
use crate::metrics;
use crate::net::caps::Refused;
use crate::net::stream::{deadline_passed, with_timeout};
use crate::net::{Accepted, ListenerKind, Protocol, Service, Stream};
use crate::proto::command::{Body, ForwardPath};
use crate::proto::reply::Reply;
use crate::proto::session::{Output, Session, SessionConfig, SmtpPort, Subject};
use crate::queue::direct::{DirectMaildir, Outcome};
use crate::queue::store::Incoming;
use crate::smtpd::policy::{MailPolicy, judge_inbound, reverse_path_text};
use crate::smtpd::received;
use crate::smtpd::server::Server;
use smol::io::AsyncReadExt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the blocklists may take to answer for a client before it is served without
/// them (a zone that does not answer never blocks mail).
const DNSBL_DEADLINE: Duration = Duration::from_secs(10);
/// How long a closing connection's unread input is drained (so our last reply is not lost
/// to a TCP reset).
const LINGER: Duration = Duration::from_secs(2);
/// One read from the client at most (a whole pipelined command group or 16 KiB of DATA).
const READ_CHUNK: usize = 16 * 1024;

type SmtpSession = Session<Vec<Recipient>>;

/// The message being received, and whether writing it has failed.
struct Receiving {
    incoming: Option<Incoming>,
    failed: Option<std::io::Error>,
    /// Drops forged Authentication-Results headers from the header section as it streams.
    filter: ForgedResultsFilter,
}

/// Why a message was not accepted at the end of DATA.
enum Refusal {
    /// Our own failure (disk, queue): a 4xx, the client tries again.
    Local(LocalFailure),
    /// A decision about the message (authentication policy, hook): this reply.
    Policy(Reply),
}

/// Our own failure to take a message: what failed, for the log, and whether it is a full
/// disk, which gets its own reply (RFC 3463 §3.4: X.3.1, mail system full).
struct LocalFailure {
    what: String,
    /// The folder whose file system is full (ENOSPC) or over quota (EDQUOT).
    full: Option<PathBuf>,
}

impl LocalFailure {
    /// A failure that is not about the disk.
    fn other(what: impl Into<String>) -> LocalFailure {
        LocalFailure {
            what: what.into(),
            full: None,
        }
    }

    /// `doing` failed with `e` on a file in `folder`.
    fn io(doing: &str, folder: &Path, e: &std::io::Error) -> LocalFailure {
        LocalFailure {
            what: format!("{doing}: {e}"),
            full: crate::fsutil::is_disk_full(e).then(|| folder.to_path_buf()),
        }
    }

    fn reply(&self) -> Reply {
        match self.full {
            Some(_) => Reply::new(452, "4.3.1", "Insufficient system storage, try again later"),
            None => Reply::new(451, "4.3.0", "Local error, please try again later"),
        }
    }

    fn log(&self, peer: SocketAddr) {
        match &self.full {
            Some(folder) => log::error!(
                "disk full: cannot take a message from {peer} into {}: {}",
                folder.display(),
                self.what
            ),
            None => log::error!("cannot take a message from {peer}: {}", self.what),
        }
    }
}

impl Service for Server {
    async fn serve(self: Arc<Self>, conn: Accepted) {
        serve(self, conn).await;
    }

    /// RFC 5321 §3.8 / RFC 3463: `421 4.7.0`, a temporary refusal by local policy, and the
    /// client retries later. On the implicit-TLS port, nothing.
    fn refusal(&self, kind: ListenerKind, _why: Refused) -> Option<Vec<u8>> {
        (!kind.implicit_tls()).then(|| crate::smtpd::server::refusal_reply().to_bytes())
    }
}

/// The SMTP service a listener offers.
fn smtp_port(kind: ListenerKind) -> SmtpPort {
    match kind {
        ListenerKind::Submission => SmtpPort::Submission,
        ListenerKind::SubmissionTls => SmtpPort::SubmissionTls,
        _ => SmtpPort::Mx,
    }
}

/// One connection, from accept to close.
pub async fn serve(server: Arc<Server>, conn: Accepted) {
    let Accepted {
        tcp,
        peer,
        kind,
        early,
    } = conn;
    let access = server.config.access();
    let connect_rule = access.connect(peer.ip()).cloned();
    if let Some(reply) = connect_rule.as_ref().and_then(Action::reply) {
        // SPEC §7: a Connect REJECT is the greeting, then the connection ends (lingering,
        // so a client that talks first does not turn our reply into a reset).
        maillog::rejected(&maillog::Rejected {
            client: peer.ip(),
            from: None,
            to: None,
            user: None,
            reply: &reply,
        });
        let mut stream = Stream::Plain(tcp);
        let _ = with_timeout(server.limits.command, stream.write_all(&reply.to_bytes())).await;
        stream.linger(LINGER).await;
        return;
    }
    let tls_now = kind.implicit_tls();
    let tls = || server.config.tls();
    let limit = server.limits.command;
    let Some(stream) = Stream::open(tcp, tls_now, tls, limit, peer, "").await else {
        return;
    };
    let settings = server.settings();
    let config = SessionConfig {
        hostname: settings.hostname.clone(),
        kind: smtp_port(kind),
        max_message_size: settings.max_message_size(),
        max_recipients: settings.max_recipients,
        tls_available: true,
    };
    let mut session = Session::new(config, tls_now);
    session.feed(&early);
    let connect_relay = connect_rule == Some(Action::Relay);
    let dnsbl = if kind == ListenerKind::Smtp
        && !settings.dnsbl.is_empty()
        && !connect_relay
        && !settings
            .relay_networks
            .iter()
            .any(|n| n.contains(peer.ip()))
    {
        Dnsbl::Unasked
    } else {
        Dnsbl::Known(None)
    };
    let mut conn = Conn {
        server,
        peer,
        stream,
        session,
        out: Vec::new(),
        receiving: None,
        access,
        connect_relay,
        kind,
        discard_all: connect_rule == Some(Action::Discard),
        dnsbl,
    };
    if !early.is_empty() {
        // Commands that came with the PROXY header are answered in the first pass.
        conn.ask_dnsbl().await;
    }
    if let Err(e) = conn.run().await {
        log::debug!("connection from {peer} ended: {e}");
    }
    if let Some(r) = conn.receiving.take().and_then(|r| r.incoming) {
        r.abort();
    }
}

struct Conn {
    server: Arc<Server>,
    peer: SocketAddr,
    stream: Stream,
    session: SmtpSession,
    out: Vec<u8>,
    receiving: Option<Receiving>,
    /// The `conf/access` rules as they were when the connection came in.
    access: Arc<AccessRules>,
    /// A `Connect:` rule said RELAY.
    connect_relay: bool,
    kind: ListenerKind,
    /// A `Connect:` rule said DISCARD: every message is accepted and dropped.
    discard_all: bool,
    dnsbl: Dnsbl,
}

/// SPEC §3 `dnsbl`: whether the client is listed, asked once, before its first command is
/// answered (the greeting does not wait for it).
enum Dnsbl {
    Unasked,
    Known(Option<Listing>),
}

impl Conn {
    async fn run(&mut self) -> std::io::Result<()> {
        // When we last answered: the client's next command (or its whole message) must arrive
        // within a limit counted from there, however it trickles in (slow-loris clients).
        let mut answered_at = Instant::now();
        loop {
            if self.drive().await? {
                self.flush().await?;
                return self.linger().await;
            }
            if !self.out.is_empty() {
                answered_at = Instant::now();
            }
            // RFC 2920 §3.1: replies may wait until the server must read.
            self.flush().await?;
            self.session.release_buffers();
            let limits = self.server.limits;
            let limit = if self.session.in_data() {
                limits.data
            } else {
                limits.command
            };
            let left = limit.saturating_sub(answered_at.elapsed());
            let mut buf = Vec::new();
            let n = match with_timeout(left, self.read_chunk(&mut buf)).await {
                Ok(0) => {
                    read_buffers::give_back(buf);
                    return Ok(());
                }
                Ok(n) => n,
                Err(e) if deadline_passed(&e) => {
                    self.session.timed_out();
                    self.drive().await?;
                    self.flush().await?;
                    return self.linger().await;
                }
                Err(e) => return Err(e),
            };
            crate::metrics::bytes_in(n);
            self.session.feed(&buf[..n]);
            read_buffers::give_back(buf);
            self.ask_dnsbl().await;
        }
    }

    /// Reads what the client sent into `buf`. On a plain connection the buffer is taken
    /// only once the socket is readable, so an idle connection holds no read buffer (memory
    /// per idle connection is what a flood or a slow client costs us).
    async fn read_chunk(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        self.stream.readable().await?;
        *buf = read_buffers::take();
        self.stream.read(buf).await
    }

    /// Asks the `dnsbl` zones about the client, the first time only.
    async fn ask_dnsbl(&mut self) {
        if !matches!(self.dnsbl, Dnsbl::Unasked) {
            return;
        }
        let ip = self.peer.ip().to_canonical();
        let zones = self.server.settings().dnsbl.clone();
        let ask = blocklist::first_listing(&self.server.dns, &zones, ip);
        let late = async {
            smol::Timer::after(DNSBL_DEADLINE).await;
            log::warn!(
                "dnsbl: no answer for {ip} within {}s; not blocking",
                DNSBL_DEADLINE.as_secs()
            );
            None
        };
        let listing = smol::future::or(ask, late).await;
        if let Some(l) = &listing {
            log::info!(
                "dnsbl: {ip} is listed in {} ({}); refusing its recipients",
                l.zone,
                l.code
            );
            metrics::dnsbl_listed(&l.zone);
        }
        self.dnsbl = Dnsbl::Known(listing);
    }

    /// Handles outputs until the session needs input. Returns true when it asked to close.
    async fn drive(&mut self) -> std::io::Result<bool> {
        // One snapshot per pass (a reload in between changes nothing under a command).
        let domains = self.server.domains();
        loop {
            let policy = MailPolicy {
                domains: &domains,
                settings: self.server.settings(),
                srs: &self.server.srs,
                access: &self.access,
                client_ip: self.peer.ip(),
                connect_relay: self.connect_relay,
                dnsbl: match &self.dnsbl {
                    Dnsbl::Known(listing) => listing.as_ref(),
                    Dnsbl::Unasked => None,
                },
            };
            let Some(output) = self.session.poll(&policy) else {
                return Ok(false);
            };
            match output {
                Output::Reply(reply) => self.queue_reply(&reply, None),
                Output::Refusal { reply, subject } => self.queue_reply(&reply, Some(&subject)),
                Output::StartTls => self.start_tls().await?,
                Output::Authenticate { user, password } => self.authenticate(user, password).await,
                Output::DataStart => self.data_start(),
                Output::DataChunk(chunk) => self.data_chunk(&chunk),
                Output::DataEnd(_) => self.data_end().await,
                Output::DataAbort => {
                    if let Some(incoming) = self.receiving.take().and_then(|r| r.incoming) {
                        incoming.abort();
                    }
                }
                Output::Close => return Ok(true),
            }
        }
    }

    fn queue_reply(&mut self, reply: &Reply, subject: Option<&Subject>) {
        if reply.is_error() {
            // Every refusal (RCPT, MAIL, AUTH, the message itself, protocol errors) gets its
            // mail log line, with the reply the client saw and what it refused.
            let from = self
                .session
                .transaction()
                .map(|t| reverse_path_text(&t.from));
            let to = match subject {
                Some(Subject::Recipient(fp)) => Some(forward_path_text(fp)),
                _ => None,
            };
            let user = match subject {
                Some(Subject::Login(login)) => Some(login.as_str()),
                _ => None,
            };
            maillog::rejected(&maillog::Rejected {
                client: self.peer.ip(),
                from: from.as_deref(),
                to: to.as_deref(),
                user,
                reply,
            });
        }
        reply.encode(&mut self.out);
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        crate::metrics::bytes_out(out.len());
        with_timeout(self.server.limits.command, self.stream.write_all(&out)).await
    }

    /// Half-closes and drains what the client still sends, briefly, so that our last reply
    /// reaches it instead of being destroyed by a reset.
    async fn linger(&mut self) -> std::io::Result<()> {
        self.stream.linger(LINGER).await;
        Ok(())
    }

    async fn start_tls(&mut self) -> std::io::Result<()> {
        self.flush().await?;
        let tls = self.server.config.tls();
        let upgraded = self
            .stream
            .start_tls(&tls, self.server.limits.command)
            .await;
        upgraded.inspect_err(|why| log::info!("TLS handshake with {} failed: {why}", self.peer))?;
        self.session.tls_established();
        Ok(())
    }

    /// AUTH through the shared login check (`auth`): its failure delay and per-address limit.
    async fn authenticate(&mut self, login: String, password: String) {
        let auth = self.server.auth.clone();
        match auth
            .login(Protocol::Smtp, self.peer.ip(), &login, password)
            .await
        {
            Login::Ok(user) => self.session.auth_result(Some(user)),
            Login::Failed => self.session.auth_result(None),
            Login::Blocked => {
                let reply = Reply::new(454, "4.7.0", "Too many failed logins, try again later");
                self.session.auth_refused(reply);
            }
        }
    }

    fn data_start(&mut self) {
        let filter = ForgedResultsFilter::new(&self.server.settings().hostname);
        let receiving = match self.server.queue.incoming() {
            Ok(mut incoming) => {
                let header = self.received_header(incoming.id().as_str());
                let failed = incoming.write(header.as_bytes()).err();
                Receiving {
                    incoming: Some(incoming),
                    failed,
                    filter,
                }
            }
            Err(e) => Receiving {
                incoming: None,
                failed: Some(e),
                filter,
            },
        };
        self.receiving = Some(receiving);
    }

    fn received_header(&self, id: &str) -> String {
        let txn = self.session.transaction();
        let single = txn
            .filter(|t| t.rcpts.len() == 1)
            .and_then(|t| t.rcpts.first())
            .map(|(fp, _)| forward_path_text(fp));
        let hop = received::Hop {
            helo: self.session.helo().unwrap_or(""),
            ip: self.peer.ip(),
            hostname: &self.server.settings().hostname,
            esmtp: self.session.is_esmtp(),
            tls: self.session.is_tls(),
            authenticated: self.session.auth_user().is_some(),
            id,
            single_rcpt: single.as_deref(),
        };
        received::header(&hop, time::OffsetDateTime::now_utc())
    }

    fn data_chunk(&mut self, chunk: &[u8]) {
        let Some(r) = self.receiving.as_mut() else {
            return;
        };
        if r.failed.is_some() {
            return;
        }
        let Some(incoming) = r.incoming.as_mut() else {
            return;
        };
        let written = if r.filter.in_body() {
            incoming.write(chunk)
        } else {
            let mut kept = Vec::with_capacity(chunk.len());
            r.filter.feed(chunk, &mut kept);
            incoming.write(&kept)
        };
        if let Err(e) = written {
            r.failed = Some(e);
        }
    }

    /// The message is complete: check it, commit it durably (off the executor), and only
    /// then answer.
    async fn data_end(&mut self) {
        let queue_dir = self.server.queue.dir().to_path_buf();
        let writing = |e: &std::io::Error| LocalFailure::io("writing it", &queue_dir, e);
        let result = match self.receiving.take() {
            Some(Receiving {
                incoming: Some(mut incoming),
                failed: None,
                mut filter,
            }) => {
                let mut rest = Vec::new();
                filter.finish(&mut rest);
                match incoming.write(&rest) {
                    // Boxed: the checks' and the hook's futures are large, and a connection's
                    // task would otherwise reserve room for them even while idle.
                    Ok(()) => Box::pin(self.accept(incoming)).await,
                    Err(e) => {
                        incoming.abort();
                        Err(Refusal::Local(writing(&e)))
                    }
                }
            }
            Some(Receiving {
                incoming, failed, ..
            }) => {
                if let Some(i) = incoming {
                    i.abort();
                }
                Err(Refusal::Local(match failed {
                    Some(e) => writing(&e),
                    None => LocalFailure::other("no message file"),
                }))
            }
            None => Err(Refusal::Local(LocalFailure::other(
                "no message in progress",
            ))),
        };
        let result = result.map_err(|refusal| match refusal {
            Refusal::Local(failure) => {
                failure.log(self.peer);
                failure.reply()
            }
            Refusal::Policy(reply) => reply,
        });
        self.session.data_result(result);
    }

    /// Decides on a complete message: DISCARD rules, then (port 25) SPF / DKIM / DMARC, then
    /// the durable commit. The message is read back in pieces where it must be read (the
    /// checks, the hook): memory does not grow with its size.
    async fn accept(&mut self, mut incoming: Incoming) -> Result<String, Refusal> {
        if self.discarded() {
            // SPEC §7 DISCARD: accepted, as far as the client can tell, and dropped.
            let id = incoming.id().to_string();
            incoming.abort();
            maillog::discarded(&id, self.peer.ip());
            return Ok(id);
        }
        let mut envelope = self.envelope();
        // SPEC §9: the hook runs for mail received on port 25; looked up per message, so
        // adding or removing it needs no restart.
        let hook = (self.kind == ListenerKind::Smtp)
            .then(|| PostDataHook::find(&self.server.settings().config_dir, self.server.hook_limit))
            .flatten();
        let mut spf_pass = false;
        if self.checks_inbound() {
            let checked = self.check_message(&mut incoming, &mut envelope).await;
            match checked {
                Ok(pass) => spf_pass = pass,
                Err(refusal) => {
                    incoming.abort();
                    return Err(refusal);
                }
            }
        }
        if let Some(hook) = hook
            && let Err(refusal) = self
                .run_hook(&hook, &mut incoming, &mut envelope, spf_pass)
                .await
        {
            incoming.abort();
            return Err(refusal);
        }
        self.commit(incoming, envelope)
            .await
            .map_err(Refusal::Local)
    }

    /// SPF, DKIM and DMARC on the message as written: its header section in memory (at most
    /// `message::MAX_HEADER_SECTION`; a longer one is refused), its body hashed in pieces.
    async fn check_message(
        &self,
        incoming: &mut Incoming,
        envelope: &mut Envelope,
    ) -> Result<bool, Refusal> {
        let queue_dir = self.server.queue.dir();
        let data_len = incoming.data_len();
        let reader = incoming
            .data_reader()
            .map_err(|e| Refusal::Local(LocalFailure::io("writing it", queue_dir, &e)))?;
        let split = match crate::message::split(reader) {
            Ok(split) => split,
            Err(crate::message::HeaderError::TooLarge) => {
                // RFC 3463 §3.4: X.3.4, message too big for the system.
                return Err(Refusal::Policy(Reply::new(
                    552,
                    "5.3.4",
                    "Message header section too large",
                )));
            }
            Err(crate::message::HeaderError::Io(e)) => {
                return Err(Refusal::Local(LocalFailure::io(
                    "reading it back",
                    queue_dir,
                    &e,
                )));
            }
        };
        let body_len = data_len.saturating_sub(split.header.len() as u64);
        self.authenticate_message(&split.header, split.body, body_len, envelope)
            .await
            .map_err(Refusal::Policy)
    }

    /// The post-data hook, fed the message as it will be delivered (our headers, then the
    /// data, streamed from the file); the header lines it prints go on top (as chasquid).
    async fn run_hook(
        &self,
        hook: &PostDataHook,
        incoming: &mut Incoming,
        envelope: &mut Envelope,
        spf_pass: bool,
    ) -> Result<(), Refusal> {
        let data = incoming.data_reader().map_err(|e| {
            Refusal::Local(LocalFailure::io("writing it", self.server.queue.dir(), &e))
        })?;
        let env = self.hook_env(envelope, spf_pass);
        let input = smol::io::Cursor::new(envelope.headers.clone().into_bytes())
            .chain(smol::Unblock::with_capacity(crate::message::CHUNK, data));
        match hook.run_reader(&env, input).await.into_result() {
            Ok(headers) => {
                envelope.headers.insert_str(0, &headers);
                Ok(())
            }
            Err(reply) => Err(Refusal::Policy(reply)),
        }
    }

    /// The envelope as chasquid's hooks see it (SPEC §9).
    fn hook_env(&self, envelope: &Envelope, spf_pass: bool) -> HookEnv {
        let rcpt_to = self
            .session
            .transaction()
            .map(|t| {
                t.rcpts
                    .iter()
                    .map(|(fp, _)| forward_path_text(fp))
                    .collect()
            })
            .unwrap_or_default();
        let from_local_domain = crate::addr::Address::parse(&envelope.from)
            .is_ok_and(|a| self.server.domains().get(a.domain()).is_some());
        HookEnv {
            remote_addr: self.peer,
            ehlo_domain: self.session.helo().unwrap_or("").to_string(),
            mail_from: envelope.from.clone(),
            rcpt_to,
            auth_as: self.session.auth_user().map(str::to_string),
            on_tls: self.session.is_tls(),
            from_local_domain,
            spf_pass,
        }
    }

    /// SPEC §7: mail arriving on port 25 from the outside is authenticated. Clients trusted to
    /// relay (`relay_networks`, a `Connect:` RELAY rule) are our own machines sending as our
    /// domains, like submission: their mail is not checked.
    fn checks_inbound(&self) -> bool {
        let ip = self.peer.ip();
        self.kind == ListenerKind::Smtp
            && !self.connect_relay
            && !self
                .server
                .settings()
                .relay_networks
                .iter()
                .any(|net| net.contains(ip))
    }

    /// SPF, DKIM and DMARC: the Authentication-Results header goes into the envelope; an SPF
    /// `fail` or a DMARC `p=reject` failure is refused unless `inbound_policy` says "tag", and
    /// a tagged one is never forwarded outside (SPEC §8). Ok says whether SPF passed.
    async fn authenticate_message(
        &self,
        header: &[u8],
        body: impl std::io::Read + Send + 'static,
        body_len: u64,
        envelope: &mut Envelope,
    ) -> Result<bool, Reply> {
        let hostname = &self.server.settings().hostname;
        let ctx = inbound::Inbound {
            client_ip: self.peer.ip(),
            helo: self.session.helo().unwrap_or(""),
            mail_from: &envelope.from,
            hostname,
        };
        let verdict = inbound::check(&self.server.dns, &ctx, header, body, body_len).await;
        let dkim: Vec<&str> = verdict.dkim.iter().map(|d| d.result.as_str()).collect();
        metrics::inbound_auth(verdict.spf.as_str(), &dkim, verdict.dmarc.result.as_str());
        let policy = &self.server.settings().inbound_policy;
        envelope.no_forward = judge_inbound(&verdict, policy, &spf_identity(&ctx))?;
        envelope.unverified_sender = !verdict.sender_authenticated(&envelope.from);
        envelope.from_rewrite = verdict.dmarc_needs_from_rewrite();
        let value = verdict
            .header
            .strip_prefix("Authentication-Results:")
            .unwrap_or(&verdict.header)
            .trim();
        envelope.auth_results = Some(value.to_string());
        envelope.headers.push_str(&verdict.header);
        Ok(verdict.spf == inbound::SpfResult::Pass)
    }

    /// Whether an access rule says to drop this message (`Connect:` or `From:` DISCARD).
    fn discarded(&self) -> bool {
        let from = self
            .session
            .transaction()
            .map(|t| reverse_path_text(&t.from));
        self.discard_all || from.is_some_and(|f| self.access.from(&f) == Some(&Action::Discard))
    }

    /// Makes the message durable: delivered to the Maildirs when it is for local users only
    /// (queue::direct), else queued for the runner. Either way, off the executor.
    async fn commit(
        &mut self,
        incoming: Incoming,
        envelope: Envelope,
    ) -> Result<String, LocalFailure> {
        let queue_dir = self.server.queue.dir().to_path_buf();
        let queueing = |e: std::io::Error| LocalFailure::io("queueing it", &queue_dir, &e);
        if let Some(direct) = &self.server.deliveries.direct
            && DirectMaildir::applies(&envelope)
        {
            let direct = direct.clone();
            let outcome = smol::unblock(move || direct.deliver(incoming, envelope))
                .await
                .map_err(queueing)?;
            return Ok(self.log_direct(outcome));
        }
        let unsynced = smol::unblock(move || incoming.commit_unsynced(envelope))
            .await
            .map_err(queueing)?;
        // The queue folder's shared fsync is waited for here, not on the blocking thread.
        let item = unsynced.durable().await.map_err(queueing)?;
        let id = item.id.to_string();
        self.log_received(&item);
        self.server.deliveries.submit(item);
        Ok(id)
    }

    /// The mail log of a direct delivery, as the runner would have written it; a message
    /// that had to be queued after all goes to the runner, which logs the rest.
    fn log_direct(&self, outcome: Outcome) -> String {
        let message = &outcome.message;
        let id = message.id.to_string();
        self.log_received(message);
        for (rcpt, result) in message.envelope.rcpts.iter().zip(&outcome.results) {
            if result.is_ok() {
                maillog::delivered(&id, &rcpt.target.target(), "maildir");
            }
        }
        match outcome.queued {
            Some(item) => self.server.deliveries.submit(item),
            None => maillog::removed(&id),
        }
        id
    }

    fn log_received(&self, item: &StoredMessage) {
        let client = maillog::ClientDesc {
            ip: self.peer.ip(),
            helo: self.session.helo().unwrap_or(""),
            tls: self.session.is_tls(),
            auth: self.session.auth_user(),
        };
        maillog::received(
            item.id.as_str(),
            &item.envelope.from,
            item.envelope.rcpts.len(),
            item.message_len(),
            &client,
        );
    }

    /// The envelope for the queue: every resolved target once, with the RCPT it came from.
    fn envelope(&self) -> Envelope {
        let mut rcpts: Vec<QueuedRcpt> = Vec::new();
        let txn = self.session.transaction();
        let (from, txn_rcpts) = match txn {
            Some(t) => (reverse_path_text(&t.from), t.rcpts.as_slice()),
            None => (String::new(), &[][..]),
        };
        for (fp, targets) in txn_rcpts {
            for target in targets {
                if rcpts.iter().any(|r| &r.target == target) {
                    continue;
                }
                rcpts.push(QueuedRcpt {
                    original: forward_path_text(fp),
                    target: target.clone(),
                    state: RcptState::Pending,
                    last_error: None,
                });
            }
        }
        Envelope {
            from,
            rcpts,
            received_at: now_secs(),
            client: format!(
                "{} helo={} auth={}",
                self.peer.ip(),
                self.session.helo().unwrap_or(""),
                self.session.auth_user().unwrap_or("-")
            ),
            smtputf8: txn.is_some_and(|t| t.params.smtputf8),
            body_8bit: txn.is_some_and(|t| t.params.body == Some(Body::EightBitMime)),
            auth_user: self.session.auth_user().map(str::to_string),
            ..Envelope::default()
        }
    }
}

/// The identity SPF checked: MAIL FROM, or the HELO name for `<>` (RFC 7208 §2.4).
fn spf_identity(ctx: &inbound::Inbound<'_>) -> String {
    if ctx.mail_from.is_empty() {
        ctx.helo.to_string()
    } else {
        ctx.mail_from.to_string()
    }
}

fn forward_path_text(fp: &ForwardPath) -> String {
    match fp {
        ForwardPath::Postmaster => "postmaster".into(),
        ForwardPath::Addr(a) => a.to_string(),
    }
}

/// Read buffers handed from one read to the next: a connection holds one only from the
/// moment its socket is readable until the bytes are fed to its session, and a fresh buffer
/// for every read would be allocated and zeroed each time.
mod read_buffers {
    use std::cell::RefCell;

    /// Spare buffers kept per executor thread; more are dropped.
    const SPARE: usize = 8;

    thread_local! {
        static SPARES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    /// A buffer of `READ_CHUNK` bytes.
    pub fn take() -> Vec<u8> {
        SPARES
            .with(|spares| spares.borrow_mut().pop())
            .unwrap_or_else(|| vec![0; super::READ_CHUNK])
    }

    pub fn give_back(buf: Vec<u8>) {
        if buf.len() != super::READ_CHUNK {
            return;
        }
        SPARES.with(|spares| {
            let mut spares = spares.borrow_mut();
            if spares.len() < SPARE {
                spares.push(buf);
            }
        });
    }
}

#[cfg(test)]
mod tests;
