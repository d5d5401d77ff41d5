//! DNS blocklists (SPEC §3 `dnsbl`; RFC 5782): is a client address listed in a zone?
//!
//! The question is an A query for the address's reversed form under the zone
//! (`2.0.0.127.zen.spamhaus.org`); an answer in 127.0.0.0/8 means listed (RFC 5782 §2.1),
//! NXDOMAIN means not. Zones also answer with error codes, which must never block mail:
//! Spamhaus's 127.255.255.x ("query refused", "public resolver"), and resolvers that turn
//! NXDOMAIN into an address of their own (outside 127/8). Those and every lookup failure are
//! reported as [`Answer::Unusable`]. Answers come from [`Dns`]'s cache, kept for their TTL.

use std::net::{IpAddr, Ipv4Addr};

use crate::dns::{Dns, DnsError};

/// A zone's answer for one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    NotListed,
    /// Listed: the return code, and the zone's TXT reason when it gave one.
    Listed {
        code: Ipv4Addr,
        reason: Option<String>,
    },
    /// No usable answer (timeout, SERVFAIL, an error code): the client is not blocked.
    Unusable(String),
}

/// A zone that lists the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub zone: String,
    pub code: Ipv4Addr,
    pub reason: Option<String>,
}

/// The longest TXT reason put in a reply; zones give a URL and a few words.
const MAX_REASON: usize = 200;

/// The name to look up for `ip` in `zone` (RFC 5782 §2.1, §2.4): IPv4 octets reversed,
/// IPv6 as 32 reversed nibbles; an IPv4-mapped IPv6 address is asked as IPv4.
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    let reverse = crate::dns::reverse_name(ip.to_canonical());
    let reversed = reverse
        .strip_suffix(".in-addr.arpa")
        .or_else(|| reverse.strip_suffix(".ip6.arpa"))
        .unwrap_or(&reverse);
    format!("{reversed}.{zone}")
}

/// What a zone's A records for the address mean.
pub fn judge(codes: &[Ipv4Addr]) -> Result<Option<Ipv4Addr>, String> {
    let Some(&first) = codes.first() else {
        return Ok(None);
    };
    match first.octets() {
        [127, 255, 255, _] => Err(format!("the zone answered error code {first}")),
        [127, ..] => Ok(Some(first)),
        _ => Err(format!(
            "answer {first} is outside 127.0.0.0/8 (a resolver rewriting NXDOMAIN?)"
        )),
    }
}

/// Asks `zone` about `ip`.
pub async fn ask(dns: &Dns, zone: &str, ip: IpAddr) -> Answer {
    let name = query_name(ip, zone);
    let codes = match dns.ipv4(&name).await {
        Ok(codes) => codes,
        Err(DnsError::NotFound(_)) => return Answer::NotListed,
        Err(e) => return Answer::Unusable(e.to_string()),
    };
    match judge(&codes) {
        Ok(None) => Answer::NotListed,
        Ok(Some(code)) => Answer::Listed {
            code,
            reason: dns.txt(&name).await.ok().and_then(|t| reason_text(&t)),
        },
        Err(why) => Answer::Unusable(why),
    }
}

/// Asks every zone at once; the first of `zones` (in their order) that lists `ip`. Zones
/// without a usable answer are logged and passed over.
pub async fn first_listing(dns: &Dns, zones: &[String], ip: IpAddr) -> Option<Listing> {
    let asks = zones.iter().map(|zone| ask(dns, zone, ip));
    let answers = join_all(asks).await;
    let mut found = None;
    for (zone, answer) in zones.iter().zip(answers) {
        match answer {
            Answer::Listed { code, reason } if found.is_none() => {
                found = Some(Listing {
                    zone: zone.clone(),
                    code,
                    reason,
                });
            }
            Answer::Unusable(why) => {
                log::warn!("dnsbl {zone}: no usable answer for {ip}: {why}; not blocking")
            }
            _ => {}
        }
    }
    found
}

/// The futures' outputs in order, polled together (zones answer in parallel).
async fn join_all<F: Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<_> = futures.map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all_done = true;
        for (slot, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *output = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// The zone's TXT reason, made safe for an SMTP reply line: printable ASCII only, bounded.
fn reason_text(records: &[String]) -> Option<String> {
    let text: String = records
        .first()?
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
        .collect();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let text: String = text.chars().take(MAX_REASON).collect();
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names() {
        let v4: IpAddr = "192.0.2.99".parse().unwrap();
        assert_eq!(query_name(v4, "bl.test"), "99.2.0.192.bl.test");
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(query_name(mapped, "bl.test"), "2.0.0.127.bl.test");
        // RFC 5782 §2.4's example.
        let v6: IpAddr = "2001:db8:1:2:3:4:567:89ab".parse().unwrap();
        assert_eq!(
            query_name(v6, "ugly.example.com"),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com"
        );
    }

    #[test]
    fn codes() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(judge(&[]), Ok(None));
        assert_eq!(judge(&[ip("127.0.0.2")]), Ok(Some(ip("127.0.0.2"))));
        assert_eq!(judge(&[ip("127.0.0.10")]), Ok(Some(ip("127.0.0.10"))));
        assert!(
            judge(&[ip("127.255.255.254")]).is_err(),
            "Spamhaus: public resolver"
        );
        assert!(judge(&[ip("127.255.255.252")]).is_err());
        assert!(judge(&[ip("198.51.100.7")]).is_err(), "NXDOMAIN rewritten");
    }

    /// A zone on loopback: 127.0.0.2 listed with a reason, 127.0.0.3 answered with an error
    /// code, 127.0.0.4 with an address outside 127/8; `down.example` is refused (no server for it).
    #[test]
    fn zones_on_a_real_server() {
        let Some(server) = crate::dns::test_server::start(&[
            "--address=/2.0.0.127.bl.test/127.0.0.2",
            "--txt-record=2.0.0.127.bl.test,listed for tests",
            "--address=/3.0.0.127.bl.test/127.255.255.254",
            "--address=/4.0.0.127.bl.test/198.51.100.1",
            "--address=/2.0.0.127.other.test/127.0.0.10",
        ]) else {
            return;
        };
        let dns = Dns::new(&[server.addr]).expect("resolver");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let ask_sync = |zone: &str, client: &str| smol::block_on(ask(&dns, zone, ip(client)));
        assert_eq!(
            ask_sync("bl.test", "127.0.0.2"),
            Answer::Listed {
                code: "127.0.0.2".parse().unwrap(),
                reason: Some("listed for tests".into())
            }
        );
        assert_eq!(ask_sync("bl.test", "127.0.0.9"), Answer::NotListed);
        assert!(matches!(
            ask_sync("bl.test", "127.0.0.3"),
            Answer::Unusable(_)
        ));
        assert!(matches!(
            ask_sync("bl.test", "127.0.0.4"),
            Answer::Unusable(_)
        ));
        assert!(matches!(
            ask_sync("down.example", "127.0.0.2"),
            Answer::Unusable(_)
        ));
        // In the zones' order, whatever answers first; a dead zone blocks nothing.
        let zones = |z: &[&str]| z.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let first =
            |z: &[&str], client: &str| smol::block_on(first_listing(&dns, &zones(z), ip(client)));
        let found = first(&["down.example", "other.test", "bl.test"], "127.0.0.2").unwrap();
        assert_eq!((found.zone.as_str(), found.reason), ("other.test", None));
        assert_eq!(first(&["down.example", "bl.test"], "127.0.0.3"), None);
        assert_eq!(
            first(&["bl.test"], "::ffff:127.0.0.2").unwrap().zone,
            "bl.test"
        );
    }

    #[test]
    fn reasons_are_made_safe() {
        assert_eq!(reason_text(&[]), None);
        assert_eq!(reason_text(&["  ".into()]), None);
        assert_eq!(
            reason_text(&["Listed:\r\n see https://x.test/q?ip=1\t".into()]).as_deref(),
            Some("Listed: see https://x.test/q?ip=1")
        );
        assert_eq!(reason_text(&["é".repeat(500)]).map(|t| t.len()), None);
        assert_eq!(
            reason_text(&["x".repeat(500)]).map(|t| t.len()),
            Some(MAX_REASON)
        );
    }
}
