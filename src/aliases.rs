//! The aliases file `domains/<domain>/aliases` in chasquid's syntax (SPEC §6), and recursive
//! resolution of a recipient through users, aliases and catch-alls.

use crate::addr::{Address, Domain};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum AliasError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {msg}")]
    Parse { path: PathBuf, line: usize, msg: String },
}

/// One parsed aliases file.
#[derive(Debug, Clone, Default)]
pub struct AliasFile {}

impl AliasFile {
    /// Loads and parses; a missing file is an empty alias set.
    pub fn load(path: &Path, domain: &Domain) -> Result<AliasFile, AliasError> {
        todo!("{path:?}{domain}")
    }
    pub fn parse(path: &Path, text: &str, domain: &Domain) -> Result<AliasFile, AliasError> {
        todo!("{path:?}{text}{domain}")
    }
}

/// What resolution needs to know about the local domains.
pub trait Directory {
    fn is_local_domain(&self, domain: &Domain) -> bool;
    /// `local` is normalised (lower-case, drop characters and suffix removed).
    fn user_exists(&self, domain: &Domain, local: &str) -> bool;
    fn aliases(&self, domain: &Domain) -> Option<&AliasFile>;
    /// The first user of the domain (postmaster fallback).
    fn first_user(&self, domain: &Domain) -> Option<String>;
}

/// Normalisation settings (SPEC §3).
#[derive(Debug, Clone)]
pub struct Normalization {
    pub drop_characters: String,
    pub suffix_separators: String,
}

/// A final recipient.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Recipient {
    /// A local user's mailbox: `user@domain` with the user name as in the users file.
    Mailbox { address: String },
    /// An outside address (or one with `via` hosts).
    Forward { address: String, via: Vec<String> },
    /// `| command args`: argv, no shell; `alias` is the alias that named it.
    Pipe { argv: Vec<String>, alias: String },
}

/// The result of resolving one address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Deduplicated, in order of first appearance.
    pub recipients: Vec<Recipient>,
    /// Branches cut off (loops, too deep, targets that do not exist), for the log.
    pub problems: Vec<String>,
}

/// Resolves `addr` (SPEC §6 lookup order). Empty `recipients` means: refuse at RCPT.
/// A non-local `addr` resolves to itself as a `Forward`.
pub fn resolve(dir: &dyn Directory, norm: &Normalization, addr: &Address) -> Resolution {
    todo!("{:?}{:?}{addr}", dir.is_local_domain(addr.domain()), norm)
}
