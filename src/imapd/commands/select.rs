//! SELECT and EXAMINE (RFC 3501 §6.3.1, §6.3.2), CLOSE (§6.4.2), UNSELECT (RFC 3691),
//! EXPUNGE (§6.4.3) and UID EXPUNGE (RFC 4315 §2.1), and the untagged updates of a selected
//! folder (§7.3, §7.4): what other sessions and deliveries changed, told at the moments RFC
//! 3501 allows.

use crate::imapd::commands::condstore::{self, modseq_of, write_vanished};
use crate::imapd::commands::flags::{folder_flags, write_flags};
use crate::imapd::commands::{Selected, folder_name, sequence, store_error, with_folder};
use crate::imapd::conn::{Conn, State};
use crate::imapd::wire;
use crate::mailbox::Changes;
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::command::SelectParameter;
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::sequence::SequenceSet;

pub async fn select(
    conn: &mut Conn,
    tag: &str,
    mailbox: &Mailbox<'_>,
    read_only: bool,
    parameters: &[SelectParameter],
) {
    // RFC 7162 §3.2.5: QRESYNC without ENABLE QRESYNC is BAD.
    let qresync = parameters.iter().find_map(|p| match p {
        SelectParameter::QResync {
            uid_validity,
            mod_sequence_value,
            known_uids,
            ..
        } => Some((
            uid_validity.get(),
            mod_sequence_value.get(),
            known_uids.clone(),
        )),
        SelectParameter::CondStore => None,
    });
    if qresync.is_some() && !condstore::modes(conn).1 {
        return conn.bad(tag, "ENABLE QRESYNC first");
    }
    if !parameters.is_empty() {
        condstore::turn_on(conn);
    }
    let with_modseqs = condstore::modes(conn).0;
    // RFC 3501 §6.3.1: a SELECT leaves the selected state first, whatever follows.
    conn.state = match std::mem::replace(&mut conn.state, State::Logout) {
        State::Selected(session, _) => State::Authenticated(session),
        other => other,
    };
    let name = match folder_name(mailbox) {
        Ok(n) => n,
        Err(e) => return store_error(conn, tag, "SELECT", &e),
    };
    let Some(store) = crate::imapd::commands::user_store(conn) else {
        return conn.bad(tag, "Log in first");
    };
    let opening = name.clone();
    let opened = smol::unblock(move || {
        let folder = store.open(&opening, read_only)?;
        let mut resync = Vec::new();
        let modseqs = if with_modseqs {
            let modseqs = folder.modseqs(true)?;
            let mut log = modseqs.lock();
            // RFC 7162 §3.2.5.1: HIGHESTMODSEQ, then what changed, when the client's
            // UIDVALIDITY is the folder's (else it starts over: nothing to tell).
            wire::push_fmt(
                &mut resync,
                format_args!("* OK [HIGHESTMODSEQ {}] Highest\r\n", log.highest()),
            );
            if let Some((_, since, known)) = qresync.filter(|q| q.0 == folder.uidvalidity) {
                condstore::resync(&folder, &mut log, since, known.as_ref(), &mut resync);
            }
            log.flush();
            drop(log);
            Some(modseqs)
        } else {
            None
        };
        Ok::<_, crate::mailbox::StoreError>((folder, modseqs, resync))
    })
    .await;
    let (folder, modseqs, resync) = match opened {
        Ok(opened) => opened,
        Err(e) => return store_error(conn, tag, "SELECT", &e),
    };
    let out = &mut conn.out;
    folder_flags(out, folder.keywords(), read_only);
    wire::push_fmt(out, format_args!("* {} EXISTS\r\n", folder.len()));
    let recent = (0..folder.len())
        .filter(|&i| folder.message(i).recent)
        .count();
    wire::push_fmt(out, format_args!("* {recent} RECENT\r\n"));
    if let Some(first) =
        (0..folder.len()).find(|&i| folder.message(i).system & crate::mailbox::Flags::SEEN == 0)
    {
        wire::push_fmt(
            out,
            format_args!("* OK [UNSEEN {}] First unseen\r\n", first + 1),
        );
    }
    wire::push_fmt(
        out,
        format_args!("* OK [UIDVALIDITY {}] UIDs valid\r\n", folder.uidvalidity),
    );
    wire::push_fmt(
        out,
        format_args!("* OK [UIDNEXT {}] Predicted next UID\r\n", folder.uidnext),
    );
    out.extend_from_slice(&resync);
    let State::Authenticated(session) = std::mem::replace(&mut conn.state, State::Logout) else {
        return conn.bad(tag, "Log in first");
    };
    conn.state = State::Selected(
        session,
        Box::new(Selected {
            exists: folder.len(),
            name,
            folder,
            read_only,
            modseqs,
        }),
    );
    let code = if read_only { "READ-ONLY" } else { "READ-WRITE" };
    let text = if read_only {
        "EXAMINE completed"
    } else {
        "SELECT completed"
    };
    crate::imapd::wire::status(
        &mut conn.out,
        Some(tag),
        crate::imapd::wire::Status::Ok,
        Some(code),
        text,
    );
}

/// CLOSE (expunges silently, unless read-only) or UNSELECT (does not).
pub async fn close(conn: &mut Conn, tag: &str, expunge: bool) {
    if expunge {
        let expunged = with_folder(conn, |sel: &mut Selected, _| {
            if sel.read_only {
                Ok(Vec::new())
            } else {
                sel.folder.expunge(None)
            }
        })
        .await;
        if let Some(Err(e)) = expunged {
            return store_error(conn, tag, "CLOSE", &e);
        }
    }
    conn.state = match std::mem::replace(&mut conn.state, State::Logout) {
        State::Selected(session, _) => State::Authenticated(session),
        other => other,
    };
    conn.ok(
        tag,
        if expunge {
            "CLOSE completed"
        } else {
            "UNSELECT completed"
        },
    );
}

/// EXPUNGE, or UID EXPUNGE of the messages of `uids` only.
pub async fn expunge(conn: &mut Conn, tag: &str, uids: Option<&SequenceSet>) {
    let uids = uids.map(|s| s.clone().into_static());
    let (condstore, qresync) = condstore::modes(conn);
    let done = with_folder(conn, move |sel: &mut Selected, _| {
        if sel.read_only {
            return Ok(None);
        }
        let folder = &mut sel.folder;
        let only: Option<Vec<u32>> = uids.map(|set| {
            sequence::indexes(&set, folder.len(), true, |i| folder.message(i).uid)
                .into_iter()
                .map(|i| folder.message(i).uid)
                .collect()
        });
        let before: Vec<u32> = folder.messages().iter().map(|m| m.uid).collect();
        let removed = folder.expunge(only.as_deref())?;
        let gone: Vec<u32> = removed.iter().map(|&i| before[i]).collect();
        if condstore || sel.modseqs.is_some() {
            let modseqs = sel.modseqs()?;
            let mut log = modseqs.lock();
            log.expunged(&gone);
            log.flush();
        }
        Ok(Some((removed, gone)))
    })
    .await;
    match done {
        Some(Ok(Some((removed, mut gone)))) => {
            if qresync {
                // RFC 7162 §3.2.10: VANISHED instead of EXPUNGE once QRESYNC is on.
                gone.sort_unstable();
                write_vanished(&mut conn.out, &sequence::ranges_of(&gone), false);
            } else {
                // Highest first: each number is valid when the client reads it (RFC 3501
                // §7.4.1).
                for i in removed {
                    wire::push_fmt(&mut conn.out, format_args!("* {} EXPUNGE\r\n", i + 1));
                }
            }
            note_exists(conn);
            report_changes(conn, true).await;
            conn.ok(tag, "EXPUNGE completed");
        }
        Some(Ok(None)) => conn.no(tag, Some("READ-ONLY"), "Folder is read-only"),
        Some(Err(e)) => store_error(conn, tag, "EXPUNGE", &e),
        None => conn.bad(tag, "No folder selected"),
    }
}

/// Looks at the selected folder again and tells the client what changed: expunges (only
/// when `expunges_allowed`: RFC 3501 §7.4.1 forbids EXPUNGE responses during FETCH, STORE
/// and SEARCH, which then keep expunged messages in place until a later command), new
/// messages, flags changed elsewhere.
pub async fn report_changes(conn: &mut Conn, expunges_allowed: bool) {
    let modes = condstore::modes(conn);
    let changed = with_folder(conn, move |sel: &mut Selected, _| {
        // The UIDs before the look, for VANISHED (the look drops expunged messages).
        let before: Vec<u32> = match modes.1 && expunges_allowed {
            true => sel.folder.messages().iter().map(|m| m.uid).collect(),
            false => Vec::new(),
        };
        let changes = if expunges_allowed {
            sel.folder.sync()?
        } else {
            sel.folder.sync_keeping_expunged()?
        };
        let changed = !changes.expunged.is_empty()
            || !changes.flags.is_empty()
            || changes.exists != sel.exists;
        if changed && (modes.0 || sel.modseqs.is_some()) {
            // A fresh view: the record learns what others did (RFC 7162 §3.1.1).
            sel.modseqs = Some(sel.folder.modseqs(true)?);
        }
        let mut exists = sel.exists;
        let out = render(&changes, sel, &mut exists, modes, &before);
        sel.exists = exists;
        Ok::<_, crate::mailbox::StoreError>(out)
    })
    .await;
    match changed {
        Some(Ok(out)) => conn.out.extend_from_slice(&out),
        Some(Err(crate::mailbox::StoreError::UidValidityChanged)) => {
            // RFC 3501 §2.3.1.1: the session's UIDs mean nothing any more; the client must
            // start over (it sees the new UIDVALIDITY at its next SELECT).
            log::warn!(
                "imap: UIDVALIDITY of the selected folder changed under {}",
                conn.peer
            );
            wire::untagged(
                &mut conn.out,
                "BYE The folder's UIDVALIDITY changed; reconnect",
            );
            conn.state = State::Logout;
        }
        Some(Err(e)) => log::error!("imap: looking at the folder again for {}: {e}", conn.peer),
        None => {}
    }
}

/// The untagged responses for `changes`; `modes` are (CONDSTORE, QRESYNC) on, `before`
/// the UIDs before the look (with QRESYNC).
fn render(
    changes: &Changes,
    sel: &Selected,
    last_exists: &mut usize,
    modes: (bool, bool),
    before: &[u32],
) -> Vec<u8> {
    let mut out = Vec::new();
    if modes.1 {
        let mut gone: Vec<u32> = changes
            .expunged
            .iter()
            .filter_map(|&i| before.get(i).copied())
            .collect();
        gone.sort_unstable();
        write_vanished(&mut out, &sequence::ranges_of(&gone), false);
    } else {
        for i in &changes.expunged {
            wire::push_fmt(&mut out, format_args!("* {} EXPUNGE\r\n", i + 1));
        }
    }
    if changes.exists != *last_exists {
        wire::push_fmt(&mut out, format_args!("* {} EXISTS\r\n", changes.exists));
        wire::push_fmt(&mut out, format_args!("* {} RECENT\r\n", changes.recent));
    }
    *last_exists = changes.exists;
    for &i in &changes.flags {
        let m = sel.folder.message(i);
        wire::push_fmt(
            &mut out,
            format_args!("* {} FETCH (UID {} FLAGS ", i + 1, m.uid),
        );
        write_flags(&mut out, &sel.folder.flags(i), m.recent);
        // RFC 7162 §3.1.4: with CONDSTORE on, unsolicited FETCH carries MODSEQ.
        if let Some(modseqs) = sel.modseqs.as_ref().filter(|_| modes.0) {
            let modseq = modseq_of(&mut modseqs.lock(), m);
            wire::push_fmt(&mut out, format_args!(" MODSEQ ({modseq})"));
        }
        out.extend_from_slice(b")\r\n");
    }
    out
}

/// The client now knows the folder's size as it is (after our own EXPUNGE responses).
pub fn note_exists(conn: &mut Conn) {
    if let State::Selected(_, sel) = &mut conn.state {
        sel.exists = sel.folder.len();
    }
}
