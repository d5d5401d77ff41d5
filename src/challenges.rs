//! Answers to the ACME challenges in flight (RFC 8555 §8): http-01 key authorizations by
//! token, served by `web` on `http_listen`, and tls-alpn-01 certificates by name (RFC 8737),
//! picked by `tls` when a client offers the `acme-tls/1` protocol. `acme` puts an answer in
//! before it asks the CA to validate and takes it out when the authorization is decided.

use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// RFC 8737 §6.2: the ALPN protocol of tls-alpn-01 validation.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// At most this many answers at once: a bound on what a broken order loop could pile up.
const MAX_ANSWERS: usize = 256;

#[derive(Default)]
pub struct Challenges {
    http: Mutex<HashMap<String, String>>,
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent whatever panicked while one was held.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Challenges({} http-01, {} tls-alpn-01)",
            locked(&self.http).len(),
            locked(&self.alpn).len()
        )
    }
}

impl Challenges {
    /// RFC 8555 §8.3: the body of `/.well-known/acme-challenge/<token>`.
    pub fn set_http(&self, token: &str, key_authorization: &str) {
        let mut map = locked(&self.http);
        if map.len() < MAX_ANSWERS {
            map.insert(token.to_string(), key_authorization.to_string());
        }
    }

    pub fn http(&self, token: &str) -> Option<String> {
        locked(&self.http).get(token).cloned()
    }

    pub fn remove_http(&self, token: &str) {
        locked(&self.http).remove(token);
    }

    /// RFC 8737 §3: the self-signed certificate with the acmeIdentifier extension for `name`.
    pub fn set_alpn(&self, name: &str, cert: Arc<CertifiedKey>) {
        let mut map = locked(&self.alpn);
        if map.len() < MAX_ANSWERS {
            map.insert(name.to_ascii_lowercase(), cert);
        }
    }

    pub fn alpn(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        locked(&self.alpn).get(&name.to_ascii_lowercase()).cloned()
    }

    pub fn remove_alpn(&self, name: &str) {
        locked(&self.alpn).remove(&name.to_ascii_lowercase());
    }
}
