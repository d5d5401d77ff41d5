//! `tambo util dns-records / dns-check` (SPEC §4, issue 6): every record a domain needs, as
//! zone-file lines, and the same looked up live with a verdict per record.
//!
//! What is needed is computed once ([`Needs`], from the settings, the DKIM keys and the
//! server's addresses); `dns-records` prints it, `dns-check` judges live answers against it
//! with the pure functions of [`judge`] (one per record kind, unit-tested without DNS).

mod judge;

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use async_compat::Compat;
use mail_auth::SpfResult;
use mail_auth::spf::verify::SpfParameters;

use crate::addr::Domain;
use crate::cli::CliError;
use crate::config::Settings;
use crate::config::domains::domain_dir;
use crate::courier::mta_sts::{self, PolicyFetcher};
use crate::dns::{Dns, reverse_name};
use crate::mailauth::dkim;
use crate::web::autoconfig::MailPorts;
use argh::FromArgs;
use judge::{
    Answer, Finding, Verdict, judge_dkim, judge_dmarc, judge_mta_sts, judge_mta_sts_policy,
    judge_mx, judge_ptr, judge_spf, judge_srv, judge_tls_rpt, no_address,
};

/// Print every DNS record the domain needs (MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, PTR).
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "dns-records",
    help_triggers("-h", "--help", "help")
)]
pub struct DnsRecords {
    /// the domain
    #[argh(positional)]
    pub domain: String,
}

/// Look up live every record dns-records prints and judge each; exit 0 when all are ok.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "dns-check", help_triggers("-h", "--help", "help"))]
pub struct DnsCheck {
    /// the domain
    #[argh(positional)]
    pub domain: String,
}

/// The TTL printed on every record: an hour keeps mistakes cheap to fix.
const TTL: u32 = 3600;
/// The MX preference printed (the only MX, so any value works).
const MX_PREFERENCE: u16 = 10;
/// RFC 1035 §3.3.14: one character-string of a TXT record holds at most 255 octets.
const TXT_STRING_MAX: usize = 255;

pub fn records(settings: &Settings, c: DnsRecords) -> Result<(), CliError> {
    let local = LocalDomain::load(settings, &c.domain)?;
    let dns = resolver(settings)?;
    let addresses = smol::block_on(server_addresses(settings, &dns, &local.hostname));
    let needs = Needs::new(local, addresses);
    // On stderr too: the zone is often redirected to a file or pasted without a look.
    for warning in needs.warnings() {
        eprintln!("warning: {warning}");
    }
    print!("{}", needs.zone());
    Ok(())
}

pub fn check(settings: &Settings, c: DnsCheck) -> Result<(), CliError> {
    let local = LocalDomain::load(settings, &c.domain)?;
    let dns = Arc::new(resolver(settings)?);
    // The system's trust store, as the courier uses when it fetches other domains' policies.
    let fetcher = PolicyFetcher::new(dns.clone(), None)
        .map_err(|e| CliError::failure(format!("dns-check: TLS set-up: {e}")))?;
    let findings = smol::block_on(async {
        let addresses = server_addresses(settings, &dns, &local.hostname).await;
        check_all(&dns, &fetcher, &Needs::new(local, addresses)).await
    });
    for finding in &findings {
        println!("{finding}");
    }
    let judged = findings
        .iter()
        .filter(|f| f.verdict != Verdict::Note)
        .count();
    let bad = findings
        .iter()
        .filter(|f| matches!(f.verdict, Verdict::Missing | Verdict::Wrong))
        .count();
    if bad == 0 {
        println!("all {judged} records ok");
        Ok(())
    } else {
        Err(CliError::failure(format!(
            "dns-check: {bad} of {judged} records are missing or wrong"
        )))
    }
}

/// One domain's `dns-check` verdicts, for the doctor of `serve`: (what was judged, ok), the
/// notes left out.
pub async fn verdicts(
    settings: &Settings,
    dns: &Dns,
    fetcher: &PolicyFetcher,
    domain: &str,
) -> Result<Vec<(String, bool)>, CliError> {
    let local = LocalDomain::load(settings, domain)?;
    let addresses = server_addresses(settings, dns, &local.hostname).await;
    let findings = check_all(dns, fetcher, &Needs::new(local, addresses)).await;
    Ok(findings
        .iter()
        .filter(|f| f.verdict != Verdict::Note)
        .map(|f| (f.what().to_string(), f.verdict == Verdict::Ok))
        .collect())
}

/// Whether the PTR of `ip` names `host` and `host` resolves back to `ip` (forward-confirmed
/// reverse DNS, as receivers check it), as `dns-check` judges it.
pub async fn ptr_ok(dns: &Dns, ip: IpAddr, host: &str) -> bool {
    let host_ips = dns.ips(host).await;
    judge_ptr(ip, &dns.ptr(ip).await, &host_ips, host).verdict == Verdict::Ok
}

fn resolver(settings: &Settings) -> Result<Dns, CliError> {
    Dns::new(&settings.dns_servers).map_err(|e| CliError::failure(e.to_string()))
}

/// A local domain with its DKIM keys and the server's name: the part of [`Needs`] that
/// comes from the config folder alone.
struct LocalDomain {
    /// A-labels (zone files are ASCII).
    domain: String,
    hostname: String,
    dkim: Vec<DkimNeed>,
    mta_sts_mode: &'static str,
    /// The client ports, for the RFC 6186 SRV records.
    ports: MailPorts,
}

struct DkimNeed {
    selector: String,
    /// The key file, relative to the config folder, for the comment.
    file: String,
    value: String,
}

impl LocalDomain {
    /// Bad input (no such domain folder, a key file that is not a key) is a usage error.
    fn load(settings: &Settings, input: &str) -> Result<LocalDomain, CliError> {
        let domain =
            Domain::parse(input).map_err(|e| CliError::usage(format!("{input:?}: {e}")))?;
        let dir = domain_dir(&settings.config_dir, &domain);
        if !dir.is_dir() {
            return Err(CliError::usage(format!(
                "{domain}: not a local domain (no folder {})",
                dir.display()
            )));
        }
        let keys =
            dkim::load_keys(&dir, domain.as_str()).map_err(|e| CliError::usage(e.to_string()))?;
        let dkim = keys
            .iter()
            .map(|key| DkimNeed {
                selector: key.selector.clone(),
                file: relative(&settings.config_dir, &key.path),
                value: dkim::dns_record(key),
            })
            .collect();
        Ok(LocalDomain {
            domain: domain.to_ascii(),
            hostname: ascii_host(&settings.hostname),
            dkim,
            mta_sts_mode: crate::web::mta_sts::mode(settings),
            ports: MailPorts::from_settings(settings),
        })
    }
}

fn relative(base: &Path, path: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A-labels, lower case, no trailing dot; left as typed (lower-cased) when not IDNA-valid,
/// so the output still shows what is configured.
fn ascii_host(name: &str) -> String {
    let name = name.trim_end_matches('.');
    idna::domain_to_ascii(name).unwrap_or_else(|_| name.to_ascii_lowercase())
}

/// The server's addresses, for PTR and SPF: `outbound_bind` when set (mail leaves from
/// there), else whatever `hostname` resolves to.
enum Addresses {
    Configured(Vec<IpAddr>),
    LookedUp(Vec<IpAddr>),
    Unknown(String),
}

impl Addresses {
    fn list(&self) -> &[IpAddr] {
        match self {
            Addresses::Configured(ips) | Addresses::LookedUp(ips) => ips,
            Addresses::Unknown(_) => &[],
        }
    }
}

async fn server_addresses(settings: &Settings, dns: &Dns, hostname: &str) -> Addresses {
    if let Some(ip) = settings.outbound_bind {
        return Addresses::Configured(vec![ip]);
    }
    match dns.ips(hostname).await {
        Ok(ips) => Addresses::LookedUp(ips),
        Err(e) => Addresses::Unknown(e.to_string()),
    }
}

/// Everything the domain needs.
struct Needs {
    local: LocalDomain,
    addresses: Addresses,
}

/// One zone-file record, with the comment that says why it is needed.
struct Record {
    why: String,
    name: String,
    rtype: &'static str,
    data: String,
}

impl Needs {
    fn new(local: LocalDomain, addresses: Addresses) -> Needs {
        Needs { local, addresses }
    }

    fn domain(&self) -> &str {
        &self.local.domain
    }

    fn hostname(&self) -> &str {
        &self.local.hostname
    }

    /// RFC 7208 §5.4 `mx`: our MX sends our mail; §5.6 `ip4`/`ip6` for a configured source
    /// address, which may differ from the MX's; `-all` refuses everyone else.
    fn spf(&self) -> String {
        let mut spf = String::from("v=spf1 mx");
        if let Addresses::Configured(ips) = &self.addresses {
            for ip in ips {
                let mechanism = if ip.is_ipv4() { "ip4" } else { "ip6" };
                let _ = write!(spf, " {mechanism}:{ip}");
            }
        }
        spf.push_str(" -all");
        spf
    }

    /// RFC 7489 §6.3: `quarantine` asks receivers to treat failing mail as suspicious without
    /// losing it; aggregate reports (§7.2) go to postmaster, which always exists (SPEC §7).
    fn dmarc(&self) -> String {
        format!(
            "v=DMARC1; p=quarantine; rua=mailto:postmaster@{}",
            self.domain()
        )
    }

    /// RFC 8460 §3: where senders report TLS failures reaching us.
    fn tls_rpt(&self) -> String {
        format!("v=TLSRPTv1; rua=mailto:postmaster@{}", self.domain())
    }

    /// RFC 8461 §3.2: the policy body, one `key: value` a line (what `https_listen` serves).
    fn mta_sts_policy(&self) -> Vec<String> {
        crate::web::mta_sts::policy_lines(self.local.mta_sts_mode, self.hostname())
    }

    /// RFC 6186 §3 (and RFC 8314 §5.1 for `_submissions`): (service name, port when enabled).
    fn srv_services(&self) -> Vec<(String, Option<u16>)> {
        let p = &self.local.ports;
        let d = self.domain();
        [
            ("_submissions", p.submissions),
            ("_submission", p.submission),
            ("_imaps", p.imaps),
            ("_imap", p.imap),
            ("_pop3s", p.pop3s),
            ("_pop3", p.pop3),
        ]
        .into_iter()
        .map(|(service, port)| (format!("{service}._tcp.{d}"), port))
        .collect()
    }

    fn srv_records(&self) -> Vec<Record> {
        let host = self.hostname();
        self.srv_services()
            .into_iter()
            .map(|(name, port)| match port {
                Some(port) => Record {
                    why: format!(
                        "SRV: mail clients find this service at {host} port {port} (RFC 6186 §3)"
                    ),
                    name,
                    rtype: "SRV",
                    data: format!("0 1 {port} {host}."),
                },
                None => Record {
                    why: "SRV: this service is off here (RFC 6186 §4: target \".\")".into(),
                    name,
                    rtype: "SRV",
                    data: "0 0 0 .".into(),
                },
            })
            .collect()
    }

    /// RFC 8461 §3.1: `id` must change whenever the policy does; a hash of the policy does
    /// that by itself and stays the same between runs.
    fn mta_sts_txt(&self) -> String {
        let policy = self.mta_sts_policy().join("\r\n");
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, policy.as_bytes());
        let id: String = digest.as_ref()[..10]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("v=STSv1; id={id}")
    }

    /// What would make the records printed wrong or incomplete, for the user to fix first.
    fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let host = self.hostname();
        if !host.contains('.') {
            // The default hostname is the machine's short name (`vm`): an MX naming it
            // cannot be resolved by anyone (RFC 5321 §5.1 looks the MX target up).
            out.push(format!(
                "hostname {host:?} is not a fully qualified name: the MX record would point at \
                 a name the world cannot resolve; set \"hostname\" in conf/tambo.json to the \
                 server's public name (e.g. mail.{}) and run this again",
                self.domain()
            ));
        }
        if self.local.dkim.is_empty() {
            out.push(self.no_dkim());
        }
        out
    }

    fn no_dkim(&self) -> String {
        format!(
            "DKIM: {d} has no key yet, so its mail is not signed and there is no DKIM record \
             to publish; add one with: tambo util dkim-keygen {d}",
            d = self.domain()
        )
    }

    fn records(&self) -> Vec<Record> {
        let d = self.domain();
        let mut out = vec![Record {
            why: format!(
                "MX: mail for {d} is delivered to this server, {} (RFC 5321 §5.1)",
                self.hostname()
            ),
            name: d.to_string(),
            rtype: "MX",
            data: format!("{MX_PREFERENCE} {}.", self.hostname()),
        }];
        out.push(Record {
            why: format!("SPF: only our MX may send mail from @{d} (RFC 7208)"),
            name: d.to_string(),
            rtype: "TXT",
            data: txt_data(&self.spf()),
        });
        for key in &self.local.dkim {
            out.push(Record {
                why: format!(
                    "DKIM: public key of {} (selector {}), receivers verify our signatures with it (RFC 6376 §3.6.2)",
                    key.file, key.selector
                ),
                name: format!("{}._domainkey.{d}", key.selector),
                rtype: "TXT",
                data: txt_data(&key.value),
            });
        }
        out.push(Record {
            why: "DMARC: what receivers do with mail failing SPF and DKIM, and where they report (RFC 7489 §6.1)".into(),
            name: format!("_dmarc.{d}"),
            rtype: "TXT",
            data: txt_data(&self.dmarc()),
        });
        out.push(Record {
            why: "MTA-STS: senders must reach our MX over verified TLS; serve the policy above (RFC 8461 §3.1)".into(),
            name: format!("_mta-sts.{d}"),
            rtype: "TXT",
            data: txt_data(&self.mta_sts_txt()),
        });
        out.push(Record {
            why: "TLS-RPT: where senders report TLS failures reaching us (RFC 8460 §3)".into(),
            name: format!("_smtp._tls.{d}"),
            rtype: "TXT",
            data: txt_data(&self.tls_rpt()),
        });
        out.extend(self.srv_records());
        out.extend(self.address_records());
        out
    }

    /// The hostname's A/AAAA (when the address is configured) and the PTR of each address.
    fn address_records(&self) -> Vec<Record> {
        let host = self.hostname();
        let mut out = Vec::new();
        if let Addresses::Configured(ips) = &self.addresses {
            for ip in ips {
                out.push(Record {
                    why: format!("address of {host}: the MX target, and the forward half of forward-confirmed reverse DNS"),
                    name: host.to_string(),
                    rtype: if ip.is_ipv4() { "A" } else { "AAAA" },
                    data: ip.to_string(),
                });
            }
        }
        for ip in self.addresses.list() {
            out.push(Record {
                why: format!("PTR: ask your hosting provider to set the reverse DNS of {ip} to {host} (receivers check it)"),
                name: reverse_name(*ip),
                rtype: "PTR",
                data: format!("{host}."),
            });
        }
        out
    }

    /// The whole output of `dns-records`.
    fn zone(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "; DNS records for {}", self.domain());
        for warning in self.warnings() {
            let _ = writeln!(out, "; warning: {warning}");
        }
        for record in self.records() {
            if record.name.starts_with("_mta-sts.") {
                self.write_policy(&mut out);
            }
            if record.name.starts_with("_dmarc.") && self.local.dkim.is_empty() {
                // Where the DKIM record would be.
                let _ = writeln!(out, "; {}", self.no_dkim());
            }
            let _ = writeln!(out, "; {}", record.why);
            let _ = writeln!(
                out,
                "{}.\t{TTL}\tIN\t{}\t{}",
                record.name, record.rtype, record.data
            );
        }
        if let Addresses::Unknown(reason) = &self.addresses {
            let host = self.hostname();
            let _ = writeln!(
                out,
                "; PTR: the server's address is unknown ({reason}); set outbound_bind or publish an A/AAAA record for {host}, then ask your hosting provider for:"
            );
            let _ = writeln!(
                out,
                "; <reverse name of the server's address>.\t{TTL}\tIN\tPTR\t{host}."
            );
        }
        out
    }

    fn write_policy(&self, out: &mut String) {
        let d = self.domain();
        let _ = writeln!(
            out,
            "; MTA-STS policy: serve as text/plain at https://mta-sts.{d}/.well-known/mta-sts.txt (mta-sts.{d} needs an address and a valid certificate):"
        );
        for line in self.mta_sts_policy() {
            let _ = writeln!(out, ";   {line}");
        }
        if self.local.mta_sts_mode == "testing" {
            let _ = writeln!(
                out,
                "; (mode testing: no certificate in conf/certs/ and no acme; use enforce once one that verifies is installed)"
            );
        }
    }
}

/// A TXT value as zone-file data: quoted character-strings of at most 255 octets each
/// (RFC 1035 §3.3.14), split between characters, with `"` and `\` escaped (§5.1).
fn txt_data(value: &str) -> String {
    let mut strings = Vec::new();
    let mut current = String::new();
    for ch in value.chars() {
        if current.len() + ch.len_utf8() > TXT_STRING_MAX {
            strings.push(std::mem::take(&mut current));
        }
        current.push(ch);
    }
    strings.push(current);
    strings
        .iter()
        .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---- dns-check -----------------------------------------------------------------------------

async fn check_all(dns: &Dns, fetcher: &PolicyFetcher, needs: &Needs) -> Vec<Finding> {
    let d = needs.domain();
    let host = needs.hostname();
    let mut out = vec![judge_mx(&dns.mx(d).await, d, host)];
    let host_ips = dns.ips(host).await;
    let ips = check_addresses(needs, &host_ips);
    let spf_results = evaluate_spf(dns, d, host, &ips).await;
    out.push(judge_spf(d, &dns.txt(d).await, &spf_results, &needs.spf()));
    for key in &needs.local.dkim {
        let name = format!("{}._domainkey.{d}", key.selector);
        out.push(judge_dkim(&name, &dns.txt(&name).await, &key.value));
    }
    let name = format!("_dmarc.{d}");
    out.push(judge_dmarc(&name, &dns.txt(&name).await, &needs.dmarc()));
    let name = format!("_mta-sts.{d}");
    let sts_txt = dns.txt(&name).await;
    out.push(judge_mta_sts(&name, &sts_txt, &needs.mta_sts_txt()));
    if let Some(id) = sts_txt.as_ref().ok().and_then(|r| mta_sts::select_txt(r)) {
        out.push(check_mta_sts_policy(fetcher, needs, &id).await);
    }
    let name = format!("_smtp._tls.{d}");
    out.push(judge_tls_rpt(
        &name,
        &dns.txt(&name).await,
        &needs.tls_rpt(),
    ));
    for (name, port) in needs.srv_services() {
        let expected = match port {
            Some(port) => format!("SRV 0 1 {port} {host}."),
            None => "no SRV record, or SRV 0 0 0 . (service off)".into(),
        };
        let want = port.map(|p| (p, host));
        out.push(judge_srv(&name, &dns.srv(&name).await, want, &expected));
    }
    if ips.is_empty() {
        out.push(no_address(host, &host_ips));
    }
    for ip in ips {
        out.push(judge_ptr(ip, &dns.ptr(ip).await, &host_ips, host));
    }
    out
}

/// The policy a sender would fetch for the domain's published `_mta-sts` record.
async fn check_mta_sts_policy(fetcher: &PolicyFetcher, needs: &Needs, id: &str) -> Finding {
    let d = needs.domain();
    let url = format!("https://mta-sts.{d}/.well-known/mta-sts.txt");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_secs());
    let fetched = fetcher.fetch(d, id, now).await;
    judge_mta_sts_policy(&url, &fetched, needs.hostname(), needs.local.mta_sts_mode)
}

/// The addresses whose PTR matters: the MX's (hostname's) and `outbound_bind`.
fn check_addresses(needs: &Needs, host_ips: &Answer<IpAddr>) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = needs.addresses.list().to_vec();
    for ip in host_ips.iter().flatten() {
        if !ips.contains(ip) {
            ips.push(*ip);
        }
    }
    ips
}

/// SPF as a receiver would evaluate it for mail from postmaster@domain sent from each of our
/// addresses (RFC 7208 §4), through mail-auth on the same resolver.
async fn evaluate_spf(
    dns: &Dns,
    domain: &str,
    host: &str,
    ips: &[IpAddr],
) -> Vec<(IpAddr, SpfResult)> {
    let sender = format!("postmaster@{domain}");
    let mut results = Vec::new();
    for ip in ips {
        let params = SpfParameters::verify_mail_from(*ip, host, host, &sender);
        let output = Compat::new(dns.authenticator().verify_spf(params)).await;
        results.push((*ip, output.result()));
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::courier::mta_sts;
    use crate::dns::DnsError;

    fn needs(addresses: Addresses, dkim: Vec<DkimNeed>, mode: &'static str) -> Needs {
        Needs::new(
            LocalDomain {
                domain: "example.test".into(),
                hostname: "mx.example.test".into(),
                dkim,
                mta_sts_mode: mode,
                ports: MailPorts {
                    submissions: Some(465),
                    submission: Some(587),
                    imaps: Some(993),
                    ..Default::default()
                },
            },
            addresses,
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn txt_data_splits_at_255_octets_and_escapes() {
        let long = "a".repeat(600);
        let cases: &[(&str, String)] = &[
            ("v=spf1 mx -all", "\"v=spf1 mx -all\"".into()),
            ("", "\"\"".into()),
            ("say \"hi\" \\", "\"say \\\"hi\\\" \\\\\"".into()),
            (
                &long,
                format!(
                    "\"{}\" \"{}\" \"{}\"",
                    "a".repeat(255),
                    "a".repeat(255),
                    "a".repeat(90)
                ),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(&txt_data(input), want, "{input}");
        }
        // A multi-byte character is never cut in half.
        let mixed = format!("{}é", "a".repeat(254));
        assert_eq!(txt_data(&mixed), format!("\"{}\" \"é\"", "a".repeat(254)));
    }

    #[test]
    fn spf_with_and_without_outbound_bind() {
        let cases = [
            (Addresses::Unknown("x".into()), "v=spf1 mx -all"),
            (Addresses::LookedUp(vec![ip("192.0.2.1")]), "v=spf1 mx -all"),
            (
                Addresses::Configured(vec![ip("203.0.113.5")]),
                "v=spf1 mx ip4:203.0.113.5 -all",
            ),
            (
                Addresses::Configured(vec![ip("2001:db8::5")]),
                "v=spf1 mx ip6:2001:db8::5 -all",
            ),
        ];
        for (addresses, want) in cases {
            assert_eq!(needs(addresses, vec![], "enforce").spf(), want);
        }
    }

    #[test]
    fn zone_has_every_record_each_after_one_comment() {
        let long_key = format!("v=DKIM1; k=rsa; p={}", "A".repeat(380));
        let dkim = vec![DkimNeed {
            selector: "sel1".into(),
            file: "domains/example.test/dkim:sel1.pem".into(),
            value: long_key.clone(),
        }];
        let n = needs(
            Addresses::Configured(vec![ip("203.0.113.5")]),
            dkim,
            "enforce",
        );
        let zone = n.zone();
        let lines: Vec<&str> = zone.lines().collect();
        let want = [
            "example.test.\t3600\tIN\tMX\t10 mx.example.test.",
            "example.test.\t3600\tIN\tTXT\t\"v=spf1 mx ip4:203.0.113.5 -all\"",
            "_dmarc.example.test.\t3600\tIN\tTXT\t\"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.test\"",
            "_smtp._tls.example.test.\t3600\tIN\tTXT\t\"v=TLSRPTv1; rua=mailto:postmaster@example.test\"",
            "mx.example.test.\t3600\tIN\tA\t203.0.113.5",
            "5.113.0.203.in-addr.arpa.\t3600\tIN\tPTR\tmx.example.test.",
            ";   mode: enforce",
            ";   mx: mx.example.test",
            ";   max_age: 604800",
            "_submissions._tcp.example.test.\t3600\tIN\tSRV\t0 1 465 mx.example.test.",
            "_submission._tcp.example.test.\t3600\tIN\tSRV\t0 1 587 mx.example.test.",
            "_imaps._tcp.example.test.\t3600\tIN\tSRV\t0 1 993 mx.example.test.",
            "_imap._tcp.example.test.\t3600\tIN\tSRV\t0 0 0 .",
            "_pop3._tcp.example.test.\t3600\tIN\tSRV\t0 0 0 .",
        ];
        for w in want {
            assert!(lines.contains(&w), "missing {w:?} in\n{zone}");
        }
        let dkim_line = lines
            .iter()
            .find(|l| l.starts_with("sel1._domainkey.example.test.\t3600\tIN\tTXT\t\""))
            .expect("DKIM record");
        let strings: Vec<&str> = dkim_line
            .split('\t')
            .next_back()
            .unwrap()
            .split("\" \"")
            .collect();
        assert_eq!(strings.len(), 2, "{dkim_line}");
        assert_eq!(strings.concat().trim_matches('"'), long_key);
        // Every record line is preceded by exactly one `;` comment.
        for (i, line) in lines.iter().enumerate().skip(1) {
            if !line.starts_with(';') {
                assert!(lines[i - 1].starts_with("; "), "no comment before {line:?}");
            }
        }
        let records = lines.iter().filter(|l| !l.starts_with(';')).count();
        // MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, 6 SRV, A, PTR.
        assert_eq!(records, 14, "{zone}");
    }

    #[test]
    fn mta_sts_policy_parses_and_id_follows_it() {
        let a = needs(Addresses::Unknown("x".into()), vec![], "enforce");
        let b = needs(Addresses::Unknown("x".into()), vec![], "testing");
        let policy = mta_sts::parse_policy(&a.mta_sts_policy().join("\r\n"), "id", 0).unwrap();
        assert!(policy.enforced());
        assert!(policy.mx_allowed("mx.example.test"));
        assert_eq!(policy.max_age, crate::web::mta_sts::MAX_AGE);
        let id_a = mta_sts::parse_txt(&a.mta_sts_txt()).expect("valid STSv1 record");
        let id_b = mta_sts::parse_txt(&b.mta_sts_txt()).expect("valid STSv1 record");
        assert_ne!(id_a, id_b, "the id changes with the policy");
        assert_eq!(
            id_a,
            mta_sts::parse_txt(&a.mta_sts_txt()).unwrap(),
            "and only then"
        );
    }

    /// dns-check fetches the policy of a published `_mta-sts` record as a sender would: from
    /// a real HTTPS server (a test CA), found through a real DNS server (dnsmasq).
    #[test]
    fn the_served_mta_sts_policy_is_fetched_and_judged() {
        use crate::courier::mta_sts::tests::fixture::{self, TestCa, reply};
        const IP: [u8; 4] = [127, 0, 8, 9];
        let ca = TestCa::new();
        let Some(server) = fixture::start(IP, &ca.leaf("mta-sts.example.test")) else {
            return;
        };
        let Some(dns_server) =
            crate::dns::test_server::start(&["--address=/mta-sts.example.test/127.0.8.9"])
        else {
            return;
        };
        let dns = Arc::new(Dns::new(&[dns_server.addr]).unwrap());
        let fetcher = PolicyFetcher::new(dns, Some(ca.roots())).unwrap();
        let n = needs(Addresses::Configured(vec![]), vec![], "enforce");
        let ours = "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 604800\n";
        // Another MX only: senders that enforce would refuse us.
        let other = "version: STSv1\nmode: enforce\nmx: mx1.example.test\nmax_age: 86400\n";
        let cases = [
            (
                reply("200 OK", "text/plain", ours),
                Verdict::Ok,
                "mode enforce, mx mx.example.test",
            ),
            (
                reply("200 OK", "text/plain", other),
                Verdict::Wrong,
                "does not cover mx.example.test",
            ),
            (
                reply("200 OK", "text/plain", "version: STSv1\nmode: sometimes\n"),
                Verdict::Wrong,
                "invalid mode",
            ),
            (
                reply("404 Not Found", "text/plain", "no"),
                Verdict::Note,
                "404",
            ),
        ];
        for (body, verdict, text) in cases {
            server.set(body);
            let f = smol::block_on(check_mta_sts_policy(&fetcher, &n, "1"));
            assert_eq!(f.verdict, verdict, "{f}");
            assert!(f.to_string().contains(text), "{f}");
        }
        assert_eq!(server.hits(), 4);
    }

    #[test]
    fn unknown_address_gets_a_placeholder() {
        let zone = needs(
            Addresses::Unknown("mx.example.test: no such domain".into()),
            vec![],
            "testing",
        )
        .zone();
        assert!(
            zone.contains(
                "; PTR: the server's address is unknown (mx.example.test: no such domain)"
            ),
            "{zone}"
        );
        assert!(zone.contains(
            "; <reverse name of the server's address>.\t3600\tIN\tPTR\tmx.example.test."
        ));
        assert!(
            !zone
                .lines()
                .any(|l| l.contains("\tPTR\t") && !l.starts_with(';'))
        );
        assert!(zone.contains("(mode testing: no certificate"), "{zone}");
    }

    #[test]
    fn warnings_for_a_short_hostname_and_no_dkim_key() {
        let key = || DkimNeed {
            selector: "sel1".into(),
            file: "domains/example.test/dkim:sel1.pem".into(),
            value: "v=DKIM1; k=ed25519; p=AAAA".into(),
        };
        let with_host = |host: &str, dkim: Vec<DkimNeed>| {
            let mut n = needs(Addresses::Unknown("x".into()), dkim, "testing");
            n.local.hostname = host.into();
            n
        };
        let short = "hostname \"vm\" is not a fully qualified name";
        let no_key = "add one with: tambo util dkim-keygen example.test";
        let cases: &[(&str, bool, &[&str])] = &[
            ("mx.example.test", true, &[]),
            ("vm", true, &[short]),
            ("mx.example.test", false, &[no_key]),
            ("vm", false, &[short, no_key]),
        ];
        for (host, has_key, want) in cases {
            let dkim = if *has_key { vec![key()] } else { vec![] };
            let n = with_host(host, dkim);
            let warnings = n.warnings();
            assert_eq!(warnings.len(), want.len(), "{host}: {warnings:?}");
            for (warning, want) in warnings.iter().zip(want.iter()) {
                assert!(warning.contains(want), "{warning}");
            }
            // Each as a `;` comment in the zone, which still parses as zone-file lines.
            let zone = n.zone();
            for warning in &warnings {
                assert!(zone.contains(&format!("; warning: {warning}\n")), "{zone}");
            }
        }
        let zone = with_host("vm", vec![]).zone();
        assert!(zone.contains("\tMX\t10 vm."), "{zone}");
        assert!(
            zone.contains("set \"hostname\" in conf/tambo.json"),
            "{zone}"
        );
        // The DKIM note also stands where the record would be, before DMARC's.
        let lines: Vec<&str> = zone.lines().collect();
        let dmarc = lines.iter().position(|l| l.starts_with("; DMARC")).unwrap();
        assert!(lines[dmarc - 1].contains(no_key), "{zone}");
        assert!(!zone.contains("_domainkey"), "{zone}");
    }

    #[test]
    fn check_addresses_merge_bind_and_hostname() {
        let n = needs(
            Addresses::Configured(vec![ip("192.0.2.5")]),
            vec![],
            "enforce",
        );
        let host: Answer<IpAddr> = Ok(vec![ip("192.0.2.2"), ip("192.0.2.5")]);
        assert_eq!(
            check_addresses(&n, &host),
            [ip("192.0.2.5"), ip("192.0.2.2")]
        );
        let none: Answer<IpAddr> = Err(DnsError::NotFound("h".into()));
        assert_eq!(check_addresses(&n, &none), [ip("192.0.2.5")]);
    }
}
