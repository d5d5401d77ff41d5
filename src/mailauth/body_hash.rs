//! DKIM and ARC body hashes (RFC 6376 §3.7, RFC 8617 §4.1.2) of a body read in chunks, so a
//! message is never held whole to be verified or signed. mail-auth computes them from a slice
//! when it parses a message; here the message is parsed from its header section alone and
//! the hashes it asks for are filled in from the stream, all in one pass over the body, with
//! mail-auth's own incremental canonicalizer (so the results are the same as its own).

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

    proptest! {
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
