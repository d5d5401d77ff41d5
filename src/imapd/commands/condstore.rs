//! CONDSTORE and QRESYNC (RFC 7162) in the session: ENABLE (RFC 5161), the modseq record
//! of the selected folder, HIGHESTMODSEQ and the QRESYNC resync at SELECT, VANISHED.
//!
//! The modseqs themselves are the store's (`mailbox::modseq`): this module decides what
//! the client is told. Like Dovecot, HIGHESTMODSEQ and MODSEQ in unsolicited FETCH
//! responses are sent once the session turned CONDSTORE on (ENABLE, or a command that uses
//! it, RFC 7162 §3.1), so sessions that never ask pay nothing for it.

use crate::imapd::commands::{Selected, sequence};
use crate::imapd::conn::{Conn, State};
use crate::imapd::wire;
use crate::mailbox::{Folder, Message, ModseqLog, Modseqs, StoreError};
use imap_codec::imap_types::extensions::enable::CapabilityEnable;
use imap_codec::imap_types::sequence::SequenceSet;

/// ENABLE (RFC 5161 §3.1): CONDSTORE, and QRESYNC, which implies it (RFC 7162 §3.2.3).
/// Anything else is left out of the ENABLED answer.
pub fn enable(conn: &mut Conn, tag: &str, capabilities: &[CapabilityEnable<'_>]) {
    let mut enabled: Vec<&str> = Vec::new();
    if let State::Authenticated(s) | State::Selected(s, _) = &mut conn.state {
        for c in capabilities {
            match c {
                CapabilityEnable::CondStore => {
                    s.condstore = true;
                    enabled.push("CONDSTORE");
                }
                other if other.to_string().eq_ignore_ascii_case("QRESYNC") => {
                    (s.condstore, s.qresync) = (true, true);
                    enabled.push("QRESYNC");
                }
                _ => {}
            }
        }
    }
    enabled.dedup();
    let mut line = String::from("ENABLED");
    for e in enabled {
        line.push(' ');
        line.push_str(e);
    }
    wire::untagged(&mut conn.out, &line);
    conn.ok(tag, "ENABLE completed");
}

/// (CONDSTORE on, QRESYNC on) for this session.
pub fn modes(conn: &Conn) -> (bool, bool) {
    crate::imapd::commands::session(conn).map_or((false, false), |s| (s.condstore, s.qresync))
}

/// A CONDSTORE-enabling command was given (RFC 7162 §3.1: SELECT (CONDSTORE), FETCH
/// MODSEQ or CHANGEDSINCE, STORE UNCHANGEDSINCE, SEARCH MODSEQ, STATUS HIGHESTMODSEQ).
pub fn turn_on(conn: &mut Conn) {
    if let State::Authenticated(s) | State::Selected(s, _) = &mut conn.state {
        s.condstore = true;
    }
}

impl Selected {
    /// The selected folder's modseq record, brought up to date with the view when first
    /// taken.
    pub fn modseqs(&mut self) -> Result<Modseqs, StoreError> {
        if let Some(m) = &self.modseqs {
            return Ok(m.clone());
        }
        let m = self.folder.modseqs(true)?;
        self.modseqs = Some(m.clone());
        Ok(m)
    }
}

/// The modseq of a message of the view (recorded at the last look; recorded now when not).
pub fn modseq_of(log: &mut ModseqLog, m: &Message) -> u64 {
    match log.of(m.uid) {
        Some(modseq) => modseq,
        None => log.touch(m),
    }
}

/// `* VANISHED [(EARLIER) ]<uids>` (RFC 7162 §3.2.10, §3.2.5.2); nothing for none.
pub fn write_vanished(out: &mut Vec<u8>, ranges: &[(u32, u32)], earlier: bool) {
    if ranges.is_empty() {
        return;
    }
    let earlier = if earlier { "(EARLIER) " } else { "" };
    wire::push_fmt(
        out,
        format_args!("* VANISHED {earlier}{}\r\n", sequence::format(ranges)),
    );
}

/// The UIDs of `wanted` (ranges) gone with a modseq above `since`: the tombstones when the
/// record has all of them, else every UID of `wanted` below UIDNEXT that the view lacks
/// (RFC 7162 §3.2.5.2 allows naming UIDs the client knows are gone).
pub fn vanished(
    log: &ModseqLog,
    folder: &Folder,
    since: u64,
    wanted: &[(u32, u32)],
) -> Vec<(u32, u32)> {
    let inside = |uid: u32| wanted.iter().any(|&(a, b)| (a..=b).contains(&uid));
    match log.vanished_since(since) {
        Some(uids) => {
            let uids: Vec<u32> = uids
                .into_iter()
                .filter(|&u| inside(u) && folder.index_of_uid(u).is_none())
                .collect();
            sequence::ranges_of(&uids)
        }
        None => gaps(folder.messages(), wanted, folder.uidnext),
    }
}

/// The parts of `wanted` below `uidnext` that no message of `messages` (UID order) has.
fn gaps(messages: &[Message], wanted: &[(u32, u32)], uidnext: u32) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for &(a, b) in wanted {
        let b = b.min(uidnext.saturating_sub(1));
        if a > b {
            continue;
        }
        let mut next = a;
        let start = messages.partition_point(|m| m.uid < a);
        for m in messages[start..].iter().take_while(|m| m.uid <= b) {
            if m.uid > next {
                out.push((next, m.uid - 1));
            }
            next = m.uid + 1;
        }
        if next <= b {
            out.push((next, b));
        }
    }
    out
}

/// The QRESYNC part of SELECT (RFC 7162 §3.2.5): `VANISHED (EARLIER)` of the known UIDs
/// expunged since `since`, then the flags of those changed since, with their MODSEQ.
pub fn resync(
    folder: &Folder,
    log: &mut ModseqLog,
    since: u64,
    known: Option<&SequenceSet>,
    out: &mut Vec<u8>,
) {
    let top = folder.uidnext.saturating_sub(1);
    let wanted = match known {
        Some(set) => sequence::ranges(set, top),
        None => vec![(1, top.max(1))],
    };
    write_vanished(out, &vanished(log, folder, since, &wanted), true);
    let inside = |uid: u32| known.is_none() || wanted.iter().any(|&(a, b)| (a..=b).contains(&uid));
    for (i, m) in folder.messages().iter().enumerate() {
        let modseq = modseq_of(log, m);
        if modseq <= since || !inside(m.uid) {
            continue;
        }
        wire::push_fmt(out, format_args!("* {} FETCH (UID {} FLAGS ", i + 1, m.uid));
        crate::imapd::commands::flags::write_flags(out, &folder.flags(i), m.recent);
        wire::push_fmt(out, format_args!(" MODSEQ ({modseq}))\r\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(uid: u32) -> Message {
        Message {
            uid,
            system: 0,
            keywords: 0,
            recent: false,
            size: 1,
            date: 0,
            name: format!("{uid}.x.h").into(),
            in_new: false,
            summary: None,
        }
    }

    #[test]
    fn gaps_are_the_known_uids_not_in_the_folder() {
        let view: Vec<Message> = [2, 3, 7].into_iter().map(message).collect();
        assert_eq!(gaps(&view, &[(1, 10)], 9), [(1, 1), (4, 6), (8, 8)]);
        assert_eq!(gaps(&view, &[(3, 3), (5, 7)], 9), [(5, 6)]);
        assert_eq!(gaps(&view, &[(1, 100)], 1), []);
        assert_eq!(gaps(&[], &[(1, 4)], 3), [(1, 2)]);
    }
}
