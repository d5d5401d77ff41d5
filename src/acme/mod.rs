//! Certificates from an ACME directory (RFC 8555, SPEC §12): for `hostname`, and for
//! `mta-sts.<domain>` and `autoconfig.<domain>` of each local domain whose name resolves to one
//! of our addresses. One certificate per name under `data_dir/acme/certs/<name>/` (the layout
//! of `conf/certs/`, which wins over it), the account under `data_dir/acme/account.json`.
//!
//! At start and then at least hourly, a name without a certificate, or whose certificate has a
//! third of its life left, is ordered; the new certificate is put in force through the same
//! reload as SIGHUP's. A failure is one log line; the certificate in force keeps serving, and
//! the name is tried again after a growing delay ([`retry_delay`]).
//!
//! - [`client`]: instant-acme's HTTP client on smol and futures-rustls.
//! - [`order`]: one order: challenges answered, CSR, the chain stored.

pub mod client;
pub mod order;

use crate::config::live_config::LiveConfig;
use crate::dns::Dns;
use async_compat::Compat;
use rustls::pki_types::CertificateDer;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often names and certificates are looked at when nothing is due sooner.
const CHECK_INTERVAL: Duration = Duration::from_secs(3600);
/// The first retry after a failure; doubled each time, up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(60);
const MAX_RETRY: Duration = Duration::from_secs(6 * 3600);

/// The delay before the next attempt after `failures` failures in a row (≥ 1).
pub fn retry_delay(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(factor).min(MAX_RETRY)
}

/// When a certificate valid from `not_before` to `not_after` (Unix seconds) should be
/// renewed: when a third of its life is left (SPEC §12).
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_after - (not_after - not_before).max(0) / 3
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub fn acme_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("acme")
}

/// Starts the ACME loop on `ex` when `acme` is set.
pub fn start(config: &Arc<LiveConfig>, dns: Arc<Dns>, ex: &Arc<smol::Executor<'static>>) {
    let Some(acme) = config.settings.acme.clone() else {
        return;
    };
    if config.settings.https_listen.is_empty() && config.settings.http_listen.is_empty() {
        log::warn!(
            "acme: neither https_listen nor http_listen is set, so no challenge can be answered"
        );
    }
    log::info!("acme: certificates from {}", acme.directory);
    let manager = Manager {
        config: config.clone(),
        dns,
        failures: BTreeMap::new(),
    };
    ex.spawn(manager.run()).detach();
}

struct Manager {
    config: Arc<LiveConfig>,
    dns: Arc<Dns>,
    /// Per name: failures in a row, and when to try again.
    failures: BTreeMap<String, (u32, i64)>,
}

impl Manager {
    async fn run(mut self) {
        loop {
            let next = self.round().await;
            let wait = (next - now_secs()).clamp(1, CHECK_INTERVAL.as_secs() as i64);
            smol::Timer::after(Duration::from_secs(wait as u64)).await;
        }
    }

    /// One look at every name; returns when the next look is due (Unix seconds).
    async fn round(&mut self) -> i64 {
        let now = now_secs();
        let mut next = now + CHECK_INTERVAL.as_secs() as i64;
        let names = self.wanted_names().await;
        let certs = self.config.certificates();
        let mut due = Vec::new();
        for name in names {
            if let Some(&(_, retry)) = self.failures.get(&name)
                && retry > now
            {
                next = next.min(retry);
                continue;
            }
            match acme_validity(&self.config.settings.data_dir, &name, &certs) {
                Some((nb, na)) if renew_at(nb, na) > now => next = next.min(renew_at(nb, na)),
                _ => due.push(name),
            }
        }
        if due.is_empty() {
            return next;
        }
        let settings = self.config.settings.clone();
        let Some(acme) = settings.acme.clone() else {
            return next;
        };
        // instant-acme sleeps between polls with tokio's timer: a tokio context (one lazily
        // started thread, shared with the DNS), as STACK.md prescribes for tokio-based crates.
        let account = match Compat::new(order::account(&settings.data_dir, &acme)).await {
            Ok(account) => account,
            Err(e) => {
                // One line for the round, whatever the number of names.
                let retry = self.failed(&due, now);
                log::error!(
                    "acme: directory {}: {e}; keeping the certificates in force, next attempt in {}s",
                    acme.directory,
                    retry - now
                );
                return next.min(retry);
            }
        };
        for name in due {
            let challenges = self.config.challenges();
            let how = order::Challenge::for_settings(&settings);
            let obtain = order::obtain(&account, &name, how, &challenges, &settings.data_dir);
            match Compat::new(obtain).await {
                Ok(issued) => {
                    self.failures.remove(&name);
                    self.put_in_force(&name, &issued).await;
                    next = next.min(renew_at(issued.not_before, issued.not_after));
                }
                Err(e) => {
                    let retry = self.failed(std::slice::from_ref(&name), now);
                    log::error!(
                        "acme: {name}: {e}; keeping the certificate in force, next attempt in {}s",
                        retry - now
                    );
                    next = next.min(retry);
                }
            }
        }
        next
    }

    /// Counts a failure of each of `names`; returns when to try again.
    fn failed(&mut self, names: &[String], now: i64) -> i64 {
        let mut retry = now;
        for name in names {
            let failures = self.failures.get(name).map_or(0, |f| f.0) + 1;
            retry = now + retry_delay(failures).as_secs() as i64;
            self.failures.insert(name.clone(), (failures, retry));
        }
        retry
    }

    async fn put_in_force(&self, name: &str, issued: &order::Issued) {
        let config = self.config.clone();
        match smol::unblock(move || config.reload_certificates()).await {
            Ok(()) => log::info!(
                "acme: new certificate for {name} in force (serial {}, {} days)",
                issued.serial,
                (issued.not_after - issued.not_before) / 86400
            ),
            Err(e) => log::error!(
                "acme: {name}: the new certificate could not be put in force, keeping the old: {e}"
            ),
        }
    }

    /// `hostname`, plus `mta-sts.<d>` and `autoconfig.<d>` for each local domain `d` whose
    /// names resolve to one of our addresses (through the configured resolvers); minus the
    /// names `conf/certs/` has a folder for.
    async fn wanted_names(&self) -> Vec<String> {
        let settings = &self.config.settings;
        let hostname = settings.hostname.to_ascii_lowercase();
        let ours = our_addresses(&self.config, &self.dns).await;
        let mut names = BTreeSet::from([hostname]);
        for (domain, _) in self.config.domains().iter() {
            let d = domain.to_ascii();
            for name in [format!("mta-sts.{d}"), format!("autoconfig.{d}")] {
                let resolves = self
                    .dns
                    .ips(&name)
                    .await
                    .is_ok_and(|ips| ips.iter().any(|ip| ours.contains(ip)));
                if resolves {
                    names.insert(name);
                }
            }
        }
        let configured = crate::tls::configured_names(&settings.config_dir).unwrap_or_default();
        names
            .into_iter()
            .filter(|n| !configured.contains(n) && crate::addr::is_host_name(n))
            .collect()
    }
}

/// Our addresses: what `hostname` resolves to, `outbound_bind`, and the specific addresses
/// the listeners are bound to.
pub async fn our_addresses(config: &LiveConfig, dns: &Dns) -> BTreeSet<IpAddr> {
    let s = &config.settings;
    let mut ours: BTreeSet<IpAddr> = dns
        .ips(&s.hostname)
        .await
        .unwrap_or_default()
        .into_iter()
        .collect();
    ours.extend(s.outbound_bind);
    let listeners = [
        &s.smtp_listen,
        &s.submission_listen,
        &s.submission_tls_listen,
        &s.http_listen,
        &s.https_listen,
    ];
    for addrs in listeners {
        ours.extend(
            addrs
                .iter()
                .map(|a| a.ip())
                .filter(|ip| !ip.is_unspecified()),
        );
    }
    ours
}

/// The validity of the ACME certificate of `name` in force, if it is the one serving (not
/// one of `conf/certs/`, not the self-signed one).
fn acme_validity(
    data_dir: &Path,
    name: &str,
    in_force: &[(String, CertificateDer<'static>)],
) -> Option<(i64, i64)> {
    let dir = crate::tls::acme_certs_dir(data_dir).join(name);
    let stored = crate::tls::load_pair(&dir).ok()?;
    let leaf = stored.cert.first()?;
    let serving = in_force.iter().any(|(n, der)| n == name && der == leaf);
    if !serving {
        // On disk but not in force (a reload failed): order again rather than trust it.
        return None;
    }
    crate::tls::validity(leaf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_at_two_thirds_of_life() {
        let cases = [
            ((0, 90), 60),
            ((1000, 1030), 1020),
            ((0, 0), 0),
            ((10, 5), 5),
        ];
        for ((nb, na), want) in cases {
            assert_eq!(renew_at(nb, na), want, "{nb} {na}");
        }
    }

    #[test]
    fn retries_back_off_up_to_a_limit() {
        let cases = [
            (1, 60),
            (2, 120),
            (3, 240),
            (10, 6 * 3600),
            (u32::MAX, 6 * 3600),
        ];
        for (failures, want) in cases {
            assert_eq!(retry_delay(failures).as_secs(), want, "{failures}");
        }
    }
}
