//! DKIM and ARC body hashes (RFC 6376 §3.7, RFC 8617 §4.1.2) of a body read in chunks, so a
//! message is never held whole to be verified or signed. mail-auth computes them from a slice
//! when it parses a message; here the message is parsed from its header section alone and
//! the hashes it asks for are filled in from the stream, all in one pass over the body, with
//! mail-auth's own incremental canonicalizer (so the results are the same as its own).
//! Relaxed body canonicalization and `l=` are those of the patched copy in vendor/mail-auth
//! (RFC 6376 §3.4.4, §3.5); the tests below hold them to dkimpy's hashes.

use crate::message;
use mail_auth::AuthenticatedMessage;
use mail_auth::common::crypto::{HashAlgorithm, HashContext, HashImpl, Sha1, Sha256};
use mail_auth::dkim::Canonicalization;
use mail_auth::dkim::canonicalize::BodyHasher;
use std::io::{self, Read};

/// One body hash to compute: canonicalization, hash, and the `l=` length (0: the whole body).
pub type Request = (Canonicalization, HashAlgorithm, u64);

/// One hasher per request, fed together.
enum Hasher {
    Sha1(BodyHasher<<Sha1 as HashImpl>::Context>),
    Sha256(BodyHasher<<Sha256 as HashImpl>::Context>),
}

impl Hasher {
    fn new((canonicalization, algorithm, length): Request) -> Hasher {
        match algorithm {
            HashAlgorithm::Sha1 => Hasher::Sha1(BodyHasher::new(
                <Sha1 as HashImpl>::hasher(),
                canonicalization,
                length,
            )),
            HashAlgorithm::Sha256 => Hasher::Sha256(BodyHasher::new(
                <Sha256 as HashImpl>::hasher(),
                canonicalization,
                length,
            )),
        }
    }

    fn write(&mut self, chunk: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.write(chunk),
            Hasher::Sha256(h) => h.write(chunk),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha1(h) => h.finish().0.complete().as_ref().to_vec(),
            Hasher::Sha256(h) => h.finish().0.complete().as_ref().to_vec(),
        }
    }
}

/// The body hashes of `body` for each request, in order, in one pass over it.
pub fn compute(requests: &[Request], body: impl Read) -> io::Result<Vec<Vec<u8>>> {
    let mut hashers: Vec<Hasher> = requests.iter().copied().map(Hasher::new).collect();
    if !hashers.is_empty() {
        message::for_each_chunk(body, |chunk| {
            for hasher in &mut hashers {
                hasher.write(chunk);
            }
        })?;
    }
    Ok(hashers.into_iter().map(Hasher::finish).collect())
}

/// The body hashes that `parsed` needs for its DKIM signatures and ARC message signatures.
/// Parsed from a header section alone, it holds those of an empty body until [`set`].
pub fn requests(parsed: &AuthenticatedMessage<'_>) -> Vec<Request> {
    parsed
        .body_hashes
        .iter()
        .map(|(c, h, l, _)| (*c, *h, *l))
        .collect()
}

/// Puts the hashes computed for [`requests`] (in its order) into `parsed`.
pub fn set(parsed: &mut AuthenticatedMessage<'_>, hashes: Vec<Vec<u8>>) {
    for (slot, hash) in parsed.body_hashes.iter_mut().zip(hashes) {
        slot.3 = hash;
    }
}

/// [`requests`], computed over `body` and [`set`], plus the `extra` hashes the caller wants
/// (returned in order), in the same pass.
pub fn fill(
    parsed: &mut AuthenticatedMessage<'_>,
    extra: &[Request],
    body: impl Read,
) -> io::Result<Vec<Vec<u8>>> {
    let mut requests = requests(parsed);
    let own = requests.len();
    requests.extend_from_slice(extra);
    let mut hashes = compute(&requests, body)?;
    let extra_hashes = hashes.split_off(own);
    set(parsed, hashes);
    Ok(extra_hashes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn whole(request: Request, body: &[u8]) -> Vec<u8> {
        let (c, h, l) = request;
        h.hash(c.canonical_body(body, l)).as_ref().to_vec()
    }

    /// Reads in pieces of at most `step` octets.
    struct Pieces<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    const REQUESTS: [Request; 5] = [
        (Canonicalization::Simple, HashAlgorithm::Sha256, 0),
        (Canonicalization::Relaxed, HashAlgorithm::Sha256, 0),
        (Canonicalization::Simple, HashAlgorithm::Sha1, 0),
        (Canonicalization::Relaxed, HashAlgorithm::Sha1, 0),
        (Canonicalization::Simple, HashAlgorithm::Sha256, 10),
    ];

    fn b64(hash: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(hash)
    }

    /// SHA-256 body hashes computed by dkimpy (python3-dkim, `dkim.canonicalization`;
    /// `l=` cuts its canonicalized body), relaxed then simple.
    const DKIMPY: [(&str, &[u8], u64, &str, &str); 16] = [
        // Ends in whitespace-only lines: relaxed is `Hello CRLF`.
        (
            "whitespace lines at the end",
            b"Hello\r\n  \r\n\t\r\n",
            0,
            "Ba3gj8+xBPQLJTahTfzW6RbWQ/XPgESxkCi2B66PSQg=",
            "/dyTBlYzZuocDobV8pZ/g+Ox8Q1042x9tMv8VBzO7G4=",
        ),
        (
            "whitespace and empty lines at the end",
            b"Hello \r\n \r\n\r\n\t \r\n\r\n",
            0,
            "Ba3gj8+xBPQLJTahTfzW6RbWQ/XPgESxkCi2B66PSQg=",
            "XpQiiNx7Qjp3SbeV+JJhVoGcaLaXRKV7crgHJc7fGtw=",
        ),
        // Only whitespace lines: relaxed is the empty body.
        (
            "whitespace lines only",
            b"  \r\n\t\r\n \t \r\n",
            0,
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
            "rxId1whQoTU0UyqAGYSVWpUlHdAIBELWjA/7GFY4zCI=",
        ),
        // Empty: relaxed hashes nothing, simple one CRLF.
        (
            "empty",
            b"",
            0,
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
            "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=",
        ),
        (
            "empty lines only",
            b"\r\n\r\n",
            0,
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
            "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=",
        ),
        // No final CRLF: one is added.
        (
            "no final CRLF",
            b"Hello world",
            0,
            "yGIXoM91E1DiKjvCBcC8NlWyw54TdfMQ08sdtwtOO4I=",
            "yGIXoM91E1DiKjvCBcC8NlWyw54TdfMQ08sdtwtOO4I=",
        ),
        (
            "no final CRLF after an empty line",
            b"a\r\n\r\nb",
            0,
            "zCIZgM59A4jZIcXrGIzhpoD2WhSv0BLiYnkKxFCegn8=",
            "zCIZgM59A4jZIcXrGIzhpoD2WhSv0BLiYnkKxFCegn8=",
        ),
        // WSP runs become one SP, WSP at a line's end goes, inner empty lines stay.
        (
            "WSP runs",
            b"a  \t b\t\r\n \t c \r\n\r\n  \r\nd\r\n",
            0,
            "Uty7rYGQvMy/MsTrQ3hQD+TH8fluxqUm0X+CXF1IxGI=",
            "5Dmda/7etRchacIMFrK7bAWoEDe4EVG6xNtHpMf5oFQ=",
        ),
        (
            "whitespace line inside",
            b"a\r\n \t\r\nb\r\n",
            0,
            "zCIZgM59A4jZIcXrGIzhpoD2WhSv0BLiYnkKxFCegn8=",
            "VSPNptekYh6ANgr4hAJ+4zSAgIVE7XqKPPm9Oy1R2LA=",
        ),
        // l= counts octets of the canonicalized body, cutting anywhere (even inside CRLF).
        (
            "l=5",
            b"Hello  world \r\n  \r\nmore\r\n\r\n",
            5,
            "GF+NsyJx/iX1Yab8k4suJkMG7DBO2lGAB9F2SCY4GWk=",
            "GF+NsyJx/iX1Yab8k4suJkMG7DBO2lGAB9F2SCY4GWk=",
        ),
        (
            "l=12",
            b"Hello  world \r\n  \r\nmore\r\n\r\n",
            12,
            "iBEjE/JaBGDnJdFS8OBoK8PwTVIF5lLgfhXANwO7y38=",
            "2IVwYalD6PRSG7Jgj1Hg7ofX71SEsvVrqDhfZuYbhHQ=",
        ),
        (
            "l=13",
            b"Hello  world \r\n  \r\nmore\r\n\r\n",
            13,
            "yGIXoM91E1DiKjvCBcC8NlWyw54TdfMQ08sdtwtOO4I=",
            "F8tGqexVoAxkEkvDKrFOgsjjdnZZwCNNDj9eqn+79I4=",
        ),
        (
            "l=14",
            b"Hello  world \r\n  \r\nmore\r\n\r\n",
            14,
            "5SRPudTdSUFppG5CD/qggxOKag7clDH8MZZVEphtYYY=",
            "CNDeYN7emNYf0Ck0GhB3LDHAHyszayKQk7BC3i5UshA=",
        ),
        (
            "l=20",
            b"Hello  world \r\n  \r\nmore\r\n\r\n",
            20,
            "bKTkZGuT++7UWIEWnWEEGer3VBymaZM1eyrtbDzdBAg=",
            "1Ix0BgahjDpQ/lzsxE2BwXOzsaFrWrn6XKz7gFPbAus=",
        ),
        // l= beyond the canonical body: all of it.
        (
            "l=1000",
            b"Hello  world \r\n  \r\nmore\r\n\r\n",
            1000,
            "otKepnpRpjn4TaZN9EO6yUUnox/NG5zLJBadnPQthaE=",
            "Rh2fagnKGXNWpgxELgRUCh7SnMI9BLBNcfi+s33qtnI=",
        ),
        (
            "no l=",
            b"Hello  world \r\n  \r\nmore\r\n\r\n",
            0,
            "otKepnpRpjn4TaZN9EO6yUUnox/NG5zLJBadnPQthaE=",
            "Rh2fagnKGXNWpgxELgRUCh7SnMI9BLBNcfi+s33qtnI=",
        ),
    ];

    #[test]
    fn hashes_match_dkimpy() {
        for (name, body, l, relaxed, simple) in DKIMPY {
            for (c, want) in [
                (Canonicalization::Relaxed, relaxed),
                (Canonicalization::Simple, simple),
            ] {
                let request = (c, HashAlgorithm::Sha256, l);
                assert_eq!(b64(&whole(request, body)), want, "{name} {c:?} whole");
                for step in [1, 2, 3, 7, 4096] {
                    let got = compute(&[request], Pieces { data: body, step }).unwrap();
                    assert_eq!(b64(&got[0]), want, "{name} {c:?} in pieces of {step}");
                }
            }
        }
    }

    /// RFC 6376 §3.4.3 and §3.4.4 read line by line, as a model. Lines end at LF; CR is
    /// dropped, as mail-auth does (a spooled body has CRLF line ends only).
    fn model(c: Canonicalization, body: &[u8], l: u64) -> Vec<u8> {
        let body: Vec<u8> = body.iter().copied().filter(|&b| b != b'\r').collect();
        let mut lines: Vec<Vec<u8>> = body.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
        // The text after the last LF is a line only if it is not empty.
        if lines.last().is_some_and(Vec::is_empty) {
            lines.pop();
        }
        if c == Canonicalization::Relaxed {
            for line in &mut lines {
                let mut out = Vec::new();
                let mut wsp = false;
                for &b in line.iter() {
                    if b == b' ' || b == b'\t' {
                        wsp = true;
                    } else {
                        if wsp {
                            out.push(b' ');
                        }
                        wsp = false;
                        out.push(b);
                    }
                }
                *line = out;
            }
        }
        while lines.last().is_some_and(Vec::is_empty) {
            lines.pop();
        }
        let mut out: Vec<u8> = lines
            .iter()
            .flat_map(|line| [&line[..], b"\r\n"].concat())
            .collect();
        if out.is_empty() && c == Canonicalization::Simple {
            out.extend_from_slice(b"\r\n");
        }
        if l > 0 {
            out.truncate(usize::try_from(l).unwrap_or(usize::MAX));
        }
        out
    }

    proptest! {
        /// Whole or streamed, with or without `l=`, the hashes are those of the model.
        #[test]
        fn hashes_follow_the_rfc_model(
            body in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b' '), Just(b'\t'), Just(b'a'),
                            Just(b'\x0b')],
                0..200,
            ),
            step in 1usize..40,
            l in prop_oneof![Just(0u64), 1u64..250],
        ) {
            for c in [Canonicalization::Relaxed, Canonicalization::Simple] {
                let request = (c, HashAlgorithm::Sha256, l);
                let want = HashAlgorithm::Sha256.hash(&model(c, &body, l)[..]).as_ref().to_vec();
                prop_assert_eq!(&whole(request, &body), &want, "{:?} whole", c);
                let got = compute(&[request], Pieces { data: &body, step }).unwrap();
                prop_assert_eq!(&got[0], &want, "{:?} streamed", c);
            }
        }

        /// Streamed in any pieces, the hashes are mail-auth's own over the whole slice.
        #[test]
        fn streamed_equals_whole(
            body in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b' '), Just(b'\t'), Just(b'a')],
                0..300,
            ),
            step in 1usize..40,
        ) {
            let got = compute(&REQUESTS, Pieces { data: &body, step }).unwrap();
            for (request, hash) in REQUESTS.iter().zip(got) {
                prop_assert_eq!(hash, whole(*request, &body));
            }
        }
    }

    #[test]
    fn fill_sets_the_signatures_hashes_and_returns_the_extra_ones() {
        let header = b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org; s=s;\r\n h=from; bh=AAAA; b=AAAA\r\nFrom: a@example.org\r\n\r\n";
        let body = b"Hello  \r\nworld\r\n\r\n";
        let mut parsed = AuthenticatedMessage::parse(header).unwrap();
        assert_eq!(parsed.body_hashes.len(), 1);
        let extra = (Canonicalization::Simple, HashAlgorithm::Sha256, 0);
        let got = fill(&mut parsed, &[extra], &body[..]).unwrap();
        assert_eq!(got, vec![whole(extra, body)]);
        let relaxed = (Canonicalization::Relaxed, HashAlgorithm::Sha256, 0);
        assert_eq!(parsed.body_hashes[0].3, whole(relaxed, body));
    }
}
