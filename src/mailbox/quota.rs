//! `mailbox_quota_mb` as a Maildir++ `maildirsize` file in the user's root (the Maildir++
//! quota specification, as Courier and Dovecot keep it): a first line `<bytes>S` with the
//! limit, then `<bytes> <messages>` lines, one appended for each change (delivery, APPEND,
//! COPY: positive; expunge: negative). The sum is the usage. The file is recalculated from
//! the folders when missing, unreadable, longer than 5120 bytes, for another limit, or
//! when it says "over quota" and has not been recalculated for 15 minutes (drift). Sizes are
//! sizes on disk (`,S=`), over every folder.
//!
//! Without a limit, tambo keeps no `maildirsize`.

use crate::fsutil;
use crate::mailbox::StoreError;
use crate::mailbox::filename::size_field;
use crate::mailbox::name::FolderName;
use crate::mailbox::scan::list_names;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

pub const FILE: &str = "maildirsize";
/// Past this size the file is recalculated (Maildir++).
const RECALC_ABOVE: u64 = 5120;
/// An over-quota verdict older than this is checked by recalculating (Maildir++).
const DRIFT: Duration = Duration::from_secs(15 * 60);

/// Octets and messages in use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub messages: u64,
}

/// The limit line and the sums of a `maildirsize`; `None` when it is not one.
fn parse(data: &str) -> Option<(&str, i64, i64)> {
    let mut lines = data.lines();
    let limit = lines.next()?;
    let (mut bytes, mut messages) = (0i64, 0i64);
    for line in lines {
        let mut numbers = line.split_whitespace().map(str::parse::<i64>);
        let (Some(Ok(b)), Some(Ok(m)), None) = (numbers.next(), numbers.next(), numbers.next())
        else {
            return None;
        };
        bytes = bytes.checked_add(b)?;
        messages = messages.checked_add(m)?;
    }
    Some((limit, bytes, messages))
}

fn limit_line(limit: u64) -> String {
    format!("{limit}S")
}

/// The usage of the user whose root is `root`, recalculated when the file cannot be trusted.
pub fn usage(root: &Path, limit: u64) -> Result<Usage, StoreError> {
    let path = root.join(FILE);
    let data = match fs::read_to_string(&path) {
        Ok(data) => data,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::InvalidData
            ) =>
        {
            return recalculate(root, limit);
        }
        Err(e) => return Err(StoreError::io(&path, e)),
    };
    match parse(&data) {
        Some((line, bytes, messages))
            if line == limit_line(limit) && data.len() as u64 <= RECALC_ABOVE =>
        {
            Ok(Usage {
                bytes: bytes.max(0) as u64,
                messages: messages.max(0) as u64,
            })
        }
        _ => recalculate(root, limit),
    }
}

/// Refuses `adding` more octets when they would take the user past `limit`.
pub fn check(root: &Path, limit: u64, adding: u64) -> Result<(), StoreError> {
    let over = |u: Usage| u.bytes.saturating_add(adding) > limit;
    if !over(usage(root, limit)?) {
        return Ok(());
    }
    let age = fs::metadata(root.join(FILE))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok());
    if age.is_some_and(|a| a > DRIFT) && !over(recalculate(root, limit)?) {
        return Ok(());
    }
    Err(StoreError::OverQuota)
}

/// Records a change. A missing file is left missing (the next check recalculates), and a
/// failure only logged: the quota is advisory bookkeeping, the messages are what counts.
pub fn add(root: &Path, bytes: i64, messages: i64) {
    let path = root.join(FILE);
    let file = OpenOptions::new().append(true).open(&path);
    // One write per line, so concurrent appenders do not interleave (Maildir++).
    let line = format!("{bytes} {messages}\n");
    match file.and_then(|mut f| f.write_all(line.as_bytes())) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("{}: {e}", path.display()),
    }
}

/// Counts every message of every folder and writes a fresh file.
pub fn recalculate(root: &Path, limit: u64) -> Result<Usage, StoreError> {
    let usage = count(root)?;
    let path = root.join(FILE);
    let content = format!(
        "{}\n{} {}\n",
        limit_line(limit),
        usage.bytes,
        usage.messages
    );
    fsutil::write_atomic(&path, content.as_bytes(), 0o600).map_err(|e| StoreError::io(&path, e))?;
    Ok(usage)
}

/// The usage of INBOX and every `.Folder` under `root`.
pub fn count(root: &Path) -> Result<Usage, StoreError> {
    let mut usage = Usage::default();
    count_folder(root, &mut usage)?;
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(usage),
        Err(e) => return Err(StoreError::io(root, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(root, e))?;
        let name = entry.file_name();
        let is_folder = name.to_str().and_then(FolderName::from_dir_name).is_some();
        if is_folder && entry.file_type().is_ok_and(|t| t.is_dir()) {
            count_folder(&entry.path(), &mut usage)?;
        }
    }
    Ok(usage)
}

fn count_folder(dir: &Path, usage: &mut Usage) -> Result<(), StoreError> {
    for sub in ["new", "cur"] {
        let sub = dir.join(sub);
        let names = match list_names(&sub) {
            Ok(names) => names,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io(&sub, e)),
        };
        for name in names {
            let size = match size_field(&name, b'S') {
                Some(size) => size,
                // Gone meanwhile: not counted.
                None => fs::metadata(sub.join(&name)).map_or(0, |m| m.len()),
            };
            usage.bytes += size;
            usage.messages += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maildir(root: &Path, folder: &str, files: &[(&str, &[u8])]) {
        let dir = if folder.is_empty() {
            root.to_path_buf()
        } else {
            root.join(folder)
        };
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        for (name, data) in files {
            fs::write(dir.join(name), data).unwrap();
        }
    }

    #[test]
    fn counts_every_folder_and_keeps_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        maildir(
            root,
            "",
            &[("new/1.a.h,S=100", b""), ("cur/2.b.h:2,S", b"12345")],
        );
        maildir(root, ".Sent", &[("cur/3.c.h,S=50:2,S", b"")]);
        maildir(root, "..deleted", &[("cur/4.d.h,S=999", b"")]); // not a folder
        fs::write(root.join("tmp/5.e.h,S=7"), b"").unwrap(); // not delivered yet
        let u = usage(root, 1000).unwrap();
        assert_eq!(
            u,
            Usage {
                bytes: 155,
                messages: 3
            }
        );
        assert_eq!(
            fs::read_to_string(root.join(FILE)).unwrap(),
            "1000S\n155 3\n"
        );

        add(root, 45, 1);
        add(root, -100, -1);
        assert_eq!(
            usage(root, 1000).unwrap(),
            Usage {
                bytes: 100,
                messages: 3
            }
        );
        assert_eq!(
            fs::read_to_string(root.join(FILE)).unwrap(),
            "1000S\n155 3\n45 1\n-100 -1\n"
        );
    }

    #[test]
    fn recalculates_when_the_file_is_not_trusted() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        maildir(root, "", &[("cur/1.a.h,S=10:2,", b"")]);
        let long = format!("500S\n{}", "1 1\n".repeat(2000));
        let cases = [
            ("500S\n999 9\n", 999), // trusted
            ("2000S\n999 9\n", 10), // another limit
            ("500S\nx y\n", 10),    // garbage
            (long.as_str(), 10),    // too long
            ("500S\n-50 -5\n", 0),  // negative sums count as nothing
        ];
        for (content, want) in cases {
            fs::write(root.join(FILE), content).unwrap();
            assert_eq!(usage(root, 500).unwrap().bytes, want, "{content:.20}");
        }
    }

    #[test]
    fn over_quota_and_drift() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        maildir(root, "", &[("cur/1.a.h,S=60:2,", b"")]);
        check(root, 100, 40).unwrap();
        assert!(matches!(check(root, 100, 41), Err(StoreError::OverQuota)));
        // The file says full, wrongly; once old enough it is recalculated.
        fs::write(root.join(FILE), "100S\n100 1\n").unwrap();
        assert!(matches!(check(root, 100, 10), Err(StoreError::OverQuota)));
        let old = SystemTime::now() - Duration::from_secs(3600);
        fs::File::options()
            .write(true)
            .open(root.join(FILE))
            .unwrap()
            .set_modified(old)
            .unwrap();
        check(root, 100, 10).unwrap();
        // Without a file, changes are not recorded.
        fs::remove_file(root.join(FILE)).unwrap();
        add(root, 5, 1);
        assert!(!root.join(FILE).exists());
    }
}
