//! SEARCH and UID SEARCH (RFC 3501 §6.4.4). Keys about flags, sizes, dates, numbers and UIDs
//! are answered from the folder's view; keys that look into the message (headers, body,
//! text, the Date: field) by `mailbox::summary::matches`, reading each message at most once,
//! and only when such a key is asked.

use crate::imapd::commands::{Selected, report_changes, sequence, store_error, with_folder};
use crate::imapd::conn::Conn;
use crate::imapd::wire;
use crate::mailbox::{Flags, Folder, StoreError};
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::core::Charset;
use imap_codec::imap_types::search::SearchKey;
use std::io::Read;

pub async fn search(
    conn: &mut Conn,
    tag: &str,
    charset: Option<&Charset<'_>>,
    criteria: &[SearchKey<'_>],
    uid: bool,
) {
    if let Some(charset) = charset {
        let name = match charset {
            Charset::Atom(a) => a.inner().to_string(),
            Charset::Quoted(q) => q.inner().to_string(),
        };
        // RFC 3501 §6.4.4: US-ASCII must be supported; UTF-8 is what clients send.
        if !name.eq_ignore_ascii_case("UTF-8") && !name.eq_ignore_ascii_case("US-ASCII") {
            return conn.no(
                tag,
                Some("BADCHARSET (US-ASCII UTF-8)"),
                "Unsupported charset",
            );
        }
    }
    let key = SearchKey::And(
        criteria
            .iter()
            .cloned()
            .map(SearchKey::into_static)
            .collect::<Vec<_>>()
            .try_into()
            .unwrap_or_else(|_| vec![SearchKey::All].try_into().expect("one key")),
    );
    let found = with_folder(conn, move |sel: &mut Selected, _| {
        let folder = &sel.folder;
        let mut hits = Vec::new();
        for i in 0..folder.len() {
            let mut message = None;
            if eval(&key, folder, i, &mut message)? {
                hits.push(if uid {
                    folder.message(i).uid
                } else {
                    i as u32 + 1
                });
            }
        }
        Ok::<_, StoreError>(hits)
    })
    .await;
    match found {
        Some(Ok(hits)) => {
            let mut line = b"* SEARCH".to_vec();
            for n in hits {
                wire::push_fmt(&mut line, format_args!(" {n}"));
            }
            line.extend_from_slice(b"\r\n");
            conn.out.extend_from_slice(&line);
            // RFC 3501 §7.4.1: no EXPUNGE responses during SEARCH.
            report_changes(conn, false).await;
            conn.ok(tag, "SEARCH completed");
        }
        Some(Err(e)) => store_error(conn, tag, "SEARCH", &e),
        None => conn.bad(tag, "No folder selected"),
    }
}

/// Whether message `i` matches `key`. `message` holds the message's octets once read.
fn eval(
    key: &SearchKey<'_>,
    folder: &Folder,
    i: usize,
    message: &mut Option<Vec<u8>>,
) -> Result<bool, StoreError> {
    let m = folder.message(i);
    let flag = |bit: u8| m.system & bit != 0;
    let keyword = |k: &str| {
        if k.eq_ignore_ascii_case(Flags::FORWARDED_KEYWORD) {
            return flag(Flags::FORWARDED);
        }
        folder
            .flags(i)
            .keywords
            .iter()
            .any(|x| x.eq_ignore_ascii_case(k))
    };
    let day = |secs: i64| date_of(secs);
    Ok(match key {
        SearchKey::And(keys) => {
            for k in keys.as_ref() {
                if !eval(k, folder, i, message)? {
                    return Ok(false);
                }
            }
            true
        }
        SearchKey::Or(a, b) => eval(a, folder, i, message)? || eval(b, folder, i, message)?,
        SearchKey::Not(k) => !eval(k, folder, i, message)?,
        SearchKey::All => true,
        SearchKey::SequenceSet(set) => sequence::contains(set, i as u32 + 1, folder.len() as u32),
        SearchKey::Uid(set) => {
            let last = folder.message(folder.len() - 1).uid;
            sequence::contains(set, m.uid, last)
        }
        SearchKey::Answered => flag(Flags::ANSWERED),
        SearchKey::Unanswered => !flag(Flags::ANSWERED),
        SearchKey::Deleted => flag(Flags::DELETED),
        SearchKey::Undeleted => !flag(Flags::DELETED),
        SearchKey::Draft => flag(Flags::DRAFT),
        SearchKey::Undraft => !flag(Flags::DRAFT),
        SearchKey::Flagged => flag(Flags::FLAGGED),
        SearchKey::Unflagged => !flag(Flags::FLAGGED),
        SearchKey::Seen => flag(Flags::SEEN),
        SearchKey::Unseen => !flag(Flags::SEEN),
        SearchKey::Recent => m.recent,
        SearchKey::Old => !m.recent,
        SearchKey::New => m.recent && !flag(Flags::SEEN),
        SearchKey::Keyword(k) => keyword(k.inner()),
        SearchKey::Unkeyword(k) => !keyword(k.inner()),
        SearchKey::Larger(n) => m.size > u64::from(*n),
        SearchKey::Smaller(n) => m.size < u64::from(*n),
        SearchKey::Before(d) => day(m.internaldate) < *d.as_ref(),
        SearchKey::On(d) => day(m.internaldate) == *d.as_ref(),
        SearchKey::Since(d) => day(m.internaldate) >= *d.as_ref(),
        // Every other key looks into the message.
        other => {
            if message.is_none() {
                let mut data = Vec::new();
                folder
                    .open_file(i)?
                    .read_to_end(&mut data)
                    .map_err(|source| StoreError::Io {
                        path: std::path::PathBuf::from(format!("message {}", m.uid)),
                        source,
                    })?;
                *message = Some(data);
            }
            let data = message.as_deref().unwrap_or_default();
            crate::mailbox::summary::matches(data, other).unwrap_or(false)
        }
    })
}

/// The date of INTERNALDATE, in UTC (RFC 3501 §6.4.4: "disregarding time and timezone").
fn date_of(secs: i64) -> chrono::NaiveDate {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.date_naive())
        .unwrap_or_default()
}
