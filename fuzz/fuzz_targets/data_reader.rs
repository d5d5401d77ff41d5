//! DATA reader (`proto::data::DataReader`): the message stream after `354`, in
//! fuzzer-chosen segments (see the split plan in src/lib.rs).
//!
//! Checks: never consumes more than it is given; consumes everything while it needs more;
//! once finished it consumes nothing and repeats its status; the result (status, output,
//! bytes consumed) does not depend on how the stream was split; the output respects the cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tambo::proto::data::{DataReader, DataStatus};
use tambo_fuzz::{chunks, split_plan};

/// Small enough that the fuzzer reaches it, so the cap path is exercised.
const MAX: u64 = 64;

fn feed_all(pieces: &[&[u8]]) -> (usize, DataStatus, Vec<u8>) {
    let mut reader = DataReader::new(MAX);
    let mut out = Vec::new();
    let mut total = 0;
    let mut status = DataStatus::NeedMore;
    for piece in pieces {
        let (n, s) = reader.feed(piece, &mut out);
        assert!(n <= piece.len(), "consumed {n} of {} bytes", piece.len());
        total += n;
        status = s;
        if status != DataStatus::NeedMore {
            assert!(n <= piece.len());
            // Finished: nothing more is consumed, the status stays.
            let before = out.len();
            let (again, s2) = reader.feed(piece, &mut out);
            assert_eq!(again, 0);
            assert_eq!(s2, status);
            assert_eq!(out.len(), before);
            break;
        }
        assert_eq!(n, piece.len(), "NeedMore without consuming everything");
    }
    (total, status, out)
}

fuzz_target!(|data: &[u8]| {
    let (plan, stream) = split_plan(data);
    let split = feed_all(&chunks(plan, stream));
    let whole = feed_all(&[stream]);
    assert_eq!(split, whole, "result depends on the segmentation");
    let (_, status, out) = whole;
    assert!(out.len() as u64 <= MAX);
    if let DataStatus::Done(summary) = status {
        assert!(summary.size >= out.len() as u64);
        assert_eq!(summary.too_big, summary.size > MAX);
        if !summary.too_big {
            assert_eq!(summary.size, out.len() as u64);
        }
    }
});
