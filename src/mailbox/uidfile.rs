//! The `dovecot-uidlist` file of a folder: read without a lock, changed under
//! `dovecot-uidlist.lock`. New UIDs are appended in place (one write, then fdatasync);
//! anything else (dropping records of gone files, an upgrade from version 1, a damaged line)
//! rewrites it: temp file, fsync, rename, fsync of the folder.
//!
//! UIDVALIDITY is kept for as long as the file is: a new one is only made when the file is
//! missing or unusable, and that is logged. Courier's `courierimapuiddb` is taken over when
//! there is no uidlist yet.

use crate::fsutil;
use crate::mailbox::StoreError;
use crate::mailbox::dotlock::{Dotlock, UIDLIST_STALE};
use crate::mailbox::scan::{self, Stamp};
use crate::mailbox::uidlist::{self, Record, Uidlist};
use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub const FILE: &str = "dovecot-uidlist";
const COURIER_FILE: &str = "courierimapuiddb";

/// A uidlist as read, with what the reader noticed.
#[derive(Debug)]
pub struct Loaded {
    pub list: Uidlist,
    /// Lines were left out, or it is version 1: rewrite it at the next lock.
    pub needs_rewrite: bool,
    /// The last line has no newline yet.
    pub torn_tail: bool,
}

/// Reads the folder's uidlist without locking; `None` when it is missing or unusable.
pub fn read(dir: &Path) -> Result<Option<Loaded>, StoreError> {
    read_file(&dir.join(FILE))
}

fn read_file(path: &Path) -> Result<Option<Loaded>, StoreError> {
    let data = match fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    match uidlist::parse(&data) {
        Ok(parsed) => {
            for problem in &parsed.problems {
                log::warn!("{}: {problem}", path.display());
            }
            let needs_rewrite = !parsed.problems.is_empty() || parsed.list.version != 3;
            Ok(Some(Loaded {
                list: parsed.list,
                needs_rewrite,
                torn_tail: parsed.torn_tail,
            }))
        }
        Err(why) => {
            log::warn!("{}: unusable ({why})", path.display());
            Ok(None)
        }
    }
}

/// The UIDVALIDITY in the header, reading only the first line: enough to tell whether
/// someone replaced the file with a new UIDVALIDITY.
pub fn read_uidvalidity(dir: &Path) -> Result<Option<u32>, StoreError> {
    let path = dir.join(FILE);
    let mut head = [0u8; 512];
    let n = match fs::File::open(&path).and_then(|mut f| f.read(&mut head)) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(&path, e)),
    };
    let Some(end) = head[..n].iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    Ok(uidlist::parse(&head[..=end])
        .ok()
        .map(|p| p.list.uidvalidity))
}

/// A new UIDVALIDITY: the time in seconds, but never one this process gave before, so a
/// folder deleted and created again within a second still gets a new one (RFC 3501 §2.3.1.1).
pub fn new_uidvalidity() -> u32 {
    static LAST: AtomicU32 = AtomicU32::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as u32)
        .max(1);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last.wrapping_add(1)).max(1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Writes the uidlist of a new, empty folder (before it is renamed into place).
pub fn create(dir: &Path) -> Result<u32, StoreError> {
    let list = Uidlist::new(new_uidvalidity(), uidlist::new_guid());
    let path = dir.join(FILE);
    fsutil::write_atomic(&path, uidlist::serialize(&list).as_bytes(), 0o600)
        .map_err(|e| StoreError::io(&path, e))?;
    Ok(list.uidvalidity)
}

/// The uidlist under its lock: UIDs can be given and records dropped, then [`Locked::commit`]
/// writes what changed.
pub struct Locked {
    path: PathBuf,
    _lock: Dotlock,
    pub list: Uidlist,
    rewrite: bool,
    /// Records added since reading, to append when no rewrite is due.
    added: usize,
    index: Option<HashMap<Box<str>, u32>>,
}

impl Locked {
    /// Locks the folder's uidlist and reads it. A missing or unusable file starts over with a
    /// new UIDVALIDITY (from Courier's file when there is one), logged.
    pub fn open(dir: &Path) -> Result<Locked, StoreError> {
        let path = dir.join(FILE);
        let lock = Dotlock::acquire(&path, UIDLIST_STALE)?;
        let (list, rewrite) = match read_file(&path)? {
            // Under the lock nobody is appending: a torn last line is a crash's, and the next
            // append would join it, so the file is rewritten.
            Some(loaded) => (loaded.list, loaded.needs_rewrite || loaded.torn_tail),
            None => (start_over(dir)?, true),
        };
        Ok(Locked {
            path,
            _lock: lock,
            list,
            rewrite,
            added: 0,
            index: None,
        })
    }

    /// The UID of a base name, if it has one.
    pub fn uid_of(&mut self, base: &str) -> Option<u32> {
        let records = &self.list.records;
        self.index
            .get_or_insert_with(|| records.iter().map(|r| (r.base.clone(), r.uid)).collect())
            .get(base)
            .copied()
    }

    /// Gives `base` the next UID.
    pub fn assign(&mut self, base: &str) -> Result<u32, StoreError> {
        let uid = self.list.nextuid;
        if uid == u32::MAX {
            return Err(StoreError::Damaged {
                path: self.path.clone(),
                why: "no UIDs left".into(),
            });
        }
        self.list.nextuid += 1;
        self.list.records.push(Record {
            uid,
            fields: "".into(),
            base: base.into(),
        });
        if let Some(index) = &mut self.index {
            index.insert(base.into(), uid);
        }
        self.added += 1;
        Ok(uid)
    }

    /// Drops the records `keep` refuses (files that are gone); the file is then rewritten.
    pub fn retain(&mut self, keep: impl Fn(&Record) -> bool) {
        let before = self.list.records.len();
        self.list.records.retain(|r| keep(r));
        if self.list.records.len() != before {
            self.rewrite = true;
            self.index = None;
        }
    }

    /// Writes the changes: new records appended, or the whole file replaced. Returns the list.
    pub fn commit(mut self) -> Result<Uidlist, StoreError> {
        if self.rewrite {
            uidlist::dedupe(&mut self.list);
            fsutil::write_atomic(&self.path, uidlist::serialize(&self.list).as_bytes(), 0o600)
                .map_err(|e| StoreError::io(&self.path, e))?;
        } else if self.added > 0 {
            let mut lines = String::new();
            let new = &self.list.records[self.list.records.len() - self.added..];
            for record in new {
                uidlist::record_line(record, &mut lines);
            }
            let mut file = OpenOptions::new()
                .append(true)
                .open(&self.path)
                .map_err(|e| StoreError::io(&self.path, e))?;
            file.write_all(lines.as_bytes())
                .and_then(|()| file.sync_data())
                .map_err(|e| StoreError::io(&self.path, e))?;
        }
        Ok(self.list)
    }
}

/// A list for a folder whose uidlist is missing or unusable: Courier's UIDs when it left a
/// `courierimapuiddb`, else a new UIDVALIDITY. Either way the file gets written.
fn start_over(dir: &Path) -> Result<Uidlist, StoreError> {
    if let Some(courier) = read_file(&dir.join(COURIER_FILE))? {
        log::info!(
            "{}: no {FILE}, taking over Courier's UIDs (UIDVALIDITY {})",
            dir.display(),
            courier.list.uidvalidity
        );
        let mut list = courier.list;
        list.version = 3;
        list.guid = Some(uidlist::new_guid());
        return Ok(list);
    }
    let list = Uidlist::new(new_uidvalidity(), uidlist::new_guid());
    let has_mail = ["cur", "new"]
        .iter()
        .any(|sub| scan::has_entries(&dir.join(sub)));
    if has_mail {
        log::warn!(
            "{}: {FILE} is missing or unusable: new UIDVALIDITY {}, clients will download the folder again",
            dir.display(),
            list.uidvalidity
        );
    } else {
        log::info!(
            "{}: new {FILE}, UIDVALIDITY {}",
            dir.display(),
            list.uidvalidity
        );
    }
    Ok(list)
}

/// The stamp of the folder's uidlist.
pub fn stamp(dir: &Path) -> Result<Stamp, StoreError> {
    let path = dir.join(FILE);
    scan::stamp(&path).map_err(|e| StoreError::io(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uidvalidity_never_repeats() {
        let a = new_uidvalidity();
        let b = new_uidvalidity();
        assert!(b > a);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as u32;
        assert!(a >= now - 1);
    }

    #[test]
    fn appends_in_place_then_rewrites() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let uidv = create(dir).unwrap();
        let path = dir.join(FILE);
        let header = fs::read_to_string(&path).unwrap();

        let mut locked = Locked::open(dir).unwrap();
        assert_eq!(locked.assign("a").unwrap(), 1);
        assert_eq!(locked.assign("b").unwrap(), 2);
        assert_eq!(locked.uid_of("b"), Some(2));
        locked.commit().unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{header}1 :a\n2 :b\n"),
            "appended, header unchanged"
        );
        assert!(!dir.join("dovecot-uidlist.lock").exists());

        let mut locked = Locked::open(dir).unwrap();
        locked.retain(|r| &*r.base != "a");
        let list = locked.commit().unwrap();
        assert_eq!((list.uidvalidity, list.nextuid), (uidv, 3));
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&format!("3 V{uidv} N3 G")), "{text}");
        assert!(text.ends_with("\n2 :b\n"), "{text}");
        assert_eq!(read_uidvalidity(dir).unwrap(), Some(uidv));
    }

    #[test]
    fn torn_line_under_lock_forces_a_rewrite() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(
            dir.join(FILE),
            "3 V7 N1 G00000000000000000000000000000000\n1 :a\n2 :b,S=",
        )
        .unwrap();
        let mut locked = Locked::open(dir).unwrap();
        assert_eq!(locked.uid_of("b"), None);
        assert_eq!(locked.assign("b").unwrap(), 2);
        locked.commit().unwrap();
        assert_eq!(
            fs::read_to_string(dir.join(FILE)).unwrap(),
            "3 V7 N3 G00000000000000000000000000000000\n1 :a\n2 :b\n"
        );
    }

    #[test]
    fn lost_file_gets_a_new_uidvalidity_courier_file_is_taken_over() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join(FILE), "garbage\n").unwrap();
        let list = Locked::open(dir).unwrap().commit().unwrap();
        assert!(list.uidvalidity > 1_000_000_000);
        assert_eq!(read(dir).unwrap().unwrap().list, list);

        let other = tmp.path().join("courier");
        fs::create_dir(&other).unwrap();
        fs::write(other.join(COURIER_FILE), "1 4242 10\n8 1.x.host:2,S\n").unwrap();
        let list = Locked::open(&other).unwrap().commit().unwrap();
        assert_eq!(
            (list.version, list.uidvalidity, list.nextuid),
            (3, 4242, 10)
        );
        let text = fs::read_to_string(other.join(FILE)).unwrap();
        assert!(text.starts_with("3 V4242 N10 G"), "{text}");
        assert!(text.ends_with("\n8 :1.x.host\n"), "{text}");
    }
}
