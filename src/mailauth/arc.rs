//! ARC sealing of forwarded mail (RFC 8617, SPEC §8): one ARC set (ARC-Authentication-Results,
//! ARC-Message-Signature, ARC-Seal) that carries the results of our inbound checks, signed with
//! the forwarding domain's DKIM key.
//!
//! The set is written and signed here with mail-auth's primitives (relaxed header
//! canonicalization, body hashing, the key's `sign`), not with its `ArcSealer`:
//!
//! - `ArcSealer` takes an `AuthenticationResults` built from verification outputs, and we have
//!   the Authentication-Results value the SMTP server stored instead (its builder cannot hold
//!   ready-made text, and the unfolded form it hashes would not match a folded header).
//! - mail-auth 0.13.3 can fold before a final `;` (see `dkim.rs`), which dkimpy rejects; our
//!   headers end with the `b=` value and no `;`, as dkimpy's and Google's do.
//! - Its AMS signs listed headers that are absent as empty, so a DKIM-Signature added further
//!   down the path would break it; we list only headers that are present.
//! - Canonicalization is `relaxed/relaxed`, as for DKIM (`dkim.rs`; the relaxed body hash is
//!   that of the patched mail-auth in vendor/mail-auth).
//!
//! The existing chain is verified by mail-auth (`verify_arc`) to choose `cv=`.

use crate::dns::Dns;
use crate::mailauth::body_hash;
use crate::mailauth::dkim::{DkimError, DkimKey, KeyKind};
use async_compat::Compat;
use base64::Engine as _;
use mail_auth::common::crypto::{Algorithm, HashAlgorithm, SigningKey as _};
use mail_auth::dkim::Canonicalization;
use mail_auth::{AuthenticatedMessage, DkimResult};
use std::io::Read;

/// RFC 8617 §4.2.1: instances run from 1 to 50.
const MAX_INSTANCE: u32 = 50;

/// Headers the ARC-Message-Signature covers when present (RFC 8617 §4.1.2 points to RFC 6376
/// §5.4; existing DKIM-Signatures SHOULD be included). Authentication-Results and the ARC
/// headers themselves are not (RFC 8617 §4.1.2).
const SIGNED_HEADERS: [&str; 17] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Post",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "DKIM-Signature",
];

/// Longest line we write (RFC 5322 §2.1.1 recommends 78 characters).
const LINE: usize = 76;

#[derive(Debug, thiserror::Error)]
pub enum ArcError {
    #[error("the message has no parseable header section")]
    Unparseable,
    #[error("the ARC chain already has {0} sets (RFC 8617 allows 50)")]
    ChainTooLong(u32),
    #[error("the ARC chain ended with cv=fail at i={0}; no set is added")]
    ChainFailed(u32),
    #[error("stored Authentication-Results value is not a header value: {0:?}")]
    BadResults(String),
    #[error("no DKIM key to seal with")]
    NoKey,
    #[error("reading the message body: {0}")]
    Read(std::io::Error),
    #[error(transparent)]
    Key(#[from] DkimError),
    #[error("signing with {domain} selector {selector}: {msg}")]
    Sign {
        domain: String,
        selector: String,
        msg: String,
    },
}

/// Chain validation status, the `cv=` tag (RFC 8617 §4.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cv {
    None,
    Pass,
    Fail,
}

impl Cv {
    fn as_str(self) -> &'static str {
        match self {
            Cv::None => "none",
            Cv::Pass => "pass",
            Cv::Fail => "fail",
        }
    }
}

/// Where the new set goes in the chain: its instance and what it says of the sets before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    pub instance: u32,
    pub cv: Cv,
}

/// The ARC set (header lines, CRLF-terminated, to prepend) for `message`, sealed with one of
/// `keys` (see [`pick_key`]) at the next instance, with `auth_results` (the value of the
/// Authentication-Results header we added, after the field name) as its
/// ARC-Authentication-Results. Blocking: an existing chain is verified through `dns` here.
pub fn seal(
    dns: &Dns,
    keys: &[DkimKey],
    header: &[u8],
    body: impl Read,
    auth_results: &str,
    now: u64,
) -> Result<String, ArcError> {
    let key = pick_key(keys).ok_or(ArcError::NoKey)?;
    let mut parsed = AuthenticatedMessage::parse(header).ok_or(ArcError::Unparseable)?;
    // One pass over the body: the hashes the existing chain's signatures need, and ours.
    let ours = body_hash::fill(&mut parsed, &[AMS_BODY], body).map_err(ArcError::Read)?;
    let body_hash = ours.first().map(Vec::as_slice).unwrap_or_default();
    let chain = match highest_instance(&parsed) {
        None => Chain {
            instance: 1,
            cv: Cv::None,
        },
        Some(last) => {
            check_sealable(&parsed, last)?;
            // Every mail-auth DNS call needs a tokio reactor (STACK.md); this runs on a
            // blocking thread, so waiting here holds up no task.
            let output = smol::block_on(Compat::new(dns.authenticator().verify_arc(&parsed)));
            Chain {
                instance: last + 1,
                cv: cv_of(output.result()),
            }
        }
    };
    sign_set(key, &parsed, body_hash, auth_results, chain, now)
}

/// The body hash of the ARC-Message-Signature we write: `c=relaxed/relaxed` (relaxed body,
/// RFC 6376 §3.4.4), and SHA-256, which both of our key types sign with.
pub const AMS_BODY: body_hash::Request = (Canonicalization::Relaxed, HashAlgorithm::Sha256, 0);

/// The key to seal with: one set per instance (RFC 8617 §4.2.1), so one key. RSA first:
/// rsa-sha256 is the algorithm every ARC verifier knows; dkimpy, for one, rejects
/// ed25519-sha256 in ARC headers (a test below pins it).
pub fn pick_key(keys: &[DkimKey]) -> Option<&DkimKey> {
    keys.iter()
        .find(|k| matches!(k.kind, KeyKind::Rsa { .. }))
        .or_else(|| keys.first())
}

/// RFC 8617 §5.2: the chain passes only when the validator says so; anything else (broken,
/// expired, a DNS failure) makes the new set's `cv=fail`.
pub fn cv_of(result: &DkimResult) -> Cv {
    match result {
        DkimResult::Pass => Cv::Pass,
        _ => Cv::Fail,
    }
}

/// The highest `i=` of any ARC header of the message, including ones mail-auth could not
/// parse otherwise; None without ARC headers that have one.
pub fn highest_instance(parsed: &AuthenticatedMessage<'_>) -> Option<u32> {
    parsed
        .headers
        .iter()
        .filter(|(name, _)| is_arc_header(name))
        .filter_map(|(_, value)| tag(value, "i")?.parse::<u32>().ok())
        .max()
}

/// No set past instance 50 (RFC 8617 §4.2.1), and none after a seal that recorded `cv=fail`:
/// validators stop at such a seal (RFC 8617 §5.2), so a set after it would vouch for nothing
/// (mail-auth's `ArcOutput::can_be_sealed` refuses it too).
fn check_sealable(parsed: &AuthenticatedMessage<'_>, last: u32) -> Result<(), ArcError> {
    if last >= MAX_INSTANCE {
        return Err(ArcError::ChainTooLong(last));
    }
    let failed = parsed
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"ARC-Seal"))
        .filter(|(_, value)| tag(value, "i") == Some(last.to_string()))
        .any(|(_, value)| tag(value, "cv").is_some_and(|cv| cv.eq_ignore_ascii_case("fail")));
    if failed {
        return Err(ArcError::ChainFailed(last));
    }
    Ok(())
}

fn is_arc_header(name: &[u8]) -> bool {
    [
        "ARC-Seal",
        "ARC-Message-Signature",
        "ARC-Authentication-Results",
    ]
    .iter()
    .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
}

/// A tag's value in a `tag=value; ...` list (RFC 6376 §3.2), whitespace removed.
fn tag(value: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(value).split(';').find_map(|t| {
        let (k, v) = t.split_once('=')?;
        (k.trim() == name).then(|| v.split_whitespace().collect())
    })
}

/// Writes and signs the set for `chain`. Pure apart from the signature's randomness (none
/// for RSA PKCS#1 v1.5 and Ed25519): same inputs, same headers.
pub fn sign_set(
    key: &DkimKey,
    parsed: &AuthenticatedMessage<'_>,
    body_hash: &[u8],
    auth_results: &str,
    chain: Chain,
    now: u64,
) -> Result<String, ArcError> {
    let signer = key.signing_key()?;
    let i = chain.instance;
    let a = algorithm_name(signer.algorithm());
    let (d, s) = (&key.domain, &key.selector);
    let aar = format!(
        "ARC-Authentication-Results: i={i}; {}\r\n",
        results_value(auth_results)?
    );

    // RFC 8617 §4.1.2: the AMS is a DKIM signature (RFC 6376 §3.7) with i= and without v=.
    let bh = b64(body_hash);
    let signed = signed_headers(parsed);
    let names: Vec<&[u8]> = signed.iter().map(|(name, _)| *name).collect();
    let ams_head = format!(
        "ARC-Message-Signature: i={i}; a={a}; c=relaxed/relaxed;\r\n\td={d}; s={s}; t={now};\r\n\t{};\r\n\tbh={bh};\r\n\tb=",
        h_tag(&names)
    );
    let mut input = Vec::new();
    relaxed(signed.iter().copied(), &mut input);
    relaxed([split(ams_head.as_bytes())], &mut input);
    let ams = format!("{ams_head}{}\r\n", fold_b(&sign(key, &signer, &input)?));

    // RFC 8617 §5.1.1: the AS covers every set in instance order (AAR, AMS, AS), its own AS
    // with b= empty and no final CRLF. §5.1.2: after a failed chain, only the new set.
    let seal_head = format!(
        "ARC-Seal: i={i}; a={a}; t={now}; cv={};\r\n\td={d}; s={s};\r\n\tb=",
        chain.cv.as_str()
    );
    let mut input = Vec::new();
    if chain.cv != Cv::Fail {
        relaxed(prior_sets(parsed, i), &mut input);
    }
    relaxed(
        [
            split(aar.as_bytes()),
            split(ams.as_bytes()),
            split(seal_head.as_bytes()),
        ],
        &mut input,
    );
    let seal = format!("{seal_head}{}\r\n", fold_b(&sign(key, &signer, &input)?));
    Ok(format!("{seal}{ams}{aar}"))
}

/// Relaxed header canonicalization (RFC 6376 §3.4.2), which is all ARC seals use.
fn relaxed<'a>(headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>, out: &mut Vec<u8>) {
    Canonicalization::Relaxed.canonicalize_headers(headers.into_iter(), out);
}

fn sign(
    key: &DkimKey,
    signer: &mail_auth::common::crypto::DkimKey,
    input: &[u8],
) -> Result<Vec<u8>, ArcError> {
    signer.sign(input).map_err(|e| ArcError::Sign {
        domain: key.domain.clone(),
        selector: key.selector.clone(),
        msg: e.to_string(),
    })
}

/// The headers of [`SIGNED_HEADERS`] that are present, bottom up (RFC 6376 §5.4.2: several
/// instances of one name are taken from the bottom), as (name, value with CRLF).
fn signed_headers<'x>(parsed: &AuthenticatedMessage<'x>) -> Vec<(&'x [u8], &'x [u8])> {
    parsed
        .headers
        .iter()
        .rev()
        .filter(|(name, _)| {
            SIGNED_HEADERS
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
        })
        .copied()
        .collect()
}

/// The sets before `instance`, in instance order, each as AAR, AMS, AS.
fn prior_sets<'x>(parsed: &AuthenticatedMessage<'x>, instance: u32) -> Vec<(&'x [u8], &'x [u8])> {
    let mut out = Vec::new();
    for i in 1..instance {
        let want = i.to_string();
        for name in [
            "ARC-Authentication-Results",
            "ARC-Message-Signature",
            "ARC-Seal",
        ] {
            let found = parsed.headers.iter().find(|(n, v)| {
                n.eq_ignore_ascii_case(name.as_bytes()) && tag(v, "i").as_ref() == Some(&want)
            });
            out.extend(found.copied());
        }
    }
    out
}

/// `h=` with the names colon-separated, folded before a colon when a line would get long.
fn h_tag(names: &[&[u8]]) -> String {
    let mut out = String::from("h=");
    let mut line = out.len() + 1;
    for (n, name) in names.iter().enumerate() {
        let name = String::from_utf8_lossy(name);
        let sep = if n == 0 { "" } else { ":" };
        if line + sep.len() + name.len() > LINE {
            out.push_str("\r\n\t");
            line = 1;
        }
        out.push_str(sep);
        out.push_str(&name);
        line += sep.len() + name.len();
    }
    out
}

/// The base64 signature, continued on further lines; `\tb=` already starts the first one.
fn fold_b(signature: &[u8]) -> String {
    let text = b64(signature);
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    let mut rest = text.as_str();
    let mut room = LINE - 3;
    while !rest.is_empty() {
        let (head, tail) = rest.split_at(room.min(rest.len()));
        out.push_str(head);
        rest = tail;
        if !rest.is_empty() {
            out.push_str("\r\n\t");
        }
        room = LINE - 1;
    }
    out
}

/// The stored Authentication-Results value, checked to be one header value: every line break
/// a CRLF followed by whitespace (a fold), so it cannot end the ARC header early or add one.
fn results_value(stored: &str) -> Result<&str, ArcError> {
    let value = stored.trim_end();
    let bad = || ArcError::BadResults(stored.chars().take(80).collect());
    if value.trim_start().is_empty() {
        return Err(bad());
    }
    let bytes = value.as_bytes();
    for (at, &b) in bytes.iter().enumerate() {
        let ok = match b {
            b'\r' => bytes.get(at + 1) == Some(&b'\n'),
            b'\n' => {
                at > 0 && bytes[at - 1] == b'\r' && matches!(bytes.get(at + 1), Some(b' ' | b'\t'))
            }
            _ => true,
        };
        if !ok {
            return Err(bad());
        }
    }
    Ok(value)
}

/// A header line split at its colon: (name, value with its CRLF when it has one).
fn split(header: &[u8]) -> (&[u8], &[u8]) {
    match header.iter().position(|&b| b == b':') {
        Some(colon) => (&header[..colon], &header[colon + 1..]),
        None => (header, &[]),
    }
}

fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::RsaSha256 => "rsa-sha256",
        Algorithm::RsaSha1 => "rsa-sha1",
        Algorithm::Ed25519Sha256 => "ed25519-sha256",
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailauth::dkim::{dns_record, load_keys};
    use mail_auth::common::cache::NoCache;
    use mail_auth::{MessageAuthenticator, Parameters};
    use std::collections::HashMap;
    use std::sync::{Arc, OnceLock};

    const NOW: u64 = 1_700_000_000;
    const RESULTS: &str = "mx.forward.test;\r\n\tspf=pass smtp.mailfrom=alice@origin.test;\r\n\tdkim=pass header.d=origin.test header.s=sel;\r\n\tdmarc=pass header.from=origin.test";

    const MESSAGE: &str = concat!(
        "Received: from a by b; Tue, 14 Nov 2023 22:13:20 +0000\r\n",
        "Authentication-Results: mx.forward.test; spf=pass\r\n",
        "DKIM-Signature: v=1; a=rsa-sha256; d=origin.test; s=sel; h=From; bh=x; b=y\r\n",
        "From: Alice <alice@origin.test>\r\n",
        "To: list@forward.test\r\n",
        "Subject: ARC test\r\n",
        "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n",
        "Message-ID: <arc-test@origin.test>\r\n",
        "\r\n",
        "Hello,\r\n",
        "  with a line that starts with spaces.\r\n",
        "  \r\n",
    );

    fn pem(der: &[u8]) -> String {
        let body = b64(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            // Cannot fail: base64 is ASCII.
            .map(|c| std::str::from_utf8(c).expect("ascii"))
            .collect();
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        )
    }

    /// RSA and Ed25519 keys for `domain`, generated once per test binary (RSA is slow).
    fn keys(domain: &str) -> Arc<Vec<DkimKey>> {
        static DIRS: OnceLock<std::sync::Mutex<HashMap<String, Arc<Vec<DkimKey>>>>> =
            OnceLock::new();
        let dirs = DIRS.get_or_init(Default::default);
        let mut dirs = dirs.lock().expect("no test panicked holding it");
        dirs.entry(domain.to_string())
            .or_insert_with(|| {
                use aws_lc_rs::encoding::AsDer as _;
                let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .expect("RSA keygen");
                let ed = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(
                    &aws_lc_rs::rand::SystemRandom::new(),
                )
                .expect("Ed25519 keygen");
                let dir = tempfile::tempdir().expect("tempdir");
                let rsa_pem = pem(rsa.as_der().expect("PKCS#8").as_ref());
                std::fs::write(dir.path().join("dkim:rsa.pem"), rsa_pem).expect("write");
                std::fs::write(dir.path().join("dkim:ed.pem"), pem(ed.as_ref())).expect("write");
                Arc::new(load_keys(dir.path(), domain).expect("load keys"))
            })
            .clone()
    }

    use crate::mailauth::dkim::tests::StaticTxt;

    /// mail-auth's ARC verdict, with the keys' records served from memory.
    fn mail_auth_verify(keys: &[&DkimKey], message: &str) -> DkimResult {
        let resolver = MessageAuthenticator::new_system_conf().expect("resolver");
        let cache = StaticTxt::new(keys.iter().copied());
        let parsed = AuthenticatedMessage::parse(message.as_bytes()).expect("parse");
        let params = Parameters::new(&parsed).with_txt_cache(&cache);
        let params: Parameters<'_, _, _, NoCache<_, _>, NoCache<_, _>, NoCache<_, _>, _> = params;
        smol::block_on(resolver.verify_arc(params)).result().clone()
    }

    /// [`seal`] of a message in memory, split as a stored one is.
    fn seal_whole(dns: &Dns, keys: &[DkimKey], message: &[u8]) -> Result<String, ArcError> {
        let split = crate::message::split(message).expect("split");
        seal(dns, keys, &split.header, split.body, RESULTS, NOW)
    }

    /// Seals as [`seal`] does, with the chain verified against in-memory records.
    fn seal_offline(key: &DkimKey, known: &[&DkimKey], message: &str) -> Result<String, ArcError> {
        let parsed = AuthenticatedMessage::parse(message.as_bytes()).expect("parse");
        let chain = match highest_instance(&parsed) {
            None => Chain {
                instance: 1,
                cv: Cv::None,
            },
            Some(last) => {
                check_sealable(&parsed, last)?;
                Chain {
                    instance: last + 1,
                    cv: cv_of(&mail_auth_verify(known, message)),
                }
            }
        };
        let body_hash = body_hash::compute(&[AMS_BODY], parsed.raw_body()).expect("hash");
        let set = sign_set(key, &parsed, &body_hash[0], RESULTS, chain, NOW)?;
        Ok(format!("{set}{message}"))
    }

    /// dkimpy's `arc_verify` verdict (cv, reason), or None when python3-dkim is missing.
    fn dkimpy_arc_verify(keys: &[&DkimKey], message: &str) -> Option<(String, String)> {
        const SCRIPT: &str = r#"
cv, results, reason = dkim.arc_verify(msg, dnsfunc=dnsfunc)
print(cv.decode() if isinstance(cv, bytes) else str(cv))
print(reason)
"#;
        let (stdout, _) = crate::mailauth::dkim::tests::run_dkimpy(SCRIPT, keys, message)?;
        let (cv, reason) = stdout.split_once('\n').unwrap_or((&stdout, ""));
        Some((cv.to_string(), reason.trim().to_string()))
    }

    fn rsa(domain: &str) -> Arc<Vec<DkimKey>> {
        keys(domain)
    }

    #[test]
    fn first_seal_verifies_with_mail_auth_and_dkimpy_rsa() {
        let keys = rsa("forward.test");
        for key in keys.iter() {
            let sealed = seal_offline(key, &[], MESSAGE).expect("seal");
            assert!(sealed.starts_with("ARC-Seal: i=1; "), "{sealed}");
            assert!(sealed.contains("cv=none;"), "{sealed}");
            assert!(
                sealed.contains("ARC-Authentication-Results: i=1; mx.forward.test;\r\n\tspf=pass"),
                "{sealed}"
            );
            assert!(sealed.ends_with(MESSAGE));
            assert!(
                sealed.lines().all(|l| l.len() <= 78),
                "{}: long line in\n{sealed}",
                key.selector
            );
            assert_eq!(
                mail_auth_verify(&[key], &sealed),
                DkimResult::Pass,
                "{sealed}"
            );
            let Some((cv, reason)) = dkimpy_arc_verify(&[key], &sealed) else {
                continue;
            };
            match key.kind {
                KeyKind::Rsa { .. } => assert_eq!(cv, "pass", "{reason}\n{sealed}"),
                // Why `pick_key` prefers RSA: dkimpy has no Ed25519 for ARC.
                KeyKind::Ed25519 => assert!(
                    reason.contains("unknown signature algorithm"),
                    "dkimpy verifies Ed25519 ARC now? {cv} {reason}"
                ),
            }
        }
    }

    #[test]
    fn the_message_signature_covers_the_body_and_signed_headers() {
        let keys = rsa("forward.test");
        let key = &keys[1];
        let sealed = seal_offline(key, &[], MESSAGE).expect("seal");
        let cases = [
            ("body", sealed.replacen("Hello,", "Jello,", 1)),
            (
                "subject",
                sealed.replacen("Subject: ARC test", "Subject: ARC fest", 1),
            ),
            (
                "results",
                sealed.replacen("i=1; mx.forward.test", "i=1; mx.forged.test", 1),
            ),
        ];
        for (what, tampered) in cases {
            assert_ne!(tampered, sealed, "{what}");
            assert_ne!(
                mail_auth_verify(&[key], &tampered),
                DkimResult::Pass,
                "{what}"
            );
            if let Some((cv, reason)) = dkimpy_arc_verify(&[key], &tampered) {
                assert_eq!(cv, "fail", "{what}: {reason}");
            }
        }
        // Unsigned trace headers may change on the way.
        let retraced = sealed.replacen("Received: from a by b", "Received: from c by d", 1);
        assert_eq!(mail_auth_verify(&[key], &retraced), DkimResult::Pass);
        // So may whitespace in the body (c=relaxed/relaxed, RFC 6376 §3.4.4): WSP at the end
        // of a line, a WSP run, whitespace-only lines at the end.
        assert!(sealed.contains("c=relaxed/relaxed;"), "{sealed}");
        let rewhitespaced = format!(
            "{} \t\r\n\r\n",
            sealed.replacen("Hello,\r\n", "Hello, \t\r\n", 1).replacen(
                "with a line",
                "with \t a line",
                1
            )
        );
        assert_eq!(
            mail_auth_verify(&[key], &rewhitespaced),
            DkimResult::Pass,
            "{rewhitespaced}"
        );
        if let Some((cv, reason)) = dkimpy_arc_verify(&[key], &rewhitespaced) {
            assert_eq!(cv, "pass", "{reason}\n{rewhitespaced}");
        }
    }

    #[test]
    fn chain_continues_with_the_next_instance() {
        let first = rsa("first.test");
        let second = rsa("forward.test");
        let (k1, k2) = (&first[1], &second[1]);
        let once = seal_offline(k1, &[k1], MESSAGE).expect("first seal");
        let twice = seal_offline(k2, &[k1, k2], &once).expect("second seal");
        assert!(twice.starts_with("ARC-Seal: i=2; "), "{twice}");
        assert!(twice.contains("cv=pass;"), "{twice}");
        assert!(twice.contains("ARC-Authentication-Results: i=2; "));
        assert_eq!(
            mail_auth_verify(&[k1, k2], &twice),
            DkimResult::Pass,
            "{twice}"
        );
        if let Some((cv, reason)) = dkimpy_arc_verify(&[k1, k2], &twice) {
            assert_eq!(cv, "pass", "{reason}\n{twice}");
        }
        // Ed25519 continues the chain too (mail-auth verifies it).
        let third = seal_offline(&second[0], &[k1, k2], &twice).expect("third seal");
        assert!(third.starts_with("ARC-Seal: i=3; a=ed25519-sha256; "));
        assert_eq!(
            mail_auth_verify(&[k1, k2, &second[0]], &third),
            DkimResult::Pass
        );
    }

    #[test]
    fn broken_chain_is_sealed_as_failed_then_never_again() {
        let first = rsa("first.test");
        let second = rsa("forward.test");
        let (k1, k2) = (&first[1], &second[1]);
        let once = seal_offline(k1, &[k1], MESSAGE).expect("first seal");
        let broken = once.replacen("Hello,", "Jello,", 1);
        let twice = seal_offline(k2, &[k1, k2], &broken).expect("second seal");
        assert!(twice.starts_with("ARC-Seal: i=2; "), "{twice}");
        assert!(twice.contains("cv=fail;"), "{twice}");
        assert_ne!(mail_auth_verify(&[k1, k2], &twice), DkimResult::Pass);
        let err = seal_offline(k1, &[k1, k2], &twice).expect_err("after cv=fail");
        assert!(matches!(err, ArcError::ChainFailed(2)), "{err}");
    }

    #[test]
    fn instance_numbering() {
        let cases: [(&str, Option<u32>); 5] = [
            ("From: a@b\r\n\r\n", None),
            ("ARC-Seal: i=1; cv=none; b=x\r\nFrom: a@b\r\n\r\n", Some(1)),
            (
                "ARC-Seal: i=2; cv=pass; b=x\r\nARC-Message-Signature: i=3; b=x\r\narc-seal: i=1; cv=none\r\n\r\n",
                Some(3),
            ),
            ("ARC-Authentication-Results: i = 7 ; x\r\n\r\n", Some(7)),
            ("ARC-Seal: i=x; cv=none\r\nFrom: a@b\r\n\r\n", None),
        ];
        for (message, want) in cases {
            let parsed = AuthenticatedMessage::parse(message.as_bytes()).expect("parse");
            assert_eq!(highest_instance(&parsed), want, "{message}");
        }
    }

    #[test]
    fn too_long_a_chain_is_not_sealed() {
        let message = "ARC-Seal: i=50; cv=pass; b=x\r\nFrom: a@b\r\n\r\nhi\r\n";
        let parsed = AuthenticatedMessage::parse(message.as_bytes()).expect("parse");
        let err = check_sealable(&parsed, 50).expect_err("50 sets");
        assert!(matches!(err, ArcError::ChainTooLong(50)), "{err}");
    }

    #[test]
    fn stored_results_must_be_one_header_value() {
        let cases = [
            ("mx.test; spf=pass", Some("mx.test; spf=pass")),
            ("mx.test;\r\n\tspf=pass\r\n", Some("mx.test;\r\n\tspf=pass")),
            ("mx.test;\r\n spf=pass", Some("mx.test;\r\n spf=pass")),
            ("mx.test;\r\nX-Injected: yes", None),
            ("mx.test;\nspf=pass", None),
            ("mx.test;\n\tspf=pass", None),
            ("mx.test;\rspf=pass", None),
            ("", None),
            (" \r\n", None),
        ];
        for (stored, want) in cases {
            assert_eq!(results_value(stored).ok(), want, "{stored:?}");
        }
    }

    #[test]
    fn folding() {
        let names: Vec<&[u8]> = vec![b"From"; 30];
        let h = h_tag(&names);
        assert!(
            format!("\t{h}").split("\r\n").all(|l| l.len() <= LINE),
            "{h}"
        );
        assert_eq!(h.replace("\r\n\t", "").split(':').count(), 30);
        let b = fold_b(&[7u8; 256]);
        assert_eq!(b.replace("\r\n\t", ""), b64(&[7u8; 256]));
        let lines: Vec<&str> = b.split("\r\n\t").collect();
        assert_eq!(lines[0].len() + "\tb=".len(), LINE);
        assert!(lines.iter().all(|l| l.len() < LINE));
    }

    #[test]
    fn rsa_is_preferred() {
        let keys = rsa("forward.test");
        assert_eq!(keys[0].kind, KeyKind::Ed25519);
        assert_eq!(pick_key(&keys).map(|k| k.selector.as_str()), Some("rsa"));
        assert_eq!(
            pick_key(&keys[..1]).map(|k| k.selector.as_str()),
            Some("ed")
        );
        assert!(pick_key(&[]).is_none());
    }

    /// The real path: the existing chain verified over DNS (dnsmasq on loopback).
    #[test]
    fn seal_verifies_the_chain_through_dns() {
        use crate::dns::test_server;
        let first = rsa("first.test");
        let second = rsa("forward.test");
        let record = |k: &DkimKey| {
            let chunks: Vec<String> = dns_record(k)
                .as_bytes()
                .chunks(255)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            format!(
                "--txt-record={}._domainkey.{},{}",
                k.selector,
                k.domain,
                chunks.join(",")
            )
        };
        let args = [record(&first[1])];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let Some(server) = test_server::start(&args) else {
            return;
        };
        let dns = Dns::new(&[server.addr]).expect("resolver");
        let once = seal_offline(&first[1], &[&first[1]], MESSAGE).expect("first seal");
        let twice = seal_whole(&dns, &second, once.as_bytes()).expect("seal");
        assert!(
            twice.starts_with("ARC-Seal: i=2; a=rsa-sha256; "),
            "{twice}"
        );
        assert!(twice.contains("cv=pass;"), "{twice}");
        let broken = once.replacen("Hello,", "Jello,", 1);
        let failed = seal_whole(&dns, &second, broken.as_bytes()).expect("seal");
        assert!(failed.contains("cv=fail;"), "{failed}");
        let fresh = seal_whole(&dns, &second, MESSAGE.as_bytes()).expect("seal");
        assert!(
            fresh.starts_with("ARC-Seal: i=1; a=rsa-sha256; "),
            "{fresh}"
        );
        assert!(matches!(
            seal_whole(&dns, &[], MESSAGE.as_bytes()),
            Err(ArcError::NoKey)
        ));
    }
}
