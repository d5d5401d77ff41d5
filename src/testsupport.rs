//! Test support: what a unit test does when a real peer it cross-checks against (dnsmasq,
//! postsrsd, dkimpy, Dovecot, openssl) is not installed.
//!
//! libtest has no skip at run time: a test that returns early is reported `ok`, like one that
//! ran. So a test, or the fixture that starts its peer, asks [`Peer::available`] first and
//! returns only after this module has decided:
//!
//! - with `TAMBO_REQUIRE_PEERS=1` (set by `tests/run.sh`, which has installed every peer with
//!   `tests/install-deps.sh`), a missing peer fails the test, naming the program and the
//!   Debian package that installs it;
//! - otherwise the test is skipped, and says so: one `skipped: <test>: <reason>` line on
//!   stderr (past libtest's capture, so it shows beside a passing test) and appended to the
//!   file named by `TAMBO_SKIP_LOG`, which `tests/run.sh` lists under "skipped:" at the end.
//!
//! A skip no package can fix (no root to listen on port 443, no resolver configured) goes
//! through [`skip`]: always reported, never failed.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

/// A program a cross-check runs and the Debian package that installs it (the list is
/// `tests/install-deps.sh`).
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// What the skip or failure message calls it.
    pub name: &'static str,
    /// An absolute path, or a name looked up on PATH.
    pub program: &'static str,
    /// Arguments of a run that must succeed for the peer to count as installed; empty: the
    /// program's file existing is enough.
    pub probe: &'static [&'static str],
    pub package: &'static str,
}

pub const DNSMASQ: Peer = Peer {
    name: "dnsmasq",
    program: "/usr/sbin/dnsmasq",
    probe: &[],
    package: "dnsmasq-base",
};

pub const POSTSRSD: Peer = Peer {
    name: "postsrsd",
    program: "/usr/sbin/postsrsd",
    probe: &[],
    package: "postsrsd",
};

/// Dovecot's LMTP server: the binary comes with dovecot-core, the LMTP service with
/// dovecot-lmtpd.
pub const DOVECOT: Peer = Peer {
    name: "Dovecot",
    program: "/usr/sbin/dovecot",
    probe: &[],
    package: "dovecot-core dovecot-lmtpd",
};

/// Dovecot's IMAP server, run on stdin/stdout over a Maildir of test messages (the
/// `mailbox::summary` cross-check).
pub const DOVECOT_IMAP: Peer = Peer {
    name: "Dovecot IMAP",
    program: "/usr/lib/dovecot/imap",
    probe: &[],
    package: "dovecot-imapd",
};

pub const OPENSSL: Peer = Peer {
    name: "openssl",
    program: "openssl",
    probe: &["version"],
    package: "openssl",
};

pub const PYTHON3: Peer = Peer {
    name: "python3",
    program: "/usr/bin/python3",
    probe: &[],
    package: "python3",
};

/// dkimpy under Debian's python3; `nacl` is its Ed25519 (a dependency of python3-dkim).
pub const DKIMPY: Peer = Peer {
    name: "dkimpy",
    program: "/usr/bin/python3",
    probe: &["-c", "import dkim, nacl"],
    package: "python3-dkim",
};

impl Peer {
    /// Whether the peer is there: its file exists, or its probe run succeeds.
    pub fn installed(&self) -> bool {
        if self.probe.is_empty() {
            return Path::new(self.program).is_file();
        }
        Command::new(self.program)
            .args(self.probe)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// True when the peer is installed. Otherwise the running test fails (with
    /// `TAMBO_REQUIRE_PEERS=1`) or its skip is reported, and the caller returns.
    #[track_caller]
    pub fn available(&self) -> bool {
        let installed = self.installed();
        if !installed {
            self.missing();
        }
        installed
    }

    #[track_caller]
    fn missing(&self) {
        let what = match self.probe {
            [] => format!("{} not installed ({} missing)", self.name, self.program),
            probe => {
                let quoted = |a: &&str| match a.contains(' ') {
                    true => format!("'{a}'"),
                    false => a.to_string(),
                };
                let args: Vec<String> = probe.iter().map(quoted).collect();
                let command = format!("{} {}", self.program, args.join(" "));
                format!("{} not installed (`{command}` failed)", self.name)
            }
        };
        if peers_required() {
            panic!(
                "{what}; TAMBO_REQUIRE_PEERS=1 says every peer is installed: install the \
                 Debian package {} (sudo ./tests/install-deps.sh)",
                self.package
            );
        }
        skip(&format!("{what}; Debian package {}", self.package));
    }
}

/// Reports that the running test is skipped for `reason`, for a reason no package fixes.
#[track_caller]
pub fn skip(reason: &str) {
    let line = format!("skipped: {}: {reason}\n", test_name());
    // Straight to the stderr handle: libtest captures eprintln! and shows it only for
    // failing tests.
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os("TAMBO_SKIP_LOG") {
        // O_APPEND and one write per line: lines of tests running in parallel stay whole.
        let appended = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(line.as_bytes()));
        if let Err(e) = appended {
            // A skip that cannot be reported would pass silently.
            panic!(
                "cannot append to TAMBO_SKIP_LOG {}: {e}",
                Path::new(&path).display()
            );
        }
    }
}

fn peers_required() -> bool {
    std::env::var_os("TAMBO_REQUIRE_PEERS").is_some_and(|v| v == "1")
}

/// libtest names each test's thread after the test; elsewhere, the caller's source line.
#[track_caller]
fn test_name() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_string(),
        _ => std::panic::Location::caller().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABSENT: Peer = Peer {
        name: "nothing",
        program: "/nonexistent/tambo-test-peer",
        probe: &[],
        package: "no-such-package",
    };

    #[test]
    fn installed_by_file_or_by_probe() {
        assert!(!ABSENT.installed());
        let sh = |probe| Peer {
            program: "/bin/sh",
            probe,
            ..ABSENT
        };
        assert!(sh(&[]).installed());
        assert!(sh(&["-c", "exit 0"]).installed());
        assert!(!sh(&["-c", "exit 1"]).installed());
        assert!(
            !Peer {
                probe: &["x"],
                ..ABSENT
            }
            .installed()
        );
    }

    /// Runs `absent_peer_child` in a child process (the decision reads the environment):
    /// required, a missing peer fails the test; not required, it passes and reports the skip.
    #[test]
    fn missing_peer_fails_when_required_else_is_reported() {
        let child = |required: bool, log: Option<&Path>| {
            let mut command = Command::new(std::env::current_exe().expect("test binary"));
            command
                .args([
                    "testsupport::tests::absent_peer_child",
                    "--exact",
                    "--ignored",
                ])
                .env_remove("TAMBO_REQUIRE_PEERS")
                .env_remove("TAMBO_SKIP_LOG");
            if required {
                command.env("TAMBO_REQUIRE_PEERS", "1");
            }
            if let Some(log) = log {
                command.env("TAMBO_SKIP_LOG", log);
            }
            let out = command.output().expect("run the test binary");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            (out.status.success(), text)
        };
        let (passed, text) = child(true, None);
        assert!(!passed, "{text}");
        assert!(
            text.contains("nothing not installed (/nonexistent/tambo-test-peer missing)")
                && text.contains("install the Debian package no-such-package"),
            "{text}"
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("skips");
        std::fs::write(&log, "skipped: an earlier line\n").expect("write log");
        let (passed, text) = child(false, Some(&log));
        let want = "skipped: testsupport::tests::absent_peer_child: nothing not installed \
                    (/nonexistent/tambo-test-peer missing); Debian package no-such-package\n";
        assert!(passed, "{text}");
        assert!(text.contains(want), "{text}");
        let logged = std::fs::read_to_string(&log).expect("read log");
        assert_eq!(logged, format!("skipped: an earlier line\n{want}"));
    }

    #[test]
    #[ignore = "run by missing_peer_fails_when_required_else_is_reported in a child process"]
    fn absent_peer_child() {
        if !ABSENT.available() {
            return;
        }
        panic!("{} is not supposed to exist", ABSENT.program);
    }
}
