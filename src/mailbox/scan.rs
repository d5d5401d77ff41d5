//! Looking at a folder's directories: stamps (what a stat tells) to notice changes, and
//! listings of `new/` and `cur/` that no concurrent rename can fool.
//!
//! Change detection follows Dovecot (MAILBOX.md): a directory whose stamp is unchanged since
//! the last look has the same entries, unless its mtime was within a second of that look
//! (a change in the same clock tick leaves the mtime as it was), so a recent mtime is always
//! looked at again.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How close to a look an mtime must be to be distrusted.
const FRESH: Duration = Duration::from_secs(1);
/// Listings tried before taking one that changed under us.
const ATTEMPTS: usize = 5;

/// What a stat says about a file or directory, enough to tell that it changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamp {
    pub exists: bool,
    pub ino: u64,
    pub size: u64,
    /// Nanoseconds since the epoch.
    pub mtime: i128,
}

impl Stamp {
    /// Whether the mtime is within [`FRESH`] of `look` (or after it).
    pub fn is_fresh(&self, look: SystemTime) -> bool {
        let look = look
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        self.exists && self.mtime + FRESH.as_nanos() as i128 >= look
    }
}

pub fn stamp(path: &Path) -> io::Result<Stamp> {
    match fs::metadata(path) {
        Ok(m) => Ok(Stamp {
            exists: true,
            ino: m.ino(),
            size: m.size(),
            mtime: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Stamp::default()),
        Err(e) => Err(e),
    }
}

/// The entries of a Maildir directory that can be messages: no dot files (maildir(5)), no
/// names that are not UTF-8 (logged; tambo cannot name them).
pub fn list_names(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        match name.into_string() {
            Ok(name) if !name.starts_with('.') => names.push(name),
            Ok(_) => {}
            Err(name) => log::warn!(
                "{}: skipping a file whose name is not UTF-8: {name:?}",
                dir.display()
            ),
        }
    }
    Ok(names)
}

/// Whether a Maildir directory holds a file that can be a message (reads up to the first).
pub fn has_entries(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut entries| {
        entries.any(|e| e.is_ok_and(|e| !e.file_name().as_encoded_bytes().starts_with(b".")))
    })
}

/// `new/` and/or `cur/` as listed, with their stamps from just before the listing.
#[derive(Debug, Default)]
pub struct Listing {
    pub new: Option<Vec<String>>,
    pub cur: Option<Vec<String>>,
    pub new_stamp: Stamp,
    pub cur_stamp: Stamp,
    /// Nothing changed in the directories while they were listed: a file missing from the
    /// listing is really gone (a file renamed during a readdir may be seen under neither
    /// name).
    pub stable: bool,
}

/// Lists the wanted directories, `new/` first (a file moved from `new/` to `cur/` between
/// the two readdirs is then seen twice rather than not at all), again while they change.
pub fn scan(dir: &Path, want_new: bool, want_cur: bool) -> io::Result<Listing> {
    let (new_dir, cur_dir) = (dir.join("new"), dir.join("cur"));
    let mut listing = Listing::default();
    for _ in 0..ATTEMPTS {
        let before = (stamp(&new_dir)?, stamp(&cur_dir)?);
        if !before.1.exists {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no cur/"));
        }
        listing.new = match want_new && before.0.exists {
            true => Some(list_names(&new_dir)?),
            false => want_new.then(Vec::new),
        };
        listing.cur = want_cur.then(|| list_names(&cur_dir)).transpose()?;
        (listing.new_stamp, listing.cur_stamp) = before;
        let after = (stamp(&new_dir)?, stamp(&cur_dir)?);
        if after == before {
            listing.stable = true;
            return Ok(listing);
        }
    }
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_and_freshness() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        assert!(!stamp(&path).unwrap().exists);
        fs::write(&path, b"x").unwrap();
        let s = stamp(&path).unwrap();
        assert!(s.exists && s.size == 1);
        assert!(s.is_fresh(SystemTime::now()));
        let old = SystemTime::now() - Duration::from_secs(10);
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let s2 = stamp(&path).unwrap();
        assert_ne!(s, s2);
        assert!(!s2.is_fresh(SystemTime::now()));
        assert!(s2.is_fresh(old + Duration::from_millis(500)));
    }

    #[test]
    fn lists_maildir_entries() {
        let tmp = tempfile::tempdir().unwrap();
        for sub in ["new", "cur"] {
            fs::create_dir(tmp.path().join(sub)).unwrap();
        }
        fs::write(tmp.path().join("new/1.a.h"), b"").unwrap();
        fs::write(tmp.path().join("cur/2.b.h:2,S"), b"").unwrap();
        fs::write(tmp.path().join("cur/.hidden"), b"").unwrap();
        let l = scan(tmp.path(), true, true).unwrap();
        assert!(l.stable);
        assert_eq!(l.new.unwrap(), ["1.a.h"]);
        assert_eq!(l.cur.unwrap(), ["2.b.h:2,S"]);
        assert!(has_entries(&tmp.path().join("new")));
        fs::remove_file(tmp.path().join("new/1.a.h")).unwrap();
        assert!(
            !has_entries(&tmp.path().join("new")),
            "dot files are no messages"
        );
        fs::write(tmp.path().join("new/1.a.h"), b"").unwrap();
        let l = scan(tmp.path(), false, true).unwrap();
        assert!(l.new.is_none() && l.cur.is_some());
        fs::remove_dir_all(tmp.path().join("new")).unwrap();
        assert_eq!(scan(tmp.path(), true, false).unwrap().new.unwrap().len(), 0);
        fs::remove_dir_all(tmp.path().join("cur")).unwrap();
        assert!(scan(tmp.path(), true, true).is_err());
    }
}
