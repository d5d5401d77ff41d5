//! Failed logins, counted per client address over every protocol (SPEC §11): each failure is
//! answered slowly (`auth::Authenticator` waits), and after [`MAX_FAILURES`] failures within
//! [`WINDOW`] the address may not try again until the window has passed. IPv6 clients are
//! counted per /64, since one host usually has a whole /64 to rotate through. Nothing here
//! touches other addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed per address within [`WINDOW`].
pub const MAX_FAILURES: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(10 * 60);
/// Entries kept at most; older windows are swept first (memory stays bounded under a
/// distributed attack).
const MAX_ENTRIES: usize = 100_000;

/// An IPv4 address, or the /64 of an IPv6 one (IPv4-mapped IPv6 counts as IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    V4(u32),
    V6Prefix(u64),
}

fn key(ip: IpAddr) -> Key {
    match ip {
        IpAddr::V4(v4) => Key::V4(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Key::V4(u32::from(v4)),
            None => Key::V6Prefix((u128::from(v6) >> 64) as u64),
        },
    }
}

struct Window {
    started: Instant,
    failures: u32,
}

/// Password checks running at once: at most one per core. A check of a hash of the default
/// cost (SPEC §5: scrypt `ln=15, r=8`, as chasquid) takes 32 MiB and tens of milliseconds of
/// CPU; without this bound, every connection sending AUTH at the same moment would add its
/// 32 MiB, and a stranger with 50 connections could make us allocate gigabytes. More checks
/// at once would not finish sooner either: they are bound by the cores.
pub struct PasswordChecks(smol::lock::Semaphore);

impl Default for PasswordChecks {
    fn default() -> PasswordChecks {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        PasswordChecks(smol::lock::Semaphore::new(cores))
    }
}

impl PasswordChecks {
    /// Waits for a slot; the check runs while the guard lives.
    pub async fn slot(&self) -> smol::lock::SemaphoreGuard<'_> {
        self.0.acquire().await
    }
}

#[derive(Default)]
pub struct AuthLimit {
    windows: Mutex<HashMap<Key, Window>>,
}

impl AuthLimit {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Window>> {
        // A panic while holding the lock leaves at worst a counter off by one.
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `ip` has used up its failures for now.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.lock()
            .get(&key(ip))
            .is_some_and(|w| now.duration_since(w.started) < WINDOW && w.failures >= MAX_FAILURES)
    }

    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut windows = self.lock();
        if windows.len() >= MAX_ENTRIES {
            windows.retain(|_, w| now.duration_since(w.started) < WINDOW);
        }
        let window = windows.entry(key(ip)).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.duration_since(window.started) >= WINDOW {
            *window = Window {
                started: now,
                failures: 0,
            };
        }
        window.failures += 1;
    }

    /// A successful login forgets the address's failures (a user's typos).
    pub fn succeeded(&self, ip: IpAddr) {
        self.lock().remove(&key(ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_after_max_failures_within_the_window_only() {
        let limit = AuthLimit::default();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            limit.failed(ip("192.0.2.1"), t0);
        }
        assert!(!limit.blocked(ip("192.0.2.1"), t0));
        limit.failed(ip("192.0.2.1"), t0);
        assert!(limit.blocked(ip("192.0.2.1"), t0));
        // Others are not affected; the same host through IPv4-mapped IPv6 is.
        assert!(!limit.blocked(ip("192.0.2.2"), t0));
        assert!(limit.blocked(ip("::ffff:192.0.2.1"), t0));
        // The window passes.
        assert!(!limit.blocked(ip("192.0.2.1"), t0 + WINDOW));
    }

    #[test]
    fn ipv6_counts_per_64_and_success_resets() {
        let limit = AuthLimit::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            limit.failed(ip(&format!("2001:db8:1:2::{i:x}")), t0);
        }
        assert!(limit.blocked(ip("2001:db8:1:2:ffff::1"), t0), "same /64");
        assert!(!limit.blocked(ip("2001:db8:1:3::1"), t0), "another /64");
        limit.succeeded(ip("2001:db8:1:2::1"));
        assert!(!limit.blocked(ip("2001:db8:1:2::1"), t0));
    }
}
