//! An open folder: its messages in UID order, kept in step with the disk by [`Folder::sync`].
//!
//! Opening reads the uidlist, lists `new/` and `cur/` and reads `tambo-cache`; message
//! files are only read for facts the cache lacks. Syncing costs three stats when nothing
//! changed (`new/`, `cur/`, the uidlist); otherwise the changed directories are listed
//! again and matched on base names: a new name for a known base is a flag change, a base no
//! longer there is an expunge, an unknown base is a new message. A read-write session moves
//! what it finds in `new/` to `cur/`, and those messages are `\Recent` to it.

use crate::mailbox::cache::{self, CacheFile, Entry, SummaryAt};
use crate::mailbox::filename::{self, base};
use crate::mailbox::keywords::{self, Keywords};
use crate::mailbox::name::FolderName;
use crate::mailbox::scan::{self, Stamp};
use crate::mailbox::summary::{self, Summary};
use crate::mailbox::uidlist::Uidlist;
use crate::mailbox::{Flags, StoreError, UserStore, flags, uidfile};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

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
    /// Seconds since the epoch: the file's mtime when it arrived.
    pub internaldate: i64,
    /// The file's current name, and whether it is in `new/` (else `cur/`).
    pub(crate) name: Box<str>,
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

/// When a stamp was taken, to tell whether a later equal stamp can be trusted.
#[derive(Debug, Clone, Copy)]
struct Look {
    stamp: Stamp,
    at: SystemTime,
}

impl Look {
    const NEVER: Look = Look {
        stamp: Stamp {
            exists: false,
            ino: 0,
            size: 0,
            mtime: 0,
        },
        at: SystemTime::UNIX_EPOCH,
    };

    fn stale(&self, now: &Stamp) -> bool {
        *now != self.stamp || self.stamp.is_fresh(self.at)
    }
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
    pub(crate) messages: Vec<Message>,
    pub(crate) keywords: Keywords,
    keywords_look: Look,
    new_look: Look,
    cur_look: Look,
    uidlist_look: Look,
    pub(crate) cache: CacheFile,
    slot: Option<Summary>,
    /// UIDs of messages found gone by a look that could not tell the client (during FETCH,
    /// STORE or SEARCH): they keep their sequence numbers until a look that may.
    held: HashSet<u32>,
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
        let (cache, parsed, data) = CacheFile::open(&dir);
        let mut folder = Folder {
            uidvalidity: 0,
            uidnext: 1,
            user: user.clone(),
            name: name.clone(),
            dir,
            read_only,
            messages: Vec::new(),
            keywords: Keywords::default(),
            keywords_look: Look::NEVER,
            new_look: Look::NEVER,
            cur_look: Look::NEVER,
            uidlist_look: Look::NEVER,
            cache,
            slot: None,
            held: HashSet::new(),
        };
        let (records, damaged) = (parsed.records, parsed.damaged || parsed.torn_tail);
        folder.refresh(Some(parsed.entries), false)?;
        if !read_only {
            clean_tmp(&folder.dir.join("tmp"));
        }
        if damaged || records > 2 * folder.messages.len() + 64 {
            folder.rewrite_cache(&data);
        }
        Ok(folder)
    }

    pub fn name(&self) -> &FolderName {
        &self.name
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
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
        let m = &self.messages[index];
        let (record, at) = cache::record(base(&m.name), m.size, m.internaldate, Some(&s));
        let start = self.cache.append(&record);
        let m = &mut self.messages[index];
        m.summary = start
            .filter(|_| !s.envelope.is_empty())
            .map(|start| summary_at(start + at as u64, &s));
        Ok(self.slot.insert(s))
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
        let mut want_new = initial || self.new_look.stale(&new_stamp);
        let mut want_cur = initial || self.cur_look.stale(&cur_stamp);
        let uid_stale = initial || self.uidlist_look.stale(&uid_stamp);
        if !want_new && !want_cur {
            if uid_stale {
                self.check_uidvalidity()?;
                self.uidlist_look = Look {
                    stamp: uid_stamp,
                    at: now,
                };
            }
            return Ok(self.settle(Vec::new(), Vec::new(), keep_expunged));
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
            self.new_look = Look {
                stamp: listing.new_stamp,
                at: now,
            };
        }
        if want_cur {
            self.cur_look = Look {
                stamp: listing.cur_stamp,
                at: now,
            };
        }
        self.uidlist_look = Look {
            stamp: if committed.0 {
                uidfile::stamp(&self.dir)?
            } else {
                uid_stamp
            },
            at: now,
        };
        Ok(self.settle(expunged, flagged, keep_expunged))
    }

    /// The changes of a look that found `expunged` gone (ascending indexes) and `flagged`
    /// renamed: the gone ones are removed with those held before, or held themselves.
    fn settle(&mut self, mut expunged: Vec<usize>, flagged: Vec<usize>, keep: bool) -> Changes {
        if keep {
            self.held
                .extend(expunged.iter().map(|&i| self.messages[i].uid));
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
        let (mut expunged, mut flagged) = (Vec::new(), Vec::new());
        for (i, m) in self.messages.iter_mut().enumerate() {
            let looked = if m.in_new { want_new } else { want_cur };
            match present.remove(base(&m.name)) {
                Some((in_new, name)) => {
                    if *name != *m.name {
                        let (system, keywords) = flags::from_file_name(name);
                        if (system, keywords) != (m.system, m.keywords) {
                            flagged.push(i);
                        }
                        (m.system, m.keywords, m.name) = (system, keywords, name.into());
                    }
                    m.in_new = in_new;
                }
                // A file renamed during the listing may have been seen under neither name.
                None if looked && listing.stable => expunged.push(i),
                None => {}
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
                // New files get their UIDs in file name order (Dovecot's order).
                found.sort_by(|a, b| match (a.uid, b.uid) {
                    (0, 0) => filename::sort_cmp(&a.name, &b.name),
                    (x, y) => y.cmp(&x),
                });
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
        if initial {
            self.uidvalidity = list.uidvalidity;
        } else if list.uidvalidity != self.uidvalidity {
            return Err(StoreError::UidValidityChanged);
        }
        self.uidnext = self.uidnext.max(list.nextuid);
        self.fill_gaps(&mut found, &list, last)?;
        found.retain(|f| {
            let keep = f.uid > last;
            if !keep {
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
        let mut pending: Vec<u8> = Vec::new();
        let mut pending_refs: Vec<(usize, usize, [u32; 3])> = Vec::new();
        for f in found {
            let b = base(&f.name);
            let (system, keywords) = flags::from_file_name(&f.name);
            let mut m = Message {
                uid: f.uid,
                system,
                keywords,
                recent: f.recent,
                size: 0,
                internaldate: 0,
                name: f.name.as_str().into(),
                in_new: f.in_new,
                summary: None,
            };
            let vsize = filename::size_field(&f.name, b'W').or(f.vsize);
            match entries.remove(b) {
                Some(e) => {
                    m.size = vsize.unwrap_or(e.crlf_size);
                    (m.internaldate, m.summary) = (e.internaldate, e.summary);
                }
                None => match self.learn(&m, b, vsize, &mut pending) {
                    Some((size, date, at)) => {
                        (m.size, m.internaldate) = (size, date);
                        if let Some((offset, lens)) = at {
                            pending_refs.push((self.messages.len(), offset, lens));
                        }
                    }
                    // Gone meanwhile: the next look reports nothing about it.
                    None => continue,
                },
            }
            self.messages.push(m);
        }
        if !pending.is_empty()
            && let Some(start) = self.cache.append(&pending)
        {
            for (i, offset, lens) in pending_refs {
                self.messages[i].summary = Some(SummaryAt {
                    offset: start + offset as u64,
                    lens,
                });
            }
        }
    }

    /// What the cache did not know about a file: its CRLF size (`vsize`, else read), its
    /// date (mtime), and, when the file had to be read, its summary. Adds a record to
    /// `pending`; returns (size, date, summary position in `pending`).
    #[allow(clippy::type_complexity)]
    fn learn(
        &self,
        m: &Message,
        b: &str,
        vsize: Option<u64>,
        pending: &mut Vec<u8>,
    ) -> Option<(u64, i64, Option<(usize, [u32; 3])>)> {
        let path = self.path_of(m);
        let meta = fs::metadata(&path).ok()?;
        let date = std::os::unix::fs::MetadataExt::mtime(&meta);
        let (size, summary) = match vsize {
            Some(size) => (size, None),
            None => {
                let data = fs::read(&path).ok()?;
                (summary::crlf_size(&data), Some(summary::summarize(&data)))
            }
        };
        let (record, at) = cache::record(b, size, date, summary.as_ref());
        let offset = pending.len() + at;
        pending.extend_from_slice(&record);
        let refs = summary
            .filter(|s| !s.envelope.is_empty())
            .map(|s| (offset, lens_of(&s)));
        Some((size, date, refs))
    }

    fn remove_expunged(&mut self, expunged: Vec<usize>, flagged: Vec<usize>) -> Changes {
        if !expunged.is_empty() {
            let mut gone = vec![false; self.messages.len()];
            for &i in &expunged {
                gone[i] = true;
            }
            let mut n = 0;
            self.messages.retain(|_| {
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
        if self.keywords_look.stale(&stamp) {
            self.keywords = keywords::read(&self.dir)?;
            self.keywords_look = Look { stamp, at: now };
        }
        Ok(())
    }

    /// Replaces a damaged or mostly dead cache with the records of the messages there are,
    /// keeping the summaries it holds (`old` is the file as read at open).
    fn rewrite_cache(&mut self, old: &[u8]) {
        let mut records = Vec::new();
        let mut refs = Vec::with_capacity(self.messages.len());
        for m in &self.messages {
            let part = m.summary.and_then(|at| {
                let start = usize::try_from(at.offset).ok()?;
                let len: usize = at.lens.iter().map(|&l| l as usize).sum();
                old.get(start..start + len).map(|bytes| (bytes, at.lens))
            });
            let s = part.map(|(bytes, lens)| split_summary(bytes, lens));
            let (record, at) = cache::record(base(&m.name), m.size, m.internaldate, s.as_ref());
            refs.push(s.map(|s| (records.len() + at, lens_of(&s))));
            records.extend_from_slice(&record);
        }
        let Some(start) = self.cache.rewrite(&records) else {
            return;
        };
        for (m, r) in self.messages.iter_mut().zip(refs) {
            m.summary = r.map(|(offset, lens)| SummaryAt {
                offset: start + offset as u64,
                lens,
            });
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

fn lens_of(s: &Summary) -> [u32; 3] {
    [s.envelope.len(), s.body.len(), s.bodystructure.len()].map(|l| l as u32)
}

fn summary_at(offset: u64, s: &Summary) -> SummaryAt {
    SummaryAt {
        offset,
        lens: lens_of(s),
    }
}

fn split_summary(bytes: &[u8], lens: [u32; 3]) -> Summary {
    let (e, b) = (lens[0] as usize, lens[1] as usize);
    Summary {
        envelope: bytes[..e].to_vec(),
        body: bytes[e..e + b].to_vec(),
        bodystructure: bytes[e + b..].to_vec(),
    }
}
