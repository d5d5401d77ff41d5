//! `tambo util import-chasquid CHASQUID_DIR` (SPEC §4, issue 6 item 4): convert a chasquid
//! config folder into tambo's layout, keeping every password working.
//!
//! Everything is decided first (`source::plan`: parse, convert, check), then what the tambo
//! folder already has is left out whole (issue 20): an existing `conf/tambo.json` stays as it
//! is (the chasquid settings are then not applied), and a domain folder, certificate folder or
//! hook that exists is skipped, never merged file by file; both are reported. Then the files
//! are written atomically. A parse error or a folder that is not chasquid's stops it with
//! nothing written. What could not be converted is reported, with the reason. So the import
//! may go into a folder made by `util init`.

mod conf;
mod plan;
mod report;
mod source;
mod textproto;
mod users;

use crate::cli::CliError;
use crate::config::{Domains, Settings};
use argh::FromArgs;
use std::path::{Path, PathBuf};

/// Convert a chasquid config folder (chasquid.conf, certs/, domains/) into this one.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "import-chasquid",
    help_triggers("-h", "--help", "help")
)]
pub struct ImportChasquid {
    /// the chasquid config folder (usually /etc/chasquid)
    #[argh(positional)]
    pub chasquid_dir: std::path::PathBuf,
}

/// Why nothing was imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}: not a chasquid config folder (no chasquid.conf and no domains/)")]
    NotChasquid(PathBuf),
    #[error("{path}:{line}: {msg}")]
    Parse {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: already exists; import-chasquid does not overwrite (nothing was written)")]
    Exists(PathBuf),
}

/// `config_dir` is the tambo config folder (`-C`); it may not have a conf/tambo.json yet.
pub fn run(config_dir: &Path, c: ImportChasquid) -> Result<(), CliError> {
    let mut report = report::Report::default();
    let mut plan = source::plan(&c.chasquid_dir, &mut report).map_err(usage)?;
    for unit in plan.skip_existing(config_dir) {
        report.not_converted(unit.display().to_string(), skip_reason(&unit));
    }
    // Nothing left can exist, unless something appeared meanwhile.
    if let Some(path) = plan.first_existing(config_dir) {
        return Err(usage(ImportError::Exists(path)));
    }
    let written = plan.write(config_dir).map_err(|(path, e)| {
        CliError::failure(format!(
            "{}: {e} (the import stopped part way)",
            path.display()
        ))
    })?;
    print!("{report}");
    for path in &written {
        println!("wrote {}", path.display());
    }
    check_loads(config_dir)
}

/// Why an existing part of the tambo folder was left as it is.
fn skip_reason(unit: &Path) -> &'static str {
    if unit == Path::new("conf/tambo.json") {
        "already in the tambo folder: its settings are left as they are, the chasquid \
         settings above are not applied (copy what you need by hand)"
    } else if unit.starts_with("domains") {
        "this domain is already in the tambo folder: skipped, not merged (merge its users, \
         aliases and keys by hand if needed)"
    } else {
        "already in the tambo folder: skipped, left as it is"
    }
}

fn usage(e: ImportError) -> CliError {
    CliError::usage(e.to_string())
}

/// Reads the result back as `tambo serve` would, so that a conversion tambo cannot load is
/// said now rather than at the next start.
fn check_loads(config_dir: &Path) -> Result<(), CliError> {
    let settings = Settings::load(config_dir)
        .map_err(|e| CliError::failure(format!("the imported configuration does not load: {e}")))?;
    Domains::load(&settings.config_dir, settings.normalization())
        .map_err(|e| CliError::failure(format!("the imported domains do not load: {e}")))?;
    println!("tambo loads the imported configuration: OK");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn run_in(src: &Path, dst: &Path) -> Result<(), CliError> {
        run(
            dst,
            ImportChasquid {
                chasquid_dir: src.to_path_buf(),
            },
        )
    }

    /// Names of every file and folder under `dir`, relative, sorted.
    fn tree(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
                if p.is_dir() && !p.symlink_metadata().unwrap().file_type().is_symlink() {
                    stack.push(p);
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn imports_a_small_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("chasquid");
        let dst = tmp.path().join("tambo");
        fs::create_dir_all(src.join("domains/Example.ORG")).unwrap();
        fs::create_dir_all(src.join("certs/mx")).unwrap();
        fs::create_dir_all(src.join("hooks")).unwrap();
        fs::write(src.join("chasquid.conf"), "hostname: \"mx.example.org\"\n").unwrap();
        fs::write(src.join("domains/Example.ORG/aliases"), "info: alice\n").unwrap();
        fs::write(
            src.join("domains/Example.ORG/users"),
            "users { key: \"alice\" value { denied {} } }\n",
        )
        .unwrap();
        fs::write(src.join("certs/mx/fullchain.pem"), "chain").unwrap();
        fs::write(src.join("certs/mx/privkey.pem"), "key").unwrap();
        fs::write(src.join("hooks/alias-resolve"), "").unwrap();

        run_in(&src, &dst).unwrap();
        assert_eq!(
            tree(&dst),
            [
                "conf",
                "conf/certs",
                "conf/certs/mx",
                "conf/certs/mx/fullchain.pem",
                "conf/certs/mx/privkey.pem",
                "conf/tambo.json",
                "domains",
                "domains/example.org",
                "domains/example.org/aliases",
                "domains/example.org/users",
            ]
        );
        let json = fs::read_to_string(dst.join("conf/tambo.json")).unwrap();
        assert_eq!(json, "{\n  \"hostname\": \"mx.example.org\"\n}\n");
        assert_eq!(
            fs::read(dst.join("domains/example.org/aliases")).unwrap(),
            b"info: alice\n"
        );

        // A second run skips everything and changes nothing: every part exists now.
        let before = tree(&dst);
        run_in(&src, &dst).unwrap();
        assert_eq!(tree(&dst), before);
        assert_eq!(
            fs::read_to_string(dst.join("conf/tambo.json")).unwrap(),
            json
        );
    }

    #[test]
    fn refusals_write_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("chasquid");
        let dst = tmp.path().join("tambo");
        fs::create_dir_all(&src).unwrap();

        let err = run_in(&src, &dst).unwrap_err();
        assert_eq!(err.status, 2);
        assert!(
            err.message
                .ends_with("not a chasquid config folder (no chasquid.conf and no domains/)"),
            "{}",
            err.message
        );

        fs::write(src.join("chasquid.conf"), "hostname: \"a\"\n\nbogus {\n").unwrap();
        let err = run_in(&src, &dst).unwrap_err();
        assert_eq!(err.status, 2);
        assert!(err.message.contains("chasquid.conf:4: "), "{}", err.message);

        fs::write(src.join("chasquid.conf"), "").unwrap();
        fs::create_dir_all(src.join("domains/a.example")).unwrap();
        fs::write(
            src.join("domains/a.example/users"),
            "users { key: \"x\" value { rot13 {} } }",
        )
        .unwrap();
        let err = run_in(&src, &dst).unwrap_err();
        assert!(
            err.message
                .contains("a.example/users:1: unknown field \"rot13\""),
            "{}",
            err.message
        );

        fs::write(src.join("domains/a.example/users"), "").unwrap();
        fs::write(
            src.join("domains/a.example/aliases"),
            "ok: alice\nno colon here\n",
        )
        .unwrap();
        let err = run_in(&src, &dst).unwrap_err();
        assert!(
            err.message.contains("a.example/aliases:2: "),
            "{}",
            err.message
        );
        assert!(!dst.exists());
    }

    #[test]
    fn into_an_existing_folder_adds_only_new_domains() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("chasquid");
        let dst = tmp.path().join("tambo");
        for d in ["a.example", "b.example"] {
            fs::create_dir_all(src.join("domains").join(d)).unwrap();
            fs::write(src.join("domains").join(d).join("aliases"), "ok: alice\n").unwrap();
        }
        fs::write(
            src.join("chasquid.conf"),
            "hostname: \"mx.chasquid.example\"\n",
        )
        .unwrap();
        // The tambo folder has its settings and a.example already (with other aliases).
        fs::create_dir_all(dst.join("conf")).unwrap();
        fs::create_dir_all(dst.join("domains/a.example")).unwrap();
        fs::write(
            dst.join("conf/tambo.json"),
            "{\"hostname\": \"mx.tambo.example\"}\n",
        )
        .unwrap();
        fs::write(dst.join("domains/a.example/aliases"), "mine: bob\n").unwrap();

        run_in(&src, &dst).unwrap();
        assert_eq!(
            fs::read_to_string(dst.join("conf/tambo.json")).unwrap(),
            "{\"hostname\": \"mx.tambo.example\"}\n"
        );
        assert_eq!(
            fs::read_to_string(dst.join("domains/a.example/aliases")).unwrap(),
            "mine: bob\n"
        );
        assert_eq!(
            fs::read_to_string(dst.join("domains/b.example/aliases")).unwrap(),
            "ok: alice\n"
        );
        assert_eq!(
            tree(&dst),
            [
                "conf",
                "conf/tambo.json",
                "domains",
                "domains/a.example",
                "domains/a.example/aliases",
                "domains/b.example",
                "domains/b.example/aliases",
                "domains/b.example/users",
            ]
        );
    }
}
