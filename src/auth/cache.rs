//! Logins verified recently, so that a client that logs in again (phones and desktop clients
//! open several IMAP connections, and reconnect all day) does not cost another scrypt: a
//! password hash of the users file costs tens of milliseconds of CPU by design, a lookup here
//! microseconds. Dovecot's `auth_cache` does the same, with the same default lifetime.
//!
//! What is kept per user, for [`TTL`]: an HMAC-SHA256 of the password under a key drawn at
//! start and never stored, and a digest of the stored hash it was verified against. So:
//! - a password change (another stored hash) or a removed user is never served from here;
//! - the memory of the process holds no password, only keyed MACs: someone who can read it
//!   can test guesses at HMAC speed instead of scrypt's, which is the price of the speed, as
//!   with Dovecot's cache;
//! - failures are not kept: each one is checked, delayed and counted as before.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::{digest, hmac};

/// How long a verified login is trusted without a new check (Dovecot's `auth_cache_ttl`).
pub const TTL: Duration = Duration::from_secs(3600);
/// Users remembered at most.
const MAX_USERS: usize = 10_000;

struct Verified {
    /// Digest of the stored hash the password was checked against.
    stored: digest::Digest,
    /// HMAC of the password.
    mac: hmac::Tag,
    until: Instant,
}

pub struct VerifiedLogins {
    key: hmac::Key,
    users: Mutex<HashMap<String, Verified>>,
}

impl Default for VerifiedLogins {
    fn default() -> Self {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        // A key only this process knows; a failing RNG leaves a cache nobody can hit.
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| hmac::Key::new(hmac::HMAC_SHA256, &rand::random::<[u8; 32]>()));
        VerifiedLogins {
            key,
            users: Mutex::new(HashMap::new()),
        }
    }
}

impl VerifiedLogins {
    /// Whether `user` logged in with `password` against this `stored` hash less than
    /// [`TTL`] ago.
    pub fn knows(&self, user: &str, stored: &str, password: &str) -> bool {
        self.knows_at(user, stored, password, Instant::now())
    }

    fn knows_at(&self, user: &str, stored: &str, password: &str, now: Instant) -> bool {
        let users = self.lock();
        let Some(v) = users.get(user) else {
            return false;
        };
        v.until > now
            && v.stored.as_ref() == digest::digest(&digest::SHA256, stored.as_bytes()).as_ref()
            && hmac::verify(&self.key, &self.message(user, password), v.mac.as_ref()).is_ok()
    }

    /// `user`'s `password` was just verified against `stored`.
    pub fn remember(&self, user: &str, stored: &str, password: &str) {
        self.remember_at(user, stored, password, Instant::now());
    }

    fn remember_at(&self, user: &str, stored: &str, password: &str, now: Instant) {
        let verified = Verified {
            stored: digest::digest(&digest::SHA256, stored.as_bytes()),
            mac: hmac::sign(&self.key, &self.message(user, password)),
            until: now + TTL,
        };
        let mut users = self.lock();
        if users.len() >= MAX_USERS && !users.contains_key(user) {
            users.retain(|_, v| v.until > now);
            if users.len() >= MAX_USERS {
                users.clear();
            }
        }
        users.insert(user.to_string(), verified);
    }

    /// The user and the password, unambiguously joined.
    fn message(&self, user: &str, password: &str) -> Vec<u8> {
        [user.as_bytes(), b"\0", password.as_bytes()].concat()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Verified>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_password_against_the_same_hash_within_the_ttl() {
        let cache = VerifiedLogins::default();
        let now = Instant::now();
        assert!(!cache.knows_at("a@x.test", "$scrypt$1", "pw", now));
        cache.remember_at("a@x.test", "$scrypt$1", "pw", now);
        assert!(cache.knows_at("a@x.test", "$scrypt$1", "pw", now));
        assert!(
            !cache.knows_at("a@x.test", "$scrypt$1", "pw2", now),
            "other password"
        );
        assert!(
            !cache.knows_at("a@x.test", "$scrypt$2", "pw", now),
            "password changed"
        );
        assert!(
            !cache.knows_at("b@x.test", "$scrypt$1", "pw", now),
            "other user"
        );
        assert!(
            !cache.knows_at("a@x.test", "$scrypt$1", "pw", now + TTL),
            "expired"
        );
        // The join is unambiguous.
        cache.remember_at("a", "$h", "b\0c", now);
        assert!(!cache.knows_at("a\0b", "$h", "c", now));
    }

    #[test]
    fn bounded() {
        let cache = VerifiedLogins::default();
        let now = Instant::now();
        for i in 0..MAX_USERS + 10 {
            cache.remember_at(&format!("u{i}@x.test"), "$h", "pw", now);
        }
        assert!(cache.lock().len() <= MAX_USERS);
        assert!(cache.knows_at(&format!("u{}@x.test", MAX_USERS + 9), "$h", "pw", now));
    }
}
