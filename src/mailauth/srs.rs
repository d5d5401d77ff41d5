//! SRS (Sender Rewriting Scheme), as libsrs2 and postsrsd compute it:
//! `SRS0=HHHH=TT=orig.domain=orig-user@our.domain` (HMAC-SHA1 hash, base32 day stamp).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SrsError {
    #[error("not an SRS address")]
    NotSrs,
    #[error("malformed SRS address")]
    Malformed,
    #[error("SRS hash does not match")]
    BadHash,
    #[error("SRS address has expired")]
    Expired,
}

pub struct Srs {
    secret: Vec<u8>,
}

impl Srs {
    pub fn new(secret: &[u8]) -> Srs {
        Srs { secret: secret.to_vec() }
    }
    /// Rewrites `sender` (`user@their.domain`) into an SRS address at `our_domain`, for the
    /// day `now_secs` (seconds since the epoch). An SRS0 sender becomes SRS1 (re-forwarding).
    pub fn forward(&self, sender: &str, our_domain: &str, now_secs: u64) -> String {
        todo!("{sender}{our_domain}{now_secs}{}", self.secret.len())
    }
    /// The original address an SRS address stands for, checking hash and age (21 days).
    pub fn reverse(&self, srs_address: &str, now_secs: u64) -> Result<String, SrsError> {
        todo!("{srs_address}{now_secs}")
    }
    /// Whether a local part looks like SRS (`SRS0=` / `SRS1=`, any case).
    pub fn is_srs(local_part: &str) -> bool {
        todo!("{local_part}")
    }
}
