//! The configuration in force while `serve` runs, in one value that `cli/serve.rs` builds and
//! hands to every server: the settings (fixed until a restart), and what a reload swaps — the
//! domains (users, aliases, DKIM keys), the TLS acceptor (certificates) and the access rules.
//! SIGHUP reloads all of them; a change of a users or aliases file reloads the domains by
//! itself (`config::watch::DomainsWatch`).

use crate::challenges::Challenges;
use crate::config::access::{AccessError, AccessRules};
use crate::config::watch::DomainsWatch;
use crate::config::{Domains, Live, Settings};
use futures_rustls::TlsAcceptor;
use rustls::pki_types::CertificateDer;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How often [`LiveConfig::watch_domains`] looks at the users and aliases files.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

pub struct LiveConfig {
    pub settings: Arc<Settings>,
    domains: Live<Domains>,
    /// What `domains` was loaded from: a change reloads it without a SIGHUP.
    domains_watch: DomainsWatch,
    /// Swapped by a reload (certificates); handshakes in progress keep theirs.
    tls: Live<TlsAcceptor>,
    /// The same certificates for `https_listen` (ALPN for ACME's tls-alpn-01).
    web_tls: Live<TlsAcceptor>,
    /// The leaf certificate in force for each name (the doctor's days left).
    leaves: Live<Vec<(String, CertificateDer<'static>)>>,
    /// ACME challenge answers in flight, shared by the TLS resolver, `web` and `acme`.
    challenges: Arc<Challenges>,
    /// `conf/access` rules.
    access: Live<AccessRules>,
}

/// Why the configuration could not be loaded: the message names the file and the line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LoadError(pub String);

impl LiveConfig {
    /// Loads domains, certificates and access rules for `settings`. Blocking.
    pub fn load(settings: Arc<Settings>) -> Result<LiveConfig, LoadError> {
        let domains = load_domains(&settings)?;
        let challenges = Arc::new(Challenges::default());
        let tls = load_tls(&settings, &challenges)?;
        let access = load_access(&settings.config_dir).map_err(|e| LoadError(e.to_string()))?;
        Ok(LiveConfig {
            domains_watch: DomainsWatch::new(&settings.config_dir, &domains),
            domains: Live::new(domains),
            tls: Live::new(TlsAcceptor::from(tls.mail)),
            web_tls: Live::new(TlsAcceptor::from(tls.web)),
            leaves: Live::new(tls.leaves),
            challenges,
            access: Live::new(access),
            settings,
        })
    }

    /// The current domains (a snapshot: a reload does not change it under a transaction).
    pub fn domains(&self) -> Arc<Domains> {
        self.domains.get()
    }

    /// The access rules in force (a snapshot).
    pub fn access(&self) -> Arc<AccessRules> {
        self.access.get()
    }

    /// The TLS acceptor in force.
    pub fn tls(&self) -> Arc<TlsAcceptor> {
        self.tls.get()
    }

    /// The TLS acceptor of `https_listen`: the same certificates, with ALPN.
    pub fn web_tls(&self) -> Arc<TlsAcceptor> {
        self.web_tls.get()
    }

    /// The leaf certificate in force for each name.
    pub fn certificates(&self) -> Arc<Vec<(String, CertificateDer<'static>)>> {
        self.leaves.get()
    }

    /// The ACME challenge answers in flight.
    pub fn challenges(&self) -> Arc<Challenges> {
        self.challenges.clone()
    }

    /// Reloads the certificates alone (a new ACME certificate), as SIGHUP does: an error
    /// keeps those in force. Blocking.
    pub fn reload_certificates(&self) -> Result<(), LoadError> {
        let tls = load_tls(&self.settings, &self.challenges)?;
        self.swap_tls(tls);
        Ok(())
    }

    fn swap_tls(&self, tls: crate::tls::Loaded) {
        self.tls.replace(TlsAcceptor::from(tls.mail));
        self.web_tls.replace(TlsAcceptor::from(tls.web));
        self.leaves.replace(tls.leaves);
    }

    /// SIGHUP (SPEC §11): reloads users, aliases, access rules, DKIM keys and certificates.
    /// Everything is loaded first and swapped in only when all of it is valid, so a broken
    /// file keeps the old configuration; the error names the file and the line. Open
    /// connections keep the snapshot they have. Blocking.
    pub fn reload(&self) -> Result<(), LoadError> {
        let settings = &self.settings;
        let domains = load_domains(settings)?;
        let tls = load_tls(settings, &self.challenges)?;
        let access = load_access(&settings.config_dir).map_err(|e| LoadError(e.to_string()))?;
        self.domains_watch.loaded(&domains);
        self.domains.replace(domains);
        self.access.replace(access);
        self.swap_tls(tls);
        Ok(())
    }

    /// At a login: when the users file of the login's domain changed since the domains were
    /// loaded (a user just added by `util user-add`), reloads them first, so that the new
    /// password works at once rather than at the watcher's next look. Blocking (a stat, and
    /// the load when something changed): call it off the executor, as the password check.
    pub fn refresh_users_for(&self, login: &str) {
        let Ok(address) = crate::addr::Address::parse(login) else {
            return;
        };
        if self.domains_watch.users_changed(address.domain()) {
            self.reload_changed_domains();
        }
    }

    /// Reloads users and aliases when one of their files changed, and logs it: which file,
    /// or why the reload failed (file, line, problem; the old configuration stays). Blocking.
    pub fn reload_changed_domains(&self) {
        let Some(reload) = self.domains_watch.reload_if_changed(&self.domains) else {
            return;
        };
        let file = reload.changed.display();
        match reload.result {
            Ok(()) => log::info!("{file} changed: reloaded users and aliases"),
            Err(e) => log::error!(
                "{file} changed, but the reload failed, keeping the old users and aliases: {e}"
            ),
        }
    }

    /// Reloads users and aliases whenever their files change (SPEC §11's reload, without the
    /// SIGHUP). Every 2 seconds it stats the files, right on the executor: a few cached stat
    /// calls, nothing read unless one changed; the reload itself runs off the executor.
    pub async fn watch_domains(self: Arc<Self>) {
        loop {
            smol::Timer::after(WATCH_INTERVAL).await;
            if self.domains_watch.changed().is_some() {
                let reloading = self.clone();
                smol::unblock(move || reloading.reload_changed_domains()).await;
            }
        }
    }
}

fn load_domains(settings: &Settings) -> Result<Domains, LoadError> {
    Domains::load(&settings.config_dir, settings.normalization())
        .map_err(|e| LoadError(e.to_string()))
}

fn load_tls(
    settings: &Settings,
    challenges: &Arc<Challenges>,
) -> Result<crate::tls::Loaded, LoadError> {
    crate::tls::load(
        &settings.config_dir,
        &settings.data_dir,
        &settings.hostname,
        challenges.clone(),
    )
    .map_err(|e| LoadError(e.to_string()))
}

/// `<config_dir>/conf/access` (no file: no rules).
pub fn load_access(config_dir: &Path) -> Result<AccessRules, AccessError> {
    AccessRules::load(&config_dir.join("conf").join("access"))
}
