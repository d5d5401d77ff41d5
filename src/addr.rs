//! Address newtypes: `Domain`, `LocalPart`, `Address`.
//!
//! Parse, don't validate: a value of these types is always usable as a path component
//! (no `/`, `\`, NUL, control characters, never `.` or `..`), so a name from the network
//! or the command line cannot escape `domains/` or `data_dir/mail/` by construction.
//! (SPEC §11.)

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("empty address")]
    Empty,
    #[error("address has no domain (expected user@domain)")]
    NoDomain,
    #[error("invalid domain {0:?}: {1}")]
    BadDomain(String, &'static str),
    #[error("invalid local part {0:?}: {1}")]
    BadLocalPart(String, &'static str),
}

/// A domain name, stored in its Unicode, lower-case form (the folder name under `domains/`).
/// Built from either the Unicode or the ACE (`xn--`) form, any case (UTS 46 mapping).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(String);

impl Domain {
    pub fn parse(s: &str) -> Result<Domain, AddrError> {
        todo!("{s}")
    }
    /// Unicode lower-case form (folder names, lookups, logs).
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// ACE form (`xn--...`), for DNS and for peers without SMTPUTF8.
    pub fn to_ascii(&self) -> String {
        todo!()
    }
}

/// A local part (the part before `@`), as given (case preserved). UTF-8 allowed (SMTPUTF8).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalPart(String);

impl LocalPart {
    pub fn parse(s: &str) -> Result<LocalPart, AddrError> {
        todo!("{s}")
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Lower-case only (the "exact" lookup key).
    pub fn lowercase(&self) -> LocalPart {
        todo!()
    }
    /// Lower-case, everything from the first suffix separator on removed, drop characters removed.
    /// (SPEC §3 `suffix_separators`, `drop_characters`; chasquid's normalisation.)
    pub fn normalize(&self, drop_characters: &str, suffix_separators: &str) -> LocalPart {
        todo!("{drop_characters}{suffix_separators}")
    }
}

/// `local@domain`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    local: LocalPart,
    domain: Domain,
}

impl Address {
    pub fn new(local: LocalPart, domain: Domain) -> Address {
        Address { local, domain }
    }
    /// Parses `local@domain` (splits at the last `@`).
    pub fn parse(s: &str) -> Result<Address, AddrError> {
        todo!("{s}")
    }
    pub fn local(&self) -> &LocalPart {
        &self.local
    }
    pub fn domain(&self) -> &Domain {
        &self.domain
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for LocalPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}
