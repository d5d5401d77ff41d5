//! Per-domain TLS knowledge (SPEC §8, as chasquid's domaininfo): the best outgoing security
//! level seen for each recipient domain, kept under `data_dir/domaininfo/`, never lowered by a
//! later delivery; a delivery below it is refused (deferred).

use std::io;
use std::path::Path;

/// Ordered: `Plain < Insecure < Verified`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsLevel {
    /// No TLS.
    Plain,
    /// TLS, but the certificate did not verify for the host name.
    Insecure,
    /// TLS with a certificate valid for the MX host name.
    Verified,
}

pub struct DomainInfo {}

impl DomainInfo {
    pub fn open(data_dir: &Path) -> io::Result<DomainInfo> {
        todo!("{data_dir:?}")
    }
    /// The best level seen for `domain` (ACE form); `Plain` when unknown.
    pub fn level(&self, domain: &str) -> TlsLevel {
        todo!("{domain}")
    }
    /// Records a successful delivery at `level`; stored only when it raises the known level.
    pub fn record(&self, domain: &str, level: TlsLevel) -> io::Result<()> {
        todo!("{domain}{level:?}")
    }
    /// Forgets a domain (`util domaininfo-remove`). Ok(false) when nothing was known.
    pub fn remove(&self, domain: &str) -> io::Result<bool> {
        todo!("{domain}")
    }
}
