//! What SORT and THREAD (RFC 5256) compare, taken from a message's header once and kept in
//! `tambo-cache` after the search texts (same framing: letter, length, space, text, LF;
//! lower-case letters, which the search keys never use): the sent date, the mailbox of the
//! first From, To and Cc address, the base subject, Message-ID, In-Reply-To, References.

use super::header::{self, Field};
use super::search::decode_words;
use mail_parser::{HeaderValue, parsers::MessageStream};

/// The keys of one message, read back from the cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SortKeys {
    /// The Date: field in seconds since the epoch (UTC), when it parses.
    pub date: Option<i64>,
    pub from: String,
    pub to: String,
    pub cc: String,
    /// RFC 5256 §2.1.
    pub subject: String,
    /// The subject had `Re:`, `Fwd:` or `[fwd: ...]` (RFC 5256 §2.1: a reply).
    pub is_reply: bool,
    pub message_id: String,
    /// The message ids of References, then (when References has none) of In-Reply-To.
    pub references: Vec<String>,
}

/// The keys of `message` in the cache's framing.
pub fn sort_texts(message: &[u8]) -> Vec<u8> {
    let end = super::mime::header_end(message, 0);
    let (mut date, mut from, mut to, mut cc, mut subject) = (None, None, None, None, None);
    let (mut id, mut refs, mut reply_to) = (None, None, None);
    for f in header::fields(&message[..end]) {
        let slot = match () {
            _ if f.is("Date") => &mut date,
            _ if f.is("From") => &mut from,
            _ if f.is("To") => &mut to,
            _ if f.is("Cc") => &mut cc,
            _ if f.is("Subject") => &mut subject,
            _ if f.is("Message-ID") => &mut id,
            _ if f.is("References") => &mut refs,
            _ if f.is("In-Reply-To") => &mut reply_to,
            _ => continue,
        };
        // The first of each field counts (RFC 5256 speaks of "the" field).
        slot.get_or_insert(f);
    }
    let mut out = Vec::new();
    let mut put = |letter: u8, text: &str| {
        out.push(letter);
        out.extend_from_slice(format!("{} ", text.len()).as_bytes());
        out.extend_from_slice(text.as_bytes());
        out.push(b'\n');
    };
    if let Some(secs) = date.as_ref().and_then(parse_date) {
        put(b'd', &secs.to_string());
    }
    for (letter, field) in [(b'f', &from), (b't', &to), (b'c', &cc)] {
        if let Some(mailbox) = field.as_ref().and_then(first_mailbox) {
            put(letter, &mailbox);
        }
    }
    if let Some(s) = &subject {
        let (base, reply) = base_subject(&decode_words(&s.value()));
        put(if reply { b'r' } else { b's' }, &base);
    }
    let ids = |f: &Option<Field<'_>>| f.as_ref().map(|f| msg_ids(&f.value())).unwrap_or_default();
    if let Some(first) = ids(&id).into_iter().next() {
        put(b'm', &first);
    }
    let mut chain = ids(&refs);
    if chain.is_empty() {
        // RFC 5256 §2.2 (1)(A): In-Reply-To when there are no References.
        chain = ids(&reply_to).into_iter().take(1).collect();
    }
    for r in chain {
        put(b'p', &r);
    }
    out
}

/// The keys kept in `texts` (entries of other letters are skipped).
pub fn read(texts: &[u8]) -> SortKeys {
    let mut keys = SortKeys::default();
    let mut rest = texts;
    while let Some((&tag, after)) = rest.split_first() {
        let Some(space) = after.iter().position(|&b| b == b' ') else {
            break;
        };
        let Some(len) = std::str::from_utf8(&after[..space])
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
        else {
            break;
        };
        let Some(text) = after.get(space + 1..space + 1 + len) else {
            break;
        };
        let text = String::from_utf8_lossy(text).into_owned();
        match tag {
            b'd' => keys.date = text.parse().ok(),
            b'f' => keys.from = text,
            b't' => keys.to = text,
            b'c' => keys.cc = text,
            b's' => keys.subject = text,
            b'r' => (keys.subject, keys.is_reply) = (text, true),
            b'm' => keys.message_id = text,
            b'p' => keys.references.push(text),
            _ => {}
        }
        rest = after.get(space + 2 + len..).unwrap_or_default();
    }
    keys
}

/// RFC 5256 §2.2: the sent date, in UTC.
fn parse_date(f: &Field<'_>) -> Option<i64> {
    let mut line = f.value().into_owned();
    line.push(b'\n');
    match MessageStream::new(&line).parse_date() {
        HeaderValue::DateTime(dt) if dt.is_valid() => Some(dt.to_timestamp()),
        _ => None,
    }
}

/// RFC 5256 §3 (SORT FROM, TO, CC): the addr-mailbox of the first address.
fn first_mailbox(f: &Field<'_>) -> Option<String> {
    super::address::parse(&f.value())
        .into_iter()
        .filter(|a| a.domain.is_some())
        .find_map(|a| a.mailbox)
        .map(|m| String::from_utf8_lossy(&m).into_owned())
}

/// The `<...>` message ids of a field, without the brackets' spaces.
fn msg_ids(value: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(value);
    let mut out = Vec::new();
    let mut rest = &text[..];
    while let Some(start) = rest.find('<') {
        let Some(len) = rest[start..].find('>') else {
            break;
        };
        let id: String = rest[start..start + len + 1]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if id.len() > 2 {
            out.push(id);
        }
        rest = &rest[start + len + 1..];
    }
    out
}

/// RFC 5256 §2.1: the base subject of a (decoded) subject, and whether anything of a reply
/// or forward was taken off.
pub fn base_subject(subject: &str) -> (String, bool) {
    // (1) Tabs and runs of blanks as one space.
    let mut s = String::with_capacity(subject.len());
    for c in subject.chars() {
        let c = if c == '\t' || c == '\r' || c == '\n' {
            ' '
        } else {
            c
        };
        if !(c == ' ' && s.ends_with(' ')) {
            s.push(c);
        }
    }
    let mut reply = false;
    loop {
        // (2) Trailers: "(fwd)" and blanks at the end.
        loop {
            let t = s.trim_end_matches(' ');
            if t.len() != s.len() {
                s.truncate(t.len());
                continue;
            }
            if ends_with_ci(&s, "(fwd)") {
                s.truncate(s.len() - 5);
                reply = true;
                continue;
            }
            break;
        }
        // (3)-(5) Leaders: blobs and "re:", "fw:", "fwd:" with their blobs.
        loop {
            let before = s.len();
            if let Some(rest) = strip_leader(&s) {
                s = rest.to_string();
                reply = true;
            }
            if let Some(rest) = strip_blob(&s).filter(|r| !r.trim().is_empty()) {
                s = rest.to_string();
            }
            if s.len() == before {
                break;
            }
        }
        // (6) "[fwd: ...]" around the whole subject.
        if starts_with_ci(&s, "[fwd:") && s.ends_with(']') {
            s = s[5..s.len() - 1].trim_start_matches(' ').to_string();
            reply = true;
            continue;
        }
        break;
    }
    // i;ascii-casemap (RFC 4790 §9.2), which SORT and THREAD compare with: ASCII folded.
    (s.to_ascii_uppercase(), reply)
}

/// `subj-refwd` (RFC 5256 §5): `*WSP ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"`.
fn strip_leader(s: &str) -> Option<&str> {
    let t = s.trim_start_matches(' ');
    let lower = t.to_ascii_lowercase();
    let word = ["re", "fwd", "fw"]
        .into_iter()
        .find(|w| lower.starts_with(w))?;
    let mut rest = t[word.len()..].trim_start_matches(' ');
    if rest.starts_with('[') {
        rest = strip_blob(rest)?;
    }
    rest.strip_prefix(':').map(|r| r.trim_start_matches(' '))
}

/// `subj-blob` (RFC 5256 §5): `"[" *BLOBCHAR "]" *WSP`, at the start.
fn strip_blob(s: &str) -> Option<&str> {
    let t = s.trim_start_matches(' ');
    let inner = t.strip_prefix('[')?;
    let end = inner.find([']', '['])?;
    if inner.as_bytes()[end] != b']' {
        return None;
    }
    Some(inner[end + 1..].trim_start_matches(' '))
}

fn ends_with_ci(s: &str, tail: &str) -> bool {
    s.len() >= tail.len()
        && s.is_char_boundary(s.len() - tail.len())
        && s[s.len() - tail.len()..].eq_ignore_ascii_case(tail)
}

fn starts_with_ci(s: &str, head: &str) -> bool {
    s.len() >= head.len()
        && s.is_char_boundary(head.len())
        && s[..head.len()].eq_ignore_ascii_case(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_subjects_of_rfc_5256() {
        let cases = [
            ("Hello", "HELLO", false),
            ("Re: Hello", "HELLO", true),
            ("RE:   re: Fwd: Hello", "HELLO", true),
            ("Re[2]: Hello", "HELLO", true),
            ("[list] Re: Hello", "HELLO", true),
            ("Hello (fwd)", "HELLO", true),
            ("[Fwd: Re: Hello]", "HELLO", true),
            ("Hello\t  world  ", "HELLO WORLD", false),
            ("[list]", "[LIST]", false),
            ("Re:", "", true),
            ("Real subject", "REAL SUBJECT", false),
            ("", "", false),
        ];
        for (subject, base, reply) in cases {
            assert_eq!(
                base_subject(subject),
                (base.to_string(), reply),
                "{subject:?}"
            );
        }
    }

    #[test]
    fn keys_round_trip_through_the_cache_framing() {
        let message = b"Date: Tue, 1 Jul 2003 10:52:37 +0200\r\n\
From: Alice <Alice@example.com>\r\nTo: bob@example.org, carol@example.org\r\n\
Subject: =?utf-8?q?Re=3A_caf=C3=A9?=\r\nMessage-ID: <b@x>\r\n\
In-Reply-To: <a@x>\r\nReferences: <z@x> <a@x>\r\n\r\nbody\r\n";
        let keys = read(&sort_texts(message));
        assert_eq!(keys.date, Some(1_057_049_557));
        assert_eq!(
            (keys.from.as_str(), keys.to.as_str(), keys.cc.as_str()),
            ("Alice", "bob", "")
        );
        assert_eq!((keys.subject.as_str(), keys.is_reply), ("CAFé", true));
        assert_eq!(keys.message_id, "<b@x>");
        assert_eq!(keys.references, ["<z@x>", "<a@x>"]);
        let only_reply = read(&sort_texts(b"In-Reply-To: <a@x> (sent)\r\n\r\n"));
        assert_eq!(only_reply.references, ["<a@x>"]);
        assert_eq!(
            read(b"S3 abc\n"),
            SortKeys::default(),
            "search texts are skipped"
        );
    }
}
