//! Message summaries for IMAP (`mailbox::summary`): `summarize`, `section` and `matches`
//! over any message.
//!
//! Input: byte 0 picks a section from `SECTIONS`, bytes 1..5 a partial window (start, then
//! length; a length of 0 means none), the rest is the message.
//!
//! Checks: ENVELOPE, BODY and BODYSTRUCTURE are each one well-formed IMAP value (quoted
//! strings 7-bit without CR, LF or NUL; literals of the right length without NUL; balanced
//! lists); the summary is the same for the message with CRLF line ends; `envelope_only` of
//! the message is its ENVELOPE; `BODY[]` has RFC822.SIZE octets; a partial section is the
//! window of the whole section; the SEARCH keys that look into a message answer.
#![no_main]

use std::num::NonZeroU32;
use std::sync::LazyLock;

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItemName, Section};
use imap_codec::imap_types::search::SearchKey;
use libfuzzer_sys::fuzz_target;
use tambo::mailbox::summary::{crlf_size, envelope_only, matches, section, summarize};

const SECTIONS: &[&str] = &[
    "",
    "HEADER",
    "TEXT",
    "1",
    "2",
    "1.1",
    "2.1",
    "1.2.3",
    "1.MIME",
    "2.MIME",
    "1.HEADER",
    "2.TEXT",
    "HEADER.FIELDS (From Subject)",
    "HEADER.FIELDS.NOT (Received)",
    "1.HEADER.FIELDS (Subject)",
    "3.HEADER.FIELDS.NOT (To)",
];

/// The sections as imap-codec parses them (`None` for `BODY[]`).
static PARSED: LazyLock<Vec<Option<Section<'static>>>> =
    LazyLock::new(|| SECTIONS.iter().map(|spec| parse_section(spec)).collect());

static KEYS: LazyLock<Vec<SearchKey<'static>>> = LazyLock::new(|| {
    let line = b"a SEARCH CHARSET UTF-8 FROM a TO \"\" CC b BCC c SUBJECT x HEADER X-Y z \
        BODY hello TEXT \"=?\" SENTBEFORE 1-Jan-2000 SENTON 7-Dec-2026 SENTSINCE 1-Jan-1970\r\n";
    let (_, command) = CommandCodec::default()
        .decode_static(line)
        .expect("SEARCH parses");
    let CommandBody::Search { criteria, .. } = command.body else {
        panic!("not a SEARCH");
    };
    criteria.into_inner()
});

fn parse_section(spec: &str) -> Option<Section<'static>> {
    let line = format!("a FETCH 1 (BODY.PEEK[{spec}])\r\n");
    let (_, command) = CommandCodec::default()
        .decode_static(line.as_bytes())
        .expect("FETCH parses");
    let CommandBody::Fetch {
        macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(items),
        ..
    } = command.body
    else {
        panic!("not a FETCH of items");
    };
    match items.into_iter().next() {
        Some(MessageDataItemName::BodyExt { section, .. }) => section,
        other => panic!("{other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let (head, message) = data.split_at(5);
    let s = summarize(message);
    for value in [&s.envelope, &s.body, &s.bodystructure] {
        if let Err(e) = check_value(value) {
            panic!("{e}: {:?}", String::from_utf8_lossy(value));
        }
    }
    assert_eq!(summarize(&to_crlf(message)), s, "differs in CRLF");
    assert_eq!(envelope_only(message), s.envelope);
    assert_eq!(
        section(message, None, None).len() as u64,
        crlf_size(message)
    );

    let sec = PARSED[usize::from(head[0]) % PARSED.len()].as_ref();
    let whole = section(message, sec, None);
    let start = u32::from(u16::from_le_bytes([head[1], head[2]]));
    if let Some(len) = NonZeroU32::new(u32::from(u16::from_le_bytes([head[3], head[4]]))) {
        let window = section(message, sec, Some((start, len)));
        let from = (start as usize).min(whole.len());
        let to = (start as usize + len.get() as usize).min(whole.len());
        assert_eq!(window, whole[from..to], "partial <{start}.{len}>");
    }
    assert!(!whole.contains(&0), "a NUL in a section");

    for key in KEYS.iter() {
        assert!(matches(message, key).is_some(), "{key:?} unanswered");
    }
});

/// `message` with CRLF line ends.
fn to_crlf(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    for (i, &c) in message.iter().enumerate() {
        if c == b'\n' && (i == 0 || message[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(c);
    }
    out
}

/// `value` is one IMAP value (RFC 3501 §4): NIL, a number, a string, or a list of values
/// separated by one space (none between lists).
fn check_value(value: &[u8]) -> Result<(), String> {
    let mut pos = 0;
    one(value, &mut pos)?;
    match pos == value.len() {
        true => Ok(()),
        false => Err(format!("trailing octets at {pos}")),
    }
}

fn one(v: &[u8], pos: &mut usize) -> Result<(), String> {
    match v.get(*pos) {
        Some(b'(') => {
            *pos += 1;
            let mut first = true;
            while v.get(*pos) != Some(&b')') {
                if !first && v.get(*pos) == Some(&b' ') {
                    *pos += 1;
                } else if !first && v.get(*pos) != Some(&b'(') {
                    return Err(format!("no separator at {pos}"));
                }
                one(v, pos)?;
                first = false;
            }
            *pos += 1;
            Ok(())
        }
        Some(b'"') => {
            *pos += 1;
            loop {
                match v.get(*pos) {
                    None => return Err("open quoted string".into()),
                    Some(b'"') => break,
                    Some(b'\\') if matches!(v.get(*pos + 1), Some(b'"' | b'\\')) => *pos += 2,
                    Some(&c) if c == 0 || c == b'\\' || c == b'\r' || c == b'\n' || c >= 0x80 => {
                        return Err(format!("{c:#x} in a quoted string at {pos}"));
                    }
                    Some(_) => *pos += 1,
                }
            }
            *pos += 1;
            Ok(())
        }
        Some(b'{') => {
            let close = v[*pos..]
                .iter()
                .position(|&c| c == b'}')
                .ok_or("open literal")?;
            let digits =
                std::str::from_utf8(&v[*pos + 1..*pos + close]).map_err(|e| e.to_string())?;
            let len: usize = digits
                .parse()
                .map_err(|_| format!("literal length {digits:?}"))?;
            *pos += close + 1;
            if v.get(*pos..*pos + 2) != Some(b"\r\n") {
                return Err("no CRLF after a literal's length".into());
            }
            *pos += 2;
            let octets = v.get(*pos..*pos + len).ok_or("short literal")?;
            if octets.contains(&0) {
                return Err("NUL in a literal".into());
            }
            *pos += len;
            Ok(())
        }
        Some(_) => {
            let start = *pos;
            while v.get(*pos).is_some_and(|c| c.is_ascii_alphanumeric()) {
                *pos += 1;
            }
            match &v[start..*pos] {
                b"NIL" => Ok(()),
                digits if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) => Ok(()),
                other => Err(format!(
                    "atom {:?} at {start}",
                    String::from_utf8_lossy(other)
                )),
            }
        }
        None => Err("end of input".into()),
    }
}
