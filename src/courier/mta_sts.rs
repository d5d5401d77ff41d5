//! MTA-STS (RFC 8461): policy discovery (`_mta-sts` TXT), fetch over verified HTTPS, cache
//! under `data_dir/mta-sts/`, and enforcement (which MX hosts may be used, TLS required).

/// A policy in force for a domain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    pub id: String,
    pub mode: Mode,
    /// `mx:` patterns (`mail.example.com`, `*.example.net`).
    pub mx: Vec<String>,
    pub max_age: u64,
    /// When it was fetched (seconds since the epoch).
    pub fetched_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Enforce,
    Testing,
    None,
}

impl Policy {
    /// RFC 8461 §4.1: does `host` match one of the `mx` patterns?
    pub fn mx_allowed(&self, host: &str) -> bool {
        todo!("{host}")
    }
    pub fn enforced(&self) -> bool {
        self.mode == Mode::Enforce
    }
}
