//! What `stat` says of the files a configuration was loaded from, to notice that one changed
//! without reading it.
//!
//! A [`Stamp`] is device, inode, size and modification time to the nanosecond. `util`
//! replaces files atomically (a new inode), so a change is seen even within one tick of the
//! file system's clock. A folder's stamp changes when an entry is added or removed.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What stat says of a file, as far as a change goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    /// `None` for a file that does not exist or cannot be stat'ed, so that its appearance is
    /// a change too.
    pub fn of(path: &Path) -> Option<Stamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        })
    }
}

/// The stamps of the files one load read, each taken just before reading it: a change made
/// while the load ran is seen at the next look.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamps(Vec<(PathBuf, Option<Stamp>)>);

impl Stamps {
    /// Stamps `path` now, before it is read.
    pub fn record(&mut self, path: &Path) {
        self.0.push((path.to_path_buf(), Stamp::of(path)));
    }

    /// The first recorded file that is no longer as it was. Stats only.
    pub fn changed(&self) -> Option<&Path> {
        self.0
            .iter()
            .find(|(path, stamp)| Stamp::of(path) != *stamp)
            .map(|(path, _)| path.as_path())
    }

    /// Whether `path` changed; `None` when it was not recorded.
    pub fn path_changed(&self, path: &Path) -> Option<bool> {
        self.0
            .iter()
            .find(|(p, _)| p == path)
            .map(|(p, stamp)| Stamp::of(p) != *stamp)
    }
}
