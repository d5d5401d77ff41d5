//! The MIME fields of one part (RFC 2045 §5 Content-Type, §6 Content-Transfer-Encoding,
//! §7 Content-ID, §8 Content-Description; RFC 2183 Content-Disposition; RFC 3282
//! Content-Language; RFC 2557 Content-Location; RFC 1864 Content-MD5), kept as BODYSTRUCTURE
//! shows them: values as written, RFC 2231 continuations joined but not decoded.

use super::header::Field;
use super::lex::{Lexer, Step};

pub type Params = Vec<(Vec<u8>, Vec<u8>)>;

/// A Content-Type field's `type/subtype`, as written.
#[derive(Debug, PartialEq, Eq)]
pub enum MediaType {
    Valid(Vec<u8>, Vec<u8>),
    /// The field does not parse.
    Invalid,
}

/// The MIME fields of a part, as read from its header (the first of each counts).
#[derive(Debug, Default)]
pub struct MimeFields {
    /// When a Content-Type field was there.
    pub content_type: Option<MediaType>,
    pub params: Params,
    pub encoding: Option<Vec<u8>>,
    pub id: Option<Vec<u8>>,
    pub description: Option<Vec<u8>>,
    pub md5: Option<Vec<u8>>,
    pub disposition: Option<(Vec<u8>, Params)>,
    pub language: Vec<Vec<u8>>,
    pub location: Option<Vec<u8>>,
    /// A MIME-Version field was there.
    pub mime_version: bool,
}

impl MimeFields {
    /// Takes in one header field of the part; fields other than these are ignored.
    pub fn add(&mut self, field: &Field<'_>) {
        if field.is("MIME-Version") {
            self.mime_version = true;
            return;
        }
        let Some(name) = field.name.get(..8) else {
            return;
        };
        if !name.eq_ignore_ascii_case(b"Content-") {
            return;
        }
        let value = field.value();
        let first = |slot: &mut Option<Vec<u8>>| {
            slot.get_or_insert_with(|| value.to_vec());
        };
        match field.name[8..].to_ascii_lowercase().as_slice() {
            b"type" if self.content_type.is_none() => {
                let (content_type, params) = content_type(&value);
                self.content_type = Some(content_type);
                self.params = params;
            }
            b"transfer-encoding" if self.encoding.is_none() => self.encoding = encoding(&value),
            b"id" => first(&mut self.id),
            b"description" => first(&mut self.description),
            b"md5" => first(&mut self.md5),
            b"location" => first(&mut self.location),
            // Dovecot reads a later field while the earlier ones had no parameters.
            b"disposition" if self.disposition.as_ref().is_none_or(|d| d.1.is_empty()) => {
                if let Some(disposition) = disposition(&value) {
                    self.disposition = Some(disposition);
                }
            }
            b"language" if self.language.is_empty() => self.language = language(&value),
            _ => {}
        }
    }

    /// The media type and subtype when the Content-Type field was there and valid.
    pub fn media_type(&self) -> Option<(&[u8], &[u8])> {
        match &self.content_type {
            Some(MediaType::Valid(t, s)) => Some((t, s)),
            _ => None,
        }
    }

    /// The first parameter called `name` (case-insensitive).
    pub fn param(&self, name: &str) -> Option<&[u8]> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_slice())
    }
}

/// Content-Type: the media type and the parameters (none when the field does not parse).
fn content_type(value: &[u8]) -> (MediaType, Params) {
    let mut lexer = Lexer::new(value);
    let mut both = Vec::new();
    if lexer.content_type(&mut both) == Step::Bad {
        return (MediaType::Invalid, Vec::new());
    }
    let slash = both.iter().position(|&c| c == b'/').unwrap_or(both.len());
    let subtype = both.get(slash + 1..).unwrap_or_default().to_vec();
    both.truncate(slash);
    (MediaType::Valid(both, subtype), rfc2231(&mut lexer))
}

/// Content-Transfer-Encoding: one token and nothing else.
fn encoding(value: &[u8]) -> Option<Vec<u8>> {
    let mut lexer = Lexer::new(value);
    lexer.skip_lwsp();
    let mut token = Vec::new();
    let ok = lexer.mime_token(&mut token) != Step::Bad
        && lexer.skip_lwsp() == Step::End
        && !token.is_empty();
    ok.then_some(token)
}

fn disposition(value: &[u8]) -> Option<(Vec<u8>, Params)> {
    let mut lexer = Lexer::new(value);
    lexer.skip_lwsp();
    let mut token = Vec::new();
    if lexer.mime_token(&mut token) == Step::Bad {
        return None;
    }
    Some((token, rfc2231(&mut lexer)))
}

/// Content-Language: a comma-separated list of tags.
fn language(value: &[u8]) -> Vec<Vec<u8>> {
    let mut lexer = Lexer::new(value);
    lexer.skip_lwsp();
    let mut tags = Vec::new();
    loop {
        let mut tag = Vec::new();
        if lexer.atom(&mut tag) == Step::Bad {
            break;
        }
        tags.push(tag);
        if lexer.peek() != Some(b',') {
            break;
        }
        lexer.pos += 1;
        lexer.skip_lwsp();
    }
    tags
}

/// An RFC 2231 section: `name*<index>[*]`.
struct Section {
    key: Vec<u8>,
    index: u32,
    extended: bool,
    value: Vec<u8>,
}

/// The parameters after the value, RFC 2231 §3 continuations (`name*0`, `name*1*`...)
/// joined into one `name` (or `name*` when a section is encoded) the way Dovecot's
/// `rfc2231_parse` joins them; sections with a gap in their numbers stay as they are.
/// A parameter that does not parse is skipped.
pub fn rfc2231(lexer: &mut Lexer<'_>) -> Params {
    let mut plain = Vec::new();
    let mut sections = Vec::new();
    // Dovecot keeps the last index for a later `name*` (it does not reset it).
    let mut index = 0u32;
    let (mut key, mut value) = (Vec::new(), Vec::new());
    loop {
        match lexer.content_param(&mut key, &mut value) {
            Step::End => break,
            Step::Bad if lexer.at_end() => break,
            Step::Bad => {
                // Try the next parameter.
                lexer.pos += 1;
                continue;
            }
            Step::More => {}
        }
        match section(&key, &mut index) {
            Some((name, extended)) => sections.push(Section {
                key: name.to_vec(),
                index,
                extended,
                value: std::mem::take(&mut value),
            }),
            None => plain.push((std::mem::take(&mut key), std::mem::take(&mut value))),
        }
    }
    if sections.is_empty() {
        return plain;
    }
    sections.sort_by(|a, b| a.key.cmp(&b.key).then(a.index.cmp(&b.index)));
    let mut rest = sections.as_slice();
    while let Some(first) = rest.first() {
        let len = rest
            .iter()
            .take_while(|s| s.key.eq_ignore_ascii_case(&first.key))
            .count();
        let (group, tail) = rest.split_at(len);
        rest = tail;
        join_sections(group, &mut plain);
    }
    plain
}

/// `name*`, `name*3` or `name*3*` → (name, extended), and the index into `index`; `None`
/// for a plain name.
fn section<'k>(key: &'k [u8], index: &mut u32) -> Option<(&'k [u8], bool)> {
    let star = key.iter().position(|&c| c == b'*')?;
    let mut p = star;
    if key.len() > star + 1 {
        p += 1;
        *index = 0;
        while let Some(d) = key.get(p).filter(|d| d.is_ascii_digit()) {
            *index = index.wrapping_mul(10).wrapping_add(u32::from(d - b'0'));
            p += 1;
        }
    }
    let extended = key.get(p) == Some(&b'*');
    if extended {
        p += 1;
    }
    (p == key.len()).then_some((&key[..star], extended))
}

fn join_sections(group: &[Section], out: &mut Params) {
    let complete = group.iter().zip(0u32..).all(|(s, i)| s.index == i);
    if !complete {
        for s in group {
            let star = if s.extended { "*" } else { "" };
            let mut key = s.key.clone();
            key.extend_from_slice(format!("*{}{star}", s.index).as_bytes());
            out.push((key, s.value.clone()));
        }
        return;
    }
    let encoded = group.iter().any(|s| s.extended);
    let mut value = Vec::new();
    if encoded && !group[0].extended {
        // No charset and language: the joined value still needs the `''` of §4.
        value.extend_from_slice(b"''");
    }
    for s in group {
        if encoded && !s.extended {
            // A plain section inside an encoded value: its `%` must not read as an escape.
            for &c in &s.value {
                match c {
                    b'%' => value.extend_from_slice(b"%25"),
                    c => value.push(c),
                }
            }
        } else {
            value.extend_from_slice(&s.value);
        }
    }
    let mut key = group[0].key.clone();
    if encoded {
        key.push(b'*');
    }
    out.push((key, value));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::summary::header::fields;

    fn params_of(text: &str) -> Vec<(String, String)> {
        rfc2231(&mut Lexer::new(text.as_bytes()))
            .into_iter()
            .map(|(k, v)| {
                let k = String::from_utf8_lossy(&k).into_owned();
                (k, String::from_utf8_lossy(&v).into_owned())
            })
            .collect()
    }

    #[test]
    fn parameters() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            (
                "; charset=us-ascii; format=\"flowed\"",
                &[("charset", "us-ascii"), ("format", "flowed")],
            ),
            // After a broken one Dovecot skips to the end (`b=2` is lost there too).
            ("; a=1; broken; b=2", &[("a", "1")]),
            ("; name*0=\"foo \"; name*1=bar", &[("name", "foo bar")]),
            ("; name*1=bar; name*0=foo", &[("name", "foobar")]),
            (
                "; f*=utf-8''%C3%A9t%C3%A9",
                &[("f*", "utf-8''%C3%A9t%C3%A9")],
            ),
            ("; f*0*=utf-8''%C3; f*1=100%", &[("f*", "utf-8''%C3100%25")]),
            ("; f*0=a; f*1*=%41", &[("f*", "''a%41")]),
            ("; f*0=a; f*2=c", &[("f*0", "a"), ("f*2", "c")]),
            ("; x*y=1", &[("x*y", "1")]),
            ("", &[]),
        ];
        for (text, want) in cases {
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(params_of(text), want, "{text:?}");
        }
    }

    #[test]
    fn mime_fields() {
        let header = "MIME-Version: 1.0\n\
            Content-Type: Text/HTML; Charset=\"UTF-8\"\n\
            Content-Type: image/png\n\
            Content-Transfer-Encoding: ?invalid\n\
            Content-Transfer-Encoding: Base64 (comment)\n\
            Content-ID: <id@x>\n\
            Content-Disposition: inline\n\
            Content-Disposition: attachment; filename=a.txt\n\
            Content-Language: en, fi (Finnish) ,se\n\
            Content-Location: http://x/y\n";
        let mut mime = MimeFields::default();
        for field in fields(header.as_bytes()) {
            mime.add(&field);
        }
        assert!(mime.mime_version);
        assert_eq!(mime.media_type(), Some((&b"Text"[..], &b"HTML"[..])));
        assert_eq!(mime.param("charset"), Some(&b"UTF-8"[..]));
        assert_eq!(mime.encoding.as_deref(), Some(&b"Base64"[..]));
        assert_eq!(mime.id.as_deref(), Some(&b"<id@x>"[..]));
        let (disposition, params) = mime.disposition.unwrap();
        assert_eq!(disposition, b"attachment");
        assert_eq!(params, [(b"filename".to_vec(), b"a.txt".to_vec())]);
        assert_eq!(mime.language, [&b"en"[..], b"fi", b"se"]);
        assert_eq!(mime.location.as_deref(), Some(&b"http://x/y"[..]));

        let mut bad = MimeFields::default();
        for field in fields(b"Content-Type: text/html charset=utf-8\n") {
            bad.add(&field);
        }
        assert_eq!(
            (bad.content_type, bad.params.len()),
            (Some(MediaType::Invalid), 0)
        );
    }
}
