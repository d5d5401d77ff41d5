//! The one durable-write helper: temp file, fsync, rename, fsync the directory (STYLE habit 9).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

mod dir_sync;
pub use dir_sync::{DirTicket, SOON, fsync_dir_shared, fsync_dir_soon};

/// How many temp names to try before giving up (a clash needs the same pid and 64 random bits).
const TEMP_ATTEMPTS: usize = 8;

/// Writes `contents` to `path` atomically and durably, with file mode `mode`.
///
/// Readers see either the old file or the new one, never a mix; once this returns, the new
/// file survives a crash (SPEC §4: "writes it atomically (temp file, fsync, rename)").
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent_dir(path);
    let (mut file, temp) = create_temp(path, &dir, mode)?;
    let result = write_and_sync(&mut file, contents, mode)
        .and_then(|()| fs::rename(&temp, path))
        .and_then(|()| fsync_dir(&dir));
    drop(file);
    if result.is_err() {
        // Best effort: the original error matters more than a failed cleanup.
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Writes a file that must not exist yet, durably and never over an existing one, even one
/// created meanwhile: `write_atomic` under a temp name (a dot name, which no loader takes for
/// a key or a domain), then link(2) to its own name, which fails with `AlreadyExists` when
/// the name is taken; the temp name is then removed.
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?
        .to_string_lossy();
    let temp = dir.join(format!(
        ".{name}.new.{}.{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    write_atomic(&temp, contents, mode)?;
    let linked = fs::hard_link(&temp, path);
    // Best effort: a leftover temp file is harmless, the link's outcome is what matters.
    let _ = fs::remove_file(&temp);
    linked?;
    fsync_dir(&dir)
}

/// Whether `e` says the file system is full (ENOSPC) or the user's quota on it is used up
/// (EDQUOT): the mail is then refused for now (RFC 3463 §3.4, X.3.1) rather than as a local
/// error, and the log says so.
/// A file with no name (O_TMPFILE) in `dir`, readable and writable, mode 0600: it
/// disappears with its last descriptor, whatever happens to the process.
pub fn unnamed_file(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(dir)
}

pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
        || matches!(
            e.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        )
}

/// fsyncs a directory, so a rename or create inside it survives a crash.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `mkdir -p` with mode 0700 for every folder it creates (SPEC §11: folders 0700).
///
/// The parent of each created folder is fsynced, so the new entry survives a crash.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let parent = parent_dir(dir);
    create_private_dir_all(&parent)?;
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => fsync_dir(&parent),
        // Another process may have created it between our check and mkdir.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The folder holding `path`; `.` for a bare file name.
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates a fresh temp file next to `path` (same folder, so the rename stays atomic).
fn create_temp(path: &Path, dir: &Path, mode: u32) -> io::Result<(File, PathBuf)> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?
        .to_string_lossy();
    let mut last_err = None;
    for _ in 0..TEMP_ATTEMPTS {
        let temp = dir.join(format!(
            ".{name}.tmp.{}.{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true) // O_CREAT|O_EXCL: never follow or reuse someone else's file.
            .mode(mode)
            .open(&temp);
        match opened {
            Ok(file) => return Ok((file, temp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("no temp file name available")))
}

fn write_and_sync(file: &mut File, contents: &[u8], mode: u32) -> io::Result<()> {
    // The umask may have narrowed the mode given at creation; the caller asked for this one.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn write_new_never_overwrites() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("key");
        write_new(&path, b"first\n", 0o600).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        let err = write_new(&path, b"second\n", 0o600).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"first\n");
        // No temp file is left behind, whatever the outcome.
        assert_eq!(entries(tmp.path()), ["key"]);
    }

    #[test]
    fn writes_contents_and_mode() {
        let tmp = tempfile::tempdir().unwrap();
        for (name, mode) in [("a", 0o600), ("b", 0o644), ("c", 0o640)] {
            let path = tmp.path().join(name);
            write_atomic(&path, b"hello\n", mode).unwrap();
            assert_eq!(fs::read(&path).unwrap(), b"hello\n");
            assert_eq!(mode_of(&path), mode, "{name}");
        }
        assert_eq!(entries(tmp.path()), ["a", "b", "c"]);
    }

    #[test]
    fn overwrites_and_leaves_no_temp() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("users");
        write_atomic(&path, b"first, and longer", 0o600).unwrap();
        write_atomic(&path, b"second", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(entries(tmp.path()), ["users"]);
    }

    #[test]
    fn empty_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("empty");
        write_atomic(&path, b"", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"");
    }

    #[test]
    fn failed_rename_removes_temp() {
        let tmp = tempfile::tempdir().unwrap();
        // Renaming a file over a non-empty folder fails after the temp file was written.
        let path = tmp.path().join("occupied");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("x"), b"x").unwrap();
        assert!(write_atomic(&path, b"data", 0o600).is_err());
        assert_eq!(entries(tmp.path()), ["occupied"]);
    }

    #[test]
    fn missing_folder_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("nope/file");
        let err = write_atomic(&path, b"data", 0o600).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn fsync_dir_works_and_fails() {
        let tmp = tempfile::tempdir().unwrap();
        fsync_dir(tmp.path()).unwrap();
        assert!(fsync_dir(&tmp.path().join("missing")).is_err());
    }

    #[test]
    fn private_dirs_are_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b/c");
        create_private_dir_all(&deep).unwrap();
        for d in ["a", "a/b", "a/b/c"] {
            let p = tmp.path().join(d);
            assert!(p.is_dir(), "{d}");
            assert_eq!(mode_of(&p), 0o700, "{d}");
        }
        // Existing folders are fine and left alone.
        create_private_dir_all(&deep).unwrap();
        create_private_dir_all(tmp.path()).unwrap();
    }

    #[test]
    fn private_dir_over_a_file_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, b"").unwrap();
        assert!(create_private_dir_all(&file).is_err());
        assert!(create_private_dir_all(&file.join("sub")).is_err());
    }
}
