//! Views of folders that the sessions of this process share: tambo is one process, so what
//! one SELECT learned (the messages in UID order, their sizes, dates and cache positions,
//! the keywords, the stamps of the look that found them) is handed to the next one, which
//! checks it with a few stats instead of building it again from the uidlist, the listing
//! and `tambo-cache`.
//!
//! A [`Snapshot`] is what a [`crate::mailbox::Folder`] knew after a look: its messages as
//! listed then (plus changes the publishing session made itself afterwards, which moved the
//! directories' stamps on), with the [`Look`]s that say when. A folder opened from it runs
//! the same stamp checks as [`crate::mailbox::Folder::sync`] (the "stamp too fresh to trust"
//! rule included), so a change made meanwhile by anyone, tambo or not, is found the same
//! way. A snapshot is never the truth about the disk, only a starting point that a look
//! corrects; an older one only costs the next opener a listing more.
//!
//! The messages are one `Arc<Vec<Message>>`: a session that changes its view (a flag, an
//! expunge, a new message, a summary learned) copies it first (`Arc::make_mut`), so the
//! others keep theirs; names are `Arc<str>`, so such a copy allocates nothing per message.
//! Memory: the registry keeps snapshots of recently opened folders up to
//! [`MAX_MESSAGES`] messages in all (least recently used dropped first); those of folders
//! selected now live as long as their sessions.

use crate::mailbox::folder::Message;
use crate::mailbox::keywords::Keywords;
use crate::mailbox::scan::Stamp;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Messages kept in all the registry's snapshots, beyond those of open folders (about
/// 150 octets each: some 30 MB at most).
pub const MAX_MESSAGES: usize = 200_000;

/// When a stamp was taken, to tell whether a later equal stamp can be trusted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Look {
    pub stamp: Stamp,
    pub at: SystemTime,
}

impl Look {
    pub const NEVER: Look = Look {
        stamp: Stamp {
            exists: false,
            ino: 0,
            size: 0,
            mtime: 0,
        },
        at: SystemTime::UNIX_EPOCH,
    };

    /// Whether what was seen at this look may have changed: the stamp is another, or its
    /// mtime was too close to the look to rule out a change in the same clock tick.
    pub fn stale(&self, now: &Stamp) -> bool {
        *now != self.stamp || self.stamp.is_fresh(self.at)
    }
}

/// The looks a view was checked with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Looks {
    pub new: Look,
    pub cur: Look,
    pub uidlist: Look,
    pub keywords: Look,
}

impl Looks {
    pub const NEVER: Looks = Looks {
        new: Look::NEVER,
        cur: Look::NEVER,
        uidlist: Look::NEVER,
        keywords: Look::NEVER,
    };
}

/// Which `tambo-cache` the summary positions of a view point into, and how far it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CacheMark {
    /// Inode of the cache file (a rewrite replaces it, and the positions with it).
    pub ino: u64,
    /// Offset up to which its records were parsed.
    pub end: u64,
    /// Size past which the file is mostly dead records: the next open parses it again and
    /// rewrites it.
    pub limit: u64,
}

/// One folder's view as a session left it.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub uidvalidity: u32,
    pub uidnext: u32,
    /// None of them `\Recent`: that belongs to the session that moved them to `cur/`.
    pub messages: Arc<Vec<Message>>,
    pub keywords: Keywords,
    pub looks: Looks,
    pub cache: CacheMark,
    /// Records in the uidlist when it was last read: once a quarter of them are of files
    /// gone, the next open reads it again and drops those (as a first open does).
    pub uid_records: usize,
}

/// The snapshots of one store, by folder directory.
#[derive(Debug)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
    /// [`MAX_MESSAGES`], but for tests.
    max_messages: usize,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry::with_limit(MAX_MESSAGES)
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Snapshot and the tick of its last use.
    folders: HashMap<PathBuf, (Arc<Snapshot>, u64)>,
    tick: u64,
    /// Messages in all the snapshots held.
    messages: usize,
}

impl Registry {
    fn with_limit(max_messages: usize) -> Registry {
        Registry {
            inner: Mutex::default(),
            max_messages,
        }
    }

    /// The latest snapshot of the folder in `dir`, if one is kept.
    pub fn get(&self, dir: &Path) -> Option<Arc<Snapshot>> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let (snapshot, used) = inner.folders.get_mut(dir)?;
        *used = tick;
        Some(snapshot.clone())
    }

    /// Keeps `snapshot` as the folder's latest, dropping the least recently used others
    /// while all of them hold more than [`MAX_MESSAGES`] messages.
    pub fn put(&self, dir: &Path, snapshot: Snapshot) {
        let mut inner = self.lock();
        inner.tick += 1;
        let (tick, len) = (inner.tick, snapshot.messages.len());
        if let Some((old, _)) = inner
            .folders
            .insert(dir.to_path_buf(), (Arc::new(snapshot), tick))
        {
            inner.messages -= old.messages.len();
        }
        inner.messages += len;
        while inner.messages > self.max_messages && inner.folders.len() > 1 {
            let oldest = inner
                .folders
                .iter()
                .filter(|(path, _)| path.as_path() != dir)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(path, _)| path.clone());
            let Some(oldest) = oldest else { break };
            if let Some((old, _)) = inner.folders.remove(&oldest) {
                inner.messages -= old.messages.len();
            }
        }
    }

    /// Drops what is kept of the folder in `dir` (DELETE, RENAME): a folder made there later
    /// is another one.
    pub fn forget(&self, dir: &Path) {
        let mut inner = self.lock();
        if let Some((old, _)) = inner.folders.remove(dir) {
            inner.messages -= old.messages.len();
        }
    }

    /// Folders and messages held (for tests of the bound).
    #[cfg(test)]
    pub fn held(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.folders.len(), inner.messages)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while the lock was held left a consistent map (every change above is
        // one step), so a poisoned lock is taken as it is.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(messages: usize) -> Snapshot {
        let message = Message {
            uid: 1,
            system: 0,
            keywords: 0,
            recent: false,
            size: 1,
            date: 0,
            name: "1.a.h".into(),
            in_new: false,
            summary: None,
        };
        Snapshot {
            uidvalidity: 1,
            uidnext: 2,
            messages: Arc::new(vec![message; messages]),
            keywords: Keywords::default(),
            looks: Looks::NEVER,
            cache: CacheMark {
                ino: 1,
                end: 0,
                limit: 0,
            },
            uid_records: 1,
        }
    }

    #[test]
    fn keeps_the_most_recently_used_within_the_bound() {
        let registry = Registry::with_limit(100);
        let dir = |n: usize| PathBuf::from(format!("/m/{n}"));
        for n in 0..4 {
            registry.put(&dir(n), snapshot(30));
        }
        assert_eq!(registry.held(), (3, 90), "the oldest dropped");
        assert!(registry.get(&dir(0)).is_none());
        // Used now: kept when the next one comes.
        assert!(registry.get(&dir(1)).is_some());
        registry.put(&dir(4), snapshot(30));
        assert!(registry.get(&dir(1)).is_some());
        assert!(registry.get(&dir(2)).is_none());
        // Replacing a folder's snapshot counts it once.
        registry.put(&dir(4), snapshot(10));
        assert_eq!(registry.held(), (3, 70));
        // One folder larger than the bound is still kept (its sessions hold it anyway).
        registry.put(&dir(5), snapshot(500));
        assert_eq!(registry.held(), (1, 500));
        registry.forget(&dir(5));
        assert_eq!(registry.held(), (0, 0));
    }
}
