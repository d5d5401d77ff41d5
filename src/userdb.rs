//! Per-domain users file `domains/<domain>/users` (SPEC §5): JSON object from normalised
//! local part to a PHC hash (`$scrypt$...`, `$argon2id$...`) or `"!"` (receive-only).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum UserDbError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {msg}")]
    Parse { path: PathBuf, line: usize, msg: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A PHC string: `$scrypt$...` or `$argon2id$...`.
    Hash(String),
    /// `"!"`: has a mailbox, cannot log in.
    ReceiveOnly,
}

#[derive(Debug, Clone, Default)]
pub struct UserDb {
    path: PathBuf,
}

impl UserDb {
    /// Loads the file; a missing file is an empty database.
    pub fn load(path: &Path) -> Result<UserDb, UserDbError> {
        todo!("{path:?}")
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// `local` is a normalised local part (lower-case, drop characters and suffix removed).
    pub fn contains(&self, local: &str) -> bool {
        todo!("{local}")
    }
    /// User names in file order (sorted).
    pub fn names(&self) -> Vec<String> {
        todo!()
    }
    /// Verifies a password; false for unknown users, receive-only users and malformed hashes.
    /// Slow by design (scrypt): call it off the executor.
    pub fn check_password(&self, local: &str, password: &str) -> bool {
        todo!("{local}{password}")
    }
    pub fn set(&mut self, local: &str, credential: Credential) {
        todo!("{local}{credential:?}")
    }
    /// Returns false when there was no such user.
    pub fn remove(&mut self, local: &str) -> bool {
        todo!("{local}")
    }
    /// Writes the file atomically, one user a line, sorted, so `git diff` shows one line per change.
    pub fn save(&self) -> std::io::Result<()> {
        todo!()
    }
}

/// A new scrypt PHC hash of `password` with a random salt.
pub fn hash_password(password: &str) -> String {
    todo!("{password}")
}

/// Why a password is too weak for a new user, or Ok.
pub fn check_strength(password: &str, user: &str) -> Result<(), &'static str> {
    todo!("{password}{user}")
}
