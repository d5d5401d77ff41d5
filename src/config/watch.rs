//! Noticing, by `stat` alone, that the files the domains were loaded from changed, so that a
//! running server picks up `util user-add` or an edited aliases file without a SIGHUP.
//!
//! A `config::stamps::Stamp` is what stat says of a file: device, inode, size and modification time to the
//! nanosecond. `util` replaces files atomically (a new inode), so a change is seen even within
//! one tick of the file system's clock. The `domains/` folder's own stamp changes when a
//! domain folder is added or removed, a domain folder's when a file in it is (a DKIM key).

use crate::addr::Domain;
use crate::aliases::Normalization;
use crate::config::domains::domain_dir;
use crate::config::settings::ConfigError;
use crate::config::stamps::Stamps;
use crate::config::{Domains, Live};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// A reload made because `changed` did.
pub struct Reload {
    pub changed: PathBuf,
    pub result: Result<(), ConfigError>,
}

/// Watches what the domains in force were loaded from, and reloads them when it changes.
pub struct DomainsWatch {
    config_dir: PathBuf,
    norm: Normalization,
    /// The stamps of the last load, or of the last attempt that failed: a broken file is
    /// not loaded again (nor its error logged again) until a file changes again.
    seen: Mutex<Stamps>,
}

impl DomainsWatch {
    pub fn new(config_dir: &Path, loaded: &Domains) -> DomainsWatch {
        DomainsWatch {
            config_dir: config_dir.to_path_buf(),
            norm: loaded.normalization().clone(),
            seen: Mutex::new(loaded.stamps().clone()),
        }
    }

    fn seen(&self) -> MutexGuard<'_, Stamps> {
        // A panic while holding the lock cannot leave the stamps half-written.
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The first file that changed since the last load, by stat alone. `None` too while a
    /// reload is under way (it is about to record new stamps): this never waits for one.
    pub fn changed(&self) -> Option<PathBuf> {
        let seen = self.seen.try_lock().ok()?;
        seen.changed().map(Path::to_path_buf)
    }

    /// Whether the users file of `domain` changed since the last load; for a domain that had
    /// no folder then, whether the `domains/` folder did (a domain added since). One stat.
    pub fn users_changed(&self, domain: &Domain) -> bool {
        let seen = self.seen();
        let users = domain_dir(&self.config_dir, domain).join("users");
        seen.path_changed(&users)
            .or_else(|| seen.path_changed(&self.config_dir.join("domains")))
            .unwrap_or(false)
    }

    /// Reloads the domains into `live` when a file changed since the last load (looked at
    /// again under the lock, so that callers racing each other load once). A load that fails
    /// leaves `live` as it was. Blocking: reads and parses files.
    pub fn reload_if_changed(&self, live: &Live<Domains>) -> Option<Reload> {
        let mut seen = self.seen();
        let changed = seen.changed()?.to_path_buf();
        let result = match Domains::load_watched(&self.config_dir, self.norm.clone()) {
            Ok(domains) => {
                *seen = domains.stamps().clone();
                live.replace(domains);
                Ok(())
            }
            Err((e, stamps)) => {
                *seen = stamps;
                Err(e)
            }
        };
        Some(Reload { changed, result })
    }

    /// Records a load made elsewhere (SIGHUP), about to be put in force.
    pub fn loaded(&self, domains: &Domains) {
        *self.seen() = domains.stamps().clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    struct Folder {
        tmp: tempfile::TempDir,
    }

    impl Folder {
        /// A config folder with example.test, its users file holding alice.
        fn new() -> Folder {
            let tmp = tempfile::tempdir().unwrap();
            let folder = Folder { tmp };
            fs::create_dir_all(folder.domain_dir("example.test")).unwrap();
            folder.write("example.test/users", r#"{"alice": "!"}"#);
            folder
        }
        fn dir(&self) -> &Path {
            self.tmp.path()
        }
        fn domain_dir(&self, name: &str) -> PathBuf {
            self.dir().join("domains").join(name)
        }
        /// Atomically, as util does: a new file renamed over the old.
        fn write(&self, rel: &str, text: &str) {
            let path = self.dir().join("domains").join(rel);
            let tmp = path.with_extension("tmp");
            fs::write(&tmp, text).unwrap();
            fs::rename(&tmp, &path).unwrap();
        }
        fn load(&self) -> Domains {
            Domains::load(self.dir(), norm()).unwrap()
        }
    }

    /// Before a change seen only by a folder's mtime: kernels without multigrain timestamps
    /// (before 6.13) stamp files at clock-tick granularity (a few ms), and a test is faster.
    fn tick() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    fn norm() -> Normalization {
        Normalization {
            drop_characters: ".".into(),
            suffix_separators: "+".into(),
        }
    }

    fn domain(name: &str) -> Domain {
        Domain::parse(name).unwrap()
    }

    fn users(live: &Live<Domains>, name: &str) -> Vec<String> {
        live.get().get(&domain(name)).unwrap().users.names()
    }

    #[test]
    fn nothing_changed_nothing_reloaded() {
        let f = Folder::new();
        let loaded = f.load();
        let watch = DomainsWatch::new(f.dir(), &loaded);
        let live = Live::new(loaded);
        assert_eq!(watch.changed(), None);
        assert!(!watch.users_changed(&domain("example.test")));
        assert!(watch.reload_if_changed(&live).is_none());
    }

    #[test]
    fn a_user_added_is_seen_at_once_and_reloaded() {
        let f = Folder::new();
        let loaded = f.load();
        let watch = DomainsWatch::new(f.dir(), &loaded);
        let live = Live::new(loaded);
        f.write("example.test/users", r#"{"alice": "!", "bob": "!"}"#);
        assert!(watch.users_changed(&domain("example.test")));
        let users_path = f.domain_dir("example.test").join("users");
        assert_eq!(watch.changed(), Some(users_path.clone()));
        let reload = watch.reload_if_changed(&live).expect("a reload");
        assert_eq!(reload.changed, users_path);
        assert!(reload.result.is_ok());
        assert_eq!(users(&live, "example.test"), ["alice", "bob"]);
        assert!(!watch.users_changed(&domain("example.test")));
        assert_eq!(watch.changed(), None);
    }

    #[test]
    fn aliases_and_new_domains_are_seen() {
        let f = Folder::new();
        let loaded = f.load();
        let watch = DomainsWatch::new(f.dir(), &loaded);
        let live = Live::new(loaded);
        f.write("example.test/aliases", "info: alice\n");
        assert_eq!(
            watch.changed(),
            Some(f.domain_dir("example.test").join("aliases"))
        );
        assert!(
            !watch.users_changed(&domain("example.test")),
            "only the aliases changed"
        );
        assert!(watch.reload_if_changed(&live).unwrap().result.is_ok());

        // A file added to a domain's folder (as dkim-keygen adds a key).
        tick();
        fs::write(f.domain_dir("example.test").join("notes"), "").unwrap();
        assert_eq!(watch.changed(), Some(f.domain_dir("example.test")));
        assert!(watch.reload_if_changed(&live).unwrap().result.is_ok());

        // A domain added: the domains/ folder changed, and a login there sees it.
        assert!(!watch.users_changed(&domain("new.test")));
        tick();
        fs::create_dir(f.domain_dir("new.test")).unwrap();
        f.write("new.test/users", r#"{"carol": "!"}"#);
        assert!(watch.users_changed(&domain("new.test")));
        assert_eq!(watch.changed(), Some(f.dir().join("domains")));
        assert!(watch.reload_if_changed(&live).unwrap().result.is_ok());
        assert_eq!(users(&live, "new.test"), ["carol"]);
    }

    #[test]
    fn a_broken_file_keeps_the_old_domains_until_it_changes_again() {
        let f = Folder::new();
        let loaded = f.load();
        let watch = DomainsWatch::new(f.dir(), &loaded);
        let live = Live::new(loaded);
        f.write("example.test/users", r#"{"alice": "!", "bob": "#);
        let reload = watch.reload_if_changed(&live).expect("a reload");
        let error = reload.result.expect_err("broken users file").0;
        assert!(error.contains("example.test/users"), "{error}");
        assert_eq!(users(&live, "example.test"), ["alice"]);
        // Not tried again while nothing changes...
        assert_eq!(watch.changed(), None);
        assert!(watch.reload_if_changed(&live).is_none());
        // ... and loaded once fixed.
        f.write("example.test/users", r#"{"alice": "!", "bob": "!"}"#);
        assert!(watch.reload_if_changed(&live).unwrap().result.is_ok());
        assert_eq!(users(&live, "example.test"), ["alice", "bob"]);
    }

    #[test]
    fn a_load_made_elsewhere_is_recorded() {
        let f = Folder::new();
        let loaded = f.load();
        let watch = DomainsWatch::new(f.dir(), &loaded);
        f.write("example.test/users", r#"{"bob": "!"}"#);
        assert!(watch.changed().is_some());
        watch.loaded(&f.load());
        assert_eq!(watch.changed(), None);
    }
}
