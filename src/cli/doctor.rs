//! The doctor of `serve` (issue 20): at start and then every hour, the `dns-check` verdicts of
//! each domain, the days left on each certificate in force, the PTR of our addresses and
//! whether `dnsbl` zones list them, as `/metrics` gauges; a verdict that changes is logged as
//! a warning (the first look logs only what is wrong).

use crate::cli::dns_records;
use crate::config::live_config::LiveConfig;
use crate::courier::mta_sts::PolicyFetcher;
use crate::dns::Dns;
use crate::dns::blocklist::{self, Answer};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the doctor looks again.
const INTERVAL: Duration = Duration::from_secs(3600);
/// Replaces [`INTERVAL`] (whole seconds): a hidden seam for the end-to-end tests, which cannot
/// wait an hour to see a changed record noticed.
const INTERVAL_ENV: &str = "TAMBO_DOCTOR_INTERVAL_SECS";

type Labels = Vec<(&'static str, String)>;

/// Starts the doctor on `ex`.
pub fn start(config: &Arc<LiveConfig>, dns: Arc<Dns>, ex: &Arc<smol::Executor<'static>>) {
    let interval = std::env::var(INTERVAL_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map_or(INTERVAL, Duration::from_secs);
    let fetcher = match PolicyFetcher::new(dns.clone(), None) {
        Ok(fetcher) => fetcher,
        Err(e) => {
            log::error!("doctor: TLS set-up for MTA-STS policy fetches: {e}; not started");
            return;
        }
    };
    let doctor = Doctor {
        config: config.clone(),
        dns,
        fetcher,
        seen: BTreeMap::new(),
        first: true,
    };
    ex.spawn(doctor.run(interval)).detach();
}

struct Doctor {
    config: Arc<LiveConfig>,
    dns: Arc<Dns>,
    fetcher: PolicyFetcher,
    /// The last verdict of each (metric, labels): a change is logged.
    seen: BTreeMap<String, bool>,
    first: bool,
}

impl Doctor {
    async fn run(mut self, interval: Duration) {
        loop {
            self.look().await;
            self.first = false;
            smol::Timer::after(interval).await;
        }
    }

    async fn look(&mut self) {
        let metrics = crate::metrics::global();
        let dns_check = self.dns_check().await;
        metrics.set_gauges(
            "tambo_dns_check_ok",
            "1 when util dns-check finds the record ok, 0 when missing or wrong (hourly).",
            dns_check,
        );
        metrics.set_gauges(
            "tambo_certificate_days_left",
            "Days until the certificate in force for a name expires (hourly).",
            self.days_left(),
        );
        let ptr = self.ptrs().await;
        metrics.set_gauges(
            "tambo_ptr_ok",
            "1 when the address's PTR names hostname, which resolves back to it (hourly).",
            ptr,
        );
        let listed = self.blocklists().await;
        metrics.set_gauges(
            "tambo_dnsbl_self_listed",
            "1 when the dnsbl zone lists our own address (hourly).",
            listed,
        );
    }

    /// Logs a verdict that changed (or, on the first look, one that is bad).
    fn note(&mut self, what: String, ok: bool) -> i64 {
        match self.seen.insert(what.clone(), ok) {
            Some(before) if before != ok => {
                let now = if ok { "ok now" } else { "no longer ok" };
                log::warn!("doctor: {what}: {now}");
            }
            None if !ok && self.first => log::warn!("doctor: {what}: not ok"),
            _ => {}
        }
        i64::from(ok)
    }

    async fn dns_check(&mut self) -> Vec<(Labels, i64)> {
        let settings = self.config.settings.clone();
        let domains: Vec<String> = self
            .config
            .domains()
            .iter()
            .map(|(d, _)| d.to_ascii())
            .collect();
        let mut series = Vec::new();
        for domain in domains {
            let verdicts =
                match dns_records::verdicts(&settings, &self.dns, &self.fetcher, &domain).await {
                    Ok(verdicts) => verdicts,
                    Err(e) => {
                        log::warn!("doctor: dns-check {domain}: {}", e.message);
                        continue;
                    }
                };
            for (record, ok) in verdicts {
                let value = self.note(format!("dns-check {domain}: {record}"), ok);
                series.push((vec![("domain", domain.clone()), ("record", record)], value));
            }
        }
        series
    }

    fn days_left(&mut self) -> Vec<(Labels, i64)> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let certs = self.config.certificates();
        certs
            .iter()
            .filter_map(|(name, der)| {
                let (_, not_after) = crate::tls::validity(der)?;
                Some((
                    vec![("name", name.clone())],
                    (not_after - now).div_euclid(86400),
                ))
            })
            .collect()
    }

    /// Our public addresses: `outbound_bind` and the specific addresses we listen on (not
    /// loopback or unspecified, which have no PTR to judge).
    fn addresses(&self) -> Vec<IpAddr> {
        let s = &self.config.settings;
        let mut ips: Vec<IpAddr> = s.outbound_bind.into_iter().collect();
        let listeners = [
            &s.smtp_listen,
            &s.submission_listen,
            &s.submission_tls_listen,
        ];
        for ip in listeners.into_iter().flatten().map(|a| a.ip()) {
            if !ip.is_loopback() && !ip.is_unspecified() && !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        ips
    }

    async fn ptrs(&mut self) -> Vec<(Labels, i64)> {
        let host = idna::domain_to_ascii(&self.config.settings.hostname)
            .unwrap_or_else(|_| self.config.settings.hostname.clone());
        let mut series = Vec::new();
        for ip in self.addresses() {
            let ok = dns_records::ptr_ok(&self.dns, ip, &host).await;
            let value = self.note(format!("PTR of {ip}"), ok);
            series.push((vec![("address", ip.to_string())], value));
        }
        series
    }

    async fn blocklists(&mut self) -> Vec<(Labels, i64)> {
        let zones = self.config.settings.dnsbl.clone();
        let mut series = Vec::new();
        for ip in self.addresses() {
            for zone in &zones {
                let listed = match blocklist::ask(&self.dns, zone, ip).await {
                    Answer::Listed { .. } => true,
                    Answer::NotListed => false,
                    // No usable answer: not counted either way.
                    Answer::Unusable(_) => continue,
                };
                // "ok" is not listed.
                let value = 1 - self.note(format!("{zone} listing {ip}"), !listed);
                let labels = vec![("zone", zone.clone()), ("address", ip.to_string())];
                series.push((labels, value));
            }
        }
        series
    }
}
