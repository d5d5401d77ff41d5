//! ENVELOPE (RFC 3501 §7.4.2): date, subject, from, sender, reply-to, to, cc, bcc,
//! in-reply-to, message-id, from a header section. Values are the raw header text (encoded
//! words not decoded, as RFC 3501 asks and Dovecot does); when a field repeats, the last
//! string value counts and address lists are joined (Dovecot's rule: what a client shows
//! is then what a filter saw).

use std::borrow::Cow;

use super::address::{self, Address};
use super::encode;
use super::header::Field;

/// The envelope fields of one header section.
#[derive(Debug, Default)]
pub struct Envelope<'a> {
    date: Option<Cow<'a, [u8]>>,
    subject: Option<Cow<'a, [u8]>>,
    from: Vec<Address>,
    sender: Vec<Address>,
    reply_to: Vec<Address>,
    to: Vec<Address>,
    cc: Vec<Address>,
    bcc: Vec<Address>,
    in_reply_to: Option<Cow<'a, [u8]>>,
    message_id: Option<Cow<'a, [u8]>>,
}

impl<'a> Envelope<'a> {
    /// Takes in one header field; fields other than the envelope's are ignored.
    pub fn add(&mut self, field: &Field<'a>) {
        let strings = [
            ("Date", &mut self.date),
            ("Subject", &mut self.subject),
            ("In-Reply-To", &mut self.in_reply_to),
            ("Message-ID", &mut self.message_id),
        ];
        if let Some((_, slot)) = strings.into_iter().find(|(n, _)| field.is(n)) {
            *slot = Some(field.value());
            return;
        }
        let lists = [
            ("From", &mut self.from),
            ("Sender", &mut self.sender),
            ("Reply-To", &mut self.reply_to),
            ("To", &mut self.to),
            ("Cc", &mut self.cc),
            ("Bcc", &mut self.bcc),
        ];
        if let Some((_, list)) = lists.into_iter().find(|(n, _)| field.is(n)) {
            list.extend(address::parse(&field.value()));
        }
    }

    /// Appends the envelope, parenthesised, as it follows `ENVELOPE` in a FETCH response.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(b'(');
        encode::nstring_nolf(out, self.date.as_deref());
        out.push(b' ');
        match &self.subject {
            Some(subject) => encode::human_string(out, subject),
            None => out.extend_from_slice(b"NIL"),
        }
        // RFC 3501 §7.4.2: sender and reply-to default to from.
        let or_from = |list: &'_ Vec<Address>| -> Vec<Address> {
            match list.is_empty() {
                true => self.from.clone(),
                false => list.clone(),
            }
        };
        let lists = [
            Cow::Borrowed(&self.from),
            Cow::Owned(or_from(&self.sender)),
            Cow::Owned(or_from(&self.reply_to)),
            Cow::Borrowed(&self.to),
            Cow::Borrowed(&self.cc),
            Cow::Borrowed(&self.bcc),
        ];
        for list in &lists {
            out.push(b' ');
            write_addresses(out, list);
        }
        out.push(b' ');
        encode::nstring_nolf(out, self.in_reply_to.as_deref());
        out.push(b' ');
        encode::nstring_nolf(out, self.message_id.as_deref());
        out.push(b')');
    }
}

fn write_addresses(out: &mut Vec<u8>, list: &[Address]) {
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for a in list {
        out.push(b'(');
        match &a.name {
            Some(name) => encode::human_string(out, name),
            None => out.extend_from_slice(b"NIL"),
        }
        for part in [&a.route, &a.mailbox, &a.domain] {
            out.push(b' ');
            encode::nstring(out, part.as_deref());
        }
        out.push(b')');
    }
    out.push(b')');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::summary::header::fields;

    fn envelope_of(header: &str) -> String {
        let mut envelope = Envelope::default();
        for field in fields(header.as_bytes()) {
            envelope.add(&field);
        }
        let mut out = Vec::new();
        envelope.write(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn envelopes() {
        let cases: &[(&str, &str)] = &[
            ("", "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"),
            (
                // Dovecot's test-imap-envelope.c, first case.
                "Message-ID: <msg@id>\nIn-Reply-To: <reply@to.id>\n\
                 Date: Thu, 15 Feb 2007 01:02:03 +0200\nSubject: subject header\n\
                 From: From Real <fromuser@fromdomain.org>\nTo: To Real <touser@todomain.org>\n\
                 Cc: Cc Real <ccuser@ccdomain.org>\nBcc: Bcc Real <bccuser@bccdomain.org>\n\
                 Sender: Sender Real <senderuser@senderdomain.org>\n\
                 Reply-To: ReplyTo Real <replytouser@replytodomain.org>\n",
                "(\"Thu, 15 Feb 2007 01:02:03 +0200\" \"subject header\" \
                 ((\"From Real\" NIL \"fromuser\" \"fromdomain.org\")) \
                 ((\"Sender Real\" NIL \"senderuser\" \"senderdomain.org\")) \
                 ((\"ReplyTo Real\" NIL \"replytouser\" \"replytodomain.org\")) \
                 ((\"To Real\" NIL \"touser\" \"todomain.org\")) \
                 ((\"Cc Real\" NIL \"ccuser\" \"ccdomain.org\")) \
                 ((\"Bcc Real\" NIL \"bccuser\" \"bccdomain.org\")) \
                 \"<reply@to.id>\" \"<msg@id>\")",
            ),
            (
                "From: user@domain (Real Name)\nSender: \nReply-To: \n",
                "(NIL NIL ((\"Real Name\" NIL \"user\" \"domain\")) \
                 ((\"Real Name\" NIL \"user\" \"domain\")) \
                 ((\"Real Name\" NIL \"user\" \"domain\")) NIL NIL NIL NIL NIL)",
            ),
            (
                "Date: one\nSubject: s1\nSubject: s2\nDate: two\nFrom: a@b\nFrom: c@d\n",
                "(\"two\" \"s2\" ((NIL NIL \"a\" \"b\")(NIL NIL \"c\" \"d\")) \
                 ((NIL NIL \"a\" \"b\")(NIL NIL \"c\" \"d\")) \
                 ((NIL NIL \"a\" \"b\")(NIL NIL \"c\" \"d\")) NIL NIL NIL NIL NIL)",
            ),
            (
                "Subject:   lots   of \t space \nDate: Mon,\n 7 Dec 2026\n",
                "(\"Mon, 7 Dec 2026\" \"lots of space\" NIL NIL NIL NIL NIL NIL NIL NIL)",
            ),
            (
                "Subject: =?utf-8?q?caf=C3=A9?=\nTo: \"a \\\"b\\\"\" <x@y>\n",
                "(NIL \"=?utf-8?q?caf=C3=A9?=\" NIL NIL NIL ((\"a \\\"b\\\"\" NIL \"x\" \"y\")) \
                 NIL NIL NIL NIL)",
            ),
            (
                "Subject: caf\u{e9}\nSubject:\n",
                "(NIL \"\" NIL NIL NIL NIL NIL NIL NIL NIL)",
            ),
            (
                "Subject: caf\u{e9}\n",
                "(NIL {5}\r\ncaf\u{e9} NIL NIL NIL NIL NIL NIL NIL NIL)",
            ),
            (
                "To: list:;\nCC: a@b\nbcc: <c@d>\n",
                "(NIL NIL NIL NIL NIL ((NIL NIL \"list\" NIL)(NIL NIL NIL NIL)) \
                 ((NIL NIL \"a\" \"b\")) ((NIL NIL \"c\" \"d\")) NIL NIL)",
            ),
        ];
        for (header, want) in cases {
            assert_eq!(envelope_of(header), *want, "{header:?}");
        }
    }
}
