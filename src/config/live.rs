//! Configuration in force, swapped whole by a reload (SIGHUP): readers take a snapshot
//! (`Arc`) and keep it for as long as they need, so a transaction never sees half of one
//! configuration and half of another.

use std::sync::{Arc, RwLock};

pub struct Live<T>(RwLock<Arc<T>>);

impl<T> Live<T> {
    pub fn new(value: T) -> Live<T> {
        Live(RwLock::new(Arc::new(value)))
    }

    /// The value in force now.
    pub fn get(&self) -> Arc<T> {
        // A panic while holding the lock cannot leave the `Arc` half-written.
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `value` in force; snapshots taken before keep the old one.
    pub fn replace(&self, value: T) {
        let value = Arc::new(value);
        match self.0.write() {
            Ok(mut guard) => *guard = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_survive_a_replace() {
        let live = Live::new(1);
        let before = live.get();
        live.replace(2);
        assert_eq!((*before, *live.get()), (1, 2));
    }
}
