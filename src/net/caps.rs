//! Caps on concurrent connections, overall and per client address, for every listener of
//! every protocol.
//!
//! [`Connections`] counts the open connections of every listener, in total and per client
//! address; the caps come from the settings ([`Caps`]). As for failed logins
//! (`auth::limit`), IPv6 clients are counted per /64 (one host usually has a whole /64 to
//! rotate through) and IPv4-mapped IPv6 counts as IPv4. Clients in `relay_networks` are exempt
//! from the per-address cap, as Postfix exempts `mynetworks` from
//! `smtpd_client_connection_count_limit`; they still count towards the overall cap.
//!
//! A connection over a cap is [`Refused`]: each protocol tells the client so in its own words
//! (SMTP: `421 4.7.0`) and closes.

use crate::config::Settings;
use crate::config::settings::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// `max_connections` and `max_connections_per_address` of the settings, and the networks
/// exempt from the second (`relay_networks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caps {
    pub total: usize,
    pub per_address: usize,
    pub exempt: Vec<IpNet>,
}

impl Caps {
    pub fn from_settings(settings: &Settings) -> Caps {
        Caps {
            total: settings.max_connections,
            per_address: settings.max_connections_per_address,
            exempt: settings.relay_networks.clone(),
        }
    }

    /// Whether `ip` escapes the per-address cap (it is in `relay_networks`).
    pub fn exempt(&self, ip: IpAddr) -> bool {
        self.exempt.iter().any(|net| net.contains(ip))
    }
}

/// Which cap a connection ran into (for the log; the client is told the same for both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("too many connections in all (max_connections)")]
    Total,
    #[error("too many connections from this address (max_connections_per_address)")]
    PerAddress,
}

/// An IPv4 address, or the /64 of an IPv6 one. Opaque outside this module: it is handed back
/// to [`Connections::release_address`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressKey(Key);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    V4(u32),
    V6Prefix(u64),
}

fn key(ip: IpAddr) -> AddressKey {
    AddressKey(match ip {
        IpAddr::V4(v4) => Key::V4(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Key::V4(u32::from(v4)),
            None => Key::V6Prefix((u128::from(v6) >> 64) as u64),
        },
    })
}

#[derive(Default)]
struct Counts {
    open: usize,
    /// Only addresses with at least one open connection (memory bounded by `open`).
    per_address: HashMap<AddressKey, usize>,
}

/// The open connections, in total and per client address.
#[derive(Default)]
pub struct Connections {
    counts: Mutex<Counts>,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Every update below is a single increment or decrement: a panic elsewhere while the
        // lock was held cannot have left the counts half-changed.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open connections now (a shutdown waits for this to reach 0).
    pub fn open(&self) -> usize {
        self.lock().open
    }

    /// Counts one more connection, unless `cap` are open already.
    pub fn admit(&self, cap: usize) -> Result<(), Refused> {
        let mut counts = self.lock();
        if counts.open >= cap {
            return Err(Refused::Total);
        }
        counts.open += 1;
        Ok(())
    }

    /// Counts one more connection without a cap (a connection that must not be refused).
    pub fn add(&self) {
        self.lock().open += 1;
    }

    pub fn release(&self) {
        let mut counts = self.lock();
        counts.open = counts.open.saturating_sub(1);
    }

    /// Counts one more connection from `ip`, unless `cap` from its address (or /64) are open.
    pub fn admit_address(&self, ip: IpAddr, cap: usize) -> Result<AddressKey, Refused> {
        let key = key(ip);
        let mut counts = self.lock();
        let n = counts.per_address.entry(key).or_insert(0);
        if *n >= cap {
            if *n == 0 {
                // A cap of 0 (not accepted by the settings, but harmless): no empty entry.
                counts.per_address.remove(&key);
            }
            return Err(Refused::PerAddress);
        }
        *n += 1;
        Ok(key)
    }

    pub fn release_address(&self, key: AddressKey) {
        let mut counts = self.lock();
        if let Some(n) = counts.per_address.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_address.remove(&key);
            }
        }
    }

    /// Open connections from `ip`'s address (or /64).
    pub fn from_address(&self, ip: IpAddr) -> usize {
        self.lock().per_address.get(&key(ip)).copied().unwrap_or(0)
    }
}

/// File descriptors needed beyond one per connection and the caller's own (`held`, such as
/// the queue's pool of recycled files): listeners, queue files being written and delivered,
/// outbound SMTP and DNS sockets, hooks' pipes, logs.
pub const FD_MARGIN: u64 = 256;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as Go does for every program at start
/// (and so chasquid): the default soft limit of 1024 would end a flood in EMFILE on accept
/// long before `max_connections`. Logs the limit, and warns when it leaves no room for
/// `max_connections`, [`FD_MARGIN`] and `held` more. Returns the soft limit in force, if it
/// could be read.
pub fn raise_fd_limit(max_connections: usize, held: u64) -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        log::warn!(
            "cannot read the file descriptor limit: {}",
            std::io::Error::last_os_error()
        );
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; only this process's soft limit changes.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            log::info!(
                "file descriptor limit raised from {} to {}",
                lim.rlim_cur,
                lim.rlim_max
            );
            lim.rlim_cur = lim.rlim_max;
        } else {
            let e = std::io::Error::last_os_error();
            log::warn!(
                "cannot raise the file descriptor limit of {}: {e}",
                lim.rlim_cur
            );
        }
    } else {
        log::info!("file descriptor limit: {}", lim.rlim_cur);
    }
    let limit: u64 = lim.rlim_cur;
    let margin = FD_MARGIN.saturating_add(held);
    if fd_limit_too_low(limit, max_connections, margin) {
        log::warn!(
            "file descriptor limit {limit} is below max_connections ({max_connections}) + \
             {margin}: a flood may exhaust it; raise LimitNOFILE= or lower max_connections"
        );
    }
    Some(limit)
}

fn fd_limit_too_low(limit: u64, max_connections: usize, margin: u64) -> bool {
    let needed = u64::try_from(max_connections).unwrap_or(u64::MAX);
    limit < needed.saturating_add(margin)
}

/// One connection counted in [`Connections`] (and its client address, when it was counted)
/// for as long as this lives.
pub struct Admitted {
    connections: Arc<Connections>,
    address: Option<AddressKey>,
}

impl Admitted {
    /// Counts a connection from `client` within `caps`; `count_address: false` leaves the
    /// address to [`Admitted::count_address`] (the client a PROXY header will name).
    pub fn new(
        connections: &Arc<Connections>,
        caps: &Caps,
        client: IpAddr,
        count_address: bool,
    ) -> Result<Admitted, Refused> {
        connections.admit(caps.total)?;
        // From here on, a refusal drops `admitted`, which gives the overall slot back.
        let mut admitted = Admitted {
            connections: connections.clone(),
            address: None,
        };
        if count_address {
            admitted.count_address(caps, client)?;
        }
        Ok(admitted)
    }

    /// Counts a connection that no cap may refuse.
    pub fn uncapped(connections: &Arc<Connections>) -> Admitted {
        connections.add();
        Admitted {
            connections: connections.clone(),
            address: None,
        }
    }

    /// Counts the client's address (IPv6: its /64) within the per-address cap, unless it is
    /// exempt.
    pub fn count_address(&mut self, caps: &Caps, client: IpAddr) -> Result<(), Refused> {
        if self.address.is_none() && !caps.exempt(client) {
            self.address = Some(self.connections.admit_address(client, caps.per_address)?);
        }
        Ok(())
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(key) = self.address.take() {
            self.connections.release_address(key);
        }
        self.connections.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn total_cap_refuses_past_the_limit_and_frees_on_release() {
        let c = Connections::default();
        for _ in 0..3 {
            c.admit(3).unwrap();
        }
        assert_eq!(c.admit(3), Err(Refused::Total));
        assert_eq!(c.open(), 3);
        c.release();
        assert_eq!(c.open(), 2);
        c.admit(3).unwrap();
        c.add();
        assert_eq!(c.open(), 4, "add() ignores the cap");
    }

    #[test]
    fn per_address_cap_counts_ipv4_mapped_as_ipv4_and_ipv6_per_64() {
        let c = Connections::default();
        // (address admitted, same key as the first of its group)
        let same_host = ["192.0.2.1", "::ffff:192.0.2.1"];
        let same_64 = ["2001:db8:1:2::1", "2001:db8:1:2:ffff::9"];
        for group in [same_host, same_64] {
            c.admit_address(ip(group[0]), 2).unwrap();
            c.admit_address(ip(group[1]), 2).unwrap();
            assert_eq!(c.admit_address(ip(group[0]), 2), Err(Refused::PerAddress));
            assert_eq!(c.admit_address(ip(group[1]), 2), Err(Refused::PerAddress));
        }
        // Other addresses and other /64s are not affected.
        for other in ["192.0.2.2", "2001:db8:1:3::1"] {
            assert!(c.admit_address(ip(other), 2).is_ok(), "{other}");
        }
    }

    #[test]
    fn release_address_frees_a_slot_and_forgets_idle_addresses() {
        let c = Connections::default();
        let k1 = c.admit_address(ip("192.0.2.1"), 1).unwrap();
        assert_eq!(c.from_address(ip("192.0.2.1")), 1);
        assert!(c.admit_address(ip("192.0.2.1"), 1).is_err());
        c.release_address(k1);
        assert_eq!(c.from_address(ip("192.0.2.1")), 0);
        assert!(
            c.lock().per_address.is_empty(),
            "no entry kept for an idle address"
        );
        let k2 = c.admit_address(ip("192.0.2.1"), 1).unwrap();
        assert_eq!(k1, k2);
        // A refusal at cap 0 leaves no entry behind either.
        c.release_address(k2);
        assert!(c.admit_address(ip("192.0.2.9"), 0).is_err());
        assert!(c.lock().per_address.is_empty());
    }

    #[test]
    fn relay_networks_are_exempt() {
        let mut s = Settings::defaults(PathBuf::from("/nonexistent"));
        s.relay_networks = vec![crate::config::settings::IpNet::parse("10.0.0.0/8").unwrap()];
        let caps = Caps::from_settings(&s);
        let cases = [
            ("10.1.2.3", true),
            ("::ffff:10.0.0.1", true),
            ("192.0.2.1", false),
        ];
        for (addr, want) in cases {
            assert_eq!(caps.exempt(ip(addr)), want, "{addr}");
        }
    }

    #[test]
    fn admitted_connections_count_until_dropped() {
        let c = Arc::new(Connections::default());
        let caps = Caps {
            total: 3,
            per_address: 1,
            exempt: vec![IpNet::parse("10.0.0.0/8").unwrap()],
        };
        let first = Admitted::new(&c, &caps, ip("192.0.2.1"), true).unwrap();
        // The address is full: refused, and the overall slot it took is given back.
        assert!(matches!(
            Admitted::new(&c, &caps, ip("192.0.2.1"), true),
            Err(Refused::PerAddress)
        ));
        assert_eq!(c.open(), 1);
        // Exempt addresses and uncounted ones (behind a proxy) pass the per-address cap.
        let exempt = Admitted::new(&c, &caps, ip("10.0.0.1"), true).unwrap();
        let mut proxied = Admitted::new(&c, &caps, ip("192.0.2.1"), false).unwrap();
        assert_eq!(c.admit(3), Err(Refused::Total));
        assert_eq!(
            proxied.count_address(&caps, ip("192.0.2.1")),
            Err(Refused::PerAddress)
        );
        drop((first, exempt));
        proxied.count_address(&caps, ip("192.0.2.1")).unwrap();
        assert_eq!((c.open(), c.from_address(ip("192.0.2.1"))), (1, 1));
        drop(proxied);
        assert_eq!((c.open(), c.from_address(ip("192.0.2.1"))), (0, 0));
    }

    #[test]
    fn fd_limit_must_leave_room_for_every_connection_and_the_margin() {
        let margin = FD_MARGIN + 64;
        let cases = [
            (1024, 4000, true),
            (4000 + margin, 4000, false),
            (4000 + margin - 1, 4000, true),
            (u64::MAX - 1, usize::MAX, true),
        ];
        for (limit, max, low) in cases {
            assert_eq!(fd_limit_too_low(limit, max, margin), low, "{limit} {max}");
        }
    }

    #[test]
    fn raising_the_fd_limit_reaches_the_hard_limit() {
        let soft = raise_fd_limit(1, 0).unwrap();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!((soft, lim.rlim_cur), (lim.rlim_max, lim.rlim_max));
    }
}
