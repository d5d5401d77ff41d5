//! The import itself: the surveyed tree built beside the user's folder (message files hard
//! linked or copied, Dovecot's files copied as they are), fsynced, then renamed into place.

use super::survey::{
    COURIER_SUBSCRIPTIONS, COURIER_UIDS, KEYWORDS, SUBSCRIPTIONS, Survey, UIDLIST,
};
use crate::fsutil;
use crate::mailbox::name::FolderName;
use crate::mailbox::scan;
use crate::mailbox::subscriptions::Subscriptions;
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(
        "{0}: the user already has mail there; import-maildir does not merge (nothing was written)"
    )]
    HasMail(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> CopyError + '_ {
    move |source| CopyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the import did.
#[derive(Debug, Default)]
pub struct Done {
    pub linked: usize,
    pub copied: usize,
}

/// Imports `survey`'s tree as `target` (`data_dir/mail/<domain>/<user>`). A `target` that
/// holds only empty folders (the defaults tambo makes at a first login) is replaced.
pub fn import(survey: &Survey, target: &Path) -> Result<Done, CopyError> {
    if has_mail(target) {
        return Err(CopyError::HasMail(target.to_path_buf()));
    }
    let parent = target.parent().unwrap_or(Path::new("."));
    fsutil::create_private_dir_all(parent).map_err(io_at(parent))?;
    let leaf = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("user");
    // A dot name: never a user (local parts do not start with a dot), never listed as one.
    let staging = parent.join(format!(".import-{leaf}.{}", std::process::id()));
    let done = build(survey, &staging).inspect_err(|_| {
        let _ = fs::remove_dir_all(&staging);
    })?;
    if target.exists() {
        fs::remove_dir_all(target).map_err(io_at(target))?;
    }
    fs::rename(&staging, target).map_err(io_at(target))?;
    fsutil::fsync_dir(parent).map_err(io_at(parent))?;
    Ok(done)
}

/// Whether any folder of `root` has a message (in `cur/` or `new/`).
pub fn has_mail(root: &Path) -> bool {
    let Ok(entries) = fs::read_dir(root) else {
        return false;
    };
    let folders = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().as_encoded_bytes().starts_with(b"."))
        .map(|e| e.path());
    std::iter::once(root.to_path_buf())
        .chain(folders)
        .any(|dir| scan::has_entries(&dir.join("cur")) || scan::has_entries(&dir.join("new")))
}

fn build(survey: &Survey, staging: &Path) -> Result<Done, CopyError> {
    let mut done = Done::default();
    private_dir(staging)?;
    for folder in &survey.folders {
        let src = survey.root.join(&folder.entry);
        let dst = staging.join(&folder.entry);
        private_dir(&dst)?;
        for sub in ["cur", "new", "tmp"] {
            private_dir(&dst.join(sub))?;
        }
        for file in &folder.files {
            match link_or_copy(&src.join(file), &dst.join(file))? {
                true => done.linked += 1,
                false => done.copied += 1,
            }
        }
        for name in [UIDLIST, COURIER_UIDS, KEYWORDS] {
            copy_small(&src.join(name), &dst.join(name))?;
        }
        for sub in ["cur", "new"] {
            let dir = dst.join(sub);
            fsutil::fsync_dir(&dir).map_err(io_at(&dir))?;
        }
        fsutil::fsync_dir(&dst).map_err(io_at(&dst))?;
    }
    subscriptions(&survey.root, staging)?;
    fsutil::fsync_dir(staging).map_err(io_at(staging))?;
    Ok(done)
}

fn private_dir(dir: &Path) -> Result<(), CopyError> {
    match fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(io_at(dir))
    {
        Err(CopyError::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
            Ok(())
        }
        other => other,
    }
}

use std::os::unix::fs::DirBuilderExt;

/// A hard link when the file system allows it (true), else a copy with the same mtime (the
/// message's INTERNALDATE), fsynced (false).
fn link_or_copy(src: &Path, dst: &Path) -> Result<bool, CopyError> {
    match fs::hard_link(src, dst) {
        Ok(()) => return Ok(true),
        // EXDEV: another file system; EPERM: protected_hardlinks and a file not ours.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV | libc::EPERM)) => {}
        Err(e) => return Err(io_at(dst)(e)),
    }
    let mut from = File::open(src).map_err(io_at(src))?;
    let modified = from
        .metadata()
        .and_then(|m| m.modified())
        .map_err(io_at(src))?;
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .map_err(io_at(dst))?;
    io::copy(&mut from, &mut to).map_err(io_at(dst))?;
    to.set_times(FileTimes::new().set_modified(modified))
        .and_then(|()| to.sync_all())
        .map_err(io_at(dst))?;
    Ok(false)
}

/// Copies a small state file as it is (tambo rewrites them by rename and appends to the
/// uidlist in place, so they are never shared with the old tree); absent stays absent.
fn copy_small(src: &Path, dst: &Path) -> Result<(), CopyError> {
    match fs::read(src) {
        Ok(data) => fsutil::write_atomic(dst, &data, 0o600).map_err(io_at(dst)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_at(src)(e)),
    }
}

/// Dovecot's `subscriptions` as it is; else Courier's `courierimapsubscribed` (names under
/// Courier's `INBOX.` namespace, one a line) in Dovecot's format.
fn subscriptions(root: &Path, staging: &Path) -> Result<(), CopyError> {
    let dovecot = root.join(SUBSCRIPTIONS);
    if dovecot.exists() {
        return copy_small(&dovecot, &staging.join(SUBSCRIPTIONS));
    }
    let courier = root.join(COURIER_SUBSCRIPTIONS);
    let data = match fs::read(&courier) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_at(&courier)(e)),
    };
    let converted = from_courier(&data);
    let dst = staging.join(SUBSCRIPTIONS);
    fsutil::write_atomic(&dst, converted.serialize().as_bytes(), 0o600).map_err(io_at(&dst))
}

/// Courier's names are `INBOX` and `INBOX.<folder>`; names that are no folder are dropped.
fn from_courier(data: &[u8]) -> Subscriptions {
    let mut subs = Subscriptions::default();
    for line in String::from_utf8_lossy(data).lines() {
        let name = line.strip_prefix("INBOX.").unwrap_or(line);
        if let Ok(name) = FolderName::parse(name) {
            subs.set(&name, true);
        }
    }
    subs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn courier_subscriptions_lose_their_namespace() {
        let subs = from_courier(b"INBOX\nINBOX.Sent\nINBOX.Archive.2024\n\n");
        let names: Vec<String> = subs.names().iter().map(|n| n.to_string()).collect();
        assert_eq!(names, ["INBOX", "Sent", "Archive.2024"]);
        assert_eq!(
            subs.serialize(),
            "V\t2\n\nINBOX\nSent\nArchive\t2024\n",
            "Dovecot's format, as tambo writes it"
        );
    }
}
