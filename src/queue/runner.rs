//! The delivery loop: one task per queued message. Each attempt tries every pending
//! recipient, records each outcome durably in the queue file before moving on (so a restart
//! never delivers a recipient twice), then sleeps per [`retry::next_delay`] until all are done
//! or `give_up_after` has passed. Permanent failures are reported to the sender in one DSN
//! per attempt. The file goes only when every recipient is done.

use crate::addr::Address;
use crate::aliases::Recipient;
use crate::config::live_config::LiveConfig;
use crate::config::settings::FromRewrite;
use crate::courier::remote::OutboundEnvelope;
use crate::courier::{Couriers, DeliveryError, dsn, outbound};
use crate::mailauth::srs::Srs;
use crate::maillog;
use crate::message::{Envelope, QueuedRcpt, RcptState, StoredMessage, now_secs};
use crate::queue::direct::DirectMaildir;
use crate::queue::retry;
use crate::queue::store::Queue;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Where new messages are handed to the runner.
#[derive(Clone)]
pub struct Deliveries {
    tx: smol::channel::Sender<StoredMessage>,
    /// Set when local delivery is the built-in Maildir: mail for local users only is then
    /// delivered before the 250 instead of being queued (queue::direct).
    pub direct: Option<DirectMaildir>,
}

impl Deliveries {
    /// Schedules a committed message for delivery now.
    pub fn submit(&self, item: StoredMessage) {
        // Unbounded: cannot be full; closed only at shutdown, when the queue file remains
        // and the next start picks it up.
        let _ = self.tx.try_send(item);
    }
}

/// The channel between the SMTP server (and the runner itself, for DSNs) and the runner.
pub fn channel(
    direct: Option<DirectMaildir>,
) -> (Deliveries, smol::channel::Receiver<StoredMessage>) {
    let (tx, rx) = smol::channel::unbounded();
    (Deliveries { tx, direct }, rx)
}

pub struct Runner {
    pub queue: Queue,
    pub couriers: Couriers,
    /// The configuration in force (domains: users, aliases, DKIM keys).
    pub config: Arc<LiveConfig>,
    pub srs: Arc<Srs>,
    pub hostname: String,
    pub give_up_after: Duration,
    /// ARC-seal forwarded mail (SPEC §3 `arc_seal`).
    pub arc_seal: bool,
    /// SPEC §3 `forward_from_rewrite`.
    pub from_rewrite: FromRewrite,
    /// For DSNs, which are queued like any other message.
    pub deliveries: Deliveries,
}

/// Starts the dispatcher on `ex`: one task per message received on `rx`.
pub fn start(
    runner: Arc<Runner>,
    rx: smol::channel::Receiver<StoredMessage>,
    ex: Arc<smol::Executor<'static>>,
) {
    let sweeper = runner.clone();
    ex.spawn(async move { sweeper.couriers.remote.sweep_idle_connections().await })
        .detach();
    let spawner = ex.clone();
    ex.spawn(async move {
        while let Ok(item) = rx.recv().await {
            spawner.spawn(runner.clone().deliver_item(item)).detach();
        }
    })
    .detach();
}

/// A permanent failure to report: the recipient as the sender knows it, and why.
struct Failure {
    rcpt: String,
    original: String,
    reason: String,
    /// The recipient was an outside address we forwarded to (SPEC §8: such failures are
    /// bounced only to a sender authenticated on arrival).
    forwarded: bool,
}

/// Forwarded recipients that go out in one SMTP transaction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RemoteRoute {
    /// Recipient domain, ACE form.
    domain: String,
    via: Vec<String>,
    /// The envelope sender of this copy (SRS applied).
    sender: String,
    /// The forwarding domain (ACE form) whose key ARC-seals this copy; None when the copy is
    /// not sealed (`arc_seal` off, or mail not received from another MTA).
    seal_as: Option<String>,
    /// SPEC §8 DMARC-safe forwarding: the copy's From: becomes this address (the alias that
    /// forwards) of this domain (ACE form), and the domain signs it.
    from_as: Option<(String, String)>,
}

impl Runner {
    async fn deliver_item(self: Arc<Self>, mut item: StoredMessage) {
        loop {
            let age = Duration::from_secs(now_secs().saturating_sub(item.envelope.received_at));
            let delay = retry::next_delay(age, rand::random::<f64>());
            let mut failures = self.attempt(&mut item, delay).await;
            // A destination that refused our mail as spam is not asked again before its hold
            // is over (courier::spam_throttle).
            let delay = delay.max(self.spam_hold(&item));
            let pending = item
                .envelope
                .rcpts
                .iter()
                .any(|r| r.state == RcptState::Pending);
            if pending && age >= self.give_up_after {
                failures.extend(self.give_up(&mut item).await);
            }
            if !failures.is_empty() {
                self.bounce(&item, &failures).await;
            }
            if !pending || age >= self.give_up_after {
                return self.finish(&item).await;
            }
            self.sync_records(&item).await;
            // A message waiting for a retry holds no descriptor: the queue may hold many.
            item.file = None;
            smol::Timer::after(delay).await;
        }
    }

    /// Tries every pending recipient once. Returns the new permanent failures.
    async fn attempt(&self, item: &mut StoredMessage, next_delay: Duration) -> Vec<Failure> {
        let mut failures = Vec::new();
        let mut routes: BTreeMap<RemoteRoute, Vec<usize>> = BTreeMap::new();
        for i in 0..item.envelope.rcpts.len() {
            let rcpt = &item.envelope.rcpts[i];
            if rcpt.state != RcptState::Pending {
                continue;
            }
            let result = match rcpt.target.clone() {
                Recipient::Mailbox { address } => {
                    let key = format!("{}_{i}", item.id);
                    self.deliver_mailbox(item, &address, &rcpt.original, &key)
                        .await
                }
                Recipient::Pipe { argv, alias } => self
                    .couriers
                    .pipe(item, &argv, &alias)
                    .await
                    .map(|()| "pipe".to_string()),
                Recipient::Forward { .. } if item.envelope.no_forward.is_some() => {
                    self.refuse_forward(item, i).await;
                    continue;
                }
                Recipient::Forward { address, via } => {
                    match self.route(&item.envelope, rcpt, &address, via) {
                        Ok(route) => {
                            routes.entry(route).or_default().push(i);
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            self.conclude(item, i, result, next_delay, &mut failures)
                .await;
        }
        if !routes.is_empty() {
            self.deliver_remote(item, routes, next_delay, &mut failures)
                .await;
        }
        failures
    }

    async fn deliver_mailbox(
        &self,
        item: &StoredMessage,
        address: &str,
        original: &str,
        key: &str,
    ) -> Result<String, DeliveryError> {
        let mailbox = Address::parse(address)
            .map_err(|e| DeliveryError::permanent(format!("bad mailbox {address:?}: {e}")))?;
        self.couriers.mailbox(item, &mailbox, original, key).await
    }

    fn route(
        &self,
        envelope: &Envelope,
        rcpt: &QueuedRcpt,
        address: &str,
        via: Vec<String>,
    ) -> Result<RemoteRoute, DeliveryError> {
        let to = Address::parse(address)
            .map_err(|e| DeliveryError::permanent(format!("bad address {address:?}: {e}")))?;
        let domains = self.config.domains();
        let sender = outbound::envelope_sender(
            &self.srs,
            &domains,
            &envelope.from,
            &rcpt.original,
            now_secs(),
        );
        // SPEC §8: seal what we forward of mail received on port 25 (the only mail that has
        // inbound results to carry).
        let seal_as = (self.arc_seal && envelope.auth_results.is_some())
            .then(|| outbound::arc_domain(&domains, &rcpt.original))
            .flatten();
        // The envelope says so only for mail received on port 25 whose DMARC pass rested on
        // SPF, which SRS takes away at the next hop.
        let from_as = (self.from_rewrite == FromRewrite::Auto && envelope.from_rewrite)
            .then(|| outbound::arc_domain(&domains, &rcpt.original))
            .flatten()
            .map(|domain| (forwarder_address(&rcpt.original, &domain), domain));
        Ok(RemoteRoute {
            domain: to.domain().to_ascii(),
            via,
            sender,
            seal_as,
            from_as,
        })
    }

    /// SPEC §8: mail that failed SPF or a DMARC `p=reject` policy (kept only under
    /// `inbound_policy` "tag") never leaves for an outside address. No DSN: the sender is
    /// the one the checks could not vouch for, so a bounce would likely be backscatter.
    async fn refuse_forward(&self, item: &mut StoredMessage, i: usize) {
        let reason = format!(
            "not forwarded: {}",
            item.envelope
                .no_forward
                .as_deref()
                .unwrap_or("inbound checks failed")
        );
        maillog::failed(
            item.id.as_str(),
            &item.envelope.rcpts[i].target.target(),
            &reason,
        );
        self.record(item, i, RcptState::Failed { reason }, None)
            .await;
    }

    /// One SMTP transaction per route, with the DKIM signatures (if any) computed once.
    async fn deliver_remote(
        &self,
        item: &mut StoredMessage,
        routes: BTreeMap<RemoteRoute, Vec<usize>>,
        next_delay: Duration,
        failures: &mut Vec<Failure>,
    ) {
        let dkim = self.dkim_headers(item).await;
        let mut seals: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (route, indexes) in routes {
            let rewritten = match &route.from_as {
                Some((forwarder, domain)) => self.dmarc_safe_copy(item, forwarder, domain).await,
                None => None,
            };
            let prepend = match (&rewritten, &route.seal_as) {
                (Some(copy), seal_as) => {
                    let (_, domain) = route.from_as.as_ref().expect("rewritten: from_as");
                    let seal = match seal_as {
                        Some(sealer) => self.arc_headers(copy, sealer).await,
                        None => Vec::new(),
                    };
                    [seal, self.forwarder_signatures(copy, domain).await].concat()
                }
                (None, None) => dkim.clone(),
                (None, Some(domain)) => {
                    if !seals.contains_key(domain) {
                        let seal = self.arc_headers(item, domain).await;
                        seals.insert(domain.clone(), seal);
                    }
                    // The ARC set on top, by custom. Its AMS lists only the DKIM-Signatures
                    // present when it was made, so ours above it does not disturb it.
                    [seals.get(domain).map_or(&[][..], Vec::as_slice), &dkim].concat()
                }
            };
            let rcpts: Vec<String> = indexes
                .iter()
                .map(|&i| remote_rcpt(&item.envelope.rcpts[i].target, &route.domain))
                .collect();
            let envelope = OutboundEnvelope {
                from: &route.sender,
                rcpts: &rcpts,
                smtputf8: item.envelope.smtputf8,
                body_8bit: item.envelope.body_8bit,
            };
            let sent = rewritten.as_ref().unwrap_or(item);
            let results = self
                .couriers
                .remote
                .deliver(&route.domain, &route.via, &envelope, sent, &prepend)
                .await;
            let next_delay = next_delay.max(
                self.couriers
                    .remote
                    .spam
                    .held_for(&route.domain)
                    .unwrap_or_default(),
            );
            for (i, result) in indexes.into_iter().zip(results) {
                let result = result.map(|()| "smtp".to_string());
                self.conclude(item, i, result, next_delay, failures).await;
            }
        }
    }

    /// The longest spam hold on the domains of the message's pending forwarded recipients.
    fn spam_hold(&self, item: &StoredMessage) -> Duration {
        item.envelope
            .rcpts
            .iter()
            .filter(|r| r.state == RcptState::Pending)
            .filter_map(|r| match &r.target {
                Recipient::Forward { address, .. } => Address::parse(address).ok(),
                _ => None,
            })
            .filter_map(|a| self.couriers.remote.spam.held_for(&a.domain().to_ascii()))
            .max()
            .unwrap_or_default()
    }

    /// Signatures for mail whose From: domain is ours; a signing problem is logged and the
    /// mail goes unsigned rather than not at all. Finding the From: domain reads only the
    /// header section (just written, so in the page cache) and is done here; signing reads
    /// the whole message and costs an RSA operation, so it runs on a blocking thread.
    async fn dkim_headers(&self, item: &StoredMessage) -> Vec<u8> {
        let domains = self.config.domains();
        let signed = match outbound::signing_keys(&domains, item) {
            Ok(None) => return Vec::new(),
            Ok(Some(keys)) => {
                let snapshot = item.clone();
                smol::unblock(move || outbound::sign(&keys, &snapshot)).await
            }
            Err(e) => Err(e),
        };
        signed.unwrap_or_else(|e| {
            log::error!("queue {}: {e}; sending unsigned", item.id);
            Vec::new()
        })
    }

    /// The DMARC-safe copy of `item` (SPEC §8), in an unnamed file in the queue folder. On a
    /// problem (a full disk) the original goes out instead, as it would without the setting:
    /// never not at all.
    async fn dmarc_safe_copy(
        &self,
        item: &StoredMessage,
        forwarder: &str,
        domain: &str,
    ) -> Option<StoredMessage> {
        let (snapshot, forwarder, domain) =
            (item.clone(), forwarder.to_string(), domain.to_string());
        let spool = self.queue.dir().to_path_buf();
        let made = smol::unblock(move || {
            outbound::from_rewritten(&snapshot, &forwarder, &domain, &spool)
                .map(|copy| copy.map(|c| (c, forwarder)))
        })
        .await;
        match made {
            Ok(Some((copy, forwarder))) => {
                log::info!(
                    "queue {}: From: rewritten to <{forwarder}> (DMARC-safe forwarding: the \
                     sender's DMARC pass rested on SPF alone)",
                    item.id
                );
                Some(copy)
            }
            Ok(None) => None,
            Err(e) => {
                log::warn!("queue {}: {e}; forwarding with its own From:", item.id);
                None
            }
        }
    }

    /// DKIM signatures of the forwarding `domain` (ACE form) for a copy whose From: is now
    /// one of its addresses. Without a key it goes unsigned: its DMARC then rests on the SPF
    /// of its SRS envelope sender, which is of the same domain.
    async fn forwarder_signatures(&self, copy: &StoredMessage, domain: &str) -> Vec<u8> {
        let Some(keys) = outbound::arc_keys(&self.config.domains(), domain) else {
            return Vec::new();
        };
        let snapshot = copy.clone();
        smol::unblock(move || outbound::sign(&keys, &snapshot))
            .await
            .unwrap_or_else(|e| {
                log::error!("queue {}: {e}; sending unsigned", copy.id);
                Vec::new()
            })
    }

    /// The ARC set for a copy forwarded by `domain`, computed once per domain and attempt
    /// (its `t=` is the time of the attempt). Without a key, or on a signing problem, the copy
    /// goes unsealed rather than not at all. Reading, verifying the existing chain (DNS) and
    /// signing run on a blocking thread, as for DKIM.
    async fn arc_headers(&self, item: &StoredMessage, domain: &str) -> Vec<u8> {
        let Some(results) = item.envelope.auth_results.clone() else {
            return Vec::new();
        };
        let Some(keys) = outbound::arc_keys(&self.config.domains(), domain) else {
            return Vec::new();
        };
        let (dns, snapshot) = (self.couriers.remote.dns.clone(), item.clone());
        smol::unblock(move || outbound::seal(&dns, &keys, &snapshot, &results))
            .await
            .unwrap_or_else(|e| {
                log::warn!("queue {}: {e}; forwarding unsealed", item.id);
                Vec::new()
            })
    }

    /// Logs and durably records one recipient's outcome.
    async fn conclude(
        &self,
        item: &mut StoredMessage,
        i: usize,
        result: Result<String, DeliveryError>,
        next_delay: Duration,
        failures: &mut Vec<Failure>,
    ) {
        let rcpt = &item.envelope.rcpts[i];
        let to = rcpt.target.target();
        let (state, last_error) = match result {
            Ok(via) => {
                maillog::delivered(item.id.as_str(), &to, &via);
                (RcptState::Delivered, None)
            }
            Err(e) if e.permanent => {
                maillog::failed(item.id.as_str(), &to, &e.reason);
                failures.push(Failure {
                    rcpt: to,
                    original: rcpt.original.clone(),
                    reason: e.reason.clone(),
                    forwarded: matches!(rcpt.target, Recipient::Forward { .. }),
                });
                (RcptState::Failed { reason: e.reason }, None)
            }
            Err(e) => {
                maillog::deferred(item.id.as_str(), &to, &e.reason, next_delay);
                (RcptState::Pending, Some(e.reason))
            }
        };
        self.record(item, i, state, last_error).await;
    }

    /// Records one recipient's outcome in the queue file, then updates the in-memory copy.
    /// A small O_APPEND write with no fsync of its own (see `Queue::record`), so it is done
    /// right here rather than handed to a blocking thread.
    ///
    /// The outcome that completes a message (every recipient delivered) is not written: the
    /// message is removed right after it, with nothing in between that can wait or fail
    /// (`deliver_item`), so the record would only cover a window no wider than the one
    /// between the peer's 250 and any record. Skipping it spares a write that grows the
    /// file, whose size change the next fdatasync of the recycled file would have to write.
    /// Should the removal fail, `finish` writes the records after all.
    async fn record(
        &self,
        item: &mut StoredMessage,
        i: usize,
        state: RcptState,
        last_error: Option<String>,
    ) {
        let completes = state == RcptState::Delivered
            && item
                .envelope
                .rcpts
                .iter()
                .enumerate()
                .all(|(j, r)| j == i || r.state == RcptState::Delivered);
        if !completes && let Err(e) = self.queue.record(item, i, &state, last_error.as_deref()) {
            log::error!("queue {}: cannot record recipient {i}: {e}", item.id);
        }
        let rcpt = &mut item.envelope.rcpts[i];
        rcpt.state = state;
        rcpt.last_error = last_error;
    }

    async fn give_up(&self, item: &mut StoredMessage) -> Vec<Failure> {
        let mut failures = Vec::new();
        for i in 0..item.envelope.rcpts.len() {
            let rcpt = &item.envelope.rcpts[i];
            if rcpt.state != RcptState::Pending {
                continue;
            }
            let reason = format!(
                "gave up after {}s: {}",
                self.give_up_after.as_secs(),
                rcpt.last_error.as_deref().unwrap_or("no attempt succeeded")
            );
            let to = rcpt.target.target();
            maillog::failed(item.id.as_str(), &to, &reason);
            failures.push(Failure {
                rcpt: to,
                original: rcpt.original.clone(),
                reason: reason.clone(),
                forwarded: matches!(rcpt.target, Recipient::Forward { .. }),
            });
            self.record(item, i, RcptState::Failed { reason }, None)
                .await;
        }
        failures
    }

    /// Queues one DSN (RFC 3464) to the envelope sender for these failures; never for a
    /// message whose sender is `<>` (RFC 5321 §6.1: no bounce of a bounce), nor about a forwarded
    /// copy to a sender that was not authenticated on arrival (SPEC §8: a forged sender
    /// would get it).
    async fn bounce(&self, item: &StoredMessage, failures: &[Failure]) {
        let sender = item.envelope.from.clone();
        if !dsn::should_bounce(&sender) {
            return;
        }
        // A forwarded copy that failed is bounced only to a sender authenticated on arrival;
        // local failures (a delivery command, a pipe) are bounced as always.
        let (kept, failures): (Vec<&Failure>, Vec<&Failure>) = failures
            .iter()
            .partition(|f| f.forwarded && item.envelope.unverified_sender);
        if !kept.is_empty() {
            maillog::not_bounced(item.id.as_str(), &sender);
        }
        if failures.is_empty() {
            return;
        }
        let failed: Vec<dsn::Failed> = failures
            .iter()
            .map(|f| dsn::Failed {
                recipient: f.rcpt.clone(),
                original: f.original.clone(),
                reason: f.reason.clone(),
            })
            .collect();
        let rcpts = self.dsn_targets(&sender);
        let (queue, hostname, original) = (self.queue.clone(), self.hostname.clone(), item.clone());
        let committed = smol::unblock(move || {
            let body = dsn::build(
                &hostname,
                &original,
                &failed,
                time::OffsetDateTime::now_utc(),
            )?;
            let mut incoming = queue.incoming()?;
            incoming.write(&body)?;
            incoming.commit(Envelope {
                from: String::new(),
                rcpts,
                received_at: now_secs(),
                client: "local DSN".into(),
                ..Default::default()
            })
        })
        .await;
        match committed {
            Ok(dsn_item) => {
                maillog::bounced(item.id.as_str(), &sender, dsn_item.id.as_str());
                self.deliveries.submit(dsn_item);
            }
            Err(e) => log::error!("queue {}: cannot queue the DSN to {sender}: {e}", item.id),
        }
    }

    /// Where a DSN to `sender` goes: through our users and aliases when the sender is ours.
    fn dsn_targets(&self, sender: &str) -> Vec<QueuedRcpt> {
        let domains = self.config.domains();
        let targets = match Address::parse(sender) {
            Ok(a) if domains.get(a.domain()).is_some() => domains.resolve(&a).recipients,
            _ => vec![Recipient::Forward {
                address: sender.to_string(),
                via: Vec::new(),
            }],
        };
        targets
            .into_iter()
            .map(|target| QueuedRcpt {
                original: sender.to_string(),
                target,
                state: RcptState::Pending,
                last_error: None,
            })
            .collect()
    }

    /// The message stays queued: make this attempt's status records durable (one fsync for
    /// all of them; a finished message is removed instead).
    async fn sync_records(&self, item: &StoredMessage) {
        let (queue, snapshot) = (self.queue.clone(), item.clone());
        if let Err(e) = smol::unblock(move || queue.sync(&snapshot)).await {
            log::error!("queue {}: cannot sync status records: {e}", item.id);
        }
    }

    /// Removes a finished message. A rename and a small overwrite in the page cache, with
    /// no fsync to wait for (see `Queue::remove`), so it is done right here, as `record` is,
    /// rather than handed to a blocking thread and back.
    async fn finish(&self, item: &StoredMessage) {
        match self.queue.remove(item) {
            Ok(()) => maillog::removed(item.id.as_str()),
            Err(e) => {
                log::error!("queue {}: cannot remove finished message: {e}", item.id);
                // It stays queued: its outcomes must be on file (see `record`), or a restart
                // would deliver it again.
                for (i, rcpt) in item.envelope.rcpts.iter().enumerate() {
                    let written = self.queue.record(item, i, &rcpt.state, None);
                    if let Err(e) = written {
                        log::error!("queue {}: cannot record recipient {i}: {e}", item.id);
                    }
                }
                self.sync_records(item).await;
            }
        }
    }
}

/// The RCPT address for a remote peer: the domain in ACE form (RFC 5891), the local part as
/// given (SMTPUTF8 decides whether the peer can take it).
fn remote_rcpt(target: &Recipient, domain_ace: &str) -> String {
    let address = match target {
        Recipient::Forward { address, .. } | Recipient::Mailbox { address } => address,
        Recipient::Pipe { alias, .. } => alias,
    };
    match address.rsplit_once('@') {
        Some((local, _)) => format!("{local}@{domain_ace}"),
        None => address.clone(),
    }
}

/// The From: address of a DMARC-safe copy: the address the sender wrote to (the alias), in
/// its domain's ACE form; the postmaster of `domain` when that was `<Postmaster>`.
fn forwarder_address(original_rcpt: &str, domain_ace: &str) -> String {
    match Address::parse(original_rcpt) {
        Ok(a) => format!("{}@{domain_ace}", a.local()),
        Err(_) => format!("postmaster@{domain_ace}"),
    }
}
