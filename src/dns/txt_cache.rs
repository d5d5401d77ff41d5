//! Parsed TXT records (SPF, DMARC, DKIM keys) kept for their DNS TTL, for the checks of
//! every message on port 25.
//!
//! hickory already caches the DNS answers, but mail-auth would still copy and parse the
//! same SPF and DMARC records for every message from a sender. mail-auth takes a cache of
//! its parsed records (`ResolverCache`) and fills it with the answer's expiry; this is
//! that cache, one for the process, beside the one resolver (`dns::Dns`).

use crate::ttl_cache::TtlCache;
use mail_auth::{ResolverCache, Txt};
use std::borrow::Borrow;
use std::hash::Hash;
use std::time::Instant;

#[derive(Default)]
pub struct TxtCache(TtlCache<Box<str>, Txt>);

impl TxtCache {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }
}

impl ResolverCache<Box<str>, Txt> for TxtCache {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.get(name)
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.remove(name)
    }

    fn insert(&self, key: Box<str>, value: Txt, valid_until: Instant) {
        self.0.insert(key, value, valid_until)
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

    /// Expiry and bounds are `TtlCache`'s (tested there); this is the mail-auth side.
    #[test]
    fn serves_what_mail_auth_stored_until_expiry() {
        let cache = TxtCache::default();
        let now = Instant::now();
        cache.insert(
            "fresh.example.".into(),
            spf("v=spf1 -all"),
            now + Duration::from_secs(300),
        );
        cache.insert("stale.example.".into(), spf("v=spf1 -all"), now);
        assert!(matches!(cache.get("fresh.example."), Some(Txt::Spf(_))));
        assert!(
            cache.get("stale.example.").is_none(),
            "expired entry served"
        );
        assert_eq!(cache.len(), 1);
        assert!(cache.remove("fresh.example.").is_some());
        assert!(cache.get("fresh.example.").is_none());
    }
}
