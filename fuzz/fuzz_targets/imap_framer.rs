//! IMAP command framing (`imapd::framer`): any bytes a client sends, in any pieces. Memory
//! stays within the limits, every command handed out is whole, and a spooled literal is
//! handed out in pieces whose lengths add up to what was announced.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tambo::imapd::framer::{Event, Framer, Limits};

fuzz_target!(|input: (&[u8], u8)| {
    let (bytes, step) = input;
    let limits = Limits {
        command: 1024,
        spooled: 1 << 20,
    };
    let mut framer = Framer::new(limits);
    let mut spooling: Option<u64> = None;
    for piece in bytes.chunks(usize::from(step.max(1))) {
        framer.feed(piece);
        while let Some(event) = framer.next_event() {
            match event {
                Event::Command { bytes, spooled } => {
                    assert!(bytes.len() <= limits.command + 8, "command over the limit");
                    assert!(bytes.ends_with(b"\n"), "a command ends with its line end");
                    if let Some(left) = spooling.take() {
                        assert_eq!(left, 0, "spooled literal cut short");
                        assert!(spooled.is_some());
                    }
                }
                Event::SpoolStart { len } => spooling = Some(len),
                Event::SpoolChunk(chunk) => {
                    let left = spooling.as_mut().expect("chunk without a start");
                    *left = left.checked_sub(chunk.len() as u64).expect("more than announced");
                }
                Event::Continue | Event::TooLong { .. } => {}
            }
        }
        assert!(framer.buffered() <= bytes.len());
    }
});
