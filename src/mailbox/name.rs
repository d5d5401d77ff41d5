//! Folder names: what IMAP clients may call a folder, and where it lives on disk.
//!
//! Names travel in modified UTF-7 (RFC 3501 §5.1.3; we do not offer UTF8=ACCEPT) and are
//! stored the same way after the Maildir++ dot (`.Entw&APw-rfe`): no conversion, only
//! validation. The hierarchy delimiter is `.`; `INBOX` is case-insensitive and is the root.

use crate::mailbox::StoreError;
use std::fmt;

/// The hierarchy delimiter (Maildir++ folders are `.Parent.Child`).
pub const DELIMITER: char = '.';
/// Longest name, in octets (Dovecot's limit too).
const MAX_LEN: usize = 255;
/// Deepest hierarchy.
const MAX_LEVELS: usize = 16;

/// A folder name that is safe as a path component and valid on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FolderName(String);

/// The special-use folders every user has (RFC 6154), found by their top-level names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialUse {
    Sent,
    Drafts,
    Trash,
    Junk,
}

impl SpecialUse {
    pub const ALL: [SpecialUse; 4] = [
        SpecialUse::Sent,
        SpecialUse::Drafts,
        SpecialUse::Trash,
        SpecialUse::Junk,
    ];

    /// The folder name, which is also how it is found.
    pub fn folder(self) -> &'static str {
        match self {
            SpecialUse::Sent => "Sent",
            SpecialUse::Drafts => "Drafts",
            SpecialUse::Trash => "Trash",
            SpecialUse::Junk => "Junk",
        }
    }

    /// The LIST attribute (RFC 6154 §2).
    pub fn attribute(self) -> &'static str {
        match self {
            SpecialUse::Sent => "\\Sent",
            SpecialUse::Drafts => "\\Drafts",
            SpecialUse::Trash => "\\Trash",
            SpecialUse::Junk => "\\Junk",
        }
    }
}

impl FolderName {
    /// Validates a name as a client sent it. `inbox` in any case is INBOX, also as the first
    /// level of a longer name (RFC 3501 §5.1: INBOX is case-insensitive).
    pub fn parse(name: &str) -> Result<FolderName, StoreError> {
        validate(name).map_err(StoreError::BadName)?;
        let normalized = match name.split_once(DELIMITER) {
            _ if name.eq_ignore_ascii_case("INBOX") => "INBOX".to_string(),
            Some((first, rest)) if first.eq_ignore_ascii_case("INBOX") => format!("INBOX.{rest}"),
            _ => name.to_string(),
        };
        Ok(FolderName(normalized))
    }
}

/// The rules of a name (see [`FolderName::parse`]); the reason when one is broken.
fn validate(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.len() > MAX_LEN {
        return Err(format!("longer than {MAX_LEN} octets"));
    }
    if name.contains('/') {
        return Err("contains /".into());
    }
    if name.starts_with('~') {
        return Err("starts with ~".into());
    }
    if name.chars().any(|c| c.is_control()) {
        return Err("contains control characters".into());
    }
    let levels: Vec<&str> = name.split(DELIMITER).collect();
    if levels.iter().any(|l| l.is_empty()) {
        return Err("empty level (leading, trailing or double dot)".into());
    }
    if levels.len() > MAX_LEVELS {
        return Err(format!("more than {MAX_LEVELS} levels"));
    }
    check_modified_utf7(name)
}

impl FolderName {
    pub fn inbox() -> FolderName {
        FolderName("INBOX".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_inbox(&self) -> bool {
        self.0 == "INBOX"
    }

    /// The folder one level up; `None` at the top.
    pub fn parent(&self) -> Option<FolderName> {
        self.0
            .rsplit_once(DELIMITER)
            .map(|(p, _)| FolderName(p.to_string()))
    }

    /// Whether `self` is `other` or lies below it.
    pub fn is_within(&self, other: &FolderName) -> bool {
        self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0[other.0.len()..].starts_with(DELIMITER))
    }

    /// `self` with its leading `from` replaced by `to` (for renames of whole subtrees).
    pub fn moved(&self, from: &FolderName, to: &FolderName) -> Option<FolderName> {
        let rest = self.0.strip_prefix(&from.0)?;
        (rest.is_empty() || rest.starts_with(DELIMITER))
            .then(|| FolderName(format!("{}{rest}", to.0)))
    }

    pub fn special_use(&self) -> Option<SpecialUse> {
        SpecialUse::ALL.into_iter().find(|s| s.folder() == self.0)
    }

    /// The folder's directory name in the user's root: `.Name`, or `None` for INBOX (the
    /// root itself).
    pub(crate) fn dir_name(&self) -> Option<String> {
        (!self.is_inbox()).then(|| format!(".{}", self.0))
    }

    /// The folder a directory entry of the user's root stands for, when it is one: `.Name`
    /// with a valid name that maps back to the same entry (so `.inbox` or `..x` are not).
    pub(crate) fn from_dir_name(entry: &str) -> Option<FolderName> {
        let name = FolderName::parse(entry.strip_prefix('.')?).ok()?;
        (name.dir_name().as_deref() == Some(entry)).then_some(name)
    }
}

impl fmt::Display for FolderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// RFC 3501 §5.1.3: printable US-ASCII stands for itself (`&` as `&-`); anything else is
/// UTF-16 in modified BASE64 (`,` for `/`) between `&` and `-`, with no printable US-ASCII
/// inside, zero padding bits and whole, well-paired UTF-16 units.
pub fn check_modified_utf7(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(0x20..0x7f).contains(&b) {
            return Err("not modified UTF-7 (8-bit or control character)".into());
        }
        if b != b'&' {
            i += 1;
            continue;
        }
        let Some(len) = bytes[i + 1..].iter().position(|&c| c == b'-') else {
            return Err("not modified UTF-7 (& without -)".into());
        };
        decode_shift(&bytes[i + 1..i + 1 + len])?;
        i += len + 2;
    }
    Ok(())
}

/// One `&...-` sequence (without the `&` and `-`); empty is `&-`, a literal `&`.
fn decode_shift(encoded: &[u8]) -> Result<(), String> {
    let bad = |why: &str| Err(format!("not modified UTF-7 ({why})"));
    let (mut bits, mut nbits, mut high_surrogate) = (0u32, 0u32, false);
    let mut units = 0;
    for &c in encoded {
        let Some(v) = base64_value(c) else {
            return bad("bad character in a base64 run");
        };
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits < 16 {
            continue;
        }
        nbits -= 16;
        let unit = (bits >> nbits) & 0xffff;
        bits &= (1 << nbits) - 1;
        units += 1;
        match unit {
            0xd800..=0xdbff if !high_surrogate => high_surrogate = true,
            0xdc00..=0xdfff if high_surrogate => high_surrogate = false,
            0xd800..=0xdfff => return bad("unpaired surrogate"),
            _ if high_surrogate => return bad("unpaired surrogate"),
            0x20..=0x7e => return bad("printable ASCII encoded"),
            0..=0x1f | 0x7f => return bad("control character"),
            _ => {}
        }
    }
    if high_surrogate {
        return bad("unpaired surrogate");
    }
    if nbits >= 6 || bits != 0 {
        return bad("bad padding");
    }
    if units == 0 && !encoded.is_empty() {
        return bad("empty base64 run");
    }
    Ok(())
}

/// Modified BASE64 (RFC 3501 §5.1.3): RFC 2045's alphabet with `,` in place of `/`.
fn base64_value(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b',' => 63,
        _ => return None,
    } as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        let cases = [
            ("INBOX", "INBOX"),
            ("inbox", "INBOX"),
            ("InBox.Sub", "INBOX.Sub"),
            ("Inboxes", "Inboxes"),
            ("Sent", "Sent"),
            ("Archive.2024", "Archive.2024"),
            ("Entw&APw-rfe", "Entw&APw-rfe"),
            ("Tom &- Jerry", "Tom &- Jerry"),
            ("&ZeVnLIqe-", "&ZeVnLIqe-"),
            ("&2D3eAA-", "&2D3eAA-"), // U+1F600 as a surrogate pair
            ("a~b", "a~b"),
            ("[Gmail]", "[Gmail]"),
        ];
        for (input, want) in cases {
            let got = FolderName::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(got.as_str(), want, "{input:?}");
        }
    }

    #[test]
    fn refused_names() {
        let long = "a".repeat(256);
        let deep = vec!["a"; 17].join(".");
        let cases = [
            "",
            "a/b",
            "/",
            ".a",
            "a.",
            "a..b",
            ".",
            "..",
            "~user",
            "a\tb",
            "a\u{7f}",
            "Entwürfe",
            "a&b",
            "&AGE-",      // "a", printable ASCII encoded
            "&Jjo",       // no terminating -
            "&Jjo!-",     // bad base64 character
            "&AAA-",      // U+0000
            "&2D0-",      // lone high surrogate (and bad padding)
            "&2D3YPQ-",   // high surrogate followed by a high surrogate
            "&3gA-",      // lone low surrogate
            "&APx-&APw-", // second run fine, but &APx- has non-zero padding bits
            long.as_str(),
            deep.as_str(),
        ];
        for input in cases {
            assert!(FolderName::parse(input).is_err(), "{input:?} was accepted");
        }
        assert!(FolderName::parse(&"a".repeat(255)).is_ok());
        assert!(FolderName::parse(&vec!["a"; 16].join(".")).is_ok());
    }

    #[test]
    fn hierarchy() {
        let n = |s: &str| FolderName::parse(s).unwrap();
        assert_eq!(n("A.B.C").parent(), Some(n("A.B")));
        assert_eq!(n("A").parent(), None);
        assert!(n("A.B").is_within(&n("A")));
        assert!(n("A").is_within(&n("A")));
        assert!(!n("AB").is_within(&n("A")));
        assert_eq!(n("A.B").moved(&n("A"), &n("X.Y")), Some(n("X.Y.B")));
        assert_eq!(n("AB").moved(&n("A"), &n("X")), None);
        assert_eq!(n("Sent").special_use(), Some(SpecialUse::Sent));
        assert_eq!(n("Sent.old").special_use(), None);
    }

    #[test]
    fn dir_names() {
        let cases = [
            (".Sent", Some("Sent")),
            (".Archive.2024", Some("Archive.2024")),
            (".INBOX.Sub", Some("INBOX.Sub")),
            (".inbox.Sub", None), // would map to .INBOX.Sub, another directory
            (".INBOX", None),     // INBOX is the root, not a dot folder
            ("..deleted", None),
            ("cur", None),
            (".", None),
        ];
        for (entry, want) in cases {
            let got = FolderName::from_dir_name(entry);
            assert_eq!(got.as_ref().map(|n| n.as_str()), want, "{entry:?}");
        }
        assert_eq!(FolderName::inbox().dir_name(), None);
        assert_eq!(
            FolderName::parse("A.B").unwrap().dir_name().as_deref(),
            Some(".A.B")
        );
    }
}
