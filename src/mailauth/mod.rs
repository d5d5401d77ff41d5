//! Message authentication (not user login): SRS envelope rewriting and DKIM signing.
//!
//! - [`srs`]: Sender Rewriting Scheme, compatible with libsrs2 / postsrsd.
//! - [`inbound`]: SPF, DKIM and DMARC checks of received mail; Authentication-Results.
//! - [`dkim`]: DKIM keys of the local domains and signing through mail-auth.
//! - [`arc`]: ARC sealing of forwarded mail (RFC 8617).
//! - [`body_hash`]: DKIM / ARC body hashes of a body read in chunks.
//! - [`forged_results`]: removes incoming Authentication-Results that claim our name.

pub mod arc;
pub mod body_hash;
pub mod dkim;
pub mod forged_results;
pub mod inbound;
pub mod srs;
