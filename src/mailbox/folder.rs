//! An open folder: its messages in UID order, kept in step with the disk by [`Folder::sync`].
//!
//! Opening starts from the view another session of this process left (`shared`) and looks
//! again as a sync does; without one (the first open since the start, or a view that cannot
//! be used) it reads the uidlist, lists `new/` and `cur/` and reads `tambo-cache`. Message
//! files are only read for facts the cache lacks. Syncing costs three stats when nothing
//! changed (`new/`, `cur/`, the uidlist); otherwise the changed directories are listed
//! again and matched on base names: a new name for a known base is a flag change, a base no
//! longer there is an expunge, an unknown base is a new message. A read-write session moves
//! what it finds in `new/` to `cur/`, and those messages are `\Recent` to it.

use crate::mailbox::cache::{self, CacheFile, Entry, SummaryAt};
use crate::mailbox::filename::{self, base};
use crate::mailbox::keywords::{self, Keywords};
use crate::mailbox::name::FolderName;
use crate::mailbox::scan;
use crate::mailbox::shared::{CacheMark, Look, Looks, Snapshot};
use crate::mailbox::summary::{self, Summary};
use crate::mailbox::uidlist::Uidlist;
use crate::mailbox::{Flags, StoreError, UserStore, flags, uidfile};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// The INTERNALDATE of a message not looked up yet. Opening a folder stats no file: like
/// Dovecot, the date is read when a command needs it (FETCH INTERNALDATE, SEARCH BEFORE/ON/
/// SINCE, COPY), and kept in the cache with the message's summary.
pub(crate) const UNKNOWN_DATE: i64 = i64::MIN;

/// Octets of a `tambo-cache` record with a summary, about (for the cache's size bound).
const FULL_RECORD: u64 = 2048;

/// One message of an open folder. Flags are bits (no string per flag): `keywords` bit n is
/// [`Folder::keywords`]`()[n]`.
#[derive(Debug, Clone)]
pub struct Message {
    pub uid: u32,
    /// [`Flags::SEEN`] | ... | [`Flags::FORWARDED`].
    pub system: u8,
    pub keywords: u32,
    pub recent: bool,
    /// Octets as IMAP sends it (CRLF line ends): RFC822.SIZE.
    pub size: u64,
    /// INTERNALDATE, seconds since the epoch: the file's mtime, or [`UNKNOWN_DATE`] until
    /// first asked for ([`Folder::internaldate`]).
    pub(crate) date: i64,
    /// The file's current name, and whether it is in `new/` (else `cur/`). Shared: views
    /// of the folder are copied on write (see `shared`).
    pub(crate) name: Arc<str>,
    pub(crate) in_new: bool,
    pub(crate) summary: Option<SummaryAt>,
}

/// What changed since the last look, for the untagged responses of the session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Indexes (sequence number - 1) of expunged messages as they were before this change,
    /// highest first: sending `* n EXPUNGE` in this order needs no renumbering.
    pub expunged: Vec<usize>,
    /// Indexes, after the expunges, of messages whose flags others changed; ascending.
    pub flags: Vec<usize>,
    /// Messages now (EXISTS).
    pub exists: usize,
    /// `\Recent` messages now (RECENT).
    pub recent: usize,
}

/// A file found that is not one of the folder's messages yet.
struct Found {
    name: String,
    in_new: bool,
    recent: bool,
    uid: u32,
    /// The CRLF size from the uidlist's `W` field, when it has one.
    vsize: Option<u64>,
}

/// An open folder (SELECT or EXAMINE).
pub struct Folder {
    pub uidvalidity: u32,
    /// The next UID to be given: above every message's.
    pub uidnext: u32,
    pub(crate) user: UserStore,
    pub(crate) name: FolderName,
    pub(crate) dir: PathBuf,
    pub(crate) read_only: bool,
    /// Copied on write: shared with the folder's snapshot and other sessions until changed.
    pub(crate) messages: Arc<Vec<Message>>,
    pub(crate) keywords: Keywords,
    looks: Looks,
    pub(crate) cache: CacheFile,
    /// The size past which `tambo-cache` is rewritten at the next open (see [`CacheMark`]).
    cache_limit: u64,
    /// Records in the uidlist when last read (see [`Snapshot::uid_records`]).
    uid_records: usize,
    slot: Option<Summary>,
    /// UIDs of messages found gone by a look that could not tell the client (during FETCH,
    /// STORE or SEARCH): they keep their sequence numbers until a look that may.
    held: HashSet<u32>,
    /// A look left out files it found, whose UIDs are below the last one shown (they are
    /// shown at the next SELECT): this view is not what its looks saw, so it is not shared.
    partial: bool,
    /// The view changed since it was last shared.
    dirty: bool,
}

impl Folder {
    pub(crate) fn open(
        user: &UserStore,
        name: &FolderName,
        read_only: bool,
    ) -> Result<Folder, StoreError> {
        if !user.exists(name) {
            return Err(StoreError::NoSuchFolder);
        }
        let dir = user.folder_dir(name);
        if let Some(snapshot) = user.store.shared().get(&dir) {
            match Folder::from_snapshot(user, name, &dir, read_only, &snapshot) {
                Ok(Some(folder)) => return Ok(folder),
                // Not usable (the cache or the uidlist was replaced, ...): built anew.
                Ok(None) | Err(StoreError::UidValidityChanged) => {}
                Err(e) => return Err(e),
            }
        }
        Folder::open_cold(user, name, dir, read_only)
    }

    fn empty(
        user: &UserStore,
        name: &FolderName,
        dir: PathBuf,
        read_only: bool,
        cache: CacheFile,
    ) -> Folder {
        Folder {
            uidvalidity: 0,
            uidnext: 1,
            user: user.clone(),
            name: name.clone(),
            dir,
            read_only,
            messages: Arc::default(),
            keywords: Keywords::default(),
            looks: Looks::NEVER,
            cache,
            cache_limit: u64::MAX,
            uid_records: 0,
            slot: None,
            held: HashSet::new(),
            partial: false,
            dirty: false,
        }
    }

    /// Opens the folder from what is on disk only: the uidlist, the listing, the cache.
    fn open_cold(
        user: &UserStore,
        name: &FolderName,
        dir: PathBuf,
        read_only: bool,
    ) -> Result<Folder, StoreError> {
        let (cache, parsed, data) = CacheFile::open(&dir);
        let mut folder = Folder::empty(user, name, dir, read_only, cache);
        let (records, damaged) = (parsed.records, parsed.damaged || parsed.torn_tail);
        folder.refresh(Some(parsed.entries), false)?;
        if !read_only {
            clean_tmp(&folder.dir.join("tmp"));
        }
        if damaged || records > 2 * folder.messages.len() + 64 {
            folder.rewrite_cache(&data);
        }
        // Past this size, a later open reads the whole file again (and rewrites it when
        // most of it is dead): twice what a record with a summary for every message takes.
        let full = (folder.messages.len() as u64 * FULL_RECORD).max(folder.cache.len());
        folder.cache_limit = 2 * full + (1 << 20);
        folder.publish();
        Ok(folder)
    }

    /// Opens the folder from a view another session left: the same stamp checks as
    /// [`Folder::sync`] make it what the disk holds now. `None` when the view cannot be
    /// used: the cache it points into was replaced or is due for a rewrite, the uidlist
    /// is another, or files turned up that must take their place among the messages.
    fn from_snapshot(
        user: &UserStore,
        name: &FolderName,
        dir: &Path,
        read_only: bool,
        snapshot: &Snapshot,
    ) -> Result<Option<Folder>, StoreError> {
        let Some((cache, appended)) = CacheFile::reopen(dir, snapshot.cache) else {
            return Ok(None);
        };
        let uid_stamp = uidfile::stamp(dir)?;
        if uid_stamp != snapshot.looks.uidlist.stamp
            && uidfile::read_uidvalidity(dir)? != Some(snapshot.uidvalidity)
        {
            return Ok(None);
        }
        let mut folder = Folder::empty(user, name, dir.to_path_buf(), read_only, cache);
        folder.uidvalidity = snapshot.uidvalidity;
        folder.uidnext = snapshot.uidnext;
        folder.messages = snapshot.messages.clone();
        folder.keywords = snapshot.keywords.clone();
        folder.looks = snapshot.looks;
        folder.cache_limit = snapshot.cache.limit;
        folder.uid_records = snapshot.uid_records;
        folder.take_summaries(appended.entries);
        if !read_only {
            folder.claim_listed_new()?;
        }
        folder.refresh(None, false)?;
        // Files left out, or a uidlist a quarter dead: a first open does it right.
        if folder.partial || folder.messages.len() * 4 < folder.uid_records * 3 {
            return Ok(None);
        }
        if !read_only {
            clean_tmp(&folder.dir.join("tmp"));
        }
        Ok(Some(folder))
    }

    /// Hands this view to the sessions that open the folder next (see `shared`). Not when
    /// it is not what its looks saw (messages held for a later EXPUNGE, files left out).
    fn publish(&mut self) {
        if !self.held.is_empty() || self.partial {
            return;
        }
        self.dirty = false;
        let Some((ino, end)) = self.cache.mark() else {
            return;
        };
        let messages = if self.messages.iter().any(|m| m.recent) {
            // `\Recent` is this session's (RFC 3501 §2.3.2): not the next one's.
            let mut copy = Vec::clone(&self.messages);
            copy.iter_mut().for_each(|m| m.recent = false);
            Arc::new(copy)
        } else {
            self.messages.clone()
        };
        let snapshot = Snapshot {
            uidvalidity: self.uidvalidity,
            uidnext: self.uidnext,
            messages,
            keywords: self.keywords.clone(),
            looks: self.looks,
            cache: CacheMark {
                ino,
                end,
                limit: self.cache_limit,
            },
            uid_records: self.uid_records,
        };
        self.user.store.shared().put(&self.dir, snapshot);
    }

    /// Summaries other sessions added to the cache since the view was shared (a later
    /// record for a name wins).
    fn take_summaries(&mut self, entries: HashMap<Box<str>, Entry>) {
        if entries.is_empty() {
            return;
        }
        let found: Vec<(usize, SummaryAt)> = self
            .messages
            .iter()
            .enumerate()
            .filter_map(|(i, m)| Some((i, entries.get(base(&m.name))?.summary?)))
            .filter(|(i, at)| self.messages[*i].summary != Some(*at))
            .collect();
        if found.is_empty() {
            return;
        }
        let messages = self.messages_mut();
        for (i, at) in found {
            messages[i].summary = Some(at);
        }
    }

    /// The messages, to change them: this session's own copy from now on.
    pub(crate) fn messages_mut(&mut self) -> &mut Vec<Message> {
        self.dirty = true;
        Arc::make_mut(&mut self.messages)
    }

    /// Read-write: moves the files of the view that are still in `new/` (a read-only
    /// session saw them there) to `cur/`, as a first look would; those moved are
    /// `\Recent` here. Files gone meanwhile are left to the look that follows.
    fn claim_listed_new(&mut self) -> Result<(), StoreError> {
        let waiting: Vec<Found> = self
            .messages
            .iter()
            .filter(|m| m.in_new)
            .map(|m| Found {
                name: m.name.to_string(),
                in_new: true,
                recent: true,
                uid: m.uid,
                vsize: None,
            })
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        for f in self.claim_new(waiting)? {
            if let Some(i) = self.index_of_uid(f.uid) {
                let m = &mut self.messages_mut()[i];
                (m.name, m.in_new, m.recent) = (f.name.into(), f.in_new, f.recent);
            }
        }
        Ok(())
    }

    pub fn name(&self) -> &FolderName {
        &self.name
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Whether a look left out files it found (they are shown at the next SELECT).
    pub(crate) fn is_partial(&self) -> bool {
        self.partial
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The message at `index` (sequence number - 1). Panics when out of range, like slices.
    pub fn message(&self, index: usize) -> &Message {
        &self.messages[index]
    }

    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    pub fn index_of_uid(&self, uid: u32) -> Option<usize> {
        self.messages.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    /// The keyword names by letter; `""` for a free letter. Bit n of
    /// [`Message::keywords`] is entry n.
    pub fn keywords(&self) -> &[String] {
        self.keywords.names()
    }

    /// The flags of a message by name (for FETCH FLAGS; `$Forwarded` is
    /// [`Flags::FORWARDED`] in `system`). Keyword letters without a name are left out.
    pub fn flags(&self, index: usize) -> Flags {
        let m = &self.messages[index];
        let names = self.keywords.names();
        let keywords = (0..names.len())
            .filter(|&n| m.keywords & (1 << n) != 0 && !names[n].is_empty())
            .map(|n| names[n].clone())
            .collect();
        Flags {
            system: m.system,
            keywords,
        }
    }

    /// Looks at the folder again; what changed since the last look. Three stats when nothing
    /// did.
    pub fn sync(&mut self) -> Result<Changes, StoreError> {
        self.refresh(None, false)
    }

    /// Looks at the folder again like [`Folder::sync`], but keeps messages that others
    /// expunged in place (RFC 3501 §7.4.1: no EXPUNGE response during FETCH, STORE or
    /// SEARCH): new messages and flag changes are told now, the expunges by the next
    /// [`Folder::sync`]. Reading a kept message fails with [`StoreError::Expunged`].
    pub fn sync_keeping_expunged(&mut self) -> Result<Changes, StoreError> {
        self.refresh(None, true)
    }

    /// The message file, for FETCH of bodies. Found again by base name if another session
    /// renamed it meanwhile.
    pub fn open_file(&self, index: usize) -> Result<File, StoreError> {
        let path = self.path_of(&self.messages[index]);
        match File::open(&path) {
            Ok(file) => Ok(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (dir, name) = self
                    .locate(base(&self.messages[index].name))?
                    .ok_or(StoreError::Expunged)?;
                let path = self.dir.join(dir).join(name);
                File::open(&path).map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => StoreError::Expunged,
                    _ => StoreError::io(&path, e),
                })
            }
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    /// ENVELOPE, BODY and BODYSTRUCTURE of a message: from `tambo-cache`, else computed
    /// from the file and added to the cache.
    pub fn summary(&mut self, index: usize) -> Result<&Summary, StoreError> {
        if let Some(at) = self.messages[index].summary {
            match self.cache.summary(at) {
                Ok(s) => return Ok(self.slot.insert(s)),
                Err(e) => log::warn!("{}/{}: {e}", self.dir.display(), cache::FILE),
            }
        }
        let data = self.read_message(index)?;
        let s = summary::summarize(&data);
        let date = self.internaldate(index);
        let m = &self.messages[index];
        let (record, at) = cache::record(base(&m.name), m.size, date, Some(&s));
        let start = self.cache.append(&record);
        let m = &mut self.messages_mut()[index];
        m.summary = start
            .filter(|_| !s.envelope.is_empty())
            .map(|start| summary_at(start + at as u64, &s));
        Ok(self.slot.insert(s))
    }

    /// The INTERNALDATE of message `index`: known from the cache or an earlier look, else
    /// the file's mtime, kept from now on.
    pub fn internaldate(&mut self, index: usize) -> i64 {
        let m = &self.messages[index];
        if m.date != UNKNOWN_DATE {
            return m.date;
        }
        let date = self.date_of(m);
        self.messages_mut()[index].date = date;
        date
    }

    /// The INTERNALDATE of `m`, from its file when not known yet (not kept: see
    /// [`Folder::internaldate`]). A file gone meanwhile gets the seconds its name starts
    /// with (maildir(5): the delivery time), as Dovecot does.
    pub(crate) fn date_of(&self, m: &Message) -> i64 {
        if m.date != UNKNOWN_DATE {
            return m.date;
        }
        match fs::metadata(self.path_of(m)) {
            Ok(meta) => std::os::unix::fs::MetadataExt::mtime(&meta),
            Err(_) => filename::leading_seconds(&m.name),
        }
    }

    /// Looks up every INTERNALDATE not known yet (before a SEARCH on dates).
    pub fn learn_dates(&mut self) {
        for i in 0..self.messages.len() {
            self.internaldate(i);
        }
    }

    /// The search texts of a message ([`summary::header_texts`]) when the cache has them:
    /// SEARCH on Subject, From, To, Cc, Bcc without opening the message.
    pub fn search_texts(&self, index: usize) -> Option<Vec<u8>> {
        let at = self.messages[index].summary?;
        match self.cache.search_texts(at) {
            Ok(texts) => Some(texts),
            Err(e) => {
                log::warn!("{}/{}: {e}", self.dir.display(), cache::FILE);
                None
            }
        }
    }

    pub(crate) fn read_message(&self, index: usize) -> Result<Vec<u8>, StoreError> {
        let mut data = Vec::new();
        self.open_file(index)?
            .read_to_end(&mut data)
            .map_err(|e| StoreError::io(&self.path_of(&self.messages[index]), e))?;
        Ok(data)
    }

    pub(crate) fn path_of(&self, m: &Message) -> PathBuf {
        self.dir
            .join(if m.in_new { "new" } else { "cur" })
            .join(&*m.name)
    }

    /// Where the file with this base name is now: (`"new"` or `"cur"`, its name).
    pub(crate) fn locate(
        &self,
        wanted: &str,
    ) -> Result<Option<(&'static str, String)>, StoreError> {
        for sub in ["cur", "new"] {
            let dir = self.dir.join(sub);
            let names = scan::list_names(&dir).map_err(|e| StoreError::io(&dir, e))?;
            if let Some(name) = names.into_iter().find(|n| base(n) == wanted) {
                return Ok(Some((sub, name)));
            }
        }
        Ok(None)
    }

    /// The look behind `open` and `sync`. `entries` is the parsed cache on the first look.
    fn refresh(
        &mut self,
        first: Option<HashMap<Box<str>, Entry>>,
        keep_expunged: bool,
    ) -> Result<Changes, StoreError> {
        let initial = first.is_some();
        let now = SystemTime::now();
        let stamp = |sub: &str| {
            let path = self.dir.join(sub);
            scan::stamp(&path).map_err(|e| StoreError::io(&path, e))
        };
        let (new_stamp, cur_stamp) = (stamp("new")?, stamp("cur")?);
        let uid_stamp = uidfile::stamp(&self.dir)?;
        if !cur_stamp.exists {
            return Err(StoreError::NoSuchFolder);
        }
        let mut want_new = initial || self.looks.new.stale(&new_stamp);
        let mut want_cur = initial || self.looks.cur.stale(&cur_stamp);
        let uid_stale = initial || self.looks.uidlist.stale(&uid_stamp);
        if !want_new && !want_cur {
            if uid_stale {
                self.check_uidvalidity()?;
                self.looks.uidlist = Look {
                    stamp: uid_stamp,
                    at: now,
                };
            }
            let changes = self.settle(Vec::new(), Vec::new(), keep_expunged);
            // Summaries learned, flags set, messages expunged by this session.
            if self.dirty {
                self.publish();
            }
            return Ok(changes);
        }
        // A message still in new/ (read-only sessions leave them there) may have moved to
        // cur/: both are needed to tell a move from an expunge.
        if self.messages.iter().any(|m| m.in_new) {
            (want_new, want_cur) = (true, true);
        }
        let listing = scan::scan(&self.dir, want_new, want_cur).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::NoSuchFolder,
            _ => StoreError::io(&self.dir, e),
        })?;
        self.refresh_keywords()?;
        let (expunged, flagged, mut found) = self.match_files(&listing, want_new, want_cur);
        if !listing.stable && !initial {
            // A listing that changed under us may lack a file that has a UID below one it
            // holds: new messages wait for the next look, which lists again.
            found.clear();
        }
        let found = self.claim_new(found)?;
        let committed = self.give_uids(found, initial, uid_stale, listing.stable)?;
        let entries = match first {
            Some(entries) => entries,
            None if committed.1.is_empty() => HashMap::new(),
            None => self.cache.read_new().entries,
        };
        self.add_messages(committed.1, entries);
        if want_new {
            self.looks.new = Look {
                stamp: listing.new_stamp,
                at: now,
            };
        }
        if want_cur {
            self.looks.cur = Look {
                stamp: listing.cur_stamp,
                at: now,
            };
        }
        self.looks.uidlist = Look {
            stamp: if committed.0 {
                uidfile::stamp(&self.dir)?
            } else {
                uid_stamp
            },
            at: now,
        };
        let changes = self.settle(expunged, flagged, keep_expunged);
        // The first look publishes from `open`, once the cache is settled.
        if !initial {
            self.publish();
        }
        Ok(changes)
    }

    /// The changes of a look that found `expunged` gone (ascending indexes) and `flagged`
    /// renamed: the gone ones are removed with those held before, or held themselves.
    fn settle(&mut self, mut expunged: Vec<usize>, flagged: Vec<usize>, keep: bool) -> Changes {
        if keep {
            let uids: Vec<u32> = expunged.iter().map(|&i| self.messages[i].uid).collect();
            self.held.extend(uids);
            let flags = flagged
                .into_iter()
                .filter(|i| !self.held.contains(&self.messages[*i].uid))
                .collect();
            return self.changes(Vec::new(), flags);
        }
        for uid in std::mem::take(&mut self.held) {
            // A held message this session expunged itself meanwhile is no longer listed.
            if let Some(i) = self.index_of_uid(uid) {
                expunged.push(i);
            }
        }
        expunged.sort_unstable();
        expunged.dedup();
        self.remove_expunged(expunged, flagged)
    }

    /// Matches the listed files with the messages: updates names and flags, and returns
    /// (expunged indexes ascending, flag-changed indexes, files that are no message yet).
    fn match_files(
        &mut self,
        listing: &scan::Listing,
        want_new: bool,
        want_cur: bool,
    ) -> (Vec<usize>, Vec<usize>, Vec<Found>) {
        let capacity =
            listing.new.as_ref().map_or(0, Vec::len) + listing.cur.as_ref().map_or(0, Vec::len);
        let mut present: HashMap<&str, (bool, &str)> = HashMap::with_capacity(capacity);
        for name in listing.new.iter().flatten() {
            present.entry(base(name)).or_insert((true, name));
        }
        // Seen in both (moved between the two readdirs, or a copy left over): cur/ wins.
        for name in listing.cur.iter().flatten() {
            present.insert(base(name), (false, name));
        }
        let (mut expunged, mut flagged, mut moved) = (Vec::new(), Vec::new(), Vec::new());
        for (i, m) in self.messages.iter().enumerate() {
            let looked = if m.in_new { want_new } else { want_cur };
            match present.remove(base(&m.name)) {
                Some((in_new, name)) if *name != *m.name || in_new != m.in_new => {
                    moved.push((i, in_new, name));
                }
                Some(_) => {}
                // A file renamed during the listing may have been seen under neither name.
                None if looked && listing.stable => expunged.push(i),
                None => {}
            }
        }
        // Only a view that changed is copied (see `shared`).
        if !moved.is_empty() {
            let messages = self.messages_mut();
            for (i, in_new, name) in moved {
                let m = &mut messages[i];
                if *name != *m.name {
                    let (system, keywords) = flags::from_file_name(name);
                    if (system, keywords) != (m.system, m.keywords) {
                        flagged.push(i);
                    }
                    (m.system, m.keywords, m.name) = (system, keywords, name.into());
                }
                m.in_new = in_new;
            }
        }
        let found: Vec<Found> = present
            .into_values()
            .map(|(in_new, name)| Found {
                name: name.to_string(),
                in_new,
                recent: in_new,
                uid: 0,
                vsize: None,
            })
            .collect();
        (expunged, flagged, found)
    }

    /// Read-write: moves files found in `new/` to `cur/`; those moved are `\Recent` here.
    /// A file another session moved first is looked for in `cur/` (not recent to us). No
    /// fsync: after a crash the file is in one place or the other.
    fn claim_new(&self, found: Vec<Found>) -> Result<Vec<Found>, StoreError> {
        if self.read_only {
            return Ok(found);
        }
        let mut kept = Vec::with_capacity(found.len());
        for mut f in found {
            if !f.in_new {
                kept.push(f);
                continue;
            }
            let to = if f.name.contains(':') {
                f.name.clone()
            } else {
                format!("{}:2,", f.name)
            };
            let from = self.dir.join("new").join(&f.name);
            match fs::rename(&from, self.dir.join("cur").join(&to)) {
                Ok(()) => (f.name, f.in_new) = (to, false),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Dropping it could hide it for good: files after it may get UIDs
                    // above the one it has by now.
                    match self.locate(base(&f.name))? {
                        Some((sub, name)) => {
                            (f.name, f.in_new, f.recent) = (name, sub == "new", false)
                        }
                        None => continue, // expunged already
                    }
                }
                Err(e) => log::warn!("{}: cannot move to cur/: {e}", from.display()),
            }
            kept.push(f);
        }
        Ok(kept)
    }

    /// UIDs for the files found: from the uidlist, else given under its lock (in file name
    /// order). On the first look, also takes the UIDVALIDITY and drops records of files that
    /// are gone once they are a quarter of the list. Returns whether the uidlist was written,
    /// and the files that get a place (UID above every message's), in UID order.
    fn give_uids(
        &mut self,
        mut found: Vec<Found>,
        initial: bool,
        uid_stale: bool,
        stable: bool,
    ) -> Result<(bool, Vec<Found>), StoreError> {
        if found.is_empty() && !initial {
            if uid_stale {
                self.check_uidvalidity()?;
            }
            return Ok((false, found));
        }
        let last = self.messages.last().map_or(0, |m| m.uid);
        let loaded = uidfile::read(&self.dir)?;
        let matched = loaded
            .as_ref()
            .map_or(0, |l| match_uids(&mut found, &l.list));
        let records = loaded.as_ref().map_or(0, |l| l.list.records.len());
        let dead = records - matched.min(records);
        let compact = initial && stable && dead > 0 && dead * 4 >= records;
        let must_lock = loaded.as_ref().is_none_or(|l| l.needs_rewrite)
            || compact
            || found.iter().any(|f| f.uid == 0);
        let (wrote, list) = match loaded {
            Some(l) if !must_lock => (false, l.list),
            loaded => {
                let read = loaded
                    .as_ref()
                    .map(|l| (l.list.uidvalidity, l.list.nextuid));
                let mut locked = uidfile::Locked::open(&self.dir)?;
                // New files get their UIDs in file name order (Dovecot's order), their
                // sort keys computed once.
                let mut keyed: Vec<_> = found
                    .into_iter()
                    .map(|f| (f.uid, (f.uid == 0).then(|| filename::sort_key(&f.name)), f))
                    .collect();
                keyed.sort_by(|(ua, ka, a), (ub, kb, b)| match (ua, ub) {
                    (0, 0) => ka
                        .cmp(kb)
                        .then_with(|| filename::sort_cmp(&a.name, &b.name)),
                    (x, y) => y.cmp(x),
                });
                found = keyed.into_iter().map(|(_, _, f)| f).collect();
                for f in found.iter_mut().filter(|f| f.uid == 0) {
                    let b = base(&f.name);
                    f.uid = match locked.uid_of(b) {
                        Some(uid) => uid,
                        None => locked.assign(b)?,
                    };
                }
                // Records of files that are gone, among those read before the lock (later
                // ones are of files that came after the listing).
                let same = read.filter(|r| compact && r.0 == locked.list.uidvalidity);
                if let Some((_, next)) = same {
                    let present: HashSet<&str> = found.iter().map(|f| base(&f.name)).collect();
                    locked.retain(|r| r.uid >= next || present.contains(&*r.base));
                }
                (true, locked.commit()?)
            }
        };
        self.uid_records = list.records.len();
        if initial {
            self.uidvalidity = list.uidvalidity;
        } else if list.uidvalidity != self.uidvalidity {
            return Err(StoreError::UidValidityChanged);
        }
        self.uidnext = self.uidnext.max(list.nextuid);
        self.fill_gaps(&mut found, &list, last)?;
        let mut partial = false;
        found.retain(|f| {
            let keep = f.uid > last;
            if !keep {
                partial = true;
                // Shown at the next SELECT: a UID below the last one cannot appear now.
                log::debug!(
                    "{}: {} has UID {} below {last}",
                    self.dir.display(),
                    f.name,
                    f.uid
                );
            }
            keep
        });
        self.partial |= partial;
        found.sort_by_key(|f| f.uid);
        Ok((wrote, found))
    }

    /// Files that other sessions gave UIDs between our last message's and the highest we
    /// are about to show, which our listing did not see (they arrived after it): listed
    /// again and shown too, since once a higher UID is shown a lower one never can be.
    /// Records whose file is gone (expunged meanwhile) are left alone.
    fn fill_gaps(
        &self,
        found: &mut Vec<Found>,
        list: &Uidlist,
        last: u32,
    ) -> Result<(), StoreError> {
        let top = found.iter().map(|f| f.uid).max().unwrap_or(0);
        if top <= last {
            return Ok(());
        }
        // Found files have distinct UIDs, all from the list: as many records as found
        // files in the range means none is missing (the usual case, no hashing).
        let between = |uid: u32| uid > last && uid < top;
        let records = list.records.iter().filter(|r| between(r.uid)).count();
        if records == found.iter().filter(|f| between(f.uid)).count() {
            return Ok(());
        }
        let have: HashSet<&str> = found.iter().map(|f| base(&f.name)).collect();
        let missing: HashMap<&str, (u32, Option<u64>)> = list
            .records
            .iter()
            .filter(|r| r.uid > last && r.uid < top && !have.contains(&*r.base))
            .map(|r| (&*r.base, (r.uid, w_field(&r.fields))))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut extra: HashMap<&str, Found> = HashMap::new();
        let mut names = Vec::new();
        for sub in ["new", "cur"] {
            let dir = self.dir.join(sub);
            names.push((
                sub,
                scan::list_names(&dir).map_err(|e| StoreError::io(&dir, e))?,
            ));
        }
        for (sub, list) in &names {
            for name in list {
                let Some(&(uid, vsize)) = missing.get(base(name)) else {
                    continue;
                };
                let in_new = *sub == "new";
                extra.insert(
                    base(name),
                    Found {
                        name: name.clone(),
                        in_new,
                        recent: in_new,
                        uid,
                        vsize,
                    },
                );
            }
        }
        let extra: Vec<Found> = extra.into_values().collect();
        found.extend(self.claim_new(extra)?);
        Ok(())
    }

    /// Refuses to go on when someone replaced the uidlist with another UIDVALIDITY.
    fn check_uidvalidity(&self) -> Result<(), StoreError> {
        match uidfile::read_uidvalidity(&self.dir)? {
            Some(v) if v != self.uidvalidity => Err(StoreError::UidValidityChanged),
            // Missing: the next look that needs it makes a new one and says so.
            _ => Ok(()),
        }
    }

    /// New messages from found files, sizes and dates from the cache or the files.
    fn add_messages(&mut self, found: Vec<Found>, mut entries: HashMap<Box<str>, Entry>) {
        if found.is_empty() {
            return;
        }
        let mut added = Vec::with_capacity(found.len());
        let mut pending: Vec<u8> = Vec::new();
        let mut pending_refs: Vec<(usize, usize, [u32; 4])> = Vec::new();
        for f in found {
            let b = base(&f.name);
            let (system, keywords) = flags::from_file_name(&f.name);
            let mut m = Message {
                uid: f.uid,
                system,
                keywords,
                recent: f.recent,
                size: 0,
                date: UNKNOWN_DATE,
                name: f.name.as_str().into(),
                in_new: f.in_new,
                summary: None,
            };
            let vsize = filename::size_field(&f.name, b'W').or(f.vsize);
            match entries.remove(b) {
                Some(e) => {
                    m.size = vsize.unwrap_or(e.crlf_size);
                    (m.date, m.summary) = (e.internaldate, e.summary);
                }
                None => match self.learn(&m, b, vsize, &mut pending) {
                    Some((size, date, at)) => {
                        (m.size, m.date) = (size, date);
                        if let Some((offset, lens)) = at {
                            pending_refs.push((added.len(), offset, lens));
                        }
                    }
                    // Gone meanwhile: the next look reports nothing about it.
                    None => continue,
                },
            }
            added.push(m);
        }
        if !pending.is_empty()
            && let Some(start) = self.cache.append(&pending)
        {
            for (i, offset, lens) in pending_refs {
                added[i].summary = Some(SummaryAt {
                    offset: start + offset as u64,
                    lens,
                });
            }
        }
        self.messages_mut().extend(added);
    }

    /// What the cache did not know about a file: its CRLF size from `vsize` (the name's or
    /// the uidlist's; nothing looked up, the date stays unknown), else from reading the
    /// file, which also gives its date (mtime) and summary, in a record added to `pending`.
    /// Returns (size, date, summary position in `pending`); `None` when the file is gone.
    #[allow(clippy::type_complexity)]
    fn learn(
        &self,
        m: &Message,
        b: &str,
        vsize: Option<u64>,
        pending: &mut Vec<u8>,
    ) -> Option<(u64, i64, Option<(usize, [u32; 4])>)> {
        if let Some(size) = vsize {
            return Some((size, UNKNOWN_DATE, None));
        }
        let mut file = File::open(self.path_of(m)).ok()?;
        let date = std::os::unix::fs::MetadataExt::mtime(&file.metadata().ok()?);
        let mut data = Vec::new();
        file.read_to_end(&mut data).ok()?;
        let (size, summary) = (summary::crlf_size(&data), summary::summarize(&data));
        let (record, at) = cache::record(b, size, date, Some(&summary));
        let offset = pending.len() + at;
        pending.extend_from_slice(&record);
        let refs = (!summary.envelope.is_empty()).then(|| (offset, lens_of(&summary)));
        Some((size, date, refs))
    }

    fn remove_expunged(&mut self, expunged: Vec<usize>, flagged: Vec<usize>) -> Changes {
        if !expunged.is_empty() {
            let mut gone = vec![false; self.messages.len()];
            for &i in &expunged {
                gone[i] = true;
            }
            let mut n = 0;
            self.messages_mut().retain(|_| {
                n += 1;
                !gone[n - 1]
            });
        }
        let flags: Vec<usize> = flagged
            .into_iter()
            .filter(|i| expunged.binary_search(i).is_err())
            .map(|i| i - expunged.partition_point(|&e| e < i))
            .collect();
        let mut expunged = expunged;
        expunged.reverse();
        self.changes(expunged, flags)
    }

    pub(crate) fn changes(&self, expunged: Vec<usize>, flags: Vec<usize>) -> Changes {
        Changes {
            expunged,
            flags,
            exists: self.messages.len(),
            recent: self.messages.iter().filter(|m| m.recent).count(),
        }
    }

    /// Rereads `dovecot-keywords` when it changed (another session added a keyword).
    pub(crate) fn refresh_keywords(&mut self) -> Result<(), StoreError> {
        let path = self.dir.join(keywords::FILE);
        let now = SystemTime::now();
        let stamp = scan::stamp(&path).map_err(|e| StoreError::io(&path, e))?;
        if self.looks.keywords.stale(&stamp) {
            self.keywords = keywords::read(&self.dir)?;
            self.looks.keywords = Look { stamp, at: now };
        }
        Ok(())
    }

    /// Replaces a damaged or mostly dead cache with the records of the messages there are,
    /// keeping the summaries it holds (`old` is the file as read at open).
    fn rewrite_cache(&mut self, old: &[u8]) {
        let mut records = Vec::new();
        let mut refs = Vec::with_capacity(self.messages.len());
        for m in self.messages.iter() {
            // Nothing to keep that the name does not tell (see `learn`).
            if m.date == UNKNOWN_DATE {
                refs.push(None);
                continue;
            }
            let part = m.summary.and_then(|at| {
                let start = usize::try_from(at.offset).ok()?;
                let len: usize = at.lens.iter().map(|&l| l as usize).sum();
                old.get(start..start + len).map(|bytes| (bytes, at.lens))
            });
            let s = part.map(|(bytes, lens)| split_summary(bytes, lens));
            let (record, at) = cache::record(base(&m.name), m.size, m.date, s.as_ref());
            refs.push(s.map(|s| (records.len() + at, lens_of(&s))));
            records.extend_from_slice(&record);
        }
        let Some(start) = self.cache.rewrite(&records) else {
            return;
        };
        for (m, r) in self.messages_mut().iter_mut().zip(refs) {
            m.summary = r.map(|(offset, lens)| SummaryAt {
                offset: start + offset as u64,
                lens,
            });
        }
    }
}

impl Drop for Folder {
    /// What the session learned (summaries, above all) is left for the next one.
    fn drop(&mut self) {
        if self.dirty {
            self.publish();
        }
    }
}

/// Removes what interrupted writers left in `tmp/` (maildir(5): files not touched for 36
/// hours). Their messages are still where they came from: the queue, or the client.
fn clean_tmp(tmp: &Path) {
    let Ok(names) = scan::list_names(tmp) else {
        return;
    };
    let old = SystemTime::now() - std::time::Duration::from_secs(36 * 3600);
    for name in names {
        let path = tmp.join(name);
        let stale = fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < old);
        if stale {
            log::info!("removing the stale {}", path.display());
            crate::mailbox::writer::remove_quietly(&path);
        }
    }
}

/// Sets the UIDs (and `W` sizes) the uidlist has for found files; how many it had.
fn match_uids(found: &mut [Found], list: &Uidlist) -> usize {
    let wanted: HashMap<&str, usize> = found
        .iter()
        .enumerate()
        .map(|(i, f)| (base(&f.name), i))
        .collect();
    let hits: Vec<(usize, u32, Option<u64>)> = list
        .records
        .iter()
        .filter_map(|r| Some((*wanted.get(&*r.base)?, r.uid, w_field(&r.fields))))
        .collect();
    for &(i, uid, vsize) in &hits {
        (found[i].uid, found[i].vsize) = (uid, vsize);
    }
    hits.len()
}

/// The `W<size>` field of a uidlist record (Dovecot's CRLF size when the name lacks `,W=`).
fn w_field(fields: &str) -> Option<u64> {
    fields
        .split(' ')
        .find_map(|f| f.strip_prefix('W')?.parse().ok())
}

fn lens_of(s: &Summary) -> [u32; 4] {
    [
        s.envelope.len(),
        s.body.len(),
        s.bodystructure.len(),
        s.search.len(),
    ]
    .map(|l| l as u32)
}

fn summary_at(offset: u64, s: &Summary) -> SummaryAt {
    SummaryAt {
        offset,
        lens: lens_of(s),
    }
}

fn split_summary(bytes: &[u8], lens: [u32; 4]) -> Summary {
    let [e, b, bs, _] = lens.map(|l| l as usize);
    Summary {
        envelope: bytes[..e].to_vec(),
        body: bytes[e..e + b].to_vec(),
        bodystructure: bytes[e + b..e + b + bs].to_vec(),
        search: bytes[e + b + bs..].to_vec(),
    }
}
