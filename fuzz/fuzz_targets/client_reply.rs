//! SMTP client reply parser (`proto::client::ReplyParser`): what a remote server sends us,
//! in fuzzer-chosen segments. The replies and the error must not depend on the segmentation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tambo::proto::client::ReplyParser;
use tambo_fuzz::{chunks, split_plan};

/// Feeds each piece and drains replies after it, as the delivery client does; stops at the
/// first error. Returns the replies and the error, as text.
fn parse(pieces: &[&[u8]]) -> Vec<String> {
    let mut parser = ReplyParser::new();
    let mut seen = Vec::new();
    for piece in pieces {
        parser.feed(piece);
        loop {
            match parser.next_reply() {
                Ok(Some(reply)) => {
                    assert!((200..600).contains(&reply.code), "{reply:?}");
                    seen.push(format!("{reply:?}"));
                }
                Ok(None) => break,
                Err(e) => {
                    // Sticky: the same error again.
                    assert_eq!(parser.next_reply(), Err(e.clone()));
                    seen.push(format!("error {e:?}"));
                    return seen;
                }
            }
        }
    }
    seen
}

fuzz_target!(|data: &[u8]| {
    let (plan, stream) = split_plan(data);
    let split = parse(&chunks(plan, stream));
    let whole = parse(&[stream]);
    assert_eq!(split, whole, "replies depend on the segmentation");
});
