//! SRS addresses (`mailauth::srs::Srs`): the local part of a bounce that comes back to us
//! (`reverse`, `is_srs`), and the forward/reverse round trip for any valid envelope sender.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tambo::addr::Address;
use tambo::mailauth::srs::Srs;

/// A fixed day, so that timestamps in the seeds stay valid.
const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let srs = Srs::new(b"secret");
    let local = text.split('@').next().unwrap_or(text);
    let looks_srs = Srs::is_srs(local);
    if srs.reverse(text, NOW).is_ok() {
        assert!(looks_srs, "reversed a non-SRS address {text:?}");
    }
    // What tambo forwards is a parsed envelope sender: its SRS form must come back.
    if Address::parse(text).is_ok() {
        let forwarded = srs.forward(text, "fwd.example", NOW);
        if forwarded != text {
            let back = srs.reverse(&forwarded, NOW);
            assert!(back.is_ok(), "{text:?} -> {forwarded:?} -> {back:?}");
        }
    }
});
