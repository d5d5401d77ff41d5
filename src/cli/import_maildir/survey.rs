//! What a Maildir++ tree left by Dovecot or Courier holds, and what of it tambo would serve
//! differently: read only, nothing written. The import copies what this found.

use crate::mailbox::filename;
use crate::mailbox::flags::{MAX_KEYWORDS, valid_keyword};
use crate::mailbox::name::FolderName;
use crate::mailbox::uidlist;
use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub const UIDLIST: &str = "dovecot-uidlist";
pub const COURIER_UIDS: &str = "courierimapuiddb";
pub const KEYWORDS: &str = "dovecot-keywords";
pub const SUBSCRIPTIONS: &str = "subscriptions";
pub const COURIER_SUBSCRIPTIONS: &str = "courierimapsubscribed";

/// How a client would see a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Clients would notice: mail downloaded again, a folder or keywords missing, other
    /// POP3 UIDLs. `--check` exits 2.
    Differs,
    /// Nothing a client notices (caches tambo rebuilds, files it does not need).
    Note,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub text: String,
}

/// Where a folder's UIDs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UidSource {
    Dovecot {
        uidvalidity: u32,
    },
    Courier {
        uidvalidity: u32,
    },
    /// No usable file: tambo makes a new UIDVALIDITY.
    None,
}

/// One folder of the tree (INBOX is the root itself).
#[derive(Debug)]
pub struct FolderSurvey {
    pub name: FolderName,
    /// The folder's directory, relative to the tree's root ("" for INBOX).
    pub entry: String,
    /// Message files as `cur/<name>` or `new/<name>`.
    pub files: Vec<String>,
    pub uids: UidSource,
    pub keywords: Vec<String>,
}

/// The whole tree.
#[derive(Debug)]
pub struct Survey {
    pub root: PathBuf,
    pub folders: Vec<FolderSurvey>,
    pub findings: Vec<Finding>,
}

impl Survey {
    pub fn differs(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Differs)
            .count()
    }

    fn differs_that(&mut self, text: String) {
        self.findings.push(Finding {
            severity: Severity::Differs,
            text,
        });
    }

    fn note(&mut self, text: String) {
        self.findings.push(Finding {
            severity: Severity::Note,
            text,
        });
    }
}

/// Dovecot's caches and logs, rebuilt by Dovecot and never read by tambo.
fn is_dovecot_index(name: &str) -> bool {
    name.starts_with("dovecot.index")
        || name.starts_with("dovecot.list.index")
        || name.starts_with("dovecot.mailbox.log")
}

/// Looks at the tree at `root`: an error only when it cannot be read at all or is no Maildir.
pub fn survey(root: &Path) -> io::Result<Survey> {
    if !root.join("cur").is_dir() || !root.join("new").is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a Maildir (no cur/ and new/ at the top, where INBOX is)",
        ));
    }
    let mut survey = Survey {
        root: root.to_path_buf(),
        folders: Vec::new(),
        findings: Vec::new(),
    };
    let mut entries: Vec<(String, bool)> = Vec::new();
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let is_dir = entry.file_type()?.is_dir();
        match entry.file_name().into_string() {
            Ok(name) => entries.push((name, is_dir)),
            Err(name) => {
                survey.differs_that(format!("{name:?}: a name that is not UTF-8, not copied"))
            }
        }
    }
    entries.sort();
    let mut index_files = 0;
    index_files += folder(&mut survey, FolderName::inbox(), "")?;
    for (name, is_dir) in &entries {
        index_files += top_entry(&mut survey, name, *is_dir)?;
    }
    if index_files > 0 {
        survey.note(format!(
            "{index_files} Dovecot index file(s) (dovecot.index*, dovecot.list.index*, \
             dovecot.mailbox.log) not copied: caches tambo does not read"
        ));
    }
    Ok(survey)
}

/// One entry of the root, INBOX's own directories aside. Returns its count of index files.
fn top_entry(survey: &mut Survey, name: &str, is_dir: bool) -> io::Result<usize> {
    match (name, is_dir) {
        ("cur" | "new" | "tmp", true) | (UIDLIST | COURIER_UIDS | KEYWORDS, false) => Ok(0),
        (SUBSCRIPTIONS, false) => Ok(0),
        (COURIER_SUBSCRIPTIONS, false) => {
            if !survey.root.join(SUBSCRIPTIONS).exists() {
                survey.note(format!(
                    "{COURIER_SUBSCRIPTIONS}: Courier's subscriptions, written as {SUBSCRIPTIONS}"
                ));
            }
            Ok(0)
        }
        ("dovecot-uidlist.lock", false) => {
            survey.note(
                "dovecot-uidlist.lock: Dovecot may be running; stop it (and delivery into \
                 this tree) before the import, or what it changes afterwards is not imported"
                    .into(),
            );
            Ok(0)
        }
        ("maildirsize", false) => {
            survey.note(
                "maildirsize not copied: tambo recalculates it when mailbox_quota_mb is set".into(),
            );
            Ok(0)
        }
        ("courierimapkeywords", true) => {
            survey.differs_that(
                "courierimapkeywords/: Courier's keywords are not read by tambo (they are lost)"
                    .into(),
            );
            Ok(0)
        }
        (n, _) if is_dovecot_index(n) => Ok(1),
        (n, true) if n.starts_with('.') && n != "." && n != ".." => dot_folder(survey, n),
        (n, _) => {
            survey.note(format!("{n}: not part of a Maildir++ tree, not copied"));
            Ok(0)
        }
    }
}

/// A `.Name` directory: a folder tambo serves, or one it refuses.
fn dot_folder(survey: &mut Survey, entry: &str) -> io::Result<usize> {
    let dir = survey.root.join(entry);
    if !dir.join("cur").is_dir() {
        survey.note(format!("{entry}: no cur/, not a folder, not copied"));
        return Ok(0);
    }
    match FolderName::from_dir_name(entry) {
        Some(name) => folder(survey, name, entry),
        None => {
            let why = match FolderName::parse(&entry[1..]) {
                Err(e) => e.to_string(),
                Ok(_) => "another spelling of INBOX or of a folder".to_string(),
            };
            let count = message_files(&dir, &mut Vec::new())?;
            survey.differs_that(format!(
                "{entry}: a folder name tambo refuses ({why}); its {count} message(s) would \
                 not be served, not copied (rename it first)"
            ));
            Ok(0)
        }
    }
}

/// Lists `cur/` and `new/` into `files`; the count of files in `tmp/` aside.
fn message_files(dir: &Path, files: &mut Vec<String>) -> io::Result<usize> {
    for sub in ["cur", "new"] {
        let path = dir.join(sub);
        let entries = match fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound && sub == "new" => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            if let Ok(name) = entry.file_name().into_string()
                && !name.starts_with('.')
            {
                files.push(format!("{sub}/{name}"));
            }
        }
    }
    files.sort();
    Ok(files.len())
}

/// One folder: its messages, its UIDs, its keywords. Returns its count of index files.
fn folder(survey: &mut Survey, name: FolderName, entry: &str) -> io::Result<usize> {
    let dir = survey.root.join(entry);
    let mut files = Vec::new();
    message_files(&dir, &mut files)?;
    let in_tmp = fs::read_dir(dir.join("tmp")).map_or(0, |e| e.count());
    if in_tmp > 0 {
        survey.note(format!(
            "{name}: {in_tmp} file(s) in tmp/ (unfinished deliveries) not copied"
        ));
    }
    let uids = uids(survey, &name, &dir, &files)?;
    let keywords = keywords(survey, &name, &dir)?;
    let index_files = if entry.is_empty() {
        0 // the root's are counted with the other top entries
    } else {
        fs::read_dir(&dir)?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_str().is_some_and(is_dovecot_index))
            .count()
    };
    survey.folders.push(FolderSurvey {
        name,
        entry: entry.to_string(),
        files,
        uids,
        keywords,
    });
    Ok(index_files)
}

/// Where the folder's UIDs come from, and which messages would get new ones.
fn uids(
    survey: &mut Survey,
    name: &FolderName,
    dir: &Path,
    files: &[String],
) -> io::Result<UidSource> {
    let (list, source) = match read_list(survey, name, &dir.join(UIDLIST))? {
        Some(list) => {
            let uidvalidity = list.uidvalidity;
            (list, UidSource::Dovecot { uidvalidity })
        }
        None => match read_list(survey, name, &dir.join(COURIER_UIDS))? {
            Some(list) => {
                let uidvalidity = list.uidvalidity;
                survey.note(format!(
                    "{name}: no {UIDLIST}, Courier's UIDs taken over (UIDVALIDITY {uidvalidity})"
                ));
                survey.differs_that(format!(
                    "{name}: POP3 UIDLs become Dovecot's (uid and UIDVALIDITY in hex) instead \
                     of Courier's: POP3 clients that leave mail on the server fetch it again"
                ));
                (list, UidSource::Courier { uidvalidity })
            }
            None => {
                if files.is_empty() {
                    survey.note(format!(
                        "{name}: no {UIDLIST}, empty: a new UIDVALIDITY (nothing to download)"
                    ));
                } else {
                    survey.differs_that(format!(
                        "{name}: no {UIDLIST}: a new UIDVALIDITY, clients download its {} \
                         message(s) again",
                        files.len()
                    ));
                }
                return Ok(UidSource::None);
            }
        },
    };
    let bases: HashSet<&str> = files
        .iter()
        .map(|f| filename::base(f.split_once('/').map_or(f.as_str(), |(_, n)| n)))
        .collect();
    let recorded: HashSet<&str> = list.records.iter().map(|r| &*r.base).collect();
    let gone = recorded.difference(&bases).count();
    if gone > 0 {
        survey.note(format!(
            "{name}: {gone} uidlist record(s) without a file (already expunged), dropped"
        ));
    }
    let unrecorded = bases.difference(&recorded).count();
    if unrecorded > 0 {
        survey.differs_that(format!(
            "{name}: {unrecorded} message(s) without a UID in the uidlist get new UIDs \
             (clients download them again)"
        ));
    }
    Ok(source)
}

/// A uidlist (Dovecot's or Courier's), `None` when missing or unusable (said).
fn read_list(
    survey: &mut Survey,
    name: &FolderName,
    path: &Path,
) -> io::Result<Option<uidlist::Uidlist>> {
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
    let data = match fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match uidlist::parse(&data) {
        Ok(parsed) => {
            for problem in parsed.problems {
                survey.differs_that(format!(
                    "{name}: {file}: {problem} (left out: that message gets a new UID)"
                ));
            }
            Ok(Some(parsed.list))
        }
        Err(why) => {
            survey.differs_that(format!("{name}: {file} unusable ({why})"));
            Ok(None)
        }
    }
}

/// The folder's keyword names; lines tambo would not take are findings.
fn keywords(survey: &mut Survey, name: &FolderName, dir: &Path) -> io::Result<Vec<String>> {
    let data = match fs::read_to_string(dir.join(KEYWORDS)) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for line in data.lines().filter(|l| !l.is_empty()) {
        let parsed = line
            .split_once(' ')
            .and_then(|(n, kw)| Some((n.parse::<usize>().ok()?, kw)));
        match parsed {
            Some((n, kw)) if n < MAX_KEYWORDS && valid_keyword(kw) => names.push(kw.to_string()),
            Some((n, kw)) if n >= MAX_KEYWORDS => survey.differs_that(format!(
                "{name}: keyword {kw:?} is number {n}, past tambo's {MAX_KEYWORDS} letters: lost"
            )),
            _ => survey.differs_that(format!(
                "{name}: {KEYWORDS} line {line:?} is not a keyword tambo takes: lost"
            )),
        }
    }
    Ok(names)
}
