//! Message authentication (not user login): SRS envelope rewriting and DKIM signing.
//!
//! - [`srs`]: Sender Rewriting Scheme, compatible with libsrs2 / postsrsd.
//! - [`dkim`]: DKIM keys of the local domains and signing through mail-auth.

pub mod dkim;
pub mod srs;
