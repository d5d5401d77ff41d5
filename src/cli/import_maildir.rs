//! `tambo util import-maildir MAILDIR USER@DOMAIN [--check] [--force]` (issue 19 item 4):
//! take over a user's Maildir++ tree as Dovecot or Courier left it, so that clients
//! download nothing again.
//!
//! tambo reads Dovecot's own files (`dovecot-uidlist` with its P/O/W fields,
//! `dovecot-keywords`, `subscriptions`) and takes over Courier's `courierimapuiddb`, so the
//! import copies them as they are: UIDs, UIDVALIDITY, keywords, subscriptions and POP3 UIDLs
//! stay. Message files are hard links when the tree is on the same file system (else copies
//! with their mtime, the INTERNALDATE, kept), all fsynced. The tree is built beside the
//! user's folder and renamed into place, so a failure leaves nothing half-imported.
//!
//! `--check` writes nothing: it says per folder what tambo would serve and what would differ
//! from what the old server served (exit 2 when anything would, 0 otherwise). Without it, the
//! import refuses (exit 2, nothing written) when something would differ, unless `--force`,
//! and always when the user already has mail.

mod copy;
mod survey;

use crate::cli::CliError;
use crate::config::Settings;
use argh::FromArgs;
use std::path::{Path, PathBuf};
use survey::{Severity, Survey, UidSource};

/// Take over a user's Maildir++ tree from Dovecot or Courier, keeping UIDs, UIDVALIDITY,
/// keywords, subscriptions and POP3 UIDLs; --check only says what would differ.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "import-maildir",
    help_triggers("-h", "--help", "help")
)]
pub struct ImportMaildir {
    /// the user's Maildir (INBOX's cur/ new/ tmp/ at its top, folders as .Name)
    #[argh(positional)]
    pub maildir: PathBuf,
    /// the tambo user (user@domain) whose mailbox it becomes
    #[argh(positional)]
    pub address: String,
    /// write nothing: say what tambo would serve differently; exit 2 when anything would
    #[argh(switch)]
    pub check: bool,
    /// import even when something would differ (see --check)
    #[argh(switch)]
    pub force: bool,
}

pub fn run(settings: &Settings, c: ImportMaildir) -> Result<(), CliError> {
    let user = super::util::user_ref(settings, &c.address)?;
    let db = crate::userdb::UserDb::load(&user.users_path)
        .map_err(|e| CliError::usage(e.to_string()))?;
    if !db.contains(user.address.local().as_str()) {
        return Err(CliError::usage(format!(
            "{}: no such user (add it first: tambo util user-add {})",
            user.address, user.address
        )));
    }
    let address = user.address.to_string();
    let (local, domain) = address
        .rsplit_once('@')
        .ok_or_else(|| CliError::usage(format!("{address}: no domain")))?;
    let target = settings.data_dir.join("mail").join(domain).join(local);
    if !c.check && copy::has_mail(&target) {
        return Err(CliError::usage(
            copy::CopyError::HasMail(target.clone()).to_string(),
        ));
    }
    let survey = survey::survey(&c.maildir)
        .map_err(|e| CliError::usage(format!("{}: {e}", c.maildir.display())))?;
    print_survey(&survey);
    let differs = survey.differs();
    if c.check {
        return match differs {
            0 => {
                println!("nothing would differ: the import keeps what clients know");
                Ok(())
            }
            n => Err(CliError::usage(format!(
                "{n} thing(s) would differ for clients (listed above as \"differs\")"
            ))),
        };
    }
    if differs > 0 && !c.force {
        return Err(CliError::usage(format!(
            "{differs} thing(s) would differ for clients (listed above as \"differs\"); \
             nothing was written (fix them, or import anyway with --force)"
        )));
    }
    let done = copy::import(&survey, &target).map_err(|e| match e {
        copy::CopyError::HasMail(_) => CliError::usage(e.to_string()),
        other => CliError::failure(other.to_string()),
    })?;
    let owner = hand_over(&settings.data_dir, &target)
        .map_err(|e| CliError::failure(format!("{}: {e}", target.display())))?;
    print_done(&survey, &done, &target);
    if let Some((uid, gid)) = owner {
        println!("files handed to uid {uid}, gid {gid} (the owner of the data folder)");
    }
    Ok(())
}

/// Run as root while tambo runs as its own user (contrib/systemd): the imported files, and
/// the `mail/` and `mail/<domain>/` folders this may have made, go to the owner of
/// `data_dir`, or tambo could not read them. Nothing to do when that owner is root.
fn hand_over(data_dir: &Path, target: &Path) -> std::io::Result<Option<(u32, u32)>> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let meta = std::fs::metadata(data_dir)?;
    let (uid, gid) = (meta.uid(), meta.gid());
    if uid == 0 {
        return Ok(None);
    }
    for dir in target.ancestors().skip(1).take(2) {
        if std::fs::metadata(dir)?.uid() == 0 {
            std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
        }
    }
    chown_tree(target, uid, gid)?;
    Ok(Some((uid, gid)))
}

/// `chown -R` without following links (a hard-linked file changes owner in the old tree
/// too: the old server is retired by then).
fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

fn print_survey(survey: &Survey) {
    for folder in &survey.folders {
        let uids = match folder.uids {
            UidSource::Dovecot { uidvalidity } => format!("UIDVALIDITY {uidvalidity}"),
            UidSource::Courier { uidvalidity } => {
                format!("UIDVALIDITY {uidvalidity} (from courierimapuiddb)")
            }
            UidSource::None => "no uidlist".to_string(),
        };
        let keywords = match folder.keywords.is_empty() {
            true => "no keywords".to_string(),
            false => format!("keywords {}", folder.keywords.join(" ")),
        };
        println!(
            "{}: {} message(s), {uids}, {keywords}",
            folder.name,
            folder.files.len()
        );
    }
    for finding in &survey.findings {
        let label = match finding.severity {
            Severity::Differs => "differs",
            Severity::Note => "note",
        };
        println!("{label}: {}", finding.text);
    }
}

fn print_done(survey: &Survey, done: &copy::Done, target: &Path) {
    println!(
        "{}: {} folder(s), {} message file(s) hard-linked, {} copied",
        target.display(),
        survey.folders.len(),
        done.linked,
        done.copied
    );
    if done.linked > 0 {
        println!(
            "hard links share the files with the old tree: stop the old server before \
             tambo serves this mailbox, and do not change the old tree afterwards"
        );
    }
}

#[cfg(test)]
mod tests;
