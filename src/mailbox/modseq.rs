//! Mod-sequences of a folder (RFC 7162, CONDSTORE and QRESYNC): one per message, bumped at
//! every change of its flags, and tombstones (expunged UIDs with the modseq of their expunge)
//! for `VANISHED`. Kept in `tambo-modseq` beside the folder's Maildir, a file of tambo's own
//! that is as disposable as `tambo-cache`.
//!
//! The record is kept by looking, not by being told: [`Log::reconcile`] compares a fresh
//! view of the folder (after an open or a sync) with what it recorded, message by message,
//! on the flags' bits. A message whose bits differ (a STORE here, a rename by Dovecot or
//! mutt, a flag set while no CONDSTORE session watched) gets a new modseq; a message not
//! recorded (delivery, APPEND, COPY, MOVE, a file dropped in) gets one; a recorded UID no
//! longer there gets a tombstone. So nothing that changes files needs to know about
//! modseqs, and a change made while tambo was not running is found at the next look.
//! Changes undone before anyone looked (`+\Seen` then `-\Seen`) are no change, which is
//! what a client holding the old state needs to hear.
//!
//! # Never 0, never lower
//!
//! Clients break on a HIGHESTMODSEQ of 0 or one that goes down under the same UIDVALIDITY
//! (MAILBOX.md). Flag records are written without fsync, so a crash can lose the tail of
//! the file, and the file can be deleted, or be missing because Dovecot wrote the Maildir.
//! Counting on from the highest value in the file is then not enough: values handed out
//! from the lost tail could be above it. So every load of the file starts the counter at
//! no less than the wall clock in microseconds (`max(recorded + 1, now_us)`), and bumps
//! add one. Every value ever handed out was at most the clock at the time it was handed
//! out (it started from the clock and grows by one per change, and a folder does not see a
//! million changes a second for long), so a restart, a lost tail or a lost file starts
//! above all of them. The price: HIGHESTMODSEQ moves up at each load of the file (once per
//! folder per process run) without a message changing; a client asking what changed since
//! then gets an empty answer. A clock set back by more than the time since the last change
//! together with a lost file is the case this cannot cover.
//!
//! # Tombstones and their cutoff
//!
//! Tombstones are written with an fsync (their loss would hide an expunge from a client),
//! and at most [`MAX_TOMBSTONES`] are kept: the oldest are dropped and the `floor` rises to
//! the highest modseq dropped. Every expunge with a modseq above the floor has its
//! tombstone. A client whose last known modseq is below the floor (or from before the file
//! was lost: a fresh file's floor is its first value) gets `VANISHED (EARLIER)` of every UID
//! of the range it asked about that is not in the folder: more than what changed, still
//! correct (RFC 7162 §3.2.5.2 allows reporting UIDs that were already expunged).

use crate::fsutil;
use crate::mailbox::folder::{Folder, Message};
use crate::mailbox::{Flags, StoreError, uidfile};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// The file beside the Maildir.
pub const FILE: &str = "tambo-modseq";

/// Tombstones kept per folder; past them, clients older than the oldest kept get the full
/// `VANISHED (EARLIER)` of their range (see the module doc).
pub const MAX_TOMBSTONES: usize = 10_000;

/// Folders whose records the registry keeps while no session uses them.
const KEEP_IDLE: usize = 256;

/// What a modseq records of a message's flags: the system bits and the keyword letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bits {
    system: u8,
    keywords: u32,
}

impl Bits {
    fn of(m: &Message) -> Bits {
        Bits {
            system: m.system & (Flags::ALL | Flags::FORWARDED),
            keywords: m.keywords,
        }
    }
}

/// The modseq record of one folder under one UIDVALIDITY.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    uidvalidity: u32,
    highest: u64,
    /// Every expunge with a modseq above this has its tombstone.
    floor: u64,
    messages: HashMap<u32, (u64, Bits)>,
    /// Expunged UID → modseq of its expunge.
    tombstones: BTreeMap<u32, u64>,
    /// Records in the file (for its compaction).
    lines: usize,
    /// Lines not yet written, and whether they hold a tombstone (written with an fsync).
    pending: Vec<u8>,
    pending_tombstone: bool,
}

/// The wall clock in microseconds: where a counter starts (see the module doc).
fn clock_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX >> 1))
        .max(1)
}

impl Log {
    /// The record of the folder in `dir` from its file, counting on from no less than
    /// `now_us`. A missing, damaged or other-UIDVALIDITY file starts a fresh record.
    fn load(dir: &Path, uidvalidity: u32, now_us: u64) -> Log {
        let mut log = Log {
            dir: dir.to_path_buf(),
            uidvalidity,
            highest: now_us.max(1),
            floor: now_us.max(1),
            messages: HashMap::new(),
            tombstones: BTreeMap::new(),
            lines: 0,
            pending: Vec::new(),
            pending_tombstone: false,
        };
        let path = dir.join(FILE);
        match fs::read(&path) {
            Ok(data) => {
                if !log.parse(&data) {
                    log::info!(
                        "{}: not used (damaged or another UIDVALIDITY)",
                        path.display()
                    );
                    log.messages.clear();
                    log.tombstones.clear();
                    (log.highest, log.floor) = (now_us.max(1), now_us.max(1));
                    log.rewrite();
                } else {
                    log.highest = log.highest.saturating_add(1).max(now_us);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => log.rewrite(),
            Err(e) => {
                log::warn!("{}: {e}", path.display());
                log.rewrite();
            }
        }
        log
    }

    /// Reads the file into the record; false when it cannot be used.
    fn parse(&mut self, data: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(data) else {
            return false;
        };
        let mut lines = text.split_inclusive('\n');
        let Some((highest, floor)) = lines.next().and_then(|h| self.header(h)) else {
            return false;
        };
        (self.highest, self.floor) = (highest, floor);
        for line in lines {
            // A torn last line (a crash during an append) is dropped.
            let Some(line) = line.strip_suffix('\n') else {
                break;
            };
            if !self.apply(line) {
                return false;
            }
            self.lines += 1;
        }
        true
    }

    /// `tambo-modseq 1 V<uidvalidity> H<highest> F<floor>`: (highest, floor) when it is
    /// ours and of this UIDVALIDITY.
    fn header(&self, line: &str) -> Option<(u64, u64)> {
        let mut words = line.trim_end().split(' ');
        if words.next()? != "tambo-modseq" || words.next()? != "1" {
            return None;
        }
        let v: u32 = words.next()?.strip_prefix('V')?.parse().ok()?;
        let h: u64 = words.next()?.strip_prefix('H')?.parse().ok()?;
        let f: u64 = words.next()?.strip_prefix('F')?.parse().ok()?;
        (v == self.uidvalidity && h > 0 && f > 0).then_some((h, f))
    }

    /// One record: `<uid> <modseq> <system hex> <keywords hex>` or `-<uid> <modseq>`.
    fn apply(&mut self, line: &str) -> bool {
        let mut words = line.split(' ');
        let (Some(uid), Some(modseq)) = (words.next(), words.next()) else {
            return false;
        };
        let Ok(modseq) = modseq.parse::<u64>() else {
            return false;
        };
        self.highest = self.highest.max(modseq);
        if let Some(uid) = uid.strip_prefix('-') {
            let Ok(uid) = uid.parse::<u32>() else {
                return false;
            };
            self.messages.remove(&uid);
            self.tombstones.insert(uid, modseq);
            return true;
        }
        let (Ok(uid), Some(system), Some(keywords)) =
            (uid.parse::<u32>(), words.next(), words.next())
        else {
            return false;
        };
        let (Ok(system), Ok(keywords)) = (
            u8::from_str_radix(system, 16),
            u32::from_str_radix(keywords, 16),
        ) else {
            return false;
        };
        self.tombstones.remove(&uid);
        self.messages
            .insert(uid, (modseq, Bits { system, keywords }));
        true
    }

    /// The highest modseq of the folder (RFC 7162 §3.1.2.1 HIGHESTMODSEQ): never 0.
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Expunges with a modseq above this all have their tombstone.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// The modseq of the message with `uid`, when recorded.
    pub fn of(&self, uid: u32) -> Option<u64> {
        self.messages.get(&uid).map(|&(modseq, _)| modseq)
    }

    /// The modseq of `m`, recording it (with a new modseq) when it is not recorded yet or
    /// its flags are not those recorded: what this session shows is what it records.
    pub fn touch(&mut self, m: &Message) -> u64 {
        let bits = Bits::of(m);
        match self.messages.get(&m.uid) {
            Some(&(modseq, b)) if b == bits => modseq,
            _ => {
                self.highest += 1;
                let modseq = self.highest;
                self.set(m.uid, modseq, bits);
                modseq
            }
        }
    }

    /// Expunged UIDs with their modseq above `since`, ascending; `None` when expunges that
    /// recent may have been forgotten (`since` below the floor).
    pub fn vanished_since(&self, since: u64) -> Option<Vec<u32>> {
        (since >= self.floor).then(|| {
            self.tombstones
                .iter()
                .filter(|&(_, &m)| m > since)
                .map(|(&uid, _)| uid)
                .collect()
        })
    }

    /// Brings the record up to date with a fresh view of the folder (`messages` in UID
    /// order). `complete`: the view holds every message the disk had (not a view that left
    /// files out); only then are recorded UIDs missing from it expunged. `gone(uid)` says
    /// whether a recorded UID above the view's last one is really gone (it may be a message
    /// that arrived after the view's listing). Returns whether anything changed.
    pub fn reconcile(
        &mut self,
        messages: &[Message],
        complete: bool,
        gone: impl FnMut(u32) -> bool,
    ) -> bool {
        let mut changed: Vec<(u32, Bits)> = Vec::new();
        let mut known = 0;
        for m in messages {
            let bits = Bits::of(m);
            match self.messages.get(&m.uid) {
                Some(&(_, b)) => {
                    known += 1;
                    if b != bits {
                        changed.push((m.uid, bits));
                    }
                }
                None => changed.push((m.uid, bits)),
            }
        }
        let mut expunged = Vec::new();
        if complete && known < self.messages.len() {
            let last = messages.last().map_or(0, |m| m.uid);
            let mut gone = gone;
            expunged = self
                .messages
                .keys()
                .copied()
                .filter(|uid| messages.binary_search_by_key(uid, |m| m.uid).is_err())
                .filter(|&uid| uid < last || gone(uid))
                .collect();
            expunged.sort_unstable();
        }
        if changed.is_empty() && expunged.is_empty() {
            return false;
        }
        // One new modseq for all that this look found (RFC 7162 §3.1: messages changed
        // together may share one).
        self.highest += 1;
        let modseq = self.highest;
        for (uid, bits) in changed {
            self.set(uid, modseq, bits);
        }
        self.expunge(&expunged, modseq);
        true
    }

    /// Records the expunge of `uids` (this session's EXPUNGE or MOVE).
    pub fn expunged(&mut self, uids: &[u32]) {
        let uids: Vec<u32> = uids
            .iter()
            .copied()
            .filter(|u| self.messages.contains_key(u))
            .collect();
        if uids.is_empty() {
            return;
        }
        self.highest += 1;
        self.expunge(&uids, self.highest);
    }

    fn set(&mut self, uid: u32, modseq: u64, bits: Bits) {
        self.tombstones.remove(&uid);
        self.messages.insert(uid, (modseq, bits));
        let line = format!("{uid} {modseq} {:x} {:x}\n", bits.system, bits.keywords);
        self.pending.extend_from_slice(line.as_bytes());
    }

    fn expunge(&mut self, uids: &[u32], modseq: u64) {
        for &uid in uids {
            self.messages.remove(&uid);
            self.tombstones.insert(uid, modseq);
            self.pending
                .extend_from_slice(format!("-{uid} {modseq}\n").as_bytes());
            self.pending_tombstone = true;
        }
        self.prune();
    }

    /// Drops the oldest tombstones past [`MAX_TOMBSTONES`]; the floor rises to them.
    fn prune(&mut self) {
        let over = self.tombstones.len().saturating_sub(MAX_TOMBSTONES);
        if over == 0 {
            return;
        }
        let mut by_age: Vec<(u64, u32)> = self.tombstones.iter().map(|(&u, &m)| (m, u)).collect();
        by_age.sort_unstable();
        // Tombstones of one modseq go together: the floor must be above none that is kept.
        let cut = by_age[over - 1].0;
        self.tombstones.retain(|_, m| *m > cut);
        self.floor = self.floor.max(cut);
        // The floor is in the header: the file is written anew.
        self.pending.clear();
        self.rewrite();
    }

    /// Writes what changed: appended to the file, fsync'd when it holds a tombstone; the
    /// whole file anew when it is mostly superseded records. A file that cannot be written
    /// is removed, so the next load starts fresh (with a floor above every value given)
    /// rather than from a record that lacks tombstones.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let records = self.messages.len() + self.tombstones.len();
        let added = self.pending.iter().filter(|&&b| b == b'\n').count();
        if self.lines + added > 2 * records + 1024 {
            self.pending.clear();
            return self.rewrite();
        }
        let path = self.dir.join(FILE);
        let written = OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| {
                f.write_all(&self.pending)?;
                if self.pending_tombstone {
                    f.sync_data()?;
                }
                Ok(())
            });
        self.lines += added;
        self.pending.clear();
        self.pending_tombstone = false;
        if let Err(e) = written {
            self.give_up(&path, &e);
        }
    }

    /// Writes the whole record anew (durably: it carries the floor).
    fn rewrite(&mut self) {
        let mut text = format!(
            "tambo-modseq 1 V{} H{} F{}\n",
            self.uidvalidity, self.highest, self.floor
        )
        .into_bytes();
        let mut uids: Vec<&u32> = self.messages.keys().collect();
        uids.sort_unstable();
        for uid in uids {
            let (modseq, bits) = self.messages[uid];
            text.extend_from_slice(
                format!("{uid} {modseq} {:x} {:x}\n", bits.system, bits.keywords).as_bytes(),
            );
        }
        for (uid, modseq) in &self.tombstones {
            text.extend_from_slice(format!("-{uid} {modseq}\n").as_bytes());
        }
        self.lines = self.messages.len() + self.tombstones.len();
        self.pending.clear();
        self.pending_tombstone = false;
        let path = self.dir.join(FILE);
        if let Err(e) = fsutil::write_atomic(&path, &text, crate::mailbox::writer::FILE_MODE) {
            self.give_up(&path, &e);
        }
    }

    fn give_up(&self, path: &Path, e: &io::Error) {
        log::warn!("{}: {e}; removed, to be started anew", path.display());
        let _ = fs::remove_file(path);
    }
}

/// A folder's record, shared by the sessions that have the folder open.
#[derive(Debug, Clone)]
pub struct Modseqs {
    /// The record's UIDVALIDITY, outside the lock: the registry checks it without waiting
    /// for a session that holds the record.
    uidvalidity: u32,
    log: Arc<Mutex<Log>>,
}

impl Modseqs {
    pub fn lock(&self) -> MutexGuard<'_, Log> {
        // Every change to a Log completes before it returns (no partial state to fear).
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The records of the folders of one store, by folder directory.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    folders: Mutex<HashMap<PathBuf, Modseqs>>,
}

impl Registry {
    /// The record of the folder in `dir` under `uidvalidity`, loaded when not held (or
    /// held under another UIDVALIDITY); and whether it was loaded now.
    fn get(&self, dir: &Path, uidvalidity: u32) -> (Modseqs, bool) {
        let mut folders = self.folders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = folders.get(dir)
            && m.uidvalidity == uidvalidity
        {
            return (m.clone(), false);
        }
        if folders.len() >= KEEP_IDLE {
            folders.retain(|_, m| Arc::strong_count(&m.log) > 1);
        }
        let log = Log::load(dir, uidvalidity, clock_us());
        let m = Modseqs {
            uidvalidity,
            log: Arc::new(Mutex::new(log)),
        };
        folders.insert(dir.to_path_buf(), m.clone());
        (m, true)
    }

    /// Forgets the folder in `dir` (DELETE, RENAME).
    pub fn forget(&self, dir: &Path) {
        let mut folders = self.folders.lock().unwrap_or_else(|e| e.into_inner());
        folders.remove(dir);
    }
}

impl crate::mailbox::UserStore {
    /// STATUS HIGHESTMODSEQ (RFC 7162 §3.1.2.3) of a folder.
    pub fn highest_modseq(&self, name: &crate::mailbox::FolderName) -> Result<u64, StoreError> {
        let folder = self.open(name, true)?;
        let modseqs = folder.modseqs(true)?;
        let highest = modseqs.lock().highest();
        Ok(highest)
    }
}

impl Folder {
    /// The folder's modseq record (RFC 7162), brought up to date with this view when
    /// `reconcile` (the view is fresh: just opened or synced) or when first loaded.
    pub fn modseqs(&self, reconcile: bool) -> Result<Modseqs, StoreError> {
        let (modseqs, loaded) = self.user.store.modseqs().get(&self.dir, self.uidvalidity);
        if reconcile || loaded {
            let mut log = modseqs.lock();
            let complete = !self.is_partial();
            let mut listed: Option<Option<uidfile::Loaded>> = None;
            log.reconcile(&self.messages, complete, |uid| {
                let loaded = listed.get_or_insert_with(|| uidfile::read(&self.dir).ok().flatten());
                self.file_gone(loaded.as_ref(), uid)
            });
            log.flush();
        }
        Ok(modseqs)
    }

    /// Whether the message with `uid` (above the view's last) has no file: no record in
    /// the uidlist, or none of its base name in `new/` or `cur/`. In doubt, not gone.
    fn file_gone(&self, list: Option<&uidfile::Loaded>, uid: u32) -> bool {
        let Some(list) = list else {
            return false;
        };
        match list.list.records.iter().find(|r| r.uid == uid) {
            None => list.list.uidvalidity == self.uidvalidity,
            Some(r) => matches!(self.locate(&r.base), Ok(None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(uid: u32, system: u8) -> Message {
        Message {
            uid,
            system,
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
    fn a_lost_or_torn_file_never_lowers_the_counter() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::load(dir.path(), 7, 100);
        assert_eq!(log.highest(), 100, "a fresh record starts at the clock");
        let view = [message(1, 0), message(2, Flags::SEEN)];
        assert!(log.reconcile(&view, true, |_| true));
        log.flush();
        assert_eq!((log.of(1), log.of(2)), (Some(101), Some(101)));
        // Reloaded with a clock behind the record: still above it.
        let log = Log::load(dir.path(), 7, 5);
        assert_eq!(log.highest(), 102);
        assert_eq!(log.of(2), Some(101));
        // A torn last line is dropped, the rest kept.
        let path = dir.path().join(FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"2 5000 1").unwrap();
        let log = Log::load(dir.path(), 7, 5);
        assert_eq!(log.of(2), Some(101));
        // Another UIDVALIDITY: a fresh record from the clock.
        let log = Log::load(dir.path(), 8, 300);
        assert_eq!((log.highest(), log.of(1), log.floor()), (300, None, 300));
    }

    #[test]
    fn flag_changes_new_messages_and_expunges_are_found_by_looking() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::load(dir.path(), 1, 1000);
        log.reconcile(&[message(1, 0), message(2, 0), message(3, 0)], true, |_| {
            true
        });
        assert!(
            !log.reconcile(&[message(1, 0), message(2, 0), message(3, 0)], true, |_| {
                true
            })
        );
        // 2 flagged, 3 gone, 4 new.
        let view = [message(1, 0), message(2, Flags::FLAGGED), message(4, 0)];
        assert!(log.reconcile(&view, true, |_| true));
        assert_eq!(log.of(1), Some(1001));
        assert_eq!(
            (log.of(2), log.of(4), log.of(3)),
            (Some(1002), Some(1002), None)
        );
        assert_eq!(log.vanished_since(1001), Some(vec![3]));
        assert_eq!(log.vanished_since(1002), Some(vec![]));
        // A view that left files out expunges nothing; a UID above the view's last one is
        // expunged only when its file is gone.
        assert!(!log.reconcile(&[message(1, 0)], false, |_| true));
        assert!(!log.reconcile(&[message(1, 0)], true, |_| false));
        assert!(log.reconcile(&[message(1, 0)], true, |uid| uid == 4));
        assert_eq!(log.vanished_since(1002), Some(vec![4]));
        // A STORE here: touch records the new flags once.
        let seen = message(1, Flags::SEEN);
        let m = log.touch(&seen);
        assert_eq!((m, log.touch(&seen)), (1004, 1004));
        log.flush();
        let log = Log::load(dir.path(), 1, 0);
        assert_eq!(
            (log.of(1), log.vanished_since(1002)),
            (Some(1004), Some(vec![4]))
        );
        assert_eq!(
            log.of(2),
            Some(1002),
            "above the view's last UID, its file not gone"
        );
    }

    #[test]
    fn tombstones_are_bounded_and_the_floor_rises() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::load(dir.path(), 1, 10);
        let n = MAX_TOMBSTONES as u32 + 5;
        let view: Vec<Message> = (1..=n).map(|u| message(u, 0)).collect();
        log.reconcile(&view, true, |_| true);
        let since = log.highest();
        for uid in 1..=n {
            log.expunged(&[uid]);
        }
        log.flush();
        assert_eq!(log.tombstones.len(), MAX_TOMBSTONES);
        assert_eq!(log.floor(), since + 5);
        assert_eq!(log.vanished_since(since), None, "older than the cutoff");
        assert_eq!(
            log.vanished_since(since + 5).map(|v| v.len()),
            Some(MAX_TOMBSTONES)
        );
        let log = Log::load(dir.path(), 1, 0);
        assert_eq!(log.floor(), since + 5, "the floor survives a reload");
        assert_eq!(log.tombstones.len(), MAX_TOMBSTONES);
    }
}
