//! COPY (RFC 3501 §6.4.7) and MOVE (RFC 6851), with UIDPLUS's COPYUID (RFC 4315 §3).

use crate::imapd::commands::{
    Selected, folder_name, report_changes, sequence, store_error, with_folder,
};
use crate::imapd::conn::Conn;
use crate::imapd::wire;
use crate::mailbox::StoreError;
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::sequence::SequenceSet;

pub async fn copy(
    conn: &mut Conn,
    tag: &str,
    set: &SequenceSet,
    mailbox: &Mailbox<'_>,
    uid: bool,
    moving: bool,
) {
    let what = if moving { "MOVE" } else { "COPY" };
    let dest = match folder_name(mailbox) {
        Ok(n) => n,
        Err(e) => return store_error(conn, tag, what, &e),
    };
    let set = set.clone().into_static();
    let (condstore, qresync) = crate::imapd::commands::condstore::modes(conn);
    let done = with_folder(conn, move |sel: &mut Selected, store| {
        let folder = &mut sel.folder;
        if !uid && sequence::out_of_range(&set, folder.len()) {
            return Err(StoreError::BadName("invalid message number".into()));
        }
        if moving && sel.read_only {
            return Err(StoreError::ReadOnly);
        }
        let picked = sequence::indexes(&set, folder.len(), uid, |i| folder.message(i).uid);
        if picked.is_empty() {
            return Ok((None, Vec::new(), Vec::new()));
        }
        if moving {
            let (uidvalidity, pairs, removed) = folder.move_to(&picked, store, &dest)?;
            let mut gone: Vec<u32> = pairs.iter().map(|&(from, _)| from).collect();
            gone.sort_unstable();
            if condstore || sel.modseqs.is_some() {
                let modseqs = sel.modseqs()?;
                let mut log = modseqs.lock();
                log.expunged(&gone);
                log.flush();
            }
            let code = copyuid(uidvalidity, &pairs);
            return Ok((Some(code), removed, gone));
        }
        let (uidvalidity, pairs) = folder.copy(&picked, store, &dest)?;
        Ok((Some(copyuid(uidvalidity, &pairs)), Vec::new(), Vec::new()))
    })
    .await;
    match done {
        Some(Ok((code, removed, gone))) => {
            if moving {
                // RFC 6851 §4.3: COPYUID in an untagged OK before the EXPUNGEs.
                if let Some(code) = &code {
                    wire::status(
                        &mut conn.out,
                        None,
                        wire::Status::Ok,
                        Some(code),
                        "Moved UIDs",
                    );
                }
                if qresync {
                    // RFC 7162 §3.2.10: VANISHED instead of EXPUNGE.
                    let gone = sequence::ranges_of(&gone);
                    crate::imapd::commands::condstore::write_vanished(&mut conn.out, &gone, false);
                } else {
                    for i in removed {
                        wire::push_fmt(&mut conn.out, format_args!("* {} EXPUNGE\r\n", i + 1));
                    }
                }
                crate::imapd::commands::select::note_exists(conn);
                report_changes(conn, true).await;
                conn.ok(tag, "MOVE completed");
            } else {
                report_changes(conn, false).await;
                match code {
                    Some(code) => wire::status(
                        &mut conn.out,
                        Some(tag),
                        wire::Status::Ok,
                        Some(&code),
                        "COPY completed",
                    ),
                    None => conn.ok(tag, "COPY completed"),
                }
            }
        }
        Some(Err(StoreError::NoSuchFolder)) => conn.no(tag, Some("TRYCREATE"), "No such folder"),
        Some(Err(StoreError::BadName(why))) => conn.bad(tag, &why),
        Some(Err(StoreError::ReadOnly)) => conn.no(tag, Some("READ-ONLY"), "Folder is read-only"),
        Some(Err(e)) => store_error(conn, tag, what, &e),
        None => conn.bad(tag, "No folder selected"),
    }
}

/// `COPYUID <uidvalidity> <source uids> <destination uids>`, both sets in the same order
/// (RFC 4315 §3), compressed into ranges.
fn copyuid(uidvalidity: u32, pairs: &[(u32, u32)]) -> String {
    let src: Vec<u32> = pairs.iter().map(|p| p.0).collect();
    let dst: Vec<u32> = pairs.iter().map(|p| p.1).collect();
    format!("COPYUID {uidvalidity} {} {}", ranges(&src), ranges(&dst))
}

/// `1:3,7,9:10` for consecutive runs, keeping the order given.
pub fn ranges(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end + 1 {
            i += 1;
            end = uids[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_ranges() {
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(ranges(&[5]), "5");
        assert_eq!(copyuid(9, &[(4, 20), (5, 21)]), "COPYUID 9 4:5 20:21");
    }
}
