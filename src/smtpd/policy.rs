//! Answers the session's questions from the configuration (SPEC §6, §7):
//! - port 25 accepts only local recipients (554 5.7.1 otherwise), unless the client is in
//!   `relay_networks`;
//! - submission relays anywhere once authenticated, and the envelope sender must be an
//!   address of a local domain that resolves to the authenticated user, or the user's own
//!   address even when an alias of its name forwards its mail (553 5.7.1);
//! - a local recipient must resolve to something (550 5.1.1);
//! - a port 25 client listed in a `dnsbl` zone is refused at RCPT (554 5.7.1), unless it may
//!   relay.

use crate::addr::{Address, Domain};
use crate::aliases::Recipient;
use crate::config::access::{AccessRules, Action};
use crate::config::settings::{InboundPolicy, PolicyAction};
use crate::config::{Domains, Settings};
use crate::dns::blocklist::Listing;
use crate::mailauth::inbound::Verdict;
use crate::mailauth::srs::Srs;
use crate::message::now_secs;
use crate::proto::command::{ForwardPath, ReversePath};
use crate::proto::reply::Reply;
use crate::proto::session::{PeerInfo, Policy};
use std::net::IpAddr;

pub struct MailPolicy<'a> {
    pub domains: &'a Domains,
    pub settings: &'a Settings,
    pub srs: &'a Srs,
    pub access: &'a AccessRules,
    pub client_ip: IpAddr,
    /// A `Connect:` rule said RELAY for this client.
    pub connect_relay: bool,
    /// The blocklist that lists this client, if one does (asked on port 25 only).
    pub dnsbl: Option<&'a Listing>,
}

fn relay_denied() -> Reply {
    Reply::new(554, "5.7.1", "Relay access denied")
}

/// Postfix's `reject_rbl_client` reply, with the zone's reason when it gave one.
fn listed(ip: IpAddr, listing: &Listing) -> Reply {
    let mut text = format!(
        "Service unavailable; client [{ip}] blocked using {}",
        listing.zone
    );
    if let Some(reason) = &listing.reason {
        text.push_str("; ");
        text.push_str(reason);
    }
    Reply::new(554, "5.7.1", text)
}

fn sender_refused() -> Reply {
    Reply::new(553, "5.7.1", "Sender address not allowed for this user")
}

impl MailPolicy<'_> {
    fn in_relay_networks(&self) -> bool {
        self.connect_relay
            || self
                .settings
                .relay_networks
                .iter()
                .any(|net| net.contains(self.client_ip))
    }

    /// `RCPT TO:<Postmaster>` (RFC 5321 §4.5.1) is the postmaster of the domain of our
    /// hostname when that is local, else of the first local domain.
    fn postmaster(&self) -> Option<Address> {
        let host_domain = Domain::parse(&self.settings.hostname).ok();
        let domain = host_domain
            .into_iter()
            .flat_map(|h| {
                let parent = h.as_str().split_once('.').map(|(_, p)| p.to_string());
                [Some(h.as_str().to_string()), parent]
            })
            .flatten()
            .filter_map(|d| Domain::parse(&d).ok())
            .find(|d| self.domains.get(d).is_some())
            .or_else(|| self.domains.iter().next().map(|(d, _)| d.clone()))?;
        let local = crate::addr::LocalPart::parse("postmaster").ok()?;
        Some(Address::new(local, domain))
    }
}

impl MailPolicy<'_> {
    /// SPEC §7: `user` (canonical `user@domain`) may send as any address of a local domain
    /// that resolves to its mailbox, and always as its own address in any form that
    /// normalises to it: an alias of its name (`me: me@gmail.com`) takes its mail away, not
    /// its right to send as itself.
    fn may_send_as(&self, user: &str, from: &Address) -> bool {
        if self.domains.get(from.domain()).is_none() {
            return false;
        }
        if self
            .domains
            .user_of(from)
            .is_some_and(|own| own.to_string() == user)
        {
            return true;
        }
        let mine = Recipient::Mailbox {
            address: user.to_string(),
        };
        self.domains.resolve(from).recipients.contains(&mine)
    }

    /// A bounce to an address we forwarded with SRS (SPEC §8) goes back to the original
    /// sender; a forged or expired SRS address is refused here rather than bounced later.
    fn srs_bounce(&self, addr: &Address) -> Result<Vec<Recipient>, Reply> {
        let original = self
            .srs
            .reverse(&addr.to_string(), now_secs())
            .map_err(|e| {
                log::info!("refusing SRS address {addr} from {}: {e}", self.client_ip);
                Reply::new(550, "5.7.1", "Invalid or expired SRS address")
            })?;
        let original = Address::parse(&original).map_err(|e| {
            log::info!("SRS address {addr} reverses to a bad address: {e}");
            Reply::new(550, "5.7.1", "Invalid or expired SRS address")
        })?;
        if self.domains.get(original.domain()).is_some() {
            let resolution = self.domains.resolve(&original);
            if resolution.recipients.is_empty() {
                return Err(Reply::new(550, "5.1.1", "No such user"));
            }
            return Ok(resolution.recipients);
        }
        Ok(vec![Recipient::Forward {
            address: original.to_string(),
            via: Vec::new(),
        }])
    }
}

impl Policy for MailPolicy<'_> {
    type Rcpt = Vec<Recipient>;

    fn check_sender(&self, peer: &PeerInfo, from: &ReversePath) -> Result<(), Reply> {
        // SPEC §7 access rules; DISCARD is carried out by the driver after DATA.
        if let Some(reply) = self
            .access
            .from(&reverse_path_text(from))
            .and_then(Action::reply)
        {
            log::info!(
                "access: {} refused sender {}",
                self.client_ip,
                reverse_path_text(from)
            );
            return Err(reply);
        }
        let Some(user) = peer.auth_user.as_deref() else {
            return Ok(());
        };
        let ReversePath::Addr(from) = from else {
            return Err(sender_refused());
        };
        if self.may_send_as(user, from) {
            Ok(())
        } else {
            Err(sender_refused())
        }
    }

    fn check_recipient(
        &self,
        peer: &PeerInfo,
        _from: &ReversePath,
        to: &ForwardPath,
    ) -> Result<Vec<Recipient>, Reply> {
        let addr = match to {
            ForwardPath::Addr(a) => a.clone(),
            ForwardPath::Postmaster => self
                .postmaster()
                .ok_or_else(|| Reply::new(550, "5.1.1", "No such user"))?,
        };
        let rule = self.access.to(&addr.to_string());
        match rule {
            Some(Action::Reject(_)) => {
                log::info!("access: {} refused recipient {addr}", self.client_ip);
                return Err(rule.and_then(Action::reply).unwrap_or_else(relay_denied));
            }
            Some(Action::Discard) => {
                log::info!(
                    "access: discarding recipient {addr} from {}",
                    self.client_ip
                );
                return Ok(Vec::new());
            }
            _ => {}
        }
        if let Some(listing) = self.dnsbl
            && peer.auth_user.is_none()
            && !self.in_relay_networks()
        {
            return Err(listed(self.client_ip, listing));
        }
        if self.domains.get(addr.domain()).is_none() {
            let may_relay = peer.auth_user.is_some()
                || self.in_relay_networks()
                || rule == Some(&Action::Relay);
            if !may_relay {
                return Err(relay_denied());
            }
            return Ok(vec![Recipient::Forward {
                address: addr.to_string(),
                via: Vec::new(),
            }]);
        }
        if Srs::is_srs(addr.local().as_str()) {
            return self.srs_bounce(&addr);
        }
        let resolution = self.domains.resolve(&addr);
        for problem in &resolution.problems {
            log::warn!("resolving {addr}: {problem}");
        }
        if resolution.recipients.is_empty() {
            return Err(Reply::new(550, "5.1.1", "No such user"));
        }
        Ok(resolution.recipients)
    }
}

/// What the SPF and DMARC results of a message received on port 25 mean for it, under
/// `inbound_policy` (SPEC §3, §7, §8): an SPF `fail` (RFC 7208 §2.6.4; not `softfail`) or a
/// DMARC failure under `p=reject` is refused, unless the policy says "tag": then the message
/// is taken but must never leave for an outside address, and the reason why is returned.
/// `spf_identity` is what SPF checked (MAIL FROM, or HELO for `<>`), for the reply.
pub fn judge_inbound(
    verdict: &Verdict,
    policy: &InboundPolicy,
    spf_identity: &str,
) -> Result<Option<String>, Reply> {
    let mut no_forward = None;
    if verdict.spf_failed() {
        if policy.spf_fail == PolicyAction::Reject {
            // RFC 7372 §3.2: 5.7.23, SPF validation failed.
            return Err(Reply::new(
                550,
                "5.7.23",
                format!("SPF check failed for {spf_identity}"),
            ));
        }
        no_forward = Some("SPF fail".to_string());
    }
    if verdict.dmarc_reject() {
        if policy.dmarc_reject == PolicyAction::Reject {
            return Err(Reply::new(
                550,
                "5.7.1",
                format!(
                    "Message rejected per the DMARC policy of {}",
                    verdict.dmarc.from_domain
                ),
            ));
        }
        no_forward = Some("DMARC p=reject failure".to_string());
    }
    Ok(no_forward)
}

/// The reverse-path as access rules and logs take it (`""` for `<>`).
pub fn reverse_path_text(from: &ReversePath) -> String {
    match from {
        ReversePath::Null => String::new(),
        ReversePath::Addr(a) => a.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings::IpNet;
    use crate::mailauth::inbound::{DmarcCheck, DmarcPolicy, DmarcResult, SpfResult};
    use crate::proto::session::SmtpPort;

    /// example.test with users alice and bob (receive-only: no password is needed here),
    /// and `aliases` as its aliases file.
    struct Fixture {
        _dir: tempfile::TempDir,
        domains: Domains,
        settings: Settings,
        srs: Srs,
        access: AccessRules,
        dnsbl: Option<Listing>,
    }

    impl Fixture {
        fn new(aliases: &str) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let domain_dir = dir.path().join("domains").join("example.test");
            std::fs::create_dir_all(&domain_dir).unwrap();
            std::fs::write(domain_dir.join("users"), r#"{"alice": "!", "bob": "!"}"#).unwrap();
            std::fs::write(domain_dir.join("aliases"), aliases).unwrap();
            let settings = Settings::defaults(dir.path().to_path_buf());
            let domains = Domains::load(dir.path(), settings.normalization()).unwrap();
            Fixture {
                _dir: dir,
                domains,
                settings,
                srs: Srs::new(b"test secret"),
                access: AccessRules::default(),
                dnsbl: None,
            }
        }

        fn policy(&self) -> MailPolicy<'_> {
            MailPolicy {
                domains: &self.domains,
                settings: &self.settings,
                srs: &self.srs,
                access: &self.access,
                client_ip: IpAddr::from([127, 0, 0, 1]),
                connect_relay: false,
                dnsbl: self.dnsbl.as_ref(),
            }
        }
    }

    fn submission(user: &str) -> PeerInfo {
        PeerInfo {
            kind: SmtpPort::Submission,
            tls: true,
            auth_user: Some(user.to_string()),
        }
    }

    fn from(s: &str) -> ReversePath {
        ReversePath::Addr(Address::parse(s).unwrap())
    }

    #[test]
    fn check_sender_table() {
        // aliases of example.test, authenticated user, MAIL FROM, allowed
        let cases = [
            ("", "alice", "alice@example.test", true),
            ("", "alice", "ALICE@Example.Test", true),
            ("", "alice", "A.Lice+tag@example.test", true),
            ("", "alice", "bob@example.test", false),
            ("", "alice", "nobody@example.test", false),
            ("", "alice", "alice@remote.example", false),
            // SPEC §7: an alias of the user's own name takes its mail, not its right to
            // send as itself, in any form of its address.
            (
                "alice: x@remote.example",
                "alice",
                "alice@example.test",
                true,
            ),
            (
                "alice: x@remote.example",
                "alice",
                "a.lice+x@Example.Test",
                true,
            ),
            (
                "alice: x@remote.example",
                "bob",
                "alice@example.test",
                false,
            ),
            (
                "alice: alice, x@remote.example",
                "alice",
                "alice@example.test",
                true,
            ),
            // An alias that resolves to a user lets that user send as it.
            ("alice: bob", "bob", "alice@example.test", true),
            ("alice: bob", "alice", "alice@example.test", true),
            (
                "info: alice, x@remote.example",
                "alice",
                "info@example.test",
                true,
            ),
            (
                "info: alice, x@remote.example",
                "alice",
                "In.Fo+news@example.test",
                true,
            ),
            (
                "info: alice, x@remote.example",
                "bob",
                "info@example.test",
                false,
            ),
            (
                "info: x@remote.example",
                "alice",
                "info@example.test",
                false,
            ),
            // The catch-all owner may send as any address the catch-all takes, and only those.
            ("*: alice", "alice", "whatever@example.test", true),
            ("*: alice", "bob", "whatever@example.test", false),
            ("*: alice", "alice", "bob@example.test", false),
            ("*: alice\ninfo: bob", "alice", "info@example.test", false),
        ];
        for (aliases, user, sender, allowed) in cases {
            let fixture = Fixture::new(aliases);
            let peer = submission(&format!("{user}@example.test"));
            let got = fixture.policy().check_sender(&peer, &from(sender));
            assert_eq!(
                got.is_ok(),
                allowed,
                "aliases {aliases:?}, {user} sending as {sender}: {got:?}"
            );
            if let Err(reply) = got {
                assert_eq!((reply.code, reply.enhanced), (553, "5.7.1"));
            }
        }
    }

    #[test]
    fn check_sender_null_and_unauthenticated() {
        let fixture = Fixture::new("");
        let policy = fixture.policy();
        let peer = submission("alice@example.test");
        assert!(policy.check_sender(&peer, &ReversePath::Null).is_err());
        let mx = PeerInfo {
            kind: SmtpPort::Mx,
            tls: false,
            auth_user: None,
        };
        assert!(policy.check_sender(&mx, &from("bob@example.test")).is_ok());
        assert!(policy.check_sender(&mx, &ReversePath::Null).is_ok());
    }

    #[test]
    fn check_recipient_follows_aliases_before_users() {
        let mbox = |a: &str| Recipient::Mailbox {
            address: a.to_string(),
        };
        let fwd = |a: &str| Recipient::Forward {
            address: a.to_string(),
            via: Vec::new(),
        };
        // aliases, RCPT TO, recipients (empty: 550 5.1.1)
        let cases = [
            (
                "alice: x@remote.example",
                "alice@example.test",
                vec![fwd("x@remote.example")],
            ),
            (
                "alice: alice, x@remote.example",
                "Alice+tag@example.test",
                vec![mbox("alice@example.test"), fwd("x@remote.example")],
            ),
            (
                "*: x@remote.example",
                "alice@example.test",
                vec![mbox("alice@example.test")],
            ),
            ("ghost: ghost", "ghost@example.test", vec![]),
            ("ghost: nobody, nobody2", "ghost@example.test", vec![]),
        ];
        let mx = PeerInfo {
            kind: SmtpPort::Mx,
            tls: false,
            auth_user: None,
        };
        for (aliases, rcpt, want) in cases {
            let fixture = Fixture::new(aliases);
            let to = ForwardPath::Addr(Address::parse(rcpt).unwrap());
            let got = fixture
                .policy()
                .check_recipient(&mx, &from("s@remote.example"), &to);
            match got {
                Ok(got) => assert_eq!(got, want, "aliases {aliases:?}, rcpt {rcpt}"),
                Err(reply) => {
                    assert!(
                        want.is_empty(),
                        "aliases {aliases:?}, rcpt {rcpt}: {reply:?}"
                    );
                    assert_eq!((reply.code, reply.enhanced), (550, "5.1.1"));
                }
            }
        }
    }

    /// A listed client is refused at RCPT, naming the list, unless it may relay.
    #[test]
    fn listed_clients_are_refused_unless_trusted() {
        let mut fixture = Fixture::new("");
        fixture.dnsbl = Some(Listing {
            zone: "zen.example".into(),
            code: std::net::Ipv4Addr::new(127, 0, 0, 2),
            reason: Some("see https://zen.example/lookup".into()),
        });
        let mx = PeerInfo {
            kind: SmtpPort::Mx,
            tls: false,
            auth_user: None,
        };
        let to = ForwardPath::Addr(Address::parse("alice@example.test").unwrap());
        let sender = from("s@remote.example");
        let reply = fixture
            .policy()
            .check_recipient(&mx, &sender, &to)
            .unwrap_err();
        assert_eq!((reply.code, reply.enhanced), (554, "5.7.1"));
        assert_eq!(
            reply.text(),
            "Service unavailable; client [127.0.0.1] blocked using zen.example; \
             see https://zen.example/lookup"
        );
        let authenticated = submission("bob@example.test");
        assert!(
            fixture
                .policy()
                .check_recipient(&authenticated, &sender, &to)
                .is_ok()
        );
        fixture.settings.relay_networks = vec![IpNet::parse("127.0.0.0/8").unwrap()];
        assert!(fixture.policy().check_recipient(&mx, &sender, &to).is_ok());
    }

    fn verdict(spf: SpfResult, dmarc: DmarcResult, p: DmarcPolicy) -> Verdict {
        Verdict {
            spf,
            dkim: Vec::new(),
            dmarc: DmarcCheck {
                result: dmarc,
                policy: p,
                from_domain: "sender.example".into(),
                dkim_aligned: false,
            },
            header: String::new(),
        }
    }

    #[test]
    fn inbound_verdicts_under_each_policy() {
        use PolicyAction::{Reject, Tag};
        let (pass, fail, none) = (SpfResult::Pass, SpfResult::Fail, DmarcPolicy::None);
        let (dpass, dfail) = (DmarcResult::Pass, DmarcResult::Fail);
        let spf_reject = Err("550 5.7.23 SPF check failed for a@sender.example".to_string());
        let dmarc_reject =
            Err("550 5.7.1 Message rejected per the DMARC policy of sender.example".to_string());
        let cases = [
            // (spf, dmarc, p=, spf_fail action, dmarc_reject action) -> outcome
            (pass, dpass, DmarcPolicy::Reject, Reject, Reject, Ok(None)),
            (
                SpfResult::SoftFail,
                dfail,
                DmarcPolicy::Quarantine,
                Reject,
                Reject,
                Ok(None),
            ),
            (SpfResult::TempError, dfail, none, Reject, Reject, Ok(None)),
            (fail, dpass, none, Reject, Reject, spf_reject.clone()),
            (fail, dpass, none, Tag, Reject, Ok(Some("SPF fail"))),
            (
                pass,
                dfail,
                DmarcPolicy::Reject,
                Reject,
                Reject,
                dmarc_reject.clone(),
            ),
            (
                pass,
                dfail,
                DmarcPolicy::Reject,
                Reject,
                Tag,
                Ok(Some("DMARC p=reject failure")),
            ),
            // SPF is judged first; a tagged SPF failure still meets DMARC's rejection.
            (fail, dfail, DmarcPolicy::Reject, Tag, Reject, dmarc_reject),
            (fail, dfail, DmarcPolicy::Reject, Reject, Tag, spf_reject),
            (
                fail,
                dfail,
                DmarcPolicy::Reject,
                Tag,
                Tag,
                Ok(Some("DMARC p=reject failure")),
            ),
        ];
        for (spf, dmarc, p, spf_fail, dmarc_reject, want) in cases {
            let policy = InboundPolicy {
                spf_fail,
                dmarc_reject,
            };
            let got = judge_inbound(&verdict(spf, dmarc, p), &policy, "a@sender.example")
                .map(|reason| reason.map(|r| r.to_string()))
                .map_err(|reply| {
                    String::from_utf8_lossy(&reply.to_bytes())
                        .trim()
                        .to_string()
                });
            let want = want.map(|reason| reason.map(str::to_string));
            assert_eq!(
                got, want,
                "{spf:?} {dmarc:?} p={p:?} {spf_fail:?}/{dmarc_reject:?}"
            );
        }
    }
}
