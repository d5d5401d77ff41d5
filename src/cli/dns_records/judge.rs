//! Verdicts of `dns-check`: one pure function per record kind, from what DNS answered to
//! ok / missing / wrong with what was found and what is expected.

use std::net::IpAddr;

use mail_auth::SpfResult;

use super::MX_PREFERENCE;
use crate::courier::mta_sts;
use crate::dns::{DnsError, reverse_name};

/// What one lookup answered: the records, or why there are none.
pub(super) type Answer<T> = Result<Vec<T>, DnsError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Ok,
    Missing,
    Wrong,
    /// Worth knowing, not a record that is missing or wrong (not counted either way).
    Note,
}

/// One record's verdict, with what was found and (when not ok) what is expected.
#[derive(Debug)]
pub(super) struct Finding {
    pub(super) verdict: Verdict,
    what: String,
    found: String,
    expected: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.verdict {
            Verdict::Ok => write!(f, "ok      {}: {}", self.what, self.found),
            Verdict::Missing => write!(
                f,
                "missing {}: found {}; expected {}",
                self.what, self.found, self.expected
            ),
            Verdict::Wrong => write!(
                f,
                "wrong   {}: found {}; expected {}",
                self.what, self.found, self.expected
            ),
            Verdict::Note => write!(f, "note    {}: {}", self.what, self.found),
        }
    }
}

impl Finding {
    /// What was judged: `MX example.com`, `SRV _imaps._tcp.example.com`.
    pub(super) fn what(&self) -> &str {
        &self.what
    }
}

fn finding(verdict: Verdict, what: &str, found: String, expected: &str) -> Finding {
    Finding {
        verdict,
        what: what.to_string(),
        found,
        expected: expected.to_string(),
    }
}

/// "nothing", the error, or the records found, quoted.
fn describe_txt(found: &Answer<String>) -> String {
    match found {
        Ok(records) if records.is_empty() => "no TXT record".to_string(),
        Ok(records) => records
            .iter()
            .map(|r| format!("{r:?}"))
            .collect::<Vec<_>>()
            .join(", "),
        Err(DnsError::Temporary(_, why)) => format!("no answer ({why})"),
        Err(_) => "nothing (no such name)".to_string(),
    }
}

/// The records whose first tag is `v=<version>` (each RFC discards the others).
fn versioned<'a>(found: &'a Answer<String>, version: &str) -> Vec<&'a String> {
    found
        .iter()
        .flatten()
        .filter(|r| {
            r.split(';')
                .next()
                .is_some_and(|first| first.trim() == version)
        })
        .collect()
}

/// `tag=value` pairs of a DKIM/DMARC/TLS-RPT style record (RFC 6376 §3.2), trimmed.
fn tags(record: &str) -> Vec<(&str, &str)> {
    record
        .split(';')
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect()
}

fn tag<'a>(record: &'a str, name: &str) -> Option<&'a str> {
    tags(record)
        .into_iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Ok when `hostname` is one of the MX hosts (others may be backups).
pub(super) fn judge_mx(found: &Answer<String>, domain: &str, host: &str) -> Finding {
    let what = format!("MX {domain}");
    let expected = format!("MX {MX_PREFERENCE} {host}");
    match found {
        Ok(hosts) if hosts.iter().any(|h| h == host) => {
            finding(Verdict::Ok, &what, hosts.join(", "), &expected)
        }
        Ok(hosts) if !hosts.is_empty() => {
            finding(Verdict::Wrong, &what, hosts.join(", "), &expected)
        }
        Err(DnsError::NullMx(_)) => finding(
            Verdict::Wrong,
            &what,
            "a null MX (no mail accepted)".into(),
            &expected,
        ),
        Err(DnsError::Temporary(_, why)) => finding(
            Verdict::Missing,
            &what,
            format!("no answer ({why})"),
            &expected,
        ),
        _ => finding(Verdict::Missing, &what, "no MX record".into(), &expected),
    }
}

/// Ok when there is exactly one `v=spf1` record (RFC 7208 §4.5: more is a permerror) and it
/// passes for each of our addresses; with no address known, when it has the `mx` mechanism.
pub(super) fn judge_spf(
    domain: &str,
    found: &Answer<String>,
    results: &[(IpAddr, SpfResult)],
    expected: &str,
) -> Finding {
    let what = &format!("SPF {domain}");
    let expected = &format!("{expected:?}");
    let spf = versioned_spf(found);
    let record = match spf.as_slice() {
        [] => return finding(Verdict::Missing, what, describe_txt(found), expected),
        [one] => one,
        _ => {
            let found = format!("{} v=spf1 records (a permerror)", spf.len());
            return finding(Verdict::Wrong, what, found, expected);
        }
    };
    let problem = if results.is_empty() {
        let has_mx = record.split_whitespace().any(|t| t == "mx" || t == "+mx");
        (!has_mx).then(|| "which has no mx mechanism".to_string())
    } else {
        let failing: Vec<String> = results
            .iter()
            .filter(|(_, r)| *r != SpfResult::Pass)
            .map(|(ip, r)| format!("{ip}: {}", spf_name(r)))
            .collect();
        (!failing.is_empty())
            .then(|| format!("which does not authorise us ({})", failing.join(", ")))
    };
    match problem {
        None => finding(Verdict::Ok, what, format!("{record:?}"), expected),
        Some(why) => finding(Verdict::Wrong, what, format!("{record:?}, {why}"), expected),
    }
}

/// The result names of RFC 7208 §2.6 (mail-auth's Display capitalises them).
fn spf_name(result: &SpfResult) -> &'static str {
    match result {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

/// RFC 7208 §4.5: `v=spf1` then a space or the end; other TXT records are not SPF.
fn versioned_spf(found: &Answer<String>) -> Vec<&String> {
    found
        .iter()
        .flatten()
        .filter(|r| {
            let lower = r.to_ascii_lowercase();
            lower == "v=spf1" || lower.starts_with("v=spf1 ")
        })
        .collect()
}

/// Ok when one record at the name has our public key in `p=` (base64, whitespace ignored:
/// RFC 6376 §3.6.1) and our `k=` (default `rsa`).
pub(super) fn judge_dkim(name: &str, found: &Answer<String>, ours: &str) -> Finding {
    let what = format!("DKIM {name}");
    let expected = format!("{ours:?}");
    let key_of = |record: &str| {
        let p = tag(record, "p").map(|p| p.split_whitespace().collect::<String>());
        (tag(record, "k").unwrap_or("rsa").to_ascii_lowercase(), p)
    };
    let want = key_of(ours);
    let records: Vec<&String> = found
        .iter()
        .flatten()
        .filter(|r| tag(r, "p").is_some())
        .collect();
    match records.as_slice() {
        [] => finding(Verdict::Missing, &what, describe_txt(found), &expected),
        [one] if key_of(one) == want => finding(Verdict::Ok, &what, "our key".into(), &expected),
        [one] => finding(
            Verdict::Wrong,
            &what,
            format!("another key: {one:?}"),
            &expected,
        ),
        many => {
            let found = format!("{} key records (verifiers may pick any)", many.len());
            finding(Verdict::Wrong, &what, found, &expected)
        }
    }
}

fn fqdn(host: &str) -> String {
    if host == "." {
        ".".into()
    } else {
        format!("{host}.")
    }
}

/// RFC 6186 §3: an enabled service's SRV record points at `host` and its port; §4: a
/// disabled one has none, or the target "." (RFC 2782: not available here).
pub(super) fn judge_srv(
    name: &str,
    found: &Answer<(u16, u16, u16, String)>,
    want: Option<(u16, &str)>,
    expected: &str,
) -> Finding {
    let what = format!("SRV {name}");
    let describe = |records: &[(u16, u16, u16, String)]| {
        records
            .iter()
            .map(|(p, w, port, t)| format!("{p} {w} {port} {}", fqdn(t)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let records = match found {
        Ok(records) => records.as_slice(),
        Err(DnsError::Temporary(_, why)) => {
            let found = format!("no answer ({why})");
            return finding(Verdict::Missing, &what, found, expected);
        }
        Err(_) => &[],
    };
    match want {
        Some((port, host)) => {
            if records.iter().any(|(_, _, p, t)| *p == port && t == host) {
                finding(Verdict::Ok, &what, describe(records), expected)
            } else if records.is_empty() {
                finding(Verdict::Missing, &what, "no SRV record".into(), expected)
            } else {
                finding(Verdict::Wrong, &what, describe(records), expected)
            }
        }
        None if records.iter().all(|(_, _, _, t)| t == ".") => {
            let found = if records.is_empty() {
                "no SRV record (service off)".to_string()
            } else {
                describe(records)
            };
            finding(Verdict::Ok, &what, found, expected)
        }
        // A client would be sent to a port nothing answers on.
        None => finding(Verdict::Wrong, &what, describe(records), expected),
    }
}

/// RFC 7489 §6.6.3: exactly one `v=DMARC1` record, with a valid `p=` (§6.3).
pub(super) fn judge_dmarc(name: &str, found: &Answer<String>, ours: &str) -> Finding {
    let what = format!("DMARC {name}");
    let expected = format!("{ours:?} (any p=)");
    match versioned(found, "v=DMARC1").as_slice() {
        [] => finding(Verdict::Missing, &what, describe_txt(found), &expected),
        [one] => {
            let p = tag(one, "p").map(str::to_ascii_lowercase);
            let valid = matches!(p.as_deref(), Some("none" | "quarantine" | "reject"));
            let verdict = if valid { Verdict::Ok } else { Verdict::Wrong };
            finding(verdict, &what, format!("{one:?}"), &expected)
        }
        many => {
            let found = format!(
                "{} v=DMARC1 records (receivers then apply none)",
                many.len()
            );
            finding(Verdict::Wrong, &what, found, &expected)
        }
    }
}

/// RFC 8461 §3.1: exactly one `v=STSv1` record, with an `id` of 1-32 letters and digits.
/// Any id is fine: it only has to change with the policy.
pub(super) fn judge_mta_sts(name: &str, found: &Answer<String>, ours: &str) -> Finding {
    let what = format!("MTA-STS {name}");
    let expected = format!("{ours:?} (any id)");
    match versioned(found, "v=STSv1").as_slice() {
        [] => finding(Verdict::Missing, &what, describe_txt(found), &expected),
        [one] if mta_sts::parse_txt(one).is_some() => {
            finding(Verdict::Ok, &what, format!("{one:?}"), &expected)
        }
        [one] => finding(
            Verdict::Wrong,
            &what,
            format!("{one:?} (invalid id)"),
            &expected,
        ),
        many => {
            let found = format!(
                "{} v=STSv1 records (senders then apply no policy)",
                many.len()
            );
            finding(Verdict::Wrong, &what, found, &expected)
        }
    }
}

/// The policy served for a published `_mta-sts` record (RFC 8461 §3.2–3.3, §4.1), fetched
/// as senders fetch it. Not served: a note only, since senders then apply no policy (§5.1)
/// and `dns-check` judges DNS records. Served: it must parse, list our MX host name (or
/// senders that enforce it refuse to deliver to us), and not be `enforce` while we present
/// a self-signed certificate (`ours_mode` "testing").
pub(super) fn judge_mta_sts_policy(
    url: &str,
    fetched: &Result<mta_sts::Policy, mta_sts::FetchError>,
    host: &str,
    ours_mode: &str,
) -> Finding {
    let what = format!("MTA-STS policy {url}");
    let expected = format!("mode: {ours_mode}, mx: {host}");
    let policy = match fetched {
        Ok(policy) => policy,
        // Served, but not as a policy senders can use.
        Err(
            why @ (mta_sts::FetchError::Policy { .. } | mta_sts::FetchError::ContentType { .. }),
        ) => return finding(Verdict::Wrong, &what, why.to_string(), &expected),
        Err(why) => {
            let found = format!("not served ({why}); senders apply no policy until it is");
            return finding(Verdict::Note, &what, found, &expected);
        }
    };
    let mode = match policy.mode {
        mta_sts::Mode::Enforce => "enforce",
        mta_sts::Mode::Testing => "testing",
        mta_sts::Mode::None => "none",
    };
    let found = format!(
        "mode {mode}, mx {}, max_age {}",
        policy.mx.join(" "),
        policy.max_age
    );
    // Mode none withdraws the policy (RFC 8461 §5): its mx lines no longer matter.
    if policy.mode != mta_sts::Mode::None && !policy.mx_allowed(host) {
        let found = format!("{found} (does not cover {host}: senders that enforce refuse us)");
        return finding(Verdict::Wrong, &what, found, &expected);
    }
    if policy.enforced() && ours_mode != "enforce" {
        let found = format!(
            "{found} (enforce, but without a certificate under conf/certs/ we present a \
             self-signed one, which senders that enforce refuse)"
        );
        return finding(Verdict::Wrong, &what, found, &expected);
    }
    finding(Verdict::Ok, &what, found, &expected)
}

/// RFC 8460 §3: exactly one `v=TLSRPTv1` record whose `rua` lists `mailto:` or `https:`
/// URIs.
pub(super) fn judge_tls_rpt(name: &str, found: &Answer<String>, ours: &str) -> Finding {
    let what = format!("TLS-RPT {name}");
    let expected = format!("{ours:?} (any rua)");
    match versioned(found, "v=TLSRPTv1").as_slice() {
        [] => finding(Verdict::Missing, &what, describe_txt(found), &expected),
        [one] => {
            let valid = tag(one, "rua").is_some_and(|rua| {
                rua.split(',')
                    .map(str::trim)
                    .all(|uri| uri.starts_with("mailto:") || uri.starts_with("https:"))
            });
            let verdict = if valid { Verdict::Ok } else { Verdict::Wrong };
            finding(verdict, &what, format!("{one:?}"), &expected)
        }
        many => {
            let found = format!("{} v=TLSRPTv1 records", many.len());
            finding(Verdict::Wrong, &what, found, &expected)
        }
    }
}

/// Forward-confirmed reverse DNS (RFC 8601 §3 "iprev"): a PTR of `ip` is `host`, and `host`
/// resolves back to `ip`.
pub(super) fn judge_ptr(
    ip: IpAddr,
    ptr: &Answer<String>,
    host_ips: &Answer<IpAddr>,
    host: &str,
) -> Finding {
    let what = format!("PTR {} ({ip})", reverse_name(ip));
    let expected = format!("{host}, which resolves back to {ip} (ask your hosting provider)");
    let names = match ptr {
        Ok(names) if !names.is_empty() => names,
        Err(DnsError::Temporary(_, why)) => {
            return finding(
                Verdict::Missing,
                &what,
                format!("no answer ({why})"),
                &expected,
            );
        }
        _ => return finding(Verdict::Missing, &what, "no PTR record".into(), &expected),
    };
    let found = names.join(", ");
    if !names.iter().any(|n| n == host) {
        return finding(Verdict::Wrong, &what, found, &expected);
    }
    match host_ips {
        Ok(ips) if ips.contains(&ip) => finding(Verdict::Ok, &what, found, &expected),
        Ok(ips) => {
            let ips: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
            let found = format!("{found}, but {host} resolves to {}", ips.join(", "));
            finding(Verdict::Wrong, &what, found, &expected)
        }
        Err(e) => finding(
            Verdict::Wrong,
            &what,
            format!("{found}, but {e}"),
            &expected,
        ),
    }
}

/// Neither `outbound_bind` nor an address of `hostname`: no PTR can be checked.
pub(super) fn no_address(host: &str, host_ips: &Answer<IpAddr>) -> Finding {
    let found = match host_ips {
        Err(e) => e.to_string(),
        Ok(_) => format!("{host}: no address"),
    };
    let expected = format!("an A/AAAA record for {host}, and a PTR of that address to {host}");
    finding(
        Verdict::Missing,
        &format!("address of {host}"),
        found,
        &expected,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn txt(records: &[&str]) -> Answer<String> {
        Ok(records.iter().map(|r| r.to_string()).collect())
    }

    fn nx() -> Answer<String> {
        Err(DnsError::NotFound("x".into()))
    }

    const RSA_P: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA";

    #[test]
    fn judge_mta_sts_policy_table() {
        use mta_sts::{FetchError, Mode, Policy, PolicyError};
        let policy = |mode, mx: &[&str]| {
            Ok(Policy {
                id: "1".into(),
                mode,
                mx: mx.iter().map(|m| m.to_string()).collect(),
                max_age: 604_800,
                fetched_at: 0,
            })
        };
        let host = "mx.example.test";
        let url = "https://mta-sts.example.test/.well-known/mta-sts.txt";
        let cases: Vec<(Result<Policy, FetchError>, &str, Verdict)> = vec![
            (policy(Mode::Enforce, &[host]), "enforce", Verdict::Ok),
            (
                policy(Mode::Enforce, &["*.example.test"]),
                "enforce",
                Verdict::Ok,
            ),
            (policy(Mode::Testing, &[host]), "testing", Verdict::Ok),
            (policy(Mode::Testing, &[host]), "enforce", Verdict::Ok),
            (
                policy(Mode::None, &["mx.other.test"]),
                "enforce",
                Verdict::Ok,
            ),
            // Senders that enforce would refuse our MX, or our self-signed certificate.
            (
                policy(Mode::Enforce, &["mx.other.test"]),
                "enforce",
                Verdict::Wrong,
            ),
            (
                policy(Mode::Testing, &["*.other.test"]),
                "testing",
                Verdict::Wrong,
            ),
            (policy(Mode::Enforce, &[host]), "testing", Verdict::Wrong),
            (
                Err(FetchError::Policy {
                    host: "mta-sts.example.test".into(),
                    source: PolicyError::Missing("mode"),
                }),
                "enforce",
                Verdict::Wrong,
            ),
            (
                Err(FetchError::Timeout {
                    host: "mta-sts.example.test".into(),
                }),
                "enforce",
                Verdict::Note,
            ),
        ];
        for (fetched, ours, want) in &cases {
            let got = judge_mta_sts_policy(url, fetched, host, ours);
            assert_eq!(got.verdict, *want, "{got}");
        }
        let ok = judge_mta_sts_policy(url, &cases[0].0, host, "enforce").to_string();
        assert_eq!(
            ok,
            format!("ok      MTA-STS policy {url}: mode enforce, mx {host}, max_age 604800")
        );
        let note = judge_mta_sts_policy(url, &cases[9].0, host, "enforce").to_string();
        assert!(note.starts_with("note    MTA-STS policy"), "{note}");
        assert!(
            note.contains("senders apply no policy until it is"),
            "{note}"
        );
    }

    #[test]
    fn judge_mx_table() {
        let h = |v: &[&str]| Ok(v.iter().map(|s| s.to_string()).collect());
        let cases: &[(Answer<String>, Verdict)] = &[
            (h(&["mx.example.test"]), Verdict::Ok),
            (h(&["backup.example.net", "mx.example.test"]), Verdict::Ok),
            (h(&["other.example.net"]), Verdict::Wrong),
            (h(&[]), Verdict::Missing),
            (Err(DnsError::NotFound("d".into())), Verdict::Missing),
            (Err(DnsError::NullMx("d".into())), Verdict::Wrong),
            (
                Err(DnsError::Temporary("d".into(), "timeout".into())),
                Verdict::Missing,
            ),
        ];
        for (found, want) in cases {
            let f = judge_mx(found, "example.test", "mx.example.test");
            assert_eq!(f.verdict, *want, "{found:?}: {f}");
        }
    }

    #[test]
    fn judge_spf_table() {
        let us = ip("192.0.2.2");
        let pass = [(us, SpfResult::Pass)];
        let fail = [(us, SpfResult::Fail)];
        type Case<'a> = (Answer<String>, &'a [(IpAddr, SpfResult)], Verdict);
        let cases: &[Case] = &[
            (txt(&["v=spf1 mx -all"]), &pass, Verdict::Ok),
            (
                txt(&["google-site-verification=x", "v=spf1 mx -all"]),
                &pass,
                Verdict::Ok,
            ),
            (txt(&["v=spf1 -all"]), &fail, Verdict::Wrong),
            (
                txt(&["v=spf1 mx -all", "v=spf1 a -all"]),
                &pass,
                Verdict::Wrong,
            ),
            (txt(&["v=spf10 mx"]), &pass, Verdict::Missing),
            (txt(&[]), &pass, Verdict::Missing),
            (nx(), &pass, Verdict::Missing),
            // No address known: the `mx` mechanism is what we can check.
            (txt(&["v=spf1 mx -all"]), &[], Verdict::Ok),
            (txt(&["v=spf1 -all"]), &[], Verdict::Wrong),
        ];
        for (found, results, want) in cases {
            let f = judge_spf("example.test", found, results, "v=spf1 mx -all");
            assert_eq!(f.verdict, *want, "{found:?} {results:?}: {f}");
        }
        let f = judge_spf(
            "example.test",
            &txt(&["v=spf1 -all"]),
            &fail,
            "v=spf1 mx -all",
        );
        assert!(f.to_string().contains("192.0.2.2: fail"), "{f}");
        let f = judge_spf(
            "example.test",
            &txt(&["v=spf1 -all"]),
            &[],
            "v=spf1 mx -all",
        );
        assert!(f.to_string().contains("which has no mx mechanism"), "{f}");
    }

    #[test]
    fn judge_dkim_table() {
        let ours = format!("v=DKIM1; k=rsa; p={RSA_P}");
        let split = format!("v=DKIM1; k=rsa; p={} {}", &RSA_P[..10], &RSA_P[10..]);
        let no_k = format!("v=DKIM1; p={RSA_P}");
        let ed = format!("v=DKIM1; k=ed25519; p={RSA_P}");
        let cases: &[(Answer<String>, Verdict)] = &[
            (txt(&[&ours]), Verdict::Ok),
            (txt(&[&split]), Verdict::Ok),
            (txt(&[&no_k]), Verdict::Ok),
            (txt(&[&ed]), Verdict::Wrong),
            (txt(&["v=DKIM1; k=rsa; p=OTHER"]), Verdict::Wrong),
            (txt(&["v=DKIM1; k=rsa; p="]), Verdict::Wrong),
            (txt(&[&ours, "v=DKIM1; p=OTHER"]), Verdict::Wrong),
            (txt(&["unrelated"]), Verdict::Missing),
            (nx(), Verdict::Missing),
        ];
        for (found, want) in cases {
            let f = judge_dkim("s._domainkey.example.test", found, &ours);
            assert_eq!(f.verdict, *want, "{found:?}: {f}");
        }
    }

    #[test]
    fn judge_policy_records_table() {
        type Judge = fn(&str, &Answer<String>, &str) -> Finding;
        let dmarc: Judge = judge_dmarc;
        let sts: Judge = judge_mta_sts;
        let rpt: Judge = judge_tls_rpt;
        let cases: &[(Judge, &[&str], Verdict)] = &[
            (dmarc, &["v=DMARC1; p=reject"], Verdict::Ok),
            (dmarc, &["v=DMARC1; p=none; rua=mailto:a@b"], Verdict::Ok),
            (dmarc, &["v=DMARC1; rua=mailto:a@b"], Verdict::Wrong),
            (dmarc, &["v=DMARC1; p=bogus"], Verdict::Wrong),
            (
                dmarc,
                &["v=DMARC1; p=reject", "v=DMARC1; p=none"],
                Verdict::Wrong,
            ),
            (dmarc, &["p=reject"], Verdict::Missing),
            (dmarc, &[], Verdict::Missing),
            (sts, &["v=STSv1; id=20240101"], Verdict::Ok),
            (sts, &["v=STSv1; id=bad-id"], Verdict::Wrong),
            (sts, &["v=STSv1; id=a", "v=STSv1; id=b"], Verdict::Wrong),
            (sts, &["v=STSv2; id=a"], Verdict::Missing),
            (
                rpt,
                &["v=TLSRPTv1; rua=mailto:tls@example.test"],
                Verdict::Ok,
            ),
            (
                rpt,
                &["v=TLSRPTv1; rua=mailto:a@b,https://r.example/x"],
                Verdict::Ok,
            ),
            (rpt, &["v=TLSRPTv1; rua=ftp://x"], Verdict::Wrong),
            (rpt, &["v=TLSRPTv1"], Verdict::Wrong),
            (rpt, &[], Verdict::Missing),
        ];
        for (judge, records, want) in cases {
            let f = judge("n", &txt(records), "ours");
            assert_eq!(f.verdict, *want, "{records:?}: {f}");
        }
        assert_eq!(judge_dmarc("n", &nx(), "ours").verdict, Verdict::Missing);
    }

    #[test]
    fn judge_ptr_table() {
        let host = "mx.example.test";
        let us = ip("192.0.2.2");
        let names = |v: &[&str]| Ok(v.iter().map(|s| s.to_string()).collect());
        let fwd_ok: Answer<IpAddr> = Ok(vec![us]);
        let fwd_other: Answer<IpAddr> = Ok(vec![ip("192.0.2.9")]);
        let fwd_none: Answer<IpAddr> = Err(DnsError::NotFound(host.into()));
        let cases: &[(Answer<String>, &Answer<IpAddr>, Verdict)] = &[
            (names(&[host]), &fwd_ok, Verdict::Ok),
            (names(&["other.example.net", host]), &fwd_ok, Verdict::Ok),
            (names(&["other.example.net"]), &fwd_ok, Verdict::Wrong),
            (names(&[host]), &fwd_other, Verdict::Wrong),
            (names(&[host]), &fwd_none, Verdict::Wrong),
            (names(&[]), &fwd_ok, Verdict::Missing),
            (
                Err(DnsError::NotFound("r".into())),
                &fwd_ok,
                Verdict::Missing,
            ),
        ];
        for (ptr, fwd, want) in cases {
            let f = judge_ptr(us, ptr, fwd, host);
            assert_eq!(f.verdict, *want, "{ptr:?} {fwd:?}: {f}");
        }
        let f = judge_ptr(us, &names(&[host]), &fwd_other, host);
        assert!(f.to_string().contains("resolves to 192.0.2.9"), "{f}");
    }

    #[test]
    fn finding_lines() {
        let ok = finding(
            Verdict::Ok,
            "MX example.test",
            "mx.example.test".into(),
            "x",
        );
        assert_eq!(ok.to_string(), "ok      MX example.test: mx.example.test");
        let missing = finding(
            Verdict::Missing,
            "DMARC n",
            "no TXT record".into(),
            "\"v=DMARC1\"",
        );
        assert_eq!(
            missing.to_string(),
            "missing DMARC n: found no TXT record; expected \"v=DMARC1\""
        );
    }
}
