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
pub fn select_txt(records: &[String]) -> Option<String> {
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
    /// The DNS error names the host already.
    #[error("{source}")]
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

/// Fetches policies over verified HTTPS (RFC 8461 §3.3); no cache (see [`MtaSts`]).
pub struct PolicyFetcher {
    dns: Arc<Dns>,
    tls: Arc<ClientConfig>,
}

pub struct MtaSts {
    dir: PathBuf,
    /// Also the resolver of the `_mta-sts` TXT lookups.
    fetcher: PolicyFetcher,
    /// Policies read or fetched so far, by ACE domain; filled lazily from the files.
    /// Per domain: its cached policy, or `None` once the disk was found to have none.
    cache: Mutex<HashMap<String, Option<Policy>>>,
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
            fetcher: PolicyFetcher::new(dns, roots).map_err(io::Error::other)?,
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
        match self.fetcher.fetch(&key, &id, now_secs).await {
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
        match self.fetcher.dns.txt(&format!("_mta-sts.{key}")).await {
            Ok(records) => select_txt(&records),
            Err(e) => {
                if !e.is_permanent() {
                    log::info!("mta-sts: {key}: TXT lookup: {e}");
                }
                None
            }
        }
    }

    /// The cached policy of `key`; the disk is read once per domain per process, "none on
    /// disk" included (most domains have no policy, and this runs on every delivery). Only
    /// [`store`](Self::store) writes the folder, and it updates the memory copy too.
    fn cached(&self, key: &str) -> Option<Policy> {
        let mut cache = self.lock();
        if let Some(known) = cache.get(key) {
            return known.clone();
        }
        let policy = self.read(key);
        cache.insert(key.to_string(), policy.clone());
        policy
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
        self.lock().insert(key.to_string(), Some(policy.clone()));
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

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Option<Policy>>> {
        // A panic while holding the lock leaves the map consistent (single inserts).
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PolicyFetcher {
    /// `roots` None: the system's trust store (rustls-platform-verifier); Some: exactly those
    /// roots (tests).
    pub fn new(
        dns: Arc<Dns>,
        roots: Option<Arc<rustls::RootCertStore>>,
    ) -> Result<PolicyFetcher, rustls::Error> {
        Ok(PolicyFetcher {
            dns,
            tls: Arc::new(client_config(roots)?),
        })
    }

    /// Fetches the policy of `key` (the domain in ASCII, A-labels) over HTTPS (RFC 8461
    /// §3.3), under one deadline; `id` is the one of its `_mta-sts` TXT record.
    pub async fn fetch(&self, key: &str, id: &str, now_secs: u64) -> Result<Policy, FetchError> {
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
pub(crate) mod tests;
