//! What a copy leaving for another domain looks like (SPEC §8): its envelope sender (SRS when
//! we forward on behalf of an outside sender), the DKIM signatures prepended when its
//! From: domain is ours, and the ARC set prepended when we forward mail received from
//! another MTA. The message itself is passed on byte for byte.

use crate::addr::{Address, Domain};
use crate::config::Domains;
use crate::dns::Dns;
use crate::mailauth::arc;
use crate::mailauth::dkim::{self, DkimKey};
use crate::mailauth::srs::Srs;
use crate::message;
use crate::message::{MessageReader, StoredMessage, now_secs};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// The envelope sender for a copy sent to another domain on behalf of `original_rcpt` (the
/// address the client gave at RCPT, whose domain is ours when an alias forwards).
///
/// - `<>` stays `<>` (a bounce is never rewritten).
/// - Our own domains' senders are kept (our users' mail is never rewritten).
/// - Anyone else's address becomes SRS at the forwarding domain, so that SPF passes at the
///   destination and bounces come back to us (and are reversed at RCPT).
pub fn envelope_sender(
    srs: &Srs,
    domains: &Domains,
    from: &str,
    original_rcpt: &str,
    now_secs: u64,
) -> String {
    let Ok(sender) = Address::parse(from) else {
        return from.to_string();
    };
    if domains.get(sender.domain()).is_some() {
        return from.to_string();
    }
    match forwarding_domain(domains, original_rcpt) {
        Some(ours) => srs.forward(from, &ours.to_ascii(), now_secs),
        None => from.to_string(),
    }
}

/// The local domain that forwards: the original recipient's, else the first local domain
/// (`RCPT TO:<Postmaster>` has no domain).
fn forwarding_domain(domains: &Domains, original_rcpt: &str) -> Option<Domain> {
    Address::parse(original_rcpt)
        .ok()
        .map(|a| a.domain().clone())
        .filter(|d| domains.get(d).is_some())
        .or_else(|| domains.iter().next().map(|(d, _)| d.clone()))
}

/// The local domain (ACE form) that forwards for `original_rcpt`, whose key ARC-seals the
/// copy (SPEC §8).
pub fn arc_domain(domains: &Domains, original_rcpt: &str) -> Option<String> {
    forwarding_domain(domains, original_rcpt).map(|d| d.to_ascii())
}

/// The keys of the forwarding domain `domain_ace` (from [`arc_domain`]); None, logged once
/// per domain and process at info, when it has none: the copy then goes unsealed.
pub fn arc_keys(domains: &Domains, domain_ace: &str) -> Option<Arc<[DkimKey]>> {
    let keys = domains
        .iter()
        .find(|(d, _)| d.to_ascii() == domain_ace)
        .map(|(_, local)| local.dkim.clone())
        .filter(|keys| !keys.is_empty());
    if keys.is_none() {
        static NOTED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
        // A poisoned lock only means another thread panicked while logging: log again.
        let first = NOTED
            .lock()
            .map_or(true, |mut noted| noted.insert(domain_ace.to_string()));
        if first {
            log::info!("{domain_ace} has no DKIM key: forwarded mail leaves without an ARC seal");
        }
    }
    keys
}

/// The ARC set (RFC 8617) to prepend to a copy forwarded by the owner of `keys`, carrying
/// `auth_results` (our Authentication-Results value). Reads the header section, then the
/// body in chunks. Blocking (an existing chain is verified through `dns`).
pub fn seal(
    dns: &Dns,
    keys: &[DkimKey],
    item: &StoredMessage,
    auth_results: &str,
) -> Result<Vec<u8>, String> {
    let split = split(item)?;
    arc::seal(
        dns,
        keys,
        &split.header,
        split.body,
        auth_results,
        now_secs(),
    )
    .map(String::into_bytes)
    .map_err(|e| format!("ARC sealing: {e}"))
}

/// The DKIM keys to sign this message with: those of its From: domain when that is local
/// and has keys; `None` otherwise. Reads only the header section.
pub fn signing_keys(
    domains: &Domains,
    item: &StoredMessage,
) -> Result<Option<Arc<[DkimKey]>>, String> {
    let header = split(item)?.header;
    let Some(domain) = from_domain(&header) else {
        return Ok(None);
    };
    Ok(domains
        .get(&domain)
        .filter(|local| !local.dkim.is_empty())
        .map(|local| local.dkim.clone()))
}

/// `DKIM-Signature:` lines to prepend, one per key. Reads the header section, then the body
/// in chunks; forwarded mail from outside (the bulk of a forwarder's traffic) has no keys and
/// is never read past its header section. Blocking.
pub fn sign(keys: &[DkimKey], item: &StoredMessage) -> Result<Vec<u8>, String> {
    let split = split(item)?;
    dkim::sign_stream(keys, &split.header, split.body)
        .map(String::into_bytes)
        .map_err(|e| format!("DKIM signing: {e}"))
}

/// SPEC §8 DMARC-safe forwarding: the copy of `item` whose From: is `forwarder` (an address
/// of the forwarding domain `domain`), written to an unnamed file in `spool_dir`: the added
/// headers and the rewritten header section, then the body, copied in chunks. `None` when
/// the message has no single From: to rewrite. Blocking.
pub fn from_rewritten(
    item: &StoredMessage,
    forwarder: &str,
    domain: &str,
    spool_dir: &std::path::Path,
) -> Result<Option<StoredMessage>, String> {
    use std::io::Write;
    let mut split = split(item)?;
    let Some(header) = message::from_rewrite::rewrite(&split.header, forwarder, domain) else {
        return Ok(None);
    };
    let spool_error =
        |e: std::io::Error| format!("writing the rewritten copy in {}: {e}", spool_dir.display());
    let file = crate::fsutil::unnamed_file(spool_dir).map_err(spool_error)?;
    let mut out = std::io::BufWriter::with_capacity(message::CHUNK, &file);
    out.write_all(&header).map_err(spool_error)?;
    let body_len = std::io::copy(&mut split.body, &mut out).map_err(|e| {
        format!(
            "copying {} into its rewritten copy: {e}",
            item.path.display()
        )
    })?;
    out.flush().map_err(spool_error)?;
    drop(out);
    let mut copy = item.clone();
    // The added headers are in the rewritten header section now.
    copy.envelope.headers.clear();
    copy.file = Some(Arc::new(file));
    copy.data_offset = 0;
    copy.data_len = header.len() as u64 + body_len;
    copy.pool_name = None;
    Ok(Some(copy))
}

/// The message as couriers send it (added headers, then the data), split after its header
/// section.
fn split(item: &StoredMessage) -> Result<message::Split<MessageReader>, String> {
    let reader = item.open_data().map_err(|e| read_error(item, e))?;
    message::split(reader).map_err(|e| match e {
        message::HeaderError::Io(e) => read_error(item, e),
        too_large => format!("{}: {too_large}", item.path.display()),
    })
}

fn read_error(item: &StoredMessage, e: std::io::Error) -> String {
    format!("reading {}: {e}", item.path.display())
}

/// The domain of the first address of the From: header.
fn from_domain(message: &[u8]) -> Option<Domain> {
    // Only From: is parsed; the rest (Received: above all, whose parser is the costliest)
    // is skipped, since this runs for every outbound message.
    let parsed = mail_parser::MessageParser::new()
        .header_address(mail_parser::HeaderName::From)
        .default_header_ignore()
        .parse_headers(message)?;
    let address = parsed.from()?.first()?.address()?;
    Address::parse(address).ok().map(|a| a.domain().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_domain_of_headers() {
        let cases: [(&[u8], Option<&str>); 4] = [
            (
                b"From: Alice <alice@Example.TEST>\r\nTo: x@y\r\n\r\nbody",
                Some("example.test"),
            ),
            (
                b"Received: x\r\nFrom: bob@xn--bcher-kva.example\r\n\r\n",
                Some("bücher.example"),
            ),
            (b"To: x@y\r\n\r\nFrom: not@a.header\r\n", None),
            (b"From: undisclosed\r\n\r\n", None),
        ];
        for (msg, want) in cases {
            let got = from_domain(msg);
            assert_eq!(
                got.as_ref().map(Domain::as_str),
                want,
                "{}",
                String::from_utf8_lossy(msg)
            );
        }
    }

    #[test]
    fn only_the_header_section_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let mut body = b"From: a@example.test\r\nSubject: x\r\n\r\n".to_vec();
        let header_len = body.len();
        body.extend(std::iter::repeat_n(b'y', 100_000));
        let item = crate::message::stored::written(tmp.path(), &body, Default::default());
        let header = split(&item).unwrap().header;
        assert_eq!(header, &body[..header_len]);
        assert_eq!(from_domain(&header).unwrap().as_str(), "example.test");
    }
}
