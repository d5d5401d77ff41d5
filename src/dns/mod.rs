//! The one DNS resolver of the process (SPEC §3 `dns_servers`): hickory, inside mail-auth's
//! `MessageAuthenticator`, so delivery (MX, A/AAAA) and message authentication (SPF, DKIM,
//! DMARC, MTA-STS TXT) share one cache. hickory needs a tokio reactor: every call runs
//! inside `async_compat::Compat` (STACK.md), so callers just await it under smol.
//!
//! - [`txt_cache`]: mail-auth's parsed TXT records (SPF, DMARC, DKIM keys), kept for their TTL.
//! - [`blocklist`]: is a client address listed in a DNS blocklist (`dnsbl`)?

pub mod blocklist;
pub mod txt_cache;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_compat::Compat;
use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::hickory_resolver::proto::rr::{RData, RecordType};
use rand::seq::SliceRandom;

use crate::ttl_cache::TtlCache;

/// Per-query deadline; with `ATTEMPTS` the worst case stays well under a minute.
const TIMEOUT: Duration = Duration::from_secs(5);
const ATTEMPTS: usize = 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// NXDOMAIN: the name does not exist (permanent).
    #[error("{0}: no such domain")]
    NotFound(String),
    /// RFC 7505 null MX (`0 .`): the domain accepts no mail (permanent).
    #[error("{0}: domain accepts no mail (null MX)")]
    NullMx(String),
    /// Timeouts, SERVFAIL, network errors (temporary).
    #[error("{0}: DNS error: {1}")]
    Temporary(String, String),
}

impl DnsError {
    pub fn is_permanent(&self) -> bool {
        !matches!(self, DnsError::Temporary(..))
    }
}

pub struct Dns {
    auth: mail_auth::MessageAuthenticator,
    txt_cache: txt_cache::TxtCache,
    /// Answers of [`Dns::query`] for their TTL. hickory caches them too, but asking it
    /// (under a tokio reactor, parsing the name, copying the records) costs more than the
    /// rest of planning a delivery, and a forwarder asks the same few names for every message.
    answers: TtlCache<(RecordType, Box<str>), Answer>,
}

/// What one query said: the records of the asked type (none at all is NODATA), or that the
/// name does not exist.
#[derive(Debug, Clone)]
enum Answer {
    Records(Arc<[RData]>),
    NxDomain,
}

impl Dns {
    /// `servers` empty: the system configuration (`/etc/resolv.conf`).
    pub fn new(servers: &[SocketAddr]) -> Result<Dns, DnsError> {
        let (config, opts) = if servers.is_empty() {
            // resolv.conf's own `options timeout:/attempts:` apply (defaults 5 s and 2).
            mail_auth::hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| DnsError::Temporary("/etc/resolv.conf".into(), e.to_string()))?
        } else {
            (explicit_config(servers), explicit_opts())
        };
        Dns::with_config(config, opts)
    }
    fn with_config(config: ResolverConfig, opts: ResolverOpts) -> Result<Dns, DnsError> {
        let auth = mail_auth::MessageAuthenticator::new(config, opts)
            .map_err(|e| DnsError::Temporary("resolver".into(), e.to_string()))?;
        Ok(Dns {
            auth,
            txt_cache: Default::default(),
            answers: Default::default(),
        })
    }
    /// For SPF / DKIM / DMARC / ARC (their calls must also run inside `Compat`).
    pub fn authenticator(&self) -> &mail_auth::MessageAuthenticator {
        &self.auth
    }
    /// mail-auth's parsed TXT records (SPF, DMARC, DKIM keys), for the checks on port 25.
    pub fn txt_cache(&self) -> &txt_cache::TxtCache {
        &self.txt_cache
    }
    /// MX host names in preference order (equal preferences in random order), without the
    /// trailing dot. `Ok(vec![])` when the domain exists but has no MX (the caller then uses
    /// the domain itself, RFC 5321 §5.1).
    pub async fn mx(&self, domain: &str) -> Result<Vec<String>, DnsError> {
        let records = match self.query(domain, RecordType::MX).await? {
            Answer::NxDomain => return Err(DnsError::NotFound(domain.to_string())),
            Answer::Records(records) => records,
        };
        let mxs = records
            .iter()
            .filter_map(|r| match r {
                RData::MX(mx) => Some((mx.preference, host_name(&mx.exchange.to_ascii()))),
                _ => None,
            })
            .collect();
        order_mx(domain, mxs)
    }
    /// A and AAAA addresses of a host (IPv6 first when both, as RFC 6724 prefers).
    pub async fn ips(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let (v6, v4) = smol::future::zip(
            self.query(host, RecordType::AAAA),
            self.query(host, RecordType::A),
        )
        .await;
        let mut ips = Vec::new();
        let mut failure = None;
        for answer in [v6, v4] {
            match answer {
                Ok(Answer::Records(records)) => {
                    ips.extend(records.iter().filter_map(|r| match r {
                        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        _ => None,
                    }))
                }
                Ok(Answer::NxDomain) => {}
                // Some servers fail on AAAA only; the other family may still be usable.
                Err(e) => failure = Some(e),
            }
        }
        match (ips.is_empty(), failure) {
            (false, _) => Ok(ips),
            (true, Some(e)) => Err(e),
            (true, None) => Err(DnsError::NotFound(host.to_string())),
        }
    }
    /// The A records of a name (IPv4 only: DNS blocklists answer with them).
    pub async fn ipv4(&self, name: &str) -> Result<Vec<std::net::Ipv4Addr>, DnsError> {
        match self.query(name, RecordType::A).await? {
            Answer::NxDomain => Err(DnsError::NotFound(name.to_string())),
            Answer::Records(records) => Ok(records
                .iter()
                .filter_map(|r| match r {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect()),
        }
    }

    /// TXT strings of a name, each record's strings joined.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        match self.query(name, RecordType::TXT).await? {
            Answer::NxDomain => Err(DnsError::NotFound(name.to_string())),
            Answer::Records(records) => Ok(records
                .iter()
                .filter_map(|r| match r {
                    // RFC 7208 §3.3 / RFC 6376 §3.6.2.2: a record's strings are concatenated
                    // without separator.
                    RData::TXT(txt) => Some(String::from_utf8_lossy(&txt.txt_data.concat()).into()),
                    _ => None,
                })
                .collect()),
        }
    }

    /// SRV records of a name (RFC 2782): (priority, weight, port, target), the target lower
    /// case without the trailing dot (`"."` stays: RFC 2782's "no such service here").
    pub async fn srv(&self, name: &str) -> Result<Vec<(u16, u16, u16, String)>, DnsError> {
        match self.query(name, RecordType::SRV).await? {
            Answer::NxDomain => Err(DnsError::NotFound(name.to_string())),
            Answer::Records(records) => Ok(records
                .iter()
                .filter_map(|r| match r {
                    RData::SRV(srv) => Some((
                        srv.priority,
                        srv.weight,
                        srv.port,
                        host_name(&srv.target.to_ascii()),
                    )),
                    _ => None,
                })
                .collect()),
        }
    }

    /// PTR names of an address (reverse DNS, RFC 1035 §3.5 / RFC 3596 §2.5), lower case and
    /// without the trailing dot. `Ok(vec![])` when the reverse name exists without a PTR.
    /// hickory answers `localhost` for 127/8 and ::1 without asking (RFC 6761 §6.3).
    pub async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, DnsError> {
        let name = reverse_name(ip);
        match self.query(&name, RecordType::PTR).await? {
            Answer::NxDomain => Err(DnsError::NotFound(name)),
            Answer::Records(records) => Ok(records
                .iter()
                .filter_map(|r| match r {
                    RData::PTR(ptr) => Some(host_name(&ptr.0.to_ascii())),
                    _ => None,
                })
                .collect()),
        }
    }

    /// One query of `rtype` for the absolute name `name`: from the answer cache, else from
    /// hickory under a tokio reactor.
    async fn query(&self, name: &str, rtype: RecordType) -> Result<Answer, DnsError> {
        // The trailing dot makes the name absolute, so resolv.conf's search list never applies.
        let fqdn = format!("{}.", name.trim_end_matches('.').to_ascii_lowercase());
        let key = (rtype, fqdn.into_boxed_str());
        if let Some(answer) = self.answers.get(&key) {
            return Ok(answer);
        }
        let result = Compat::new(self.auth.resolver().lookup(&*key.1, rtype)).await;
        let (answer, valid_until) = match result {
            Ok(lookup) => (
                Answer::Records(lookup.answers().iter().map(|r| r.data.clone()).collect()),
                lookup.valid_until(),
            ),
            Err(e) => classify_error(name, e)?,
        };
        self.answers.insert(key, answer.clone(), valid_until);
        Ok(answer)
    }
}

/// Name servers at exactly these addresses, each over UDP and TCP (large answers).
fn explicit_config(servers: &[SocketAddr]) -> ResolverConfig {
    let name_servers = servers
        .iter()
        .map(|addr| {
            let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                .into_iter()
                .map(|mut c| {
                    c.port = addr.port();
                    c
                })
                .collect();
            NameServerConfig::new(addr.ip(), true, connections)
        })
        .collect();
    ResolverConfig::from_name_servers(name_servers)
}

fn explicit_opts() -> ResolverOpts {
    let mut opts = ResolverOpts::default();
    opts.timeout = TIMEOUT;
    opts.attempts = ATTEMPTS;
    opts
}

/// NXDOMAIN and NODATA are answers, kept for the zone's negative TTL (RFC 2308 §5) when it
/// sent one; everything else (SERVFAIL, REFUSED, timeouts, I/O) may pass, so it is temporary.
fn classify_error(name: &str, err: NetError) -> Result<(Answer, Instant), DnsError> {
    match &err {
        NetError::Dns(HickoryDnsError::NoRecordsFound(no)) => {
            let answer = match no.response_code {
                ResponseCode::NXDomain => Answer::NxDomain,
                ResponseCode::NoError => Answer::Records(Arc::new([])),
                _ => return Err(DnsError::Temporary(name.to_string(), err.to_string())),
            };
            let ttl = Duration::from_secs(no.negative_ttl.unwrap_or(0).into());
            Ok((answer, Instant::now() + ttl))
        }
        _ => Err(DnsError::Temporary(name.to_string(), err.to_string())),
    }
}

/// The reverse-lookup name of an address, without the trailing dot: `in-addr.arpa` with the
/// octets reversed (RFC 1035 §3.5), `ip6.arpa` with the 32 nibbles reversed (RFC 3596 §2.5).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            let mut labels: Vec<String> = v6
                .octets()
                .iter()
                .flat_map(|byte| [byte >> 4, byte & 0x0f])
                .map(|nibble| format!("{nibble:x}"))
                .collect();
            labels.reverse();
            format!("{}.ip6.arpa", labels.join("."))
        }
    }
}

/// Lower case, no trailing dot; the root name stays `.` (the null MX marker).
fn host_name(ascii: &str) -> String {
    if ascii == "." {
        return ascii.to_string();
    }
    ascii.trim_end_matches('.').to_ascii_lowercase()
}

/// Sorts MX records by preference, shuffling equal ones (RFC 5321 §5.1), and recognises a
/// null MX (RFC 7505 §3: a single record `0 .`).
fn order_mx(domain: &str, mut mxs: Vec<(u16, String)>) -> Result<Vec<String>, DnsError> {
    if let [(0, host)] = mxs.as_slice()
        && host == "."
    {
        return Err(DnsError::NullMx(domain.to_string()));
    }
    // RFC 7505 §3 forbids mixing `.` with other MX records; the others are still usable.
    mxs.retain(|(_, host)| host != ".");
    mxs.shuffle(&mut rand::rng());
    // A stable sort keeps the shuffled order within one preference.
    mxs.sort_by_key(|(pref, _)| *pref);
    Ok(mxs.into_iter().map(|(_, host)| host).collect())
}

/// A dnsmasq on a free loopback port, for tests of this module and its users.
#[cfg(test)]
pub(crate) mod test_server {
    use crate::testsupport;
    use std::net::{SocketAddr, TcpStream, UdpSocket};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    pub const DNSMASQ: &str = testsupport::DNSMASQ.program;

    /// Kills dnsmasq when dropped, so a failing test does not leave it behind.
    pub struct DnsServer {
        child: Child,
        pub addr: SocketAddr,
        _dir: tempfile::TempDir,
    }

    impl Drop for DnsServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Starts dnsmasq authoritative for `.test` with the extra `args`; None when dnsmasq is
    /// not installed (the test is then skipped or failed: `testsupport`).
    pub fn start(args: &[&str]) -> Option<DnsServer> {
        if !testsupport::DNSMASQ.available() {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir for dnsmasq");
        let port = free_port();
        let child = Command::new(DNSMASQ)
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--user=root",
                // Answer for `.test` ourselves: unknown names are NXDOMAIN, not REFUSED.
                "--local=/test/",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dnsmasq");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let server = DnsServer {
            child,
            addr,
            _dir: dir,
        };
        wait_listening(addr);
        Some(server)
    }

    /// A port free for both UDP and TCP right now (a race with other tests is unlikely).
    fn free_port() -> u16 {
        loop {
            let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
            let port = udp.local_addr().expect("local addr").port();
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }

    fn wait_listening(addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "dnsmasq did not start on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    /// Runs `fut` under plain smol with a deadline, as the server does.
    fn run<T>(fut: impl Future<Output = T>) -> T {
        smol::block_on(async {
            let timeout = async {
                smol::Timer::after(Duration::from_secs(30)).await;
                panic!("test deadline passed");
            };
            smol::future::or(fut, timeout).await
        })
    }

    fn server() -> Option<(test_server::DnsServer, Dns)> {
        let server = test_server::start(&[
            "--mx-host=example.test,mx1.example.test,10",
            "--mx-host=example.test,mx2.example.test,20",
            "--mx-host=example.test,MX0.Example.Test,5",
            "--mx-host=equal.test,a.equal.test,10",
            "--mx-host=equal.test,b.equal.test,10",
            "--mx-host=equal.test,c.equal.test,10",
            "--mx-host=nomail.test,.,0",
            "--address=/mx1.example.test/127.0.0.2",
            "--host-record=nomx.test,127.0.0.5",
            "--host-record=both.test,127.0.0.3,::1",
            "--host-record=v6only.test,::2",
            // No shell here: dnsmasq would keep quotes; commas separate character-strings.
            "--txt-record=example.test,v=spf1 -all",
            "--txt-record=multi.test,part one ,part two",
        ])?;
        let dns = Dns::new(&[server.addr]).expect("resolver");
        Some((server, dns))
    }

    #[test]
    fn mx_in_preference_order() {
        let Some((_server, dns)) = server() else {
            return;
        };
        let mx = run(dns.mx("example.test")).unwrap();
        assert_eq!(
            mx,
            ["mx0.example.test", "mx1.example.test", "mx2.example.test"]
        );
        // Case and trailing dot of the query do not matter.
        let mx = run(dns.mx("EXAMPLE.test.")).unwrap();
        assert_eq!(mx.len(), 3);
    }

    #[test]
    fn answers_are_kept_for_their_ttl_only() {
        let Some(kept) =
            test_server::start(&["--local-ttl=300", "--mx-host=kept.test,mx.kept.test,10"])
        else {
            return;
        };
        let dns = Dns::new(&[kept.addr]).expect("resolver");
        assert_eq!(run(dns.mx("kept.test")).unwrap(), ["mx.kept.test"]);
        assert!(run(dns.mx("none.kept.test")).is_err());
        // The answer is kept for its TTL; dnsmasq's NXDOMAIN comes without an SOA, so
        // without a negative TTL, and is not kept (RFC 2308 §5).
        assert_eq!(dns.answers.len(), 1);
        drop(kept);
        assert_eq!(run(dns.mx("Kept.Test.")).unwrap(), ["mx.kept.test"]);

        // TTL 0 (dnsmasq's default): nothing is kept.
        let Some((_server, dns)) = server() else {
            return;
        };
        run(dns.mx("example.test")).unwrap();
        assert_eq!(dns.answers.len(), 0);
    }

    #[test]
    fn mx_equal_preferences_all_present() {
        let Some((_server, dns)) = server() else {
            return;
        };
        let mut mx = run(dns.mx("equal.test")).unwrap();
        mx.sort();
        assert_eq!(mx, ["a.equal.test", "b.equal.test", "c.equal.test"]);
    }

    #[test]
    fn mx_absent_nxdomain_null() {
        let Some((_server, dns)) = server() else {
            return;
        };
        let cases: &[(&str, Result<Vec<String>, DnsError>)] = &[
            ("nomx.test", Ok(vec![])),
            (
                "missing.test",
                Err(DnsError::NotFound("missing.test".into())),
            ),
            ("nomail.test", Err(DnsError::NullMx("nomail.test".into()))),
        ];
        for (domain, want) in cases {
            assert_eq!(&run(dns.mx(domain)), want, "{domain}");
        }
    }

    #[test]
    fn ips_cases() {
        let Some((_server, dns)) = server() else {
            return;
        };
        let v6: IpAddr = "::1".parse().unwrap();
        let v6b: IpAddr = "::2".parse().unwrap();
        let cases: &[(&str, Result<Vec<IpAddr>, DnsError>)] = &[
            ("both.test", Ok(vec![v6, "127.0.0.3".parse().unwrap()])),
            ("mx1.example.test", Ok(vec!["127.0.0.2".parse().unwrap()])),
            ("v6only.test", Ok(vec![v6b])),
            (
                "missing.test",
                Err(DnsError::NotFound("missing.test".into())),
            ),
            // Exists (it has MX records) but has no address.
            ("equal.test", Err(DnsError::NotFound("equal.test".into()))),
        ];
        for (host, want) in cases {
            assert_eq!(&run(dns.ips(host)), want, "{host}");
        }
    }

    #[test]
    fn txt_cases() {
        let Some((_server, dns)) = server() else {
            return;
        };
        let cases: &[(&str, Result<Vec<String>, DnsError>)] = &[
            ("example.test", Ok(vec!["v=spf1 -all".into()])),
            ("multi.test", Ok(vec!["part one part two".into()])),
            ("nomx.test", Ok(vec![])),
            (
                "missing.test",
                Err(DnsError::NotFound("missing.test".into())),
            ),
        ];
        for (name, want) in cases {
            assert_eq!(&run(dns.txt(name)), want, "{name}");
        }
    }

    #[test]
    fn unreachable_server_is_temporary() {
        // Nothing listens on this port any more: queries are refused or go unanswered.
        let addr = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut opts = explicit_opts();
        opts.timeout = Duration::from_millis(300);
        let dns = Dns::with_config(explicit_config(&[addr]), opts).unwrap();
        let err = run(dns.mx("example.test")).unwrap_err();
        assert!(!err.is_permanent(), "{err:?}");
    }

    #[test]
    fn system_conf_builds() {
        if !std::fs::read_to_string("/etc/resolv.conf").is_ok_and(|c| c.contains("nameserver")) {
            crate::testsupport::skip("no nameserver in /etc/resolv.conf");
            return;
        }
        assert!(Dns::new(&[]).is_ok());
    }

    #[test]
    fn order_mx_table() {
        let s = |v: &[&str]| v.iter().map(|h| h.to_string()).collect::<Vec<_>>();
        type Case<'a> = (&'a [(u16, &'a str)], Result<Vec<String>, DnsError>);
        let cases: &[Case] = &[
            (&[], Ok(vec![])),
            (&[(20, "b"), (10, "a")], Ok(s(&["a", "b"]))),
            (&[(0, ".")], Err(DnsError::NullMx("d".into()))),
            // A `.` with another preference, or beside real hosts, is not a null MX.
            (&[(10, ".")], Ok(vec![])),
            (&[(0, "."), (10, "mx")], Ok(s(&["mx"]))),
        ];
        for (input, want) in cases {
            let mxs = input.iter().map(|(p, h)| (*p, h.to_string())).collect();
            assert_eq!(&order_mx("d", mxs), want, "{input:?}");
        }
    }

    #[test]
    fn reverse_name_table() {
        let cases = [
            ("203.0.113.5", "5.113.0.203.in-addr.arpa"),
            (
                "2001:db8::567:89ab",
                "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
            ),
        ];
        for (ip, want) in cases {
            assert_eq!(reverse_name(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn ptr_cases() {
        let Some(server) = test_server::start(&[
            // Not 127/8: hickory answers `localhost` for those itself (RFC 6761 §6.3).
            "--host-record=Mail.Example.Test,192.0.2.2",
            "--ptr-record=3.2.0.192.in-addr.arpa,other.example.test",
            // Answer this reverse zone ourselves: unknown names are NXDOMAIN, not REFUSED.
            "--local=/2.0.192.in-addr.arpa/",
        ]) else {
            return;
        };
        let dns = Dns::new(&[server.addr]).expect("resolver");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases: &[(&str, Result<Vec<String>, DnsError>)] = &[
            ("192.0.2.2", Ok(vec!["mail.example.test".into()])),
            ("192.0.2.3", Ok(vec!["other.example.test".into()])),
            (
                "192.0.2.9",
                Err(DnsError::NotFound("9.2.0.192.in-addr.arpa".into())),
            ),
        ];
        for (addr, want) in cases {
            assert_eq!(&run(dns.ptr(ip(addr))), want, "{addr}");
        }
    }

    #[test]
    fn host_name_table() {
        for (input, want) in [
            ("MX.Example.COM.", "mx.example.com"),
            (".", "."),
            ("a.b", "a.b"),
        ] {
            assert_eq!(host_name(input), want);
        }
    }
}
