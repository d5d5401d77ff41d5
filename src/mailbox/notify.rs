//! In-process change notices, per user: IMAP sessions in IDLE wait on them, and every change
//! made through the store (delivery, APPEND, COPY, flags, expunges) rings them.
//!
//! A session listens first, then syncs its folder, then waits: a change between the sync
//! and the wait still wakes it. Changes made by other programs (Dovecot, mutt) ring nothing;
//! sessions also sync on a timer for those.

use event_listener::{Event, EventListener};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One event per user that anyone ever listened to or changed.
#[derive(Debug, Default)]
pub struct Notifier {
    users: Mutex<HashMap<(String, String), Arc<Event>>>,
}

impl Notifier {
    /// Wakes every session of `user@domain` that is listening.
    pub fn changed(&self, domain: &str, user: &str) {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(event) = users.get(&(domain.to_string(), user.to_string())) {
            event.notify(usize::MAX);
        }
    }

    /// A future that completes at the next [`Notifier::changed`] for `user@domain`.
    pub fn listen(&self, domain: &str, user: &str) -> EventListener {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users
            .entry((domain.to_string(), user.to_string()))
            .or_default()
            .listen()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn wakes_the_user_and_only_them() {
        let n = Notifier::default();
        let bob = n.listen("example.org", "bob");
        let alice = n.listen("example.org", "alice");
        n.changed("example.org", "bob");
        n.changed("example.org", "nobody-listens");
        smol::block_on(async {
            let woke = smol::future::or(
                async {
                    bob.await;
                    true
                },
                async {
                    smol::Timer::after(Duration::from_secs(5)).await;
                    false
                },
            )
            .await;
            assert!(woke, "bob's listener was woken");
            let woke = smol::future::or(
                async {
                    alice.await;
                    true
                },
                async {
                    smol::Timer::after(Duration::from_millis(50)).await;
                    false
                },
            )
            .await;
            assert!(!woke, "alice's was not");
        });
    }
}
