//! Process-wide counters and gauges, cheap to bump from any task (atomics), rendered in the
//! Prometheus text exposition format (version 0.0.4).
//!
//! Every metric has a fixed set of label values known at compile time, so bumping one is an
//! index and an atomic add: no lock, no allocation on the hot path. A value outside the set
//! (a result word we did not expect) is counted under `other`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Label values per metric at most.
const MAX_VALUES: usize = 12;

const LISTENERS: &[&str] = &[
    "smtp",
    "submission",
    "submission_tls",
    "imap",
    "imaps",
    "pop3",
    "pop3s",
];
// RFC 8601 §2.7: the result words of each method.
const SPF_RESULTS: &[&str] = &[
    "pass",
    "fail",
    "softfail",
    "neutral",
    "none",
    "temperror",
    "permerror",
    "other",
];
const DKIM_RESULTS: &[&str] = &[
    "pass",
    "fail",
    "neutral",
    "none",
    "policy",
    "temperror",
    "permerror",
    "other",
];
const DMARC_RESULTS: &[&str] = &["pass", "fail", "none", "temperror", "permerror", "other"];
const HOOK_OUTCOMES: &[&str] = &["accept", "reject", "tempfail", "other"];
const AUTH_FAILURES: &[&str] = &["password", "blocked"];
/// `tambo_logins_total`: protocol × result, as whole label sets (see [`RAW`]).
const LOGINS: &[&str] = &[
    "protocol=\"smtp\",result=\"ok\"",
    "protocol=\"smtp\",result=\"password\"",
    "protocol=\"smtp\",result=\"blocked\"",
    "protocol=\"imap\",result=\"ok\"",
    "protocol=\"imap\",result=\"password\"",
    "protocol=\"imap\",result=\"blocked\"",
    "protocol=\"pop3\",result=\"ok\"",
    "protocol=\"pop3\",result=\"password\"",
    "protocol=\"pop3\",result=\"blocked\"",
];
const LOGIN_PROTOCOLS: &[&str] = &["smtp", "imap", "pop3"];
const LOGIN_RESULTS: &[&str] = &["ok", "password", "blocked"];
/// The `label` of a metric whose values are whole label sets (`a="x",b="y"`): for the few
/// metrics with two labels.
const RAW: &str = "*";
/// The TLS levels of the courier (`courier::domaininfo::TlsLevel`), lowest first.
const OUTBOUND_TLS: &[&str] = &["plain", "insecure", "verified"];
/// The one "value" of a metric without labels.
const UNLABELED: &[&str] = &[""];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// One metric: a counter or gauge per value of its label (or a single one, unlabeled).
pub struct Metric {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    /// Empty for a metric without labels.
    label: &'static str,
    values: &'static [&'static str],
    counts: [AtomicU64; MAX_VALUES],
}

impl Metric {
    const fn new(
        kind: Kind,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        values: &'static [&'static str],
    ) -> Metric {
        assert!(!values.is_empty() && values.len() <= MAX_VALUES);
        Metric {
            name,
            help,
            kind,
            label,
            values,
            counts: [const { AtomicU64::new(0) }; MAX_VALUES],
        }
    }

    const fn counter(name: &'static str, help: &'static str) -> Metric {
        Metric::new(Kind::Counter, name, help, "", UNLABELED)
    }

    const fn labeled(
        name: &'static str,
        help: &'static str,
        label: &'static str,
        values: &'static [&'static str],
    ) -> Metric {
        Metric::new(Kind::Counter, name, help, label, values)
    }

    /// Adds `n` to the series of label `value` (case-insensitive); an unknown value goes to
    /// the last one (`other` where the set has it).
    fn add(&self, value: &str, n: u64) {
        let i = self
            .values
            .iter()
            .position(|v| v.eq_ignore_ascii_case(value))
            .unwrap_or(self.values.len() - 1);
        self.add_at(i, n);
    }

    fn add_at(&self, i: usize, n: u64) {
        // Relaxed: each series is independent and only ever read as a whole at scrape time.
        self.counts[i].fetch_add(n, Ordering::Relaxed);
    }

    fn sub_at(&self, i: usize, n: u64) {
        self.counts[i].fetch_sub(n, Ordering::Relaxed);
    }

    fn inc(&self) {
        self.add_at(0, 1);
    }

    #[cfg(test)]
    fn get(&self, value: &str) -> u64 {
        self.values
            .iter()
            .position(|v| *v == value)
            .map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, self.kind);
        for (i, value) in self.values.iter().enumerate() {
            let n = self.counts[i].load(Ordering::Relaxed);
            if self.label.is_empty() {
                let _ = writeln!(out, "{} {n}", self.name);
            } else if self.label == RAW {
                let _ = writeln!(out, "{}{{{value}}} {n}", self.name);
            } else {
                let _ = writeln!(out, "{}{{{}=\"{value}\"}} {n}", self.name, self.label);
            }
        }
    }
}

/// `# HELP` and `# TYPE` lines. Names and help texts are our own constants: nothing to
/// escape.
fn header(out: &mut String, name: &str, help: &str, kind: Kind) {
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A counter whose label values come from the configuration or the traffic (blocklist
/// zones, destination domains): kept in a map, at most [`Keyed::MAX_KEYS`] of them, the rest
/// under `other`. Bumped rarely (a refusal, a destination's complaint), so a lock is fine.
pub struct Keyed {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    counts: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Keyed {
    const MAX_KEYS: usize = 100;

    const fn new(name: &'static str, help: &'static str, label: &'static str) -> Keyed {
        Keyed {
            name,
            help,
            label,
            counts: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    fn add(&self, key: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let key = if counts.contains_key(key) || counts.len() < Self::MAX_KEYS {
            key
        } else {
            "other"
        };
        *counts.entry(key.to_string()).or_default() += 1;
    }

    #[cfg(test)]
    fn get(&self, key: &str) -> u64 {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(key).copied().unwrap_or(0)
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, Kind::Counter);
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for (key, n) in counts.iter() {
            let _ = writeln!(
                out,
                "{}{{{}=\"{}\"}} {n}",
                self.name,
                self.label,
                escape_label(key)
            );
        }
    }
}

/// A label value as the exposition format wants it: `\`, `"` and newlines escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Every metric of the process.
pub struct Metrics {
    connections: Metric,
    connections_open: Metric,
    received: Metric,
    delivered: Metric,
    deferred: Metric,
    failed: Metric,
    bounced: Metric,
    discarded: Metric,
    tls_handshakes: Metric,
    tls_failures: Metric,
    auth_failures: Metric,
    logins: Metric,
    spf: Metric,
    dkim: Metric,
    dmarc: Metric,
    hooks: Metric,
    bytes_in: Metric,
    bytes_out: Metric,
    outbound_sessions: Metric,
    outbound_tls_failures: Metric,
    dsn_suppressed: Metric,
    dnsbl_listed: Keyed,
    spam_replies: Keyed,
    /// The doctor's gauges, each family replaced whole by each look.
    families: std::sync::Mutex<std::collections::BTreeMap<&'static str, Family>>,
}

impl Metrics {
    const fn new() -> Metrics {
        Metrics {
            connections: Metric::labeled(
                "tambo_connections_total",
                "Connections accepted (SMTP, IMAP, POP3), by listener.",
                "listener",
                LISTENERS,
            ),
            connections_open: Metric::new(
                Kind::Gauge,
                "tambo_connections_open",
                "Connections open now (SMTP, IMAP, POP3), by listener.",
                "listener",
                LISTENERS,
            ),
            received: Metric::counter(
                "tambo_messages_received_total",
                "Messages accepted into the queue (250 after DATA).",
            ),
            delivered: Metric::counter(
                "tambo_messages_delivered_total",
                "Deliveries done, one per recipient of a message.",
            ),
            deferred: Metric::counter(
                "tambo_messages_deferred_total",
                "Delivery attempts that failed temporarily and will be retried, per recipient.",
            ),
            failed: Metric::counter(
                "tambo_messages_failed_total",
                "Recipients that failed permanently (or whose retries ran out).",
            ),
            bounced: Metric::counter(
                "tambo_messages_bounced_total",
                "Delivery status notifications (bounces) queued to senders.",
            ),
            discarded: Metric::counter(
                "tambo_messages_discarded_total",
                "Messages accepted and dropped by an access rule (DISCARD).",
            ),
            tls_handshakes: Metric::counter(
                "tambo_tls_handshakes_total",
                "TLS handshakes started by SMTP clients (STARTTLS or implicit TLS).",
            ),
            tls_failures: Metric::counter(
                "tambo_tls_handshake_failures_total",
                "TLS handshakes with SMTP clients that failed or timed out.",
            ),
            auth_failures: Metric::labeled(
                "tambo_auth_failures_total",
                "Failed AUTH attempts: wrong credentials, or refused while the client is blocked.",
                "reason",
                AUTH_FAILURES,
            ),
            logins: Metric::labeled(
                "tambo_logins_total",
                "Logins by protocol and result: ok, password (wrong login or password), \
                 blocked (refused while the client has too many failures).",
                RAW,
                LOGINS,
            ),
            spf: Metric::labeled(
                "tambo_spf_results_total",
                "SPF results of messages received on port 25.",
                "result",
                SPF_RESULTS,
            ),
            dkim: Metric::labeled(
                "tambo_dkim_results_total",
                "DKIM results of messages received on port 25, one per signature (none: unsigned).",
                "result",
                DKIM_RESULTS,
            ),
            dmarc: Metric::labeled(
                "tambo_dmarc_results_total",
                "DMARC results of messages received on port 25.",
                "result",
                DMARC_RESULTS,
            ),
            hooks: Metric::labeled(
                "tambo_hook_results_total",
                "Outcomes of the post-data hook.",
                "outcome",
                HOOK_OUTCOMES,
            ),
            bytes_in: Metric::counter(
                "tambo_smtp_bytes_received_total",
                "Bytes read from SMTP clients (after TLS decryption).",
            ),
            bytes_out: Metric::counter(
                "tambo_smtp_bytes_sent_total",
                "Bytes written to SMTP clients (before TLS encryption).",
            ),
            outbound_sessions: Metric::labeled(
                "tambo_outbound_sessions_total",
                "SMTP sessions opened to remote servers, by the TLS level reached \
                 (plain, insecure: certificate not verified, verified).",
                "tls",
                OUTBOUND_TLS,
            ),
            outbound_tls_failures: Metric::counter(
                "tambo_outbound_tls_handshake_failures_total",
                "STARTTLS handshakes with remote servers that failed or timed out.",
            ),
            dsn_suppressed: Metric::counter(
                "tambo_dsn_suppressed_total",
                "Bounces not sent because the sender was not authenticated on arrival \
                 (no SPF pass nor aligned DKIM pass): they would be backscatter.",
            ),
            dnsbl_listed: Keyed::new(
                "tambo_dnsbl_listed_total",
                "Port 25 clients found in a DNS blocklist (refused at RCPT), by zone.",
                "zone",
            ),
            spam_replies: Keyed::new(
                "tambo_outbound_spam_replies_total",
                "Replies of remote servers refusing our mail as spam or for its rate \
                 (421 4.7.28, 550 5.7.1 ...), by recipient domain.",
                "destination",
            ),
            families: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    fn all(&self) -> [&Metric; 21] {
        [
            &self.connections,
            &self.connections_open,
            &self.received,
            &self.delivered,
            &self.deferred,
            &self.failed,
            &self.bounced,
            &self.discarded,
            &self.tls_handshakes,
            &self.tls_failures,
            &self.auth_failures,
            &self.logins,
            &self.spf,
            &self.dkim,
            &self.dmarc,
            &self.hooks,
            &self.bytes_in,
            &self.bytes_out,
            &self.outbound_sessions,
            &self.outbound_tls_failures,
            &self.dsn_suppressed,
        ]
    }

    /// The whole exposition: every metric, then the queue gauges from `queue`.
    pub fn render(&self, queue: &QueueStats) -> String {
        let mut out = String::with_capacity(4096);
        for metric in self.all() {
            metric.render(&mut out);
        }
        self.dnsbl_listed.render(&mut out);
        self.spam_replies.render(&mut out);
        let families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        for (name, family) in families.iter() {
            header(&mut out, name, family.help, Kind::Gauge);
            for (labels, value) in &family.series {
                let labels: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                    .collect();
                let _ = writeln!(out, "{name}{{{}}} {value}", labels.join(","));
            }
        }
        drop(families);
        header(
            &mut out,
            "tambo_queue_messages",
            "Messages in the queue now.",
            Kind::Gauge,
        );
        let _ = writeln!(out, "tambo_queue_messages {}", queue.messages);
        header(
            &mut out,
            "tambo_queue_oldest_message_age_seconds",
            "Age of the oldest message in the queue (0 when it is empty).",
            Kind::Gauge,
        );
        let _ = writeln!(
            out,
            "tambo_queue_oldest_message_age_seconds {}",
            queue.oldest_age_secs
        );
        out
    }
}

/// A gauge family whose label values come from a periodic look (the doctor's verdicts).
struct Family {
    help: &'static str,
    series: Vec<(Vec<(&'static str, String)>, i64)>,
}

impl Metrics {
    /// Replaces the whole gauge family `name` (label sets and values); at most 1,000 series,
    /// so a configuration with many domains cannot grow a scrape without bound.
    pub fn set_gauges(
        &self,
        name: &'static str,
        help: &'static str,
        mut series: Vec<(Vec<(&'static str, String)>, i64)>,
    ) {
        series.truncate(1000);
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        families.insert(name, Family { help, series });
    }
}

/// The queue as seen at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub messages: usize,
    pub oldest_age_secs: u64,
}

static METRICS: Metrics = Metrics::new();

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

/// Whether `listener` is one of the `listener` label's values (a test of `net` checks every
/// listener kind).
pub fn knows_listener(listener: &str) -> bool {
    LISTENERS.contains(&listener)
}

/// The index of a listener's label; an unknown name counts as the first (it cannot happen:
/// every listener kind's name is in [`LISTENERS`], which a test checks).
fn listener_index(listener: &str) -> usize {
    LISTENERS.iter().position(|l| *l == listener).unwrap_or(0)
}

/// An open connection, counted in `tambo_connections_open` until dropped.
#[must_use = "the connection counts as open only while this lives"]
pub struct OpenConnection(usize);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        METRICS.connections_open.sub_at(self.0, 1);
    }
}

/// A connection was accepted on the listener named `listener` (its setting's name, as
/// `smtp`); keep the result for its lifetime.
pub fn connection_opened(listener: &str) -> OpenConnection {
    let i = listener_index(listener);
    METRICS.connections.add_at(i, 1);
    METRICS.connections_open.add_at(i, 1);
    OpenConnection(i)
}

pub fn message_received() {
    METRICS.received.inc();
}

pub fn message_delivered() {
    METRICS.delivered.inc();
}

pub fn message_deferred() {
    METRICS.deferred.inc();
}

pub fn message_failed() {
    METRICS.failed.inc();
}

pub fn message_bounced() {
    METRICS.bounced.inc();
}

pub fn message_discarded() {
    METRICS.discarded.inc();
}

/// A TLS handshake with a client begins.
pub fn tls_handshake_started() {
    METRICS.tls_handshakes.inc();
}

/// A TLS handshake with a client failed (or timed out).
pub fn tls_handshake_failed() {
    METRICS.tls_failures.inc();
}

/// A login over `protocol` (`smtp`, `imap`, `pop3`) ended with `result`: `ok`, `password`
/// (a wrong login or password) or `blocked` (refused unchecked, the client having too many
/// failures already). Failures of every protocol also count in `tambo_auth_failures_total`.
pub fn login(protocol: &str, result: &str) {
    let p = LOGIN_PROTOCOLS.iter().position(|x| *x == protocol);
    let r = LOGIN_RESULTS.iter().position(|x| *x == result);
    if let (Some(p), Some(r)) = (p, r) {
        METRICS.logins.add_at(p * LOGIN_RESULTS.len() + r, 1);
    }
    match result {
        "password" => METRICS.auth_failures.add_at(0, 1),
        "blocked" => METRICS.auth_failures.add_at(1, 1),
        _ => {}
    }
}

pub fn bytes_in(n: usize) {
    METRICS.bytes_in.add_at(0, n as u64);
}

pub fn bytes_out(n: usize) {
    METRICS.bytes_out.add_at(0, n as u64);
}

/// An SMTP session to a remote server is ready for mail at this TLS level (`plain`,
/// `insecure`, `verified`).
pub fn outbound_session(tls_level: &str) {
    METRICS.outbound_sessions.add(tls_level, 1);
}

/// A STARTTLS handshake with a remote server failed (or timed out).
pub fn outbound_tls_failed() {
    METRICS.outbound_tls_failures.inc();
}

/// One message's inbound authentication results on port 25 (SPF, each DKIM signature's
/// results joined, DMARC), as the words of RFC 8601 (`pass`, `fail`, `none`, ...). A message
/// without DKIM signatures counts as one DKIM `none`.
pub fn inbound_auth(spf: &str, dkim: &[&str], dmarc: &str) {
    METRICS.record_auth(spf, dkim, dmarc);
}

/// A bounce was not sent: its sender was not authenticated on arrival (SPEC §8).
pub fn dsn_suppressed() {
    METRICS.dsn_suppressed.inc();
}

/// A port 25 client was found listed in the blocklist `zone`.
pub fn dnsbl_listed(zone: &str) {
    METRICS.dnsbl_listed.add(zone);
}

/// A server of `destination` (a recipient domain) refused our mail as spam or for its rate.
pub fn spam_reply(destination: &str) {
    METRICS.spam_replies.add(destination);
}

/// A post-data hook's outcome: `accept`, `reject`, `tempfail`.
pub fn hook_result(outcome: &str) {
    METRICS.hooks.add(outcome, 1);
}

impl Metrics {
    fn record_auth(&self, spf: &str, dkim: &[&str], dmarc: &str) {
        self.spf.add(spf, 1);
        if dkim.is_empty() {
            self.dkim.add("none", 1);
        }
        for result in dkim {
            self.dkim.add(result, 1);
        }
        self.dmarc.add(dmarc, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample lines of `text` (no comments), as (series, value).
    fn samples(text: &str) -> Vec<(String, u64)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').expect("a sample line has a value");
                (series.to_string(), value.parse().expect("an integer value"))
            })
            .collect()
    }

    fn value(text: &str, series: &str) -> Option<u64> {
        samples(text)
            .into_iter()
            .find(|(s, _)| s == series)
            .map(|(_, v)| v)
    }

    #[test]
    fn every_metric_has_help_and_type_before_its_samples() {
        let text = Metrics::new().render(&QueueStats::default());
        let mut declared: Option<String> = None;
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default().to_string();
                let ty = lines.next().unwrap_or_default();
                assert!(
                    ty == format!("# TYPE {name} counter") || ty == format!("# TYPE {name} gauge"),
                    "{ty:?} after HELP of {name}"
                );
                assert!(name.starts_with("tambo_"), "{name}");
                assert_eq!(
                    ty.ends_with("counter"),
                    name.ends_with("_total"),
                    "counters, and only they, end in _total: {name}"
                );
                declared = Some(name);
                continue;
            }
            let name = declared.as_deref().expect("a sample before any HELP");
            let series = line.split([' ', '{']).next().unwrap_or_default();
            assert_eq!(series, name, "{line:?}");
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn names_are_unique() {
        let m = Metrics::new();
        let mut names: Vec<&str> = m.all().iter().map(|m| m.name).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[test]
    fn labeled_counters_render_one_series_per_value() {
        let m = Metrics::new();
        m.record_auth("pass", &["pass", "FAIL"], "none");
        m.record_auth("softfail", &[], "weird");
        m.hooks.add("tempfail", 1);
        m.hooks.add("accept", 2);
        m.outbound_sessions.add("verified", 1);
        m.outbound_sessions.add("plain", 1);
        m.outbound_sessions.add("plain", 1);
        let text = m.render(&QueueStats::default());
        let cases = [
            ("tambo_spf_results_total{result=\"pass\"}", 1),
            ("tambo_spf_results_total{result=\"softfail\"}", 1),
            ("tambo_spf_results_total{result=\"fail\"}", 0),
            ("tambo_dkim_results_total{result=\"pass\"}", 1),
            ("tambo_dkim_results_total{result=\"fail\"}", 1),
            ("tambo_dkim_results_total{result=\"none\"}", 1),
            ("tambo_dmarc_results_total{result=\"none\"}", 1),
            ("tambo_dmarc_results_total{result=\"other\"}", 1),
            ("tambo_hook_results_total{outcome=\"accept\"}", 2),
            ("tambo_hook_results_total{outcome=\"tempfail\"}", 1),
            ("tambo_hook_results_total{outcome=\"reject\"}", 0),
            ("tambo_outbound_sessions_total{tls=\"plain\"}", 2),
            ("tambo_outbound_sessions_total{tls=\"insecure\"}", 0),
            ("tambo_outbound_sessions_total{tls=\"verified\"}", 1),
        ];
        for (series, want) in cases {
            assert_eq!(value(&text, series), Some(want), "{series}");
        }
    }

    #[test]
    fn keyed_counters_cap_their_keys_and_escape_them() {
        let m = Metrics::new();
        m.dnsbl_listed.add("zen.spamhaus.org");
        m.dnsbl_listed.add("zen.spamhaus.org");
        for i in 0..Keyed::MAX_KEYS + 5 {
            m.spam_replies.add(&format!("d{i}.example"));
        }
        m.spam_replies.add("d0.example");
        m.spam_replies.add("odd\"name\\");
        assert_eq!(m.spam_replies.get("d0.example"), 2);
        assert_eq!(m.spam_replies.get("other"), 6, "past the cap");
        let text = m.render(&QueueStats::default());
        let cases = [
            ("tambo_dnsbl_listed_total{zone=\"zen.spamhaus.org\"}", 2),
            (
                "tambo_outbound_spam_replies_total{destination=\"d1.example\"}",
                1,
            ),
            ("tambo_dsn_suppressed_total", 0),
        ];
        for (series, want) in cases {
            assert_eq!(value(&text, series), Some(want), "{series}");
        }
        let mut small = Keyed::new("tambo_x_total", "x", "k");
        small.counts = std::sync::Mutex::new([("a\"b\\c\nd".to_string(), 1)].into());
        let mut out = String::new();
        small.render(&mut out);
        assert!(
            out.ends_with("tambo_x_total{k=\"a\\\"b\\\\c\\nd\"} 1\n"),
            "{out}"
        );
    }

    #[test]
    fn counters_and_gauges_move() {
        let m = Metrics::new();
        m.received.inc();
        m.received.inc();
        m.bytes_in.add_at(0, 1000);
        m.connections.add_at(listener_index("submission_tls"), 1);
        m.connections_open.add_at(2, 1);
        m.connections_open.add_at(2, 1);
        m.connections_open.sub_at(2, 1);
        let stats = QueueStats {
            messages: 3,
            oldest_age_secs: 120,
        };
        let text = m.render(&stats);
        let cases = [
            ("tambo_messages_received_total", 2),
            ("tambo_messages_delivered_total", 0),
            ("tambo_smtp_bytes_received_total", 1000),
            ("tambo_connections_total{listener=\"submission_tls\"}", 1),
            ("tambo_connections_total{listener=\"smtp\"}", 0),
            ("tambo_connections_open{listener=\"submission_tls\"}", 1),
            ("tambo_queue_messages", 3),
            ("tambo_queue_oldest_message_age_seconds", 120),
        ];
        for (series, want) in cases {
            assert_eq!(value(&text, series), Some(want), "{series}");
        }
    }

    #[test]
    fn the_global_guard_closes_what_it_opened() {
        let before = METRICS.connections.get("submission");
        {
            let _open = connection_opened("submission");
            assert_eq!(METRICS.connections.get("submission"), before + 1);
        }
        // Other tests never open submission connections on the global metrics.
        assert_eq!(METRICS.connections_open.get("submission"), 0);
    }

    #[test]
    fn unknown_values_go_to_the_last_series() {
        let m = Metrics::new();
        m.hooks.add("", 1);
        m.spf.add("PASS", 1);
        assert_eq!(m.hooks.get("other"), 1);
        assert_eq!(m.spf.get("pass"), 1);
    }
}
