//! FETCH and UID FETCH (RFC 3501 §6.4.5, §7.4.2). What is sent most (FLAGS, UID, sizes,
//! dates, ENVELOPE and BODYSTRUCTURE from the per-folder cache) needs no message file; the
//! sections read the file. The responses are made in batches on a blocking thread and
//! written between batches, so a FETCH of a whole large folder is never held whole.

use crate::imapd::commands::condstore::{self, modseq_of, write_vanished};
use crate::imapd::commands::flags::write_flags;
use crate::imapd::commands::{Selected, report_changes, sequence, store_error, with_folder};
use crate::imapd::conn::{Conn, FLUSH_AT};
use crate::imapd::wire;
use crate::mailbox::{Flags, Folder, ModseqLog, StoreError};
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::command::FetchModifier;
use imap_codec::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItemName, Part, Section,
};
use imap_codec::imap_types::sequence::SequenceSet;
use std::io::Read;
use std::num::NonZeroU32;

pub async fn fetch(
    conn: &mut Conn,
    tag: &str,
    set: &SequenceSet,
    items: MacroOrMessageDataItemNames<'_>,
    uid: bool,
    modifiers: &[FetchModifier],
) {
    let mut items: Vec<MessageDataItemName<'static>> = match items {
        MacroOrMessageDataItemNames::Macro(m) => {
            m.expand().into_iter().map(|i| i.into_static()).collect()
        }
        MacroOrMessageDataItemNames::MessageDataItemNames(list) => {
            list.into_iter().map(|i| i.into_static()).collect()
        }
    };
    // BINARY (RFC 3516) is not offered: a client that asks anyway gets nothing for it
    // rather than a broken response.
    items.retain(|i| {
        !matches!(
            i,
            MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. }
        )
    });
    let since = modifiers.iter().find_map(|m| match m {
        FetchModifier::ChangedSince(n) => Some(n.get()),
        FetchModifier::Vanished => None,
    });
    let vanished = modifiers.contains(&FetchModifier::Vanished);
    // RFC 7162 §3.2.6: VANISHED only in UID FETCH, with CHANGEDSINCE, once QRESYNC is on.
    if vanished && (!uid || since.is_none() || !condstore::modes(conn).1) {
        return conn.bad(
            tag,
            "VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC",
        );
    }
    // RFC 7162 §3.1.4.1: CHANGEDSINCE implies MODSEQ; both turn CONDSTORE on.
    let asks_modseq = items
        .iter()
        .any(|i| matches!(i, MessageDataItemName::ModSeq));
    if since.is_some() && !asks_modseq {
        items.push(MessageDataItemName::ModSeq);
    }
    if since.is_some() || asks_modseq {
        condstore::turn_on(conn);
    }
    let condstore_on = condstore::modes(conn).0;
    // RFC 3501 §6.4.8: UID FETCH always returns the UID.
    if uid && !items.iter().any(|i| matches!(i, MessageDataItemName::Uid)) {
        items.insert(0, MessageDataItemName::Uid);
    }
    let set = set.clone().into_static();
    let picked = with_folder(conn, move |sel: &mut Selected, _| {
        let folder = &sel.folder;
        if !uid && sequence::out_of_range(&set, folder.len()) {
            return Ok(None);
        }
        let mut picked = sequence::indexes(&set, folder.len(), uid, |i| folder.message(i).uid);
        let mut out = Vec::new();
        if let Some(since) = since {
            let modseqs = sel.modseqs()?;
            let mut log = modseqs.lock();
            if vanished {
                // RFC 7162 §3.2.6: the UIDs of the set expunged since, before the FETCHes.
                let wanted = sequence::ranges(&set, sel.folder.uidnext.saturating_sub(1));
                let gone = condstore::vanished(&log, &sel.folder, since, &wanted);
                write_vanished(&mut out, &gone, true);
            }
            picked.retain(|&i| modseq_of(&mut log, sel.folder.message(i)) > since);
            log.flush();
        }
        Ok::<_, StoreError>(Some((picked, out)))
    })
    .await;
    let picked = match picked {
        Some(Ok(Some((picked, vanished_out)))) => {
            conn.out.extend_from_slice(&vanished_out);
            picked
        }
        Some(Err(e)) => return store_error(conn, tag, "FETCH", &e),
        _ => return conn.bad(tag, "Invalid message number"),
    };
    let items = std::sync::Arc::new(items);
    let mut done = 0;
    let mut some_expunged = false;
    while done < picked.len() {
        let (batch_items, batch) = (items.clone(), picked[done..].to_vec());
        let made = with_folder(conn, move |sel: &mut Selected, _| {
            let mut out = Vec::new();
            let (mut count, mut expunged) = (0, false);
            let modseqs = match condstore_on {
                true => Some(sel.modseqs()?),
                false => None,
            };
            let mut log = modseqs.as_ref().map(|m| m.lock());
            for i in batch {
                count += 1;
                if i >= sel.folder.len() {
                    continue;
                }
                let start = out.len();
                match one(sel, i, &batch_items, log.as_deref_mut(), &mut out) {
                    Ok(()) => {}
                    // Another session expunged it (RFC 2180 §4.1.3): the others are still
                    // sent; the tagged reply says some were not.
                    Err(StoreError::Expunged) => {
                        out.truncate(start);
                        expunged = true;
                    }
                    Err(e) => return Err(e),
                }
                if out.len() >= FLUSH_AT {
                    break;
                }
            }
            if let Some(log) = &mut log {
                log.flush();
            }
            Ok::<_, StoreError>((out, count, expunged))
        })
        .await;
        match made {
            Some(Ok((out, count, expunged))) => {
                conn.out.extend_from_slice(&out);
                some_expunged |= expunged;
                done += count.max(1);
                if conn.flush().await.is_err() {
                    return;
                }
            }
            Some(Err(e)) => return store_error(conn, tag, "FETCH", &e),
            None => return conn.bad(tag, "No folder selected"),
        }
    }
    // RFC 3501 §7.4.1: no EXPUNGE responses during FETCH.
    report_changes(conn, false).await;
    if some_expunged {
        // RFC 5530 §3: EXPUNGEISSUED.
        conn.no(
            tag,
            Some("EXPUNGEISSUED"),
            "Some of the requested messages no longer exist",
        );
    } else {
        conn.ok(tag, "FETCH completed");
    }
}

/// Whether fetching `item` marks the message \Seen (RFC 3501 §6.4.5: BODY[...] and RFC822,
/// RFC822.TEXT; not the .PEEK forms, nor RFC822.HEADER).
fn sets_seen(item: &MessageDataItemName<'_>) -> bool {
    matches!(
        item,
        MessageDataItemName::BodyExt { peek: false, .. }
            | MessageDataItemName::Rfc822
            | MessageDataItemName::Rfc822Text
    )
}

/// The FETCH response of message `i`.
fn one(
    sel: &mut Selected,
    i: usize,
    items: &[MessageDataItemName<'static>],
    mut log: Option<&mut ModseqLog>,
    out: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let mut flags_changed = false;
    let unseen = sel.folder.message(i).system & Flags::SEEN == 0;
    if !sel.read_only && unseen && items.iter().any(sets_seen) {
        let mut flags = sel.folder.flags(i);
        flags.system |= Flags::SEEN;
        sel.folder.store_flags(i, flags)?;
        flags_changed = true;
        if let Some(log) = log.as_deref_mut() {
            log.touch(sel.folder.message(i));
        }
    }
    let mut modseq_sent = false;
    let folder = &mut sel.folder;
    let mut message: Option<Vec<u8>> = None;
    wire::push_fmt(out, format_args!("* {} FETCH (", i + 1));
    let mut first = true;
    let mut flags_sent = false;
    for item in items {
        if !first {
            out.push(b' ');
        }
        first = false;
        match item {
            MessageDataItemName::Uid => {
                wire::push_fmt(out, format_args!("UID {}", folder.message(i).uid));
            }
            MessageDataItemName::Flags => {
                out.extend_from_slice(b"FLAGS ");
                write_flags(out, &folder.flags(i), folder.message(i).recent);
                flags_sent = true;
            }
            MessageDataItemName::InternalDate => {
                let date = wire::date_time(folder.internaldate(i));
                wire::push_fmt(out, format_args!("INTERNALDATE {date}"));
            }
            MessageDataItemName::Rfc822Size => {
                wire::push_fmt(out, format_args!("RFC822.SIZE {}", folder.message(i).size));
            }
            MessageDataItemName::Envelope => {
                out.extend_from_slice(b"ENVELOPE ");
                out.extend_from_slice(&folder.summary(i)?.envelope);
            }
            MessageDataItemName::Body => {
                out.extend_from_slice(b"BODY ");
                out.extend_from_slice(&folder.summary(i)?.body);
            }
            MessageDataItemName::BodyStructure => {
                out.extend_from_slice(b"BODYSTRUCTURE ");
                out.extend_from_slice(&folder.summary(i)?.bodystructure);
            }
            MessageDataItemName::BodyExt {
                section, partial, ..
            } => {
                let data = message_of(folder, i, &mut message)?;
                let bytes = crate::mailbox::summary::section(data, section.as_ref(), *partial);
                out.extend_from_slice(b"BODY[");
                if let Some(section) = section {
                    write_section(out, section);
                }
                out.push(b']');
                if let Some((start, _)) = partial {
                    wire::push_fmt(out, format_args!("<{start}>"));
                }
                out.push(b' ');
                wire::literal(out, &bytes);
            }
            MessageDataItemName::Rfc822 => {
                let data = message_of(folder, i, &mut message)?;
                out.extend_from_slice(b"RFC822 ");
                wire::literal(out, &crate::mailbox::summary::section(data, None, None));
            }
            MessageDataItemName::Rfc822Header => {
                let data = message_of(folder, i, &mut message)?;
                out.extend_from_slice(b"RFC822.HEADER ");
                let header = Section::Header(None);
                wire::literal(
                    out,
                    &crate::mailbox::summary::section(data, Some(&header), None),
                );
            }
            MessageDataItemName::Rfc822Text => {
                let data = message_of(folder, i, &mut message)?;
                out.extend_from_slice(b"RFC822.TEXT ");
                let text = Section::Text(None);
                wire::literal(
                    out,
                    &crate::mailbox::summary::section(data, Some(&text), None),
                );
            }
            MessageDataItemName::ModSeq => {
                // RFC 7162 §3.1.4.1; `fetch` turned CONDSTORE on, so the record is here.
                if let Some(log) = log.as_deref_mut() {
                    let modseq = modseq_of(log, folder.message(i));
                    wire::push_fmt(out, format_args!("MODSEQ ({modseq})"));
                    modseq_sent = true;
                }
            }
            // Removed by `fetch` before this is called.
            MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. } => {}
        }
    }
    if flags_changed && !flags_sent {
        out.extend_from_slice(b" FLAGS ");
        write_flags(out, &folder.flags(i), folder.message(i).recent);
        flags_sent = true;
    }
    // With CONDSTORE on, flags go with their modseq (as Dovecot sends them).
    if let Some(log) = log.filter(|_| flags_sent && !modseq_sent) {
        let modseq = modseq_of(log, folder.message(i));
        wire::push_fmt(out, format_args!(" MODSEQ ({modseq})"));
    }
    out.extend_from_slice(b")\r\n");
    Ok(())
}

/// The message's octets, read once per response.
fn message_of<'a>(
    folder: &Folder,
    i: usize,
    cached: &'a mut Option<Vec<u8>>,
) -> Result<&'a [u8], StoreError> {
    if cached.is_none() {
        let mut file = folder.open_file(i)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(|source| StoreError::Io {
                path: std::path::PathBuf::from(format!("message {}", folder.message(i).uid)),
                source,
            })?;
        *cached = Some(data);
    }
    Ok(cached.as_deref().unwrap_or_default())
}

/// The section as the client named it, echoed in the response (RFC 3501 §7.4.2).
fn write_section(out: &mut Vec<u8>, section: &Section<'_>) {
    let part = |out: &mut Vec<u8>, part: &Option<Part>, then: bool| {
        if let Some(p) = part {
            write_part(out, p);
            if then {
                out.push(b'.');
            }
        }
    };
    match section {
        Section::Part(p) => write_part(out, p),
        Section::Header(p) => {
            part(out, p, true);
            out.extend_from_slice(b"HEADER");
        }
        Section::HeaderFields(p, fields) | Section::HeaderFieldsNot(p, fields) => {
            part(out, p, true);
            let not = matches!(section, Section::HeaderFieldsNot(..));
            out.extend_from_slice(if not {
                b"HEADER.FIELDS.NOT ("
            } else {
                b"HEADER.FIELDS ("
            });
            for (n, f) in fields.as_ref().iter().enumerate() {
                if n > 0 {
                    out.push(b' ');
                }
                out.extend_from_slice(&f.as_ref().to_ascii_uppercase());
            }
            out.push(b')');
        }
        Section::Text(p) => {
            part(out, p, true);
            out.extend_from_slice(b"TEXT");
        }
        Section::Mime(p) => {
            write_part(out, p);
            out.extend_from_slice(b".MIME");
        }
    }
}

fn write_part(out: &mut Vec<u8>, part: &Part) {
    let numbers: Vec<String> = part.0.as_ref().iter().map(NonZeroU32::to_string).collect();
    out.extend_from_slice(numbers.join(".").as_bytes());
}
