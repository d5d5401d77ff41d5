//! DKIM keys of the local domains (`domains/<domain>/dkim:<selector>.pem`, PKCS#8 PEM, RSA
//! or Ed25519) and signing through mail-auth (RFC 6376).
//!
//! Signatures use `c=relaxed/relaxed` (SPEC §8), so that relays which re-encode whitespace
//! (trailing WSP stripped, WSP runs changed, blank lines added at the end) do not break them.
//! mail-auth 0.13.3 (pinned, see STACK.md) hashed a relaxed body that ends in whitespace-only
//! lines wrongly; the copy under `vendor/mail-auth` is patched (its TAMBO-PATCH.md), and
//! `relaxed_body_canonicalization_follows_rfc_6376` fails if an unpatched copy comes back.
//!
//! A second mail-auth quirk is repaired after signing: see
//! `keep_final_semicolon_on_the_b_line`.

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use base64::Engine as _;
use mail_auth::common::crypto::{DkimKey as SigningKey, Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("{path}: {msg}")]
    Key { path: PathBuf, msg: String },
    #[error("signing: {0}")]
    Sign(String),
    #[error("key generation: {0}")]
    Keygen(String),
}

/// Headers we sign (RFC 6376 §5.4.1's list, plus MIME and list headers). mail-auth signs
/// every listed header that is absent as empty (§5.4.2), so none can be added later; `From`
/// is listed twice so that a second `From:` cannot be added either (over-signing, §8.15).
const SIGNED_HEADERS: [&str; 17] = [
    "From",
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
];

/// The key's algorithm, as it appears in `k=` of the DNS record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa { bits: usize },
    Ed25519,
}

/// One loaded key.
pub struct DkimKey {
    /// The signing domain (`d=`), in ASCII (A-labels).
    pub domain: String,
    pub selector: String,
    /// The file it came from.
    pub path: PathBuf,
    pub kind: KeyKind,
    /// The PKCS#8 document, to build further mail-auth keys from (ARC sealing).
    pkcs8: PrivatePkcs8KeyDer<'static>,
    signer: DkimSigner<SigningKey, Done>,
    /// The TXT record value for `<selector>._domainkey.<domain>`.
    record: String,
}

impl fmt::Debug for DkimKey {
    // The private key stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DkimKey")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("path", &self.path)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl DkimKey {
    /// A fresh mail-auth signing key from the same PKCS#8 document (mail-auth's signers take
    /// their key by value).
    pub fn signing_key(&self) -> Result<SigningKey, DkimError> {
        parse_pkcs8(&self.pkcs8)
            .map(|parsed| parsed.key)
            .map_err(|msg| key_error(&self.path, msg))
    }
}

/// Every key of one domain's folder, sorted by selector. A folder that does not exist has no
/// keys; a `dkim:*.pem` file that is not a usable key is an error naming it.
pub fn load_keys(domain_dir: &Path, domain: &str) -> Result<Vec<DkimKey>, DkimError> {
    let (keys, mut problems) = load_keys_all(domain_dir, domain);
    match problems.is_empty() {
        true => Ok(keys),
        false => Err(problems.swap_remove(0)),
    }
}

/// [`load_keys`] that goes on past a bad key file: the good keys, and a problem for every
/// file that is not a usable key (`util check`).
pub fn load_keys_all(domain_dir: &Path, domain: &str) -> (Vec<DkimKey>, Vec<DkimError>) {
    let entries = match std::fs::read_dir(domain_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Vec::new(), Vec::new()),
        Err(e) => {
            let problem = key_error(domain_dir, format!("cannot list the folder: {e}"));
            return (Vec::new(), vec![problem]);
        }
    };
    // RFC 6376 §3.5: d= is a domain name, in DNS (ASCII) form.
    let ascii_domain = match idna::domain_to_ascii(domain) {
        Ok(ascii) => ascii,
        Err(e) => {
            let problem = key_error(domain_dir, format!("domain {domain:?} is not valid: {e}"));
            return (Vec::new(), vec![problem]);
        }
    };
    let mut keys = Vec::new();
    let mut problems = Vec::new();
    let mut names = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => names.push(entry.file_name().to_string_lossy().into_owned()),
            Err(e) => problems.push(key_error(domain_dir, format!("cannot list: {e}"))),
        }
    }
    // Sorted, so that problems come in the same order on every run.
    names.sort();
    for name in names {
        let Some(selector) = selector_of(&name) else {
            continue;
        };
        let path = domain_dir.join(&name);
        let loaded = check_selector(selector)
            .map_err(|msg| key_error(&path, msg))
            .and_then(|()| load_key(&path, &ascii_domain, selector));
        match loaded {
            Ok(key) => keys.push(key),
            Err(e) => problems.push(e),
        }
    }
    keys.sort_by(|a, b| a.selector.cmp(&b.selector));
    (keys, problems)
}

/// The `DKIM-Signature:` header lines (CRLF-terminated) for `message` (headers + body, CRLF),
/// one per key.
pub fn sign(keys: &[DkimKey], message: &[u8]) -> Result<String, DkimError> {
    let split = crate::message::split(message).map_err(|e| DkimError::Sign(e.to_string()))?;
    sign_stream(keys, &split.header, split.body)
}

/// [`sign`] for a message given as its header section (see [`crate::message::split()`]) and
/// its body, which is read once, in chunks, for all keys at the same time.
pub fn sign_stream(
    keys: &[DkimKey],
    header: &[u8],
    body: impl std::io::Read,
) -> Result<String, DkimError> {
    let mut streams: Vec<_> = keys.iter().map(|key| key.signer.sign_streaming()).collect();
    for stream in &mut streams {
        stream.write(header);
    }
    crate::message::for_each_chunk(body, |chunk| {
        for stream in &mut streams {
            stream.write(chunk);
        }
    })
    .map_err(|e| DkimError::Sign(format!("reading the message: {e}")))?;
    let mut headers = String::new();
    for (key, stream) in keys.iter().zip(streams) {
        let signature = stream.finish().map_err(|e| {
            DkimError::Sign(format!("{} selector {}: {e}", key.domain, key.selector))
        })?;
        // Folded by mail-auth with CRLF + TAB, and ends in CRLF.
        let header = keep_final_semicolon_on_the_b_line(signature.to_header());
        headers.push_str(&fold_first_line(header));
    }
    Ok(headers)
}

/// mail-auth 0.13.3 folds after a `b=` value that fills its line, so the header can end in
/// CRLF TAB `;`. RFC 6376 §3.7 deletes the `b=` value "including all surrounding whitespace"
/// before hashing, as mail-auth does when signing; dkimpy keeps a fold that follows the value,
/// hashes `b= ;`, and rejects the signature. Ending the last line with `;` suits both.
fn keep_final_semicolon_on_the_b_line(header: String) -> String {
    match header.strip_suffix("\r\n\t;\r\n") {
        Some(head) => format!("{head};\r\n"),
        None => header,
    }
}

/// mail-auth 0.13.3 writes `DKIM-Signature: v=1; a=…; s=…; d=…; c=…;` on one line whatever
/// the lengths of selector and domain; RFC 5322 §2.1.1 wants lines of at most 78 characters.
/// Folding before a tag keeps the signature valid: we sign with relaxed header
/// canonicalization (RFC 6376 §3.4.2), which unfolds and reduces each WSP run to one SP, so
/// `; CRLF TAB` hashes as the `; ` that was signed.
fn fold_first_line(header: String) -> String {
    const MAX: usize = 78;
    let Some((first, rest)) = header.split_once("\r\n") else {
        return header;
    };
    if first.len() <= MAX {
        return header;
    }
    let mut out = String::with_capacity(header.len() + 8);
    let mut line = 0;
    for tag in first.split_inclusive("; ") {
        if line > 0 && line + tag.trim_end().len() > MAX {
            // The previous tag ended in "; ": its SP becomes the fold.
            out.pop();
            out.push_str("\r\n\t");
            line = 1;
        }
        out.push_str(tag);
        line += tag.len();
    }
    format!("{out}\r\n{rest}")
}

/// The TXT record value to publish at `<selector>._domainkey.<domain>` (RFC 6376 §3.6.1):
/// `k=rsa` with the SubjectPublicKeyInfo, or `k=ed25519` with the raw 32-byte key (RFC 8463
/// §4.2).
pub fn dns_record(key: &DkimKey) -> String {
    key.record.clone()
}

/// `dkim:<selector>.pem` → `<selector>`.
fn selector_of(file_name: &str) -> Option<&str> {
    file_name.strip_prefix("dkim:")?.strip_suffix(".pem")
}

/// A selector is DNS labels (RFC 6376 §3.1): letters, digits, `-`, `_`, separated by single
/// dots. This also keeps it a plain file name (no `/`, no `..`).
fn check_selector(selector: &str) -> Result<(), String> {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if selector.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "invalid DKIM selector {selector:?} (letters, digits, '-', '_', '.' between them)"
        ))
    }
}

fn load_key(path: &Path, domain: &str, selector: &str) -> Result<DkimKey, DkimError> {
    let pem = std::fs::read(path).map_err(|e| key_error(path, format!("cannot read: {e}")))?;
    let pkcs8 = pkcs8_from_pem(&pem).map_err(|msg| key_error(path, msg))?;
    let parsed = parse_pkcs8(&pkcs8).map_err(|msg| key_error(path, msg))?;
    let signer = DkimSigner::from_key(parsed.key)
        .domain(domain)
        .selector(selector)
        .headers(SIGNED_HEADERS)
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed);
    Ok(DkimKey {
        domain: domain.to_string(),
        selector: selector.to_string(),
        path: path.to_path_buf(),
        kind: parsed.kind,
        pkcs8,
        signer,
        record: parsed.record,
    })
}

/// The first private key of a PEM file, which must be PKCS#8 (`BEGIN PRIVATE KEY`).
fn pkcs8_from_pem(pem: &[u8]) -> Result<PrivatePkcs8KeyDer<'static>, String> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(PrivateKeyDer::Pkcs8(der)) => Ok(der),
        Ok(PrivateKeyDer::Pkcs1(_)) => Err("a PKCS#1 RSA key (BEGIN RSA PRIVATE KEY); \
             convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt`"
            .to_string()),
        Ok(_) => Err("not an RSA or Ed25519 key (DKIM needs one, in PKCS#8 PEM)".to_string()),
        Err(e) => Err(format!("no PEM private key (BEGIN PRIVATE KEY) found: {e}")),
    }
}

struct ParsedKey {
    key: SigningKey,
    kind: KeyKind,
    record: String,
}

/// RSA (RFC 8301 §3.2: at least 1024 bits; aws-lc-rs requires 2048) or Ed25519 (RFC 8463).
fn parse_pkcs8(pkcs8: &PrivatePkcs8KeyDer<'_>) -> Result<ParsedKey, String> {
    let der = pkcs8.secret_pkcs8_der();
    match RsaKeyPair::from_pkcs8(der) {
        Ok(pair) => parse_rsa(pkcs8, &pair),
        Err(rsa_error) => parse_ed25519(der).map_err(|ed_error| {
            if rsa_error.description_() == "TooSmall" {
                "RSA key too short: at least 2048 bits are needed".to_string()
            } else {
                format!("not an RSA or Ed25519 PKCS#8 private key ({rsa_error}; {ed_error})")
            }
        }),
    }
}

fn parse_rsa(pkcs8: &PrivatePkcs8KeyDer<'_>, pair: &RsaKeyPair) -> Result<ParsedKey, String> {
    use aws_lc_rs::signature::KeyPair as _;
    let spki = pair
        .public_key()
        .as_der()
        .map_err(|e| format!("cannot encode the RSA public key: {e}"))?;
    let key = RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(pkcs8.clone_key()))
        .map_err(|e| format!("RSA key refused: {e}"))?;
    Ok(ParsedKey {
        key: SigningKey::Rsa(key),
        kind: KeyKind::Rsa {
            bits: pair.public_modulus_len() * 8,
        },
        record: format!("v=DKIM1; k=rsa; p={}", b64(spki.as_ref())),
    })
}

fn parse_ed25519(der: &[u8]) -> Result<ParsedKey, String> {
    let key = Ed25519Key::from_pkcs8_der(der).map_err(|e| e.to_string())?;
    let record = format!("v=DKIM1; k=ed25519; p={}", b64(&key.public_key()));
    Ok(ParsedKey {
        key: SigningKey::Ed25519(key),
        kind: KeyKind::Ed25519,
        record,
    })
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn key_error(path: &Path, msg: impl Into<String>) -> DkimError {
    DkimError::Key {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

// ---- Tooling for `tambo util dkim-*`: new keys, DNS records, verification ----------------

/// The key types `util dkim-keygen` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Rsa2048,
    Rsa3072,
    Ed25519,
}

impl Algorithm {
    /// The names the command line takes, in the order `--help` lists them.
    pub const NAMES: [&'static str; 3] = ["rsa2048", "rsa3072", "ed25519"];

    pub fn parse(name: &str) -> Option<Algorithm> {
        match name {
            "rsa2048" => Some(Algorithm::Rsa2048),
            "rsa3072" => Some(Algorithm::Rsa3072),
            "ed25519" => Some(Algorithm::Ed25519),
            _ => None,
        }
    }
}

/// A new private key as PKCS#8 PEM (`BEGIN PRIVATE KEY`). Ed25519 keys take the PKCS#8 v1
/// form (no embedded public key) that `openssl genpkey` writes, which every DKIM tool reads.
pub fn generate_pem(algorithm: Algorithm) -> Result<String, DkimError> {
    use aws_lc_rs::rsa::KeySize;
    let failed = |e: aws_lc_rs::error::Unspecified| DkimError::Keygen(e.to_string());
    let der: Vec<u8> = match algorithm {
        Algorithm::Rsa2048 | Algorithm::Rsa3072 => {
            let size = if algorithm == Algorithm::Rsa2048 {
                KeySize::Rsa2048
            } else {
                KeySize::Rsa3072
            };
            let pair = RsaKeyPair::generate(size).map_err(failed)?;
            let der = pair.as_der().map_err(failed)?;
            der.as_ref().to_vec()
        }
        Algorithm::Ed25519 => {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let doc =
                aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(&rng).map_err(failed)?;
            doc.as_ref().to_vec()
        }
    };
    Ok(pem_encode("PRIVATE KEY", &der))
}

/// RFC 7468 §2: base64 in lines of 64 characters between the labels.
fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = b64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// `<domain_dir>/dkim:<selector>.pem`; the selector must have passed [`validate_selector`].
pub fn key_path(domain_dir: &Path, selector: &str) -> PathBuf {
    domain_dir.join(format!("dkim:{selector}.pem"))
}

/// Whether `selector` can name a key of `domain` (Unicode or ASCII form): DNS labels as
/// [`load_keys`] accepts them (so never `/` or `..`), and a record name
/// `<selector>._domainkey.<domain>` that fits in DNS (RFC 1035 §2.3.4: 255 octets on the
/// wire, so 253 characters written out).
pub fn validate_selector(selector: &str, domain: &str) -> Result<(), String> {
    check_selector(selector)?;
    let ascii = idna::domain_to_ascii(domain).map_err(|e| format!("domain {domain:?}: {e}"))?;
    let name_len = selector.len() + "._domainkey.".len() + ascii.len();
    if name_len > 253 {
        return Err(format!(
            "DKIM selector {selector:?} is too long: {selector}._domainkey.{ascii} has \
             {name_len} characters, DNS allows 253"
        ));
    }
    Ok(())
}

/// The key of one selector, loaded and checked like [`load_keys`] does; a missing file is an
/// error naming it.
pub fn load_selector_key(
    domain_dir: &Path,
    domain: &str,
    selector: &str,
) -> Result<DkimKey, DkimError> {
    let path = key_path(domain_dir, selector);
    check_selector(selector).map_err(|msg| key_error(&path, msg))?;
    let ascii_domain = idna::domain_to_ascii(domain)
        .map_err(|e| key_error(domain_dir, format!("domain {domain:?} is not valid: {e}")))?;
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(key_error(&path, "no such DKIM key"))
        }
        _ => load_key(&path, &ascii_domain, selector),
    }
}

/// `<selector>._domainkey.<domain>.`, fully qualified (RFC 6376 §3.6.2.1).
pub fn record_name(key: &DkimKey) -> String {
    format!("{}._domainkey.{}.", key.selector, key.domain)
}

/// A TXT value cut into character-strings of at most 255 octets (RFC 1035 §3.3.14); RFC 6376
/// §3.6.2.2 joins them back without separator. Cuts fall on character boundaries.
pub fn txt_strings(value: &str) -> Vec<&str> {
    const MAX: usize = 255;
    let mut strings = Vec::new();
    let mut rest = value;
    while rest.len() > MAX {
        // A char is at most 4 bytes long, so a boundary lies within the last 4 positions.
        let cut = (MAX - 3..=MAX)
            .rev()
            .find(|&i| rest.is_char_boundary(i))
            .unwrap_or(MAX);
        let (head, tail) = rest.split_at(cut);
        strings.push(head);
        rest = tail;
    }
    strings.push(rest);
    strings
}

/// The record as one zone-file line (RFC 1035 §5.1): name, class, type, then the value as
/// quoted character-strings, with `"` and `\` escaped.
pub fn zone_line(key: &DkimKey) -> String {
    let strings: Vec<String> = txt_strings(&dns_record(key))
        .into_iter()
        .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{} IN TXT {}", record_name(key), strings.join(" "))
}

/// The verdict on one DKIM-Signature header of a message being checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureCheck {
    /// `d=`; empty when the header could not be parsed.
    pub domain: String,
    /// `s=`; empty when the header could not be parsed.
    pub selector: String,
    pub result: crate::mailauth::inbound::DkimResult,
    /// Why it did not pass, as mail-auth says it.
    pub reason: Option<String>,
}

/// Verifies every DKIM-Signature of `message` (headers and body, CRLF), looking keys up
/// through `dns`. `None` when no header can be parsed.
pub async fn verify(dns: &crate::dns::Dns, message: &[u8]) -> Option<Vec<SignatureCheck>> {
    // Not strict, as the checks of port 25: `l=` signatures are verified (RFC 6376 §3.5).
    let parsed = mail_auth::AuthenticatedMessage::parse_with_opts(message, None, false)?;
    // mail-auth's DNS needs a tokio reactor (STACK.md).
    let outputs = async_compat::Compat::new(dns.authenticator().verify_dkim(&parsed)).await;
    Some(outputs.iter().map(signature_check).collect())
}

fn signature_check(output: &mail_auth::DkimOutput<'_>) -> SignatureCheck {
    use crate::mailauth::inbound::DkimResult as R;
    use mail_auth::DkimResult as M;
    let mismatch = mail_auth::Error::Dkim(mail_auth::dkim::DkimError::FailedBodyHashMatch);
    let (result, reason) = match output.result() {
        M::Pass => (R::Pass, None),
        // mail-auth 0.13.3 says `neutral` for a body hash mismatch; RFC 6376 §3.7 makes it a
        // PERMFAIL, which RFC 8601 §2.7.1 records as `fail` (as dkimpy and inbound.rs do).
        M::Neutral(e) if *e == mismatch => (R::Fail, Some(e.to_string())),
        M::Neutral(e) => (R::Neutral, Some(e.to_string())),
        M::Fail(e) => (R::Fail, Some(e.to_string())),
        M::PermError(e) => (R::PermError, Some(e.to_string())),
        M::TempError(e) => (R::TempError, Some(e.to_string())),
        M::None => (R::None, None),
    };
    let (domain, selector) = output
        .signature()
        .map(|s| (s.d.to_ascii_lowercase(), s.s.clone()))
        .unwrap_or_default();
    SignatureCheck {
        domain,
        selector,
        result,
        reason,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::Ed25519KeyPair;
    use mail_auth::common::cache::NoCache;
    use mail_auth::common::headers::Writable as _;
    use mail_auth::common::parse::TxtRecordParser as _;
    use mail_auth::common::verify::DomainKey;
    use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters};
    use mail_auth::{ResolverCache, Txt};
    use std::borrow::Borrow;
    use std::collections::HashMap;
    use std::hash::Hash;
    use std::sync::{Arc, OnceLock};

    const DOMAIN: &str = "example.test";

    const MESSAGE: &str = concat!(
        "From: Alice <alice@example.test>\r\n",
        "To: bob@example.org\r\n",
        "Subject: DKIM test\r\n",
        "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n",
        "Message-ID: <dkim-test@example.test>\r\n",
        "X-Unsigned: not in h=\r\n",
        "\r\n",
        "Hello Bob,\r\n",
        "  this line starts with spaces.\r\n",
        "\r\n",
    );

    /// The body ends in whitespace-only lines: the case unpatched mail-auth 0.13.3's relaxed
    /// body canonicalization gets wrong.
    const TRAILING_WSP_MESSAGE: &str = concat!(
        "From: alice@example.test\r\n",
        "To: bob@example.org\r\n",
        "Subject: trailing whitespace\r\n",
        "\r\n",
        "Hello\r\n",
        "  \r\n",
        "\t\r\n",
        " \t \r\n",
    );

    /// WSP runs inside lines, WSP at the start and at the end of lines, a whitespace-only line
    /// in the middle, and empty lines at the end.
    const WSP_LINES_MESSAGE: &str = concat!(
        "From: alice@example.test\r\n",
        "To: bob@example.org\r\n",
        "Subject: whitespace in lines\r\n",
        "\r\n",
        "Hello  Bob,\t \r\n",
        " \t indented\t\tand  spaced \r\n",
        " \t\r\n",
        "end\t\r\n",
        "\r\n",
        "\r\n",
    );

    /// `signed` with its body's whitespace changed in ways relaxed canonicalization ignores
    /// (RFC 6376 §3.4.4): each SP becomes SP TAB SP, every line gets trailing WSP, and
    /// whitespace-only lines are added at the end.
    fn rewhitespaced(signed: &str) -> String {
        let (head, body) = signed.split_once("\r\n\r\n").expect("a body");
        let body: String = body
            .split_inclusive("\r\n")
            .map(|line| {
                let text = line.strip_suffix("\r\n").unwrap_or(line);
                format!("{} \t\r\n", text.replace(' ', " \t "))
            })
            .collect();
        format!("{head}\r\n\r\n{body} \r\n\t\r\n\r\n")
    }

    fn pem(der: &[u8]) -> String {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
        for chunk in body.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(chunk));
            out.push('\n');
        }
        out.push_str("-----END PRIVATE KEY-----\n");
        out
    }

    /// One RSA 2048 key for the whole test binary: generating it is the slow part.
    fn rsa_pem() -> &'static str {
        static PEM: OnceLock<String> = OnceLock::new();
        PEM.get_or_init(|| {
            let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA keygen");
            pem(pair.as_der().expect("PKCS#8 encoding").as_ref())
        })
    }

    /// PKCS#8 v2 (with the public key), as aws-lc-rs and ring write it.
    fn ed25519_pem() -> String {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("Ed25519 keygen");
        pem(doc.as_ref())
    }

    /// PKCS#8 v1 (no public key), as `openssl genpkey -algorithm ed25519` writes it.
    fn ed25519_v1_pem() -> String {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("Ed25519 keygen");
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).expect("parse");
        pem(pair.to_pkcs8v1().expect("v1 encoding").as_ref())
    }

    fn domain_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).expect("write key file");
        }
        dir
    }

    fn both_keys() -> (tempfile::TempDir, Vec<DkimKey>) {
        let dir = domain_dir(&[
            ("dkim:rsa.pem", rsa_pem()),
            ("dkim:ed.pem", &ed25519_pem()),
            ("users", "not a key, not ours"),
        ]);
        let keys = load_keys(dir.path(), DOMAIN).expect("load keys");
        (dir, keys)
    }

    fn signed(keys: &[DkimKey], message: &str) -> String {
        let headers = sign(keys, message.as_bytes()).expect("sign");
        format!("{headers}{message}")
    }

    #[test]
    fn loads_rsa_and_ed25519_sorted_by_selector() {
        let (_dir, keys) = both_keys();
        let got: Vec<_> = keys.iter().map(|k| (k.selector.as_str(), k.kind)).collect();
        assert_eq!(
            got,
            [
                ("ed", KeyKind::Ed25519),
                ("rsa", KeyKind::Rsa { bits: 2048 })
            ]
        );
        assert!(keys.iter().all(|k| k.domain == DOMAIN));
    }

    #[test]
    fn selectors() {
        let cases = [
            ("dkim:sel.pem", Some(true)),
            ("dkim:2024-01_a.b.pem", Some(true)),
            ("dkim:bad sel.pem", Some(false)),
            ("dkim:.pem", Some(false)),
            ("dkim:...pem", Some(false)),
            ("dkim:a..b.pem", Some(false)),
            ("dkim:.hidden.pem", Some(false)),
            ("dkim:sel/../x.pem", Some(false)),
            ("dkim:sél.pem", Some(false)),
            ("dkim:sel.pem~", None),
            ("sel.pem", None),
            ("users", None),
        ];
        for (name, want) in cases {
            let got = selector_of(name).map(|s| check_selector(s).is_ok());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn bad_selector_file_names_the_file() {
        let dir = domain_dir(&[("dkim:bad sel.pem", rsa_pem())]);
        let err = load_keys(dir.path(), DOMAIN).expect_err("bad selector");
        let text = err.to_string();
        assert!(
            text.contains("dkim:bad sel.pem") && text.contains("selector"),
            "{text}"
        );
    }

    #[test]
    fn key_errors_name_the_file_and_the_problem() {
        let pkcs1 =
            "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAK\n-----END RSA PRIVATE KEY-----\n";
        let garbage_pkcs8 = "-----BEGIN PRIVATE KEY-----\nAAECAwQF\n-----END PRIVATE KEY-----\n";
        let cases = [
            ("this is not a key\n", "no PEM private key"),
            ("", "no PEM private key"),
            (pkcs1, "PKCS#1"),
            (garbage_pkcs8, "not an RSA or Ed25519"),
        ];
        for (content, want) in cases {
            let dir = domain_dir(&[("dkim:sel.pem", content)]);
            let err = load_keys(dir.path(), DOMAIN).expect_err(want);
            let DkimError::Key { path, msg } = &err else {
                panic!("not a key error: {err}");
            };
            assert_eq!(path, &dir.path().join("dkim:sel.pem"));
            assert!(msg.contains(want), "{msg:?} lacks {want:?}");
            assert!(err.to_string().contains("dkim:sel.pem"), "{err}");
        }
    }

    #[test]
    fn short_rsa_key_is_refused_with_a_reason() {
        if !crate::testsupport::OPENSSL.available() {
            return;
        }
        let pem = openssl_rsa_1024();
        let dir = domain_dir(&[("dkim:old.pem", &pem)]);
        let err = load_keys(dir.path(), DOMAIN).expect_err("1024 bits");
        assert!(err.to_string().contains("2048 bits"), "{err}");
    }

    fn openssl_rsa_1024() -> String {
        let out = std::process::Command::new(crate::testsupport::OPENSSL.program)
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:1024",
            ])
            .output()
            .expect("run openssl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "openssl genpkey: {stderr}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn unreadable_key_file_is_an_error() {
        // A directory with a key's name cannot be read as a file (even by root).
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("dkim:sel.pem")).expect("mkdir");
        let err = load_keys(dir.path(), DOMAIN).expect_err("unreadable");
        assert!(err.to_string().contains("cannot read"), "{err}");
    }

    #[test]
    fn missing_folder_has_no_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = load_keys(&dir.path().join("nope"), DOMAIN).expect("no folder is fine");
        assert!(keys.is_empty());
        assert_eq!(sign(&keys, MESSAGE.as_bytes()).expect("sign"), "");
    }

    #[test]
    fn unicode_domain_signs_as_a_labels() {
        let dir = domain_dir(&[("dkim:ed.pem", &ed25519_pem())]);
        let keys = load_keys(dir.path(), "bücher.example").expect("load");
        assert_eq!(keys[0].domain, "xn--bcher-kva.example");
        let headers = sign(&keys, MESSAGE.as_bytes()).expect("sign");
        assert!(headers.contains("d=xn--bcher-kva.example;"), "{headers}");
    }

    #[test]
    fn dns_records() {
        let (_dir, keys) = both_keys();
        let ed = dns_record(&keys[0]);
        let rsa = dns_record(&keys[1]);
        let b64_len = |r: &str, prefix: &str| {
            let p = r.strip_prefix(prefix).expect(prefix);
            base64::engine::general_purpose::STANDARD
                .decode(p)
                .expect("base64")
                .len()
        };
        assert_eq!(b64_len(&ed, "v=DKIM1; k=ed25519; p="), 32);
        // A 2048-bit SubjectPublicKeyInfo is 294 bytes (`MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A…`).
        assert_eq!(b64_len(&rsa, "v=DKIM1; k=rsa; p="), 294);
        assert!(
            rsa.starts_with("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A"),
            "{rsa}"
        );
    }

    #[test]
    fn header_shape() {
        let (_dir, keys) = both_keys();
        let headers = sign(&keys, MESSAGE.as_bytes()).expect("sign");
        let lines: Vec<&str> = headers.split_inclusive("\r\n").collect();
        let starts: Vec<&str> = lines
            .iter()
            .filter(|l| !l.starts_with('\t'))
            .copied()
            .collect();
        assert_eq!(starts.len(), 2, "{headers}");
        // One character too long for a line with c=relaxed/relaxed: folded before c=.
        assert!(headers.starts_with(
            "DKIM-Signature: v=1; a=ed25519-sha256; s=ed; d=example.test;\r\n\tc=relaxed/relaxed;\r\n\th="
        ));
        assert!(starts[1].starts_with(
            "DKIM-Signature: v=1; a=rsa-sha256; s=rsa; d=example.test; c=relaxed/relaxed;"
        ));
        assert!(headers.ends_with(";\r\n"));
        assert!(
            lines.iter().all(|l| l.ends_with("\r\n") && l.len() <= 80),
            "{headers}"
        );
        // From appears twice in h= (once present, once over-signed), X-Unsigned never.
        let unfolded = headers.replace("\r\n\t", "");
        let h = unfolded
            .split("h=")
            .nth(1)
            .and_then(|s| s.split(';').next())
            .expect("h=");
        assert_eq!(
            h.split(':')
                .filter(|n| n.eq_ignore_ascii_case("From"))
                .count(),
            2,
            "{h}"
        );
        assert!(!h.contains("X-Unsigned"), "{h}");
    }

    #[test]
    fn keys_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<DkimKey>();
    }

    #[test]
    fn signing_key_rebuilds_the_same_key() {
        let (_dir, keys) = both_keys();
        for key in &keys {
            let fresh = key.signing_key().expect("rebuild");
            let signer = DkimSigner::from_key(fresh)
                .domain(&key.domain)
                .selector(&key.selector)
                .headers(["From"]);
            let signature = signer.sign(MESSAGE.as_bytes()).expect("sign");
            let message = format!("{}{MESSAGE}", signature.to_header());
            assert_eq!(
                mail_auth_verify(&keys, &message),
                vec![true],
                "{}",
                key.selector
            );
        }
    }

    /// A TXT cache pre-seeded with our records, so mail-auth never asks DNS.
    /// Also serves the ARC tests (`mailauth/arc.rs`).
    pub(crate) struct StaticTxt(HashMap<Box<str>, Txt>);

    impl StaticTxt {
        pub(crate) fn new<'a>(keys: impl IntoIterator<Item = &'a DkimKey>) -> StaticTxt {
            let records = keys.into_iter().map(|k| {
                let name = format!("{}._domainkey.{}.", k.selector, k.domain);
                let key = DomainKey::parse(dns_record(k).as_bytes()).expect("our record parses");
                (name.into_boxed_str(), Txt::DomainKey(Arc::new(key)))
            });
            StaticTxt(records.collect())
        }
    }

    impl ResolverCache<Box<str>, Txt> for StaticTxt {
        fn get<Q>(&self, name: &Q) -> Option<Txt>
        where
            Box<str>: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            self.0.get(name).cloned()
        }
        fn remove<Q>(&self, _: &Q) -> Option<Txt>
        where
            Box<str>: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            None
        }
        fn insert(&self, _: Box<str>, _: Txt, _: std::time::Instant) {}
    }

    /// mail-auth's verdict for each DKIM-Signature of `message`, in order.
    fn mail_auth_verify(keys: &[DkimKey], message: &str) -> Vec<bool> {
        mail_auth_verify_with(keys, message, true)
    }

    /// `strict`: signatures with `l=` are refused (mail-auth's default); else verified, as the
    /// checks of port 25 and `util dkim-verify` do.
    fn mail_auth_verify_with(keys: &[DkimKey], message: &str, strict: bool) -> Vec<bool> {
        let resolver = MessageAuthenticator::new_system_conf().expect("resolver");
        let cache = StaticTxt::new(keys);
        let parsed =
            AuthenticatedMessage::parse_with_opts(message.as_bytes(), None, strict).expect("parse");
        let params = Parameters::new(&parsed).with_txt_cache(&cache);
        let params: Parameters<'_, _, _, NoCache<_, _>, NoCache<_, _>, NoCache<_, _>, _> = params;
        let outputs = smol::block_on(resolver.verify_dkim(params));
        outputs
            .iter()
            .map(|o| *o.result() == DkimResult::Pass)
            .collect()
    }

    #[test]
    fn mail_auth_verifies_our_signatures() {
        let (_dir, keys) = both_keys();
        for message in [MESSAGE, TRAILING_WSP_MESSAGE, WSP_LINES_MESSAGE] {
            let signed = signed(&keys, message);
            assert_eq!(
                mail_auth_verify(&keys, &signed),
                vec![true, true],
                "{signed}"
            );
            // Relaxed body canonicalization: whitespace changes do not matter.
            let rewhitespaced = rewhitespaced(&signed);
            assert_ne!(rewhitespaced, signed);
            assert_eq!(
                mail_auth_verify(&keys, &rewhitespaced),
                vec![true, true],
                "{rewhitespaced}"
            );
            // A changed body fails both.
            let tampered = signed.replacen("Hello", "Jello", 1);
            assert_eq!(mail_auth_verify(&keys, &tampered), vec![false, false]);
        }
    }

    /// RFC 6376 §3.4.4: whitespace-only lines become empty and trailing empty lines go,
    /// leaving `Hello CRLF`. Unpatched mail-auth 0.13.3 kept three lines; this fails if the
    /// patched copy (vendor/mail-auth) is ever dropped for an unfixed release.
    #[test]
    fn relaxed_body_canonicalization_follows_rfc_6376() {
        let mut canonical = Vec::new();
        Canonicalization::Relaxed
            .canonical_body(b"Hello\r\n  \r\n\t\r\n", 0)
            .write(&mut canonical);
        assert_eq!(canonical, b"Hello\r\n", "RFC 6376 §3.4.4");
        let mut simple = Vec::new();
        Canonicalization::Simple
            .canonical_body(b"Hello\r\n  \r\n\t\r\n\r\n\r\n", 0)
            .write(&mut simple);
        assert_eq!(simple, b"Hello\r\n  \r\n\t\r\n", "RFC 6376 §3.4.3");
    }

    /// dkimpy's verdict for each DKIM-Signature, or None when python3-dkim is missing (the
    /// test then returns: `testsupport` has failed it or reported the skip).
    fn dkimpy_verify(keys: &[DkimKey], message: &str) -> Option<Vec<bool>> {
        dkimpy_run(keys, message).map(|(verdicts, _)| verdicts)
    }

    /// dkimpy's verdicts and its complaints (stderr).
    fn dkimpy_run(keys: &[DkimKey], message: &str) -> Option<(Vec<bool>, String)> {
        const SCRIPT: &str = r#"
d = dkim.DKIM(msg)
n = sum(1 for h in d.headers if h[0].lower() == b"dkim-signature")
def verdict(i):
    try:
        return "1" if d.verify(idx=i, dnsfunc=dnsfunc) else "0"
    except dkim.DKIMException as e:
        print(f"signature {i}: {e}", file=sys.stderr)
        return "0"
print(" ".join(verdict(i) for i in range(n)))
"#;
        let keys: Vec<&DkimKey> = keys.iter().collect();
        let (stdout, complaints) = run_dkimpy(SCRIPT, &keys, message)?;
        let verdicts = stdout.split_whitespace().map(|v| v == "1").collect();
        Some((verdicts, complaints))
    }

    /// Runs `script` under dkimpy with `msg` (the message's bytes), `sys` and `dkim` imported
    /// and `dnsfunc` answering for `keys`' records; returns stdout and stderr, or None when
    /// python3-dkim (or python3-nacl, for Ed25519) is missing, after `testsupport` has failed
    /// the test or reported its skip. A failing script fails the test.
    pub(crate) fn run_dkimpy(
        script: &str,
        keys: &[&DkimKey],
        message: &str,
    ) -> Option<(String, String)> {
        const PYTHON: &str = crate::testsupport::DKIMPY.program;
        const PRELUDE: &str = r#"
import sys, dkim
msg = open(sys.argv[1], "rb").read()
records = dict(zip(sys.argv[2::2], sys.argv[3::2]))
def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    record = records.get(name)
    return record.encode() if record is not None else None
"#;
        if !crate::testsupport::DKIMPY.available() {
            return None;
        }
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), message).expect("write message");
        let mut command = std::process::Command::new(PYTHON);
        command
            .args(["-c", &format!("{PRELUDE}{script}")])
            .arg(file.path());
        for key in keys {
            command.arg(format!("{}._domainkey.{}.", key.selector, key.domain));
            command.arg(dns_record(key));
        }
        let out = command.output().expect("run python3");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stdout}{stderr}");
        Some((stdout, stderr))
    }

    #[test]
    fn dkimpy_verifies_our_signatures() {
        let (_dir, keys) = both_keys();
        let cases = [
            ("plain", MESSAGE),
            ("trailing whitespace", TRAILING_WSP_MESSAGE),
            ("whitespace in lines", WSP_LINES_MESSAGE),
        ];
        for (name, message) in cases {
            let signed = signed(&keys, message);
            assert!(signed.contains("c=relaxed/relaxed;"), "{signed}");
            let Some(verdicts) = dkimpy_verify(&keys, &signed) else {
                return;
            };
            assert_eq!(verdicts, [true, true], "{name}:\n{signed}");
            // dkimpy's relaxed body canonicalization ignores these changes too.
            let rewhitespaced = rewhitespaced(&signed);
            let verdicts = dkimpy_verify(&keys, &rewhitespaced).unwrap_or_default();
            assert_eq!(
                verdicts,
                [true, true],
                "{name} rewhitespaced:\n{rewhitespaced}"
            );
            let tampered = signed.replacen("Hello", "Jello", 1);
            let verdicts = dkimpy_verify(&keys, &tampered).unwrap_or_default();
            assert_eq!(verdicts, [false, false], "{name} tampered");
        }
    }

    #[test]
    fn dkimpy_verifies_openssl_style_ed25519_key() {
        let dir = domain_dir(&[("dkim:v1.pem", &ed25519_v1_pem())]);
        let keys = load_keys(dir.path(), DOMAIN).expect("PKCS#8 v1 Ed25519 loads");
        let signed = signed(&keys, MESSAGE);
        assert_eq!(mail_auth_verify(&keys, &signed), [true]);
        if let Some(verdicts) = dkimpy_verify(&keys, &signed) {
            assert_eq!(verdicts, [true]);
        }
    }

    /// Selectors of every length from 1 to 12 move the `b=` value across the fold
    /// positions, including the one where mail-auth folds before the final `;`.
    #[test]
    fn every_fold_position_interoperates() {
        let names: Vec<String> = (1..=12)
            .flat_map(|n| {
                [
                    format!("r{}", "x".repeat(n - 1)),
                    format!("e{}", "y".repeat(n - 1)),
                ]
            })
            .map(|sel| format!("dkim:{sel}.pem"))
            .collect();
        let ed = ed25519_pem();
        let files: Vec<(&str, &str)> = names
            .iter()
            .map(|name| {
                (
                    name.as_str(),
                    if name.starts_with("dkim:r") {
                        rsa_pem()
                    } else {
                        &ed
                    },
                )
            })
            .collect();
        let dir = domain_dir(&files);
        let keys = load_keys(dir.path(), DOMAIN).expect("load");
        let signed = signed(&keys, MESSAGE);
        assert!(!signed.contains("\r\n\t;"), "{signed}");
        assert_eq!(mail_auth_verify(&keys, &signed), vec![true; 24]);
        if let Some(verdicts) = dkimpy_verify(&keys, &signed) {
            assert_eq!(verdicts, vec![true; 24], "{signed}");
        }
    }

    #[test]
    fn long_first_line_is_folded_and_still_verifies() {
        let dir = domain_dir(&[
            ("dkim:selector-2024-rotation-b.pem", rsa_pem()),
            ("dkim:ed.pem", &ed25519_pem()),
        ]);
        let keys = load_keys(dir.path(), "mail.a-rather-long-domain-name.example").expect("load");
        let headers = sign(&keys, MESSAGE.as_bytes()).expect("sign");
        assert!(
            headers
                .split_inclusive("\r\n")
                .all(|l| l.ends_with("\r\n") && l.len() <= 80),
            "{headers}"
        );
        // Both had to be folded, before d=.
        assert_eq!(
            headers
                .matches(";\r\n\td=mail.a-rather-long-domain-name.example; c=relaxed/relaxed;\r\n")
                .count(),
            2,
            "{headers}"
        );
        let signed = format!("{headers}{MESSAGE}");
        assert_eq!(mail_auth_verify(&keys, &signed), [true, true], "{signed}");
        if let Some(verdicts) = dkimpy_verify(&keys, &signed) {
            assert_eq!(verdicts, [true, true], "{signed}");
        }
    }

    #[test]
    fn first_line_folds_before_the_tag_that_overflows() {
        let short = "DKIM-Signature: v=1; a=rsa-sha256; s=s; d=example.test; c=relaxed/relaxed;\r\n\th=From;\r\n";
        assert_eq!(fold_first_line(short.to_string()), short);
        let long = format!(
            "DKIM-Signature: v=1; a=ed25519-sha256; s={}; d=example.test; c=relaxed/relaxed;\r\n\th=From;\r\n",
            "s".repeat(40)
        );
        let want = format!(
            "DKIM-Signature: v=1; a=ed25519-sha256;\r\n\ts={}; d=example.test;\r\n\tc=relaxed/relaxed;\r\n\th=From;\r\n",
            "s".repeat(40)
        );
        assert_eq!(fold_first_line(long), want);
    }

    #[test]
    fn final_semicolon_moves_up() {
        let cases = [
            ("X: b=AAAA\r\n\tBBBB\r\n\t;\r\n", "X: b=AAAA\r\n\tBBBB;\r\n"),
            ("X: b=AAAA\r\n\tBBBB;\r\n", "X: b=AAAA\r\n\tBBBB;\r\n"),
        ];
        for (input, want) in cases {
            assert_eq!(keep_final_semicolon_on_the_b_line(input.to_string()), want);
        }
    }

    /// A signature with `l=` (mail-auth's `body_length`) counts octets of the canonicalized
    /// body (RFC 6376 §3.5), as dkimpy does: it verifies there, and text appended after
    /// signing is outside of it.
    #[test]
    fn dkimpy_verifies_relaxed_body_length_signatures() {
        let (_dir, keys) = both_keys();
        for message in [TRAILING_WSP_MESSAGE, WSP_LINES_MESSAGE] {
            let signer = DkimSigner::from_key(keys[0].signing_key().expect("key"))
                .domain(DOMAIN)
                .selector(&keys[0].selector)
                .headers(["From", "To", "Subject"])
                .body_canonicalization(Canonicalization::Relaxed)
                .body_length(true);
            let signature = signer.sign(message.as_bytes()).expect("sign");
            let body = message.split_once("\r\n\r\n").expect("a body").1;
            let mut canonical = Vec::new();
            Canonicalization::Relaxed
                .canonical_body(body.as_bytes(), 0)
                .write(&mut canonical);
            assert_eq!(signature.l, canonical.len() as u64, "{message:?}");
            assert_ne!(signature.l, body.len() as u64, "{message:?}");
            let signed = format!("{}{message}", signature.to_header());
            let appended = format!("{signed}-- \r\nappended by a list\r\n");
            assert_eq!(mail_auth_verify_with(&keys[..1], &signed, false), [true]);
            assert_eq!(mail_auth_verify_with(&keys[..1], &appended, false), [true]);
            if let Some(verdicts) = dkimpy_verify(&keys[..1], &signed) {
                assert_eq!(verdicts, [true], "{signed}");
                let verdicts = dkimpy_verify(&keys[..1], &appended).unwrap_or_default();
                assert_eq!(verdicts, [true], "{appended}");
            }
        }
    }
}

#[cfg(test)]
mod tooling_tests {
    use super::*;

    const DOMAIN: &str = "example.test";

    fn dir_with(selector: &str, pem: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(key_path(dir.path(), selector), pem).expect("write key");
        dir
    }

    #[test]
    fn algorithm_names() {
        let cases = [
            ("rsa2048", Some(Algorithm::Rsa2048)),
            ("rsa3072", Some(Algorithm::Rsa3072)),
            ("ed25519", Some(Algorithm::Ed25519)),
            ("rsa1024", None),
            ("rsa", None),
            ("", None),
        ];
        for (name, want) in cases {
            assert_eq!(Algorithm::parse(name), want, "{name}");
        }
        assert!(
            Algorithm::NAMES
                .iter()
                .all(|n| Algorithm::parse(n).is_some())
        );
    }

    /// Every algorithm makes a PKCS#8 PEM that the server's loader takes, of the right kind.
    #[test]
    fn generated_keys_load() {
        let cases = [
            (
                Algorithm::Rsa2048,
                KeyKind::Rsa { bits: 2048 },
                "v=DKIM1; k=rsa; p=",
            ),
            (
                Algorithm::Rsa3072,
                KeyKind::Rsa { bits: 3072 },
                "v=DKIM1; k=rsa; p=",
            ),
            (
                Algorithm::Ed25519,
                KeyKind::Ed25519,
                "v=DKIM1; k=ed25519; p=",
            ),
        ];
        for (algorithm, kind, prefix) in cases {
            let pem = generate_pem(algorithm).expect("generate");
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
            assert!(pem.ends_with("\n-----END PRIVATE KEY-----\n"), "{pem}");
            assert!(pem.lines().all(|l| l.len() <= 64), "{pem}");
            let dir = dir_with("sel", &pem);
            let key = load_selector_key(dir.path(), DOMAIN, "sel").expect("load");
            assert_eq!(key.kind, kind, "{algorithm:?}");
            assert!(dns_record(&key).starts_with(prefix), "{algorithm:?}");
            // Two keys are never the same.
            assert_ne!(generate_pem(algorithm).expect("generate"), pem);
        }
    }

    #[test]
    fn selector_validation() {
        let long_domain = format!(
            "{}.{}.{}.example",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63)
        );
        let cases: [(&str, &str, bool); 14] = [
            ("20240105", DOMAIN, true),
            ("sel-1_a.b", DOMAIN, true),
            ("x", "bücher.example", true),
            ("../x", DOMAIN, false),
            ("a/b", DOMAIN, false),
            ("..", DOMAIN, false),
            ("a..b", DOMAIN, false),
            ("", DOMAIN, false),
            ("sp ace", DOMAIN, false),
            ("nul\0", DOMAIN, false),
            ("sél", DOMAIN, false),
            ("semi;colon", DOMAIN, false),
            (&"l".repeat(64), DOMAIN, false),
            // 50 + 12 + 199 characters: too long a record name.
            (&"s".repeat(50), &long_domain, false),
        ];
        for (selector, domain, ok) in cases {
            assert_eq!(
                validate_selector(selector, domain).is_ok(),
                ok,
                "{selector:?} @ {domain}"
            );
        }
        let err = validate_selector(&"s".repeat(50), &long_domain).expect_err("too long");
        assert!(err.contains("253"), "{err}");
    }

    #[test]
    fn txt_splitting() {
        let two_byte = "é".repeat(200); // 400 bytes; no cut may fall inside a character
        let cases: [(String, Vec<usize>); 6] = [
            (String::new(), vec![0]),
            ("a".repeat(10), vec![10]),
            ("a".repeat(255), vec![255]),
            ("a".repeat(256), vec![255, 1]),
            ("a".repeat(600), vec![255, 255, 90]),
            (two_byte.clone(), vec![254, 146]),
        ];
        for (value, lens) in cases {
            let strings = txt_strings(&value);
            let got: Vec<usize> = strings.iter().map(|s| s.len()).collect();
            assert_eq!(got, lens, "{} bytes", value.len());
            assert_eq!(strings.concat(), value);
        }
    }

    #[test]
    fn zone_lines() {
        let cases = [(Algorithm::Rsa2048, 2), (Algorithm::Ed25519, 1)];
        for (algorithm, n_strings) in cases {
            let dir = dir_with("s1", &generate_pem(algorithm).expect("generate"));
            let key = load_selector_key(dir.path(), "bücher.example", "s1").expect("load");
            let line = zone_line(&key);
            let (head, strings) = line.split_once(" IN TXT ").expect(&line);
            assert_eq!(head, "s1._domainkey.xn--bcher-kva.example.");
            let parts: Vec<&str> = strings.split(' ').collect();
            // `v=DKIM1;` `k=rsa;` `p=...` contain spaces: rejoin the quoted strings.
            let quoted: Vec<String> = strings
                .split("\" \"")
                .map(|s| s.trim_matches('"').to_string())
                .collect();
            assert!(parts.len() >= n_strings, "{line}");
            assert_eq!(quoted.len(), n_strings, "{line}");
            assert!(quoted.iter().all(|s| s.len() <= 255), "{line}");
            assert_eq!(quoted.concat(), dns_record(&key), "{line}");
            assert!(!line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn missing_and_bad_selector_keys_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            ("nope", "no such DKIM key"),
            ("../x", "invalid DKIM selector"),
        ];
        for (selector, want) in cases {
            let err = load_selector_key(dir.path(), DOMAIN, selector).expect_err(selector);
            let text = err.to_string();
            assert!(text.contains(want), "{text}");
            assert!(text.contains(&format!("dkim:{selector}.pem")), "{text}");
        }
        let dir = dir_with("junk", "not a key\n");
        let err = load_selector_key(dir.path(), DOMAIN, "junk").expect_err("junk");
        assert!(err.to_string().contains("no PEM private key"), "{err}");
    }

    /// `verify` through a real resolver: our signatures pass, a changed body fails (not
    /// mail-auth's `neutral`), a selector without a record is an error, unsigned mail has no
    /// verdict.
    #[test]
    fn verify_through_dns() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (selector, algorithm) in [("ed", Algorithm::Ed25519), ("rsa", Algorithm::Rsa2048)] {
            let pem = generate_pem(algorithm).expect("generate");
            std::fs::write(key_path(dir.path(), selector), pem).expect("write");
        }
        let keys = load_keys(dir.path(), "sign.test").expect("load");
        let mut args: Vec<String> = keys
            .iter()
            .map(|k| {
                let name = record_name(k);
                let name = name.trim_end_matches('.');
                format!(
                    "--txt-record={name},{}",
                    txt_strings(&dns_record(k)).join(",")
                )
            })
            .collect();
        args.push("--host-record=sign.test,127.0.0.1".to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let Some(server) = crate::dns::test_server::start(&args) else {
            return;
        };
        let dns = crate::dns::Dns::new(&[server.addr]).expect("resolver");
        let message = "From: a@sign.test\r\nSubject: hi\r\n\r\nHello\r\n";
        let signed = format!(
            "{}{message}",
            sign(&keys, message.as_bytes()).expect("sign")
        );
        let orphan = dir.path().join("orphan");
        std::fs::create_dir(&orphan).expect("mkdir");
        std::fs::write(
            key_path(&orphan, "gone"),
            generate_pem(Algorithm::Ed25519).expect("gen"),
        )
        .expect("write");
        let gone = load_keys(&orphan, "sign.test").expect("load");
        let unpublished = format!(
            "{}{message}",
            sign(&gone, message.as_bytes()).expect("sign")
        );
        use crate::mailauth::inbound::DkimResult as R;
        let cases = [
            (
                "signed",
                signed.clone(),
                vec![("ed", R::Pass), ("rsa", R::Pass)],
            ),
            (
                "tampered",
                signed.replacen("Hello", "Jello", 1),
                vec![("ed", R::Fail), ("rsa", R::Fail)],
            ),
            ("no record", unpublished, vec![("gone", R::PermError)]),
            ("unsigned", message.to_string(), vec![]),
        ];
        for (name, input, want) in cases {
            let checks = smol::block_on(verify(&dns, input.as_bytes())).expect(name);
            let got: Vec<_> = checks
                .iter()
                .map(|c| (c.selector.as_str(), c.result))
                .collect();
            assert_eq!(got, want, "{name}: {checks:?}");
            assert!(checks.iter().all(|c| c.domain == "sign.test"), "{name}");
            for c in &checks {
                assert_eq!(c.reason.is_some(), c.result != R::Pass, "{name}: {c:?}");
            }
        }
        let tampered = smol::block_on(verify(&dns, signed.replacen("Hello", "J", 1).as_bytes()));
        let reason = tampered
            .and_then(|c| c[0].reason.clone())
            .unwrap_or_default();
        assert!(reason.contains("body hash"), "{reason}");
    }
}
