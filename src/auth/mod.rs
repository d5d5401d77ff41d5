//! Logins, for every protocol (SMTP AUTH, IMAP LOGIN/AUTHENTICATE, POP3 USER/PASS): the full
//! address and its password, checked against the domain's users file off the executor, with
//! the failure delay and the per-address limit of SPEC §11. Receive-only users (`"!"`) never
//! log in. The protocol drivers only turn the [`Login`] into their own words.
//!
//! - [`limit`]: failures counted per client address; password checks bounded per core.
//! - [`cache`]: logins verified in the last hour, answered without another scrypt.

pub mod cache;
pub mod limit;

use crate::config::live_config::LiveConfig;
use crate::net::Protocol;
use cache::VerifiedLogins;
use limit::{AuthLimit, PasswordChecks};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// SPEC §11: a failed login is answered slowly.
pub const FAILURE_DELAY: Duration = Duration::from_secs(1);

/// What became of a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// The user, as `user@domain` in the users file's form (lower-cased, normalised).
    Ok(String),
    /// Wrong login or password, or a receive-only user; answered after [`FAILURE_DELAY`].
    Failed,
    /// The client address has too many failures: no password was checked.
    Blocked,
}

pub struct Authenticator {
    config: Arc<LiveConfig>,
    failures: AuthLimit,
    checks: PasswordChecks,
    failure_delay: Duration,
    verified: VerifiedLogins,
}

/// What the users file says about a login, before any password hashing.
enum Lookup {
    /// Verified recently with this password: the user.
    Known(String),
    /// The user and the stored hash to check the password against.
    Check(String, String),
    NoSuchUser,
}

impl Authenticator {
    pub fn new(config: Arc<LiveConfig>) -> Authenticator {
        Authenticator::with_delay(config, FAILURE_DELAY)
    }

    /// With another failure delay (tests).
    pub fn with_delay(config: Arc<LiveConfig>, failure_delay: Duration) -> Authenticator {
        Authenticator {
            config,
            failures: AuthLimit::default(),
            checks: PasswordChecks::default(),
            failure_delay,
            verified: VerifiedLogins::default(),
        }
    }

    /// Checks `login` (a full address) and `password` for a client at `client` speaking
    /// `protocol`. Waits [`FAILURE_DELAY`] before a failure or a block is returned.
    pub async fn login(
        &self,
        protocol: Protocol,
        client: IpAddr,
        login: &str,
        password: String,
    ) -> Login {
        if self.failures.blocked(client, Instant::now()) {
            // No password is checked while blocked, so guessing gets nowhere.
            log::info!(
                "{} login refused from {client}: too many failures",
                protocol.name()
            );
            crate::metrics::login(protocol.name(), "blocked");
            smol::Timer::after(self.failure_delay).await;
            return Login::Blocked;
        }
        let verified = self.check(login, password).await;
        match verified {
            Some(user) => {
                self.failures.succeeded(client);
                crate::metrics::login(protocol.name(), "ok");
                Login::Ok(user)
            }
            None => {
                log::info!("{} login failed from {client}", protocol.name());
                crate::metrics::login(protocol.name(), "password");
                self.failures.failed(client, Instant::now());
                smol::Timer::after(self.failure_delay).await;
                Login::Failed
            }
        }
    }

    /// The password check: the users file looked at (reloaded first when it changed since:
    /// a user just added), the recent logins asked, and only then, on a miss, the hash
    /// computed on a blocking thread, one per core at most at once.
    async fn check(&self, login: &str, password: String) -> Option<String> {
        let lookup = self.look_up(login, &password).await;
        let (user, stored) = match lookup {
            Lookup::Known(user) => return Some(user),
            Lookup::NoSuchUser => return None,
            Lookup::Check(user, stored) => (user, stored),
        };
        let slot = self.checks.slot().await;
        let (stored, checked) = smol::unblock(move || {
            let ok = crate::userdb::verify_hash(&stored, &password);
            (stored, ok.then_some(password))
        })
        .await;
        drop(slot);
        let password = checked?;
        self.verified.remember(&user, &stored, &password);
        Some(user)
    }

    /// The users file's answer for `login`, on a blocking thread (it may stat and reread
    /// the file), and the recent logins'.
    async fn look_up(&self, login: &str, password: &str) -> Lookup {
        let (config, login) = (self.config.clone(), login.to_string());
        let found = smol::unblock(move || {
            config.refresh_users_for(&login);
            let domains = config.domains();
            let user = domains.canonical_user(&login)?;
            let data = domains.get(user.domain())?;
            let stored = data.users.stored_hash(user.local().as_str())?;
            Some((user.to_string(), stored.to_string()))
        })
        .await;
        match found {
            None => Lookup::NoSuchUser,
            Some((user, stored)) if self.verified.knows(&user, &stored, password) => {
                Lookup::Known(user)
            }
            Some((user, stored)) => Lookup::Check(user, stored),
        }
    }
}
