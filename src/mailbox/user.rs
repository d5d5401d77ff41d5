//! One user's mailbox: the folders (list, create, delete, rename), subscriptions, STATUS,
//! APPEND and the quota. Every change to the tree is made so that a crash at any point
//! leaves every message reachable: folders appear and disappear with one rename.

use crate::fsutil;
use crate::mailbox::folder::Folder;
use crate::mailbox::name::{FolderName, SpecialUse};
use crate::mailbox::writer::{self, Create};
use crate::mailbox::{
    Flags, Store, StoreError, cache, filename, keywords, quota, scan, subscriptions, uidfile,
};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Marker file of a Maildir++ folder (not of INBOX).
const MAILDIRFOLDER: &str = "maildirfolder";
/// Prefix of directories on their way in or out: `..` never names a folder, so nobody lists
/// them.
const TRANSIENT: &str = "..tambo-";

/// A folder in a LIST reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderInfo {
    pub name: FolderName,
    pub special: Option<SpecialUse>,
    pub has_children: bool,
    pub subscribed: bool,
    /// A level that only exists as the parent of others (left by another program): LIST
    /// shows it `\Noselect`.
    pub noselect: bool,
}

/// STATUS (RFC 3501 §6.3.10; SIZE from RFC 8438).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FolderStatus {
    pub messages: u32,
    pub recent: u32,
    pub uidnext: u32,
    pub uidvalidity: u32,
    pub unseen: u32,
    /// Octets, as IMAP sends the messages (CRLF).
    pub size: u64,
}

/// The mailbox of one user. Cheap to clone.
#[derive(Debug, Clone)]
pub struct UserStore {
    pub(crate) store: Store,
    domain: String,
    user: String,
    root: PathBuf,
}

impl UserStore {
    /// Checks the names (SPEC §11: they become path components) without touching the disk.
    pub(crate) fn new(store: Store, domain: &str, user: &str) -> Result<UserStore, StoreError> {
        check_path_name("domain", domain)?;
        check_path_name("user", user)?;
        let root = store.root().join(domain).join(user);
        Ok(UserStore {
            store,
            domain: domain.to_string(),
            user: user.to_string(),
            root,
        })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// The user's root: INBOX.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn folder_dir(&self, name: &FolderName) -> PathBuf {
        match name.dir_name() {
            Some(dir) => self.root.join(dir),
            None => self.root.clone(),
        }
    }

    pub(crate) fn exists(&self, name: &FolderName) -> bool {
        self.folder_dir(name).join("cur").is_dir()
    }

    pub(crate) fn notify(&self) {
        self.store.notifier().changed(&self.domain, &self.user);
    }

    /// INBOX, and the special-use folders (subscribed when made, as is INBOX).
    pub(crate) fn ensure_defaults(&self) -> Result<(), StoreError> {
        self.ensure_inbox()?;
        let mut made = Vec::new();
        if !self.root.join(subscriptions::FILE).exists() {
            made.push(FolderName::inbox());
        }
        for special in SpecialUse::ALL {
            let name = FolderName::parse(special.folder())?;
            if !self.exists(&name) {
                match self.create(&name) {
                    Ok(()) | Err(StoreError::Exists) => made.push(name),
                    Err(e) => return Err(e),
                }
            }
        }
        if !made.is_empty() {
            subscriptions::update(&self.root, |s| {
                made.iter()
                    .fold(false, |changed, n| s.set(n, true) | changed)
            })?;
        }
        Ok(())
    }

    /// INBOX's directories, and its uidlist when it has none.
    pub(crate) fn ensure_inbox(&self) -> Result<(), StoreError> {
        if self.root.join("cur").is_dir() && self.root.join("new").is_dir() {
            return Ok(());
        }
        for sub in ["tmp", "new", "cur"] {
            let dir = self.root.join(sub);
            fsutil::create_private_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        }
        if !self.root.join(uidfile::FILE).exists() {
            uidfile::create(&self.root)?;
        }
        Ok(())
    }

    /// Every folder, INBOX first, then by name; parents that exist only as a prefix of others
    /// are listed `noselect`.
    pub fn list(&self) -> Result<Vec<FolderInfo>, StoreError> {
        let mut names = vec![FolderName::inbox()];
        let entries = fs::read_dir(&self.root).map_err(|e| StoreError::io(&self.root, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(&self.root, e))?;
            let Some(name) = entry
                .file_name()
                .to_str()
                .and_then(FolderName::from_dir_name)
            else {
                continue;
            };
            if entry.file_type().is_ok_and(|t| t.is_dir()) && entry.path().join("cur").is_dir() {
                names.push(name);
            }
        }
        names[1..].sort();
        let subs = subscriptions::read(&self.root)?;
        let mut out: Vec<FolderInfo> = Vec::with_capacity(names.len());
        for name in &names {
            // Missing parents, top down, once each.
            let mut parent = name.parent();
            let mut missing = Vec::new();
            while let Some(p) = parent {
                if names.contains(&p) || out.iter().any(|i| i.name == p) {
                    break;
                }
                parent = p.parent();
                missing.push(p);
            }
            for p in missing.into_iter().rev() {
                out.push(self.info(p, &names, &subs, true));
            }
            out.push(self.info(name.clone(), &names, &subs, false));
        }
        Ok(out)
    }

    fn info(
        &self,
        name: FolderName,
        all: &[FolderName],
        subs: &subscriptions::Subscriptions,
        noselect: bool,
    ) -> FolderInfo {
        let has_children = all.iter().any(|n| n != &name && n.is_within(&name));
        FolderInfo {
            special: name.special_use(),
            subscribed: subs.contains(&name),
            has_children,
            noselect,
            name,
        }
    }

    /// CREATE (RFC 3501 §6.3.3), with any missing parents. The folder is made aside, complete
    /// with its uidlist, and renamed into place.
    pub fn create(&self, name: &FolderName) -> Result<(), StoreError> {
        if name.is_inbox() || self.exists(name) {
            return Err(StoreError::Exists);
        }
        if let Some(parent) = name.parent()
            && !parent.is_inbox()
            && !self.exists(&parent)
        {
            match self.create(&parent) {
                Ok(()) | Err(StoreError::Exists) => {}
                Err(e) => return Err(e),
            }
        }
        self.ensure_inbox()?;
        let aside = self.transient_dir("new");
        let made = make_folder(&aside).and_then(|()| {
            let dest = self.folder_dir(name);
            fs::rename(&aside, &dest).map_err(|e| match e.kind() {
                // rename(2) replaces an empty directory, not a folder (never empty).
                io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::AlreadyExists => {
                    StoreError::Exists
                }
                _ => StoreError::io(&dest, e),
            })
        });
        if made.is_err() {
            let _ = fs::remove_dir_all(&aside);
        }
        made?;
        fsutil::fsync_dir(&self.root).map_err(|e| StoreError::io(&self.root, e))
    }

    /// DELETE (RFC 3501 §6.3.4): not INBOX, not a folder with children. The folder is renamed
    /// out of sight in one step, then removed; its messages count no more for the quota.
    pub fn delete(&self, name: &FolderName) -> Result<(), StoreError> {
        if name.is_inbox() {
            return Err(StoreError::NotAllowed("INBOX cannot be deleted"));
        }
        if !self.exists(name) {
            return Err(StoreError::NoSuchFolder);
        }
        let children = self.list()?;
        if children
            .iter()
            .any(|i| i.name != *name && i.name.is_within(name) && !i.noselect)
        {
            return Err(StoreError::HasChildren);
        }
        let dir = self.folder_dir(name);
        let gone = self.transient_dir("deleted");
        self.store.shared().forget(&dir);
        self.store.modseqs().forget(&dir);
        fs::rename(&dir, &gone).map_err(|e| StoreError::io(&dir, e))?;
        fsutil::fsync_dir(&self.root).map_err(|e| StoreError::io(&self.root, e))?;
        if let Err(e) = fs::remove_dir_all(&gone) {
            log::warn!("{}: {e}", gone.display());
        }
        self.forget_quota();
        self.notify();
        Ok(())
    }

    /// RENAME (RFC 3501 §6.3.5), children too, subscriptions following. Renaming INBOX moves
    /// its messages into the new folder and leaves INBOX, and its children, where they are.
    pub fn rename(&self, from: &FolderName, to: &FolderName) -> Result<(), StoreError> {
        if !self.exists(from) {
            return Err(StoreError::NoSuchFolder);
        }
        if to.is_inbox() || self.exists(to) {
            return Err(StoreError::Exists);
        }
        // INBOX's children stay where they are, so INBOX may go below itself.
        if to.is_within(from) && !from.is_inbox() {
            return Err(StoreError::NotAllowed("cannot rename a folder into itself"));
        }
        if from.is_inbox() {
            return self.rename_inbox(to);
        }
        if let Some(parent) = to.parent()
            && !parent.is_inbox()
            && !self.exists(&parent)
        {
            self.create(&parent)?;
        }
        // The folder, then its children (each rename is atomic; a crash in between leaves
        // some children under the old name, all messages in place).
        let mut moving: Vec<FolderName> = self
            .list()?
            .into_iter()
            .filter(|i| !i.noselect && i.name.is_within(from))
            .map(|i| i.name)
            .collect();
        moving.sort_by_key(|n| n.as_str().len());
        for old in &moving {
            let Some(new) = old.moved(from, to) else {
                continue;
            };
            let (src, dest) = (self.folder_dir(old), self.folder_dir(&new));
            if dest.exists() {
                return Err(StoreError::Exists);
            }
            self.store.shared().forget(&src);
            self.store.shared().forget(&dest);
            self.store.modseqs().forget(&src);
            self.store.modseqs().forget(&dest);
            fs::rename(&src, &dest).map_err(|e| StoreError::io(&src, e))?;
        }
        fsutil::fsync_dir(&self.root).map_err(|e| StoreError::io(&self.root, e))?;
        subscriptions::update(&self.root, |s| {
            moving.iter().fold(false, |changed, old| {
                let Some(new) = old.moved(from, to) else {
                    return changed;
                };
                if s.contains(old) {
                    s.set(old, false);
                    s.set(&new, true);
                    true
                } else {
                    changed
                }
            })
        })?;
        self.notify();
        Ok(())
    }

    /// RFC 3501 §6.3.5: "all messages in INBOX are moved to a new mailbox with the given name,
    /// leaving INBOX empty". The new folder gets INBOX's cache (keyed by file name, which the
    /// move keeps); its UIDs are given when it is first opened.
    fn rename_inbox(&self, to: &FolderName) -> Result<(), StoreError> {
        self.create(to)?;
        let dest = self.folder_dir(to);
        self.store.shared().forget(&dest);
        self.store.modseqs().forget(&dest);
        if let Ok(data) = fs::read(self.root.join(cache::FILE)) {
            let _ = fs::write(dest.join(cache::FILE), data);
        }
        for sub in ["cur", "new"] {
            let (src_dir, dest_dir) = (self.root.join(sub), dest.join(sub));
            let names = scan::list_names(&src_dir).map_err(|e| StoreError::io(&src_dir, e))?;
            for name in names {
                match fs::rename(src_dir.join(&name), dest_dir.join(&name)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {} // expunged meanwhile
                    Err(e) => return Err(StoreError::io(&src_dir.join(&name), e)),
                }
            }
            fsutil::fsync_dir(&dest_dir).map_err(|e| StoreError::io(&dest_dir, e))?;
            fsutil::fsync_dir(&src_dir).map_err(|e| StoreError::io(&src_dir, e))?;
        }
        self.notify();
        Ok(())
    }

    /// SUBSCRIBE / UNSUBSCRIBE. Names need not exist (RFC 3501 §6.3.6).
    pub fn subscribe(&self, name: &FolderName, on: bool) -> Result<(), StoreError> {
        subscriptions::update(&self.root, |s| s.set(name, on))
    }

    /// The subscribed names, existing or not (for LSUB and LIST (SUBSCRIBED)).
    pub fn subscriptions(&self) -> Result<Vec<FolderName>, StoreError> {
        Ok(subscriptions::read(&self.root)?.names())
    }

    /// STATUS: opens the folder read-only (which also gives UIDs to new files, as Dovecot
    /// does, so UIDNEXT is one the next SELECT agrees with).
    pub fn status(&self, name: &FolderName) -> Result<FolderStatus, StoreError> {
        let folder = self.open(name, true)?;
        let mut status = FolderStatus {
            messages: folder.len() as u32,
            uidnext: folder.uidnext,
            uidvalidity: folder.uidvalidity,
            ..FolderStatus::default()
        };
        for m in folder.messages() {
            status.recent += u32::from(m.recent);
            status.unseen += u32::from(m.system & Flags::SEEN == 0);
            status.size += m.size;
        }
        Ok(status)
    }

    /// SELECT (read-write) or EXAMINE (read-only).
    pub fn open(&self, name: &FolderName, read_only: bool) -> Result<Folder, StoreError> {
        Folder::open(self, name, read_only)
    }

    /// APPEND (RFC 3501 §6.3.11): the message (LF or CRLF; stored with LF) with its flags and
    /// INTERNALDATE (seconds since the epoch; now when `None`). Returns (UIDVALIDITY, UID)
    /// for APPENDUID (RFC 4315). A message without flags goes to `new/` (it is `\Recent`
    /// for the next session to select the folder), one with flags to `cur/`.
    pub fn append(
        &self,
        name: &FolderName,
        data: &mut dyn Read,
        flags: &Flags,
        internaldate: Option<i64>,
    ) -> Result<(u32, u32), StoreError> {
        if !self.exists(name) {
            return Err(StoreError::NoSuchFolder);
        }
        let dir = self.folder_dir(name);
        let unique = filename::unique(self.store.hostname());
        let tmp = dir.join("tmp").join(&unique);
        let written = writer::write_tmp(&tmp, Create::New, data, Path::new("APPEND data"), 0)?;
        let outcome = self.place_appended(&dir, &unique, &written, flags, internaldate);
        if outcome.is_err() {
            writer::remove_quietly(&tmp);
        }
        let (uidvalidity, uid) = outcome?;
        if self.store.quota_bytes().is_some() {
            quota::add(&self.root, written.size as i64, 1);
        }
        self.notify();
        Ok((uidvalidity, uid))
    }

    fn place_appended(
        &self,
        dir: &Path,
        unique: &str,
        written: &writer::Written,
        flags: &Flags,
        internaldate: Option<i64>,
    ) -> Result<(u32, u32), StoreError> {
        if let Some(limit) = self.store.quota_bytes() {
            quota::check(&self.root, limit, written.size)?;
        }
        if let Some(date) = internaldate {
            set_mtime(&written.path, date)?;
        }
        let date = match internaldate {
            Some(date) => date,
            None => written.mtime,
        };
        let base = format!("{unique},S={},W={}", written.size, written.crlf_size);
        let summary = written
            .data
            .as_deref()
            .map(crate::mailbox::summary::summarize);
        cache::append_to(
            dir,
            &cache::record(&base, written.crlf_size, date, summary.as_ref()).0,
        );
        let mut locked = uidfile::Locked::open(dir)?;
        let (system, keywords) = keyword_letters(dir, flags)?;
        let dest = if system == 0 && keywords == 0 {
            dir.join("new").join(&base)
        } else {
            dir.join("cur").join(format!(
                "{base}:{}",
                crate::mailbox::flags::info(system, keywords)
            ))
        };
        writer::publish(&written.path, &dest)?;
        let dest_dir = dest.parent().unwrap_or(dir);
        fsutil::fsync_dir_shared(dest_dir).map_err(|e| StoreError::io(dest_dir, e))?;
        let uid = match locked.uid_of(&base) {
            Some(uid) => uid, // a session saw it first
            None => locked.assign(&base)?,
        };
        let list = locked.commit()?;
        Ok((list.uidvalidity, uid))
    }

    /// QUOTA (RFC 9208): octets in use and the limit; without a limit, the usage is counted.
    pub fn quota(&self) -> Result<(u64, Option<u64>), StoreError> {
        match self.store.quota_bytes() {
            Some(limit) => Ok((quota::usage(&self.root, limit)?.bytes, Some(limit))),
            None => Ok((quota::count(&self.root)?.bytes, None)),
        }
    }

    /// Makes the next quota check count again (after a whole folder went).
    fn forget_quota(&self) {
        if self.store.quota_bytes().is_some() {
            writer::remove_quietly(&self.root.join(quota::FILE));
        }
    }

    fn transient_dir(&self, what: &str) -> PathBuf {
        self.root.join(format!(
            "{TRANSIENT}{what}.{}.{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ))
    }
}

/// The system bits and keyword letters of `flags` in the folder at `dir`, adding new
/// keywords to its `dovecot-keywords` (the caller holds the uidlist lock).
pub(crate) fn keyword_letters(dir: &Path, flags: &Flags) -> Result<(u8, u32), StoreError> {
    let mut system = flags.system & Flags::ALL;
    let mut wanted = Vec::new();
    for k in &flags.keywords {
        if k.eq_ignore_ascii_case(Flags::FORWARDED_KEYWORD) {
            system |= Flags::FORWARDED;
        } else if !crate::mailbox::flags::valid_keyword(k) {
            return Err(StoreError::BadFlag(k.clone()));
        } else {
            wanted.push(k.as_str());
        }
    }
    if wanted.is_empty() {
        return Ok((system, 0));
    }
    let mut table = keywords::read(dir)?;
    let before = table.clone();
    let mut letters = 0u32;
    for k in wanted {
        let n = table.find_or_add(k).ok_or(StoreError::TooManyKeywords)?;
        letters |= 1 << n;
    }
    if table != before {
        keywords::write(dir, &table)?;
    }
    Ok((system, letters))
}

/// A folder's skeleton: `cur/ new/ tmp/`, `maildirfolder`, a fresh uidlist.
fn make_folder(dir: &Path) -> Result<(), StoreError> {
    for sub in ["cur", "new", "tmp"] {
        let d = dir.join(sub);
        fsutil::create_private_dir_all(&d).map_err(|e| StoreError::io(&d, e))?;
    }
    let marker = dir.join(MAILDIRFOLDER);
    fsutil::write_atomic(&marker, b"", 0o600).map_err(|e| StoreError::io(&marker, e))?;
    uidfile::create(dir)?;
    Ok(())
}

/// Refuses names that could leave the mail root (SPEC §11). Upstream newtypes already
/// guarantee this; a second check here costs nothing and guards the filesystem.
fn check_path_name(kind: &str, name: &str) -> Result<(), StoreError> {
    let unsafe_name = name.is_empty()
        || name == "."
        || name == ".."
        || name.chars().any(|c| c == '/' || c.is_control());
    if unsafe_name {
        return Err(StoreError::BadName(format!(
            "unsafe {kind} name {name:?} for a Maildir"
        )));
    }
    Ok(())
}

/// Sets a file's mtime (its INTERNALDATE) to `secs` since the epoch.
pub(crate) fn set_mtime(path: &Path, secs: i64) -> Result<(), StoreError> {
    let time = if secs >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64)
    } else {
        std::time::UNIX_EPOCH - std::time::Duration::from_secs(secs.unsigned_abs())
    };
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(time))
        .map_err(|e| StoreError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_names() {
        for bad in ["", ".", "..", "a/b", "a\0b", "bo\nb"] {
            assert!(check_path_name("user", bad).is_err(), "{bad:?}");
        }
        for ok in ["bob", "a.b", ".bob", "b-o_b"] {
            assert!(check_path_name("user", ok).is_ok(), "{ok:?}");
        }
    }
}
