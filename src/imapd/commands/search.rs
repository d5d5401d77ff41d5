//! SEARCH and UID SEARCH (RFC 3501 §6.4.4). Keys about flags, sizes, dates, numbers and UIDs
//! are answered from the folder's view; keys that look into the message (headers, body,
//! text, the Date: field) by `mailbox::summary::matches`, reading each message at most once,
//! only when such a key is asked, and only its header section unless a key looks into the
//! body. Keys on Subject, From, To, Cc and Bcc are answered from the texts `tambo-cache`
//! keeps with the message's summary when it has one (`summary::matches_texts`: the same
//! answers), without opening the message.

use crate::imapd::commands::condstore::{self, modseq_of};
use crate::imapd::commands::{Selected, answer_line, sequence, with_folder};
use crate::imapd::conn::Conn;
use crate::imapd::wire;
use crate::mailbox::{Flags, Folder, StoreError};
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::core::Charset;
use imap_codec::imap_types::search::SearchKey;
use std::fs::File;
use std::io::Read;

pub async fn search(
    conn: &mut Conn,
    tag: &str,
    charset: Option<&Charset<'_>>,
    criteria: &[SearchKey<'_>],
    uid: bool,
) {
    if charset.is_some_and(|c| charset_refused(conn, tag, c)) {
        return;
    }
    let key = all_of(criteria);
    if uses_modseq(&key) {
        condstore::turn_on(conn);
    }
    let found = with_folder(conn, move |sel: &mut Selected, _| {
        let (hits, top) = matching(sel, &key)?;
        let mut line = b"* SEARCH".to_vec();
        for &i in &hits {
            let number = match uid {
                true => sel.folder.message(i).uid,
                false => i as u32 + 1,
            };
            wire::push_fmt(&mut line, format_args!(" {number}"));
        }
        // RFC 7162 §3.1.5: the highest modseq of the messages found.
        if let Some(top) = top.filter(|_| !hits.is_empty()) {
            wire::push_fmt(&mut line, format_args!(" (MODSEQ {top})"));
        }
        line.extend_from_slice(b"\r\n");
        Ok::<_, StoreError>(line)
    })
    .await;
    answer_line(conn, tag, "SEARCH", found).await;
}

/// RFC 3501 §6.4.4 and RFC 5256 §3: US-ASCII and UTF-8 must be supported, and are all we
/// take (UTF-8 is what clients send). True when `charset` is another, and answered NO.
pub fn charset_refused(conn: &mut Conn, tag: &str, charset: &Charset<'_>) -> bool {
    let name = match charset {
        Charset::Atom(a) => a.inner().to_string(),
        Charset::Quoted(q) => q.inner().to_string(),
    };
    let ok = name.eq_ignore_ascii_case("UTF-8") || name.eq_ignore_ascii_case("US-ASCII");
    if !ok {
        conn.no(
            tag,
            Some("BADCHARSET (US-ASCII UTF-8)"),
            "Unsupported charset",
        );
    }
    !ok
}

/// One key for all of `criteria` (a SEARCH, SORT or THREAD's list).
pub fn all_of(criteria: &[SearchKey<'_>]) -> SearchKey<'static> {
    SearchKey::And(
        criteria
            .iter()
            .cloned()
            .map(SearchKey::into_static)
            .collect::<Vec<_>>()
            .try_into()
            // Not empty: the grammar asks for one key at least; `ALL` otherwise.
            .unwrap_or_else(|_| vec![SearchKey::All].try_into().expect("one key")),
    )
}

/// The indexes of the messages of the selected folder that match `key` (a SEARCH, or the
/// criteria of SORT and THREAD); with a MODSEQ key (RFC 7162 §3.1.5), the highest modseq
/// among them.
pub fn matching(
    sel: &mut Selected,
    key: &SearchKey<'_>,
) -> Result<(Vec<usize>, Option<u64>), StoreError> {
    let modseqs = match uses_modseq(key) {
        true => Some(sel.modseqs()?),
        false => None,
    };
    let mut log = modseqs.as_ref().map(|m| m.lock());
    if needs_dates(key) {
        sel.folder.learn_dates();
    }
    let folder = &sel.folder;
    let whole = needs_body(key);
    let (mut hits, mut top) = (Vec::new(), None::<u64>);
    for i in 0..folder.len() {
        let modseq = log.as_deref_mut().map(|l| modseq_of(l, folder.message(i)));
        let mut message = Message {
            data: None,
            texts: None,
            whole,
            modseq,
        };
        if eval(key, folder, i, &mut message)? {
            hits.push(i);
            top = top.max(modseq);
        }
    }
    if let Some(log) = &mut log {
        log.flush();
    }
    Ok((hits, top))
}

/// The octets of the message being looked at, read at most once: all of them when a key
/// looks into the body, else its header section only (with what came in the same read).
struct Message {
    data: Option<Vec<u8>>,
    /// The search texts from the cache: `Some(None)` when it has none for this message.
    texts: Option<Option<Vec<u8>>>,
    whole: bool,
    /// Its modseq, when a key asks.
    modseq: Option<u64>,
}

/// Whether some key of `key` is MODSEQ.
fn uses_modseq(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(uses_modseq),
        SearchKey::Or(a, b) => uses_modseq(a) || uses_modseq(b),
        SearchKey::Not(k) => uses_modseq(k),
        SearchKey::ModSequence { .. } => true,
        _ => false,
    }
}

/// Whether some key of `key` looks past the header section (BODY, TEXT).
fn needs_body(key: &SearchKey<'_>) -> bool {
    any_key(key, &|k| {
        matches!(k, SearchKey::Body(_) | SearchKey::Text(_))
    })
}

/// Whether some key of `key` compares INTERNALDATE (BEFORE, ON, SINCE): the dates not
/// known yet are looked up first (see `Folder::internaldate`).
fn needs_dates(key: &SearchKey<'_>) -> bool {
    any_key(key, &|k| {
        matches!(
            k,
            SearchKey::Before(_) | SearchKey::On(_) | SearchKey::Since(_)
        )
    })
}

fn any_key(key: &SearchKey<'_>, wanted: &dyn Fn(&SearchKey<'_>) -> bool) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(|k| any_key(k, wanted)),
        SearchKey::Or(a, b) => any_key(a, wanted) || any_key(b, wanted),
        SearchKey::Not(k) => any_key(k, wanted),
        k => wanted(k),
    }
}

/// Reads until the empty line that ends the header section (or the end of the file): a
/// header key need not copy the body, most of a message's octets.
fn read_header(file: &mut File, data: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 8192];
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        // The empty line may straddle two reads.
        let from = data.len().saturating_sub(2);
        data.extend_from_slice(&chunk[..n]);
        let tail = &data[from..];
        if memchr::memmem::find(tail, b"\n\n").is_some()
            || memchr::memmem::find(tail, b"\n\r\n").is_some()
        {
            return Ok(());
        }
    }
}

/// Whether message `i` matches `key`.
fn eval(
    key: &SearchKey<'_>,
    folder: &Folder,
    i: usize,
    message: &mut Message,
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
        SearchKey::Before(d) => day(folder.date_of(m)) < *d.as_ref(),
        SearchKey::On(d) => day(folder.date_of(m)) == *d.as_ref(),
        SearchKey::Since(d) => day(folder.date_of(m)) >= *d.as_ref(),
        // RFC 7162 §3.1.5: modseq at least the value (per-flag entries are not kept: the
        // message's modseq stands for each, as RFC 7162 §3.1.5 allows).
        SearchKey::ModSequence { modseq, .. } => message.modseq.is_some_and(|m| m >= *modseq),
        // Every other key looks into the message, or into what the cache kept of it.
        other => {
            let texts = message.texts.get_or_insert_with(|| folder.search_texts(i));
            if let Some(found) = texts
                .as_deref()
                .and_then(|t| crate::mailbox::summary::matches_texts(t, other))
            {
                return Ok(found);
            }
            if message.data.is_none() {
                let mut data = Vec::new();
                let mut file = folder.open_file(i)?;
                let read = if message.whole {
                    file.read_to_end(&mut data).map(|_| ())
                } else {
                    read_header(&mut file, &mut data)
                };
                read.map_err(|source| StoreError::Io {
                    path: std::path::PathBuf::from(format!("message {}", m.uid)),
                    source,
                })?;
                message.data = Some(data);
            }
            let data = message.data.as_deref().unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};

    fn header_read_from(content: &[u8]) -> Vec<u8> {
        let mut file = tempfile::tempfile().expect("temp file");
        file.write_all(content).expect("write");
        file.rewind().expect("rewind");
        let mut data = Vec::new();
        read_header(&mut file, &mut data).expect("read");
        data
    }

    #[test]
    fn reads_the_header_section_not_the_whole_body() {
        let head = format!("Subject: {}\nFrom: a@b\n\n", "x".repeat(10_000));
        let message = format!("{head}{}", "body line\n".repeat(5_000));
        let data = header_read_from(message.as_bytes());
        assert!(data.starts_with(head.as_bytes()));
        assert!(data.len() < message.len() / 2, "read {} octets", data.len());
    }

    #[test]
    fn finds_an_empty_line_split_between_two_reads() {
        // The first read ends just after the header's last LF; the empty line comes next.
        for eol in ["\n", "\r\n"] {
            let head = format!("X: {}{eol}", "y".repeat(8192 - 3 - eol.len()));
            assert_eq!(head.len(), 8192);
            let message = format!("{head}{eol}{}", "b".repeat(40_000));
            let data = header_read_from(message.as_bytes());
            assert!(data.len() < 20_000, "{eol:?}: read {} octets", data.len());
            assert!(data.starts_with(format!("{head}{eol}").as_bytes()));
        }
    }

    #[test]
    fn a_message_without_an_empty_line_is_read_whole() {
        let message = "Subject: only a header\n".repeat(1_000);
        assert_eq!(header_read_from(message.as_bytes()), message.as_bytes());
    }

    #[test]
    fn only_body_keys_need_the_body() {
        let subject = SearchKey::Subject("x".try_into().expect("astring"));
        let body = SearchKey::Body("x".try_into().expect("astring"));
        assert!(!needs_body(&subject));
        assert!(needs_body(&body));
        assert!(needs_body(&SearchKey::Not(Box::new(body.clone()))));
        assert!(needs_body(&SearchKey::Or(
            Box::new(subject.clone()),
            Box::new(body)
        )));
        assert!(!needs_body(&SearchKey::Not(Box::new(subject))));
    }

    #[test]
    fn only_date_keys_need_the_dates() {
        let subject = SearchKey::Subject("x".try_into().expect("astring"));
        let day = chrono::NaiveDate::from_ymd_opt(2026, 12, 7).expect("a date");
        let since = SearchKey::Since(day.try_into().expect("a date"));
        assert!(!needs_dates(&subject));
        assert!(needs_dates(&since));
        assert!(needs_dates(&SearchKey::Or(
            Box::new(subject.clone()),
            Box::new(SearchKey::Not(Box::new(since)))
        )));
        assert!(!needs_dates(&SearchKey::Not(Box::new(subject))));
    }
}
