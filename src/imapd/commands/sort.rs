//! SORT and UID SORT (RFC 5256 §3): the messages a search finds, ordered by the keys
//! `tambo-cache` keeps (`summary::SortKeys`); a message without them has its summary made
//! once, which puts them in the cache.

use crate::imapd::commands::{Selected, answer_line, search, with_folder};
use crate::imapd::conn::Conn;
use crate::imapd::wire;
use crate::mailbox::StoreError;
use crate::mailbox::summary::{self, SortKeys};
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::core::Charset;
use imap_codec::imap_types::extensions::sort::{SortCriterion, SortKey};
use imap_codec::imap_types::search::SearchKey;
use std::cmp::Ordering;

pub async fn sort(
    conn: &mut Conn,
    tag: &str,
    criteria: &[SortCriterion],
    charset: &Charset<'_>,
    search_criteria: &[SearchKey<'_>],
    uid: bool,
) {
    if search::charset_refused(conn, tag, charset) {
        return;
    }
    let key = search::all_of(search_criteria);
    let criteria = criteria.to_vec();
    let done = with_folder(conn, move |sel: &mut Selected, _| {
        let key = key.into_static();
        let (hits, _) = search::matching(sel, &key)?;
        let keys = keys_of(sel, &hits)?;
        let mut order: Vec<usize> = (0..hits.len()).collect();
        let folder = &sel.folder;
        order.sort_by(|&a, &b| {
            let (ma, mb) = (folder.message(hits[a]), folder.message(hits[b]));
            criteria
                .iter()
                .map(|c| {
                    let o = compare(&c.key, (ma, &keys[a]), (mb, &keys[b]));
                    if c.reverse { o.reverse() } else { o }
                })
                .find(|o| o.is_ne())
                // RFC 5256 §3: ties in the order of the folder.
                .unwrap_or_else(|| hits[a].cmp(&hits[b]))
        });
        let mut line = b"* SORT".to_vec();
        for n in order {
            let i = hits[n];
            let number = if uid {
                folder.message(i).uid
            } else {
                i as u32 + 1
            };
            wire::push_fmt(&mut line, format_args!(" {number}"));
        }
        line.extend_from_slice(b"\r\n");
        Ok::<_, StoreError>(line)
    })
    .await;
    answer_line(conn, tag, "SORT", done).await;
}

/// The SORT and THREAD keys of the messages at `indexes`: from the cache, else from the
/// summary made now (which the cache then keeps), else from the file. Their INTERNALDATEs
/// are looked up too (ARRIVAL, and DATE without a Date: field, compare them).
pub fn keys_of(sel: &mut Selected, indexes: &[usize]) -> Result<Vec<SortKeys>, StoreError> {
    let mut out = Vec::with_capacity(indexes.len());
    for &i in indexes {
        sel.folder.internaldate(i);
        let texts = match sel.folder.search_texts(i) {
            Some(texts) => texts,
            None => {
                sel.folder.summary(i)?;
                match sel.folder.search_texts(i) {
                    Some(texts) => texts,
                    None => summary::sort_texts(&sel.folder.read_message(i)?),
                }
            }
        };
        out.push(summary::read_sort_keys(&texts));
    }
    Ok(out)
}

/// One criterion on two messages (RFC 5256 §3; strings with i;ascii-casemap).
fn compare(
    key: &SortKey,
    (ma, ka): (&crate::mailbox::Message, &SortKeys),
    (mb, kb): (&crate::mailbox::Message, &SortKeys),
) -> Ordering {
    let text = |a: &str, b: &str| a.to_ascii_uppercase().cmp(&b.to_ascii_uppercase());
    match key {
        SortKey::Arrival => ma.date.cmp(&mb.date),
        // The sent date, else INTERNALDATE (RFC 5256 §2.2).
        SortKey::Date => ka.date.unwrap_or(ma.date).cmp(&kb.date.unwrap_or(mb.date)),
        SortKey::Size => ma.size.cmp(&mb.size),
        SortKey::Subject => ka.subject.cmp(&kb.subject),
        SortKey::From | SortKey::DisplayFrom => text(&ka.from, &kb.from),
        SortKey::To | SortKey::DisplayTo => text(&ka.to, &kb.to),
        SortKey::Cc => text(&ka.cc, &kb.cc),
    }
}
