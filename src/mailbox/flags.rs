//! Message flags and their Maildir spelling: the letters after `:2,` in a file name
//! (maildir(5); Dovecot's keyword letters `a`..`z`).

/// A message's flags as IMAP names them: system flags as bits, keywords by name. Used where
/// flags come in (STORE, APPEND) and by [`Folder::flags`](crate::mailbox::Folder::flags);
/// messages themselves keep them as bits (see [`Message`](crate::mailbox::Message)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    /// [`Flags::SEEN`] | [`Flags::ANSWERED`] | ...
    pub system: u8,
    /// Keywords other than `$Forwarded` (which is [`Flags::FORWARDED`]), as sent.
    pub keywords: Vec<String>,
}

impl Flags {
    pub const SEEN: u8 = 1 << 0;
    pub const ANSWERED: u8 = 1 << 1;
    pub const FLAGGED: u8 = 1 << 2;
    pub const DELETED: u8 = 1 << 3;
    pub const DRAFT: u8 = 1 << 4;
    /// The keyword `$Forwarded`, which Maildir spells with the letter `P` ("passed"). Shown
    /// to clients as a keyword; kept as a bit because it has a letter of its own.
    pub const FORWARDED: u8 = 1 << 5;
    /// Every bit above.
    pub const ALL: u8 = 0x3f;
    /// The keyword name of [`Flags::FORWARDED`].
    pub const FORWARDED_KEYWORD: &'static str = "$Forwarded";
}

/// System letters in the order maildir(5) asks for (ASCII order), with their bits.
const LETTERS: [(u8, u8); 6] = [
    (b'D', Flags::DRAFT),
    (b'F', Flags::FLAGGED),
    (b'P', Flags::FORWARDED),
    (b'R', Flags::ANSWERED),
    (b'S', Flags::SEEN),
    (b'T', Flags::DELETED),
];

/// The most keywords a folder can have: one letter each, `a` to `z`.
pub const MAX_KEYWORDS: usize = 26;

/// The flags of a file name: system bits and keyword letters (bit n = letter `a`+n). Other
/// letters, and info that is not `2,` (maildir(5) "experimental semantics"), are ignored.
pub fn from_file_name(name: &str) -> (u8, u32) {
    let Some((_, info)) = name.split_once(':') else {
        return (0, 0);
    };
    let Some(letters) = info.strip_prefix("2,") else {
        return (0, 0);
    };
    let (mut system, mut keywords) = (0u8, 0u32);
    for c in letters.bytes() {
        if let Some((_, bit)) = LETTERS.iter().find(|(l, _)| *l == c) {
            system |= bit;
        } else if c.is_ascii_lowercase() {
            keywords |= 1 << (c - b'a');
        }
    }
    (system, keywords)
}

/// The info part for these flags: `2,` then the letters in order.
pub fn info(system: u8, keywords: u32) -> String {
    let mut s = String::from("2,");
    for (letter, bit) in LETTERS {
        if system & bit != 0 {
            s.push(letter as char);
        }
    }
    for n in 0..MAX_KEYWORDS as u8 {
        if keywords & (1 << n) != 0 {
            s.push((b'a' + n) as char);
        }
    }
    s
}

/// Whether `name` may be stored as a keyword: an IMAP atom (RFC 3501 §9 `flag-keyword`), so
/// no space, control, parentheses, wildcards, quotes, backslash or `]`, and nothing the
/// `dovecot-keywords` line format cannot hold.
pub fn valid_keyword(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| {
            (0x21..0x7f).contains(&b)
                && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_to_flags() {
        let cases: [(&str, u8, u32); 8] = [
            ("123.M1P2.host,S=10", 0, 0),
            ("123.M1P2.host,S=10:2,", 0, 0),
            ("123.host:2,S", Flags::SEEN, 0),
            ("123.host:2,DFPRST", Flags::ALL, 0),
            ("123.host:2,RSac", Flags::ANSWERED | Flags::SEEN, 0b101),
            ("123.host:2,Sz", Flags::SEEN, 1 << 25),
            ("123.host:1,S", 0, 0),             // not Maildir flags
            ("123.host:2,XS?", Flags::SEEN, 0), // unknown letters ignored
        ];
        for (name, system, keywords) in cases {
            assert_eq!(from_file_name(name), (system, keywords), "{name}");
        }
    }

    #[test]
    fn flags_to_info() {
        let cases: [(u8, u32, &str); 5] = [
            (0, 0, "2,"),
            (Flags::SEEN | Flags::DRAFT, 0, "2,DS"),
            (Flags::ALL, 0, "2,DFPRST"),
            (Flags::DELETED, 0b11, "2,Tab"),
            (0, 1 << 25, "2,z"),
        ];
        for (system, keywords, want) in cases {
            assert_eq!(info(system, keywords), want);
            let name = format!("x:{want}");
            assert_eq!(
                from_file_name(&name),
                (system, keywords),
                "round trip {want}"
            );
        }
    }

    #[test]
    fn keywords() {
        for ok in ["$Junk", "NonJunk", "$label1", "a.b-c_d"] {
            assert!(valid_keyword(ok), "{ok}");
        }
        for bad in ["", "a b", "a\tb", "\\Seen", "a(", "a]", "ü", "a*"] {
            assert!(!valid_keyword(bad), "{bad}");
        }
    }
}
