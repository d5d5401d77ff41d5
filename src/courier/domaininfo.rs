//! Per-domain TLS knowledge (SPEC §8, as chasquid's domaininfo): the best outgoing security
//! level seen for each recipient domain, kept under `data_dir/domaininfo/`, never lowered by a
//! later delivery; a delivery below it is refused (deferred).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::addr::Domain;
use crate::fsutil;

/// Ordered: `Plain < Insecure < Verified`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TlsLevel {
    /// No TLS.
    Plain,
    /// TLS, but the certificate did not verify for the host name.
    Insecure,
    /// TLS with a certificate valid for the MX host name.
    Verified,
}

impl TlsLevel {
    /// The name logs, errors and metrics use (the one stored, too).
    pub fn name(self) -> &'static str {
        match self {
            TlsLevel::Plain => "plain",
            TlsLevel::Insecure => "insecure",
            TlsLevel::Verified => "verified",
        }
    }
}

impl std::fmt::Display for TlsLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The folder under `data_dir`.
const DIR_NAME: &str = "domaininfo";

/// What one file holds; an object so that fields can be added later.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Record {
    outgoing: TlsLevel,
}

pub struct DomainInfo {
    dir: PathBuf,
    /// Levels read or written so far, by ACE domain; filled lazily from the files.
    cache: Mutex<HashMap<String, TlsLevel>>,
}

impl DomainInfo {
    pub fn open(data_dir: &Path) -> io::Result<DomainInfo> {
        let dir = data_dir.join(DIR_NAME);
        fsutil::create_private_dir_all(&dir)?;
        Ok(DomainInfo {
            dir,
            cache: Mutex::new(HashMap::new()),
        })
    }
    /// The best level seen for `domain` (ACE form); `Plain` when unknown.
    pub fn level(&self, domain: &str) -> TlsLevel {
        let Some(key) = key_of(domain) else {
            return TlsLevel::Plain;
        };
        self.known(&mut self.lock(), key)
    }
    /// Records a successful delivery at `level`; stored only when it raises the known level.
    pub fn record(&self, domain: &str, level: TlsLevel) -> io::Result<()> {
        let key = key_of(domain).ok_or_else(|| bad_name(domain))?;
        // The lock is held across the write so that two deliveries cannot lower each other.
        let mut cache = self.lock();
        let known = self.known(&mut cache, key.clone());
        if level <= known {
            return Ok(());
        }
        let json = serde_json::to_vec(&Record { outgoing: level }).map_err(io::Error::other)?;
        fsutil::write_atomic(&self.dir.join(&key), &json, 0o600)?;
        log::info!("domaininfo: {key}: outgoing TLS level raised from {known} to {level}");
        cache.insert(key, level);
        Ok(())
    }
    /// Forgets a domain (`util domaininfo-remove`). Ok(false) when nothing was known.
    pub fn remove(&self, domain: &str) -> io::Result<bool> {
        let key = key_of(domain).ok_or_else(|| bad_name(domain))?;
        let mut cache = self.lock();
        cache.remove(&key);
        match fs::remove_file(self.dir.join(&key)) {
            Ok(()) => {
                fsutil::fsync_dir(&self.dir)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The level for `key`, from the cache or else from its file.
    fn known(&self, cache: &mut HashMap<String, TlsLevel>, key: String) -> TlsLevel {
        if let Some(level) = cache.get(&key) {
            return *level;
        }
        let level = self.read(&key);
        cache.insert(key, level);
        level
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, TlsLevel>> {
        // A panic while holding the lock leaves the map consistent (single inserts/removes).
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stored level; a missing or unreadable file counts as `Plain` (logged), because
    /// refusing all delivery to a domain over a corrupt file would be worse.
    fn read(&self, key: &str) -> TlsLevel {
        let path = self.dir.join(key);
        let data = match fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return TlsLevel::Plain,
            Err(e) => {
                log::warn!("domaininfo: {}: {e}", path.display());
                return TlsLevel::Plain;
            }
        };
        match serde_json::from_slice::<Record>(&data) {
            Ok(record) => record.outgoing,
            Err(e) => {
                log::warn!("domaininfo: {}: {e}", path.display());
                TlsLevel::Plain
            }
        }
    }
}

/// The file name for a domain: its validated ACE form, so no name can escape the folder.
fn key_of(domain: &str) -> Option<String> {
    Domain::parse(domain.trim_end_matches('.'))
        .ok()
        .map(|d| d.to_ascii())
}

fn bad_name(domain: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("domaininfo: invalid domain name {domain:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use TlsLevel::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn levels_are_ordered() {
        assert!(Plain < Insecure && Insecure < Verified);
    }

    #[test]
    fn record_only_raises() {
        // (sequence of recorded levels, level known afterwards)
        let cases: &[(&[TlsLevel], TlsLevel)] = &[
            (&[], Plain),
            (&[Plain], Plain),
            (&[Insecure], Insecure),
            (&[Verified, Insecure], Verified),
            (&[Insecure, Plain], Insecure),
            (&[Plain, Insecure, Verified, Plain], Verified),
        ];
        for (seq, want) in cases {
            let tmp = tempfile::tempdir().unwrap();
            let info = DomainInfo::open(tmp.path()).unwrap();
            for level in *seq {
                info.record("example.com", *level).unwrap();
            }
            assert_eq!(info.level("example.com"), *want, "{seq:?}");
            // And the same after reopening (the files, not the cache).
            let info = DomainInfo::open(tmp.path()).unwrap();
            assert_eq!(info.level("example.com"), *want, "{seq:?} reopened");
        }
    }

    #[test]
    fn files_and_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let info = DomainInfo::open(tmp.path()).unwrap();
        let dir = tmp.path().join("domaininfo");
        assert_eq!(mode_of(&dir), 0o700);
        info.record("Example.COM", Verified).unwrap();
        info.record("bücher.example", Insecure).unwrap();
        let file = dir.join("example.com");
        assert_eq!(mode_of(&file), 0o600);
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            r#"{"outgoing":"verified"}"#
        );
        assert!(dir.join("xn--bcher-kva.example").is_file());
        // Unicode, ACE and case variants are the same domain.
        let info = DomainInfo::open(tmp.path()).unwrap();
        for name in ["xn--bcher-kva.example", "BÜCHER.example", "bücher.example."] {
            assert_eq!(info.level(name), Insecure, "{name}");
        }
        assert_eq!(info.level("example.com"), Verified);
        assert_eq!(info.level("other.com"), Plain);
    }

    #[test]
    fn remove_forgets() {
        let tmp = tempfile::tempdir().unwrap();
        let info = DomainInfo::open(tmp.path()).unwrap();
        info.record("example.com", Verified).unwrap();
        assert!(info.remove("example.com").unwrap());
        assert_eq!(info.level("example.com"), Plain);
        assert!(!info.remove("example.com").unwrap());
        assert!(!info.remove("never.example").unwrap());
        assert!(!tmp.path().join("domaininfo/example.com").exists());
        let info = DomainInfo::open(tmp.path()).unwrap();
        assert_eq!(info.level("example.com"), Plain);
        // Once forgotten, a lower level can be recorded again.
        info.record("example.com", Insecure).unwrap();
        assert_eq!(info.level("example.com"), Insecure);
    }

    #[test]
    fn bad_names_never_touch_files() {
        let tmp = tempfile::tempdir().unwrap();
        let info = DomainInfo::open(tmp.path()).unwrap();
        for name in [
            "", ".", "..", "../x", "a/b", "x\0y", "a..b", "1.2.3.4", "-a.com",
        ] {
            assert_eq!(info.level(name), Plain, "{name:?}");
            let err = info.record(name, Verified).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name:?}");
            assert_eq!(
                info.remove(name).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
        }
        assert_eq!(
            fs::read_dir(tmp.path().join("domaininfo")).unwrap().count(),
            0
        );
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn corrupt_file_counts_as_unknown() {
        let tmp = tempfile::tempdir().unwrap();
        let info = DomainInfo::open(tmp.path()).unwrap();
        fs::write(tmp.path().join("domaininfo/example.com"), b"garbage").unwrap();
        assert_eq!(info.level("example.com"), Plain);
        info.record("example.com", Insecure).unwrap();
        let info = DomainInfo::open(tmp.path()).unwrap();
        assert_eq!(info.level("example.com"), Insecure);
    }
}
