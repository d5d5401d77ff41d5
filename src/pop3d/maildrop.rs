//! The maildrop of a POP3 session (RFC 1939 §5): INBOX's messages as they were at login, in
//! POP3 order, with their sizes and unique ids, and the deletion marks of DELE. Sans-I/O:
//! built from what the store read, changed only by the session's commands.

use crate::mailbox::Pop3Fields;
use std::collections::HashMap;

/// One message of the maildrop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub uid: u32,
    /// Octets as RETR sends them (CRLF line ends, before byte-stuffing).
    pub size: u64,
    /// UIDL (RFC 1939 §7).
    pub uidl: String,
}

/// Why a message number names no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    NoSuchMessage,
    Deleted,
}

#[derive(Debug, Default)]
pub struct Maildrop {
    entries: Vec<Entry>,
    deleted: Vec<bool>,
}

/// Dovecot's default `pop3_uidl_format = %08Xu%08Xv`: UID and UIDVALIDITY, eight lower-case
/// hex digits each (checked against Dovecot 2.3: `000000016b16adb7`).
pub fn default_uidl(uid: u32, uidvalidity: u32) -> String {
    format!("{uid:08x}{uidvalidity:08x}")
}

/// RFC 1939 §7: a unique-id is 1 to 70 characters from 0x21 to 0x7E.
fn valid_uidl(uidl: &str) -> bool {
    (1..=70).contains(&uidl.len()) && uidl.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

impl Maildrop {
    /// The maildrop of a folder's `(uid, size)` messages (ascending UIDs): Dovecot's order
    /// and UIDLs, so that clients moving from Dovecot see the same listing. Messages with a
    /// `O` field come first in its order, then the others by UID; a `P` field replaces the
    /// default UIDL.
    pub fn build(
        messages: impl IntoIterator<Item = (u32, u64)>,
        uidvalidity: u32,
        fields: &HashMap<u32, Pop3Fields>,
    ) -> Maildrop {
        let mut keyed: Vec<(u32, Entry)> = messages
            .into_iter()
            .map(|(uid, size)| {
                let f = fields.get(&uid);
                let uidl = match f.and_then(|f| f.uidl.as_deref()) {
                    Some(p) if valid_uidl(p) => p.to_string(),
                    Some(p) => {
                        log::warn!("pop3: UID {uid}: unusable UIDL {p:?} in the uidlist");
                        default_uidl(uid, uidvalidity)
                    }
                    None => default_uidl(uid, uidvalidity),
                };
                let order = f.and_then(|f| f.order).unwrap_or(u32::MAX);
                (order, Entry { uid, size, uidl })
            })
            .collect();
        keyed.sort_by_key(|(order, e)| (*order, e.uid));
        Maildrop::new(keyed.into_iter().map(|(_, e)| e).collect())
    }

    pub fn new(entries: Vec<Entry>) -> Maildrop {
        let deleted = vec![false; entries.len()];
        Maildrop { entries, deleted }
    }

    /// Messages not marked deleted, and their octets (STAT).
    pub fn stat(&self) -> (usize, u64) {
        self.live()
            .fold((0, 0), |(n, size), (_, e)| (n + 1, size + e.size))
    }

    /// The messages not marked deleted, with their numbers (from 1).
    pub fn live(&self) -> impl Iterator<Item = (usize, &Entry)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted[*i])
            .map(|(i, e)| (i + 1, e))
    }

    /// Message number `n`, unless it is out of range or marked deleted (RFC 1939 §5).
    pub fn get(&self, n: u32) -> Result<&Entry, Missing> {
        let i = self.index(n)?;
        Ok(&self.entries[i])
    }

    /// DELE: marks message `n`.
    pub fn delete(&mut self, n: u32) -> Result<(), Missing> {
        let i = self.index(n)?;
        self.deleted[i] = true;
        Ok(())
    }

    /// RSET: unmarks every message.
    pub fn reset(&mut self) {
        self.deleted.iter_mut().for_each(|d| *d = false);
    }

    /// The UIDs marked deleted, for the UPDATE state.
    pub fn deleted_uids(&self) -> Vec<u32> {
        self.entries
            .iter()
            .zip(&self.deleted)
            .filter(|(_, d)| **d)
            .map(|(e, _)| e.uid)
            .collect()
    }

    fn index(&self, n: u32) -> Result<usize, Missing> {
        let i = (n as usize)
            .checked_sub(1)
            .filter(|&i| i < self.entries.len())
            .ok_or(Missing::NoSuchMessage)?;
        if self.deleted[i] {
            return Err(Missing::Deleted);
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(list: &[(u32, Option<&str>, Option<u32>)]) -> HashMap<u32, Pop3Fields> {
        list.iter()
            .map(|&(uid, uidl, order)| {
                let f = Pop3Fields {
                    uidl: uidl.map(str::to_string),
                    order,
                };
                (uid, f)
            })
            .collect()
    }

    fn uidls(m: &Maildrop) -> Vec<&str> {
        m.live().map(|(_, e)| e.uidl.as_str()).collect()
    }

    #[test]
    fn dovecot_uidls_and_overrides() {
        assert_eq!(default_uidl(1, 0x6b16adb7), "000000016b16adb7");
        assert_eq!(default_uidl(0xabcdef12, 7), "abcdef1200000007");
        let msgs = [(1, 10), (2, 20), (3, 30)];
        let m = Maildrop::build(msgs, 0x6b16adb7, &HashMap::new());
        assert_eq!(
            uidls(&m),
            ["000000016b16adb7", "000000026b16adb7", "000000036b16adb7"]
        );
        let over = fields(&[(2, Some("old-uidl-42"), None), (3, Some("bad uidl"), None)]);
        let m = Maildrop::build(msgs, 0x6b16adb7, &over);
        assert_eq!(
            uidls(&m),
            ["000000016b16adb7", "old-uidl-42", "000000036b16adb7"]
        );
    }

    #[test]
    fn pop3_order_first_then_uids() {
        // As Dovecot 2.3 lists it: O-ordered messages first, then the rest by UID.
        let over = fields(&[(3, None, Some(1)), (1, Some("x"), Some(2))]);
        let m = Maildrop::build([(1, 1), (2, 2), (3, 3), (4, 4)], 9, &over);
        let uids: Vec<u32> = m.live().map(|(_, e)| e.uid).collect();
        assert_eq!(uids, [3, 1, 2, 4]);
    }

    #[test]
    fn marks() {
        let mut m = Maildrop::build([(5, 100), (6, 200), (9, 300)], 1, &HashMap::new());
        assert_eq!(m.stat(), (3, 600));
        assert_eq!(m.get(0), Err(Missing::NoSuchMessage));
        assert_eq!(m.get(4), Err(Missing::NoSuchMessage));
        assert_eq!(m.get(u32::MAX), Err(Missing::NoSuchMessage));
        assert_eq!(m.delete(2), Ok(()));
        assert_eq!(m.delete(2), Err(Missing::Deleted));
        assert_eq!(m.get(2), Err(Missing::Deleted));
        assert_eq!(m.stat(), (2, 400));
        let numbers: Vec<usize> = m.live().map(|(n, _)| n).collect();
        assert_eq!(numbers, [1, 3], "numbers do not shift");
        assert_eq!(m.deleted_uids(), [6]);
        m.reset();
        assert_eq!(m.stat(), (3, 600));
        assert!(m.deleted_uids().is_empty());
    }
}
