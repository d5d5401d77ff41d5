//! Walks a chasquid config folder (chasquid.conf, certs/, domains/, hooks/) and decides what
//! each file becomes in tambo's layout (SPEC §2), noting everything it leaves behind.

use super::ImportError;
use super::conf;
use super::plan::{Content, Plan};
use super::report::Report;
use super::users;
use crate::addr::Domain;
use crate::aliases::{AliasFile, Normalization};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const PRIVATE: u32 = 0o600;
const PUBLIC: u32 = 0o644;
const EXECUTABLE: u32 = 0o755;

/// Top-level entries that are chasquid's, handled below or deliberately ignored.
const KNOWN_TOP: [&str; 5] = ["chasquid.conf", "certs", "domains", "hooks", "README"];

/// Builds the whole plan; a parse error or an unreadable file stops it.
pub fn plan(src: &Path, report: &mut Report) -> Result<Plan, ImportError> {
    let has_conf = src.join("chasquid.conf").is_file();
    if !src.is_dir() || !(has_conf || src.join("domains").is_dir()) {
        return Err(ImportError::NotChasquid(src.to_path_buf()));
    }
    let mut plan = Plan::default();
    let converted = chasquid_conf(src, has_conf, report)?;
    certs(src, &mut plan, report)?;
    domains(src, &converted.norm, &mut plan, report)?;
    hooks(src, &mut plan, report)?;
    others(src, report)?;
    // Last, so that a half-finished import is visibly one: no tambo.json yet.
    plan.add("conf/tambo.json", tambo_json(&converted.json));
    Ok(plan)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImportError + '_ {
    move |source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Entries of a folder, sorted by name; a missing folder has none.
fn entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, ImportError> {
    let list = match fs::read_dir(dir) {
        Ok(list) => list,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in list {
        let entry = entry.map_err(io_err(dir))?;
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    out.sort();
    Ok(out)
}

fn read(path: &Path) -> Result<Vec<u8>, ImportError> {
    fs::read(path).map_err(io_err(path))
}

fn chasquid_conf(
    src: &Path,
    has_conf: bool,
    report: &mut Report,
) -> Result<conf::Converted, ImportError> {
    let path = src.join("chasquid.conf");
    let text = if has_conf {
        read(&path)?
    } else {
        report.not_converted(
            "chasquid.conf",
            "missing; conf/tambo.json gets tambo's defaults",
        );
        Vec::new()
    };
    conf::convert(&text, report).map_err(|e| ImportError::Parse {
        path,
        line: e.line,
        msg: e.msg,
    })
}

fn tambo_json(json: &serde_json::Map<String, serde_json::Value>) -> Content {
    // Serialising a JSON value to text cannot fail.
    let text = serde_json::to_string_pretty(json).unwrap_or_default();
    Content::Bytes {
        data: format!("{text}\n").into_bytes(),
        mode: PUBLIC,
    }
}

/// `certs/<name>/{fullchain,privkey}.pem` to `conf/certs/<name>/`; links stay links.
fn certs(src: &Path, plan: &mut Plan, report: &mut Report) -> Result<(), ImportError> {
    for (name, path) in entries(&src.join("certs"))? {
        let what = format!("certs/{name}");
        let dest = Path::new("conf/certs").join(&name);
        if name.starts_with('.') || !path.is_dir() {
            report.not_converted(what, "not a certificate folder (chasquid ignores it too)");
            continue;
        }
        let missing: Vec<&str> = ["fullchain.pem", "privkey.pem"]
            .into_iter()
            .filter(|f| !path.join(f).exists())
            .collect();
        if !missing.is_empty() {
            report.not_converted(what, format!("no {}", missing.join(" or ")));
            continue;
        }
        if is_symlink(&path) {
            let target = link_target(&path)?;
            let detail = format!("-> conf/certs/{name}, a link to {}", target.display());
            plan.add(dest, Content::Symlink(target));
            report.copied(what, detail);
            continue;
        }
        for (file, mode) in [("fullchain.pem", PUBLIC), ("privkey.pem", PRIVATE)] {
            plan.add(dest.join(file), file_content(&path.join(file), mode)?);
        }
        report.copied(
            what,
            format!("fullchain.pem, privkey.pem -> conf/certs/{name}/"),
        );
    }
    Ok(())
}

fn is_symlink(path: &Path) -> bool {
    path.symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
}

/// A link's target, absolute: a relative one is taken from the link's own folder, not
/// resolved further, so certbot's `live/` → `archive/` renewals keep working.
fn link_target(link: &Path) -> Result<PathBuf, ImportError> {
    let target = fs::read_link(link).map_err(io_err(link))?;
    if target.is_absolute() {
        return Ok(target);
    }
    let dir = link.parent().unwrap_or(Path::new("."));
    std::path::absolute(dir.join(target)).map_err(io_err(link))
}

/// A file as it is: a link stays a link, else its bytes with `mode`.
fn file_content(path: &Path, mode: u32) -> Result<Content, ImportError> {
    if is_symlink(path) {
        return Ok(Content::Symlink(link_target(path)?));
    }
    Ok(Content::Bytes {
        data: read(path)?,
        mode,
    })
}

/// Every `domains/<domain>/` folder: users converted, aliases and DKIM keys copied.
fn domains(
    src: &Path,
    norm: &Normalization,
    plan: &mut Plan,
    report: &mut Report,
) -> Result<(), ImportError> {
    let mut seen = BTreeSet::new();
    for (name, path) in entries(&src.join("domains"))? {
        let what = format!("domains/{name}");
        if !path.is_dir() {
            report.not_converted(what, "not a folder (chasquid ignores it too)");
            continue;
        }
        let domain = match Domain::parse(&name) {
            Ok(d) => d,
            Err(e) => {
                report.not_converted(what, e.to_string());
                continue;
            }
        };
        if !seen.insert(domain.clone()) {
            let why = format!("the same domain as another folder ({})", domain.as_str());
            report.not_converted(what, why);
            continue;
        }
        if domain.as_str() != name {
            report.converted(
                &what,
                format!("folder renamed to domains/{}", domain.as_str()),
            );
        }
        let dest = Path::new("domains").join(domain.as_str());
        domain_folder(&path, &what, &domain, norm, &dest, plan, report)?;
    }
    Ok(())
}

fn domain_folder(
    path: &Path,
    what: &str,
    domain: &Domain,
    norm: &Normalization,
    dest: &Path,
    plan: &mut Plan,
    report: &mut Report,
) -> Result<(), ImportError> {
    let users_path = path.join("users");
    let users = if users_path.exists() {
        let entries = users::parse(&read(&users_path)?).map_err(|e| ImportError::Parse {
            path: users_path,
            line: e.line,
            msg: e.msg,
        })?;
        users::convert(&entries, norm, &format!("{what}/users"), report)
    } else {
        // tambo knows its local domains by their folders; an empty users file makes one.
        report.converted(
            format!("{what}/users"),
            "no users file: an empty one is written",
        );
        Default::default()
    };
    plan.add(dest.join("users"), Content::Users(users));
    for (name, file) in entries(path)? {
        let file_what = format!("{what}/{name}");
        if name == "users" {
            continue;
        }
        if name == "aliases" {
            aliases(&file, domain, plan, dest)?;
            report.copied(file_what, "");
        } else if let Some(selector) = name
            .strip_prefix("dkim:")
            .and_then(|n| n.strip_suffix(".pem"))
        {
            match dkim_key_problem(&file, selector) {
                None => {
                    plan.add(dest.join(&name), file_content(&file, PRIVATE)?);
                    report.copied(file_what, format!("DKIM key, selector {selector:?}"));
                }
                Some(why) => report.not_converted(file_what, why),
            }
        } else {
            report.not_converted(file_what, "not part of chasquid's domain layout");
        }
    }
    Ok(())
}

/// Copied as is, after checking that tambo reads it the same way chasquid did: a line it
/// cannot parse is a parse error, as it would be when tambo starts.
fn aliases(file: &Path, domain: &Domain, plan: &mut Plan, dest: &Path) -> Result<(), ImportError> {
    let data = read(file)?;
    let text = String::from_utf8(data.clone()).map_err(|e| ImportError::Parse {
        path: file.to_path_buf(),
        line: line_of_offset(&data, e.utf8_error().valid_up_to()),
        msg: "not valid UTF-8".into(),
    })?;
    AliasFile::parse(file, &text, domain).map_err(|e| match e {
        crate::aliases::AliasError::Parse { path, line, msg } => {
            ImportError::Parse { path, line, msg }
        }
        crate::aliases::AliasError::Io { path, source } => ImportError::Io { path, source },
    })?;
    plan.add(dest.join("aliases"), Content::Bytes { data, mode: PUBLIC });
    Ok(())
}

fn line_of_offset(data: &[u8], offset: usize) -> usize {
    data[..offset.min(data.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Why tambo would refuse this DKIM key (it refuses to start on one), or None.
/// Same checks as `mailauth::dkim`: selector of DNS labels, PKCS#8 PEM, RSA of at least
/// 2048 bits or Ed25519.
fn dkim_key_problem(path: &Path, selector: &str) -> Option<String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !selector.split('.').all(label_ok) {
        return Some(format!(
            "selector {selector:?} is not DNS labels (letters, digits, '-', '_')"
        ));
    }
    let pem = match fs::read(path) {
        Ok(pem) => pem,
        Err(e) => return Some(format!("cannot read: {e}")),
    };
    pkcs8_problem(&pem)
}

fn pkcs8_problem(pem: &[u8]) -> Option<String> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject as _;
    let der = match PrivateKeyDer::from_pem_slice(pem) {
        Ok(PrivateKeyDer::Pkcs8(der)) => der,
        Ok(_) => return Some("not a PKCS#8 key (BEGIN PRIVATE KEY), as tambo needs".into()),
        Err(e) => return Some(format!("no private key in the PEM file: {e}")),
    };
    let der = der.secret_pkcs8_der();
    let rsa = aws_lc_rs::rsa::KeyPair::from_pkcs8(der);
    let ed = mail_auth::common::crypto::Ed25519Key::from_pkcs8_der(der);
    match (rsa, ed) {
        (Ok(_), _) | (_, Ok(_)) => None,
        (Err(e), _) if e.description_() == "TooSmall" => {
            Some("RSA key too short: tambo needs at least 2048 bits".into())
        }
        (Err(e), Err(ed)) => Some(format!("not an RSA or Ed25519 key ({e}; {ed})")),
    }
}

/// `hooks/post-data` is tambo's hook too (run with chasquid's environment variables).
fn hooks(src: &Path, plan: &mut Plan, report: &mut Report) -> Result<(), ImportError> {
    for (name, path) in entries(&src.join("hooks"))? {
        let what = format!("hooks/{name}");
        match name.as_str() {
            "post-data" if path.is_file() => {
                let executable =
                    fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
                let mode = if executable { EXECUTABLE } else { PUBLIC };
                let data = read(&path)?;
                plan.add(
                    Path::new("hooks").join(&name),
                    Content::Bytes { data, mode },
                );
                let detail = if executable {
                    "executable; tambo runs it with chasquid's environment variables"
                } else {
                    "not executable, so neither chasquid nor tambo runs it"
                };
                report.copied(what, detail);
            }
            "alias-resolve" => report.not_converted(
                what,
                "tambo has no alias-resolve hook: aliases come from the aliases files only",
            ),
            _ => report.not_converted(what, "not a hook tambo runs"),
        }
    }
    Ok(())
}

/// Anything else at the top of the chasquid folder.
fn others(src: &Path, report: &mut Report) -> Result<(), ImportError> {
    for (name, _) in entries(src)? {
        if !KNOWN_TOP.contains(&name.as_str()) {
            report.not_converted(name, "not part of chasquid's config layout");
        }
    }
    Ok(())
}
