//! The commands of the authenticated and selected states (RFC 3501 §6.3, §6.4, and the
//! extensions we offer), over the mailbox store. Store calls block: each runs on a blocking
//! thread, taking the open folder with it and handing it back.
//!
//! - [`folders`] does LIST, LSUB, CREATE, DELETE, RENAME, SUBSCRIBE, STATUS, NAMESPACE, QUOTA.
//! - [`append`] does APPEND, its literal spooled to disk.
//! - [`select`] does SELECT, EXAMINE, CLOSE, UNSELECT, EXPUNGE, and the untagged updates.
//! - [`fetch`] does FETCH, [`search`] SEARCH, [`copy`] COPY and MOVE.
//! - [`flags`] does STORE, and the flag lists on the wire.
//! - [`sequence`] turns sequence sets into message indexes.
//! - [`condstore`] does ENABLE, and what CONDSTORE/QRESYNC (RFC 7162) add to the others.
//! - [`sort`] does SORT, [`thread`] THREAD (RFC 5256), from the cache's envelopes.

pub mod append;
pub mod condstore;
pub mod copy;
pub mod fetch;
pub mod flags;
pub mod folders;
pub mod search;
pub mod select;
pub mod sequence;
pub mod sort;
pub mod thread;

use crate::imapd::conn::{Conn, Next, Session, State};
use crate::mailbox::{Folder, FolderName, Modseqs, StoreError, UserStore};
use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::mailbox::Mailbox;
use std::fs::File;

pub use select::report_changes;

/// The open folder of the selected state.
pub struct Selected {
    pub name: FolderName,
    pub folder: Folder,
    /// EXAMINE, or a folder we may not change.
    pub read_only: bool,
    /// The number of messages the client was last told (EXISTS).
    pub exists: usize,
    /// The folder's modseq record, once CONDSTORE is used (see [`condstore`]).
    pub modseqs: Option<Modseqs>,
}

/// Every command but those of any state (handled in `conn.rs`).
pub async fn dispatch(
    conn: &mut Conn,
    tag: &str,
    body: CommandBody<'_>,
    spool: Option<File>,
) -> Next {
    if matches!(conn.state, State::NotAuthenticated) {
        conn.bad(tag, "Log in first");
        return Next::Continue;
    }
    match body {
        CommandBody::Select {
            mailbox,
            parameters,
        } => select::select(conn, tag, &mailbox, false, &parameters).await,
        CommandBody::Examine {
            mailbox,
            parameters,
        } => select::select(conn, tag, &mailbox, true, &parameters).await,
        CommandBody::Create { mailbox } => folders::create(conn, tag, &mailbox).await,
        CommandBody::Delete { mailbox } => folders::delete(conn, tag, &mailbox).await,
        CommandBody::Rename { from, to } => folders::rename(conn, tag, &from, &to).await,
        CommandBody::Subscribe { mailbox } => folders::subscribe(conn, tag, &mailbox, true).await,
        CommandBody::Unsubscribe { mailbox } => {
            folders::subscribe(conn, tag, &mailbox, false).await
        }
        CommandBody::List {
            reference,
            mailbox_wildcard,
        } => folders::list(conn, tag, &reference, &mailbox_wildcard, false).await,
        CommandBody::Lsub {
            reference,
            mailbox_wildcard,
        } => folders::list(conn, tag, &reference, &mailbox_wildcard, true).await,
        CommandBody::Status {
            mailbox,
            item_names,
        } => folders::status(conn, tag, &mailbox, &item_names).await,
        CommandBody::Namespace => folders::namespace(conn, tag),
        CommandBody::GetQuotaRoot { mailbox } => folders::quota_root(conn, tag, &mailbox).await,
        CommandBody::GetQuota { root } => folders::quota(conn, tag, &root).await,
        CommandBody::Append {
            mailbox,
            flags,
            date,
            message,
        } => append::append(conn, tag, &mailbox, &flags, date.as_ref(), message, spool).await,
        CommandBody::Enable { capabilities } => condstore::enable(conn, tag, capabilities.as_ref()),
        CommandBody::Idle => return Next::Idle(tag.to_string()),
        body => return selected(conn, tag, body).await,
    }
    Next::Continue
}

/// The commands of the selected state.
async fn selected(conn: &mut Conn, tag: &str, body: CommandBody<'_>) -> Next {
    if !matches!(conn.state, State::Selected(..)) {
        conn.bad(tag, "No folder selected");
        return Next::Continue;
    }
    match body {
        CommandBody::Close => select::close(conn, tag, true).await,
        CommandBody::Unselect => select::close(conn, tag, false).await,
        CommandBody::Expunge => select::expunge(conn, tag, None).await,
        CommandBody::ExpungeUid { sequence_set } => {
            select::expunge(conn, tag, Some(&sequence_set)).await
        }
        CommandBody::Fetch {
            sequence_set,
            macro_or_item_names,
            uid,
            modifiers,
        } => {
            fetch::fetch(
                conn,
                tag,
                &sequence_set,
                macro_or_item_names,
                uid,
                &modifiers,
            )
            .await
        }
        CommandBody::Search {
            charset,
            criteria,
            uid,
        } => search::search(conn, tag, charset.as_ref(), criteria.as_ref(), uid).await,
        CommandBody::Store {
            sequence_set,
            kind,
            response,
            flags,
            uid,
            modifiers,
        } => {
            let modes = (kind, response, uid);
            flags::store(conn, tag, &sequence_set, modes, &flags, &modifiers).await
        }
        CommandBody::Sort {
            sort_criteria,
            charset,
            search_criteria,
            uid,
        } => {
            let (sort, search) = (sort_criteria.as_ref(), search_criteria.as_ref());
            sort::sort(conn, tag, sort, &charset, search, uid).await
        }
        CommandBody::Thread {
            algorithm,
            charset,
            search_criteria,
            uid,
        } => {
            let search = search_criteria.as_ref();
            thread::thread(conn, tag, &algorithm, &charset, search, uid).await
        }
        CommandBody::Copy {
            sequence_set,
            mailbox,
            uid,
        } => copy::copy(conn, tag, &sequence_set, &mailbox, uid, false).await,
        CommandBody::Move {
            sequence_set,
            mailbox,
            uid,
        } => copy::copy(conn, tag, &sequence_set, &mailbox, uid, true).await,
        _ => conn.bad(tag, "Command not supported"),
    }
    Next::Continue
}

/// The logged-in session (authenticated or selected).
pub fn session(conn: &Conn) -> Option<&Session> {
    match &conn.state {
        State::Authenticated(s) | State::Selected(s, _) => Some(s),
        _ => None,
    }
}

/// The user's store, to move into a blocking call.
pub fn user_store(conn: &Conn) -> Option<UserStore> {
    session(conn).map(|s| s.store.clone())
}

/// A folder name from the wire: `INBOX` (any case) or a name the store accepts.
pub fn folder_name(mailbox: &Mailbox<'_>) -> Result<FolderName, StoreError> {
    match mailbox {
        Mailbox::Inbox => FolderName::parse("INBOX"),
        Mailbox::Other(other) => FolderName::parse(&String::from_utf8_lossy(other.as_ref())),
    }
}

/// The end of a command whose answer is one untagged line made on the selected folder
/// (SEARCH, SORT, THREAD): the line, then what changed meanwhile without EXPUNGE responses
/// (RFC 3501 §7.4.1), then the tagged OK; or the store's error, or BAD with no folder.
pub async fn answer_line(
    conn: &mut Conn,
    tag: &str,
    command: &str,
    done: Option<Result<Vec<u8>, StoreError>>,
) {
    match done {
        Some(Ok(line)) => {
            conn.out.extend_from_slice(&line);
            report_changes(conn, false).await;
            conn.ok(tag, &format!("{command} completed"));
        }
        Some(Err(e)) => store_error(conn, tag, command, &e),
        None => conn.bad(tag, "No folder selected"),
    }
}

/// The tagged NO for a store error: a short text for the client, the reason in the log.
pub fn store_error(conn: &mut Conn, tag: &str, what: &str, e: &StoreError) {
    let (code, text) = match e {
        StoreError::NoSuchFolder => (Some("NONEXISTENT"), "No such folder".to_string()),
        StoreError::Exists => (Some("ALREADYEXISTS"), "Folder already exists".to_string()),
        StoreError::BadName(why) => (Some("CANNOT"), format!("Invalid folder name: {why}")),
        StoreError::OverQuota => (Some("OVERQUOTA"), "Mailbox is full".to_string()),
        StoreError::HasChildren => (Some("INUSE"), "Folder has children".to_string()),
        StoreError::NotAllowed(why) => (Some("CANNOT"), why.to_string()),
        StoreError::ReadOnly => (Some("READ-ONLY"), "Folder is read-only".to_string()),
        StoreError::BadFlag(why) => (Some("CANNOT"), format!("Invalid flag: {why}")),
        StoreError::TooManyKeywords => (Some("LIMIT"), "Too many keywords".to_string()),
        StoreError::Expunged => (Some("EXPUNGEISSUED"), "Message was expunged".to_string()),
        other => {
            log::error!("imap: {what} for {}: {other}", conn.peer);
            (Some("SERVERBUG"), format!("{what} failed"))
        }
    };
    conn.no(tag, code, &text);
}

/// Runs `work` on the open folder on a blocking thread, and puts the folder back.
pub async fn with_folder<T: Send + 'static>(
    conn: &mut Conn,
    work: impl FnOnce(&mut Selected, &UserStore) -> T + Send + 'static,
) -> Option<T> {
    let state = std::mem::replace(&mut conn.state, State::Logout);
    let State::Selected(session, mut selected) = state else {
        conn.state = state;
        return None;
    };
    let store = session.store.clone();
    let (selected, result) = smol::unblock(move || {
        let result = work(&mut selected, &store);
        (selected, result)
    })
    .await;
    conn.state = State::Selected(session, selected);
    Some(result)
}
