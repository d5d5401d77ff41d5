//! Authentication of mail received on port 25 (SPEC §7): SPF on the envelope, DKIM on every
//! signature, DMARC with alignment, all through mail-auth and the process's one resolver, and
//! the Authentication-Results header (RFC 8601) that records them. Policy (reject or tag) is
//! the caller's; this module only says what happened.

use std::fmt;
use std::io::Read;
use std::net::IpAddr;

use async_compat::Compat;
use mail_auth::Parameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{AuthenticatedMessage, AuthenticationResults, DkimOutput, DmarcOutput, SpfOutput};

use crate::dns::Dns;
use crate::mailauth::body_hash;

/// The SMTP transaction a message arrived in.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    pub client_ip: IpAddr,
    /// The EHLO/HELO argument as the client sent it.
    pub helo: &'a str,
    /// The MAIL FROM address without angle brackets; "" for the null sender `<>`.
    pub mail_from: &'a str,
    /// Our `hostname`: the authserv-id of the header we add (RFC 8601 §2.5).
    pub hostname: &'a str,
}

/// RFC 7208 §2.6 results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpfResult {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    None,
    TempError,
    PermError,
}

/// RFC 8601 §2.7.1 results of one DKIM signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimResult {
    Pass,
    Fail,
    Neutral,
    None,
    TempError,
    PermError,
}

/// RFC 7489 §11.2 results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcResult {
    Pass,
    Fail,
    None,
    TempError,
    PermError,
}

/// The policy the From: domain asks for (RFC 7489 §6.3 `p=`/`sp=`, after `t=y` testing mode
/// has lowered it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcPolicy {
    None,
    Quarantine,
    Reject,
}

/// The verdict on one DKIM-Signature header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimCheck {
    /// `d=`; empty when the signature could not be parsed.
    pub domain: String,
    /// `s=`; empty when the signature could not be parsed.
    pub selector: String,
    pub result: DkimResult,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcCheck {
    pub result: DmarcResult,
    pub policy: DmarcPolicy,
    /// The RFC 5322 From: domain (A-labels); empty when there is none to check.
    pub from_domain: String,
    /// A DKIM signature aligned with the From: domain verified (RFC 7489 §3.1.1): the pass,
    /// if any, does not rest on SPF alone.
    pub dkim_aligned: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub spf: SpfResult,
    /// One entry per DKIM-Signature header, in header order; empty when unsigned.
    pub dkim: Vec<DkimCheck>,
    pub dmarc: DmarcCheck,
    /// One `Authentication-Results: <hostname>; spf=...; dkim=...; dmarc=...` header
    /// (RFC 8601), folded, CRLF-terminated, to prepend to the message.
    pub header: String,
}

impl Verdict {
    /// SPF `fail` (hard fail, RFC 7208 §2.6.4); `softfail` is not.
    pub fn spf_failed(&self) -> bool {
        self.spf == SpfResult::Fail
    }

    /// DMARC fail under a `p=reject` policy (RFC 7489 §6.3).
    pub fn dmarc_reject(&self) -> bool {
        self.dmarc.result == DmarcResult::Fail && self.dmarc.policy == DmarcPolicy::Reject
    }

    /// SPEC §8 DMARC-safe forwarding: DMARC passed here through SPF alone (no aligned DKIM
    /// signature) for a From: domain asking for quarantine or reject. SPF will not pass at
    /// the next hop (the envelope is rewritten with SRS), so without the From: rewrite the
    /// receiver would quarantine or reject the forwarded copy.
    pub fn dmarc_needs_from_rewrite(&self) -> bool {
        self.dmarc.result == DmarcResult::Pass
            && !self.dmarc.dkim_aligned
            && matches!(
                self.dmarc.policy,
                DmarcPolicy::Quarantine | DmarcPolicy::Reject
            )
    }

    /// Whether the envelope sender `mail_from` is who it claims to be (SPEC §8, no
    /// backscatter): SPF passed for it, or a DKIM signature of its domain (or a parent or
    /// child of it, as DMARC's relaxed alignment) verified. Only such a sender may get a
    /// bounce; the null sender never does.
    pub fn sender_authenticated(&self, mail_from: &str) -> bool {
        let Some((_, domain)) = mail_from.rsplit_once('@') else {
            return false;
        };
        self.spf == SpfResult::Pass
            || self
                .dkim
                .iter()
                .any(|d| d.result == DkimResult::Pass && aligned(&d.domain, domain))
    }
}

/// Relaxed alignment without a public suffix list: the same domain, or one a subdomain of
/// the other, never through a single label (a TLD).
fn aligned(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    let within = |child: &str, parent: &str| {
        parent.contains('.')
            && (child == parent
                || child
                    .strip_suffix(parent)
                    .is_some_and(|rest| rest.ends_with('.')))
    };
    within(&a, &b) || within(&b, &a)
}

/// Bodies up to this size are hashed right on the executor (they were just written, so they
/// come from the page cache, and a hand-off to a blocking thread costs more); larger ones on
/// a blocking thread.
const INLINE_BODY: u64 = 256 * 1024;

/// Runs SPF, DKIM and DMARC on a message received as `ctx` describes, given as its header
/// section (see [`crate::message::split()`]) and its body of `body_len` octets, which is read
/// once, in chunks, when a signature needs its hash. Never fails: DNS problems become
/// `temperror` results, an unparseable message has no DKIM or DMARC result, and a body that
/// cannot be read fails its signatures.
pub async fn check<B: Read + Send + 'static>(
    dns: &Dns,
    ctx: &Inbound<'_>,
    header_section: &[u8],
    body: B,
    body_len: u64,
) -> Verdict {
    let auth = dns.authenticator();
    let spf = check_spf(dns, ctx).await;
    // Not strict: a signature with `l=` is verified over the octets it covers, as Gmail,
    // dkimpy and OpenDKIM do (RFC 6376 §3.5), rather than refused; so a DKIM-only sender
    // that signs with `l=` is judged here as the receivers of what we forward judge it.
    let mut parsed = AuthenticatedMessage::parse_with_opts(header_section, None, false);
    if let Some(parsed) = &mut parsed {
        let requests = body_hash::requests(parsed);
        if !requests.is_empty() {
            let hash = move || body_hash::compute(&requests, body);
            let hashes = if body_len <= INLINE_BODY {
                hash()
            } else {
                smol::unblock(hash).await
            };
            match hashes {
                Ok(hashes) => body_hash::set(parsed, hashes),
                // The hashes stay those of an empty body: the signatures fail.
                Err(e) => log::error!("reading a message body for DKIM: {e}"),
            }
        }
    }
    let (dkim, dmarc, dkim_clauses, dmarc_clause) = match &parsed {
        Some(parsed) => {
            // Every mail-auth DNS call needs a tokio reactor (STACK.md).
            let dkim = Parameters::new(parsed).with_txt_cache(dns.txt_cache());
            let dkim = Compat::new(auth.verify_dkim(dkim)).await;
            let dkim = body_hash_mismatch_is_fail(parsed, dkim);
            let mail_from_domain = spf.domain().to_ascii_lowercase();
            let params = mail_auth::dmarc::verify::DmarcParameters::new(
                parsed,
                &dkim,
                &mail_from_domain,
                &spf,
            );
            let params = Parameters::new(params).with_txt_cache(dns.txt_cache());
            let dmarc = Compat::new(auth.verify_dmarc(params)).await;
            let dkim_clauses = dkim_clauses(ctx.hostname, &dkim, dmarc.domain());
            let dmarc_clause = dmarc_clause(ctx.hostname, &dmarc);
            (
                dkim.iter().map(dkim_check).collect(),
                dmarc_check(&dmarc),
                dkim_clauses,
                dmarc_clause,
            )
        }
        // No header could be parsed: nothing was signed and there is no From: to align with.
        None => (
            Vec::new(),
            DmarcCheck {
                result: DmarcResult::None,
                policy: DmarcPolicy::None,
                from_domain: String::new(),
                dkim_aligned: false,
            },
            String::new(),
            ";\r\n\tdmarc=none".to_string(),
        ),
    };
    let header = header(ctx, &spf, &dkim_clauses, &dmarc_clause);
    Verdict {
        spf: spf_result(spf.result()),
        dkim,
        dmarc,
        header,
    }
}

/// mail-auth 0.13.3 reports a body hash mismatch as `neutral`; RFC 6376 §3.7 makes it
/// PERMFAIL ("body hash did not verify"), which RFC 8601 §2.7.1 records as `fail`, as dkimpy
/// and OpenDKIM do. Tampered mail must read `dkim=fail`.
fn body_hash_mismatch_is_fail<'x>(
    parsed: &'x AuthenticatedMessage<'x>,
    outputs: Vec<DkimOutput<'x>>,
) -> Vec<DkimOutput<'x>> {
    let mismatch = mail_auth::Error::Dkim(mail_auth::dkim::DkimError::FailedBodyHashMatch);
    outputs
        .into_iter()
        .map(|output| {
            let is_mismatch =
                matches!(output.result(), mail_auth::DkimResult::Neutral(e) if *e == mismatch);
            // The output's signature is one of the parsed message's: find it there to borrow it
            // for the message's lifetime.
            let signature = output.signature().and_then(|sig| {
                parsed
                    .dkim_headers
                    .iter()
                    .find(|h| std::ptr::eq(&h.header, sig))
            });
            match (is_mismatch, signature) {
                (true, Some(h)) => DkimOutput::fail(mismatch.clone()).with_signature(&h.header),
                _ => output,
            }
        })
        .collect()
}

/// SPF on MAIL FROM, or on the HELO identity for the null sender (RFC 7208 §2.4).
async fn check_spf(dns: &Dns, ctx: &Inbound<'_>) -> SpfOutput {
    let params = if ctx.mail_from.is_empty() {
        // RFC 7208 §2.3: an address literal is not a domain; there is nothing to check.
        if ctx.helo.starts_with('[') {
            return SpfOutput::new(String::new()).with_result(mail_auth::SpfResult::None);
        }
        SpfParameters::verify_ehlo(ctx.client_ip, ctx.helo, ctx.hostname)
    } else {
        SpfParameters::verify_mail_from(ctx.client_ip, ctx.helo, ctx.hostname, ctx.mail_from)
    };
    let params = Parameters::new(params).with_txt_cache(dns.txt_cache());
    Compat::new(dns.authenticator().verify_spf(params)).await
}

/// Assembles the header from mail-auth's clauses (which sanitise the client-supplied values:
/// HELO, MAIL FROM, signature tags, From: domain), in the order spf, dkim, dmarc.
fn header(ctx: &Inbound<'_>, spf: &SpfOutput, dkim: &str, dmarc: &str) -> String {
    let spf_builder = AuthenticationResults::new(ctx.hostname);
    let spf_builder = if ctx.mail_from.is_empty() {
        // `smtp.mailfrom=<>` is no valid pvalue (RFC 8601 §2.2); the HELO is what was checked.
        spf_builder.with_spf_ehlo_result(spf, ctx.client_ip, ctx.helo)
    } else {
        spf_builder.with_spf_mailfrom_result(spf, ctx.client_ip, ctx.mail_from, ctx.helo)
    };
    let spf_clause = clauses(ctx.hostname, &spf_builder);
    // RFC 8601 §2.7.1: `none` says the message was not signed.
    let dkim = if dkim.is_empty() {
        ";\r\n\tdkim=none"
    } else {
        dkim
    };
    format!(
        "Authentication-Results: {}{spf_clause}{dkim}{dmarc}\r\n",
        ctx.hostname
    )
}

fn dkim_clauses(hostname: &str, dkim: &[DkimOutput<'_>], from_domain: &str) -> String {
    clauses(
        hostname,
        &AuthenticationResults::new(hostname).with_dkim_results(dkim, from_domain),
    )
}

fn dmarc_clause(hostname: &str, dmarc: &DmarcOutput) -> String {
    if dmarc.domain().is_empty() {
        // No single From: domain (absent, or several, RFC 7489 §6.6.1): DMARC does not apply.
        return ";\r\n\tdmarc=none".to_string();
    }
    clauses(
        hostname,
        &AuthenticationResults::new(hostname).with_dmarc_result(dmarc),
    )
}

/// The `;\r\n\tmethod=result ...` part of a builder: its Display is the authserv-id followed
/// by the clauses, so several builders can be joined under one authserv-id.
fn clauses(hostname: &str, builder: &AuthenticationResults<'_>) -> String {
    let full = builder.to_string();
    match full.strip_prefix(hostname) {
        Some(rest) => rest.to_string(),
        // Display always starts with the hostname; keep the text rather than lose a result.
        None => full,
    }
}

fn spf_result(result: mail_auth::SpfResult) -> SpfResult {
    use mail_auth::SpfResult as M;
    match result {
        M::Pass => SpfResult::Pass,
        M::Fail => SpfResult::Fail,
        M::SoftFail => SpfResult::SoftFail,
        M::Neutral => SpfResult::Neutral,
        M::TempError => SpfResult::TempError,
        M::PermError => SpfResult::PermError,
        M::None => SpfResult::None,
    }
}

fn dkim_check(output: &DkimOutput<'_>) -> DkimCheck {
    use mail_auth::DkimResult as M;
    let result = match output.result() {
        M::Pass => DkimResult::Pass,
        M::Neutral(_) => DkimResult::Neutral,
        M::Fail(_) => DkimResult::Fail,
        M::PermError(_) => DkimResult::PermError,
        M::TempError(_) => DkimResult::TempError,
        M::None => DkimResult::None,
    };
    let (domain, selector) = output
        .signature()
        .map(|s| (s.d.to_ascii_lowercase(), s.s.clone()))
        .unwrap_or_default();
    DkimCheck {
        domain,
        selector,
        result,
    }
}

fn dmarc_check(output: &DmarcOutput) -> DmarcCheck {
    use mail_auth::DmarcResult as M;
    use mail_auth::dmarc::Policy;
    let result = match output.result() {
        M::Pass => DmarcResult::Pass,
        M::Fail(_) => DmarcResult::Fail,
        M::TempError(_) => DmarcResult::TempError,
        M::PermError(_) => DmarcResult::PermError,
        M::None => DmarcResult::None,
    };
    let policy = match output.policy() {
        Policy::Reject => DmarcPolicy::Reject,
        Policy::Quarantine => DmarcPolicy::Quarantine,
        Policy::None | Policy::Unspecified => DmarcPolicy::None,
    };
    DmarcCheck {
        result,
        policy,
        from_domain: output.domain().to_string(),
        dkim_aligned: *output.dkim_result() == M::Pass,
    }
}

/// True when `header_line` (one whole header field, folded or not, with or without its CRLF)
/// is an Authentication-Results header whose authserv-id is our `hostname`: RFC 8601 §5 says
/// such headers arriving from outside are forgeries and must be removed. Other headers,
/// including ARC-Authentication-Results (covered by ARC seals), are kept.
pub fn strip_our_results(header_line: &[u8], hostname: &str) -> bool {
    let Some(colon) = header_line.iter().position(|&b| b == b':') else {
        return false;
    };
    let (name, value) = header_line.split_at(colon);
    // RFC 5322 §4.5.3 (obsolete syntax) allows white space before the colon.
    if !name
        .trim_ascii_end()
        .eq_ignore_ascii_case(b"Authentication-Results")
    {
        return false;
    }
    // `value` starts with the colon found above, so it is never empty.
    match authserv_id(&value[1..]) {
        Some(id) => same_host(&id, hostname),
        None => false,
    }
}

/// The authserv-id at the start of an A-R value (RFC 8601 §2.2: `[CFWS] value`, a token or a
/// quoted-string), unquoted.
fn authserv_id(value: &[u8]) -> Option<Vec<u8>> {
    let rest = skip_cfws(value);
    if let Some(quoted) = rest.strip_prefix(b"\"") {
        return unquote(quoted);
    }
    let end = rest
        .iter()
        .position(|&b| b == b';' || b == b'(' || b == b'"' || b.is_ascii_whitespace())
        .unwrap_or(rest.len());
    (end > 0).then(|| rest[..end].to_vec())
}

/// Skips folding white space and (nested) comments, RFC 5322 §3.2.2.
fn skip_cfws(mut s: &[u8]) -> &[u8] {
    loop {
        s = s.trim_ascii_start();
        let Some(mut rest) = s.strip_prefix(b"(") else {
            return s;
        };
        let mut depth = 1usize;
        while depth > 0 {
            match rest {
                [] => return rest,
                [b'\\', _, tail @ ..] => rest = tail,
                [b'(', tail @ ..] => {
                    depth += 1;
                    rest = tail;
                }
                [b')', tail @ ..] => {
                    depth -= 1;
                    rest = tail;
                }
                [_, tail @ ..] => rest = tail,
            }
        }
        s = rest;
    }
}

/// The content of a quoted-string whose opening quote is already consumed (RFC 5322 §3.2.4).
fn unquote(mut s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        match s {
            [] => return None,
            [b'"', ..] => return Some(out),
            [b'\\', c, tail @ ..] => {
                out.push(*c);
                s = tail;
            }
            [c, tail @ ..] => {
                out.push(*c);
                s = tail;
            }
        }
    }
}

/// Host names compare case-insensitively, and a trailing root dot changes nothing.
fn same_host(id: &[u8], hostname: &str) -> bool {
    let trim = |s: &[u8]| -> Vec<u8> { s.strip_suffix(b".").unwrap_or(s).to_vec() };
    let ours = trim(hostname.as_bytes());
    !ours.is_empty() && trim(id).eq_ignore_ascii_case(&ours)
}

impl SpfResult {
    /// The RFC 8601 result keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            SpfResult::Pass => "pass",
            SpfResult::Fail => "fail",
            SpfResult::SoftFail => "softfail",
            SpfResult::Neutral => "neutral",
            SpfResult::None => "none",
            SpfResult::TempError => "temperror",
            SpfResult::PermError => "permerror",
        }
    }
}

impl DkimResult {
    /// The RFC 8601 result keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            DkimResult::Pass => "pass",
            DkimResult::Fail => "fail",
            DkimResult::Neutral => "neutral",
            DkimResult::None => "none",
            DkimResult::TempError => "temperror",
            DkimResult::PermError => "permerror",
        }
    }
}

impl DmarcResult {
    /// The RFC 8601 result keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcResult::Pass => "pass",
            DmarcResult::Fail => "fail",
            DmarcResult::None => "none",
            DmarcResult::TempError => "temperror",
            DmarcResult::PermError => "permerror",
        }
    }
}

impl DmarcPolicy {
    /// The `p=` keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        }
    }
}

impl fmt::Display for SpfResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for DkimResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for DmarcResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for DmarcPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `check` of a message held in memory, split as the SMTP driver splits a stored one.
    async fn check_whole(dns: &Dns, ctx: &Inbound<'_>, message: &[u8]) -> Verdict {
        let split = crate::message::split(std::io::Cursor::new(message.to_vec())).unwrap();
        let body_len = (message.len() - split.header.len()) as u64;
        check(dns, ctx, &split.header, split.body, body_len).await
    }
    #[test]
    fn senders_authenticated_for_bounces() {
        let verdict = |spf, dkim: &[(&str, DkimResult)]| Verdict {
            spf,
            dkim: dkim
                .iter()
                .map(|&(domain, result)| DkimCheck {
                    domain: domain.into(),
                    selector: "s".into(),
                    result,
                })
                .collect(),
            dmarc: DmarcCheck {
                result: DmarcResult::None,
                policy: DmarcPolicy::None,
                from_domain: String::new(),
                dkim_aligned: false,
            },
            header: String::new(),
        };
        let (pass, fail) = (DkimResult::Pass, DkimResult::Fail);
        let cases = [
            (SpfResult::Pass, vec![], "a@sender.test", true),
            (SpfResult::Pass, vec![], "", false),
            (SpfResult::SoftFail, vec![], "a@sender.test", false),
            (
                SpfResult::None,
                vec![("sender.test", pass)],
                "a@Sender.Test",
                true,
            ),
            (
                SpfResult::None,
                vec![("mail.sender.test", pass)],
                "a@sender.test",
                true,
            ),
            (
                SpfResult::None,
                vec![("sender.test", pass)],
                "a@bounce.sender.test",
                true,
            ),
            (
                SpfResult::None,
                vec![("sender.test", fail)],
                "a@sender.test",
                false,
            ),
            (
                SpfResult::None,
                vec![("other.test", pass)],
                "a@sender.test",
                false,
            ),
            (
                SpfResult::None,
                vec![("test", pass)],
                "a@sender.test",
                false,
            ),
            (
                SpfResult::None,
                vec![("ender.test", pass)],
                "a@sender.test",
                false,
            ),
            (
                SpfResult::Fail,
                vec![("x.test", fail), ("sender.test", pass)],
                "a@sender.test",
                true,
            ),
        ];
        for (spf, dkim, from, want) in cases {
            assert_eq!(
                verdict(spf, &dkim).sender_authenticated(from),
                want,
                "{spf:?} {dkim:?} {from}"
            );
        }
    }

    use crate::dns::test_server::{self, DnsServer};
    use std::future::Future;
    use std::process::Command;
    use std::sync::OnceLock;
    use std::time::Duration;

    const HOSTNAME: &str = "mx.tambo.test";
    const PYTHON: &str = crate::testsupport::DKIMPY.program;
    const MESSAGE: &str = "From: Alice <alice@sender.test>\r\n\
        To: bob@tambo.test\r\n\
        Subject: hello\r\n\
        Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\
        Message-ID: <1@sender.test>\r\n\
        \r\n\
        Hi Bob.\r\n";

    /// Runs `fut` under plain smol with a deadline, as the server does.
    fn run<T>(fut: impl Future<Output = T>) -> T {
        smol::block_on(async {
            let timeout = async {
                smol::Timer::after(Duration::from_secs(60)).await;
                panic!("test deadline passed");
            };
            smol::future::or(fut, timeout).await
        })
    }

    /// An RSA key made by openssl: (PKCS#8 PEM, DKIM TXT record value). None when openssl or
    /// dkimpy (the signing tool of these tests) is missing: checked on every call, so that
    /// each test that needs them fails or reports its skip (`testsupport`).
    fn dkim_key() -> Option<&'static (String, String)> {
        use crate::testsupport::{DKIMPY, OPENSSL};
        if !(DKIMPY.available() && OPENSSL.available()) {
            return None;
        }
        static KEY: OnceLock<(String, String)> = OnceLock::new();
        Some(KEY.get_or_init(|| {
            let pem = openssl(&["genpkey", "-algorithm", "RSA"], b"");
            let der = openssl(&["pkey", "-pubout", "-outform", "DER"], &pem);
            let p = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &der);
            let record = format!("v=DKIM1; k=rsa; p={p}");
            (String::from_utf8(pem).expect("PEM is ASCII"), record)
        }))
    }

    /// openssl's output for `args` with `stdin`; a failing run fails the test.
    fn openssl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut child = Command::new(crate::testsupport::OPENSSL.program)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run openssl");
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin).expect("write to openssl");
        }
        let out = child.wait_with_output().expect("wait for openssl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "openssl {args:?}: {stderr}");
        out.stdout
    }

    /// `message` with a DKIM-Signature by dkimpy for `sel._domainkey.<domain>`.
    fn dkimpy_sign(pem: &str, domain: &str, message: &str) -> Vec<u8> {
        const SCRIPT: &str = r#"
import sys, dkim
msg = open(sys.argv[1], "rb").read()
key = open(sys.argv[2], "rb").read()
sig = dkim.sign(msg, b"sel", sys.argv[3].encode(), key,
                include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
sys.stdout.buffer.write(sig + msg)
"#;
        let dir = tempfile::tempdir().expect("tempdir");
        let (msg_path, key_path) = (dir.path().join("msg"), dir.path().join("key"));
        std::fs::write(&msg_path, message).expect("write message");
        std::fs::write(&key_path, pem).expect("write key");
        let out = Command::new(PYTHON)
            .args(["-c", SCRIPT])
            .arg(&msg_path)
            .arg(&key_path)
            .arg(domain)
            .output()
            .expect("run dkimpy");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `--txt-record=name,s1,s2,...`: dnsmasq makes each comma-separated part one
    /// character-string, which may hold at most 255 bytes (RFC 1035 §3.3).
    fn txt_arg(name: &str, value: &str) -> String {
        let chunks: Vec<&str> = value
            .as_bytes()
            .chunks(255)
            // Cannot fail: the record is ASCII (base64 and tags), so every cut is a char boundary.
            .map(|c| std::str::from_utf8(c).expect("ascii record"))
            .collect();
        format!("--txt-record={name},{}", chunks.join(","))
    }

    /// dnsmasq with the test domains: sender.test (SPF for 127.0.0.1, DMARC p=reject, DKIM
    /// key when given) and a few SPF variants.
    fn server(dkim_record: Option<&str>) -> Option<(DnsServer, Dns)> {
        let mut args = vec![
            "--txt-record=sender.test,v=spf1 ip4:127.0.0.1 -all".to_string(),
            "--txt-record=_dmarc.sender.test,v=DMARC1; p=reject".to_string(),
            "--txt-record=helo.test,v=spf1 ip4:127.0.0.1 -all".to_string(),
            "--txt-record=soft.test,v=spf1 ~all".to_string(),
            "--txt-record=neutral.test,v=spf1 ?all".to_string(),
            // RFC 7208 §6.1: a redirect to a domain without SPF is a permerror.
            "--txt-record=broken.test,v=spf1 redirect=nospf.test".to_string(),
            "--txt-record=quar.test,v=spf1 ip4:127.0.0.1 -all".to_string(),
            "--txt-record=_dmarc.quar.test,v=DMARC1; p=quarantine".to_string(),
            "--host-record=nospf.test,127.0.0.9".to_string(),
        ];
        if let Some(record) = dkim_record {
            args.push(txt_arg("sel._domainkey.sender.test", record));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = test_server::start(&args)?;
        let dns = Dns::new(&[server.addr]).expect("resolver");
        Some((server, dns))
    }

    fn ctx<'a>(ip: &str, helo: &'a str, mail_from: &'a str) -> Inbound<'a> {
        Inbound {
            client_ip: ip.parse().expect("test ip"),
            helo,
            mail_from,
            hostname: HOSTNAME,
        }
    }

    /// The A-R header loosely parsed: (authserv-id, [(method, result)]).
    fn parse_header(header: &str) -> (String, Vec<(String, String)>) {
        let value = header
            .strip_prefix("Authentication-Results: ")
            .expect("header name");
        let mut parts = value.split(';');
        let id = parts.next().unwrap_or_default().trim().to_string();
        let results = parts
            .filter_map(|clause| {
                let (method, rest) = clause.trim().split_once('=')?;
                let result = rest.split([' ', '\r', '\n', '\t', '(']).next()?;
                Some((method.to_string(), result.to_string()))
            })
            .collect();
        (id, results)
    }

    fn assert_well_formed(header: &str) {
        assert!(header.ends_with("\r\n"), "{header:?}");
        let body = &header[..header.len() - 2];
        for (i, line) in body.split("\r\n").enumerate() {
            assert!(!line.contains(['\r', '\n']), "bare CR/LF: {header:?}");
            assert!(i == 0 || line.starts_with('\t'), "unfolded: {header:?}");
        }
    }

    #[test]
    fn spf_table() {
        let Some((_server, dns)) = server(None) else {
            return;
        };
        let cases = [
            (
                "127.0.0.1",
                "client.test",
                "user@sender.test",
                SpfResult::Pass,
            ),
            (
                "127.0.0.2",
                "client.test",
                "user@sender.test",
                SpfResult::Fail,
            ),
            (
                "127.0.0.2",
                "client.test",
                "user@nospf.test",
                SpfResult::None,
            ),
            (
                "127.0.0.2",
                "client.test",
                "user@missing.test",
                SpfResult::None,
            ),
            (
                "127.0.0.2",
                "client.test",
                "user@soft.test",
                SpfResult::SoftFail,
            ),
            (
                "127.0.0.2",
                "client.test",
                "user@neutral.test",
                SpfResult::Neutral,
            ),
            (
                "127.0.0.2",
                "client.test",
                "user@broken.test",
                SpfResult::PermError,
            ),
            // Case of the domain does not matter.
            (
                "127.0.0.1",
                "client.test",
                "user@SENDER.Test",
                SpfResult::Pass,
            ),
            // Null sender: the HELO identity (RFC 7208 §2.4).
            ("127.0.0.1", "helo.test", "", SpfResult::Pass),
            ("127.0.0.2", "helo.test", "", SpfResult::Fail),
            ("127.0.0.1", "nospf.test", "", SpfResult::None),
            ("127.0.0.1", "[127.0.0.1]", "", SpfResult::None),
            // A failing HELO does not matter when MAIL FROM is given.
            (
                "127.0.0.1",
                "fails.helo.test",
                "user@sender.test",
                SpfResult::Pass,
            ),
        ];
        for (ip, helo, from, want) in cases {
            let verdict = run(check_whole(&dns, &ctx(ip, helo, from), MESSAGE.as_bytes()));
            assert_eq!(verdict.spf, want, "{ip} {helo} <{from}>");
            assert_eq!(verdict.spf_failed(), want == SpfResult::Fail);
            assert_well_formed(&verdict.header);
            let (id, results) = parse_header(&verdict.header);
            assert_eq!(id, HOSTNAME);
            assert!(
                results.contains(&("spf".into(), want.as_str().into())),
                "{ip} {helo} <{from}>: {}",
                verdict.header
            );
            let identity = if from.is_empty() {
                "smtp.helo="
            } else {
                "smtp.mailfrom="
            };
            assert!(verdict.header.contains(identity), "{}", verdict.header);
        }
    }

    #[test]
    fn dmarc_reject_without_dkim_and_failing_spf() {
        let Some((_server, dns)) = server(None) else {
            return;
        };
        let verdict = run(check_whole(
            &dns,
            &ctx("127.0.0.2", "client.test", "user@sender.test"),
            MESSAGE.as_bytes(),
        ));
        assert!(verdict.spf_failed());
        assert!(verdict.dkim.is_empty());
        let want = DmarcCheck {
            result: DmarcResult::Fail,
            policy: DmarcPolicy::Reject,
            from_domain: "sender.test".into(),
            dkim_aligned: false,
        };
        assert_eq!(verdict.dmarc, want);
        assert!(verdict.dmarc_reject());
        let (_, results) = parse_header(&verdict.header);
        let want: Vec<(String, String)> = [("spf", "fail"), ("dkim", "none"), ("dmarc", "fail")]
            .iter()
            .map(|(m, r)| (m.to_string(), r.to_string()))
            .collect();
        assert_eq!(results, want, "{}", verdict.header);
        assert!(
            verdict.header.contains("policy.dmarc=reject"),
            "{}",
            verdict.header
        );
    }

    #[test]
    fn dmarc_pass_by_aligned_spf_and_quarantine_is_not_reject() {
        let Some((_server, dns)) = server(None) else {
            return;
        };
        let verdict = run(check_whole(
            &dns,
            &ctx("127.0.0.1", "client.test", "bounce@sender.test"),
            MESSAGE.as_bytes(),
        ));
        assert_eq!(verdict.dmarc.result, DmarcResult::Pass);
        assert!(!verdict.dmarc_reject());

        let message = MESSAGE.replace("alice@sender.test", "alice@quar.test");
        let verdict = run(check_whole(
            &dns,
            &ctx("127.0.0.2", "client.test", "user@quar.test"),
            message.as_bytes(),
        ));
        assert_eq!(verdict.dmarc.result, DmarcResult::Fail);
        assert_eq!(verdict.dmarc.policy, DmarcPolicy::Quarantine);
        assert!(!verdict.dmarc_reject());
    }

    #[test]
    fn no_dmarc_record_is_none() {
        let Some((_server, dns)) = server(None) else {
            return;
        };
        let message = MESSAGE.replace("alice@sender.test", "alice@nospf.test");
        let verdict = run(check_whole(
            &dns,
            &ctx("127.0.0.2", "client.test", "user@sender.test"),
            message.as_bytes(),
        ));
        assert_eq!(verdict.dmarc.result, DmarcResult::None);
        assert!(!verdict.dmarc_reject());
        assert!(verdict.spf_failed());
    }

    #[test]
    fn dkim_intact_passes_and_aligns_tampered_fails() {
        let Some((pem, record)) = dkim_key() else {
            return;
        };
        assert!(
            record.len() > 255,
            "the key record must need several strings"
        );
        let Some((_server, dns)) = server(Some(record)) else {
            return;
        };
        let signed = dkimpy_sign(pem, "sender.test", MESSAGE);
        // SPF fails (client not listed), so only the DKIM signature can make DMARC pass.
        let envelope = ctx("127.0.0.2", "client.test", "user@sender.test");
        let verdict = run(check_whole(&dns, &envelope, &signed));
        let pass = DkimCheck {
            domain: "sender.test".into(),
            selector: "sel".into(),
            result: DkimResult::Pass,
        };
        assert_eq!(verdict.dkim, [pass]);
        assert_eq!(verdict.dmarc.result, DmarcResult::Pass);
        assert!(!verdict.dmarc_reject());
        assert!(verdict.spf_failed());
        assert_well_formed(&verdict.header);
        let (id, results) = parse_header(&verdict.header);
        assert_eq!(id, HOSTNAME);
        let want: Vec<(String, String)> = [("spf", "fail"), ("dkim", "pass"), ("dmarc", "pass")]
            .iter()
            .map(|(m, r)| (m.to_string(), r.to_string()))
            .collect();
        assert_eq!(results, want, "{}", verdict.header);
        // dkimpy sets `i=@sender.test`, which mail-auth reports instead of `d=`.
        assert!(
            verdict.header.contains("@sender.test"),
            "{}",
            verdict.header
        );
        assert!(
            verdict.header.contains("header.s=sel"),
            "{}",
            verdict.header
        );

        let mut tampered = signed.clone();
        let at = tampered.len() - 3;
        tampered[at] = b'?';
        let verdict = run(check_whole(&dns, &envelope, &tampered));
        assert_eq!(verdict.dkim.len(), 1);
        assert_eq!(verdict.dkim[0].result, DkimResult::Fail);
        assert_eq!(verdict.dmarc.result, DmarcResult::Fail);
        assert!(verdict.dmarc_reject());
        assert!(verdict.header.contains("dkim=fail"), "{}", verdict.header);

        // A valid signature of another domain does not align with From: sender.test.
        let foreign = dkimpy_sign(pem, "other.test", MESSAGE);
        let verdict = run(check_whole(&dns, &envelope, &foreign));
        assert_eq!(verdict.dkim.len(), 1);
        assert_eq!(verdict.dkim[0].domain, "other.test");
        assert_ne!(verdict.dkim[0].result, DkimResult::Pass);
        assert!(verdict.dmarc_reject());
    }

    #[test]
    fn malformed_messages_do_not_panic() {
        let Some((_server, dns)) = server(None) else {
            return;
        };
        let cases: [&[u8]; 5] = [
            b"",
            b"\r\n\r\nbody only",
            b"\x00\xff\xfe garbage without a colon",
            b"From: \r\nDKIM-Signature: v=1; a=zz; d=; b=\r\n\r\n",
            b"From: a@sender.test, b@other.test\r\n\r\nx\r\n",
        ];
        for message in cases {
            let verdict = run(check_whole(
                &dns,
                &ctx("127.0.0.1", "client.test", "user@sender.test"),
                message,
            ));
            assert_eq!(verdict.spf, SpfResult::Pass);
            assert!(
                matches!(
                    verdict.dmarc.result,
                    DmarcResult::None | DmarcResult::PermError
                ),
                "{message:?}: {:?}",
                verdict.dmarc
            );
            assert!(verdict.dkim.iter().all(|d| d.result != DkimResult::Pass));
            assert!(!verdict.dmarc_reject());
            assert_well_formed(&verdict.header);
            let (id, results) = parse_header(&verdict.header);
            assert_eq!(id, HOSTNAME);
            let methods: Vec<&str> = results.iter().map(|(m, _)| m.as_str()).collect();
            assert_eq!(methods, ["spf", "dkim", "dmarc"], "{}", verdict.header);
        }
    }

    #[test]
    fn client_values_cannot_inject_header_lines() {
        let Some((_server, dns)) = server(None) else {
            return;
        };
        let verdict = run(check_whole(
            &dns,
            &ctx("127.0.0.1", "evil\r\nX-Injected: 1", ""),
            MESSAGE.as_bytes(),
        ));
        assert_well_formed(&verdict.header);
        assert!(
            !verdict.header.contains("\r\nX-Injected"),
            "{}",
            verdict.header
        );
    }

    #[test]
    fn strip_our_results_table() {
        let cases: &[(&str, bool)] = &[
            ("Authentication-Results: mx.tambo.test; spf=pass\r\n", true),
            ("authentication-results: MX.TAMBO.TEST; none\r\n", true),
            ("Authentication-Results:mx.tambo.test;spf=pass", true),
            ("Authentication-Results : mx.tambo.test; none\r\n", true),
            (
                "Authentication-Results:\r\n\tmx.tambo.test;\r\n\tdkim=pass\r\n",
                true,
            ),
            (
                "Authentication-Results: (forged) mx.tambo.test; none\r\n",
                true,
            ),
            (
                "Authentication-Results: (a (nested) c) mx.tambo.test; none\r\n",
                true,
            ),
            ("Authentication-Results: \"mx.tambo.test\"; none\r\n", true),
            ("Authentication-Results: mx.tambo.test. ; none\r\n", true),
            ("Authentication-Results: mx.tambo.test 1; none\r\n", true),
            (
                "Authentication-Results: mx.tambo.test(comment); none\r\n",
                true,
            ),
            ("Authentication-Results: mx.google.com; spf=pass\r\n", false),
            ("Authentication-Results: tambo.test; spf=pass\r\n", false),
            (
                "Authentication-Results: mx.tambo.test.evil; spf=pass\r\n",
                false,
            ),
            (
                "Authentication-Results: x; comment=mx.tambo.test\r\n",
                false,
            ),
            (
                "ARC-Authentication-Results: i=1; mx.tambo.test; spf=pass\r\n",
                false,
            ),
            (
                "X-Authentication-Results: mx.tambo.test; spf=pass\r\n",
                false,
            ),
            ("Subject: Authentication-Results: mx.tambo.test\r\n", false),
            ("Authentication-Results:\r\n", false),
            (
                "Authentication-Results: (unclosed mx.tambo.test; none\r\n",
                false,
            ),
            ("Authentication-Results: \"mx.tambo.test; none\r\n", false),
            ("no colon at all", false),
            ("", false),
        ];
        for (line, want) in cases {
            assert_eq!(
                strip_our_results(line.as_bytes(), HOSTNAME),
                *want,
                "{line:?}"
            );
        }
        // The configured hostname may itself carry a root dot or other case.
        assert!(strip_our_results(
            b"Authentication-Results: mx.tambo.test; none",
            "MX.tambo.test."
        ));
        assert!(!strip_our_results(b"Authentication-Results: ; none", ""));
    }
}
