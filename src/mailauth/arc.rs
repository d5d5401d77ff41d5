//! ARC sealing of forwarded mail (RFC 8617, SPEC §8).
