//! `chasquid.conf` (chasquid's `internal/config/config.proto`, protobuf text) to the keys of
//! `conf/tambo.json` (SPEC §3), with a note for every key: how it was mapped, or why not.

use super::report::Report;
use super::textproto::{self, Field, ParseError};
use crate::aliases::Normalization;
use serde_json::{Map, Value, json};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What `chasquid.conf` became.
#[derive(Debug)]
pub struct Converted {
    /// The `conf/tambo.json` object, keys in SPEC §3 order.
    pub json: Map<String, Value>,
    /// The local-part normalisation in effect (to store user names normalised, SPEC §5).
    pub norm: Normalization,
}

/// chasquid's defaults (`internal/config/config.go`), where they matter to the conversion.
const CHASQUID_MDA_BIN: &str = "maildrop";
const CHASQUID_MDA_ARGS: [&str; 4] = ["-f", "%from%", "-d", "%to_user%"];
/// tambo's bound on `max_message_size_mb`.
const MAX_MESSAGE_SIZE_MB: i64 = 1 << 20;

/// The fields of `config.proto`, typed; `None` / empty when the file does not set them.
#[derive(Debug, Default)]
struct ChasquidConf {
    hostname: Option<String>,
    max_data_size_mb: Option<i64>,
    smtp_address: Vec<String>,
    submission_address: Vec<String>,
    submission_over_tls_address: Vec<String>,
    monitoring_address: Option<String>,
    mail_delivery_agent_bin: Option<String>,
    mail_delivery_agent_args: Vec<String>,
    data_dir: Option<String>,
    suffix_separators: Option<String>,
    drop_characters: Option<String>,
    mail_log_path: Option<String>,
    dovecot_auth: Option<bool>,
    dovecot_userdb_path: Option<String>,
    dovecot_client_path: Option<String>,
    haproxy_incoming: Option<bool>,
    max_queue_items: Option<i64>,
    give_up_send_after: Option<String>,
    /// Field names this importer does not know, with their lines.
    unknown: Vec<(String, usize)>,
}

/// Parses the file text and maps it; a syntax or type error is `line: problem`.
pub fn convert(text: &[u8], report: &mut Report) -> Result<Converted, ParseError> {
    let conf = ChasquidConf::parse(&textproto::parse(text)?)?;
    Ok(conf.to_tambo(report))
}

impl ChasquidConf {
    fn parse(fields: &[Field]) -> Result<ChasquidConf, ParseError> {
        let mut c = ChasquidConf::default();
        for f in fields {
            match f.name.as_str() {
                "hostname" => set_once(&mut c.hostname, f, f.string()?)?,
                "max_data_size_mb" => set_once(&mut c.max_data_size_mb, f, f.int()?)?,
                "smtp_address" => c.smtp_address.push(f.string()?),
                "submission_address" => c.submission_address.push(f.string()?),
                "submission_over_tls_address" => c.submission_over_tls_address.push(f.string()?),
                "monitoring_address" => set_once(&mut c.monitoring_address, f, f.string()?)?,
                "mail_delivery_agent_bin" => {
                    set_once(&mut c.mail_delivery_agent_bin, f, f.string()?)?;
                }
                "mail_delivery_agent_args" => c.mail_delivery_agent_args.push(f.string()?),
                "data_dir" => set_once(&mut c.data_dir, f, f.string()?)?,
                "suffix_separators" => set_once(&mut c.suffix_separators, f, f.string()?)?,
                "drop_characters" => set_once(&mut c.drop_characters, f, f.string()?)?,
                "mail_log_path" => set_once(&mut c.mail_log_path, f, f.string()?)?,
                "dovecot_auth" => set_once(&mut c.dovecot_auth, f, f.bool()?)?,
                "dovecot_userdb_path" => set_once(&mut c.dovecot_userdb_path, f, f.string()?)?,
                "dovecot_client_path" => set_once(&mut c.dovecot_client_path, f, f.string()?)?,
                "haproxy_incoming" => set_once(&mut c.haproxy_incoming, f, f.bool()?)?,
                "max_queue_items" => set_once(&mut c.max_queue_items, f, f.int()?)?,
                "give_up_send_after" => set_once(&mut c.give_up_send_after, f, f.string()?)?,
                _ => c.unknown.push((f.name.clone(), f.line)),
            }
        }
        Ok(c)
    }

    /// The tambo.json keys, in SPEC §3 order, and a note per chasquid key.
    fn to_tambo(&self, report: &mut Report) -> Converted {
        let mut json = Map::new();
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(v) = value {
                json.insert(key.to_string(), v);
            }
        };
        put("hostname", self.hostname(report));
        put(
            "smtp_listen",
            listen("smtp_address", "smtp_listen", &self.smtp_address, report),
        );
        let sub = &self.submission_address;
        put(
            "submission_listen",
            listen("submission_address", "submission_listen", sub, report),
        );
        let tls = &self.submission_over_tls_address;
        let tls_key = "submission_over_tls_address";
        put(
            "submission_tls_listen",
            listen(tls_key, "submission_tls_listen", tls, report),
        );
        put("monitoring_listen", self.monitoring(report));
        put("max_message_size_mb", self.max_size(report));
        let suffix = chars_key(
            "suffix_separators",
            self.suffix_separators.as_deref(),
            report,
        );
        let drop = chars_key("drop_characters", self.drop_characters.as_deref(), report);
        put("suffix_separators", suffix.clone().map(Value::String));
        put("drop_characters", drop.clone().map(Value::String));
        put("local_delivery", self.local_delivery(report));
        put("give_up_after", self.give_up(report));
        put("haproxy_incoming", self.haproxy(report));
        self.note_unsupported(report);
        Converted {
            json,
            norm: Normalization {
                // chasquid's defaults are tambo's: "+" and ".".
                suffix_separators: suffix.unwrap_or_else(|| "+".into()),
                drop_characters: drop.unwrap_or_else(|| ".".into()),
            },
        }
    }

    fn hostname(&self, report: &mut Report) -> Option<Value> {
        let name = self.hostname.as_deref().filter(|h| !h.is_empty())?;
        if !crate::addr::is_host_name(name) {
            let why =
                format!("{name:?} is not a host name tambo accepts (letters, digits, '-', '.')");
            report.not_converted(what("hostname"), why);
            return None;
        }
        let name = name.to_ascii_lowercase();
        report.converted(what("hostname"), format!("-> \"hostname\": {name:?}"));
        Some(json!(name))
    }

    fn monitoring(&self, report: &mut Report) -> Option<Value> {
        let addr = self
            .monitoring_address
            .as_deref()
            .filter(|a| !a.is_empty())?;
        match listen_addr(addr) {
            Ok(addrs) => {
                // One listener: for ":port" chasquid listens everywhere; IPv4 "everywhere" it is.
                let first = addrs.first()?.to_string();
                let detail = format!("{addr:?} -> \"monitoring_listen\": {first:?}");
                report.converted(what("monitoring_address"), detail);
                Some(json!(first))
            }
            Err(why) => {
                report.not_converted(what("monitoring_address"), format!("{addr:?}: {why}"));
                None
            }
        }
    }

    fn max_size(&self, report: &mut Report) -> Option<Value> {
        let mb = self.max_data_size_mb?;
        if !(1..=MAX_MESSAGE_SIZE_MB).contains(&mb) {
            let why = format!("{mb} is not between 1 and {MAX_MESSAGE_SIZE_MB}; tambo keeps 50");
            report.not_converted(what("max_data_size_mb"), why);
            return None;
        }
        report.converted(
            what("max_data_size_mb"),
            format!("-> \"max_message_size_mb\": {mb}"),
        );
        Some(json!(mb))
    }

    fn local_delivery(&self, report: &mut Report) -> Option<Value> {
        let bin = self
            .mail_delivery_agent_bin
            .as_deref()
            .filter(|b| !b.is_empty());
        let args = &self.mail_delivery_agent_args;
        if bin.is_none() && args.is_empty() {
            let why = "not set (chasquid's default: maildrop -f %from% -d %to_user%); tambo \
                       delivers into its built-in Maildir under data_dir/mail/ instead; set \
                       \"local_delivery\": {\"mda\": [\"maildrop\", \"-f\", \"%from%\", \"-d\", \
                       \"%to_user%\"]} to keep maildrop";
            report.not_converted(what("mail_delivery_agent_bin"), why);
            return None;
        }
        let bin = bin.unwrap_or(CHASQUID_MDA_BIN).to_string();
        let args: Vec<String> = if args.is_empty() {
            CHASQUID_MDA_ARGS.iter().map(|a| a.to_string()).collect()
        } else {
            args.clone()
        };
        let value = match lmtp_target(&bin, &args) {
            Some(target) => json!({ "lmtp": target }),
            None => json!({ "mda": std::iter::once(bin).chain(args).collect::<Vec<_>>() }),
        };
        let detail = format!("-> \"local_delivery\": {value}");
        report.converted(what("mail_delivery_agent_bin/args"), detail);
        Some(value)
    }

    fn give_up(&self, report: &mut Report) -> Option<Value> {
        let text = self
            .give_up_send_after
            .as_deref()
            .filter(|t| !t.is_empty())?;
        match go_duration_secs(text) {
            Some(secs) if secs > 0 => {
                let d = format_duration(secs);
                report.converted(
                    what("give_up_send_after"),
                    format!("{text:?} -> \"give_up_after\": {d:?}"),
                );
                Some(json!(d))
            }
            _ => {
                let why = format!("{text:?} is not a duration of at least one second");
                report.not_converted(what("give_up_send_after"), why);
                None
            }
        }
    }

    fn haproxy(&self, report: &mut Report) -> Option<Value> {
        let on = self.haproxy_incoming?;
        report.converted(
            what("haproxy_incoming"),
            format!("-> \"haproxy_incoming\": {on}"),
        );
        Some(json!(on))
    }

    /// Keys with no tambo equivalent: each gets its reason.
    fn note_unsupported(&self, report: &mut Report) {
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        if set(&self.data_dir) {
            report.not_converted(
                what("data_dir"),
                "tambo keeps its own runtime state under its data_dir (default data/); \
                 chasquid's queue and domaininfo are not converted: let chasquid's queue \
                 drain before switching",
            );
        }
        if set(&self.mail_log_path) {
            report.not_converted(
                what("mail_log_path"),
                "tambo writes its mail log lines (target maillog) to its own log on \
                 stderr (the journal under systemd), not to a file",
            );
        }
        if self.dovecot_auth == Some(true) {
            report.not_converted(
                what("dovecot_auth"),
                "tambo has no Dovecot authentication fallback: users who logged in \
                 through Dovecot need a password in domains/<domain>/users (util user-add)",
            );
        }
        for (key, v) in [
            ("dovecot_userdb_path", &self.dovecot_userdb_path),
            ("dovecot_client_path", &self.dovecot_client_path),
        ] {
            if set(v) {
                report.not_converted(what(key), "tambo has no Dovecot authentication");
            }
        }
        if let Some(n) = self.max_queue_items {
            report.not_converted(
                what("max_queue_items"),
                format!("{n}: tambo's queue has no limit on the number of messages"),
            );
        }
        for (key, line) in &self.unknown {
            let why = format!("line {line}: not a chasquid.conf key this importer knows");
            report.not_converted(what(key), why);
        }
    }
}

fn what(key: &str) -> String {
    format!("chasquid.conf: {key}")
}

/// Go's prototext refuses a singular field set twice, and so does chasquid.
fn set_once<T>(slot: &mut Option<T>, f: &Field, value: T) -> Result<(), ParseError> {
    if slot.is_some() {
        return Err(ParseError {
            line: f.line,
            msg: format!("{:?} appears twice (it is not a repeated field)", f.name),
        });
    }
    *slot = Some(value);
    Ok(())
}

/// A repeated `*_address` key to a tambo listener list; `None` keeps tambo's default.
fn listen(key: &str, tambo_key: &str, addrs: &[String], report: &mut Report) -> Option<Value> {
    let mut out: Vec<String> = Vec::new();
    for addr in addrs {
        if addr == "systemd" {
            let why = "\"systemd\" is not an address tambo.json can hold; under socket \
                       activation tambo takes the sockets systemd passes (LISTEN_FDS)";
            report.not_converted(what(key), why);
            continue;
        }
        match listen_addr(addr) {
            Ok(list) => {
                let list: Vec<String> = list.iter().map(SocketAddr::to_string).collect();
                report.converted(what(key), format!("{addr:?} -> {tambo_key:?}: {list:?}"));
                out.extend(list);
            }
            Err(why) => report.not_converted(what(key), format!("{addr:?}: {why}")),
        }
    }
    (!out.is_empty()).then(|| json!(out))
}

/// A Go `net.Listen` address: `:25` (every address), `1.2.3.4:25`, `[::1]:25`, `localhost:25`.
fn listen_addr(addr: &str) -> Result<Vec<SocketAddr>, String> {
    let (host, port) = addr.rsplit_once(':').ok_or("expected host:port or :port")?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|&p| p > 0)
        .ok_or("the port must be a number from 1 to 65535")?;
    let ips: Vec<IpAddr> = match host {
        "" => vec![Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into()],
        "localhost" => vec![Ipv4Addr::LOCALHOST.into()],
        h => {
            let bare = h
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(h);
            vec![
                bare.parse::<IpAddr>()
                    .map_err(|_| "tambo listens on IP addresses, not host names")?,
            ]
        }
    };
    Ok(ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

/// tambo's rule for `suffix_separators` / `drop_characters`: no `@`, whitespace or controls.
fn chars_key(key: &str, value: Option<&str>, report: &mut Report) -> Option<String> {
    let v = value?;
    if v.chars()
        .any(|c| c == '@' || c.is_whitespace() || c.is_control())
    {
        report.not_converted(
            what(key),
            format!("{v:?}: '@', spaces and controls are not allowed"),
        );
        return None;
    }
    report.converted(what(key), format!("-> {key:?}: {v:?}"));
    Some(v.to_string())
}

/// chasquid's `mda-lmtp --addr X [--addr_network N] -f %from% -d %to%` is tambo's built-in
/// LMTP delivery; any other use of it (or another flag) stays an MDA command.
fn lmtp_target(bin: &str, args: &[String]) -> Option<String> {
    if bin.rsplit('/').next() != Some("mda-lmtp") {
        return None;
    }
    let (mut addr, mut network, mut from, mut to) = (None, None, None, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let flag = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, v.to_string()),
            None => (flag, it.next()?.clone()),
        };
        let slot = match name {
            "addr" => &mut addr,
            "addr_network" => &mut network,
            "f" => &mut from,
            "d" => &mut to,
            _ => return None,
        };
        *slot = Some(value);
    }
    if from.as_deref() != Some("%from%") || to.as_deref() != Some("%to%") {
        return None;
    }
    let addr = addr?;
    let unix = match network.as_deref() {
        Some("unix") => true,
        Some("tcp") => false,
        Some(_) => return None,
        None => addr.starts_with('/'),
    };
    if unix {
        addr.starts_with('/').then(|| format!("unix:{addr}"))
    } else {
        addr.parse::<SocketAddr>().ok().map(|a| a.to_string())
    }
}

/// Go's `time.ParseDuration`, in whole seconds (rounded down); `None` when malformed or
/// negative.
fn go_duration_secs(s: &str) -> Option<u64> {
    if s == "0" {
        return Some(0);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    // Go durations are at most ~292 years: far inside u64 seconds.
    (total.is_finite() && total < 1e12).then_some(total as u64)
}

/// tambo's duration text: the largest of d/h/m/s that divides exactly.
fn format_duration(secs: u64) -> String {
    let (n, unit) = [(86400, "d"), (3600, "h"), (60, "m")]
        .into_iter()
        .find(|(scale, _)| secs.is_multiple_of(*scale))
        .map_or((secs, "s"), |(scale, unit)| (secs / scale, unit));
    format!("{n}{unit}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::import_chasquid::report::Outcome;

    fn run(text: &str) -> (Converted, Report) {
        let mut report = Report::default();
        let c = convert(text.as_bytes(), &mut report).unwrap();
        (c, report)
    }

    fn notes(report: &Report, outcome: Outcome) -> Vec<String> {
        report
            .notes
            .iter()
            .filter(|n| n.outcome == outcome)
            .map(|n| n.to_string())
            .collect()
    }

    #[test]
    fn full_config_maps_every_key() {
        let text = r#"
# a comment
hostname: "MX.Example.org"
max_data_size_mb: 30
smtp_address: ":25"
smtp_address: "systemd"
submission_address: "127.0.0.1:587"
submission_over_tls_address: "[::1]:465"
monitoring_address: "127.0.0.1:1099"
mail_delivery_agent_bin: "/usr/bin/procmail"
mail_delivery_agent_args: "-d"
mail_delivery_agent_args: "%to_user%"
data_dir: "/var/lib/chasquid"
suffix_separators: "+-"
drop_characters: "._"
mail_log_path: "<syslog>"
dovecot_auth: true
dovecot_userdb_path: "/run/dovecot/auth-userdb"
haproxy_incoming: true
max_queue_items: 300
give_up_send_after: "1h30m"
new_fancy_key: 3
"#;
        let (c, report) = run(text);
        let want = json!({
            "hostname": "mx.example.org",
            "smtp_listen": ["0.0.0.0:25", "[::]:25"],
            "submission_listen": ["127.0.0.1:587"],
            "submission_tls_listen": ["[::1]:465"],
            "monitoring_listen": "127.0.0.1:1099",
            "max_message_size_mb": 30,
            "suffix_separators": "+-",
            "drop_characters": "._",
            "local_delivery": {"mda": ["/usr/bin/procmail", "-d", "%to_user%"]},
            "give_up_after": "90m",
            "haproxy_incoming": true,
        });
        assert_eq!(Value::Object(c.json.clone()), want);
        // SPEC §3 key order, so the file reads like print-config.
        let keys: Vec<&String> = c.json.keys().collect();
        let spec: Vec<&&str> = crate::config::settings::KEYS
            .iter()
            .filter(|k| c.json.contains_key(**k))
            .collect();
        assert_eq!(keys.len(), spec.len());
        assert!(
            keys.iter().zip(&spec).all(|(a, b)| a.as_str() == **b),
            "{keys:?}"
        );
        assert_eq!(c.norm.suffix_separators, "+-");
        assert_eq!(c.norm.drop_characters, "._");
        let not = notes(&report, Outcome::NotConverted).join("\n");
        for key in [
            "smtp_address: \"systemd\"",
            "data_dir:",
            "mail_log_path:",
            "dovecot_auth:",
            "dovecot_userdb_path:",
            "max_queue_items: 300",
            "new_fancy_key: line 22",
        ] {
            assert!(not.contains(key), "{key} missing from:\n{not}");
        }
        assert_eq!(notes(&report, Outcome::NotConverted).len(), 7, "{not}");
        assert_eq!(notes(&report, Outcome::Converted).len(), 11);
    }

    #[test]
    fn empty_config_keeps_defaults_and_explains_maildrop() {
        let (c, report) = run("# nothing\n");
        assert!(c.json.is_empty());
        assert_eq!(c.norm.suffix_separators, "+");
        assert_eq!(c.norm.drop_characters, ".");
        let not = notes(&report, Outcome::NotConverted);
        assert_eq!(not.len(), 1);
        assert!(
            not[0].contains("mail_delivery_agent_bin: not set"),
            "{not:?}"
        );
    }

    #[test]
    fn mda_table() {
        let cases: &[(&str, Value)] = &[
            (
                "mail_delivery_agent_bin: \"maildrop\"",
                json!({"mda": ["maildrop", "-f", "%from%", "-d", "%to_user%"]}),
            ),
            (
                "mail_delivery_agent_args: \"-d\" mail_delivery_agent_args: \"%to%\"",
                json!({"mda": ["maildrop", "-d", "%to%"]}),
            ),
            (
                "mail_delivery_agent_bin: \"/usr/bin/mda-lmtp\"\nmail_delivery_agent_args: [\"--addr\", \"/run/dovecot/lmtp\", \"-f\", \"%from%\", \"-d\", \"%to%\"]",
                json!({"lmtp": "unix:/run/dovecot/lmtp"}),
            ),
            (
                "mail_delivery_agent_bin: \"mda-lmtp\"\nmail_delivery_agent_args: [\"-addr=127.0.0.1:24\", \"-addr_network=tcp\", \"-f=%from%\", \"-d\", \"%to%\"]",
                json!({"lmtp": "127.0.0.1:24"}),
            ),
            (
                "mail_delivery_agent_bin: \"mda-lmtp\"\nmail_delivery_agent_args: [\"--addr\", \"/run/lmtp\", \"--to_puny\", \"-f\", \"%from%\", \"-d\", \"%to%\"]",
                json!({"mda": ["mda-lmtp", "--addr", "/run/lmtp", "--to_puny", "-f", "%from%", "-d", "%to%"]}),
            ),
        ];
        for (text, want) in cases {
            let (c, _) = run(text);
            assert_eq!(c.json.get("local_delivery"), Some(want), "{text}");
        }
    }

    #[test]
    fn bad_values_are_reported_not_written() {
        let cases: &[(&str, &str)] = &[
            (
                "hostname: \"mx_1.example\"",
                "hostname: \"mx_1.example\" is not a host name",
            ),
            ("smtp_address: \"mail.example.org:25\"", "not host names"),
            ("smtp_address: \":smtp\"", "the port must be a number"),
            ("smtp_address: \"25\"", "expected host:port"),
            ("max_data_size_mb: 0", "max_data_size_mb: 0 is not between"),
            ("give_up_send_after: \"soon\"", "\"soon\" is not a duration"),
            (
                "give_up_send_after: \"500ms\"",
                "is not a duration of at least one second",
            ),
            ("drop_characters: \"@\"", "'@', spaces"),
            (
                "monitoring_address: \"nowhere\"",
                "monitoring_address: \"nowhere\"",
            ),
        ];
        for (text, want) in cases {
            let (c, report) = run(text);
            let not = notes(&report, Outcome::NotConverted).join("\n");
            assert!(not.contains(want), "{text}: {not}");
            let written: Vec<&String> = c.json.keys().collect();
            assert!(written.is_empty(), "{text}: {written:?}");
        }
    }

    #[test]
    fn parse_errors_name_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "hostname: \"a\"\nhostname: \"b\"",
                2,
                "\"hostname\" appears twice",
            ),
            ("\nmax_data_size_mb: \"50\"", 2, "expected an integer"),
            ("dovecot_auth: maybe", 1, "expected true or false"),
            ("hostname: \"unterminated", 1, "unterminated string"),
            ("smtp_address { }", 1, "expected a string"),
        ];
        for (text, line, msg) in cases {
            let err = convert(text.as_bytes(), &mut Report::default()).unwrap_err();
            assert_eq!(err.line, *line, "{text}: {err}");
            assert!(err.msg.contains(msg), "{text}: {err}");
        }
    }

    #[test]
    fn go_durations_table() {
        let cases: &[(&str, Option<u64>)] = &[
            ("20h", Some(72000)),
            ("1h30m", Some(5400)),
            ("1.5h", Some(5400)),
            ("90s", Some(90)),
            ("2h45m30.5s", Some(9930)),
            ("300ms", Some(0)),
            ("0", Some(0)),
            ("", None),
            ("h", None),
            ("5", None),
            ("-1h", None),
            ("5d", None),
        ];
        for (text, want) in cases {
            assert_eq!(go_duration_secs(text), *want, "{text}");
        }
        for (secs, want) in [(72000, "20h"), (5400, "90m"), (90, "90s"), (172800, "2d")] {
            assert_eq!(format_duration(secs), want);
        }
    }
}
