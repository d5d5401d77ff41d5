//! Cross-check with a real Dovecot (2.3, Debian's dovecot-core): a mailbox the store wrote
//! opens in Dovecot with the same UIDs, UIDVALIDITY, flags and keywords, and what Dovecot
//! then changes (flags, a new message) the store reads back.
//!
//! Dovecot runs from a config of its own in a temp folder, with no protocol listening, as
//! user `nobody` (it refuses root), so the test needs root to hand it the files.

use super::*;
use crate::message::Envelope;
use crate::testsupport::{DOVECOT, skip};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;

/// A Dovecot master on a temp config; stopped when dropped.
struct Dovecot {
    conf: PathBuf,
    pid_file: PathBuf,
}

impl Dovecot {
    fn start(dir: &Path, mail: &Path) -> Dovecot {
        let conf = dir.join("dovecot.conf");
        let text = format!(
            "mail_location = maildir:{mail}/%d/%n\n\
             base_dir = {dir}/run\n\
             state_dir = {dir}/state\n\
             log_path = {dir}/dovecot.log\n\
             protocols =\n\
             ssl = no\n\
             userdb {{\n  driver = static\n  args = uid={NOBODY} gid={NOBODY} home={dir}/home/%u\n}}\n\
             passdb {{\n  driver = static\n  args = nopassword=y\n}}\n\
             namespace inbox {{\n  inbox = yes\n  separator = .\n}}\n",
            mail = mail.display(),
            dir = dir.display(),
        );
        fs::write(&conf, text).unwrap();
        let status = Command::new(DOVECOT.program)
            .arg("-c")
            .arg(&conf)
            .status()
            .unwrap();
        assert!(status.success(), "dovecot did not start");
        let pid_file = dir.join("run/master.pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pid_file.exists() {
            assert!(Instant::now() < deadline, "no master.pid within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The auth service answers once the master has started it.
        std::thread::sleep(Duration::from_millis(200));
        Dovecot { conf, pid_file }
    }

    /// Runs `doveadm -f tab <args>` for the user; its output.
    fn doveadm(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let mut cmd = Command::new("doveadm");
        cmd.arg("-c")
            .arg(&self.conf)
            .arg("-f")
            .arg("tab")
            .args(args);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(data) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(data).unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "doveadm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// (uid, flags without \Recent, sorted) of every message of a folder.
    fn messages(&self, folder: &str) -> Vec<(u32, Vec<String>)> {
        let out = self.doveadm(
            &[
                "fetch",
                "-u",
                "bob@example.org",
                "uid flags",
                "mailbox",
                folder,
                "all",
            ],
            None,
        );
        out.lines()
            .skip(1)
            .map(|line| {
                let (uid, flags) = line.split_once('\t').unwrap_or((line, ""));
                let mut flags: Vec<String> = flags
                    .split(' ')
                    .filter(|f| !f.is_empty() && *f != "\\Recent")
                    .map(str::to_string)
                    .collect();
                flags.sort();
                (uid.parse().unwrap(), flags)
            })
            .collect()
    }

    /// (UIDVALIDITY, UIDNEXT) of a folder.
    fn status(&self, folder: &str) -> (u32, u32) {
        let out = self.doveadm(
            &[
                "mailbox",
                "status",
                "-u",
                "bob@example.org",
                "uidvalidity uidnext",
                folder,
            ],
            None,
        );
        // Columns in Dovecot's order, named by the header line.
        let mut lines = out.lines();
        let names: Vec<&str> = lines.next().unwrap_or("").split('\t').collect();
        let values: Vec<&str> = lines.next().unwrap_or("").split('\t').collect();
        let get = |name: &str| -> u32 {
            let at = names.iter().position(|n| *n == name);
            at.and_then(|i| values.get(i)?.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {out:?}"))
        };
        (get("uidvalidity"), get("uidnext"))
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let pid = fs::read_to_string(&self.pid_file).ok();
        if let Some(pid) = pid.and_then(|p| p.trim().parse::<i32>().ok()) {
            // SAFETY: signalling the master this test started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

/// The store's view of a folder, as Dovecot would print it.
fn ours(folder: &Folder) -> Vec<(u32, Vec<String>)> {
    (0..folder.len())
        .map(|i| {
            let f = folder.flags(i);
            let mut flags: Vec<String> = [
                (Flags::SEEN, "\\Seen"),
                (Flags::ANSWERED, "\\Answered"),
                (Flags::FLAGGED, "\\Flagged"),
                (Flags::DELETED, "\\Deleted"),
                (Flags::DRAFT, "\\Draft"),
            ]
            .iter()
            .filter(|(bit, _)| f.system & bit != 0)
            .map(|(_, name)| name.to_string())
            .chain(f.keywords)
            .collect();
            flags.sort();
            (folder.message(i).uid, flags)
        })
        .collect()
}

fn chown_all(path: &Path) {
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{NOBODY}:{NOBODY}"))
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn dovecot_opens_what_the_store_wrote_and_back() {
    if !DOVECOT.available() {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip("needs root to hand the files to Dovecot's user");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Dovecot's user must reach the files.
    fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mail = dir.join("mail");
    let store = Store::new(mail.clone(), None).with_hostname("mx.test");
    let user = store.user("example.org", "bob").unwrap();
    for i in 0..3 {
        let envelope = Envelope {
            from: "alice@example.com".into(),
            received_at: 1_700_000_000 + i,
            ..Default::default()
        };
        let data = format!("Subject: {i}\r\n\r\nbody\r\n");
        let item = crate::message::stored::written(dir, data.as_bytes(), envelope);
        deliver(
            &store,
            "example.org",
            "bob",
            &FolderName::inbox(),
            &item,
            b"",
            &format!("k{i}"),
        )
        .unwrap();
    }
    let mut inbox = user.open(&FolderName::inbox(), false).unwrap();
    let seen_junk = Flags {
        system: Flags::SEEN,
        keywords: vec!["$Junk".into()],
    };
    inbox.store_flags(0, seen_junk).unwrap();
    inbox
        .store_flags(
            2,
            Flags {
                system: Flags::ANSWERED,
                keywords: vec!["Work".into()],
            },
        )
        .unwrap();
    let archive = FolderName::parse("Archive").unwrap();
    user.create(&archive).unwrap();
    inbox.copy(&[0], &user, &archive).unwrap();
    let archive_view = user.open(&archive, true).unwrap();
    let (uidvalidity, uidnext) = (inbox.uidvalidity, inbox.uidnext);
    let want_inbox = ours(&inbox);
    drop(inbox);

    fs::create_dir_all(dir.join("home")).unwrap();
    chown_all(&mail);
    chown_all(&dir.join("home"));
    let dovecot = Dovecot::start(dir, &mail);
    assert_eq!(dovecot.status("INBOX"), (uidvalidity, uidnext));
    assert_eq!(dovecot.messages("INBOX"), want_inbox);
    assert_eq!(dovecot.messages("Archive"), ours(&archive_view));
    assert_eq!(dovecot.status("Archive").0, archive_view.uidvalidity);

    // Dovecot's turn: a flag, a keyword of its own, a new message.
    dovecot.doveadm(
        &[
            "flags",
            "add",
            "-u",
            "bob@example.org",
            "\\Flagged Later",
            "mailbox",
            "INBOX",
            "uid",
            "2",
        ],
        None,
    );
    dovecot.doveadm(
        &["save", "-u", "bob@example.org", "-m", "INBOX"],
        Some(b"Subject: from dovecot\n\nhi\n"),
    );
    let want = dovecot.messages("INBOX");
    drop(dovecot);
    let inbox = user.open(&FolderName::inbox(), false).unwrap();
    assert_eq!(inbox.uidvalidity, uidvalidity);
    assert_eq!(ours(&inbox), want);
    assert_eq!(inbox.len(), 4);
}
