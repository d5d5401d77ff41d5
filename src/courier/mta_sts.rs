//! MTA-STS (RFC 8461): policy discovery (`_mta-sts` TXT), fetch over verified HTTPS, cache
//! under `data_dir/mta-sts/`, and enforcement (which MX hosts may be used, TLS required).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_rustls::client::TlsStream;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, header};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use smol::net::TcpStream;
use smol_hyper::rt::FuturesIo;

use crate::addr::Domain;
use crate::dns::Dns;
use crate::fsutil;

/// RFC 8461 §3.2: `max_age` is at most 31557600 seconds (about a year).
const MAX_AGE_LIMIT: u64 = 31_557_600;
/// RFC 8461 §3.3: senders may limit the policy body to 64 KiB.
const MAX_BODY: usize = 64 * 1024;
/// The whole fetch (DNS, connect, TLS, request, body); RFC 8461 §3.3 suggests 60 s at most.
const FETCH_DEADLINE: Duration = Duration::from_secs(10);
/// RFC 8461 §3.3: the policy's well-known path, always on port 443.
const POLICY_PATH: &str = "/.well-known/mta-sts.txt";
const HTTPS_PORT: u16 = 443;
/// The folder under `data_dir`.
const DIR_NAME: &str = "mta-sts";

/// A policy in force for a domain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    pub id: String,
    pub mode: Mode,
    /// `mx:` patterns (`mail.example.com`, `*.example.net`).
    pub mx: Vec<String>,
    pub max_age: u64,
    /// When it was fetched (seconds since the epoch).
    pub fetched_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Enforce,
    Testing,
    None,
}

impl Policy {
    /// RFC 8461 §4.1: does `host` match one of the `mx` patterns?
    pub fn mx_allowed(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.mx.iter().any(|pattern| mx_matches(pattern, &host))
    }
    pub fn enforced(&self) -> bool {
        self.mode == Mode::Enforce
    }
    /// RFC 8461 §5.1: a cached policy is usable until `max_age` after its fetch.
    pub fn expired(&self, now_secs: u64) -> bool {
        now_secs >= self.fetched_at.saturating_add(self.max_age)
    }
}

fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// RFC 8461 §4.1: a leading `*.` stands for exactly one label, the leftmost one.
fn mx_matches(pattern: &str, host: &str) -> bool {
    let pattern = normalize_host(pattern);
    match pattern.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => pattern == host,
    }
}

/// Why a policy body was rejected (RFC 8461 §3.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("line {0:?} is not `key: value`")]
    BadLine(String),
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("unsupported version {0:?} (want STSv1)")]
    Version(String),
    #[error("invalid mode {0:?}")]
    Mode(String),
    #[error("invalid max_age {0:?} (0 to {MAX_AGE_LIMIT} seconds)")]
    MaxAge(String),
    #[error("invalid mx pattern {0:?}")]
    Mx(String),
}

/// Parses a policy body (RFC 8461 §3.2); `id` comes from the TXT record.
pub fn parse_policy(text: &str, id: &str, fetched_at: u64) -> Result<Policy, PolicyError> {
    let mut fields = Fields::default();
    // CRLF or bare LF line ends are both accepted; empty lines are ignored.
    for line in text.split('\n').map(|l| l.trim_end_matches('\r')) {
        if line.trim().is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| PolicyError::BadLine(line.to_string()))?;
        fields.add(key.trim(), value.trim());
    }
    fields.into_policy(id, fetched_at)
}

/// The fields seen so far; the first occurrence of a repeated field wins (RFC 8461 §3.2),
/// except `mx`, which repeats by design. Unknown keys are extensions and are ignored.
#[derive(Default)]
struct Fields<'a> {
    version: Option<&'a str>,
    mode: Option<&'a str>,
    max_age: Option<&'a str>,
    mx: Vec<&'a str>,
}

impl<'a> Fields<'a> {
    fn add(&mut self, key: &str, value: &'a str) {
        match key {
            "version" => _ = self.version.get_or_insert(value),
            "mode" => _ = self.mode.get_or_insert(value),
            "max_age" => _ = self.max_age.get_or_insert(value),
            "mx" => self.mx.push(value),
            _ => {}
        }
    }

    fn into_policy(self, id: &str, fetched_at: u64) -> Result<Policy, PolicyError> {
        let version = self.version.ok_or(PolicyError::Missing("version"))?;
        if version != "STSv1" {
            return Err(PolicyError::Version(version.to_string()));
        }
        let mode = parse_mode(self.mode.ok_or(PolicyError::Missing("mode"))?)?;
        let max_age = parse_max_age(self.max_age.ok_or(PolicyError::Missing("max_age"))?)?;
        for pattern in &self.mx {
            check_mx_pattern(pattern)?;
        }
        // A `none` policy only says "stop using the old one" (RFC 8461 §8.3); it needs no mx.
        if self.mx.is_empty() && mode != Mode::None {
            return Err(PolicyError::Missing("mx"));
        }
        Ok(Policy {
            id: id.to_string(),
            mode,
            mx: self.mx.iter().map(|p| normalize_host(p)).collect(),
            max_age,
            fetched_at,
        })
    }
}

fn parse_mode(value: &str) -> Result<Mode, PolicyError> {
    match value {
        "enforce" => Ok(Mode::Enforce),
        "testing" => Ok(Mode::Testing),
        "none" => Ok(Mode::None),
        _ => Err(PolicyError::Mode(value.to_string())),
    }
}

/// RFC 8461 §3.2: `1*10DIGIT`, at most 31557600.
fn parse_max_age(value: &str) -> Result<u64, PolicyError> {
    let bad = || PolicyError::MaxAge(value.to_string());
    if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let secs: u64 = value.parse().map_err(|_| bad())?;
    if secs > MAX_AGE_LIMIT {
        return Err(bad());
    }
    Ok(secs)
}

/// RFC 8461 §3.2: `mx-pattern = [ "*." ] domain`.
fn check_mx_pattern(pattern: &str) -> Result<(), PolicyError> {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    if name.contains('*') || Domain::parse(name.trim_end_matches('.')).is_err() {
        return Err(PolicyError::Mx(pattern.to_string()));
    }
    Ok(())
}

/// RFC 8461 §3.1: the policy id of an `_mta-sts` TXT record (`v=STSv1; id=<1-32 alnum>;`),
/// None when the record is not a valid STSv1 record.
pub fn parse_txt(record: &str) -> Option<String> {
    let mut fields = record.split(';').map(str::trim);
    // `v=STSv1` must be the first field.
    if fields.next()? != "v=STSv1" {
        return None;
    }
    let mut id = None;
    for field in fields.filter(|f| !f.is_empty()) {
        let (key, value) = field.split_once('=')?;
        if key == "id" && id.is_none() {
            id = Some(value);
        }
    }
    let id = id?;
    let valid = (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric());
    valid.then(|| id.to_string())
}

/// RFC 8461 §3.1: records not starting with `v=STSv1;` are discarded; anything but exactly
/// one valid record left means "no policy".
fn select_txt(records: &[String]) -> Option<String> {
    let mut sts = records.iter().filter(|r| r.starts_with("v=STSv1;"));
    let record = sts.next()?;
    if sts.next().is_some() {
        return None;
    }
    parse_txt(record)
}

/// Why a policy fetch failed (logged; the delivery goes on as RFC 8461 §5.1 says).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{host}: {source}")]
    Dns {
        host: String,
        source: crate::dns::DnsError,
    },
    #[error("{host}: invalid TLS server name")]
    ServerName { host: String },
    #[error("{addr}: connect: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("{host}: TLS: {source}")]
    Tls { host: String, source: io::Error },
    #[error("{host}: HTTP: {source}")]
    Http { host: String, source: hyper::Error },
    #[error("{host}: reading body: {reason}")]
    Body { host: String, reason: String },
    #[error("{host}: HTTP status {status} (only 200 is accepted, no redirects)")]
    Status { host: String, status: StatusCode },
    #[error("{host}: Content-Type {content_type:?}, want text/plain")]
    ContentType { host: String, content_type: String },
    #[error("{host}: policy: {source}")]
    Policy { host: String, source: PolicyError },
    #[error("{host}: no answer within {FETCH_DEADLINE:?}")]
    Timeout { host: String },
}

pub struct MtaSts {
    dir: PathBuf,
    dns: Arc<Dns>,
    tls: Arc<ClientConfig>,
    /// Policies read or fetched so far, by ACE domain; filled lazily from the files.
    cache: Mutex<HashMap<String, Policy>>,
}

impl MtaSts {
    /// `roots` None: the system's trust store (rustls-platform-verifier); Some: exactly those
    /// roots (tests).
    pub fn new(
        data_dir: &Path,
        dns: Arc<Dns>,
        roots: Option<Arc<rustls::RootCertStore>>,
    ) -> io::Result<MtaSts> {
        let dir = data_dir.join(DIR_NAME);
        fsutil::create_private_dir_all(&dir)?;
        Ok(MtaSts {
            dir,
            dns,
            tls: Arc::new(client_config(roots).map_err(io::Error::other)?),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The policy in force for `domain_ace` at `now_secs`, fetching or refreshing it as RFC
    /// 8461 §5.1 says; None when the domain has no (usable) policy.
    pub async fn policy(&self, domain_ace: &str, now_secs: u64) -> Option<Policy> {
        let key = Domain::parse(domain_ace.trim_end_matches('.'))
            .ok()?
            .to_ascii();
        let cached = self.cached(&key).filter(|p| !p.expired(now_secs));
        let Some(id) = self.txt_id(&key).await else {
            // §5.1: no valid TXT record, but a cached policy: keep using it.
            return cached;
        };
        if let Some(policy) = cached.as_ref().filter(|p| p.id == id) {
            return Some(policy.clone());
        }
        match self.fetch(&key, &id, now_secs).await {
            Ok(policy) => {
                self.store(&key, &policy);
                Some(policy)
            }
            Err(e) => {
                // §5.1: a failed refresh keeps the unexpired cached policy.
                log::warn!("mta-sts: {key}: policy fetch failed: {e}");
                cached
            }
        }
    }

    /// The id of the domain's `_mta-sts` TXT record, if it has exactly one valid one.
    async fn txt_id(&self, key: &str) -> Option<String> {
        match self.dns.txt(&format!("_mta-sts.{key}")).await {
            Ok(records) => select_txt(&records),
            Err(e) => {
                if !e.is_permanent() {
                    log::info!("mta-sts: {key}: TXT lookup: {e}");
                }
                None
            }
        }
    }

    /// Fetches the policy over HTTPS (RFC 8461 §3.3), under one deadline.
    async fn fetch(&self, key: &str, id: &str, now_secs: u64) -> Result<Policy, FetchError> {
        let host = format!("mta-sts.{key}");
        let timeout = async {
            smol::Timer::after(FETCH_DEADLINE).await;
            Err(FetchError::Timeout { host: host.clone() })
        };
        let body = smol::future::or(self.fetch_body(&host), timeout).await?;
        parse_policy(&body, id, now_secs).map_err(|source| FetchError::Policy { host, source })
    }

    async fn fetch_body(&self, host: &str) -> Result<String, FetchError> {
        let tcp = self.connect(host).await?;
        let name = ServerName::try_from(host.to_string()).map_err(|_| FetchError::ServerName {
            host: host.to_string(),
        })?;
        let tls = futures_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|source| FetchError::Tls {
                host: host.to_string(),
                source,
            })?;
        http_get(host, FuturesIo::new(tls)).await
    }

    /// A TCP connection to the first address of `host` that answers.
    async fn connect(&self, host: &str) -> Result<TcpStream, FetchError> {
        let ips = self.dns.ips(host).await.map_err(|source| FetchError::Dns {
            host: host.to_string(),
            source,
        })?;
        let mut last = None;
        for ip in ips {
            let addr = SocketAddr::new(ip, HTTPS_PORT);
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(source) => last = Some(FetchError::Connect { addr, source }),
            }
        }
        // `ips` never returns an empty list (that is DnsError::NotFound).
        Err(last.unwrap_or_else(|| FetchError::Timeout {
            host: host.to_string(),
        }))
    }

    fn cached(&self, key: &str) -> Option<Policy> {
        let mut cache = self.lock();
        if let Some(policy) = cache.get(key) {
            return Some(policy.clone());
        }
        let policy = self.read(key)?;
        cache.insert(key.to_string(), policy.clone());
        Some(policy)
    }

    /// Caches a fetched policy in memory and on disk; a write failure is logged only, as the
    /// policy is still good for this process.
    fn store(&self, key: &str, policy: &Policy) {
        let path = self.dir.join(key);
        let written = serde_json::to_vec_pretty(policy)
            .map_err(io::Error::other)
            .and_then(|json| fsutil::write_atomic(&path, &json, 0o600));
        if let Err(e) = written {
            log::warn!("mta-sts: {}: {e}", path.display());
        }
        self.lock().insert(key.to_string(), policy.clone());
    }

    fn read(&self, key: &str) -> Option<Policy> {
        let path = self.dir.join(key);
        let data = match fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                log::warn!("mta-sts: {}: {e}", path.display());
                return None;
            }
        };
        serde_json::from_slice(&data)
            .inspect_err(|e| log::warn!("mta-sts: {}: {e}", path.display()))
            .ok()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Policy>> {
        // A panic while holding the lock leaves the map consistent (single inserts).
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn client_config(roots: Option<Arc<rustls::RootCertStore>>) -> Result<ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder =
        ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?;
    Ok(match roots {
        Some(roots) => builder.with_root_certificates(roots).with_no_client_auth(),
        None => {
            use rustls_platform_verifier::BuilderVerifierExt;
            builder.with_platform_verifier()?.with_no_client_auth()
        }
    })
}

/// One HTTP/1.1 GET of the policy over an established TLS stream (RFC 8461 §3.3).
async fn http_get(host: &str, io: FuturesIo<TlsStream<TcpStream>>) -> Result<String, FetchError> {
    let http_err = |source| FetchError::Http {
        host: host.to_string(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(http_err)?;
    let request = Request::get(POLICY_PATH)
        .header(header::HOST, host)
        .header(header::CONNECTION, "close")
        .header(header::USER_AGENT, "tambo")
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::Body {
            host: host.to_string(),
            reason: e.to_string(),
        })?;
    let exchange = async {
        let response = sender.send_request(request).await.map_err(http_err)?;
        read_response(host, response).await
    };
    // The connection must be polled for the exchange to progress; once it ends cleanly the
    // body is already buffered, so only the exchange's own result matters.
    let drive = async {
        conn.await.map_err(http_err)?;
        std::future::pending().await
    };
    smol::future::or(exchange, drive).await
}

async fn read_response(
    host: &str,
    response: hyper::Response<hyper::body::Incoming>,
) -> Result<String, FetchError> {
    // RFC 8461 §3.3: redirects are not followed; only 200 counts.
    if response.status() != StatusCode::OK {
        return Err(FetchError::Status {
            host: host.to_string(),
            status: response.status(),
        });
    }
    check_content_type(host, response.headers().get(header::CONTENT_TYPE))?;
    let body_err = |reason: String| FetchError::Body {
        host: host.to_string(),
        reason,
    };
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| body_err(e.to_string()))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| body_err("not UTF-8".into()))
}

/// RFC 8461 §3.2: the policy is served as `text/plain` (parameters such as charset allowed).
fn check_content_type(host: &str, value: Option<&header::HeaderValue>) -> Result<(), FetchError> {
    let text = value.and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = text.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("text/plain") {
        return Ok(());
    }
    Err(FetchError::ContentType {
        host: host.to_string(),
        content_type: text.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY_A: &str =
        "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.test\r\nmax_age: 86400\r\n";
    const POLICY_B: &str = "version: STSv1\nmode: testing\nmx: *.example.test\nmax_age: 3600\n";

    fn policy(mode: Mode, mx: &[&str], max_age: u64) -> Policy {
        Policy {
            id: "id1".into(),
            mode,
            mx: mx.iter().map(|s| s.to_string()).collect(),
            max_age,
            fetched_at: 100,
        }
    }

    #[test]
    fn parse_policy_table() {
        use PolicyError::{BadLine, MaxAge, Missing, Mx, Version};
        let ok = |mode, mx: &[&str], max_age| Ok(policy(mode, mx, max_age));
        let cases: &[(&str, Result<Policy, PolicyError>)] = &[
            (POLICY_A, ok(Mode::Enforce, &["mx1.example.test"], 86400)),
            (POLICY_B, ok(Mode::Testing, &["*.example.test"], 3600)),
            // Several mx, extra whitespace, unknown keys, upper-case hosts, no final newline.
            (
                "version:STSv1\nmode:  enforce \nmx: A.example.com.\nmx: *.b.example\nfoo: bar\nmax_age: 0",
                ok(Mode::Enforce, &["a.example.com", "*.b.example"], 0),
            ),
            (
                "version: STSv1\nmode: none\nmax_age: 31557600\n",
                ok(Mode::None, &[], 31557600),
            ),
            // The first of a repeated field wins.
            (
                "version: STSv1\nmode: testing\nmode: enforce\nmx: m.x\nmax_age: 5\nmax_age: 9\n",
                ok(Mode::Testing, &["m.x"], 5),
            ),
            (
                "mode: enforce\nmx: m.x\nmax_age: 5\n",
                Err(Missing("version")),
            ),
            (
                "version: STSv2\nmode: enforce\nmx: m.x\nmax_age: 5\n",
                Err(Version("STSv2".into())),
            ),
            (
                "version: STSv1\nmx: m.x\nmax_age: 5\n",
                Err(Missing("mode")),
            ),
            (
                "version: STSv1\nmode: Enforce\nmx: m.x\nmax_age: 5\n",
                Err(PolicyError::Mode("Enforce".into())),
            ),
            (
                "version: STSv1\nmode: enforce\nmx: m.x\n",
                Err(Missing("max_age")),
            ),
            (
                "version: STSv1\nmode: enforce\nmx: m.x\nmax_age: 31557601\n",
                Err(MaxAge("31557601".into())),
            ),
            (
                "version: STSv1\nmode: enforce\nmx: m.x\nmax_age: -1\n",
                Err(MaxAge("-1".into())),
            ),
            (
                "version: STSv1\nmode: enforce\nmx: m.x\nmax_age: 99999999999\n",
                Err(MaxAge("99999999999".into())),
            ),
            (
                "version: STSv1\nmode: enforce\nmx: m.x\nmax_age: \n",
                Err(MaxAge("".into())),
            ),
            (
                "version: STSv1\nmode: testing\nmax_age: 5\n",
                Err(Missing("mx")),
            ),
            (
                "version: STSv1\nmode: enforce\nmx: a.*.com\nmax_age: 5\n",
                Err(Mx("a.*.com".into())),
            ),
            (
                "version: STSv1\nmode: enforce\nmx: \nmax_age: 5\n",
                Err(Mx("".into())),
            ),
            (
                "version: STSv1\nmode enforce\n",
                Err(BadLine("mode enforce".into())),
            ),
            (
                "<html>hello</html>",
                Err(BadLine("<html>hello</html>".into())),
            ),
            ("", Err(Missing("version"))),
        ];
        for (text, want) in cases {
            assert_eq!(&parse_policy(text, "id1", 100), want, "{text:?}");
        }
    }

    #[test]
    fn parse_txt_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("v=STSv1; id=20160831085700Z;", Some("20160831085700Z")),
            ("v=STSv1;id=abc", Some("abc")),
            ("v=STSv1; id=abc; ext=1;", Some("abc")),
            ("v=STSv1; ext=1; id=X9", Some("X9")),
            (
                "v=STSv1; id=12345678901234567890123456789012;",
                Some("12345678901234567890123456789012"),
            ),
            ("v=STSv1; id=123456789012345678901234567890123;", None),
            ("v=STSv1; id=;", None),
            ("v=STSv1; id=a-b;", None),
            ("v=STSv1;", None),
            ("id=abc; v=STSv1;", None),
            ("v=STSv2; id=abc;", None),
            ("v=spf1 -all", None),
            ("v=STSv1; junk; id=abc", None),
        ];
        for (record, want) in cases {
            assert_eq!(parse_txt(record).as_deref(), *want, "{record:?}");
        }
    }

    #[test]
    fn select_txt_table() {
        let s = |v: &[&str]| v.iter().map(|r| r.to_string()).collect::<Vec<_>>();
        let cases: &[(Vec<String>, Option<&str>)] = &[
            (s(&[]), None),
            (s(&["v=STSv1; id=a;"]), Some("a")),
            (s(&["v=spf1 -all", "v=STSv1; id=a;"]), Some("a")),
            (s(&["v=STSv1; id=a;", "v=STSv1; id=b;"]), None),
            (s(&["v=STSv1; id=!;"]), None),
        ];
        for (records, want) in cases {
            assert_eq!(select_txt(records).as_deref(), *want, "{records:?}");
        }
    }

    #[test]
    fn mx_allowed_table() {
        let p = policy(Mode::Enforce, &["mail.example.com", "*.example.net"], 1);
        let cases = [
            ("mail.example.com", true),
            ("MAIL.Example.COM.", true),
            ("other.example.com", false),
            ("example.com", false),
            ("mx1.example.net", true),
            ("MX1.EXAMPLE.NET.", true),
            // The wildcard stands for exactly one label.
            ("example.net", false),
            ("a.b.example.net", false),
            (".example.net", false),
            ("mx1.example.net.evil", false),
            ("", false),
        ];
        for (host, want) in cases {
            assert_eq!(p.mx_allowed(host), want, "{host}");
        }
        assert!(p.enforced());
        assert!(!policy(Mode::Testing, &[], 1).enforced());
    }

    #[test]
    fn expiry() {
        let p = policy(Mode::Enforce, &["m"], 50);
        for (now, want) in [(100, false), (149, false), (150, true), (u64::MAX, true)] {
            assert_eq!(p.expired(now), want, "{now}");
        }
    }

    #[test]
    fn content_type_table() {
        let cases = [
            (Some("text/plain"), true),
            (Some("Text/Plain; charset=utf-8"), true),
            (Some("text/html"), false),
            (Some("text/plainx"), false),
            (None, false),
        ];
        for (value, want) in cases {
            let header = value.map(|v| header::HeaderValue::from_str(v).unwrap());
            assert_eq!(
                check_content_type("h", header.as_ref()).is_ok(),
                want,
                "{value:?}"
            );
        }
    }

    /// A CA, a leaf certificate issued by it, and a tiny HTTPS responder.
    mod fixture {
        use super::*;
        use futures_rustls::TlsAcceptor;
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use smol::io::{AsyncReadExt, AsyncWriteExt};
        use smol::net::TcpListener;
        use std::sync::atomic::{AtomicUsize, Ordering};

        pub struct TestCa {
            pub cert: CertificateDer<'static>,
            pub pem: String,
            issuer: Issuer<'static, KeyPair>,
        }

        impl TestCa {
            pub fn new() -> TestCa {
                let key = KeyPair::generate().unwrap();
                let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
                params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                let cert = params.self_signed(&key).unwrap();
                TestCa {
                    cert: cert.der().clone(),
                    pem: cert.pem(),
                    issuer: Issuer::new(params, key),
                }
            }
            pub fn roots(&self) -> Arc<rustls::RootCertStore> {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(self.cert.clone()).unwrap();
                Arc::new(roots)
            }
            /// (leaf certificate PEM, its key PEM) for `name`.
            pub fn leaf(&self, name: &str) -> (String, String) {
                let key = KeyPair::generate().unwrap();
                let params = CertificateParams::new(vec![name.to_string()]).unwrap();
                let cert = params.signed_by(&key, &self.issuer).unwrap();
                (cert.pem(), key.serialize_pem())
            }
        }

        /// What the server answers next.
        #[derive(Clone)]
        pub struct Reply {
            pub status: &'static str,
            pub content_type: &'static str,
            pub body: String,
        }

        pub fn reply(status: &'static str, content_type: &'static str, body: &str) -> Reply {
            Reply {
                status,
                content_type,
                body: body.to_string(),
            }
        }

        pub struct State {
            pub reply: Mutex<Reply>,
            pub hits: AtomicUsize,
            pub last_request: Mutex<String>,
        }

        pub struct HttpsServer {
            pub state: Arc<State>,
            _task: smol::Task<()>,
        }

        impl HttpsServer {
            pub fn set(&self, reply: Reply) {
                *self.state.reply.lock().unwrap() = reply;
            }
            pub fn hits(&self) -> usize {
                self.state.hits.load(Ordering::SeqCst)
            }
        }

        /// Serves on `ip`:443; None (with a printed note) when the port cannot be bound.
        pub fn start(ip: [u8; 4], leaf: &(String, String)) -> Option<HttpsServer> {
            let addr = SocketAddr::from((ip, HTTPS_PORT));
            let listener = match smol::block_on(TcpListener::bind(addr)) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("note: cannot bind {addr} ({e}); skipping the HTTPS test");
                    return None;
                }
            };
            let state = Arc::new(State {
                reply: Mutex::new(reply("200 OK", "text/plain", POLICY_A)),
                hits: AtomicUsize::new(0),
                last_request: Mutex::new(String::new()),
            });
            let acceptor = TlsAcceptor::from(Arc::new(server_config(leaf)));
            let task = smol::spawn(serve(listener, acceptor, state.clone()));
            Some(HttpsServer { state, _task: task })
        }

        fn server_config((cert, key): &(String, String)) -> rustls::ServerConfig {
            let chain = rustls_pemfile::certs(&mut cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key: PrivateKeyDer = rustls_pemfile::private_key(&mut key.as_bytes())
                .unwrap()
                .unwrap();
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap()
        }

        async fn serve(listener: TcpListener, acceptor: TlsAcceptor, state: Arc<State>) {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, state) = (acceptor.clone(), state.clone());
                smol::spawn(async move {
                    let _ = answer(acceptor, tcp, &state).await;
                })
                .detach();
            }
        }

        async fn answer(acceptor: TlsAcceptor, tcp: TcpStream, state: &State) -> io::Result<()> {
            let mut tls = acceptor.accept(tcp).await?;
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16384 {
                let n = tls.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&chunk[..n]);
            }
            state.hits.fetch_add(1, Ordering::SeqCst);
            *state.last_request.lock().unwrap() = String::from_utf8_lossy(&request).into();
            let r = state.reply.lock().unwrap().clone();
            let head = format!(
                "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                r.status,
                r.content_type,
                r.body.len()
            );
            tls.write_all(head.as_bytes()).await?;
            tls.write_all(r.body.as_bytes()).await?;
            tls.close().await
        }
    }

    use fixture::{TestCa, reply};

    const NOW: u64 = 1_000_000;

    /// Runs `fut` under plain smol with a deadline, as the server does.
    fn run<T>(fut: impl std::future::Future<Output = T>) -> T {
        smol::block_on(async {
            let timeout = async {
                smol::Timer::after(Duration::from_secs(60)).await;
                panic!("test deadline passed");
            };
            smol::future::or(fut, timeout).await
        })
    }

    /// dnsmasq serving `_mta-sts.example.test` with `id` (none: no record) and
    /// `mta-sts.example.test` at `ip`.
    fn dns(
        id: Option<&str>,
        ip: [u8; 4],
    ) -> Option<(crate::dns::test_server::DnsServer, Arc<Dns>)> {
        let [a, b, c, d] = ip;
        let mut args = vec![format!("--address=/mta-sts.example.test/{a}.{b}.{c}.{d}")];
        if let Some(id) = id {
            args.push(format!(
                "--txt-record=_mta-sts.example.test,v=STSv1; id={id};"
            ));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = crate::dns::test_server::start(&args)?;
        let dns = Arc::new(Dns::new(&[server.addr]).unwrap());
        Some((server, dns))
    }

    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// The RFC 8461 §5.1 life cycle against a real HTTPS server and DNS server.
    #[test]
    fn fetch_cache_refresh_fallback() {
        const IP: [u8; 4] = [127, 0, 8, 1];
        let ca = TestCa::new();
        let Some(server) = fixture::start(IP, &ca.leaf("mta-sts.example.test")) else {
            return;
        };
        let Some((_dns1, dns1)) = dns(Some("1"), IP) else {
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let roots = Some(ca.roots());
        let sts = MtaSts::new(tmp.path(), dns1, roots.clone()).unwrap();

        // First use: fetched and cached on disk.
        let a = run(sts.policy("example.test", NOW)).expect("policy A");
        assert_eq!(
            (a.id.as_str(), a.mode, a.fetched_at),
            ("1", Mode::Enforce, NOW)
        );
        assert_eq!(a.mx, ["mx1.example.test"]);
        assert_eq!(server.hits(), 1);
        let request = server.state.last_request.lock().unwrap().clone();
        assert!(
            request.starts_with("GET /.well-known/mta-sts.txt HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request
                .to_ascii_lowercase()
                .contains("host: mta-sts.example.test\r\n"),
            "{request}"
        );
        let file = tmp.path().join("mta-sts/example.test");
        assert_eq!(mode_of(&file), 0o600);
        assert_eq!(mode_of(&tmp.path().join("mta-sts")), 0o700);

        // Same id: the cache answers, the server is not asked.
        server.set(reply("200 OK", "text/plain", POLICY_B));
        assert_eq!(run(sts.policy("EXAMPLE.test.", NOW + 10)), Some(a.clone()));
        assert_eq!(server.hits(), 1);

        // New id (a new process over the same data_dir): fetched again.
        let Some((_dns2, dns2)) = dns(Some("2"), IP) else {
            return;
        };
        let sts = MtaSts::new(tmp.path(), dns2, roots.clone()).unwrap();
        let b = run(sts.policy("example.test", NOW + 20)).expect("policy B");
        assert_eq!(
            (b.id.as_str(), b.mode, b.max_age),
            ("2", Mode::Testing, 3600)
        );
        assert_eq!(server.hits(), 2);

        // Another new id, but the fetch fails: the unexpired cached policy stays in force.
        let Some((_dns3, dns3)) = dns(Some("3"), IP) else {
            return;
        };
        let sts = MtaSts::new(tmp.path(), dns3, roots.clone()).unwrap();
        server.set(reply("404 Not Found", "text/plain", "no"));
        assert_eq!(run(sts.policy("example.test", NOW + 30)), Some(b.clone()));
        assert_eq!(server.hits(), 3);
        // ... until it expires (the fetch is tried again and fails again).
        assert_eq!(run(sts.policy("example.test", NOW + 20 + 3600)), None);
        assert_eq!(server.hits(), 4);

        // The TXT record is gone: an unexpired cached policy is still used, else none.
        let Some((_dns4, dns4)) = dns(None, IP) else {
            return;
        };
        let sts = MtaSts::new(tmp.path(), dns4.clone(), roots.clone()).unwrap();
        assert_eq!(run(sts.policy("example.test", NOW + 40)), Some(b));
        let fresh = tempfile::tempdir().unwrap();
        let sts = MtaSts::new(fresh.path(), dns4, roots).unwrap();
        assert_eq!(run(sts.policy("example.test", NOW)), None);
        assert_eq!(server.hits(), 4);
    }

    /// Answers that must not produce a policy (RFC 8461 §3.3), and a few that must.
    #[test]
    fn fetch_rules() {
        const IP: [u8; 4] = [127, 0, 8, 2];
        let ca = TestCa::new();
        let Some(server) = fixture::start(IP, &ca.leaf("mta-sts.example.test")) else {
            return;
        };
        let Some((_dns, dns)) = dns(Some("1"), IP) else {
            return;
        };
        let none = "version: STSv1\nmode: none\nmax_age: 60\n";
        let big = format!("{POLICY_A}{}", "x: y\n".repeat(MAX_BODY / 5 + 1));
        let cases = [
            (reply("200 OK", "text/plain", POLICY_A), true),
            (reply("200 OK", "text/plain; charset=utf-8", POLICY_A), true),
            (reply("200 OK", "text/plain", none), true),
            (
                reply("301 Moved Permanently", "text/plain", POLICY_A),
                false,
            ),
            (reply("500 Oops", "text/plain", POLICY_A), false),
            (reply("200 OK", "text/html", POLICY_A), false),
            (reply("200 OK", "text/plain", &big), false),
            (reply("200 OK", "text/plain", "garbage"), false),
        ];
        for (r, want) in cases {
            let (status, content_type) = (r.status, r.content_type);
            server.set(r);
            let tmp = tempfile::tempdir().unwrap();
            let sts = MtaSts::new(tmp.path(), dns.clone(), Some(ca.roots())).unwrap();
            let got = run(sts.policy("example.test", NOW));
            assert_eq!(got.is_some(), want, "{status} {content_type}");
            // Mode `none` policies are cached like the others.
            assert_eq!(tmp.path().join("mta-sts/example.test").exists(), want);
        }
        // A certificate from another CA (the system's roots do not know ours) is refused.
        let tmp = tempfile::tempdir().unwrap();
        let other = TestCa::new();
        let sts = MtaSts::new(tmp.path(), dns.clone(), Some(other.roots())).unwrap();
        assert_eq!(run(sts.policy("example.test", NOW)), None);
        if let Ok(sts) = MtaSts::new(tmp.path(), dns, None) {
            assert_eq!(run(sts.policy("example.test", NOW)), None);
        }
    }

    /// A certificate for another name is refused even from a trusted CA.
    #[test]
    fn fetch_wrong_name() {
        const IP: [u8; 4] = [127, 0, 8, 3];
        let ca = TestCa::new();
        let Some(server) = fixture::start(IP, &ca.leaf("www.example.test")) else {
            return;
        };
        let Some((_dns, dns)) = dns(Some("1"), IP) else {
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let sts = MtaSts::new(tmp.path(), dns, Some(ca.roots())).unwrap();
        assert_eq!(run(sts.policy("example.test", NOW)), None);
        // The handshake failed before any request.
        assert_eq!(server.hits(), 0);
    }

    #[test]
    fn invalid_domains_have_no_policy() {
        let tmp = tempfile::tempdir().unwrap();
        let dns = Arc::new(Dns::new(&["127.0.0.1:9".parse().unwrap()]).unwrap());
        let sts = MtaSts::new(tmp.path(), dns, Some(TestCa::new().roots())).unwrap();
        for name in ["", "../x", "a/b", "1.2.3.4"] {
            assert_eq!(run(sts.policy(name, NOW)), None, "{name:?}");
        }
    }

    /// Runs `ssl_cert_file_child` in a child process with `SSL_CERT_FILE` set to a test CA: the
    /// binary's way (no `roots` parameter) of trusting a test CA end to end.
    #[test]
    fn platform_verifier_honours_ssl_cert_file() {
        if !Path::new(crate::dns::test_server::DNSMASQ).exists() {
            return;
        }
        let ca = TestCa::new();
        let tmp = tempfile::tempdir().unwrap();
        let (cert, key) = ca.leaf("mta-sts.example.test");
        fs::write(tmp.path().join("ca.pem"), &ca.pem).unwrap();
        fs::write(tmp.path().join("leaf.pem"), cert).unwrap();
        fs::write(tmp.path().join("leaf.key"), key).unwrap();
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "courier::mta_sts::tests::ssl_cert_file_child",
                "--exact",
                "--ignored",
            ])
            .args(["--nocapture", "--test-threads=1"])
            .env("SSL_CERT_FILE", tmp.path().join("ca.pem"))
            .env_remove("SSL_CERT_DIR")
            .env("TAMBO_TEST_MTA_STS_DIR", tmp.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stdout}\n{stderr}");
        assert!(stdout.contains("1 passed"), "{stdout}\n{stderr}");
        assert!(
            stderr.contains("fetched with SSL_CERT_FILE") || stderr.contains("note:"),
            "{stderr}"
        );
    }

    #[test]
    #[ignore = "run by platform_verifier_honours_ssl_cert_file in a child process"]
    fn ssl_cert_file_child() {
        const IP: [u8; 4] = [127, 0, 8, 4];
        let Some(dir) = std::env::var_os("TAMBO_TEST_MTA_STS_DIR") else {
            return;
        };
        let dir = PathBuf::from(dir);
        let leaf = (
            fs::read_to_string(dir.join("leaf.pem")).unwrap(),
            fs::read_to_string(dir.join("leaf.key")).unwrap(),
        );
        let Some(_server) = fixture::start(IP, &leaf) else {
            return;
        };
        let Some((_dns, dns)) = dns(Some("1"), IP) else {
            return;
        };
        let data = tempfile::tempdir().unwrap();
        let sts = MtaSts::new(data.path(), dns, None).unwrap();
        let got = run(sts.policy("example.test", NOW));
        assert_eq!(got.map(|p| p.id), Some("1".to_string()));
        eprintln!("fetched with SSL_CERT_FILE");
    }
}
