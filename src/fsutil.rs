//! The one durable-write helper: temp file, fsync, rename, fsync the directory (STYLE habit 9).

use std::io;
use std::path::Path;

/// Writes `contents` to `path` atomically and durably, with file mode `mode`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    todo!("{path:?}{}{mode}", contents.len())
}

/// fsyncs a directory, so a rename or create inside it survives a crash.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    todo!("{dir:?}")
}

/// `mkdir -p` with mode 0700 for every folder it creates.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    todo!("{dir:?}")
}
