//! `tambo util dkim-keygen / dkim-dns / dkim-sign / dkim-verify` (SPEC §4, issue 6).
//!
//! Keys live in `domains/<domain>/dkim:<selector>.pem` (SPEC §2); signing uses the server's
//! own signer (`mailauth::dkim`), verification the configured resolver (`dns_servers`).
//! Messages on stdin may use LF line ends: they are signed and verified in their CRLF (wire)
//! form, as an MTA sends them, and printed back byte for byte.

use crate::addr::Domain;
use crate::cli::CliError;
use crate::config::Settings;
use crate::config::domains::domain_dir;
use crate::mailauth::dkim::{self, Algorithm, DkimKey};
use crate::mailauth::inbound::DkimResult;
use argh::FromArgs;
use std::borrow::Cow;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

/// Generate a DKIM signing key into a domain's folder (never overwrites one).
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "dkim-keygen",
    help_triggers("-h", "--help", "help")
)]
pub struct DkimKeygen {
    /// the domain
    #[argh(positional)]
    pub domain: String,
    /// the selector (default: derived from today's date)
    #[argh(positional)]
    pub selector: Option<String>,
    /// rsa2048 (default), rsa3072 or ed25519
    #[argh(option, default = "String::from(\"rsa2048\")")]
    pub algorithm: String,
}

/// Print the DNS TXT record to publish for a domain's DKIM keys.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "dkim-dns", help_triggers("-h", "--help", "help"))]
pub struct DkimDns {
    /// the domain
    #[argh(positional)]
    pub domain: String,
    /// the selector (default: every key of the domain)
    #[argh(positional)]
    pub selector: Option<String>,
}

/// DKIM-sign the message on stdin with a domain's key; print the signed message.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "dkim-sign", help_triggers("-h", "--help", "help"))]
pub struct DkimSign {
    /// the domain
    #[argh(positional)]
    pub domain: String,
    /// the selector (default: every key of the domain)
    #[argh(positional)]
    pub selector: Option<String>,
}

/// Verify every DKIM signature of the message on stdin; exit 0 when all pass.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "dkim-verify",
    help_triggers("-h", "--help", "help")
)]
pub struct DkimVerify {}

/// Private keys: readable by the server's user only (SPEC §11).
const KEY_MODE: u32 = 0o600;

pub fn keygen(settings: &Settings, c: DkimKeygen) -> Result<(), CliError> {
    let algorithm = Algorithm::parse(&c.algorithm.to_ascii_lowercase()).ok_or_else(|| {
        CliError::usage(format!(
            "--algorithm {:?}: unknown algorithm (one of {})",
            c.algorithm,
            Algorithm::NAMES.join(", ")
        ))
    })?;
    let (domain, dir) = local_domain(settings, &c.domain)?;
    let selector = c
        .selector
        .unwrap_or_else(|| date_selector(time::OffsetDateTime::now_utc()));
    dkim::validate_selector(&selector, domain.as_str()).map_err(CliError::usage)?;
    let path = dkim::key_path(&dir, &selector);
    if std::fs::symlink_metadata(&path).is_ok() {
        return Err(already_exists(&path));
    }
    let pem = dkim::generate_pem(algorithm).map_err(|e| CliError::failure(e.to_string()))?;
    write_new(&path, pem.as_bytes())?;
    println!("{}", path.display());
    // Read back through the loader the server uses: proves the file is a key it will sign with.
    let key = dkim::load_selector_key(&dir, domain.as_str(), &selector)
        .map_err(|e| CliError::failure(e.to_string()))?;
    println!("{}", dkim::zone_line(&key));
    Ok(())
}

pub fn dns(settings: &Settings, c: DkimDns) -> Result<(), CliError> {
    let (domain, dir) = local_domain(settings, &c.domain)?;
    for key in selected_keys(&domain, &dir, c.selector.as_deref())? {
        println!("{}", dkim::zone_line(&key));
    }
    Ok(())
}

pub fn sign(settings: &Settings, c: DkimSign) -> Result<(), CliError> {
    let (domain, dir) = local_domain(settings, &c.domain)?;
    let keys = selected_keys(&domain, &dir, c.selector.as_deref())?;
    let message = read_stdin()?;
    // RFC 6376 §5.4: From is the one header every signature must cover.
    if !has_from_header(&message) {
        return Err(CliError::usage(
            "stdin: the message has no From: header to sign",
        ));
    }
    let headers =
        dkim::sign(&keys, &to_crlf(&message)).map_err(|e| CliError::failure(e.to_string()))?;
    let headers = if lf_only(&message) {
        headers.replace("\r\n", "\n")
    } else {
        headers
    };
    let mut out = std::io::stdout().lock();
    out.write_all(headers.as_bytes())
        .and_then(|()| out.write_all(&message))
        .and_then(|()| out.flush())
        .map_err(|e| CliError::failure(format!("stdout: {e}")))
}

pub fn verify(settings: &Settings, _c: DkimVerify) -> Result<(), CliError> {
    let message = read_stdin()?;
    let dns = crate::dns::Dns::new(&settings.dns_servers)
        .map_err(|e| CliError::usage(format!("DNS: {e}")))?;
    let checks = smol::block_on(dkim::verify(&dns, &to_crlf(&message)))
        .ok_or_else(|| CliError::failure("stdin: not a message (no header could be parsed)"))?;
    if checks.is_empty() {
        return Err(CliError::failure("stdin: no DKIM-Signature header"));
    }
    for check in &checks {
        println!("{}", verdict_line(check));
        if let Some(reason) = &check.reason {
            eprintln!("{}: {reason}", verdict_line(check));
        }
    }
    let failed = checks
        .iter()
        .filter(|c| c.result != DkimResult::Pass)
        .count();
    if failed == 0 {
        Ok(())
    } else {
        Err(CliError::failure(format!(
            "{failed} of {} DKIM signature(s) did not pass",
            checks.len()
        )))
    }
}

/// `<domain> <selector> <result>` (RFC 8601 §2.7.1 result names); `-` for a tag that could not
/// be read.
fn verdict_line(check: &dkim::SignatureCheck) -> String {
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    format!(
        "{} {} {}",
        or_dash(&check.domain),
        or_dash(&check.selector),
        check.result.as_str()
    )
}

/// The domain argument, parsed, and its folder, which must exist (SPEC §4: a domain without
/// a folder is bad input).
fn local_domain(settings: &Settings, input: &str) -> Result<(Domain, PathBuf), CliError> {
    let domain = Domain::parse(input).map_err(|e| CliError::usage(e.to_string()))?;
    let dir = domain_dir(&settings.config_dir, &domain);
    if !dir.is_dir() {
        return Err(CliError::usage(format!(
            "{domain}: not a local domain (no folder {})",
            dir.display()
        )));
    }
    Ok((domain, dir))
}

/// The key of `selector`, or every key of the domain (at least one).
fn selected_keys(
    domain: &Domain,
    dir: &Path,
    selector: Option<&str>,
) -> Result<Vec<DkimKey>, CliError> {
    let keys = match selector {
        Some(selector) => {
            dkim::validate_selector(selector, domain.as_str()).map_err(CliError::usage)?;
            vec![
                dkim::load_selector_key(dir, domain.as_str(), selector)
                    .map_err(|e| CliError::usage(e.to_string()))?,
            ]
        }
        None => {
            dkim::load_keys(dir, domain.as_str()).map_err(|e| CliError::usage(e.to_string()))?
        }
    };
    if keys.is_empty() {
        return Err(CliError::usage(format!(
            "{domain}: no DKIM key (dkim:<selector>.pem) in {}; \
             make one with `tambo util dkim-keygen {domain}`",
            dir.display()
        )));
    }
    Ok(keys)
}

/// chasquid-util's default selector: today's UTC date, `YYYYMMDD`.
pub(crate) fn date_selector(now: time::OffsetDateTime) -> String {
    let now = now.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day()
    )
}

fn already_exists(path: &Path) -> CliError {
    CliError::usage(format!(
        "{}: already exists; keys are never overwritten (choose another selector)",
        path.display()
    ))
}

/// A key file that must not exist yet, never written over one (even one created meanwhile).
fn write_new(path: &Path, contents: &[u8]) -> Result<(), CliError> {
    match crate::fsutil::write_new(path, contents, KEY_MODE) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(already_exists(path)),
        Err(e) => Err(CliError::failure(format!("{}: {e}", path.display()))),
    }
}

fn read_stdin() -> Result<Vec<u8>, CliError> {
    let mut message = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut message)
        .map_err(|e| CliError::usage(format!("stdin: {e}")))?;
    Ok(message)
}

/// Whether line ends are LF only (a file written on Unix), not CRLF.
fn lf_only(message: &[u8]) -> bool {
    message.contains(&b'\n') && !message.windows(2).any(|w| w == b"\r\n")
}

/// The message with every bare LF made CRLF (RFC 5321 §2.3.8: the wire form DKIM signs).
fn to_crlf(message: &[u8]) -> Cow<'_, [u8]> {
    let bare_lf = |i: usize| message[i] == b'\n' && (i == 0 || message[i - 1] != b'\r');
    if !(0..message.len()).any(bare_lf) {
        return Cow::Borrowed(message);
    }
    let mut out = Vec::with_capacity(message.len() + message.len() / 32);
    for (i, &b) in message.iter().enumerate() {
        if bare_lf(i) {
            out.push(b'\r');
        }
        out.push(b);
    }
    Cow::Owned(out)
}

/// Whether the header block (up to the first empty line) has a `From:` field.
fn has_from_header(message: &[u8]) -> bool {
    message
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split(|&b| b == b':').next())
        // RFC 5322 §4.5.3 (obsolete syntax) allows white space before the colon.
        .any(|name| name.trim_ascii_end().eq_ignore_ascii_case(b"From"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_selectors() {
        use time::macros::datetime;
        let cases = [
            (datetime!(2024-01-05 00:00 UTC), "20240105"),
            (datetime!(1999-12-31 23:59:59 UTC), "19991231"),
            // Always the UTC date, as chasquid-util.
            (datetime!(2024-03-01 01:00 +02:00), "20240229"),
        ];
        for (now, want) in cases {
            assert_eq!(date_selector(now), want, "{now}");
        }
    }

    #[test]
    fn crlf_conversion() {
        let cases: [(&[u8], &[u8]); 5] = [
            (b"a\nb\n", b"a\r\nb\r\n"),
            (b"a\r\nb\r\n", b"a\r\nb\r\n"),
            (b"a\r\nb\n", b"a\r\nb\r\n"),
            (b"\n", b"\r\n"),
            (b"no end", b"no end"),
        ];
        for (input, want) in cases {
            assert_eq!(
                &*to_crlf(input),
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert!(matches!(to_crlf(b"a\r\n"), Cow::Borrowed(_)));
    }

    #[test]
    fn line_end_style() {
        let cases: [(&[u8], bool); 4] = [
            (b"a\nb\n", true),
            (b"a\r\nb\r\n", false),
            (b"a\r\nb\n", false),
            (b"no end", false),
        ];
        for (input, want) in cases {
            assert_eq!(lf_only(input), want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn from_header_detection() {
        let cases: [(&[u8], bool); 6] = [
            (b"From: a@b\r\n\r\nbody", true),
            (b"To: c@d\nfrom : a@b\n\nbody", true),
            (b"To: c@d\r\n\r\nFrom: in the body\r\n", false),
            (b"X-From: a@b\r\n\r\n", false),
            (b"To: c@d\r\n Folded From: x\r\n\r\n", false),
            (b"", false),
        ];
        for (input, want) in cases {
            let text = String::from_utf8_lossy(input);
            assert_eq!(has_from_header(input), want, "{text:?}");
        }
    }

    #[test]
    fn write_new_refuses_an_existing_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dkim:sel.pem");
        write_new(&path, b"first").expect("new file");
        let err = write_new(&path, b"second").expect_err("exists");
        assert_eq!(err.status, 2, "{}", err.message);
        assert!(err.message.contains("already exists"), "{}", err.message);
        assert_eq!(std::fs::read(&path).expect("read"), b"first");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["dkim:sel.pem"]);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, KEY_MODE);
    }
}
