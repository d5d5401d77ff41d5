//! `tambo util init DOMAIN [--forward-to ADDR] [--hostname NAME]` (SPEC §12): a working config
//! folder for a new server, then the DNS records to publish and the next commands.
//!
//! Everything is decided first (arguments, the folder, every file's content, the DKIM key),
//! then written: bad input writes nothing. Each file is created with `fsutil::write_new`
//! (atomic, and never over an existing file, even one created meanwhile).

use crate::addr::{Address, Domain};
use crate::cli::CliError;
use crate::config::Settings;
use crate::config::domains::domain_dir;
use crate::mailauth::dkim::{self, Algorithm};
use argh::FromArgs;
use std::path::{Path, PathBuf};

/// Make a new config folder for DOMAIN in -C (empty or missing), then print the DNS records
/// to publish and the next commands.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "init", help_triggers("-h", "--help", "help"))]
pub struct Init {
    /// the mail domain (the part after @)
    #[argh(positional)]
    pub domain: String,
    /// forward every address of the domain that is not a user to ADDR (a catch-all alias)
    #[argh(option)]
    pub forward_to: Option<String>,
    /// the server's host name, as its A/AAAA and PTR records say (default: this host's name)
    #[argh(option)]
    pub hostname: Option<String>,
}

/// Private files (keys, password hashes) and the rest alike: SPEC §11 wants 0600 / 0700.
const FILE_MODE: u32 = 0o600;

/// The arguments, checked: only valid values from here on.
#[derive(Debug)]
struct Request {
    domain: Domain,
    forward_to: Option<Address>,
    hostname: String,
}

/// One file to create, relative to the config folder.
#[derive(Debug)]
struct NewFile {
    rel: PathBuf,
    contents: Vec<u8>,
}

pub fn run(config_dir: &Path, c: Init) -> Result<(), CliError> {
    let request = parse(c, system_hostname)?;
    check_folder(config_dir)?;
    let files = plan(&request, &dkim_key()?);
    if let Some(existing) = files
        .iter()
        .map(|f| config_dir.join(&f.rel))
        .find(|p| p.symlink_metadata().is_ok())
    {
        return Err(CliError::usage(format!(
            "{}: already exists; util init never overwrites a file (nothing was written)",
            existing.display()
        )));
    }
    write(config_dir, &files)?;
    // Read back through the loaders `serve` uses: what init made must serve.
    let settings = Settings::load(config_dir)
        .map_err(|e| CliError::failure(format!("the new configuration does not load: {e}")))?;
    super::check::problems(&settings)
        .first()
        .map_or(Ok(()), |p| {
            Err(CliError::failure(format!(
                "the new configuration does not load: {p}"
            )))
        })?;
    println!();
    println!("# DNS records to publish for {}:", request.domain);
    super::dns_records::records(
        &settings,
        super::dns_records::DnsRecords {
            domain: request.domain.to_string(),
        },
    )?;
    if !request.hostname.contains('.') {
        eprintln!(
            "warning: hostname {:?} is not a full name: mail servers will not find it; \
             set \"hostname\" in conf/tambo.json to the server's DNS name",
            request.hostname
        );
    }
    print!("{}", next_steps(config_dir, &request));
    Ok(())
}

/// Checks every argument; `system_hostname` is only asked when `--hostname` is absent.
fn parse(c: Init, system_hostname: impl FnOnce() -> String) -> Result<Request, CliError> {
    let domain = parse_domain(&c.domain)?;
    let forward_to = c
        .forward_to
        .as_deref()
        .map(|a| {
            Address::parse(a)
                .map_err(|e| CliError::usage(format!("--forward-to {a:?}: not an address: {e}")))
        })
        .transpose()?;
    let hostname = match c.hostname {
        Some(h) => {
            parse_hostname(&h).map_err(|why| CliError::usage(format!("--hostname {h:?}: {why}")))?
        }
        // Checked too: it goes into tambo.json, which would not load with a bad one.
        None => {
            let system = system_hostname();
            parse_hostname(&system).map_err(|why| {
                CliError::usage(format!(
                    "this host's name {system:?} cannot be used: {why}; give --hostname"
                ))
            })?
        }
    };
    Ok(Request {
        domain,
        forward_to,
        hostname,
    })
}

fn parse_domain(input: &str) -> Result<Domain, CliError> {
    let not_domain = |why: String| CliError::usage(format!("{input:?}: not a domain: {why}"));
    let domain = Domain::parse(input).map_err(|e| not_domain(e.to_string()))?;
    // A mail domain is registered under a public suffix: `localhost` or `mail` alone cannot
    // receive mail from the Internet, and is more likely a mistyped argument.
    if !domain.as_str().contains('.') {
        return Err(not_domain("a mail domain has at least two labels".into()));
    }
    Ok(domain)
}

/// `hostname` as `conf/tambo.json` takes it: an RFC 1123 host name, lower-cased, in its ASCII
/// form (it goes into greetings and certificates).
fn parse_hostname(input: &str) -> Result<String, String> {
    let lower = input.to_ascii_lowercase();
    if crate::addr::is_host_name(&lower) {
        Ok(lower)
    } else {
        Err("not a host name (letters, digits, '-' and dots)".into())
    }
}

fn system_hostname() -> String {
    Settings::defaults(PathBuf::new()).hostname
}

/// SPEC §12: the folder must be empty or missing. A folder with only a `.git` (made by `git
/// init` first) or other unrelated files is fine as long as it holds no configuration.
fn check_folder(config_dir: &Path) -> Result<(), CliError> {
    match std::fs::metadata(config_dir) {
        Ok(meta) if !meta.is_dir() => {
            return Err(CliError::usage(format!(
                "{}: not a folder (the config folder, -C)",
                config_dir.display()
            )));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(CliError::usage(format!("{}: {e}", config_dir.display()))),
    }
    for rel in ["conf", "domains"] {
        let path = config_dir.join(rel);
        if path.symlink_metadata().is_ok() {
            return Err(CliError::usage(format!(
                "{}: already has a configuration ({} exists); util init only fills an empty \
                 or missing folder (nothing was written)",
                config_dir.display(),
                path.display()
            )));
        }
    }
    Ok(())
}

/// A new DKIM key (PKCS#8 PEM), the same kind `util dkim-keygen` makes by default.
fn dkim_key() -> Result<String, CliError> {
    // RSA: every receiver verifies it; Ed25519 alone (RFC 8463) is not verified by all yet.
    dkim::generate_pem(Algorithm::Rsa2048)
        .map_err(|e| CliError::failure(format!("generating the DKIM key: {e}")))
}

/// Every file of the new folder, in the order they are written (the DKIM key last, so that a
/// half-written folder is never mistaken for one that signs).
fn plan(r: &Request, dkim_pem: &str) -> Vec<NewFile> {
    let domain = Path::new("domains").join(r.domain.as_str());
    let selector = super::dkim::date_selector(time::OffsetDateTime::now_utc());
    let file = |rel: PathBuf, text: String| NewFile {
        rel,
        contents: text.into_bytes(),
    };
    vec![
        file(".gitignore".into(), GITIGNORE.into()),
        file("conf/tambo.json".into(), tambo_json(&r.hostname)),
        file(domain.join("users"), "{\n}\n".into()),
        file(domain.join("aliases"), aliases(r)),
        file(
            domain.join(format!("dkim:{selector}.pem")),
            dkim_pem.to_string(),
        ),
    ]
}

/// Runtime state (SPEC §2): the queue, mailboxes, generated secrets. `/data` without a slash
/// also covers a `data` symbolic link (the Debian package links it to /var/lib/tambo).
const GITIGNORE: &str = "# runtime state of tambo (data_dir): queue, mailboxes, secrets\n/data\n";

/// SPEC §3's defaults written out, so that the file shows what the server listens on.
fn tambo_json(hostname: &str) -> String {
    let value = serde_json::json!({
        "hostname": hostname,
        "smtp_listen": ["0.0.0.0:25", "[::]:25"],
        "submission_listen": ["0.0.0.0:587", "[::]:587"],
        "submission_tls_listen": ["0.0.0.0:465", "[::]:465"],
        "imap_listen": [],
        "imaps_listen": [],
        "pop3_listen": [],
        "pop3s_listen": [],
        "data_dir": "data",
    });
    // serde_json keeps insertion order here (preserve_order), so the file reads as SPEC §3.
    // Serialising a `Value` of strings and lists cannot fail (no map with non-string keys).
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}

fn aliases(r: &Request) -> String {
    let mut text = String::from(
        "# Aliases of this domain, one a line (SPEC §6):\n\
         #   info: alice, bob@example.org       forward to others\n\
         #   tickets: | /usr/local/bin/ticket   pipe to a command (no shell)\n\
         #   *: me@example.org                  catch-all: every other address\n",
    );
    if let Some(to) = &r.forward_to {
        text.push_str(&format!("*: {to}\n"));
    }
    text
}

fn write(config_dir: &Path, files: &[NewFile]) -> Result<(), CliError> {
    for f in files {
        let path = config_dir.join(&f.rel);
        let failed = |e: std::io::Error| {
            CliError::failure(format!(
                "{}: {e} (util init stopped part way)",
                path.display()
            ))
        };
        if let Some(dir) = path.parent() {
            crate::fsutil::create_private_dir_all(dir).map_err(failed)?;
        }
        crate::fsutil::write_new(&path, &f.contents, FILE_MODE).map_err(failed)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// What to run next, with `-C` as given.
fn next_steps(config_dir: &Path, r: &Request) -> String {
    let c = shell_word(&config_dir.display().to_string());
    let d = &r.domain;
    let dir = domain_dir(Path::new(""), d);
    format!(
        "\n# Next:\n\
         #  1. publish the records above in the DNS of {d} (and the PTR with your provider)\n\
         #  2. add a user (asks for the password):\n\
         tambo -C {c} util user-add you@{d}\n\
         #  3. start the server (ports 25, 587 and 465; see {c}/conf/tambo.json):\n\
         tambo -C {c} serve\n\
         #  4. once the records are published, check them:\n\
         tambo -C {c} util dns-check {d}\n\
         #  Keep the folder in git: cd {c} && git init && git add .gitignore conf {} && git commit\n",
        dir.display()
    )
}

/// A path as one shell word, quoted only when it needs to be.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:,@".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(domain: &str, forward_to: Option<&str>, hostname: Option<&str>) -> Init {
        Init {
            domain: domain.into(),
            forward_to: forward_to.map(Into::into),
            hostname: hostname.map(Into::into),
        }
    }

    #[test]
    fn arguments_are_checked() {
        let sys = || "host.example".to_string();
        // (domain, --forward-to, --hostname, error fragment or "" for ok)
        let cases: [(&str, Option<&str>, Option<&str>, &str); 10] = [
            ("example.com", None, None, ""),
            (
                "Example.COM",
                Some("me@gmail.com"),
                Some("MX.example.com"),
                "",
            ),
            ("bücher.example", None, None, ""),
            ("localhost", None, None, "at least two labels"),
            ("exa mple.com", None, None, "not a domain"),
            ("../etc", None, None, "not a domain"),
            ("192.0.2.1", None, None, "not a domain"),
            (
                "example.com",
                Some("me"),
                None,
                "--forward-to \"me\": not an address",
            ),
            ("example.com", Some("a@b@c"), None, "--forward-to"),
            ("example.com", None, Some("mx_1.example.com"), "--hostname"),
        ];
        for (domain, fwd, host, want) in cases {
            let got = parse(args(domain, fwd, host), sys);
            match (got, want) {
                (Ok(_), "") => {}
                (Err(e), w) if !w.is_empty() => {
                    assert_eq!(e.status, 2, "{domain}");
                    assert!(e.message.contains(w), "{domain}: {}", e.message);
                }
                (got, _) => panic!("{domain} {fwd:?} {host:?}: {got:?}"),
            }
        }
        let r = parse(args("Example.COM", None, Some("MX.Example.com")), sys).unwrap();
        assert_eq!(
            (r.domain.as_str(), r.hostname.as_str()),
            ("example.com", "mx.example.com")
        );
        assert_eq!(
            parse(args("a.example", None, None), sys).unwrap().hostname,
            "host.example"
        );
        // This host's name is checked as --hostname is: tambo.json would not load.
        let bad = parse(args("a.example", None, None), || "bad_name".into()).unwrap_err();
        assert_eq!(bad.status, 2);
        assert!(bad.message.contains("give --hostname"), "{}", bad.message);
    }

    #[test]
    fn folder_must_hold_no_configuration() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert!(check_folder(&dir.join("missing")).is_ok());
        assert!(check_folder(dir).is_ok());
        std::fs::create_dir(dir.join(".git")).unwrap();
        assert!(
            check_folder(dir).is_ok(),
            "a git repository alone is no configuration"
        );
        std::fs::write(dir.join("file"), "").unwrap();
        assert_eq!(check_folder(&dir.join("file")).unwrap_err().status, 2);
        for rel in ["conf", "domains"] {
            std::fs::create_dir(dir.join(rel)).unwrap();
            let e = check_folder(dir).unwrap_err();
            assert!(
                e.message.contains("already has a configuration"),
                "{}",
                e.message
            );
            std::fs::remove_dir(dir.join(rel)).unwrap();
        }
    }

    #[test]
    fn files_load_as_serve_loads_them() {
        let r = parse(
            args("example.com", Some("me@gmail.com"), Some("mx.example.com")),
            || unreachable!("--hostname given"),
        )
        .unwrap();
        let files = plan(&r, "");
        let names: Vec<_> = files.iter().map(|f| f.rel.display().to_string()).collect();
        assert_eq!(
            names[..4],
            [
                ".gitignore",
                "conf/tambo.json",
                "domains/example.com/users",
                "domains/example.com/aliases"
            ]
        );
        assert!(
            names[4].starts_with("domains/example.com/dkim:"),
            "{names:?}"
        );
        let json = String::from_utf8(files[1].contents.clone()).unwrap();
        let settings = Settings::parse(&json, PathBuf::from("/cfg")).unwrap();
        assert_eq!(settings.hostname, "mx.example.com");
        assert_eq!(settings.smtp_listen.len(), 2);
        assert!(settings.imap_listen.is_empty() && settings.pop3_listen.is_empty());
        assert_eq!(settings.data_dir, PathBuf::from("/cfg/data"));
        let aliases = String::from_utf8(files[3].contents.clone()).unwrap();
        let parsed =
            crate::aliases::AliasFile::parse(Path::new("aliases"), &aliases, &r.domain).unwrap();
        assert_eq!(parsed.len(), 1, "{aliases}");
        assert_eq!(parsed.get("*").unwrap().targets.len(), 1);
        // Without --forward-to, only comments.
        let r = parse(
            args("example.com", None, Some("mx.example.com")),
            || unreachable!(),
        )
        .unwrap();
        let aliases = String::from_utf8(plan(&r, "").remove(3).contents).unwrap();
        let parsed =
            crate::aliases::AliasFile::parse(Path::new("aliases"), &aliases, &r.domain).unwrap();
        assert!(parsed.is_empty(), "{aliases}");
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("/etc/tambo"), "/etc/tambo");
        assert_eq!(shell_word("my dir"), "'my dir'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }
}
