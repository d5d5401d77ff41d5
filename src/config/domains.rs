//! The `domains/` folder (SPEC §2): every folder is a local domain, with its users and
//! aliases files. Loaded whole at start (and on reload), then read-only.

use crate::addr::{Address, Domain};
use crate::aliases::{AliasFile, Directory, Normalization, Resolution};
use crate::config::settings::ConfigError;
use crate::config::stamps::Stamps;
use crate::mailauth::dkim::{self, DkimKey};
use crate::userdb::UserDb;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One local domain.
#[derive(Clone)]
pub struct DomainData {
    pub dir: PathBuf,
    pub users: UserDb,
    pub aliases: AliasFile,
    /// `dkim:<selector>.pem` keys, sorted by selector.
    pub dkim: Arc<[DkimKey]>,
}

/// All local domains, with the normalisation settings lookups need.
#[derive(Clone)]
pub struct Domains {
    map: BTreeMap<Domain, DomainData>,
    norm: Normalization,
    /// What the files were like when read, to notice they changed (`config::watch`).
    stamps: Stamps,
}

/// `<config_dir>/domains/<domain>`.
pub fn domain_dir(config_dir: &Path, domain: &Domain) -> PathBuf {
    config_dir.join("domains").join(domain.as_str())
}

impl Domains {
    /// Loads every folder under `<config_dir>/domains`. A folder whose name is not a valid,
    /// normalised domain (lower-case, Unicode form) is an error naming it.
    pub fn load(config_dir: &Path, norm: Normalization) -> Result<Domains, ConfigError> {
        Domains::load_watched(config_dir, norm).map_err(|(e, _)| e)
    }

    /// `load`; a failure comes with the stamps of the files read up to it, so that a
    /// watcher tries again once one of them changes.
    pub fn load_watched(
        config_dir: &Path,
        norm: Normalization,
    ) -> Result<Domains, (ConfigError, Stamps)> {
        let (domains, mut problems) = Domains::load_all(config_dir, norm);
        match problems.is_empty() {
            true => Ok(domains),
            false => Err((problems.swap_remove(0), domains.stamps)),
        }
    }

    /// [`Domains::load`] that goes on past a problem: the domains that loaded, and every
    /// problem of every file (a bad aliases line, a bad key file, ...), each naming the file
    /// and, where there is one, the line (`util check`).
    pub fn load_all(config_dir: &Path, norm: Normalization) -> (Domains, Vec<ConfigError>) {
        let mut stamps = Stamps::default();
        let mut problems = Vec::new();
        let map = load_map(&config_dir.join("domains"), &mut stamps, &mut problems);
        (Domains { map, norm, stamps }, problems)
    }

    /// The stamps of the files this was loaded from.
    pub fn stamps(&self) -> &Stamps {
        &self.stamps
    }

    pub fn get(&self, domain: &Domain) -> Option<&DomainData> {
        self.map.get(domain)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Domain, &DomainData)> {
        self.map.iter()
    }

    /// No domain folder at all: nothing would be accepted on port 25.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn normalization(&self) -> &Normalization {
        &self.norm
    }

    /// SPEC §6 resolution of one address through users and aliases.
    pub fn resolve(&self, addr: &Address) -> Resolution {
        crate::aliases::resolve(self, &self.norm, addr)
    }

    /// The canonical `user@domain` a login name refers to, if it is a user of a local domain
    /// (lower-cased, drop characters and suffix removed, as stored).
    pub fn canonical_user(&self, login: &str) -> Option<Address> {
        self.user_of(&Address::parse(login).ok()?)
    }

    /// The canonical `user@domain` whose own address `addr` is (in any case, with drop
    /// characters and a suffix), aliases left aside.
    pub fn user_of(&self, addr: &Address) -> Option<Address> {
        let data = self.map.get(addr.domain())?;
        let local = addr
            .local()
            .normalize(&self.norm.drop_characters, &self.norm.suffix_separators);
        data.users
            .contains(local.as_str())
            .then(|| Address::new(local, addr.domain().clone()))
    }
}

/// Every domain folder under `root`, each file stamped just before it is read: the folder
/// itself (a domain added or removed), then per domain its users, aliases and folder (a
/// DKIM key added). A domain with a problem is left out; the problem is added to `problems`.
fn load_map(
    root: &Path,
    stamps: &mut Stamps,
    problems: &mut Vec<ConfigError>,
) -> BTreeMap<Domain, DomainData> {
    let mut map = BTreeMap::new();
    stamps.record(root);
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return map,
        Err(e) => {
            problems.push(ConfigError(format!("{}: {e}", root.display())));
            return map;
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => paths.push(entry.path()),
            Err(e) => problems.push(ConfigError(format!("{}: {e}", root.display()))),
        }
    }
    // Sorted: the same problem comes first on every run.
    paths.sort();
    for path in paths {
        if !path.is_dir() {
            continue;
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let domain = match folder_domain(&path, &name) {
            Ok(domain) => domain,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        stamps.record(&path.join("users"));
        stamps.record(&path.join("aliases"));
        stamps.record(&path);
        let before = problems.len();
        let data = load_domain(&path, &domain, problems);
        if problems.len() == before {
            map.insert(domain, data);
        }
    }
    map
}

fn folder_domain(path: &Path, name: &str) -> Result<Domain, ConfigError> {
    let domain = Domain::parse(name)
        .map_err(|e| ConfigError(format!("{}: not a domain name: {e}", path.display())))?;
    if domain.as_str() != name {
        return Err(ConfigError(format!(
            "{}: domain folders must be named in lower-case Unicode form: rename it to {:?}",
            path.display(),
            domain.as_str()
        )));
    }
    Ok(domain)
}

/// One domain's files; every problem found is added to `problems` (then the data is not used).
fn load_domain(dir: &Path, domain: &Domain, problems: &mut Vec<ConfigError>) -> DomainData {
    let users = UserDb::load(&dir.join("users")).unwrap_or_else(|e| {
        problems.push(ConfigError(e.to_string()));
        UserDb::default()
    });
    let aliases_path = dir.join("aliases");
    let aliases = match std::fs::read_to_string(&aliases_path) {
        Ok(text) => {
            let (aliases, bad) = AliasFile::parse_all(&aliases_path, &text, domain);
            problems.extend(bad.into_iter().map(|e| ConfigError(e.to_string())));
            aliases
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => AliasFile::default(),
        Err(e) => {
            problems.push(ConfigError(format!("{}: {e}", aliases_path.display())));
            AliasFile::default()
        }
    };
    let (keys, bad) = dkim::load_keys_all(dir, domain.as_str());
    problems.extend(bad.into_iter().map(|e| ConfigError(e.to_string())));
    DomainData {
        dir: dir.to_path_buf(),
        users,
        aliases,
        dkim: keys.into(),
    }
}

impl Directory for Domains {
    fn is_local_domain(&self, domain: &Domain) -> bool {
        self.map.contains_key(domain)
    }
    fn user_exists(&self, domain: &Domain, local: &str) -> bool {
        self.map
            .get(domain)
            .is_some_and(|d| d.users.contains(local))
    }
    fn aliases(&self, domain: &Domain) -> Option<&AliasFile> {
        self.map.get(domain).map(|d| &d.aliases)
    }
    fn first_user(&self, domain: &Domain) -> Option<String> {
        self.map.get(domain)?.users.names().into_iter().next()
    }
}
