//! Helpers shared by the fuzz targets.
//!
//! Stream parsers must behave the same whatever the TCP segmentation, so the targets that
//! read a stream take their input as a split plan followed by the stream:
//!
//! ```text
//! byte 0        n = byte 0 % 16: how many chunk lengths follow
//! bytes 1..=n   chunk lengths, used in turn (0 feeds an empty slice)
//! the rest      the stream
//! ```
//!
//! A seed that starts with `\0` is fed in one piece.

/// Cuts `data` into (split plan, stream) as described in the crate doc.
pub fn split_plan(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return (&[], &[]);
    };
    let n = usize::from(first % 16).min(rest.len());
    rest.split_at(n)
}

/// The stream cut into chunks by the plan's lengths, cycling through them; whatever is left
/// once the stream is shorter than the next length is the last chunk.
pub fn chunks<'a>(plan: &[u8], stream: &'a [u8]) -> Vec<&'a [u8]> {
    if plan.is_empty() {
        return vec![stream];
    }
    let mut out = Vec::new();
    let mut rest = stream;
    for &len in plan.iter().cycle() {
        let len = usize::from(len).min(rest.len());
        let (chunk, tail) = rest.split_at(len);
        out.push(chunk);
        rest = tail;
        if rest.is_empty() {
            break;
        }
        // A plan of zeros alone would never advance: finish with the rest.
        if out.len() > stream.len() + plan.len() {
            out.push(rest);
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_stream_in_order() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b"abcdef"),
            (b"\x01", b"abcdef"),
            (b"\x02\x03", b"abcdefg"),
            (b"\x00", b"abc"),
            (b"\x00\x00", b"abc"),
            (b"\x09", b""),
        ];
        for (plan, stream) in cases {
            let got = chunks(plan, stream);
            assert_eq!(got.concat(), *stream, "plan {plan:?}");
        }
    }

    #[test]
    fn split_plan_reads_the_count() {
        assert_eq!(split_plan(b"\x02abXY"), (&b"ab"[..], &b"XY"[..]));
        assert_eq!(split_plan(b"\x12abXY"), (&b"ab"[..], &b"XY"[..]));
        assert_eq!(split_plan(b"\x05ab"), (&b"ab"[..], &b""[..]));
        assert_eq!(split_plan(b""), (&b""[..], &b""[..]));
    }
}
