//! The one durable-write helper: temp file, fsync, rename, fsync the directory (STYLE habit 9).

use std::collections::HashMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

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

/// fsyncs a directory, so a rename or create inside it survives a crash.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// fsyncs a directory, sharing the work with every other thread that asks for the same
/// directory at the same time (group commit): a caller returns once an fsync that *started
/// after its call* has completed, so whatever it renamed or unlinked before calling is
/// durable. Under load one fsync covers many sessions' renames instead of one each.
pub fn fsync_dir_shared(dir: &Path) -> io::Result<()> {
    dir_syncer(dir).sync(dir)
}

/// Asks for `dir` to be fsync'd soon, without waiting for it: for changes whose durability
/// nobody waits on (a finished message leaving the queue). The next [`fsync_dir_shared`] of
/// the same directory covers them, as does a background fsync at most [`SOON`] later, so
/// under load they cost no fsync of their own.
pub fn fsync_dir_soon(dir: &Path) {
    let syncer = dir_syncer(dir);
    let mut state = syncer.lock();
    if state.soon {
        // Already asked for, and not started yet: that fsync will cover this change too.
        return;
    }
    state.soon = true;
    if !state.flusher {
        state.flusher = true;
        let (flusher, owned) = (syncer.clone(), dir.to_path_buf());
        let spawned = std::thread::Builder::new()
            .name("dir-sync".into())
            .spawn(move || flusher.flush_soon_forever(&owned));
        if let Err(e) = spawned {
            // Left to the next shared fsync and the kernel's own writeback.
            log::warn!(
                "cannot start the background fsync of {}: {e}",
                dir.display()
            );
        }
    }
    syncer.soon_requested.notify_all();
}

/// The most a change passed to [`fsync_dir_soon`] waits for its fsync.
pub const SOON: Duration = Duration::from_secs(1);

/// One coalescer per directory path, created on first use and kept (a mail server has few
/// directories that see renames: the queue, and one `new/` per mailbox).
fn dir_syncer(dir: &Path) -> Arc<DirSyncer> {
    static SYNCERS: OnceLock<Mutex<HashMap<PathBuf, Arc<DirSyncer>>>> = OnceLock::new();
    let map = SYNCERS.get_or_init(Default::default);
    let mut map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(syncer) = map.get(dir) {
        return syncer.clone();
    }
    map.entry(dir.to_path_buf()).or_default().clone()
}

#[derive(Default)]
struct DirSyncer {
    state: Mutex<SyncState>,
    done: Condvar,
    /// Wakes the background thread of [`fsync_dir_soon`].
    soon_requested: Condvar,
}

struct FailedBatch {
    after: u64,
    upto: u64,
    kind: io::ErrorKind,
    msg: String,
}

#[derive(Default)]
struct SyncState {
    /// Callers so far (a caller's ticket is the value after its increment).
    requested: u64,
    /// Every ticket up to this one is covered by a completed fsync.
    completed: u64,
    /// The tickets of the latest failed batch (`after < ticket <= upto`), and its error.
    failed: Option<FailedBatch>,
    running: bool,
    /// Changes passed to `fsync_dir_soon` wait for an fsync that has not started yet.
    soon: bool,
    /// The background thread for `soon` is running.
    flusher: bool,
}

impl DirSyncer {
    fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The background thread of [`fsync_dir_soon`]: once asked, waits [`SOON`] (a commit's
    /// fsync may cover the request meanwhile), then fsyncs if nobody has.
    fn flush_soon_forever(&self, dir: &Path) {
        loop {
            let mut state = self.lock();
            while !state.soon {
                state = self
                    .soon_requested
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
            drop(state);
            std::thread::sleep(SOON);
            if self.lock().soon
                && let Err(e) = self.sync(dir)
            {
                log::warn!("background fsync of {} failed: {e}", dir.display());
            }
        }
    }

    fn sync(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.requested += 1;
        let ticket = state.requested;
        loop {
            if state.completed >= ticket {
                return match &state.failed {
                    Some(f) if f.after < ticket && ticket <= f.upto => {
                        Err(io::Error::new(f.kind, f.msg.clone()))
                    }
                    _ => Ok(()),
                };
            }
            if state.running {
                state = self.done.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Lead a batch: it covers every ticket issued so far, and every change passed to
            // `fsync_dir_soon` before now.
            state.running = true;
            state.soon = false;
            let (after, batch) = (state.completed, state.requested);
            drop(state);
            let result = fsync_dir(dir);
            state = self.lock();
            state.running = false;
            state.completed = batch;
            if let Err(e) = result {
                state.failed = Some(FailedBatch {
                    after,
                    upto: batch,
                    kind: e.kind(),
                    msg: e.to_string(),
                });
            }
            self.done.notify_all();
        }
    }
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

    /// Fsyncs of `dir` completed so far (tickets served).
    fn completed(dir: &Path) -> u64 {
        dir_syncer(dir).lock().completed
    }

    #[test]
    fn soon_sync_runs_in_the_background_or_rides_on_a_shared_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        fs::write(dir.join("a"), b"x").unwrap();
        fsync_dir_soon(&dir);
        assert!(dir_syncer(&dir).lock().soon, "request noted");
        let deadline = std::time::Instant::now() + SOON * 5;
        while completed(&dir) == 0 {
            assert!(std::time::Instant::now() < deadline, "no background fsync");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!dir_syncer(&dir).lock().soon);

        // A shared fsync that starts after the request covers it: none runs later.
        fs::write(dir.join("b"), b"x").unwrap();
        fsync_dir_soon(&dir);
        fsync_dir_shared(&dir).unwrap();
        let after_shared = completed(&dir);
        assert!(!dir_syncer(&dir).lock().soon, "covered by the shared fsync");
        std::thread::sleep(SOON + Duration::from_millis(300));
        assert_eq!(
            completed(&dir),
            after_shared,
            "no redundant background fsync"
        );
    }

    #[test]
    fn shared_dir_sync_serves_concurrent_callers_and_reports_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    fs::write(dir.join(format!("f{i}")), b"x").unwrap();
                    fsync_dir_shared(&dir)
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        let missing = tmp.path().join("missing");
        assert!(fsync_dir_shared(&missing).is_err());
        // A later success is not spoiled by the earlier failure, and vice versa.
        fs::create_dir(&missing).unwrap();
        fsync_dir_shared(&missing).unwrap();
    }
}
