//! `dovecot-keywords`: the names of a folder's keyword letters (Dovecot's
//! maildir-keywords.c). Lines `<n> <name>`; letter `a`+n in a file name means that keyword.
//! Written only under the uidlist lock, as Dovecot does, with an mtime that always grows
//! (Dovecot rereads the file when its mtime, in seconds, changes).

use crate::fsutil;
use crate::mailbox::StoreError;
use crate::mailbox::flags::MAX_KEYWORDS;
use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

pub const FILE: &str = "dovecot-keywords";

/// A folder's keywords by letter; an empty string is a free letter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keywords {
    names: Vec<String>,
}

impl Keywords {
    /// Reads the lines; bad ones are skipped (as Dovecot does).
    pub fn parse(data: &[u8]) -> Keywords {
        let mut names: Vec<String> = Vec::new();
        for line in String::from_utf8_lossy(data).lines() {
            let Some((n, name)) = line.split_once(' ') else {
                continue;
            };
            let Ok(n) = n.parse::<usize>() else {
                continue;
            };
            if n >= MAX_KEYWORDS || name.is_empty() {
                continue;
            }
            if names.len() <= n {
                names.resize(n + 1, String::new());
            }
            names[n] = name.to_string();
        }
        Keywords { names }
    }

    pub fn serialize(&self) -> String {
        let mut s = String::new();
        for (n, name) in self.names.iter().enumerate() {
            if !name.is_empty() {
                s.push_str(&format!("{n} {name}\n"));
            }
        }
        s
    }

    /// The names by letter, `""` where a letter is free.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The letter index of `name` (keywords compare case-insensitively, as in Dovecot).
    pub fn find(&self, name: &str) -> Option<usize> {
        self.names
            .iter()
            .position(|n| !n.is_empty() && n.eq_ignore_ascii_case(name))
    }

    /// The index of `name`, given the first free letter when new; `None` when all 26 are used.
    pub fn find_or_add(&mut self, name: &str) -> Option<usize> {
        if let Some(n) = self.find(name) {
            return Some(n);
        }
        let free = self.names.iter().position(String::is_empty);
        let n = match free {
            Some(n) => n,
            None if self.names.len() < MAX_KEYWORDS => {
                self.names.push(String::new());
                self.names.len() - 1
            }
            None => return None,
        };
        self.names[n] = name.to_string();
        Some(n)
    }
}

/// Reads a folder's keywords; a missing file is no keywords.
pub fn read(dir: &Path) -> Result<Keywords, StoreError> {
    let path = dir.join(FILE);
    match fs::read(&path) {
        Ok(data) => Ok(Keywords::parse(&data)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Keywords::default()),
        Err(e) => Err(StoreError::io(&path, e)),
    }
}

/// Replaces the file (the caller holds the uidlist lock). Its mtime ends up past the old
/// one's, so a Dovecot that read the old file in the same second reads the new one.
pub fn write(dir: &Path, keywords: &Keywords) -> Result<(), StoreError> {
    let path = dir.join(FILE);
    let old = fs::metadata(&path).and_then(|m| m.modified()).ok();
    fsutil::write_atomic(&path, keywords.serialize().as_bytes(), 0o600)
        .map_err(|e| StoreError::io(&path, e))?;
    let Some(old) = old else {
        return Ok(());
    };
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let new = fs::metadata(&path)
        .and_then(|m| m.modified())
        .map_err(|e| StoreError::io(&path, e))?;
    if secs(new) <= secs(old) {
        let later = SystemTime::UNIX_EPOCH + Duration::from_secs(secs(old) + 1);
        fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(later))
            .map_err(|e| StoreError::io(&path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dovecot_file_round_trips() {
        let data = "0 $Junk\n1 NonJunk\n3 $label1\n";
        let k = Keywords::parse(data.as_bytes());
        assert_eq!(k.names(), ["$Junk", "NonJunk", "", "$label1"]);
        assert_eq!(k.serialize(), data);
    }

    #[test]
    fn bad_lines_are_skipped() {
        let k = Keywords::parse(b"x\n0 a\n26 toohigh\n-1 neg\n2 \nfoo bar\n1 b\n");
        assert_eq!(k.names(), ["a", "b"]);
    }

    #[test]
    fn letters_are_reused_and_limited() {
        let mut k = Keywords::parse(b"0 $Junk\n2 c\n");
        assert_eq!(k.find("$junk"), Some(0));
        assert_eq!(k.find_or_add("NEW"), Some(1), "first free letter");
        assert_eq!(k.find_or_add("new"), Some(1), "case-insensitive");
        for i in 3..MAX_KEYWORDS {
            assert_eq!(k.find_or_add(&format!("k{i}")), Some(i));
        }
        assert_eq!(k.find_or_add("one too many"), None);
    }

    #[test]
    fn rewrite_moves_mtime_forward() {
        let tmp = tempfile::tempdir().unwrap();
        let mut k = Keywords::default();
        k.find_or_add("$Junk");
        write(tmp.path(), &k).unwrap();
        let path = tmp.path().join(FILE);
        let first = fs::metadata(&path).unwrap().modified().unwrap();
        k.find_or_add("$NotJunk");
        write(tmp.path(), &k).unwrap();
        let second = fs::metadata(&path).unwrap().modified().unwrap();
        let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert!(secs(second) > secs(first));
        assert_eq!(read(tmp.path()).unwrap(), k);
        assert_eq!(read(&tmp.path().join("nope")).unwrap(), Keywords::default());
    }
}
