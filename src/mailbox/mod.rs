//! The Maildir++ store that IMAP and local delivery share (SPEC §10), on disk as Dovecot
//! keeps it, so Dovecot, mutt or mbsync can use the same files:
//!
//! ```text
//! data_dir/mail/<domain>/<user>/   INBOX (cur/ new/ tmp/), subscriptions, maildirsize
//!     dovecot-uidlist dovecot-keywords tambo-cache tambo-modseq   per folder, INBOX's here
//!     .Sent/ .Archive.2024/ ...    folders: cur/ new/ tmp/ maildirfolder + the same files
//! ```
//!
//! - [`Store`]: the mail root, the quota, the [`Notifier`]; [`Store::user`] opens a user.
//! - [`UserStore`] (`user`): folders of one user: list, create, delete, rename, subscribe,
//!   status, APPEND, quota.
//! - [`Folder`] (`folder`, `ops`): one open folder: messages in UID order, `sync`, flags,
//!   expunge, copy and move, message files, summaries.
//! - [`deliver`]: local delivery, the courier's way in.
//! - Below them: `name` (folder names, modified UTF-7), `flags`, `filename` (Maildir names),
//!   `uidlist` + `uidfile` (`dovecot-uidlist`), `pop3` (its POP3 fields), `keywords`,
//!   `subscriptions`, `dotlock`, `scan` (change detection, listings), `cache`
//!   (`tambo-cache`), `modseq` (`tambo-modseq`: CONDSTORE/QRESYNC mod-sequences and
//!   tombstones), `shared` (folder views the sessions share, so a SELECT of a folder seen
//!   before costs a few stats), `writer` (the one Maildir writer), `quota` (`maildirsize`),
//!   `notify`, and `summary` (ENVELOPE, BODYSTRUCTURE: pure functions over message bytes).
//!
//! Everything here blocks: async callers use `smol::unblock`.

mod cache;
mod deliver;
mod dotlock;
pub(crate) mod filename;
pub(crate) mod flags;
mod folder;
mod keywords;
mod modseq;
pub(crate) mod name;
mod notify;
mod ops;
mod pop3;
mod quota;
pub(crate) mod scan;
mod shared;
pub(crate) mod subscriptions;
pub mod summary;
mod uidfile;
pub(crate) mod uidlist;
mod user;
mod writer;

pub use deliver::{deliver, deliver_flagged, trace_headers};
pub use flags::{Flags, MAX_KEYWORDS};
pub use folder::{Changes, Folder, Message};
pub use modseq::{Log as ModseqLog, Modseqs};
pub use name::{DELIMITER, FolderName, SpecialUse};
pub use notify::Notifier;
pub use pop3::Pop3Fields;
pub use summary::Summary;
pub use user::{FolderInfo, FolderStatus, UserStore};

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a store operation failed. The IMAP driver maps each to its response; the courier
/// to a temporary or permanent failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such folder")]
    NoSuchFolder,
    #[error("folder exists")]
    Exists,
    #[error("bad name: {0}")]
    BadName(String),
    /// `\Flag` unknown, or a keyword that cannot be stored.
    #[error("bad flag: {0}")]
    BadFlag(String),
    #[error("all {} keyword letters of the folder are used", MAX_KEYWORDS)]
    TooManyKeywords,
    /// The user's quota would be exceeded (RFC 3463 4.2.2 at delivery; IMAP `[OVERQUOTA]`).
    #[error("mailbox full")]
    OverQuota,
    /// DELETE of a folder with children (as Dovecot's Maildir++: nothing to keep as
    /// `\Noselect`).
    #[error("folder has children")]
    HasChildren,
    /// Something the rules forbid (deleting INBOX, renaming a folder into itself).
    #[error("{0}")]
    NotAllowed(&'static str),
    /// A change through a folder opened read-only (EXAMINE).
    #[error("folder is read-only")]
    ReadOnly,
    /// The message's file is gone (expunged by another session or program).
    #[error("message expunged")]
    Expunged,
    /// Someone gave the folder a new UIDVALIDITY while it was open: the session's UIDs are
    /// meaningless now (IMAP: BYE).
    #[error("UIDVALIDITY changed")]
    UidValidityChanged,
    /// A lock held for longer than its stale time allows.
    #[error("{}: locked", path.display())]
    Locked { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {why}", path.display())]
    Damaged { path: PathBuf, why: String },
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A full disk or the system's quota (not ours: that is [`StoreError::OverQuota`]).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Io { source, .. } if crate::fsutil::is_disk_full(source))
    }
}

/// The mail root of every user, with what all of them share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// `data_dir/mail`.
    root: PathBuf,
    /// `mailbox_quota_mb` in octets.
    quota: Option<u64>,
    /// The host part of new file names.
    hostname: String,
    /// `suffix_separators`: `user+tag@` is delivered into folder `tag` when it exists.
    detail_separators: String,
    notifier: Notifier,
    /// Folder views shared by the sessions (see `shared`).
    shared: shared::Registry,
    /// Modseq records of the folders in use (see `modseq`).
    modseqs: modseq::Registry,
}

impl Store {
    /// A store over `mail_root` (`data_dir/mail`); files are named after the system's host
    /// name (see [`Store::with_hostname`]).
    pub fn new(mail_root: PathBuf, quota_bytes: Option<u64>) -> Store {
        Store::build(
            mail_root,
            quota_bytes,
            filename::system_hostname().to_string(),
            "+".to_string(),
        )
    }

    /// The same store naming new files after `hostname` (the server's configured name).
    pub fn with_hostname(self, hostname: &str) -> Store {
        let separators = self.inner.detail_separators.clone();
        Store::build(
            self.inner.root.clone(),
            self.inner.quota,
            hostname.to_string(),
            separators,
        )
    }

    /// The same store with the address suffix separators (`suffix_separators`, "+" unless
    /// set) that mark the folder part of a recipient address (see [`Store::detail_of`]).
    pub fn with_detail_separators(self, separators: &str) -> Store {
        let hostname = self.inner.hostname.clone();
        Store::build(
            self.inner.root.clone(),
            self.inner.quota,
            hostname,
            separators.to_string(),
        )
    }

    fn build(root: PathBuf, quota: Option<u64>, hostname: String, separators: String) -> Store {
        Store {
            inner: Arc::new(Shared {
                root,
                quota: quota.filter(|&q| q > 0),
                hostname,
                detail_separators: separators,
                notifier: Notifier::default(),
                shared: shared::Registry::default(),
                modseqs: modseq::Registry::default(),
            }),
        }
    }

    /// The user's mailbox, with INBOX, Sent, Drafts, Trash and Junk (the last four
    /// subscribed when made) created when missing.
    pub fn user(&self, domain: &str, user: &str) -> Result<UserStore, StoreError> {
        let store = UserStore::new(self.clone(), domain, user)?;
        store.ensure_defaults()?;
        Ok(store)
    }

    pub fn notifier(&self) -> &Notifier {
        &self.inner.notifier
    }

    /// The detail of a recipient's local part: what follows the first suffix separator
    /// (`tag` of `user+tag`), as Dovecot's `lmtp_save_to_detail_mailbox` takes it; none
    /// when the separator starts the local part or ends it.
    pub fn detail_of<'a>(&self, local: &'a str) -> Option<&'a str> {
        let seps = &self.inner.detail_separators;
        let at = local.find(|c| seps.contains(c))?;
        let sep_len = local[at..].chars().next().map_or(1, char::len_utf8);
        let detail = &local[at + sep_len..];
        (at > 0 && !detail.is_empty()).then_some(detail)
    }

    pub fn quota_bytes(&self) -> Option<u64> {
        self.inner.quota
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub(crate) fn hostname(&self) -> &str {
        &self.inner.hostname
    }

    pub(crate) fn shared(&self) -> &shared::Registry {
        &self.inner.shared
    }

    pub(crate) fn modseqs(&self) -> &modseq::Registry {
        &self.inner.modseqs
    }
}

#[cfg(test)]
mod dovecot_check;
#[cfg(test)]
mod tests;
