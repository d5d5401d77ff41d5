//! SMTP command line (`proto::command::parse`): any bytes a client sends between CRLFs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tambo::proto::command;

fuzz_target!(|line: &[u8]| {
    match command::parse(line) {
        Ok(_) => {}
        // The error becomes a reply on the wire: it must encode as whole reply lines.
        Err(reply) => {
            let wire = reply.to_bytes();
            assert!(wire.ends_with(b"\r\n"));
            assert!(
                reply.is_error(),
                "parse error with a non-error code: {reply:?}"
            );
        }
    }
});
