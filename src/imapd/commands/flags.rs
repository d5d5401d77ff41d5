//! Flags on the wire (RFC 3501 §2.3.2) and STORE (§6.4.6), with UNCHANGEDSINCE (RFC 7162
//! §3.1.3).

use crate::imapd::commands::condstore::{self, modseq_of};
use crate::imapd::commands::{Selected, sequence, store_error, with_folder};
use crate::imapd::conn::Conn;
use crate::imapd::wire;
use crate::mailbox::{Flags, StoreError};
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::command::StoreModifier;
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::sequence::SequenceSet;

/// The system flags, their bits in [`Flags`] and their names.
pub const SYSTEM: [(u8, &str); 5] = [
    (Flags::SEEN, "\\Seen"),
    (Flags::ANSWERED, "\\Answered"),
    (Flags::FLAGGED, "\\Flagged"),
    (Flags::DELETED, "\\Deleted"),
    (Flags::DRAFT, "\\Draft"),
];

/// `(\Seen \Answered $Junk \Recent)`. `$Forwarded` is a keyword to clients and a bit of
/// its own in the store (Maildir's letter P).
pub fn write_flags(out: &mut Vec<u8>, flags: &Flags, recent: bool) {
    out.push(b'(');
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !first {
            out.push(b' ');
        }
        first = false;
    };
    for (bit, name) in SYSTEM {
        if flags.system & bit != 0 {
            sep(out);
            out.extend_from_slice(name.as_bytes());
        }
    }
    if flags.system & Flags::FORWARDED != 0 {
        sep(out);
        out.extend_from_slice(Flags::FORWARDED_KEYWORD.as_bytes());
    }
    for keyword in &flags.keywords {
        sep(out);
        out.extend_from_slice(keyword.as_bytes());
    }
    if recent {
        sep(out);
        out.extend_from_slice(b"\\Recent");
    }
    out.push(b')');
}

/// The flags a client named, as the store keeps them. `\Recent` cannot be stored (RFC 3501
/// §2.3.2); other `\` extension flags are refused.
pub fn from_wire(flags: &[Flag<'_>]) -> Result<Flags, String> {
    let mut out = Flags::default();
    for flag in flags {
        match flag {
            Flag::Seen => out.system |= Flags::SEEN,
            Flag::Answered => out.system |= Flags::ANSWERED,
            Flag::Flagged => out.system |= Flags::FLAGGED,
            Flag::Deleted => out.system |= Flags::DELETED,
            Flag::Draft => out.system |= Flags::DRAFT,
            Flag::Keyword(atom) if atom.inner().eq_ignore_ascii_case(Flags::FORWARDED_KEYWORD) => {
                out.system |= Flags::FORWARDED
            }
            Flag::Keyword(atom) => {
                let keyword = atom.inner().to_string();
                if !out
                    .keywords
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(&keyword))
                {
                    out.keywords.push(keyword);
                }
            }
            Flag::Extension(ext) => return Err(format!("cannot store {ext:?}")),
        }
    }
    Ok(out)
}

/// Both sets of flags.
pub fn union(a: &Flags, b: &Flags) -> Flags {
    let mut out = a.clone();
    out.system |= b.system;
    for k in &b.keywords {
        if !out.keywords.iter().any(|x| x.eq_ignore_ascii_case(k)) {
            out.keywords.push(k.clone());
        }
    }
    out
}

/// `a` without the flags of `b`.
pub fn minus(a: &Flags, b: &Flags) -> Flags {
    Flags {
        system: a.system & !b.system,
        keywords: a
            .keywords
            .iter()
            .filter(|k| !b.keywords.iter().any(|x| x.eq_ignore_ascii_case(k)))
            .cloned()
            .collect(),
    }
}

/// `FLAGS (...)` and `PERMANENTFLAGS (...)` of SELECT: the system flags and the folder's
/// keywords; any new keyword may be stored (`\*`).
pub fn folder_flags(out: &mut Vec<u8>, keywords: &[String], read_only: bool) {
    let mut line = b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft".to_vec();
    for k in keywords {
        line.push(b' ');
        line.extend_from_slice(k.as_bytes());
    }
    line.extend_from_slice(b")\r\n");
    out.extend_from_slice(&line);
    if read_only {
        out.extend_from_slice(b"* OK [PERMANENTFLAGS ()] Read-only folder\r\n");
    } else {
        out.extend_from_slice(
            b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft",
        );
        for k in keywords {
            out.push(b' ');
            out.extend_from_slice(k.as_bytes());
        }
        out.extend_from_slice(b" \\*)] Flags permitted\r\n");
    }
}

/// STORE / UID STORE; `modes` are what to store, whether silently, and whether by UID.
pub async fn store(
    conn: &mut Conn,
    tag: &str,
    set: &SequenceSet,
    modes: (StoreType, StoreResponse, bool),
    flags: &[Flag<'_>],
    modifiers: &[StoreModifier],
) {
    let (kind, response, uid) = modes;
    let wanted = match from_wire(flags) {
        Ok(f) => f,
        Err(why) => return conn.bad(tag, &why),
    };
    let unchanged_since = modifiers
        .iter()
        .map(|StoreModifier::UnchangedSince(n)| *n)
        .next();
    if unchanged_since.is_some() {
        condstore::turn_on(conn);
    }
    let condstore_on = condstore::modes(conn).0;
    let set = set.clone().into_static();
    let silent = response == StoreResponse::Silent;
    let done = with_folder(conn, move |sel: &mut Selected, _| {
        if sel.read_only {
            return Err(None);
        }
        if !uid && sequence::out_of_range(&set, sel.folder.len()) {
            return Err(Some(StoreError::BadName("invalid message number".into())));
        }
        let modseqs = match condstore_on {
            true => Some(sel.modseqs().map_err(Some)?),
            false => None,
        };
        let mut log = modseqs.as_ref().map(|m| m.lock());
        let folder = &mut sel.folder;
        let picked = sequence::indexes(&set, folder.len(), uid, |i| folder.message(i).uid);
        let mut out = Vec::new();
        let mut modified = Vec::new();
        for i in picked {
            // RFC 7162 §3.1.3: changed since the client looked: not stored, reported.
            if let (Some(limit), Some(log)) = (unchanged_since, log.as_deref_mut())
                && modseq_of(log, folder.message(i)) > limit
            {
                modified.push(if uid {
                    folder.message(i).uid
                } else {
                    i as u32 + 1
                });
                continue;
            }
            let current = folder.flags(i);
            let new = match kind {
                StoreType::Replace => wanted.clone(),
                StoreType::Add => union(&current, &wanted),
                StoreType::Remove => minus(&current, &wanted),
            };
            let changed = new != current;
            if changed {
                match folder.store_flags(i, new) {
                    Ok(()) => {}
                    // Another session expunged it: nothing to tell (RFC 2180 §4.2.1).
                    Err(StoreError::Expunged) => continue,
                    Err(e) => return Err(Some(e)),
                }
            }
            let m = folder.message(i);
            let modseq = log.as_deref_mut().map(|log| log.touch(m));
            // RFC 3501 §6.4.6: the new value, unless .SILENT; UID STORE adds the UID.
            // RFC 7162 §3.1.3: with CONDSTORE on, MODSEQ too, and even when .SILENT for
            // the messages that changed.
            if silent && (modseq.is_none() || !changed) {
                continue;
            }
            wire::push_fmt(&mut out, format_args!("* {} FETCH (", i + 1));
            let mut parts = Vec::new();
            if uid {
                wire::push_fmt(&mut parts, format_args!("UID {}", m.uid));
            }
            if !silent {
                if !parts.is_empty() {
                    parts.push(b' ');
                }
                parts.extend_from_slice(b"FLAGS ");
                write_flags(&mut parts, &folder.flags(i), m.recent);
            }
            if let Some(modseq) = modseq {
                if !parts.is_empty() {
                    parts.push(b' ');
                }
                wire::push_fmt(&mut parts, format_args!("MODSEQ ({modseq})"));
            }
            out.extend_from_slice(&parts);
            out.extend_from_slice(b")\r\n");
        }
        if let Some(log) = &mut log {
            log.flush();
        }
        Ok((out, modified))
    })
    .await;
    match done {
        Some(Ok((out, modified))) => {
            conn.out.extend_from_slice(&out);
            crate::imapd::commands::report_changes(conn, false).await;
            if modified.is_empty() {
                conn.ok(tag, "STORE completed");
            } else {
                let set = sequence::format(&sequence::ranges_of(&modified));
                wire::status(
                    &mut conn.out,
                    Some(tag),
                    wire::Status::Ok,
                    Some(&format!("MODIFIED {set}")),
                    "Conditional STORE failed",
                );
            }
        }
        Some(Err(None)) => conn.no(tag, Some("READ-ONLY"), "Folder is read-only"),
        Some(Err(Some(StoreError::BadName(why)))) => conn.bad(tag, &why),
        Some(Err(Some(StoreError::BadFlag(why)))) => conn.bad(tag, &why),
        Some(Err(Some(e))) => store_error(conn, tag, "STORE", &e),
        None => conn.bad(tag, "No folder selected"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_lists() {
        let flags = Flags {
            system: Flags::SEEN | Flags::DELETED | Flags::FORWARDED,
            keywords: vec!["$Junk".into()],
        };
        let mut out = Vec::new();
        write_flags(&mut out, &flags, true);
        assert_eq!(out, b"(\\Seen \\Deleted $Forwarded $Junk \\Recent)");
        let mut out = Vec::new();
        write_flags(&mut out, &Flags::default(), false);
        assert_eq!(out, b"()");
    }
}
