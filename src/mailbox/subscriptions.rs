//! `subscriptions` in the user's root, Dovecot's version 2 format (subscription-file.c):
//! `V\t2\n\n`, then one name a line with the hierarchy delimiter written as a TAB. A file
//! without that header is version 1 (plain names) and is written back as version 2. Lines
//! that are not valid names are kept as they are.

use crate::fsutil;
use crate::mailbox::StoreError;
use crate::mailbox::dotlock::{Dotlock, SUBSCRIPTIONS_STALE};
use crate::mailbox::name::{DELIMITER, FolderName};
use std::fs;
use std::io;
use std::path::Path;

pub const FILE: &str = "subscriptions";
const V2_HEADER: &str = "V\t2\n\n";

/// The lines of the file, in order, in their version 2 spelling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscriptions {
    lines: Vec<String>,
}

impl Subscriptions {
    pub fn parse(data: &[u8]) -> Subscriptions {
        let text = String::from_utf8_lossy(data);
        let lines: Vec<String> = match text.strip_prefix(V2_HEADER) {
            Some(rest) => rest.lines().map(str::to_string).collect(),
            // Version 1: the names as they are, delimiter included.
            None => text.lines().map(|l| l.replace(DELIMITER, "\t")).collect(),
        };
        Subscriptions {
            lines: lines
                .into_iter()
                .filter(|l: &String| !l.is_empty())
                .collect(),
        }
    }

    pub fn serialize(&self) -> String {
        let mut s = String::from(V2_HEADER);
        for line in &self.lines {
            s.push_str(line);
            s.push('\n');
        }
        s
    }

    /// The subscribed names that are valid folder names.
    pub fn names(&self) -> Vec<FolderName> {
        self.lines
            .iter()
            .filter_map(|l| FolderName::parse(&l.replace('\t', ".")).ok())
            .collect()
    }

    pub fn contains(&self, name: &FolderName) -> bool {
        self.lines.contains(&line_of(name))
    }

    /// Adds or removes `name`; whether anything changed.
    pub fn set(&mut self, name: &FolderName, on: bool) -> bool {
        let line = line_of(name);
        let present = self.lines.contains(&line);
        match (on, present) {
            (true, false) => self.lines.push(line),
            (false, true) => self.lines.retain(|l| *l != line),
            _ => return false,
        }
        true
    }
}

/// RFC 3501 names never hold TABs or control characters, so Dovecot's TAB escaping
/// (`\001` sequences) never applies to them.
fn line_of(name: &FolderName) -> String {
    name.as_str().replace(DELIMITER, "\t")
}

pub fn read(root: &Path) -> Result<Subscriptions, StoreError> {
    let path = root.join(FILE);
    match fs::read(&path) {
        Ok(data) => Ok(Subscriptions::parse(&data)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Subscriptions::default()),
        Err(e) => Err(StoreError::io(&path, e)),
    }
}

/// Changes the file under its dotlock (Dovecot's `subscriptions.lock`): read, change,
/// replace atomically. `change` returns whether it changed anything.
pub fn update(
    root: &Path,
    change: impl FnOnce(&mut Subscriptions) -> bool,
) -> Result<(), StoreError> {
    let path = root.join(FILE);
    let _lock = Dotlock::acquire(&path, SUBSCRIPTIONS_STALE)?;
    let mut subs = read(root)?;
    if change(&mut subs) {
        fsutil::write_atomic(&path, subs.serialize().as_bytes(), 0o600)
            .map_err(|e| StoreError::io(&path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> FolderName {
        FolderName::parse(s).unwrap()
    }

    #[test]
    fn dovecot_file_round_trips() {
        let data = "V\t2\n\nINBOX\nSent\nArchive\t2024\n\u{1}odd\n";
        let subs = Subscriptions::parse(data.as_bytes());
        assert_eq!(subs.serialize(), data);
        let names: Vec<String> = subs.names().iter().map(|n| n.to_string()).collect();
        assert_eq!(names, ["INBOX", "Sent", "Archive.2024"]);
        assert!(subs.contains(&name("Archive.2024")));
        assert!(!subs.contains(&name("Archive")));
    }

    #[test]
    fn version_1_is_upgraded() {
        let subs = Subscriptions::parse(b"INBOX\nArchive.2024\n");
        assert_eq!(subs.serialize(), "V\t2\n\nINBOX\nArchive\t2024\n");
    }

    #[test]
    fn subscribe_and_unsubscribe() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        update(root, |s| s.set(&name("Sent"), true)).unwrap();
        update(root, |s| s.set(&name("A.B"), true)).unwrap();
        update(root, |s| s.set(&name("Sent"), true)).unwrap();
        assert_eq!(
            fs::read_to_string(root.join(FILE)).unwrap(),
            "V\t2\n\nSent\nA\tB\n"
        );
        update(root, |s| s.set(&name("Sent"), false)).unwrap();
        assert_eq!(read(root).unwrap().names(), [name("A.B")]);
        assert!(!root.join("subscriptions.lock").exists());
    }
}
