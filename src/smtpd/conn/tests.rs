//! Dialog tests of the driver: a real `Server` on a temporary config folder, a client on a
//! loopback socket, `serve` on a thread of its own. Every wait has a deadline.

use super::*;
use crate::auth::Authenticator;
use crate::config::Settings;
use crate::config::live_config::LiveConfig;
use crate::dns::Dns;
use crate::mailauth::srs::Srs;
use crate::net::caps::Refused;
use crate::queue::runner;
use crate::queue::store::Queue;
use crate::smtpd::server::ClientLimits;
use smol::Async;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc;

const HOSTNAME: &str = "mx.tambo.test";
/// The one local domain; its one user is `alice` (receive-only: no test logs in).
const DOMAIN: &str = "tambo.test";
/// The longest any wait of the client, or of the server for the client, may take.
const DEADLINE: Duration = Duration::from_secs(10);
const LIMITS: ClientLimits = ClientLimits {
    command: DEADLINE,
    data: DEADLINE,
};
const MESSAGE: &str = "From: <sender@example.net>\r\nSubject: hello\r\n\r\nHi Alice.\r\n.\r\n";

/// A server on a temporary config folder (`conf/tambo.json`, `conf/access`, one domain).
struct Fixture {
    dir: tempfile::TempDir,
    server: Arc<Server>,
    _dns: ServFail,
}

/// A DNS server that answers every query SERVFAIL at once: SPF and DMARC come out
/// `temperror` without a wait (a port nobody answers on costs the resolver's whole timeout,
/// 2 × 5 s a lookup). Stopped by an empty datagram when dropped.
struct ServFail(SocketAddr);

impl ServFail {
    fn start() -> ServFail {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind DNS");
        let addr = socket.local_addr().expect("DNS address");
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n @ 12.., client)) = socket.recv_from(&mut buf) {
                // RFC 1035 §4.1: the query's header and question, as a response: QR set,
                // opcode and RD kept, RA, RCODE 2; no records in any section.
                let Some(end) = question_end(&buf[..n]) else {
                    continue;
                };
                let mut answer = buf[..end].to_vec();
                answer[2] = 0x80 | (answer[2] & 0x79);
                answer[3] = 0x82;
                answer[6..12].fill(0);
                let _ = socket.send_to(&answer, client);
            }
        });
        ServFail(addr)
    }
}

impl Drop for ServFail {
    fn drop(&mut self) {
        let _ = UdpSocket::bind("127.0.0.1:0").and_then(|s| s.send_to(&[], self.0));
    }
}

/// Where the (one) question of a DNS message ends: its name's labels, type and class.
fn question_end(message: &[u8]) -> Option<usize> {
    let mut at = 12;
    loop {
        let len = usize::from(*message.get(at)?);
        at += 1 + len;
        if len == 0 {
            break;
        }
    }
    (at + 4 <= message.len()).then_some(at + 4)
}

fn fixture(access: &str, limits: ClientLimits) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("conf");
    let domain = dir.path().join("domains").join(DOMAIN);
    std::fs::create_dir_all(&conf).expect("conf/");
    std::fs::create_dir_all(&domain).expect("domains/");
    let json = format!(r#"{{"hostname": "{HOSTNAME}", "smtp_listen": []}}"#);
    std::fs::write(conf.join("tambo.json"), json).expect("tambo.json");
    std::fs::write(conf.join("access"), access).expect("access");
    std::fs::write(domain.join("users"), "{\n  \"alice\": \"!\"\n}\n").expect("users");

    let settings = Arc::new(Settings::load(dir.path()).expect("settings"));
    let config = Arc::new(LiveConfig::load(settings.clone()).expect("live config"));
    crate::fsutil::create_private_dir_all(&settings.data_dir).expect("data/");
    let direct = DirectMaildir {
        store: crate::mailbox::Store::new(settings.data_dir.join("mail"), None)
            .with_hostname(HOSTNAME),
    };
    // No runner: local mail is delivered before the 250, and nothing else is accepted.
    let (deliveries, _) = runner::channel(Some(direct));
    let servfail = ServFail::start();
    let dns = Dns::new(&[servfail.0]).expect("resolver");
    let auth = Authenticator::with_delay(config.clone(), Duration::from_millis(10));
    let server = Server {
        queue: Queue::open(&settings.data_dir).expect("queue"),
        deliveries,
        srs: Arc::new(Srs::new(b"secret")),
        dns: Arc::new(dns),
        auth: Arc::new(auth),
        config,
        limits,
        hook_limit: DEADLINE,
    };
    Fixture {
        dir,
        server: Arc::new(server),
        _dns: servfail,
    }
}

impl Fixture {
    /// The files delivered to alice's Maildir.
    fn delivered(&self) -> Vec<String> {
        let new = self
            .dir
            .path()
            .join(format!("data/mail/{DOMAIN}/alice/new"));
        let Ok(entries) = std::fs::read_dir(&new) else {
            return Vec::new();
        };
        entries
            .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("message"))
            .collect()
    }

    /// A client connected to `serve` on a listener of `kind`.
    fn connect(&self, kind: ListenerKind) -> Client {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let stream = TcpStream::connect(addr).expect("connect");
        let (tcp, peer) = listener.accept().expect("accept");
        let accepted = Accepted {
            tcp: Async::new(tcp).expect("async socket"),
            peer,
            kind,
            early: Vec::new(),
        };
        let (server, (done, ended)) = (self.server.clone(), mpsc::channel());
        std::thread::spawn(move || {
            smol::block_on(serve(server, accepted));
            let _ = done.send(());
        });
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let reader = BufReader::new(stream);
        Client { reader, ended }
    }
}

/// The client's side: blocking reads, each within `DEADLINE`.
struct Client {
    reader: BufReader<TcpStream>,
    /// A message once `serve` has returned.
    ended: mpsc::Receiver<()>,
}

impl Client {
    fn send(&mut self, text: &str) {
        let stream = self.reader.get_mut();
        stream.write_all(text.as_bytes()).expect("write");
    }

    /// One whole reply (every line of a multi-line one).
    fn reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => panic!("connection closed; got so far {reply:?}"),
                Ok(_) => reply.push_str(&line),
                Err(e) => panic!("no reply within {DEADLINE:?} ({e}); got so far {reply:?}"),
            }
            assert!(line.ends_with("\r\n"), "{line:?}");
            if line.as_bytes().get(3) == Some(&b' ') {
                return reply;
            }
        }
    }

    /// Sends one command line, returns the reply.
    fn command(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n"));
        self.reply()
    }

    /// The server closes the connection (and has nothing more to say), and `serve` returns.
    fn closed(self) {
        let Client { mut reader, ended } = self;
        let mut rest = Vec::new();
        match reader.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest)),
            Err(e) => panic!("no clean close within {DEADLINE:?}: {e}"),
        }
        drop(reader);
        let ended = ended.recv_timeout(DEADLINE);
        ended.expect("serve returns once the connection is closed");
    }

    /// Greeting and EHLO, for tests about what comes after.
    fn greeted(mut self) -> Client {
        assert!(self.reply().starts_with("220 "));
        assert!(self.command("EHLO client.example").starts_with("250-"));
        self
    }
}

/// Asserts that `reply` starts with `want` (code and enhanced code, maybe some text).
#[track_caller]
fn expect(reply: &str, want: &str) {
    assert!(reply.starts_with(want), "want {want:?}, got {reply:?}");
}

#[test]
fn greeting_ehlo_and_quit() {
    let f = fixture("", LIMITS);
    for kind in [ListenerKind::Smtp, ListenerKind::Submission] {
        let mut c = f.connect(kind);
        assert_eq!(
            c.reply(),
            format!("220 {HOSTNAME} ESMTP tambo\r\n"),
            "{kind}"
        );
        let ehlo = c.command("EHLO client.example");
        let keywords: Vec<&str> = ehlo.lines().map(|l| &l[4..]).collect();
        assert_eq!(keywords[0], HOSTNAME, "{kind}");
        for want in "PIPELINING 8BITMIME SMTPUTF8 ENHANCEDSTATUSCODES STARTTLS".split(' ') {
            assert!(keywords.contains(&want), "{kind}: no {want} in {ehlo:?}");
        }
        let size = format!("SIZE {}", f.server.settings().max_message_size());
        assert!(keywords.contains(&size.as_str()), "{kind}: {ehlo:?}");
        // RFC 4954 §4: not on port 25, and not before TLS on submission either.
        assert!(!keywords.iter().any(|k| k.starts_with("AUTH")), "{ehlo:?}");
        expect(&c.command("QUIT"), "221 2.0.0 ");
        c.closed();
    }
}

#[test]
fn local_mail_is_in_the_maildir_before_the_250() {
    let f = fixture("", LIMITS);
    let mut c = f.connect(ListenerKind::Smtp).greeted();
    expect(&c.command("MAIL FROM:<sender@example.net>"), "250 2.1.0 ");
    expect(&c.command("RCPT TO:<alice@tambo.test>"), "250 2.1.5 ");
    expect(&c.command("DATA"), "354 ");
    c.send(MESSAGE);
    let done = c.reply();
    let id = done
        .strip_prefix("250 2.0.0 OK: queued as ")
        .and_then(|rest| rest.strip_suffix("\r\n"))
        .unwrap_or_else(|| panic!("{done:?}"));
    assert!(!id.is_empty());

    let delivered = f.delivered();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let message = &delivered[0];
    // Maildir files end their lines in LF.
    let received = format!("by {HOSTNAME} (tambo) with ESMTP id {id}\n\tfor <alice@tambo.test>;");
    assert!(message.contains("\nReceived: from client.example ([127.0.0.1])\n"));
    assert!(message.contains(&received), "{message}");
    // Port 25: SPF ran, and with no DNS answer it could only be a temporary error.
    let results = format!("\nAuthentication-Results: {HOSTNAME};\n");
    assert!(message.contains(&results), "{message}");
    assert!(message.contains("\tspf=temperror "), "{message}");
    assert!(
        message.ends_with("Subject: hello\n\nHi Alice.\n"),
        "{message}"
    );
    expect(&c.command("QUIT"), "221 ");
    c.closed();
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let f = fixture("", LIMITS);
    let mut c = f.connect(ListenerKind::Smtp).greeted();
    // RFC 2920 §3.1: one write; the replies come back in the order of the commands.
    c.send("MAIL FROM:<sender@example.net>\r\nRCPT TO:<nobody@tambo.test>\r\nRCPT TO:<alice@tambo.test>\r\nDATA\r\n");
    for want in ["250 2.1.0 ", "550 5.1.1 ", "250 2.1.5 ", "354 "] {
        expect(&c.reply(), want);
    }
    c.send(&format!("{MESSAGE}QUIT\r\n"));
    expect(&c.reply(), "250 2.0.0 OK: queued as ");
    expect(&c.reply(), "221 ");
    c.closed();
    assert_eq!(f.delivered().len(), 1);
}

#[test]
fn recipients_port_25_refuses() {
    let f = fixture("", LIMITS);
    let mut c = f.connect(ListenerKind::Smtp).greeted();
    expect(&c.command("MAIL FROM:<sender@example.net>"), "250 ");
    for (rcpt, want) in [
        ("bob@tambo.test", "550 5.1.1 "),
        ("alice@example.org", "554 5.7.1 "),
        ("alice@tambo.test", "250 2.1.5 "),
    ] {
        expect(&c.command(&format!("RCPT TO:<{rcpt}>")), want);
    }
    expect(&c.command("QUIT"), "221 ");
    c.closed();
}

#[test]
fn auth_needs_submission_and_tls() {
    let f = fixture("", LIMITS);
    for (kind, want) in [
        (ListenerKind::Smtp, "503 5.5.1 "),
        // RFC 4954 §6: no password in the clear.
        (ListenerKind::Submission, "538 5.7.11 "),
    ] {
        let mut c = f.connect(kind).greeted();
        expect(&c.command("AUTH PLAIN AGFsaWNlAHNlY3JldA=="), want);
        // The refusal does not end the session.
        expect(&c.command("NOOP"), "250 ");
        expect(&c.command("QUIT"), "221 ");
        c.closed();
    }
}

#[test]
fn silent_client_is_dropped_with_421() {
    // Long enough for the client's own commands on a loaded machine.
    let limit = Duration::from_secs(1);
    let f = fixture(
        "",
        ClientLimits {
            command: limit,
            data: limit,
        },
    );
    for in_data in [false, true] {
        let mut c = f.connect(ListenerKind::Smtp).greeted();
        if in_data {
            expect(&c.command("MAIL FROM:<sender@example.net>"), "250 ");
            expect(&c.command("RCPT TO:<alice@tambo.test>"), "250 ");
            expect(&c.command("DATA"), "354 ");
            c.send("Subject: slow\r\n");
        }
        let silent = Instant::now();
        expect(&c.reply(), "421 4.4.2 ");
        // Counted from our last reply, which came just before `silent`.
        assert!(silent.elapsed() >= limit / 2, "in DATA: {in_data}");
        c.closed();
    }
    assert!(f.delivered().is_empty());
}

#[test]
fn bare_lf_in_data_is_refused_and_nothing_delivered() {
    let f = fixture("", LIMITS);
    let mut c = f.connect(ListenerKind::Smtp).greeted();
    expect(&c.command("MAIL FROM:<sender@example.net>"), "250 ");
    expect(&c.command("RCPT TO:<alice@tambo.test>"), "250 ");
    expect(&c.command("DATA"), "354 ");
    // SMTP smuggling (SPEC §7): a bare LF, then what would be a second message.
    c.send("Subject: one\r\n\r\nbody\n.\nMAIL FROM:<x@example.net>\r\n.\r\n");
    expect(&c.reply(), "521 5.5.2 ");
    c.closed();
    assert!(f.delivered().is_empty());
    let queued = f.server.queue.list().expect("queue");
    assert!(queued.is_empty(), "{} queued", queued.len());
}

#[test]
fn connect_reject_rule_is_the_greeting() {
    for (rule, want) in [
        ("Connect:127.0.0.1 REJECT Go away", "554 5.7.1 Go away\r\n"),
        ("Connect:127.0.0.0/8 REJECT", "554 5.7.1 Access denied\r\n"),
    ] {
        let f = fixture(&format!("{rule}\n"), LIMITS);
        let mut c = f.connect(ListenerKind::Smtp);
        assert_eq!(c.reply(), want, "{rule}");
        c.closed();
    }
    // A rule for another address leaves this client alone.
    let f = fixture("Connect:192.0.2.0/24 REJECT\n", LIMITS);
    let mut c = f.connect(ListenerKind::Smtp);
    expect(&c.reply(), "220 ");
    expect(&c.command("QUIT"), "221 ");
    c.closed();
}

#[test]
fn refusal_words_per_listener() {
    let f = fixture("", LIMITS);
    for (kind, why, spoken) in [
        (ListenerKind::Smtp, Refused::Total, true),
        (ListenerKind::Smtp, Refused::PerAddress, true),
        (ListenerKind::Submission, Refused::PerAddress, true),
        // A client of the TLS port expects a TLS record: closed without a word.
        (ListenerKind::SubmissionTls, Refused::Total, false),
    ] {
        let words = f.server.refusal(kind, why);
        let words = words.map(|w| String::from_utf8_lossy(&w).into_owned());
        assert_eq!(words.is_some(), spoken, "{kind} {why:?}: {words:?}");
        if let Some(text) = words {
            expect(&text, "421 4.7.0 ");
            assert!(
                text.ends_with("\r\n") && text.lines().count() == 1,
                "{text:?}"
            );
        }
    }
}
