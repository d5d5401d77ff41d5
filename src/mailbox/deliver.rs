//! Local delivery into a user's folder: what the courier, and the direct delivery before the
//! 250, call. Streams from the queue file (the message is never held whole, except small ones
//! for their summary), converts CRLF to LF, fsyncs the file, links it into `new/` and fsyncs
//! `new/`, so that once this returns the message survives a crash (SPEC §7).
//!
//! Idempotent per delivery key (the queue id and the recipient's index): the file is named
//! after it and published with `link`, so a delivery that an earlier attempt already made
//! (the process stopped between the Maildir and the queue's status record) is found in
//! `new/` and not made twice. A message the user moved to `cur/` in between is not looked for.
//!
//! UIDs are not given here: the next session to look at the folder gives them (under the
//! uidlist lock, in file name order), which keeps deliveries free of any lock.

use crate::fsutil;
use crate::mailbox::filename::safe_hostname;
use crate::mailbox::name::FolderName;
use crate::mailbox::user::{UserStore, keyword_letters};
use crate::mailbox::writer::{self, Create, Published};
use crate::mailbox::{Flags, Store, StoreError, cache, flags, quota, summary, uidfile};
use crate::message::StoredMessage;
use std::io::Read;

/// Delivers `message`, after the header lines `headers` (LF or CRLF), into `folder` of
/// `user@domain` (the folder is made when missing). Over the quota:
/// [`StoreError::OverQuota`], which the courier turns into a temporary failure (452 4.2.2).
/// Other users' sessions of that user are told.
pub fn deliver(
    store: &Store,
    domain: &str,
    user: &str,
    folder: &FolderName,
    message: &StoredMessage,
    headers: &[u8],
    key: &str,
) -> Result<(), StoreError> {
    let flags = Flags::default();
    deliver_flagged(store, domain, user, folder, message, headers, key, &flags)
}

/// [`deliver`] with flags and keywords set (`$Junk` on mail accepted under
/// `inbound_policy` "tag"). Such a file goes straight to `cur/` with its flags in its name,
/// as Dovecot's delivery does; new keywords are added to `dovecot-keywords` under the
/// uidlist lock, which a flagged delivery takes for that (an unflagged one takes none).
#[allow(clippy::too_many_arguments)]
pub fn deliver_flagged(
    store: &Store,
    domain: &str,
    user: &str,
    folder: &FolderName,
    message: &StoredMessage,
    headers: &[u8],
    key: &str,
    flags: &Flags,
) -> Result<(), StoreError> {
    check_key(key)?;
    let user = UserStore::new(store.clone(), domain, user)?;
    user.ensure_inbox()?;
    if !folder.is_inbox() && !user.exists(folder) {
        match user.create(folder) {
            Ok(()) | Err(StoreError::Exists) => {}
            Err(e) => return Err(e),
        }
    }
    let limit = store.quota_bytes();
    if let Some(limit) = limit {
        // Already full: refuse before writing anything.
        quota::check(user.root(), limit, 0)?;
    }
    let dir = user.folder_dir(folder);
    let name = format!(
        "{}.{key}.{}",
        message.envelope.received_at,
        safe_hostname(store.hostname())
    );
    let tmp = dir.join("tmp").join(&name);
    let mut data = message
        .open_data()
        .map_err(|e| StoreError::io(&message.path, e))?;
    let mut input = headers.chain(&mut data);
    let written = writer::write_tmp(
        &tmp,
        Create::Own,
        &mut input,
        &message.path,
        headers.len() as u64 + message.message_len(),
    )?;
    let base = format!("{name},S={},W={}", written.size, written.crlf_size);
    let flagged = flags.system != 0 || !flags.keywords.is_empty();
    let lock = flagged.then(|| uidfile::Locked::open(&dir)).transpose()?;
    let dest = match lock {
        Some(_) => {
            let (system, keywords) = keyword_letters(&dir, flags)?;
            dir.join("cur")
                .join(format!("{base}:{}", flags::info(system, keywords)))
        }
        None => dir.join("new").join(&base),
    };
    let dest_dir = dest.parent().unwrap_or(&dir).to_path_buf();
    if dest.exists() {
        log::info!("maildir: {} was already delivered", dest.display());
        writer::remove_quietly(&tmp);
        return Ok(());
    }
    if let Some(limit) = limit
        && let Err(e) = quota::check(user.root(), limit, written.size)
    {
        writer::remove_quietly(&tmp);
        return Err(e);
    }
    // The cache record first: a session that sees the file finds it ready.
    let date = written.mtime;
    let summary = written.data.as_deref().map(summary::summarize);
    cache::append_to(
        &dir,
        &cache::record(&base, written.crlf_size, date, summary.as_ref()).0,
    );
    let created = writer::publish(&tmp, &dest)? == Published::Created;
    if !created {
        log::info!("maildir: {} was already delivered", dest.display());
    }
    if let Err(e) = fsutil::fsync_dir_shared(&dest_dir) {
        // The delivery will be retried, so a copy left here could show up twice.
        if created {
            writer::remove_quietly(&dest);
        }
        return Err(StoreError::io(&dest_dir, e));
    }
    drop(lock);
    if created {
        if limit.is_some() {
            quota::add(user.root(), written.size as i64, 1);
        }
        user.notify();
    }
    Ok(())
}

/// `Return-Path` (RFC 5321 §4.4) and `Delivered-To`, with LF endings like the rest of the file.
pub fn trace_headers(from: &str, user: &str, domain: &str) -> String {
    // The reverse-path was parsed upstream; dropping control characters here makes header
    // injection impossible even if that ever changes.
    let from: String = from.chars().filter(|c| !c.is_control()).collect();
    format!("Return-Path: <{from}>\nDelivered-To: {user}@{domain}\n")
}

/// A delivery key goes into a file name: letters, digits, `_` and `-` only.
fn check_key(key: &str) -> Result<(), StoreError> {
    let ok = !key.is_empty()
        && key.len() <= 64
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        return Err(StoreError::BadName(format!("bad delivery key {key:?}")));
    }
    Ok(())
}
