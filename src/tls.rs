//! Server TLS: certificates from `conf/certs/<name>/{fullchain,privkey}.pem` (SPEC §2), picked
//! by SNI; clients without SNI (most MTAs) get the one for `hostname`, else the first. With no
//! certificate configured, a self-signed one for `hostname` is generated once into
//! `data_dir/certs/self-signed/`. Certificates obtained by ACME (`data_dir/acme/certs/<name>/`,
//! SPEC §12) serve the names `conf/certs/` has no folder for; a client offering the
//! `acme-tls/1` protocol gets the tls-alpn-01 challenge certificate instead (RFC 8737 §3).

use crate::challenges::{ACME_TLS_ALPN, Challenges};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("generating a self-signed certificate: {0}")]
    Generate(String),
}

fn file_err(path: &Path, msg: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// Certificates by lower-case name, plus the default for clients without (or with unknown) SNI.
#[derive(Debug)]
pub struct CertResolver {
    by_name: BTreeMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
    challenges: Arc<Challenges>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // RFC 8737 §3: a validation connection offers only `acme-tls/1` and names the
        // identifier by SNI; it gets the challenge certificate or nothing (a failed handshake).
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            return hello
                .server_name()
                .and_then(|name| self.challenges.alpn(name));
        }
        let by_sni = hello.server_name().and_then(|name| {
            let name = name.to_ascii_lowercase();
            self.by_name.get(&name).or_else(|| {
                // A wildcard folder name (`*.example.com`) covers one label.
                let (_, parent) = name.split_once('.')?;
                self.by_name.get(&format!("*.{parent}"))
            })
        });
        Some(by_sni.unwrap_or(&self.default).clone())
    }
}

/// What [`load`] builds: the configurations of the mail and web listeners, over the same
/// certificates, and the leaf certificate of each name (for the days left, `doctor`).
pub struct Loaded {
    pub mail: Arc<ServerConfig>,
    /// The same certificates, with ALPN `http/1.1` and `acme-tls/1` (RFC 8737 §3 wants the
    /// protocol negotiated; mail clients offer no ALPN, so the mail listeners keep none).
    pub web: Arc<ServerConfig>,
    pub leaves: Vec<(String, CertificateDer<'static>)>,
}

/// The folder ACME certificates live in, one `<name>/{fullchain,privkey}.pem` each.
pub fn acme_certs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("acme").join("certs")
}

/// Builds the server TLS configuration for all TLS listeners.
pub fn load(
    config_dir: &Path,
    data_dir: &Path,
    hostname: &str,
    challenges: Arc<Challenges>,
) -> Result<Loaded, TlsError> {
    let resolver = load_resolver(config_dir, data_dir, hostname, challenges)?;
    let leaves = resolver
        .by_name
        .iter()
        .filter_map(|(name, key)| Some((name.clone(), key.cert.first()?.clone())))
        .collect();
    let mail = ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    let mut web = mail.clone();
    web.alpn_protocols = vec![b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    Ok(Loaded {
        mail: Arc::new(mail),
        web: Arc::new(web),
        leaves,
    })
}

/// Names covered by a folder of `conf/certs/` (they win over ACME, SPEC §12).
pub fn configured_names(config_dir: &Path) -> Result<Vec<String>, TlsError> {
    Ok(load_cert_folders(&config_dir.join("conf").join("certs"))?
        .into_keys()
        .collect())
}

fn load_resolver(
    config_dir: &Path,
    data_dir: &Path,
    hostname: &str,
    challenges: Arc<Challenges>,
) -> Result<CertResolver, TlsError> {
    let hostname = hostname.to_ascii_lowercase();
    let mut by_name = load_cert_folders(&config_dir.join("conf").join("certs"))?;
    let configured = !by_name.is_empty();
    // SPEC §12: a folder of conf/certs/ wins over an ACME certificate of the same name.
    for (name, key) in load_cert_folders(&acme_certs_dir(data_dir))? {
        by_name.entry(name).or_insert(key);
    }
    if !configured && !by_name.contains_key(&hostname) {
        let dir = data_dir.join("certs").join("self-signed");
        ensure_self_signed(&dir, &hostname)?;
        by_name.insert(hostname.clone(), Arc::new(load_pair(&dir)?));
    }
    let default = by_name
        .get(&hostname)
        .or_else(|| by_name.values().next())
        .cloned()
        .ok_or_else(|| TlsError::Generate("no certificate".into()))?;
    Ok(CertResolver {
        by_name,
        default,
        challenges,
    })
}

/// The end of a certificate's validity, in seconds since the Unix epoch, and its start.
pub fn validity(cert: &CertificateDer<'_>) -> Option<(i64, i64)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let v = parsed.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// Every `conf/certs/<name>/` holding `fullchain.pem` and `privkey.pem`.
fn load_cert_folders(certs: &Path) -> Result<BTreeMap<String, Arc<CertifiedKey>>, TlsError> {
    let (by_name, mut problems) = load_cert_folders_all(certs);
    match problems.is_empty() {
        true => Ok(by_name),
        false => Err(problems.swap_remove(0)),
    }
}

/// Every problem of the certificates in `<config_dir>/conf/certs/` that `serve` would stop
/// at, not just the first (`util check`). Reads only: nothing is generated.
pub fn check_certificates(config_dir: &Path) -> Vec<TlsError> {
    load_cert_folders_all(&config_dir.join("conf").join("certs")).1
}

/// [`load_cert_folders`] that goes on past a bad folder: the pairs that loaded, and the
/// problems, in name order.
fn load_cert_folders_all(certs: &Path) -> (BTreeMap<String, Arc<CertifiedKey>>, Vec<TlsError>) {
    let mut by_name = BTreeMap::new();
    let mut problems = Vec::new();
    let entries = match std::fs::read_dir(certs) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (by_name, problems),
        Err(e) => return (by_name, vec![file_err(certs, e)]),
    };
    let mut paths = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => paths.push(entry.path()),
            Err(e) => problems.push(file_err(certs, e)),
        }
    }
    paths.sort();
    for path in paths {
        // Follows symlinks, so `conf/certs/x -> /etc/letsencrypt/live/x` works.
        if !path.is_dir() {
            continue;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        match load_pair(&path) {
            Ok(pair) => {
                by_name.insert(name.to_ascii_lowercase(), Arc::new(pair));
            }
            Err(e) => problems.push(e),
        }
    }
    (by_name, problems)
}

pub fn load_pair(dir: &Path) -> Result<CertifiedKey, TlsError> {
    let chain_path = dir.join("fullchain.pem");
    let key_path = dir.join("privkey.pem");
    let chain = read_chain(&chain_path)?;
    let key = read_key(&key_path)?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| file_err(&key_path, e))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| {
        file_err(
            &key_path,
            format!("does not match {}: {e}", chain_path.display()),
        )
    })?;
    Ok(certified)
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| file_err(path, e))?;
    let chain: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, e))?;
    if chain.is_empty() {
        return Err(file_err(path, "no certificate in PEM file"));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| file_err(path, e))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| file_err(path, e))?
        .ok_or_else(|| file_err(path, "no private key in PEM file"))
}

/// Generates `dir/{fullchain,privkey}.pem` for `hostname` unless they exist (key mode 0600).
fn ensure_self_signed(dir: &Path, hostname: &str) -> Result<(), TlsError> {
    if dir.join("fullchain.pem").exists() && dir.join("privkey.pem").exists() {
        return Ok(());
    }
    crate::fsutil::create_private_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let generated = rcgen::generate_simple_self_signed(vec![hostname.to_string()])
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let key_path = dir.join("privkey.pem");
    crate::fsutil::write_atomic(
        &key_path,
        generated.signing_key.serialize_pem().as_bytes(),
        0o600,
    )
    .map_err(|e| file_err(&key_path, e))?;
    let cert_path = dir.join("fullchain.pem");
    crate::fsutil::write_atomic(&cert_path, generated.cert.pem().as_bytes(), 0o644)
        .map_err(|e| file_err(&cert_path, e))?;
    log::info!(
        "generated a self-signed certificate for {hostname} in {}",
        dir.display()
    );
    Ok(())
}

/// Why a server handshake failed, in words for the log. rustls's own messages name its enum
/// variants (`received corrupt message of type InvalidContentType`): the usual cases get a
/// plain explanation, the others keep rustls's detail with the variant name in words.
pub fn handshake_failure(e: &std::io::Error) -> String {
    use rustls::{AlertDescription as Alert, Error as E, InvalidMessage};
    let tls = e.get_ref().and_then(|inner| inner.downcast_ref::<E>());
    match tls {
        Some(E::InvalidMessage(InvalidMessage::InvalidContentType)) => {
            "the client sent no TLS handshake (plain text on a TLS port?)".into()
        }
        Some(E::InvalidMessage(what)) => format!("malformed TLS message ({})", words(what)),
        Some(E::AlertReceived(
            alert @ (Alert::BadCertificate | Alert::UnknownCA | Alert::CertificateUnknown),
        )) => format!(
            "the client does not accept our certificate (alert: {})",
            words(alert)
        ),
        Some(E::AlertReceived(alert)) => format!("the client sent alert: {}", words(alert)),
        Some(E::PeerIncompatible(why)) => {
            format!("nothing in common with the client ({})", words(why))
        }
        Some(E::PeerMisbehaved(why)) => {
            format!("the client broke the TLS protocol ({})", words(why))
        }
        Some(other) => other.to_string(),
        None => match e.kind() {
            std::io::ErrorKind::TimedOut => "the client did not finish it in time".into(),
            std::io::ErrorKind::UnexpectedEof => "the client closed the connection".into(),
            _ => e.to_string(),
        },
    }
}

/// An enum value's Debug name as words: `UnknownCA` → `unknown CA`, `NoKxGroupsInCommon` →
/// `no kx groups in common`; anything after the name (a variant's fields) is kept as is.
fn words(value: &impl std::fmt::Debug) -> String {
    let text = format!("{value:?}");
    let end = text
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(text.len());
    let (name, rest) = text.split_at(end);
    let chars: Vec<char> = name.chars().collect();
    let mut spaced = String::new();
    for (i, &c) in chars.iter().enumerate() {
        // A capital starts a word after a lower-case letter or a digit, and ends an acronym
        // when a lower-case letter follows it (`CAName` → `CA Name`).
        let after_lower = i > 0 && !chars[i - 1].is_ascii_uppercase();
        let ends_acronym = i > 0 && chars.get(i + 1).is_some_and(char::is_ascii_lowercase);
        if c.is_ascii_uppercase() && (after_lower || ends_acronym) {
            spaced.push(' ');
        }
        spaced.push(c);
    }
    let lowered: Vec<String> = spaced
        .split(' ')
        .map(|word| {
            let acronym = word.len() > 1 && word.chars().all(|c| !c.is_ascii_lowercase());
            if acronym {
                word.to_string()
            } else {
                word.to_ascii_lowercase()
            }
        })
        .collect();
    lowered.join(" ") + rest
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{AlertDescription, Error, InvalidMessage, PeerIncompatible};
    use std::io;

    /// A certificate for `name` into `dir/{fullchain,privkey}.pem`; returns its DER.
    fn write_cert(dir: &Path, name: &str) -> CertificateDer<'static> {
        std::fs::create_dir_all(dir).unwrap();
        let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        std::fs::write(dir.join("fullchain.pem"), made.cert.pem()).unwrap();
        std::fs::write(dir.join("privkey.pem"), made.signing_key.serialize_pem()).unwrap();
        made.cert.der().clone()
    }

    fn leaf_of(loaded: &Loaded, name: &str) -> Option<CertificateDer<'static>> {
        loaded
            .leaves
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, der)| der.clone())
    }

    /// SPEC §12: a folder of conf/certs/ wins over an ACME certificate of the same name;
    /// ACME serves the names conf/certs/ lacks, and with it the self-signed one is not made.
    #[test]
    fn configured_certificates_win_over_acme_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let (config, data) = (tmp.path().join("cfg"), tmp.path().join("data"));
        let acme = acme_certs_dir(&data);
        let acme_host = write_cert(&acme.join("mx.example.test"), "mx.example.test");
        let acme_sts = write_cert(&acme.join("mta-sts.example.test"), "mta-sts.example.test");
        let challenges = Arc::new(Challenges::default());
        let loaded = load(&config, &data, "mx.example.test", challenges.clone()).unwrap();
        assert_eq!(leaf_of(&loaded, "mx.example.test"), Some(acme_host));
        assert!(!data.join("certs").join("self-signed").exists());
        let conf = write_cert(
            &config.join("conf").join("certs").join("mx.example.test"),
            "mx.example.test",
        );
        let loaded = load(&config, &data, "mx.example.test", challenges).unwrap();
        assert_eq!(leaf_of(&loaded, "mx.example.test"), Some(conf));
        assert_eq!(leaf_of(&loaded, "mta-sts.example.test"), Some(acme_sts));
        assert_eq!(
            configured_names(&config).unwrap(),
            vec!["mx.example.test".to_string()]
        );
    }

    #[test]
    fn enum_names_become_words() {
        let cases: &[(&dyn std::fmt::Debug, &str)] = &[
            (&AlertDescription::UnknownCA, "unknown CA"),
            (&AlertDescription::BadCertificate, "bad certificate"),
            (&InvalidMessage::InvalidContentType, "invalid content type"),
            (
                &PeerIncompatible::NoKxGroupsInCommon,
                "no kx groups in common",
            ),
            (
                &InvalidMessage::TrailingData("ClientHello"),
                "trailing data(\"ClientHello\")",
            ),
        ];
        for (value, want) in cases {
            assert_eq!(words(value), *want, "{value:?}");
        }
    }

    #[test]
    fn handshake_failures_in_words() {
        let tls = |e: Error| io::Error::new(io::ErrorKind::InvalidData, e);
        let cases = [
            (
                tls(Error::InvalidMessage(InvalidMessage::InvalidContentType)),
                "the client sent no TLS handshake (plain text on a TLS port?)",
            ),
            (
                tls(Error::AlertReceived(AlertDescription::UnknownCA)),
                "the client does not accept our certificate (alert: unknown CA)",
            ),
            (
                tls(Error::AlertReceived(AlertDescription::ProtocolVersion)),
                "the client sent alert: protocol version",
            ),
            (
                tls(Error::PeerIncompatible(
                    PeerIncompatible::NoCipherSuitesInCommon,
                )),
                "nothing in common with the client (no cipher suites in common)",
            ),
            (tls(Error::DecryptError), "cannot decrypt peer's message"),
            (
                io::Error::from(io::ErrorKind::TimedOut),
                "the client did not finish it in time",
            ),
            (
                io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof"),
                "the client closed the connection",
            ),
            (
                io::Error::from(io::ErrorKind::ConnectionReset),
                "connection reset",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(handshake_failure(&e), want, "{e:?}");
        }
    }
}
