//! Folder commands of the authenticated state: CREATE, DELETE, RENAME (RFC 3501 §6.3.3-5),
//! SUBSCRIBE/UNSUBSCRIBE (§6.3.6-7), LIST/LSUB (§6.3.8-9, with RFC 6154 SPECIAL-USE and RFC
//! 3348 CHILDREN attributes), STATUS (§6.3.10), NAMESPACE (RFC 2342), GETQUOTAROOT and
//! GETQUOTA (RFC 9208). The hierarchy delimiter is `.` (Maildir++).

use crate::imapd::commands::{folder_name, store_error, user_store};
use crate::imapd::conn::Conn;
use crate::imapd::wire;
use crate::mailbox::{FolderInfo, StoreError};
use imap_codec::imap_types::core::AString;
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_codec::imap_types::status::StatusDataItemName;

/// Runs a store operation on a blocking thread; None when not logged in.
async fn on_store<T: Send + 'static>(
    conn: &Conn,
    work: impl FnOnce(&crate::mailbox::UserStore) -> T + Send + 'static,
) -> Option<T> {
    let store = user_store(conn)?;
    Some(smol::unblock(move || work(&store)).await)
}

pub async fn create(conn: &mut Conn, tag: &str, mailbox: &Mailbox<'_>) {
    let name = match folder_name(mailbox) {
        Ok(n) => n,
        Err(e) => return store_error(conn, tag, "CREATE", &e),
    };
    match on_store(conn, move |s| s.create(&name)).await {
        Some(Ok(())) => conn.ok(tag, "CREATE completed"),
        Some(Err(e)) => store_error(conn, tag, "CREATE", &e),
        None => conn.bad(tag, "Log in first"),
    }
}

pub async fn delete(conn: &mut Conn, tag: &str, mailbox: &Mailbox<'_>) {
    let name = match folder_name(mailbox) {
        Ok(n) => n,
        Err(e) => return store_error(conn, tag, "DELETE", &e),
    };
    if name.is_inbox() {
        return conn.no(tag, Some("CANNOT"), "INBOX cannot be deleted");
    }
    match on_store(conn, move |s| s.delete(&name)).await {
        Some(Ok(())) => conn.ok(tag, "DELETE completed"),
        Some(Err(e)) => store_error(conn, tag, "DELETE", &e),
        None => conn.bad(tag, "Log in first"),
    }
}

pub async fn rename(conn: &mut Conn, tag: &str, from: &Mailbox<'_>, to: &Mailbox<'_>) {
    let names = folder_name(from).and_then(|f| folder_name(to).map(|t| (f, t)));
    let (from, to) = match names {
        Ok(n) => n,
        Err(e) => return store_error(conn, tag, "RENAME", &e),
    };
    match on_store(conn, move |s| s.rename(&from, &to)).await {
        Some(Ok(())) => conn.ok(tag, "RENAME completed"),
        Some(Err(e)) => store_error(conn, tag, "RENAME", &e),
        None => conn.bad(tag, "Log in first"),
    }
}

pub async fn subscribe(conn: &mut Conn, tag: &str, mailbox: &Mailbox<'_>, on: bool) {
    let name = match folder_name(mailbox) {
        Ok(n) => n,
        Err(e) => return store_error(conn, tag, "SUBSCRIBE", &e),
    };
    match on_store(conn, move |s| s.subscribe(&name, on)).await {
        Some(Ok(())) => conn.ok(
            tag,
            if on {
                "SUBSCRIBE completed"
            } else {
                "UNSUBSCRIBE completed"
            },
        ),
        Some(Err(e)) => store_error(conn, tag, "SUBSCRIBE", &e),
        None => conn.bad(tag, "Log in first"),
    }
}

/// LIST or LSUB.
pub async fn list(
    conn: &mut Conn,
    tag: &str,
    reference: &Mailbox<'_>,
    pattern: &ListMailbox<'_>,
    lsub: bool,
) {
    let what = if lsub { "LSUB" } else { "LIST" };
    let reference = match reference {
        Mailbox::Inbox => "INBOX".to_string(),
        Mailbox::Other(o) => String::from_utf8_lossy(o.as_ref()).into_owned(),
    };
    let pattern = match pattern {
        ListMailbox::Token(t) => String::from_utf8_lossy(t.as_ref()).into_owned(),
        ListMailbox::String(s) => String::from_utf8_lossy(s.as_ref()).into_owned(),
    };
    if pattern.is_empty() && !lsub {
        // RFC 3501 §6.3.8: the delimiter and the root.
        wire::untagged(&mut conn.out, "LIST (\\Noselect) \".\" \"\"");
        return conn.ok(tag, "LIST completed");
    }
    let pattern = format!("{reference}{pattern}");
    let folders = match on_store(conn, |s| s.list()).await {
        Some(Ok(f)) => f,
        Some(Err(e)) => return store_error(conn, tag, what, &e),
        None => return conn.bad(tag, "Log in first"),
    };
    for folder in &folders {
        if lsub && !folder.subscribed {
            continue;
        }
        if !matches(&pattern, folder.name.as_str()) {
            continue;
        }
        let mut line = Vec::new();
        wire::push_fmt(&mut line, format_args!("* {what} ("));
        line.extend_from_slice(attributes(folder, lsub).as_bytes());
        line.extend_from_slice(b") \".\" ");
        wire::string(&mut line, folder.name.as_str().as_bytes());
        line.extend_from_slice(b"\r\n");
        conn.out.extend_from_slice(&line);
    }
    conn.ok(tag, &format!("{what} completed"));
}

/// `\HasChildren` / `\HasNoChildren` (RFC 3348) and the special use (RFC 6154 §2).
fn attributes(folder: &FolderInfo, lsub: bool) -> String {
    let mut attrs = Vec::new();
    if !lsub {
        attrs.push(if folder.has_children {
            "\\HasChildren"
        } else {
            "\\HasNoChildren"
        });
    }
    if folder.noselect {
        attrs.push("\\Noselect");
    }
    if let Some(special) = folder.special {
        attrs.push(special.attribute());
    }
    attrs.join(" ")
}

/// LIST wildcards (RFC 3501 §6.3.8): `*` matches anything, `%` anything but the delimiter.
/// INBOX matches case-insensitively.
pub fn matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some((b'%', rest)) => (0..=n.len())
                .take_while(|&i| i == 0 || n[i - 1] != b'.')
                .any(|i| go(rest, &n[i..])),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    let upper_inbox = |s: &str| -> String {
        match s.get(..5) {
            Some(head) if head.eq_ignore_ascii_case("INBOX") => format!("INBOX{}", &s[5..]),
            _ => s.to_string(),
        }
    };
    go(
        upper_inbox(pattern).as_bytes(),
        upper_inbox(name).as_bytes(),
    )
}

pub async fn status(
    conn: &mut Conn,
    tag: &str,
    mailbox: &Mailbox<'_>,
    items: &[StatusDataItemName],
) {
    let name = match folder_name(mailbox) {
        Ok(n) => n,
        Err(e) => return store_error(conn, tag, "STATUS", &e),
    };
    let shown = name.clone();
    let modseq = items.contains(&StatusDataItemName::HighestModSeq);
    if modseq {
        crate::imapd::commands::condstore::turn_on(conn);
    }
    let status = on_store(conn, move |s| {
        let status = s.status(&name)?;
        let highest = match modseq {
            true => Some(s.highest_modseq(&name)?),
            false => None,
        };
        Ok::<_, StoreError>((status, highest))
    });
    let (status, highest) = match status.await {
        Some(Ok(st)) => st,
        Some(Err(e)) => return store_error(conn, tag, "STATUS", &e),
        None => return conn.bad(tag, "Log in first"),
    };
    let mut parts = Vec::new();
    for item in items {
        parts.push(match item {
            StatusDataItemName::Messages => format!("MESSAGES {}", status.messages),
            StatusDataItemName::Recent => format!("RECENT {}", status.recent),
            StatusDataItemName::UidNext => format!("UIDNEXT {}", status.uidnext),
            StatusDataItemName::UidValidity => format!("UIDVALIDITY {}", status.uidvalidity),
            StatusDataItemName::Unseen => format!("UNSEEN {}", status.unseen),
            StatusDataItemName::HighestModSeq => match highest {
                Some(h) => format!("HIGHESTMODSEQ {h}"),
                None => continue,
            },
            _ => continue,
        });
    }
    let mut line = b"* STATUS ".to_vec();
    wire::string(&mut line, shown.as_str().as_bytes());
    wire::push_fmt(&mut line, format_args!(" ({})\r\n", parts.join(" ")));
    conn.out.extend_from_slice(&line);
    conn.ok(tag, "STATUS completed");
}

/// RFC 2342: one personal namespace, no prefix, delimiter `.`.
pub fn namespace(conn: &mut Conn, tag: &str) {
    wire::untagged(&mut conn.out, "NAMESPACE ((\"\" \".\")) NIL NIL");
    conn.ok(tag, "NAMESPACE completed");
}

/// RFC 9208 §4.3.2: the quota root of every folder is the user's, `""`, when a quota is set.
pub async fn quota_root(conn: &mut Conn, tag: &str, mailbox: &Mailbox<'_>) {
    let name = match folder_name(mailbox) {
        Ok(n) => n,
        Err(e) => return store_error(conn, tag, "GETQUOTAROOT", &e),
    };
    let quota = match on_store(conn, |s| s.quota()).await {
        Some(Ok(q)) => q,
        Some(Err(e)) => return store_error(conn, tag, "GETQUOTAROOT", &e),
        None => return conn.bad(tag, "Log in first"),
    };
    let mut line = b"* QUOTAROOT ".to_vec();
    wire::string(&mut line, name.as_str().as_bytes());
    if quota.1.is_some() {
        line.extend_from_slice(b" \"\"");
    }
    line.extend_from_slice(b"\r\n");
    conn.out.extend_from_slice(&line);
    if let (used, Some(limit)) = quota {
        quota_line(&mut conn.out, used, limit);
    }
    conn.ok(tag, "GETQUOTAROOT completed");
}

pub async fn quota(conn: &mut Conn, tag: &str, root: &AString<'_>) {
    if !root.as_ref().is_empty() {
        return conn.no(tag, Some("NONEXISTENT"), "No such quota root");
    }
    match on_store(conn, |s| s.quota()).await {
        Some(Ok((used, Some(limit)))) => {
            quota_line(&mut conn.out, used, limit);
            conn.ok(tag, "GETQUOTA completed");
        }
        Some(Ok((_, None))) => conn.no(tag, Some("NONEXISTENT"), "No quota"),
        Some(Err(e)) => store_error(conn, tag, "GETQUOTA", &e),
        None => conn.bad(tag, "Log in first"),
    }
}

/// STORAGE is in units of 1024 octets (RFC 9208 §5.1).
fn quota_line(out: &mut Vec<u8>, used: u64, limit: u64) {
    wire::push_fmt(
        out,
        format_args!(
            "* QUOTA \"\" (STORAGE {} {})\r\n",
            used.div_ceil(1024),
            limit / 1024
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_wildcards() {
        let cases = [
            ("*", "INBOX", true),
            ("*", "Archive.2024", true),
            ("%", "Archive", true),
            ("%", "Archive.2024", false),
            ("Archive.%", "Archive.2024", true),
            ("Archive.%", "Archive.2024.Jan", false),
            ("Archive.*", "Archive.2024.Jan", true),
            ("inbox", "INBOX", true),
            ("Inbox*", "INBOX", true),
            ("Sent", "Sent", true),
            ("Sent", "sent", false),
            ("S%t", "Sent", true),
            ("%.%", "A.B", true),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(matches(pattern, name), want, "{pattern} {name}");
        }
    }
}
