//! Answers the session's questions from the configuration (SPEC §6, §7):
//! - port 25 accepts only local recipients (554 5.7.1 otherwise), unless the client is in
//!   `relay_networks`;
//! - submission relays anywhere once authenticated, and the envelope sender must be an
//!   address of a local domain that resolves to the authenticated user (553 5.7.1);
//! - a local recipient must resolve to something (550 5.1.1).

use crate::addr::{Address, Domain};
use crate::aliases::Recipient;
use crate::config::{Domains, Settings};
use crate::mailauth::srs::Srs;
use crate::proto::command::{ForwardPath, ReversePath};
use crate::proto::reply::Reply;
use crate::proto::session::{PeerInfo, Policy};
use crate::queue::store::now_secs;
use crate::smtpd::access::{AccessRules, Action};
use std::net::IpAddr;

pub struct MailPolicy<'a> {
    pub domains: &'a Domains,
    pub settings: &'a Settings,
    pub srs: &'a Srs,
    pub access: &'a AccessRules,
    pub client_ip: IpAddr,
    /// A `Connect:` rule said RELAY for this client.
    pub connect_relay: bool,
}

fn relay_denied() -> Reply {
    Reply::new(554, "5.7.1", "Relay access denied")
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
        if self.domains.get(from.domain()).is_none() {
            return Err(sender_refused());
        }
        let mine = Recipient::Mailbox {
            address: user.to_string(),
        };
        if self.domains.resolve(from).recipients.contains(&mine) {
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

/// The reverse-path as access rules and logs take it (`""` for `<>`).
pub fn reverse_path_text(from: &ReversePath) -> String {
    match from {
        ReversePath::Null => String::new(),
        ReversePath::Addr(a) => a.to_string(),
    }
}
