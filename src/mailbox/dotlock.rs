//! Dotlocks as Dovecot takes them (lib/file-dotlock.c): `<file>.lock`, created with O_EXCL,
//! holding `<pid>:<host>`. A lock is stale, and may be taken over, when it has not changed
//! for the stale time, or at once when its process is known to be gone (same host, no such
//! pid), so a crash does not block a folder for two minutes.

use crate::mailbox::StoreError;
use crate::mailbox::filename::system_hostname;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Dovecot's stale time for `dovecot-uidlist.lock` and `dovecot-keywords.lock`.
pub const UIDLIST_STALE: Duration = Duration::from_secs(120);
/// Dovecot's stale time for `subscriptions.lock`.
pub const SUBSCRIPTIONS_STALE: Duration = Duration::from_secs(30);

/// A held lock; dropping it removes the lock file.
#[derive(Debug)]
pub struct Dotlock {
    path: PathBuf,
}

impl Dotlock {
    /// Takes `<target>.lock`, waiting up to the stale time plus two seconds (Dovecot's
    /// timeout for the uidlist lock) while someone else holds it.
    pub fn acquire(target: &Path, stale: Duration) -> Result<Dotlock, StoreError> {
        Dotlock::acquire_within(target, stale, stale + Duration::from_secs(2))
    }

    fn acquire_within(
        target: &Path,
        stale: Duration,
        timeout: Duration,
    ) -> Result<Dotlock, StoreError> {
        let mut name = target.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            match create(&path) {
                Ok(()) => return Ok(Dotlock { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StoreError::io(&path, e)),
            }
            if is_stale(&path, stale) {
                log::warn!("{}: taking over a stale lock", path.display());
                match fs::remove_file(&path) {
                    Ok(()) => continue,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(StoreError::io(&path, e)),
                }
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Locked { path });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

impl Drop for Dotlock {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path) {
            log::warn!("cannot remove the lock {}: {e}", self.path.display());
        }
    }
}

fn create(path: &Path) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    // Only read to tell whether the holder is alive: no fsync needed.
    file.write_all(format!("{}:{}", std::process::id(), system_hostname()).as_bytes())
}

/// Old enough, or held by a process of this host that no longer exists.
fn is_stale(path: &Path, stale: Duration) -> bool {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false; // gone: the next create will tell
    };
    let age = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default();
    if age > stale {
        return true;
    }
    let Ok(content) = fs::read_to_string(path) else {
        return false;
    };
    let Some((pid, host)) = content.trim_end().split_once(':') else {
        return false;
    };
    let Ok(pid) = pid.parse::<libc::pid_t>() else {
        return false;
    };
    if host != system_hostname() || pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_and_releases() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("dovecot-uidlist");
        let lock = Dotlock::acquire(&target, UIDLIST_STALE).unwrap();
        let lock_path = tmp.path().join("dovecot-uidlist.lock");
        let content = fs::read_to_string(&lock_path).unwrap();
        assert_eq!(
            content,
            format!("{}:{}", std::process::id(), system_hostname())
        );
        // Held by a live process (us) and fresh: a second taker waits, then gives up.
        let started = Instant::now();
        let err = Dotlock::acquire_within(&target, UIDLIST_STALE, Duration::from_millis(100));
        assert!(matches!(err, Err(StoreError::Locked { .. })), "{err:?}");
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(lock_path.exists(), "the holder's lock is left alone");
        drop(lock);
        assert!(!lock_path.exists());
        drop(Dotlock::acquire(&target, UIDLIST_STALE).unwrap());
    }

    #[test]
    fn waits_for_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("f");
        let lock = Dotlock::acquire(&target, UIDLIST_STALE).unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(lock);
        });
        let started = Instant::now();
        let again = Dotlock::acquire(&target, UIDLIST_STALE).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(40));
        t.join().unwrap();
        drop(again);
    }

    #[test]
    fn takes_over_locks_of_dead_processes_and_old_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("f");
        let lock_path = tmp.path().join("f.lock");
        // A pid that cannot exist (above pid_max).
        fs::write(&lock_path, format!("{}:{}", i32::MAX, system_hostname())).unwrap();
        let started = Instant::now();
        drop(Dotlock::acquire(&target, UIDLIST_STALE).unwrap());
        assert!(started.elapsed() < Duration::from_secs(1));
        // Another host's lock is only stale by age.
        fs::write(&lock_path, "1:elsewhere.example").unwrap();
        let old = SystemTime::now() - Duration::from_secs(200);
        fs::File::options()
            .write(true)
            .open(&lock_path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        drop(Dotlock::acquire(&target, UIDLIST_STALE).unwrap());
        assert!(!lock_path.exists());
    }
}
