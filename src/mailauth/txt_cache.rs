//! Parsed TXT records (SPF, DMARC, DKIM keys) kept for their DNS TTL, for the checks of
//! every message on port 25.
//!
//! hickory already caches the DNS answers, but mail-auth would still copy and parse the
//! same SPF and DMARC records for every message from a sender. mail-auth takes a cache of
//! its parsed records (`ResolverCache`) and fills it with the answer's expiry; this is
//! that cache, one for the process, beside the one resolver (`dns::Dns`).

use mail_auth::{ResolverCache, Txt};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

/// Records kept at most; when full, expired ones go first, then everything (a flood of
/// distinct sender domains must not grow memory without bound).
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct TxtCache {
    entries: Mutex<HashMap<Box<str>, (Txt, Instant)>>,
}

impl TxtCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, (Txt, Instant)>> {
        // A panic while holding the lock leaves at worst a stale map: still a valid cache.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

impl ResolverCache<Box<str>, Txt> for TxtCache {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut entries = self.lock();
        match entries.get(name) {
            Some((txt, until)) if *until > Instant::now() => Some(txt.clone()),
            Some(_) => {
                entries.remove(name);
                None
            }
            None => None,
        }
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().remove(name).map(|(txt, _)| txt)
    }

    fn insert(&self, key: Box<str>, value: Txt, valid_until: Instant) {
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            let now = Instant::now();
            entries.retain(|_, (_, until)| *until > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (value, valid_until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::common::parse::TxtRecordParser;
    use mail_auth::spf::Spf;
    use std::sync::Arc;
    use std::time::Duration;

    fn spf(text: &str) -> Txt {
        Txt::Spf(Arc::new(Spf::parse(text.as_bytes()).unwrap()))
    }

    fn is_spf(txt: Option<Txt>) -> bool {
        matches!(txt, Some(Txt::Spf(_)))
    }

    #[test]
    fn entries_live_until_their_expiry() {
        let cache = TxtCache::default();
        let now = Instant::now();
        cache.insert(
            "fresh.example.".into(),
            spf("v=spf1 -all"),
            now + Duration::from_secs(300),
        );
        cache.insert("stale.example.".into(), spf("v=spf1 -all"), now);
        assert!(is_spf(cache.get("fresh.example.")));
        assert!(
            cache.get("stale.example.").is_none(),
            "expired entry served"
        );
        assert_eq!(cache.len(), 1, "expired entry kept");
        assert!(cache.get("other.example.").is_none());
        assert!(is_spf(cache.remove("fresh.example.")));
        assert!(cache.get("fresh.example.").is_none());
    }

    #[test]
    fn size_is_bounded() {
        let cache = TxtCache::default();
        let later = Instant::now() + Duration::from_secs(300);
        for i in 0..MAX_ENTRIES + 10 {
            cache.insert(format!("d{i}.example.").into(), spf("v=spf1 -all"), later);
        }
        assert!(cache.len() <= MAX_ENTRIES, "{} entries", cache.len());
        let last = format!("d{}.example.", MAX_ENTRIES + 9);
        assert!(is_spf(cache.get(last.as_str())), "newest entry dropped");
    }
}
