//! PROXY protocol header (`net::proxy::parse`, v1 and v2): the first bytes of an MX
//! connection when `haproxy_incoming` is on, from whoever can reach the port.
//!
//! The driver calls `parse` on what it has read so far and stops at the first answer that
//! is not `NeedMore`. Checks: that first answer comes on the byte that completes (or breaks)
//! the header, a `Done` header is exactly that long, the whole buffer gives the same answer,
//! and `NeedMore` never asks us to buffer more than the protocol's bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::mem::discriminant;
use tambo::net::proxy::{self, ProxyStatus, V1_MAX_LEN, V2_MAX_LEN};

fuzz_target!(|buf: &[u8]| {
    let bound = V1_MAX_LEN.max(V2_MAX_LEN);
    // The answer the driver acts on, reading one byte at a time.
    let mut first = None;
    for k in 0..=buf.len().min(bound + 1) {
        let status = proxy::parse(&buf[..k]);
        if status == ProxyStatus::NeedMore {
            assert!(k <= bound, "NeedMore after {k} bytes");
            continue;
        }
        if let ProxyStatus::Done { header_len, .. } = status {
            assert_eq!(header_len, k, "Done only once the header is complete");
        }
        first = Some(status);
        break;
    }
    let whole = proxy::parse(buf);
    match first {
        None => assert_eq!(whole, ProxyStatus::NeedMore),
        Some(ProxyStatus::Done { .. }) => assert_eq!(Some(whole), first),
        // The reason may differ: more bytes can show another fault first.
        Some(invalid) => assert_eq!(discriminant(&whole), discriminant(&invalid), "{whole:?}"),
    }
});
