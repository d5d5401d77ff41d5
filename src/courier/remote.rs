//! Remote delivery over SMTP (SPEC §8): MX lookup with A/AAAA fallback, hosts in preference
//! order, STARTTLS whenever offered, TLS level and MTA-STS enforced, all recipients of one
//! destination in one transaction.
//!
//! Hosts are tried in order until one reaches the RCPT stage; from then on its answers are
//! final for this attempt. Security is checked after EHLO and before MAIL, so nothing is sent
//! over a connection weaker than the domain is known to support.

use crate::courier::DeliveryError;
use crate::courier::connection_cache::ConnectionCache;
use crate::courier::domaininfo::{DomainInfo, TlsLevel};
use crate::courier::mta_sts::{Mode, MtaSts, Policy};
use crate::courier::smtp_client::{Client, ClientError, Deadlines, Protocol, Stage, TlsMode};
use crate::courier::spam_throttle::SpamThrottle;
use crate::dns::{Dns, DnsError};
use crate::message::StoredMessage;
use crate::metrics;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub use crate::courier::smtp_client::OutboundEnvelope;

pub struct RemoteCourier {
    pub dns: Arc<Dns>,
    pub domaininfo: Arc<DomainInfo>,
    pub mta_sts: Arc<MtaSts>,
    /// Our EHLO name.
    pub hostname: String,
    /// `outbound_smtp_port`.
    pub port: u16,
    /// `outbound_bind`.
    pub bind: Option<IpAddr>,
    /// Our `smtp_listen` addresses: an MX that resolves to one of these points at us.
    pub own_listeners: Vec<SocketAddr>,
    /// Roots that replace the system's for certificate verification (tests).
    pub test_roots: Option<Arc<rustls::RootCertStore>>,
    /// Sessions kept between transactions to the same host.
    pub connections: ConnectionCache,
    /// How long each step of an SMTP session may take.
    pub deadlines: Deadlines,
    /// Destinations that refused our mail as spam, held back for a while.
    pub spam: SpamThrottle,
}

/// One host to try.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Host {
    name: String,
    port: u16,
}

/// Where to deliver and what security to demand.
#[derive(Debug)]
struct Plan {
    hosts: Vec<Host>,
    /// Enforced for MX deliveries only: `via` hosts are chosen by the admin.
    checks: Option<Checks>,
}

#[derive(Debug)]
struct Checks {
    /// The best level seen for the domain before (domaininfo).
    min_level: TlsLevel,
    /// The domain's MTA-STS policy, when it has one in `enforce` or `testing` mode.
    sts: Option<Policy>,
}

/// How one host attempt ended.
enum Attempt {
    /// The host reached the RCPT stage (or refused the sender for good): final.
    Done(Vec<Result<(), DeliveryError>>),
    /// Try the next address or host.
    Next(DeliveryError),
}

impl RemoteCourier {
    /// `domain`: recipient domain (ACE). `via`: explicit hosts (host or host:port) instead of
    /// MX. Returns one result per rcpt, in order.
    pub async fn deliver(
        &self,
        domain: &str,
        via: &[String],
        env: &OutboundEnvelope<'_>,
        item: &StoredMessage,
        prepend: &[u8],
    ) -> Vec<Result<(), DeliveryError>> {
        let deadlines = self.deadlines;
        let everyone = |e: DeliveryError| vec![Err(e); env.rcpts.len()];
        if let Some(left) = self.spam.held_for(domain) {
            return everyone(DeliveryError::temporary(format!(
                "{domain}: held {} more minute(s): it refused our mail as spam or for its rate",
                left.as_secs().div_ceil(60)
            )));
        }
        let plan = match self.plan(domain, via).await {
            Ok(plan) => plan,
            Err(e) => return everyone(e),
        };
        let send = Send {
            courier: self,
            domain,
            env,
            item,
            prepend,
            deadlines,
        };
        let results = match send.run(&plan).await {
            Attempt::Done(results) => results,
            Attempt::Next(e) => everyone(e),
        };
        self.note_spam_refusals(domain, &item.id.to_string(), &results);
        results
    }

    /// A refusal as spam holds the destination back (and is logged as such, and counted);
    /// a delivery that got through releases it.
    fn note_spam_refusals(&self, domain: &str, id: &str, results: &[Result<(), DeliveryError>]) {
        let refusal = results
            .iter()
            .find_map(|r| r.as_ref().err().filter(|e| e.spam_refusal));
        if let Some(e) = refusal {
            let hold = self.spam.refused(domain);
            metrics::spam_reply(domain);
            log::warn!(
                "{id}: {domain} refused our mail as spam or for its rate: {}; holding mail \
                 to {domain} for {} minutes",
                e.reason,
                hold.as_secs() / 60
            );
        } else if results.iter().any(Result::is_ok) {
            self.spam.accepted(domain);
        }
    }

    async fn plan(&self, domain: &str, via: &[String]) -> Result<Plan, DeliveryError> {
        if !via.is_empty() {
            let hosts = via.iter().map(|v| parse_via(v, self.port)).collect();
            return Ok(Plan {
                hosts,
                checks: None,
            });
        }
        let names = match self.dns.mx(domain).await {
            // RFC 5321 §5.1: no MX, the domain itself is the implicit MX.
            Ok(names) if names.is_empty() => vec![domain.to_string()],
            Ok(names) => names,
            Err(e) => return Err(dns_failure(&e)),
        };
        let sts = self
            .mta_sts
            .policy(domain, crate::message::now_secs())
            .await;
        let sts = sts.filter(|p| p.mode != Mode::None);
        let names = sts_hosts(domain, names, sts.as_ref())?;
        let hosts = names
            .into_iter()
            .map(|name| Host {
                name,
                port: self.port,
            })
            .collect();
        let checks = Checks {
            min_level: self.domaininfo.level(domain),
            sts,
        };
        Ok(Plan {
            hosts,
            checks: Some(checks),
        })
    }

    /// QUITs idle sessions that were not reused in time; runs for the life of the server.
    pub async fn sweep_idle_connections(&self) {
        loop {
            smol::Timer::after(crate::courier::connection_cache::MAX_IDLE / 2).await;
            for client in self.connections.expired() {
                client.quit().await;
            }
        }
    }

    /// Is `host` or `addr` this server? (A loop: RFC 5321 §5.1 says to stop there.)
    fn is_us(&self, host: &str, addr: Option<SocketAddr>) -> bool {
        let strip = |h: &str| h.trim_end_matches('.').to_ascii_lowercase();
        if strip(host) == strip(&self.hostname) {
            return true;
        }
        addr.is_some_and(|addr| {
            self.own_listeners.iter().any(|l| {
                l.port() == addr.port()
                    && (l.ip() == addr.ip() || (l.ip().is_unspecified() && is_local_ip(addr.ip())))
            })
        })
    }
}

/// One delivery in progress: what is sent, and to which domain.
struct Send<'a> {
    courier: &'a RemoteCourier,
    domain: &'a str,
    env: &'a OutboundEnvelope<'a>,
    item: &'a StoredMessage,
    prepend: &'a [u8],
    deadlines: Deadlines,
}

impl Send<'_> {
    /// Tries the hosts in order, and each host's addresses in order.
    async fn run(&self, plan: &Plan) -> Attempt {
        let mut last = DeliveryError::temporary(format!("{}: no host to try", self.domain));
        // Whether every host failed for a reason that retrying cannot fix (no address).
        let mut all_permanent = true;
        let mut tried = false;
        for host in &plan.hosts {
            if self.courier.is_us(&host.name, None) {
                return self.loop_found(host, tried, last);
            }
            let addrs = match self.addresses(host).await {
                Ok(addrs) => addrs,
                Err(e) => {
                    all_permanent &= e.is_permanent();
                    last = DeliveryError::temporary(e.to_string());
                    continue;
                }
            };
            for addr in addrs {
                if self.courier.is_us(&host.name, Some(addr)) {
                    return self.loop_found(host, tried, last);
                }
                tried = true;
                all_permanent = false;
                match self.attempt(host, addr, plan.checks.as_ref()).await {
                    Attempt::Done(results) => return Attempt::Done(results),
                    Attempt::Next(e) => {
                        log::info!("{}: {}", self.item.id, e.reason);
                        last = e;
                    }
                }
            }
        }
        last.permanent = all_permanent && !plan.hosts.is_empty();
        Attempt::Next(last)
    }

    async fn addresses(&self, host: &Host) -> Result<Vec<SocketAddr>, DnsError> {
        if let Ok(ip) = host.name.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, host.port)]);
        }
        let ips = self.courier.dns.ips(&host.name).await?;
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, host.port))
            .collect())
    }

    /// RFC 5321 §5.1: hosts from ourselves on are not tried. When we are the first choice,
    /// nothing can ever work: a permanent failure.
    fn loop_found(&self, host: &Host, tried: bool, last: DeliveryError) -> Attempt {
        if tried {
            return Attempt::Next(last);
        }
        let reason = format!(
            "{}: {}: MX points back to us (mail loop)",
            self.domain, host.name
        );
        log::warn!("{}: {reason}", self.item.id);
        Attempt::Next(DeliveryError::permanent(reason))
    }

    /// One address: connect, hello (retrying once without TLS if the handshake fails),
    /// security check, transaction.
    async fn attempt(&self, host: &Host, addr: SocketAddr, checks: Option<&Checks>) -> Attempt {
        if let Some(done) = self.reuse(host, addr, checks).await {
            return done;
        }
        let tls = TlsMode::Opportunistic {
            server_name: host.name.clone(),
            test_roots: self.courier.test_roots.clone(),
        };
        let client = match self.session(host, addr, &tls).await {
            Ok(client) => client,
            Err(e) if e.stage == Stage::StartTls => {
                // The server offered STARTTLS but the handshake failed: plain text is still
                // better than no delivery, if the level checks below allow it.
                log::warn!("{}: {e}; retrying without TLS", self.item.id);
                match self.session(host, addr, &TlsMode::Off).await {
                    Ok(client) => client,
                    Err(e) => return Attempt::Next(temporary(&e)),
                }
            }
            Err(e) => return Attempt::Next(temporary(&e)),
        };
        if let Some(checks) = checks
            && let Err(reason) = security(self.domain, host, client.tls_level(), checks)
        {
            let reason = format!("{}: {reason}", client.peer());
            log::warn!("{}: {reason}", self.item.id);
            client.quit().await;
            return Attempt::Next(DeliveryError::temporary(reason));
        }
        let mut client = client;
        let outcome = client.send_mail(self.env, self.item, self.prepend).await;
        self.conclude(host, addr, client, outcome, checks.is_some())
            .await
    }

    /// The transaction over a session kept from an earlier delivery to this address. None
    /// when there is none, or it was closed while idle (the peer's timeout) before the
    /// transaction began: then a new connection is made.
    async fn reuse(
        &self,
        host: &Host,
        addr: SocketAddr,
        checks: Option<&Checks>,
    ) -> Option<Attempt> {
        let mut client = self.courier.connections.take(&host.name, addr)?;
        if let Some(checks) = checks
            && security(self.domain, host, client.tls_level(), checks).is_err()
        {
            // The domain's requirements rose since; the fresh path reports it properly.
            client.quit().await;
            return None;
        }
        match client.send_mail(self.env, self.item, self.prepend).await {
            Err(e) if !e.is_permanent() => {
                log::debug!(
                    "{}: reused session to {} failed: {e}",
                    self.item.id,
                    host.name
                );
                None
            }
            outcome => Some(
                self.conclude(host, addr, client, outcome, checks.is_some())
                    .await,
            ),
        }
    }

    async fn session(
        &self,
        host: &Host,
        addr: SocketAddr,
        tls: &TlsMode,
    ) -> Result<Client, ClientError> {
        let c = self.courier;
        let mut client = Client::connect_tcp(&host.name, addr, c.bind, self.deadlines).await?;
        if let Err(e) = client.hello(Protocol::Smtp, &c.hostname, tls).await {
            if e.stage == Stage::StartTls {
                metrics::outbound_tls_failed();
            }
            return Err(e);
        }
        metrics::outbound_session(client.tls_level().name());
        Ok(client)
    }

    /// Turns a transaction's outcome into the attempt's; a session whose data was accepted is
    /// kept for the next message to this address, any other is ended.
    async fn conclude(
        &self,
        host: &Host,
        addr: SocketAddr,
        client: Client,
        outcome: Result<Vec<Result<(), DeliveryError>>, ClientError>,
        record: bool,
    ) -> Attempt {
        let level = client.tls_level();
        match outcome {
            Ok(results) => {
                if results.iter().any(Result::is_ok) {
                    if let Some(extra) = self.courier.connections.put(&host.name, addr, client) {
                        extra.quit().await;
                    }
                    if record {
                        let info = &self.courier.domaininfo;
                        if let Err(e) = info.record(self.domain, level) {
                            log::warn!("domaininfo: {}: recording {level}: {e}", self.domain);
                        }
                    }
                } else {
                    client.quit().await;
                }
                Attempt::Done(results)
            }
            // 5xx to MAIL (or SMTPUTF8 missing): the sender is refused for good.
            Err(e) if e.is_permanent() => {
                client.quit().await;
                Attempt::Done(vec![Err(e.to_delivery()); self.env.rcpts.len()])
            }
            Err(e) => Attempt::Next(temporary(&e)),
        }
    }
}

/// Failures before the transaction are never final for the message: another host, or a
/// later attempt, may do better (a 554 greeting is one server's opinion).
fn temporary(e: &ClientError) -> DeliveryError {
    DeliveryError {
        permanent: false,
        ..e.to_delivery()
    }
}

fn dns_failure(e: &DnsError) -> DeliveryError {
    DeliveryError {
        permanent: e.is_permanent(),
        reason: e.to_string(),
        spam_refusal: false,
    }
}

/// RFC 8461 §5: in `enforce` mode only the MX hosts the policy names may be used; in
/// `testing` mode the others are only reported.
fn sts_hosts(
    domain: &str,
    names: Vec<String>,
    sts: Option<&Policy>,
) -> Result<Vec<String>, DeliveryError> {
    let Some(policy) = sts else {
        return Ok(names);
    };
    let (allowed, refused): (Vec<String>, Vec<String>) =
        names.into_iter().partition(|n| policy.mx_allowed(n));
    if refused.is_empty() {
        return Ok(allowed);
    }
    if !policy.enforced() {
        log::warn!(
            "mta-sts: {domain}: MX {} not in the policy (testing mode: used anyway)",
            refused.join(", ")
        );
        return Ok(allowed.into_iter().chain(refused).collect());
    }
    log::warn!(
        "mta-sts: {domain}: MX {} not in the enforced policy: skipped",
        refused.join(", ")
    );
    if allowed.is_empty() {
        let reason = format!(
            "{domain}: no MX host matches the MTA-STS policy (mx: {})",
            policy.mx.join(", ")
        );
        return Err(DeliveryError::temporary(reason));
    }
    Ok(allowed)
}

/// Whether the achieved level is good enough for the domain; the reason when not.
fn security(domain: &str, host: &Host, level: TlsLevel, checks: &Checks) -> Result<(), String> {
    if let Some(policy) = &checks.sts
        && level != TlsLevel::Verified
    {
        let msg = format!(
            "MTA-STS policy of {domain} requires TLS verified for {}, got TLS level {}",
            host.name,
            level.name()
        );
        if policy.enforced() {
            return Err(msg);
        }
        log::warn!("mta-sts (testing mode, delivering anyway): {msg}");
    }
    // As chasquid's domaininfo: never go below what the domain has shown it can do.
    if level < checks.min_level {
        return Err(format!(
            "TLS level {} is below the level {} seen before for {domain} \
             (util domaininfo-remove {domain} to reset)",
            level.name(),
            checks.min_level.name()
        ));
    }
    Ok(())
}

/// `host`, `host:port`, `ip`, `ip:port` or `[ipv6]:port`.
fn parse_via(via: &str, default_port: u16) -> Host {
    let host = |name: &str, port| Host {
        name: name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
    };
    if let Ok(addr) = via.parse::<SocketAddr>() {
        return host(&addr.ip().to_string(), addr.port());
    }
    if via.parse::<IpAddr>().is_ok() {
        return host(via, default_port);
    }
    match via.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => match port.parse() {
            Ok(port) => host(name, port),
            Err(_) => host(via, default_port),
        },
        _ => host(via, default_port),
    }
}

/// An address of this machine: one a socket can be bound to.
fn is_local_ip(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::courier::mta_sts::Mode;
    use crate::courier::smtp_client::sink::{Script, Sink, item, pki};
    use std::path::Path;
    use std::time::{Duration, Instant};

    const SHORT: Duration = Duration::from_secs(2);

    fn courier(dir: &Path, dns_server: Option<SocketAddr>, port: u16) -> RemoteCourier {
        // Via-only tests never ask the resolver: point it at a port nobody answers on.
        let server = dns_server.unwrap_or_else(|| "127.0.0.1:9".parse().unwrap());
        let dns = Arc::new(Dns::new(&[server]).unwrap());
        RemoteCourier {
            domaininfo: Arc::new(DomainInfo::open(dir).unwrap()),
            mta_sts: Arc::new(MtaSts::new(dir, dns.clone(), None).unwrap()),
            dns,
            hostname: "tambo.test".into(),
            port,
            bind: None,
            own_listeners: vec![],
            test_roots: None,
            connections: Default::default(),
            deadlines: Deadlines::uniform(SHORT),
            spam: Default::default(),
        }
    }

    fn rcpts(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Delivers a small message to `domain` (or `via`); the outcome per recipient as
    /// "ok" / "temp" / "perm", and the reasons.
    fn deliver(
        c: &RemoteCourier,
        domain: &str,
        via: &[String],
        to: &[&str],
    ) -> (Vec<&'static str>, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let item = item(dir.path(), b"Subject: x\r\n\r\nhello\r\n");
        let to = rcpts(to);
        let env = OutboundEnvelope {
            from: "s@origin.test",
            rcpts: &to,
            smtputf8: false,
            body_8bit: false,
        };
        let results = smol::block_on(c.deliver(domain, via, &env, &item, b""));
        assert_eq!(results.len(), to.len());
        let kind = |r: &Result<(), DeliveryError>| match r {
            Ok(()) => "ok",
            Err(e) if e.permanent => "perm",
            Err(_) => "temp",
        };
        let reasons = results
            .iter()
            .filter_map(|r| r.as_ref().err().map(|e| e.reason.clone()))
            .collect();
        (results.iter().map(kind).collect(), reasons)
    }

    fn via(sinks: &[&Sink]) -> Vec<String> {
        sinks.iter().map(|s| s.addr.to_string()).collect()
    }

    fn closed_port() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    fn script(f: impl FnOnce(&mut Script)) -> Script {
        let mut s = Script::default();
        f(&mut s);
        s
    }

    #[test]
    fn via_hosts_tried_in_order_until_one_takes_it() {
        let dir = tempfile::tempdir().unwrap();
        let busy = Sink::start(script(|s| s.greeting = "421 4.3.2 busy".into()));
        let tempfail = Sink::start(script(|s| s.mail = "451 4.3.0 later".into()));
        let good = Sink::start(Script::default());
        let mut hosts = vec![closed_port().to_string()];
        hosts.extend(via(&[&busy, &tempfail, &good]));
        let c = courier(dir.path(), None, 25);
        let (got, _) = deliver(&c, "dest.test", &hosts, &["a@dest.test", "b@dest.test"]);
        assert_eq!(got, ["ok", "ok"]);
        assert_eq!(busy.sessions().len(), 1);
        assert_eq!(tempfail.sessions().len(), 1);
        let seen = good.sessions();
        assert_eq!(seen.len(), 1);
        let rcpt_lines = seen[0].commands.iter().filter(|c| c.starts_with("RCPT"));
        assert_eq!(rcpt_lines.count(), 2, "one transaction for both");
        assert!(seen[0].data.is_some());
    }

    /// (script tweak, expected outcomes, whether the second host is tried)
    type Case = (fn(&mut Script), &'static [&'static str], bool);

    #[test]
    fn what_stops_at_the_first_host() {
        let cases: &[Case] = &[
            (
                |s| {
                    s.rcpt = vec![
                        "250 ok".into(),
                        "450 4.2.1 later".into(),
                        "550 5.1.1 no such user".into(),
                    ]
                },
                &["ok", "temp", "perm"],
                false,
            ),
            (
                |s| s.mail = "550 5.7.1 sender refused".into(),
                &["perm", "perm", "perm"],
                false,
            ),
            (
                |s| s.data = "451 4.3.0 no".into(),
                &["temp", "temp", "temp"],
                false,
            ),
            (
                |s| s.data = "554 5.3.0 no".into(),
                &["perm", "perm", "perm"],
                false,
            ),
            (
                |s| s.after_data = "452 4.3.1 full".into(),
                &["temp", "temp", "temp"],
                false,
            ),
            (
                |s| s.after_data = "552 5.3.4 too big".into(),
                &["perm", "perm", "perm"],
                false,
            ),
            (
                |s| s.after_data = "<close>".into(),
                &["temp", "temp", "temp"],
                false,
            ),
            (
                |s| s.cut_data_after = Some(10),
                &["temp", "temp", "temp"],
                false,
            ),
            (
                |s| s.after_data = "hello there".into(),
                &["temp", "temp", "temp"],
                false,
            ),
            (
                |s| s.after_data = "<stall>".into(),
                &["temp", "temp", "temp"],
                false,
            ),
            (
                |s| s.greeting = "554 5.3.2 not here".into(),
                &["ok", "ok", "ok"],
                true,
            ),
            (|s| s.ehlo = "<stall>".into(), &["ok", "ok", "ok"], true),
            (|s| s.greeting = "garbage".into(), &["ok", "ok", "ok"], true),
        ];
        let to = ["a@dest.test", "b@dest.test", "c@dest.test"];
        for (i, &(tweak, want, second_tried)) in cases.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let first = Sink::start(script(tweak));
            let second = Sink::start(Script::default());
            let c = courier(dir.path(), None, 25);
            let start = Instant::now();
            let (got, reasons) = deliver(&c, "dest.test", &via(&[&first, &second]), &to);
            assert_eq!(got, want, "case {i}: {reasons:?}");
            assert_eq!(!second.sessions().is_empty(), second_tried, "case {i}");
            assert!(
                start.elapsed() < Duration::from_secs(8),
                "case {i}: deadlines"
            );
            for r in reasons {
                assert!(
                    r.contains(&format!("[127.0.0.1]:{}", first.addr.port())),
                    "{r}"
                );
            }
        }
    }

    #[test]
    fn mail_loops_are_permanent() {
        let dir = tempfile::tempdir().unwrap();
        let us = Sink::start(Script::default());
        let other = Sink::start(Script::default());
        let mut c = courier(dir.path(), None, 25);
        c.own_listeners = vec![us.addr];
        let by_name = vec!["TAMBO.test.:2525".to_string()];
        let (got, reasons) = deliver(&c, "dest.test", &by_name, &["a@dest.test"]);
        assert_eq!(got, ["perm"]);
        assert!(reasons[0].contains("mail loop"), "{reasons:?}");
        let (got, _) = deliver(&c, "dest.test", &via(&[&us]), &["a@dest.test"]);
        assert_eq!(got, ["perm"]);
        assert!(us.sessions().is_empty(), "never connects to itself");
        // An unspecified listen address covers every local address on that port.
        c.own_listeners = vec![SocketAddr::new([0, 0, 0, 0].into(), other.addr.port())];
        let (got, _) = deliver(&c, "dest.test", &via(&[&other]), &["a@dest.test"]);
        assert_eq!(got, ["perm"]);
        // A better host that failed first: hosts from us on are dropped, the failure stays
        // temporary (RFC 5321 §5.1).
        let hosts = vec![closed_port().to_string(), "tambo.test".into()];
        let (got, _) = deliver(&c, "dest.test", &hosts, &["a@dest.test"]);
        assert_eq!(got, ["temp"]);
    }

    #[test]
    fn failed_handshake_is_retried_in_plain_text() {
        let dir = tempfile::tempdir().unwrap();
        let (config, _) = pki("localhost");
        let sink = Sink::start(script(|s| {
            s.tls = Some(config);
            s.broken_tls = true;
        }));
        let c = courier(dir.path(), None, 25);
        let (got, _) = deliver(&c, "dest.test", &via(&[&sink]), &["a@dest.test"]);
        assert_eq!(got, ["ok"]);
        let seen = sink.sessions();
        assert_eq!(seen.len(), 2);
        assert!(seen[0].commands.contains(&"STARTTLS".to_string()));
        assert!(!seen[1].commands.contains(&"STARTTLS".to_string()));
        assert!(seen[1].data.is_some());
    }

    #[test]
    fn via_table() {
        let cases: &[(&str, &str, u16)] = &[
            ("mx.example.com", "mx.example.com", 25),
            ("mx.example.com:2525", "mx.example.com", 2525),
            ("192.0.2.1", "192.0.2.1", 25),
            ("192.0.2.1:587", "192.0.2.1", 587),
            ("2001:db8::1", "2001:db8::1", 25),
            ("[2001:db8::1]:2525", "2001:db8::1", 2525),
            ("[2001:db8::1]", "2001:db8::1", 25),
            ("host:notaport", "host:notaport", 25),
        ];
        for &(input, name, port) in cases {
            let want = Host {
                name: name.into(),
                port,
            };
            assert_eq!(parse_via(input, 25), want, "{input}");
        }
    }

    fn policy(mode: Mode, mx: &[&str]) -> Policy {
        Policy {
            id: "1".into(),
            mode,
            mx: mx.iter().map(|s| s.to_string()).collect(),
            max_age: 86400,
            fetched_at: 0,
        }
    }

    #[test]
    fn sts_host_filter() {
        let names = || rcpts(&["mx1.example.com", "backup.other.net"]);
        let enforce = policy(Mode::Enforce, &["*.example.com"]);
        let testing = policy(Mode::Testing, &["*.example.com"]);
        let nothing = policy(Mode::Enforce, &["mx.elsewhere.org"]);
        let ok = |v: &[&str]| Ok(rcpts(v));
        assert_eq!(
            sts_hosts("example.com", names(), None),
            ok(&["mx1.example.com", "backup.other.net"])
        );
        assert_eq!(
            sts_hosts("example.com", names(), Some(&enforce)),
            ok(&["mx1.example.com"])
        );
        assert_eq!(
            sts_hosts("example.com", names(), Some(&testing)),
            ok(&["mx1.example.com", "backup.other.net"])
        );
        let err = sts_hosts("example.com", names(), Some(&nothing)).unwrap_err();
        assert!(!err.permanent && err.reason.contains("MTA-STS"), "{err:?}");
    }

    #[test]
    fn security_table() {
        use TlsLevel::*;
        let host = Host {
            name: "mx.example.com".into(),
            port: 25,
        };
        let enforce = Some(policy(Mode::Enforce, &["mx.example.com"]));
        let testing = Some(policy(Mode::Testing, &["mx.example.com"]));
        let cases: Vec<(TlsLevel, Option<Policy>, TlsLevel, Option<&str>)> = vec![
            (Plain, None, Plain, None),
            (Plain, None, Insecure, None),
            (Insecure, None, Insecure, None),
            (
                Insecure,
                None,
                Plain,
                Some(
                    "TLS level plain is below the level insecure seen before for example.com (util domaininfo-remove example.com to reset)",
                ),
            ),
            (
                Verified,
                None,
                Insecure,
                Some("TLS level insecure is below the level verified"),
            ),
            (Plain, enforce.clone(), Verified, None),
            (
                Plain,
                enforce.clone(),
                Insecure,
                Some("MTA-STS policy of example.com requires TLS verified"),
            ),
            (Plain, enforce, Plain, Some("got TLS level plain")),
            (Plain, testing.clone(), Insecure, None),
            (
                Verified,
                testing,
                Insecure,
                Some("below the level verified"),
            ),
        ];
        for (min_level, sts, level, want) in cases {
            let checks = Checks { min_level, sts };
            let got = security("example.com", &host, level, &checks);
            match want {
                None => assert_eq!(got, Ok(()), "{min_level:?} {level:?}"),
                Some(w) => {
                    let e = got.unwrap_err();
                    assert!(e.contains(w), "{e}");
                }
            }
        }
    }

    /// A DNS server for `.test` on loopback, or None (with a note) without dnsmasq.
    fn dns(args: &[&str]) -> Option<crate::dns::test_server::DnsServer> {
        crate::dns::test_server::start(args)
    }

    #[test]
    fn mx_order_implicit_mx_and_dns_failures() {
        let first = Sink::start_on(
            "127.0.0.2".parse().unwrap(),
            script(|s| s.greeting = "421 busy".into()),
        );
        let port = first.addr.port();
        let second = Sink::start_at(
            SocketAddr::new("127.0.0.3".parse().unwrap(), port),
            Script::default(),
        );
        let Some(server) = dns(&[
            "--mx-host=order.test,mx1.order.test,10",
            "--mx-host=order.test,mx2.order.test,20",
            "--host-record=mx1.order.test,127.0.0.2",
            "--host-record=mx2.order.test,127.0.0.3",
            "--host-record=implicit.test,127.0.0.3",
            "--mx-host=noaddr.test,nowhere.noaddr.test,10",
        ]) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let c = courier(dir.path(), Some(server.addr), port);
        let (got, reasons) = deliver(&c, "order.test", &[], &["a@order.test"]);
        assert_eq!(got, ["ok"], "{reasons:?}");
        assert_eq!((first.sessions().len(), second.sessions().len()), (1, 1));
        let (got, reasons) = deliver(&c, "implicit.test", &[], &["a@implicit.test"]);
        assert_eq!(got, ["ok"], "{reasons:?}");
        assert_eq!(second.sessions().len(), 2);
        let (got, reasons) = deliver(&c, "nx.test", &[], &["a@nx.test", "b@nx.test"]);
        assert_eq!(got, ["perm", "perm"], "{reasons:?}");
        let (got, reasons) = deliver(&c, "noaddr.test", &[], &["a@noaddr.test"]);
        assert_eq!(got, ["perm"], "{reasons:?}");
    }

    #[test]
    fn a_session_is_reused_for_the_next_message_to_the_same_host() {
        let sink = Sink::start(Script::default());
        let dir = tempfile::tempdir().unwrap();
        let c = courier(dir.path(), None, sink.addr.port());
        for _ in 0..3 {
            let (got, reasons) = deliver(&c, "reuse.test", &via(&[&sink]), &["a@reuse.test"]);
            assert_eq!(got, ["ok"], "{reasons:?}");
        }
        let sessions = sink.sessions();
        assert_eq!(sessions.len(), 1, "one connection for three messages");
        let mails = sessions[0]
            .commands
            .iter()
            .filter(|c| c.starts_with("MAIL"))
            .count();
        assert_eq!(mails, 3);
        // The sweeper's list: nothing is stale yet; the kept session is.
        assert!(c.connections.expired().is_empty());
    }

    #[test]
    fn a_session_closed_while_idle_is_replaced_not_failed() {
        let sink = Sink::start(script(|s| s.close_after_transactions = Some(1)));
        let dir = tempfile::tempdir().unwrap();
        let c = courier(dir.path(), None, sink.addr.port());
        for _ in 0..2 {
            let (got, reasons) = deliver(&c, "stale.test", &via(&[&sink]), &["a@stale.test"]);
            assert_eq!(got, ["ok"], "{reasons:?}");
        }
        assert_eq!(sink.sessions().len(), 2, "the closed session was replaced");
    }

    #[test]
    fn tls_level_is_recorded_and_never_lowered() {
        let ip: IpAddr = "127.0.0.4".parse().unwrap();
        let (config, roots) = pki("mx.tls.test");
        let tls_sink = Sink::start_on(ip, script(|s| s.tls = Some(config)));
        let addr = tls_sink.addr;
        let Some(server) = dns(&[
            "--mx-host=tls.test,mx.tls.test,10",
            "--host-record=mx.tls.test,127.0.0.4",
        ]) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let mut c = courier(dir.path(), Some(server.addr), addr.port());
        c.test_roots = Some(roots);
        let (got, reasons) = deliver(&c, "tls.test", &[], &["a@tls.test"]);
        assert_eq!(got, ["ok"], "{reasons:?}");
        assert!(tls_sink.sessions()[0].tls);
        assert_eq!(c.domaininfo.level("tls.test"), TlsLevel::Verified);
        drop(tls_sink);
        // The MX changed: its old (verified) session, kept for reuse, is gone with it.
        c.connections = Default::default();

        // The same MX without TLS now: refused before MAIL, as a temporary failure.
        let plain = Sink::start_at(addr, Script::default());
        let (got, reasons) = deliver(&c, "tls.test", &[], &["a@tls.test"]);
        assert_eq!(got, ["temp"]);
        assert!(
            reasons[0]
                .contains("TLS level plain is below the level verified seen before for tls.test"),
            "{reasons:?}"
        );
        assert!(
            plain.sessions()[0]
                .commands
                .iter()
                .all(|c| !c.starts_with("MAIL"))
        );
        // `via` skips the check (the admin chose the host).
        let (got, _) = deliver(&c, "tls.test", &via(&[&plain]), &["a@tls.test"]);
        assert_eq!(got, ["ok"]);
        // Forgotten, plain is accepted again.
        assert!(c.domaininfo.remove("tls.test").unwrap());
        let (got, _) = deliver(&c, "tls.test", &[], &["a@tls.test"]);
        assert_eq!(got, ["ok"]);
    }

    #[test]
    fn mx_pointing_at_us() {
        let ip: IpAddr = "127.0.0.5".parse().unwrap();
        let us = Sink::start_on(ip, Script::default());
        let Some(server) = dns(&[
            "--mx-host=loop.test,mx.loop.test,10",
            "--host-record=mx.loop.test,127.0.0.5",
            "--mx-host=named.test,tambo.test,10",
        ]) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let mut c = courier(dir.path(), Some(server.addr), us.addr.port());
        c.own_listeners = vec![us.addr];
        for domain in ["loop.test", "named.test"] {
            let (got, reasons) = deliver(&c, domain, &[], &["a@x.test"]);
            assert_eq!(got, ["perm"], "{domain}");
            assert!(reasons[0].contains("MX points back to us"), "{reasons:?}");
        }
        assert!(us.sessions().is_empty());
    }
}
