//! One ACME order for one name (RFC 8555 §7.4): the account (created once, kept in
//! `data_dir/acme/account.json`), the authorization answered by tls-alpn-01 (RFC 8737) or
//! http-01 (RFC 8555 §8.3), a CSR for a fresh key, the chain stored beside the key.

use super::client::SmolHttp;
use crate::challenges::Challenges;
use crate::config::Settings;
use crate::config::settings::Acme;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long the CA may take to validate and to issue.
const POLL_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("{0}")]
    Acme(#[from] instant_acme::Error),
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error("the CA offers no {0} challenge")]
    NoChallenge(&'static str),
    #[error("{kind} challenge refused: {why}")]
    Refused { kind: &'static str, why: String },
    #[error("order ended {0}")]
    Status(String),
    #[error("making the key or the request: {0}")]
    Key(String),
    #[error("the issued certificate does not load: {0}")]
    Issued(String),
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> OrderError {
    OrderError::File {
        path: path.display().to_string(),
        msg: e.to_string(),
    }
}

/// Which challenge answers: tls-alpn-01 when `https_listen` is set (port 443 serves the
/// MTA-STS policy anyway), else http-01 on `http_listen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    TlsAlpn01,
    Http01,
}

impl Challenge {
    pub fn for_settings(settings: &Settings) -> Challenge {
        if settings.https_listen.is_empty() && !settings.http_listen.is_empty() {
            Challenge::Http01
        } else {
            Challenge::TlsAlpn01
        }
    }

    fn name(self) -> &'static str {
        match self {
            Challenge::TlsAlpn01 => "tls-alpn-01",
            Challenge::Http01 => "http-01",
        }
    }
}

/// What was issued and stored.
pub struct Issued {
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// The account at `acme.directory`: the stored one, else a new one (stored, mode 0600).
pub async fn account(data_dir: &Path, acme: &Acme) -> Result<Account, OrderError> {
    let dir = super::acme_dir(data_dir);
    let path = dir.join("account.json");
    let http = || -> Result<Box<SmolHttp>, OrderError> {
        SmolHttp::new()
            .map(Box::new)
            .map_err(|e| OrderError::Key(format!("TLS set-up: {e}")))
    };
    if let Ok(text) = std::fs::read_to_string(&path) {
        let stored: StoredAccount = serde_json::from_str(&text).map_err(|e| file_err(&path, e))?;
        // Another directory (the setting changed): a new account there.
        if stored.directory == acme.directory {
            let builder = Account::builder_with_http(http()?);
            return Ok(builder.from_credentials(stored.credentials).await?);
        }
    }
    let contact = format!("mailto:{}", acme.email);
    let new = NewAccount {
        contact: &[&contact],
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, credentials) = Account::builder_with_http(http()?)
        .create(&new, acme.directory.clone(), None)
        .await?;
    let stored = StoredAccount {
        directory: acme.directory.clone(),
        credentials,
    };
    let text = serde_json::to_string_pretty(&stored).map_err(|e| file_err(&path, e))?;
    crate::fsutil::create_private_dir_all(&dir).map_err(|e| file_err(&dir, e))?;
    crate::fsutil::write_atomic(&path, text.as_bytes(), 0o600).map_err(|e| file_err(&path, e))?;
    log::info!(
        "acme: new account at {} stored in {}",
        acme.directory,
        path.display()
    );
    Ok(account)
}

/// Orders a certificate for `name`, answering with `how`, and stores it under
/// `data_dir/acme/certs/<name>/`.
pub async fn obtain(
    account: &Account,
    name: &str,
    how: Challenge,
    challenges: &Arc<Challenges>,
    data_dir: &Path,
) -> Result<Issued, OrderError> {
    let identifiers = [Identifier::Dns(name.to_string())];
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let mut answered = Vec::new();
    let result = answer(&mut order, name, how, challenges, &mut answered).await;
    let status = match result {
        Ok(()) => {
            let retries = RetryPolicy::default().timeout(POLL_TIMEOUT);
            // The CA's problem document names why validation failed (RFC 8555 §6.7).
            order.poll_ready(&retries).await.map_err(|e| match e {
                instant_acme::Error::Api(problem) => OrderError::Refused {
                    kind: how.name(),
                    why: problem
                        .detail
                        .clone()
                        .unwrap_or_else(|| problem.to_string()),
                },
                other => OrderError::from(other),
            })
        }
        Err(e) => Err(e),
    };
    // The answers are not needed once the CA has decided (or we gave up).
    for token in &answered {
        challenges.remove_http(token);
    }
    challenges.remove_alpn(name);
    match status? {
        OrderStatus::Ready => {}
        OrderStatus::Invalid => return Err(refusal(&mut order, how).await),
        other => return Err(OrderError::Status(format!("{other:?}").to_lowercase())),
    }
    let key = rcgen::KeyPair::generate().map_err(|e| OrderError::Key(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])
        .map_err(|e| OrderError::Key(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| OrderError::Key(e.to_string()))?;
    order.finalize_csr(csr.der()).await?;
    let retries = RetryPolicy::default().timeout(POLL_TIMEOUT);
    let chain = order.poll_certificate(&retries).await?;
    store(data_dir, name, &chain, &key.serialize_pem())
}

/// Puts the answer of each pending authorization in place and tells the CA it is ready.
async fn answer(
    order: &mut instant_acme::Order,
    name: &str,
    how: Challenge,
    challenges: &Arc<Challenges>,
    answered: &mut Vec<String>,
) -> Result<(), OrderError> {
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(OrderError::Status(format!("{other:?}").to_lowercase())),
        }
        let kind = match how {
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            Challenge::Http01 => ChallengeType::Http01,
        };
        let mut challenge = authz
            .challenge(kind)
            .ok_or(OrderError::NoChallenge(how.name()))?;
        let key_authorization = challenge.key_authorization();
        match how {
            Challenge::Http01 => {
                challenges.set_http(&challenge.token, key_authorization.as_str());
                answered.push(challenge.token.clone());
            }
            Challenge::TlsAlpn01 => {
                let cert = alpn_certificate(name, key_authorization.digest().as_ref())?;
                challenges.set_alpn(name, Arc::new(cert));
            }
        }
        challenge.set_ready().await?;
    }
    Ok(())
}

/// Why the CA refused: the error of the first failed challenge.
async fn refusal(order: &mut instant_acme::Order, how: Challenge) -> OrderError {
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        if let Some(problem) = authz.challenges.iter().find_map(|c| c.error.as_ref()) {
            let why = problem
                .detail
                .clone()
                .unwrap_or_else(|| problem.to_string());
            return OrderError::Refused {
                kind: how.name(),
                why,
            };
        }
    }
    OrderError::Refused {
        kind: how.name(),
        why: "the order is invalid".into(),
    }
}

/// RFC 8737 §3: a self-signed certificate for `name` with the critical acmeIdentifier
/// extension holding the SHA-256 of the key authorization.
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<CertifiedKey, OrderError> {
    let key_err = |e: rcgen::Error| OrderError::Key(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(key_err)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(key_err)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(key_err)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| OrderError::Key(e.to_string()))?;
    Ok(CertifiedKey::new(
        vec![CertificateDer::from(cert.der().to_vec())],
        signing,
    ))
}

/// Writes `fullchain.pem` and `privkey.pem` (0600, folders 0700), the key first so that a
/// chain never sits beside a key it does not match; then loads them back as a check.
fn store(data_dir: &Path, name: &str, chain: &str, key_pem: &str) -> Result<Issued, OrderError> {
    let dir = crate::tls::acme_certs_dir(data_dir).join(name);
    crate::fsutil::create_private_dir_all(&dir).map_err(|e| file_err(&dir, e))?;
    let key_path = dir.join("privkey.pem.new");
    let chain_path = dir.join("fullchain.pem.new");
    crate::fsutil::write_atomic(&key_path, key_pem.as_bytes(), 0o600)
        .map_err(|e| file_err(&key_path, e))?;
    crate::fsutil::write_atomic(&chain_path, chain.as_bytes(), 0o600)
        .map_err(|e| file_err(&chain_path, e))?;
    // Both renamed in place only once both are written; a crash between the two renames
    // leaves a pair that does not match, which the next round (and `tls`) reports and redoes.
    for file in ["privkey.pem", "fullchain.pem"] {
        let from = dir.join(format!("{file}.new"));
        std::fs::rename(&from, dir.join(file)).map_err(|e| file_err(&from, e))?;
    }
    crate::fsutil::fsync_dir(&dir).map_err(|e| file_err(&dir, e))?;
    let loaded = crate::tls::load_pair(&dir).map_err(|e| OrderError::Issued(e.to_string()))?;
    let leaf = loaded
        .cert
        .first()
        .ok_or_else(|| OrderError::Issued("empty chain".into()))?;
    let (not_before, not_after) = crate::tls::validity(leaf)
        .ok_or_else(|| OrderError::Issued("unparsable certificate".into()))?;
    Ok(Issued {
        serial: serial(leaf),
        not_before,
        not_after,
    })
}

/// The serial number in hex, as `openssl x509 -serial` prints it.
pub fn serial(cert: &CertificateDer<'_>) -> String {
    x509_parser::parse_x509_certificate(cert.as_ref())
        .map(|(_, c)| c.raw_serial_as_string().replace(':', "").to_uppercase())
        .unwrap_or_default()
}
