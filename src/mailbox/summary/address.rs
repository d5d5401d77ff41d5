//! Address lists (RFC 5322 §3.4: `address-list`, groups, obsolete routes) read as Dovecot's
//! `message-address.c` reads them for ENVELOPE, broken ones included: what cannot be read is
//! filled with Dovecot's markers (`MISSING_MAILBOX`, `MISSING_DOMAIN`, `SYNTAX_ERROR`,
//! `INVALID_ROUTE`), so that a client never sees a NIL host where RFC 3501 §7.4.2 means a
//! group marker. Encoded words (RFC 2047) are kept as they are.

use super::lex::{Lexer, Step};

/// One ENVELOPE address: `(name route mailbox host)`. A group start has the group's name as
/// `mailbox` and no host; a group end is all `None` (RFC 3501 §7.4.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Address {
    pub name: Option<Vec<u8>>,
    pub route: Option<Vec<u8>>,
    pub mailbox: Option<Vec<u8>>,
    pub domain: Option<Vec<u8>>,
}

/// The addresses of one address header's value (the unfolded value, see `header::Field`).
pub fn parse(value: &[u8]) -> Vec<Address> {
    let mut p = Parser {
        lx: Lexer::new(value),
        out: Vec::new(),
        addr: Address::default(),
        invalid: false,
        text: Vec::new(),
    };
    p.lx.last_comment = Some(Vec::new());
    if p.lx.skip_lwsp() == Step::More {
        p.address_list();
    }
    p.out
}

struct Parser<'a> {
    lx: Lexer<'a>,
    out: Vec<Address>,
    /// The address being read, and whether its syntax was broken.
    addr: Address,
    invalid: bool,
    /// Scratch text of the token being read.
    text: Vec<u8>,
}

impl Parser<'_> {
    fn is(&self, c: u8) -> bool {
        self.lx.peek() == Some(c)
    }

    fn push(&mut self) {
        self.out.push(std::mem::take(&mut self.addr));
        self.invalid = false;
    }

    /// Pushes the address with its holes filled.
    fn push_fixed(&mut self) {
        if self.addr.mailbox.is_none() {
            self.addr.mailbox = Some(b"MISSING_MAILBOX".to_vec());
        }
        if self.addr.domain.as_ref().is_none_or(|d| d.is_empty()) {
            self.addr.domain = Some(b"MISSING_DOMAIN".to_vec());
        }
        self.push();
    }

    fn address_list(&mut self) {
        loop {
            if self.address() == Step::End || !self.is(b',') {
                break;
            }
            self.lx.pos += 1;
            match self.lx.skip_lwsp() {
                Step::More => {}
                // A list that ends in garbage (an open comment) gets one more, empty
                // address.
                Step::Bad => {
                    self.push_fixed();
                    break;
                }
                Step::End => break,
            }
        }
    }

    /// `address = mailbox / group`.
    fn address(&mut self) -> Step {
        let start = self.lx.pos;
        let r = self.group();
        if r != Step::Bad {
            return r;
        }
        self.lx.pos = start;
        self.mailbox()
    }

    /// `group = display-name ":" [mailbox-list / CFWS] ";" [CFWS]`. `Bad` only when this
    /// is not a group at all.
    fn group(&mut self) -> Step {
        self.text.clear();
        if self.lx.phrase(&mut self.text) != Step::More || !self.is(b':') {
            return Step::Bad;
        }
        self.lx.pos += 1;
        let mut r = self.lx.skip_lwsp();
        if r != Step::More {
            self.invalid = true;
        }
        self.addr.mailbox = Some(self.text.clone());
        self.push();
        if r == Step::More && !self.is(b';') {
            loop {
                self.mailbox();
                if !self.is(b',') {
                    break;
                }
                self.lx.pos += 1;
                if self.lx.skip_lwsp() != Step::More {
                    r = Step::Bad;
                    break;
                }
            }
        }
        if r != Step::Bad {
            if self.is(b';') {
                self.lx.pos += 1;
                r = self.lx.skip_lwsp();
            } else {
                r = Step::Bad;
            }
        }
        // The group's end marker.
        self.push();
        if r == Step::End {
            Step::End
        } else {
            Step::More
        }
    }

    /// `mailbox = name-addr / addr-spec`; pushes what it read, holes filled.
    fn mailbox(&mut self) -> Step {
        let start = self.lx.pos;
        let mut r = self.name_addr();
        if r == Step::Bad {
            self.lx.pos = start;
            r = self.addr_spec();
            if self.invalid
                && self.addr.name.is_none()
                && self.addr.mailbox.is_some()
                && self.addr.domain.is_none()
            {
                self.addr.name = self.addr.mailbox.take();
            }
        }
        self.push_fixed();
        r
    }

    /// `name-addr = [display-name] angle-addr`.
    fn name_addr(&mut self) -> Step {
        self.text.clear();
        if self.lx.phrase(&mut self.text) != Step::More || !self.is(b'<') {
            return Step::Bad;
        }
        // `<user@host>` alone has no name.
        self.addr.name = (!self.text.is_empty()).then(|| self.text.clone());
        if self.angle_addr() == Step::Bad {
            self.addr.domain = Some(b"SYNTAX_ERROR".to_vec());
            self.invalid = true;
        }
        if self.lx.at_end() {
            Step::End
        } else {
            Step::More
        }
    }

    /// `"<" [ "@" route ":" ] local-part "@" domain ">"` (the cursor is on the `<`).
    fn angle_addr(&mut self) -> Step {
        self.lx.pos += 1;
        if self.lx.skip_lwsp() != Step::More {
            return Step::Bad;
        }
        if self.is(b'@') {
            if self.domain_list() == Step::More && self.is(b':') {
                self.lx.pos += 1;
            } else {
                self.addr.route = Some(b"INVALID_ROUTE".to_vec());
                if self.lx.at_end() {
                    return Step::Bad;
                }
            }
            if self.lx.skip_lwsp() != Step::More {
                return Step::Bad;
            }
        }
        // `<>` is no address, but not a syntax error here either.
        if !self.is(b'>') {
            if self.local_part() != Step::More {
                return Step::Bad;
            }
            if self.is(b'@') && self.domain() != Step::More {
                return Step::Bad;
            }
        }
        if !self.is(b'>') {
            return Step::Bad;
        }
        self.lx.pos += 1;
        self.lx.skip_lwsp()
    }

    /// `obs-domain-list = "@" domain *(*(CFWS / ",") [CFWS] "@" domain)`.
    fn domain_list(&mut self) -> Step {
        self.text.clear();
        loop {
            if self.lx.at_end() {
                return Step::End;
            }
            if !self.is(b'@') {
                break;
            }
            if !self.text.is_empty() {
                self.text.push(b',');
            }
            self.text.push(b'@');
            let r = self.lx.domain(&mut self.text);
            if r != Step::More {
                return r;
            }
            while self.lx.skip_lwsp() == Step::More && self.is(b',') {
                self.lx.pos += 1;
            }
        }
        self.addr.route = Some(self.text.clone());
        Step::More
    }

    /// `addr-spec = local-part "@" domain`, with the forms people write instead: a bare
    /// name, `user@host (Name)`.
    fn addr_spec(&mut self) -> Step {
        if let Some(comment) = self.lx.last_comment.as_mut() {
            comment.clear();
        }
        let quoted = self.is(b'"');
        let mut r = self.local_part();
        if r != Step::More {
            self.invalid = true;
        }
        let mut tried_domain = false;
        if r != Step::End && self.is(b'@') {
            tried_domain = true;
            let r2 = self.domain();
            if r2 != Step::More {
                r = r2;
            }
        }
        let comment = self.lx.last_comment.as_ref().filter(|c| !c.is_empty());
        if let Some(comment) = comment {
            self.addr.name = Some(comment.clone());
        } else if !tried_domain {
            // A word without `@`: a mailbox alone, unless more words follow (a name).
            self.text.push(b' ');
            let before = self.text.len();
            self.lx.phrase(&mut self.text);
            if self.text.len() != before {
                self.addr.mailbox = None;
                self.addr.name = Some(self.text.clone());
            } else if !quoted {
                self.addr.domain = Some(Vec::new());
            }
            self.invalid = true;
            r = Step::Bad;
        }
        r
    }

    /// `local-part`: a quoted string, or atoms with dots anywhere (`a..b.`, as written).
    fn local_part(&mut self) -> Step {
        self.text.clear();
        let r = if self.is(b'"') {
            self.lx.quoted_string(&mut self.text)
        } else {
            self.loose_dot_atom()
        };
        if r == Step::Bad {
            return Step::Bad;
        }
        self.addr.mailbox = Some(self.text.clone());
        r
    }

    fn loose_dot_atom(&mut self) -> Step {
        let mut r = Step::Bad;
        loop {
            while self.is(b'.') {
                self.text.push(b'.');
                self.lx.pos += 1;
                if self.lx.at_end() {
                    return Step::End;
                }
                r = Step::More;
            }
            if self.is(b'@') {
                return r;
            }
            r = self.lx.atom(&mut self.text);
            if r != Step::More || !self.is(b'.') {
                return r;
            }
        }
    }

    fn domain(&mut self) -> Step {
        self.text.clear();
        let r = self.lx.domain(&mut self.text);
        if r != Step::Bad {
            self.addr.domain = Some(self.text.clone());
        }
        r
    }
}

/// Writes `addresses` back as header text, the way Dovecot's `message_address_write` does
/// before a SEARCH FROM/TO/CC/BCC compares: `Name <user@host>`, groups as `group: ...;`.
pub fn write(addresses: &[Address]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut in_group = false;
    for (i, a) in addresses.iter().enumerate() {
        let sep = i > 0 && !out.ends_with(b": ");
        match (&a.domain, in_group) {
            (None, false) => {
                if sep {
                    out.extend_from_slice(b", ");
                }
                out.extend_from_slice(a.mailbox.as_deref().unwrap_or_default());
                out.extend_from_slice(b": ");
                in_group = true;
            }
            (None, true) => {
                while out.ends_with(b" ") || out.ends_with(b",") {
                    out.pop();
                }
                out.push(b';');
                in_group = false;
            }
            (Some(domain), _) => {
                if sep {
                    out.extend_from_slice(b", ");
                }
                if let Some(name) = &a.name {
                    out.extend_from_slice(name);
                    out.push(b' ');
                }
                out.push(b'<');
                if let Some(route) = &a.route {
                    out.extend_from_slice(route);
                    out.push(b':');
                }
                out.extend_from_slice(a.mailbox.as_deref().unwrap_or_default());
                if !domain.is_empty() {
                    out.push(b'@');
                    out.extend_from_slice(domain);
                }
                out.push(b'>');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address as `name|route|mailbox|domain`, `-` for none.
    fn show(a: &Address) -> String {
        let f = |v: &Option<Vec<u8>>| match v {
            None => "-".to_string(),
            Some(v) => String::from_utf8_lossy(v).into_owned(),
        };
        format!(
            "{}|{}|{}|{}",
            f(&a.name),
            f(&a.route),
            f(&a.mailbox),
            f(&a.domain)
        )
    }

    #[test]
    fn address_lists() {
        let cases: &[(&str, &[&str])] = &[
            ("user@domain", &["-|-|user|domain"]),
            (
                "From Real <fromuser@fromdomain.org>",
                &["From Real|-|fromuser|fromdomain.org"],
            ),
            ("user@domain (Real Name)", &["Real Name|-|user|domain"]),
            ("\"Quo\\\"te\" <x@y>", &["Quo\"te|-|x|y"]),
            (
                "=?utf-8?q?J=C3=B6rg?= <j@x>",
                &["=?utf-8?q?J=C3=B6rg?=|-|j|x"],
            ),
            ("<@route:user@domain>", &["-|@route|user|domain"]),
            ("<@r1,@r2:u@d>", &["-|@r1,@r2|u|d"]),
            ("<@r1 u@d>", &["-|INVALID_ROUTE|u|d"]),
            ("(comment only) z@w", &["-|-|z|w"]),
            ("a@b, c@d", &["-|-|a|b", "-|-|c|d"]),
            (
                "group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;",
                &[
                    "-|-|group|-",
                    "-|-|g1|d1.org",
                    "-|-|g2|d2.org",
                    "-|-|-|-",
                    "-|-|group2|-",
                    "-|-|g3|d3.org",
                    "-|-|-|-",
                ],
            ),
            (
                "group:;, group2: (foo) ;",
                &["-|-|group|-", "-|-|-|-", "-|-|group2|-", "-|-|-|-"],
            ),
            (
                "undisclosed-recipients:;",
                &["-|-|undisclosed-recipients|-", "-|-|-|-"],
            ),
            ("user", &["-|-|user|MISSING_DOMAIN"]),
            (
                "John Smith",
                &["John Smith|-|MISSING_MAILBOX|MISSING_DOMAIN"],
            ),
            ("<>", &["-|-|MISSING_MAILBOX|MISSING_DOMAIN"]),
            (
                "broken <a@, bad@@x, <@r1,@r2:u@d>",
                &["broken|-|a|SYNTAX_ERROR", "-|-|bad|MISSING_DOMAIN"],
            ),
            (
                "a@b, (open",
                &["-|-|a|b", "-|-|MISSING_MAILBOX|MISSING_DOMAIN"],
            ),
            ("first.last.@host", &["-|-|first.last.|host"]),
            (
                "\"quoted local\"@[10.0.0.1]",
                &["-|-|quoted local|[10.0.0.1]"],
            ),
            ("J\u{f6}rg <j@x>", &["J\u{f6}rg|-|j|x"]),
            ("Folded\n Name <a@b>", &["Folded Name|-|a|b"]),
            ("", &[]),
            ("  ", &[]),
        ];
        for (value, want) in cases {
            let got: Vec<String> = parse(value.as_bytes()).iter().map(show).collect();
            assert_eq!(got, *want, "{value:?}");
        }
    }

    #[test]
    fn written_back() {
        let cases: &[(&str, &str)] = &[
            ("Name <a@b>, c@d", "Name <a@b>, <c@d>"),
            ("g: a@b, c@d;, e@f", "g: <a@b>, <c@d>;, <e@f>"),
            ("empty:;", "empty:;"),
            ("<@r:u@d>", "<@r:u@d>"),
        ];
        for (value, want) in cases {
            let got = write(&parse(value.as_bytes()));
            assert_eq!(String::from_utf8_lossy(&got), *want, "{value:?}");
        }
    }
}
