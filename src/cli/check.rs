//! `tambo util check` (SPEC §12): load everything `serve` would load, with the same loaders,
//! and report every problem, one line each with its file (and line where there is one); exit 0
//! when `serve` would start, 2 otherwise. Meant for a pre-commit hook of the config repository
//! (contrib/git-hooks/pre-commit).
//!
//! The loaders each have a collecting form (`Settings::load_all`, `Domains::load_all`,
//! `AccessRules::parse_all`, `tls::check_certificates`) that `serve`'s stop-at-the-first form
//! is built on, so this cannot drift from what `serve` accepts. Nothing is written: the
//! self-signed certificate `serve` generates when `conf/certs/` is empty is not made here.

use crate::cli::CliError;
use crate::config::access::AccessRules;
use crate::config::{Domains, Settings};
use argh::FromArgs;
use std::path::Path;

/// Check the whole config folder as serve would load it; report every problem with its file
/// and line; exit 0 when serve would start, 2 otherwise.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "check", help_triggers("-h", "--help", "help"))]
pub struct Check {}

/// What a check found: problems stop `serve`; warnings are things `serve` starts with but
/// that are most likely a mistake.
#[derive(Debug, Default)]
pub struct Findings {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

pub fn run(config_dir: &Path, _c: Check) -> Result<(), CliError> {
    super::existing_config_dir(config_dir)?;
    let (settings, settings_problems) = Settings::load_all(config_dir);
    let mut findings = Findings {
        problems: settings_problems.into_iter().map(|e| e.0).collect(),
        warnings: Vec::new(),
    };
    check_rest(&settings, &mut findings);
    // Paths relative to the config folder: shorter, and what `git status` shows in a
    // pre-commit hook run at the top of the repository.
    let shown = |line: &str| relative_to(&settings.config_dir, line);
    for warning in &findings.warnings {
        println!("warning: {}", shown(warning));
    }
    for problem in &findings.problems {
        println!("{}", shown(problem));
    }
    match findings.problems.len() {
        0 => {
            println!("{}: OK, serve would start", config_dir.display());
            Ok(())
        }
        n => Err(CliError::usage(format!(
            "{}: {n} problem(s), serve would not start",
            config_dir.display()
        ))),
    }
}

/// Every problem `serve` would stop at, after `tambo.json`, for settings that loaded; the
/// first one is what a command that needs a working folder (`util init`) reports.
pub fn problems(settings: &Settings) -> Vec<String> {
    let mut findings = Findings::default();
    check_rest(settings, &mut findings);
    findings.problems
}

/// Everything after `tambo.json`: domains (users, aliases, DKIM keys), access rules,
/// certificates, the resolver settings, the post-data hook.
fn check_rest(settings: &Settings, findings: &mut Findings) {
    let config_dir = &settings.config_dir;
    let (domains, bad) = Domains::load_all(config_dir, settings.normalization());
    findings.problems.extend(bad.into_iter().map(|e| e.0));
    if domains.is_empty() {
        findings.warnings.push(format!(
            "{}: no domain folder, every recipient would be refused",
            config_dir.join("domains").display()
        ));
    }
    check_access(config_dir, findings);
    // `acme`'s email and directory URL were checked with the settings; what it needs
    // beyond them is a listener for its challenges. The certificates in conf/certs/ are
    // checked either way: they win over ACME ones (SPEC §12).
    if settings.acme.is_some()
        && settings.https_listen.is_empty()
        && settings.http_listen.is_empty()
    {
        findings.warnings.push(format!(
            "{}: \"acme\" is set but neither \"https_listen\" nor \"http_listen\": no \
             certificate can be obtained",
            config_dir.join("conf").join("tambo.json").display()
        ));
    }
    let certs = crate::tls::check_certificates(config_dir);
    findings
        .problems
        .extend(certs.into_iter().map(|e| e.to_string()));
    if let Err(e) = crate::dns::Dns::new(&settings.dns_servers) {
        findings.problems.push(format!("DNS resolver: {e}"));
    }
    let hook = config_dir.join(crate::hooks::HOOK_PATH);
    if let Some(why) = crate::hooks::unusable(&hook) {
        findings.warnings.push(why);
    }
}

fn check_access(config_dir: &Path, findings: &mut Findings) {
    let path = config_dir.join("conf").join("access");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let (_, bad) = AccessRules::parse_all(&path, &text);
            findings
                .problems
                .extend(bad.into_iter().map(|e| e.to_string()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => findings.problems.push(format!("{}: {e}", path.display())),
    }
}

/// `line` with a leading `<dir>/` removed.
fn relative_to(dir: &Path, line: &str) -> String {
    let prefix = format!("{}/", dir.display());
    line.strip_prefix(&prefix).unwrap_or(line).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A config folder with the given files (relative path, contents).
    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let path = tmp.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        tmp
    }

    fn findings(dir: &Path) -> Findings {
        let (settings, bad) = Settings::load_all(dir);
        let mut f = Findings {
            problems: bad.into_iter().map(|e| e.0).collect(),
            warnings: Vec::new(),
        };
        check_rest(&settings, &mut f);
        f.problems = f
            .problems
            .iter()
            .map(|p| relative_to(&settings.config_dir, p))
            .collect();
        f
    }

    #[test]
    fn a_good_folder_has_no_problem() {
        let tmp = folder(&[
            (
                "conf/tambo.json",
                "{\n  \"hostname\": \"mx.example.com\"\n}\n",
            ),
            ("domains/example.com/users", "{\n}\n"),
            (
                "domains/example.com/aliases",
                "info: alice\n*: me@example.org\n",
            ),
            ("conf/access", "Connect:192.0.2.0/24 REJECT\n"),
        ]);
        let f = findings(tmp.path());
        assert!(f.problems.is_empty(), "{:?}", f.problems);
        assert!(f.warnings.is_empty(), "{:?}", f.warnings);
    }

    #[test]
    fn every_problem_is_reported_with_file_and_line() {
        let tmp = folder(&[
            (
                "conf/tambo.json",
                "{\n  \"hostname\": \"mx.example.com\",\n  \"colour\": \"blue\",\n  \"max_recipients\": -1\n}\n",
            ),
            (
                "domains/a.example/aliases",
                "ok: alice\nno colon here\nalso: fine\n: nothing\n",
            ),
            ("domains/a.example/dkim:s1.pem", "this is not a key\n"),
            ("domains/a.example/dkim:s2.pem", "nor this\n"),
            ("domains/b.example/users", "{\n  \"alice\": 3\n}\n"),
            ("domains/Upper.example/users", "{}"),
            (
                "conf/access",
                "Connect:192.0.2.0/24 REJECT\nFrom: nonsense\n",
            ),
            ("conf/certs/mx/fullchain.pem", "no certificate\n"),
            ("conf/certs/mx/privkey.pem", "no key\n"),
        ]);
        let f = findings(tmp.path());
        let want = [
            "conf/tambo.json:3: unknown key \"colour\"",
            "conf/tambo.json:4: \"max_recipients\"",
            "domains/Upper.example: domain folders must be named in lower-case",
            "domains/a.example/aliases:2: ",
            "domains/a.example/aliases:4: ",
            "domains/a.example/dkim:s1.pem: no PEM private key",
            "domains/a.example/dkim:s2.pem: no PEM private key",
            "domains/b.example/users:2",
            "conf/access:2: ",
            "conf/certs/mx/fullchain.pem: no certificate",
        ];
        assert_eq!(f.problems.len(), want.len(), "{:#?}", f.problems);
        for (got, want) in f.problems.iter().zip(want) {
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
    }

    #[test]
    fn warnings_do_not_stop_serve() {
        let tmp = folder(&[("hooks/post-data", "#!/bin/sh\n")]);
        let f = findings(tmp.path());
        assert!(f.problems.is_empty(), "{:?}", f.problems);
        assert_eq!(f.warnings.len(), 2, "{:?}", f.warnings);
        assert!(
            f.warnings[0].contains("no domain folder"),
            "{:?}",
            f.warnings
        );
        assert!(f.warnings[1].ends_with("hooks/post-data is not executable: ignored"));
    }
}
