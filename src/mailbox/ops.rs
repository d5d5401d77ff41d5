//! Changes made through an open folder: flags (a rename of the file), expunge (unlink),
//! copy (hard link, else a copy of the bytes) and move (rename into the other folder).
//!
//! Flag renames, moves within a user's tree and unlinks are single atomic steps: after a
//! crash the file has its old name or its new one. They are not fsync'd (a crash may undo a
//! flag change or an expunge, never lose a message). Copies are fsync'd before they are
//! reported, since a MOVE or an EXPUNGE of the original may follow.

use crate::fsutil;
use crate::mailbox::cache;
use crate::mailbox::filename::{self, base};
use crate::mailbox::folder::Folder;
use crate::mailbox::keywords;
use crate::mailbox::name::FolderName;
use crate::mailbox::user::{UserStore, keyword_letters, set_mtime};
use crate::mailbox::writer::{self, FILE_MODE};
use crate::mailbox::{Flags, MAX_KEYWORDS, StoreError, flags, quota, uidfile};
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// What an unlink found.
enum Unlinked {
    /// Removed; its size on disk.
    Removed(u64),
    /// Someone else removed it already.
    Gone,
    /// Someone else took `\Deleted` off meanwhile: kept.
    Kept,
}

impl Folder {
    /// Sets the flags of a message (STORE computes them): renames its file. New keywords get
    /// a letter in `dovecot-keywords`. Keyword letters this folder has no name for are kept.
    pub fn store_flags(&mut self, index: usize, flags: Flags) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        let (system, mut letters) = self.letters_for(&flags)?;
        let m = &self.messages[index];
        let named = self.keyword_mask();
        letters |= m.keywords & !named;
        if (system, letters) == (m.system, m.keywords) {
            return Ok(());
        }
        let name = format!("{}:{}", base(&m.name), flags::info(system, letters));
        self.rename_to_cur(index, &name)?;
        let m = &mut self.messages_mut()[index];
        (m.system, m.keywords) = (system, letters);
        self.user.notify();
        Ok(())
    }

    /// Bits of the keyword letters that have a name.
    fn keyword_mask(&self) -> u32 {
        let names = self.keywords.names();
        (0..names.len())
            .filter(|&n| !names[n].is_empty())
            .fold(0, |mask, n| mask | 1 << n)
    }

    /// System bits and keyword letters for `flags` in this folder; new keywords are added
    /// under the uidlist lock (as Dovecot does).
    fn letters_for(&mut self, flags: &Flags) -> Result<(u8, u32), StoreError> {
        let known = flags.keywords.iter().all(|k| {
            k.eq_ignore_ascii_case(Flags::FORWARDED_KEYWORD) || self.keywords.find(k).is_some()
        });
        if known {
            let mut system = flags.system & Flags::ALL;
            let mut letters = 0;
            for k in &flags.keywords {
                match self.keywords.find(k) {
                    Some(n) => letters |= 1 << n,
                    None => system |= Flags::FORWARDED,
                }
            }
            return Ok((system, letters));
        }
        let lock = uidfile::Locked::open(&self.dir)?;
        let result = keyword_letters(&self.dir, flags);
        drop(lock);
        self.keywords = keywords::read(&self.dir)?;
        result
    }

    /// Renames a message's file to `name` in `cur/`, finding it again by base name if another
    /// session renamed it meanwhile.
    fn rename_to_cur(&mut self, index: usize, name: &str) -> Result<(), StoreError> {
        let to = self.dir.join("cur").join(name);
        let from = self.path_of(&self.messages[index]);
        match fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (sub, now) = self.locate(base(name))?.ok_or(StoreError::Expunged)?;
                let from = self.dir.join(sub).join(now);
                fs::rename(&from, &to).map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => StoreError::Expunged,
                    _ => StoreError::io(&from, e),
                })?;
            }
            Err(e) => return Err(StoreError::io(&from, e)),
        }
        let m = &mut self.messages_mut()[index];
        (m.name, m.in_new) = (name.into(), false);
        Ok(())
    }

    /// EXPUNGE (RFC 3501 §6.4.3), or UID EXPUNGE (RFC 4315 §2.1) when `uids` is given:
    /// removes the `\Deleted` messages (among `uids`). Returns the removed indexes, highest
    /// first.
    pub fn expunge(&mut self, uids: Option<&[u32]>) -> Result<Vec<usize>, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        let mut wanted = uids.map(<[u32]>::to_vec);
        if let Some(w) = &mut wanted {
            w.sort_unstable();
        }
        let picked: Vec<usize> = (0..self.messages.len())
            .rev()
            .filter(|&i| {
                let m = &self.messages[i];
                let asked = wanted
                    .as_ref()
                    .is_none_or(|w| w.binary_search(&m.uid).is_ok());
                m.system & Flags::DELETED != 0 && asked
            })
            .collect();
        self.unlink_all(&picked, true)
    }

    /// POP3's UPDATE state (RFC 1939 §6): removes the messages with these UIDs whatever
    /// their flags (POP3 has none; its DELE is the client's word). Returns the removed
    /// indexes, highest first; a message already gone counts as removed.
    pub fn remove(&mut self, uids: &[u32]) -> Result<Vec<usize>, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        let mut picked: Vec<usize> = uids.iter().filter_map(|&u| self.index_of_uid(u)).collect();
        picked.sort_unstable_by(|a, b| b.cmp(a));
        picked.dedup();
        self.unlink_all(&picked, false)
    }

    /// Unlinks the messages at `indexes` (highest first), forgets them, keeps the quota
    /// and tells the user's other sessions.
    fn unlink_all(
        &mut self,
        indexes: &[usize],
        require_deleted: bool,
    ) -> Result<Vec<usize>, StoreError> {
        let mut removed = Vec::new();
        let (mut bytes, mut count) = (0u64, 0i64);
        let mut failure = None;
        for &i in indexes {
            match self.unlink(i, require_deleted) {
                Ok(Unlinked::Removed(size)) => {
                    (bytes, count) = (bytes + size, count + 1);
                    removed.push(i);
                }
                Ok(Unlinked::Gone) => removed.push(i),
                Ok(Unlinked::Kept) => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if count > 0 && self.user.store.quota_bytes().is_some() {
            quota::add(self.user.root(), -(bytes as i64), -count);
        }
        if !removed.is_empty() {
            self.user.notify();
        }
        if let Some(e) = failure {
            // Those removed stay in the list: the next look finds them gone and says so
            // (an IMAP session must not lose sequence numbers silently).
            return Err(e);
        }
        self.forget(&removed);
        Ok(removed)
    }

    /// Unlinks one message's file, found again by base name when it was renamed; with
    /// `require_deleted`, a renamed file that lost `\Deleted` meanwhile is kept.
    fn unlink(&self, index: usize, require_deleted: bool) -> Result<Unlinked, StoreError> {
        let m = &self.messages[index];
        let path = self.path_of(m);
        let size = disk_size(&path, &m.name);
        match fs::remove_file(&path) {
            Ok(()) => return Ok(Unlinked::Removed(size)),
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(StoreError::io(&path, e));
            }
            Err(_) => {}
        }
        let Some((sub, name)) = self.locate(base(&m.name))? else {
            return Ok(Unlinked::Gone);
        };
        if require_deleted && flags::from_file_name(&name).0 & Flags::DELETED == 0 {
            return Ok(Unlinked::Kept);
        }
        let path = self.dir.join(sub).join(&name);
        let size = disk_size(&path, &name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(Unlinked::Removed(size)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Unlinked::Gone),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    /// Drops messages from the list (indexes in any order).
    fn forget(&mut self, indexes: &[usize]) {
        if indexes.is_empty() {
            return;
        }
        let mut gone = vec![false; self.messages.len()];
        for &i in indexes {
            gone[i] = true;
        }
        let mut n = 0;
        self.messages_mut().retain(|_| {
            n += 1;
            !gone[n - 1]
        });
    }

    /// COPY (RFC 3501 §6.4.7) into `dest` of `to` (the same user): each message gets a new
    /// file (a hard link when possible) with its flags, and a new UID there, given in the
    /// order of `indexes`. Returns the destination's UIDVALIDITY and (source UID, new UID)
    /// pairs for COPYUID (RFC 4315). All or nothing: on failure, copies made are removed.
    pub fn copy(
        &self,
        indexes: &[usize],
        to: &UserStore,
        dest: &FolderName,
    ) -> Result<(u32, Vec<(u32, u32)>), StoreError> {
        let dest_dir = self.dest_dir(to, dest)?;
        let sizes: Vec<u64> = indexes
            .iter()
            .map(|&i| disk_size(&self.path_of(&self.messages[i]), &self.messages[i].name))
            .collect();
        let total: u64 = sizes.iter().sum();
        if let Some(limit) = to.store.quota_bytes() {
            quota::check(to.root(), limit, total)?;
        }
        let mut locked = uidfile::Locked::open(&dest_dir)?;
        let letters = self.letter_map(&dest_dir, indexes)?;
        let mut placed: Vec<PathBuf> = Vec::with_capacity(indexes.len());
        let mut bases = Vec::with_capacity(indexes.len());
        let mut records = Vec::new();
        let result = indexes.iter().zip(&sizes).try_for_each(|(&i, &size)| {
            let (path, base) = self.new_file(i, &dest_dir, &letters, size);
            self.link_or_copy(i, &dest_dir, &path)?;
            placed.push(path);
            records.extend_from_slice(&self.cache_record(i, &base));
            bases.push(base);
            Ok(())
        });
        let cur = dest_dir.join("cur");
        let result = result
            .and_then(|()| fsutil::fsync_dir_shared(&cur).map_err(|e| StoreError::io(&cur, e)));
        if let Err(e) = result {
            placed.iter().for_each(|p| writer::remove_quietly(p));
            return Err(e);
        }
        cache::append_to(&dest_dir, &records);
        let mut pairs = Vec::with_capacity(indexes.len());
        for (&i, base) in indexes.iter().zip(&bases) {
            pairs.push((self.messages[i].uid, locked.assign(base)?));
        }
        let list = locked.commit()?;
        if to.store.quota_bytes().is_some() {
            quota::add(to.root(), total as i64, indexes.len() as i64);
        }
        to.notify();
        Ok((list.uidvalidity, pairs))
    }

    /// MOVE (RFC 6851) into `dest` of `to` (the same user): each file is renamed into the
    /// destination under a new name, so it is in one folder or the other at every moment.
    /// Returns what [`Folder::copy`] does, and the indexes removed here, highest first (a
    /// message already gone is left out of both).
    #[allow(clippy::type_complexity)]
    pub fn move_to(
        &mut self,
        indexes: &[usize],
        to: &UserStore,
        dest: &FolderName,
    ) -> Result<(u32, Vec<(u32, u32)>, Vec<usize>), StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        let dest_dir = self.dest_dir(to, dest)?;
        let mut locked = uidfile::Locked::open(&dest_dir)?;
        let letters = self.letter_map(&dest_dir, indexes)?;
        let (mut moved, mut bases, mut records) = (Vec::new(), Vec::new(), Vec::new());
        let mut failure = None;
        for &i in indexes {
            let size = disk_size(&self.path_of(&self.messages[i]), &self.messages[i].name);
            let (path, base) = self.new_file(i, &dest_dir, &letters, size);
            match self.rename_into(i, &path) {
                Ok(true) => {
                    records.extend_from_slice(&self.cache_record(i, &base));
                    moved.push(i);
                    bases.push(base);
                }
                Ok(false) => {}
                // Those moved stay moved (they are in one folder or the other); report them.
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let cur = dest_dir.join("cur");
        fsutil::fsync_dir_shared(&cur).map_err(|e| StoreError::io(&cur, e))?;
        cache::append_to(&dest_dir, &records);
        let mut pairs = Vec::with_capacity(moved.len());
        for (&i, base) in moved.iter().zip(&bases) {
            pairs.push((self.messages[i].uid, locked.assign(base)?));
        }
        let list = locked.commit()?;
        if let Some(e) = failure.filter(|_| moved.is_empty()) {
            return Err(e);
        }
        self.forget(&moved);
        moved.sort_unstable_by(|a, b| b.cmp(a));
        to.notify();
        self.user.notify();
        Ok((list.uidvalidity, pairs, moved))
    }

    fn dest_dir(&self, to: &UserStore, dest: &FolderName) -> Result<PathBuf, StoreError> {
        if !to.exists(dest) {
            return Err(StoreError::NoSuchFolder);
        }
        Ok(to.folder_dir(dest))
    }

    /// A new name in the destination's `cur/` for message `i`: a fresh base (an old one could
    /// still have a UID in the destination's uidlist), the same flags.
    fn new_file(
        &self,
        i: usize,
        dest_dir: &Path,
        letters: &[Option<u8>; MAX_KEYWORDS],
        size: u64,
    ) -> (PathBuf, String) {
        let m = &self.messages[i];
        let base = format!(
            "{},S={size},W={}",
            filename::unique(self.user.store.hostname()),
            m.size
        );
        let mut mapped = 0u32;
        for (n, letter) in letters.iter().enumerate() {
            if let Some(l) = letter.filter(|_| m.keywords & (1 << n) != 0) {
                mapped |= 1 << l;
            }
        }
        let name = format!("{base}:{}", flags::info(m.system, mapped));
        (dest_dir.join("cur").join(name), base)
    }

    /// This folder's keyword letters as the destination's: names added there as needed (the
    /// caller holds its uidlist lock). A keyword that does not fit is dropped, and logged.
    fn letter_map(
        &self,
        dest_dir: &Path,
        indexes: &[usize],
    ) -> Result<[Option<u8>; MAX_KEYWORDS], StoreError> {
        let used = indexes
            .iter()
            .fold(0u32, |u, &i| u | self.messages[i].keywords);
        let mut map = [None; MAX_KEYWORDS];
        if used == 0 {
            return Ok(map);
        }
        let mut table = keywords::read(dest_dir)?;
        let before = table.clone();
        for (n, name) in self.keywords.names().iter().enumerate() {
            if used & (1 << n) == 0 || name.is_empty() {
                continue;
            }
            match table.find_or_add(name) {
                Some(l) => map[n] = Some(l as u8),
                None => log::warn!("{}: no letter left for {name}", dest_dir.display()),
            }
        }
        if table != before {
            keywords::write(dest_dir, &table)?;
        }
        Ok(map)
    }

    /// Hard-links message `i` as `dest`, or copies its bytes (another file system, or links
    /// refused), keeping its INTERNALDATE.
    fn link_or_copy(&self, i: usize, dest_dir: &Path, dest: &Path) -> Result<(), StoreError> {
        let src = self.path_of(&self.messages[i]);
        match fs::hard_link(&src, dest) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some((sub, name)) = self.locate(base(&self.messages[i].name))? {
                    let src = self.dir.join(sub).join(name);
                    if fs::hard_link(&src, dest).is_ok() {
                        return Ok(());
                    }
                }
            }
            Err(e) => log::debug!("{}: no hard link ({e}), copying", src.display()),
        }
        let mut input = self.open_file(i)?;
        let tmp = dest_dir
            .join("tmp")
            .join(filename::unique(self.user.store.hostname()));
        let copied = copy_exact(&mut input, &tmp)
            .and_then(|()| set_mtime(&tmp, self.date_of(&self.messages[i])))
            .and_then(|()| match writer::publish(&tmp, dest)? {
                writer::Published::Created => Ok(()),
                writer::Published::Existed => Err(StoreError::Exists),
            });
        if copied.is_err() {
            writer::remove_quietly(&tmp);
        }
        copied
    }

    /// Renames message `i`'s file to `dest`; `false` when it is gone. Across file systems
    /// (a mail root spread over mounts), a copy then an unlink.
    fn rename_into(&self, i: usize, dest: &Path) -> Result<bool, StoreError> {
        let mut src = self.path_of(&self.messages[i]);
        let mut result = fs::rename(&src, dest);
        if matches!(&result, Err(e) if e.kind() == io::ErrorKind::NotFound) {
            let Some((sub, name)) = self.locate(base(&self.messages[i].name))? else {
                return Ok(false);
            };
            src = self.dir.join(sub).join(name);
            result = fs::rename(&src, dest);
        }
        match result {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                let dest_dir = dest
                    .parent()
                    .and_then(Path::parent)
                    .unwrap_or(Path::new("."));
                self.link_or_copy(i, dest_dir, dest)?;
                let cur = dest_dir.join("cur");
                fsutil::fsync_dir(&cur).map_err(|e| StoreError::io(&cur, e))?;
                fs::remove_file(&src).map_err(|e| StoreError::io(&src, e))?;
                Ok(true)
            }
            Err(e) => Err(StoreError::io(&src, e)),
        }
    }

    /// A cache record for the copy of message `i` named `base`, with its summary when this
    /// folder's cache has one.
    fn cache_record(&self, i: usize, base: &str) -> Vec<u8> {
        let m = &self.messages[i];
        let summary = m.summary.and_then(|at| self.cache.summary(at).ok());
        cache::record(base, m.size, self.date_of(m), summary.as_ref()).0
    }
}

/// The size on disk: the `,S=` field, else the file's length.
fn disk_size(path: &Path, name: &str) -> u64 {
    filename::size_field(name, b'S').unwrap_or_else(|| fs::metadata(path).map_or(0, |m| m.len()))
}

/// Copies a file's bytes as they are (no line-end conversion) and fdatasyncs the copy.
fn copy_exact(input: &mut fs::File, tmp: &Path) -> Result<(), StoreError> {
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(tmp)
        .map_err(|e| StoreError::io(tmp, e))?;
    io::copy(input, &mut out)
        .and_then(|_| out.sync_data())
        .map_err(|e| StoreError::io(tmp, e))
}
