//! `conf/tambo.json` (SPEC §3): every key parsed, defaulted and validated.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::jsontext::{error_position, first_duplicate, json_error_text, top_level_key_lines};

/// A config error, already formatted as the one line the user sees:
/// `<file>:<line>: <problem>` (or `<file>: <problem>` when no line applies).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalDelivery {
    Maildir,
    /// argv with `%from%`, `%to%`, `%to_user%`, `%to_domain%`.
    Mda(Vec<String>),
    /// `unix:/path` or `host:port`.
    Lmtp(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyAction {
    Reject,
    Tag,
}

/// SPEC §3 `forward_from_rewrite`, §8 DMARC-safe forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromRewrite {
    /// Rewrite From: of a forwarded message only when its DMARC pass rested on SPF alone and
    /// the From: domain asks for quarantine or reject.
    Auto,
    Never,
}

/// SPEC §3 `acme`: the ACME account's contact and the directory it lives at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acme {
    pub email: String,
    /// The directory URL (`https://acme-v02.api.letsencrypt.org/directory`).
    pub directory: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundPolicy {
    pub spf_fail: PolicyAction,
    pub dmarc_reject: PolicyAction,
}

/// A CIDR network (`192.0.2.0/24`, `2001:db8::/32`, or a bare address = /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network"))?;
        let max = max_prefix(addr);
        let prefix = match prefix_text {
            None => max,
            // Digits only: `u8::from_str` would also take "+8".
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0-{max}"))?,
            Some(_) => return Err(format!("{s:?}: prefix length must be 0-{max}")),
        };
        // Host bits are allowed (`192.0.2.7/24` means `192.0.2.0/24`), as Postfix's mynetworks.
        Ok(IpNet { addr, prefix })
    }

    /// IPv4-mapped IPv6 client addresses match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(u32::from(net).into(), u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V4(net), IpAddr::V6(ip)) => ip.to_ipv4_mapped().is_some_and(|v4| {
                prefix_eq(u32::from(net).into(), u32::from(v4).into(), 32, self.prefix)
            }),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V4(ip)) => {
                let mapped = u128::from(ip.to_ipv6_mapped());
                prefix_eq(u128::from(net), mapped, 128, self.prefix)
            }
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// Whether the top `prefix` of `bits` bits of `a` and `b` are equal.
fn prefix_eq(a: u128, b: u128, bits: u32, prefix: u8) -> bool {
    let host_bits = bits - u32::from(prefix).min(bits);
    // A shift by 128 would overflow; /0 compares nothing.
    a.checked_shr(host_bits).unwrap_or(0) == b.checked_shr(host_bits).unwrap_or(0)
}

#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// Absolute path of the config folder.
    pub config_dir: PathBuf,
    pub hostname: String,
    pub smtp_listen: Vec<SocketAddr>,
    pub submission_listen: Vec<SocketAddr>,
    pub submission_tls_listen: Vec<SocketAddr>,
    pub imap_listen: Vec<SocketAddr>,
    pub imaps_listen: Vec<SocketAddr>,
    pub pop3_listen: Vec<SocketAddr>,
    pub pop3s_listen: Vec<SocketAddr>,
    pub monitoring_listen: Option<SocketAddr>,
    /// Absolute (relative values are joined to `config_dir`).
    pub data_dir: PathBuf,
    pub max_message_size_mb: u64,
    pub max_recipients: usize,
    pub suffix_separators: String,
    pub drop_characters: String,
    pub local_delivery: LocalDelivery,
    pub give_up_after: Duration,
    pub dns_servers: Vec<SocketAddr>,
    pub outbound_smtp_port: u16,
    pub inbound_policy: InboundPolicy,
    pub srs_secret: Option<String>,
    pub haproxy_incoming: bool,
    pub relay_networks: Vec<IpNet>,
    pub outbound_bind: Option<IpAddr>,
    pub arc_seal: bool,
    pub mailbox_quota_mb: u64,
    pub forward_from_rewrite: FromRewrite,
    /// DNS blocklist zones asked about each port 25 client, in order (lower case, no
    /// trailing dot).
    pub dnsbl: Vec<String>,
    /// SPEC §12: obtain and renew certificates from this ACME directory.
    pub acme: Option<Acme>,
    /// SPEC §12: ACME http-01 challenges (and a redirect to https for anything else).
    pub http_listen: Vec<SocketAddr>,
    /// SPEC §12: MTA-STS policy, autoconfiguration, autodiscover; ACME tls-alpn-01.
    pub https_listen: Vec<SocketAddr>,
    /// Concurrent connections in all, over every SMTP, IMAP and POP3 listener (not in SPEC §3;
    /// issue 5).
    pub max_connections: usize,
    /// Concurrent connections (SMTP, IMAP, POP3) per client address or IPv6 /64;
    /// `relay_networks` exempt.
    pub max_connections_per_address: usize,
}

/// Every key of SPEC §3, in the order `to_json` prints them.
pub const KEYS: &[&str] = &[
    "hostname",
    "smtp_listen",
    "submission_listen",
    "submission_tls_listen",
    "imap_listen",
    "imaps_listen",
    "pop3_listen",
    "pop3s_listen",
    "monitoring_listen",
    "data_dir",
    "max_message_size_mb",
    "max_recipients",
    "suffix_separators",
    "drop_characters",
    "local_delivery",
    "give_up_after",
    "dns_servers",
    "outbound_smtp_port",
    "inbound_policy",
    "srs_secret",
    "haproxy_incoming",
    "relay_networks",
    "outbound_bind",
    "arc_seal",
    "mailbox_quota_mb",
    "forward_from_rewrite",
    "dnsbl",
    "acme",
    "http_listen",
    "https_listen",
    "max_connections",
    "max_connections_per_address",
];

/// What `to_json` prints for a configured SRS secret; refused as a value, so that pasting
/// `print-config` output back into the file cannot silently make it the secret.
const SECRET_PLACEHOLDER: &str = "(set)";

/// Bounds that keep `max_message_size()` and the queue's arithmetic far from overflow.
const MAX_MESSAGE_SIZE_MB: u64 = 1 << 20;

impl Settings {
    /// Reads `<config_dir>/conf/tambo.json`; a missing file means all defaults.
    pub fn load(config_dir: &Path) -> Result<Settings, ConfigError> {
        let (settings, mut problems) = Settings::load_all(config_dir);
        match problems.is_empty() {
            true => Ok(settings),
            false => Err(problems.swap_remove(0)),
        }
    }

    /// [`Settings::load`] that goes on past a problem: every problem of the file, in file
    /// order, and the settings with the defaults kept for the keys in error (`util check`).
    pub fn load_all(config_dir: &Path) -> (Settings, Vec<ConfigError>) {
        let config_dir = match std::path::absolute(config_dir) {
            Ok(dir) => dir,
            Err(e) => {
                let problem = ConfigError(format!("{}: {e}", config_dir.display()));
                return (Settings::defaults(config_dir.to_path_buf()), vec![problem]);
            }
        };
        let file = config_dir.join("conf").join("tambo.json");
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                let problem = ConfigError(format!("{}: {e}", file.display()));
                return (Settings::defaults(config_dir), vec![problem]);
            }
        };
        Settings::parse_all(&text, config_dir)
    }

    /// Parses the text of `conf/tambo.json` of a config folder (which should be absolute);
    /// blank text means all defaults. Errors name `<config_dir>/conf/tambo.json`.
    pub fn parse(text: &str, config_dir: PathBuf) -> Result<Settings, ConfigError> {
        let (settings, mut problems) = Settings::parse_all(text, config_dir);
        match problems.is_empty() {
            true => Ok(settings),
            false => Err(problems.swap_remove(0)),
        }
    }

    /// [`Settings::parse`] with every problem of the text, not just the first.
    pub fn parse_all(text: &str, config_dir: PathBuf) -> (Settings, Vec<ConfigError>) {
        let file = config_dir.join("conf").join("tambo.json");
        let mut settings = Settings::defaults(config_dir);
        let problems = if text.trim().is_empty() {
            Vec::new()
        } else {
            settings.apply_text(text)
        };
        let problems = problems
            .into_iter()
            .map(|e| e.into_config_error(&file))
            .collect();
        (settings, problems)
    }

    /// All defaults of SPEC §3 for a config folder (which should be absolute).
    pub fn defaults(config_dir: PathBuf) -> Settings {
        let any = |port| vec![socket("0.0.0.0", port), socket("::", port)];
        let reject = PolicyAction::Reject;
        Settings {
            data_dir: config_dir.join("data"),
            config_dir,
            hostname: system_hostname(),
            smtp_listen: any(25),
            submission_listen: any(587),
            submission_tls_listen: any(465),
            imap_listen: Vec::new(),
            imaps_listen: Vec::new(),
            pop3_listen: Vec::new(),
            pop3s_listen: Vec::new(),
            monitoring_listen: None,
            max_message_size_mb: 50,
            max_recipients: 100,
            suffix_separators: "+".into(),
            drop_characters: ".".into(),
            local_delivery: LocalDelivery::Maildir,
            give_up_after: Duration::from_secs(20 * 3600),
            dns_servers: Vec::new(),
            outbound_smtp_port: 25,
            inbound_policy: InboundPolicy {
                spf_fail: reject,
                dmarc_reject: reject,
            },
            srs_secret: None,
            haproxy_incoming: false,
            relay_networks: Vec::new(),
            outbound_bind: None,
            arc_seal: true,
            mailbox_quota_mb: 0,
            forward_from_rewrite: FromRewrite::Auto,
            dnsbl: Vec::new(),
            acme: None,
            http_listen: Vec::new(),
            https_listen: Vec::new(),
            // As Postfix's process limit does for memory, these keep a flood from exhausting
            // file descriptors while one address cannot take the whole server.
            max_connections: 4000,
            max_connections_per_address: 50,
        }
    }

    /// The lookup normalisation of local parts (SPEC §3 `drop_characters`,
    /// `suffix_separators`).
    pub fn normalization(&self) -> crate::aliases::Normalization {
        crate::aliases::Normalization {
            drop_characters: self.drop_characters.clone(),
            suffix_separators: self.suffix_separators.clone(),
        }
    }

    /// `max_message_size_mb` in bytes.
    pub fn max_message_size(&self) -> u64 {
        self.max_message_size_mb * 1024 * 1024
    }

    /// The effective settings as JSON, defaults filled in (`util print-config`).
    /// Same keys and value formats as the file; the SRS secret is never shown.
    pub fn to_json(&self) -> serde_json::Value {
        let addrs = |v: &[SocketAddr]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        json!({
            "hostname": self.hostname,
            "smtp_listen": addrs(&self.smtp_listen),
            "submission_listen": addrs(&self.submission_listen),
            "submission_tls_listen": addrs(&self.submission_tls_listen),
            "imap_listen": addrs(&self.imap_listen),
            "imaps_listen": addrs(&self.imaps_listen),
            "pop3_listen": addrs(&self.pop3_listen),
            "pop3s_listen": addrs(&self.pop3s_listen),
            "monitoring_listen": self.monitoring_listen.map(|a| a.to_string()),
            "data_dir": self.data_dir.to_string_lossy(),
            "max_message_size_mb": self.max_message_size_mb,
            "max_recipients": self.max_recipients,
            "suffix_separators": self.suffix_separators,
            "drop_characters": self.drop_characters,
            "local_delivery": local_delivery_json(&self.local_delivery),
            "give_up_after": format_duration(self.give_up_after),
            "dns_servers": addrs(&self.dns_servers),
            "outbound_smtp_port": self.outbound_smtp_port,
            "inbound_policy": {
                "spf_fail": policy_name(self.inbound_policy.spf_fail),
                "dmarc_reject": policy_name(self.inbound_policy.dmarc_reject),
            },
            "srs_secret": self.srs_secret.as_ref().map(|_| SECRET_PLACEHOLDER),
            "haproxy_incoming": self.haproxy_incoming,
            "relay_networks": self.relay_networks.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            "outbound_bind": self.outbound_bind.map(|a| a.to_string()),
            "arc_seal": self.arc_seal,
            "mailbox_quota_mb": self.mailbox_quota_mb,
            "forward_from_rewrite": match self.forward_from_rewrite {
                FromRewrite::Auto => "auto",
                FromRewrite::Never => "never",
            },
            "dnsbl": self.dnsbl,
            "acme": self.acme.as_ref().map(|a| json!({"email": a.email, "directory": a.directory})),
            "http_listen": addrs(&self.http_listen),
            "https_listen": addrs(&self.https_listen),
            "max_connections": self.max_connections,
            "max_connections_per_address": self.max_connections_per_address,
        })
    }

    /// Applies the keys of the file text over the current values.
    /// Applies every valid key of the text; returns the problems, in file order (a syntax
    /// error stops it: nothing after it can be read).
    fn apply_text(&mut self, text: &str) -> Vec<TextError> {
        let value: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(e) => {
                let (line, column) = error_position(text, e.line(), e.column());
                let msg = json_error_text(&e);
                return vec![TextError::Syntax { line, column, msg }];
            }
        };
        let Value::Object(map) = value else {
            return vec![TextError::at(
                1,
                "expected a JSON object of settings".into(),
            )];
        };
        let lines = top_level_key_lines(text);
        let line_of = |key: &str| lines.iter().find(|(k, _)| k == key).map(|(_, l)| *l);
        let mut problems = Vec::new();
        if let Some((key, line)) = first_duplicate(&lines) {
            problems.push(TextError::at(line, format!("key {key:?} appears twice")));
        }
        for (key, v) in &map {
            let line = line_of(key);
            if !KEYS.contains(&key.as_str()) {
                problems.push(TextError::Value {
                    line,
                    msg: format!("unknown key {key:?}"),
                });
                continue;
            }
            if let Err(problem) = self.apply_key(key, v) {
                problems.push(TextError::Value {
                    line,
                    msg: format!("{key:?}: {problem}"),
                });
            }
        }
        problems
    }

    /// Sets one known key; the error is the problem with the value.
    fn apply_key(&mut self, key: &str, v: &Value) -> Result<(), String> {
        match key {
            "hostname" => self.hostname = hostname(v)?,
            "smtp_listen" => self.smtp_listen = socket_list(v)?,
            "submission_listen" => self.submission_listen = socket_list(v)?,
            "submission_tls_listen" => self.submission_tls_listen = socket_list(v)?,
            "imap_listen" => self.imap_listen = socket_list(v)?,
            "imaps_listen" => self.imaps_listen = socket_list(v)?,
            "pop3_listen" => self.pop3_listen = socket_list(v)?,
            "pop3s_listen" => self.pop3s_listen = socket_list(v)?,
            "monitoring_listen" => self.monitoring_listen = optional(v, socket_addr)?,
            "data_dir" => self.data_dir = self.config_dir.join(non_empty_string(v)?),
            "max_message_size_mb" => self.max_message_size_mb = message_size(v)?,
            "max_recipients" => self.max_recipients = count(v)?,
            "suffix_separators" => self.suffix_separators = separator_chars(v)?,
            "drop_characters" => self.drop_characters = separator_chars(v)?,
            "local_delivery" => self.local_delivery = local_delivery(v)?,
            "give_up_after" => self.give_up_after = duration(v)?,
            "dns_servers" => self.dns_servers = list(v, "\"ip\" or \"ip:port\"", dns_server)?,
            "outbound_smtp_port" => self.outbound_smtp_port = port(v)?,
            "inbound_policy" => self.inbound_policy = inbound_policy(v)?,
            "srs_secret" => self.srs_secret = optional(v, srs_secret)?,
            "haproxy_incoming" => self.haproxy_incoming = boolean(v)?,
            "relay_networks" => self.relay_networks = list(v, "CIDR", ip_net)?,
            "outbound_bind" => self.outbound_bind = optional(v, ip_addr)?,
            "arc_seal" => self.arc_seal = boolean(v)?,
            "mailbox_quota_mb" => self.mailbox_quota_mb = non_negative(v)?,
            "forward_from_rewrite" => self.forward_from_rewrite = from_rewrite(v)?,
            "dnsbl" => self.dnsbl = list(v, "zone name", hostname)?,
            "acme" => self.acme = optional(v, acme)?,
            "http_listen" => self.http_listen = socket_list(v)?,
            "https_listen" => self.https_listen = socket_list(v)?,
            "max_connections" => self.max_connections = count(v)?,
            "max_connections_per_address" => self.max_connections_per_address = count(v)?,
            // KEYS and this match list the same keys; the caller checked KEYS.
            _ => return Err("unknown key".into()),
        }
        Ok(())
    }
}

impl fmt::Debug for Settings {
    /// Through `to_json`, so a logged `{:?}` never shows the SRS secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Settings({}, {})",
            self.config_dir.display(),
            self.to_json()
        )
    }
}

/// An error found in the text, before the file name is known to it.
enum TextError {
    Syntax {
        line: usize,
        column: usize,
        msg: String,
    },
    Value {
        line: Option<usize>,
        msg: String,
    },
}

impl TextError {
    fn at(line: usize, msg: String) -> TextError {
        TextError::Value {
            line: Some(line),
            msg,
        }
    }
    fn into_config_error(self, file: &Path) -> ConfigError {
        let file = file.display();
        ConfigError(match self {
            TextError::Syntax { line, column, msg } => {
                format!("{file}:{line}:{column}: invalid JSON: {msg}")
            }
            TextError::Value {
                line: Some(line),
                msg,
            } => format!("{file}:{line}: {msg}"),
            TextError::Value { line: None, msg } => format!("{file}: {msg}"),
        })
    }
}

fn socket(ip: &str, port: u16) -> SocketAddr {
    // Literal addresses above are valid; unspecified is the fallback that cannot be reached.
    SocketAddr::new(
        ip.parse().unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        port,
    )
}

/// The system host name, lower-cased; `localhost` if it cannot be read.
fn system_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for `buf.len()` bytes; we read only up to the first NUL.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).to_lowercase();
    if rc != 0 || name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// The offending value as JSON, shortened to keep the error on one readable line.
fn got(v: &Value) -> String {
    const MAX: usize = 60;
    let text = v.to_string();
    if text.chars().count() <= MAX {
        text
    } else {
        format!("{}...", text.chars().take(MAX).collect::<String>())
    }
}

fn expected(what: &str, v: &Value) -> String {
    format!("expected {what}, got {}", got(v))
}

fn string<'a>(v: &'a Value, what: &str) -> Result<&'a str, String> {
    v.as_str().ok_or_else(|| expected(what, v))
}

fn optional<T>(v: &Value, f: fn(&Value) -> Result<T, String>) -> Result<Option<T>, String> {
    if v.is_null() {
        Ok(None)
    } else {
        f(v).map(Some)
    }
}

fn list<T>(v: &Value, what: &str, f: fn(&Value) -> Result<T, String>) -> Result<Vec<T>, String> {
    let items = v
        .as_array()
        .ok_or_else(|| expected(&format!("a list of {what} strings"), v))?;
    items.iter().map(f).collect()
}

fn boolean(v: &Value) -> Result<bool, String> {
    v.as_bool().ok_or_else(|| expected("true or false", v))
}

fn non_negative(v: &Value) -> Result<u64, String> {
    v.as_u64()
        .ok_or_else(|| expected("a non-negative integer", v))
}

fn positive(v: &Value) -> Result<u64, String> {
    v.as_u64()
        .filter(|&n| n > 0)
        .ok_or_else(|| expected("a positive integer", v))
}

fn count(v: &Value) -> Result<usize, String> {
    usize::try_from(positive(v)?).map_err(|_| expected("a smaller integer", v))
}

fn message_size(v: &Value) -> Result<u64, String> {
    let mb = positive(v)?;
    if mb > MAX_MESSAGE_SIZE_MB {
        return Err(expected(&format!("at most {MAX_MESSAGE_SIZE_MB}"), v));
    }
    Ok(mb)
}

fn port(v: &Value) -> Result<u16, String> {
    v.as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| expected("a port number (1-65535)", v))
}

fn non_empty_string(v: &Value) -> Result<String, String> {
    let s = string(v, "a non-empty string")?;
    if s.is_empty() {
        return Err(expected("a non-empty string", v));
    }
    Ok(s.to_string())
}

/// `suffix_separators` / `drop_characters`: any characters but `@` and whitespace,
/// which would change what an address means rather than normalise it.
fn separator_chars(v: &Value) -> Result<String, String> {
    let what = "a string of characters (no \"@\" or spaces)";
    let s = string(v, what)?;
    if s.chars()
        .any(|c| c == '@' || c.is_whitespace() || c.is_control())
    {
        return Err(expected(what, v));
    }
    Ok(s.to_string())
}

fn hostname(v: &Value) -> Result<String, String> {
    let what = "a host name (letters, digits, \"-\" and \".\")";
    let s = string(v, what)?;
    if !crate::addr::is_host_name(s) {
        return Err(expected(what, v));
    }
    Ok(s.to_ascii_lowercase())
}

fn from_rewrite(v: &Value) -> Result<FromRewrite, String> {
    match v.as_str() {
        Some("auto") => Ok(FromRewrite::Auto),
        Some("never") => Ok(FromRewrite::Never),
        _ => Err(expected("\"auto\" or \"never\"", v)),
    }
}

fn socket_addr(v: &Value) -> Result<SocketAddr, String> {
    let what = "\"ip:port\" (IPv6 as \"[::1]:25\")";
    string(v, what)?.parse().map_err(|_| expected(what, v))
}

fn socket_list(v: &Value) -> Result<Vec<SocketAddr>, String> {
    list(v, "\"ip:port\"", socket_addr)
}

fn dns_server(v: &Value) -> Result<SocketAddr, String> {
    const DNS_PORT: u16 = 53;
    let what = "\"ip\" or \"ip:port\"";
    let s = string(v, what)?;
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DNS_PORT));
    }
    s.parse().map_err(|_| expected(what, v))
}

fn ip_addr(v: &Value) -> Result<IpAddr, String> {
    let what = "an IP address";
    string(v, what)?.parse().map_err(|_| expected(what, v))
}

fn ip_net(v: &Value) -> Result<IpNet, String> {
    IpNet::parse(string(v, "a CIDR network such as \"192.0.2.0/24\"")?)
}

fn srs_secret(v: &Value) -> Result<String, String> {
    let s = non_empty_string(v)?;
    if s == SECRET_PLACEHOLDER {
        return Err(format!(
            "{SECRET_PLACEHOLDER:?} is what print-config shows; put the real secret or null"
        ));
    }
    Ok(s)
}

fn duration(v: &Value) -> Result<Duration, String> {
    let what = "a duration such as \"90s\", \"30m\", \"20h\" or \"5d\"";
    string(v, what)?
        .parse::<DurationText>()
        .map(|d| d.0)
        .map_err(|()| expected(what, v))
}

/// `<integer><s|m|h|d>`, greater than zero.
struct DurationText(Duration);

impl std::str::FromStr for DurationText {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let unit_at = s.len().checked_sub(1).ok_or(())?;
        let (digits, unit) = s.split_at_checked(unit_at).ok_or(())?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        let scale = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            _ => return Err(()),
        };
        let n: u64 = digits.parse().map_err(|_| ())?;
        let secs = n.checked_mul(scale).filter(|&s| s > 0).ok_or(())?;
        Ok(DurationText(Duration::from_secs(secs)))
    }
}

/// The largest unit that divides exactly, so `to_json` prints "20h" and not "72000s".
fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = [(86400, "d"), (3600, "h"), (60, "m")]
        .into_iter()
        .find(|(scale, _)| secs > 0 && secs.is_multiple_of(*scale))
        .map_or((secs, "s"), |(scale, unit)| (secs / scale, unit));
    format!("{n}{unit}")
}

fn local_delivery(v: &Value) -> Result<LocalDelivery, String> {
    let what = "\"maildir\", {\"mda\": [argv...]} or {\"lmtp\": \"unix:/path\" or \"host:port\"}";
    match v {
        Value::String(s) if s == "maildir" => Ok(LocalDelivery::Maildir),
        Value::Object(map) if map.len() == 1 => match map.iter().next() {
            Some((k, argv)) if k == "mda" => mda_argv(argv).map(LocalDelivery::Mda),
            Some((k, target)) if k == "lmtp" => lmtp_target(target).map(LocalDelivery::Lmtp),
            _ => Err(expected(what, v)),
        },
        _ => Err(expected(what, v)),
    }
}

fn mda_argv(v: &Value) -> Result<Vec<String>, String> {
    let what = "\"mda\": a non-empty list of strings, the command first";
    let argv: Vec<String> = v
        .as_array()
        .and_then(|items| items.iter().map(|a| a.as_str().map(String::from)).collect())
        .ok_or_else(|| expected(what, v))?;
    match argv.first() {
        Some(cmd) if !cmd.is_empty() => Ok(argv),
        _ => Err(expected(what, v)),
    }
}

fn lmtp_target(v: &Value) -> Result<String, String> {
    let what = "\"lmtp\": \"unix:/absolute/path\" or \"host:port\"";
    let s = string(v, what)?;
    let ok = match s.strip_prefix("unix:") {
        Some(path) => path.starts_with('/'),
        None => is_host_port(s),
    };
    if !ok {
        return Err(expected(what, v));
    }
    Ok(s.to_string())
}

/// `host:port` with a host name, an IPv4 address or a bracketed IPv6 address.
fn is_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => crate::addr::is_host_name(host),
    };
    port_ok && host_ok
}

fn local_delivery_json(d: &LocalDelivery) -> Value {
    match d {
        LocalDelivery::Maildir => json!("maildir"),
        LocalDelivery::Mda(argv) => json!({ "mda": argv }),
        LocalDelivery::Lmtp(target) => json!({ "lmtp": target }),
    }
}

fn inbound_policy(v: &Value) -> Result<InboundPolicy, String> {
    let map: &Map<String, Value> = v
        .as_object()
        .ok_or_else(|| expected("an object with \"spf_fail\" and \"dmarc_reject\"", v))?;
    let reject = PolicyAction::Reject;
    let mut policy = InboundPolicy {
        spf_fail: reject,
        dmarc_reject: reject,
    };
    for (key, action) in map {
        let slot = match key.as_str() {
            "spf_fail" => &mut policy.spf_fail,
            "dmarc_reject" => &mut policy.dmarc_reject,
            _ => return Err(format!("unknown key {key:?}")),
        };
        *slot = policy_action(action).map_err(|e| format!("{key:?}: {e}"))?;
    }
    Ok(policy)
}

/// SPEC §3 `acme`: `{"email": "...", "directory": "<ACME directory URL>"}`, both required.
fn acme(v: &Value) -> Result<Acme, String> {
    let what = "an object with \"email\" and \"directory\"";
    let map: &Map<String, Value> = v.as_object().ok_or_else(|| expected(what, v))?;
    let (mut email, mut directory) = (None, None);
    for (key, value) in map {
        match key.as_str() {
            "email" => email = Some(acme_email(value).map_err(|e| format!("{key:?}: {e}"))?),
            "directory" => {
                directory = Some(acme_directory(value).map_err(|e| format!("{key:?}: {e}"))?)
            }
            _ => return Err(format!("unknown key {key:?}")),
        }
    }
    match (email, directory) {
        (Some(email), Some(directory)) => Ok(Acme { email, directory }),
        (None, _) => Err("\"email\" is missing".into()),
        (_, None) => Err("\"directory\" is missing".into()),
    }
}

fn acme_email(v: &Value) -> Result<String, String> {
    let what = "an email address";
    let s = string(v, what)?;
    // RFC 8555 §7.3: the contact becomes a mailto: URL; anything that could break it out is
    // refused rather than escaped.
    let valid = s.contains('@')
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == '?');
    if !valid {
        return Err(expected(what, v));
    }
    Ok(s.to_string())
}

fn acme_directory(v: &Value) -> Result<String, String> {
    let what = "an https:// URL";
    let s = string(v, what)?;
    // RFC 8555 §6.1: ACME runs over HTTPS only.
    let valid = s.starts_with("https://")
        && s.len() > "https://".len()
        && !s.chars().any(|c| c.is_whitespace() || c.is_control());
    if !valid {
        return Err(expected(what, v));
    }
    Ok(s.to_string())
}

fn policy_action(v: &Value) -> Result<PolicyAction, String> {
    match v.as_str() {
        Some("reject") => Ok(PolicyAction::Reject),
        Some("tag") => Ok(PolicyAction::Tag),
        _ => Err(expected("\"reject\" or \"tag\"", v)),
    }
}

fn policy_name(a: PolicyAction) -> &'static str {
    match a {
        PolicyAction::Reject => "reject",
        PolicyAction::Tag => "tag",
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod config_md_tests;
