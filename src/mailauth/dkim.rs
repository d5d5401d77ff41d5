//! DKIM keys of the local domains (`domains/<domain>/dkim:<selector>.pem`, PKCS#8 PEM, RSA
//! or Ed25519) and signing through mail-auth (RFC 6376).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("{path}: {msg}")]
    Key { path: PathBuf, msg: String },
    #[error("signing: {0}")]
    Sign(String),
}

/// One loaded key.
pub struct DkimKey {
    pub domain: String,
    pub selector: String,
}

/// Every key of one domain's folder, sorted by selector.
pub fn load_keys(domain_dir: &Path, domain: &str) -> Result<Vec<DkimKey>, DkimError> {
    todo!("{domain_dir:?}{domain}")
}

/// The `DKIM-Signature:` header lines (CRLF-terminated) for `message` (headers + body, CRLF),
/// one per key.
pub fn sign(keys: &[DkimKey], message: &[u8]) -> Result<String, DkimError> {
    todo!("{}{}", keys.len(), message.len())
}
