//! A small map whose entries expire (DNS answers and parsed records kept for their TTL),
//! bounded so that a flood of distinct names cannot grow memory without limit.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Entries kept at most; when full, expired ones go first, then everything.
pub const MAX_ENTRIES: usize = 10_000;

pub struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K, V> Default for TtlCache<K, V> {
    fn default() -> Self {
        TtlCache {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq, V: Clone> TtlCache<K, V> {
    fn lock(&self) -> MutexGuard<'_, HashMap<K, (V, Instant)>> {
        // A panic while holding the lock leaves at worst a stale map: still a valid cache.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of `key` while it has not expired; an expired one is dropped.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut entries = self.lock();
        match entries.get(key) {
            Some((value, until)) if *until > Instant::now() => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().remove(key).map(|(value, _)| value)
    }

    /// Keeps `value` until `valid_until`; one already expired is not kept.
    pub fn insert(&self, key: K, value: V, valid_until: Instant) {
        if valid_until <= Instant::now() {
            return;
        }
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

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn entries_live_until_their_expiry() {
        let cache = TtlCache::<Box<str>, u32>::default();
        let now = Instant::now();
        cache.insert("fresh".into(), 1, now + Duration::from_secs(300));
        cache.insert("stale".into(), 2, now);
        cache.insert("short".into(), 3, now + Duration::from_millis(30));
        assert_eq!(cache.get("fresh"), Some(1));
        assert_eq!(cache.get("stale"), None, "expired entry served");
        assert_eq!(cache.get("short"), Some(3));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get("short"), None, "expired entry served");
        assert_eq!(cache.len(), 1, "expired entries kept");
        assert_eq!(cache.get("other"), None);
        assert_eq!(cache.remove("fresh"), Some(1));
        assert_eq!(cache.get("fresh"), None);
    }

    #[test]
    fn size_is_bounded() {
        let cache = TtlCache::<String, usize>::default();
        let later = Instant::now() + Duration::from_secs(300);
        for i in 0..MAX_ENTRIES + 10 {
            cache.insert(format!("d{i}"), i, later);
        }
        assert!(cache.len() <= MAX_ENTRIES, "{} entries", cache.len());
        let last = format!("d{}", MAX_ENTRIES + 9);
        assert_eq!(
            cache.get(last.as_str()),
            Some(MAX_ENTRIES + 9),
            "newest dropped"
        );
    }
}
