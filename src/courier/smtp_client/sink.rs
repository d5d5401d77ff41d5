use super::Io;
use crate::message::{Envelope, QueueId, StoredMessage};
use crate::proto::data::{DataReader, DataStatus};
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
    /// Close the connection after this many transactions (a peer's idle timeout).
    pub close_after_transactions: Option<usize>,
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
            close_after_transactions: None,
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
    /// Command lines per read while reading commands: how the client batched them.
    pub batches: Vec<usize>,
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
            let lines = chunk[..n].iter().filter(|&&b| b == b'\n').count();
            self.record(|s| s.batches.push(lines));
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn run(mut self) {
        let greeting = self.script.greeting.clone();
        if !self.reply(&greeting).await {
            return;
        }
        let mut rcpts = 0;
        let mut transactions = 0;
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
                    transactions += 1;
                    let after = self.script.after_data.clone();
                    if self.script.close_after_transactions == Some(transactions) {
                        self.reply(&after).await;
                        return;
                    }
                    after
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
pub fn item(dir: &Path, data: &[u8]) -> StoredMessage {
    let path = dir.join("message");
    std::fs::write(&path, data).unwrap();
    StoredMessage {
        id: QueueId::generate(),
        envelope: Envelope {
            from: "sender@example.org".into(),
            client: "test".into(),
            ..Envelope::default()
        },
        path,
        data_offset: 0,
        data_len: data.len() as u64,
        file: None,
        pool_name: None,
    }
}
